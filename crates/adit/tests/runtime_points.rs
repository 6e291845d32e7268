//! Points that appear at run time (as an MQTT wildcard or a Sparkplug birth
//! names them): a test pushed source registers them while adit runs. They
//! are stored in both sinks under their names, shown by `/api/points`,
//! matched by a glob rule, kept with the same ids across a restart; the
//! `max_points + 1`-th is refused, counted and audited.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_http;
mod support_vm;
mod support_wait;

use std::net::SocketAddr;
use std::time::Duration;

use adit::app::{App, HttpBind};
use adit_core::{PointMeta, Quality, Reading, Timestamp, Value};
use adit_pipeline::{Source, SourceContext, SourceFactory, SourceFuture};
use adit_sim_modbus::Simulator;
use support_http::{webhook, Answer, IlpServer};
use support_vm::{free_port, http};
use support_wait::wait_for;

/// Names four points at run time, one more than `max_points` leaves room
/// for, and publishes each (those it got) every 50 ms; `mqtt.b` reads 60.
struct NamingSource;

impl Source for NamingSource {
    fn name(&self) -> &'static str {
        "naming"
    }
    fn protocol(&self) -> &'static str {
        "test"
    }
    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> SourceFuture<'a> {
        Box::pin(async move {
            let mut ids = Vec::new();
            for name in ["mqtt.a", "mqtt.b", "mqtt.c", "mqtt.d"] {
                let mut meta = PointMeta::plain(name, "broker", 50);
                meta.unit = "ppm".into();
                if let Some(id) = ctx.points.register(meta) {
                    ids.push((name, id));
                }
            }
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = ctx.shutdown.cancelled() => return Ok(()),
                }
                let now = Timestamp::now();
                let batch = ids
                    .iter()
                    .map(|&(name, id)| Reading {
                        point: id,
                        value: Some(Value::F64(if name == "mqtt.b" { 60.0 } else { 10.0 })),
                        quality: Quality::Good,
                        source_ts: now,
                        received_ts: now,
                    })
                    .collect();
                if ctx.out.send(batch).await.is_err() {
                    return Ok(());
                }
            }
        })
    }
}

fn naming() -> Vec<(&'static str, SourceFactory)> {
    vec![(
        "test",
        Box::new(|| Box::new(NamingSource) as Box<dyn Source>),
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_named_at_run_time_reaches_every_sink_the_api_and_the_rules_and_one_too_many_is_refused(
) {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), &[1])
        .await
        .unwrap();
    let ilp = IlpServer::start(Answer::Accept);
    let (hook_port, hooks) = webhook().await;
    let http_port = free_port();
    // One configured point, room for three more.
    let text = format!(
        "site = \"runtime\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
         [pipeline]\nmax_points = 4\n\
         [sink.sqlite]\nbatch_max_delay = \"50ms\"\n\
         [sink.questdb]\nconf = \"http::addr=127.0.0.1:{port};protocol_version=1;\"\nbatch_max_delay = \"50ms\"\n\
         [alerting]\nwebhook = [\"http://127.0.0.1:{hook_port}/hook\"]\n\
         [[rule]]\nname = \"RuntimeHigh\"\npoints = \"mqtt.*\"\nkind = \"above\"\nraise = 50\nclear = 40\n\
         [[device]]\nid = \"plc1\"\nprotocol = \"modbus_tcp\"\naddress = \"{sim}\"\npoll_interval = \"100ms\"\n\
         [[device.point]]\nid = \"plc1.co\"\ntable = \"holding\"\naddress = 0\ntype = \"f32\"\n",
        data = dir.path().display(),
        port = ilp.port,
        sim = sim.addr()
    );
    let config = adit_config::load_str(&text, "runtime.toml").unwrap();
    let app = App::start_with_sources(&config, HttpBind::Required, naming())
        .await
        .unwrap();
    let addr = app.http_addr.unwrap();
    let db = dir.path().join("readings.db");
    let sqlite_rows = |point: &str| -> i64 {
        rusqlite::Connection::open(&db)
            .ok()
            .and_then(|c| {
                c.query_row(
                    "SELECT count(*) FROM readings_view WHERE point = ?1 AND unit = 'ppm'",
                    [point],
                    |r| r.get(0),
                )
                .ok()
            })
            .unwrap_or(0)
    };
    wait_for(Duration::from_secs(30), "run-time points in SQLite", || {
        ["mqtt.a", "mqtt.b", "mqtt.c"]
            .iter()
            .all(|p| sqlite_rows(p) > 0)
    })
    .await;
    wait_for(
        Duration::from_secs(30),
        "run-time points in the line-protocol database",
        || {
            let lines = ilp.lines();
            ["mqtt.a", "mqtt.b", "mqtt.c"].iter().all(|p| {
                lines
                    .iter()
                    .any(|l| l.contains(&format!("point={p},device=broker")))
            })
        },
    )
    .await;
    let api: serde_json::Value =
        serde_json::from_str(&http(addr.port(), "GET", "/api/points", "").unwrap()).unwrap();
    let ids: Vec<&str> = api["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"mqtt.a") && ids.contains(&"mqtt.c"),
        "{ids:?}"
    );
    assert!(!ids.contains(&"mqtt.d"), "refused: {ids:?}");
    wait_for(
        Duration::from_secs(30),
        "RuntimeHigh for mqtt.b at the webhook",
        || {
            hooks.lock().unwrap().iter().any(|b| {
                b.contains("\"alertname\":\"RuntimeHigh\"") && b.contains("\"point\":\"mqtt.b\"")
            })
        },
    )
    .await;
    let refused = app.metrics.points_refused.get();
    assert_eq!(
        refused, 1,
        "mqtt.d, the max_points + 1-th, is refused and counted"
    );
    let registry = app.registry();
    let id_of_a = registry.id_of("mqtt.a").unwrap();
    drop(registry);
    assert!(app.shutdown().await);
    let entries = adit_audit::read_entries(&config.audit.dir).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "point_refused" && e["data"]["point"] == "mqtt.d"),
        "the refusal is audited"
    );

    // A restart keeps the run-time points and their ids (the spool's point
    // table names them), before the source names them again.
    let app = App::start_with_sources(&config, HttpBind::Required, Vec::new())
        .await
        .unwrap();
    assert_eq!(app.registry().id_of("mqtt.a"), Some(id_of_a));
    let shown = http(
        app.http_addr.unwrap().port(),
        "GET",
        "/api/points/mqtt.a",
        "",
    )
    .unwrap();
    assert!(shown.contains("\"id\":\"mqtt.a\""), "{shown}");
    assert!(app.shutdown().await);
    println!(
        "run-time points: 3 registered beside 1 configured (max_points 4), stored in SQLite and the line-protocol database, shown by /api/points, RuntimeHigh fired for mqtt.b; 1 refused; ids kept across a restart"
    );
}
