//! The spool: a durable, bounded, on-disk queue between the pipeline and its
//! sinks (store and forward).
//!
//! Layout of the spool directory:
//! - `seg-<first seq>.log`: segments of framed records (see [`frame`]); one
//!   record is one batch of readings; sequence numbers start at 1 and only grow;
//! - `ledger.json`: per sink cursor, the highest acknowledged sequence number,
//!   and a floor for the next sequence number;
//! - `points-<fingerprint>.txt`: point tables (see [`points`]);
//! - `lock`: held by the one process that has the spool open (see [`lock`]);
//! - `quarantine/`: bytes recovery could not read, kept for forensics, and
//!   batches a sink refused for good (`sink-<name>-<seq>.bin`, payloads
//!   that `adit spool quarantine retry` appends again).
//!
//! Modules: [`frame`] (record framing, pure), [`codec`] (payloads, pure),
//! [`points`] (point tables), `spool` (the state machine: append, read, ack,
//! size bound), `recent` (the last records in memory, handed to readers
//! that keep up), [`recovery`] (scan and in-place repair at open), [`lock`],
//! [`faults`] (fault injection for tests), [`quarantine`] (list and retry).
//!
//! Invariants:
//! 1. `append` returns only after the record is in the file (and, with
//!    `fsync = always`, on disk); a crash of the process after that loses
//!    nothing. `fsync = interval` can lose the last interval on power loss,
//!    `never` whatever the OS had not written back.
//! 2. A record is delivered to a cursor until that cursor acknowledges it;
//!    acknowledged records are never delivered again in this run nor after
//!    a clean stop. Unacknowledged ones are (at least once: sinks must be
//!    idempotent). `ledger.json` follows acknowledgements within
//!    `LEDGER_INTERVAL` (5 s), not on each one: it only spares replays, so
//!    after a crash up to those last seconds of acknowledged records are
//!    delivered again, which the sinks' keys absorb (SQLite's primary key,
//!    QuestDB's DEDUP keys). It is always written before a segment is
//!    deleted (a deleted record is never counted as lost) and at close.
//! 3. A segment is deleted only when every cursor has acknowledged all of it,
//!    or when `when_full = drop_oldest` drops it; every reading dropped is
//!    counted by reason.
//! 4. Recovery never refuses to start and needs no free space: a torn tail
//!    is cut in place; a corrupt region in the middle is copied to
//!    `quarantine/` (best effort) and tombstoned in place; unreadable or
//!    missing segments and lost records are counted (see [`recovery`]).
//! 5. After a failed fsync the writer refuses every append (the page cache can
//!    no longer be trusted); the process must restart and recover.
//! 6. The size bound (`max_bytes`) covers all segments; a full spool (or a
//!    full disk) applies `when_full`: `block` waits for acknowledgements
//!    (until `close`, which makes every waiting append return `Closed`),
//!    `drop_oldest` deletes the oldest segment, `drop_newest` refuses the
//!    batch. A batch larger than the bound is refused at once, counted.
//! 7. One process per directory (an exclusive lock; the second names the
//!    holder's PID). A record that passes its CRC but does not decode is
//!    skipped and counted (`undecodable_*`), never silently, and its
//!    payload kept in `quarantine/` (`sink-undecoded-<seq>.bin`, once per
//!    record) for a retry under an adit that reads it: a rollback over a
//!    newer record format loses nothing.
//! 8. Nothing wakes without work: the flusher sleeps until an append leaves
//!    records unsynced or a cursor moves; a reader waiting for a batch is
//!    woken when enough items arrived for it (or at its deadline, or at
//!    close), not by every append.
//! 9. A reader gets the same records in the same order whether it takes
//!    them from the file or from the handoff (`recent`): a record enters
//!    the handoff only once it is in the file as `append` promises, and a
//!    reader that falls behind the handoff reads the file. (So a segment
//!    damaged or deleted from outside is noticed only for records the
//!    handoff no longer holds; those it holds are delivered from memory.)

pub mod codec;
pub mod faults;
pub mod frame;
pub mod lock;
pub mod points;
pub mod quarantine;
mod recent;
pub mod recovery;
mod spool;

pub use codec::AlertRecord;
pub use recovery::RecoveryReport;
pub use spool::{
    AppendError, Delivered, FsyncPolicy, Reader, Spool, SpoolConfig, SpoolError, SpoolStats,
    WhenFull, UNDECODED,
};

pub(crate) use adit_core::durable::sync_dir;
