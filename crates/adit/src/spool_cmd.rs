//! `adit spool quarantine list|retry DIR`: what the spool's `quarantine/`
//! holds, and re-delivery of the batches a sink refused for good (after the
//! cause, e.g. a schema mismatch, was fixed). Retry appends them to the
//! spool again and needs the spool to itself: it refuses while adit runs.

use std::fmt::Write as _;
use std::path::Path;

use adit_spool::quarantine::{self, Kind};
use adit_spool::{FsyncPolicy, SpoolConfig, WhenFull};

/// The listing, one line per file, then a total.
pub fn list(spool_dir: &Path) -> Result<String, String> {
    let entries = quarantine::list(spool_dir)
        .map_err(|e| format!("{}: {e}", quarantine::dir_of(spool_dir).display()))?;
    let mut out = String::new();
    let mut retryable = 0;
    for e in &entries {
        let what = match &e.kind {
            Kind::Readings { sink, items } => format!("{items} readings refused by {sink}"),
            Kind::Alerts { sink, items } => format!("{items} alert transitions refused by {sink}"),
            Kind::Undecodable { sink } => format!("batch refused by {sink}, does not decode"),
            Kind::CorruptRegion => "corrupt bytes cut from a segment at recovery".into(),
            Kind::UnreadableSegment => "segment unreadable at recovery".into(),
            Kind::Other => "unknown file".into(),
        };
        let verdict = if e.retryable() {
            retryable += 1;
            "retryable"
        } else {
            "kept for forensics"
        };
        let name = e
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().to_string());
        let _ = writeln!(out, "{name}  {} bytes  {what}  [{verdict}]", e.bytes);
    }
    let _ = writeln!(
        out,
        "{} file(s) in {}, {retryable} retryable (adit spool quarantine retry {})",
        entries.len(),
        quarantine::dir_of(spool_dir).display(),
        spool_dir.display()
    );
    Ok(out)
}

/// Appends every retryable batch to the spool again.
pub fn retry(spool_dir: &Path) -> Result<String, String> {
    let cfg = SpoolConfig {
        dir: spool_dir.to_path_buf(),
        segment_bytes: 64 * 1024 * 1024,
        max_bytes: u64::MAX,
        when_full: WhenFull::DropNewest,
        fsync: FsyncPolicy::Always,
        faults: None,
    };
    let done = quarantine::retry(cfg).map_err(|e| e.to_string())?;
    Ok(format!(
        "{} file(s), {} item(s) appended to the spool again (moved to quarantine/retried/); {} kept; every sink receives them at adit's next start\n",
        done.files, done.items, done.kept
    ))
}
