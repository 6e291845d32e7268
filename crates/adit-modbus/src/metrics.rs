//! Modbus collector metrics. The `device` label is bounded by the config; no
//! point ids and no raw error text appear in labels.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

#[derive(Clone)]
pub struct ModbusMetrics {
    requests: IntCounterVec,
    connects: IntCounterVec,
    request_seconds: HistogramVec,
    poll_lateness_seconds: HistogramVec,
    device_up: IntGaugeVec,
    breaker_open: IntGaugeVec,
    skipped: IntCounterVec,
}

impl ModbusMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "adit_modbus_requests_total",
                "Modbus read requests by device and outcome (ok, exception, timeout, link_error).",
            ),
            &["device", "outcome"],
        )?;
        let connects = IntCounterVec::new(
            Opts::new(
                "adit_modbus_connects_total",
                "Modbus connection attempts by device and outcome (ok, failed).",
            ),
            &["device", "outcome"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "adit_modbus_request_seconds",
                "Round trip of one Modbus read request.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["device"],
        )?;
        let poll_lateness_seconds = HistogramVec::new(
            HistogramOpts::new(
                "adit_modbus_poll_lateness_seconds",
                "How late a poll started compared with its schedule.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
            &["device"],
        )?;
        let device_up = IntGaugeVec::new(
            Opts::new(
                "adit_modbus_device_up",
                "1 while the device's link is up, else 0.",
            ),
            &["device"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(connects.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(poll_lateness_seconds.clone()))?;
        registry.register(Box::new(device_up.clone()))?;
        let breaker_open = IntGaugeVec::new(
            Opts::new(
                "adit_modbus_breaker_open",
                "1 while the device's circuit breaker is open (polls skipped), else 0.",
            ),
            &["device"],
        )?;
        registry.register(Box::new(breaker_open.clone()))?;
        let skipped = IntCounterVec::new(
            Opts::new("adit_modbus_polls_skipped_total", "Polls not sent, by device and reason (breaker_open, connection_down); their points are marked bad(comm_failure)."),
            &["device", "reason"],
        )?;
        registry.register(Box::new(skipped.clone()))?;
        Ok(Self {
            requests,
            connects,
            request_seconds,
            poll_lateness_seconds,
            device_up,
            breaker_open,
            skipped,
        })
    }

    /// Handles for one device, resolved once so the poll loop does no lookups.
    pub fn for_device(&self, device: &str) -> DeviceMetrics {
        DeviceMetrics {
            ok: self.requests.with_label_values(&[device, "ok"]),
            exception: self.requests.with_label_values(&[device, "exception"]),
            timeout: self.requests.with_label_values(&[device, "timeout"]),
            link_error: self.requests.with_label_values(&[device, "link_error"]),
            connect_ok: self.connects.with_label_values(&[device, "ok"]),
            connect_failed: self.connects.with_label_values(&[device, "failed"]),
            request_seconds: self.request_seconds.with_label_values(&[device]),
            poll_lateness_seconds: self.poll_lateness_seconds.with_label_values(&[device]),
            up: self.device_up.with_label_values(&[device]),
            breaker_open: self.breaker_open.with_label_values(&[device]),
            skipped_breaker: self.skipped.with_label_values(&[device, "breaker_open"]),
            skipped_bus_down: self.skipped.with_label_values(&[device, "connection_down"]),
        }
    }
}

#[derive(Clone)]
pub struct DeviceMetrics {
    pub ok: IntCounter,
    pub exception: IntCounter,
    pub timeout: IntCounter,
    pub link_error: IntCounter,
    pub connect_ok: IntCounter,
    pub connect_failed: IntCounter,
    pub request_seconds: Histogram,
    pub poll_lateness_seconds: Histogram,
    pub up: IntGauge,
    pub breaker_open: IntGauge,
    pub skipped_breaker: IntCounter,
    pub skipped_bus_down: IntCounter,
}
