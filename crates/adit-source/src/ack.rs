//! Acknowledgements: how a source learns what became of a batch it handed
//! to the pipeline.
//!
//! Invariants:
//! - every [`Ack`] is settled **exactly once**: by the stage that decides the
//!   batch's fate, or, if the ack is dropped unsettled (a stage gone, a
//!   pipeline torn down), by its own `Drop` with
//!   `Dropped(DropReason::PipelineGone)`;
//! - [`Outcome::Durable`] is only given once every reading of the batch that
//!   is to be stored is in the spool **as durably as `spool.fsync`
//!   promises**:
//!   - `always`: the record is fsynced (survives a power cut);
//!   - `interval`: the spool's interval fsync has covered the record (the
//!     ack waits for it, up to `fsync_interval`);
//!   - `never`: the record is in the file (survives a process crash, not a
//!     power cut);
//! - merging batches (normalize) keeps every ack; readings the deadband
//!   suppresses need no storing, so they count as settled: a batch whose
//!   readings were all suppressed is [`Outcome::Settled`];
//! - a drop is always named ([`DropReason`]) and counted by the stage that
//!   made it.
//!
//! A pushed source (MQTT QoS 1, Sparkplug, an OPC UA server that can resend)
//! tells its peer "got it" only when [`Outcome::may_acknowledge_upstream`]
//! holds: durable, settled, or a counted drop that a redelivery could not
//! undo (a full spool under `drop_newest`, a batch too large for the spool).
//! After `SpoolFailed`, `SpoolClosed` or `PipelineGone` it must not: the
//! peer redelivers after adit restarts. (`SpoolFailed` means the durability
//! is unknown: the record may still be stored, so the redelivery may arrive
//! twice.)
//!
//! Storage keys a sample by `(point, ts, received_ts)`, so a replay is only
//! idempotent if the redelivered sample carries the same three. A polled
//! source gets that for free (the spool keeps `received_ts`). A pushed source
//! whose peer can redeliver must stamp `received_ts` from the message, not
//! the local clock (e.g. the message's own timestamp, or a broker-assigned
//! time), or redeliveries become extra rows; the MQTT and OPC UA collectors
//! decide this per payload format.

use std::fmt;

/// Why a batch was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The spool is full and `when_full = drop_newest` (or the disk is full).
    SpoolFull,
    /// The batch alone is larger than the spool's size bound.
    TooLarge,
    /// The spool's writer failed (a write or fsync error): restart to recover.
    SpoolFailed,
    /// The spool was closed (shutdown) before the batch was appended.
    SpoolClosed,
    /// The pipeline went away with the batch (its ack was dropped unsettled).
    PipelineGone,
}

impl DropReason {
    pub fn name(self) -> &'static str {
        match self {
            DropReason::SpoolFull => "spool_full",
            DropReason::TooLarge => "too_large",
            DropReason::SpoolFailed => "spool_failed",
            DropReason::SpoolClosed => "spool_closed",
            DropReason::PipelineGone => "pipeline_gone",
        }
    }
}

/// What became of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// In the spool as durably as `spool.fsync` promises.
    Durable,
    /// Nothing of it needed storing (every reading suppressed by the deadband).
    Settled,
    /// Not stored; counted under this reason.
    Dropped(DropReason),
}

impl Outcome {
    /// Whether a pushed source may tell its peer the batch is taken care of
    /// (see the module docs).
    pub fn may_acknowledge_upstream(self) -> bool {
        match self {
            Outcome::Durable | Outcome::Settled => true,
            Outcome::Dropped(r) => matches!(r, DropReason::SpoolFull | DropReason::TooLarge),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Durable => f.write_str("durable"),
            Outcome::Settled => f.write_str("settled"),
            Outcome::Dropped(r) => write!(f, "dropped({})", r.name()),
        }
    }
}

type Callback = Box<dyn FnOnce(Outcome) + Send>;

/// The acknowledgement token of one batch; settled exactly once.
pub struct Ack(Option<Callback>);

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Ack(pending)"
        } else {
            "Ack(settled)"
        })
    }
}

impl Ack {
    /// An ack that calls `f` with the batch's outcome. `f` runs on whatever
    /// thread settles it (the spool writer, an async task): keep it short and
    /// never block in it (push to a channel, `try_ack`, set a flag).
    pub fn new(f: impl FnOnce(Outcome) + Send + 'static) -> Self {
        Self(Some(Box::new(f)))
    }

    /// An ack and the receiver of its outcome.
    pub fn channel() -> (Self, tokio::sync::oneshot::Receiver<Outcome>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            Self::new(move |o| {
                let _ = tx.send(o);
            }),
            rx,
        )
    }

    pub fn settle(mut self, outcome: Outcome) {
        if let Some(f) = self.0.take() {
            f(outcome);
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Outcome::Dropped(DropReason::PipelineGone));
        }
    }
}

/// Settles every ack of `acks` with `outcome`.
pub fn settle_all(acks: impl IntoIterator<Item = Ack>, outcome: Outcome) {
    for a in acks {
        a.settle(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn an_ack_settles_exactly_once_and_a_dropped_one_says_so() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        Ack::new(move |o| s.lock().unwrap().push(o)).settle(Outcome::Durable);
        let s = seen.clone();
        drop(Ack::new(move |o| s.lock().unwrap().push(o)));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Outcome::Durable, Outcome::Dropped(DropReason::PipelineGone)]
        );
    }

    #[test]
    fn only_final_outcomes_may_be_acknowledged_upstream() {
        use DropReason::*;
        let table = [
            (Outcome::Durable, true),
            (Outcome::Settled, true),
            (Outcome::Dropped(SpoolFull), true),
            (Outcome::Dropped(TooLarge), true),
            (Outcome::Dropped(SpoolFailed), false),
            (Outcome::Dropped(SpoolClosed), false),
            (Outcome::Dropped(PipelineGone), false),
        ];
        for (o, expected) in table {
            assert_eq!(o.may_acknowledge_upstream(), expected, "{o}");
        }
    }
}
