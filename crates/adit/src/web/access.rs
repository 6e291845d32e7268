//! Who may read the page and `/api`, and the record of who did.
//!
//! Invariants:
//! - with `http.token` or `http.user` configured, a request without a
//!   matching credential gets 401 and nothing else; credentials are
//!   compared by their SHA-256 digests in constant time and never logged;
//! - every access is in the audit log (who, what, status, from where);
//!   repeats of the same (who, path, address) within `http.audit_every` are
//!   counted into the next entry rather than written one by one, and
//!   refusals at most once a second per address, so a flood cannot fill
//!   the audit log; the limiter's memory is bounded ([`MAX_KEYS`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use adit_audit::Audit;
use adit_config::HttpAuth;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Most (who, path, address) keys the limiter remembers.
pub const MAX_KEYS: usize = 4096;

/// The credentials adit accepts, as digests.
pub struct Gate {
    token: Option<[u8; 32]>,
    basic: Option<(String, [u8; 32])>,
    audit: Audit,
    limiter: Mutex<Limiter>,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Gate {
    pub fn new(auth: &HttpAuth, audit: Audit, audit_every: Duration) -> Arc<Self> {
        Arc::new(Self {
            token: auth.token.as_ref().map(|t| digest(t.expose().as_bytes())),
            basic: auth
                .basic
                .as_ref()
                .map(|(u, p)| (u.clone(), digest(p.expose().as_bytes()))),
            audit,
            limiter: Mutex::new(Limiter::new(audit_every)),
        })
    }

    /// Under basic auth the browser asks for credentials on a 401 by
    /// itself; under a bearer token only the page's script can.
    pub fn browser_asks_for_credentials(&self) -> bool {
        self.basic.is_some()
    }

    /// Writes the accesses the rate limit held back and no later entry
    /// reported (at shutdown), so the audit log's counts are complete.
    pub fn flush_suppressed(&self) {
        let held = self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take_suppressed();
        self.write_held(held);
    }

    fn write_held(&self, held: Held) {
        for ((who, path, ip), n) in held.accesses {
            self.audit.record(
                "http_access",
                serde_json::json!({
                    "who": who, "from": ip.to_string(), "path": path,
                    "suppressed": n, "summary": true,
                }),
            );
        }
        for (ip, n) in held.refusals {
            self.audit.record(
                "http_denied",
                serde_json::json!({
                    "from": ip.to_string(), "status": 401, "suppressed": n, "summary": true,
                }),
            );
        }
    }

    /// Who the request is, `None` when a credential is required and none
    /// matched.
    pub fn identify(&self, headers: &HeaderMap) -> Option<String> {
        if self.token.is_none() && self.basic.is_none() {
            return Some("anonymous".into());
        }
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())?;
        if let (Some(expected), Some(given)) = (&self.token, value.strip_prefix("Bearer ")) {
            if same(expected, &digest(given.trim().as_bytes())) {
                return Some("token".into());
            }
        }
        if let (Some((user, expected)), Some(given)) = (&self.basic, value.strip_prefix("Basic ")) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(given.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            if let Some((u, p)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                // Both compared, whatever the first says: no timing hint.
                let user_ok = same(&digest(user.as_bytes()), &digest(u.as_bytes()));
                let password_ok = same(expected, &digest(p.as_bytes()));
                if user_ok && password_ok {
                    return Some(u.to_string());
                }
            }
        }
        None
    }

    fn challenge(&self) -> Response {
        let mut response = (StatusCode::UNAUTHORIZED, "credentials required\n").into_response();
        let scheme = if self.basic.is_some() {
            "Basic realm=\"adit\", charset=\"UTF-8\""
        } else {
            "Bearer realm=\"adit\""
        };
        if let Ok(v) = scheme.parse() {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        response
    }
}

/// The middleware in front of the page and `/api`.
pub async fn guard(
    State(gate): State<Arc<Gate>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let now = Instant::now();
    match gate.identify(request.headers()) {
        None => {
            let (decision, held) = {
                let mut limiter = gate.limiter.lock().unwrap_or_else(PoisonError::into_inner);
                let held = limiter.make_room();
                (limiter.refusal(peer.ip(), now), held)
            };
            gate.write_held(held);
            if let Some(suppressed) = decision {
                tracing::warn!(%peer, %method, %path, "http access refused: no valid credentials");
                gate.audit.record(
                    "http_denied",
                    serde_json::json!({
                        "from": peer.to_string(), "method": method, "path": path,
                        "status": 401, "suppressed": suppressed,
                    }),
                );
            }
            gate.challenge()
        }
        Some(who) => {
            let response = next.run(request).await;
            let (decision, held) = {
                let mut limiter = gate.limiter.lock().unwrap_or_else(PoisonError::into_inner);
                let held = limiter.make_room();
                (limiter.access(&who, &path, peer.ip(), now), held)
            };
            gate.write_held(held);
            if let Some(suppressed) = decision {
                gate.audit.record(
                    "http_access",
                    serde_json::json!({
                        "who": who, "from": peer.to_string(), "method": method, "path": path,
                        "status": response.status().as_u16(), "suppressed": suppressed,
                    }),
                );
            }
            response
        }
    }
}

/// Accesses and refusals counted but not yet written.
#[derive(Debug, Default)]
pub struct Held {
    pub accesses: Vec<((String, String, IpAddr), u64)>,
    pub refusals: Vec<(IpAddr, u64)>,
}

/// Decides which accesses are written to the audit log. Pure apart from
/// the `now` it is given.
#[derive(Debug)]
pub struct Limiter {
    every: Duration,
    /// (who, path, address) → (last written, accesses since).
    seen: HashMap<(String, String, IpAddr), (Instant, u64)>,
    refused: HashMap<IpAddr, (Instant, u64)>,
}

impl Limiter {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            seen: HashMap::new(),
            refused: HashMap::new(),
        }
    }

    /// `Some(n)` when this access is to be written, with the `n` accesses
    /// since the last entry that were not.
    pub fn access(&mut self, who: &str, path: &str, ip: IpAddr, now: Instant) -> Option<u64> {
        let key = (who.to_string(), path.to_string(), ip);
        Self::decide(
            self.seen.entry(key).or_insert((now, u64::MAX)),
            self.every,
            now,
        )
    }

    /// The same for a refused request (at most once a second per address).
    pub fn refusal(&mut self, ip: IpAddr, now: Instant) -> Option<u64> {
        let entry = self.refused.entry(ip).or_insert((now, u64::MAX));
        Self::decide(entry, Duration::from_secs(1), now)
    }

    /// When either table is full, empties it and returns what it held back
    /// (to be written now): memory stays bounded, no count is lost.
    pub fn make_room(&mut self) -> Held {
        let mut held = Held::default();
        if self.seen.len() >= MAX_KEYS {
            held.accesses = Self::held(std::mem::take(&mut self.seen));
        }
        if self.refused.len() >= MAX_KEYS {
            held.refusals = Self::held(std::mem::take(&mut self.refused));
        }
        held
    }

    /// Everything held back; the tables start over.
    pub fn take_suppressed(&mut self) -> Held {
        Held {
            accesses: Self::held(std::mem::take(&mut self.seen)),
            refusals: Self::held(std::mem::take(&mut self.refused)),
        }
    }

    fn held<K: Ord>(table: HashMap<K, (Instant, u64)>) -> Vec<(K, u64)> {
        let mut held: Vec<(K, u64)> = table
            .into_iter()
            .filter(|(_, (_, n))| *n > 0 && *n != u64::MAX)
            .map(|(k, (_, n))| (k, n))
            .collect();
        held.sort_by(|a, b| a.0.cmp(&b.0));
        held
    }

    fn decide(entry: &mut (Instant, u64), every: Duration, now: Instant) -> Option<u64> {
        let (last, since) = entry;
        // u64::MAX marks a key never written.
        if *since == u64::MAX || now.duration_since(*last) >= every {
            let suppressed = if *since == u64::MAX { 0 } else { *since };
            *entry = (now, 0);
            Some(suppressed)
        } else {
            *since += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_config::Secret;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    fn gate() -> Arc<Gate> {
        Gate::new(
            &HttpAuth {
                token: Some(Secret::new("0123456789abcdef-token".into())),
                basic: Some(("operator".into(), Secret::new("s3cret:with colon".into()))),
            },
            Audit::disabled(),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn credentials_are_checked() {
        let g = gate();
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        let cases: &[(&str, Option<&str>)] = &[
            ("Bearer 0123456789abcdef-token", Some("token")),
            ("Bearer 0123456789abcdef-tokeN", None),
            ("Bearer ", None),
            (&basic("operator:s3cret:with colon"), Some("operator")),
            (&basic("operator:s3cret"), None),
            (&basic("admin:s3cret:with colon"), None),
            ("Basic not-base64!", None),
            ("Digest x", None),
        ];
        for (auth, want) in cases {
            assert_eq!(g.identify(&headers(auth)).as_deref(), *want, "{auth}");
        }
        assert_eq!(g.identify(&HeaderMap::new()), None);
    }

    #[test]
    fn an_open_gate_lets_anyone_in_as_anonymous() {
        let g = Gate::new(
            &HttpAuth::default(),
            Audit::disabled(),
            Duration::from_secs(1),
        );
        assert_eq!(g.identify(&HeaderMap::new()).as_deref(), Some("anonymous"));
    }

    #[test]
    fn repeats_are_counted_into_the_next_entry() {
        let mut l = Limiter::new(Duration::from_secs(60));
        let ip: IpAddr = [10, 0, 0, 7].into();
        let t0 = Instant::now();
        assert_eq!(l.access("op", "/api/points", ip, t0), Some(0));
        for k in 1..=5 {
            assert_eq!(
                l.access("op", "/api/points", ip, t0 + Duration::from_secs(k)),
                None
            );
        }
        assert_eq!(
            l.access("op", "/", ip, t0),
            Some(0),
            "another path is its own key"
        );
        assert_eq!(
            l.access("op", "/api/points", ip, t0 + Duration::from_secs(61)),
            Some(5)
        );
        assert_eq!(l.refusal(ip, t0), Some(0));
        assert_eq!(l.refusal(ip, t0 + Duration::from_millis(10)), None);
        assert_eq!(l.refusal(ip, t0 + Duration::from_millis(1500)), Some(1));
    }

    #[test]
    fn the_limiter_stays_bounded_and_loses_no_count() {
        let mut l = Limiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let mut written = 0u64;
        let mut held_back = 0u64;
        for k in 0..(MAX_KEYS as u32 * 3) {
            let ip = IpAddr::from(k.to_be_bytes());
            for _ in 0..2 {
                let held = l.make_room();
                held_back += held.accesses.iter().map(|(_, n)| n).sum::<u64>();
                held_back += held.refusals.iter().map(|(_, n)| n).sum::<u64>();
                written += u64::from(l.access("op", "/", ip, t0).is_some());
                written += u64::from(l.refusal(ip, t0).is_some());
                assert!(l.seen.len() <= MAX_KEYS && l.refused.len() <= MAX_KEYS);
            }
        }
        let rest = l.take_suppressed();
        held_back += rest.accesses.iter().map(|(_, n)| n).sum::<u64>();
        held_back += rest.refusals.iter().map(|(_, n)| n).sum::<u64>();
        assert_eq!(
            written + held_back,
            u64::from(MAX_KEYS as u32 * 3) * 4,
            "every access either written or counted into a later entry"
        );
        assert!(l.seen.is_empty() && l.refused.is_empty());
    }
}
