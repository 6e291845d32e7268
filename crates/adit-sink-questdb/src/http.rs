//! ILP over HTTP/1.1 on one kept-alive connection: `POST /write?precision=n`
//! (what questdb-rs sends, and what other line-protocol servers accept),
//! `GET /settings` for `protocol_version=auto`.
//!
//! Invariants: every request has a time limit (`request_timeout` plus the
//! body over `request_min_throughput`, as questdb-rs counts it), one
//! deadline for the whole request: connect, TLS handshake and every read
//! and write end by it (see `Deadlined`); a response is read whole, or the
//! connection is dropped, so the next request never reads a stale answer; a
//! reused connection the server closed while idle is retried once on a fresh
//! one (nothing of the response arrived, so nothing was decided); any other
//! failure drops the connection and is returned, and the sink stage retries.
//! Name resolution happens on connect only, not per request (bounded by
//! the system resolver's own timeouts, not by `request_timeout`: with a
//! host name rather than an address, a dead DNS server holds the sink's
//! thread for as long as the resolver tries).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adit_pipeline::SinkError;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::conf::{HttpConf, Trust};

/// A socket whose every read and write ends by the request's deadline: the
/// socket timeouts bound one call each, so they are kept at the time left
/// (re-set when they differ from it by more than [`SLACK`], so a request
/// that takes a few ms costs no extra system call), and a call after the
/// deadline fails at once. rustls reads and writes through it too, so the
/// handshake and a TLS record read in many pieces are bounded the same way.
struct Deadlined {
    tcp: TcpStream,
    deadline: Instant,
    /// The socket timeouts in force.
    armed: Option<Duration>,
}

/// How far the socket timeouts may differ from the time left.
const SLACK: Duration = Duration::from_millis(20);

impl Deadlined {
    fn arm(&mut self) -> std::io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(ErrorKind::TimedOut, "timed out"));
        }
        let close = self.armed.is_some_and(|a| a.abs_diff(left) <= SLACK);
        if !close {
            self.tcp.set_read_timeout(Some(left))?;
            self.tcp.set_write_timeout(Some(left))?;
            self.armed = Some(left);
        }
        Ok(())
    }
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm()?;
        self.tcp.read(buf)
    }
}

impl Write for Deadlined {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm()?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// A connection, plain or TLS (rustls with ring, from `adit-tls`).
enum Stream {
    Plain(Deadlined),
    Tls(Box<StreamOwned<ClientConnection, Deadlined>>),
}

impl Stream {
    fn set_deadline(&mut self, deadline: Instant) {
        match self {
            Stream::Plain(s) => s.deadline = deadline,
            Stream::Tls(s) => s.sock.deadline = deadline,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
use crate::response::{self, Answer};

/// One server, one connection at a time.
pub struct IlpHttp {
    conf: HttpConf,
    conn: Option<Stream>,
    /// Request head, kept between requests.
    head: Vec<u8>,
    /// Response bytes, kept between requests.
    input: Vec<u8>,
    /// Connections opened so far.
    connects: u64,
}

/// Why a request failed.
#[derive(Debug)]
enum Failure {
    /// The server closed a reused connection before answering anything.
    ClosedIdle,
    Io(String),
}

impl IlpHttp {
    pub fn new(conf: HttpConf) -> Self {
        Self {
            conf,
            conn: None,
            head: Vec::with_capacity(256),
            input: Vec::with_capacity(1024),
            connects: 0,
        }
    }

    pub fn conf(&self) -> &HttpConf {
        &self.conf
    }

    /// Connections opened so far (a server restart shows as a new one).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Drops the connection (the next request opens a new one).
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// POSTs one ILP body; Ok only on a 2xx answer.
    pub fn write(&mut self, body: &[u8]) -> Result<(), SinkError> {
        let answer = self.exchange("POST", "/write?precision=n", body)?;
        if (200..300).contains(&answer.status) {
            return Ok(());
        }
        Err(response::classify(&answer))
    }

    /// The protocol versions the server lists in `/settings` (`[1]` when it
    /// has no such endpoint, as questdb-rs assumes).
    pub fn server_versions(&mut self) -> Result<Vec<u64>, SinkError> {
        let answer = self.exchange("GET", "/settings", &[])?;
        match answer.status {
            404 => Ok(vec![1]),
            200..=299 => response::versions(&answer.body).map_err(SinkError::Retryable),
            status => Err(SinkError::Retryable(format!(
                "could not detect the server's line protocol version: /settings answered HTTP {status}"
            ))),
        }
    }

    /// One request and its whole answer; a reused connection closed while
    /// idle gets one more try on a fresh one.
    fn exchange(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Answer, SinkError> {
        let limit = self.conf.time_limit(body.len());
        let reused = self.conn.is_some();
        let result = match self.try_exchange(method, path, body, limit) {
            Err(Failure::ClosedIdle) if reused => {
                self.conn = None;
                self.try_exchange(method, path, body, limit)
            }
            other => other,
        };
        match result {
            Ok(answer) => {
                if answer.close {
                    self.conn = None;
                }
                Ok(answer)
            }
            Err(failure) => {
                self.conn = None;
                Err(SinkError::Retryable(match failure {
                    Failure::ClosedIdle => format!(
                        "{}: connection closed before an answer",
                        self.conf.authority()
                    ),
                    Failure::Io(e) => format!("{}: {e}", self.conf.authority()),
                }))
            }
        }
    }

    fn try_exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        limit: Duration,
    ) -> Result<Answer, Failure> {
        let deadline = Instant::now() + limit;
        if self.conn.is_none() {
            self.conn = Some(self.connect(deadline)?);
            self.connects += 1;
        }
        self.head.clear();
        let c = &self.conf;
        write_head(
            &mut self.head,
            method,
            path,
            &c.authority(),
            c.authorization.as_deref(),
            body.len(),
        );
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::Io("no connection".into()));
        };
        conn.set_deadline(deadline);
        conn.write_all(&self.head)
            .and_then(|()| conn.write_all(body))
            // rustls buffers what it encrypts: out with it, under the limit.
            .and_then(|()| conn.flush())
            .map_err(|e| failure("sending", &e))?;
        self.input.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(mut answer) = response::parse(&self.input).map_err(Failure::Io)? {
                // Bytes beyond the answer belong to no request of ours: a
                // connection that sent them is not reused.
                answer.close |= answer.len < self.input.len();
                return Ok(answer);
            }
            if self.input.len() > response::MAX_ANSWER {
                return Err(Failure::Io("answer too large".into()));
            }
            let n = match conn.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if self.input.is_empty() => {
                    return Err(failure("waiting for the answer", &e))
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Failure::Io("timed out in the middle of the answer".into()))
                }
                Err(e) => return Err(Failure::Io(format!("reading the answer: {e}"))),
            };
            if n == 0 {
                if self.input.is_empty() {
                    return Err(Failure::ClosedIdle);
                }
                return response::parse_at_eof(&self.input).map_err(Failure::Io);
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    fn connect(&self, deadline: Instant) -> Result<Stream, Failure> {
        let mut socket = Deadlined {
            tcp: self.connect_tcp(deadline)?,
            deadline,
            armed: None,
        };
        let Some(trust) = &self.conf.tls else {
            return Ok(Stream::Plain(socket));
        };
        // Built per connection: a replaced CA file is read again, and a
        // missing one is a retried error, not a start-up failure.
        let config: ClientConfig = match trust {
            Trust::PublicRoots => adit_tls::client_config(None, None),
            Trust::CaFile(path) => adit_tls::client_config_only(path),
        }
        .map_err(|e| Failure::Io(format!("TLS: {e}")))?;
        let name = ServerName::try_from(self.conf.host.clone())
            .map_err(|e| Failure::Io(format!("TLS name {:?}: {e}", self.conf.host)))?;
        let mut conn = ClientConnection::new(Arc::new(config), name)
            .map_err(|e| Failure::Io(format!("TLS: {e}")))?;
        // The handshake now, under the time left, so that a refused
        // certificate is reported as such (not as a failed send).
        while conn.is_handshaking() {
            conn.complete_io(&mut socket)
                .map_err(|e| match failure("TLS handshake", &e) {
                    Failure::ClosedIdle => Failure::Io("TLS handshake: the server closed".into()),
                    f @ Failure::Io(_) => f,
                })?;
        }
        Ok(Stream::Tls(Box::new(StreamOwned::new(conn, socket))))
    }

    fn connect_tcp(&self, deadline: Instant) -> Result<TcpStream, Failure> {
        let c = &self.conf;
        let addrs: Vec<_> = (c.host.as_str(), c.port)
            .to_socket_addrs()
            .map_err(|e| Failure::Io(format!("resolving: {e}")))?
            .collect();
        let mut last = format!("no address for {}", c.host);
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(tcp) => {
                    // The head and the body are two writes: never hold the
                    // body's last segment back for an acknowledgement.
                    tcp.set_nodelay(true)
                        .map_err(|e| Failure::Io(e.to_string()))?;
                    return Ok(tcp);
                }
                Err(e) => last = format!("connecting to {addr}: {e}"),
            }
        }
        Err(Failure::Io(last))
    }
}

/// An I/O error before any byte of the answer: a closed connection is
/// [`Failure::ClosedIdle`] (retried once when it was a reused one).
fn failure(doing: &str, e: &std::io::Error) -> Failure {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::BrokenPipe | K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof => {
            Failure::ClosedIdle
        }
        K::WouldBlock | K::TimedOut => Failure::Io(format!("{doing}: timed out")),
        _ => Failure::Io(format!("{doing}: {e}")),
    }
}

fn write_head(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    authority: &str,
    authorization: Option<&str>,
    body_len: usize,
) {
    let mut len = itoa::Buffer::new();
    for part in [method, " ", path, " HTTP/1.1\r\nHost: ", authority, "\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    if method == "POST" {
        for part in [
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: ",
            len.format(body_len),
            "\r\n",
        ] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    if let Some(auth) = authorization {
        for part in ["Authorization: ", auth, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn conf(port: u16, timeout_ms: u64) -> HttpConf {
        crate::conf::parse(&format!(
            "http::addr=127.0.0.1:{port};protocol_version=1;request_timeout={timeout_ms};"
        ))
        .unwrap()
    }

    /// Answers `answers` requests per connection with 204, then closes it
    /// (as a server does with an idle keep-alive connection); the bodies.
    fn server(answers: usize) -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
        let (port, requests) =
            crate::test_server::serve(answers, |_| "HTTP/1.1 204 No Content\r\n\r\n");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for (_, body) in requests {
                if tx.send(body).is_err() {
                    return;
                }
            }
        });
        (port, rx)
    }

    #[test]
    fn a_connection_the_server_closed_while_idle_is_replaced_without_an_error() {
        let (port, bodies) = server(1);
        let mut http = IlpHttp::new(conf(port, 5000));
        for i in 0..3 {
            let body = format!("t v={i} 1\n");
            http.write(body.as_bytes()).unwrap();
            assert_eq!(bodies.recv().unwrap(), body.as_bytes());
            // Let the server's close arrive before the next request.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_server_that_never_answers_fails_the_request_within_its_time_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut http = IlpHttp::new(conf(port, 300));
        let started = Instant::now();
        let result = http.write(b"t v=1 1\n");
        let took = started.elapsed();
        println!("no answer: failed after {took:?} (limit 300 ms): {result:?}");
        assert!(matches!(result, Err(SinkError::Retryable(_))), "{result:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        drop(listener);
    }

    #[test]
    fn nothing_listening_is_a_retryable_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut http = IlpHttp::new(conf(port, 1000));
        assert!(matches!(
            http.write(b"t v=1 1\n"),
            Err(SinkError::Retryable(_))
        ));
    }

    #[test]
    fn request_heads() {
        let mut h = Vec::new();
        write_head(
            &mut h,
            "POST",
            "/write?precision=n",
            "db:9000",
            Some("Bearer x"),
            42,
        );
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "POST /write?precision=n HTTP/1.1\r\nHost: db:9000\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 42\r\nAuthorization: Bearer x\r\n\r\n"
        );
        let mut h = Vec::new();
        write_head(&mut h, "GET", "/settings", "db:9000", None, 0);
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "GET /settings HTTP/1.1\r\nHost: db:9000\r\n\r\n"
        );
    }
}
