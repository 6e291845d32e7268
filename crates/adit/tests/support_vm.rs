//! Test support: a real VictoriaMetrics (Debian package `victoria-metrics`)
//! on a loopback port, used as the line-protocol database, and readers that
//! count exactly what it and SQLite hold.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A VictoriaMetrics process; killed when dropped.
pub struct VictoriaMetrics {
    pub port: u16,
    data: PathBuf,
    child: Option<Child>,
}

impl VictoriaMetrics {
    pub fn start(data: &Path) -> Self {
        Self::start_on(data, free_port())
    }

    pub fn start_on(data: &Path, port: u16) -> Self {
        let mut vm = Self {
            port,
            data: data.to_path_buf(),
            child: None,
        };
        vm.restart();
        vm
    }

    /// (Re)starts on the same port and data directory.
    pub fn restart(&mut self) {
        let child = Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.data.display()))
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "victoria-metrics must be installed (tests/run.sh installs the Debian package)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(self.port, "GET", "/health", "").is_none_or(|b| !b.contains("OK")) {
            assert!(Instant::now() < deadline, "victoria-metrics did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server gracefully (SIGTERM), so it flushes what it has
    /// confirmed; a SIGKILL would lose rows it already answered 204 for.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The questdb-rs connection string for this server (ILP v1 over HTTP).
    pub fn conf(&self) -> String {
        format!(
            "http::addr=127.0.0.1:{};protocol_version=1;request_timeout=5000;retry_timeout=1000;",
            self.port
        )
    }

    /// Every stored row of `readings` as (point, timestamp in ms) → count.
    /// VictoriaMetrics keeps each field of a row as a sample of its own
    /// series (`readings_value`, `readings_received_us`, …; no field is in
    /// every row): a row is counted once per tag set, by the field it has
    /// most samples of at that time (VictoriaMetrics drops NaN samples: a
    /// row whose only field is a NaN value is not seen; the tests that use
    /// this store no NaN). VictoriaMetrics makes the newest
    /// samples searchable with a delay, so this reads until two reads a
    /// second apart agree.
    pub fn samples(&self) -> HashMap<(String, i64), u32> {
        let mut last = self.samples_once();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = self.samples_once();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    fn samples_once(&self) -> HashMap<(String, i64), u32> {
        let _ = http(self.port, "GET", "/internal/force_flush", "");
        // match[]={__name__=~"readings_.+",point!=""}
        let body = http(
            self.port,
            "GET",
            "/api/v1/export?match%5B%5D=%7B__name__%3D~%22readings_.%2B%22%2Cpoint%21%3D%22%22%7D",
            "",
        )
        .unwrap_or_default();
        // (tag set, field, time) → samples
        let mut per_field: HashMap<(String, String, i64), u32> = HashMap::new();
        for line in body.lines().filter(|l| l.starts_with('{')) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let mut metric = v["metric"].as_object().unwrap().clone();
            let field = metric.remove("__name__").unwrap().to_string();
            let tags = serde_json::Value::Object(metric).to_string();
            for ts in v["timestamps"].as_array().unwrap() {
                *per_field
                    .entry((tags.clone(), field.clone(), ts.as_i64().unwrap()))
                    .or_insert(0) += 1;
            }
        }
        // (tag set, time) → rows: the most samples any field has there.
        let mut rows: HashMap<(String, i64), u32> = HashMap::new();
        for ((tags, _, ts), n) in per_field {
            let r = rows.entry((tags, ts)).or_insert(0);
            *r = (*r).max(n);
        }
        let mut out = HashMap::new();
        for ((tags, ts), n) in rows {
            let tags: serde_json::Value = serde_json::from_str(&tags).unwrap();
            let point = tags["point"].as_str().unwrap().to_string();
            *out.entry((point, ts)).or_insert(0) += n;
        }
        out
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal HTTP/1.0 client (no chunked encoding to decode); `None` if the
/// server cannot be reached.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Every row of the SQLite sink as (point, timestamp in ms).
pub fn sqlite_rows(db: &Path) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT p.name, r.ts FROM readings r JOIN points p ON p.id = r.point_id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? / 1000))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}
