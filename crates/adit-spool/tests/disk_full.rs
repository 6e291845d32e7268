//! A full disk (ENOSPC) behaves like a full spool, not like a crash: on a
//! real 256 KiB tmpfs, each `when_full` policy accounts for every reading.
//! Needs root (to mount the tmpfs), as in CI; elsewhere it says it skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use adit_core::{PointId, PointMeta, PointRegistry, Quality, Reading, Timestamp, Value};
use adit_spool::{AppendError, FsyncPolicy, Spool, SpoolConfig, WhenFull};

/// A tmpfs mounted for the test; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn batch(start: i64, n: usize) -> Vec<Reading> {
    (0..n as i64)
        .map(|i| Reading {
            point: PointId(0),
            value: Some(Value::I64(start + i)),
            quality: Quality::Good,
            source_ts: Timestamp(start + i),
            received_ts: Timestamp(start + i),
        })
        .collect()
}

/// Batches of 50 offered: more than the disk holds in either record
/// format (35 bytes a reading in version 3, ≈ 12 in version 4).
const BATCHES: i64 = 1200;

#[test]
fn a_full_disk_applies_when_full_and_every_reading_is_accounted_for() {
    if !is_root() {
        println!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let mut registry = PointRegistry::new();
    registry.insert(PointMeta::plain("p", "d", 1000)).unwrap();
    for policy in [WhenFull::DropNewest, WhenFull::DropOldest] {
        let dir = tempfile::tempdir().unwrap();
        let _fs = Tmpfs::mount(dir.path(), "256k").expect("mount tmpfs");
        // The spool's own bound is far above the disk: the disk fills first.
        let cfg = SpoolConfig {
            dir: dir.path().join("spool"),
            segment_bytes: 64 * 1024,
            max_bytes: 1 << 30,
            when_full: policy,
            fsync: FsyncPolicy::Always,
            faults: None,
        };
        let (spool, _) = Spool::open(cfg, &registry, &["db"]).unwrap();
        let mut refused = 0u64;
        for i in 0..BATCHES {
            match spool.append(&batch(i * 50, 50)) {
                Ok(_) => {}
                Err(AppendError::Dropped(n)) => refused += n as u64,
                Err(e) => panic!("{policy:?}: a full disk must not fail the writer: {e}"),
            }
        }
        let stats = spool.stats();
        let disk_full = stats.disk_full_events.load(Ordering::Relaxed);
        let dropped_oldest = stats.dropped_oldest_readings.load(Ordering::Relaxed);
        assert!(disk_full > 0, "{policy:?}: the disk must have filled");
        let mut reader = spool.reader("db", &registry);
        let mut stored = 0u64;
        loop {
            let d = reader.next(100_000, Duration::ZERO).unwrap();
            if d.records == 0 {
                break;
            }
            stored += d.readings.len() as u64;
        }
        let offered = BATCHES as u64 * 50;
        println!("{policy:?} on a full 256 KiB disk: {offered} offered, {stored} kept, {refused} refused, {dropped_oldest} dropped oldest, {disk_full} ENOSPC events");
        assert_eq!(
            stored + refused + dropped_oldest,
            offered,
            "{policy:?}: every reading kept, refused or dropped, and counted"
        );
        assert!(stored > 0);
        drop((reader, spool)); // every handle: the directory lock goes with the last
                               // The spool recovers from the full disk at the next start.
        let cfg = SpoolConfig {
            dir: dir.path().join("spool"),
            segment_bytes: 64 * 1024,
            max_bytes: 1 << 30,
            when_full: policy,
            fsync: FsyncPolicy::Always,
            faults: None,
        };
        let (_, report) = Spool::open(cfg, &registry, &["db"]).unwrap();
        assert_eq!(report.corrupt_regions, 0, "{policy:?}: {report:?}");
    }
}
