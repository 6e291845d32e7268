//! The Modbus TCP collector: one task per device, polling its planned reads on
//! the device's interval.
//!
//! Invariants (tokio-modbus has no timeout and no reconnect, and a context is
//! poisoned after a timeout — see shared/dependency-notes.md):
//! - every connect and every request is wrapped in the device's timeout;
//! - after a timeout or any transport/protocol error the context is dropped and
//!   a fresh connection is made after a jittered, exponentially growing backoff
//!   (`reconnect_min` … `reconnect_max`), reset by the first good connect;
//! - an exception response marks only the points of that read
//!   `Bad(DeviceException(code))`; the link stays up;
//! - link loss marks every point of the device not yet read in this poll
//!   `Bad(CommFailure)`, and every failed connect attempt does the same, so the
//!   history shows when adit did not know;
//! - the poll schedule is fixed-rate: a poll that overruns skips the missed
//!   slots rather than bursting, and lateness is measured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use adit_config::{DeviceConfig, Table};
use adit_core::{PointId, Quality, Reading, Reason, Timestamp};
use adit_pipeline::{Source, SourceContext, SourceError, SourceFuture};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::Slave;

use crate::metrics::DeviceMetrics;
use crate::plan::{plan_reads, PlanError, PlannedRead, PointSpan};
use crate::poll::{decode_read, mark_read, ReadData};

/// Everything a device's collector needs, shared by its restarts.
pub struct ModbusDevice {
    pub config: DeviceConfig,
    /// Point ids, parallel to `config.points`.
    pub ids: Vec<PointId>,
    pub plan: Vec<PlannedRead>,
    pub metrics: DeviceMetrics,
}

impl ModbusDevice {
    pub fn new(
        config: DeviceConfig,
        ids: Vec<PointId>,
        metrics: DeviceMetrics,
    ) -> Result<Self, PlanError> {
        let spans: Vec<PointSpan> = config
            .points
            .iter()
            .map(|p| PointSpan {
                table: p.table,
                address: p.address,
                width: p.width(),
            })
            .collect();
        let plan = plan_reads(&spans, config.max_registers_per_read, config.max_gap)?;
        Ok(Self {
            config,
            ids,
            plan,
            metrics,
        })
    }
}

pub struct ModbusCollector {
    device: Arc<ModbusDevice>,
}

impl ModbusCollector {
    pub fn new(device: Arc<ModbusDevice>) -> Self {
        Self { device }
    }
}

impl Source for ModbusCollector {
    fn name(&self) -> &str {
        &self.device.config.id
    }

    fn protocol(&self) -> &'static str {
        "modbus_tcp"
    }

    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> SourceFuture<'a> {
        Box::pin(poll_loop(self.device.clone(), ctx))
    }
}

enum Outcome {
    Data(Vec<u16>),
    Bits(Vec<bool>),
    Exception(u8),
    LinkFailed(&'static str),
}

async fn read_once(ctx: &mut Context, read: &PlannedRead, limit: Duration) -> Outcome {
    let call = async {
        match read.table {
            Table::Coil => ctx
                .read_coils(read.start, read.count)
                .await
                .map(|r| r.map(Outcome::Bits)),
            Table::DiscreteInput => ctx
                .read_discrete_inputs(read.start, read.count)
                .await
                .map(|r| r.map(Outcome::Bits)),
            Table::HoldingRegister => ctx
                .read_holding_registers(read.start, read.count)
                .await
                .map(|r| r.map(Outcome::Data)),
            Table::InputRegister => ctx
                .read_input_registers(read.start, read.count)
                .await
                .map(|r| r.map(Outcome::Data)),
        }
    };
    match timeout(limit, call).await {
        Ok(Ok(Ok(outcome))) => outcome,
        Ok(Ok(Err(exception))) => Outcome::Exception(u8::from(exception)),
        Ok(Err(_)) => Outcome::LinkFailed("link_error"),
        Err(_) => Outcome::LinkFailed("timeout"),
    }
}

async fn connect(address: &str, unit: u8, limit: Duration) -> Result<Context, String> {
    let attempt = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address)
            .await
            .map_err(|e| format!("resolve: {e}"))?
            .collect();
        let mut last = String::from("no address");
        for addr in addrs {
            match tokio_modbus::client::tcp::connect_slave(addr, Slave(unit)).await {
                Ok(ctx) => return Ok(ctx),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(last)
    };
    timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("connect timed out after {limit:?}")))
}

fn mark_all(device: &ModbusDevice, quality: Quality, ts: Timestamp) -> Vec<Reading> {
    device
        .ids
        .iter()
        .map(|&id| Reading::without_value(id, quality, ts))
        .collect()
}

async fn poll_loop(device: Arc<ModbusDevice>, ctx: &SourceContext) -> Result<(), SourceError> {
    let cfg = &device.config;
    let m = &device.metrics;
    let mut link: Option<Context> = None;
    let mut backoff = cfg.reconnect_min;
    let mut next_poll = Instant::now();
    let mut buffer_capacity = device.ids.len();
    m.up.set(0);

    loop {
        tokio::select! {
            () = sleep_until(next_poll) => {}
            () = ctx.shutdown.cancelled() => return Ok(()),
        }
        let planned = next_poll;
        m.poll_lateness_seconds.observe(
            Instant::now()
                .saturating_duration_since(planned)
                .as_secs_f64(),
        );

        if link.is_none() {
            let connected = tokio::select! {
                r = connect(&cfg.address, cfg.unit_id, cfg.timeout) => r,
                () = ctx.shutdown.cancelled() => return Ok(()),
            };
            match connected {
                Ok(c) => {
                    m.connect_ok.inc();
                    m.up.set(1);
                    backoff = cfg.reconnect_min;
                    tracing::info!(device = %cfg.id, address = %cfg.address, "connected");
                    link = Some(c);
                }
                Err(error) => {
                    m.connect_failed.inc();
                    tracing::warn!(device = %cfg.id, address = %cfg.address, %error, retry_in_ms = backoff.as_millis() as u64, "connect failed");
                    let batch =
                        mark_all(&device, Quality::Bad(Reason::CommFailure), Timestamp::now());
                    ctx.out
                        .send(batch)
                        .await
                        .map_err(|_| SourceError::PipelineClosed)?;
                    next_poll = Instant::now() + adit_pipeline::sink::jitter(backoff);
                    backoff = (backoff * 2).min(cfg.reconnect_max);
                    continue;
                }
            }
        }

        let mut batch = Vec::with_capacity(buffer_capacity);
        let failed_at = match link.as_mut() {
            Some(c) => tokio::select! {
                failed = read_all(&device, c, &mut batch) => failed,
                () = ctx.shutdown.cancelled() => return Ok(()),
            },
            None => None,
        };
        if let Some((first_unread, kind)) = failed_at {
            // The context may hold a late reply: it is poisoned. Drop it.
            link = None;
            m.up.set(0);
            if kind == "timeout" {
                m.timeout.inc();
            } else {
                m.link_error.inc();
            }
            tracing::warn!(device = %cfg.id, cause = kind, "link lost; reconnecting");
            let ts = Timestamp::now();
            for read in &device.plan[first_unread..] {
                mark_read(
                    read,
                    &device.ids,
                    Quality::Bad(Reason::CommFailure),
                    ts,
                    &mut batch,
                );
            }
            next_poll = Instant::now() + adit_pipeline::sink::jitter(backoff);
            backoff = (backoff * 2).min(cfg.reconnect_max);
        } else {
            next_poll = next_slot(planned, cfg.poll_interval, Instant::now());
        }
        buffer_capacity = buffer_capacity.max(batch.len());
        ctx.out
            .send(batch)
            .await
            .map_err(|_| SourceError::PipelineClosed)?;
    }
}

/// Issues every planned read once, appending readings to `batch`. Returns the
/// index of the read where the link failed, and why, if it did.
async fn read_all(
    device: &ModbusDevice,
    c: &mut Context,
    batch: &mut Vec<Reading>,
) -> Option<(usize, &'static str)> {
    let cfg = &device.config;
    let m = &device.metrics;
    for (i, read) in device.plan.iter().enumerate() {
        let started = Instant::now();
        let outcome = read_once(c, read, cfg.timeout).await;
        m.request_seconds.observe(started.elapsed().as_secs_f64());
        let ts = Timestamp::now();
        match outcome {
            Outcome::Data(words) => {
                m.ok.inc();
                decode_read(
                    read,
                    ReadData::Words(&words),
                    &cfg.points,
                    &device.ids,
                    ts,
                    batch,
                );
            }
            Outcome::Bits(bits) => {
                m.ok.inc();
                decode_read(
                    read,
                    ReadData::Bits(&bits),
                    &cfg.points,
                    &device.ids,
                    ts,
                    batch,
                );
            }
            Outcome::Exception(code) => {
                m.exception.inc();
                tracing::debug!(device = %cfg.id, table = read.table.name(), start = read.start, count = read.count, code, "exception response");
                mark_read(
                    read,
                    &device.ids,
                    Quality::Bad(Reason::DeviceException(code)),
                    ts,
                    batch,
                );
            }
            Outcome::LinkFailed(kind) => return Some((i, kind)),
        }
    }
    None
}

/// The first slot of the fixed-rate schedule (`planned + k × interval`, k ≥ 1)
/// that is not in the past.
pub fn next_slot(planned: Instant, interval: Duration, now: Instant) -> Instant {
    let next = planned + interval;
    if next > now {
        return next;
    }
    let behind = now.saturating_duration_since(planned);
    let skipped = (behind.as_nanos() / interval.as_nanos().max(1)) as u32;
    planned + interval * (skipped + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overrun_poll_skips_missed_slots_instead_of_bursting() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(next_slot(t0, s, t0 + Duration::from_millis(10)), t0 + s);
        assert_eq!(
            next_slot(t0, s, t0 + Duration::from_millis(3500)),
            t0 + 4 * s
        );
        assert_eq!(next_slot(t0, s, t0 + 2 * s), t0 + 3 * s);
    }
}
