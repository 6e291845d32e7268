//! The spool: a durable, bounded, on-disk queue between the pipeline and its
//! sinks (store and forward).
//!
//! Layout of the spool directory:
//! - `seg-<first seq>.log`: segments of framed records (see [`frame`]); one
//!   record is one batch of readings; sequence numbers start at 1 and only grow;
//! - `ledger.json`: per sink cursor, the highest acknowledged sequence number,
//!   and a floor for the next sequence number;
//! - `points-<fingerprint>.txt`: point tables (see [`points`]);
//! - `quarantine/`: bytes recovery could not read, kept for forensics.
//!
//! Invariants:
//! 1. `append` returns only after the record is in the file (and, with
//!    `fsync = always`, on disk); a crash of the process after that loses
//!    nothing. `fsync = interval` can lose the last interval on power loss,
//!    `never` whatever the OS had not written back.
//! 2. A record is delivered to a cursor until that cursor acknowledges it;
//!    acknowledged records are never delivered again, also across restarts.
//!    Unacknowledged ones are (at least once: sinks must be idempotent).
//! 3. A segment is deleted only when every cursor has acknowledged all of it,
//!    or when `when_full = drop_oldest` drops it; every reading dropped is
//!    counted by reason.
//! 4. Recovery never refuses to start: a torn tail is cut back to the last
//!    whole record; a corrupt region in the middle is moved to `quarantine/`
//!    and counted, and the segment rewritten without it.
//! 5. After a failed fsync the writer refuses every append (the page cache can
//!    no longer be trusted); the process must restart and recover.
//! 6. The size bound (`max_bytes`) covers all segments; a full spool (or a
//!    full disk) applies `when_full`: `block` waits for acknowledgements,
//!    `drop_oldest` deletes the oldest segment, `drop_newest` refuses the batch.

pub mod codec;
pub mod frame;
pub mod points;
mod spool;

pub use codec::AlertRecord;
pub use spool::{
    AppendError, Delivered, FsyncPolicy, Reader, RecoveryReport, Spool, SpoolConfig, SpoolError,
    SpoolStats, WhenFull,
};

/// fsyncs a directory so that a rename or create in it is durable.
pub(crate) fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
