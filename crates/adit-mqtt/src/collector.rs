//! The MQTT collector: one task per broker connection that drives the
//! rumqttc event loop, maps messages to readings, and acknowledges each
//! QoS 1 message only once its readings are durable (or settled).
//!
//! Invariants:
//! - one task owns the event loop and the client: it polls, decodes,
//!   batches, hands batches to the pipeline and sends acks with `try_ack`
//!   (never an awaited request from the polling task: rumqttc #263);
//! - acks go out in the order the messages arrived (MQTT 3.1.1 §4.6): each
//!   batch is a ticket in a FIFO; a ticket's acks are sent once it and
//!   every ticket before it are settled;
//! - an ack is sent only if its message arrived on the current connection
//!   and the outcome allows it ([`Outcome::may_acknowledge_upstream`]);
//!   otherwise the broker redelivers (after a reconnect), and the storage
//!   key makes that idempotent for messages that carry their own time;
//! - bounded: at most [`MAX_TICKETS`] batches await their outcome (the
//!   loop stops reading the socket until outcomes return), a batch holds
//!   at most [`BATCH_READINGS`] readings or [`BATCH_MESSAGES`] messages;
//! - every `ConnAck` with `session_present = false` subscribes again (rumqttc
//!   does not: #250); a subscription silent for 3 × `expect_every` is sent
//!   again, and after 3 more the whole client is rebuilt;
//! - when the broker connection drops, every point of the connection is
//!   marked `Bad(CommFailure)` (last values kept); fresh values make them
//!   good again;
//! - paced reads while messages flow: the message that opens a batch is
//!   read when it arrives; then the socket is left alone until the batch is
//!   due ([`BATCH_DELAY`]), when everything it holds is read in one go and
//!   the batch is flushed; a read that finds nothing goes back to waking on
//!   arrival. One wake-up and a few large reads per batch instead of one
//!   per TCP segment; a message normally waits at most [`BATCH_DELAY`] in
//!   the kernel (a read cut short by [`DRAIN_MAX`] goes on in the next loop
//!   turn), and its receive time is when adit read it;
//! - each connection runs on a thread of its own, in a current-thread
//!   runtime, and sleeps there (not in the reactor) while its reads are
//!   paused: a socket registered with epoll wakes a parked reactor for
//!   every TCP segment that arrives, read or not, and the broker sends
//!   many per batch. Nothing else runs on that runtime, so the sleep
//!   (at most [`BATCH_DELAY`]) delays no other task; outcomes and shutdown
//!   are heard when it ends. The batch's due time and the pause are plain
//!   instants, not Tokio timers (arming a timer earlier than the one the
//!   reactor waits for writes to its eventfd);
//! - an open batch is flushed by its due time at the latest: the read
//!   pause never ends after it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use adit_audit::Audit;
use adit_config::{DeviceConfig, MqttSettings};
use adit_core::{Backoff, PointId, Quality, Reading, Reason, Timestamp};
use adit_source::{Ack, Deadline, Outcome, Source, SourceContext, SourceError, SourceFuture};
use tokio::time::Instant;

use crate::link::{self, AckId, Client, EventLoop, Incoming, LinkError};
use crate::mapping::{Effects, Mapper};
use crate::metrics::ConnectionMetrics;
use crate::reject::Reject;
use crate::sparkplug::rebirth_request;

pub const MAX_TICKETS: usize = 1024;
pub const BATCH_READINGS: usize = 1024;
pub const BATCH_MESSAGES: usize = 256;
/// How long the first message of a batch waits for others (the socket is
/// read again when it is due). 10 ms: far below every other wait on the
/// way to the database (the interval fsync, the sinks' batching), and
/// measured at 20k msg/s it costs 14 % less CPU per message than 5 ms
/// (half the batches: sleeps, spool records, ingest wake-ups), with the
/// same p99 sample → ack.
const BATCH_DELAY: Duration = Duration::from_millis(10);
/// At most this many events are read in one paced read (then the loop
/// hears shutdown and outcomes before it reads on).
const DRAIN_MAX: usize = 4 * BATCH_MESSAGES;
/// Silent periods (of `expect_every`) before a resubscribe, then a rebuild.
const SILENT_PERIODS: u32 = 3;
/// How often a subscription the broker refused is asked for again.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// One log line (and audit entry) per reject reason at most this often.
const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// One broker connection as configured, with what it needs at run time.
pub struct MqttConnection {
    pub config: DeviceConfig,
    pub settings: MqttSettings,
    /// Registry ids of `config.points`, in order.
    pub ids: Vec<PointId>,
    pub metrics: ConnectionMetrics,
    pub audit: Audit,
    pub tls: Option<Arc<rumqttc::tokio_rustls::rustls::ClientConfig>>,
}

impl MqttConnection {
    /// Builds the TLS config of `mqtts://` connections (rustls, ring).
    pub fn new(
        config: DeviceConfig,
        ids: Vec<PointId>,
        metrics: ConnectionMetrics,
        audit: Audit,
    ) -> Result<Self, String> {
        let settings = config
            .mqtt()
            .cloned()
            .ok_or_else(|| format!("{} is not an MQTT device", config.id))?;
        let tls = link::tls_config(&settings)?;
        Ok(Self {
            config,
            settings,
            ids,
            metrics,
            audit,
            tls,
        })
    }

    fn describe(&self) -> String {
        let scheme = if self.settings.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.settings.host, self.settings.port)
    }
}

pub struct MqttCollector {
    conn: Arc<MqttConnection>,
}

impl MqttCollector {
    pub fn new(conn: Arc<MqttConnection>) -> Self {
        Self { conn }
    }
}

impl Source for MqttCollector {
    fn name(&self) -> &str {
        &self.conn.config.id
    }
    fn protocol(&self) -> &'static str {
        "mqtt"
    }
    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> SourceFuture<'a> {
        Box::pin(run_on_own_thread(self.conn.clone(), ctx.clone()))
    }
}

/// Runs the connection on a thread of its own (a current-thread runtime)
/// and reports its end here; a panic there is a panic here, and a thread
/// that cannot be started an error (the supervisor counts either and
/// restarts the source after a backoff).
async fn run_on_own_thread(
    conn: Arc<MqttConnection>,
    ctx: SourceContext,
) -> Result<(), SourceError> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let thread_conn = conn.clone();
    // Named after the device (Linux keeps 15 bytes), for per-thread figures.
    let name: String = format!("mqtt-{}", conn.config.id)
        .chars()
        .scan(0, |bytes, c| {
            *bytes += c.len_utf8();
            (*bytes <= 15).then_some(c)
        })
        .collect();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        // The context (a sender into the ingest stage) and the runtime are
        // gone before the result is reported: the pipeline's shutdown waits
        // for every sender.
        let result = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(run(thread_conn, ctx)),
            Err(e) => Err(SourceError::Failed(format!(
                "cannot start the runtime of an MQTT connection: {e}"
            ))),
        };
        let _ = done_tx.send(result);
    });
    let thread = spawned.map_err(|e| {
        SourceError::Failed(format!(
            "cannot start the thread of MQTT connection {}: {e}",
            conn.config.id
        ))
    })?;
    if let Ok(result) = done_rx.await {
        return result;
    }
    // The thread ended without a result: it panicked.
    match tokio::task::spawn_blocking(move || thread.join()).await {
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        _ => Err(SourceError::Failed(
            "the MQTT connection's thread ended without a result".into(),
        )),
    }
}

/// Why a client session ended.
enum End {
    Shutdown,
    /// Rebuild the client (liveness): a fresh event loop and connection.
    Rebuild,
    /// Reconnect after a growing backoff: messages were not kept (see
    /// `Session::redeliver`).
    Redeliver,
}

/// A connection's sessions, one after another; only on a thread of its own
/// (it sleeps while reads are paused).
async fn run(conn: Arc<MqttConnection>, ctx: SourceContext) -> Result<(), SourceError> {
    let ctx = &ctx;
    let mut mapper = Mapper::new(&conn.config, &conn.ids);
    let mut backoff = Backoff::new(conn.config.reconnect_min, conn.config.reconnect_max);
    let mut state = LinkState::default();
    // Not reset by a successful connect: a spool that keeps refusing must
    // not turn into a reconnect loop at reconnect_min.
    let mut redeliver_backoff = Backoff::new(
        conn.config.reconnect_min.max(Duration::from_secs(1)),
        conn.config.reconnect_max.max(Duration::from_secs(30)),
    );
    loop {
        let (client, events) =
            link::connect(&conn.settings, conn.config.timeout, conn.tls.clone(), None);
        let mut session = Session::new(&conn, ctx, client, events);
        match session.run(&mut mapper, &mut backoff, &mut state).await? {
            End::Shutdown => return Ok(()),
            End::Rebuild => {
                conn.metrics.connected.set(0);
                conn.metrics.subscribed.set(0);
                redeliver_backoff.reset();
                tracing::warn!(device = %conn.config.id, "subscriptions stayed silent after a resubscribe; rebuilding the MQTT client");
            }
            End::Redeliver => {
                conn.metrics.connected.set(0);
                conn.metrics.subscribed.set(0);
                let delay = redeliver_backoff.next_delay();
                tracing::warn!(device = %conn.config.id, ?delay, "reconnecting after a backoff so that the broker redelivers the messages adit could not keep");
                tokio::select! {
                    () = ctx.shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// What survives a client rebuild: whether the points are marked down and
/// what the audit log last heard.
#[derive(Default)]
struct LinkState {
    marked_down: bool,
    audited_up: Option<bool>,
    connected_once: bool,
    auth_reported: bool,
    /// Subscriptions (by index) the broker refused and has not granted
    /// since: asked for again by the next session too, also when the
    /// broker keeps ours.
    refused: std::collections::BTreeSet<usize>,
}

struct Ticket {
    seq: u64,
    generation: u64,
    acks: Vec<AckId>,
    outcome: Option<Outcome>,
}

struct Session<'a> {
    conn: &'a MqttConnection,
    ctx: &'a SourceContext,
    client: Client,
    events: EventLoop,
    generation: u64,
    tickets: VecDeque<Ticket>,
    next_seq: u64,
    outcomes_tx: tokio::sync::mpsc::Sender<(u64, Outcome)>,
    outcomes_rx: tokio::sync::mpsc::Receiver<(u64, Outcome)>,
    /// Acks due: sent at the top of the next loop turn (MQTT 5: as room
    /// in rumqttc's request channel allows).
    due: VecDeque<AckId>,
    batch: Vec<Reading>,
    batch_acks: Vec<AckId>,
    /// When the open batch is flushed (set by its first message).
    batch_due: Option<Instant>,
    /// While set, the socket is not read: the session sleeps until then,
    /// and then reads everything readable at once (paced reads, see the
    /// module invariants).
    read_pause: Option<Instant>,
    /// When subscriptions' silence is checked next (may fire early: the
    /// check verifies).
    liveness_timer: Deadline,
    fx: Effects,
    last_seen: Vec<Instant>,
    silent_strikes: Vec<u32>,
    last_reject_log: Vec<Option<Instant>>,
    rejects_since_log: Vec<u64>,
    /// A SUBSCRIBE could not be queued (rumqttc's request channel was
    /// full): sent again at the top of the loop until it is.
    subscribe_pending: bool,
    /// The subscriptions (by index) of each SUBSCRIBE sent on this
    /// connection and not yet answered: a SUBACK's positions name them.
    awaiting_suback: VecDeque<Vec<usize>>,
    /// Per subscription the broker refused: when to ask again (an ACL
    /// loaded late, a broker reconfigured). Cleared when it is granted.
    refused_retry: Vec<Option<Instant>>,
    /// Between a `ConnAck` and the link's loss. No SUBSCRIBE is queued
    /// outside it: one left in rumqttc's channel would go out first on the
    /// next connection and its SUBACK answer another request's entry.
    link_up: bool,
    /// Messages of this connection were not made durable (spool full or
    /// failed): their acks are withheld, so they hold places in the broker's
    /// in-flight window until it sends them again, which it only does on a
    /// new connection. Set: reconnect (after a backoff).
    redeliver: bool,
    /// The receive time of the messages rumqttc read together (up to ten,
    /// handled in one loop turn): read once per turn, not per message.
    turn_clock: Option<(Timestamp, Instant)>,
    /// The last receive time given to a message: each gets a distinct one.
    last_received: Timestamp,
}

impl<'a> Session<'a> {
    fn new(
        conn: &'a MqttConnection,
        ctx: &'a SourceContext,
        client: Client,
        events: EventLoop,
    ) -> Self {
        let (outcomes_tx, outcomes_rx) = tokio::sync::mpsc::channel(MAX_TICKETS);
        let subs = conn.settings.subscriptions.len();
        Self {
            conn,
            ctx,
            client,
            events,
            generation: 0,
            tickets: VecDeque::new(),
            next_seq: 0,
            outcomes_tx,
            outcomes_rx,
            due: VecDeque::new(),
            batch: Vec::with_capacity(BATCH_READINGS),
            batch_acks: Vec::new(),
            batch_due: None,
            read_pause: None,
            liveness_timer: Deadline::new(),
            fx: Effects::default(),
            last_seen: vec![Instant::now(); subs],
            silent_strikes: vec![0; subs],
            last_reject_log: vec![None; Reject::ALL.len()],
            rejects_since_log: vec![0; Reject::ALL.len()],
            subscribe_pending: false,
            awaiting_suback: VecDeque::new(),
            refused_retry: vec![None; subs],
            link_up: false,
            redeliver: false,
            turn_clock: None,
            last_received: Timestamp(i64::MIN),
        }
    }

    /// The receive time of one message: the turn's, or 1 µs after the
    /// previous message's. Messages read together (and a backlog a broker
    /// releases after a reconnect) would otherwise share one; two samples
    /// of a point without a time of their own would then have the same
    /// storage key (point, time, receive time), and the database's dedup
    /// would keep one of them: a silent loss.
    fn receive_time(&mut self, turn: Timestamp) -> Timestamp {
        let t = Timestamp(turn.0.max(self.last_received.0.saturating_add(1)));
        self.last_received = t;
        t
    }

    /// Wall time for the readings and monotonic time for liveness, read
    /// once per loop turn.
    fn turn_clock(&mut self) -> (Timestamp, Instant) {
        *self
            .turn_clock
            .get_or_insert_with(|| (Timestamp::now(), Instant::now()))
    }

    async fn run(
        &mut self,
        mapper: &mut Mapper,
        backoff: &mut Backoff,
        state: &mut LinkState,
    ) -> Result<End, SourceError> {
        let conn = self.conn;
        loop {
            if !self.due.is_empty() {
                let sent = self
                    .events
                    .send_acks(&self.client, &mut self.due, conn.config.timeout)
                    .await;
                conn.metrics.acked.inc_by(sent as u64);
            }
            if self.subscribe_pending {
                self.subscribe(None);
            }
            if self.redeliver {
                self.flush().await?;
                self.client.try_disconnect();
                return Ok(End::Redeliver);
            }
            let may_read = self.tickets.len() < MAX_TICKETS;
            // Not while reading is paused (too many tickets in flight):
            // silence we cause ourselves is not the broker's.
            let liveness = if may_read {
                self.next_liveness_check()
            } else {
                None
            };
            self.liveness_timer.set_at_most(liveness);
            let pause_over = self.sleep_while_paused();
            tokio::select! {
                biased;
                () = self.ctx.shutdown.cancelled() => {
                    self.flush().await?;
                    self.close().await;
                    return Ok(End::Shutdown);
                }
                Some((seq, outcome)) = self.outcomes_rx.recv() => {
                    self.settle(seq, outcome);
                    // Every outcome that came with it too: their acks go
                    // out in one write at the top of the next turn.
                    while let Ok((seq, outcome)) = self.outcomes_rx.try_recv() {
                        self.settle(seq, outcome);
                    }
                }
                () = std::future::ready(()), if pause_over => {
                    // Tokio learns that the socket is readable again only
                    // when its reactor runs: a yield lets it look (one
                    // epoll_wait that does not wait) before the read, which
                    // would otherwise find the readiness the last read
                    // cleared and leave what came during the sleep for a
                    // second pause.
                    tokio::task::yield_now().await;
                    self.read_pause = None;
                    if let Some(end) = self.paced_read(mapper, backoff, state).await? {
                        return Ok(end);
                    }
                }
                () = self.liveness_timer.elapsed() => {
                    if self.check_liveness() {
                        self.flush().await?;
                        self.client.try_disconnect();
                        return Ok(End::Rebuild);
                    }
                }
                event = self.events.poll(), if may_read && self.read_pause.is_none() => {
                    self.turn_clock = None;
                    if let Some(end) = self.on_event(event, mapper, backoff, state).await? {
                        return Ok(end);
                    }
                    // What rumqttc read with this event (up to ten packets)
                    // is handled in this turn, not one `select!` turn each.
                    // (An error has emptied rumqttc's buffer: a reconnect
                    // only happens in a `select!` turn, where shutdown is heard.)
                    while self.events.has_buffered() && self.tickets.len() < MAX_TICKETS {
                        let event = self.events.poll().await;
                        if let Some(end) = self.on_event(event, mapper, backoff, state).await? {
                            return Ok(end);
                        }
                    }
                    // A batch is open: the rest is read when it is due.
                    if self.link_up {
                        self.read_pause = self.batch_due;
                    }
                }
            }
        }
    }

    /// Sleeps (the thread: see the module invariants) until the read pause
    /// ends; true if there was one. An open batch ends the pause by its due
    /// time at the latest.
    fn sleep_while_paused(&mut self) -> bool {
        if let Some(due) = self.batch_due {
            self.read_pause = Some(self.read_pause.map_or(due, |at| at.min(due)));
        }
        let Some(at) = self.read_pause else {
            return false;
        };
        let left = at.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            std::thread::sleep(left);
        }
        true
    }

    /// Reads everything the socket holds (bounded by [`DRAIN_MAX`] and the
    /// tickets in flight), then flushes; pauses again if it found anything.
    async fn paced_read(
        &mut self,
        mapper: &mut Mapper,
        backoff: &mut Backoff,
        state: &mut LinkState,
    ) -> Result<Option<End>, SourceError> {
        self.turn_clock = None;
        let (mut read, mut messages) = (0, 0);
        while read < DRAIN_MAX
            && self.link_up
            && self.tickets.len() < MAX_TICKETS
            && !self.ctx.shutdown.is_cancelled()
        {
            let Some(event) = self.events.poll_now() else {
                break;
            };
            read += 1;
            let failed = event.is_err();
            messages += usize::from(matches!(event, Ok(Incoming::Publish(_))));
            if let Some(end) = self.on_event(event, mapper, backoff, state).await? {
                return Ok(Some(end));
            }
            if failed {
                break;
            }
        }
        self.flush().await?;
        if self.link_up {
            // More may be waiting (the bound, Tokio's budget): read on in
            // the next turn. Messages came: pause again. Only acks and
            // pings came: back to reading on arrival.
            let next = if read == DRAIN_MAX {
                Some(Instant::now())
            } else {
                (messages > 0).then(|| Instant::now() + BATCH_DELAY)
            };
            self.read_pause = next;
        }
        Ok(None)
    }

    /// Acts on one event of the link; `Some` ends the session.
    async fn on_event(
        &mut self,
        event: Result<Incoming, LinkError>,
        mapper: &mut Mapper,
        backoff: &mut Backoff,
        state: &mut LinkState,
    ) -> Result<Option<End>, SourceError> {
        let conn = self.conn;
        match event {
            Ok(Incoming::ConnAck { session_present }) => {
                let relinked = state.marked_down;
                self.connected(session_present, backoff, state);
                if relinked {
                    self.ask_for_rebirths(mapper);
                }
            }
            Ok(Incoming::Publish(msg)) => {
                self.message(mapper, &msg);
                if self.batch.len() >= BATCH_READINGS || self.batch_acks.len() >= BATCH_MESSAGES {
                    self.flush().await?;
                } else if self.batch_due.is_none() {
                    self.batch_due = Some(Instant::now() + BATCH_DELAY);
                }
            }
            Ok(Incoming::SubAck { refused }) => {
                // Positions in the SUBSCRIBE it answers (SUBACKs come in
                // order), turned into subscription indexes.
                let sent = self.awaiting_suback.pop_front().unwrap_or_default();
                let refused: Vec<usize> = refused
                    .iter()
                    .filter_map(|&k| sent.get(k).copied())
                    .collect();
                let now = Instant::now();
                for &i in &sent {
                    if let Some(retry) = self.refused_retry.get_mut(i) {
                        *retry = refused.contains(&i).then_some(now + REFUSED_RETRY);
                    }
                    if refused.contains(&i) {
                        state.refused.insert(i);
                    } else {
                        state.refused.remove(&i);
                    }
                }
                if self.refused_retry.iter().all(Option::is_none) {
                    conn.metrics.subscribed.set(1);
                }
                self.subscription_refused(&refused);
            }
            Ok(Incoming::Other) => {}
            Err(e) => {
                // What rumqttc read before the failure: QoS 0 has no
                // redelivery, so it is handled now (read in this turn, so
                // at the time it was read); QoS 1 is left to the broker.
                let unread = self.events.take_buffered_after_failure();
                for msg in &unread.qos0 {
                    self.message(mapper, msg);
                }
                if unread.qos1_dropped > 0 {
                    conn.metrics.ack_withheld.inc_by(unread.qos1_dropped as u64);
                    tracing::warn!(device = %conn.config.id, messages = unread.qos1_dropped, "dropped QoS 1 messages read just before the connection failed (not acknowledged: the broker redelivers them)");
                }
                self.flush().await?;
                // The connection ends here, not at the next ConnAck:
                // acks of its messages settled during the backoff
                // must not reach the next connection, where the
                // broker may have given their packet ids to other
                // messages (it redelivers these).
                self.generation += 1;
                self.due.clear();
                self.link_lost(&e, mapper, state).await?;
                let delay = backoff.next_delay();
                tokio::select! {
                    () = self.ctx.shutdown.cancelled() => return Ok(Some(End::Shutdown)),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
        Ok(None)
    }

    fn connected(&mut self, session_present: bool, backoff: &mut Backoff, state: &mut LinkState) {
        let conn = self.conn;
        self.generation += 1;
        // Acks of the old connection are void: the broker redelivers.
        self.due.clear();
        backoff.reset();
        conn.metrics.connected.set(1);
        conn.metrics.connect_ok.inc();
        state.auth_reported = false;
        let now = Instant::now();
        self.last_seen.iter_mut().for_each(|t| *t = now);
        self.silent_strikes.iter_mut().for_each(|s| *s = 0);
        // SUBSCRIBEs of the old connection get no SUBACK on this one.
        self.awaiting_suback.clear();
        self.link_up = true;
        if !session_present {
            if state.connected_once {
                conn.metrics.resubscribe_session_lost.inc();
                tracing::info!(device = %conn.config.id, "broker has no session for us: subscribing again");
            }
            self.subscribe(None);
        } else if !state.connected_once {
            // A persistent session from an earlier run holds that run's
            // subscriptions, not necessarily this config's: send ours (the
            // broker replaces a subscription with the same filter).
            self.subscribe(None);
        } else {
            // The broker kept our session and its subscriptions; one it
            // refused (remembered across rebuilds) is asked for again soon.
            for &i in &state.refused {
                if let Some(retry) = self.refused_retry.get_mut(i) {
                    retry.get_or_insert(now);
                }
            }
            if state.refused.is_empty() {
                conn.metrics.subscribed.set(1);
            }
        }
        state.connected_once = true;
        tracing::info!(device = %conn.config.id, broker = %conn.describe(), session_present, "MQTT connected");
        if state.audited_up != Some(true) {
            state.audited_up = Some(true);
            conn.audit.record(
                "device_connect",
                serde_json::json!({ "endpoint": conn.describe(), "devices": [conn.config.id], "session_present": session_present }),
            );
        }
        state.marked_down = false;
    }

    /// After a lost link: ask every Sparkplug node we knew for its births,
    /// so points marked Bad(CommFailure) come back without waiting for a
    /// change (report by exception).
    fn ask_for_rebirths(&mut self, mapper: &mut Mapper) {
        let now = Timestamp::now();
        let now_ms = u64::try_from(now.as_micros() / 1000).unwrap_or(0);
        for ncmd in mapper.rebirths_after_link_loss(now) {
            if self.client.try_publish(&ncmd, rebirth_request(now_ms)) {
                self.conn.metrics.rebirths.inc();
                tracing::info!(device = %self.conn.config.id, topic = ncmd, "asked a Sparkplug node to rebirth after our link came back");
            }
        }
    }

    /// Sends SUBSCRIBE for one subscription, or all.
    fn subscribe(&mut self, only: Option<usize>) {
        if !self.link_up {
            // Sent (all of them) once the link is back.
            self.subscribe_pending = true;
            return;
        }
        let (indexes, filters): (Vec<usize>, Vec<(String, u8)>) = self
            .conn
            .settings
            .subscriptions
            .iter()
            .enumerate()
            .filter(|(i, _)| only.is_none_or(|o| o == *i))
            .map(|(i, s)| (i, (s.filter.clone(), s.qos)))
            .unzip();
        match self.client.try_subscribe(&filters) {
            Ok(()) => {
                self.subscribe_pending = false;
                self.awaiting_suback.push_back(indexes);
            }
            Err(e) => {
                if !self.subscribe_pending {
                    tracing::warn!(device = %self.conn.config.id, error = %e, "could not queue SUBSCRIBE yet; retrying");
                }
                // Retry all (a subset retry would be as large in the worst case).
                self.subscribe_pending = true;
            }
        }
    }

    fn subscription_refused(&self, refused: &[usize]) {
        for i in refused {
            let filter = self
                .conn
                .settings
                .subscriptions
                .get(*i)
                .map_or("?", |s| s.filter.as_str());
            tracing::error!(device = %self.conn.config.id, filter, "the broker refused the subscription (not authorized, or an invalid filter for this broker)");
            self.conn.audit.record(
                "mqtt_subscription_refused",
                serde_json::json!({ "device": self.conn.config.id, "filter": filter }),
            );
        }
    }

    async fn link_lost(
        &mut self,
        e: &LinkError,
        mapper: &Mapper,
        state: &mut LinkState,
    ) -> Result<(), SourceError> {
        let conn = self.conn;
        self.link_up = false;
        conn.metrics.connected.set(0);
        conn.metrics.subscribed.set(0);
        conn.metrics.connect_failed.inc();
        if e.refused_auth {
            if !state.auth_reported {
                state.auth_reported = true;
                tracing::error!(
                    device = %conn.config.id,
                    broker = %conn.describe(),
                    user = conn.settings.username.as_deref().unwrap_or("(none)"),
                    error = %e.message,
                    "the broker refused our credentials: check username and password (or password_file) of this device"
                );
                conn.audit.record(
                    "mqtt_auth_refused",
                    serde_json::json!({ "device": conn.config.id, "endpoint": conn.describe(), "user": conn.settings.username }),
                );
            }
        } else {
            tracing::warn!(device = %conn.config.id, broker = %conn.describe(), error = %e.message, "MQTT connection lost; reconnecting");
        }
        if state.audited_up != Some(false) {
            state.audited_up = Some(false);
            conn.audit.record(
                "device_disconnect",
                serde_json::json!({ "endpoint": conn.describe(), "devices": [conn.config.id], "cause": e.message }),
            );
        }
        if !state.marked_down {
            state.marked_down = true;
            let points = mapper.known_points();
            if !points.is_empty() {
                self.ctx
                    .out
                    .mark_bad(&points, Reason::CommFailure)
                    .await
                    .map_err(|_| SourceError::PipelineClosed)?;
            }
        }
        Ok(())
    }

    fn message(&mut self, mapper: &mut Mapper, msg: &link::Message) {
        let (topic, payload, ack, dup, retain) = (
            &msg.topic[..],
            &msg.payload[..],
            msg.ack,
            msg.dup,
            msg.retain,
        );
        let conn = self.conn;
        conn.metrics.messages.inc();
        if dup {
            conn.metrics.redelivered.inc();
        }
        if ack.qos > 0 {
            self.batch_acks.push(ack);
        }
        let (turn, seen_at) = self.turn_clock();
        let now = self.receive_time(turn);
        self.fx.clear();
        let Ok(topic) = std::str::from_utf8(topic) else {
            self.fx.rejects.push(Reject::InvalidUtf8);
            return self.report("", payload);
        };
        if payload.len() > conn.settings.max_payload_size {
            self.fx.rejects.push(Reject::TooLarge);
            return self.report(topic, &payload[..64.min(payload.len())]);
        }
        let mut fx = std::mem::take(&mut self.fx);
        mapper.map(
            topic,
            payload,
            now,
            retain,
            &self.ctx.points,
            &mut self.batch,
            &mut fx,
        );
        // A retained copy is what the broker kept, not a sign that the
        // publisher is alive: it must not satisfy the liveness check (a
        // resubscribe would otherwise bring it back and hide the silence).
        if let Some(i) = fx.subscription.filter(|_| !retain) {
            if let (Some(t), Some(s)) = (self.last_seen.get_mut(i), self.silent_strikes.get_mut(i))
            {
                *t = seen_at;
                *s = 0;
            }
        }
        for p in &fx.dead {
            self.batch.push(Reading::without_value(
                *p,
                Quality::Bad(Reason::CommFailure),
                now,
            ));
        }
        if let Some(ncmd) = fx.rebirth.take() {
            let now_ms = u64::try_from(now.as_micros() / 1000).unwrap_or(0);
            if self.client.try_publish(&ncmd, rebirth_request(now_ms)) {
                conn.metrics.rebirths.inc();
                tracing::info!(device = %conn.config.id, topic = ncmd, "asked a Sparkplug node to rebirth");
            }
        }
        self.fx = fx;
        if !self.fx.rejects.is_empty() {
            self.report(topic, payload);
        }
    }

    /// Counts the message's rejects; logs and audits each reason at most
    /// every [`REJECT_LOG_EVERY`], with a sample of the message.
    fn report(&mut self, topic: &str, payload: &[u8]) {
        let conn = self.conn;
        let now = Instant::now();
        for r in &self.fx.rejects {
            conn.metrics.reject(*r);
            let i = r.index();
            self.rejects_since_log[i] += 1;
            if self.last_reject_log[i].is_some_and(|t| now.duration_since(t) < REJECT_LOG_EVERY) {
                continue;
            }
            self.last_reject_log[i] = Some(now);
            let count = std::mem::take(&mut self.rejects_since_log[i]);
            let sample = sample_of(payload);
            tracing::warn!(device = %conn.config.id, reason = r.name(), topic, sample = %sample.escape_debug(), since_last_log = count, "MQTT message rejected (acknowledged, counted)");
            conn.audit.record(
                "mqtt_message_rejected",
                serde_json::json!({ "device": conn.config.id, "reason": r.name(), "topic": topic, "sample": sample, "count": count }),
            );
        }
    }

    /// Hands the batch (and its messages' acks, as one ticket) to the pipeline.
    async fn flush(&mut self) -> Result<(), SourceError> {
        self.batch_due = None;
        if self.batch.is_empty() && self.batch_acks.is_empty() {
            return Ok(());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.tickets.push_back(Ticket {
            seq,
            generation: self.generation,
            acks: std::mem::take(&mut self.batch_acks),
            outcome: None,
        });
        let tx = self.outcomes_tx.clone();
        // Never full: at most MAX_TICKETS tickets exist, each settles once.
        let ack = Ack::new(move |o| {
            let _ = tx.try_send((seq, o));
        });
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_READINGS));
        let sent = self.ctx.out.send_acked(batch, ack).await;
        // The pipeline may have made us wait: what is handled next in this
        // turn reads the clock again (liveness must not see an old time).
        self.turn_clock = None;
        sent.map_err(|_| SourceError::PipelineClosed)
    }

    /// Records a ticket's outcome; moves the acks of every settled ticket
    /// at the front to `due`.
    fn settle(&mut self, seq: u64, outcome: Outcome) {
        if let Some(t) = self.tickets.iter_mut().find(|t| t.seq == seq) {
            t.outcome = Some(outcome);
        }
        while self.tickets.front().is_some_and(|t| t.outcome.is_some()) {
            let Some(t) = self.tickets.pop_front() else {
                break;
            };
            let ok = t.outcome.is_some_and(Outcome::may_acknowledge_upstream);
            if ok && t.generation == self.generation {
                self.due.extend(t.acks);
            } else if !t.acks.is_empty() {
                self.conn.metrics.ack_withheld.inc_by(t.acks.len() as u64);
                if !ok {
                    tracing::warn!(device = %self.conn.config.id, outcome = ?t.outcome, messages = t.acks.len(), "not acknowledging MQTT messages whose readings are not known to be durable; reconnecting so that the broker redelivers them");
                    if t.generation == self.generation {
                        self.redeliver = true;
                    }
                }
            }
        }
    }

    fn next_liveness_check(&self) -> Option<Instant> {
        self.conn
            .settings
            .subscriptions
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let every = s.expect_every?;
                let strikes = self.silent_strikes.get(i).copied().unwrap_or(0) + 1;
                Some(self.last_seen.get(i).copied()? + every * SILENT_PERIODS * strikes)
            })
            .chain(self.refused_retry.iter().flatten().copied())
            .min()
    }

    /// True when the client must be rebuilt.
    fn check_liveness(&mut self) -> bool {
        let now = Instant::now();
        for i in 0..self.refused_retry.len() {
            if self.refused_retry[i].is_some_and(|at| at <= now) {
                // Asked again; the SUBACK sets the next try or clears it.
                self.refused_retry[i] = Some(now + REFUSED_RETRY);
                self.subscribe(Some(i));
            }
        }
        let subs = &self.conn.settings.subscriptions;
        for (i, sub) in subs.iter().enumerate() {
            let Some(every) = sub.expect_every else {
                continue;
            };
            let strikes = self.silent_strikes[i] + 1;
            if now < self.last_seen[i] + every * SILENT_PERIODS * strikes {
                continue;
            }
            self.silent_strikes[i] = strikes;
            if strikes == 1 {
                tracing::warn!(device = %self.conn.config.id, filter = %sub.filter, "nothing received within {} × expect_every: subscribing again", SILENT_PERIODS);
                self.conn.metrics.resubscribe_silence.inc();
                self.subscribe(Some(i));
            } else {
                return true;
            }
        }
        false
    }

    /// Shutdown: give settled acks a moment to go out, then disconnect.
    async fn close(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.tickets.is_empty() && Instant::now() < deadline {
            tokio::select! {
                Some((seq, o)) = self.outcomes_rx.recv() => self.settle(seq, o),
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let sent = self
            .events
            .send_acks(&self.client, &mut self.due, self.conn.config.timeout)
            .await;
        self.conn.metrics.acked.inc_by(sent as u64);
        self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while self.events.poll().await.is_ok() {}
        })
        .await;
        self.conn.metrics.connected.set(0);
        self.conn.metrics.subscribed.set(0);
    }
}

/// A short sample of a rejected payload for logs and the audit log: text
/// when it is UTF-8 (up to 120 bytes), else hex of the first 48 bytes
/// (Sparkplug is protobuf: lossy text of it says nothing).
fn sample_of(payload: &[u8]) -> String {
    let head = &payload[..payload.len().min(120)];
    match std::str::from_utf8(head) {
        Ok(text) => text.to_string(),
        // A multi-byte character cut at 120 bytes is still text.
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
            String::from_utf8_lossy(&head[..e.valid_up_to()]).into_owned()
        }
        Err(_) => {
            use std::fmt::Write as _;
            let mut hex = String::from("hex:");
            for b in &payload[..payload.len().min(48)] {
                let _ = write!(hex, "{b:02x}");
            }
            if payload.len() > 48 {
                hex.push('…');
            }
            hex
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sample_of;

    #[test]
    fn rejected_payload_samples_are_text_or_hex() {
        assert_eq!(sample_of(b"{\"value\": nope}"), "{\"value\": nope}");
        assert_eq!(sample_of(&[0x08, 0xff, 0x01]), "hex:08ff01");
        assert!(sample_of(&[0xff; 100]).ends_with('…'));
        // 119 ASCII bytes then a two-byte character cut at byte 120: text.
        let mut cut = vec![b'a'; 119];
        cut.extend("é".as_bytes());
        assert_eq!(sample_of(&cut), "a".repeat(119));
    }
}
