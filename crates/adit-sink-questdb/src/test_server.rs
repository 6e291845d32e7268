//! Test helper: one HTTP/1.1 request read from a stream, as the tests'
//! small servers need it (also included by `tests/https.rs`).

use std::io::{BufRead, Write};
use std::net::TcpListener;
use std::sync::mpsc::{channel, Receiver};

/// The request line and the body (by `Content-Length`); `None` when the
/// connection ends first.
pub fn read_request(reader: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut start = String::new();
    if reader.read_line(&mut start).ok()? == 0 {
        return None;
    }
    let mut len = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.trim_end().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((start.trim_end().to_string(), body))
}

/// A plain HTTP server on a free loopback port: on each connection it
/// answers up to `per_connection` requests with `answer(request line)`,
/// then closes it (as a server does with an idle keep-alive connection);
/// every request (line, body) goes to the receiver.
#[allow(dead_code)] // not every file that includes this module serves plain HTTP
pub fn serve(
    per_connection: usize,
    answer: impl Fn(&str) -> &'static str + Send + 'static,
) -> (u16, Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().map_or(0, |a| a.port());
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Ok(read_half) = stream.try_clone() else {
                continue;
            };
            let mut reader = std::io::BufReader::new(read_half);
            let mut out = stream;
            for _ in 0..per_connection {
                let Some((request, body)) = read_request(&mut reader) else {
                    break;
                };
                let reply = answer(&request);
                if tx.send((request, body)).is_err() || out.write_all(reply.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    (port, rx)
}
