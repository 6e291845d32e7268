//! `[http]`: the listener, the control-room page and who may read it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{secret, Problems};
use crate::model::{HttpAuth, HttpConfig};
use crate::raw::RawHttp;

pub(super) fn validate_http(
    p: &mut Problems,
    raw: Option<&RawHttp>,
    data_dir: &Path,
) -> HttpConfig {
    let default = RawHttp::default();
    let raw = raw.unwrap_or(&default);
    let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:9464");
    let listen = if listen == "off" {
        None
    } else {
        let parsed = listen.parse::<SocketAddr>().ok();
        if parsed.is_none() {
            p.push(
                "http.listen",
                format!("{listen:?} is not an IP:port address (or \"off\")"),
            );
        }
        parsed
    };
    let update_interval = p.duration(
        "http.update_interval",
        raw.update_interval.as_deref(),
        "250ms",
        true,
    );
    if update_interval < Duration::from_millis(50) || update_interval > Duration::from_secs(10) {
        p.push(
            "http.update_interval",
            "must be between 50ms and 10s (the page's own staleness check allows for it)",
        );
    }
    let token = secret(
        p,
        ("http.token", raw.token.as_deref()),
        ("http.token_file", raw.token_file.as_deref()),
        data_dir,
    );
    if token.as_ref().is_some_and(|t| t.expose().len() < 16) {
        p.push("http.token", "a token needs at least 16 characters");
    }
    let password = secret(
        p,
        ("http.password", raw.password.as_deref()),
        ("http.password_file", raw.password_file.as_deref()),
        data_dir,
    );
    let basic = match (raw.user.as_deref(), password) {
        (Some(user), Some(password)) => {
            if user.is_empty() || user.contains(':') {
                p.push("http.user", "a user name is not empty and has no ':'");
            }
            Some((user.to_string(), password))
        }
        (Some(_), None) => {
            p.push("http.user", "a user needs password or password_file");
            None
        }
        (None, Some(_)) => {
            p.push("http.password", "a password needs http.user");
            None
        }
        (None, None) => None,
    };
    HttpConfig {
        listen,
        page: raw.page.unwrap_or(true),
        update_interval,
        max_clients: p.int_in("http.max_clients", raw.max_clients, 200, 1, 10_000) as usize,
        auth: HttpAuth { token, basic },
        audit_every: p.duration("http.audit_every", raw.audit_every.as_deref(), "60s", true),
    }
}
