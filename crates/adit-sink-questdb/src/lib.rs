//! The QuestDB sink: readings as ILP rows (blocking; it runs on its sink
//! stage's own thread).
//!
//! Modules:
//! - [`ilp`]: adit's row layout encoded straight into bytes (v1 and v2),
//!   byte-identical to questdb-rs's row API, about four times cheaper;
//! - [`conf`]: which connection strings adit's own writer serves (`http`
//!   and `https` with the common keys);
//! - [`http`]: ILP over HTTP/1.1 (TLS through `adit-tls`) on one
//!   kept-alive connection;
//! - [`response`]: HTTP answers parsed, and what they mean for a batch.
//!
//! Two writers, one wire format: a connection string [`conf`] serves goes
//! through [`ilp`] + [`http`]; every other one (`tcp`, `tcps`, other TLS
//! settings, …) through questdb-rs's `Sender` and row API, as before.
//!
//! One row per reading, in table `readings` (configurable):
//! - symbols `point`, `device`, `quality` (`good`/`uncertain`/`bad`) and
//!   `reason` (absent when good);
//! - columns `value` (double: f64, i64 and bool as a number), `value_int`
//!   (long: only for integers beyond ±2^53, which `value` would round),
//!   `value_text` (text values), `reason_code` (long, the exception code),
//!   `source_us` (the device's own time, µs since the epoch: only when it is
//!   not the designated timestamp) and `received_us`;
//! - designated timestamp: the source time, or the receive time when the
//!   source clock was judged invalid (so rows from a device stuck in 1970
//!   still land now, with their original time kept in `source_us`).
//!
//! No column repeats another: a row costs the encoder, the wire and the
//! database only what it says (`value_int` and `source_us` would otherwise
//! double the numbers of almost every row).
//!
//! Timestamp columns are written as plain longs (`source_us`, `received_us`):
//! in ILP v1 a timestamp column is `<micros>t`, which other line-protocol
//! servers reject. See `deploy/questdb/schema.sql` for the table with
//! `DEDUP UPSERT KEYS(ts, point, received_us)`: `received_us` is assigned once
//! when adit takes the sample and kept in the spool, so two distinct samples
//! with the same device time (a one-second PLC clock polled at 200 ms) are
//! two rows, and the same spool record replayed is one.
//!
//! Errors: only a rejection that is certainly about the data is permanent
//! (the batch is quarantined by the sink stage): a row that cannot be
//! encoded, or QuestDB's answer to a bad row (HTTP 400 with a JSON body that
//! names the line, `code: invalid`; [`response::classify`] for adit's
//! writer, [`is_data_rejection`] for questdb-rs's; a 500 that names a line,
//! such as a full disk on the database host, is `code: internal error` and
//! is retried). Everything else is retried for as long as the spool holds
//! the data: connection refused, timeouts, 5xx from QuestDB or a proxy
//! (with questdb-rs, after its own `retry_timeout`), authentication, and
//! buffer limits. A batch is flushed in requests of at most
//! [`FLUSH_BYTES`], far below the default `max_buf_size` (100 MiB), so a
//! backlog never makes a request too large to send; adit's writer keeps
//! requests under a smaller `max_buf_size` from the start, and with
//! questdb-rs the request size is quartered at each refusal until it fits.

pub mod conf;
pub mod http;
pub mod ilp;
pub mod response;
#[cfg(test)]
mod test_server;

use std::sync::Arc;

use adit_core::{PointRegistry, Reading, Reason, Value};
use adit_pipeline::{Sink, SinkError};
use questdb::ingress::{Buffer, ColumnName, ProtocolVersion, Sender, TableName, TimestampMicros};

use crate::conf::Protocol;
use crate::http::IlpHttp;
use crate::ilp::{IlpVersion, RowBuffer};
use questdb::ErrorCode;

/// Largest ILP request body adit builds (several requests per batch above it).
pub const FLUSH_BYTES: usize = 8 * 1024 * 1024;

/// The connection string, kept out of logs.
#[derive(Clone)]
pub struct Conf(pub String);

impl std::fmt::Debug for Conf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conf(<redacted>)")
    }
}

pub struct QuestDbSink {
    conf: Conf,
    table: String,
    registry: Arc<PointRegistry>,
    /// adit's own writer, for the connection strings it serves.
    own: Option<OwnWriter>,
    sender: Option<Sender>,
    /// The request buffer, kept between batches (its capacity too): a fresh
    /// one per batch grew by doubling, copying each batch several times.
    /// Made anew with each new sender (its protocol version).
    buffer: Option<Buffer>,
    /// Request size in force: [`FLUSH_BYTES`], quartered after questdb-rs
    /// refused a request as larger than its `max_buf_size`.
    flush_bytes: usize,
}

impl QuestDbSink {
    /// Does not connect yet: the first write does, so that adit starts (and
    /// spools) while the database is down.
    pub fn new(conf: Conf, table: String, registry: Arc<PointRegistry>) -> Self {
        let own = conf::parse(&conf.0).map(|http| OwnWriter {
            flush_bytes: FLUSH_BYTES.min(http.max_buf_size),
            http: IlpHttp::new(http),
            rows: None,
            asked_on: 0,
        });
        Self {
            conf,
            table,
            registry,
            own,
            sender: None,
            buffer: None,
            flush_bytes: FLUSH_BYTES,
        }
    }
}

/// adit's ILP/HTTP writer and its request body.
struct OwnWriter {
    http: IlpHttp,
    /// Made once the protocol version is known.
    rows: Option<RowBuffer>,
    /// The connection the version was asked on (`protocol_version=auto`
    /// asks again on each new one: the server may have been replaced).
    asked_on: u64,
    flush_bytes: usize,
}

impl OwnWriter {
    /// The request body, in the version the server speaks.
    fn rows(&mut self, table: &str) -> Result<&mut RowBuffer, SinkError> {
        self.ensure_rows(table)?;
        self.rows
            .as_mut()
            .ok_or_else(|| SinkError::Retryable("no request body".into()))
    }

    /// Makes the request body once the version is known (asked again on a
    /// new connection under `protocol_version=auto`).
    fn ensure_rows(&mut self, table: &str) -> Result<(), SinkError> {
        let auto = self.http.conf().protocol == Protocol::Auto;
        if auto && self.asked_on != self.http.connects() {
            self.rows = None;
        }
        if self.rows.is_none() {
            let version = match self.http.conf().protocol {
                Protocol::Fixed(v) => v,
                Protocol::Auto => {
                    if self.http.server_versions()?.contains(&2) {
                        IlpVersion::V2
                    } else {
                        IlpVersion::V1
                    }
                }
            };
            self.rows = Some(RowBuffer::new(version, table));
            self.asked_on = self.http.connects();
        }
        Ok(())
    }

    /// Passes a request's outcome on; after a failure, the next request
    /// starts on a fresh connection and asks the version again.
    fn settle(&mut self, sent: Result<(), SinkError>) -> Result<(), SinkError> {
        if sent.is_err() {
            self.http.disconnect();
            self.rows = None;
        }
        sent
    }

    fn write(
        &mut self,
        table: &str,
        registry: &PointRegistry,
        readings: &[Reading],
    ) -> Result<u64, SinkError> {
        TableName::new(table).map_err(|e| SinkError::Permanent(format!("encode: {}", e.msg())))?;
        let flush_bytes = self.flush_bytes;
        let (mut done, mut sent_rows) = (0, 0);
        while done < readings.len() {
            self.ensure_rows(table)?;
            let Some(rows) = self.rows.as_mut() else {
                return Err(SinkError::Retryable("no request body".into()));
            };
            rows.clear();
            done += rows
                .encode_up_to(registry, &readings[done..], flush_bytes)
                .map_err(|e| SinkError::Permanent(format!("encode: {e}")))?;
            if rows.rows() == 0 {
                continue;
            }
            sent_rows += rows.rows() as u64;
            let sent = self.http.write(rows.as_bytes());
            self.settle(sent)?;
        }
        // Rows accepted (a reading of a point the registry lacks has no row).
        Ok(sent_rows)
    }

    fn write_alerts(
        &mut self,
        table: &str,
        alerts: &[adit_spool::AlertRecord],
    ) -> Result<(), SinkError> {
        let version = match self.rows(table)?.version() {
            IlpVersion::V1 => ProtocolVersion::V1,
            IlpVersion::V2 => ProtocolVersion::V2,
        };
        let mut buffer = Buffer::new(version);
        encode_alerts(&mut buffer, alerts)
            .map_err(|e| SinkError::Permanent(format!("encode: {}", e.msg())))?;
        let sent = self.http.write(buffer.as_bytes());
        self.settle(sent)
    }
}

/// Appends one ILP row per reading to `buffer`. The table name is checked
/// once per call; column names are constants of this file, valid by
/// construction, so they skip questdb-rs's per-row name validation.
pub fn encode_rows(
    buffer: &mut Buffer,
    table: &str,
    registry: &PointRegistry,
    readings: &[Reading],
) -> Result<(), questdb::Error> {
    encode_rows_up_to(buffer, table, registry, readings, usize::MAX).map(|_| ())
}

/// Like [`encode_rows`], but stops after the row that brings the buffer to
/// `max_bytes` or more; returns how many readings it consumed.
pub fn encode_rows_up_to(
    buffer: &mut Buffer,
    table: &str,
    registry: &PointRegistry,
    readings: &[Reading],
    max_bytes: usize,
) -> Result<usize, questdb::Error> {
    let table = TableName::new(table)?;
    let col = ColumnName::new_unchecked;
    let (point, device, quality, reason_col) =
        (col("point"), col("device"), col("quality"), col("reason"));
    let (value, value_int, value_text) = (col("value"), col("value_int"), col("value_text"));
    let (reason_code, source_us, received_us) =
        (col("reason_code"), col("source_us"), col("received_us"));
    for (i, r) in readings.iter().enumerate() {
        if buffer.len() >= max_bytes {
            return Ok(i);
        }
        let Some(meta) = registry.get(r.point) else {
            continue;
        };
        let reason = r.quality.reason();
        let designated = r.stored_ts();
        buffer
            .table(table)?
            .symbol(point, meta.name.as_ref())?
            .symbol(device, meta.device.as_ref())?
            .symbol(quality, r.quality.class().name())?
            .symbol_opt(reason_col, reason.map(Reason::name))?;
        match &r.value {
            Some(Value::F64(v)) => {
                buffer.column_f64(value, *v)?;
            }
            Some(Value::I64(v)) => {
                buffer.column_f64(value, *v as f64)?;
                if !fits_f64_exactly(*v) {
                    buffer.column_i64(value_int, *v)?;
                }
            }
            Some(Value::Bool(v)) => {
                buffer.column_f64(value, f64::from(u8::from(*v)))?;
            }
            Some(Value::Text(t)) => {
                buffer.column_str(value_text, t.as_ref())?;
            }
            None => {}
        }
        buffer
            .column_i64_opt(reason_code, reason.and_then(Reason::detail).map(i64::from))?
            .column_i64_opt(
                source_us,
                (designated != r.source_ts).then(|| r.source_ts.as_micros()),
            )?
            .column_i64(received_us, r.received_ts.as_micros())?
            .at(TimestampMicros::new(designated.as_micros()))?;
    }
    Ok(readings.len())
}

/// Whether a double holds `v` exactly (|v| ≤ 2^53).
pub(crate) fn fits_f64_exactly(v: i64) -> bool {
    const EXACT: u64 = 1 << 53;
    v.unsigned_abs() <= EXACT
}

/// Appends one ILP row per alert transition to table `alerts`.
pub fn encode_alerts(
    buffer: &mut Buffer,
    alerts: &[adit_spool::AlertRecord],
) -> Result<(), questdb::Error> {
    for a in alerts {
        buffer
            .table("alerts")?
            .symbol("rule", a.rule.as_str())?
            .symbol("subject", a.subject.as_str())?
            .symbol("state", if a.fired { "firing" } else { "resolved" })?
            .symbol("severity", a.severity.as_str())?
            .column_str("summary", a.summary.as_str())?
            .column_str("labels", a.labels_json.as_str())?
            .at(TimestampMicros::new(a.ts.as_micros()))?;
    }
    Ok(())
}

/// Whether a failed flush is certainly about the data (see the crate docs):
/// QuestDB's 400 answer to a bad row has `code: invalid` and the line. Its
/// 500 answers (disk full, a column file it cannot map) carry a line too,
/// with `code: internal error`: those are the database's trouble, retried.
///
/// QuestDB answers with `Content-Type: application/json; charset=utf-8`,
/// which questdb-rs 7.2.1 does not take for JSON (it compares the whole
/// header): its message is then the raw body, read here the same way.
pub fn is_data_rejection(code: ErrorCode, msg: &str) -> bool {
    if code != ErrorCode::ServerFlushError {
        return false;
    }
    if msg.contains("code: invalid") && msg.contains("line: ") {
        return true;
    }
    msg.strip_prefix("Could not flush buffer: ")
        .and_then(|body| serde_json::from_str::<serde_json::Value>(body.trim()).ok())
        .is_some_and(|json| {
            json.get("code").and_then(serde_json::Value::as_str) == Some("invalid")
                && json.get("line").is_some_and(serde_json::Value::is_i64)
        })
}

/// questdb-rs refused a request as larger than its `max_buf_size`.
fn is_buffer_limit(code: ErrorCode, msg: &str) -> bool {
    code == ErrorCode::InvalidApiCall && msg.contains("exceeds maximum")
}

fn classify(e: &questdb::Error) -> SinkError {
    if is_data_rejection(e.code(), e.msg()) {
        SinkError::Permanent(e.msg().to_string())
    } else {
        SinkError::Retryable(e.msg().to_string())
    }
}

impl QuestDbSink {
    /// Which writer serves the connection string: `"adit"` or `"questdb-rs"`.
    pub fn writer(&self) -> &'static str {
        if self.own.is_some() {
            "adit"
        } else {
            "questdb-rs"
        }
    }

    fn sender(&mut self) -> Result<&mut Sender, SinkError> {
        if self.sender.is_none() {
            let sender = Sender::from_conf(&self.conf.0)
                .map_err(|e| SinkError::Retryable(format!("connect: {}", e.msg())))?;
            self.buffer = Some(sender.new_buffer());
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| SinkError::Retryable("no connection".into()))
    }

    /// Flushes `buffer`; after any failure the next attempt starts on a fresh
    /// connection.
    fn flush(&mut self, buffer: &mut Buffer) -> Result<(), SinkError> {
        if buffer.row_count() == 0 {
            return Ok(());
        }
        let sender = self.sender()?;
        sender.flush(buffer).map_err(|e| {
            self.sender = None;
            if is_buffer_limit(e.code(), e.msg()) {
                // A `max_buf_size` below our request size: send smaller ones.
                self.flush_bytes = (self.flush_bytes / 4).max(4096);
            }
            classify(&e)
        })
    }
}

impl QuestDbSink {
    fn write_with(
        &mut self,
        buffer: &mut Buffer,
        registry: &PointRegistry,
        readings: &[Reading],
    ) -> Result<u64, SinkError> {
        let (mut done, mut sent_rows) = (0, 0);
        while done < readings.len() {
            buffer.clear();
            done += encode_rows_up_to(
                buffer,
                &self.table,
                registry,
                &readings[done..],
                self.flush_bytes,
            )
            .map_err(|e| SinkError::Permanent(format!("encode: {}", e.msg())))?;
            sent_rows += buffer.row_count() as u64;
            self.flush(buffer)?;
        }
        // Rows accepted (a reading of a point the registry lacks has no row).
        Ok(sent_rows)
    }
}

impl Sink for QuestDbSink {
    fn name(&self) -> &'static str {
        "questdb"
    }

    fn write_alerts(&mut self, alerts: &[adit_spool::AlertRecord]) -> Result<(), SinkError> {
        if let Some(own) = self.own.as_mut() {
            return own.write_alerts(&self.table, alerts);
        }
        let mut buffer = self.sender()?.new_buffer();
        encode_alerts(&mut buffer, alerts)
            .map_err(|e| SinkError::Permanent(format!("encode: {}", e.msg())))?;
        self.flush(&mut buffer)
    }

    /// One or more requests of at most [`FLUSH_BYTES`]; a failure after a
    /// partial flush resends the whole batch, which the DEDUP keys absorb.
    fn write(&mut self, readings: &[Reading]) -> Result<u64, SinkError> {
        if let Some(own) = self.own.as_mut() {
            return own.write(&self.table, &self.registry, readings);
        }
        let registry = self.registry.clone();
        let mut buffer = match self.buffer.take() {
            Some(buffer) => buffer,
            None => self.sender()?.new_buffer(),
        };
        let result = self.write_with(&mut buffer, &registry, readings);
        buffer.clear();
        if self.sender.is_some() {
            self.buffer = Some(buffer);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::{PointId, PointMeta, Quality, Timestamp};
    use questdb::ingress::ProtocolVersion;

    fn registry() -> PointRegistry {
        let mut r = PointRegistry::new();
        r.insert(PointMeta::plain("bore_a.co", "plc", 1000))
            .unwrap();
        r
    }

    fn reading(value: Option<Value>, quality: Quality, source_us: i64) -> Reading {
        Reading {
            point: PointId(0),
            value,
            quality,
            source_ts: Timestamp(source_us),
            received_ts: Timestamp(1_800_000_000_000_000),
        }
    }

    fn wire(version: ProtocolVersion, readings: &[Reading]) -> String {
        let mut b = Buffer::new(version);
        encode_rows(&mut b, "readings", &registry(), readings).unwrap();
        String::from_utf8_lossy(b.as_bytes()).to_string()
    }

    #[test]
    fn v1_rows_are_plain_line_protocol_without_timestamp_columns() {
        let text = wire(
            ProtocolVersion::V1,
            &[
                reading(Some(Value::F64(12.5)), Quality::Good, 1_700_000_000_000_000),
                reading(
                    Some(Value::I64(-32768)),
                    Quality::Bad(Reason::OutOfRange),
                    1_700_000_000_100_000,
                ),
                reading(
                    None,
                    Quality::Bad(Reason::DeviceException(2)),
                    1_700_000_000_200_000,
                ),
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "readings,point=bore_a.co,device=plc,quality=good value=12.5,received_us=1800000000000000i 1700000000000000000",
                "readings,point=bore_a.co,device=plc,quality=bad,reason=out_of_range value=-32768.0,received_us=1800000000000000i 1700000000100000000",
                "readings,point=bore_a.co,device=plc,quality=bad,reason=device_exception reason_code=2i,received_us=1800000000000000i 1700000000200000000",
            ]
        );
        assert!(
            !text.contains("t,") && !text.contains("t "),
            "no timestamp-typed columns in v1"
        );
    }

    #[test]
    fn value_int_appears_only_where_value_would_round() {
        let exact = (1i64 << 53) + 1;
        let text = wire(
            ProtocolVersion::V1,
            &[
                reading(
                    Some(Value::I64(1 << 53)),
                    Quality::Good,
                    1_700_000_000_000_000,
                ),
                reading(
                    Some(Value::I64(exact)),
                    Quality::Good,
                    1_700_000_000_000_001,
                ),
                reading(
                    Some(Value::I64(-exact)),
                    Quality::Good,
                    1_700_000_000_000_002,
                ),
                reading(
                    Some(Value::I64(i64::MIN)),
                    Quality::Good,
                    1_700_000_000_000_003,
                ),
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines[0].contains("value_int"), "{}", lines[0]);
        assert!(
            lines[1].contains("value_int=9007199254740993i"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("value_int=-9007199254740993i"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("value_int=-9223372036854775808i"),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn an_invalid_source_clock_lands_at_receive_time_with_the_original_kept() {
        let text = wire(
            ProtocolVersion::V1,
            &[reading(
                Some(Value::F64(1.0)),
                Quality::Bad(Reason::ClockInvalid),
                -5_000_000,
            )],
        );
        assert!(text.contains("source_us=-5000000i"), "{text}");
        assert!(
            text.trim_end().ends_with(" 1800000000000000000"),
            "designated timestamp = receive time: {text}"
        );
    }

    #[test]
    fn v2_encodes_doubles_in_binary_form() {
        let v1 = wire(
            ProtocolVersion::V1,
            &[reading(Some(Value::F64(0.1)), Quality::Good, 1)],
        );
        let v2 = wire(
            ProtocolVersion::V2,
            &[reading(Some(Value::F64(0.1)), Quality::Good, 1)],
        );
        assert!(v1.contains("value=0.1,"));
        assert!(!v2.contains("value=0.1,"), "v2 sends f64 as binary: {v2:?}");
        assert!(
            v2.starts_with("readings,point=bore_a.co,device=plc,quality=good value=="),
            "{v2:?}"
        );
    }

    #[test]
    fn text_values_go_to_their_own_column_and_names_are_escaped() {
        let mut r = PointRegistry::new();
        r.insert(PointMeta::plain("gate 1,north", "plc", 1000))
            .unwrap();
        let mut b = Buffer::new(ProtocolVersion::V1);
        encode_rows(
            &mut b,
            "readings",
            &r,
            &[reading(
                Some(Value::Text("OPEN \"A\"".into())),
                Quality::Good,
                1,
            )],
        )
        .unwrap();
        let text = String::from_utf8_lossy(b.as_bytes()).to_string();
        assert!(
            text.starts_with("readings,point=gate\\ 1\\,north,"),
            "{text}"
        );
        assert!(text.contains("value_text=\"OPEN \\\"A\\\"\""), "{text}");
    }

    #[test]
    fn a_protocol_status_is_written_under_its_name_with_its_32_bit_code() {
        let status = Reason::status(0x808A_0000, "BadSensorFailure");
        let text = wire(
            ProtocolVersion::V1,
            &[reading(None, Quality::Bad(status), 1_700_000_000_000_000)],
        );
        assert!(text.contains(",reason=BadSensorFailure "), "{text}");
        assert!(text.contains("reason_code=2156527616i"), "{text}");
    }

    #[test]
    fn only_a_rejection_that_names_a_row_is_permanent() {
        let permanent = "Could not flush buffer: cast error for line protocol float [id: 5c2d, code: invalid, line: 3]";
        assert!(is_data_rejection(ErrorCode::ServerFlushError, permanent));
        let raw = r#"Could not flush buffer: {"code":"invalid","message":"cast error","line":2,"errorId":"a"}"#;
        assert!(
            is_data_rejection(ErrorCode::ServerFlushError, raw),
            "QuestDB's body as questdb-rs passes it on"
        );
        let raw_no_line = r#"Could not flush buffer: {"code":"invalid","message":"x"}"#;
        assert!(!is_data_rejection(ErrorCode::ServerFlushError, raw_no_line));
        for (code, msg) in [
            (ErrorCode::ServerFlushError, "Could not flush buffer: <html>503 Service Unavailable</html>"),
            (ErrorCode::ServerFlushError, "Could not flush buffer: internal error [id: 1, code: internal error]"),
            (ErrorCode::ServerFlushError, "Could not flush buffer: could not open read-write [id: 9, code: internal error, line: 1]"),
            (ErrorCode::SocketError, "Could not flush buffer: timed out"),
            (ErrorCode::InvalidApiCall, "Could not flush buffer: Buffer size of 200 exceeds maximum configured allowed size of 100 bytes."),
            (ErrorCode::AuthError, "Could not flush buffer: HTTP endpoint authentication error [code: 401]"),
        ] {
            assert!(!is_data_rejection(code, msg), "retryable: {msg}");
        }
    }

    #[test]
    fn every_dedup_key_of_the_schema_is_on_every_row_and_tells_distinct_samples_apart() {
        let schema = include_str!("../../../deploy/questdb/schema.sql");
        let keys: Vec<&str> = schema
            .split("DEDUP UPSERT KEYS(")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap()
            .split(',')
            .map(str::trim)
            .collect();
        assert_eq!(keys, vec!["ts", "point", "received_us"]);
        // A one-second device clock polled twice within its second.
        let mut second = reading(Some(Value::F64(1.0)), Quality::Good, 1_700_000_000_000_000);
        second.received_ts = Timestamp(second.received_ts.0 + 200_000);
        let text = wire(
            ProtocolVersion::V1,
            &[
                reading(Some(Value::F64(1.0)), Quality::Good, 1_700_000_000_000_000),
                second,
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines {
            for key in &keys[1..] {
                assert!(line.contains(&format!("{key}=")), "{key} missing in {line}");
            }
        }
        assert_ne!(lines[0], lines[1], "distinct samples, distinct keys");
    }

    #[test]
    fn a_large_batch_is_split_into_requests_of_bounded_size() {
        let readings: Vec<Reading> = (0..1000)
            .map(|i| {
                reading(
                    Some(Value::F64(f64::from(i))),
                    Quality::Good,
                    1_700_000_000_000_000 + i64::from(i),
                )
            })
            .collect();
        let mut b = Buffer::new(ProtocolVersion::V1);
        let mut done = 0;
        let mut requests = 0;
        while done < readings.len() {
            b.clear();
            done += encode_rows_up_to(&mut b, "readings", &registry(), &readings[done..], 10_000)
                .unwrap();
            assert!(b.len() < 10_000 + 400, "bounded: {}", b.len());
            requests += 1;
        }
        assert!(requests > 5, "{requests} requests");
    }

    /// A server whose `/settings` answers `settings` (a status line and
    /// body) and which records each request's method, path and body.
    fn scripted_server(
        settings: &'static str,
    ) -> (u16, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
        crate::test_server::serve(usize::MAX, move |request| {
            if request.starts_with("GET /settings") {
                settings
            } else {
                "HTTP/1.1 204 No Content\r\n\r\n"
            }
        })
    }

    #[test]
    fn protocol_auto_asks_the_server_and_speaks_the_version_it_lists() {
        let listing = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 54\r\n\r\n{\"config\":{\"line.proto.support.versions\":[1,2],\"x\":1}}";
        let missing = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        for (settings, v2) in [(listing, true), (missing, false)] {
            let (port, requests) = scripted_server(settings);
            let mut sink = QuestDbSink::new(
                Conf(format!("http::addr=127.0.0.1:{port};")),
                "readings".into(),
                Arc::new(registry()),
            );
            assert_eq!(sink.writer(), "adit");
            let r = reading(Some(Value::F64(0.1)), Quality::Good, 1_700_000_000_000_000);
            assert_eq!(sink.write(std::slice::from_ref(&r)).unwrap(), 1);
            let (first, _) = requests.recv().unwrap();
            assert_eq!(first, "GET /settings HTTP/1.1");
            let (second, body) = requests.recv().unwrap();
            assert_eq!(second, "POST /write?precision=n HTTP/1.1");
            let version = if v2 {
                ProtocolVersion::V2
            } else {
                ProtocolVersion::V1
            };
            let mut expected = Buffer::new(version);
            encode_rows(&mut expected, "readings", &registry(), &[r]).unwrap();
            assert_eq!(body, expected.as_bytes(), "v2 listed: {v2}");
        }
    }

    #[test]
    fn the_connection_string_is_never_printed() {
        assert_eq!(
            format!("{:?}", Conf("http::addr=db:9000;password=hunter2;".into())),
            "Conf(<redacted>)"
        );
    }
}
