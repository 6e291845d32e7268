//! Recovery at open: scan every segment, keep every whole record, and repair
//! damage **in place**, so that recovery needs no free space and never stops
//! adit from starting.
//!
//! Invariants:
//! 1. Only the spool directory's listing is required; every other failure
//!    (a segment that cannot be read, a quarantine copy or an in-place repair
//!    that cannot be written) is counted in the [`RecoveryReport`], logged,
//!    and worked around. adit always starts polling.
//! 2. A bad record is not a torn tail when a valid record follows it: before
//!    a region is cut as a tail, the rest of the segment is searched for the
//!    next valid record (a flipped length bit must not cut good records).
//! 3. Tails (torn, or garbage with nothing valid after) are cut with
//!    `set_len` + fsync. A corrupt region followed by valid records is
//!    copied to `quarantine/` (best effort) and then overwritten, in place,
//!    by a tombstone header (a record of sequence 0, see `frame`), so the
//!    next recovery skips it silently. If that write fails the region is a
//!    *hole* kept in memory for this run, and found again at the next start.
//! 4. Sequence numbers only grow across the spool: a gap between two
//!    surviving records is records lost to damage (counted as `lost_records`;
//!    a gap at a segment boundary after a clean tail is a missing segment).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::faults::{self, Faults, FileOp};
use crate::frame::{parse_record, resync, tombstone_header, Parsed};
use crate::spool::{io, SpoolError};

/// What recovery found at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub readings: u64,
    /// Bytes cut from torn tails.
    pub torn_bytes: u64,
    /// Corrupt regions found (moved to quarantine as far as possible).
    pub corrupt_regions: u64,
    /// Bytes copied into `quarantine/`.
    pub quarantined_bytes: u64,
    /// Quarantine copies that could not be written (the bytes are still
    /// skipped; only the forensic copy is missing).
    pub quarantine_failures: u64,
    /// In-place repairs (tail cut, tombstone) that could not be written:
    /// the damage is skipped for this run and found again at the next start.
    pub repair_failures: u64,
    /// Records whose sequence numbers are missing between survivors.
    pub lost_records: u64,
    /// Gaps at a segment boundary after an intact segment: a segment file
    /// is missing.
    pub missing_segments: u64,
    /// Segment files that could not be read at all (set aside, counted).
    pub unreadable_segments: u64,
    /// Records not yet acknowledged by the slowest cursor.
    pub pending_records: u64,
    pub ledger_missing: bool,
}

impl RecoveryReport {
    /// Whether recovery found anything wrong.
    pub fn found_damage(&self) -> bool {
        self.torn_bytes > 0
            || self.corrupt_regions > 0
            || self.quarantine_failures > 0
            || self.repair_failures > 0
            || self.lost_records > 0
            || self.missing_segments > 0
            || self.unreadable_segments > 0
            || self.ledger_missing
    }
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub first_seq: u64,
    pub last_seq: u64,
    pub bytes: u64,
    pub readings: u64,
    pub path: PathBuf,
    /// Corrupt regions `(offset, len)` that could not be tombstoned; readers
    /// skip them.
    pub holes: Arc<[(u64, u64)]>,
    /// Never append to this segment (its tail could not be cut).
    pub sealed: bool,
}

impl Segment {
    pub fn new(first_seq: u64, path: PathBuf) -> Self {
        Self {
            first_seq,
            last_seq: first_seq.saturating_sub(1),
            bytes: 0,
            readings: 0,
            path,
            holes: Arc::from([]),
            sealed: false,
        }
    }
}

pub(crate) fn seg_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("seg-{first_seq:020}.log"))
}

pub(crate) use crate::codec::items_in;

/// Scans every segment; see the module docs. Fails only if `dir` cannot be
/// listed. Returns the segments and the lowest next sequence number that
/// avoids every file name seen (unreadable segments included).
pub(crate) fn recover_segments(
    dir: &Path,
    faults: Option<&Arc<Faults>>,
    report: &mut RecoveryReport,
) -> Result<(VecDeque<Segment>, u64), SpoolError> {
    let mut paths: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let first = name
                .strip_prefix("seg-")?
                .strip_suffix(".log")?
                .parse::<u64>()
                .ok()?;
            Some((first, e.path()))
        })
        .collect();
    paths.sort();
    let mut segments = VecDeque::new();
    let mut last_seq_seen = 0u64;
    let mut previous_tail_intact = true;
    let mut min_next_seq = 1u64;
    for (first_seq, path) in paths {
        let bytes = match read_segment(&path, faults) {
            Ok(b) => b,
            Err(e) => {
                report.unreadable_segments += 1;
                tracing::error!(segment = %path.display(), error = %e, "spool: segment unreadable at recovery; set aside, its records are lost");
                if !set_aside(dir, &path) {
                    // Still there: never create a segment of that name.
                    min_next_seq = min_next_seq.max(first_seq + 1);
                }
                previous_tail_intact = false;
                continue;
            }
        };
        let mut seg = Segment::new(first_seq, path.clone());
        let mut holes = Vec::new();
        let mut end = bytes.len();
        let mut tail_intact = true;
        let mut pos = 0usize;
        while pos < bytes.len() {
            match parse_record(&bytes[pos..]) {
                Parsed::Record { seq: 0, total, .. } => pos += total, // a tombstone
                Parsed::Record {
                    seq,
                    payload,
                    total,
                } if seq > last_seq_seen => {
                    if last_seq_seen > 0 && seq > last_seq_seen + 1 {
                        let lost = seq - last_seq_seen - 1;
                        report.lost_records += lost;
                        let at_boundary = seg.last_seq < seg.first_seq;
                        if at_boundary && previous_tail_intact {
                            report.missing_segments += 1;
                        }
                        tracing::error!(segment = %path.display(), from = last_seq_seen + 1, to = seq - 1, records = lost, missing_segment = at_boundary && previous_tail_intact, "spool: records missing");
                    }
                    seg.last_seq = seq;
                    seg.readings += items_in(payload);
                    last_seq_seen = seq;
                    report.records += 1;
                    report.readings += items_in(payload);
                    pos += total;
                }
                parsed => {
                    let incomplete = parsed == Parsed::Incomplete;
                    if let Some(skip) = resync(&bytes[pos..]) {
                        // Damage with valid records after it: skip it, keep them.
                        report.corrupt_regions += 1;
                        quarantine_copy(dir, &path, pos, &bytes[pos..pos + skip], faults, report);
                        if !tombstone(&path, pos, &bytes[pos..pos + skip], faults) {
                            report.repair_failures += 1;
                            holes.push((pos as u64, skip as u64));
                        }
                        pos += skip;
                        continue;
                    }
                    // Nothing valid follows: this is the tail.
                    let cut = (bytes.len() - pos) as u64;
                    if incomplete {
                        report.torn_bytes += cut;
                        tracing::warn!(segment = %path.display(), bytes = cut, "spool: torn tail cut back to the last whole record");
                    } else {
                        report.corrupt_regions += 1;
                        quarantine_copy(dir, &path, pos, &bytes[pos..], faults, report);
                    }
                    tail_intact = false;
                    if let Err(e) = truncate(&path, pos as u64, faults) {
                        report.repair_failures += 1;
                        seg.sealed = true;
                        tracing::error!(segment = %path.display(), error = %e, "spool: cannot cut the damaged tail in place; the segment is read up to it and never appended to");
                    }
                    end = pos;
                    break;
                }
            }
        }
        seg.bytes = end as u64;
        seg.holes = holes.into();
        previous_tail_intact = tail_intact;
        report.segments += 1;
        segments.push_back(seg);
    }
    Ok((segments, min_next_seq))
}

fn read_segment(path: &Path, faults: Option<&Arc<Faults>>) -> std::io::Result<Vec<u8>> {
    faults::check(faults, FileOp::RecoveryRead)?;
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn truncate(path: &Path, len: u64, faults: Option<&Arc<Faults>>) -> std::io::Result<()> {
    faults::check(faults, FileOp::Truncate)?;
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()
}

/// Overwrites the first bytes of a corrupt region with a tombstone header.
fn tombstone(path: &Path, offset: usize, region: &[u8], faults: Option<&Arc<Faults>>) -> bool {
    let Some(header) = tombstone_header(region) else {
        return false; // shorter than a header: a hole for this run
    };
    let patched = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).open(path)?;
        f.seek(SeekFrom::Start(offset as u64))?;
        faults::write_all(faults, FileOp::Patch, &mut f, &header)?;
        faults::check(faults, FileOp::Sync)?;
        f.sync_data()
    })();
    match patched {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(segment = %path.display(), offset, error = %e, "spool: cannot mark a corrupt region in place; it is skipped for this run");
            false
        }
    }
}

/// Copies damaged bytes into `quarantine/` for forensics; best effort.
fn quarantine_copy(
    dir: &Path,
    segment: &Path,
    offset: usize,
    bytes: &[u8],
    faults: Option<&Arc<Faults>>,
    report: &mut RecoveryReport,
) {
    let name = segment
        .file_name()
        .map_or_else(|| "segment".into(), |n| n.to_string_lossy().to_string());
    let qdir = dir.join("quarantine");
    let path = qdir.join(format!("{name}.{offset}.bin"));
    match write_durably(&qdir, &path, bytes, faults) {
        Ok(()) => {
            report.quarantined_bytes += bytes.len() as u64;
            tracing::error!(segment = %segment.display(), offset, bytes = bytes.len(), quarantine = %path.display(), "spool: corrupt region quarantined");
        }
        Err(e) => {
            report.quarantine_failures += 1;
            tracing::error!(segment = %segment.display(), offset, bytes = bytes.len(), error = %e, "spool: corrupt region skipped; its quarantine copy could not be written");
        }
    }
}

/// Writes `bytes` to `path` in `dir` (created if needed) durably and whole:
/// a temporary file, fsynced, renamed, the directory fsynced (a crash
/// leaves no partial quarantine file under its name; a stale `.tmp` is
/// ignored by the listing and overwritten by the next write of that name).
/// Used for every quarantine file.
pub(crate) fn write_durably(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    faults: Option<&Arc<Faults>>,
) -> std::io::Result<()> {
    faults::check(faults, FileOp::Quarantine)?;
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other(format!("no file name in {}", path.display())))?;
    adit_core::durable::replace_file(dir, name, bytes)
}

/// Moves an unreadable segment out of the way (best effort: a rename needs
/// no space); if even that fails it stays, ignored. Returns whether it moved.
fn set_aside(dir: &Path, path: &Path) -> bool {
    let qdir = dir.join("quarantine");
    let name = path
        .file_name()
        .map_or_else(|| "segment".into(), |n| n.to_string_lossy().to_string());
    let to = qdir.join(format!("{name}.unreadable"));
    match std::fs::create_dir_all(&qdir).and_then(|()| std::fs::rename(path, &to)) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(segment = %path.display(), error = %e, "spool: cannot set the unreadable segment aside; it is ignored");
            false
        }
    }
}
