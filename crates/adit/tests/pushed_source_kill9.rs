//! A pushed source that acknowledges its peer only on the durable callback
//! (the contract an MQTT QoS 1 or Sparkplug collector is built on), killed
//! with `kill -9` twenty times, anywhere, with `spool.fsync = always`: every
//! message the peer published is stored exactly once after dedup, and the
//! ones that were accepted but not yet acknowledged when adit died are
//! redelivered by the peer.
//!
//! The peer is a file-backed queue of numbered messages in the test's
//! directory (`acked.log` holds what was acknowledged, fsynced); the adit
//! side runs in a child process (this test binary run again with
//! `ADIT_PUSHED_CHILD=<dir>`) with a real spool and the SQLite sink. Each
//! message carries its own timestamp, so a redelivery is the same sample
//! (same storage key) and dedups.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::format_collect
)]

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use adit_core::{PointId, PointMeta, PointRegistry, Quality, Reading, Timestamp, Value};
use adit_pipeline::{
    Ack, ClockRules, Health, Metrics, Observers, Outcome, Pipeline, PipelineOptions, Sink,
    SinkOptions, Source, SourceContext, SourceFactory, SourceFuture,
};
use adit_spool::{FsyncPolicy, Spool, SpoolConfig, WhenFull};

const MESSAGES: u32 = 6000;
const PER_BATCH: u32 = 10;

fn acked_ids(dir: &Path) -> HashSet<u32> {
    std::fs::read_to_string(dir.join("acked.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// The peer's side of an acknowledgement: remember the ids, durably.
fn acknowledge(dir: &Path, ids: &[u32]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("acked.log"))
        .unwrap();
    let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_data().unwrap();
}

/// Publishes every message the peer has not had acknowledged, in batches
/// with an ack each; acknowledges the peer when the pipeline says so.
struct PeerSource {
    dir: PathBuf,
}

impl Source for PeerSource {
    fn name(&self) -> &'static str {
        "peer"
    }
    fn protocol(&self) -> &'static str {
        "test"
    }
    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> SourceFuture<'a> {
        Box::pin(async move {
            let acked = acked_ids(&self.dir);
            let pending: Vec<u32> = (1..=MESSAGES).filter(|i| !acked.contains(i)).collect();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<u32>, Outcome)>();
            let mut sent = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("sent.log"))
                .unwrap();
            let mut acknowledged = acked.len() as u32;
            let mut publish = |ids: &[u32]| {
                let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
                sent.write_all(text.as_bytes()).unwrap();
            };
            for chunk in pending.chunks(PER_BATCH as usize) {
                publish(chunk);
                let batch: Vec<Reading> = chunk
                    .iter()
                    .map(|&id| Reading {
                        point: PointId(0),
                        value: Some(Value::I64(i64::from(id))),
                        quality: Quality::Good,
                        // The message's own time: a redelivery is the same sample.
                        source_ts: Timestamp(1_790_000_000_000_000 + i64::from(id) * 1000),
                        received_ts: Timestamp(1_790_000_000_000_000 + i64::from(id) * 1000),
                    })
                    .collect();
                let (ids, tx) = (chunk.to_vec(), tx.clone());
                let ack = Ack::new(move |o| {
                    let _ = tx.send((ids, o));
                });
                if ctx.out.send_acked(batch, ack).await.is_err() {
                    return Ok(());
                }
                while let Ok((ids, outcome)) = rx.try_recv() {
                    if outcome.may_acknowledge_upstream() {
                        acknowledge(&self.dir, &ids);
                        acknowledged += ids.len() as u32;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Everything published: wait for the last acks, then say so.
            while acknowledged < MESSAGES {
                tokio::select! {
                    got = rx.recv() => match got {
                        Some((ids, outcome)) if outcome.may_acknowledge_upstream() => {
                            acknowledge(&self.dir, &ids);
                            acknowledged += ids.len() as u32;
                        }
                        Some(_) => {}
                        None => return Ok(()),
                    },
                    () = ctx.shutdown.cancelled() => return Ok(()),
                }
            }
            let _ = std::fs::write(self.dir.join("done"), b"");
            ctx.shutdown.cancelled().await;
            Ok(())
        })
    }
}

/// The adit side, in the child process: spool (fsync always) → SQLite.
fn child(dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut registry = PointRegistry::new();
        registry
            .insert(PointMeta::plain("msg", "peer", 10))
            .unwrap();
        let registry = Arc::new(registry);
        let sqlite = adit_sink_sqlite::SqliteSink::open(
            &dir.join("readings.db"),
            &registry,
            adit_sink_sqlite::Durability::PowerLoss,
        )
        .unwrap();
        let cfg = SpoolConfig {
            dir: dir.join("spool"),
            segment_bytes: 256 * 1024,
            max_bytes: 1 << 30,
            when_full: WhenFull::Block,
            fsync: FsyncPolicy::Always,
            faults: None,
        };
        let (spool, _) = Spool::open(cfg, &registry, &[sqlite.name()]).unwrap();
        let d = dir.to_path_buf();
        let factory: SourceFactory = Box::new(move || Box::new(PeerSource { dir: d.clone() }));
        let pipeline = Pipeline::start(
            registry,
            vec![("test", factory)],
            vec![(
                Box::new(sqlite),
                SinkOptions {
                    batch_max_rows: 500,
                    batch_max_delay: Duration::from_millis(20),
                    retry_min: Duration::from_millis(10),
                    retry_max: Duration::from_millis(200),
                },
            )],
            spool,
            PipelineOptions {
                channel_capacity: 16,
                clock: ClockRules {
                    max_future_skew: Duration::from_secs(86_400 * 3650),
                    max_age: Duration::from_secs(86_400 * 3650),
                },
                drain_timeout: Duration::from_secs(20),
            },
            Observers {
                metrics: Metrics::for_tests(),
                health: Arc::new(Health::default()),
                audit: adit_audit::Audit::disabled(),
                watchdog: None,
            },
        );
        while !dir.join("done").exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(pipeline.shutdown().await.drained);
    });
}

/// Runs as the child when asked to (see the module docs); a no-op otherwise.
#[test]
fn pushed_source_child_process() {
    if let Ok(dir) = std::env::var("ADIT_PUSHED_CHILD") {
        child(Path::new(&dir));
    }
}

fn spawn_child(dir: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "pushed_source_child_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("ADIT_PUSHED_CHILD", dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_pushed_source_acknowledging_on_durable_loses_nothing_and_stores_once_across_kill_nines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let kills = 20;
    for _ in 0..kills {
        let mut c = spawn_child(dir);
        std::thread::sleep(Duration::from_millis(30 + fastrand::u64(0..300)));
        let _ = c.kill(); // SIGKILL
        let _ = c.wait();
    }
    let acked_before_final = acked_ids(dir).len();
    let mut c = spawn_child(dir);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the final run did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "final run: {status:?}");

    let conn = rusqlite::Connection::open(dir.join("readings.db")).unwrap();
    // The messages' rows. The point expects a message every 10 ms, so a
    // restart that takes longer also stores adit's stale markers (no
    // value, reason `stale`, at adit's own time): rows of their own,
    // counted apart, and nothing else may be there.
    let (rows, distinct, min, max): (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT value), min(value), max(value) FROM readings WHERE value IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let (markers, other): (i64, i64) = conn
        .query_row(
            "SELECT count(*) FILTER (WHERE reason = 'stale'), count(*) FILTER (WHERE reason IS NOT 'stale') FROM readings WHERE value IS NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(other, 0, "no valueless row but stale markers");
    let published = std::fs::read_to_string(dir.join("sent.log"))
        .unwrap()
        .lines()
        .count();
    let redelivered = published - MESSAGES as usize;
    println!(
        "pushed source × {kills} kill -9 (fsync always): {MESSAGES} messages, {published} publishes ({redelivered} redelivered after a kill), {acked_before_final} acknowledged before the final run; SQLite holds {rows} rows, {distinct} distinct, ids {min}..={max}, and {markers} stale markers"
    );
    assert_eq!(
        acked_ids(dir).len(),
        MESSAGES as usize,
        "every message acknowledged in the end"
    );
    assert_eq!(
        rows,
        i64::from(MESSAGES),
        "every message stored exactly once after dedup"
    );
    assert_eq!(distinct, i64::from(MESSAGES));
    assert_eq!((min, max), (1, i64::from(MESSAGES)));
    assert!(
        redelivered > 0,
        "kills landed between acceptance and acknowledgement"
    );
}
