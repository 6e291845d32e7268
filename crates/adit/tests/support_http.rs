//! Test support: small HTTP peers on loopback ports the OS picks.
//! - [`webhook`]: an alert webhook receiver that keeps every body;
//! - [`IlpServer`]: a line-protocol endpoint (`POST /write`) whose answer the
//!   test switches at run time (204 and keep the lines, 503, 400 with a
//!   QuestDB-style JSON rejection, or no answer at all), to drive the
//!   QuestDB sink through outages it must survive.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A webhook receiver: answers 200 and keeps every request body.
pub async fn webhook() -> (u16, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let keep = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 65536];
                // Read the head, then as much body as Content-Length says.
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= len {
                            keep.lock().unwrap().push(body.to_string());
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                                .await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, bodies)
}

/// How the line-protocol endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Answer {
    /// 204: stored (the lines are kept).
    Accept = 0,
    /// 503 Service Unavailable (a database restarting, a proxy in front).
    Unavailable = 1,
    /// Reads the request and never answers (a hung server: timeouts).
    Hang = 2,
    /// 400 with QuestDB's JSON error naming a line: a rejection of the data.
    RejectRows = 3,
}

pub struct IlpServer {
    pub port: u16,
    answer: Arc<AtomicU8>,
    /// Lines stored (while accepting), each with how often it arrived.
    lines: Arc<Mutex<HashMap<String, u32>>>,
    pub requests: Arc<AtomicU64>,
}

impl IlpServer {
    pub fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(AtomicU8::new(answer as u8));
        let lines: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let requests = Arc::new(AtomicU64::new(0));
        let (s, l, r) = (state.clone(), lines.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (s, l, r) = (s.clone(), l.clone(), r.clone());
                std::thread::spawn(move || serve(stream, &s, &l, &r));
            }
        });
        Self {
            port,
            answer: state,
            lines,
            requests,
        }
    }

    pub fn set(&self, answer: Answer) {
        self.answer.store(answer as u8, Ordering::SeqCst);
    }

    /// Distinct lines stored, and how many arrived more than once.
    pub fn stored(&self) -> (usize, u64) {
        let lines = self.lines.lock().unwrap();
        let dups = lines.values().map(|&n| u64::from(n - 1)).sum();
        (lines.len(), dups)
    }

    /// The stored lines.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().keys().cloned().collect()
    }
}

fn serve(
    stream: TcpStream,
    answer: &AtomicU8,
    lines: &Mutex<HashMap<String, u32>>,
    requests: &AtomicU64,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        // Request head.
        let mut len = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if first && line.trim().is_empty() {
                continue;
            }
            first = false;
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line
                .to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
            {
                len = v.parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let with_body = |status: &str, kind: &str, body: &str| {
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let reply: String = match answer.load(Ordering::SeqCst) {
            0 => {
                let text = String::from_utf8_lossy(&body);
                let mut stored = lines.lock().unwrap();
                for l in text.lines().filter(|l| !l.is_empty()) {
                    *stored.entry(l.to_string()).or_insert(0) += 1;
                }
                "HTTP/1.1 204 No Content\r\n\r\n".to_string()
            }
            1 => with_body(
                "503 Service Unavailable",
                "text/html",
                "<h1>503 proxy</h1>\n",
            ),
            2 => {
                // Hold the connection without answering until the client gives up.
                let mut sink = [0u8; 1024];
                while let Ok(n) = reader.get_mut().read(&mut sink) {
                    if n == 0 {
                        return;
                    }
                }
                return;
            }
            _ => with_body(
                "400 Bad Request",
                // What QuestDB sends (HttpConstants.CONTENT_TYPE_JSON).
                "application/json; charset=utf-8",
                r#"{"code":"invalid","message":"cast error for line protocol float","line":1,"errorId":"t-1"}"#,
            ),
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
