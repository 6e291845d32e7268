//! What the page's event stream carries, as pure functions from the live
//! state to Server-Sent Events text.
//!
//! Events (each `event: NAME\ndata: JSON\n\n`):
//! - `snapshot`: every point with its metadata and state, the open alerts;
//!   sent first to each client, again after it lagged or the point set grew;
//! - `delta`: the points whose state changed since the last tick;
//! - `alerts`: the open alerts, whenever they change;
//! - `beat`: sent when nothing else was for a second, so the page can tell
//!   a quiet pipeline from a dead connection.
//!
//! A point's state: `v` value (last known, kept while bad or stale), `q`
//! quality class or `never`, `r` reason, `c` protocol code, `s` stale, `a`
//! ms since its last reading, `va` ms since its last value, `ts` source time
//! (ms since the epoch). Ages are as of the moment the frame was built; the
//! page adds the time since it received it.

use std::fmt::Write as _;
use std::time::Instant;

use adit_core::{PointId, PointMeta, Value};
use adit_pipeline::PointState;
use adit_watchdog::engine::AlertView;
use serde::Serialize;

/// Appends one SSE event to `out`. `data` is one line of JSON.
pub fn push_event(out: &mut String, event: &str, data: &str) {
    debug_assert!(!data.contains('\n'));
    let _ = write!(out, "event: {event}\ndata: {data}\n\n");
}

/// The same, with the server's monotonic time of rendering (ms) as the
/// event's `id`: the page adds any delay in delivery to the ages it shows.
pub fn push_event_at(out: &mut String, event: &str, rendered_ms: u64, data: &str) {
    debug_assert!(!data.contains('\n'));
    let _ = write!(out, "event: {event}\nid: {rendered_ms}\ndata: {data}\n\n");
}

#[derive(Serialize)]
struct PointStateJson<'a> {
    i: u32,
    v: ValueJson<'a>,
    q: &'static str,
    r: Option<&'static str>,
    c: Option<u32>,
    s: bool,
    a: Option<u64>,
    va: Option<u64>,
    ts: Option<i64>,
}

struct ValueJson<'a>(Option<&'a Value>);

impl Serialize for ValueJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(Value::F64(v)) if v.is_finite() => s.serialize_f64(*v),
            None | Some(Value::F64(_)) => s.serialize_none(),
            Some(Value::I64(v)) => s.serialize_i64(*v),
            Some(Value::Bool(v)) => s.serialize_bool(*v),
            Some(Value::Text(t)) => s.serialize_str(t),
        }
    }
}

fn ms_since(now: Instant, t: Option<Instant>) -> Option<u64> {
    t.map(|t| u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX))
}

fn state_json(id: PointId, state: &PointState, stale: bool, now: Instant) -> PointStateJson<'_> {
    let seen = state.updated_at.is_some();
    PointStateJson {
        i: id.0,
        v: ValueJson(state.value.as_ref()),
        q: if seen {
            state.quality.class().name()
        } else {
            "never"
        },
        r: state.quality.reason().map(adit_core::Reason::name),
        c: state.quality.reason().and_then(adit_core::Reason::detail),
        s: stale,
        a: ms_since(now, state.updated_at),
        va: ms_since(now, state.value_at),
        ts: seen.then_some(state.source_ts.0 / 1_000),
    }
}

#[derive(Serialize)]
struct PointJson<'a> {
    id: &'a str,
    dev: &'a str,
    unit: &'a str,
    /// The staleness bound, so the page can enforce it on its own.
    stale_ms: u64,
    lo: Option<f64>,
    hi: Option<f64>,
    #[serde(flatten)]
    state: PointStateJson<'a>,
}

/// One alert as the page shows it.
#[derive(Serialize)]
pub struct AlertJson<'a> {
    name: &'a str,
    severity: &'a str,
    summary: &'a str,
    check_first: &'a str,
    subject: &'a str,
    since_ms: i64,
}

fn label<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

fn alert_json(a: &AlertView) -> AlertJson<'_> {
    let subject = ["point", "device", "sink"]
        .iter()
        .map(|k| label(&a.labels, k))
        .find(|v| !v.is_empty())
        .unwrap_or("");
    AlertJson {
        name: label(&a.labels, "alertname"),
        severity: label(&a.labels, "severity"),
        summary: label(&a.annotations, "summary"),
        check_first: label(&a.annotations, "check_first"),
        subject,
        since_ms: a.starts_at.0 / 1_000,
    }
}

/// The open alerts (resolved ones and the heartbeat left out), most severe
/// first.
pub fn open_alerts(alerts: &[AlertView]) -> Vec<AlertJson<'_>> {
    let rank = |s: &str| match s {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    };
    let mut open: Vec<AlertJson<'_>> = alerts
        .iter()
        .filter(|a| a.ends_at.is_none() && label(&a.labels, "alertname") != "AditWatchdogHeartbeat")
        .map(alert_json)
        .collect();
    open.sort_by(|a, b| {
        rank(a.severity)
            .cmp(&rank(b.severity))
            .then(a.since_ms.cmp(&b.since_ms))
    });
    open
}

/// The `alerts` event's JSON.
pub fn alerts_data(alerts: &[AlertView]) -> String {
    serde_json::json!({ "alerts": open_alerts(alerts) }).to_string()
}

/// Everything a page needs to start: one entry per point (in id order).
/// `points` yields (id, meta, state, stale).
pub fn snapshot_data<'a>(
    site: &str,
    seq: u64,
    interval_ms: u64,
    points: impl Iterator<Item = (PointId, &'a PointMeta, &'a PointState, bool)>,
    alerts: &[AlertView],
    now: Instant,
) -> String {
    let points: Vec<PointJson<'_>> = points
        .map(|(id, meta, state, stale)| PointJson {
            id: &meta.name,
            dev: &meta.device,
            unit: &meta.unit,
            stale_ms: u64::try_from(meta.stale_after.as_millis()).unwrap_or(u64::MAX),
            lo: meta.range.map(|r| r.0),
            hi: meta.range.map(|r| r.1),
            state: state_json(id, state, stale, now),
        })
        .collect();
    serde_json::json!({
        "site": site,
        "seq": seq,
        "interval_ms": interval_ms,
        "points": points,
        "alerts": open_alerts(alerts),
    })
    .to_string()
}

/// A `delta` event's JSON: the states of `changed` points.
pub fn delta_data<'a>(
    seq: u64,
    changed: impl Iterator<Item = (PointId, &'a PointState, bool)>,
    now: Instant,
) -> String {
    let mut out = String::with_capacity(4096);
    let _ = write!(out, "{{\"seq\":{seq},\"points\":[");
    for (n, (id, state, stale)) in changed.enumerate() {
        if n > 0 {
            out.push(',');
        }
        // Serializing plain numbers, strings and options cannot fail.
        let _ = serde_json::to_writer(StringWriter(&mut out), &state_json(id, state, stale, now));
    }
    out.push_str("]}");
    out
}

/// `io::Write` into a `String` (`serde_json` only writes valid UTF-8).
struct StringWriter<'a>(&'a mut String);

impl std::io::Write for StringWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.0.push_str(text);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the feed remembers of a point to tell whether it changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    readings: u64,
    quality: adit_core::Quality,
    stale: bool,
}

impl Seen {
    pub fn of(state: &PointState, stale: bool) -> Self {
        Self {
            readings: state.readings,
            quality: state.quality,
            stale,
        }
    }

    pub fn stale(self) -> bool {
        self.stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::{Quality, Reason, Timestamp};
    use std::time::Duration;

    fn meta(name: &str) -> PointMeta {
        let mut m = PointMeta::plain(name, "plc", 1000);
        m.unit = "ppm".into();
        m.range = Some((0.0, 300.0));
        m.stale_after = Duration::from_secs(3);
        m
    }

    fn state(v: Option<Value>, quality: Quality, at: Option<Instant>) -> PointState {
        PointState {
            value: v,
            quality,
            source_ts: Timestamp(1_700_000_000_123_000),
            received_ts: Timestamp(1_700_000_000_123_000),
            updated_at: at,
            value_at: at,
            readings: u64::from(at.is_some()),
        }
    }

    #[test]
    fn a_bad_point_keeps_its_last_value_with_reason_and_code() {
        let now = Instant::now();
        let s = PointState {
            updated_at: Some(now),
            value_at: Some(now.checked_sub(Duration::from_secs(5)).unwrap_or(now)),
            ..state(
                Some(Value::F64(12.5)),
                Quality::Bad(Reason::DeviceException(2)),
                Some(now),
            )
        };
        let data = delta_data(7, std::iter::once((PointId(3), &s, false)), now);
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        let p = &v["points"][0];
        assert_eq!(v["seq"], 7);
        assert_eq!(p["i"], 3);
        assert_eq!(p["v"], 12.5);
        assert_eq!(p["q"], "bad");
        assert_eq!(p["r"], "device_exception");
        assert_eq!(p["c"], 2);
        assert_eq!(p["s"], false);
        assert_eq!(p["a"], 0);
        assert!(p["va"].as_u64().unwrap() >= 4_999, "{p}");
        assert_eq!(p["ts"], 1_700_000_000_123_i64);
    }

    #[test]
    fn never_seen_and_non_finite_values_are_explicit() {
        let now = Instant::now();
        let never = state(None, Quality::Good, None);
        let nan = state(Some(Value::F64(f64::NAN)), Quality::Good, Some(now));
        let data = delta_data(
            1,
            [(PointId(0), &never, true), (PointId(1), &nan, false)].into_iter(),
            now,
        );
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["points"][0]["q"], "never");
        assert_eq!(v["points"][0]["s"], true);
        assert!(v["points"][0]["a"].is_null());
        assert!(v["points"][1]["v"].is_null());
    }

    #[test]
    fn snapshot_carries_metadata_and_the_staleness_bound() {
        let now = Instant::now();
        let m = meta("bore_a.co_1");
        let s = state(
            Some(Value::I64(-9_007_199_254_740_993)),
            Quality::Good,
            Some(now),
        );
        let data = snapshot_data(
            "tunnel",
            4,
            250,
            std::iter::once((PointId(0), &m, &s, false)),
            &[],
            now,
        );
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        let p = &v["points"][0];
        assert_eq!(p["id"], "bore_a.co_1");
        assert_eq!(p["dev"], "plc");
        assert_eq!(p["unit"], "ppm");
        assert_eq!(p["stale_ms"], 3000);
        assert_eq!(p["hi"], 300.0);
        assert_eq!(p["v"], -9_007_199_254_740_993_i64);
        assert_eq!(v["interval_ms"], 250);
    }

    #[test]
    fn open_alerts_leave_out_resolved_and_heartbeat_most_severe_first() {
        let alert = |name: &str, sev: &str, start: i64, ended: bool| AlertView {
            labels: vec![
                ("alertname".into(), name.into()),
                ("severity".into(), sev.into()),
                ("point".into(), "bore_a.co_1".into()),
            ],
            annotations: vec![
                ("summary".into(), format!("{name} fired")),
                ("check_first".into(), "the sensor".into()),
            ],
            starts_at: Timestamp(start),
            ends_at: ended.then_some(Timestamp(start + 1)),
        };
        let alerts = [
            alert("Warn", "warning", 1, false),
            alert("Gone", "critical", 1, true),
            alert("AditWatchdogHeartbeat", "none", 0, false),
            alert("Crit", "critical", 2_000_000, false),
        ];
        let open = open_alerts(&alerts);
        let names: Vec<&str> = open.iter().map(|a| a.name).collect();
        assert_eq!(names, ["Crit", "Warn"]);
        assert_eq!(open[0].subject, "bore_a.co_1");
        assert_eq!(open[0].since_ms, 2_000);
    }

    #[test]
    fn events_are_framed_for_sse() {
        let mut out = String::new();
        push_event(&mut out, "beat", "{\"seq\":1}");
        assert_eq!(out, "event: beat\ndata: {\"seq\":1}\n\n");
        out.clear();
        push_event_at(&mut out, "beat", 1234, "{}");
        assert_eq!(out, "event: beat\nid: 1234\ndata: {}\n\n");
    }
}
