//! Which connection strings adit's own ILP/HTTP writer serves, and what
//! they say.
//!
//! The grammar is questdb-rs's: `scheme::key=value;key=value;`, with `;;`
//! standing for a `;` inside a value. adit's writer takes `http` and
//! `https` with the keys below; any other scheme (`tcp`, `tcps`) or key, or
//! a value it does not understand, is left to questdb-rs (which also gives
//! the error for a string that is wrong), so no setting is ever silently
//! ignored.
//!
//! Served keys: `addr`, `username` + `password` or `token`,
//! `protocol_version` (`1`, `2`, `auto`), `request_timeout`,
//! `request_min_throughput`, `max_buf_size` (≥ 1024, as questdb-rs wants;
//! here it caps each request body at that size plus one row);
//! `retry_timeout` is accepted and has no effect here: a failed request is
//! retried by the sink stage for as long as the spool holds its rows.
//! With `https`: `tls_verify=on` (the default), and either
//! `tls_ca=webpki_roots` (the default: the Mozilla roots) or `tls_roots=`
//! a PEM file, trusted alone (as questdb-rs does; the file is read on each
//! connect, so a replaced CA needs no restart).
//! `auto` takes v2 when the server lists it (questdb-rs would take v3 where
//! listed; adit's rows are the same bytes in both).

use std::path::PathBuf;
use std::time::Duration;

use adit_core::url::parse_authority;

use crate::ilp::IlpVersion;

/// The protocol version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Fixed(IlpVersion),
    /// Ask the server (`GET /settings`) once per connection.
    Auto,
}

/// Whom an `https` connection trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The Mozilla roots (`tls_ca=webpki_roots`, the default).
    PublicRoots,
    /// Only the certificates of this PEM file (`tls_roots`).
    CaFile(PathBuf),
}

/// An `http` or `https` connection string adit serves itself.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpConf {
    /// `None` for plain `http`.
    pub tls: Option<Trust>,
    pub host: String,
    pub port: u16,
    /// The whole `Authorization` header value.
    pub authorization: Option<String>,
    pub protocol: Protocol,
    pub request_timeout: Duration,
    /// Bytes per second a request body must at least move at: its time
    /// limit is `request_timeout` plus its size over this.
    pub min_throughput: u64,
    pub max_buf_size: usize,
}

impl std::fmt::Debug for HttpConf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConf")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("protocol", &self.protocol)
            .field("request_timeout", &self.request_timeout)
            .field("min_throughput", &self.min_throughput)
            .field("max_buf_size", &self.max_buf_size)
            .finish()
    }
}

impl HttpConf {
    /// The time limit of a request carrying `body_len` bytes.
    pub fn time_limit(&self, body_len: usize) -> Duration {
        let transfer = if self.min_throughput == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(body_len as f64 / self.min_throughput as f64)
        };
        self.request_timeout + transfer
    }

    /// `host:port` as the `Host` header and error messages spell it.
    pub fn authority(&self) -> String {
        adit_core::url::host_port(&self.host, self.port)
    }
}

/// `Some` when adit's writer can honour every key of `conf`.
pub fn parse(conf: &str) -> Option<HttpConf> {
    let (tls, rest) = match conf.split_once("::")? {
        ("http", rest) => (false, rest),
        ("https", rest) => (true, rest),
        _ => return None,
    };
    let mut out = HttpConf {
        tls: tls.then_some(Trust::PublicRoots),
        host: String::new(),
        port: 9000,
        authorization: None,
        protocol: Protocol::Auto,
        request_timeout: Duration::from_secs(10),
        min_throughput: 100 * 1024,
        max_buf_size: 100 * 1024 * 1024,
    };
    let (mut user, mut password, mut token) = (None, None, None);
    let (mut ca, mut roots) = (None, None);
    for (key, value) in pairs(rest)? {
        match key.as_str() {
            "addr" => (out.host, out.port) = parse_authority(&value, out.port).ok()?,
            "username" => user = Some(value),
            "password" => password = Some(value),
            "token" => token = Some(value),
            "protocol_version" => {
                out.protocol = match value.as_str() {
                    "1" => Protocol::Fixed(IlpVersion::V1),
                    "2" => Protocol::Fixed(IlpVersion::V2),
                    "auto" => Protocol::Auto,
                    _ => return None,
                }
            }
            "request_timeout" => {
                let ms: u64 = value.parse().ok().filter(|&ms| ms > 0)?;
                out.request_timeout = Duration::from_millis(ms);
            }
            "request_min_throughput" => out.min_throughput = value.parse().ok()?,
            "max_buf_size" => out.max_buf_size = value.parse().ok().filter(|&n| n >= 1024)?,
            "retry_timeout" => {
                value.parse::<u64>().ok()?;
            }
            "tls_verify" if tls && value == "on" => {}
            "tls_ca" if tls => ca = Some(value),
            "tls_roots" if tls && !value.is_empty() => roots = Some(PathBuf::from(value)),
            _ => return None,
        }
    }
    // Only what can go into a request head as it is: anything else is
    // questdb-rs's to refuse.
    let printable = |t: &str| t.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if out.host.is_empty() || !out.host.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    match (ca.as_deref(), roots) {
        (None | Some("webpki_roots"), None) => {}
        // questdb-rs's ingress takes no `tls_ca=pem_file`: `tls_roots` alone.
        (None, Some(file)) => out.tls = Some(Trust::CaFile(file)),
        _ => return None,
    }
    if ![&user, &password, &token]
        .into_iter()
        .flatten()
        .all(|t| printable(t))
    {
        return None;
    }
    out.authorization = match (user, password, token) {
        (None, None, None) => None,
        (Some(user), Some(password), None) => {
            use base64::Engine;
            let pair = format!("{user}:{password}");
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        }
        (None, None, Some(token)) => Some(format!("Bearer {token}")),
        _ => return None,
    };
    Some(out)
}

/// `key=value;` pairs; `;;` is a literal `;`. `None` when malformed.
fn pairs(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let mut key = String::new();
        loop {
            match chars.next()? {
                '=' => break,
                ';' => return None,
                c => key.push(c),
            }
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some(';') if chars.peek() == Some(&';') => {
                    chars.next();
                    value.push(';');
                }
                Some(';') | None => break,
                Some(c) => value.push(c),
            }
        }
        if key.is_empty() || out.iter().any(|(k, _)| *k == key) {
            return None;
        }
        out.push((key, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_adit_serves() {
        let c = parse("http::addr=10.20.0.50:9000;protocol_version=2;request_timeout=10000;retry_timeout=2000;").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("10.20.0.50", 9000));
        assert_eq!(c.protocol, Protocol::Fixed(IlpVersion::V2));
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.authorization, None);
        let c = parse("http::addr=db.site;username=adit;password=a;;b;").unwrap();
        assert_eq!((c.port, c.protocol), (9000, Protocol::Auto));
        // "adit:a;b" in base64.
        assert_eq!(c.authorization.as_deref(), Some("Basic YWRpdDphO2I="));
        assert!(!format!("{c:?}").contains("YWRp"), "never printed");
        let c = parse(
            "http::addr=localhost:9009;token=t0k;max_buf_size=4096;request_min_throughput=0;",
        )
        .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("localhost", 9009));
        assert_eq!(c.authority(), "localhost:9009");
        assert_eq!(c.authorization.as_deref(), Some("Bearer t0k"));
        assert_eq!((c.max_buf_size, c.min_throughput), (4096, 0));
        assert_eq!(c.time_limit(1 << 20), Duration::from_secs(10));
        assert_eq!(c.tls, None);
        let c = parse("https::addr=db.site:9443;").unwrap();
        assert_eq!((c.tls, c.port), (Some(Trust::PublicRoots), 9443));
        let c = parse("https::addr=db;tls_verify=on;tls_ca=webpki_roots;").unwrap();
        assert_eq!(c.tls, Some(Trust::PublicRoots));
        let c = parse("https::addr=db;tls_roots=/etc/site-ca.pem;").unwrap();
        assert_eq!(c.tls, Some(Trust::CaFile("/etc/site-ca.pem".into())));
        let c = parse("http::addr=h;request_min_throughput=1000;").unwrap();
        assert_eq!(c.time_limit(5000), Duration::from_secs(15));
        // The address is read by the one authority parser (adit_core::url).
        let c = parse("http::addr=[::1]:9001;").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 9001));
        assert_eq!(c.authority(), "[::1]:9001");
        for bad in ["db:", "db:0", "::1:9000", ":9000", "db:x"] {
            assert!(parse(&format!("http::addr={bad};")).is_none(), "{bad}");
        }
    }

    #[test]
    fn everything_else_is_left_to_questdb_rs() {
        for conf in [
            "tcp::addr=db:9009;",
            "tcps::addr=db:9009;",
            "http::addr=db:9000;tls_verify=on;",
            "http::addr=db:9000;tls_roots=/etc/ca.pem;",
            "https::addr=db:9000;tls_ca=pem_file;",
            "https::addr=db:9000;tls_ca=pem_file;tls_roots=/etc/ca.pem;",
            "https::addr=db:9000;tls_ca=webpki_roots;tls_roots=/etc/ca.pem;",
            "https::addr=db:9000;tls_roots=;",
            "https::addr=db:9000;tls_roots_password=x;",
            "https::addr=db:9000;tls_verify=unsafe_off;",
            "https::addr=db:9000;tls_ca=os_roots;",
            "http::addr=db:9000;protocol_version=3;",
            "http::addr=db:9000;username=a;",
            "http::addr=db:9000;username=a;password=b;token=c;",
            "http::addr=db:9000;request_timeout=soon;",
            "http::addr=db:9000;request_timeout=0;",
            "http::addr=db:9000;bind_interface=0.0.0.0;",
            "http::addr=db:9000;addr=db2:9000;",
            "http::addr=db:port;",
            "http::addr=fe80::1;",
            "http::addr=db:9000;max_buf_size=1000;",
            "http::addr=db:9000;max_name_len=64;",
            "http::addr=db:9000;init_buf_size=65536;",
            "http::protocol_version=1;",
            "http::addr=db:9000;auto_flush=off;",
            "http::addr=db:9000;token=a\r\nX-Injected: 1;",
            "http::addr=d b:9000;",
            "addr=db:9000;",
            "http::addr",
        ] {
            assert_eq!(parse(conf), None, "{conf}");
        }
    }
}
