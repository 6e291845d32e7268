//! What the subscription callbacks (run inside the session event loop) and
//! the read worker hand to the collector task: readings waiting to be sent,
//! each point's last value (to re-confirm unchanged values), and when each
//! group last heard from the server.
//!
//! Invariants:
//! - bounded: past [`MAX_PENDING`] readings, new ones are dropped and
//!   counted (the collector drains after every event, so this takes a
//!   pipeline that stopped accepting);
//! - a point is re-confirmed (its last value and quality sent again with
//!   the publish time) only when its subscription is live and it was not
//!   sent within its interval: a constant value on a live subscription is
//!   current, not stale; a silent subscription confirms nothing;
//! - values are taken only over a link whose namespace indexes were
//!   verified: the collector counts link changes (lost, re-established) in
//!   `link_epoch`, the worker verifies the namespace table of the current
//!   epoch; values of any other epoch are dropped and counted. After a
//!   server restart the library recreates monitored items with the node ids
//!   of the old table, which may name other nodes now.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use adit_config::TimestampSource;
use adit_core::{PointId, Quality, Reading, Timestamp, Value};
use opcua::client::{MonitoredItemMap, OnSubscriptionNotificationCore};
use opcua::types::{DataChangeNotification, NotificationMessage};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::convert::{convert, to_timestamp, Scaling};
use crate::metrics::ConnectionMetrics;

pub const MAX_PENDING: usize = 1 << 20;

/// What never changes for a connection's points.
pub struct PointTable {
    pub ids: Vec<PointId>,
    pub scaling: Vec<Scaling>,
    pub group: Vec<usize>,
    pub interval: Vec<Duration>,
    /// Points of each group, by index.
    pub members: Vec<Vec<usize>>,
    pub timestamps: TimestampSource,
}

impl PointTable {
    /// The monitored item's client handle of point `i` (never 0).
    pub fn handle(i: usize) -> u32 {
        i as u32 + 1
    }

    pub fn point_of(&self, handle: u32) -> Option<usize> {
        let i = handle.checked_sub(1)? as usize;
        (i < self.ids.len()).then_some(i)
    }
}

struct Last {
    value: Option<Value>,
    quality: Quality,
    sent: Instant,
}

pub struct State {
    pub readings: Vec<Reading>,
    last: Vec<Option<Last>>,
    /// When each group last had a publish response (data or keep-alive).
    pub heard: Vec<Instant>,
    /// Per group, the keep-alive period the server granted (its revised
    /// publishing interval × keep-alive count): silence shorter than a few
    /// of these is normal, whatever was asked for.
    granted: Vec<Option<Duration>>,
    /// The last receive time given to a notification: each gets a distinct
    /// one (see [`State::receive_time`]).
    last_received: Timestamp,
    /// Link changes so far (each loss and each re-establishment).
    link_epoch: u64,
    /// The epoch whose namespace indexes the worker verified.
    verified_epoch: Option<u64>,
}

impl State {
    fn verified(&self) -> bool {
        self.verified_epoch == Some(self.link_epoch)
    }

    /// The receive time of one notification: the response's, or 1 µs after
    /// the previous one. A queue of several values of one item in one
    /// response (`queue_size > 1`) would otherwise share it; with
    /// `timestamp = "receive"` they would then have one storage key, and
    /// the database's dedup would keep one of them.
    fn receive_time(&mut self, response: Timestamp) -> Timestamp {
        let t = Timestamp(response.0.max(self.last_received.0.saturating_add(1)));
        self.last_received = t;
        t
    }
}

/// Shared between callbacks, the read worker and the collector task.
#[derive(Clone)]
pub struct Pending {
    pub table: Arc<PointTable>,
    state: Arc<Mutex<State>>,
    pub wake: Arc<Notify>,
    metrics: ConnectionMetrics,
}

impl Pending {
    pub fn new(table: Arc<PointTable>, metrics: ConnectionMetrics) -> Self {
        let now = Instant::now();
        let state = State {
            readings: Vec::new(),
            last: (0..table.ids.len()).map(|_| None).collect(),
            heard: vec![now; table.members.len()],
            granted: vec![None; table.members.len()],
            last_received: Timestamp(i64::MIN),
            link_epoch: 0,
            verified_epoch: None,
        };
        Self {
            table,
            state: Arc::new(Mutex::new(state)),
            wake: Arc::new(Notify::new()),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the readings waiting to be sent.
    pub fn take(&self) -> Vec<Reading> {
        std::mem::take(&mut self.lock().readings)
    }

    /// When group `g` last heard from the server.
    pub fn heard(&self, g: usize) -> Instant {
        self.lock()
            .heard
            .get(g)
            .copied()
            .unwrap_or_else(Instant::now)
    }

    /// How many points the server currently refuses.
    pub fn metrics_items_failed(&self, n: usize) {
        self.metrics.items_failed.set(n as i64);
    }

    /// Forgets every last value (the link was lost: nothing from before
    /// may be re-confirmed as current).
    pub fn forget(&self) {
        self.lock().last.iter_mut().for_each(|l| *l = None);
    }

    /// The link was lost or re-established: nothing is taken until the
    /// namespace indexes of the new epoch are verified.
    pub fn link_changed(&self) {
        self.lock().link_epoch += 1;
    }

    /// Whether values of the current link are taken.
    pub fn verified(&self) -> bool {
        self.lock().verified()
    }

    /// The current link epoch (read before verifying it).
    pub fn link_epoch(&self) -> u64 {
        self.lock().link_epoch
    }

    /// The namespace indexes were verified over link `epoch`: values are
    /// taken again if that is still the current one (else `false`: the link
    /// changed meanwhile and must be verified again).
    pub fn verify(&self, epoch: u64) -> bool {
        let mut st = self.lock();
        if st.link_epoch == epoch {
            st.verified_epoch = Some(epoch);
            true
        } else {
            false
        }
    }

    /// Records the keep-alive period the server granted group `g`.
    pub fn set_granted(&self, g: usize, period: Duration) {
        if let Some(slot) = self.lock().granted.get_mut(g) {
            *slot = Some(period);
        }
    }

    /// Until when group `g` may be silent: `bound` (from the configured
    /// interval), or `periods` of the keep-alive the server granted if
    /// longer, counted from the last response.
    pub fn silent_until(&self, g: usize, bound: Duration, periods: u32) -> (Instant, Duration) {
        let st = self.lock();
        let bound = silence_bound(bound, st.granted.get(g).copied().flatten(), periods);
        let heard = st.heard.get(g).copied().unwrap_or_else(Instant::now);
        (heard + bound, bound)
    }

    /// Every group counts as heard now (after a (re)connect).
    pub fn reset_heard(&self) {
        let now = Instant::now();
        self.lock().heard.iter_mut().for_each(|h| *h = now);
    }

    /// Marks point `i` bad now because the server has no item for it (a
    /// node that cannot be resolved, an item refused): its subscription
    /// says nothing about it, so nothing is re-confirmed for it.
    pub fn mark_unmonitored(&self, i: usize, quality: Quality) {
        let mut st = self.lock();
        let now = Timestamp::now();
        self.push_locked(&mut st, i, None, quality, now, now);
        st.last[i] = None;
        drop(st);
        self.wake.notify_one();
    }

    fn push_locked(
        &self,
        st: &mut State,
        i: usize,
        value: Option<Value>,
        quality: Quality,
        ts: Timestamp,
        received: Timestamp,
    ) {
        if st.readings.len() >= MAX_PENDING {
            self.metrics.dropped.inc();
            return;
        }
        st.readings.push(Reading {
            point: self.table.ids[i],
            value: value.clone(),
            quality,
            source_ts: ts,
            received_ts: received,
        });
        st.last[i] = Some(Last {
            value,
            quality,
            sent: Instant::now(),
        });
    }

    /// One publish response of group `g`'s subscription.
    pub fn on_publish(&self, g: usize, message: NotificationMessage) {
        self.metrics.publishes.inc();
        let received = Timestamp::now();
        let now = Instant::now();
        let publish_ts = to_timestamp(Some(&message.publish_time)).unwrap_or(received);
        let mut st = self.lock();
        if !st.verified() {
            drop(st);
            let values = message
                .notification_data
                .iter()
                .flatten()
                .filter_map(|obj| obj.inner_as::<DataChangeNotification>())
                .map(|c| c.monitored_items.as_ref().map_or(0, Vec::len))
                .sum();
            return self.drop_unverified(values);
        }
        if let Some(h) = st.heard.get_mut(g) {
            *h = now;
        }
        let mut values = 0u64;
        for obj in message.notification_data.into_iter().flatten() {
            let Some(change) = obj.into_inner_as::<DataChangeNotification>() else {
                continue; // events and status changes carry no readings
            };
            for item in change.monitored_items.into_iter().flatten() {
                let Some(i) = self.table.point_of(item.client_handle) else {
                    continue;
                };
                values += 1;
                let received = st.receive_time(received);
                let c = convert(
                    &item.value,
                    self.table.scaling[i],
                    self.table.timestamps,
                    received,
                );
                self.push_locked(&mut st, i, c.value, c.quality, c.ts, received);
            }
        }
        self.metrics.notifications.inc_by(values);
        // Re-confirm unchanged values of this (live) subscription.
        let confirm_ts = match self.table.timestamps {
            TimestampSource::Receive => received,
            _ => publish_ts,
        };
        let mut refreshed = 0u64;
        if let Some(members) = self.table.members.get(g) {
            for &i in members {
                let due = match &st.last[i] {
                    Some(last) => now.duration_since(last.sent) >= self.table.interval[i],
                    None => false,
                };
                if due {
                    if let Some(last) = st.last[i].take() {
                        refreshed += 1;
                        self.push_locked(
                            &mut st,
                            i,
                            last.value,
                            last.quality,
                            confirm_ts,
                            received,
                        );
                    }
                }
            }
        }
        self.metrics.refreshed.inc_by(refreshed);
        drop(st);
        self.wake.notify_one();
    }

    /// A Read of `points` failed with `quality`.
    pub fn on_read_failed(&self, points: &[usize], quality: Quality) {
        let mut st = self.lock();
        let now = Timestamp::now();
        for &i in points {
            self.push_locked(&mut st, i, None, quality, now, now);
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Results of a Read of `points` (same order).
    pub fn on_read(&self, points: &[usize], values: &[opcua::types::DataValue]) {
        let received = Timestamp::now();
        let mut st = self.lock();
        if !st.verified() {
            drop(st);
            return self.drop_unverified(values.len());
        }
        for (&i, dv) in points.iter().zip(values) {
            let c = convert(dv, self.table.scaling[i], self.table.timestamps, received);
            self.push_locked(&mut st, i, c.value, c.quality, c.ts, received);
        }
        self.metrics.notifications.inc_by(values.len() as u64);
        drop(st);
        self.wake.notify_one();
    }
}

impl Pending {
    fn drop_unverified(&self, values: usize) {
        if values > 0 {
            self.metrics.dropped_unverified.inc_by(values as u64);
            tracing::warn!(
                values,
                "dropped OPC UA values that came before the namespace indexes of the re-established session were checked"
            );
        }
    }
}

/// The subscription callback of one group.
pub struct GroupCallback {
    pub group: usize,
    pub pending: Pending,
}

impl OnSubscriptionNotificationCore for GroupCallback {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        self.pending.on_publish(self.group, notification);
    }
}

/// How long a subscription may be silent: `configured`, or `periods` of
/// the keep-alive the server granted when that is longer (a server that
/// raised the publishing interval is not silent, only slower).
pub fn silence_bound(configured: Duration, granted: Option<Duration>, periods: u32) -> Duration {
    granted.map_or(configured, |g| configured.max(g.saturating_mul(periods)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_grants_a_longer_keep_alive_is_given_that_much_silence() {
        let three = Duration::from_secs(3);
        assert_eq!(silence_bound(three, None, 5), three);
        assert_eq!(
            silence_bound(three, Some(Duration::from_millis(100)), 5),
            three
        );
        assert_eq!(
            silence_bound(three, Some(Duration::from_secs(5)), 5),
            Duration::from_secs(25)
        );
        assert_eq!(silence_bound(three, Some(Duration::MAX), 5), Duration::MAX);
    }

    fn one_point() -> (Pending, prometheus::Registry) {
        let registry = prometheus::Registry::new();
        let metrics = crate::metrics::OpcuaMetrics::register(&registry)
            .unwrap()
            .for_connection("plc");
        let table = PointTable {
            ids: vec![PointId(0)],
            scaling: vec![Scaling {
                index: None,
                scale: 1.0,
                offset: 0.0,
            }],
            group: vec![0],
            interval: vec![Duration::from_secs(3600)],
            members: vec![vec![0]],
            timestamps: TimestampSource::Source,
        };
        (Pending::new(Arc::new(table), metrics), registry)
    }

    fn publish(value: f64) -> NotificationMessage {
        NotificationMessage::data_change(
            1,
            opcua::types::DateTime::now(),
            vec![opcua::types::MonitoredItemNotification {
                client_handle: PointTable::handle(0),
                value: opcua::types::DataValue::new_now(value),
            }],
            vec![],
        )
    }

    fn taken(p: &Pending) -> Vec<Option<Value>> {
        p.take().into_iter().map(|r| r.value).collect()
    }

    /// Values reach the pipeline only over a link whose namespace indexes
    /// were verified; a verification of an older link does not count.
    #[test]
    fn values_of_an_unverified_link_are_dropped_and_counted() {
        let (p, _registry) = one_point();
        let read = |v: f64| p.on_read(&[0], &[opcua::types::DataValue::new_now(v)]);
        read(1.0);
        p.on_publish(0, publish(2.0));
        assert!(taken(&p).is_empty(), "taken before the first verification");
        assert_eq!(p.metrics.dropped_unverified.get(), 2);

        assert!(p.verify(p.link_epoch()));
        read(3.0);
        p.on_publish(0, publish(4.0));
        assert_eq!(taken(&p), [Some(Value::F64(3.0)), Some(Value::F64(4.0))]);

        // Lost, then re-established: the old verification is void.
        let before_loss = p.link_epoch();
        p.link_changed();
        p.link_changed();
        read(5.0);
        p.on_publish(0, publish(6.0));
        assert!(taken(&p).is_empty(), "taken over a re-established link");
        assert!(!p.verify(before_loss), "a stale epoch verified");
        // Verified over a link that is lost meanwhile: not taken either.
        let epoch = p.link_epoch();
        p.link_changed();
        assert!(!p.verify(epoch));
        read(7.0);
        assert!(taken(&p).is_empty());
        p.link_changed();
        assert!(p.verify(p.link_epoch()));
        p.on_publish(0, publish(8.0));
        assert_eq!(taken(&p), [Some(Value::F64(8.0))]);
        assert_eq!(p.metrics.dropped_unverified.get(), 5);
    }

    #[test]
    fn notifications_of_one_response_get_distinct_receive_times() {
        let mut st = State {
            readings: Vec::new(),
            last: Vec::new(),
            heard: Vec::new(),
            granted: Vec::new(),
            last_received: Timestamp(i64::MIN),
            link_epoch: 0,
            verified_epoch: None,
        };
        let t = Timestamp(1_765_000_000_000_000);
        let times: Vec<i64> = [t, t, t, Timestamp(t.0 + 100), Timestamp(t.0 - 5)]
            .into_iter()
            .map(|r| st.receive_time(r).0 - t.0)
            .collect();
        assert_eq!(times, [0, 1, 2, 100, 101], "distinct, never backwards");
    }
}
