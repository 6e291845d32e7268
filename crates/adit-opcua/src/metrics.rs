//! OPC UA collector metrics. Labels: the device (connection) id from the
//! config and fixed reason names; never node ids or error text.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct OpcuaMetrics {
    notifications: IntCounterVec,
    publishes: IntCounterVec,
    connected: IntGaugeVec,
    reconnects: IntCounterVec,
    rebuilds: IntCounterVec,
    items_failed: IntGaugeVec,
    refreshed: IntCounterVec,
    cert_days: IntGaugeVec,
    dropped: IntCounterVec,
}

/// The metrics of one connection, resolved once.
#[derive(Clone)]
pub struct ConnectionMetrics {
    /// Data values received (subscriptions and reads).
    pub notifications: IntCounter,
    /// Publish responses (data or keep-alive).
    pub publishes: IntCounter,
    pub connected: IntGauge,
    /// Sessions the library re-established (after which adit re-triggers
    /// publishing: the async-opcua publish trap).
    pub reconnects: IntCounter,
    pub rebuild_silent: IntCounter,
    pub rebuild_failed: IntCounter,
    pub rebuild_namespaces: IntCounter,
    /// Points whose monitored item or read the server refused.
    pub items_failed: IntGauge,
    /// Unchanged values confirmed by a live subscription.
    pub refreshed: IntCounter,
    pub own_cert_days: IntGauge,
    pub server_cert_days: IntGauge,
    /// Notifications dropped because the pending buffer was full.
    pub dropped: IntCounter,
    /// Values dropped because they came over a connection whose namespace
    /// indexes adit had not verified yet (see `Pending::verify`).
    pub dropped_unverified: IntCounter,
}

impl OpcuaMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            notifications: IntCounterVec::new(
                Opts::new(
                    "adit_opcua_notifications_total",
                    "OPC UA data values received (subscription notifications and read results), by connection.",
                ),
                &["device"],
            )?,
            publishes: IntCounterVec::new(
                Opts::new(
                    "adit_opcua_publishes_total",
                    "OPC UA publish responses (with data or keep-alive), by connection.",
                ),
                &["device"],
            )?,
            connected: IntGaugeVec::new(
                Opts::new("adit_opcua_connected", "1 while the OPC UA session is up."),
                &["device"],
            )?,
            reconnects: IntCounterVec::new(
                Opts::new(
                    "adit_opcua_reconnects_total",
                    "Sessions re-established by the client library (publishing re-triggered each time).",
                ),
                &["device"],
            )?,
            rebuilds: IntCounterVec::new(
                Opts::new(
                    "adit_opcua_rebuilds_total",
                    "Whole clients rebuilt, by reason: silent (no publish within the liveness bound), failed (connect or session loop failed), namespaces (indexes changed on reconnect).",
                ),
                &["device", "reason"],
            )?,
            items_failed: IntGaugeVec::new(
                Opts::new(
                    "adit_opcua_items_failed",
                    "Points whose monitored item or read the server refused (e.g. BadNodeIdUnknown); retried every 30 s.",
                ),
                &["device"],
            )?,
            refreshed: IntCounterVec::new(
                Opts::new(
                    "adit_opcua_refreshed_total",
                    "Unchanged values re-confirmed by a live subscription (so a constant value does not go stale).",
                ),
                &["device"],
            )?,
            cert_days: IntGaugeVec::new(
                Opts::new(
                    "adit_opcua_certificate_expiry_days",
                    "Days until a certificate expires: which = own (adit's application certificate) or server.",
                ),
                &["device", "which"],
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "adit_opcua_dropped_total",
                    "Values dropped, by reason: full (the collector's pending buffer was full), unverified (they came over a reconnected session before adit checked its namespace indexes: they may belong to other nodes).",
                ),
                &["device", "reason"],
            )?,
        };
        registry.register(Box::new(m.notifications.clone()))?;
        registry.register(Box::new(m.publishes.clone()))?;
        registry.register(Box::new(m.connected.clone()))?;
        registry.register(Box::new(m.reconnects.clone()))?;
        registry.register(Box::new(m.rebuilds.clone()))?;
        registry.register(Box::new(m.items_failed.clone()))?;
        registry.register(Box::new(m.refreshed.clone()))?;
        registry.register(Box::new(m.cert_days.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        Ok(m)
    }

    pub fn for_connection(&self, device: &str) -> ConnectionMetrics {
        ConnectionMetrics {
            notifications: self.notifications.with_label_values(&[device]),
            publishes: self.publishes.with_label_values(&[device]),
            connected: self.connected.with_label_values(&[device]),
            reconnects: self.reconnects.with_label_values(&[device]),
            rebuild_silent: self.rebuilds.with_label_values(&[device, "silent"]),
            rebuild_failed: self.rebuilds.with_label_values(&[device, "failed"]),
            rebuild_namespaces: self.rebuilds.with_label_values(&[device, "namespaces"]),
            items_failed: self.items_failed.with_label_values(&[device]),
            refreshed: self.refreshed.with_label_values(&[device]),
            own_cert_days: self.cert_days.with_label_values(&[device, "own"]),
            server_cert_days: self.cert_days.with_label_values(&[device, "server"]),
            dropped: self.dropped.with_label_values(&[device, "full"]),
            dropped_unverified: self.dropped.with_label_values(&[device, "unverified"]),
        }
    }
}
