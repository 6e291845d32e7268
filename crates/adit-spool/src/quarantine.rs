//! `quarantine/`: what is there, and re-delivery of what can be re-delivered.
//!
//! Three kinds of file land there:
//! - `sink-<sink>-<seq>.bin` / `sink-<sink>-<seq>.alerts.bin`: a batch a sink
//!   refused for good (a payload as in `codec`, fsynced when written). These
//!   can be *retried*: appended to the spool again as a new record, so that
//!   every sink receives them once more (sinks are idempotent, so the ones
//!   that had stored them keep one row), then moved to `quarantine/retried/`;
//! - `seg-<first>.log.<offset>.bin`: a corrupt region recovery skipped (raw
//!   bytes, kept for forensics; nothing in it can be trusted);
//! - `seg-<first>.log.unreadable`: a segment that could not be read at all.
//!
//! Retry needs the spool directory to itself: it takes the spool's lock, so
//! it refuses while adit runs on that directory.

use std::path::{Path, PathBuf};

use crate::codec::{decode_payload, Payload};
use crate::spool::{Spool, SpoolConfig, SpoolError};

/// What a quarantine file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A batch of readings a sink refused.
    Readings {
        sink: String,
        items: u64,
    },
    /// Alert transitions a sink refused.
    Alerts {
        sink: String,
        items: u64,
    },
    /// A sink batch whose payload does not decode (kept, not retried).
    Undecodable {
        sink: String,
    },
    /// Corrupt bytes cut out of a segment by recovery.
    CorruptRegion,
    /// A segment recovery could not read.
    UnreadableSegment,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub bytes: u64,
    pub kind: Kind,
}

impl Entry {
    pub fn retryable(&self) -> bool {
        matches!(self.kind, Kind::Readings { .. } | Kind::Alerts { .. })
    }
}

/// The quarantine directory of a spool directory.
pub fn dir_of(spool_dir: &Path) -> PathBuf {
    spool_dir.join("quarantine")
}

/// Lists `quarantine/` (not `retried/`), sorted by name.
pub fn list(spool_dir: &Path) -> std::io::Result<Vec<Entry>> {
    let qdir = dir_of(spool_dir);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&qdir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        // A write a crash interrupted (see `recovery::write_durably`).
        if path.extension().is_some_and(|x| x == "tmp") {
            continue;
        }
        let bytes = e.metadata()?.len();
        let kind = if let Some(rest) = name.strip_prefix("sink-") {
            let sink = rest.split('-').next().unwrap_or("").to_string();
            let read = std::fs::read(&path);
            match read
                .as_deref()
                .map(|b| payload_of(b).and_then(|p| decode_payload(p).ok()))
            {
                Ok(Some(Payload::Readings(_, r))) => Kind::Readings {
                    sink,
                    items: r.len() as u64,
                },
                Ok(Some(Payload::Alerts(a))) => Kind::Alerts {
                    sink,
                    items: a.len() as u64,
                },
                _ => Kind::Undecodable { sink },
            }
        } else if name.starts_with("seg-") && name.ends_with(".unreadable") {
            Kind::UnreadableSegment
        } else if name.starts_with("seg-") {
            Kind::CorruptRegion
        } else {
            Kind::Other
        };
        out.push(Entry { path, bytes, kind });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The payload of a sink's quarantine file: framed with a CRC (written so
/// since the frame was added), or a bare payload as older adits wrote it.
/// `None` when the frame's check fails: a damaged file is kept, never
/// appended again under a fresh CRC.
fn payload_of(bytes: &[u8]) -> Option<&[u8]> {
    match crate::frame::parse_record(bytes) {
        crate::frame::Parsed::Record { payload, total, .. } if total == bytes.len() => {
            Some(payload)
        }
        // An older adit's bare payload starts with its version (1 to 4),
        // not with the frame's magic (a version 1 payload whose fingerprint
        // began with the magic's next three bytes, 1 in 16.7 million, would
        // be kept as damaged: not retried, not lost).
        _ if !bytes.starts_with(&crate::frame::MAGIC.to_le_bytes()) => Some(bytes),
        _ => None,
    }
}

/// What a retry did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Retried {
    pub files: u64,
    pub items: u64,
    /// Files not retried (corrupt regions, unreadable segments, undecodable).
    pub kept: u64,
}

/// Appends every retryable quarantined batch to the spool in `cfg.dir` again
/// and moves its file to `quarantine/retried/`. Every cursor in the ledger
/// receives the batches at adit's next start.
pub fn retry(cfg: SpoolConfig) -> Result<Retried, SpoolError> {
    let dir = cfg.dir.clone();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SpoolError::Io { path, source }
    };
    let entries = list(&dir).map_err(io(&dir_of(&dir)))?;
    let cursors = crate::spool::ledger_cursors(&dir);
    if cursors.is_empty() {
        // Opening without a cursor would count everything as delivered.
        return Err(SpoolError::Io {
            path: dir.join("ledger.json"),
            source: std::io::Error::other(
                "no sink cursor in the ledger: start adit on this spool once, stop it, then retry",
            ),
        });
    }
    let cursor_refs: Vec<&str> = cursors.iter().map(String::as_str).collect();
    let (spool, _) = Spool::open(cfg, &adit_core::PointRegistry::new(), &cursor_refs)?;
    let done_dir = dir_of(&dir).join("retried");
    std::fs::create_dir_all(&done_dir).map_err(io(&done_dir))?;
    let mut out = Retried::default();
    for e in entries {
        if !e.retryable() {
            out.kept += 1;
            continue;
        }
        let bytes = std::fs::read(&e.path).map_err(io(&e.path))?;
        let Some(payload) = payload_of(&bytes) else {
            // Damaged since it was listed.
            out.kept += 1;
            continue;
        };
        let items = match e.kind {
            Kind::Readings { items, .. } | Kind::Alerts { items, .. } => items,
            _ => 0,
        };
        spool
            .append_payload(items as usize, payload)
            .map_err(|err| SpoolError::Io {
                path: e.path.clone(),
                source: std::io::Error::other(err.to_string()),
            })?;
        let to = done_dir.join(e.path.file_name().unwrap_or_default());
        std::fs::rename(&e.path, &to).map_err(io(&e.path))?;
        out.files += 1;
        out.items += items;
    }
    spool.close();
    crate::sync_dir(&done_dir).map_err(io(&done_dir))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Spool;
    use adit_core::{PointId, PointMeta, PointRegistry, Quality, Reading, Timestamp, Value};

    fn batch(n: i64) -> Vec<Reading> {
        (0..n)
            .map(|i| Reading {
                point: PointId(0),
                value: Some(Value::I64(i)),
                quality: Quality::Good,
                source_ts: Timestamp(1_000 + i),
                received_ts: Timestamp(1_000 + i),
            })
            .collect()
    }

    #[test]
    fn a_damaged_quarantine_file_is_kept_and_an_older_bare_one_still_retries() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SpoolConfig::for_test(dir.path());
        let mut registry = PointRegistry::new();
        registry
            .insert(PointMeta::plain("co", "plc", 1000))
            .unwrap();
        let (spool, _) = Spool::open(cfg.clone(), &registry, &["db"]).unwrap();
        let good = spool.quarantine_readings("db", 1, &batch(3)).unwrap();
        let damaged = spool.quarantine_readings("db", 2, &batch(4)).unwrap();
        let mut bare = Vec::new();
        crate::codec::encode_batch(7, &batch(5), &mut bare);
        std::fs::write(
            dir_of(dir.path()).join(format!("sink-db-{:020}.bin", 3)),
            &bare,
        )
        .unwrap();
        spool.close();
        drop(spool);
        // One bit flipped in the second file's payload.
        let mut bytes = std::fs::read(&damaged).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x10;
        std::fs::write(&damaged, &bytes).unwrap();
        let kinds: Vec<Kind> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        let sink = || "db".to_string();
        assert_eq!(
            kinds,
            vec![
                Kind::Readings {
                    sink: sink(),
                    items: 3
                },
                Kind::Undecodable { sink: sink() },
                Kind::Readings {
                    sink: sink(),
                    items: 5
                },
            ]
        );
        let retried = retry(cfg).unwrap();
        assert_eq!(
            retried,
            Retried {
                files: 2,
                items: 8,
                kept: 1
            }
        );
        assert!(!good.exists() && damaged.exists());
    }
}
