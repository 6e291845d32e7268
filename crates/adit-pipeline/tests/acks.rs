//! The source contract's acknowledgements, through a real pipeline and
//! spool: every acked batch is settled exactly once, `Durable` only when
//! the spool's fsync policy says so, and drops reach the source by reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adit_core::{PointId, PointMeta, PointRegistry, Quality, Reading, Timestamp, Value};
use adit_pipeline::{
    Ack, ClockRules, DropReason, Health, Metrics, Observers, Outcome, Pipeline, PipelineOptions,
    Sink, SinkError, SinkOptions, Source, SourceContext, SourceFactory, SourceFuture,
};
use adit_spool::faults::{Fault, Faults, FileOp};
use adit_spool::{FsyncPolicy, Spool, SpoolConfig, WhenFull};

type Outcomes = Arc<Mutex<Vec<(u32, Outcome)>>>;

/// Sends `batches` acked batches of `size` readings each (values numbered),
/// then idles until shutdown. `one_at_a_time`: each batch only after the
/// previous one was settled, so the ingest stage never merges them (each
/// append, drop or deadband decision is about one batch).
struct PushedSource {
    batches: u32,
    size: u32,
    one_at_a_time: bool,
    outcomes: Outcomes,
}

impl Source for PushedSource {
    fn name(&self) -> &'static str {
        "pushed"
    }
    fn protocol(&self) -> &'static str {
        "test"
    }
    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> SourceFuture<'a> {
        Box::pin(async move {
            for b in 0..self.batches {
                let batch: Vec<Reading> = (0..self.size)
                    .map(|i| {
                        let v = i64::from(b * self.size + i);
                        Reading {
                            point: PointId(0),
                            value: Some(Value::I64(v)),
                            quality: Quality::Good,
                            source_ts: Timestamp(1_700_000_000_000_000 + v),
                            received_ts: Timestamp(1_700_000_000_000_000 + v),
                        }
                    })
                    .collect();
                let outcomes = self.outcomes.clone();
                let ack = Ack::new(move |o| outcomes.lock().unwrap().push((b, o)));
                if ctx.out.send_acked(batch, ack).await.is_err() {
                    return Ok(());
                }
                while self.one_at_a_time && self.outcomes.lock().unwrap().len() <= b as usize {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(1)) => {}
                        () = ctx.shutdown.cancelled() => return Ok(()),
                    }
                }
            }
            ctx.shutdown.cancelled().await;
            Ok(())
        })
    }
}

/// Stores nothing, fails every write (retryable): the spool keeps everything.
struct DownSink;
impl Sink for DownSink {
    fn name(&self) -> &'static str {
        "down"
    }
    fn write(&mut self, _: &[Reading]) -> Result<u64, SinkError> {
        Err(SinkError::Retryable("database down".into()))
    }
}

/// Counts what it stores.
struct CountingSink(Arc<Mutex<u64>>);
impl Sink for CountingSink {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn write(&mut self, readings: &[Reading]) -> Result<u64, SinkError> {
        *self.0.lock().unwrap() += readings.len() as u64;
        Ok(readings.len() as u64)
    }
}

fn registry(deadband: Option<f64>) -> Arc<PointRegistry> {
    let mut r = PointRegistry::new();
    let mut meta = PointMeta::plain("p", "d", 1000);
    meta.deadband = deadband;
    r.insert(meta).unwrap();
    Arc::new(r)
}

struct Run {
    pipeline: Pipeline,
    outcomes: Outcomes,
    _dir: tempfile::TempDir,
}

fn start(
    registry: Arc<PointRegistry>,
    spool_cfg: impl FnOnce(&std::path::Path) -> SpoolConfig,
    sink: Box<dyn Sink>,
    batches: u32,
    size: u32,
    one_at_a_time: bool,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let cfg = spool_cfg(dir.path());
    let (spool, _) = Spool::open(cfg, &registry, &[sink.name()]).unwrap();
    let outcomes: Outcomes = Arc::default();
    let o = outcomes.clone();
    let factory: SourceFactory = Box::new(move || {
        Box::new(PushedSource {
            batches,
            size,
            one_at_a_time,
            outcomes: o.clone(),
        })
    });
    let pipeline = Pipeline::start(
        registry,
        vec![("test", factory)],
        vec![(
            sink,
            SinkOptions {
                batch_max_rows: 1000,
                batch_max_delay: Duration::from_millis(10),
                retry_min: Duration::from_millis(5),
                retry_max: Duration::from_millis(50),
            },
        )],
        spool,
        PipelineOptions {
            channel_capacity: 2,
            clock: ClockRules {
                max_future_skew: Duration::from_secs(86_400 * 365 * 10),
                max_age: Duration::from_secs(86_400 * 365 * 10),
            },
            drain_timeout: Duration::from_secs(1),
        },
        Observers {
            metrics: Metrics::for_tests(),
            health: Arc::new(Health::default()),
            audit: adit_audit::Audit::disabled(),
            watchdog: None,
        },
    );
    Run {
        pipeline,
        outcomes,
        _dir: dir,
    }
}

fn spool_cfg(
    fsync: FsyncPolicy,
    when_full: WhenFull,
    max_bytes: u64,
) -> impl FnOnce(&std::path::Path) -> SpoolConfig {
    move |dir| SpoolConfig {
        dir: dir.join("spool"),
        segment_bytes: (max_bytes / 4).max(1024),
        max_bytes,
        when_full,
        fsync,
        faults: None,
    }
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acked_batch_is_settled_once_as_durable_under_each_fsync_policy_merges_included() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_millis(20)),
        FsyncPolicy::Never,
    ] {
        let stored = Arc::new(Mutex::new(0));
        let run = start(
            registry(None),
            spool_cfg(fsync, WhenFull::Block, 1 << 30),
            Box::new(CountingSink(stored.clone())),
            200,
            5,
            false,
        );
        let outcomes = run.outcomes.clone();
        wait_for("200 acks", || outcomes.lock().unwrap().len() >= 200).await;
        assert!(run.pipeline.shutdown().await.drained);
        let outcomes = outcomes.lock().unwrap();
        let mut batches: Vec<u32> = outcomes.iter().map(|(b, _)| *b).collect();
        batches.sort_unstable();
        batches.dedup();
        assert_eq!(
            outcomes.len(),
            200,
            "{fsync:?}: each ack settled exactly once"
        );
        assert_eq!(batches.len(), 200, "{fsync:?}");
        assert!(
            outcomes.iter().all(|(_, o)| *o == Outcome::Durable),
            "{fsync:?}"
        );
        assert_eq!(*stored.lock().unwrap(), 1000, "{fsync:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_interval_an_ack_waits_for_the_fsync_that_covers_its_record() {
    // An interval so long that only the fsync at close covers the record.
    let run = start(
        registry(None),
        spool_cfg(
            FsyncPolicy::Interval(Duration::from_secs(3600)),
            WhenFull::Block,
            1 << 30,
        ),
        Box::new(DownSink),
        1,
        3,
        false,
    );
    let spool = run.pipeline.spool().clone();
    wait_for("the batch appended", || spool.last_seq() >= 1).await;
    assert!(
        spool.durable_seq() < spool.last_seq(),
        "appended, not yet fsynced"
    );
    assert!(
        run.outcomes.lock().unwrap().is_empty(),
        "no ack for a record the fsync has not covered"
    );
    drop(spool);
    let outcomes = run.outcomes.clone();
    run.pipeline.shutdown().await; // closes the spool: fsync
    assert_eq!(*outcomes.lock().unwrap(), vec![(0, Outcome::Durable)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_under_drop_newest_reaches_the_source_as_a_named_drop() {
    let run = start(
        registry(None),
        spool_cfg(FsyncPolicy::Never, WhenFull::DropNewest, 4096),
        Box::new(DownSink),
        100,
        10,
        true,
    );
    let outcomes = run.outcomes.clone();
    wait_for("100 acks", || outcomes.lock().unwrap().len() >= 100).await;
    run.pipeline.shutdown().await;
    let outcomes = outcomes.lock().unwrap();
    let durable = outcomes
        .iter()
        .filter(|(_, o)| *o == Outcome::Durable)
        .count();
    let full = outcomes
        .iter()
        .filter(|(_, o)| *o == Outcome::Dropped(DropReason::SpoolFull))
        .count();
    println!("drop_newest, 4 KiB spool, sink down: {durable} durable, {full} dropped (spool_full)");
    assert!(durable > 0 && full > 0, "{durable} durable, {full} full");
    assert_eq!(durable + full, 100);
    assert!(Outcome::Dropped(DropReason::SpoolFull).may_acknowledge_upstream());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_spool_reaches_the_source_and_forbids_acknowledging_upstream() {
    let faults = Faults::new();
    // The first three appends succeed, every later one fails (one batch per
    // append: the source sends the next only when the last was settled).
    faults.arm(FileOp::Write, 3, u32::MAX, Fault::Eio);
    let run = start(
        registry(None),
        move |dir| SpoolConfig {
            dir: dir.join("spool"),
            segment_bytes: 1 << 20,
            max_bytes: 1 << 30,
            when_full: WhenFull::Block,
            fsync: FsyncPolicy::Always,
            faults: Some(faults),
        },
        Box::new(DownSink),
        10,
        1,
        true,
    );
    let outcomes = run.outcomes.clone();
    wait_for("10 acks", || outcomes.lock().unwrap().len() >= 10).await;
    run.pipeline.shutdown().await;
    let outcomes = outcomes.lock().unwrap();
    let failed: Vec<Outcome> = outcomes
        .iter()
        .map(|(_, o)| *o)
        .filter(|o| *o == Outcome::Dropped(DropReason::SpoolFailed))
        .collect();
    assert!(!failed.is_empty(), "{outcomes:?}");
    assert!(
        outcomes.iter().all(|(_, o)| matches!(
            o,
            Outcome::Durable | Outcome::Dropped(DropReason::SpoolFailed)
        )),
        "{outcomes:?}"
    );
    assert!(
        !failed[0].may_acknowledge_upstream(),
        "the peer must redeliver after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_deadband_suppresses_entirely_is_settled() {
    // Deadband 1000: after the first reading, nothing moves enough to be stored.
    let run = start(
        registry(Some(1000.0)),
        spool_cfg(FsyncPolicy::Never, WhenFull::Block, 1 << 30),
        Box::new(CountingSink(Arc::default())),
        20,
        1,
        true,
    );
    let outcomes = run.outcomes.clone();
    wait_for("20 acks", || outcomes.lock().unwrap().len() >= 20).await;
    run.pipeline.shutdown().await;
    let outcomes = outcomes.lock().unwrap();
    let settled = outcomes
        .iter()
        .filter(|(_, o)| *o == Outcome::Settled)
        .count();
    let durable = outcomes
        .iter()
        .filter(|(_, o)| *o == Outcome::Durable)
        .count();
    assert!(settled > 0, "{outcomes:?}");
    assert_eq!(settled + durable, 20, "{outcomes:?}");
}
