//! Checking an audit log's chain, and naming the first entry that was
//! changed, removed or inserted.

use std::path::Path;

use crate::{audit_files, entry_hash, split_line, GENESIS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub files: usize,
    pub entries: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {0}")]
    Io(String),
    #[error("{file}:{line}: entry #{seq} was changed (its hash does not match its content)")]
    Changed { file: String, line: usize, seq: u64 },
    #[error("{file}:{line}: entry #{expected} was removed (the chain jumps from #{previous} to #{found})")]
    Removed {
        file: String,
        line: usize,
        previous: u64,
        expected: u64,
        found: u64,
    },
    #[error("{file}:{line}: an entry was inserted (#{seq} appears again, or does not follow from #{previous})")]
    Inserted {
        file: String,
        line: usize,
        seq: u64,
        previous: u64,
    },
    #[error("{file}:{line}: not an audit entry (unreadable line)")]
    Unreadable { file: String, line: usize },
}

/// Verifies the whole chain in `dir` (or a single file).
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    let files = if path.is_dir() {
        audit_files(path).map_err(|e| VerifyError::Io(e.to_string()))?
    } else {
        vec![path.to_path_buf()]
    };
    let mut prev = GENESIS.to_string();
    let mut last_seq = 0u64;
    let mut entries = 0u64;
    let mut first = true;
    for file in &files {
        let name = file.display().to_string();
        let text =
            std::fs::read_to_string(file).map_err(|e| VerifyError::Io(format!("{name}: {e}")))?;
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let unreadable = || VerifyError::Unreadable {
                file: name.clone(),
                line: line_no,
            };
            let (prefix, hash) = split_line(line).ok_or_else(unreadable)?;
            let v: serde_json::Value = serde_json::from_str(line).map_err(|_| unreadable())?;
            let seq = v["seq"].as_u64().ok_or_else(unreadable)?;
            let stated_prev = v["prev"].as_str().ok_or_else(unreadable)?;
            if entry_hash(prefix) != hash {
                return Err(VerifyError::Changed {
                    file: name,
                    line: line_no,
                    seq,
                });
            }
            // A single file checked alone starts wherever its chain starts.
            if first && !path.is_dir() {
                prev = stated_prev.to_string();
                last_seq = seq.saturating_sub(1);
            }
            first = false;
            if seq <= last_seq {
                return Err(VerifyError::Inserted {
                    file: name,
                    line: line_no,
                    seq,
                    previous: last_seq,
                });
            }
            if seq > last_seq + 1 {
                return Err(VerifyError::Removed {
                    file: name,
                    line: line_no,
                    previous: last_seq,
                    expected: last_seq + 1,
                    found: seq,
                });
            }
            if stated_prev != prev {
                // Right number, wrong predecessor: this entry was put in
                // place of another one.
                return Err(VerifyError::Inserted {
                    file: name,
                    line: line_no,
                    seq,
                    previous: last_seq,
                });
            }
            prev = hash.to_string();
            last_seq = seq;
            entries += 1;
        }
    }
    Ok(VerifyReport {
        files: files.len(),
        entries,
    })
}
