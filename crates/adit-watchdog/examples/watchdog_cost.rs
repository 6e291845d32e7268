//! Rule evaluation cost per reading, and memory of the live state and the
//! watchdog for 10,000 points.
//!
//! ```text
//! cargo run --release -p adit-watchdog --example watchdog_cost
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use adit_audit::Audit;
use adit_core::{PointId, PointMeta, PointRegistry, Quality, Reading, Timestamp, Value};
use adit_watchdog::rules::Condition;
use adit_watchdog::{Engine, RuleSpec};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let n = 10_000u32;
    let mut registry = PointRegistry::new();
    for i in 0..n {
        registry
            .insert(PointMeta::plain(
                &format!("bore_{}.co_{i}", i % 2),
                &format!("plc{}", i / 100),
                1000,
            ))
            .unwrap();
    }
    let registry = Arc::new(registry);
    let rule = |name: &str, condition| RuleSpec {
        name: name.into(),
        points: "*.co_*".into(),
        condition,
        hold: Duration::ZERO,
        severity: "warning".into(),
        check_first: String::new(),
        runbook: None,
    };
    let rules = vec![
        rule(
            "CoHigh",
            Condition::Above {
                raise: 70.0,
                clear: 60.0,
            },
        ),
        rule(
            "CoSpike",
            Condition::Rate {
                max_per_second: 50.0,
            },
        ),
        rule("CoStuck", Condition::Flatline { samples: 30 }),
    ];

    let before = rss_kib();
    let live = adit_pipeline::LiveState::new(&registry);
    let live_kib = rss_kib().saturating_sub(before);
    let before = rss_kib();
    let mut engine = Engine::new("bench", rules, registry.clone(), Audit::disabled());
    // One pass so every (rule, point) state exists.
    let batch: Vec<Reading> = (0..n)
        .map(|i| Reading {
            point: PointId(i),
            value: Some(Value::F64(20.0)),
            quality: Quality::Good,
            source_ts: Timestamp(1),
            received_ts: Timestamp(1),
        })
        .collect();
    engine.observe(&batch, Instant::now());
    let engine_kib = rss_kib().saturating_sub(before);

    let rounds = 100;
    let t0 = Instant::now();
    let mut fired = 0;
    let start = Instant::now();
    for r in 0..rounds {
        let batch: Vec<Reading> = (0..n)
            .map(|i| Reading {
                point: PointId(i),
                value: Some(Value::F64(20.0 + f64::from(r % 7) + f64::from(i % 3))),
                quality: Quality::Good,
                source_ts: Timestamp(1),
                received_ts: Timestamp(1),
            })
            .collect();
        // One round per simulated second, as 1 s polls would deliver them.
        fired += engine
            .observe(&batch, t0 + Duration::from_secs(u64::from(r) + 1))
            .len();
    }
    let per = start.elapsed().as_nanos() as f64 / f64::from(rounds * n);
    println!("rule evaluation: 3 rules per point (above, rate, flatline), {} readings: {per:.0} ns per reading (including building the batches)", rounds * n);
    assert_eq!(fired, 0, "a plausible signal must not alert");
    println!("memory for 10,000 points: live state ~{live_kib} KiB, watchdog state for 3 rules ~{engine_kib} KiB (RSS deltas)");
    drop(live);
}
