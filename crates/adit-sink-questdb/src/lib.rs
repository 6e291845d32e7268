//! The QuestDB sink: readings as ILP rows through `questdb-rs` (blocking; it
//! runs on its sink stage's own thread).
//!
//! One row per reading, in table `readings` (configurable):
//! - symbols `point`, `device`, `quality` (`good`/`uncertain`/`bad`) and
//!   `reason` (absent when good);
//! - columns `value` (double: f64, i64 and bool as a number), `value_int`
//!   (long, exact for i64), `value_text` (text values), `reason_code` (long,
//!   the exception code), `source_us` (the device's own time, µs since the
//!   epoch) and `received_us`;
//! - designated timestamp: the source time, or the receive time when the
//!   source clock was judged invalid (so rows from a device stuck in 1970
//!   still land now, with their original time kept in `source_us`).
//!
//! Timestamp columns are written as plain longs (`source_us`, `received_us`):
//! in ILP v1 a timestamp column is `<micros>t`, which other line-protocol
//! servers reject. See `deploy/questdb/schema.sql` for the table with DEDUP
//! keys that make replays idempotent.
//!
//! Errors: connection and server-availability problems are retryable; a
//! server rejection (`ServerFlushError`) is retried twice, then treated as
//! permanent (the batch is quarantined by the sink stage), because
//! questdb-rs does not expose whether it was a 4xx or a 5xx after its own
//! retries; a row that cannot be encoded is permanent at once.

use std::sync::Arc;

use adit_core::{PointRegistry, Reading, Reason, Value};
use adit_pipeline::{Sink, SinkError};
use questdb::ingress::{Buffer, ColumnName, Sender, TableName, TimestampMicros};
use questdb::ErrorCode;

/// Server rejections of one batch before it is treated as permanent.
const REJECTIONS_BEFORE_PERMANENT: u32 = 3;

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
    sender: Option<Sender>,
    rejections: u32,
}

impl QuestDbSink {
    /// Does not connect yet: the first write does, so that adit starts (and
    /// spools) while the database is down.
    pub fn new(conf: Conf, table: String, registry: Arc<PointRegistry>) -> Self {
        Self {
            conf,
            table,
            registry,
            sender: None,
            rejections: 0,
        }
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
    let table = TableName::new(table)?;
    let col = ColumnName::new_unchecked;
    let (point, device, quality, reason_col) =
        (col("point"), col("device"), col("quality"), col("reason"));
    let (value, value_int, value_text) = (col("value"), col("value_int"), col("value_text"));
    let (reason_code, source_us, received_us) =
        (col("reason_code"), col("source_us"), col("received_us"));
    for r in readings {
        let Some(meta) = registry.get(r.point) else {
            continue;
        };
        let reason = r.quality.reason();
        let designated = if reason == Some(Reason::ClockInvalid) {
            r.received_ts
        } else {
            r.source_ts
        };
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
                buffer
                    .column_f64(value, *v as f64)?
                    .column_i64(value_int, *v)?;
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
            .column_i64(source_us, r.source_ts.as_micros())?
            .column_i64(received_us, r.received_ts.as_micros())?
            .at(TimestampMicros::new(designated.as_micros()))?;
    }
    Ok(())
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

fn is_connection_problem(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::CouldNotResolveAddr
            | ErrorCode::SocketError
            | ErrorCode::ConnectTimeout
            | ErrorCode::TlsError
            | ErrorCode::AuthError
            | ErrorCode::ConfigError
            | ErrorCode::HttpNotSupported
            | ErrorCode::ProtocolVersionError
            | ErrorCode::FailoverRetry
    )
}

impl QuestDbSink {
    /// Sends one buffer built by `fill`, classifying errors (see the crate docs).
    fn send(
        &mut self,
        fill: impl FnOnce(&mut Buffer) -> Result<(), questdb::Error>,
    ) -> Result<(), SinkError> {
        if self.sender.is_none() {
            let sender = Sender::from_conf(&self.conf.0)
                .map_err(|e| SinkError::Retryable(format!("connect: {}", e.msg())))?;
            self.sender = Some(sender);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err(SinkError::Retryable("no connection".into()));
        };
        let mut buffer = sender.new_buffer();
        if let Err(e) = fill(&mut buffer) {
            return Err(SinkError::Permanent(format!("encode: {}", e.msg())));
        }
        if buffer.row_count() == 0 {
            return Ok(());
        }
        match sender.flush(&mut buffer) {
            Ok(()) => {
                self.rejections = 0;
                Ok(())
            }
            Err(e) => {
                // Whatever happened, start the next attempt on a fresh connection.
                self.sender = None;
                if is_connection_problem(e.code()) {
                    return Err(SinkError::Retryable(e.msg().to_string()));
                }
                self.rejections += 1;
                if self.rejections >= REJECTIONS_BEFORE_PERMANENT {
                    self.rejections = 0;
                    Err(SinkError::Permanent(e.msg().to_string()))
                } else {
                    Err(SinkError::Retryable(e.msg().to_string()))
                }
            }
        }
    }
}

impl Sink for QuestDbSink {
    fn name(&self) -> &'static str {
        "questdb"
    }

    fn write_alerts(&mut self, alerts: &[adit_spool::AlertRecord]) -> Result<(), SinkError> {
        self.send(|buffer| encode_alerts(buffer, alerts))
    }

    fn write(&mut self, readings: &[Reading]) -> Result<(), SinkError> {
        let (table, registry) = (self.table.clone(), self.registry.clone());
        self.send(|buffer| encode_rows(buffer, &table, &registry, readings))
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
                "readings,point=bore_a.co,device=plc,quality=good value=12.5,source_us=1700000000000000i,received_us=1800000000000000i 1700000000000000000",
                "readings,point=bore_a.co,device=plc,quality=bad,reason=out_of_range value=-32768.0,value_int=-32768i,source_us=1700000000100000i,received_us=1800000000000000i 1700000000100000000",
                "readings,point=bore_a.co,device=plc,quality=bad,reason=device_exception reason_code=2i,source_us=1700000000200000i,received_us=1800000000000000i 1700000000200000000",
            ]
        );
        assert!(
            !text.contains("t,") && !text.contains("t "),
            "no timestamp-typed columns in v1"
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
    fn the_connection_string_is_never_printed() {
        assert_eq!(
            format!("{:?}", Conf("http::addr=db:9000;password=hunter2;".into())),
            "Conf(<redacted>)"
        );
    }
}
