//! adit's row layout (see the crate docs) written as ILP straight into a
//! byte buffer: text v1, or v2 with binary doubles.
//!
//! Invariant: the bytes are exactly those questdb-rs's row API writes for
//! the same readings (escaping, number formats, the separator before the
//! first field, v1 timestamps in ns, v2 in µs with `t`), and a row it would
//! refuse (a negative timestamp, ns beyond i64) is refused here with the
//! same meaning. A property test holds the two encoders byte for byte.
//!
//! Why not the row API: it re-checks the call sequence and each name on
//! every call and escapes byte by byte; for eleven columns that was 376 ns
//! per row (v1) against ≈ 60 here, a third of adit's CPU at a site load.
//!
//! Per point, the row's `,point=…,device=…` (escaped) is built once and
//! kept in one arena (a point's name and device never change; kept per
//! registry: another registry empties it); the text of a timestamp is
//! reused by the next row with the same one (a poll's readings share theirs).

use adit_core::{PointId, PointRegistry, QualityClass, Reading, Reason, Value};

/// ILP version spoken on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IlpVersion {
    /// Text doubles, designated timestamp in ns (any line-protocol server).
    V1,
    /// Binary doubles, designated timestamp in µs with `t` (QuestDB ≥ 8.4).
    V2,
}

/// ILP v2's type byte for a binary double (after `name==`).
const BINARY_DOUBLE: u8 = 16;

/// A request body being built: whole rows only.
#[derive(Debug)]
pub struct RowBuffer {
    version: IlpVersion,
    /// The table name, escaped once.
    table: Vec<u8>,
    out: Vec<u8>,
    rows: usize,
    /// Every point's line start so far, `table,point=…,device=…`, escaped,
    /// one after another (bounded by the registry's points): one copy per
    /// row instead of one per part.
    symbols: Vec<u8>,
    /// Per point index: its range in `symbols` (empty: not built yet).
    symbols_at: Vec<(usize, usize)>,
    /// The registry the symbols came from (its address: only compared).
    registry: usize,
    /// The last designated timestamp written and its text.
    designated: Formatted,
    /// The last `received_us` written and its text.
    received: Formatted,
}

/// An integer and its decimal text (reused while the integer repeats).
#[derive(Debug, Default)]
struct Formatted {
    value: Option<i64>,
    /// i64's longest text is 20 bytes (`-9223372036854775808`).
    text: [u8; 20],
    len: usize,
}

impl Formatted {
    /// Appends the decimal text of `v` (formatted only when it changed) to
    /// `out`: all 20 bytes are copied, then the tail cut, a fixed-size copy
    /// made inline instead of a call to copy a few bytes.
    fn put(&mut self, v: i64, out: &mut Vec<u8>) {
        if self.value != Some(v) {
            let mut buf = itoa::Buffer::new();
            let t = buf.format(v).as_bytes();
            self.text[..t.len()].copy_from_slice(t);
            self.len = t.len();
            self.value = Some(v);
        }
        let at = out.len();
        out.extend_from_slice(&self.text);
        out.truncate(at + self.len);
    }
}

/// A reading that cannot be written as a row (the batch is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl RowBuffer {
    /// `table` must already be a valid table name (checked at start-up).
    pub fn new(version: IlpVersion, table: &str) -> Self {
        let mut escaped = Vec::with_capacity(table.len());
        put_unquoted(&mut escaped, table.as_bytes());
        Self {
            version,
            table: escaped,
            out: Vec::new(),
            rows: 0,
            symbols: Vec::new(),
            symbols_at: Vec::new(),
            registry: 0,
            designated: Formatted::default(),
            received: Formatted::default(),
        }
    }

    pub fn version(&self) -> IlpVersion {
        self.version
    }

    pub fn clear(&mut self) {
        self.out.clear();
        self.rows = 0;
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.out
    }

    /// Appends one row per reading (readings of unknown points are skipped,
    /// as they have no name to store under), stopping after the row that
    /// brings the body to `max_bytes` or more; returns how many readings it
    /// consumed. On error the body holds a partial row: clear it.
    pub fn encode_up_to(
        &mut self,
        registry: &PointRegistry,
        readings: &[Reading],
        max_bytes: usize,
    ) -> Result<usize, EncodeError> {
        let address = std::ptr::from_ref(registry) as usize;
        if self.registry != address {
            self.symbols.clear();
            self.symbols_at.clear();
            self.registry = address;
        }
        for (i, r) in readings.iter().enumerate() {
            if self.out.len() >= max_bytes {
                return Ok(i);
            }
            let Some(line_start) = line_start_of(
                &mut self.symbols,
                &mut self.symbols_at,
                &self.table,
                registry,
                r.point,
            ) else {
                continue;
            };
            let reason = r.quality.reason();
            let designated = r.stored_ts();
            let out = &mut self.out;
            out.extend_from_slice(line_start);
            // One constant per class: copied inline, not by a call.
            out.extend_from_slice(match r.quality.class() {
                QualityClass::Good => b",quality=good",
                QualityClass::Uncertain => b",quality=uncertain",
                QualityClass::Bad => b",quality=bad",
            });
            if let Some(reason) = reason {
                out.extend_from_slice(b",reason=");
                put_unquoted(out, reason.name().as_bytes());
            }
            let mut sep = b' ';
            match &r.value {
                Some(Value::F64(v)) => self.put_f64(&mut sep, b"value", *v),
                Some(Value::I64(v)) => {
                    self.put_f64(&mut sep, b"value", *v as f64);
                    if !super::fits_f64_exactly(*v) {
                        self.put_i64(&mut sep, b"value_int", *v);
                    }
                }
                Some(Value::Bool(v)) => self.put_f64(&mut sep, b"value", f64::from(u8::from(*v))),
                Some(Value::Text(t)) => {
                    put_key(&mut self.out, &mut sep, b"value_text");
                    put_quoted(&mut self.out, t.as_bytes());
                }
                None => {}
            }
            if let Some(code) = reason.and_then(Reason::detail) {
                self.put_i64(&mut sep, b"reason_code", i64::from(code));
            }
            if designated != r.source_ts {
                self.put_i64(&mut sep, b"source_us", r.source_ts.as_micros());
            }
            if super::needs_received_us(r.received_ts, designated, sep == b' ') {
                put_key(&mut self.out, &mut sep, b"received_us");
                self.received.put(r.received_ts.as_micros(), &mut self.out);
                self.out.push(b'i');
            }
            self.put_designated(designated.as_micros())?;
            self.rows += 1;
        }
        Ok(readings.len())
    }

    fn put_f64(&mut self, sep: &mut u8, key: &[u8], v: f64) {
        put_key(&mut self.out, sep, key);
        match self.version {
            IlpVersion::V1 => {
                if let Some(whole) = small_whole(v) {
                    // What ryu prints for these, at a fraction of its cost
                    // (most values from registers are whole numbers).
                    let mut buf = itoa::Buffer::new();
                    self.out.extend_from_slice(buf.format(whole).as_bytes());
                    self.out.extend_from_slice(b".0");
                } else if v.is_finite() {
                    let mut buf = ryu::Buffer::new();
                    self.out.extend_from_slice(buf.format_finite(v).as_bytes());
                } else {
                    self.out.extend_from_slice(non_finite(v).as_bytes());
                }
            }
            IlpVersion::V2 => {
                self.out.push(b'=');
                self.out.push(BINARY_DOUBLE);
                self.out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }

    fn put_i64(&mut self, sep: &mut u8, key: &[u8], v: i64) {
        put_key(&mut self.out, sep, key);
        let mut buf = itoa::Buffer::new();
        self.out.extend_from_slice(buf.format(v).as_bytes());
        self.out.push(b'i');
    }

    fn put_designated(&mut self, micros: i64) -> Result<(), EncodeError> {
        let (number, end): (i64, &[u8]) = match self.version {
            IlpVersion::V1 => (
                micros.checked_mul(1000).ok_or_else(|| {
                    EncodeError(format!("timestamp {micros} µs is beyond i64 nanoseconds"))
                })?,
                b"\n",
            ),
            IlpVersion::V2 => (micros, b"t\n"),
        };
        if number < 0 {
            return Err(EncodeError(format!(
                "timestamp {number} is negative: it must be >= 0"
            )));
        }
        self.out.push(b' ');
        self.designated.put(number, &mut self.out);
        self.out.extend_from_slice(end);
        Ok(())
    }
}

/// `,point=…,device=…` of point `id` (built into `symbols` at its first
/// row); `None` for a point the registry does not know.
fn line_start_of<'a>(
    symbols: &'a mut Vec<u8>,
    symbols_at: &mut Vec<(usize, usize)>,
    table: &[u8],
    registry: &PointRegistry,
    id: PointId,
) -> Option<&'a [u8]> {
    let i = id.index();
    let (mut from, mut to) = symbols_at.get(i).copied().unwrap_or((0, 0));
    if from == to {
        let meta = registry.get(id)?;
        let start = symbols.len();
        symbols.extend_from_slice(table);
        symbols.extend_from_slice(b",point=");
        put_unquoted(symbols, meta.name.as_bytes());
        symbols.extend_from_slice(b",device=");
        put_unquoted(symbols, meta.device.as_bytes());
        if symbols_at.len() <= i {
            symbols_at.resize(i + 1, (0, 0));
        }
        (from, to) = (start, symbols.len());
        symbols_at[i] = (from, to);
    }
    symbols.get(from..to)
}

/// `name=` after the separator: a space before the first field, commas after.
fn put_key(out: &mut Vec<u8>, sep: &mut u8, key: &[u8]) {
    out.push(*sep);
    *sep = b',';
    out.extend_from_slice(key);
    out.push(b'=');
}

/// `v` as an integer when ryu would print it as that integer and `.0`:
/// whole, below 10^15 in magnitude (ryu turns to exponents from 10^16),
/// and not negative zero (`-0.0`).
fn small_whole(v: f64) -> Option<i64> {
    const LIMIT: f64 = 1e15;
    // Below 2^53 both conversions are exact: equal means whole (and no
    // `fract`, a libm call on this target). NaN fails the first test.
    let whole = v as i64;
    if v.abs() < LIMIT && whole as f64 == v && !(v == 0.0 && v.is_sign_negative()) {
        Some(whole)
    } else {
        None
    }
}

/// How questdb-rs (after ryu) spells a double that is not finite.
fn non_finite(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v.is_sign_negative() {
        "-Infinity"
    } else {
        "Infinity"
    }
}

/// Bytes a table name or a symbol must escape with a backslash.
const UNQUOTED: [bool; 256] = escape_table(b" ,=\n\r\\");
/// Bytes a quoted string field must escape with a backslash.
const QUOTED: [bool; 256] = escape_table(b"\n\r\"\\");

const fn escape_table(bytes: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
}

fn put_escaped(out: &mut Vec<u8>, s: &[u8], escape: &[bool; 256]) {
    if s.iter().any(|&b| escape[usize::from(b)]) {
        out.reserve(s.len() + 8);
        for &b in s {
            if escape[usize::from(b)] {
                out.push(b'\\');
            }
            out.push(b);
        }
    } else {
        out.extend_from_slice(s);
    }
}

fn put_unquoted(out: &mut Vec<u8>, s: &[u8]) {
    put_escaped(out, s, &UNQUOTED);
}

fn put_quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    put_escaped(out, s, &QUOTED);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::{PointId, PointMeta, Quality, Timestamp};
    use proptest::prelude::*;
    use questdb::ingress::{Buffer, ProtocolVersion};

    /// The shortcut for whole numbers prints exactly what ryu does, and
    /// leaves everything else to it.
    #[test]
    fn whole_numbers_print_as_ryu_prints_them() {
        let cases = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            12_345.0,
            65_535.0,
            -32_768.0,
            999_999_999_999_999.0,
            -999_999_999_999_999.0,
            1e15,
            -1e15,
            9_007_199_254_740_992.0,
            0.5,
            -0.5,
            1e-300,
            123.456,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for v in cases {
            match small_whole(v) {
                Some(whole) => {
                    assert_eq!(
                        format!("{whole}.0"),
                        ryu::Buffer::new().format_finite(v),
                        "{v}"
                    );
                }
                None => assert!(
                    !v.is_finite()
                        || v.abs() >= 1e15
                        || v.fract() != 0.0
                        || (v == 0.0 && v.is_sign_negative()),
                    "{v} is whole and small: the shortcut must take it"
                ),
            }
        }
    }

    proptest! {
        #[test]
        fn any_whole_number_below_1e15_prints_as_ryu_prints_it(whole in -999_999_999_999_999i64..=999_999_999_999_999) {
            let v = whole as f64;
            prop_assert_eq!(small_whole(v), (v != 0.0 || !v.is_sign_negative()).then_some(whole));
            let mut ryu = ryu::Buffer::new();
            prop_assert_eq!(format!("{whole}.0"), ryu.format_finite(v));
        }
    }

    fn registry(names: &[(String, String)]) -> PointRegistry {
        let mut r = PointRegistry::new();
        for (name, device) in names {
            r.insert(PointMeta::plain(name, device, 1000)).unwrap();
        }
        r
    }

    fn oracle(
        version: ProtocolVersion,
        registry: &PointRegistry,
        readings: &[Reading],
    ) -> Result<Vec<u8>, String> {
        let mut b = Buffer::new(version);
        crate::encode_rows(&mut b, "readings", registry, readings)
            .map(|()| b.as_bytes().to_vec())
            .map_err(|e| e.msg().to_string())
    }

    /// Encodes `readings` as a sink does: into a buffer that kept what it
    /// built for an earlier body (encoded, then cleared), in two calls.
    fn ours(
        version: IlpVersion,
        registry: &PointRegistry,
        readings: &[Reading],
    ) -> Result<Vec<u8>, String> {
        let mut b = RowBuffer::new(version, "readings");
        let (first, rest) = readings.split_at(readings.len() / 2);
        let _ = b.encode_up_to(registry, rest, usize::MAX);
        b.clear();
        b.encode_up_to(registry, first, usize::MAX)
            .map_err(|e| e.0)?;
        b.encode_up_to(registry, rest, usize::MAX)
            .map(|_| b.as_bytes().to_vec())
            .map_err(|e| e.0)
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_.]{1,12}",
            "[ -~]{0,10}",
            "[a-z =,\\\\\"\n\r]{0,8}",
            "\\PC{0,6}",
        ]
    }

    fn value() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            any::<f64>().prop_map(|v| Some(Value::F64(v))),
            any::<i64>().prop_map(|v| Some(Value::F64(v as f64))),
            (-70_000i64..70_000).prop_map(|v| Some(Value::F64(v as f64))),
            (0i32..19, any::<bool>(), -3i64..3).prop_map(|(e, neg, d)| {
                let v = (10f64.powi(e) + d as f64) * if neg { -1.0 } else { 1.0 };
                Some(Value::F64(v))
            }),
            prop_oneof![
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(-0.0),
                Just(1e300),
                Just(5e-324)
            ]
            .prop_map(|v| Some(Value::F64(v))),
            any::<i64>().prop_map(|v| Some(Value::I64(v))),
            (-1000i64..1000).prop_map(|v| Some(Value::I64(v))),
            any::<bool>().prop_map(|v| Some(Value::Bool(v))),
            text().prop_map(|t| Some(Value::Text(t.into()))),
        ]
    }

    fn quality() -> impl Strategy<Value = Quality> {
        prop_oneof![
            Just(Quality::Good),
            Just(Quality::Bad(Reason::OutOfRange)),
            Just(Quality::Bad(Reason::ClockInvalid)),
            Just(Quality::Uncertain(Reason::ClockInvalid)),
            (0u8..20).prop_map(|c| Quality::Bad(Reason::DeviceException(c))),
            any::<u32>().prop_map(|c| Quality::Bad(Reason::status(c, "BadSensorFailure"))),
            Just(Quality::Uncertain(Reason::Stale)),
        ]
    }

    fn micros() -> impl Strategy<Value = i64> {
        prop_oneof![
            // Rows that share a time (a poll's readings), and one apart.
            Just(1_700_000_000_000_000i64),
            Just(1_700_000_000_000_001i64),
            1_600_000_000_000_000i64..1_900_000_000_000_000,
            any::<i64>(),
            -10i64..10,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn rows_are_byte_identical_to_questdb_rs(
            names in proptest::collection::vec((text(), text()), 1..4),
            rows in proptest::collection::vec((0u32..4, value(), quality(), micros(), micros()), 0..6),
        ) {
            let names: Vec<(String, String)> = names
                .into_iter()
                .enumerate()
                .map(|(i, (n, d))| (format!("{n}{i}"), d))
                .collect();
            let reg = registry(&names);
            let readings: Vec<Reading> = rows
                .into_iter()
                .map(|(p, value, quality, source, received)| Reading {
                    point: PointId(p),
                    value,
                    quality,
                    source_ts: Timestamp(source),
                    received_ts: Timestamp(received),
                })
                .collect();
            for (theirs, mine) in [(ProtocolVersion::V1, IlpVersion::V1), (ProtocolVersion::V2, IlpVersion::V2)] {
                let expected = oracle(theirs, &reg, &readings);
                let got = ours(mine, &reg, &readings);
                match (&expected, &got) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{:?}", mine),
                    (Err(_), Err(_)) => {}
                    _ => prop_assert!(false, "{mine:?}: questdb-rs {expected:?}, ours {got:?}"),
                }
            }
        }
    }

    #[test]
    fn a_body_stops_at_the_row_that_reaches_the_limit() {
        let reg = registry(&[("bore_a.co".into(), "plc".into())]);
        let readings: Vec<Reading> = (0..100)
            .map(|i| Reading {
                point: PointId(0),
                value: Some(Value::F64(f64::from(i))),
                quality: Quality::Good,
                source_ts: Timestamp(1_700_000_000_000_000 + i64::from(i)),
                received_ts: Timestamp(1_700_000_000_000_000),
            })
            .collect();
        let mut b = RowBuffer::new(IlpVersion::V1, "readings");
        let done = b.encode_up_to(&reg, &readings, 1000).unwrap();
        assert!(done > 5 && done < 100, "{done}");
        assert_eq!(b.rows(), done);
        assert!(b.len() >= 1000 && b.len() < 1200, "{}", b.len());
    }
}
