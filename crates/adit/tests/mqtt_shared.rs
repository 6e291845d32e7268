//! Scale-out: two adit instances on one MQTT 5 shared subscription
//! (`$share/adit/...`) against a real Mosquitto split the messages between
//! them: disjoint sets whose union is everything the broker acknowledged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_mosquitto;
mod support_mqtt;
mod support_vm;
mod support_wait;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use adit::app::{App, HttpBind};
use adit_core::Timestamp;
use support_mosquitto::Mosquitto;
use support_mqtt::{metric, Publisher};
use support_vm::free_port;
use support_wait::wait_for;

const MESSAGES: i64 = 2000;

fn config(dir: &Path, port: u16, client: &str) -> String {
    format!(
        "site = \"mqtt-shared\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"off\"\n\
         [sink.sqlite]\nbatch_max_delay = \"50ms\"\n\
         [[device]]\nid = \"edge\"\nprotocol = \"mqtt\"\nbroker = \"mqtt://127.0.0.1:{port}\"\n\
         mqtt_version = \"5\"\nclient_id = \"{client}\"\n\
         [[device.subscription]]\nfilter = \"$share/adit/shared/+\"\ntemplate = \"shared/{{s}}\"\n\
         point = \"shared.{{s}}\"\ntimestamp = \"/ts\"\n",
        data = dir.display()
    )
}

fn values(db: &Path) -> Vec<i64> {
    let Ok(c) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let Ok(mut s) = c.prepare(
        "SELECT value FROM readings_view WHERE point LIKE 'shared.%' AND quality = 'good'",
    ) else {
        return Vec::new();
    };
    s.query_map([], |r| r.get::<_, f64>(0))
        .map(|it| it.filter_map(Result::ok).map(|v| v as i64).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_share_group_get_disjoint_sets_whose_union_is_everything() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Mosquitto::start(dir.path(), port);
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let start = |d: &Path, client: &str| {
        let config = adit_config::load_str(&config(d, port, client), "shared.toml").unwrap();
        async move { App::start(&config, HttpBind::BestEffort).await.unwrap() }
    };
    let a = start(&a_dir, "adit-share-a").await;
    let b = start(&b_dir, "adit-share-b").await;
    wait_for(Duration::from_secs(30), "both instances subscribed", || {
        metric(&a, "adit_mqtt_subscribed", &[]) == 1.0
            && metric(&b, "adit_mqtt_subscribed", &[]) == 1.0
    })
    .await;

    let publisher = Publisher::connect(port, "shared-pub");
    let base = Timestamp::now().as_micros() / 1000 - 60_000;
    for i in 0..MESSAGES {
        publisher
            .publish(
                &format!("shared/s{}", i % 10),
                format!("{{\"value\": {i}, \"ts\": {}}}", base + i),
            )
            .await;
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    wait_for(
        Duration::from_secs(30),
        "the broker's acknowledgements",
        || publisher.acked() >= MESSAGES as u64,
    )
    .await;
    let (a_db, b_db) = (a_dir.join("readings.db"), b_dir.join("readings.db"));
    wait_for(
        Duration::from_secs(30),
        "every message stored by one instance",
        || values(&a_db).len() + values(&b_db).len() >= MESSAGES as usize,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (va, vb) = (values(&a_db), values(&b_db));
    let (sa, sb): (HashSet<i64>, HashSet<i64>) =
        (va.iter().copied().collect(), vb.iter().copied().collect());
    println!(
        "figures: {MESSAGES} messages on $share/adit: instance a stored {}, instance b {}, both {}",
        sa.len(),
        sb.len(),
        sa.intersection(&sb).count()
    );
    assert_eq!(va.len(), sa.len(), "instance a stored a message twice");
    assert_eq!(vb.len(), sb.len(), "instance b stored a message twice");
    assert_eq!(sa.intersection(&sb).count(), 0, "a message went to both");
    let union: HashSet<i64> = sa.union(&sb).copied().collect();
    assert_eq!(union, (0..MESSAGES).collect::<HashSet<i64>>());
    assert!(
        !sa.is_empty() && !sb.is_empty(),
        "the broker split the load"
    );
    assert!(a.shutdown().await);
    assert!(b.shutdown().await);
}
