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
//!   not the designated timestamp) and `received_us` (only when it is not
//!   the designated timestamp either, or the row has no other field: a
//!   Modbus reading is received when it is read);
//! - designated timestamp: the source time, or the receive time when the
//!   source clock was judged invalid (so rows from a device stuck in 1970
//!   still land now, with their original time kept in `source_us`).
//!
//! No column repeats another: a row costs the encoder, the wire and the
//! database only what it says (`value_int` and `source_us` would otherwise
//! double the numbers of almost every row, `received_us` those of every
//! Modbus row: 30 of a typical row's 108 bytes).
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
//! names the line, `code: invalid`: one rule, [`response::names_bad_row`],
//! whatever the `Content-Type`; [`response::classify`] applies it for adit's
//! writer, [`is_data_rejection`] for questdb-rs's; a 500 that names a line,
//! such as a full disk on the database host, is `code: internal error` and
//! is retried). Everything else is retried for as long as the spool holds
//! the data: connection refused, timeouts, 5xx from QuestDB or a proxy
//! (with questdb-rs, after its own `retry_timeout`), authentication, and
//! buffer limits. A batch is flushed in requests of at most
//! [`FLUSH_BYTES`], far below the default `max_buf_size` (100 MiB), so a
//! backlog never makes a request too large to send; adit's writer keeps
//! requests under a smaller `max_buf_size` from the start and, after an
//! HTTP 413 (a proxy's body limit: nginx's default is 1 MiB), sends the
//! rest in requests a quarter of the refused one's size; with questdb-rs
//! the request size is quartered at each refusal of its own `max_buf_size`
//! until it fits (a proxy's 413 there is retried as it is).

pub mod conf;
pub mod http;
pub mod ilp;
pub mod response;
#[cfg(test)]
mod test_server;

use std::sync::Arc;

use adit_core::{PointRegistry, Reading, Reason, Timestamp, Value};
use adit_pipeline::{Sink, SinkError};
use questdb::ingress::{Buffer, ColumnName, ProtocolVersion, Sender, TableName, TimestampMicros};

use crate::http::{IlpHttp, Refused};
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
            max_flush_bytes: FLUSH_BYTES.min(http.max_buf_size),
            accepted_since_resize: 0,
            http: IlpHttp::new(http),
            rows: None,
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
    /// The request body, kept between batches (its capacity too); made
    /// anew only when the version to speak changes.
    rows: Option<RowBuffer>,
    /// Request size in force: at most `max_flush_bytes`, lowered after an
    /// HTTP 413 (see [`OwnWriter::shrink`]), raised again slowly.
    flush_bytes: usize,
    /// [`FLUSH_BYTES`], or `max_buf_size` when smaller.
    max_flush_bytes: usize,
    /// Requests accepted since the request size last changed.
    accepted_since_resize: u32,
}

/// Smallest request size a 413 lowers `flush_bytes` to.
const MIN_FLUSH_BYTES: usize = 4096;

/// Requests accepted at a lowered size before it is doubled again (a
/// proxy's limit raised, or a 413 that was a passing fault): at most one
/// refused request in this many when the limit stays.
const REGROW_AFTER: u32 = 64;

/// How many times one request is encoded again because each new
/// connection's server spoke another version (a load balancer in front of
/// databases of mixed versions) before the batch is retried later.
const MAX_REENCODES: u32 = 3;

/// The body for `version`, reused when it already speaks it.
fn body_for<'a>(
    slot: &'a mut Option<RowBuffer>,
    version: IlpVersion,
    table: &str,
) -> &'a mut RowBuffer {
    let rows = match slot.take() {
        Some(rows) if rows.version() == version => rows,
        _ => RowBuffer::new(version, table),
    };
    slot.insert(rows)
}

impl OwnWriter {
    /// After an HTTP 413 on a request of `refused` bytes holding `rows`
    /// rows: a strictly smaller request size (a quarter of the refused
    /// request, at most half the size in force, at least
    /// [`MIN_FLUSH_BYTES`]), or the error when it cannot shrink: a single
    /// row above that size the server refuses never passes, and is a
    /// rejection of the data (its batch is quarantined, and can be sent
    /// again by `adit spool quarantine retry` once the limit is raised); a
    /// smaller one refused is the server's fault, retried.
    fn shrink(&mut self, refused: usize, rows: usize, e: SinkError) -> Result<(), SinkError> {
        if rows <= 1 && refused > MIN_FLUSH_BYTES {
            return Err(SinkError::Permanent(format!(
                "one row of {refused} bytes is larger than the server or a proxy in front of it \
                 accepts (HTTP 413): {e}"
            )));
        }
        if rows <= 1 || self.flush_bytes <= MIN_FLUSH_BYTES {
            return Err(e);
        }
        let next = (refused / 4).min(self.flush_bytes / 2).max(MIN_FLUSH_BYTES);
        tracing::warn!(
            sink = "questdb",
            refused_bytes = refused,
            now_bytes = next,
            error = %e,
            "a request was refused as too large (HTTP 413, often a proxy's body limit): \
             sending smaller ones"
        );
        self.flush_bytes = next;
        self.accepted_since_resize = 0;
        Ok(())
    }

    /// A request was accepted: a lowered size grows back, slowly.
    fn accepted(&mut self) {
        if self.flush_bytes >= self.max_flush_bytes {
            return;
        }
        self.accepted_since_resize += 1;
        if self.accepted_since_resize >= REGROW_AFTER {
            self.flush_bytes = (self.flush_bytes * 2).min(self.max_flush_bytes);
            self.accepted_since_resize = 0;
        }
    }

    /// After a failure, the next request starts on a fresh connection (and
    /// under `auto` asks the version again).
    fn fail(&mut self, e: SinkError) -> SinkError {
        self.http.disconnect();
        e
    }

    fn write(
        &mut self,
        table: &str,
        registry: &PointRegistry,
        readings: &[Reading],
    ) -> Result<u64, SinkError> {
        TableName::new(table).map_err(|e| SinkError::Permanent(format!("encode: {}", e.msg())))?;
        let (mut done, mut sent_rows, mut reencodes) = (0, 0, 0);
        while done < readings.len() {
            let version = self.http.version()?;
            let rows = body_for(&mut self.rows, version, table);
            rows.clear();
            let taken = rows
                .encode_up_to(registry, &readings[done..], self.flush_bytes)
                .map_err(|e| SinkError::Permanent(format!("encode: {e}")))?;
            if rows.rows() == 0 {
                done += taken;
                continue;
            }
            match self.http.write(rows.as_bytes(), version) {
                Ok(()) => {
                    done += taken;
                    sent_rows += rows.rows() as u64;
                    self.accepted();
                }
                Err(Refused::Version(now)) if reencodes < MAX_REENCODES => {
                    reencodes += 1;
                    tracing::info!(
                        sink = "questdb",
                        from = ?version,
                        to = ?now,
                        "the database now speaks another line protocol version: encoding again"
                    );
                }
                Err(Refused::TooLarge(e)) => {
                    let (refused, count) = (rows.len(), rows.rows());
                    if let Err(e) = self.shrink(refused, count, e) {
                        return Err(self.fail(e));
                    }
                }
                Err(refused) => return Err(self.fail(refused.into())),
            }
        }
        // Rows accepted (a reading of a point the registry lacks has no row).
        Ok(sent_rows)
    }

    fn write_alerts(
        &mut self,
        table: &str,
        alerts: &[adit_spool::AlertRecord],
    ) -> Result<(), SinkError> {
        let mut reencodes = 0;
        loop {
            let version = self.http.version()?;
            // The rows' body is made here too, so it is ready for readings.
            body_for(&mut self.rows, version, table);
            let mut buffer = Buffer::new(match version {
                IlpVersion::V1 => ProtocolVersion::V1,
                IlpVersion::V2 => ProtocolVersion::V2,
            });
            encode_alerts(&mut buffer, alerts)
                .map_err(|e| SinkError::Permanent(format!("encode: {}", e.msg())))?;
            match self.http.write(buffer.as_bytes(), version) {
                Ok(()) => return Ok(()),
                Err(Refused::Version(_)) if reencodes < MAX_REENCODES => reencodes += 1,
                Err(refused) => return Err(self.fail(refused.into())),
            }
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
        let code = reason.and_then(Reason::detail).map(i64::from);
        let source = (designated != r.source_ts).then(|| r.source_ts.as_micros());
        let no_field_yet = r.value.is_none() && code.is_none() && source.is_none();
        let received = needs_received_us(r.received_ts, designated, no_field_yet)
            .then(|| r.received_ts.as_micros());
        buffer
            .column_i64_opt(reason_code, code)?
            .column_i64_opt(source_us, source)?
            .column_i64_opt(received_us, received)?
            .at(TimestampMicros::new(designated.as_micros()))?;
    }
    Ok(readings.len())
}

/// Whether a row writes `received_us`: only when it says something the
/// designated timestamp does not (a Modbus reading is received when it is
/// read: both times are one), or when the row would otherwise have no field
/// at all (a line needs one). Absent means "the designated timestamp":
/// `coalesce(received_us, ts)`. A function of the reading alone, so a
/// replayed row has the same DEDUP key as the first.
pub(crate) fn needs_received_us(
    received: Timestamp,
    designated: Timestamp,
    no_field_yet: bool,
) -> bool {
    received != designated || no_field_yet
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

/// Whether a failed questdb-rs flush is certainly about the data: the rule
/// of adit's own writer, [`response::names_bad_row`], applied to what
/// questdb-rs kept of the answer (it does not keep the status).
///
/// QuestDB answers with `Content-Type: application/json; charset=utf-8`,
/// which questdb-rs 7.2.1 does not take for JSON (it compares the whole
/// header): its message is then the raw body, parsed here. When it did
/// take the body for JSON, the message is its own rendering of the same
/// fields (`… [id: …, code: invalid, line: 3]`).
pub fn is_data_rejection(code: ErrorCode, msg: &str) -> bool {
    if code != ErrorCode::ServerFlushError {
        return false;
    }
    if names_bad_row_rendered(msg) {
        return true;
    }
    msg.strip_prefix("Could not flush buffer: ")
        .and_then(|body| serde_json::from_str::<serde_json::Value>(body.trim()).ok())
        .is_some_and(|json| response::names_bad_row(&json))
}

/// The same rule read from questdb-rs's rendering of QuestDB's JSON
/// error: a message ending in `[id: …, code: invalid, line: 3]`.
fn names_bad_row_rendered(msg: &str) -> bool {
    let Some((_, fields)) = msg.strip_suffix(']').and_then(|m| m.rsplit_once(" [")) else {
        return false;
    };
    let field = |name: &str| {
        fields
            .split(", ")
            .find_map(|f| f.strip_prefix(name)?.strip_prefix(": "))
    };
    field("code") == Some("invalid") && field("line").is_some_and(|l| l.parse::<i64>().is_ok())
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

    /// 1000 good readings, one microsecond apart.
    fn thousand() -> Vec<Reading> {
        (0..1000)
            .map(|i| {
                reading(
                    Some(Value::F64(f64::from(i))),
                    Quality::Good,
                    1_700_000_000_000_000 + i64::from(i),
                )
            })
            .collect()
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
    fn received_us_is_left_out_where_it_repeats_the_timestamp() {
        let at = |r: Reading| Reading {
            received_ts: r.source_ts,
            ..r
        };
        let text = wire(
            ProtocolVersion::V1,
            &[
                // Modbus: received when read, no clock of its own.
                at(reading(
                    Some(Value::F64(12.5)),
                    Quality::Good,
                    1_700_000_000_000_000,
                )),
                // No value, no code: received_us is the row's only field.
                at(reading(
                    None,
                    Quality::Bad(Reason::CommFailure),
                    1_700_000_000_100_000,
                )),
                // A device time of its own: the receive time says more.
                reading(Some(Value::F64(1.0)), Quality::Good, 1_700_000_000_200_000),
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "readings,point=bore_a.co,device=plc,quality=good value=12.5 1700000000000000000",
                "readings,point=bore_a.co,device=plc,quality=bad,reason=comm_failure received_us=1700000000100000i 1700000000100000000",
                "readings,point=bore_a.co,device=plc,quality=good value=1.0,received_us=1800000000000000i 1700000000200000000",
            ]
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
            // Words in a message are not the rendered fields.
            (ErrorCode::ServerFlushError, "Could not flush buffer: proxy says code: invalid, line: 1 of config [code: bad gateway]"),
            (ErrorCode::ServerFlushError, "Could not flush buffer: x [code: invalid, line: three]"),
        ] {
            assert!(!is_data_rejection(code, msg), "retryable: {msg}");
        }
    }

    #[test]
    fn every_row_names_its_dedup_key_and_distinct_samples_have_distinct_keys() {
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
        // The key a row is stored under: (ts, point, received_us or NULL).
        let key = |line: &str| -> (String, String, Option<String>) {
            let point = line
                .split(',')
                .find_map(|t| t.strip_prefix("point="))
                .unwrap()
                .to_string();
            let received = line
                .split([' ', ','])
                .find_map(|t| t.strip_prefix("received_us="))
                .map(str::to_string);
            let ts = line.rsplit(' ').next().unwrap().to_string();
            (ts, point, received)
        };
        let keys_of = |readings: &[Reading]| -> Vec<(String, String, Option<String>)> {
            wire(ProtocolVersion::V1, readings)
                .lines()
                .map(key)
                .collect()
        };
        // A one-second device clock polled twice within its second.
        let first = reading(Some(Value::F64(1.0)), Quality::Good, 1_700_000_000_000_000);
        let mut second = first.clone();
        second.received_ts = Timestamp(second.received_ts.0 + 200_000);
        let k = keys_of(&[first.clone(), second]);
        assert_ne!(k[0], k[1], "distinct samples, distinct keys");
        // Modbus: received when read, received_us left out (NULL).
        let polled = Reading {
            received_ts: first.source_ts,
            ..first
        };
        let mut failed = polled.clone();
        failed.value = None;
        failed.quality = Quality::Bad(Reason::CommFailure);
        let k = keys_of(&[polled.clone(), failed]);
        assert_eq!(k[0].2, None, "{k:?}");
        assert_eq!(
            k[1].2.as_deref(),
            Some("1700000000000000i"),
            "the only field: {k:?}"
        );
        assert_ne!(k[0], k[1], "distinct samples, distinct keys");
        // A replay is the same row, byte for byte (the same key).
        assert_eq!(
            wire(ProtocolVersion::V1, std::slice::from_ref(&polled)),
            wire(ProtocolVersion::V1, &[polled])
        );
    }

    #[test]
    fn a_large_batch_is_split_into_requests_of_bounded_size() {
        let readings = thousand();
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
            let mut sink = sink_at(port, "");
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

    const LISTS_V1_AND_V2: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 54\r\n\r\n{\"config\":{\"line.proto.support.versions\":[1,2],\"x\":1}}";
    const LISTS_V1: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 52\r\n\r\n{\"config\":{\"line.proto.support.versions\":[1],\"x\":1}}";
    const NO_CONTENT: &str = "HTTP/1.1 204 No Content\r\n\r\n";

    /// The exact bytes (v2's binary doubles are not text).
    fn raw(version: ProtocolVersion, readings: &[Reading]) -> Vec<u8> {
        let mut b = Buffer::new(version);
        encode_rows(&mut b, "readings", &registry(), readings).unwrap();
        b.as_bytes().to_vec()
    }

    fn next(requests: &std::sync::mpsc::Receiver<(String, Vec<u8>)>) -> (String, Vec<u8>) {
        requests
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap()
    }

    #[test]
    fn a_database_replaced_while_the_connection_was_idle_gets_its_own_version() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Two requests per connection, then the server closes it (as after
        // its idle timeout); the first `/settings` lists v1 and v2, every
        // later one only v1: the database was replaced by an older one.
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let (port, requests) = crate::test_server::serve(2, move |request| {
            if !request.starts_with("GET /settings") {
                NO_CONTENT
            } else if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                LISTS_V1_AND_V2
            } else {
                LISTS_V1
            }
        });
        let mut sink = sink_at(port, "");
        let first = reading(Some(Value::F64(0.1)), Quality::Good, 1_700_000_000_000_000);
        let second = reading(Some(Value::F64(0.2)), Quality::Good, 1_700_000_001_000_000);
        assert_eq!(sink.write(std::slice::from_ref(&first)).unwrap(), 1);
        // Let the server's close arrive before the next batch.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(sink.write(std::slice::from_ref(&second)).unwrap(), 1);
        let seen: Vec<_> = (0..4).map(|_| next(&requests)).collect();
        let lines: Vec<&str> = seen.iter().map(|(line, _)| line.as_str()).collect();
        assert_eq!(
            lines,
            [
                "GET /settings HTTP/1.1",
                "POST /write?precision=n HTTP/1.1",
                "GET /settings HTTP/1.1",
                "POST /write?precision=n HTTP/1.1"
            ]
        );
        assert_eq!(seen[1].1, raw(ProtocolVersion::V2, &[first]));
        assert_eq!(
            seen[3].1,
            raw(ProtocolVersion::V1, &[second]),
            "the replaced database got a body in its own version"
        );
        assert!(requests.try_recv().is_err(), "no other request was sent");
    }

    #[test]
    fn a_request_refused_as_too_large_goes_again_in_smaller_ones_nothing_lost_or_doubled() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let posts = Arc::new(AtomicUsize::new(0));
        let counter = posts.clone();
        let (port, requests) = crate::test_server::serve(usize::MAX, move |_| {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\n\r\n"
            } else {
                NO_CONTENT
            }
        });
        let mut sink = sink_at(port, "protocol_version=1;");
        let readings = thousand();
        assert_eq!(sink.write(&readings).unwrap(), 1000);
        let whole = raw(ProtocolVersion::V1, &readings);
        let (_, refused) = next(&requests);
        assert_eq!(refused, whole);
        let (mut again, mut largest, mut count) = (Vec::new(), 0, 0);
        while again.len() < whole.len() {
            let (_, body) = next(&requests);
            largest = largest.max(body.len());
            again.extend_from_slice(&body);
            count += 1;
        }
        println!(
            "HTTP 413 on {} bytes: sent again in {count} requests of at most {largest} bytes",
            whole.len()
        );
        assert_eq!(again, whole, "every row once, in order");
        assert!(
            count > 1 && largest < whole.len() / 4 + 400,
            "{count}, {largest}"
        );
        // The smaller size stays in force for the next batch.
        assert_eq!(sink.write(&readings[..10]).unwrap(), 10);
        assert_eq!(next(&requests).1, raw(ProtocolVersion::V1, &readings[..10]));
    }

    fn sink_at(port: u16, keys: &str) -> QuestDbSink {
        QuestDbSink::new(
            Conf(format!("http::addr=127.0.0.1:{port};{keys}")),
            "readings".into(),
            Arc::new(registry()),
        )
    }

    #[test]
    fn a_server_that_always_refuses_as_too_large_ends_in_an_error_not_a_loop() {
        const TOO_LARGE: &str =
            "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\n\r\n";
        let (port, requests) = crate::test_server::serve(usize::MAX, |_| TOO_LARGE);
        let mut sink = sink_at(port, "protocol_version=1;");
        let readings = thousand();
        let result = sink.write(&readings);
        let sent = requests.try_iter().count();
        println!("always 413: {sent} requests, then {result:?}");
        assert!(matches!(result, Err(SinkError::Retryable(_))), "{result:?}");
        assert!(sent < 20, "{sent} requests");
        // One row larger than the limit never passes: a rejection of the
        // data, whatever the request size.
        let big = reading(
            Some(Value::Text("x".repeat(64 * 1024).into())),
            Quality::Good,
            1_700_000_000_000_000,
        );
        for _ in 0..2 {
            let result = sink.write(std::slice::from_ref(&big));
            assert!(matches!(result, Err(SinkError::Permanent(_))), "{result:?}");
        }
        // A small single row refused is the server's fault: retried.
        let small = &readings[..1];
        assert!(matches!(sink.write(small), Err(SinkError::Retryable(_))));
    }

    #[test]
    fn a_server_that_closes_after_every_answer_still_gets_every_batch_under_auto() {
        let (port, requests) = crate::test_server::serve(1, |request| {
            if request.starts_with("GET /settings") {
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 52\r\n\r\n{\"config\":{\"line.proto.support.versions\":[1],\"x\":1}}"
            } else {
                "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
            }
        });
        let mut sink = sink_at(port, "");
        for i in 0..3 {
            let r = reading(
                Some(Value::F64(f64::from(i))),
                Quality::Good,
                1_700_000_000_000_000,
            );
            assert_eq!(
                sink.write(std::slice::from_ref(&r)).unwrap(),
                1,
                "batch {i}"
            );
            assert_eq!(next(&requests).0, "GET /settings HTTP/1.1");
            let (post, body) = next(&requests);
            assert_eq!(post, "POST /write?precision=n HTTP/1.1");
            assert_eq!(body, raw(ProtocolVersion::V1, &[r]));
        }
    }

    #[test]
    fn a_bad_row_rejection_from_a_replaced_database_behind_a_proxy_means_encode_again() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        const BAD_ROW: &str = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 49\r\n\r\n{\"code\":\"invalid\",\"message\":\"bad float\",\"line\":1}";
        // One kept-alive connection (the proxy's); the database behind it
        // is replaced by one that lists v1 only and refuses v2 bodies.
        let (settings, posts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, p) = (settings.clone(), posts.clone());
        let (port, requests) = crate::test_server::serve(usize::MAX, move |request| {
            if request.starts_with("GET /settings") {
                if s.fetch_add(1, Ordering::SeqCst) == 0 {
                    LISTS_V1_AND_V2
                } else {
                    LISTS_V1
                }
            } else if p.fetch_add(1, Ordering::SeqCst) == 0 {
                BAD_ROW
            } else {
                NO_CONTENT
            }
        });
        let mut sink = sink_at(port, "");
        let r = reading(Some(Value::F64(0.5)), Quality::Good, 1_700_000_000_000_000);
        assert_eq!(sink.write(std::slice::from_ref(&r)).unwrap(), 1);
        let seen: Vec<_> = (0..4).map(|_| next(&requests)).collect();
        assert_eq!(
            seen[1].1,
            raw(ProtocolVersion::V2, std::slice::from_ref(&r))
        );
        assert_eq!(
            seen[2].0, "GET /settings HTTP/1.1",
            "asked before quarantining"
        );
        assert_eq!(seen[3].1, raw(ProtocolVersion::V1, &[r]));
        assert!(requests.try_recv().is_err(), "nothing else sent");
        // A real bad row still is one (the version did not change).
        let (port, _requests) = crate::test_server::serve(usize::MAX, |request| {
            if request.starts_with("GET /settings") {
                LISTS_V1
            } else {
                BAD_ROW
            }
        });
        let mut sink = sink_at(port, "");
        let r = reading(Some(Value::F64(0.5)), Quality::Good, 1_700_000_000_000_000);
        assert!(matches!(sink.write(&[r]), Err(SinkError::Permanent(_))));
    }

    #[test]
    fn the_connection_string_is_never_printed() {
        assert_eq!(
            format!("{:?}", Conf("http::addr=db:9000;password=hunter2;".into())),
            "Conf(<redacted>)"
        );
    }
}
