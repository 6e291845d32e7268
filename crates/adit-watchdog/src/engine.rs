//! The rule engine: binds rules to points once (glob on point ids), keeps
//! each alert's state, and turns readings and the passing of time into alert
//! transitions. Every decision is written to the audit log with its inputs.
//!
//! Invariants:
//! - per reading, only the rules bound to its point are evaluated (no scan);
//! - an alert is identified by (rule, point) or, for `device_down`, (rule,
//!   device); a transition is reported once;
//! - the engine does no I/O but the audit record (which never blocks);
//! - firing alerts outlive a restart: [`Engine::firing_records`] is what
//!   the watchdog keeps on disk, [`Engine::restore`] takes it back at start
//!   (each alert firing again without a second notification, so that its
//!   resolution, when the condition clears, is told). One whose rule is
//!   gone, whose labels changed (site, severity) or whose point the rule no
//!   longer matches is resolved at once under its old labels; one whose
//!   point is not registered yet (named at run time by an MQTT or OPC UA
//!   source) stays firing as it was until the point appears, or is
//!   resolved after [`RESTORE_GRACE`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adit_audit::Audit;
use adit_core::{PointId, PointRegistry, Reading, Timestamp};

use crate::glob;
use crate::rules::{judge, step, Condition, Memory, Sample, Status, Transition};

/// A configured rule.
#[derive(Clone, Debug)]
pub struct RuleSpec {
    pub name: String,
    /// Glob on point ids.
    pub points: String,
    pub condition: Condition,
    /// How long the condition must hold before the alert fires.
    pub hold: Duration,
    pub severity: String,
    pub check_first: String,
    pub runbook: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Point(PointId),
    Device(u32),
}

#[derive(Debug, Default)]
struct State {
    status: Status,
    memory: Memory,
    last: Option<Sample>,
    fired_at: Option<Timestamp>,
}

/// An alert as receivers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertView {
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
}

/// A firing alert as kept on disk across restarts: its labels (which name
/// the rule and the point or device) and when it fired.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FiringRecord {
    pub labels: Vec<(String, String)>,
    /// Wall time it fired, µs since the epoch.
    pub starts_at_us: i64,
}

impl FiringRecord {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub transition: Transition,
    pub alert: AlertView,
}

/// How long a restored alert waits for its point to be named at run time.
pub const RESTORE_GRACE: Duration = Duration::from_secs(600);

pub struct Engine {
    /// Restored alerts whose subject is not registered yet, and until when
    /// they wait for it.
    awaiting: Vec<(FiringRecord, Instant)>,
    /// Events found while binding points (told at the next tick).
    late: Vec<Event>,
    site: String,
    rules: Vec<RuleSpec>,
    /// Per point: the (rule, state slot) pairs bound to it.
    by_point: Vec<Vec<(usize, usize)>>,
    devices: Vec<Arc<str>>,
    /// One state per (rule, subject), indexed by slot (no hashing per
    /// reading); `slots[i]` says whose state `states[i]` is.
    states: Vec<State>,
    slots: Vec<(usize, Key)>,
    /// The slot of each (rule, subject), kept for binding new points.
    slot_of: HashMap<(usize, Key), usize>,
    registry: Arc<PointRegistry>,
    audit: Audit,
}

impl Engine {
    pub fn new(
        site: &str,
        rules: Vec<RuleSpec>,
        registry: Arc<PointRegistry>,
        audit: Audit,
    ) -> Self {
        let mut engine = Self {
            awaiting: Vec::new(),
            late: Vec::new(),
            site: site.to_string(),
            rules,
            by_point: Vec::with_capacity(registry.len()),
            devices: Vec::new(),
            states: Vec::new(),
            slots: Vec::new(),
            slot_of: HashMap::new(),
            registry,
            audit,
        };
        engine.bind_new_points();
        engine
    }

    /// Binds every rule whose glob matches to the points registered since
    /// the last call (all of them at start; then points a source named at
    /// run time).
    fn bind_new_points(&mut self) {
        for i in self.by_point.len()..self.registry.len() {
            let id = PointId(i as u32);
            let Some(meta) = self.registry.get(id) else {
                break;
            };
            let d = self
                .devices
                .iter()
                .position(|d| *d == meta.device)
                .unwrap_or_else(|| {
                    self.devices.push(meta.device.clone());
                    self.devices.len() - 1
                });
            let (slots, slot_of) = (&mut self.slots, &mut self.slot_of);
            let bound = self
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| glob::matches(&r.points, &meta.name))
                .map(|(rule, r)| {
                    let key = match r.condition {
                        Condition::DeviceDown => Key::Device(d as u32),
                        _ => Key::Point(id),
                    };
                    let slot = *slot_of.entry((rule, key)).or_insert_with(|| {
                        slots.push((rule, key));
                        slots.len() - 1
                    });
                    (rule, slot)
                })
                .collect();
            self.by_point.push(bound);
        }
        self.states.resize_with(self.slots.len(), State::default);
        if !self.awaiting.is_empty() {
            let waiting = std::mem::take(&mut self.awaiting);
            for (record, until) in waiting {
                match self.slot_for(&record) {
                    Some(slot) => {
                        // Resolutions here come out when their labels
                        // changed meanwhile: told at the next tick.
                        if let Some(e) = self.restore_into(slot, &record, Instant::now()) {
                            self.late.push(e);
                        }
                    }
                    None => self.awaiting.push((record, until)),
                }
            }
        }
    }

    /// Rules bound to no point at all (probably a mistyped glob).
    pub fn unbound_rules(&self) -> Vec<&str> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.slots.iter().any(|(rule, _)| rule == i))
            .map(|(_, r)| r.name.as_str())
            .collect()
    }

    /// Evaluates the rules of every reading's point.
    pub fn observe(&mut self, batch: &[Reading], now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        for r in batch {
            if r.point.index() >= self.by_point.len() {
                self.bind_new_points();
            }
            let Some(bound) = self.by_point.get(r.point.index()) else {
                continue;
            };
            if bound.is_empty() {
                continue;
            }
            let sample = Sample {
                value: r.value.as_ref().and_then(adit_core::Value::as_f64),
                quality: r.quality,
                source_ts: r.source_ts,
                received_ts: r.received_ts,
                at: now,
            };
            for k in 0..bound.len() {
                let (rule, slot) = self.by_point[r.point.index()][k];
                let (Some(spec), Some(state)) = (self.rules.get(rule), self.states.get_mut(slot))
                else {
                    continue;
                };
                let verdict = judge(&spec.condition, &mut state.memory, &sample);
                state.last = Some(sample);
                let (status, transition) = step(state.status, verdict, spec.hold, now);
                state.status = status;
                if let Some(t) = transition {
                    events.push(self.transition(slot, t));
                }
            }
        }
        events
    }

    /// Lets time pass: pending alerts whose `for` has elapsed fire.
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let due: Vec<usize> = self
            .states
            .iter()
            .zip(&self.slots)
            .enumerate()
            .filter(|(_, (s, (rule, _)))| matches!(s.status, Status::Pending { since } if now.saturating_duration_since(since) >= self.rules[*rule].hold))
            .map(|(slot, _)| slot)
            .collect();
        let mut events = std::mem::take(&mut self.late);
        let expired: Vec<FiringRecord> = {
            let (gone, kept) = std::mem::take(&mut self.awaiting)
                .into_iter()
                .partition(|(_, until)| now >= *until);
            self.awaiting = kept;
            gone.into_iter().map(|(record, _)| record).collect()
        };
        for record in expired {
            let why = format!(
                "its point did not report within {} min of the restart",
                RESTORE_GRACE.as_secs() / 60
            );
            events.push(self.resolve_record(&record, &why));
        }
        for slot in due {
            let Some(&(rule, _)) = self.slots.get(slot) else {
                continue;
            };
            if let Some(state) = self.states.get_mut(slot) {
                let (status, t) = step(state.status, None, self.rules[rule].hold, now);
                state.status = status;
                if let Some(t) = t {
                    events.push(self.transition(slot, t));
                }
            }
        }
        events
    }

    fn transition(&mut self, slot: usize, t: Transition) -> Event {
        let now_wall = Timestamp::now();
        if let Some(state) = self.states.get_mut(slot) {
            if t == Transition::Fired {
                state.fired_at = Some(now_wall);
            }
        }
        let rule = self.slots.get(slot).map_or(0, |(rule, _)| *rule);
        let mut alert = self.view(slot);
        if t == Transition::Resolved {
            alert.ends_at = Some(now_wall);
        }
        let spec = &self.rules[rule];
        let last = self.states.get(slot).and_then(|s| s.last);
        self.audit.record(
            "alert_decision",
            serde_json::json!({
                "rule": spec.name,
                "condition": spec.condition.kind(),
                "thresholds": spec.condition.describe(),
                "for_ms": spec.hold.as_millis() as u64,
                "subject": alert.labels.iter().find(|(k, _)| k == "point" || k == "device").map(|(_, v)| v.clone()),
                "outcome": match t { Transition::Fired => "fired", Transition::Resolved => "resolved" },
                "inputs": last.map(|s| serde_json::json!({
                    "value": s.value,
                    "quality": s.quality.to_string(),
                    "source_ts": s.source_ts.to_rfc3339(),
                })),
            }),
        );
        Event {
            transition: t,
            alert,
        }
    }

    fn view(&self, slot: usize) -> AlertView {
        let (rule, key) = self.slots.get(slot).copied().unwrap_or((0, Key::Device(0)));
        let spec = &self.rules[rule];
        let state = self.states.get(slot);
        let mut labels = vec![
            ("alertname".to_string(), spec.name.clone()),
            ("site".to_string(), self.site.clone()),
            ("rule".to_string(), spec.condition.kind().to_string()),
            ("severity".to_string(), spec.severity.clone()),
        ];
        let what = match key {
            Key::Point(id) => {
                let meta = self.registry.get(id);
                let point = meta.map_or_else(String::new, |m| m.name.to_string());
                let device = meta.map_or_else(String::new, |m| m.device.to_string());
                labels.push(("device".to_string(), device));
                labels.push(("point".to_string(), point.clone()));
                point
            }
            Key::Device(d) => {
                let device = self
                    .devices
                    .get(d as usize)
                    .map_or_else(String::new, std::string::ToString::to_string);
                labels.push(("device".to_string(), device.clone()));
                device
            }
        };
        let last = state.and_then(|s| s.last);
        let unit = match key {
            Key::Point(id) => self
                .registry
                .get(id)
                .map_or_else(String::new, |m| m.unit.to_string()),
            Key::Device(_) => String::new(),
        };
        let value = last.and_then(|s| s.value).map_or_else(
            || "none".to_string(),
            |v| format!("{v} {unit}").trim().to_string(),
        );
        let mut annotations = vec![
            (
                "summary".to_string(),
                // "bore_b.co_1: above 70 (clears below 60)": the rule's
                // kind is in its name and labels, not repeated here.
                format!("{what}: {}", spec.condition.describe()),
            ),
            ("value".to_string(), value),
            (
                "quality".to_string(),
                last.map_or_else(|| "unknown".to_string(), |s| s.quality.to_string()),
            ),
            (
                "source_time".to_string(),
                last.map_or_else(String::new, |s| s.source_ts.to_rfc3339()),
            ),
            ("check_first".to_string(), spec.check_first.clone()),
        ];
        if let Some(url) = &spec.runbook {
            annotations.push(("runbook_url".to_string(), url.clone()));
        }
        AlertView {
            labels,
            annotations,
            starts_at: state
                .and_then(|s| s.fired_at)
                .unwrap_or_else(Timestamp::now),
            ends_at: None,
        }
    }

    /// The rule alerts firing now, as kept on disk.
    pub fn firing_records(&self) -> Vec<FiringRecord> {
        self.states
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.status, Status::Firing { .. }))
            .map(|(slot, s)| FiringRecord {
                labels: self.view(slot).labels,
                starts_at_us: s.fired_at.unwrap_or_else(Timestamp::now).0,
            })
            .chain(self.awaiting.iter().map(|(record, _)| record.clone()))
            .collect()
    }

    /// Takes back the alerts that were firing before a restart (see the
    /// module's invariants); returns the ones resolved at once.
    pub fn restore(&mut self, records: &[FiringRecord], now: Instant) -> Vec<Event> {
        self.bind_new_points();
        let mut events = Vec::new();
        for record in records {
            if let Some(slot) = self.slot_for(record) {
                events.extend(self.restore_into(slot, record, now));
            } else if self.may_still_appear(record) {
                self.audit_restart(record, "awaiting_subject");
                self.awaiting.push((record.clone(), now + RESTORE_GRACE));
            } else {
                events.push(self.resolve_record(
                    record,
                    "its rule or subject is no longer configured (seen at restart)",
                ));
            }
        }
        events
    }

    /// Fires `slot` again as `record` was, unless its labels changed: then
    /// the old alert is resolved (and the rule fires anew if it must).
    fn restore_into(&mut self, slot: usize, record: &FiringRecord, now: Instant) -> Option<Event> {
        if self.view(slot).labels != record.labels {
            return Some(
                self.resolve_record(record, "its labels changed in the config (seen at restart)"),
            );
        }
        let state = self.states.get_mut(slot)?;
        state.status = Status::Firing { since: now };
        state.fired_at = Some(Timestamp(record.starts_at_us));
        self.audit_restart(record, "restored");
        None
    }

    /// Whether the record's point may still be named at run time: its rule
    /// exists and matches it, and it is not registered yet.
    fn may_still_appear(&self, record: &FiringRecord) -> bool {
        let Some(rule) = record
            .label("alertname")
            .and_then(|name| self.rules.iter().find(|r| r.name == name))
        else {
            return false;
        };
        match rule.condition {
            Condition::DeviceDown => record
                .label("device")
                .is_some_and(|d| !self.devices.iter().any(|known| &**known == d)),
            _ => record.label("point").is_some_and(|p| {
                self.registry.id_of(p).is_none() && glob::matches(&rule.points, p)
            }),
        }
    }

    /// A resolution of a restored alert under its old labels.
    fn resolve_record(&self, record: &FiringRecord, why: &str) -> Event {
        let name = record.label("alertname").unwrap_or("alert");
        self.audit_restart(record, "resolved");
        Event {
            transition: Transition::Resolved,
            alert: AlertView {
                labels: record.labels.clone(),
                annotations: vec![("summary".into(), format!("{name}: {why}: resolved"))],
                starts_at: Timestamp(record.starts_at_us),
                ends_at: Some(Timestamp::now()),
            },
        }
    }

    fn audit_restart(&self, record: &FiringRecord, outcome: &str) {
        self.audit.record(
            "alert_restart",
            serde_json::json!({
                "labels": record.labels.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
                "fired_at": Timestamp(record.starts_at_us).to_rfc3339(),
                "outcome": outcome,
            }),
        );
    }

    /// The state slot a record names, when its rule and subject exist.
    fn slot_for(&self, record: &FiringRecord) -> Option<usize> {
        let name = record.label("alertname")?;
        let rule = self.rules.iter().position(|r| r.name == name)?;
        let key = match self.rules[rule].condition {
            Condition::DeviceDown => {
                let device = record.label("device")?;
                Key::Device(u32::try_from(self.devices.iter().position(|d| &**d == device)?).ok()?)
            }
            _ => Key::Point(self.registry.id_of(record.label("point")?)?),
        };
        self.slot_of.get(&(rule, key)).copied()
    }

    /// Every alert firing now.
    pub fn firing(&self) -> Vec<AlertView> {
        self.states
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.status, Status::Firing { .. }))
            .map(|(slot, _)| self.view(slot))
            .chain(self.awaiting.iter().map(|(record, _)| AlertView {
                labels: record.labels.clone(),
                annotations: vec![(
                    "summary".into(),
                    "firing before the restart; its point has not reported since".into(),
                )],
                starts_at: Timestamp(record.starts_at_us),
                ends_at: None,
            }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::{PointMeta, Quality, Reason, Value};

    fn engine(rules: Vec<RuleSpec>) -> Engine {
        let mut r = PointRegistry::new();
        for (name, device) in [
            ("bore_a.co_1", "plc_a"),
            ("bore_a.co_2", "plc_a"),
            ("bore_b.co_1", "plc_b"),
        ] {
            let mut m = PointMeta::plain(name, device, 1000);
            m.unit = "ppm".into();
            r.insert(m).unwrap();
        }
        Engine::new("test-site", rules, Arc::new(r), Audit::disabled())
    }

    fn rule(name: &str, points: &str, condition: Condition, hold: Duration) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            points: points.into(),
            condition,
            hold,
            severity: "warning".into(),
            check_first: "look".into(),
            runbook: None,
        }
    }

    fn reading(point: u32, value: Option<f64>, quality: Quality) -> Reading {
        Reading {
            point: PointId(point),
            value: value.map(Value::F64),
            quality,
            source_ts: Timestamp::now(),
            received_ts: Timestamp::now(),
        }
    }

    /// `name`: CO above 100 ppm, clears below 80, no hold.
    fn co_above_100(name: &str) -> RuleSpec {
        rule(
            name,
            "*.co_*",
            Condition::Above {
                raise: 100.0,
                clear: 80.0,
            },
            Duration::ZERO,
        )
    }

    #[test]
    fn a_firing_alert_outlives_a_restart_and_resolves_once_when_its_condition_clears() {
        let rules = || {
            vec![
                co_above_100("CoHigh"),
                rule("PlcDown", "bore_b.*", Condition::DeviceDown, Duration::ZERO),
            ]
        };
        let mut before = engine(rules());
        let t0 = Instant::now();
        let fired = before.observe(&[reading(0, Some(120.0), Quality::Good)], t0);
        let down = before.observe(&[reading(2, None, Quality::Bad(Reason::CommFailure))], t0);
        assert_eq!((fired.len(), down.len()), (1, 1));
        let kept = before.firing_records();
        assert_eq!(kept.len(), 2, "{kept:?}");
        // Through the file's form.
        let kept: Vec<FiringRecord> =
            serde_json::from_str(&serde_json::to_string(&kept).unwrap()).unwrap();

        let mut after = engine(rules());
        let t1 = Instant::now();
        assert_eq!(
            after.restore(&kept, t1),
            vec![],
            "nothing to resolve at once"
        );
        assert_eq!(after.firing().len(), 2, "firing again, silently");
        assert_eq!(
            after.firing()[0].starts_at,
            fired[0].alert.starts_at,
            "since the first firing"
        );
        // Inside the hysteresis band: still firing; below it: resolved once.
        assert!(after
            .observe(&[reading(0, Some(90.0), Quality::Good)], t1)
            .is_empty());
        let resolved = after.observe(&[reading(0, Some(20.0), Quality::Good)], t1);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].transition, Transition::Resolved);
        assert!(after
            .observe(&[reading(0, Some(20.0), Quality::Good)], t1)
            .is_empty());
        let back = after.observe(&[reading(2, Some(1.0), Quality::Good)], t1);
        assert_eq!(back.len(), 1, "the device came back: resolved");
        assert!(after.firing_records().is_empty());

        // A rule gone from the config: resolved at start.
        let mut renamed = engine(vec![co_above_100("CoVeryHigh")]);
        let gone = renamed.restore(&kept, t1);
        assert_eq!(gone.len(), 2);
        assert!(gone.iter().all(|e| e.transition == Transition::Resolved
            && e.alert.ends_at.is_some()
            && e.alert.labels.iter().any(|(k, _)| k == "alertname")));
        assert!(renamed.firing().is_empty());
    }

    #[test]
    fn a_restored_alert_waits_for_its_run_time_point_or_is_resolved_after_the_grace() {
        let co_high = || co_above_100("CoHigh");
        let mqtt_point = |name: &str| FiringRecord {
            labels: {
                let mut before = engine(vec![co_high()]);
                let _ = before.observe(&[reading(0, Some(150.0), Quality::Good)], Instant::now());
                let mut labels = before.firing_records().remove(0).labels;
                for (k, v) in &mut labels {
                    if k == "point" {
                        *v = name.into();
                    }
                }
                labels
            },
            starts_at_us: 1_765_000_000_000_000,
        };
        let registry = Arc::new({
            let mut r = PointRegistry::new();
            r.insert(PointMeta::plain("bore_a.co_1", "plc_a", 1000))
                .unwrap();
            r
        });
        let mut e = Engine::new(
            "test-site",
            vec![co_high()],
            registry.clone(),
            Audit::disabled(),
        );
        let t0 = Instant::now();
        let kept = [mqtt_point("bore_c.co_9"), mqtt_point("bore_c.co_8")];
        assert!(e.restore(&kept, t0).is_empty(), "waiting, not resolved");
        assert_eq!(e.firing().len(), 2, "still shown firing");
        assert_eq!(e.firing_records(), kept.to_vec(), "and kept on disk");
        // The source names one of them; its first reading clears it.
        let mut meta = PointMeta::plain("bore_c.co_9", "plc_a", 1000);
        meta.unit = "ppm".into();
        let id = registry.register(meta).unwrap();
        let cleared = e.observe(&[reading(id.0, Some(20.0), Quality::Good)], t0);
        assert_eq!(cleared.len(), 1, "{cleared:?}");
        assert_eq!(cleared[0].transition, Transition::Resolved);
        // The other never appears: resolved after the grace, once.
        assert!(e.tick(t0 + Duration::from_secs(1)).is_empty());
        let late = e.tick(t0 + RESTORE_GRACE);
        assert_eq!(late.len(), 1);
        assert!(late[0]
            .alert
            .labels
            .contains(&("point".into(), "bore_c.co_8".into())));
        assert!(e.tick(t0 + RESTORE_GRACE * 2).is_empty());
        assert!(e.firing().is_empty() && e.firing_records().is_empty());
    }

    #[test]
    fn a_restored_alert_whose_labels_changed_is_resolved_under_the_old_ones() {
        let with_severity = |severity: &str| {
            let mut r = co_above_100("CoHigh");
            r.severity = severity.into();
            r
        };
        let mut before = engine(vec![with_severity("warning")]);
        let _ = before.observe(&[reading(0, Some(150.0), Quality::Good)], Instant::now());
        let kept = before.firing_records();
        let mut after = engine(vec![with_severity("critical")]);
        let told = after.restore(&kept, Instant::now());
        assert_eq!(told.len(), 1);
        assert_eq!(
            told[0].alert.labels, kept[0].labels,
            "the old alert, resolved"
        );
        assert!(after.firing().is_empty());
        // Still high: it fires anew, under the new labels.
        let fired = after.observe(&[reading(0, Some(150.0), Quality::Good)], Instant::now());
        assert_eq!(fired.len(), 1);
        assert!(fired[0]
            .alert
            .labels
            .contains(&("severity".into(), "critical".into())));
    }

    #[test]
    fn rules_bind_by_glob_and_alerts_carry_labels_and_annotations() {
        let mut e = engine(vec![
            rule(
                "CoHigh",
                "*.co_*",
                Condition::Above {
                    raise: 70.0,
                    clear: 60.0,
                },
                Duration::ZERO,
            ),
            rule("Typo", "bore_c.*", Condition::Stale, Duration::ZERO),
        ]);
        assert_eq!(e.unbound_rules(), vec!["Typo"]);
        let events = e.observe(&[reading(2, Some(120.0), Quality::Good)], Instant::now());
        assert_eq!(events.len(), 1);
        let labels: HashMap<_, _> = events[0].alert.labels.iter().cloned().collect();
        assert_eq!(labels["alertname"], "CoHigh");
        assert_eq!(labels["point"], "bore_b.co_1");
        assert_eq!(labels["device"], "plc_b");
        assert_eq!(labels["site"], "test-site");
        let ann: HashMap<_, _> = events[0].alert.annotations.iter().cloned().collect();
        assert_eq!(ann["value"], "120 ppm");
        assert!(ann["summary"].contains("above 70"));
        assert!(
            !ann["summary"].contains("above above"),
            "{}",
            ann["summary"]
        );
        assert_eq!(e.firing().len(), 1);
    }

    #[test]
    fn device_down_fires_once_per_device_not_once_per_point() {
        let mut e = engine(vec![rule(
            "DeviceDown",
            "*",
            Condition::DeviceDown,
            Duration::ZERO,
        )]);
        let comm = Quality::Bad(Reason::CommFailure);
        let events = e.observe(
            &[reading(0, None, comm), reading(1, None, comm)],
            Instant::now(),
        );
        assert_eq!(events.len(), 1);
        assert!(events[0]
            .alert
            .labels
            .iter()
            .any(|(k, v)| k == "device" && v == "plc_a"));
        assert!(!events[0].alert.labels.iter().any(|(k, _)| k == "point"));
        let resolved = e.observe(&[reading(0, Some(1.0), Quality::Good)], Instant::now());
        assert_eq!(resolved[0].transition, Transition::Resolved);
        assert!(resolved[0].alert.ends_at.is_some());
    }

    #[test]
    fn tick_fires_pending_alerts_when_their_time_comes() {
        let t0 = Instant::now();
        let mut e = engine(vec![rule(
            "Stale",
            "*",
            Condition::Stale,
            Duration::from_secs(5),
        )]);
        assert!(e
            .observe(&[reading(0, None, Quality::Bad(Reason::Stale))], t0)
            .is_empty());
        assert!(e.tick(t0 + Duration::from_secs(4)).is_empty());
        let fired = e.tick(t0 + Duration::from_secs(5));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].transition, Transition::Fired);
    }
}
