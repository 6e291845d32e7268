//! The embedded `SQLite` sink: adit's zero-install default.
//!
//! Schema (created if missing; see `SCHEMA`):
//! - `points(id, name, device, unit)`: one row per configured point name;
//!   stable across restarts and config changes (matched by name).
//! - `readings(point_id, ts, value, quality, reason, reason_code, source_ts,
//!   received_ts)`, primary key `(point_id, ts, received_ts)` in a `WITHOUT
//!   ROWID` table, so "the last hour of point X" is one range scan of the
//!   primary key. `received_ts` is in the key because it is what makes a
//!   sample unique and stable across replays: adit assigns it once, when it
//!   takes the sample, and the spool keeps it. Two polls within one second
//!   of a device clock with one-second resolution share `ts` but are two
//!   rows; the same spool record replayed is the same row.
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
//! Invariants: one transaction per batch (all or nothing); WAL mode; the
//! durability of a commit follows the spool's fsync policy ([`Durability`]):
//! with `spool.fsync = always` or `interval` it is `synchronous = FULL`, so a
//! batch the spool forgets after its acknowledgement survives a power cut
//! (one WAL fsync per batch); with `never`, `NORMAL`; a replayed
//! reading (same point, `ts` and `received_ts`) is ignored (`ON CONFLICT DO
//! NOTHING`), so replays are idempotent and [`Sink::write`] returns the rows
//! that are really new.
//!
//! A database made by an earlier adit, with the old key `(point_id, ts)` that
//! collapsed distinct samples, is migrated in place at open (one transaction;
//! it needs free space of about the table's size). If that fails, open fails
//! with the error and the SQL that migrates it by hand.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use adit_core::{PointRegistry, Reading, Reason, Value};
use adit_pipeline::{Sink, SinkError};
use rusqlite::{params, Connection, ErrorCode};

/// The readings table, one literal for the schema and its migration.
macro_rules! readings_table {
    () => {
        "
CREATE TABLE IF NOT EXISTS readings (
    point_id    INTEGER NOT NULL REFERENCES points(id),
    ts          INTEGER NOT NULL,
    value,
    quality     INTEGER NOT NULL,
    reason      TEXT,
    reason_code INTEGER,
    source_ts   INTEGER NOT NULL,
    received_ts INTEGER NOT NULL,
    PRIMARY KEY (point_id, ts, received_ts)
) WITHOUT ROWID;
"
    };
}

pub const SCHEMA: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS points (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    device  TEXT NOT NULL,
    unit    TEXT NOT NULL
);
",
    readings_table!(),
    "CREATE TABLE IF NOT EXISTS alerts (
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
"
);

const INSERT: &str = "INSERT INTO readings
    (point_id, ts, value, quality, reason, reason_code, source_ts, received_ts)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING";

/// The key of readings tables made before distinct samples had their own rows.
const OLD_KEY: &str = "PRIMARY KEY (point_id, ts)\n";

/// Moves rows from the old key `(point_id, ts)` to the new one, in place.
pub const MIGRATE_V1: &str = concat!(
    "
BEGIN IMMEDIATE;
DROP VIEW IF EXISTS readings_view;
ALTER TABLE readings RENAME TO readings_v1;
",
    readings_table!(),
    "
INSERT INTO readings SELECT point_id, ts, value, quality, reason, reason_code, source_ts, received_ts FROM readings_v1;
DROP TABLE readings_v1;
COMMIT;
"
);

/// How durable a commit is; follows the spool's fsync policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = FULL`: a commit survives a power cut (`spool.fsync =
    /// always` or `interval`: after the acknowledgement the spool forgets
    /// the batch, so the database must keep it through a power cut).
    PowerLoss,
    /// `synchronous = NORMAL` in WAL mode: a commit survives a process
    /// crash; a power cut can lose every commit since the last checkpoint
    /// (`spool.fsync = never`, which promises no more).
    ProcessCrash,
}

pub struct SqliteSink {
    conn: Connection,
    path: PathBuf,
    /// Database id of each point, indexed by `PointId`.
    db_ids: Vec<i64>,
    /// The live registry, when points may appear at run time: their
    /// `points` rows are added before their first reading.
    registry: Option<Arc<PointRegistry>>,
}

const UPSERT_POINT: &str = "INSERT INTO points (name, device, unit) VALUES (?1, ?2, ?3)
     ON CONFLICT(name) DO UPDATE SET device = excluded.device, unit = excluded.unit
     RETURNING id";

impl SqliteSink {
    /// Opens (creating if needed, migrating if old) the database and
    /// registers the points.
    pub fn open(
        path: &Path,
        registry: &PointRegistry,
        durability: Durability,
    ) -> Result<Self, String> {
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
        let synchronous = match durability {
            Durability::PowerLoss => "FULL",
            Durability::ProcessCrash => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(|e| e.to_string())?;
        migrate_if_old(&conn, path)?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| format!("cannot create schema in {}: {e}", path.display()))?;
        let mut db_ids = Vec::with_capacity(registry.len());
        {
            let mut upsert = conn.prepare(UPSERT_POINT).map_err(|e| e.to_string())?;
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
            registry: None,
        })
    }

    /// Follows `registry` as it grows: a point registered at run time gets
    /// its `points` row (name, device, unit) before its first reading.
    #[must_use]
    pub fn follow(mut self, registry: Arc<PointRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Adds `points` rows for the points registered since.
    fn catch_up(&mut self) -> rusqlite::Result<()> {
        let Some(registry) = self.registry.as_ref() else {
            return Ok(());
        };
        if registry.len() <= self.db_ids.len() {
            return Ok(());
        }
        // One transaction (one fsync) for all of them: a Sparkplug birth can
        // name thousands at once.
        let tx = self.conn.transaction()?;
        let mut added = Vec::new();
        {
            let mut upsert = tx.prepare_cached(UPSERT_POINT)?;
            for i in self.db_ids.len()..registry.len() {
                let Some(meta) = registry.get(adit_core::PointId(i as u32)) else {
                    break;
                };
                added.push(upsert.query_row(
                    params![meta.name.as_ref(), meta.device.as_ref(), meta.unit.as_ref()],
                    |row| row.get::<_, i64>(0),
                )?);
            }
        }
        tx.commit()?;
        self.db_ids.extend(added);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one transaction; returns the rows that were new.
    fn write_tx(&mut self, readings: &[Reading]) -> rusqlite::Result<u64> {
        if readings
            .iter()
            .any(|r| r.point.index() >= self.db_ids.len())
        {
            self.catch_up()?;
        }
        let tx = self.conn.transaction()?;
        let mut inserted = 0u64;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for r in readings {
                let Some(&point_id) = self.db_ids.get(r.point.index()) else {
                    continue;
                };
                let reason = r.quality.reason();
                let ts = r.stored_ts();
                let value: Option<rusqlite::types::Value> = r.value.as_ref().map(|v| match v {
                    Value::F64(f) => rusqlite::types::Value::Real(*f),
                    Value::I64(i) => rusqlite::types::Value::Integer(*i),
                    Value::Bool(b) => rusqlite::types::Value::Integer(i64::from(*b)),
                    Value::Text(t) => rusqlite::types::Value::Text(t.to_string()),
                });
                inserted += insert.execute(params![
                    point_id,
                    ts.as_micros(),
                    value,
                    r.quality.class() as u8,
                    reason.map(Reason::name),
                    reason.and_then(Reason::detail),
                    r.source_ts.as_micros(),
                    r.received_ts.as_micros(),
                ])? as u64;
            }
        }
        tx.commit()?;
        Ok(inserted)
    }
}

/// Migrates a readings table with the old key (see [`MIGRATE_V1`]).
fn migrate_if_old(conn: &Connection, path: &Path) -> Result<(), String> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'readings'",
            [],
            |r| r.get(0),
        )
        .ok();
    if !sql.is_some_and(|s| s.contains(OLD_KEY)) {
        return Ok(());
    }
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .unwrap_or(0);
    tracing::warn!(path = %path.display(), rows, "sqlite: migrating readings to the key (point_id, ts, received_ts), so that distinct samples keep their own rows");
    if let Err(e) = conn.execute_batch(MIGRATE_V1) {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(format!(
            "cannot migrate the readings table of {} to the key (point_id, ts, received_ts): {e}. \
             Free some space and start again, or migrate by hand with adit stopped: \
             sqlite3 {} \"{}\"",
            path.display(),
            path.display(),
            MIGRATE_V1.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
    }
    tracing::info!(path = %path.display(), rows, "sqlite: readings migrated");
    Ok(())
}

/// Only what is certainly about the data is permanent: a constraint the
/// rows break, a value too big, a type mismatch. Everything else (busy,
/// locked, disk full, I/O error, a read-only remount, a corrupt or moved
/// file, a WAL lock protocol error) is the database's trouble: retried while
/// the spool keeps the readings, and the sink is reported failing.
fn classify(e: &rusqlite::Error) -> SinkError {
    let about_the_data = matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch)
    );
    if about_the_data {
        SinkError::Permanent(e.to_string())
    } else {
        SinkError::Retryable(e.to_string())
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

    fn write(&mut self, readings: &[Reading]) -> Result<u64, SinkError> {
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
        let mut sink = SqliteSink::open(&path, &registry(), Durability::ProcessCrash).unwrap();
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
        let mut sink = SqliteSink::open(
            &dir.path().join("r.db"),
            &registry(),
            Durability::ProcessCrash,
        )
        .unwrap();
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
        let mut sink = SqliteSink::open(
            &dir.path().join("r.db"),
            &registry(),
            Durability::ProcessCrash,
        )
        .unwrap();
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
    fn a_protocol_status_is_stored_under_its_name_with_its_32_bit_code() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = SqliteSink::open(
            &dir.path().join("r.db"),
            &registry(),
            Durability::ProcessCrash,
        )
        .unwrap();
        let status = Reason::status(0x808A_0000, "BadSensorFailure");
        sink.write(&[reading(0, None, Quality::Bad(status), 1_000)])
            .unwrap();
        let (reason, code): (String, i64) = sink
            .conn
            .query_row("SELECT reason, reason_code FROM readings", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((reason.as_str(), code), ("BadSensorFailure", 0x808A_0000));
    }

    #[test]
    fn a_second_resolution_clock_keeps_every_poll() {
        // Five polls 200 ms apart of a device whose clock says the same second.
        let dir = tempfile::tempdir().unwrap();
        let mut sink = SqliteSink::open(
            &dir.path().join("r.db"),
            &registry(),
            Durability::ProcessCrash,
        )
        .unwrap();
        let polls: Vec<Reading> = (0..5)
            .map(|i| Reading {
                point: PointId(0),
                value: Some(Value::F64(f64::from(i))),
                quality: Quality::Good,
                source_ts: Timestamp(1_700_000_000_000_000),
                received_ts: Timestamp(1_700_000_000_000_000 + i64::from(i) * 200_000),
            })
            .collect();
        assert_eq!(sink.write(&polls).unwrap(), 5, "five new rows");
        assert_eq!(sink.write(&polls).unwrap(), 0, "a replay adds nothing");
        let n: i64 = sink
            .conn
            .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 5);
    }

    #[test]
    fn a_database_with_the_old_key_is_migrated_in_place_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            let old_schema = SCHEMA.replace(
                "PRIMARY KEY (point_id, ts, received_ts)",
                "PRIMARY KEY (point_id, ts)",
            );
            conn.execute_batch(&old_schema).unwrap();
            conn.execute_batch(
                "INSERT INTO points (name, device, unit) VALUES ('co', 'plc', 'ppm');
                 INSERT INTO readings VALUES (1, 1000, 1.5, 0, NULL, NULL, 1000, 1005);
                 INSERT INTO readings VALUES (1, 2000, 2.5, 0, NULL, NULL, 2000, 2005);",
            )
            .unwrap();
        }
        let mut sink = SqliteSink::open(&path, &registry(), Durability::ProcessCrash).unwrap();
        let sql: String = sink
            .conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'readings'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            sql.contains("PRIMARY KEY (point_id, ts, received_ts)"),
            "{sql}"
        );
        // The same ts with another receive time is now a row of its own.
        let again = Reading {
            point: PointId(0),
            value: Some(Value::F64(9.0)),
            quality: Quality::Good,
            source_ts: Timestamp(1000),
            received_ts: Timestamp(1205),
        };
        assert_eq!(sink.write(&[again]).unwrap(), 1);
        let n: i64 = sink
            .conn
            .query_row("SELECT count(*) FROM readings_view", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3, "two old rows kept, one new");
    }

    #[test]
    fn durability_follows_the_spool_fsync_policy() {
        let dir = tempfile::tempdir().unwrap();
        for (durability, expected) in [(Durability::PowerLoss, 2), (Durability::ProcessCrash, 1)] {
            let sink = SqliteSink::open(&dir.path().join("d.db"), &registry(), durability).unwrap();
            let level: i64 = sink
                .conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            assert_eq!(level, expected, "{durability:?}");
        }
    }

    #[test]
    fn invalid_source_clock_is_stored_at_receive_time_with_the_original_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = SqliteSink::open(
            &dir.path().join("r.db"),
            &registry(),
            Durability::ProcessCrash,
        )
        .unwrap();
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
        let first = SqliteSink::open(&path, &registry(), Durability::ProcessCrash).unwrap();
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
        let second = SqliteSink::open(&path, &reordered, Durability::ProcessCrash).unwrap();
        assert_eq!(second.db_ids[1], co_id);
    }

    #[test]
    fn last_hour_of_a_point_uses_the_primary_key() {
        let dir = tempfile::tempdir().unwrap();
        let sink = SqliteSink::open(
            &dir.path().join("r.db"),
            &registry(),
            Durability::ProcessCrash,
        )
        .unwrap();
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
