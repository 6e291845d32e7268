//! One MQTT connection, whichever protocol level: rumqttc's 3.1.1 and 5
//! clients behind one small interface (connect options, the events adit
//! acts on, acks, subscribes, publishes).
//!
//! Invariants (from rumqttc's behaviour, see dependency notes):
//! - acks are manual and only ever sent from the task that drives
//!   `poll()`, between polls: on 3.1.1 written into the connection directly
//!   (one write for all that are due, under a timeout); on 5 with
//!   `try_ack`, never awaited there (that can deadlock on the bounded
//!   request channel): a full request channel leaves the ack queued by the
//!   caller, and the next `poll()` drains the channel;
//! - `poll()` is cancel safe (rumqttc keeps partial reads in its state), so
//!   it can sit in a `select!`;
//! - rumqttc does not resubscribe when the broker has lost the session:
//!   the caller subscribes on every `ConnAck` with `session_present = false`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use adit_config::{MqttSettings, MqttVersion};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::{QoS, TlsConfiguration, Transport};

/// What the collector acts on.
#[derive(Debug)]
pub enum Incoming {
    ConnAck {
        session_present: bool,
    },
    Publish(Message),
    /// Subscriptions the broker refused (by position in the request).
    SubAck {
        refused: Vec<usize>,
    },
    Other,
}

/// A received PUBLISH: its topic, payload, and what acknowledging it takes.
#[derive(Debug)]
pub struct Message {
    pub topic: Bytes,
    pub payload: Bytes,
    pub ack: AckId,
    pub dup: bool,
    /// The broker's stored copy (sent on subscribe), not a live publish.
    pub retain: bool,
}

/// What a PUBACK needs (QoS 0: nothing to acknowledge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckId {
    pub qos: u8,
    pub pkid: u16,
}

/// A failed connection or session, said for people.
#[derive(Debug, Clone)]
pub struct LinkError {
    pub message: String,
    /// The broker refused our credentials or authorization.
    pub refused_auth: bool,
}

/// rumqttc's error text, with what to do about the TLS errors a site meets
/// at commissioning (the certificate checks are rustls', unchanged).
fn explain(message: String) -> String {
    let hint = if message.contains("UnknownIssuer") {
        "the broker's certificate is not signed by a CA adit trusts: give the site CA as ca_file (probe: --ca-file)"
    } else if message.contains("NotValidForName") {
        "the broker's certificate does not name the host in the broker URL (check its subjectAltName)"
    } else if message.contains("Expired") {
        "the broker's certificate has expired (or this machine's clock is wrong)"
    } else if message.contains("CertificateRequired") {
        "the broker requires a client certificate: give client_cert and client_key (probe: --client-cert, --client-key)"
    } else if message.contains("UnknownCA") || message.contains("BadCertificate") {
        "the broker refused our client certificate (not signed by a CA it trusts)"
    } else {
        return message;
    };
    format!("{message} ({hint})")
}

pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

pub enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// Room in rumqttc's request channel: acks of a full receive window and
/// the subscribes of a reconnect fit without blocking.
const REQUEST_CAPACITY: usize = 4096;
/// Largest packet rumqttc accepts (see `connect`).
pub const MAX_PACKET: usize = 16 * 1024 * 1024;
/// MQTT 5 receive maximum: QoS 1 messages the broker may have in flight to us.
pub const RECEIVE_MAXIMUM: u16 = 2048;

fn qos4(q: u8) -> QoS {
    if q == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

fn qos5(q: u8) -> QoS5 {
    if q == 0 {
        QoS5::AtMostOnce
    } else {
        QoS5::AtLeastOnce
    }
}

/// The rustls client configuration of an `mqtts://` broker (ring; the
/// site CA and the client certificate from the settings), None for plain
/// `mqtt://`. Shared by the collector and the probe.
pub fn tls_config(
    settings: &MqttSettings,
) -> Result<Option<Arc<rumqttc::tokio_rustls::rustls::ClientConfig>>, String> {
    if !settings.tls {
        return Ok(None);
    }
    let auth = settings
        .client_auth
        .as_ref()
        .map(|(cert, key)| adit_tls::ClientAuth { cert, key });
    adit_tls::client_config(settings.ca_file.as_deref(), auth).map(|c| Some(Arc::new(c)))
}

/// Options for a connection to `settings`' broker; `tls` is built once by
/// the caller (rustls, ring) for `mqtts://`.
pub fn connect(
    settings: &MqttSettings,
    timeout: Duration,
    tls: Option<Arc<rumqttc::tokio_rustls::rustls::ClientConfig>>,
    will: Option<(String, Vec<u8>)>,
) -> (Client, EventLoop) {
    let transport = match tls {
        Some(config) => Transport::tls_with_config(TlsConfiguration::Rustls(config)),
        None => Transport::Tcp,
    };
    // rumqttc drops the connection on a larger packet (and the broker then
    // redelivers it forever), so its bound is generous: our own
    // `max_payload_size` refuses (counts, acknowledges) what lies between.
    // Beyond this, limit the broker's `message_size_limit`.
    let max_packet = settings.max_payload_size.max(MAX_PACKET) + 64 * 1024;
    let connect_timeout = timeout.as_secs().max(1);
    match settings.version {
        MqttVersion::V311 => {
            let mut o =
                rumqttc::MqttOptions::new(&settings.client_id, &settings.host, settings.port);
            o.set_keep_alive(settings.keep_alive)
                .set_clean_session(settings.clean_session)
                .set_manual_acks(true)
                .set_max_packet_size(max_packet, max_packet)
                .set_request_channel_capacity(REQUEST_CAPACITY)
                .set_transport(transport);
            if let (Some(u), Some(pw)) = (&settings.username, &settings.password) {
                o.set_credentials(u, pw.expose());
            } else if let Some(u) = &settings.username {
                o.set_credentials(u, "");
            }
            if let Some((topic, payload)) = will {
                o.set_last_will(rumqttc::LastWill::new(
                    topic,
                    payload,
                    QoS::AtLeastOnce,
                    false,
                ));
            }
            let mut network = rumqttc::NetworkOptions::new();
            network.set_connection_timeout(connect_timeout);
            let (c, mut e) = rumqttc::AsyncClient::new(o, REQUEST_CAPACITY);
            e.set_network_options(network);
            (Client::V4(c), EventLoop::V4(Box::new(e)))
        }
        MqttVersion::V5 => {
            let mut o =
                rumqttc::v5::MqttOptions::new(&settings.client_id, &settings.host, settings.port);
            o.set_keep_alive(settings.keep_alive)
                .set_clean_start(settings.clean_session)
                .set_manual_acks(true)
                .set_max_packet_size(Some(max_packet as u32))
                .set_receive_maximum(Some(RECEIVE_MAXIMUM))
                .set_request_channel_capacity(REQUEST_CAPACITY)
                .set_transport(transport);
            o.set_connection_timeout(connect_timeout);
            if !settings.clean_session {
                o.set_session_expiry_interval(Some(
                    u32::try_from(settings.session_expiry.as_secs()).unwrap_or(u32::MAX),
                ));
            }
            if let Some(u) = &settings.username {
                o.set_credentials(u, settings.password.as_ref().map_or("", |p| p.expose()));
            }
            if let Some((topic, payload)) = will {
                o.set_last_will(p5::LastWill::new(
                    topic,
                    payload,
                    QoS5::AtLeastOnce,
                    false,
                    None,
                ));
            }
            let (c, e) = rumqttc::v5::AsyncClient::new(o, REQUEST_CAPACITY);
            (Client::V5(c), EventLoop::V5(Box::new(e)))
        }
    }
}

impl Client {
    /// Queues a PUBACK; `false` if rumqttc's request channel is full (keep
    /// it and try again after the next `poll()`).
    pub fn try_ack(&self, id: AckId) -> bool {
        if id.qos == 0 {
            return true;
        }
        match self {
            Client::V4(c) => {
                let mut p = rumqttc::Publish::new("", QoS::AtLeastOnce, Vec::new());
                p.pkid = id.pkid;
                c.try_ack(&p).is_ok()
            }
            Client::V5(c) => {
                let mut p = p5::Publish::new("", QoS5::AtLeastOnce, Vec::new(), None);
                p.pkid = id.pkid;
                c.try_ack(&p).is_ok()
            }
        }
    }

    /// Queues one SUBSCRIBE of every filter.
    pub fn try_subscribe(&self, filters: &[(String, u8)]) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), qos4(*q))),
                )
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| p5::Filter::new(f.clone(), qos5(*q))),
                )
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues a QoS 0 publish (Sparkplug rebirth requests); `false` when full.
    pub fn try_publish(&self, topic: &str, payload: Vec<u8>) -> bool {
        match self {
            Client::V4(c) => c
                .try_publish(topic, QoS::AtMostOnce, false, payload)
                .is_ok(),
            Client::V5(c) => c
                .try_publish(topic, QoS5::AtMostOnce, false, payload)
                .is_ok(),
        }
    }

    pub fn try_disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

impl EventLoop {
    /// Whether rumqttc holds events it has already read: the next `poll()`
    /// returns one at once, without touching the socket.
    pub fn has_buffered(&self) -> bool {
        match self {
            EventLoop::V4(e) => !e.state.events.is_empty(),
            EventLoop::V5(e) => !e.state.events.is_empty(),
        }
    }

    /// The next event if rumqttc has one without waiting: buffered, or in
    /// what the socket already holds (`None` otherwise). Only while the
    /// link is up: a reconnect is never started (and dropped) here.
    pub fn poll_now(&mut self) -> Option<Result<Incoming, LinkError>> {
        if let Some(event) = self.pop_buffered() {
            return Some(Ok(event));
        }
        let next = std::pin::pin!(self.poll());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(next, &mut cx) {
            std::task::Poll::Ready(event) => Some(event),
            std::task::Poll::Pending => None,
        }
    }

    /// Empties what rumqttc read before its connection failed (it keeps it
    /// and would hand it out after the next `ConnAck`, where an ack would
    /// carry a packet id of the old connection, and the receive time would
    /// be after the reconnect). QoS 1 messages are dropped and counted in
    /// the result: the broker redelivers them. QoS 0 messages, which have
    /// no packet id and no redelivery, are returned to be handled now.
    pub fn take_buffered_after_failure(&mut self) -> AfterFailure {
        let mut out = AfterFailure::default();
        let mut take = |m: Message| {
            if m.ack.qos == 0 {
                out.qos0.push(m);
            } else {
                out.qos1_dropped += 1;
            }
        };
        // Every request rumqttc kept to send first on the next connection
        // goes: SUBSCRIBEs (the collector subscribes on each connection
        // itself, and a stale one's SUBACK would answer another request's
        // entry), QoS 0 rebirth requests (asked again after a relink), a
        // DISCONNECT. adit publishes nothing that needs a replay, and a
        // non-empty queue would hold back the request channel (acks,
        // SUBSCRIBEs) behind rumqttc's throttle timer, which a paced read
        // never waits for.
        match self {
            EventLoop::V4(e) => {
                for ev in e.state.events.drain(..) {
                    if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev {
                        take(message_v4(p));
                    }
                }
                e.pending.clear();
            }
            EventLoop::V5(e) => {
                for ev in e.state.events.drain(..) {
                    if let rumqttc::v5::Event::Incoming(p5::Packet::Publish(p)) = ev {
                        take(message_v5(p));
                    }
                }
                e.pending.clear();
            }
        }
        out
    }

    /// Sends the acks in `due`, in order, and returns how many went out.
    ///
    /// 3.1.1: every PUBACK is written straight into the connection's buffer
    /// and the buffer is flushed once (one `writev` for all of them).
    /// rumqttc's own path (`try_ack`) takes one request per event-loop turn
    /// and flushes each alone: one system call, and one loop turn, per
    /// message. Called from the task that drives `poll()`, never while a
    /// `poll()` is in progress (the `select!` has dropped it), so the bytes
    /// cannot interleave with rumqttc's. A write that fails or times out
    /// loses the acks with the connection; the broker redelivers.
    ///
    /// 5: rumqttc keeps the connection private; acks are queued with
    /// `try_ack` until its request channel is full (the rest stay in `due`).
    pub async fn send_acks(
        &mut self,
        client: &Client,
        due: &mut VecDeque<AckId>,
        timeout: Duration,
    ) -> usize {
        match self {
            EventLoop::V4(e) => {
                let Some(network) = e.network.as_mut() else {
                    // Between connections: these acks are void (the caller
                    // drops them at the next ConnAck; the broker redelivers).
                    return 0;
                };
                let count = due.iter().filter(|a| a.qos > 0).count();
                let written = tokio::time::timeout(timeout, async {
                    for a in due.drain(..).filter(|a| a.qos > 0) {
                        network
                            .write(rumqttc::Packet::PubAck(rumqttc::PubAck::new(a.pkid)))
                            .await?;
                    }
                    network.flush().await
                })
                .await;
                due.clear();
                match written {
                    Ok(Ok(())) => count,
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, count, "PUBACKs not written: the connection is failing (the broker redelivers)");
                        0
                    }
                    Err(_) => {
                        tracing::debug!(count, "PUBACKs not flushed in time: the broker is not reading (it redelivers)");
                        0
                    }
                }
            }
            EventLoop::V5(_) => {
                let mut sent = 0;
                while let Some(a) = due.front() {
                    if !client.try_ack(*a) {
                        break;
                    }
                    due.pop_front();
                    sent += 1;
                }
                sent
            }
        }
    }

    /// An event rumqttc has already read and buffered (it reads up to ten
    /// packets at a time), handed out as `poll` would, without building
    /// rumqttc's `poll` future for it (its `select!` state, a boxed timer
    /// and two clock reads per call). Only on a live connection: after a
    /// failure the collector empties the buffer
    /// ([`take_buffered_after_failure`](Self::take_buffered_after_failure)),
    /// and a disconnected event loop's `poll` connects first.
    fn pop_buffered(&mut self) -> Option<Incoming> {
        match self {
            EventLoop::V4(e) if e.network.is_some() => e.state.events.pop_front().map(incoming_v4),
            EventLoop::V4(_) => None,
            EventLoop::V5(e) => e.state.events.pop_front().map(incoming_v5),
        }
    }

    /// The next event; an error means the connection is gone (the next
    /// call reconnects).
    pub async fn poll(&mut self) -> Result<Incoming, LinkError> {
        if let Some(event) = self.pop_buffered() {
            return Ok(event);
        }
        match self {
            EventLoop::V4(e) => match e.poll().await {
                Ok(event) => Ok(incoming_v4(event)),
                Err(e) => Err(LinkError {
                    refused_auth: matches!(
                        e,
                        rumqttc::ConnectionError::ConnectionRefused(
                            rumqttc::ConnectReturnCode::BadUserNamePassword
                                | rumqttc::ConnectReturnCode::NotAuthorized
                        )
                    ),
                    message: explain(e.to_string()),
                }),
            },
            EventLoop::V5(e) => match e.poll().await {
                Ok(event) => Ok(incoming_v5(event)),
                Err(e) => Err(LinkError {
                    refused_auth: matches!(
                        e,
                        rumqttc::v5::ConnectionError::ConnectionRefused(
                            p5::ConnectReturnCode::BadUserNamePassword
                                | p5::ConnectReturnCode::NotAuthorized
                                | p5::ConnectReturnCode::BadAuthenticationMethod
                        )
                    ),
                    message: explain(e.to_string()),
                }),
            },
        }
    }
}

/// What a failed connection left unhandled (see
/// [`EventLoop::take_buffered_after_failure`]).
#[derive(Default)]
pub struct AfterFailure {
    pub qos0: Vec<Message>,
    pub qos1_dropped: usize,
}

/// What the collector needs of a rumqttc (3.1.1) event.
fn incoming_v4(event: rumqttc::Event) -> Incoming {
    match event {
        rumqttc::Event::Incoming(p) => match p {
            rumqttc::Packet::ConnAck(a) => Incoming::ConnAck {
                session_present: a.session_present,
            },
            rumqttc::Packet::Publish(p) => Incoming::Publish(message_v4(p)),
            rumqttc::Packet::SubAck(s) => Incoming::SubAck {
                refused: s
                    .return_codes
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    .map(|(i, _)| i)
                    .collect(),
            },
            _ => Incoming::Other,
        },
        rumqttc::Event::Outgoing(_) => Incoming::Other,
    }
}

/// What the collector needs of a rumqttc (5) event.
fn incoming_v5(event: rumqttc::v5::Event) -> Incoming {
    match event {
        rumqttc::v5::Event::Incoming(p) => match p {
            p5::Packet::ConnAck(a) => Incoming::ConnAck {
                session_present: a.session_present,
            },
            p5::Packet::Publish(p) => Incoming::Publish(message_v5(p)),
            p5::Packet::SubAck(s) => Incoming::SubAck {
                refused: s
                    .return_codes
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !matches!(c, p5::SubscribeReasonCode::Success(_)))
                    .map(|(i, _)| i)
                    .collect(),
            },
            _ => Incoming::Other,
        },
        rumqttc::v5::Event::Outgoing(_) => Incoming::Other,
    }
}

fn message_v4(p: rumqttc::Publish) -> Message {
    Message {
        ack: AckId {
            qos: u8::from(p.qos != QoS::AtMostOnce),
            pkid: p.pkid,
        },
        dup: p.dup,
        retain: p.retain,
        topic: Bytes::from(p.topic.into_bytes()),
        payload: p.payload,
    }
}

fn message_v5(p: p5::Publish) -> Message {
    Message {
        ack: AckId {
            qos: u8::from(p.qos != QoS5::AtMostOnce),
            pkid: p.pkid,
        },
        dup: p.dup,
        retain: p.retain,
        topic: p.topic,
        payload: p.payload,
    }
}

#[cfg(test)]
mod tests {
    use super::{explain, EventLoop};
    use rumqttc::{Event, MqttOptions, Packet, Publish, QoS};

    #[test]
    fn after_a_failure_qos0_is_handed_back_and_qos1_left_to_the_broker() {
        let mut inner = rumqttc::EventLoop::new(MqttOptions::new("t", "127.0.0.1", 1), 10);
        let publish = |topic: &str, qos: QoS, pkid: u16| {
            let mut p = Publish::new(topic, qos, b"1.5".to_vec());
            p.pkid = pkid;
            Event::Incoming(Packet::Publish(p))
        };
        inner.state.events.extend([
            publish("a", QoS::AtLeastOnce, 7),
            publish("b", QoS::AtMostOnce, 0),
            Event::Incoming(Packet::PingResp),
            publish("c", QoS::AtLeastOnce, 8),
            publish("d", QoS::AtMostOnce, 0),
        ]);
        let mut events = EventLoop::V4(Box::new(inner));
        let after = events.take_buffered_after_failure();
        assert_eq!(after.qos1_dropped, 2);
        let topics: Vec<&[u8]> = after.qos0.iter().map(|m| &m.topic[..]).collect();
        assert_eq!(
            topics,
            [b"b".as_slice(), b"d".as_slice()],
            "in the order read"
        );
        assert!(after.qos0.iter().all(|m| m.ack.qos == 0));
        assert!(
            !events.has_buffered(),
            "nothing left for the next connection"
        );
    }

    #[test]
    fn tls_errors_say_what_to_do() {
        for (error, hint) in [
            (
                "TLS: I/O: invalid peer certificate: UnknownIssuer",
                "ca_file",
            ),
            (
                "invalid peer certificate: NotValidForName",
                "subjectAltName",
            ),
            ("received fatal alert: CertificateRequired", "client_cert"),
        ] {
            let said = explain(error.to_string());
            assert!(said.starts_with(error) && said.contains(hint), "{said}");
        }
        assert_eq!(explain("connection refused".into()), "connection refused");
    }
}
