//! Alert delivery over https against a real TLS server (rustls) with a site
//! CA made here by the `openssl` command: trusted with `ca_file`, refused
//! without it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../adit/tests/support_certs.rs"]
mod support_certs;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adit_watchdog::http::HttpClient;
use support_certs::make_certificates;

/// Serves one https request per connection, answering 200; returns the port
/// and the bodies received. A `blunt` server sends no `Content-Length` and
/// closes the TCP connection without TLS `close_notify` (as many small
/// receivers do): the answer ends where the connection does.
fn serve(dir: &Path, blunt: bool) -> (u16, Arc<Mutex<Vec<String>>>) {
    let config = support_certs::tls_server_config(dir);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let tls = rustls::StreamOwned::new(conn, stream);
            let mut reader = BufReader::new(tls);
            let mut length = 0;
            let mut line = String::new();
            let mut ok = true;
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    ok = false; // handshake refused by the client, or closed
                    break;
                }
                if line.trim_end().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            if !ok {
                continue;
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let mut tls = reader.into_inner();
            if blunt {
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok");
                let _ = tls.flush();
                continue;
            }
            let _ =
                tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (port, bodies)
}

#[tokio::test]
async fn https_receivers_are_trusted_through_the_site_ca_and_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (port, bodies) = serve(dir.path(), false);
    let url = format!("https://127.0.0.1:{port}/adit-alerts");
    let limit = Duration::from_secs(5);

    let trusting = HttpClient::new(Some(&dir.path().join("ca.pem"))).unwrap();
    trusting
        .post_json(&url, r#"[{"labels":{"alertname":"CoHigh"}}]"#, limit)
        .await
        .unwrap();
    assert_eq!(
        bodies.lock().unwrap().as_slice(),
        [r#"[{"labels":{"alertname":"CoHigh"}}]"#]
    );

    let public_roots_only = HttpClient::new(None).unwrap();
    let refused = public_roots_only
        .post_json(&url, "[]", limit)
        .await
        .unwrap_err();
    assert!(
        refused.to_lowercase().contains("certificate") || refused.contains("UnknownIssuer"),
        "{refused}"
    );
    assert_eq!(
        bodies.lock().unwrap().len(),
        1,
        "nothing sent to an untrusted server"
    );

    let no_pem = dir.path().join("server.csr");
    assert!(HttpClient::new(Some(&no_pem))
        .unwrap_err()
        .contains("no PEM certificate"));
}

#[tokio::test]
async fn a_receiver_that_closes_without_close_notify_has_its_answer_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (port, bodies) = serve(dir.path(), true);
    let url = format!("https://127.0.0.1:{port}/hook");
    let client = HttpClient::new(Some(&dir.path().join("ca.pem"))).unwrap();
    let delivered = client.post_json(&url, "[1]", Duration::from_secs(5)).await;
    assert_eq!(delivered, Ok(()), "a whole 200 answer is a delivery");
    assert_eq!(bodies.lock().unwrap().as_slice(), ["[1]"]);
}
