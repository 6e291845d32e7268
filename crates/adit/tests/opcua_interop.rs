//! Interop with an independent OPC UA stack: python asyncua
//! (`tests/interop/asyncua_server.py`, installed from `PyPI` by
//! `tests/run.sh`) serves known values of many types under its own
//! namespace index, over `Basic256Sha256` `SignAndEncrypt` with its own
//! self-signed certificate. adit must resolve the namespace by URI, store
//! every value exactly (subscribed and polled), store a variable with a bad
//! status under its name, and refuse the certificate for a host name it
//! does not carry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_mqtt;
mod support_wait;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use adit::app::{App, HttpBind};
use support_wait::wait_for;

/// The asyncua server process; killed when dropped.
struct PyServer(Child);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the server; returns it and the namespace index it gave our URI.
fn start_asyncua(port: u16, dir: &Path) -> (PyServer, u16) {
    start_asyncua_without(port, dir, "")
}

/// Starts the server without the variables named in `without` (a comma-
/// separated list).
fn start_asyncua_without(port: u16, dir: &Path, without: &str) -> (PyServer, u16) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/asyncua_server.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .arg(dir)
        .arg(without)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 must be installed (tests/run.sh installs asyncua)");
    let stdout = child.stdout.take().unwrap();
    let server = PyServer(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    let ns = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!("asyncua server did not start ({line:?}); pip install asyncua==2.1.0")
        });
    (server, ns)
}

const URI: &str = "urn:adit:interop:asyncua";

fn config(dir: &Path, host: &str, port: u16) -> String {
    let mut points = String::new();
    for (id, node, group, extra) in [
        ("double", "s=Double", "subscribed", ""),
        ("float", "s=Float", "subscribed", ""),
        ("int16", "s=Int16", "subscribed", ""),
        ("uint32", "s=UInt32", "subscribed", ""),
        ("int64", "s=Int64", "subscribed", ""),
        ("boolean", "s=Boolean", "subscribed", ""),
        ("string", "s=String", "subscribed", ""),
        ("datetime", "s=DateTime", "subscribed", ""),
        ("array2", "s=Array", "subscribed", "index = 2\n"),
        ("broken", "s=Broken", "subscribed", ""),
        ("counter", "s=Counter", "subscribed", ""),
        ("numeric", "i=5001", "polled", ""),
        ("double_polled", "s=Double", "polled", ""),
        (
            "double_by_path",
            "i=85",
            "subscribed",
            "browse_path = [\"Interop\", \"Double\"]\n",
        ),
    ] {
        let _ = write!(
            points,
            "[[device.point]]\nid = \"py.{id}\"\nnode = \"{ns}{node}\"\ngroup = \"{group}\"\n{extra}\n",
            ns = if node.starts_with("i=85") { String::new() } else { format!("nsu={URI};") }
        );
    }
    format!(
        "site = \"opcua-interop\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"off\"\n\
         [spool]\nfsync = \"always\"\n[sink.sqlite]\nbatch_max_delay = \"50ms\"\n\
         [[device]]\nid = \"asyncua\"\nprotocol = \"opcua\"\n\
         endpoint = \"opc.tcp://{host}:{port}/interop/\"\npki_dir = \"pki\"\n\
         reconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n\
         [[device.group]]\nname = \"subscribed\"\ninterval = \"200ms\"\n\
         [[device.group]]\nname = \"polled\"\nmode = \"poll\"\ninterval = \"300ms\"\n\n{points}",
        data = dir.display()
    )
}

/// A stored (value as SQL text, quality, reason).
type Row = (String, i64, Option<String>);

/// The newest stored row of a point.
fn last(db: &Path, point: &str) -> Option<Row> {
    let c = rusqlite::Connection::open(db).ok()?;
    c.query_row(
        "SELECT quote(r.value), r.quality, r.reason FROM readings r JOIN points p ON p.id = r.point_id \
         WHERE p.name = ?1 ORDER BY r.received_ts DESC LIMIT 1",
        [point],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .ok()
}

fn trust(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_adit"))
        .args(["opcua", "trust"])
        .arg(dir.join("server-cert.der"))
        .arg("--pki-dir")
        .arg(dir.join("pki"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_python_asyncua_are_stored_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, ns) = start_asyncua(port, dir.path());
    assert_ne!(ns, 2, "the test needs an index unlike async-opcua's");
    trust(dir.path());
    let config = adit_config::load_str(&config(dir.path(), "localhost", port), "i.toml").unwrap();
    let app = App::start(&config, HttpBind::BestEffort).await.unwrap();
    let db = dir.path().join("readings.db");
    let good = |v: &str| (v.to_string(), 0, None);
    let expected: Vec<(&str, Row)> = vec![
        ("py.double", good("12.625")),
        ("py.float", good("-3.5")),
        ("py.int16", good("-12345")),
        ("py.uint32", good("4000000000")),
        ("py.int64", good("-9007199254740993")),
        ("py.boolean", good("1")),
        ("py.string", good("'ventilation auto'")),
        ("py.datetime", good("1796407200000")),
        ("py.array2", good("3.5")),
        ("py.numeric", good("42")),
        ("py.double_polled", good("12.625")),
        ("py.double_by_path", good("12.625")),
        (
            "py.broken",
            ("NULL".into(), 2, Some("BadSensorFailure".into())),
        ),
    ];
    // Until the first publish, points are marked stale (their bound runs
    // from start-up), so a row may be a stale marker first: wait for the
    // newest rows to settle, then compare (a mismatch names the point).
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(60)
        && !expected
            .iter()
            .all(|(p, want)| last(&db, p).as_ref() == Some(want))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("interop values settled after {:?}", started.elapsed());
    for (point, want) in &expected {
        assert_eq!(last(&db, point).as_ref(), Some(want), "{point}");
    }
    // The counter moves: subscription notifications keep arriving.
    let first: i64 = last(&db, "py.counter").unwrap().0.parse().unwrap();
    wait_for(Duration::from_secs(10), "the counter moving", || {
        last(&db, "py.counter")
            .and_then(|(v, _, _)| v.parse::<i64>().ok())
            .is_some_and(|v| v >= first + 5)
    })
    .await;
    app.shutdown().await;
}

/// Rows of `point` with a good value received after `after_us`.
fn good_rows_after(db: &Path, point: &str, after_us: i64) -> i64 {
    rusqlite::Connection::open(db)
        .ok()
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM readings r JOIN points p ON p.id = r.point_id \
                 WHERE p.name = ?1 AND r.quality = 0 AND r.value IS NOT NULL AND r.received_ts > ?2",
                rusqlite::params![point, after_us],
                |r| r.get(0),
            )
            .ok()
        })
        .unwrap_or(0)
}

/// A server restarted without a variable refuses its monitored item when
/// the library recreates the subscription; the library forgets such an
/// item (async-opcua ignores that result). adit finds it missing, retries
/// it, and values resume once a later restart serves the variable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_refused_after_a_server_restart_comes_back_when_the_node_does() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start_asyncua(port, dir.path());
    trust(dir.path());
    let config = adit_config::load_str(&config(dir.path(), "localhost", port), "i.toml").unwrap();
    let app = App::start(&config, HttpBind::BestEffort).await.unwrap();
    let db = dir.path().join("readings.db");
    wait_for(Duration::from_secs(60), "counter values", || {
        good_rows_after(&db, "py.counter", 0) >= 3
    })
    .await;

    // Restarted without the counter: the recreated item is refused.
    drop(server);
    let without = start_asyncua_without(port, dir.path(), "Counter");
    let relinked = adit_core::Timestamp::now().as_micros();
    wait_for(Duration::from_secs(60), "values after the restart", || {
        good_rows_after(&db, "py.double", relinked) >= 1
    })
    .await;
    wait_for(
        Duration::from_secs(20),
        "the lost item counted as failed",
        || {
            app.metrics
                .sample_sum("adit_opcua_items_failed", &[("device", "asyncua")])
                >= 1.0
        },
    )
    .await;
    assert_eq!(good_rows_after(&db, "py.counter", relinked), 0);

    // Served again: the retry (every 30 s) creates the item.
    drop(without);
    let _server = start_asyncua(port, dir.path());
    let back = adit_core::Timestamp::now().as_micros();
    let started = std::time::Instant::now();
    wait_for(Duration::from_secs(90), "counter values again", || {
        good_rows_after(&db, "py.counter", back) >= 3
    })
    .await;
    println!(
        "counter values again {:.1} s after the variable came back",
        started.elapsed().as_secs_f64()
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_the_endpoint_host_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, _) = start_asyncua(port, dir.path());
    trust(dir.path());
    // asyncua's certificate names `localhost`, not 127.0.0.1.
    let config = adit_config::load_str(&config(dir.path(), "127.0.0.1", port), "i.toml").unwrap();
    let app = App::start(&config, HttpBind::BestEffort).await.unwrap();
    let audit = dir.path().join("audit");
    wait_for(
        Duration::from_secs(60),
        "the host-name refusal audited",
        || {
            adit_audit::read_entries(&audit).is_ok_and(|entries| {
                entries.iter().any(|e| {
                    let t = e.to_string();
                    t.contains("BadCertificateHostNameInvalid") && t.contains("127.0.0.1")
                })
            })
        },
    )
    .await;
    assert!(last(&dir.path().join("readings.db"), "py.double").is_none_or(|r| r.1 != 0));
    app.shutdown().await;
}
