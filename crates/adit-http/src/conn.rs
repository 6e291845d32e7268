//! One HTTP/1.1 connection, plain or TLS, whose every step ends by the
//! request's deadline.
//!
//! Invariants: connect, TLS handshake and every read and write of a
//! request end by one deadline (see `Deadlined`); a response is read whole
//! or the request fails, so a connection never carries a stale answer into
//! the next request; a failure before any byte of the answer arrived, on a
//! connection the server closed, is [`Failure::ClosedIdle`] (nothing was
//! decided: the caller may retry on a fresh connection). Name resolution is
//! bounded by the system resolver's own timeouts, not by the deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::answer::{self, Answer};

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server closed the connection before answering anything.
    ClosedIdle,
    Io(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::ClosedIdle => f.write_str("connection closed before an answer"),
            Failure::Io(e) => f.write_str(e),
        }
    }
}

/// A request's head.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, `/` at least.
    pub path: &'a str,
    /// The `Host` header: `host:port`, IPv6 in brackets.
    pub host: &'a str,
    /// The body's type (its length is sent for every POST and every body).
    pub content_type: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// Ask the server to close the connection after its answer.
    pub close: bool,
}

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

/// A connection, plain or TLS.
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

/// One open connection and its buffers (kept between requests).
pub struct Connection {
    stream: Stream,
    head: Vec<u8>,
    input: Vec<u8>,
}

impl Connection {
    /// TCP to each address of `host` in turn, then with `tls` the handshake
    /// (the certificate checked for `host`), all by `deadline`: a refused
    /// certificate is reported as such, not as a failed send.
    pub fn open(
        host: &str,
        port: u16,
        tls: Option<Arc<ClientConfig>>,
        deadline: Instant,
    ) -> Result<Self, Failure> {
        let mut socket = Deadlined {
            tcp: connect_tcp(host, port, deadline)?,
            deadline,
            armed: None,
        };
        let stream = match tls {
            None => Stream::Plain(socket),
            Some(config) => {
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| Failure::Io(format!("TLS name {host:?}: {e}")))?;
                let mut conn = ClientConnection::new(config, name)
                    .map_err(|e| Failure::Io(format!("TLS: {e}")))?;
                while conn.is_handshaking() {
                    conn.complete_io(&mut socket).map_err(|e| {
                        match failure("TLS handshake", &e) {
                            Failure::ClosedIdle => {
                                Failure::Io("TLS handshake: the server closed".into())
                            }
                            f @ Failure::Io(_) => f,
                        }
                    })?;
                }
                Stream::Tls(Box::new(StreamOwned::new(conn, socket)))
            }
        };
        Ok(Self {
            stream,
            head: Vec::with_capacity(256),
            input: Vec::with_capacity(1024),
        })
    }

    /// Sends one request and reads its whole answer, all by `deadline`.
    /// The answer's `close` is set when the server will close, or sent
    /// bytes beyond the answer (the connection is then not to be reused).
    pub fn request(
        &mut self,
        req: &Request<'_>,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        self.head.clear();
        write_head(&mut self.head, req, body.len());
        let conn = &mut self.stream;
        conn.set_deadline(deadline);
        conn.write_all(&self.head)
            .and_then(|()| conn.write_all(body))
            // rustls buffers what it encrypts: out with it, under the limit.
            .and_then(|()| conn.flush())
            .map_err(|e| failure("sending", &e))?;
        self.input.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(mut answer) = answer::parse(&self.input).map_err(Failure::Io)? {
                // Bytes beyond the answer belong to no request of ours.
                answer.close |= answer.len < self.input.len();
                return Ok(answer);
            }
            if self.input.len() > answer::MAX_ANSWER + answer::MAX_HEAD {
                return Err(Failure::Io("answer too large".into()));
            }
            let n = match conn.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if self.input.is_empty() => {
                    return Err(failure("waiting for the answer", &e))
                }
                // A TLS peer that closed without `close_notify`: the answer
                // ends here, as at a plain end of stream (taken only when
                // its framing says it is whole, or ends at the close).
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    return answer::parse_at_eof(&self.input).map_err(Failure::Io)
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
                return answer::parse_at_eof(&self.input).map_err(Failure::Io);
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }
}

fn connect_tcp(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, Failure> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Failure::Io(format!("resolving {host}: {e}")))?
        .collect();
    let mut last = format!("no address for {host}");
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

/// An I/O error before any byte of the answer: a closed connection is
/// [`Failure::ClosedIdle`].
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

/// The request head, without allocating beyond `out`.
fn write_head(out: &mut Vec<u8>, req: &Request<'_>, body_len: usize) {
    let mut len = itoa::Buffer::new();
    for part in [
        req.method,
        " ",
        req.path,
        " HTTP/1.1\r\nHost: ",
        req.host,
        "\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
    if let Some(kind) = req.content_type {
        for part in ["Content-Type: ", kind, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    if body_len > 0 || req.method == "POST" {
        for part in ["Content-Length: ", len.format(body_len), "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    if let Some(auth) = req.authorization {
        for part in ["Authorization: ", auth, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    if req.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn request_heads() {
        let mut h = Vec::new();
        let post = Request {
            method: "POST",
            path: "/write?precision=n",
            host: "db:9000",
            content_type: Some("text/plain; charset=utf-8"),
            authorization: Some("Bearer x"),
            close: false,
        };
        write_head(&mut h, &post, 42);
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "POST /write?precision=n HTTP/1.1\r\nHost: db:9000\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 42\r\nAuthorization: Bearer x\r\n\r\n"
        );
        let mut h = Vec::new();
        let get = Request {
            method: "GET",
            path: "/settings",
            host: "[::1]:9000",
            content_type: None,
            authorization: None,
            close: true,
        };
        write_head(&mut h, &get, 0);
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "GET /settings HTTP/1.1\r\nHost: [::1]:9000\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_server_that_answers_slowly_byte_by_byte_is_cut_off_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            // Each byte well within a read timeout, the whole far beyond it.
            for b in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
                .iter()
                .cycle()
            {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let deadline = Instant::now() + Duration::from_millis(400);
        let mut conn = Connection::open("127.0.0.1", port, None, deadline).unwrap();
        let get = Request {
            method: "GET",
            path: "/",
            host: "x",
            content_type: None,
            authorization: None,
            close: false,
        };
        let started = Instant::now();
        let result = conn.request(&get, &[], deadline);
        let took = started.elapsed();
        println!("slow drip: failed after {took:?} (deadline 400 ms): {result:?}");
        assert!(matches!(result, Err(Failure::Io(_))), "{result:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}
