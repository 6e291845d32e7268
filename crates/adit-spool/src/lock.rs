//! One process per spool directory: an exclusive advisory lock on
//! `<dir>/lock`, held for as long as the spool is open, with the holder's PID
//! written in the file so that a second process can say who has it.
//!
//! Two writers on one spool would interleave records and fight over the
//! ledger; a second adit (a unit started twice, a test run beside the
//! service) must refuse to start instead. The lock is released by the kernel
//! when the process dies, so a `kill -9` never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why the spool directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("spool {dir} is in use by another process (pid {holder}); stop it first, or give this one its own spool.dir")]
    Held { dir: PathBuf, holder: String },
    #[error("spool lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Takes the lock on `dir` or says who holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock, LockError> {
    let path = dir.join("lock");
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "unknown".into()
                } else {
                    holder.to_string()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    // Only the holder writes the file. Not fsynced, and best effort: it only
    // informs, and a full disk must not stop adit from starting.
    let written = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(format!("{:<20}\n", std::process::id()).as_bytes()))
        .and_then(|()| file.set_len(21));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "spool lock held, but the holder's PID could not be written");
    }
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_dropped_lock_is_free_again() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let err = lock_dir(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        assert!(lock_dir(dir.path()).is_ok());
    }
}
