//! The harness itself works end to end (a tiny load, no timing asserted):
//! it finds adit's metrics and final accounting, and counts nothing lost.
//! Figures come from release builds; see the README's Performance section.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

/// The harness and the adit binary next to it (`cargo test --workspace`
/// builds both); None (skipped, said) when adit is not built.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_adit-load"));
    let adit = harness.parent()?.join("adit");
    if adit.exists() {
        Some((harness, adit))
    } else {
        eprintln!(
            "skipped: {} not built (run with --workspace)",
            adit.display()
        );
        None
    }
}

#[test]
fn a_small_load_runs_end_to_end_and_loses_nothing() {
    let Some((harness, adit)) = binaries() else {
        return;
    };
    let out = Command::new(&harness)
        .args([
            "run",
            "--devices",
            "3",
            "--registers",
            "10",
            "--interval",
            "200ms",
        ])
        .args(["--warmup", "2s", "--measure", "3s", "--sinks", "sqlite"])
        .env("ADIT_BIN", &adit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let field = |name: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_else(|| panic!("no {name:?} line"))
            .to_string()
    };
    assert_eq!(field("readings lost sqlite"), "0");
    assert_eq!(field("drained at stop"), "true");
    let accepted: f64 = field("readings/s accepted").parse().unwrap();
    assert!(accepted > 0.0, "readings flowed");
}

#[test]
fn a_small_mqtt_load_runs_end_to_end_and_loses_nothing() {
    let Some((harness, adit)) = binaries() else {
        return;
    };
    for format in ["json", "sparkplug"] {
        let out = Command::new(&harness)
            .args(["mqtt", "--format", format, "--rate", "200", "--topics", "4"])
            .args(["--metrics", "3", "--warmup", "1s", "--measure", "2s"])
            .env("ADIT_BIN", &adit)
            .env(
                "PATH",
                format!("{}:/usr/sbin", std::env::var("PATH").unwrap_or_default()),
            )
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        println!("{report}{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "{format}: the harness failed (it fails when a reading is lost)"
        );
        assert!(report.contains(", lost 0"), "{format}: {report}");
    }
}
