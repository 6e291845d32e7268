//! A minimal HTTP/1.1 POST for alert receivers, over `http://` or `https://`
//! (rustls with the ring provider, the build questdb-rs already uses).
//!
//! Invariants: every request has one overall time limit (connect, TLS
//! handshake, write, read); a certificate is checked against the Mozilla
//! roots plus an optional site CA file; only a 2xx answer counts as
//! delivered.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// Posts JSON to alert receivers; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    tls: Arc<ClientConfig>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

/// A receiver URL split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        use adit_core::url::{Scheme, Url};
        let u = Url::parse(url, &[Scheme::Http, Scheme::Https])?;
        Ok(Self {
            tls: u.scheme.is_tls(),
            host: u.host,
            port: u.port,
            path: if u.path.is_empty() {
                "/".into()
            } else {
                u.path
            },
        })
    }
}

impl HttpClient {
    /// Trusts the Mozilla roots, plus every certificate in `ca_file` (PEM)
    /// when given (a site's own CA, common on SCADA networks).
    pub fn new(ca_file: Option<&Path>) -> Result<Self, String> {
        Ok(Self {
            tls: Arc::new(adit_tls::client_config(ca_file, None)?),
        })
    }

    /// POSTs `body` to `url`; Ok on a 2xx answer within `limit`.
    pub async fn post_json(&self, url: &str, body: &str, limit: Duration) -> Result<(), String> {
        let target = Target::parse(url)?;
        let tls = self.tls.clone();
        let (url, body) = (url.to_string(), body.to_string());
        // Blocking I/O with socket timeouts, off the async workers.
        tokio::task::spawn_blocking(move || post_blocking(&target, &tls, &url, &body, limit))
            .await
            .unwrap_or_else(|e| Err(format!("delivery task failed: {e}")))
    }
}

fn post_blocking(
    t: &Target,
    tls: &Arc<ClientConfig>,
    url: &str,
    body: &str,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let addr = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address for {}", t.host))?;
    let stream = TcpStream::connect_timeout(&addr, left()).map_err(|e| format!("{url}: {e}"))?;
    stream
        .set_read_timeout(Some(left()))
        .and_then(|()| stream.set_write_timeout(Some(left())))
        .map_err(|e| e.to_string())?;
    let host_header = if (t.tls && t.port == 443) || (!t.tls && t.port == 80) {
        t.host.clone()
    } else {
        format!("{}:{}", t.host, t.port)
    };
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        t.path,
        body.len()
    );
    let mut head = [0u8; 64];
    let n = if t.tls {
        let name = ServerName::try_from(t.host.clone()).map_err(|e| format!("{url}: {e}"))?;
        let conn = ClientConnection::new(tls.clone(), name).map_err(|e| format!("{url}: {e}"))?;
        let mut s = StreamOwned::new(conn, stream);
        s.write_all(request.as_bytes())
            .and_then(|()| s.flush())
            .map_err(|e| format!("{url}: {e}"))?;
        s.read(&mut head).map_err(|e| format!("{url}: {e}"))?
    } else {
        let mut s = stream;
        s.write_all(request.as_bytes())
            .map_err(|e| format!("{url}: {e}"))?;
        s.read(&mut head).map_err(|e| format!("{url}: {e}"))?
    };
    let status = String::from_utf8_lossy(&head[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_port_and_path() {
        let t = Target::parse("https://am.site.local/api/v2/alerts").unwrap();
        assert_eq!(
            t,
            Target {
                tls: true,
                host: "am.site.local".into(),
                port: 443,
                path: "/api/v2/alerts".into()
            }
        );
        let t = Target::parse("http://10.0.0.5:9093").unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (false, 9093, "/"));
        let t = Target::parse("https://[::1]:8443/hook").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("http://x:port/").is_err());
        assert!(Target::parse("https:///a").is_err());
    }
}
