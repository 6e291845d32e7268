//! Fault injection for the spool's file operations (tests only in practice).
//!
//! Every place the spool touches the disk goes through [`check`] or
//! [`write_all`] with the [`FileOp`] it performs. With no [`Faults`] in the
//! config (production) both are a plain pass-through. A test arms a fault
//! for the n-th call of an operation (EIO, ENOSPC, a short write) and then
//! asserts what the spool did about it: counted, recovered, never a panic,
//! never a refusal to start.

use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

/// A kind of file operation the spool performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileOp {
    /// Reading a whole segment during recovery.
    RecoveryRead,
    /// Appending a record to the active segment.
    Write,
    /// fsync of a segment (after append, interval, rotation, close).
    Sync,
    /// Creating a new segment (rotation).
    Create,
    /// Cutting a torn or corrupt tail (`set_len` + fsync) during recovery.
    Truncate,
    /// Overwriting a corrupt region's header in place with a tombstone.
    Patch,
    /// Copying a corrupt region (or a refused batch) into `quarantine/`.
    Quarantine,
    /// Writing `ledger.json`.
    Ledger,
}

/// What an armed fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `EIO`: an I/O error.
    Eio,
    /// `ENOSPC`: no space left on the device.
    Enospc,
    /// Writes only this many bytes, then fails with `ENOSPC` (a short write
    /// on a filling disk). Behaves like `Enospc` for operations that do not
    /// write.
    ShortWrite(usize),
}

impl Fault {
    fn error(self) -> io::Error {
        match self {
            Fault::Eio => io::Error::from_raw_os_error(5),
            Fault::Enospc | Fault::ShortWrite(_) => io::Error::from_raw_os_error(28),
        }
    }
}

#[derive(Debug)]
struct Armed {
    op: FileOp,
    /// Calls of `op` to let through before failing.
    skip: u32,
    /// Calls to fail after that (`u32::MAX`: for ever).
    times: u32,
    fault: Fault,
}

/// A plan of faults, shared by the test and the spool it configures.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Mutex<Vec<Armed>>,
}

impl Faults {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Fails `times` calls of `op` with `fault`, after letting `skip` through.
    pub fn arm(&self, op: FileOp, skip: u32, times: u32, fault: Fault) {
        self.lock().push(Armed {
            op,
            skip,
            times,
            fault,
        });
    }

    /// Removes every armed fault (the disk is healthy again).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Armed>> {
        self.armed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fault for this call of `op`, if one is due.
    fn due(&self, op: FileOp) -> Option<Fault> {
        let mut armed = self.lock();
        let a = armed.iter_mut().find(|a| a.op == op && a.times > 0)?;
        if a.skip > 0 {
            a.skip -= 1;
            return None;
        }
        if a.times != u32::MAX {
            a.times -= 1;
        }
        Some(a.fault)
    }
}

/// Fails if a fault is armed for this call of `op`.
pub(crate) fn check(faults: Option<&Arc<Faults>>, op: FileOp) -> io::Result<()> {
    match faults.and_then(|f| f.due(op)) {
        Some(fault) => Err(fault.error()),
        None => Ok(()),
    }
}

/// `file.write_all(buf)`, unless a fault is armed for this call of `op`.
pub(crate) fn write_all(
    faults: Option<&Arc<Faults>>,
    op: FileOp,
    file: &mut File,
    buf: &[u8],
) -> io::Result<()> {
    match faults.and_then(|f| f.due(op)) {
        None => file.write_all(buf),
        Some(Fault::ShortWrite(n)) => {
            file.write_all(&buf[..n.min(buf.len())])?;
            Err(Fault::ShortWrite(n).error())
        }
        Some(fault) => Err(fault.error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_fault_skips_then_fails_the_given_number_of_calls() {
        let f = Faults::new();
        f.arm(FileOp::Sync, 1, 2, Fault::Eio);
        let f = Some(&f);
        assert!(check(f, FileOp::Write).is_ok(), "other operations pass");
        assert!(
            check(f, FileOp::Sync).is_ok(),
            "the first call is let through"
        );
        assert_eq!(check(f, FileOp::Sync).unwrap_err().raw_os_error(), Some(5));
        assert_eq!(check(f, FileOp::Sync).unwrap_err().raw_os_error(), Some(5));
        assert!(check(f, FileOp::Sync).is_ok(), "then the disk is healthy");
        assert!(check(None, FileOp::Sync).is_ok());
    }
}
