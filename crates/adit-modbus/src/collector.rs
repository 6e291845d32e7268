//! The Modbus collector: one task per connection (a "bus"), polling the
//! devices behind it — one device for a plain Modbus TCP endpoint, several
//! unit ids behind a gateway, several slaves on a serial line.
//!
//! Invariants (tokio-modbus has no timeout and no reconnect, and a context is
//! poisoned after a timeout — see shared/dependency-notes.md):
//! - one request in flight per connection, with `inter_frame_delay` of silence
//!   before each (RTU: at least 3.5 character times);
//! - every connect and every request is wrapped in the device's timeout;
//! - after a timeout or any transport/protocol error the connection is dropped
//!   and reopened before the next request; the failed read is retried up to
//!   `retries` times on the fresh connection;
//! - a failed *connect* delays the next attempt by a jittered, exponentially
//!   growing backoff (`reconnect_min` … `reconnect_max`), reset by the first
//!   good connect; polls due meanwhile mark their points `Bad(CommFailure)`
//!   without I/O;
//! - each device has a circuit breaker: after `breaker_failures` failed polls
//!   it is skipped (points `Bad(CommFailure)`, no I/O) until a jittered probe
//!   period passes, so a dead unit costs its neighbours at most one timeout
//!   per probe period;
//! - an exception response marks only the points of that read
//!   `Bad(DeviceException(code))`; the link stays up;
//! - each point group (device × interval) has a fixed-rate schedule: an
//!   overrun skips missed slots rather than bursting, and lateness is measured;
//! - by default (`poll_phase = "aligned"`) the schedule sits on whole
//!   multiples of the interval on the wall clock (computed once, then kept on
//!   the monotonic clock), so devices that share an interval poll together:
//!   the runtime wakes once for all of them, and their readings reach the
//!   spool and the databases as one batch (one record, one fsync, one
//!   request) instead of one per device.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use adit_audit::Audit;
use adit_config::{DeviceConfig, ModbusSettings, PollPhase};
use adit_core::schedule::aligned_phase;
use adit_core::{Backoff, PointId, Quality, Reading, Reason, Timestamp};
use adit_source::{Source, SourceContext, SourceError, SourceFuture};
use tokio::time::{sleep, sleep_until, Instant};
use tokio_modbus::client::Context;
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::Slave;

use crate::breaker::{Admission, Breaker};
use crate::endpoint::{open, Endpoint};
use crate::metrics::DeviceMetrics;
use crate::plan::{plan_reads, PlanError, PlannedRead, PointSpan};
use crate::poll::{decode_clock, decode_read, mark_read, stamp_with_device_clock, DecodePoint};
use crate::read::{read_once, Outcome};

/// Points of one device polled on one interval, and the reads that cover them.
#[derive(Debug)]
pub struct PollGroup {
    pub interval: Duration,
    pub reads: Vec<PlannedRead>,
    pub points: usize,
}

/// A device: its config, point ids (in the config's point order), planned
/// reads per interval, and metric handles.
pub struct ModbusDevice {
    /// The device's settings, without its points: `decode`, `ids` and
    /// `groups` hold all that polling needs of them (a site's points were
    /// otherwise kept twice for as long as adit runs).
    pub config: DeviceConfig,
    /// The Modbus part of `config`.
    pub modbus: ModbusSettings,
    /// How to decode each point (in the config's point order).
    pub decode: Vec<DecodePoint>,
    pub ids: Vec<PointId>,
    pub groups: Vec<PollGroup>,
    /// The read of the device's clock registers, issued after each group's
    /// reads when the device has `[device.clock]`.
    pub clock_read: Option<PlannedRead>,
    pub metrics: DeviceMetrics,
}

impl ModbusDevice {
    pub fn new(
        mut config: DeviceConfig,
        ids: Vec<PointId>,
        metrics: DeviceMetrics,
    ) -> Result<Self, PlanError> {
        let modbus = config.modbus().cloned().ok_or(PlanError::NotModbus)?;
        let decode = config
            .points
            .iter()
            .map(DecodePoint::of)
            .collect::<Option<Vec<_>>>()
            .ok_or(PlanError::NotModbus)?;
        let mut intervals: Vec<Duration> = config.points.iter().map(|p| p.interval).collect();
        intervals.sort_unstable();
        intervals.dedup();
        let mut groups = Vec::with_capacity(intervals.len());
        for interval in intervals {
            let members: Vec<usize> = (0..config.points.len())
                .filter(|&i| config.points[i].interval == interval)
                .collect();
            let spans: Vec<PointSpan> = members
                .iter()
                .filter_map(|&i| {
                    let p = config.points[i].modbus()?;
                    Some(PointSpan {
                        table: p.table,
                        address: p.address,
                        width: p.width(),
                    })
                })
                .collect();
            let mut reads = plan_reads(
                &spans,
                modbus.max_registers_per_read,
                modbus.max_gap,
                &modbus.no_read_ranges,
            )?;
            // Indexes from the planner are into `members`; make them device-wide.
            for read in &mut reads {
                for (index, _) in &mut read.points {
                    *index = members[*index];
                }
            }
            groups.push(PollGroup {
                interval,
                reads,
                points: members.len(),
            });
        }
        let clock_read = modbus.clock.map(|c| PlannedRead {
            table: c.table,
            start: c.address,
            count: c.data_type.register_count(),
            points: Vec::new(),
        });
        config.points = Vec::new();
        Ok(Self {
            config,
            modbus,
            decode,
            ids,
            groups,
            clock_read,
            metrics,
        })
    }
}

/// One connection and the devices polled over it.
pub struct ModbusBus {
    pub endpoint: Endpoint,
    pub devices: Vec<ModbusDevice>,
    /// Connection up/down transitions are audited.
    pub audit: Audit,
}

impl ModbusBus {
    /// Groups devices by endpoint, keeping config order.
    pub fn group(devices: Vec<ModbusDevice>, audit: &Audit) -> Vec<ModbusBus> {
        let mut buses: Vec<ModbusBus> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for device in devices {
            let endpoint = Endpoint::of(device.config.protocol, &device.modbus);
            let key = endpoint.describe();
            if let Some(&i) = index.get(&key) {
                buses[i].devices.push(device);
            } else {
                index.insert(key, buses.len());
                buses.push(ModbusBus {
                    endpoint,
                    devices: vec![device],
                    audit: audit.clone(),
                });
            }
        }
        buses
    }

    fn name(&self) -> String {
        match self.devices.as_slice() {
            [only] => only.config.id.clone(),
            _ => self.endpoint.describe(),
        }
    }
}

pub struct ModbusCollector {
    bus: Arc<ModbusBus>,
    name: String,
}

impl ModbusCollector {
    pub fn new(bus: Arc<ModbusBus>) -> Self {
        let name = bus.name();
        Self { bus, name }
    }
}

impl Source for ModbusCollector {
    fn name(&self) -> &str {
        &self.name
    }

    fn protocol(&self) -> &'static str {
        match self.bus.endpoint {
            Endpoint::Tcp(_) => "modbus_tcp",
            Endpoint::RtuOverTcp(_) => "modbus_rtu_over_tcp",
            Endpoint::Rtu(_) => "modbus_rtu",
        }
    }

    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> SourceFuture<'a> {
        Box::pin(bus_loop(self.bus.clone(), ctx))
    }
}

/// The connection of a bus and when it may next be (re)opened.
struct Link {
    ctx: Option<Context>,
    /// What the audit log last heard: `Some(true)` up, `Some(false)` down.
    audited_up: Option<bool>,
    not_before: Instant,
    backoff: Backoff,
}

impl Link {
    fn connect_failed(&mut self) -> Duration {
        let wait = self.backoff.next_delay();
        self.not_before = Instant::now() + wait;
        wait
    }
    fn connected(&mut self, ctx: Context) {
        self.ctx = Some(ctx);
        self.backoff.reset();
    }
}

/// How one poll of one group went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PollResult {
    /// The device answered every read (data or exception).
    Answered,
    /// A read failed on the link after its retries.
    Failed,
    /// No connection could be had; nothing was sent to the device.
    BusDown,
}

async fn bus_loop(bus: Arc<ModbusBus>, ctx: &SourceContext) -> Result<(), SourceError> {
    let Some(first) = bus.devices.first() else {
        ctx.shutdown.cancelled().await;
        return Ok(());
    };
    let start = Instant::now();
    let since_epoch = adit_core::schedule::since_epoch();
    let mut due: Vec<Vec<Instant>> = bus
        .devices
        .iter()
        .map(|d| {
            d.groups
                .iter()
                .map(|g| {
                    start
                        + match d.modbus.poll_phase {
                            PollPhase::Aligned => aligned_phase(g.interval, since_epoch),
                            PollPhase::Spread => poll_phase(&d.config.id, g.interval),
                        }
                })
                .collect()
        })
        .collect();
    let mut breakers: Vec<Breaker> = bus
        .devices
        .iter()
        .map(|d| {
            Breaker::new(
                d.modbus.breaker_failures,
                d.config.reconnect_min,
                d.config.reconnect_max,
            )
        })
        .collect();
    let mut link = Link {
        ctx: None,
        audited_up: None,
        not_before: start,
        backoff: Backoff::new(first.config.reconnect_min, first.config.reconnect_max),
    };
    for d in &bus.devices {
        d.metrics.up.set(0);
    }

    loop {
        let Some((d, g, when)) = next_due(&due) else {
            ctx.shutdown.cancelled().await;
            return Ok(());
        };
        tokio::select! {
            () = sleep_until(when) => {}
            () = ctx.shutdown.cancelled() => return Ok(()),
        }
        let device = &bus.devices[d];
        let group = &device.groups[g];
        let m = &device.metrics;
        let started = Instant::now();
        m.poll_lateness_seconds
            .observe(started.saturating_duration_since(when).as_secs_f64());
        due[d][g] = next_slot(when, group.interval, started);

        let mut batch = Vec::with_capacity(group.points);
        if breakers[d].admit(started) == Admission::Deny {
            m.skipped_breaker.inc();
            mark_group(
                device,
                group,
                0,
                Quality::Bad(Reason::CommFailure),
                &mut batch,
            );
        } else {
            let result = tokio::select! {
                r = poll_group(&bus, device, group, &mut link, &mut batch) => r,
                () = ctx.shutdown.cancelled() => return Ok(()),
            };
            match result {
                PollResult::Answered => {
                    breakers[d].success();
                    m.up.set(1);
                }
                PollResult::Failed => {
                    m.up.set(0);
                    if breakers[d].failure(Instant::now(), fastrand::f64()) {
                        tracing::warn!(device = %device.config.id, failures = device.modbus.breaker_failures, "circuit breaker open: device skipped until a probe succeeds");
                    }
                }
                PollResult::BusDown => {
                    m.up.set(0);
                    m.skipped_bus_down.inc();
                }
            }
            m.breaker_open.set(i64::from(breakers[d].is_open()));
        }
        ctx.out
            .send(batch)
            .await
            .map_err(|_| SourceError::PipelineClosed)?;
    }
}

fn next_due(due: &[Vec<Instant>]) -> Option<(usize, usize, Instant)> {
    due.iter()
        .enumerate()
        .flat_map(|(d, groups)| groups.iter().enumerate().map(move |(g, t)| (d, g, *t)))
        .min_by_key(|&(_, _, t)| t)
}

fn mark_group(
    device: &ModbusDevice,
    group: &PollGroup,
    from_read: usize,
    quality: Quality,
    batch: &mut Vec<Reading>,
) {
    let ts = Timestamp::now();
    for read in group.reads.iter().skip(from_read) {
        mark_read(read, &device.ids, quality, ts, batch);
    }
}

/// Exceptions 0x0A (gateway path unavailable) and 0x0B (gateway target
/// device failed to respond): the device behind a gateway is not there.
pub fn is_gateway_failure(code: u8) -> bool {
    matches!(code, 0x0A | 0x0B)
}

/// Records a connection transition in the audit log, once per change.
fn audit_link(bus: &ModbusBus, link: &mut Link, up: bool, cause: &str) {
    if link.audited_up == Some(up) {
        return;
    }
    link.audited_up = Some(up);
    let devices: Vec<&str> = bus.devices.iter().map(|d| d.config.id.as_str()).collect();
    let kind = if up {
        "device_connect"
    } else {
        "device_disconnect"
    };
    bus.audit.record(kind, serde_json::json!({ "endpoint": bus.endpoint.describe(), "devices": devices, "cause": cause }));
}

/// Issues the reads of one group, reconnecting and retrying as configured.
async fn poll_group(
    bus: &ModbusBus,
    device: &ModbusDevice,
    group: &PollGroup,
    link: &mut Link,
    batch: &mut Vec<Reading>,
) -> PollResult {
    let endpoint = &bus.endpoint;
    let cfg = &device.config;
    let mb = &device.modbus;
    let m = &device.metrics;
    let first_reading = batch.len();
    let mut next = 0;
    let mut retries_left = mb.retries;
    while next < group.reads.len() {
        if link.ctx.is_none() {
            if Instant::now() < link.not_before {
                mark_group(
                    device,
                    group,
                    next,
                    Quality::Bad(Reason::CommFailure),
                    batch,
                );
                return PollResult::BusDown;
            }
            match open(endpoint, mb.unit_id, cfg.timeout).await {
                Ok(c) => {
                    m.connect_ok.inc();
                    tracing::info!(device = %cfg.id, endpoint = %endpoint.describe(), "connected");
                    link.connected(c);
                    audit_link(bus, link, true, "connected");
                }
                Err(error) => {
                    m.connect_failed.inc();
                    let wait = link.connect_failed();
                    audit_link(bus, link, false, "connect_failed");
                    tracing::warn!(device = %cfg.id, endpoint = %endpoint.describe(), %error, retry_in_ms = wait.as_millis() as u64, "connect failed");
                    mark_group(
                        device,
                        group,
                        next,
                        Quality::Bad(Reason::CommFailure),
                        batch,
                    );
                    return PollResult::BusDown;
                }
            }
        }
        let Some(c) = link.ctx.as_mut() else {
            return PollResult::BusDown;
        };
        c.set_slave(Slave(mb.unit_id));
        if !mb.inter_frame_delay.is_zero() {
            sleep(mb.inter_frame_delay).await;
        }
        let read = &group.reads[next];
        let started = Instant::now();
        let outcome = read_once(c, read, cfg.timeout).await;
        m.request_seconds.observe(started.elapsed().as_secs_f64());
        let ts = Timestamp::now();
        if let Some(data) = outcome.data() {
            m.ok.inc();
            decode_read(read, data, &device.decode, &device.ids, ts, batch);
            retries_left = mb.retries;
            next += 1;
            continue;
        }
        match outcome {
            Outcome::Data(_) | Outcome::Bits(_) => {}
            Outcome::Exception(code) if is_gateway_failure(code) => {
                // A gateway answering for a slave that is not there: every
                // read of this group would wait out the gateway's own
                // timeout on the shared connection. The device is down
                // (breaker, `up`); the gateway's link is sound and kept.
                m.exception.inc();
                tracing::debug!(device = %cfg.id, code, "gateway: the device behind it does not answer");
                mark_group(
                    device,
                    group,
                    next,
                    Quality::Bad(Reason::DeviceException(code)),
                    batch,
                );
                return PollResult::Failed;
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
            Outcome::LinkFailed(kind) => {
                // The connection may hold a late reply: it is poisoned. Drop it.
                link.ctx = None;
                if kind == "timeout" {
                    m.timeout.inc();
                } else {
                    m.link_error.inc();
                }
                if retries_left > 0 {
                    retries_left -= 1;
                    tracing::debug!(device = %cfg.id, cause = kind, "read failed; retrying on a fresh connection");
                    continue;
                }
                tracing::warn!(device = %cfg.id, endpoint = %endpoint.describe(), cause = kind, "read failed; connection dropped");
                audit_link(bus, link, false, kind);
                mark_group(
                    device,
                    group,
                    next,
                    Quality::Bad(Reason::CommFailure),
                    batch,
                );
                return PollResult::Failed;
            }
        }
        retries_left = mb.retries;
        next += 1;
    }
    if let (Some(read), Some(clock), Some(c)) = (&device.clock_read, &mb.clock, link.ctx.as_mut()) {
        // A request like any other: its unit, and the line's silence first.
        c.set_slave(Slave(mb.unit_id));
        if !mb.inter_frame_delay.is_zero() {
            sleep(mb.inter_frame_delay).await;
        }
        let poisoned =
            !read_device_clock(c, read, clock, device, &mut batch[first_reading..]).await;
        if poisoned {
            // As after any failed read: a late reply may still come. Rebuild.
            link.ctx = None;
        }
    }
    PollResult::Answered
}

/// Reads the device's clock right after its values and stamps them with it.
/// If the clock cannot be read, the readings keep adit's receive time (the
/// failed request is counted like any other). Returns false when the link
/// failed and the connection must be dropped.
async fn read_device_clock(
    c: &mut tokio_modbus::client::Context,
    read: &PlannedRead,
    clock: &adit_core::modbus::DeviceClock,
    device: &ModbusDevice,
    readings: &mut [Reading],
) -> bool {
    let m = &device.metrics;
    let outcome = read_once(c, read, device.config.timeout).await;
    match &outcome {
        Outcome::Data(words) => {
            m.ok.inc();
            match decode_clock(words, clock) {
                Some(ts) => stamp_with_device_clock(readings, ts),
                None => {
                    tracing::debug!(device = %device.config.id, "device clock unreadable; receive time kept");
                }
            }
        }
        Outcome::Bits(_) => {}
        Outcome::Exception(code) => {
            m.exception.inc();
            tracing::debug!(device = %device.config.id, code, "device clock read refused; receive time kept");
        }
        Outcome::LinkFailed(kind) => {
            if *kind == "timeout" {
                m.timeout.inc();
            } else {
                m.link_error.inc();
            }
            tracing::debug!(device = %device.config.id, cause = kind, "device clock read failed; receive time kept");
            return false;
        }
    }
    true
}

/// Where in its interval a device's schedule starts (`poll_phase =
/// "spread"`): a fixed fraction of the
/// interval derived from the device id (FNV-1a, then mixed). Devices that share an
/// interval are spread over it instead of all polling at the same instant,
/// which turns a burst of every reading at once into a steady flow (lower
/// latency at the sinks, no thundering herd on shared gateways), and the
/// phase is the same on every start.
pub fn poll_phase(device_id: &str, interval: Duration) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device_id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's high bits barely move for ids that differ in one character:
    // finish with the murmur3 mixer.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    interval.mul_f64((hash >> 11) as f64 / (1u64 << 53) as f64)
}

/// The first slot of the fixed-rate schedule (`planned + k × interval`, k ≥ 1)
/// that is not in the past.
pub fn next_slot(planned: Instant, interval: Duration, now: Instant) -> Instant {
    let next = planned + interval;
    if next > now {
        return next;
    }
    // In nanoseconds, without a cast that truncates or a product that
    // overflows (a tiny interval after a very long stall).
    let period = interval.as_nanos().max(1);
    let slots = now.saturating_duration_since(planned).as_nanos() / period + 1;
    u64::try_from(slots.saturating_mul(period))
        .ok()
        .and_then(|ns| planned.checked_add(Duration::from_nanos(ns)))
        .unwrap_or(now + interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_phases_are_stable_within_the_interval_and_spread_devices() {
        let interval = Duration::from_secs(1);
        assert_eq!(poll_phase("plc1", interval), poll_phase("plc1", interval));
        let mut deciles = [0u32; 10];
        for i in 0..200 {
            let phase = poll_phase(&format!("d{i}"), interval);
            assert!(phase < interval);
            deciles[(phase.as_secs_f64() * 10.0) as usize] += 1;
        }
        assert!(
            deciles.iter().all(|&n| n >= 8),
            "200 devices spread over every tenth of the interval: {deciles:?}"
        );
    }

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

    #[test]
    fn the_earliest_group_of_any_device_is_due_first() {
        let t0 = Instant::now();
        let due = vec![
            vec![t0 + Duration::from_secs(2), t0 + Duration::from_secs(1)],
            vec![t0 + Duration::from_millis(1500)],
        ];
        assert_eq!(next_due(&due), Some((0, 1, t0 + Duration::from_secs(1))));
        assert_eq!(next_due(&[]), None);
    }
}
