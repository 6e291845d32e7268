//! The audit chain: entries written, rotated with the chain continued, and
//! `verify` naming the first entry that was changed, removed or inserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use adit_audit::{audit_files, read_entries, verify, Audit, VerifyError};
use serde_json::json;

fn write_log(dir: &Path, n: u64, max_file_bytes: u64) {
    let audit = Audit::open(dir, max_file_bytes).unwrap();
    for i in 0..n {
        audit.record(
            "device_connect",
            json!({ "device": format!("plc{i}"), "endpoint": "tcp 127.0.0.1:502" }),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while audit
        .stats()
        .written
        .load(std::sync::atomic::Ordering::Relaxed)
        < n
    {
        assert!(Instant::now() < deadline, "entries not written");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn an_intact_chain_verifies_across_rotated_files_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 30, 2000);
    write_log(dir.path(), 30, 2000); // a restart continues the chain
    let files = audit_files(dir.path()).unwrap();
    assert!(files.len() > 3, "rotation by size: {files:?}");
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.entries, 60);
    let entries = read_entries(dir.path()).unwrap();
    assert_eq!(entries.last().unwrap()["seq"], 60);
}

#[test]
fn changing_one_byte_names_the_changed_entry() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, 1 << 20);
    let file = &audit_files(dir.path()).unwrap()[0];
    let mut l = lines(file);
    l[4] = l[4].replacen("plc4", "plc9", 1);
    write_lines(file, &l);
    let err = verify(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Changed {
                seq: 5,
                line: 5,
                ..
            }
        ),
        "{err}"
    );
    println!("{err}");
}

#[test]
fn deleting_one_line_names_the_removed_entry() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, 1 << 20);
    let file = &audit_files(dir.path()).unwrap()[0];
    let mut l = lines(file);
    l.remove(6);
    write_lines(file, &l);
    let err = verify(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Removed {
                expected: 7,
                found: 8,
                ..
            }
        ),
        "{err}"
    );
    println!("{err}");
}

#[test]
fn inserting_one_line_names_the_insertion_even_with_a_valid_own_hash() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, 1 << 20);
    let file = &audit_files(dir.path()).unwrap()[0];
    let mut l = lines(file);
    // A forger copies entry 3's shape with a new payload and a correct hash of its own.
    let (prefix, _) = adit_audit::split_line(&l[2]).unwrap();
    let forged_prefix = prefix.replacen("plc2", "forged", 1);
    let forged = format!(
        "{forged_prefix},\"hash\":\"{}\"}}",
        adit_audit::entry_hash(&forged_prefix)
    );
    l.insert(3, forged);
    write_lines(file, &l);
    let err = verify(dir.path()).unwrap_err();
    assert!(
        matches!(err, VerifyError::Inserted { line: 4, .. }),
        "{err}"
    );
    println!("{err}");
}

#[test]
fn a_torn_last_line_is_cut_and_the_cut_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5, 1 << 20);
    let file = audit_files(dir.path()).unwrap()[0].clone();
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("{\"seq\":6,\"ts\":\"2026-");
    std::fs::write(&file, text).unwrap();
    write_log(dir.path(), 1, 1 << 20);
    verify(dir.path()).unwrap();
    let kinds: Vec<String> = read_entries(dir.path())
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds[5], "audit_recovered");
}

#[test]
fn flush_returns_once_every_entry_recorded_before_it_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let audit = adit_audit::Audit::open(dir.path(), 1 << 20).unwrap();
    for i in 0..200 {
        audit.record("test", serde_json::json!({ "i": i }));
    }
    audit.record("adit_stop", serde_json::json!({}));
    assert!(audit.flush(std::time::Duration::from_secs(10)));
    let entries = adit_audit::read_entries(dir.path()).unwrap();
    assert_eq!(entries.len(), 201);
    assert_eq!(entries[200]["kind"], "adit_stop");
    assert!(adit_audit::Audit::disabled().flush(std::time::Duration::ZERO));
}
