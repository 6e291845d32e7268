//! Recovery and the writer under damage and failing file operations: every
//! case starts, keeps every readable record, and counts what it could not
//! keep. Faults come from the spool's fault-injection layer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adit_core::{PointId, PointMeta, PointRegistry, Quality, Reading, Timestamp, Value};
use adit_spool::faults::{Fault, Faults, FileOp};
use adit_spool::{AppendError, FsyncPolicy, Spool, SpoolConfig, SpoolError, WhenFull};

fn registry() -> PointRegistry {
    let mut r = PointRegistry::new();
    r.insert(PointMeta::plain("p", "d", 1000)).unwrap();
    r
}

fn cfg(dir: &Path, faults: Option<Arc<Faults>>) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        segment_bytes: 1 << 20,
        max_bytes: 1 << 30,
        when_full: WhenFull::DropNewest,
        fsync: FsyncPolicy::Always,
        faults,
    }
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

fn drain(spool: &Spool, reg: &PointRegistry) -> Vec<i64> {
    let mut reader = spool.reader("db", reg);
    let mut out = Vec::new();
    loop {
        let d = reader.next(1000, Duration::ZERO).unwrap();
        if d.records == 0 {
            return out;
        }
        out.extend(d.readings.iter().map(|r| match r.value {
            Some(Value::I64(v)) => v,
            _ => -1,
        }));
        spool.ack("db", d.last_seq).unwrap();
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    v.sort();
    v
}

/// Five records of four readings (values 0..20) in one segment; returns the
/// segment and where each record starts.
fn five_records(dir: &Path) -> (PathBuf, Vec<usize>) {
    let reg = registry();
    let (spool, _) = Spool::open(cfg(dir, None), &reg, &["db"]).unwrap();
    let mut offsets = Vec::new();
    for i in 0..5 {
        offsets.push(
            segments(dir)
                .first()
                .map_or(0, |p| std::fs::metadata(p).unwrap().len() as usize),
        );
        spool.append(&batch(i * 4, 4)).unwrap();
    }
    drop(spool);
    (segments(dir)[0].clone(), offsets)
}

#[test]
fn a_bad_length_is_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (path, offsets) = five_records(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // A flipped bit in record 1's length: it now points past the end of the
    // file (but below the 64 MiB sanity bound), like a torn tail would.
    let at = offsets[1] + 4;
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    bytes[at..at + 4].copy_from_slice(&(len | 0x0010_0000).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let reg = registry();
    let (spool, report) = Spool::open(cfg(dir.path(), None), &reg, &["db"]).unwrap();
    println!("bad length: {report:?}");
    assert_eq!(report.torn_bytes, 0, "not a torn tail: {report:?}");
    assert_eq!(report.corrupt_regions, 1, "{report:?}");
    assert_eq!(
        report.lost_records, 1,
        "exactly record 1 is lost: {report:?}"
    );
    let expected: Vec<i64> = (0..4).chain(8..20).collect();
    assert_eq!(
        drain(&spool, &reg),
        expected,
        "records 2..4 after it are kept"
    );
}

#[test]
fn recovery_on_a_full_disk_still_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (path, offsets) = five_records(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offsets[2] + 16] ^= 0x01; // corrupt record 2 (checksum)
    bytes.truncate(bytes.len() - 3); // and tear the tail (record 4)
    std::fs::write(&path, &bytes).unwrap();

    // The disk is full and failing: no quarantine copy, no in-place repair,
    // no ledger, no truncation can be written.
    let faults = Faults::new();
    for op in [FileOp::Quarantine, FileOp::Patch, FileOp::Ledger] {
        faults.arm(op, 0, u32::MAX, Fault::Enospc);
    }
    faults.arm(FileOp::Truncate, 0, u32::MAX, Fault::Eio);
    let reg = registry();
    let (spool, report) = Spool::open(cfg(dir.path(), Some(faults.clone())), &reg, &["db"])
        .unwrap_or_else(|e| panic!("recovery on a full disk must start: {e}"));
    println!("full disk recovery: {report:?}");
    assert_eq!(report.corrupt_regions, 1);
    assert!(report.torn_bytes > 0);
    assert_eq!(report.quarantine_failures, 1, "{report:?}");
    assert_eq!(
        report.repair_failures, 2,
        "tombstone and tail cut: {report:?}"
    );
    let expected: Vec<i64> = (0..8).chain(12..16).collect();
    let mut reader = spool.reader("db", &reg);
    let d = reader.next(1000, Duration::ZERO).unwrap();
    let got: Vec<i64> = d
        .readings
        .iter()
        .map(|r| match r.value {
            Some(Value::I64(v)) => v,
            _ => -1,
        })
        .collect();
    assert_eq!(got, expected, "the damage is skipped in memory");
    // Appends go on (into a new segment: the damaged one is sealed).
    faults.clear();
    spool.append(&batch(100, 1)).unwrap();
    drop((reader, spool));

    // With space again, the next start repairs for good.
    let (spool, again) = Spool::open(cfg(dir.path(), None), &reg, &["db"]).unwrap();
    assert_eq!(again.corrupt_regions, 1, "found again: {again:?}");
    assert_eq!(again.repair_failures, 0, "{again:?}");
    let mut expected = expected;
    expected.push(100);
    assert_eq!(drain(&spool, &reg), expected);
    drop(spool);
    let (_, third) = Spool::open(cfg(dir.path(), None), &reg, &["db"]).unwrap();
    assert!(!third.found_damage(), "repaired for good: {third:?}");
}

#[test]
fn an_unreadable_segment_is_set_aside_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let mut c = cfg(dir.path(), None);
    c.segment_bytes = 16; // one record per segment
    let (spool, _) = Spool::open(c.clone(), &reg, &["db"]).unwrap();
    for i in 0..3 {
        spool.append(&batch(i * 4, 4)).unwrap();
    }
    drop(spool);
    assert_eq!(segments(dir.path()).len(), 3);
    let faults = Faults::new();
    faults.arm(FileOp::RecoveryRead, 1, 1, Fault::Eio); // the second segment
    c.faults = Some(faults);
    let (spool, report) = Spool::open(c, &reg, &["db"]).unwrap();
    println!("EIO on a segment: {report:?}");
    assert_eq!(report.unreadable_segments, 1);
    assert_eq!(report.lost_records, 1);
    assert_eq!(drain(&spool, &reg), vec![0, 1, 2, 3, 8, 9, 10, 11]);
    assert!(dir.path().join("quarantine").read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".unreadable")));
}

#[test]
fn a_missing_segment_is_counted_not_skipped_silently() {
    // (which segments to delete, readings lost, values left)
    let cases: [(&[usize], u64, Vec<i64>); 2] = [
        (&[1], 1, (0..4).chain(8..16).collect()),
        (&[0], 1, (4..16).collect()),
    ];
    for (deleted, lost, left) in cases {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry();
        let mut c = cfg(dir.path(), None);
        c.segment_bytes = 16; // one record per segment
        let (spool, _) = Spool::open(c.clone(), &reg, &["db"]).unwrap();
        for i in 0..4 {
            spool.append(&batch(i * 4, 4)).unwrap();
        }
        drop(spool);
        let segs = segments(dir.path());
        for &i in deleted {
            std::fs::remove_file(&segs[i]).unwrap();
        }
        let (spool, report) = Spool::open(c, &reg, &["db"]).unwrap();
        println!("segments {deleted:?} deleted: {report:?}");
        assert_eq!(report.lost_records, lost, "{deleted:?}: {report:?}");
        assert_eq!(report.missing_segments, 1, "{deleted:?}: {report:?}");
        assert_eq!(drain(&spool, &reg), left, "{deleted:?}");
    }
}

#[test]
fn an_undecodable_record_is_counted_not_skipped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let (spool, _) = Spool::open(cfg(dir.path(), None), &reg, &["db"]).unwrap();
    spool.append(&batch(0, 2)).unwrap();
    // A payload that passes the CRC but is no known payload version.
    spool
        .append_payload(7, &[99, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0])
        .unwrap();
    spool.append(&batch(2, 2)).unwrap();
    assert_eq!(drain(&spool, &reg), vec![0, 1, 2, 3]);
    let s = spool.stats();
    assert_eq!(s.undecodable_records.load(Ordering::Relaxed), 1);
    assert_eq!(s.undecodable_readings.load(Ordering::Relaxed), 7);
}

/// A record this adit cannot decode (a newer format, before a rollback) is
/// not lost with its segment: its payload waits in quarantine, once however
/// many sinks read it, for a retry under an adit that reads it.
#[test]
fn an_undecodable_record_is_kept_in_quarantine_once() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let (spool, _) = Spool::open(cfg(dir.path(), None), &reg, &["db", "qdb"]).unwrap();
    spool.append(&batch(0, 2)).unwrap();
    let unknown = [99, 1, 2, 3, 4, 5, 6, 7, 8, 7, 0, 0, 0];
    spool.append_payload(7, &unknown).unwrap();
    for sink in ["db", "qdb"] {
        let mut reader = spool.reader(sink, &reg);
        let d = reader.next(1000, Duration::ZERO).unwrap();
        assert_eq!(
            d.readings.len(),
            2,
            "{sink}: the readings around it still come"
        );
        spool.ack(sink, d.last_seq).unwrap();
    }
    let kept = adit_spool::quarantine::list(dir.path()).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        kept[0].kind,
        adit_spool::quarantine::Kind::Undecodable {
            sink: adit_spool::UNDECODED.to_string()
        }
    );
    let bytes = std::fs::read(&kept[0].path).unwrap();
    match adit_spool::frame::parse_record(&bytes) {
        adit_spool::frame::Parsed::Record { seq, payload, .. } => {
            assert_eq!(seq, 2);
            assert_eq!(payload, &unknown[..], "the payload exactly as appended");
        }
        other => panic!("not a framed record: {other:?}"),
    }
}

/// A damaged copy is written again, and a run keeps at most `max_bytes` of
/// undecodable records (a rollback over a long backlog must not fill the
/// disk): past that they are counted as not kept.
#[test]
fn undecodable_records_kept_are_whole_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let mut c = cfg(dir.path(), None);
    c.segment_bytes = 30_000;
    c.max_bytes = 100_000;
    let (spool, _) = Spool::open(c, &reg, &["db"]).unwrap();
    let unknown = |fill: u8| {
        let mut p = vec![99u8; 40_000];
        p[1] = fill;
        p
    };
    // A leftover under the name of the first one, cut short.
    let qdir = adit_spool::quarantine::dir_of(dir.path());
    std::fs::create_dir_all(&qdir).unwrap();
    std::fs::write(qdir.join(format!("sink-undecoded-{:020}.bin", 1)), b"short").unwrap();
    let mut reader = spool.reader("db", &reg);
    for fill in 0..4u8 {
        spool.append_payload(1, &unknown(fill)).unwrap();
        let d = reader.next(1000, Duration::ZERO).unwrap();
        assert_eq!(d.records, 1);
        spool.ack("db", d.last_seq).unwrap();
    }
    let kept = adit_spool::quarantine::list(dir.path()).unwrap();
    let not_kept = spool.stats().undecodable_not_kept.load(Ordering::Relaxed);
    println!(
        "4 undecodable records of 40 kB, max_bytes 100 kB: {} kept, {not_kept} not kept",
        kept.len()
    );
    assert_eq!((kept.len(), not_kept), (2, 2), "{kept:?}");
    for (i, e) in kept.iter().enumerate() {
        let bytes = std::fs::read(&e.path).unwrap();
        match adit_spool::frame::parse_record(&bytes) {
            adit_spool::frame::Parsed::Record { seq, payload, .. } => {
                assert_eq!(seq, i as u64 + 1);
                assert_eq!(
                    payload,
                    &unknown(i as u8)[..],
                    "whole, the damaged leftover replaced"
                );
            }
            other => panic!("not a framed record: {other:?}"),
        }
    }
}

#[test]
fn a_second_opener_of_the_spool_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let (first, _) = Spool::open(cfg(dir.path(), None), &reg, &["db"]).unwrap();
    match Spool::open(cfg(dir.path(), None), &reg, &["db"]) {
        Err(SpoolError::Locked(e)) => {
            let text = e.to_string();
            println!("{text}");
            assert!(
                text.contains(&format!("pid {}", std::process::id())),
                "{text}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("two openers of one spool directory"),
    }
    drop(first);
    assert!(Spool::open(cfg(dir.path(), None), &reg, &["db"]).is_ok());
}

/// Runs `f` on a thread and fails the test if it does not finish in 10 s.
fn within_10s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what}: did not return within 10 s"))
}

#[test]
fn a_batch_above_max_size_is_refused_and_counted_under_every_policy() {
    for policy in [WhenFull::Block, WhenFull::DropOldest, WhenFull::DropNewest] {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry();
        let mut c = cfg(dir.path(), None);
        c.when_full = policy;
        c.max_bytes = 4096;
        c.segment_bytes = 1024;
        let (spool, _) = Spool::open(c, &reg, &["db"]).unwrap();
        spool.append(&batch(0, 4)).unwrap();
        let s2 = spool.clone();
        let result = within_10s(&format!("{policy:?}"), move || s2.append(&batch(10, 1000)));
        assert!(
            matches!(result, Err(AppendError::TooLarge(1000))),
            "{policy:?}: {result:?}"
        );
        assert_eq!(
            spool
                .stats()
                .dropped_too_large_readings
                .load(Ordering::Relaxed),
            1000,
            "{policy:?}"
        );
        spool.append(&batch(4, 4)).unwrap();
        assert_eq!(
            drain(&spool, &reg),
            (0..8).collect::<Vec<_>>(),
            "{policy:?}"
        );
    }
}

#[test]
fn close_releases_an_append_blocked_on_a_full_spool() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let mut c = cfg(dir.path(), None);
    c.when_full = WhenFull::Block;
    c.max_bytes = 1024;
    c.segment_bytes = 256;
    let (spool, _) = Spool::open(c, &reg, &["db"]).unwrap();
    // Append until the spool is full and the append blocks (no reader acks).
    let s2 = spool.clone();
    let filler = std::thread::spawn(move || loop {
        if let Err(e) = s2.append(&batch(0, 4)) {
            return e;
        }
    });
    let t0 = Instant::now();
    while spool.stats().block_waits.load(Ordering::Relaxed) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "never blocked");
        std::thread::sleep(Duration::from_millis(5));
    }
    spool.close();
    let result = within_10s("blocked append after close", move || filler.join().unwrap());
    assert!(matches!(result, AppendError::Closed), "{result:?}");
}

#[test]
fn a_short_write_on_a_full_disk_leaves_no_half_record() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let faults = Faults::new();
    faults.arm(FileOp::Write, 2, 1, Fault::ShortWrite(7));
    let (spool, _) = Spool::open(cfg(dir.path(), Some(faults)), &reg, &["db"]).unwrap();
    let mut outcomes = Vec::new();
    for i in 0..4 {
        outcomes.push(spool.append(&batch(i * 2, 2)).is_ok());
    }
    assert_eq!(
        outcomes,
        vec![true, true, false, true],
        "the short write is refused (ENOSPC), counted"
    );
    assert_eq!(spool.stats().disk_full_events.load(Ordering::Relaxed), 1);
    assert_eq!(
        spool
            .stats()
            .dropped_newest_readings
            .load(Ordering::Relaxed),
        2
    );
    drop(spool);
    let (spool, report) = Spool::open(cfg(dir.path(), None), &reg, &["db"]).unwrap();
    assert!(
        !report.found_damage(),
        "no half record was left: {report:?}"
    );
    assert_eq!(drain(&spool, &reg), vec![0, 1, 2, 3, 6, 7]);
}

#[test]
fn a_failed_fsync_stops_the_writer_and_the_restart_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let faults = Faults::new();
    faults.arm(FileOp::Sync, 1, 1, Fault::Eio);
    let (spool, _) = Spool::open(cfg(dir.path(), Some(faults)), &reg, &["db"]).unwrap();
    spool.append(&batch(0, 2)).unwrap();
    assert!(matches!(
        spool.append(&batch(2, 2)),
        Err(AppendError::Failed(_))
    ));
    assert!(
        matches!(spool.append(&batch(4, 2)), Err(AppendError::Failed(_))),
        "after a failed fsync the page cache cannot be trusted: every append is refused"
    );
    assert_eq!(spool.stats().fsync_failures.load(Ordering::Relaxed), 1);
    drop(spool);
    let (spool, _) = Spool::open(cfg(dir.path(), None), &reg, &["db"]).unwrap();
    let got = drain(&spool, &reg);
    assert_eq!(
        got,
        vec![0, 1],
        "the record whose fsync failed was reported as not stored: it is not delivered either"
    );
    spool.append(&batch(10, 1)).unwrap();
    assert_eq!(drain(&spool, &reg), vec![10]);
}

#[test]
fn a_retry_on_a_spool_without_cursors_is_refused_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let (spool, _) = Spool::open(cfg(dir.path(), None), &reg, &["db"]).unwrap();
    for i in 0..3 {
        spool.append(&batch(i, 1)).unwrap();
    }
    drop(spool);
    std::fs::remove_file(dir.path().join("ledger.json")).unwrap();
    let before = segments(dir.path());
    assert!(adit_spool::quarantine::retry(cfg(dir.path(), None)).is_err());
    assert!(Spool::open(cfg(dir.path(), None), &reg, &[]).is_err());
    assert_eq!(segments(dir.path()), before, "nothing deleted");
    let (spool, _) = Spool::open(cfg(dir.path(), None), &reg, &["db"]).unwrap();
    assert_eq!(drain(&spool, &reg), vec![0, 1, 2]);
}

#[test]
fn no_room_for_a_new_segment_is_a_full_disk_not_a_dead_writer() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry();
    let faults = Faults::new();
    let mut c = cfg(dir.path(), Some(faults.clone()));
    c.segment_bytes = 16; // one record per segment: every append rotates
    let (spool, _) = Spool::open(c, &reg, &["db"]).unwrap();
    spool.append(&batch(0, 4)).unwrap();
    faults.arm(FileOp::Create, 0, 1, Fault::Enospc);
    assert!(matches!(
        spool.append(&batch(4, 4)),
        Err(AppendError::Dropped(4))
    ));
    assert_eq!(spool.stats().disk_full_events.load(Ordering::Relaxed), 1);
    spool.append(&batch(8, 4)).unwrap();
    assert_eq!(drain(&spool, &reg), vec![0, 1, 2, 3, 8, 9, 10, 11]);
}
