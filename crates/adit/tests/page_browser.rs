//! The control-room page in a real browser: headless Chromium (Debian) loads
//! it from a running adit polling the Modbus simulator, and the test reads
//! the DOM: values arrive; when the device dies its points turn visibly bad
//! or stale with their last values kept; when the event stream goes silent
//! (a proxy between page and adit stops forwarding) the page says NO
//! CONNECTION on every value. Screenshots land in
//! `target/tmp/page-*.png` (the CI artifacts).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support_browser.rs"]
mod support_browser;

#[path = "support_demo.rs"]
mod support_demo;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adit::app::{App, HttpBind};
use adit_config::Config;
use adit_sim_modbus::Simulator;
use serde_json::Value;
use support_browser::Browser;

fn config(sim: SocketAddr, dir: &Path) -> Config {
    support_demo::modbus_demo_config(sim, dir)
}

/// Copies `r` to `w`, holding bytes back while `frozen`.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16384];
    loop {
        let Ok(n) = r.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        while frozen.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A TCP proxy that can go silent: connections stay open, bytes stop.
async fn proxy(to: SocketAddr, frozen: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(to).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, frozen.clone()));
            tokio::spawn(pump(sr, cw, frozen.clone()));
        }
    });
    addr
}

#[derive(Debug, Clone)]
struct Row {
    id: String,
    state: String,
    badge: String,
    num: String,
    last: String,
}

const ROWS_JS: &str = "return [...document.querySelectorAll('tr.point')].map(r => ({ \
    id: r.dataset.id, state: r.dataset.state || '', \
    badge: r.querySelector('.badge').textContent, \
    num: r.querySelector('.num').textContent, \
    last: r.querySelector('.last').textContent }));";

fn rows(b: &Browser) -> Vec<Row> {
    let v = b.eval(ROWS_JS);
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|r| Row {
                    id: r["id"].as_str().unwrap_or("").into(),
                    state: r["state"].as_str().unwrap_or("").into(),
                    badge: r["badge"].as_str().unwrap_or("").into(),
                    num: r["num"].as_str().unwrap_or("").into(),
                    last: r["last"].as_str().unwrap_or("").into(),
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_page(
    b: &Browser,
    limit: Duration,
    what: &str,
    cond: impl Fn(&[Row]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let r = rows(b);
        if cond(&r) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for the page to show {what}; rows: {:?}",
            r.iter().take(5).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn save(png: &[u8], name: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {} ({} bytes)", path.display(), png.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_live_values_a_dead_device_as_bad_with_last_values_and_a_silent_stream_as_no_connection(
) {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), &[1, 2])
        .await
        .unwrap();
    let app = App::start(&config(sim.addr(), dir.path()), HttpBind::Required)
        .await
        .unwrap();
    let http = app.http_addr.unwrap();
    let frozen = Arc::new(AtomicBool::new(false));
    let via = proxy(http, frozen.clone()).await;
    let browser = tokio::task::spawn_blocking(Browser::start).await.unwrap();

    let loaded = Instant::now();
    browser.goto(&format!("http://{via}/"));
    let n_points = app.registry().len();
    let first = wait_page(&browser, Duration::from_secs(30), "every point live", |r| {
        r.len() == n_points && r.iter().all(|x| x.state == "live" && x.num != "—")
    })
    .await;
    println!(
        "page: {n_points} points live {:?} after navigation ({} bytes of page)",
        loaded.elapsed(),
        adit::web::assets::PAGE_BYTES
    );
    let _ = first;
    let ids: std::collections::BTreeSet<String> =
        rows(&browser).into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), n_points, "one row per point");
    assert!(ids.contains("bore_a.co_1"), "{ids:?}");
    let conn = browser.eval("return document.body.dataset.conn");
    assert_eq!(conn, Value::from("live"));
    save(&browser.screenshot(), "page-live.png");

    // The device dies: its points turn bad or stale, each keeping a value.
    sim.stop().await;
    let died = Instant::now();
    let shown = wait_page(
        &browser,
        Duration::from_secs(20),
        "every point bad or stale",
        |r| {
            r.iter().all(|x| {
                (x.state == "bad" || x.state == "stale")
                    && (x.badge.contains("BAD") || x.badge.contains("STALE"))
                    && x.num != "—"
                    && x.last.starts_with("last value")
            })
        },
    )
    .await;
    println!(
        "device death → page shows every point bad/stale with last value in {:?} (poll 1 s, timeout 500 ms)",
        died.elapsed()
    );
    let _ = shown;
    let devices =
        browser.eval("return [...document.querySelectorAll('.dev-state')].map(e => e.textContent)");
    assert!(
        devices
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d.as_str().unwrap().contains("DOWN")),
        "every device shown down: {devices}"
    );
    save(&browser.screenshot(), "page-device-dead.png");

    // The stream goes silent (connection open, no bytes): NO CONNECTION.
    frozen.store(true, Ordering::Release);
    let silent = Instant::now();
    wait_page(
        &browser,
        Duration::from_secs(10),
        "NO CONNECTION on every value",
        |r| {
            !r.is_empty()
                && r.iter()
                    .all(|x| x.badge.contains("NO CONNECTION") && x.last.contains("no connection"))
        },
    )
    .await;
    let lost_after = silent.elapsed();
    let banner = browser.eval(
        "return !document.getElementById('lost-banner').hidden && document.body.dataset.conn",
    );
    assert_eq!(banner, Value::from("lost"));
    println!("silent stream → page marks every value NO CONNECTION in {lost_after:?} (its limit: 3 s without an event)");
    save(&browser.screenshot(), "page-no-connection.png");

    // Bytes flow again: the page reconnects and shows the present.
    frozen.store(false, Ordering::Release);
    wait_page(
        &browser,
        Duration::from_secs(20),
        "the connection back",
        |r| !r.is_empty() && r.iter().all(|x| !x.badge.contains("NO CONNECTION")),
    )
    .await;

    drop(browser);
    assert!(
        tokio::time::timeout(Duration::from_secs(20), app.shutdown())
            .await
            .is_ok(),
        "shutdown must not wait on open event streams"
    );
}

/// One HTTP/1.1 GET; the status line and the whole response.
async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .expect("answer within 20 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_and_api_refuse_strangers_with_401_and_audit_every_attempt() {
    const TOKEN: &str = "control-room-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), &[1, 2])
        .await
        .unwrap();
    let mut config = config(sim.addr(), dir.path());
    config.http.auth.token = Some(adit_config::Secret::new(TOKEN.into()));
    let app = App::start(&config, HttpBind::Required).await.unwrap();
    let http = app.http_addr.unwrap();

    // The page's shell (no site data) loads, so the page can ask for the
    // token; everything with data refuses.
    for path in ["/", "/assets/app.js"] {
        assert_eq!(get(http, path, None).await.0, 200, "{path} is the shell");
    }
    for path in [
        "/events",
        "/api/points",
        "/api/points/bore_a.co_1",
        "/api/trends",
    ] {
        let (status, text) = get(http, path, None).await;
        assert_eq!(status, 401, "{path} without a token: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{path}: {text}"
        );
        let (status, _) = get(http, path, Some("Bearer not-the-token-at-all")).await;
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    let (status, text) = get(http, "/api/points", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, 200, "{text}");
    let (status, _) = get(http, "/api/trends", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, 200);

    // In a real browser: the page asks for the token, then shows values.
    let browser = tokio::task::spawn_blocking(Browser::start).await.unwrap();
    browser.goto(&format!("http://{http}/"));
    let asked = browser.answer_prompt(TOKEN, Duration::from_secs(20));
    assert!(asked.contains("token"), "the prompt: {asked}");
    let n_points = app.registry().len();
    let shown = wait_page(
        &browser,
        Duration::from_secs(30),
        "values after the token",
        |r| r.len() == n_points && r.iter().all(|x| x.state == "live"),
    )
    .await;
    println!(
        "auth: the page asked for the token and showed {n_points} live points {shown:?} later"
    );
    drop(browser);
    // Scrapers and probes stay open: they carry no site data.
    assert_eq!(get(http, "/metrics", None).await.0, 200);
    assert_eq!(get(http, "/healthz", None).await.0, 200);
    assert!(app.shutdown().await);

    let audit = adit_audit::read_entries(&dir.path().join("audit")).unwrap();
    let denied: Vec<&Value> = audit
        .iter()
        .filter(|e| e["kind"] == "http_denied")
        .collect();
    let granted: Vec<&Value> = audit
        .iter()
        .filter(|e| e["kind"] == "http_access")
        .collect();
    // 4 paths × (no token, a wrong one) and the page's first try.
    // Each entry stands for itself (unless it is a summary) and for the
    // repeats the rate limit held back.
    let accounted = |entries: &[&Value]| -> u64 {
        entries
            .iter()
            .map(|e| {
                u64::from(e["data"]["summary"] != true) + e["data"]["suppressed"].as_u64().unwrap()
            })
            .sum()
    };
    println!(
        "auth: {} refusal entries standing for {} refused requests, {} access entries for {} granted",
        denied.len(),
        accounted(&denied),
        granted.len(),
        accounted(&granted)
    );
    assert!(!denied.is_empty(), "a refusal is audited: {audit:?}");
    assert_eq!(
        accounted(&denied),
        9,
        "every refused request is counted: {denied:?}"
    );
    // Two by this test; the browser's stream and trends after the token.
    assert!(
        accounted(&granted) >= 3,
        "every granted request is counted: {granted:?}"
    );
    let first = &denied[0]["data"];
    assert_eq!(first["status"], 401);
    assert_eq!(first["path"], "/events");
    assert!(
        first["from"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{first}"
    );
    assert!(
        granted
            .iter()
            .any(|e| e["data"]["who"] == "token" && e["data"]["path"] == "/api/points"),
        "the granted access is audited with who, path and address: {granted:?}"
    );
    assert!(
        !serde_json::to_string(&audit).unwrap().contains(TOKEN),
        "the token itself is never written"
    );
    adit_audit::verify(&dir.path().join("audit")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_basic_auth_the_whole_page_is_guarded_so_the_browser_asks() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), &[1, 2])
        .await
        .unwrap();
    let mut config = config(sim.addr(), dir.path());
    config.http.auth.basic = Some((
        "control-room".into(),
        adit_config::Secret::new("a long pass phrase".into()),
    ));
    let app = App::start(&config, HttpBind::Required).await.unwrap();
    let http = app.http_addr.unwrap();
    for path in ["/", "/assets/app.js", "/events", "/api/points"] {
        let (status, text) = get(http, path, None).await;
        assert_eq!(status, 401, "{path}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{path}: {text}"
        );
    }
    let good = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "control-room:a long pass phrase"
        )
    );
    assert_eq!(get(http, "/", Some(&good)).await.0, 200);
    assert_eq!(get(http, "/api/points", Some(&good)).await.0, 200);
    assert!(app.shutdown().await);
    let audit = adit_audit::read_entries(&dir.path().join("audit")).unwrap();
    assert!(audit
        .iter()
        .any(|e| e["kind"] == "http_access" && e["data"]["who"] == "control-room"));
}
