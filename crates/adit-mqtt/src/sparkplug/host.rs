//! The Sparkplug B host state machine, pure (time comes in as an argument).
//!
//! Invariants:
//! - a node's metrics are known only from its NBIRTH, a device's from its
//!   DBIRTH; data for a node that has not been born (or has died since)
//!   is refused and asks for a rebirth;
//! - every message of a born node but NDEATH carries `seq`, one more than
//!   the last (mod 256); a gap asks for a rebirth (the data is still used
//!   where its aliases are known);
//! - NDEATH counts only with the `bdSeq` of the current birth (an old
//!   death arriving late is ignored); it, DDEATH and a new NBIRTH without
//!   a death make the node's (device's) points Bad(CommFailure) with their
//!   last values kept (the points a new birth lists are born again at once);
//! - rebirth requests are at most one per node per [`REBIRTH_EVERY_MS`];
//! - state is bounded: at most [`MAX_NODES`] nodes (nodes never born are
//!   evicted first) and [`MAX_DEVICES_PER_NODE`] devices per node; names
//!   and aliases are bounded by the payload size of the births that made
//!   them.

use std::collections::HashMap;
use std::sync::Arc;

use adit_core::{Quality, Reason, Timestamp, Value};
use prost::Message as _;

use super::proto::{self, datatype, MetricValue, Payload, PropertyValueKind};
use crate::reject::Reject;

pub const REBIRTH_EVERY_MS: i64 = 5_000;
pub const MAX_NODES: usize = 10_000;
/// At most this many devices per node.
pub const MAX_DEVICES_PER_NODE: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    NBirth,
    NData,
    NDeath,
    DBirth,
    DData,
    DDeath,
    /// Commands and host STATE: not data, ignored by a host.
    Other,
}

/// `spBv1.0/{group}/{kind}/{node}[/{device}]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparkplugTopic<'a> {
    pub group: &'a str,
    pub kind: MessageKind,
    pub node: &'a str,
    pub device: Option<&'a str>,
}

impl<'a> SparkplugTopic<'a> {
    pub fn parse(topic: &'a str) -> Option<Self> {
        let mut it = topic.split('/');
        if it.next()? != "spBv1.0" {
            return None;
        }
        let group = it.next()?;
        if group == "STATE" {
            return Some(Self {
                group,
                kind: MessageKind::Other,
                node: "",
                device: None,
            });
        }
        let kind = match it.next()? {
            "NBIRTH" => MessageKind::NBirth,
            "NDATA" => MessageKind::NData,
            "NDEATH" => MessageKind::NDeath,
            "DBIRTH" => MessageKind::DBirth,
            "DDATA" => MessageKind::DData,
            "DDEATH" => MessageKind::DDeath,
            "NCMD" | "DCMD" => MessageKind::Other,
            _ => return None,
        };
        let node = it.next()?;
        let device = it.next();
        if it.next().is_some() || group.is_empty() || node.is_empty() {
            return None;
        }
        let device_kind = matches!(
            kind,
            MessageKind::DBirth | MessageKind::DData | MessageKind::DDeath
        );
        if device_kind != device.is_some() && kind != MessageKind::Other {
            return None;
        }
        Some(Self {
            group,
            kind,
            node,
            device,
        })
    }
}

/// One metric value as a reading-to-be.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub point: Arc<str>,
    pub value: Option<Value>,
    pub quality: Quality,
    pub ts: Timestamp,
    /// Made uncertain here (data after a sequence gap), not by the node.
    pub regraded: bool,
}

/// What one message produced.
#[derive(Debug, Default)]
pub struct HostOutput {
    pub samples: Vec<Sample>,
    /// Points whose node or device died: Bad(CommFailure), last values kept.
    pub dead: Vec<Arc<str>>,
    /// Ask the node for its births again (`NCMD` `Node Control/Rebirth`).
    pub rebirth: bool,
    /// Counted problems (the message itself may still have given samples).
    pub rejects: Vec<Reject>,
}

impl HostOutput {
    pub fn clear(&mut self) {
        self.samples.clear();
        self.dead.clear();
        self.rebirth = false;
        self.rejects.clear();
    }
}

#[derive(Clone, Debug)]
struct Known {
    point: Arc<str>,
    datatype: u32,
}

#[derive(Debug, Default)]
struct Metrics {
    by_alias: HashMap<u64, Known>,
    by_name: HashMap<String, Known>,
}

impl Metrics {
    fn points(&self) -> impl Iterator<Item = &Arc<str>> {
        self.by_name.values().map(|k| &k.point)
    }
}

#[derive(Debug, Default)]
struct Node {
    born: bool,
    /// A sequence gap since the last NBIRTH: a birth (QoS 0) may have been
    /// missed, and with it a new alias table. Data is `uncertain` until
    /// the rebirth asked for arrives.
    awaiting_rebirth: bool,
    bd_seq: Option<u64>,
    seq: Option<u8>,
    metrics: Metrics,
    devices: HashMap<String, Metrics>,
    last_rebirth_ms: Option<i64>,
}

/// Every Sparkplug node this connection has heard of.
#[derive(Debug, Default)]
pub struct Host {
    nodes: HashMap<(String, String), Node>,
}

/// The point id of a metric: `{group}/{node}[/{device}]/{metric}`, with
/// characters a point id may not hold replaced by `_`.
pub fn point_name(group: &str, node: &str, device: Option<&str>, metric: &str) -> Option<Arc<str>> {
    let mut s = String::with_capacity(group.len() + node.len() + metric.len() + 24);
    for part in [Some(group), Some(node), device, Some(metric)]
        .into_iter()
        .flatten()
    {
        if !s.is_empty() {
            s.push('/');
        }
        s.extend(part.chars().map(adit_core::mqtt::sanitize));
    }
    (s.len() <= 128).then(|| s.into())
}

impl Host {
    /// After our own link to the broker was lost, the nodes' points were
    /// marked Bad(CommFailure), and a node that reports by exception may not
    /// publish them again for hours: ask every born node for its births
    /// (rate-limited per node). Returns the NCMD topics to publish on.
    pub fn rebirth_all(&mut self, now: Timestamp) -> Vec<String> {
        let now_ms = now.as_micros().div_euclid(1000);
        let mut topics = Vec::new();
        for ((group, node_id), node) in &mut self.nodes {
            if !node.born {
                continue;
            }
            let mut out = HostOutput::default();
            request_rebirth(node, now_ms, &mut out);
            if out.rebirth {
                topics.push(format!("spBv1.0/{group}/NCMD/{node_id}"));
            }
        }
        topics
    }

    /// Handles one message of `topic` received at `now` (µs); fills `out`.
    pub fn handle(
        &mut self,
        topic: &SparkplugTopic<'_>,
        payload: &[u8],
        now: Timestamp,
        out: &mut HostOutput,
    ) {
        out.clear();
        if topic.kind == MessageKind::Other {
            return;
        }
        let Ok(payload) = Payload::decode(payload) else {
            out.rejects.push(Reject::SparkplugDecode);
            return;
        };
        let key = (topic.group.to_string(), topic.node.to_string());
        if !self.nodes.contains_key(&key) && self.nodes.len() >= MAX_NODES {
            // Nodes that never were born hold only a rebirth timer: make room
            // from them first, so junk node names cannot lock out real ones.
            self.nodes.retain(|_, n| n.born);
            if self.nodes.len() >= MAX_NODES {
                out.rejects.push(Reject::TooManyNodes);
                return;
            }
        }
        let node = self.nodes.entry(key).or_default();
        let now_ms = now.as_micros().div_euclid(1000);
        let payload_ts = payload.timestamp;
        match topic.kind {
            MessageKind::NBirth => {
                // A birth without a death first: the old points died unseen.
                if node.born {
                    mark_dead(node, None, out);
                }
                node.devices.clear();
                node.metrics = Metrics::default();
                node.born = true;
                node.awaiting_rebirth = false;
                node.seq = payload.seq.map(|s| s as u8);
                node.bd_seq = payload
                    .metrics
                    .iter()
                    .find(|m| m.name.as_deref() == Some("bdSeq"))
                    .and_then(|m| match m.value {
                        Some(MetricValue::Long(v)) => Some(v),
                        Some(MetricValue::Int(v)) => Some(u64::from(v)),
                        _ => None,
                    });
                let metrics = &mut node.metrics;
                birth(topic, None, &payload, metrics, payload_ts, now, out);
                keep_reborn_alive(out);
            }
            MessageKind::DBirth => {
                if !node.born {
                    return not_born(node, now_ms, out);
                }
                check_seq(node, payload.seq, now_ms, out);
                let device = topic.device.unwrap_or_default();
                if let Some(old) = node.devices.get(device) {
                    out.dead.extend(old.points().cloned());
                } else if node.devices.len() >= MAX_DEVICES_PER_NODE {
                    out.rejects.push(Reject::TooManyDevices);
                    return;
                }
                let metrics = node.devices.entry(device.to_string()).or_default();
                *metrics = Metrics::default();
                birth(topic, topic.device, &payload, metrics, payload_ts, now, out);
                keep_reborn_alive(out);
            }
            MessageKind::NData | MessageKind::DData => {
                if !node.born {
                    return not_born(node, now_ms, out);
                }
                check_seq(node, payload.seq, now_ms, out);
                let metrics = match topic.device {
                    None => Some(&node.metrics),
                    Some(d) => node.devices.get(d),
                };
                let Some(metrics) = metrics else {
                    out.rejects.push(Reject::NotBorn);
                    return request_rebirth(node, now_ms, out);
                };
                let mut unknown = false;
                let first = out.samples.len();
                for m in &payload.metrics {
                    let known = match (m.alias, m.name.as_deref()) {
                        (Some(a), _) if metrics.by_alias.contains_key(&a) => {
                            metrics.by_alias.get(&a)
                        }
                        (_, Some(name)) => metrics.by_name.get(name),
                        _ => None,
                    };
                    match known {
                        Some(k) => sample(k, m, payload_ts, now, out),
                        None => unknown = true,
                    }
                }
                if node.awaiting_rebirth {
                    // Asked again (rate limited) until the birth comes: a
                    // lost request must not leave the node uncertain.
                    request_rebirth(node, now_ms, out);
                    for s in &mut out.samples[first..] {
                        if s.quality.is_good() {
                            s.quality =
                                Quality::Uncertain(Reason::status(0x4000_0000, "awaiting_rebirth"));
                            s.regraded = true;
                        }
                    }
                }
                if unknown {
                    out.rejects.push(Reject::UnknownAlias);
                    request_rebirth(node, now_ms, out);
                }
            }
            MessageKind::NDeath => {
                let bd_seq = payload
                    .metrics
                    .iter()
                    .find(|m| m.name.as_deref() == Some("bdSeq"))
                    .and_then(|m| match m.value {
                        Some(MetricValue::Long(v)) => Some(v),
                        Some(MetricValue::Int(v)) => Some(u64::from(v)),
                        _ => None,
                    });
                if !node.born
                    || (bd_seq.is_some() && node.bd_seq.is_some() && bd_seq != node.bd_seq)
                {
                    out.rejects.push(Reject::StaleDeath);
                    return;
                }
                mark_dead(node, None, out);
                node.born = false;
                node.seq = None;
            }
            MessageKind::DDeath => {
                if !node.born {
                    return;
                }
                check_seq(node, payload.seq, now_ms, out);
                if let Some(d) = topic.device {
                    mark_dead(node, Some(d), out);
                    node.devices.remove(d);
                }
            }
            MessageKind::Other => {}
        }
    }
}

/// A birth that replaces an earlier one (no death in between, e.g. the
/// answer to our own rebirth request) reports the old points dead; those it
/// lists again are alive, with the birth's values, and must not end Bad.
fn keep_reborn_alive(out: &mut HostOutput) {
    if out.dead.is_empty() || out.samples.is_empty() {
        return;
    }
    let reborn: std::collections::HashSet<&str> = out.samples.iter().map(|s| &*s.point).collect();
    out.dead.retain(|p| !reborn.contains(&**p));
}

fn not_born(node: &mut Node, now_ms: i64, out: &mut HostOutput) {
    out.rejects.push(Reject::NotBorn);
    request_rebirth(node, now_ms, out);
}

fn request_rebirth(node: &mut Node, now_ms: i64, out: &mut HostOutput) {
    if node
        .last_rebirth_ms
        .is_none_or(|t| now_ms - t >= REBIRTH_EVERY_MS || now_ms < t)
    {
        node.last_rebirth_ms = Some(now_ms);
        out.rebirth = true;
    }
}

fn check_seq(node: &mut Node, seq: Option<u64>, now_ms: i64, out: &mut HostOutput) {
    let Some(seq) = seq else {
        return;
    };
    let seq = (seq % 256) as u8;
    if let Some(last) = node.seq {
        if seq != last.wrapping_add(1) {
            out.rejects.push(Reject::SequenceGap);
            node.awaiting_rebirth = true;
            request_rebirth(node, now_ms, out);
        }
    }
    node.seq = Some(seq);
}

fn mark_dead(node: &Node, device: Option<&str>, out: &mut HostOutput) {
    if let Some(d) = device {
        if let Some(m) = node.devices.get(d) {
            out.dead.extend(m.points().cloned());
        }
    } else {
        out.dead.extend(node.metrics.points().cloned());
        for m in node.devices.values() {
            out.dead.extend(m.points().cloned());
        }
    }
}

/// Metrics that are control or bookkeeping, not measurements.
fn is_control(name: &str) -> bool {
    name == "bdSeq" || name.starts_with("Node Control/") || name.starts_with("Device Control/")
}

fn birth(
    topic: &SparkplugTopic<'_>,
    device: Option<&str>,
    payload: &Payload,
    metrics: &mut Metrics,
    payload_ts: Option<u64>,
    now: Timestamp,
    out: &mut HostOutput,
) {
    for m in &payload.metrics {
        let Some(name) = m.name.as_deref() else {
            out.rejects.push(Reject::MissingField);
            continue;
        };
        if is_control(name) {
            continue;
        }
        let datatype = m.datatype.unwrap_or(0);
        if !supported(datatype) {
            out.rejects.push(Reject::UnsupportedType);
            continue;
        }
        let Some(point) = point_name(topic.group, topic.node, device, name) else {
            out.rejects.push(Reject::BadPointName);
            continue;
        };
        let known = Known { point, datatype };
        if let Some(alias) = m.alias {
            metrics.by_alias.insert(alias, known.clone());
        }
        sample(&known, m, payload_ts, now, out);
        metrics.by_name.insert(name.to_string(), known);
    }
}

fn supported(datatype: u32) -> bool {
    (datatype::INT8..=datatype::UUID).contains(&datatype)
}

fn sample(
    known: &Known,
    m: &proto::Metric,
    payload_ts: Option<u64>,
    now: Timestamp,
    out: &mut HostOutput,
) {
    let ts = m.timestamp.or(payload_ts).map_or(now, |ms| {
        Timestamp(i64::try_from(ms).unwrap_or(i64::MAX).saturating_mul(1000))
    });
    if m.is_null == Some(true) {
        out.samples.push(Sample {
            point: known.point.clone(),
            value: None,
            quality: Quality::Bad(Reason::status(0x8000_0000, "null_value")),
            ts,
            regraded: false,
        });
        return;
    }
    let value = m.value.as_ref().and_then(|v| value_of(known.datatype, v));
    let Some(value) = value else {
        out.rejects.push(Reject::WrongType);
        out.samples.push(Sample {
            point: known.point.clone(),
            value: None,
            quality: Quality::Bad(Reason::Conversion),
            ts,
            regraded: false,
        });
        return;
    };
    if let Value::F64(f) = value {
        if !f.is_finite() {
            out.rejects.push(Reject::NotANumber);
            out.samples.push(Sample {
                point: known.point.clone(),
                value: None,
                quality: Quality::Bad(Reason::Conversion),
                ts,
                regraded: false,
            });
            return;
        }
    }
    out.samples.push(Sample {
        point: known.point.clone(),
        value: Some(value),
        quality: quality_of(m),
        ts,
        regraded: false,
    });
}

/// The value of a metric by its birth's data type (spec §6.4.16: signed
/// types travel two's-complement in the unsigned fields).
fn value_of(dt: u32, v: &MetricValue) -> Option<Value> {
    Some(match (dt, v) {
        (datatype::INT8, MetricValue::Int(i)) => Value::I64(i64::from(*i as u8 as i8)),
        (datatype::INT16, MetricValue::Int(i)) => Value::I64(i64::from(*i as u16 as i16)),
        (datatype::INT32, MetricValue::Int(i)) => Value::I64(i64::from(*i as i32)),
        (datatype::UINT8 | datatype::UINT16 | datatype::UINT32, MetricValue::Int(i)) => {
            Value::I64(i64::from(*i))
        }
        (datatype::INT64 | datatype::DATETIME, MetricValue::Long(l)) => Value::I64(*l as i64),
        (datatype::UINT64, MetricValue::Long(l)) => match i64::try_from(*l) {
            Ok(i) => Value::I64(i),
            Err(_) => Value::F64(*l as f64),
        },
        (datatype::FLOAT, MetricValue::Float(f)) => Value::F64(f64::from(*f)),
        (datatype::DOUBLE, MetricValue::Double(d)) => Value::F64(*d),
        (datatype::BOOLEAN, MetricValue::Boolean(b)) => Value::Bool(*b),
        (datatype::STRING | datatype::TEXT | datatype::UUID, MetricValue::String(s)) => {
            Value::Text(s.as_str().into())
        }
        _ => return None,
    })
}

/// The `Quality` property (Ignition's convention: 192 good, 500 stale,
/// 0 or anything else bad); no property: good.
fn quality_of(m: &proto::Metric) -> Quality {
    let Some(props) = &m.properties else {
        return Quality::Good;
    };
    let Some(i) = props.keys.iter().position(|k| k == "Quality") else {
        return Quality::Good;
    };
    let code = match props.values.get(i).and_then(|v| v.value.as_ref()) {
        Some(PropertyValueKind::Int(c)) => i64::from(*c),
        Some(PropertyValueKind::Long(c)) => *c as i64,
        _ => return Quality::Bad(Reason::status(0x8000_0000, "sparkplug_quality_invalid")),
    };
    match code {
        192 => Quality::Good,
        500 => Quality::Bad(Reason::Stale),
        other => Quality::Bad(Reason::status(other as u32, "sparkplug_bad")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparkplug::proto::{Metric, PropertySet, PropertyValue};

    fn payload(seq: Option<u64>, metrics: Vec<Metric>) -> Vec<u8> {
        Payload {
            timestamp: Some(1_790_000_000_000),
            metrics,
            seq,
            uuid: None,
            body: None,
        }
        .encode_to_vec()
    }

    fn run(host: &mut Host, topic: &str, bytes: &[u8], now_ms: i64) -> HostOutput {
        let mut out = HostOutput::default();
        host.handle(
            &SparkplugTopic::parse(topic).unwrap(),
            bytes,
            Timestamp(now_ms * 1000),
            &mut out,
        );
        out
    }

    fn birth_metrics() -> Vec<Metric> {
        vec![
            Metric::new("bdSeq", None, datatype::INT64, MetricValue::Long(3)),
            Metric::new(
                "Node Control/Rebirth",
                None,
                datatype::BOOLEAN,
                MetricValue::Boolean(false),
            ),
            Metric::new("CO", Some(1), datatype::FLOAT, MetricValue::Float(12.5)),
            Metric::new(
                "Fan/Running",
                Some(2),
                datatype::BOOLEAN,
                MetricValue::Boolean(true),
            ),
        ]
    }

    #[test]
    fn topics_parse_and_bad_ones_do_not() {
        let t = SparkplugTopic::parse("spBv1.0/tunnel/DDATA/plc1/fan 3").unwrap();
        assert_eq!(
            (t.group, t.kind, t.node, t.device),
            ("tunnel", MessageKind::DData, "plc1", Some("fan 3"))
        );
        for bad in [
            "spBv1.0/g/NDATA",
            "spBv1.0/g/XDATA/n",
            "spAv1.0/g/NDATA/n",
            "spBv1.0/g/NDATA/n/d",
            "spBv1.0/g/DDATA/n",
            "spBv1.0/g/NDATA/n/d/e",
        ] {
            assert_eq!(SparkplugTopic::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn birth_data_death_give_good_readings_then_comm_failure() {
        let mut host = Host::default();
        let out = run(
            &mut host,
            "spBv1.0/tunnel/NBIRTH/plc1",
            &payload(Some(0), birth_metrics()),
            1000,
        );
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
        let names: Vec<&str> = out.samples.iter().map(|s| &*s.point).collect();
        assert_eq!(names, ["tunnel/plc1/CO", "tunnel/plc1/Fan/Running"]);
        assert_eq!(out.samples[0].value, Some(Value::F64(12.5)));
        assert_eq!(out.samples[0].ts, Timestamp(1_790_000_000_000_000));

        let mut m = Metric::new("", Some(1), 0, MetricValue::Float(13.0));
        m.name = None;
        m.timestamp = Some(1_790_000_000_500);
        let out = run(
            &mut host,
            "spBv1.0/tunnel/NDATA/plc1",
            &payload(Some(1), vec![m]),
            2000,
        );
        assert!(!out.rebirth && out.rejects.is_empty());
        assert_eq!(out.samples[0].point.as_ref(), "tunnel/plc1/CO");
        assert_eq!(out.samples[0].value, Some(Value::F64(13.0)));
        assert_eq!(out.samples[0].ts, Timestamp(1_790_000_000_500_000));
        assert_eq!(out.samples[0].quality, Quality::Good);

        // A death with an older bdSeq is a late one: ignored.
        let old = vec![Metric::new(
            "bdSeq",
            None,
            datatype::INT64,
            MetricValue::Long(2),
        )];
        let out = run(
            &mut host,
            "spBv1.0/tunnel/NDEATH/plc1",
            &payload(None, old),
            3000,
        );
        assert_eq!(out.rejects, [Reject::StaleDeath]);
        assert!(out.dead.is_empty());

        let death = vec![Metric::new(
            "bdSeq",
            None,
            datatype::INT64,
            MetricValue::Long(3),
        )];
        let out = run(
            &mut host,
            "spBv1.0/tunnel/NDEATH/plc1",
            &payload(None, death),
            3000,
        );
        let mut dead: Vec<&str> = out.dead.iter().map(|p| &**p).collect();
        dead.sort_unstable();
        assert_eq!(dead, ["tunnel/plc1/CO", "tunnel/plc1/Fan/Running"]);

        // Data after death: refused, rebirth asked for.
        let m = Metric::new("CO", Some(1), 0, MetricValue::Float(1.0));
        let out = run(
            &mut host,
            "spBv1.0/tunnel/NDATA/plc1",
            &payload(Some(2), vec![m]),
            4000,
        );
        assert!(out.rebirth && out.samples.is_empty());
        assert_eq!(out.rejects, [Reject::NotBorn]);
    }

    #[test]
    fn a_sequence_gap_or_unknown_alias_asks_for_a_rebirth_at_most_every_five_seconds() {
        let mut host = Host::default();
        run(
            &mut host,
            "spBv1.0/g/NBIRTH/n",
            &payload(Some(0), birth_metrics()),
            0,
        );
        let m = || Metric {
            name: None,
            ..Metric::new("", Some(1), 0, MetricValue::Float(1.0))
        };
        let out = run(
            &mut host,
            "spBv1.0/g/NDATA/n",
            &payload(Some(5), vec![m()]),
            1000,
        );
        assert!(out.rebirth);
        assert_eq!(out.rejects, [Reject::SequenceGap]);
        assert_eq!(
            out.samples.len(),
            1,
            "data with known aliases is still used"
        );
        // A birth (QoS 0) may have been missed with its new aliases: until
        // the rebirth, data is uncertain, never Good on a guessed point.
        assert_eq!(
            out.samples[0].quality,
            Quality::Uncertain(Reason::status(0x4000_0000, "awaiting_rebirth"))
        );
        let unknown = Metric {
            name: None,
            ..Metric::new("", Some(99), 0, MetricValue::Float(1.0))
        };
        let out = run(
            &mut host,
            "spBv1.0/g/NDATA/n",
            &payload(Some(6), vec![unknown.clone()]),
            2000,
        );
        assert_eq!(out.rejects, [Reject::UnknownAlias]);
        assert!(!out.rebirth, "rate limited");
        let out = run(
            &mut host,
            "spBv1.0/g/NDATA/n",
            &payload(Some(7), vec![unknown]),
            7000,
        );
        assert!(out.rebirth);
        // seq wraps at 255 → 0 without a gap.
        run(
            &mut host,
            "spBv1.0/g/NBIRTH/n",
            &payload(Some(254), birth_metrics()),
            8000,
        );
        let out = run(
            &mut host,
            "spBv1.0/g/NDATA/n",
            &payload(Some(255), vec![m()]),
            8100,
        );
        assert!(out.rejects.is_empty());
        assert_eq!(out.samples[0].quality, Quality::Good, "the rebirth ends it");
        let out = run(
            &mut host,
            "spBv1.0/g/NDATA/n",
            &payload(Some(256), vec![m()]),
            8200,
        );
        assert!(out.rejects.is_empty());
    }

    #[test]
    fn a_node_awaiting_its_rebirth_is_asked_again_until_it_comes() {
        let mut host = Host::default();
        run(
            &mut host,
            "spBv1.0/g/NBIRTH/n",
            &payload(Some(0), birth_metrics()),
            0,
        );
        let m = || Metric {
            name: None,
            ..Metric::new("", Some(1), 0, MetricValue::Float(1.0))
        };
        let gap = run(
            &mut host,
            "spBv1.0/g/NDATA/n",
            &payload(Some(9), vec![m()]),
            1000,
        );
        assert!(gap.rebirth);
        // The request was lost: in-sequence data keeps asking, rate limited.
        let soon = run(
            &mut host,
            "spBv1.0/g/NDATA/n",
            &payload(Some(10), vec![m()]),
            2000,
        );
        assert!(!soon.rebirth && soon.rejects.is_empty());
        let later = run(
            &mut host,
            "spBv1.0/g/NDATA/n",
            &payload(Some(11), vec![m()]),
            6500,
        );
        assert!(later.rebirth, "asked again");
        assert!(!later.samples[0].quality.is_good());
    }

    #[test]
    fn devices_types_nulls_and_quality_properties() {
        let mut host = Host::default();
        run(
            &mut host,
            "spBv1.0/g/NBIRTH/n",
            &payload(Some(0), birth_metrics()),
            0,
        );
        let mut q = Metric::new("NO2", Some(11), datatype::DOUBLE, MetricValue::Double(0.4));
        q.properties = Some(PropertySet {
            keys: vec!["Quality".into()],
            values: vec![PropertyValue {
                r#type: Some(3),
                is_null: None,
                value: Some(PropertyValueKind::Int(500)),
            }],
        });
        let mut null = Metric::new("Vis", Some(12), datatype::FLOAT, MetricValue::Float(0.0));
        null.is_null = Some(true);
        null.value = None;
        let metrics = vec![
            Metric::new("T", Some(10), datatype::INT16, MetricValue::Int(0xFFFE)),
            q,
            null,
            Metric::new("Blob", Some(13), 17, MetricValue::Bytes(vec![1])),
            Metric::new(
                "Bad",
                Some(14),
                datatype::INT32,
                MetricValue::String("x".into()),
            ),
        ];
        let out = run(
            &mut host,
            "spBv1.0/g/DBIRTH/n/d1",
            &payload(Some(1), metrics),
            10,
        );
        let got: Vec<(&str, Option<Value>, Quality)> = out
            .samples
            .iter()
            .map(|s| (&*s.point, s.value.clone(), s.quality))
            .collect();
        assert_eq!(got[0], ("g/n/d1/T", Some(Value::I64(-2)), Quality::Good));
        assert_eq!(
            got[1],
            (
                "g/n/d1/NO2",
                Some(Value::F64(0.4)),
                Quality::Bad(Reason::Stale)
            )
        );
        assert_eq!(got[2].1, None);
        assert!(!got[2].2.is_good());
        assert_eq!(
            got[3],
            ("g/n/d1/Bad", None, Quality::Bad(Reason::Conversion))
        );
        assert_eq!(out.rejects, [Reject::UnsupportedType, Reject::WrongType]);
        let out = run(
            &mut host,
            "spBv1.0/g/DDEATH/n/d1",
            &payload(Some(2), vec![]),
            20,
        );
        assert_eq!(out.dead.len(), 4);
        // A new NBIRTH without a death: the old points not in it died unseen.
        run(
            &mut host,
            "spBv1.0/g/DBIRTH/n/d1",
            &payload(
                Some(3),
                vec![Metric::new(
                    "T",
                    Some(10),
                    datatype::INT16,
                    MetricValue::Int(1),
                )],
            ),
            30,
        );
        let out = run(
            &mut host,
            "spBv1.0/g/NBIRTH/n",
            &payload(Some(0), birth_metrics()),
            40,
        );
        // Only the device's point died unseen: the node's own metrics are in
        // the new birth, alive.
        assert_eq!(out.dead.len(), 1, "{out:?}");
        assert_eq!(&*out.dead[0], "g/n/d1/T");
    }

    const KINDS: [&str; 6] = ["NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA", "DDEATH"];

    fn topic_of(kind: usize) -> String {
        let k = KINDS[kind % KINDS.len()];
        if k.starts_with('D') {
            format!("spBv1.0/g/{k}/n/d1")
        } else {
            format!("spBv1.0/g/{k}/n")
        }
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = MetricValue> {
        use proptest::prelude::*;
        prop_oneof![
            any::<u32>().prop_map(MetricValue::Int),
            any::<u64>().prop_map(MetricValue::Long),
            any::<f32>().prop_map(MetricValue::Float),
            any::<f64>().prop_map(MetricValue::Double),
            any::<bool>().prop_map(MetricValue::Boolean),
            ".{0,8}".prop_map(MetricValue::String),
        ]
    }

    proptest::proptest! {
        /// Random bytes as any kind of message, in any order: no panic, and
        /// a message that is not a payload is rejected, never half-applied.
        #[test]
        fn random_sparkplug_bytes_never_panic(
            messages in proptest::collection::vec(
                (0usize..6, proptest::collection::vec(proptest::num::u8::ANY, 0..120)),
                1..20,
            ),
        ) {
            let mut host = Host::default();
            for (i, (kind, bytes)) in messages.iter().enumerate() {
                let out = run(&mut host, &topic_of(*kind), bytes, i as i64);
                if Payload::decode(bytes.as_slice()).is_err() {
                    proptest::prop_assert!(out.samples.is_empty());
                }
            }
        }

        /// Well-formed payloads with random names, aliases, types, values,
        /// timestamps and sequence numbers, in random kinds and order: no
        /// panic, and every sample names a point.
        #[test]
        fn random_sparkplug_sequences_never_panic(
            messages in proptest::collection::vec(
                (
                    0usize..6,
                    proptest::option::of(0u64..300),
                    proptest::collection::vec(
                        (
                            proptest::option::of("[a-zA-Z/ ]{0,6}"),
                            proptest::option::of(0u64..6),
                            proptest::option::of(0u32..20),
                            proptest::option::of(any_value()),
                            proptest::option::of(proptest::num::u64::ANY),
                        ),
                        0..6,
                    ),
                ),
                1..30,
            ),
        ) {
            let mut host = Host::default();
            for (i, (kind, seq, metrics)) in messages.into_iter().enumerate() {
                let metrics = metrics
                    .into_iter()
                    .map(|(name, alias, datatype, value, ts)| Metric {
                        name,
                        alias,
                        timestamp: ts,
                        datatype,
                        is_historical: None,
                        is_transient: None,
                        is_null: None,
                        properties: None,
                        value,
                    })
                    .collect();
                let out = run(&mut host, &topic_of(kind), &payload(seq, metrics), i as i64);
                for sample in &out.samples {
                    proptest::prop_assert!(!sample.point.is_empty());
                }
            }
        }
    }

    #[test]
    fn an_answered_rebirth_leaves_the_reborn_points_good() {
        let mut host = Host::default();
        run(
            &mut host,
            "spBv1.0/g/NBIRTH/n",
            &payload(Some(0), birth_metrics()),
            0,
        );
        let dev = vec![Metric::new(
            "T",
            Some(10),
            datatype::INT16,
            MetricValue::Int(1),
        )];
        run(
            &mut host,
            "spBv1.0/g/DBIRTH/n/d1",
            &payload(Some(1), dev.clone()),
            1,
        );
        // The node answers a rebirth request: NBIRTH again, no death.
        let out = run(
            &mut host,
            "spBv1.0/g/NBIRTH/n",
            &payload(Some(0), birth_metrics()),
            2,
        );
        assert_eq!(out.samples.len(), 2, "{out:?}");
        // Only the device's points (not in this birth) are reported dead.
        assert_eq!(out.dead.len(), 1, "{out:?}");
        assert_eq!(&*out.dead[0], "g/n/d1/T");
        let out = run(
            &mut host,
            "spBv1.0/g/DBIRTH/n/d1",
            &payload(Some(1), dev),
            3,
        );
        assert!(out.dead.is_empty(), "{out:?}");
        assert_eq!(out.samples.len(), 1);
    }

    #[test]
    fn after_a_lost_link_every_born_node_is_asked_to_rebirth_once() {
        let mut host = Host::default();
        run(
            &mut host,
            "spBv1.0/g/NBIRTH/n",
            &payload(Some(0), birth_metrics()),
            0,
        );
        run(
            &mut host,
            "spBv1.0/g/NDATA/other",
            &payload(Some(0), vec![]),
            0,
        );
        let now = Timestamp(60_000 * 1000);
        assert_eq!(host.rebirth_all(now), ["spBv1.0/g/NCMD/n"]);
        assert!(host.rebirth_all(now).is_empty(), "rate-limited per node");
    }

    #[test]
    fn junk_node_names_cannot_lock_out_a_real_node() {
        let mut host = Host::default();
        for i in 0..MAX_NODES {
            run(
                &mut host,
                &format!("spBv1.0/g/NDATA/junk{i}"),
                &payload(Some(0), vec![]),
                0,
            );
        }
        let out = run(
            &mut host,
            "spBv1.0/g/NBIRTH/real",
            &payload(Some(0), birth_metrics()),
            1,
        );
        assert!(out.rejects.is_empty(), "{out:?}");
        assert_eq!(out.samples.len(), 2);
    }
}
