//! The one parser for the endpoints adit talks to: `http://`, `https://`
//! (alert receivers, databases), `mqtt://`, `mqtts://` (brokers) and
//! `opc.tcp://` (OPC UA servers). Pure. Host names, IPv4 and bracketed IPv6
//! (`[::1]:4840`); the port defaults per scheme; the path is kept as given
//! (starting with `/`, or empty). No user info, query or fragment: a URL
//! with credentials in it is refused, so a password never sits in a config
//! line that gets logged.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
    Mqtt,
    Mqtts,
    OpcTcp,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Mqtt => "mqtt",
            Scheme::Mqtts => "mqtts",
            Scheme::OpcTcp => "opc.tcp",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
            Scheme::Mqtt => 1883,
            Scheme::Mqtts => 8883,
            Scheme::OpcTcp => 4840,
        }
    }

    /// Whether the scheme runs over TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Https | Scheme::Mqtts)
    }

    const ALL: [Scheme; 5] = [
        Scheme::Http,
        Scheme::Https,
        Scheme::Mqtt,
        Scheme::Mqtts,
        Scheme::OpcTcp,
    ];
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// `/...` or empty.
    pub path: String,
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.name(),
            host_port(&self.host, self.port),
            self.path
        )
    }
}

/// `host:port` as a URL or an HTTP `Host` header spells it (an IPv6
/// address in brackets).
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Url {
    /// Parses `url`, accepting only the given schemes; errors say why.
    pub fn parse(url: &str, accept: &[Scheme]) -> Result<Self, String> {
        let names = || {
            accept
                .iter()
                .map(|s| format!("{}://", s.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (scheme, rest) = url
            .split_once("://")
            .and_then(|(s, rest)| {
                Scheme::ALL
                    .into_iter()
                    .find(|k| k.name().eq_ignore_ascii_case(s))
                    .map(|k| (k, rest))
            })
            .filter(|(k, _)| accept.contains(k))
            .ok_or_else(|| format!("{url:?}: expected a URL starting with {}", names()))?;
        if rest.contains(['?', '#']) {
            return Err(format!("{url:?}: no query or fragment expected"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!(
                "{url:?}: no user or password in the URL; give credentials in their own config keys"
            ));
        }
        let (host, port) = parse_authority(authority, scheme.default_port())
            .map_err(|e| format!("{url:?}: {e}"))?;
        Ok(Self {
            scheme,
            host,
            port,
            path: path.to_string(),
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` (as in a URL, or a
/// connection string's `addr=`): the host and the port, `default_port`
/// when none is given. Errors say why, without the text itself.
pub fn parse_authority(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "unclosed [ in the host".to_string())?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("unexpected {after:?} after the host")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err("an IPv6 address goes in brackets: [::1]:port".into())
            }
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))?,
    };
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_urls() {
        let all = Scheme::ALL;
        let ok = [
            ("http://am:9093", Scheme::Http, "am", 9093, ""),
            (
                "https://hooks.example/a/b",
                Scheme::Https,
                "hooks.example",
                443,
                "/a/b",
            ),
            (
                "mqtt://broker/adit/alerts",
                Scheme::Mqtt,
                "broker",
                1883,
                "/adit/alerts",
            ),
            ("mqtts://10.0.0.2:8884", Scheme::Mqtts, "10.0.0.2", 8884, ""),
            (
                "opc.tcp://plc.tunnel:4841/UA/Server",
                Scheme::OpcTcp,
                "plc.tunnel",
                4841,
                "/UA/Server",
            ),
            ("opc.tcp://[fe80::1]", Scheme::OpcTcp, "fe80::1", 4840, ""),
            ("OPC.TCP://[::1]:4850/x", Scheme::OpcTcp, "::1", 4850, "/x"),
        ];
        for (text, scheme, host, port, path) in ok {
            let u = Url::parse(text, &all).unwrap();
            assert_eq!(
                (u.scheme, u.host.as_str(), u.port, u.path.as_str()),
                (scheme, host, port, path),
                "{text}"
            );
        }
        let bad = [
            ("ftp://x", "expected a URL"),
            ("mqtt://:1883/a", "no host"),
            ("mqtt://x:99999/a", "not a number"),
            ("mqtt://x:0/a", "not a number"),
            ("http://user:pw@x/", "no user or password"),
            ("http://x/?a=1", "no query"),
            ("opc.tcp://[::1/x", "unclosed"),
            ("opc.tcp://fe80::1:4840", "in brackets"),
            ("x", "expected a URL"),
        ];
        for (text, why) in bad {
            let e = Url::parse(text, &all).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
        assert!(Url::parse("mqtt://x/a", &[Scheme::Http])
            .unwrap_err()
            .contains("http://"));
        assert_eq!(
            Url::parse("opc.tcp://[::1]:4840/a", &all)
                .unwrap()
                .to_string(),
            "opc.tcp://[::1]:4840/a"
        );
    }
}
