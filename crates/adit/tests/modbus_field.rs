//! Modbus field behaviour end to end, against the simulator over real loopback
//! TCP and a real pseudo terminal: device isolation, recovery after a device
//! restart, RTU with a silent unit, gateways, and every fault's quality.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use adit::app::{App, HttpBind};
use adit_core::{Quality, Reason, Value};
use adit_sim_modbus::{Faults, Framing, SimHandle, Simulator, UnitSpec};

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

fn header(dir: &std::path::Path) -> String {
    format!(
        "site = \"field-test\"\ndata_dir = \"{}\"\n[http]\nlisten = \"off\"\n",
        dir.display()
    )
}

/// A device table with the simulator's CO (f32) and NO2 (u16 × 0.01) points.
fn device(id: &str, protocol: &str, endpoint: &str, unit: u8, extra: &str) -> String {
    format!(
        r#"
[[device]]
id = "{id}"
protocol = "{protocol}"
{endpoint}
unit_id = {unit}
{extra}
[[device.point]]
id = "{id}.co"
table = "holding"
address = 0
type = "f32"
range = [0, 300]
[[device.point]]
id = "{id}.no2"
table = "holding"
address = 4
scale = 0.01
range = [0, 5]
"#
    )
}

struct Running {
    app: App,
    _dir: tempfile::TempDir,
}

async fn start(body: impl FnOnce(&std::path::Path) -> String) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let text = body(dir.path());
    let config =
        adit_config::load_str(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let app = App::start(&config, HttpBind::Required).await.unwrap();
    Running { app, _dir: dir }
}

impl Running {
    fn quality(&self, point: &str) -> Option<Quality> {
        let id = self.app.registry().id_of(point)?;
        let live = self.app.live();
        let live = live.lock().unwrap_or_else(PoisonError::into_inner);
        live.get(id).filter(|s| s.readings > 0).map(|s| s.quality)
    }
    fn readings(&self, point: &str) -> u64 {
        let id = self.app.registry().id_of(point).unwrap();
        let live = self.app.live();
        let live = live.lock().unwrap_or_else(PoisonError::into_inner);
        live.get(id).map_or(0, |s| s.readings)
    }
    fn value(&self, point: &str) -> Option<Value> {
        let id = self.app.registry().id_of(point).unwrap();
        let live = self.app.live();
        let live = live.lock().unwrap_or_else(PoisonError::into_inner);
        live.get(id).and_then(|s| s.value.clone())
    }
    /// Sum of a counter over every series whose labels include all `labels`.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.app.metrics.counter_sum(name, labels)
    }
    /// (observations, observations ≤ `le`) of a histogram for the given devices.
    fn histogram(&self, name: &str, devices: &[String], le: f64) -> (u64, u64) {
        let mut total = 0;
        let mut below = 0;
        for family in self
            .app
            .metrics
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
        {
            for m in family.get_metric() {
                if !m
                    .get_label()
                    .iter()
                    .any(|l| l.name() == "device" && devices.iter().any(|d| d == l.value()))
                {
                    continue;
                }
                let h = m.get_histogram();
                total += h.get_sample_count();
                below += h
                    .get_bucket()
                    .iter()
                    .find(|b| (b.upper_bound() - le).abs() < 1e-9)
                    .map_or(0, prometheus::proto::Bucket::cumulative_count);
            }
        }
        (total, below)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_devices_two_dead_one_slow_the_healthy_keep_their_schedule() {
    let mut sims: Vec<SimHandle> = Vec::new();
    for i in 0..20u8 {
        let mut faults = Faults::default();
        match i {
            0 | 1 => faults.no_answer = true,
            2 => faults.delay = Some(Duration::from_secs(3)),
            _ => {}
        }
        let unit = UnitSpec {
            faults,
            ..UnitSpec::healthy(1)
        };
        sims.push(
            Simulator::start_tcp(any_port(), Framing::Tcp, &[unit])
                .await
                .unwrap(),
        );
    }
    let addrs: Vec<SocketAddr> = sims.iter().map(SimHandle::addr).collect();
    let run = start(|dir| {
        let mut text = header(dir);
        for (i, a) in addrs.iter().enumerate() {
            let endpoint = format!("address = \"{a}\"");
            text.push_str(&device(&format!("d{i:02}"), "modbus_tcp", &endpoint, 1, "poll_interval = \"200ms\"\ntimeout = \"500ms\"\nreconnect_min = \"250ms\"\nreconnect_max = \"2s\""));
        }
        text
    })
    .await;
    let started = Instant::now();

    for dead in ["d00.co", "d01.co", "d02.co"] {
        wait_until(Duration::from_secs(3), dead, || {
            run.quality(dead) == Some(Quality::Bad(Reason::CommFailure))
        })
        .await;
    }
    let dead_bad_after = started.elapsed();
    // Bad within one timeout (500 ms) of the first poll, which comes within
    // one interval (200 ms: polls are phase-spread), plus connect time and slack.
    // A loaded machine (start-up of 20 simulators and the app) gets 1 s of slack.
    assert!(
        dead_bad_after < Duration::from_millis(200 + 500 + 1000),
        "dead devices took {dead_bad_after:?} to turn bad"
    );

    let healthy: Vec<String> = (3..20).map(|i| format!("d{i:02}")).collect();
    let before: Vec<u64> = healthy
        .iter()
        .map(|d| run.readings(&format!("{d}.co")))
        .collect();
    // Lateness over the window only (start-up is not the schedule's fault).
    let (polls_before, on_time_before) =
        run.histogram("adit_modbus_poll_lateness_seconds", &healthy, 0.05);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let secs = window.elapsed().as_secs_f64();
    let rates: Vec<f64> = healthy
        .iter()
        .zip(&before)
        .map(|(d, b)| (run.readings(&format!("{d}.co")) - b) as f64 / secs)
        .collect();
    let slowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let (polls, on_time) = run.histogram("adit_modbus_poll_lateness_seconds", &healthy, 0.05);
    let (polls, on_time) = (polls - polls_before, on_time - on_time_before);
    let late_share = 1.0 - on_time as f64 / polls as f64;
    let mut report = String::new();
    let _ = write!(report, "dead/slow devices bad after {dead_bad_after:?}; healthy: {} polls, slowest {slowest:.2} polls/s (schedule 5/s), {:.2}% later than 50 ms", polls, late_share * 100.0);
    println!("{report}");
    assert!(slowest >= 4.5, "{report}");
    assert!(
        late_share <= 0.01,
        "p99 poll lateness must be under 50 ms: {report}"
    );
    for d in &healthy {
        let point = format!("{d}.co");
        wait_until(Duration::from_secs(3), &point, || {
            run.quality(&point) == Some(Quality::Good)
        })
        .await;
    }
    assert!(run.app.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_resumes_within_one_backoff_period_after_the_device_restarts() {
    let sim = Simulator::start(any_port(), &[1]).await.unwrap();
    let addr = sim.addr();
    let run = start(|dir| {
        header(dir) + &device("plc", "modbus_tcp", &format!("address = \"{addr}\""), 1, "poll_interval = \"100ms\"\ntimeout = \"300ms\"\nreconnect_min = \"200ms\"\nreconnect_max = \"1s\"")
    })
    .await;
    wait_until(Duration::from_secs(3), "good", || {
        run.quality("plc.co") == Some(Quality::Good)
    })
    .await;

    sim.stop().await;
    wait_until(Duration::from_secs(3), "bad after stop", || {
        run.quality("plc.co") == Some(Quality::Bad(Reason::CommFailure))
    })
    .await;
    // Down long enough for the reconnect backoff to reach its maximum.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let restarted = Simulator::start(addr, &[1]).await.unwrap();
    let back_after = wait_until(Duration::from_secs(5), "good after restart", || {
        run.quality("plc.co") == Some(Quality::Good)
    })
    .await;
    println!("device restart → polling good again after {back_after:?} (reconnect_max 1 s, interval 100 ms)");
    assert!(
        // One backoff period (1 s) + one interval + slack for a loaded
        // machine; still short of a second backoff period.
        back_after <= Duration::from_millis(1000 + 100 + 700),
        "took {back_after:?}"
    );

    // Dropped connections (a PLC resetting its sockets) heal the same way.
    let mut restarted = restarted;
    let before = run.counter("adit_modbus_connects_total", &[("outcome", "ok")]);
    restarted.drop_connections().await;
    wait_until(Duration::from_secs(3), "a new connection", || {
        run.counter("adit_modbus_connects_total", &[("outcome", "ok")]) > before
    })
    .await;
    wait_until(Duration::from_secs(3), "good after reconnect", || {
        run.quality("plc.co") == Some(Quality::Good)
    })
    .await;
    assert!(run.app.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_bus_with_a_silent_unit_keeps_polling_the_other() {
    let (sim, path) = Simulator::start_rtu_pty(&[UnitSpec::healthy(1)]).unwrap();
    let serial = format!("serial_port = \"{path}\"\nbaud_rate = 115200\nparity = \"none\"");
    let run = start(|dir| {
        let opts = "poll_interval = \"200ms\"\ntimeout = \"150ms\"\nreconnect_min = \"300ms\"\nreconnect_max = \"2s\"\nbreaker_failures = 2";
        header(dir) + &device("alive", "modbus_rtu", &serial, 1, opts) + &device("silent", "modbus_rtu", &serial, 3, opts)
    })
    .await;
    wait_until(Duration::from_secs(5), "alive good", || {
        run.quality("alive.co") == Some(Quality::Good)
    })
    .await;
    wait_until(Duration::from_secs(5), "silent bad", || {
        run.quality("silent.co") == Some(Quality::Bad(Reason::CommFailure))
    })
    .await;
    let before = run.readings("alive.co");
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rate = (run.readings("alive.co") - before) as f64 / window.elapsed().as_secs_f64();
    let skipped = run.counter(
        "adit_modbus_polls_skipped_total",
        &[("device", "silent"), ("reason", "breaker_open")],
    );
    println!("rtu: alive unit {rate:.2} polls/s (schedule 5/s) beside a silent one; silent polls skipped by its breaker: {skipped}");
    assert!(rate >= 3.5, "the live unit slowed to {rate:.2}/s");
    assert!(skipped > 0.0, "the silent unit's breaker must open");
    assert_eq!(run.quality("alive.co"), Some(Quality::Good));
    assert!(run.app.shutdown().await);
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_units_behind_one_rtu_over_tcp_gateway_share_one_connection() {
    let sim = Simulator::start_tcp(
        any_port(),
        Framing::RtuOverTcp,
        &[UnitSpec::healthy(1), UnitSpec::healthy(2)],
    )
    .await
    .unwrap();
    let endpoint = format!("address = \"{}\"", sim.addr());
    let run = start(|dir| {
        let opts = "poll_interval = \"100ms\"\ntimeout = \"300ms\"";
        header(dir)
            + &device("u1", "modbus_rtu_over_tcp", &endpoint, 1, opts)
            + &device("u2", "modbus_rtu_over_tcp", &endpoint, 2, opts)
    })
    .await;
    wait_until(Duration::from_secs(3), "both good", || {
        run.readings("u1.co") > 5
            && run.readings("u2.co") > 5
            && run.quality("u1.co") == Some(Quality::Good)
            && run.quality("u2.co") == Some(Quality::Good)
    })
    .await;
    // A timeout or link error (a loaded machine) drops the link: each is
    // one reconnect of the same shared connection, never one per unit.
    let link_lost = run.counter("adit_modbus_requests_total", &[("outcome", "timeout")])
        + run.counter("adit_modbus_requests_total", &[("outcome", "link_error")]);
    let connects = run.counter("adit_modbus_connects_total", &[("outcome", "ok")]);
    // A reconnect may still be pending when the counters are read.
    assert!(
        (1.0..=1.0 + link_lost).contains(&connects),
        "one shared connection: {connects} connects, {link_lost} link losses"
    );
    assert!(run.app.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_becomes_its_quality_and_a_read_limit_is_respected() {
    let unit = |id: u8, apply: &[&str]| {
        let mut faults = Faults::default();
        for spec in apply {
            faults.apply(spec).unwrap();
        }
        UnitSpec {
            faults,
            ..UnitSpec::healthy(id)
        }
    };
    let sim = Simulator::start_tcp(
        any_port(),
        Framing::Tcp,
        &[
            unit(1, &["nan"]),
            unit(2, &["out_of_range"]),
            unit(3, &["exception=4"]),
            unit(4, &["max_registers=4"]),
            unit(5, &["max_registers=4"]),
            // A gateway answering for a slave that is not there.
            unit(6, &["exception=11"]),
        ],
    )
    .await
    .unwrap();
    let endpoint = format!("address = \"{}\"", sim.addr());
    let run = start(|dir| {
        let opts = "poll_interval = \"100ms\"\ntimeout = \"300ms\"";
        header(dir)
            + &device("nan", "modbus_tcp", &endpoint, 1, opts)
            + &device("sentinel", "modbus_tcp", &endpoint, 2, opts)
            + &device("refusing", "modbus_tcp", &endpoint, 3, opts)
            + &device(
                "limited",
                "modbus_tcp",
                &endpoint,
                4,
                &format!("{opts}\nmax_registers_per_read = 4\nmax_gap = 2"),
            )
            + &device(
                "greedy",
                "modbus_tcp",
                &endpoint,
                5,
                &format!("{opts}\nmax_gap = 2"),
            )
            + &device("behind_gateway", "modbus_tcp", &endpoint, 6, opts)
    })
    .await;
    let expect = [
        ("nan.co", Quality::Bad(Reason::Conversion)),
        ("nan.no2", Quality::Good),
        ("sentinel.co", Quality::Bad(Reason::OutOfRange)),
        ("sentinel.no2", Quality::Bad(Reason::OutOfRange)),
        ("refusing.co", Quality::Bad(Reason::DeviceException(4))),
        ("limited.co", Quality::Good),
        ("limited.no2", Quality::Good),
        ("greedy.co", Quality::Bad(Reason::DeviceException(3))),
        (
            "behind_gateway.co",
            Quality::Bad(Reason::DeviceException(11)),
        ),
        (
            "behind_gateway.no2",
            Quality::Bad(Reason::DeviceException(11)),
        ),
    ];
    // The gateway's 0x0B is a failed poll: after `breaker_failures` of them
    // the breaker opens and skipped polls read comm_failure, so once seen
    // the exception may have given way to that.
    let mut gateway_seen = std::collections::HashSet::new();
    wait_until(Duration::from_secs(10), "every fault's quality", || {
        // Every point looked at on every pass (no short cut), so a gateway
        // point's exception is seen even while another point still lags.
        expect.iter().fold(true, |all, (p, q)| {
            let now = run.quality(p);
            if now == Some(*q) {
                gateway_seen.insert(*p);
                return all;
            }
            all && p.starts_with("behind_gateway")
                && gateway_seen.contains(p)
                && now == Some(Quality::Bad(Reason::CommFailure))
        })
    })
    .await;
    // A refusing device is up (it answers); one a gateway reports absent is
    // down, for its breaker and its alert, while the gateway's link stays.
    let up = |d: &str| run.counter("adit_modbus_device_up", &[("device", d)]);
    assert_eq!((up("refusing"), up("behind_gateway")), (1.0, 0.0));
    assert_eq!(
        run.value("sentinel.co"),
        Some(Value::F64(-9999.0)),
        "an out-of-range value is kept for operators to see"
    );
    assert_eq!(run.value("nan.co"), None, "NaN is never stored as a value");
    assert!(run.app.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_keeps_dropping_its_connections_is_reconnected_each_time() {
    let mut faults = Faults::default();
    faults.apply("disconnect_every=500ms").unwrap();
    let sim = Simulator::start_tcp(
        any_port(),
        Framing::Tcp,
        &[UnitSpec {
            faults,
            ..UnitSpec::healthy(1)
        }],
    )
    .await
    .unwrap();
    let endpoint = format!("address = \"{}\"", sim.addr());
    let run = start(|dir| {
        header(dir) + &device("flaky", "modbus_tcp", &endpoint, 1, "poll_interval = \"100ms\"\ntimeout = \"300ms\"\nreconnect_min = \"50ms\"\nreconnect_max = \"200ms\"")
    })
    .await;
    wait_until(Duration::from_secs(5), "four connections", || {
        run.counter("adit_modbus_connects_total", &[("outcome", "ok")]) >= 4.0
    })
    .await;
    wait_until(Duration::from_secs(2), "good again", || {
        run.quality("flaky.co") == Some(Quality::Good)
    })
    .await;
    let good = run.counter("adit_modbus_requests_total", &[("outcome", "ok")]);
    let failed = run.counter("adit_modbus_requests_total", &[("outcome", "link_error")])
        + run.counter("adit_modbus_requests_total", &[("outcome", "timeout")]);
    println!("connection dropped every 500 ms: {good} good requests, {failed} failed, each drop healed by a reconnect");
    assert!(
        good > 4.0 * failed.max(1.0),
        "most polls must succeed between drops: {good} ok vs {failed} failed"
    );
    assert!(run.app.shutdown().await);
}

async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_starved_by_a_slow_neighbour_shows_stale_in_the_api_with_its_last_value_and_age() {
    let mut slow = Faults::default();
    slow.apply("delay=1500ms").unwrap();
    let sim = Simulator::start_tcp(
        any_port(),
        Framing::RtuOverTcp,
        &[
            UnitSpec::healthy(1),
            UnitSpec {
                faults: slow,
                ..UnitSpec::healthy(2)
            },
        ],
    )
    .await
    .unwrap();
    let endpoint = format!("address = \"{}\"", sim.addr());
    let run = start(|dir| {
        let text = header(dir).replace("listen = \"off\"", "listen = \"127.0.0.1:0\"");
        text + &device(
            "fast",
            "modbus_rtu_over_tcp",
            &endpoint,
            1,
            "poll_interval = \"200ms\"\ntimeout = \"3s\"",
        ) + &device(
            "slow",
            "modbus_rtu_over_tcp",
            &endpoint,
            2,
            "poll_interval = \"5s\"\ntimeout = \"3s\"",
        )
    })
    .await;
    let addr = run.app.http_addr.unwrap();
    // The slow unit's 1.5 s answers hold the shared line; the fast unit (stale
    // after 3 × 200 ms) goes stale meanwhile and keeps its last value.
    let mut stale = serde_json::Value::Null;
    // A point listed as stale may not show its marker yet (the marker goes
    // through ingest after the checker flags it), and one never polled (a
    // slow start) has no value to keep: wait for one with both.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let (status, body) = get_json(addr, "/api/points?device=fast&quality=stale").await;
        assert_eq!(status, 200);
        let shown = body["points"].as_array().and_then(|points| {
            points
                .iter()
                .find(|p| p["quality"] == "bad" && p["reason"] == "stale" && p["value"].is_number())
        });
        if let Some(point) = shown {
            stale = point.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("stale point from the API: {stale}");
    assert_eq!(
        stale["stale"], true,
        "a point must go stale behind the slow unit"
    );
    assert_eq!(stale["quality"], "bad");
    assert_eq!(stale["reason"], "stale");
    assert!(
        stale["value"].is_number(),
        "the last value is kept: {stale}"
    );
    assert!(stale["age_ms"].as_u64().unwrap() >= 600, "{stale}");

    let (status, body) = get_json(addr, "/api/points/fast.co").await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], "fast.co");
    assert_eq!(body["device"], "fast");
    let (status, _) = get_json(addr, "/api/points/no.such.point").await;
    assert_eq!(status, 404);
    let (_, all) = get_json(addr, "/api/points").await;
    assert_eq!(all["count"], 4);
    let (status, _) = get_json(addr, "/api/points?colour=red").await;
    assert_eq!(status, 400, "unknown filters are rejected");
    assert!(run.app.shutdown().await);
}
