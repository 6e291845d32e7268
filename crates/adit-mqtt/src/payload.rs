//! Plain and JSON payloads → items (a value, its quality and time, and for
//! a payload with many readings the key that names each), pure.
//!
//! Invariants:
//! - nothing in a payload can panic this code or make it allocate beyond
//!   the payload's own size (the size is bounded before it gets here);
//! - an item whose value could not be read still comes out, without a
//!   value and `Bad(Conversion)`, beside the counted reject: the point is
//!   seen to be sending nonsense, not silent;
//! - a timestamp that cannot be read gives `Bad(ClockInvalid)` at the
//!   receive time; a readable one outside 2000–2100 is kept (and flagged by
//!   normalization) and counted.

use crate::doc::Doc;
use adit_config::{JsonFormat, TimestampUnit};
use adit_core::{Quality, Reason, Timestamp, Value};

use crate::reject::Reject;

/// One reading-to-be from a payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Item<'a> {
    /// The member name or key field (payloads with many readings).
    pub key: Option<&'a str>,
    pub value: Option<Value>,
    pub quality: Quality,
    /// `None`: the payload gives no time; use the receive time.
    pub ts: Option<Timestamp>,
}

/// 2000-01-01 and 2100-01-01 in µs: outside is implausible for a sensor.
const PLAUSIBLE: std::ops::Range<i64> = 946_684_800_000_000..4_102_444_800_000_000;

fn bad(key: Option<&str>) -> Item<'_> {
    Item {
        key,
        value: None,
        quality: Quality::Bad(Reason::Conversion),
        ts: None,
    }
}

/// A plain payload: a number, `true`/`false`, or UTF-8 text.
pub fn decode_plain(payload: &[u8], rejects: &mut Vec<Reject>, emit: &mut dyn FnMut(Item<'_>)) {
    let Ok(text) = std::str::from_utf8(payload) else {
        rejects.push(Reject::InvalidUtf8);
        return emit(bad(None));
    };
    let t = text.trim();
    let value = match t {
        "true" | "TRUE" | "True" => Value::Bool(true),
        "false" | "FALSE" | "False" => Value::Bool(false),
        _ => {
            if let Ok(i) = t.parse::<i64>() {
                Value::I64(i)
            } else if let Ok(f) = t.parse::<f64>() {
                if !f.is_finite() {
                    rejects.push(Reject::NotANumber);
                    return emit(bad(None));
                }
                Value::F64(f)
            } else if t.is_empty() {
                rejects.push(Reject::MissingField);
                return emit(bad(None));
            } else {
                Value::Text(t.into())
            }
        }
    };
    emit(Item {
        key: None,
        value: Some(value),
        quality: Quality::Good,
        ts: None,
    });
}

/// A JSON payload; `field` overrides the format's value pointer (explicit
/// points). A payload that is not JSON gives one bad item (no key).
pub fn decode_json(
    format: &JsonFormat,
    field: Option<&str>,
    payload: &[u8],
    rejects: &mut Vec<Reject>,
    emit: &mut dyn FnMut(Item<'_>),
) {
    // serde_json checks UTF-8 as it reads (every string is read, anything
    // else must be ASCII syntax): a payload it accepts is valid UTF-8, so
    // the bytes are checked apart only to name why one was refused. A
    // parse of only the members read skips strings unchecked: it runs on
    // payloads checked first (a few ns; the tree it saves costs hundreds).
    let value_ptr = field.unwrap_or(&format.value);
    let parsed = match wanted_members(format, value_ptr) {
        Some((names, n)) => match std::str::from_utf8(payload) {
            Ok(text) => Doc::parse_members(text, &names[..n]),
            Err(_) => Doc::parse(payload),
        },
        None => Doc::parse(payload),
    };
    let Ok(root) = parsed else {
        rejects.push(if std::str::from_utf8(payload).is_err() {
            Reject::InvalidUtf8
        } else {
            Reject::MalformedJson
        });
        return emit(bad(None));
    };
    let Some(many) = format.many.as_deref() else {
        return emit(item(format, value_ptr, &root, &root, None, rejects));
    };
    match root.pointer(many) {
        Some(members @ Doc::Object(_)) => {
            for (k, v) in members.members() {
                if matches!(v, Doc::Object(_)) {
                    emit(item(format, value_ptr, v, &root, Some(k), rejects));
                } else {
                    // `{"co": 12.5, "no2": 0.4}`: the member is the value.
                    emit(item(format, "", v, &root, Some(k), rejects));
                }
            }
        }
        Some(Doc::Array(elements)) => {
            for e in elements {
                match e.pointer(&format.key) {
                    Some(Doc::Str(k)) => {
                        emit(item(format, value_ptr, e, &root, Some(k.as_ref()), rejects));
                    }
                    Some(_) => rejects.push(Reject::WrongType),
                    None => rejects.push(Reject::MissingField),
                }
            }
        }
        Some(_) => rejects.push(Reject::WrongType),
        None => rejects.push(Reject::MissingField),
    }
}

/// The root members a payload with one reading is read from (the first
/// token of each pointer), when they can be named without unescaping:
/// `None` for payloads with many readings, a pointer to the whole
/// document, or a `~` escape (those parse the whole document).
fn wanted_members<'f>(format: &'f JsonFormat, value_ptr: &'f str) -> Option<([&'f str; 3], usize)> {
    if format.many.is_some() {
        return None;
    }
    let mut names = [""; 3];
    let mut n = 0;
    let pointers = [
        Some(value_ptr),
        format.timestamp.as_deref(),
        format.quality.as_deref(),
    ];
    for ptr in pointers.into_iter().flatten() {
        let first = ptr.strip_prefix('/')?.split('/').next()?;
        if first.contains('~') {
            return None;
        }
        if !names[..n].contains(&first) {
            names[n] = first;
            n += 1;
        }
    }
    Some((names, n))
}

/// One item from `element` (the root, or one of many), falling back to the
/// root for the timestamp and quality.
fn item<'a>(
    format: &JsonFormat,
    value_ptr: &str,
    element: &Doc<'_>,
    root: &Doc<'_>,
    key: Option<&'a str>,
    rejects: &mut Vec<Reject>,
) -> Item<'a> {
    let mut out = match element.pointer(value_ptr) {
        None => {
            rejects.push(Reject::MissingField);
            bad(key)
        }
        Some(v) => match json_value(v) {
            Ok(value) => Item {
                key,
                value: Some(value),
                quality: Quality::Good,
                ts: None,
            },
            Err(r) => {
                rejects.push(r);
                bad(key)
            }
        },
    };
    if let Some(ptr) = &format.timestamp {
        let raw = element.pointer(ptr).or_else(|| root.pointer(ptr));
        if let Some(Some(ts)) = raw.map(|v| timestamp(v, format.timestamp_unit)) {
            if !PLAUSIBLE.contains(&ts.as_micros()) {
                rejects.push(Reject::TimestampImplausible);
            }
            out.ts = Some(ts);
        } else {
            rejects.push(Reject::TimestampInvalid);
            out.quality = out.quality.worst(Quality::Bad(Reason::ClockInvalid));
        }
    }
    if let Some(ptr) = &format.quality {
        if let Some(q) = element.pointer(ptr).or_else(|| root.pointer(ptr)) {
            out.quality = out.quality.worst(quality(q));
        }
    }
    out
}

fn json_value(v: &Doc<'_>) -> Result<Value, Reject> {
    match v {
        Doc::Num(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Value::I64(i))
            } else {
                match n.as_f64() {
                    f if f.is_finite() => Ok(Value::F64(f)),
                    _ => Err(Reject::NotANumber),
                }
            }
        }
        Doc::Bool(b) => Ok(Value::Bool(*b)),
        Doc::Str(s) => match s.as_ref() {
            "NaN" | "nan" | "Infinity" | "-Infinity" | "inf" | "-inf" => Err(Reject::NotANumber),
            text => Ok(Value::Text(text.into())),
        },
        Doc::Null | Doc::Array(_) | Doc::Object(_) => Err(Reject::WrongType),
    }
}

/// A JSON timestamp: RFC 3339 text, or epoch seconds/ms/µs/ns (by `unit`,
/// or for `auto` by magnitude: < 1e11 s, < 1e14 ms, < 1e17 µs, else ns).
pub fn timestamp(v: &Doc<'_>, unit: TimestampUnit) -> Option<Timestamp> {
    let number = match v {
        Doc::Str(s) => {
            if unit == TimestampUnit::Rfc3339 || unit == TimestampUnit::Auto {
                if let Some(ts) = Timestamp::parse_rfc3339(s) {
                    return Some(ts);
                }
                if unit == TimestampUnit::Rfc3339 {
                    return None;
                }
            }
            s.trim().parse::<f64>().ok()?
        }
        Doc::Num(n) if unit != TimestampUnit::Rfc3339 => n.as_f64(),
        _ => return None,
    };
    if !number.is_finite() {
        return None;
    }
    let unit = match unit {
        TimestampUnit::Auto => {
            let a = number.abs();
            if a < 1e11 {
                TimestampUnit::Seconds
            } else if a < 1e14 {
                TimestampUnit::Millis
            } else if a < 1e17 {
                TimestampUnit::Micros
            } else {
                TimestampUnit::Nanos
            }
        }
        u => u,
    };
    let micros = match unit {
        TimestampUnit::Seconds => number * 1e6,
        TimestampUnit::Millis => number * 1e3,
        TimestampUnit::Nanos => number / 1e3,
        _ => number,
    };
    (micros.abs() < 9.0e18).then(|| Timestamp(micros.round() as i64))
}

/// A JSON quality: `true`/`false`; "good"/"uncertain"/"bad" (any other
/// text is bad under that name); a number up to 255 as OPC classic
/// quality (≥ 192 good, ≥ 64 uncertain, else bad), above as an OPC UA
/// status code (top bits 00 good, 01 uncertain, 1x bad).
pub fn quality(v: &Doc<'_>) -> Quality {
    let generic_bad = Quality::Bad(Reason::status(0x8000_0000, "bad"));
    match v {
        Doc::Bool(true) => Quality::Good,
        Doc::Bool(false) => generic_bad,
        Doc::Str(s) => {
            let is = |name: &str| s.eq_ignore_ascii_case(name);
            if is("good") || is("ok") {
                Quality::Good
            } else if is("uncertain") {
                Quality::Uncertain(Reason::status(0x4000_0000, "uncertain"))
            } else if is("bad") {
                generic_bad
            } else if is("stale") {
                Quality::Bad(Reason::Stale)
            } else {
                Quality::Bad(Reason::status(0x8000_0000, "quality_unknown"))
            }
        }
        Doc::Num(n) => match n.as_u64() {
            Some(c @ 0..=255) => {
                if c >= 192 {
                    Quality::Good
                } else if c >= 64 {
                    Quality::Uncertain(Reason::status(c as u32, "uncertain"))
                } else {
                    Quality::Bad(Reason::status(c as u32, "bad"))
                }
            }
            Some(c) if u32::try_from(c).is_ok() => {
                let c = c as u32;
                match c >> 30 {
                    0 => Quality::Good,
                    1 => Quality::Uncertain(Reason::status(c, "uncertain")),
                    _ => Quality::Bad(Reason::status(c, "bad")),
                }
            }
            _ => Quality::Bad(Reason::status(0x8000_0000, "quality_unknown")),
        },
        _ => Quality::Bad(Reason::status(0x8000_0000, "quality_unknown")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt() -> JsonFormat {
        JsonFormat {
            value: "/value".into(),
            timestamp: Some("/ts".into()),
            timestamp_unit: TimestampUnit::Auto,
            quality: Some("/q".into()),
            many: None,
            key: "/id".into(),
        }
    }

    type Decoded = (Option<String>, Option<Value>, Quality, Option<Timestamp>);

    fn json(format: &JsonFormat, payload: &str) -> (Vec<Decoded>, Vec<Reject>) {
        let mut rejects = Vec::new();
        let mut items = Vec::new();
        decode_json(format, None, payload.as_bytes(), &mut rejects, &mut |i| {
            items.push((i.key.map(str::to_string), i.value, i.quality, i.ts));
        });
        (items, rejects)
    }

    #[test]
    #[allow(clippy::many_single_char_names)]
    fn json_payloads_table() {
        let t = Timestamp(1_790_000_000_000_000);
        let f = fmt();
        let (i, r) = json(&f, r#"{"value": 12.5, "ts": "2026-09-21T14:13:20Z"}"#);
        assert_eq!(i, [(None, Some(Value::F64(12.5)), Quality::Good, Some(t))]);
        assert!(r.is_empty());
        for ts in [
            "1790000000",
            "1790000000000",
            "1790000000000000",
            "1790000000000000000",
            "\"1790000000000\"",
        ] {
            let (i, r) = json(&f, &format!(r#"{{"value": 3, "ts": {ts}}}"#));
            assert_eq!(i[0].3, Some(t), "{ts}");
            assert!(r.is_empty(), "{ts}: {r:?}");
        }
        let (i, r) = json(&f, r#"{"value": 1, "ts": 0}"#);
        assert_eq!(
            (i[0].3, r.as_slice()),
            (
                Some(Timestamp(0)),
                [Reject::TimestampImplausible].as_slice()
            )
        );
        let (i, r) = json(&f, r#"{"value": 1, "ts": "2300-01-01T00:00:00Z"}"#);
        assert_eq!(r, [Reject::TimestampImplausible]);
        assert!(i[0].3.is_some());
        let (i, r) = json(&f, r#"{"value": 1, "ts": "yesterday"}"#);
        assert_eq!(
            (i[0].2, r.as_slice()),
            (
                Quality::Bad(Reason::ClockInvalid),
                [Reject::TimestampInvalid].as_slice()
            )
        );
        let cases: [(&str, Reject); 6] = [
            (r#"{"value": 1"#, Reject::MalformedJson),
            (r#"{"ts": 1790000000}"#, Reject::MissingField),
            (
                r#"{"value": {"x": 1}, "ts": 1790000000}"#,
                Reject::WrongType,
            ),
            (r#"{"value": null, "ts": 1790000000}"#, Reject::WrongType),
            (r#"{"value": "NaN", "ts": 1790000000}"#, Reject::NotANumber),
            (r#"{"value": NaN}"#, Reject::MalformedJson),
        ];
        for (payload, want) in cases {
            let (i, r) = json(&f, payload);
            assert_eq!(r.first(), Some(&want), "{payload}");
            assert_eq!(i.len(), 1, "{payload}: one bad item");
            assert_eq!(i[0].1, None, "{payload}");
            assert!(!i[0].2.is_good(), "{payload}");
        }
        let mut rejects = Vec::new();
        let mut n = 0;
        decode_json(
            &f,
            None,
            b"{\"value\": \"\xff\"}",
            &mut rejects,
            &mut |_| n += 1,
        );
        assert_eq!(
            (rejects.as_slice(), n),
            ([Reject::InvalidUtf8].as_slice(), 1)
        );
        // In a member nobody reads (skipped, not parsed): refused all the same.
        rejects.clear();
        decode_json(
            &f,
            None,
            b"{\"value\": 1, \"pad\": \"\xff\"}",
            &mut rejects,
            &mut |_| n += 1,
        );
        assert_eq!(rejects, [Reject::InvalidUtf8]);
        // Duplicate names: the last one counts, as in a whole parse.
        let (i, _) = json(&f, r#"{"value": 1, "x": [1, {"value": 5}], "value": 2}"#);
        assert_eq!(i[0].1, Some(Value::I64(2)));
        let (i, _) = json(&f, r#"{"value": 7, "ts": 1790000000, "q": "bad"}"#);
        assert!(!i[0].2.is_good());
        let (i, _) = json(&f, r#"{"value": 7, "ts": 1790000000, "q": 192}"#);
        assert!(i[0].2.is_good());
        let (i, _) = json(&f, r#"{"value": 7, "ts": 1790000000, "q": 2150891520}"#);
        assert!(!i[0].2.is_good(), "0x80340000 BadNodeIdUnknown");
    }

    #[test]
    fn many_readings_in_one_message() {
        let mut f = fmt();
        f.many = Some("/readings".into());
        let (i, r) = json(
            &f,
            r#"{"ts": 1790000000, "readings": {"co": 12, "no2": {"value": 0.4, "q": "uncertain"}}}"#,
        );
        assert!(r.is_empty(), "{r:?}");
        assert_eq!(i.len(), 2);
        assert_eq!(i[0].0.as_deref(), Some("co"));
        assert_eq!(i[0].1, Some(Value::I64(12)));
        assert_eq!(i[1].1, Some(Value::F64(0.4)));
        assert!(matches!(i[1].2, Quality::Uncertain(_)));
        assert_eq!(i[1].3, Some(Timestamp(1_790_000_000_000_000)));
        let (i, r) = json(
            &f,
            r#"{"ts": 1790000000, "readings": [{"id": "vis", "value": 0.002, "ts": 1790000001}, {"value": 3}, {"id": 5, "value": 1}]}"#,
        );
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].3, Some(Timestamp(1_790_000_001_000_000)));
        assert_eq!(r, [Reject::MissingField, Reject::WrongType]);
    }

    #[test]
    fn plain_payloads() {
        let run = |p: &[u8]| {
            let mut rejects = Vec::new();
            let mut items = Vec::new();
            decode_plain(p, &mut rejects, &mut |i| items.push((i.value, i.quality)));
            (items, rejects)
        };
        assert_eq!(run(b" 42 \n").0, [(Some(Value::I64(42)), Quality::Good)]);
        assert_eq!(run(b"-0.5").0, [(Some(Value::F64(-0.5)), Quality::Good)]);
        assert_eq!(run(b"true").0, [(Some(Value::Bool(true)), Quality::Good)]);
        assert_eq!(
            run(b"running").0,
            [(Some(Value::Text("running".into())), Quality::Good)]
        );
        assert_eq!(run(b"NaN").1, [Reject::NotANumber]);
        assert_eq!(run(b"inf").1, [Reject::NotANumber]);
        assert_eq!(run(b"\xff\xfe").1, [Reject::InvalidUtf8]);
        assert_eq!(run(b"").1, [Reject::MissingField]);
    }

    proptest::proptest! {
        #[test]
        fn no_payload_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), many in proptest::bool::ANY) {
            let mut f = fmt();
            if many { f.many = Some("/r".into()); }
            let mut rejects = Vec::new();
            decode_json(&f, None, &bytes, &mut rejects, &mut |_| {});
            decode_plain(&bytes, &mut rejects, &mut |_| {});
        }

        #[test]
        fn no_json_panics(v in "\\{(\"(value|ts|q|r|id)\": ?(-?[0-9]{1,25}(\\.[0-9]{0,5})?(e[0-9]{1,3})?|\"[^\"]{0,30}\"|true|null|\\[\\]|\\{\\}), ?){0,5}\"x\": 1\\}") {
            let mut rejects = Vec::new();
            decode_json(&fmt(), None, v.as_bytes(), &mut rejects, &mut |_| {});
        }
    }
}
