//! The `adit` binary as a user runs it: `check` exit codes and output, and a
//! short `demo` that must write readings into SQLite and stop cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

fn adit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_adit"))
}

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn check_accepts_every_example_config_with_a_summary() {
    let out = adit()
        .args(["check", "-c"])
        .arg(repo("config/demo.toml"))
        .arg(repo("config/tunnel-site.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "demo.toml: ok — site \"demo-tunnel\": 4 device(s) (modbus_tcp, mqtt, opcua), 48 point(s)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("tunnel-site.toml: ok"), "{stdout}");
}

#[test]
fn check_rejects_a_broken_config_with_every_error_and_exit_code_1() {
    let out = adit()
        .args(["check", "-c"])
        .arg(repo(
            "crates/adit-config/tests/broken/many-errors-at-once.toml",
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("12 error(s)"), "{stderr}");
    assert!(
        stderr.contains(":34: device[0].point[3].range:"),
        "{stderr}"
    );
}

#[test]
fn demo_writes_readings_into_sqlite_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = adit()
        .args([
            "--log-level",
            "warn",
            "demo",
            "--for",
            "3s",
            "--every",
            "1s",
            "--dir",
        ])
        .arg(&data)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("readings/s"),
        "the live summary must be printed: {stdout}"
    );
    assert!(stdout.contains("SELECT * FROM readings_view"), "{stdout}");
    let conn = rusqlite::Connection::open(data.join("readings.db")).unwrap();
    let (rows, good): (i64, i64) = conn
        .query_row("SELECT count(*), sum(quality = 0) FROM readings", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(
        rows >= 34 * 2,
        "expected at least two polls of 34 points, got {rows}"
    );
    assert_eq!(rows, good, "a healthy simulator gives only good readings");
    assert!(
        stdout.contains(&format!("holds {rows} readings")),
        "{stdout}"
    );
    // The process ends right after its last audit entry: it must be on disk.
    let entries = adit_audit::read_entries(&data.join("audit")).unwrap();
    let kinds: Vec<&str> = entries.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds.last().copied(),
        Some("adit_stop"),
        "the audit log ends with adit_stop: {kinds:?}"
    );
}

/// A child process killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn probe_shows_a_simulated_block_decoded_every_way_and_fails_clearly_on_an_exception() {
    use std::io::{BufRead, BufReader};
    let mut child = adit()
        .args([
            "--log-level",
            "warn",
            "sim",
            "modbus",
            "--listen",
            "127.0.0.1:0",
            "--units",
            "1,2",
            "--fault",
            "2:exception=4",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let sim = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line.split_whitespace().nth(3).unwrap().to_string();
    assert!(line.starts_with("modbus simulator on 127.0.0.1:"), "{line}");

    let out = adit()
        .args([
            "probe",
            "modbus",
            "--addr",
            &addr,
            "--unit",
            "1",
            "--read",
            "holding:0..4",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("holding registers 0..=3 (4 read)"), "{text}");
    for needle in ["ABCD", "CDAB", "BADC", "DCBA", " f32 ", " u32 ", " i32 "] {
        assert!(text.contains(needle), "missing {needle}: {text}");
    }

    let out = adit()
        .args([
            "probe",
            "modbus",
            "--addr",
            &addr,
            "--unit",
            "2",
            "--read",
            "holding:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exception 4"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(sim);
}
