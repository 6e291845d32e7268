//! ILP over HTTP/1.1 on one kept-alive connection (`adit-http`):
//! `POST /write?precision=n` (what questdb-rs sends, and what other
//! line-protocol servers accept), `GET /settings` for
//! `protocol_version=auto`.
//!
//! Invariants: every request has a time limit (`request_timeout` plus the
//! body over `request_min_throughput`, as questdb-rs counts it), one
//! deadline for the whole request: connect, TLS handshake and every read
//! and write end by it; a response is read whole, or the connection is
//! dropped, so the next request never reads a stale answer; a reused
//! connection the server closed while idle is retried once on a fresh one
//! (no byte of an answer arrived: almost always the server's idle close;
//! if it had stored the body before closing, the DEDUP keys absorb the
//! second copy); any other
//! failure drops the connection and is returned, and the sink stage
//! retries. Name resolution happens on connect only, not per request
//! (bounded by the system resolver's own timeouts, not by
//! `request_timeout`: with a host name rather than an address, a dead DNS
//! server holds the sink's thread for as long as the resolver tries).
//!
//! Under `protocol_version=auto` the version belongs to a connection: each
//! new one (first use, after a failure, or a reused one the server closed
//! while idle) asks `/settings` before a body goes out on it, and a body
//! encoded for another version is not sent: the caller is told to encode it
//! again ([`Refused::Version`]). So a database replaced by one that speaks
//! only v1 never receives a v2 body (which it would refuse as bad rows, and
//! the batch would be quarantined). A server that closes after every
//! answer gets its body on the next connection, in the version it just
//! listed. Behind a load balancer a kept-alive connection can outlive the
//! database it reached: a bad-row rejection under `auto` asks `/settings`
//! again before it counts, and a changed version means encode again, not
//! quarantine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adit_http::{Answer, Connection, Request};
use adit_pipeline::SinkError;

use crate::conf::{HttpConf, Protocol, Trust};
use crate::ilp::IlpVersion;
use crate::response;

/// One server, one connection at a time.
pub struct IlpHttp {
    conf: HttpConf,
    /// `host:port`, for the `Host` header and messages.
    authority: String,
    conn: Option<Connection>,
    /// Connections opened so far.
    connects: u64,
    /// The version the server speaks, and for which connection (by
    /// `connects`): the open one, or the next one when the server closed
    /// right after listing it.
    version_on: Option<(u64, IlpVersion)>,
}

/// Why a POST did not land.
#[derive(Debug)]
pub enum Refused {
    /// The request was to go out on a new connection whose server speaks
    /// this version, not the body's: nothing was sent; encode the body
    /// again (the connection stays open, its version known).
    Version(IlpVersion),
    /// HTTP 413 from the server or a proxy in front of it (nginx refuses
    /// bodies over 1 MiB unless told otherwise): send smaller requests.
    TooLarge(SinkError),
    /// Anything else (see [`response::classify`]).
    Failed(SinkError),
}

impl From<Refused> for SinkError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Version(v) => SinkError::Retryable(format!(
                "the server now speaks line protocol {v:?}: the body must be encoded again"
            )),
            Refused::TooLarge(e) | Refused::Failed(e) => e,
        }
    }
}

/// Why a request failed.
#[derive(Debug)]
enum Failure {
    Http(adit_http::Failure),
    /// A new connection's server speaks another version than the body's.
    Version(IlpVersion),
}

impl From<adit_http::Failure> for Failure {
    fn from(f: adit_http::Failure) -> Self {
        Failure::Http(f)
    }
}

impl IlpHttp {
    pub fn new(conf: HttpConf) -> Self {
        Self {
            authority: conf.authority(),
            conf,
            conn: None,
            connects: 0,
            version_on: None,
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

    /// POSTs one ILP body encoded in `version`; Ok only on a 2xx answer.
    pub fn write(&mut self, body: &[u8], version: IlpVersion) -> Result<(), Refused> {
        let answer = self.exchange("POST", "/write?precision=n", body, Some(version))?;
        match answer.status {
            200..=299 => Ok(()),
            413 => Err(Refused::TooLarge(response::classify(&answer))),
            _ => {
                let verdict = response::classify(&answer);
                if matches!(verdict, SinkError::Permanent(_))
                    && self.conf.protocol == Protocol::Auto
                {
                    // Bad rows, or a database behind a proxy replaced by
                    // one that speaks another version? Asked before the
                    // batch is quarantined (when the asking fails, the
                    // rejection stands).
                    self.version_on = None;
                    if let Ok(now) = self.version() {
                        if now != version {
                            return Err(Refused::Version(now));
                        }
                    }
                }
                Err(Refused::Failed(verdict))
            }
        }
    }

    /// The version known for the open connection, or for the next one.
    fn known_version(&self) -> Option<IlpVersion> {
        let (on, v) = self.version_on?;
        let open = self.conn.is_some() && on == self.connects;
        let next = self.conn.is_none() && on == self.connects + 1;
        (open || next).then_some(v)
    }

    /// Records what a `/settings` answer on the current connection says.
    fn learn_version(&mut self, settings: &Answer) -> Result<IlpVersion, String> {
        let v = version_in(settings)?;
        let on = if settings.close {
            self.connects + 1
        } else {
            self.connects
        };
        self.version_on = Some((on, v));
        Ok(v)
    }

    /// The version to encode in: the configured one, or under `auto` the
    /// one the server on the open connection listed (asked on a new
    /// connection when none is open or it was not asked yet).
    pub fn version(&mut self) -> Result<IlpVersion, SinkError> {
        if let Protocol::Fixed(v) = self.conf.protocol {
            return Ok(v);
        }
        if let Some(v) = self.known_version() {
            return Ok(v);
        }
        let answer = self.exchange("GET", "/settings", &[], None)?;
        self.learn_version(&answer).map_err(SinkError::Retryable)
    }

    /// One request and its whole answer; a reused connection closed while
    /// idle gets one more try on a fresh one.
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        version: Option<IlpVersion>,
    ) -> Result<Answer, Refused> {
        let limit = self.conf.time_limit(body.len());
        let reused = self.conn.is_some();
        let result = match self.try_exchange(method, path, body, version, limit) {
            Err(Failure::Http(adit_http::Failure::ClosedIdle)) if reused => {
                self.conn = None;
                self.try_exchange(method, path, body, version, limit)
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
            // The new connection is sound: kept for the body encoded again.
            Err(Failure::Version(v)) => Err(Refused::Version(v)),
            Err(Failure::Http(failure)) => {
                self.conn = None;
                Err(Refused::Failed(SinkError::Retryable(format!(
                    "{}: {failure}",
                    self.authority
                ))))
            }
        }
    }

    /// Connects when needed; a body (`version` given) goes out on a new
    /// connection under `auto` only once its server has said it speaks
    /// that version, asked under the same deadline.
    fn try_exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        version: Option<IlpVersion>,
        limit: Duration,
    ) -> Result<Answer, Failure> {
        let deadline = Instant::now() + limit;
        if self.conn.is_none() {
            let known = self.known_version();
            self.open(deadline)?;
            if let (Some(body_version), Protocol::Auto) = (version, self.conf.protocol) {
                let server = if let Some(v) = known {
                    v
                } else {
                    let settings = self.request("GET", "/settings", &[], deadline)?;
                    let v = self
                        .learn_version(&settings)
                        .map_err(adit_http::Failure::Io)?;
                    if settings.close {
                        // A server that closes after every answer: the
                        // body goes on the next connection.
                        self.conn = None;
                        self.open(deadline)?;
                    }
                    v
                };
                if server != body_version {
                    return Err(Failure::Version(server));
                }
            }
        }
        self.request(method, path, body, deadline)
    }

    /// One request on the open connection, and its whole answer.
    fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        let request = Request {
            method,
            path,
            host: &self.authority,
            content_type: (method == "POST").then_some("text/plain; charset=utf-8"),
            authorization: self.conf.authorization.as_deref(),
            close: false,
        };
        let Some(conn) = self.conn.as_mut() else {
            return Err(adit_http::Failure::Io("no connection".into()).into());
        };
        Ok(conn.request(&request, body, deadline)?)
    }

    /// Opens a new connection (counted).
    fn open(&mut self, deadline: Instant) -> Result<(), adit_http::Failure> {
        self.conn = Some(self.connect(deadline)?);
        self.connects += 1;
        Ok(())
    }

    fn connect(&self, deadline: Instant) -> Result<Connection, adit_http::Failure> {
        // Built per connection: a replaced CA file is read again, and a
        // missing one is a retried error, not a start-up failure.
        let tls = match &self.conf.tls {
            None => None,
            Some(trust) => Some(Arc::new(
                match trust {
                    Trust::PublicRoots => adit_tls::client_config(None, None),
                    Trust::CaFile(path) => adit_tls::client_config_only(path),
                }
                .map_err(|e| adit_http::Failure::Io(format!("TLS: {e}")))?,
            )),
        };
        Connection::open(&self.conf.host, self.conf.port, tls, deadline)
    }
}

/// The version to speak from a `/settings` answer: v2 when listed, v1 when
/// not, or when the server has no such endpoint (404, as questdb-rs
/// assumes).
fn version_in(answer: &Answer) -> Result<IlpVersion, String> {
    let listed = match answer.status {
        404 => vec![1],
        200..=299 => response::versions(&answer.body)?,
        status => {
            return Err(format!(
            "could not detect the server's line protocol version: /settings answered HTTP {status}"
        ))
        }
    };
    Ok(if listed.contains(&2) {
        IlpVersion::V2
    } else {
        IlpVersion::V1
    })
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
            http.write(body.as_bytes(), IlpVersion::V1).unwrap();
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
        let result = http.write(b"t v=1 1\n", IlpVersion::V1);
        let took = started.elapsed();
        println!("no answer: failed after {took:?} (limit 300 ms): {result:?}");
        assert!(
            matches!(result, Err(Refused::Failed(SinkError::Retryable(_)))),
            "{result:?}"
        );
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
            http.write(b"t v=1 1\n", IlpVersion::V1),
            Err(Refused::Failed(SinkError::Retryable(_)))
        ));
    }
}
