//! MQTT test helpers: an adit config for a broker, a QoS 1 publisher that
//! counts the broker's acknowledgements (ground truth from outside adit),
//! a recording subscriber, metric and SQLite reads.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// A config with SQLite (fsync always) and one MQTT device whose keys and
/// tables are `device` (TOML after `[[device]] id protocol broker`).
pub fn config_text(dir: &std::path::Path, broker_port: u16, device: &str) -> String {
    format!(
        "site = \"mqtt-test\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"off\"\n\
         [spool]\nfsync = \"always\"\n\
         [sink.sqlite]\nbatch_max_delay = \"50ms\"\n\
         [[device]]\nid = \"edge\"\nprotocol = \"mqtt\"\nbroker = \"mqtt://127.0.0.1:{broker_port}\"\n\
         reconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\n{device}\n",
        data = dir.display()
    )
}

/// The sum of a metric's samples (counter or gauge) whose labels include
/// every `(k, v)`.
pub fn metric(app: &adit::app::App, name: &str, labels: &[(&str, &str)]) -> f64 {
    app.metrics.sample_sum(name, labels)
}

/// (value, time, quality, reason) rows of a point in SQLite's
/// `readings_view`, oldest first.
pub fn rows(
    db: &std::path::Path,
    point: &str,
) -> Vec<(Option<f64>, String, String, Option<String>)> {
    point_rows(
        db,
        "SELECT value, time, quality, reason FROM readings_view WHERE point = ?1 ORDER BY time",
        point,
    )
}

/// (value, ts in µs, quality code, reason) rows of a point in the
/// `readings` table, in time order: exact times, for interop checks.
pub fn rows_us(db: &std::path::Path, point: &str) -> Vec<(Option<f64>, i64, i64, Option<String>)> {
    point_rows(
        db,
        "SELECT r.value, r.ts, r.quality, r.reason FROM readings r JOIN points p ON p.id = r.point_id \
         WHERE p.name = ?1 ORDER BY r.ts, r.received_ts",
        point,
    )
}

/// Four-column rows of `sql` for `point` (empty while the file is not there).
fn point_rows<A, B, C, D>(db: &std::path::Path, sql: &str, point: &str) -> Vec<(A, B, C, D)>
where
    A: rusqlite::types::FromSql,
    B: rusqlite::types::FromSql,
    C: rusqlite::types::FromSql,
    D: rusqlite::types::FromSql,
{
    let Ok(c) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let Ok(mut s) = c.prepare(sql) else {
        return Vec::new();
    };
    s.query_map([point], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .map(|it| it.filter_map(Result::ok).collect())
    .unwrap_or_default()
}

pub fn count(db: &std::path::Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .ok()
        .and_then(|c| c.query_row(sql, [], |r| r.get(0)).ok())
        .unwrap_or(0)
}

/// A QoS 1 publisher whose broker acknowledgements are counted.
pub struct Publisher {
    pub client: AsyncClient,
    pub acked: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub fn connect(port: u16, id: &str) -> Self {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(32 << 20, 32 << 20)
            .set_clean_session(false);
        let (client, mut events) = AsyncClient::new(o, 10_000);
        let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let a = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Self {
            client,
            acked,
            task,
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub type Messages = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Records every message on `filter`.
pub async fn subscribe(port: u16, filter: &str) -> (Messages, tokio::task::JoinHandle<()>) {
    let id = format!("test-sub-{}", fastrand::u32(..));
    let (client, mut events) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 100);
    client.subscribe(filter, QoS::AtMostOnce).await.unwrap();
    // Only once the broker confirmed it does the subscription see anything.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(_) => {}
            Err(tokio::time::error::Elapsed { .. }) => panic!("no SUBACK for {filter} within 20 s"),
        }
    }
    let messages: Messages = Arc::default();
    let sink = messages.clone();
    let task = tokio::spawn(async move {
        let _client = client;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    sink.lock()
                        .unwrap()
                        .push((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (messages, task)
}
