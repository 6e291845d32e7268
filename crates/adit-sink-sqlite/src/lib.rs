//! The embedded `SQLite` sink: adit's zero-install default.
//!
//! Schema (created if missing; see `SCHEMA`):
//! - `points(id, name, device, unit)`: one row per configured point name;
//!   stable across restarts and config changes (matched by name).
//! - `readings(point_id, ts, value, quality, reason, reason_code, source_ts,
//!   received_ts)`, primary key `(point_id, ts)` in a `WITHOUT ROWID` table, so
//!   "the last hour of point X" is one range scan of the primary key.
//!   `ts` is the source timestamp in µs since the epoch, except when the
//!   source clock was judged invalid: then it is the receive time, and the
//!   device's own time stays in `source_ts`. `value` has no declared type and
//!   keeps integers, reals and text as sampled; it is NULL when the sample has
//!   no value (link down, exception). `quality` is 0 good, 1 uncertain, 2 bad.
//! - `readings_view`: the same with point names, units and ISO times, for
//!   people at a `sqlite3` prompt.
//! - `alerts(ts, rule, subject, state, severity, summary, labels)`: every
//!   alert transition (`state` is `firing` or `resolved`), from the watchdog
//!   through the spool; `labels` is a JSON object.
//!
//! Invariants: one transaction per batch (all or nothing); WAL mode with
//! `synchronous = NORMAL` (a committed batch survives a process crash; a power
//! cut can lose the last commits); a replayed reading (same point and `ts`)
//! replaces the earlier row, so replays are idempotent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use adit_core::{PointRegistry, Reading, Reason, Value};
use adit_pipeline::{Sink, SinkError};
use rusqlite::{params, Connection, ErrorCode};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS points (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    device  TEXT NOT NULL,
    unit    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS readings (
    point_id    INTEGER NOT NULL REFERENCES points(id),
    ts          INTEGER NOT NULL,
    value,
    quality     INTEGER NOT NULL,
    reason      TEXT,
    reason_code INTEGER,
    source_ts   INTEGER NOT NULL,
    received_ts INTEGER NOT NULL,
    PRIMARY KEY (point_id, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    ts          INTEGER NOT NULL,
    rule        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    state       TEXT NOT NULL,
    severity    TEXT NOT NULL,
    summary     TEXT NOT NULL,
    labels      TEXT NOT NULL,
    PRIMARY KEY (ts, rule, subject, state)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS readings_view AS
SELECT p.name AS point,
       p.device AS device,
       strftime('%Y-%m-%dT%H:%M:%fZ', r.ts / 1000000.0, 'unixepoch') AS time,
       r.value AS value,
       p.unit AS unit,
       CASE r.quality WHEN 0 THEN 'good' WHEN 1 THEN 'uncertain' ELSE 'bad' END AS quality,
       r.reason AS reason,
       r.reason_code AS reason_code
FROM readings r JOIN points p ON p.id = r.point_id;
";

const INSERT: &str = "INSERT OR REPLACE INTO readings
    (point_id, ts, value, quality, reason, reason_code, source_ts, received_ts)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

pub struct SqliteSink {
    conn: Connection,
    path: PathBuf,
    /// Database id of each point, indexed by `PointId`.
    db_ids: Vec<i64>,
}

impl SqliteSink {
    /// Opens (creating if needed) the database and registers the points.
    pub fn open(path: &Path, registry: &PointRegistry) -> Result<Self, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let conn =
            Connection::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| e.to_string())?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| e.to_string())?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| format!("cannot create schema in {}: {e}", path.display()))?;
        let mut db_ids = Vec::with_capacity(registry.len());
        {
            let mut upsert = conn
                .prepare(
                    "INSERT INTO points (name, device, unit) VALUES (?1, ?2, ?3)
                     ON CONFLICT(name) DO UPDATE SET device = excluded.device, unit = excluded.unit
                     RETURNING id",
                )
                .map_err(|e| e.to_string())?;
            for (_, meta) in registry.iter() {
                let id: i64 = upsert
                    .query_row(
                        params![meta.name.as_ref(), meta.device.as_ref(), meta.unit.as_ref()],
                        |row| row.get(0),
                    )
                    .map_err(|e| format!("cannot register point {}: {e}", meta.name))?;
                db_ids.push(id);
            }
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            db_ids,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_tx(&mut self, readings: &[Reading]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for r in readings {
                let Some(&point_id) = self.db_ids.get(r.point.index()) else {
                    continue;
                };
                let reason = r.quality.reason();
                let ts = if reason == Some(Reason::ClockInvalid) {
                    r.received_ts
                } else {
                    r.source_ts
                };
                let value: Option<rusqlite::types::Value> = r.value.as_ref().map(|v| match v {
                    Value::F64(f) => rusqlite::types::Value::Real(*f),
                    Value::I64(i) => rusqlite::types::Value::Integer(*i),
                    Value::Bool(b) => rusqlite::types::Value::Integer(i64::from(*b)),
                    Value::Text(t) => rusqlite::types::Value::Text(t.to_string()),
                });
                insert.execute(params![
                    point_id,
                    ts.as_micros(),
                    value,
                    r.quality.class() as u8,
                    reason.map(Reason::name),
                    reason.and_then(Reason::detail),
                    r.source_ts.as_micros(),
                    r.received_ts.as_micros(),
                ])?;
            }
        }
        tx.commit()
    }
}

fn classify(e: &rusqlite::Error) -> SinkError {
    let retryable = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
        )
    );
    if retryable {
        SinkError::Retryable(e.to_string())
    } else {
        SinkError::Permanent(e.to_string())
    }
}

impl Sink for SqliteSink {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn write_alerts(&mut self, alerts: &[adit_spool::AlertRecord]) -> Result<(), SinkError> {
        let result = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO alerts (ts, rule, subject, state, severity, summary, labels) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for a in alerts {
                    insert.execute(params![
                        a.ts.as_micros(),
                        a.rule,
                        a.subject,
                        if a.fired { "firing" } else { "resolved" },
                        a.severity,
                        a.summary,
                        a.labels_json
                    ])?;
                }
            }
            tx.commit()
        })();
        result.map_err(|e| classify(&e))
    }

    fn write(&mut self, readings: &[Reading]) -> Result<(), SinkError> {
        self.write_tx(readings).map_err(|e| classify(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::{PointId, PointMeta, Quality, Timestamp};

    type Row = (
        String,
        i64,
        Option<f64>,
        String,
        Option<String>,
        Option<i64>,
    );

    fn registry() -> PointRegistry {
        let mut r = PointRegistry::new();
        for name in ["co", "fan"] {
            r.insert(PointMeta {
                name: name.into(),
                device: "plc".into(),
                unit: "ppm".into(),
                range: None,
                expected_interval_ms: 1000,
                deadband: None,
                deadband_heartbeat: std::time::Duration::from_secs(60),
                stale_after: std::time::Duration::from_secs(3),
            })
            .unwrap();
        }
        r
    }

    fn reading(point: u32, value: Option<Value>, quality: Quality, ts: i64) -> Reading {
        Reading {
            point: PointId(point),
            value,
            quality,
            source_ts: Timestamp(ts),
            received_ts: Timestamp(ts + 5),
        }
    }

    #[test]
    fn values_qualities_and_reasons_are_stored_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/r.db");
        let mut sink = SqliteSink::open(&path, &registry()).unwrap();
        sink.write(&[
            reading(0, Some(Value::F64(12.5)), Quality::Good, 1_000),
            reading(1, Some(Value::Bool(true)), Quality::Good, 1_000),
            reading(0, None, Quality::Bad(Reason::DeviceException(2)), 2_000),
            reading(
                0,
                Some(Value::I64(-32768)),
                Quality::Bad(Reason::OutOfRange),
                3_000,
            ),
        ])
        .unwrap();
        let rows: Vec<Row> = sink
            .conn
            .prepare("SELECT point, CAST(strftime('%s', time) AS INTEGER), value, quality, reason, reason_code FROM readings_view ORDER BY point, time")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].2, Some(12.5));
        assert_eq!(
            rows[1],
            (
                "co".into(),
                0,
                None,
                "bad".into(),
                Some("device_exception".into()),
                Some(2)
            )
        );
        assert_eq!(rows[2].2, Some(-32768.0));
        assert_eq!(rows[3].2, Some(1.0));
    }

    #[test]
    fn alert_transitions_are_stored_and_replays_do_not_duplicate_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = SqliteSink::open(&dir.path().join("r.db"), &registry()).unwrap();
        let fired = adit_spool::AlertRecord {
            ts: Timestamp(1_000),
            fired: true,
            rule: "CoHigh".into(),
            severity: "warning".into(),
            subject: "co".into(),
            summary: "co above 70".into(),
            labels_json: "{}".into(),
        };
        let resolved = adit_spool::AlertRecord {
            ts: Timestamp(2_000),
            fired: false,
            ..fired.clone()
        };
        sink.write_alerts(&[fired.clone(), resolved]).unwrap();
        sink.write_alerts(&[fired]).unwrap();
        let states: Vec<String> = sink
            .conn
            .prepare("SELECT state FROM alerts ORDER BY ts")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(states, vec!["firing", "resolved"]);
    }

    #[test]
    fn replaying_a_batch_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = SqliteSink::open(&dir.path().join("r.db"), &registry()).unwrap();
        let batch = [reading(0, Some(Value::F64(1.0)), Quality::Good, 1_000)];
        sink.write(&batch).unwrap();
        sink.write(&batch).unwrap();
        let n: i64 = sink
            .conn
            .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn invalid_source_clock_is_stored_at_receive_time_with_the_original_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = SqliteSink::open(&dir.path().join("r.db"), &registry()).unwrap();
        sink.write(&[reading(
            0,
            Some(Value::F64(1.0)),
            Quality::Bad(Reason::ClockInvalid),
            -7,
        )])
        .unwrap();
        let (ts, src): (i64, i64) = sink
            .conn
            .query_row("SELECT ts, source_ts FROM readings", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((ts, src), (-2, -7));
    }

    #[test]
    fn point_ids_survive_a_reopen_with_a_different_config_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let first = SqliteSink::open(&path, &registry()).unwrap();
        let co_id = first.db_ids[0];
        drop(first);
        let mut reordered = PointRegistry::new();
        for name in ["fan", "co"] {
            reordered
                .insert(PointMeta {
                    name: name.into(),
                    device: "plc".into(),
                    unit: String::new().into(),
                    range: None,
                    expected_interval_ms: 1000,
                    deadband: None,
                    deadband_heartbeat: std::time::Duration::from_secs(60),
                    stale_after: std::time::Duration::from_secs(3),
                })
                .unwrap();
        }
        let second = SqliteSink::open(&path, &reordered).unwrap();
        assert_eq!(second.db_ids[1], co_id);
    }

    #[test]
    fn last_hour_of_a_point_uses_the_primary_key() {
        let dir = tempfile::tempdir().unwrap();
        let sink = SqliteSink::open(&dir.path().join("r.db"), &registry()).unwrap();
        let plan: String = sink
            .conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT * FROM readings WHERE point_id = 1 AND ts >= 100",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("PRIMARY KEY"), "{plan}");
    }
}
