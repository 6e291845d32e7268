//! The spool's guarantees, each counted: nothing accepted is lost across
//! restarts, nothing acknowledged is replayed, known-bad files recover, and
//! every `when_full` policy accounts for every reading.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use adit_core::{PointId, PointMeta, PointRegistry, Quality, Reading, Timestamp, Value};
use adit_spool::{FsyncPolicy, Spool, SpoolConfig, WhenFull};
use proptest::prelude::*;

fn registry(names: &[&str]) -> PointRegistry {
    let mut r = PointRegistry::new();
    for n in names {
        r.insert(PointMeta::plain(n, "d", 1000)).unwrap();
    }
    r
}

fn cfg(dir: &Path, segment_bytes: u64, max_bytes: u64, when_full: WhenFull) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        segment_bytes,
        max_bytes,
        when_full,
        fsync: FsyncPolicy::Never,
        faults: None,
    }
}

/// A batch whose readings carry values `start..start + n` for point 0.
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

fn values(readings: &[Reading]) -> Vec<i64> {
    readings
        .iter()
        .map(|r| match r.value {
            Some(Value::I64(v)) => v,
            _ => -1,
        })
        .collect()
}

/// Reads everything available for `cursor` (acknowledging it if `ack`).
fn drain(spool: &Spool, reg: &PointRegistry, cursor: &str, ack: bool) -> Vec<i64> {
    let mut reader = spool.reader(cursor, reg);
    let mut out = Vec::new();
    loop {
        let d = reader.next(1000, Duration::from_millis(1)).unwrap();
        if d.records == 0 {
            return out;
        }
        out.extend(values(&d.readings));
        if ack {
            spool.ack(cursor, d.last_seq).unwrap();
        }
    }
}

#[test]
fn next_into_appends_to_a_held_batch_and_counts_only_what_it_appends() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&["p"]);
    let c = cfg(dir.path(), 1 << 20, 1 << 30, WhenFull::Block);
    let (spool, _) = Spool::open(c, &reg, &["db"]).unwrap();
    for i in 0..10 {
        spool.append(&batch(i * 10, 10)).unwrap();
    }
    let mut reader = spool.reader("db", &reg);
    let mut held = batch(1000, 5);
    let d = reader.next_into(&mut held, 15, Duration::ZERO).unwrap();
    assert!(d.readings.is_empty(), "the readings went into `held`");
    assert_eq!(d.records, 2, "whole records, at least the asked rows");
    let mut want: Vec<_> = (1000..1005).collect();
    want.extend(0..20);
    assert_eq!(values(&held), want, "what was held is kept, in order");
    let d = reader.next_into(&mut held, 1, Duration::ZERO).unwrap();
    assert_eq!((d.records, held.len()), (1, 35));
}

#[test]
fn acknowledged_records_are_never_replayed_and_unacknowledged_ones_always_are() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&["p"]);
    let c = cfg(dir.path(), 1024, 1 << 30, WhenFull::Block);
    {
        let (spool, _) = Spool::open(c.clone(), &reg, &["db"]).unwrap();
        for i in 0..10 {
            spool.append(&batch(i * 10, 10)).unwrap();
        }
        let mut reader = spool.reader("db", &reg);
        let d = reader.next(35, Duration::ZERO).unwrap();
        assert_eq!(
            values(&d.readings),
            (0..40).collect::<Vec<_>>(),
            "whole records, at least the asked rows"
        );
        spool.ack("db", d.last_seq).unwrap();
        assert_eq!((spool.last_seq(), spool.pending_records()), (10, 6));
    } // dropped without close: like a crash after the ack
    let (spool, report) = Spool::open(c, &reg, &["db"]).unwrap();
    assert_eq!(report.pending_records, 6);
    assert_eq!((spool.last_seq(), spool.pending_records()), (10, 6));
    assert_eq!(
        drain(&spool, &reg, "db", true),
        (40..100).collect::<Vec<_>>()
    );
    assert!(
        spool
            .dir()
            .read_dir()
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("seg-"))
            .count()
            <= 1,
        "acknowledged segments are deleted"
    );
}

#[test]
fn a_segment_stays_until_every_cursor_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&["p"]);
    let (spool, _) = Spool::open(
        cfg(dir.path(), 200, 1 << 30, WhenFull::Block),
        &reg,
        &["sqlite", "questdb"],
    )
    .unwrap();
    for i in 0..20 {
        spool.append(&batch(i, 1)).unwrap();
    }
    assert_eq!(drain(&spool, &reg, "sqlite", true).len(), 20);
    let segments = |s: &Spool| {
        s.dir()
            .read_dir()
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("seg-")
            })
            .count()
    };
    let before = segments(&spool);
    assert!(before > 2);
    assert_eq!(
        drain(&spool, &reg, "questdb", false).len(),
        20,
        "the slow cursor still gets everything"
    );
    assert_eq!(segments(&spool), before);
    assert_eq!(drain(&spool, &reg, "questdb", true).len(), 20);
    assert_eq!(segments(&spool), 1);
}

fn seg_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    v.sort();
    v
}

/// Writes 5 records of 4 readings into one segment; returns the file and the
/// offsets at which each record starts.
fn five_records(dir: &Path, reg: &PointRegistry) -> (std::path::PathBuf, Vec<u64>) {
    let (spool, _) =
        Spool::open(cfg(dir, 1 << 20, 1 << 30, WhenFull::Block), reg, &["db"]).unwrap();
    let mut offsets = Vec::new();
    for i in 0..5 {
        offsets.push(
            std::fs::metadata(
                seg_files(dir)
                    .first()
                    .map_or_else(|| dir.join("none"), Clone::clone),
            )
            .map_or(0, |m| m.len()),
        );
        spool.append(&batch(i * 4, 4)).unwrap();
    }
    spool.close();
    (seg_files(dir)[0].clone(), offsets)
}

/// Damage done to a segment, given the offsets where its records start.
type Damage = fn(&mut Vec<u8>, &[u64]);

#[test]
fn known_bad_files_recover_one_by_one() {
    let reg = registry(&["p"]);
    // (case, damage, readings expected back, corrupt regions, torn tail?)
    let cases: Vec<(&str, Damage, Vec<i64>, u64, bool)> = vec![
        (
            "torn tail: half a header",
            |b, o| b.truncate(o[4] as usize + 7),
            (0..16).collect(),
            0,
            true,
        ),
        (
            "torn tail: half a payload",
            |b, _| {
                let n = b.len();
                b.truncate(n - 3);
            },
            (0..16).collect(),
            0,
            true,
        ),
        (
            "flipped checksum bit in record 2",
            |b, o| b[o[2] as usize + 16] ^= 0x01,
            [0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 14, 15, 16, 17, 18, 19].to_vec(),
            1,
            false,
        ),
        (
            "flipped payload bit in record 1",
            |b, o| b[o[1] as usize + 30] ^= 0x80,
            [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19].to_vec(),
            1,
            false,
        ),
        (
            "zeroed header of record 3",
            |b, o| {
                let s = o[3] as usize;
                b[s..s + 20].fill(0);
            },
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19].to_vec(),
            1,
            false,
        ),
        (
            "length field says 4 GiB in record 0",
            |b, o| {
                let s = o[0] as usize + 4;
                b[s..s + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            },
            (4..20).collect(),
            1,
            false,
        ),
        (
            "garbage appended after the last record",
            |b, _| b.extend_from_slice(&[0xAB; 50]),
            (0..20).collect(),
            1,
            false,
        ),
        ("file of zeros", |b, _| b.fill(0), vec![], 1, false),
    ];
    for (name, damage, expected, corrupt, torn) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = five_records(dir.path(), &reg);
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes, &offsets);
        std::fs::write(&path, &bytes).unwrap();

        let (spool, report) = Spool::open(
            cfg(dir.path(), 1 << 20, 1 << 30, WhenFull::Block),
            &reg,
            &["db"],
        )
        .unwrap_or_else(|e| panic!("{name}: recovery must never refuse to start: {e}"));
        assert_eq!(report.corrupt_regions, corrupt, "{name}: {report:?}");
        assert_eq!(report.torn_bytes > 0, torn, "{name}: {report:?}");
        assert_eq!(drain(&spool, &reg, "db", true), expected, "{name}");
        if corrupt > 0 {
            assert!(
                dir.path().join("quarantine").read_dir().unwrap().count() > 0,
                "{name}: quarantine file"
            );
        }
        // New appends after recovery land after the surviving records.
        spool.append(&batch(100, 1)).unwrap();
        assert_eq!(
            drain(&spool, &reg, "db", true),
            vec![100],
            "{name}: append after recovery"
        );
        drop(spool);
        // And a second recovery finds nothing more to repair.
        let (_, again) = Spool::open(
            cfg(dir.path(), 1 << 20, 1 << 30, WhenFull::Block),
            &reg,
            &["db"],
        )
        .unwrap();
        assert_eq!(
            (again.corrupt_regions, again.torn_bytes),
            (0, 0),
            "{name}: repaired for good"
        );
    }
}

#[test]
fn drop_newest_refuses_and_counts_every_reading_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&["p"]);
    let (spool, _) = Spool::open(
        cfg(dir.path(), 300, 600, WhenFull::DropNewest),
        &reg,
        &["db"],
    )
    .unwrap();
    let (mut accepted, mut refused) = (0u64, 0u64);
    for i in 0..50 {
        match spool.append(&batch(i * 2, 2)) {
            Ok(_) => accepted += 2,
            Err(adit_spool::AppendError::Dropped(n)) => refused += n as u64,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0 && accepted > 0);
    assert_eq!(
        spool
            .stats()
            .dropped_newest_readings
            .load(std::sync::atomic::Ordering::Relaxed),
        refused
    );
    let got = drain(&spool, &reg, "db", true);
    assert_eq!(got.len() as u64, accepted);
    assert_eq!(
        got,
        (0..accepted as i64).collect::<Vec<_>>(),
        "the oldest are kept"
    );
}

#[test]
fn drop_oldest_keeps_the_newest_and_counts_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&["p"]);
    let (spool, _) = Spool::open(
        cfg(dir.path(), 300, 900, WhenFull::DropOldest),
        &reg,
        &["db"],
    )
    .unwrap();
    for i in 0..50 {
        spool.append(&batch(i * 2, 2)).unwrap();
    }
    // Dropping moved the cursor past the dropped records: pending (read
    // without the state lock) counts only what is still there.
    assert_eq!(spool.last_seq(), 50);
    assert!(spool.pending_records() < 50, "{}", spool.pending_records());
    let dropped = spool
        .stats()
        .dropped_oldest_readings
        .load(std::sync::atomic::Ordering::Relaxed);
    let got = drain(&spool, &reg, "db", true);
    assert_eq!(spool.pending_records(), 0);
    assert!(dropped > 0);
    assert_eq!(got.len() as u64 + dropped, 100, "kept + dropped = appended");
    assert_eq!(*got.last().unwrap(), 99, "the newest are kept");
}

#[test]
fn block_waits_for_an_acknowledgement_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&["p"]);
    let (spool, _) =
        Spool::open(cfg(dir.path(), 300, 900, WhenFull::Block), &reg, &["db"]).unwrap();
    let writer = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            for i in 0..50 {
                spool.append(&batch(i * 2, 2)).unwrap();
            }
        })
    };
    // Nothing is read until the writer had to wait for space (it fills the
    // 900-byte bound within a few appends).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while spool
        .stats()
        .block_waits
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never waited"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut got = Vec::new();
    let mut reader = spool.reader("db", &reg);
    while got.len() < 100 {
        let d = reader.next(10, Duration::from_millis(50)).unwrap();
        got.extend(values(&d.readings));
        if d.records > 0 {
            spool.ack("db", d.last_seq).unwrap();
        }
    }
    writer.join().unwrap();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert!(
        spool
            .stats()
            .block_waits
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the writer must have waited"
    );
}

#[test]
fn a_config_change_between_runs_maps_spooled_points_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let old = registry(&["co", "no2", "removed"]);
    {
        let (spool, _) = Spool::open(
            cfg(dir.path(), 1 << 20, 1 << 30, WhenFull::Block),
            &old,
            &["db"],
        )
        .unwrap();
        let mut b = batch(0, 3);
        for (i, r) in b.iter_mut().enumerate() {
            r.point = PointId(i as u32);
        }
        spool.append(&b).unwrap();
    }
    let new = registry(&["no2", "co"]);
    let (spool, _) = Spool::open(
        cfg(dir.path(), 1 << 20, 1 << 30, WhenFull::Block),
        &new,
        &["db"],
    )
    .unwrap();
    let d = spool.reader("db", &new).next(100, Duration::ZERO).unwrap();
    let got: Vec<(u32, i64)> = d
        .readings
        .iter()
        .map(|r| (r.point.0, values(std::slice::from_ref(r))[0]))
        .collect();
    assert_eq!(
        got,
        vec![(1, 0), (0, 1)],
        "co was 0 and is now 1; no2 was 1 and is now 0"
    );
    assert_eq!(
        d.unknown_points, 1,
        "the removed point is counted, not delivered"
    );
}

#[derive(Debug, Clone)]
enum Op {
    /// `n` readings; `true`: shared with the spool (the handoff keeps them).
    Append(usize, bool),
    /// Alert transitions: a record the handoff holds no readings for.
    Alerts,
    ReadAck(usize),
    ReadNoAck(usize),
    Restart,
}

/// Appends `n` readings valued from `next`, through the handoff or not.
fn append(
    spool: &Spool,
    next: i64,
    n: usize,
    shared: bool,
) -> Result<u64, adit_spool::AppendError> {
    if shared {
        spool.append_shared(&std::sync::Arc::new(batch(next, n)))
    } else {
        spool.append(&batch(next, n))
    }
}

fn alert() -> adit_spool::AlertRecord {
    adit_spool::AlertRecord {
        ts: Timestamp(1),
        fired: true,
        rule: "stale".into(),
        severity: "warning".into(),
        subject: "p".into(),
        summary: "p is stale".into(),
        labels_json: "{}".into(),
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..6, any::<bool>()).prop_map(|(n, s)| Op::Append(n, s)),
        1 => Just(Op::Alerts),
        2 => (1usize..12).prop_map(Op::ReadAck),
        1 => (1usize..12).prop_map(Op::ReadNoAck),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The spool against a model (a queue of unacknowledged values): after any
    /// sequence of appends (kept in the handoff or not, with alert records
    /// between), reads, acknowledgements and restarts, a reader delivers
    /// exactly the unacknowledged values, in order. A reader that
    /// acknowledges everything it read lives on between reads, so it mixes
    /// records from the handoff and from the file in one segment.
    #[test]
    fn the_spool_behaves_like_its_model(
        handoff in 0usize..3000,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(&["p"]);
        let c = cfg(dir.path(), 256, 1 << 30, WhenFull::Block);
        let (mut spool, _) = Spool::open(c.clone(), &reg, &["db"]).unwrap();
        // A handoff of a few records at most: readers fall behind it.
        spool.limit_handoff(handoff);
        let mut model: std::collections::VecDeque<i64> = std::collections::VecDeque::new();
        let mut next_value = 0i64;
        let mut kept_reader = None;
        for op in ops {
            match op {
                Op::Append(n, shared) => {
                    append(&spool, next_value, n, shared).unwrap();
                    model.extend(next_value..next_value + n as i64);
                    next_value += n as i64;
                }
                Op::Alerts => {
                    spool.append_alerts(&[alert()]).unwrap();
                }
                Op::ReadAck(n) | Op::ReadNoAck(n) => {
                    if matches!(op, Op::ReadNoAck(_)) {
                        kept_reader = None;
                    }
                    let reader = kept_reader.get_or_insert_with(|| spool.reader("db", &reg));
                    let d = reader.next(n, Duration::ZERO).unwrap();
                    let got = values(&d.readings);
                    let expected: Vec<i64> = model.iter().take(got.len()).copied().collect();
                    prop_assert_eq!(&got, &expected);
                    if matches!(op, Op::ReadAck(_)) && d.records > 0 {
                        spool.ack("db", d.last_seq).unwrap();
                        for _ in 0..got.len() { model.pop_front(); }
                    } else {
                        kept_reader = None;
                    }
                }
                Op::Restart => {
                    kept_reader = None;
                    drop(spool);
                    spool = Spool::open(c.clone(), &reg, &["db"]).unwrap().0;
                    spool.limit_handoff(handoff);
                }
            }
        }
        prop_assert_eq!(drain(&spool, &reg, "db", true), model.into_iter().collect::<Vec<_>>());
    }
}

#[derive(Debug, Clone)]
enum ModelOp {
    Append(usize, bool),
    ReadAck(usize, usize),
    Restart,
    /// Flip one byte of one segment file (picked by index, modulo), then restart.
    Damage(usize, usize),
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        5 => (1usize..6, any::<bool>()).prop_map(|(n, s)| ModelOp::Append(n, s)),
        3 => (0usize..2, 1usize..12).prop_map(|(c, n)| ModelOp::ReadAck(c, n)),
        1 => Just(ModelOp::Restart),
        1 => (0usize..8, 0usize..4096).prop_map(|(s, b)| ModelOp::Damage(s, b)),
    ]
}

/// `got` is strictly increasing and every value of it is still in `model`.
fn is_increasing_subset(got: &[i64], model: &std::collections::VecDeque<i64>) -> bool {
    got.windows(2).all(|w| w[0] < w[1]) && got.iter().all(|v| model.contains(v))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Two cursors, a small size bound under `drop_newest` or `drop_oldest`,
    /// restarts and random damage to segment files. Always: recovery starts;
    /// a cursor never sees a value twice after acknowledging it, never out of
    /// order, never one that was not appended. Without damage: `drop_newest`
    /// delivers exactly what it accepted and counts every refusal;
    /// `drop_oldest` delivers a suffix (it only ever drops the oldest).
    #[test]
    fn several_cursors_drop_policies_and_damage_keep_the_spools_promises(
        drop_oldest in any::<bool>(),
        handoff in 0usize..3000,
        ops in prop::collection::vec(model_op(), 1..60),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(&["p"]);
        let policy = if drop_oldest { WhenFull::DropOldest } else { WhenFull::DropNewest };
        let c = cfg(dir.path(), 256, 2048, policy);
        let cursors = ["a", "b"];
        let open = || {
            let (spool, report) = Spool::open(c.clone(), &reg, &cursors).unwrap();
            spool.limit_handoff(handoff);
            (spool, report)
        };
        let (mut spool, _) = open();
        let mut models = [std::collections::VecDeque::new(), std::collections::VecDeque::new()];
        let mut next_value = 0i64;
        let (mut refused, mut counted_refused) = (0u64, 0u64);
        let mut damaged = false;
        let mut readers: [Option<adit_spool::Reader>; 2] = [None, None];
        for op in ops {
            match op {
                ModelOp::Append(n, shared) => {
                    match append(&spool, next_value, n, shared) {
                        Ok(_) => for m in &mut models { m.extend(next_value..next_value + n as i64) },
                        Err(adit_spool::AppendError::Dropped(k)) => refused += k as u64,
                        Err(e) => prop_assert!(false, "append failed: {}", e),
                    }
                    next_value += n as i64;
                }
                ModelOp::ReadAck(ci, n) => {
                    // Readers live on between reads (they acknowledge all
                    // they read), through drops and the handoff's bound.
                    let reader = readers[ci].get_or_insert_with(|| spool.reader(cursors[ci], &reg));
                    let d = reader.next(n, Duration::ZERO).unwrap();
                    let got = values(&d.readings);
                    prop_assert!(is_increasing_subset(&got, &models[ci]), "cursor {} got {:?}, model {:?}", cursors[ci], got, models[ci]);
                    if !damaged && !drop_oldest {
                        let expected: Vec<i64> = models[ci].iter().take(got.len()).copied().collect();
                        prop_assert_eq!(&got, &expected);
                    }
                    if d.records > 0 {
                        spool.ack(cursors[ci], d.last_seq).unwrap();
                        if let Some(&last) = got.last() {
                            models[ci].retain(|&v| v > last);
                        }
                    }
                }
                ModelOp::Restart | ModelOp::Damage(..) => {
                    readers = [None, None];
                    counted_refused += spool.stats().dropped_newest_readings.load(std::sync::atomic::Ordering::Relaxed);
                    drop(spool);
                    if let ModelOp::Damage(s, b) = op {
                        let segs = seg_files(dir.path());
                        if !segs.is_empty() {
                            let path = &segs[s % segs.len()];
                            let mut bytes = std::fs::read(path).unwrap();
                            if !bytes.is_empty() {
                                let i = b % bytes.len();
                                bytes[i] ^= 0x5A;
                                std::fs::write(path, &bytes).unwrap();
                                damaged = true;
                            }
                        }
                    }
                    let (s, report) = open();
                    if !damaged {
                        prop_assert!(!report.found_damage(), "{:?}", report);
                    }
                    spool = s;
                }
            }
        }
        counted_refused += spool.stats().dropped_newest_readings.load(std::sync::atomic::Ordering::Relaxed);
        if !drop_oldest {
            prop_assert_eq!(refused, counted_refused, "every refusal counted");
        }
        for (ci, cursor) in cursors.iter().enumerate() {
            let got = drain(&spool, &reg, cursor, true);
            prop_assert!(is_increasing_subset(&got, &models[ci]), "{}: {:?} vs {:?}", cursor, got, models[ci]);
            if !damaged {
                if drop_oldest {
                    let tail: Vec<i64> = models[ci].iter().skip(models[ci].len() - got.len()).copied().collect();
                    prop_assert_eq!(&got, &tail, "drop_oldest keeps a suffix");
                } else {
                    prop_assert_eq!(got, models[ci].iter().copied().collect::<Vec<_>>());
                }
            }
        }
    }
}

#[test]
fn points_named_at_run_time_keep_their_ids_across_a_restart_and_map_after_a_config_change() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), 1 << 20, 1 << 30, WhenFull::Block);
    let reading = |id: u32, v: i64| Reading {
        point: PointId(id),
        value: Some(Value::I64(v)),
        quality: Quality::Good,
        source_ts: Timestamp(v),
        received_ts: Timestamp(v),
    };
    // Run 1: one configured point, one named at run time.
    {
        let reg = Arc::new(registry(&["p"]));
        let (spool, _) = Spool::open(c.clone(), &reg, &["db"]).unwrap();
        spool.attach_registry(reg.clone());
        let mut meta = PointMeta::plain("broker.x", "broker", 1000);
        meta.unit = "ppm".into();
        let x = reg.register(meta).unwrap();
        assert_eq!(x, PointId(1));
        spool.append(&[reading(0, 1), reading(1, 2)]).unwrap();
    }
    // Run 2, same config: the run-time point is back with its id, before
    // any source names it, and its spooled reading maps to it.
    {
        let reg = Arc::new(registry(&["p"]));
        let (spool, _) = Spool::open(c.clone(), &reg, &["db"]).unwrap();
        spool.attach_registry(reg.clone());
        assert_eq!(reg.id_of("broker.x"), Some(PointId(1)));
        assert_eq!(reg.get(PointId(1)).unwrap().unit.as_ref(), "ppm");
        let d = spool.reader("db", &reg).next(100, Duration::ZERO).unwrap();
        let points: Vec<u32> = d.readings.iter().map(|r| r.point.0).collect();
        assert_eq!(points, vec![0, 1]);
    }
    // Run 3, a config with another point first: ids shift, names map, and
    // the run-time point is registered again from the old table.
    let reg = Arc::new(registry(&["q", "p"]));
    let (spool, _) = Spool::open(c, &reg, &["db"]).unwrap();
    spool.attach_registry(reg.clone());
    let d = spool.reader("db", &reg).next(100, Duration::ZERO).unwrap();
    let names: Vec<String> = d
        .readings
        .iter()
        .map(|r| reg.get(r.point).unwrap().name.to_string())
        .collect();
    assert_eq!(names, vec!["p", "broker.x"]);
    assert_eq!(d.unknown_points, 0);
}

/// The ledger follows acknowledgements within `LEDGER_INTERVAL`, and a
/// clean close writes the last of them: nothing acknowledged is replayed.
#[test]
fn acknowledgements_reach_the_ledger_coalesced_and_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&["p"]);
    let c = cfg(dir.path(), 1 << 20, 1 << 30, WhenFull::Block);
    let ledger = || std::fs::read_to_string(dir.path().join("ledger.json")).unwrap();
    {
        let (spool, _) = Spool::open(c.clone(), &reg, &["db"]).unwrap();
        for i in 0..5 {
            spool.append(&batch(i * 10, 10)).unwrap();
        }
        let at_open = ledger();
        // Acknowledgements right after open fall inside the interval: they
        // are kept in memory (the file still says what it said at open).
        spool.ack("db", 1).unwrap();
        spool.ack("db", 2).unwrap();
        assert_eq!(
            ledger(),
            at_open,
            "each acknowledgement does not rewrite the ledger"
        );
        // The flusher writes it once the interval has passed.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ledger().contains("\"db\":2") {
            assert!(
                std::time::Instant::now() < deadline,
                "ledger never written: {}",
                ledger()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        spool.ack("db", 4).unwrap();
        // Dropped without close: the last acknowledgement is written too.
    }
    assert!(ledger().contains("\"db\":4"), "{}", ledger());
    let (spool, report) = Spool::open(c, &reg, &["db"]).unwrap();
    assert_eq!(report.lost_records, 0);
    assert_eq!(
        drain(&spool, &reg, "db", false),
        (40..50).collect::<Vec<_>>()
    );
}

/// A segment is deleted only after the ledger records that every cursor is
/// done with it: a restart right after finds no records "missing".
#[test]
fn segments_are_deleted_only_after_the_ledger_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&["p"]);
    // Small segments: every few records rotate.
    let spool = open_unbounded(dir.path(), &reg, 512);
    for i in 0..20 {
        spool.append(&batch(i * 10, 10)).unwrap();
    }
    let last = spool.last_seq();
    spool.ack("db", last - 1).unwrap();
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("seg-")
        })
        .count();
    assert!(
        segments < 5,
        "acknowledged segments deleted: {segments} left"
    );
    // A crash now (no close, no drop: the ledger file is what a restart sees).
    let ledger = std::fs::read_to_string(dir.path().join("ledger.json")).unwrap();
    assert!(ledger.contains(&format!("\"db\":{}", last - 1)), "{ledger}");
    std::mem::forget(spool);
}

/// A reader waiting for a batch is woken when enough items arrived, at its
/// deadline, or when the spool closes; not by each smaller append.
#[test]
fn a_reader_waits_for_its_batch_its_deadline_or_close() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&["p"]);
    let spool = open_unbounded(dir.path(), &reg, 1 << 20);
    let mut reader = spool.reader("db", &reg);
    assert_eq!(reader.next(100, Duration::ZERO).unwrap().records, 0);

    // Deadline: nothing comes.
    let t = std::time::Instant::now();
    reader.wait_for(50, Some(t + Duration::from_millis(100)));
    assert!(t.elapsed() >= Duration::from_millis(100));

    // Threshold: 5 appends of 10 items wake it; it then reads all 50.
    let writer = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            for i in 0..5 {
                std::thread::sleep(Duration::from_millis(20));
                spool.append(&batch(i * 10, 10)).unwrap();
            }
        })
    };
    let t = std::time::Instant::now();
    reader.wait_for(50, Some(t + Duration::from_secs(30)));
    let waited = t.elapsed();
    writer.join().unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "woken at its threshold: {waited:?}"
    );
    assert_eq!(reader.next(100, Duration::ZERO).unwrap().readings.len(), 50);

    // Close wakes a reader that waits without a deadline.
    let closer = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            spool.close();
        })
    };
    let t = std::time::Instant::now();
    reader.wait_for(1, None);
    closer.join().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "close wakes it: {:?}",
        t.elapsed()
    );
}

/// Records read through the reader's window across many segments and
/// window boundaries come back whole and in order.
#[test]
fn records_larger_than_the_read_window_and_many_small_ones_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&["p"]);
    let spool = open_unbounded(dir.path(), &reg, 4 << 20);
    let mut expected = Vec::new();
    let mut start = 0;
    for n in [1usize, 30_000, 3, 7, 20_000, 1, 1, 50_000, 2] {
        spool.append(&batch(start, n)).unwrap();
        expected.extend(start..start + n as i64);
        start += n as i64;
    }
    assert_eq!(drain(&spool, &reg, "db", false), expected);
}

/// A spool with one cursor `db`, `segment_bytes` per segment, no size bound
/// to speak of, `when_full = block`.
fn open_unbounded(dir: &Path, reg: &PointRegistry, segment_bytes: u64) -> Spool {
    Spool::open(
        cfg(dir, segment_bytes, 1 << 30, WhenFull::Block),
        reg,
        &["db"],
    )
    .unwrap()
    .0
}

/// A quarantine file appears whole or not at all (temporary file, fsync,
/// rename); a temporary file a crash left behind is not listed (nor
/// retried).
#[test]
fn quarantine_files_are_written_whole_and_leftovers_are_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&["a"]);
    let c = cfg(dir.path(), 1 << 20, 1 << 24, WhenFull::DropOldest);
    let (spool, _) = Spool::open(c, &reg, &["db"]).unwrap();
    let path = spool
        .quarantine_readings("questdb", 7, &batch(0, 5))
        .unwrap();
    let qdir = adit_spool::quarantine::dir_of(dir.path());
    std::fs::write(
        qdir.join("sink-questdb-00000000000000000008.bin.tmp"),
        b"half",
    )
    .unwrap();
    let names: Vec<String> = std::fs::read_dir(&qdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let listed = adit_spool::quarantine::list(dir.path()).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].path, path);
    assert!(
        matches!(
            &listed[0].kind,
            adit_spool::quarantine::Kind::Readings { items: 5, .. }
        ),
        "{:?}",
        listed[0].kind
    );
}

/// Readers that keep up take records from the handoff; one that fell
/// further behind than the handoff holds reads the file, and both get every
/// value once, in order, across segment boundaries and alert records.
#[test]
fn the_handoff_and_the_file_deliver_the_same_records() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(&["p"]);
    let c = cfg(dir.path(), 64 * 1024, 1 << 30, WhenFull::Block);
    let (spool, _) = Spool::open(c, &reg, &["fast", "slow"]).unwrap();
    // About twelve of the batches below.
    spool.limit_handoff(1 << 20);
    let mut fast = spool.reader("fast", &reg);
    let mut slow = spool.reader("slow", &reg);
    let (mut fast_got, mut slow_got) = (Vec::new(), Vec::new());
    let mut next = 0i64;
    // 200 records of 1,000 readings: many times what the handoff holds, in
    // many segments; every tenth is appended from a borrow, every
    // seventh is followed by alerts. `fast` reads after every append.
    for i in 0..200 {
        append(&spool, next, 1000, i % 10 != 0).unwrap();
        next += 1000;
        if i % 7 == 0 {
            spool.append_alerts(&[alert()]).unwrap();
        }
        let d = fast.next(10_000, Duration::ZERO).unwrap();
        fast_got.extend(values(&d.readings));
        spool.ack("fast", d.last_seq).unwrap();
        if i == 20 {
            // `slow` takes a little, then falls behind.
            let d = slow.next(1, Duration::ZERO).unwrap();
            slow_got.extend(values(&d.readings));
            spool.ack("slow", d.last_seq).unwrap();
        }
    }
    let from_memory = spool.stats().handed_off_records.load(Relaxed);
    loop {
        let d = slow.next(10_000, Duration::ZERO).unwrap();
        if d.records == 0 {
            break;
        }
        slow_got.extend(values(&d.readings));
        spool.ack("slow", d.last_seq).unwrap();
    }
    let all: Vec<i64> = (0..next).collect();
    assert_eq!(fast_got, all, "the reader that kept up");
    assert_eq!(slow_got, all, "the reader that fell behind");
    // `fast` took the 180 shared batches from memory; `slow` took the tail
    // the handoff still held at the end, and read the rest from the file.
    let slow_from_memory = spool.stats().handed_off_records.load(Relaxed) - from_memory;
    println!("handed off: fast {from_memory} of 200 batches, slow {slow_from_memory}");
    assert!(from_memory >= 170, "{from_memory}");
    assert!((1..20).contains(&slow_from_memory), "{slow_from_memory}");
}
