//! Alerts end to end: simulator faults become alerts in a real Prometheus
//! Alertmanager (Debian package `prometheus-alertmanager`, started here on a
//! loopback port), with the right labels, and resolve when the fault clears.
//! Prints the time from fault to alert for each rule.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::format_push_string
)]

mod support_http;
mod support_vm;
mod support_wait;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adit::app::{App, HttpBind};
use adit_sim_modbus::{Faults, Framing, Simulator, UnitSpec};
use support_http::webhook;
use support_vm::{free_port, http};
use support_wait::wait_for;

struct Alertmanager {
    port: u16,
    child: Child,
}

impl Alertmanager {
    fn start(dir: &std::path::Path) -> Self {
        let port = free_port();
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\n  group_wait: 0s\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager must be installed (tests/run.sh installs the Debian package)");
        let am = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(port, "GET", "/-/ready", "").is_none() {
            assert!(Instant::now() < deadline, "alertmanager did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        am
    }

    /// Active alerts as (alertname, subject label) pairs, with their labels.
    fn active(&self) -> Vec<serde_json::Value> {
        let body = http(
            self.port,
            "GET",
            "/api/v2/alerts?active=true&silenced=false&inhibited=false",
            "",
        )
        .unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    fn find(&self, alertname: &str, key: &str, subject: &str) -> Option<serde_json::Value> {
        self.active()
            .into_iter()
            .find(|a| a["labels"]["alertname"] == alertname && a["labels"][key] == subject)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &std::path::Path, sim: SocketAddr, am_port: u16, hook_port: u16) -> String {
    let mut text = format!(
        r#"site = "alert-test"
data_dir = "{}"
[http]
listen = "off"
[alerting]
alertmanager = ["http://127.0.0.1:{am_port}"]
webhook = ["http://127.0.0.1:{hook_port}/adit-alerts"]
resend_interval = "1s"

[[rule]]
name = "CoHigh"
points = "u1.co"
kind = "above"
raise = 70.0
clear = 60.0
severity = "warning"
check_first = "Jet fans running? Traffic jam in the bore?"

[[rule]]
name = "SensorStuck"
points = "u2.co"
kind = "flatline"
samples = 5
check_first = "CO cell failed or its transmitter froze: compare with the neighbouring station."

[[rule]]
name = "DeviceDown"
points = "u3.*"
kind = "device_down"
for = "300ms"
severity = "critical"
check_first = "Power and network of the PLC; adit probe modbus from the adit host."

[[rule]]
name = "BadQuality"
points = "u4.*"
kind = "bad_quality"
check_first = "4-20 mA loop: broken wire or short; the PLC sends a sentinel."

[[rule]]
name = "DeviceClock"
points = "u5.*"
kind = "clock"
max_skew = "5m"
check_first = "PLC real-time clock: RTC battery, NTP settings."
"#,
        dir.display()
    );
    for unit in 1..=5u8 {
        text.push_str(&format!(
            "[[device]]\nid = \"plc{unit}\"\nprotocol = \"modbus_tcp\"\naddress = \"{sim}\"\nunit_id = {unit}\npoll_interval = \"200ms\"\ntimeout = \"300ms\"\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\nbreaker_failures = 100\n[[device.point]]\nid = \"u{unit}.co\"\ntable = \"holding\"\naddress = 0\ntype = \"f32\"\nrange = [0, 300]\nunit = \"ppm\"\n"
        ));
        if unit == 5 {
            // This PLC stamps its values with its own clock (u32 Unix seconds).
            text.push_str("[device.clock]\ntable = \"holding\"\naddress = 900\ntype = \"u32\"\nunit = \"s\"\n");
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_become_alerts_in_alertmanager_with_labels_and_resolve_when_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start(dir.path());
    let units: Vec<UnitSpec> = (1..=5)
        .map(|id| UnitSpec {
            frozen: vec![("co_1".into(), 40.0)],
            ..UnitSpec::healthy(id)
        })
        .collect();
    let sim = Simulator::start_tcp(SocketAddr::from(([127, 0, 0, 1], 0)), Framing::Tcp, &units)
        .await
        .unwrap();
    let (hook_port, hook_bodies) = webhook().await;
    let text = config(dir.path(), sim.addr(), am.port, hook_port);
    let cfg = adit_config::load_str(&text, "alert.toml").unwrap();
    let app = App::start(&cfg, HttpBind::Required).await.unwrap();

    // Unit 2's value moves (unfrozen) so that only the injected fault makes it stuck.
    sim.unfreeze(2, "co_1");
    wait_for(Duration::from_secs(10), "heartbeat in alertmanager", || {
        am.find("AditWatchdogHeartbeat", "site", "alert-test")
            .is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(am.find("CoHigh", "point", "u1.co").is_none());

    let stuck = Faults {
        stuck: true,
        ..Faults::default()
    };
    let dead = Faults {
        no_answer: true,
        ..Faults::default()
    };
    let sentinel = Faults {
        out_of_range: true,
        ..Faults::default()
    };

    let t = Instant::now();
    sim.set(1, "co_1", 120.0);
    let co_high = wait_for(Duration::from_secs(10), "CoHigh", || {
        am.find("CoHigh", "point", "u1.co").is_some()
    })
    .await;
    let alert = am.find("CoHigh", "point", "u1.co").unwrap();
    assert_eq!(alert["labels"]["device"], "plc1");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["site"], "alert-test");
    assert_eq!(alert["labels"]["rule"], "above");
    assert_eq!(alert["annotations"]["value"], "120 ppm");
    assert!(alert["annotations"]["check_first"]
        .as_str()
        .unwrap()
        .contains("Jet fans"));

    let t2 = Instant::now();
    sim.set_faults(2, stuck);
    let stuck_after = wait_for(Duration::from_secs(10), "SensorStuck", || {
        am.find("SensorStuck", "point", "u2.co").is_some()
    })
    .await;
    sim.set_faults(3, dead);
    let down_after = wait_for(Duration::from_secs(10), "DeviceDown", || {
        am.find("DeviceDown", "device", "plc3").is_some()
    })
    .await;
    sim.set_faults(4, sentinel);
    let bad_after = wait_for(Duration::from_secs(10), "BadQuality", || {
        am.find("BadQuality", "point", "u4.co").is_some()
    })
    .await;
    // The device clock is right: no clock alert, and its readings carry it.
    assert!(am.find("DeviceClock", "point", "u5.co").is_none());
    sim.set_faults(
        5,
        Faults {
            clock_reset: true,
            ..Faults::default()
        },
    );
    let clock_after = wait_for(Duration::from_secs(10), "DeviceClock", || {
        am.find("DeviceClock", "point", "u5.co").is_some()
    })
    .await;
    let clock_alert = am.find("DeviceClock", "point", "u5.co").unwrap();
    assert_eq!(clock_alert["labels"]["rule"], "clock");
    println!(
        "fault → alert in alertmanager: CoHigh {co_high:?}, SensorStuck {stuck_after:?} (5 samples at 200 ms), DeviceDown {down_after:?} (for 300 ms, timeout 300 ms), BadQuality {bad_after:?}, DeviceClock (RTC reset to 1970) {clock_after:?}; setup {:?}",
        t2.duration_since(t)
    );
    // The 1970 reading is kept, flagged, stored at its receive time with the
    // device's timestamp in its own column.
    // A wait, not a snapshot: with plc3 dead beside it, u5's polls may come
    // late enough for a stale marker in between.
    let u5 = app.registry().id_of("u5.co").unwrap();
    let current = || app.live().lock().unwrap().get(u5).cloned().unwrap();
    wait_for(Duration::from_secs(10), "u5.co clock_invalid", || {
        current().quality == adit_core::Quality::Bad(adit_core::Reason::ClockInvalid)
    })
    .await;
    let state = current();
    assert!(
        state.source_ts.0 < 86_400_000_000,
        "the device's own 1970 time is kept: {:?}",
        state.source_ts
    );
    assert!(state.value.is_some(), "the value itself is kept");

    // Clear every fault: every alert resolves.
    sim.set(1, "co_1", 40.0);
    for unit in 2..=5 {
        sim.set_faults(unit, Faults::default());
    }
    sim.unfreeze(2, "co_1");
    let resolved = wait_for(Duration::from_secs(15), "all resolved", || {
        am.find("CoHigh", "point", "u1.co").is_none()
            && am.find("SensorStuck", "point", "u2.co").is_none()
            && am.find("DeviceDown", "device", "plc3").is_none()
            && am.find("BadQuality", "point", "u4.co").is_none()
            && am.find("DeviceClock", "point", "u5.co").is_none()
    })
    .await;
    println!("faults cleared → every alert resolved in alertmanager after {resolved:?}");
    assert!(
        am.find("AditWatchdogHeartbeat", "site", "alert-test")
            .is_some(),
        "the heartbeat keeps firing"
    );
    let bodies = hook_bodies.lock().unwrap().clone();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("\"alertname\":\"CoHigh\"") && b.contains("\"endsAt\"")),
        "the webhook got CoHigh and its resolution"
    );
    assert!(app.shutdown().await);

    let decisions: Vec<serde_json::Value> = adit_audit::read_entries(&dir.path().join("audit"))
        .unwrap()
        .into_iter()
        .filter(|e| e["kind"] == "alert_decision")
        .collect();
    assert!(
        decisions.len() >= 8,
        "every fire and resolve is audited: {decisions:?}"
    );
    assert!(decisions.iter().any(|d| d["data"]["rule"] == "CoHigh"
        && d["data"]["outcome"] == "fired"
        && d["data"]["inputs"]["value"] == 120.0));
    adit_audit::verify(&dir.path().join("audit")).unwrap();

    // The alert history is in the database too, through the spool.
    let conn = rusqlite::Connection::open(dir.path().join("readings.db")).unwrap();
    let history: Vec<(String, String, String)> = conn
        .prepare("SELECT rule, subject, state FROM alerts ORDER BY ts")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for state in ["firing", "resolved"] {
        assert!(
            history
                .iter()
                .any(|(rule, subject, s)| rule == "CoHigh" && subject == "u1.co" && s == state),
            "CoHigh {state} missing from the alerts table: {history:?}"
        );
    }
    assert!(
        history
            .iter()
            .any(|(rule, subject, s)| rule == "DeviceDown" && subject == "plc3" && s == "firing"),
        "{history:?}"
    );
}
