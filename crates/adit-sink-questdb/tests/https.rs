//! adit's ILP writer over `https` against a real TLS server (rustls) with a
//! site CA made here by the `openssl` command: trusted through `tls_roots`
//! (requests on one kept-alive connection, rows byte-identical to
//! questdb-rs's), refused with the public roots, and a missing CA file is a
//! retried error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../adit/tests/support_certs.rs"]
mod support_certs;
#[path = "../src/test_server.rs"]
mod test_server;

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;

use adit_core::{PointId, PointMeta, PointRegistry, Quality, Reading, Timestamp, Value};
use adit_pipeline::{Sink, SinkError};
use adit_sink_questdb::{encode_rows, Conf, QuestDbSink};
use questdb::ingress::{Buffer, ProtocolVersion};

/// An https server answering 204 (and, with `close_each`, closing the
/// connection after each answer: an idle keep-alive connection the server
/// dropped); sends (connection number, request line, body) per request.
fn serve(dir: &Path, close_each: bool) -> (u16, Receiver<(usize, String, Vec<u8>)>) {
    let config = support_certs::tls_server_config(dir);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().flatten().enumerate() {
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let tx = tx.clone();
            std::thread::spawn(move || serve_connection(n, conn, stream, &tx, close_each));
        }
    });
    (port, rx)
}

fn serve_connection(
    n: usize,
    conn: rustls::ServerConnection,
    stream: std::net::TcpStream,
    tx: &std::sync::mpsc::Sender<(usize, String, Vec<u8>)>,
    close_each: bool,
) {
    let mut reader = BufReader::new(rustls::StreamOwned::new(conn, stream));
    // Ends when the connection closes (or the client refused the handshake).
    while let Some((request, body)) = test_server::read_request(&mut reader) {
        if tx.send((n, request, body)).is_err() {
            return;
        }
        let tls = reader.get_mut();
        if tls.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").is_err() {
            return;
        }
        let _ = tls.flush();
        if close_each {
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return;
        }
    }
}

fn registry() -> Arc<PointRegistry> {
    let mut r = PointRegistry::new();
    r.insert(PointMeta::plain("bore_a.co", "plc", 1000))
        .unwrap();
    Arc::new(r)
}

fn batch(i: i32) -> Vec<Reading> {
    vec![Reading {
        point: PointId(0),
        value: Some(Value::F64(12.5 + f64::from(i))),
        quality: Quality::Good,
        source_ts: Timestamp(1_700_000_000_000_000 + i64::from(i)),
        received_ts: Timestamp(1_700_000_000_000_000 + i64::from(i)),
    }]
}

#[test]
fn https_rows_reach_a_server_trusted_through_tls_roots_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    support_certs::make_certificates(dir.path());
    let (port, requests) = serve(dir.path(), false);
    let ca = dir.path().join("ca.pem");

    let mut sink = QuestDbSink::new(
        Conf(format!(
            "https::addr=127.0.0.1:{port};tls_roots={};protocol_version=1;request_timeout=5000;",
            ca.display()
        )),
        "readings".into(),
        registry(),
    );
    assert_eq!(sink.writer(), "adit");
    for i in 0..3 {
        assert_eq!(sink.write(&batch(i)).unwrap(), 1);
        let (connection, request, body) = requests.recv().unwrap();
        assert_eq!(request, "POST /write?precision=n HTTP/1.1");
        assert_eq!(connection, 0, "one kept-alive connection");
        let mut expected = Buffer::new(ProtocolVersion::V1);
        encode_rows(&mut expected, "readings", &registry(), &batch(i)).unwrap();
        assert_eq!(body, expected.as_bytes());
    }

    // A body of several MiB: rustls takes it in pieces under one time limit.
    let large: Vec<Reading> = (0..40_000).flat_map(batch).collect();
    assert_eq!(sink.write(&large).unwrap(), 40_000);
    let mut expected = Buffer::new(ProtocolVersion::V1);
    encode_rows(&mut expected, "readings", &registry(), &large).unwrap();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        let (connection, _, body) = requests.recv().unwrap();
        assert_eq!(connection, 0, "one kept-alive connection");
        received.extend_from_slice(&body);
    }
    println!("large batch: {} bytes over TLS", received.len());
    assert_eq!(received, expected.as_bytes());

    // The public roots do not know the site CA: refused in the handshake.
    let mut public = QuestDbSink::new(
        Conf(format!(
            "https::addr=127.0.0.1:{port};protocol_version=1;request_timeout=5000;"
        )),
        "readings".into(),
        registry(),
    );
    assert_eq!(public.writer(), "adit");
    match public.write(&batch(9)) {
        Err(SinkError::Retryable(e)) => {
            println!("public roots: {e}");
            assert!(
                e.contains("TLS handshake") && e.contains("certificate"),
                "{e}"
            );
        }
        other => panic!("must be refused and retried: {other:?}"),
    }

    // A CA file that is not there: retried (read again on each connect).
    let mut missing = QuestDbSink::new(
        Conf(format!(
            "https::addr=127.0.0.1:{port};tls_roots={};protocol_version=1;",
            dir.path().join("nope.pem").display()
        )),
        "readings".into(),
        registry(),
    );
    match missing.write(&batch(9)) {
        Err(SinkError::Retryable(e)) => {
            println!("missing CA file: {e}");
            assert!(e.contains("nope.pem"), "{e}");
        }
        other => panic!("must be retried: {other:?}"),
    }
    // A CA file of another site: refused.
    let other = tempfile::tempdir().unwrap();
    support_certs::make_certificates(other.path());
    let mut foreign = sink_for(&format!(
        "https::addr=127.0.0.1:{port};tls_roots={};protocol_version=1;",
        other.path().join("ca.pem").display()
    ));
    refused(&mut foreign, "certificate", "another site's CA");

    // The right CA, the wrong name: the certificate is for 127.0.0.1 only.
    let mut misnamed = sink_for(&format!(
        "https::addr=localhost:{port};tls_roots={};protocol_version=1;",
        ca.display()
    ));
    refused(&mut misnamed, "certificate", "a name the certificate lacks");

    assert!(
        requests
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err(),
        "no request got through untrusted"
    );
}

fn sink_for(conf: &str) -> QuestDbSink {
    let sink = QuestDbSink::new(Conf(conf.to_string()), "readings".into(), registry());
    assert_eq!(sink.writer(), "adit");
    sink
}

fn refused(sink: &mut QuestDbSink, says: &str, what: &str) {
    match sink.write(&batch(9)) {
        Err(SinkError::Retryable(e)) => {
            println!("{what}: {e}");
            assert!(
                e.contains("TLS handshake") && e.contains(says),
                "{what}: {e}"
            );
        }
        other => panic!("{what}: must be refused and retried: {other:?}"),
    }
}

#[test]
fn a_tls_connection_the_server_closed_is_replaced_without_an_error() {
    let dir = tempfile::tempdir().unwrap();
    support_certs::make_certificates(dir.path());
    let (port, requests) = serve(dir.path(), true);
    let mut sink = sink_for(&format!(
        "https::addr=127.0.0.1:{port};tls_roots={};protocol_version=1;request_timeout=5000;",
        dir.path().join("ca.pem").display()
    ));
    for i in 0..3 {
        assert_eq!(sink.write(&batch(i)).unwrap(), 1, "write {i}");
        let (connection, _, _) = requests.recv().unwrap();
        assert_eq!(
            connection,
            usize::try_from(i).unwrap(),
            "a new connection each time"
        );
        // Let the server's close arrive before the next request.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_server_that_never_answers_the_handshake_fails_within_the_time_limit() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut sink = sink_for(&format!(
        "https::addr=127.0.0.1:{port};protocol_version=1;request_timeout=300;"
    ));
    let started = std::time::Instant::now();
    let result = sink.write(&batch(0));
    let took = started.elapsed();
    println!("silent TLS server: {result:?} after {took:?} (limit 300 ms)");
    assert!(
        matches!(&result, Err(SinkError::Retryable(e)) if e.contains("timed out")),
        "{result:?}"
    );
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    drop(listener);
}
