//! An ILP-over-HTTP receiver that costs (almost) nothing: it answers every
//! `POST /write` with 204 and counts the lines. Only for finding adit's own
//! ceiling when the real receiver (VictoriaMetrics on the same two cores)
//! saturates first; correctness is proven against VictoriaMetrics elsewhere.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct DiscardReceiver {
    pub port: u16,
    pub lines: Arc<AtomicU64>,
}

impl DiscardReceiver {
    pub fn start() -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let lines = Arc::new(AtomicU64::new(0));
        let counter = lines.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || serve(stream, &counter));
            }
        });
        Ok(Self { port, lines })
    }

    /// The questdb-rs connection string for this receiver.
    pub fn conf(&self) -> String {
        format!("http::addr=127.0.0.1:{};protocol_version=1;", self.port)
    }
}

/// Serves keep-alive requests on one connection until it closes.
fn serve(stream: TcpStream, lines: &AtomicU64) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut body = Vec::new();
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        body.resize(length, 0);
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        #[allow(clippy::naive_bytecount)] // not worth a dependency in a test tool
        let n = body.iter().filter(|b| **b == b'\n').count() as u64;
        lines.fetch_add(n, Ordering::Relaxed);
        if writer
            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}
