//! MQTT collector metrics. Labels: the device (connection) id from the
//! config and fixed reason names; never topics, point ids or error text.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::reject::Reject;

#[derive(Clone)]
pub struct MqttMetrics {
    messages: IntCounterVec,
    rejected: IntCounterVec,
    acks: IntCounterVec,
    connected: IntGaugeVec,
    subscribed: IntGaugeVec,
    connects: IntCounterVec,
    resubscribes: IntCounterVec,
    rebirths: IntCounterVec,
    redelivered: IntCounterVec,
}

/// The metrics of one connection, resolved once.
#[derive(Clone)]
pub struct ConnectionMetrics {
    pub messages: IntCounter,
    pub rejected: Vec<IntCounter>,
    pub acked: IntCounter,
    /// Not acknowledged (durability unknown): the broker redelivers.
    pub ack_withheld: IntCounter,
    pub connected: IntGauge,
    /// 1 once the broker confirmed our subscriptions on this connection.
    pub subscribed: IntGauge,
    pub connect_ok: IntCounter,
    pub connect_failed: IntCounter,
    pub resubscribe_session_lost: IntCounter,
    pub resubscribe_silence: IntCounter,
    pub rebirths: IntCounter,
    pub redelivered: IntCounter,
}

impl MqttMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            messages: IntCounterVec::new(
                Opts::new("adit_mqtt_messages_total", "MQTT messages received, by connection."),
                &["device"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "adit_mqtt_rejected_total",
                    "Problems with received MQTT messages by connection and reason (malformed_json, not_a_number, unknown_alias, …); each message is still acknowledged.",
                ),
                &["device", "reason"],
            )?,
            acks: IntCounterVec::new(
                Opts::new(
                    "adit_mqtt_acks_total",
                    "QoS 1 acknowledgements by outcome: sent (readings durable or settled), withheld (durability unknown: the broker redelivers).",
                ),
                &["device", "outcome"],
            )?,
            connected: IntGaugeVec::new(
                Opts::new("adit_mqtt_connected", "1 while the broker connection is up."),
                &["device"],
            )?,
            subscribed: IntGaugeVec::new(
                Opts::new(
                    "adit_mqtt_subscribed",
                    "1 while the broker has confirmed this connection's subscriptions (SUBACK, or a session it kept).",
                ),
                &["device"],
            )?,
            connects: IntCounterVec::new(
                Opts::new("adit_mqtt_connects_total", "Broker connection attempts by outcome (ok, failed)."),
                &["device", "outcome"],
            )?,
            resubscribes: IntCounterVec::new(
                Opts::new(
                    "adit_mqtt_resubscribes_total",
                    "Subscriptions sent again, by reason: session_lost (the broker forgot the session), silence (nothing within expect_every).",
                ),
                &["device", "reason"],
            )?,
            rebirths: IntCounterVec::new(
                Opts::new("adit_mqtt_rebirth_requests_total", "Sparkplug rebirth requests (NCMD) sent."),
                &["device"],
            )?,
            redelivered: IntCounterVec::new(
                Opts::new("adit_mqtt_redelivered_total", "Messages the broker marked as redeliveries (DUP)."),
                &["device"],
            )?,
        };
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.acks.clone()))?;
        registry.register(Box::new(m.connected.clone()))?;
        registry.register(Box::new(m.subscribed.clone()))?;
        registry.register(Box::new(m.connects.clone()))?;
        registry.register(Box::new(m.resubscribes.clone()))?;
        registry.register(Box::new(m.rebirths.clone()))?;
        registry.register(Box::new(m.redelivered.clone()))?;
        Ok(m)
    }

    pub fn for_connection(&self, device: &str) -> ConnectionMetrics {
        ConnectionMetrics {
            messages: self.messages.with_label_values(&[device]),
            rejected: Reject::ALL
                .iter()
                .map(|r| self.rejected.with_label_values(&[device, r.name()]))
                .collect(),
            acked: self.acks.with_label_values(&[device, "sent"]),
            ack_withheld: self.acks.with_label_values(&[device, "withheld"]),
            connected: self.connected.with_label_values(&[device]),
            subscribed: self.subscribed.with_label_values(&[device]),
            connect_ok: self.connects.with_label_values(&[device, "ok"]),
            connect_failed: self.connects.with_label_values(&[device, "failed"]),
            resubscribe_session_lost: self
                .resubscribes
                .with_label_values(&[device, "session_lost"]),
            resubscribe_silence: self.resubscribes.with_label_values(&[device, "silence"]),
            rebirths: self.rebirths.with_label_values(&[device]),
            redelivered: self.redelivered.with_label_values(&[device]),
        }
    }
}

impl ConnectionMetrics {
    pub fn reject(&self, r: Reject) {
        if let Some(c) = self.rejected.get(r.index()) {
            c.inc();
        }
    }
}
