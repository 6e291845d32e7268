//! The OPC UA collector against the OPC UA simulator (async-opcua server,
//! started here on a loopback port): subscribed values with good quality
//! and source timestamps; a node that does not exist bad for that point
//! alone; a server restart on the same port after which values resume
//! without restarting adit (this fails on a client that does not work
//! around async-opcua's publish trap); a server that goes quiet while
//! keeping the connection; `SignAndEncrypt` with two policies; an untrusted
//! server certificate refused, named, and accepted after `adit opcua
//! trust`; a server that offers only `None` refused. Ground truth: the
//! simulator's own clock and update counter, and SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_mqtt;
mod support_wait;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use adit::app::{App, HttpBind};
use adit_sim_opcua::{FreezeRelay, OpcuaSim, SimOptions};
use support_mqtt::{count, metric, rows_us};
use support_wait::wait_for;
use tokio::net::TcpListener;

fn sim_options(pki: &Path) -> SimOptions {
    let mut o = SimOptions::new(pki);
    o.update_interval = Duration::from_millis(200);
    o
}

async fn start_sim(o: &SimOptions, addr: SocketAddr) -> OpcuaSim {
    let listener = TcpListener::bind(addr).await.unwrap();
    OpcuaSim::start(o, listener).unwrap()
}

/// Puts the simulator's certificate into adit's `trusted/` (what an
/// engineer does with `adit opcua trust` after checking the thumbprint).
fn trust_sim(sim_pki: &Path, adit_pki: &Path) {
    let der = std::fs::read(sim_pki.join("own/cert.der")).unwrap();
    let name = adit_opcua::client::cert_file_name(&der.clone().into()).unwrap();
    std::fs::create_dir_all(adit_pki.join("trusted")).unwrap();
    std::fs::write(adit_pki.join("trusted").join(name), der).unwrap();
}

fn config(dir: &Path, port: u16, device: &str) -> String {
    format!(
        "site = \"opcua-test\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"off\"\n\
         [spool]\nfsync = \"always\"\n\
         [sink.sqlite]\nbatch_max_delay = \"50ms\"\n\
         [[device]]\nid = \"plc\"\nprotocol = \"opcua\"\nendpoint = \"opc.tcp://127.0.0.1:{port}/\"\n\
         pki_dir = \"pki\"\nreconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n{device}\n",
        data = dir.display()
    )
}

const POINTS: &str = "\
[[device.group]]
name = \"fast\"
interval = \"200ms\"

[[device.point]]
id = \"north.co\"
node = \"nsu=urn:adit:sim:tunnel;s=Tunnel.North.CO\"
group = \"fast\"
unit = \"ppm\"

[[device.point]]
id = \"north.fan1\"
node = \"nsu=urn:adit:sim:tunnel;s=Tunnel.North.Fan1\"
group = \"fast\"

[[device.point]]
id = \"tunnel.mode\"
node = \"nsu=urn:adit:sim:tunnel;s=Tunnel.Mode\"
group = \"fast\"

[[device.point]]
id = \"north.energy_wh\"
node = \"nsu=urn:adit:sim:tunnel;s=Tunnel.North.EnergyWh\"
group = \"fast\"

[[device.point]]
id = \"south.co.by_path\"
browse_path = [\"Tunnel\", \"South\", \"CO\"]
browse_namespace = \"urn:adit:sim:tunnel\"
group = \"fast\"

[[device.point]]
id = \"south.nowhere\"
browse_path = [\"Tunnel\", \"South\", \"Nowhere\"]
browse_namespace = \"urn:adit:sim:tunnel\"
group = \"fast\"

[[device.point]]
id = \"north.missing\"
node = \"nsu=urn:adit:sim:tunnel;s=Tunnel.North.NoSuchSensor\"
group = \"fast\"
";

async fn start_adit(text: &str) -> App {
    let config = adit_config::load_str(text, "opcua.toml").unwrap();
    App::start(&config, HttpBind::BestEffort).await.unwrap()
}

fn good_rows_after(db: &Path, point: &str, after_us: i64) -> usize {
    rows_us(db, point)
        .iter()
        .filter(|(v, ts, q, _)| v.is_some() && *q == 0 && *ts > after_us)
        .count()
}

fn now_us() -> i64 {
    adit_core::Timestamp::now().as_micros()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribed_values_arrive_and_resume_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim_pki = dir.path().join("sim-pki");
    let options = sim_options(&sim_pki);
    let sim = start_sim(&options, SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let addr = sim.addr();
    trust_sim(&sim_pki, &dir.path().join("pki"));
    let app = start_adit(&config(dir.path(), addr.port(), POINTS)).await;
    let db = dir.path().join("readings.db");

    // Values with good quality and the server's source timestamps.
    let t0 = now_us();
    wait_for(Duration::from_secs(30), "good CO values", || {
        good_rows_after(&db, "north.co", 0) >= 5
    })
    .await;
    let co = rows_us(&db, "north.co");
    let (v, ts, _, _) = co.iter().rev().find(|r| r.2 == 0).unwrap();
    assert!((0.0..300.0).contains(&v.unwrap()), "CO {v:?}");
    assert!(
        (ts - now_us()).abs() < 10_000_000,
        "source time {ts} vs now"
    );
    println!("first CO rows: {} (ts {ts}, started {t0})", co.len());
    // A constant value on a live subscription stays current (re-confirmed).
    wait_for(Duration::from_secs(10), "fan and mode rows", || {
        good_rows_after(&db, "north.fan1", 0) >= 3 && count(&db, "SELECT count(*) FROM readings r JOIN points p ON p.id = r.point_id WHERE p.name = 'tunnel.mode'") >= 3
    })
    .await;
    // UInt64 arrives as an integer.
    wait_for(Duration::from_secs(10), "energy rows", || {
        good_rows_after(&db, "north.energy_wh", 0) >= 1
    })
    .await;
    // A node that does not exist is bad for that point only, by its name.
    wait_for(
        Duration::from_secs(10),
        "the missing node is BadNodeIdUnknown",
        || {
            rows_us(&db, "north.missing")
                .iter()
                .any(|r| r.0.is_none() && r.3.as_deref() == Some("BadNodeIdUnknown"))
        },
    )
    .await;
    // async-opcua's server accepts the item and reports the status in its
    // first notification; other servers refuse the item (then it is retried).
    println!(
        "items refused at creation: {}",
        metric(&app, "adit_opcua_items_failed", &[("device", "plc")])
    );

    // A variable that goes bad is stored with its status name and code.
    sim.set_bad(
        "Tunnel.North.CO",
        adit_opcua::opcua::types::StatusCode::BadSensorFailure,
    );
    wait_for(
        Duration::from_secs(10),
        "CO stored as BadSensorFailure",
        || {
            rows_us(&db, "north.co")
                .iter()
                .any(|r| r.2 == 2 && r.3.as_deref() == Some("BadSensorFailure"))
        },
    )
    .await;
    sim.clear_faults();

    // Restart the server on the same port, same certificate.
    let updates_before = sim.updates();
    assert!(updates_before > 0);
    // A browse path resolves to its node; one that leads nowhere is bad alone.
    wait_for(Duration::from_secs(10), "values by browse path", || {
        good_rows_after(&db, "south.co.by_path", 0) >= 2
            && rows_us(&db, "south.nowhere")
                .iter()
                .any(|r| r.0.is_none() && r.2 == 2)
    })
    .await;
    println!(
        "a path that leads nowhere: {:?}",
        rows_us(&db, "south.nowhere").first()
    );
    // It has no monitored item: the live subscription does not re-confirm it.
    let nowhere = rows_us(&db, "south.nowhere").len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rows_us(&db, "south.nowhere").len(), nowhere);
    sim.shutdown().await;
    let down_at = now_us();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sim = start_sim(&options, addr).await;
    let restarted = Instant::now();
    let restarted_us = now_us();
    wait_for(
        Duration::from_secs(30),
        "CO values after the restart",
        || good_rows_after(&db, "north.co", restarted_us) >= 3,
    )
    .await;
    let first_fresh = rows_us(&db, "north.co")
        .iter()
        .filter(|r| r.0.is_some() && r.2 == 0 && r.1 > restarted_us)
        .map(|r| r.1)
        .min()
        .unwrap();
    println!(
        "restart → first fresh value: {:.2} s (source time), {:.2} s until 3 rows were stored",
        (first_fresh - restarted_us) as f64 / 1e6,
        restarted.elapsed().as_secs_f64()
    );
    // In between, the points were bad (comm_failure), last values kept.
    assert!(
        rows_us(&db, "north.co")
            .iter()
            .any(|r| r.0.is_none() && r.2 == 2 && r.1 >= down_at - 1_000_000),
        "no comm_failure row while the server was down"
    );
    assert!(sim.updates() > 0);
    app.shutdown().await;
    sim.shutdown().await;
}

/// A server restarted with its namespace table in another order (an
/// upgrade, a plugin loaded first) serves other nodes under the indexes
/// adit resolved before. The library recreates the monitored items with
/// the old node ids; their values must never be stored as the points'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_never_taken_from_a_namespace_that_moved_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim_pki = dir.path().join("sim-pki");
    let mut options = sim_options(&sim_pki);
    let sim = start_sim(&options, SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let addr = sim.addr();
    let index_before = sim.namespace_index();
    trust_sim(&sim_pki, &dir.path().join("pki"));
    // A poll group too: a Read may go out on the new connection.
    let points = format!(
        "{POINTS}\n[[device.group]]\nname = \"polled\"\nmode = \"poll\"\ninterval = \"50ms\"\n\n\
         [[device.point]]\nid = \"north.no2\"\nnode = \"nsu=urn:adit:sim:tunnel;s=Tunnel.North.NO2\"\ngroup = \"polled\"\n"
    );
    let app = start_adit(&config(dir.path(), addr.port(), &points)).await;
    let db = dir.path().join("readings.db");
    wait_for(Duration::from_secs(30), "good CO and NO2 values", || {
        good_rows_after(&db, "north.co", 0) >= 3 && good_rows_after(&db, "north.no2", 0) >= 3
    })
    .await;

    sim.shutdown().await;
    options.decoy_namespace = true;
    let sim = start_sim(&options, addr).await;
    assert_eq!(
        sim.namespace_index(),
        index_before + 1,
        "the decoy did not move the tunnel's namespace"
    );
    let restarted_us = now_us();
    wait_for(
        Duration::from_secs(40),
        "CO values from the moved namespace",
        || {
            good_rows_after(&db, "north.co", restarted_us) >= 3
                && good_rows_after(&db, "north.no2", restarted_us) >= 3
        },
    )
    .await;
    // Give a late decoy value time to reach the database.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let decoys = count(
        &db,
        &format!(
            "SELECT count(*) FROM readings WHERE value = {}",
            adit_sim_opcua::DECOY_VALUE
        ),
    );
    let rebuilds = metric(
        &app,
        "adit_opcua_rebuilds_total",
        &[("device", "plc"), ("reason", "namespaces")],
    );
    // No Publish or Read goes out on the new session before the check, so
    // nothing had to be dropped here (the drop is the safety net, unit
    // tested in adit-opcua's `pending`).
    let unverified = metric(
        &app,
        "adit_opcua_dropped_total",
        &[("device", "plc"), ("reason", "unverified")],
    );
    println!(
        "decoy rows stored: {decoys}; rebuilds for moved namespaces: {rebuilds}; values dropped as unverified: {unverified}"
    );
    assert_eq!(
        decoys, 0,
        "values of another namespace were stored as the points'"
    );
    assert!(rebuilds >= 1.0, "the moved namespace was not noticed");
    app.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_quiet_is_detected_and_the_client_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let sim_pki = dir.path().join("sim-pki");
    let sim = start_sim(
        &sim_options(&sim_pki),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await;
    let relay =
        FreezeRelay::start(TcpListener::bind("127.0.0.1:0").await.unwrap(), sim.addr()).unwrap();
    trust_sim(&sim_pki, &dir.path().join("pki"));
    let app = start_adit(&config(dir.path(), relay.addr().port(), POINTS)).await;
    let db = dir.path().join("readings.db");
    wait_for(Duration::from_secs(30), "good CO values", || {
        good_rows_after(&db, "north.co", 0) >= 3
    })
    .await;
    relay.set_frozen(true);
    let frozen_at = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "the quiet subscription is noticed",
        || {
            metric(
                &app,
                "adit_opcua_rebuilds_total",
                &[("device", "plc"), ("reason", "silent")],
            ) >= 1.0
        },
    )
    .await;
    println!(
        "quiet server noticed after {:.2} s",
        frozen_at.elapsed().as_secs_f64()
    );
    relay.set_frozen(false);
    let resumed = now_us();
    wait_for(Duration::from_secs(30), "values after the freeze", || {
        good_rows_after(&db, "north.co", resumed) >= 2
    })
    .await;
    app.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_and_encrypt_works_with_two_policies_and_username() {
    for policy in ["Basic256Sha256", "Aes256_Sha256_RsaPss"] {
        let dir = tempfile::tempdir().unwrap();
        let sim_pki = dir.path().join("sim-pki");
        let mut o = sim_options(&sim_pki);
        o.users = vec![("operator".into(), "s3cret".into())];
        let sim = start_sim(&o, SocketAddr::from(([127, 0, 0, 1], 0))).await;
        trust_sim(&sim_pki, &dir.path().join("pki"));
        std::env::set_var("ADIT_TEST_OPCUA_PASSWORD", "s3cret");
        let device = format!(
            "security_mode = \"sign_and_encrypt\"\nsecurity_policy = \"{policy}\"\n\
             username = \"operator\"\npassword = \"${{ADIT_TEST_OPCUA_PASSWORD}}\"\n{POINTS}"
        );
        let app = start_adit(&config(dir.path(), sim.addr().port(), &device)).await;
        let db = dir.path().join("readings.db");
        wait_for(
            Duration::from_secs(30),
            &format!("values over {policy}"),
            || good_rows_after(&db, "north.co", 0) >= 2,
        )
        .await;
        app.shutdown().await;
        sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_is_refused_named_and_accepted_after_trust() {
    let dir = tempfile::tempdir().unwrap();
    let sim_pki = dir.path().join("sim-pki");
    let sim = start_sim(
        &sim_options(&sim_pki),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await;
    let app = start_adit(&config(dir.path(), sim.addr().port(), POINTS)).await;
    let rejected = dir.path().join("pki/rejected");
    wait_for(
        Duration::from_secs(30),
        "the server certificate in rejected/",
        || std::fs::read_dir(&rejected).is_ok_and(|mut d| d.next().is_some()),
    )
    .await;
    let file = std::fs::read_dir(&rejected)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        file.file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with("].der"),
        "{file:?}"
    );
    // The audit log names the file and the command.
    let audit_dir = dir.path().join("audit");
    wait_for(Duration::from_secs(30), "the rejection audited", || {
        adit_audit::read_entries(&audit_dir).is_ok_and(|entries| {
            entries.iter().any(|e| {
                e.to_string().contains("opcua_certificate_rejected")
                    && e.to_string().contains("adit opcua trust")
                    && e.to_string()
                        .contains(&*file.file_name().unwrap().to_string_lossy())
            })
        })
    })
    .await;
    // No value was taken from an untrusted server.
    let db = dir.path().join("readings.db");
    assert_eq!(good_rows_after(&db, "north.co", 0), 0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_adit"))
        .args(["opcua", "trust"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(!file.exists());
    wait_for(Duration::from_secs(60), "values once trusted", || {
        good_rows_after(&db, "north.co", 0) >= 2
    })
    .await;
    app.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_offering_only_none_is_refused_without_allow_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = sim_options(&dir.path().join("sim-pki"));
    o.offer_insecure = true;
    o.offer_secure = false;
    let sim = start_sim(&o, SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let app = start_adit(&config(dir.path(), sim.addr().port(), POINTS)).await;
    let audit_dir = dir.path().join("audit");
    wait_for(Duration::from_secs(30), "the refusal audited", || {
        adit_audit::read_entries(&audit_dir).is_ok_and(|entries| {
            entries.iter().any(|e| {
                let t = e.to_string();
                t.contains("opcua_refused")
                    && t.contains("None/None")
                    && t.contains("does not fall back")
            })
        })
    })
    .await;
    let db = dir.path().join("readings.db");
    assert_eq!(good_rows_after(&db, "north.co", 0), 0);
    app.shutdown().await;
    // The config itself refuses `none` without allow_insecure; with it, values flow.
    let insecure = format!("security_mode = \"none\"\n{POINTS}");
    let err = adit_config::load_str(&config(dir.path(), sim.addr().port(), &insecure), "x.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("allow_insecure"), "{err}");
    let dir2 = tempfile::tempdir().unwrap();
    let allowed = format!("security_mode = \"none\"\nallow_insecure = true\n{POINTS}");
    let app = start_adit(&config(dir2.path(), sim.addr().port(), &allowed)).await;
    let db2 = dir2.path().join("readings.db");
    wait_for(
        Duration::from_secs(30),
        "values over None when allowed",
        || good_rows_after(&db2, "north.co", 0) >= 2,
    )
    .await;
    let audit2 = dir2.path().join("audit");
    assert!(adit_audit::read_entries(&audit2)
        .unwrap()
        .iter()
        .any(|e| e.to_string().contains("opcua_insecure_connect")));
    app.shutdown().await;
    sim.shutdown().await;
}
