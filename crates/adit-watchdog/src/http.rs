//! An HTTP/1.1 POST for alert receivers, over `http://` or `https://`,
//! through adit's one blocking client (`adit-http`: rustls with ring).
//!
//! Invariants: every request has one overall time limit (connect, TLS
//! handshake, every write and read); a certificate is checked against the
//! Mozilla roots plus an optional site CA file; only a whole 2xx answer
//! counts as delivered.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adit_http::{Connection, Request};
use rustls::ClientConfig;

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
    let fail = |e: adit_http::Failure| format!("{url}: {e}");
    let mut conn =
        Connection::open(&t.host, t.port, t.tls.then(|| tls.clone()), deadline).map_err(fail)?;
    let default_port = if t.tls { 443 } else { 80 };
    let host = if t.port == default_port && !t.host.contains(':') {
        t.host.clone()
    } else {
        adit_core::url::host_port(&t.host, t.port)
    };
    let request = Request {
        method: "POST",
        path: &t.path,
        host: &host,
        content_type: Some("application/json"),
        authorization: None,
        close: true,
    };
    let answer = conn
        .request(&request, body.as_bytes(), deadline)
        .map_err(fail)?;
    if (200..300).contains(&answer.status) {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {}", answer.status))
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
