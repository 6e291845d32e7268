//! The bounded channel from a source into the pipeline.

use adit_core::{Batch, PointId, Quality, Reading, Reason, Timestamp};
use prometheus::IntCounter;
use tokio::sync::mpsc;

use crate::ack::{settle_all, Ack, DropReason, Outcome};

/// What travels from sources to the spool: readings and the acks of the
/// batches they came in (several after merging; none for polled sources).
#[derive(Debug)]
pub struct Envelope {
    pub readings: Batch,
    pub acks: Vec<Ack>,
    /// When the source handed the readings over (monotonic): their age in
    /// the live state counts from here, however long they then waited in
    /// the channel (an ingest stalled behind a slow disk must not make a
    /// device that died meanwhile look fresh).
    pub sent_at: std::time::Instant,
}

impl Envelope {
    pub fn new(readings: Batch) -> Self {
        Self {
            readings,
            acks: Vec::new(),
            sent_at: tokio::time::Instant::now().into_std(),
        }
    }

    /// Takes `other`'s readings and acks into this one.
    pub fn merge(&mut self, other: Envelope) {
        self.readings.extend(other.readings);
        self.acks.extend(other.acks);
    }

    /// Settles every ack with `outcome`.
    pub fn settle(self, outcome: Outcome) {
        settle_all(self.acks, outcome);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("pipeline closed")]
pub struct SendError;

/// Bounded sender of batches that counts the times it had to wait.
#[derive(Clone)]
pub struct ReadingSender {
    tx: mpsc::Sender<Envelope>,
    waited: IntCounter,
    sent: Option<IntCounter>,
}

impl ReadingSender {
    /// `waited` counts sends that found the channel full; `sent`, if given,
    /// counts readings sent.
    pub fn new(tx: mpsc::Sender<Envelope>, waited: IntCounter, sent: Option<IntCounter>) -> Self {
        Self { tx, waited, sent }
    }

    /// Sends a batch, waiting (and counting the wait) while the channel is full.
    pub async fn send(&self, batch: Batch) -> Result<(), SendError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.send_envelope(Envelope::new(batch)).await
    }

    /// Sends a batch whose fate `ack` reports (see [`crate::ack`]): a pushed
    /// source acknowledges its peer only from there. An empty batch is
    /// settled at once; if the pipeline is gone the ack says so.
    pub async fn send_acked(&self, batch: Batch, ack: Ack) -> Result<(), SendError> {
        if batch.is_empty() {
            ack.settle(Outcome::Settled);
            return Ok(());
        }
        let envelope = Envelope {
            readings: batch,
            acks: vec![ack],
            sent_at: tokio::time::Instant::now().into_std(),
        };
        self.send_envelope(envelope).await
    }

    /// Marks every point of `points` `Bad(reason)` now, keeping their last
    /// values (valueless readings): a pushed source that lost its broker or
    /// session, or a Sparkplug node death, says "I do not know" at once
    /// instead of waiting for each point's staleness deadline.
    pub async fn mark_bad(&self, points: &[PointId], reason: Reason) -> Result<(), SendError> {
        let ts = Timestamp::now();
        self.send(
            points
                .iter()
                .map(|&p| Reading::without_value(p, Quality::Bad(reason), ts))
                .collect(),
        )
        .await
    }

    /// Sends readings with their acks (the pipeline's own hops, after merging).
    pub async fn send_envelope(&self, envelope: Envelope) -> Result<(), SendError> {
        if let Some(sent) = &self.sent {
            sent.inc_by(envelope.readings.len() as u64);
        }
        match self.tx.try_send(envelope) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(envelope)) => {
                self.waited.inc();
                self.tx.send(envelope).await.map_err(|e| {
                    e.0.settle(Outcome::Dropped(DropReason::PipelineGone));
                    SendError
                })
            }
            Err(mpsc::error::TrySendError::Closed(envelope)) => {
                envelope.settle(Outcome::Dropped(DropReason::PipelineGone));
                Err(SendError)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> IntCounter {
        IntCounter::new("t", "t").unwrap()
    }

    #[tokio::test]
    async fn an_empty_batch_is_settled_and_a_closed_pipeline_is_reported_to_the_ack() {
        let (tx, rx) = mpsc::channel(1);
        let sender = ReadingSender::new(tx, counter(), None);
        let (ack, outcome) = Ack::channel();
        sender.send_acked(Vec::new(), ack).await.unwrap();
        assert_eq!(outcome.await.unwrap(), Outcome::Settled);
        drop(rx);
        let (ack, outcome) = Ack::channel();
        let one = vec![Reading::without_value(
            PointId(0),
            Quality::Bad(Reason::CommFailure),
            Timestamp(1),
        )];
        assert!(sender.send_acked(one, ack).await.is_err());
        assert_eq!(
            outcome.await.unwrap(),
            Outcome::Dropped(DropReason::PipelineGone)
        );
    }

    #[tokio::test]
    async fn mark_bad_sends_one_valueless_reading_per_point() {
        let (tx, mut rx) = mpsc::channel(1);
        let sender = ReadingSender::new(tx, counter(), None);
        sender
            .mark_bad(&[PointId(1), PointId(2)], Reason::CommFailure)
            .await
            .unwrap();
        let e = rx.recv().await.unwrap();
        assert_eq!(e.readings.len(), 2);
        assert!(e
            .readings
            .iter()
            .all(|r| r.value.is_none() && r.quality == Quality::Bad(Reason::CommFailure)));
    }
}
