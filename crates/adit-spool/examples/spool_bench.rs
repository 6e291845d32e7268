//! Spool figures: append throughput under each fsync policy, read (drain)
//! throughput from disk, and recovery time at start for a large spool.
//!
//! ```text
//! cargo run --release -p adit-spool --example spool_bench -- [DIR] [GiB]
//! ```
//! DIR defaults to a temporary directory (on the same disk as /tmp); GiB
//! (default 1) sizes the spool used for the restart measurement.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use adit_core::{PointId, PointMeta, PointRegistry, Quality, Reading, Timestamp, Value};
use adit_spool::{FsyncPolicy, Spool, SpoolConfig, WhenFull};

fn batch(n: usize, seq: i64) -> Vec<Reading> {
    (0..n)
        .map(|i| Reading {
            point: PointId((i % 1000) as u32),
            value: Some(Value::F64(seq as f64 * 0.1 + i as f64)),
            quality: Quality::Good,
            source_ts: Timestamp(1_800_000_000_000_000 + seq * 1000 + i as i64),
            received_ts: Timestamp(1_800_000_000_000_000 + seq * 1000 + i as i64),
        })
        .collect()
}

fn cfg(dir: &std::path::Path, fsync: FsyncPolicy, max: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        segment_bytes: 64 << 20,
        max_bytes: max,
        when_full: WhenFull::Block,
        fsync,
        faults: None,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tmp = tempfile::tempdir().unwrap();
    let base = args
        .get(1)
        .map_or_else(|| tmp.path().to_path_buf(), std::path::PathBuf::from);
    let gib: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut registry = PointRegistry::new();
    for i in 0..1000 {
        registry
            .insert(PointMeta::plain(&format!("p{i}"), "d", 1000))
            .unwrap();
    }
    let per_batch = 500;
    println!("spool append, batches of {per_batch} readings (one record each):");
    for (name, policy, seconds) in [
        ("always", FsyncPolicy::Always, 3.0),
        (
            "interval 100ms",
            FsyncPolicy::Interval(Duration::from_millis(100)),
            3.0,
        ),
        ("never", FsyncPolicy::Never, 3.0),
    ] {
        let dir = base.join(format!("append-{}", name.replace(' ', "-")));
        let _ = std::fs::remove_dir_all(&dir);
        let (spool, _) = Spool::open(cfg(&dir, policy, 64 << 30), &registry, &["db"]).unwrap();
        let data: Vec<Vec<Reading>> = (0..64).map(|s| batch(per_batch, s)).collect();
        let start = Instant::now();
        let mut n = 0usize;
        while start.elapsed().as_secs_f64() < seconds {
            spool.append(&data[n % data.len()]).unwrap();
            n += 1;
        }
        spool.close();
        let secs = start.elapsed().as_secs_f64();
        let bytes = spool
            .stats()
            .appended_bytes
            .load(std::sync::atomic::Ordering::Relaxed) as f64;
        println!(
            "  fsync {name:<15} {:>10.0} readings/s {:>8.1} MB/s  ({} fsyncs)",
            (n * per_batch) as f64 / secs,
            bytes / secs / 1e6,
            spool
                .stats()
                .fsyncs
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        drop(spool);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // A large spool: write it, then measure a cold start (recovery scan) and a full read.
    let dir = base.join("large");
    let _ = std::fs::remove_dir_all(&dir);
    let target = gib << 30;
    {
        let (spool, _) = Spool::open(
            cfg(&dir, FsyncPolicy::Never, target * 2),
            &registry,
            &["db"],
        )
        .unwrap();
        let data: Vec<Vec<Reading>> = (0..64).map(|s| batch(per_batch, s)).collect();
        let mut n = 0;
        while spool
            .stats()
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            < target
        {
            spool.append(&data[n % data.len()]).unwrap();
            n += 1;
        }
        spool.close();
    }
    let start = Instant::now();
    let (spool, report) = Spool::open(
        cfg(&dir, FsyncPolicy::Never, target * 2),
        &registry,
        &["db"],
    )
    .unwrap();
    let open_secs = start.elapsed().as_secs_f64();
    println!(
        "restart with a {:.2} GiB spool ({} records, {} readings pending): recovery scan {:.2} s",
        spool
            .stats()
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / f64::from(1 << 30),
        report.records,
        report.readings,
        open_secs
    );
    let mut reader = spool.reader("db", &registry);
    let start = Instant::now();
    let mut readings = 0usize;
    loop {
        let d = reader.next(20_000, Duration::ZERO).unwrap();
        if d.records == 0 {
            break;
        }
        readings += d.readings.len();
        spool.ack("db", d.last_seq).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("drain from disk (read, decode, ack; no database): {:.0} readings/s ({readings} in {secs:.2} s)", readings as f64 / secs);
    drop(spool);
    let _ = std::fs::remove_dir_all(&dir);
}
