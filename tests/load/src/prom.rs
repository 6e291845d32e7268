//! Reading adit's `/metrics` (Prometheus text format): sums of counters and
//! quantiles of a histogram between two scrapes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One scrape: every sample as (name, labels as written, value).
#[derive(Debug, Default, Clone)]
pub struct Scrape(Vec<(String, String, f64)>);

/// `GET path` on a loopback HTTP port; the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("port {port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    s.read_to_string(&mut response).map_err(|e| e.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP answer")?;
    if head.split_whitespace().nth(1) == Some("200") {
        Ok(body.to_string())
    } else {
        Err(format!(
            "GET {path}: {}",
            head.lines().next().unwrap_or_default()
        ))
    }
}

impl Scrape {
    pub fn fetch(port: u16) -> Result<Self, String> {
        Ok(Self::parse(&http_get(port, "/metrics")?))
    }

    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let value: f64 = value.parse().ok()?;
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                Some((name.to_string(), labels.to_string(), value))
            })
            .collect();
        Self(samples)
    }

    /// Sum of `name` over every series whose labels contain `filter`
    /// (e.g. `sink="sqlite"`; empty for all).
    pub fn sum(&self, name: &str, filter: &str) -> f64 {
        self.0
            .iter()
            .filter(|(n, labels, _)| n == name && labels.contains(filter))
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Cumulative buckets `(le, count)` of histogram `name` for series
    /// matching `filter`, in order of `le` (+Inf last).
    pub fn buckets(&self, name: &str, filter: &str) -> Vec<(f64, f64)> {
        let bucket_name = format!("{name}_bucket");
        let mut out: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter(|(n, labels, _)| *n == bucket_name && labels.contains(filter))
            .filter_map(|(_, labels, v)| {
                let le = labels.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *v))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

/// Quantile `q` of the observations made between two scrapes of one
/// histogram, interpolated linearly inside the bucket (as `PromQL`'s
/// `histogram_quantile`). `None` when nothing was observed.
pub fn quantile_between(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let old = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, n - old)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &delta {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let within = (rank - lower.1) / (count - lower.1).max(f64::MIN_POSITIVE);
            return Some(lower.0 + (le - lower.0) * within);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_labels_and_histogram_deltas_give_quantiles() {
        let before = Scrape::parse(
            "# HELP x\nadit_sink_rows_written_total{sink=\"sqlite\"} 100\nadit_sink_rows_written_total{sink=\"questdb\"} 50\nlat_bucket{sink=\"sqlite\",le=\"0.1\"} 10\nlat_bucket{sink=\"sqlite\",le=\"0.2\"} 10\nlat_bucket{sink=\"sqlite\",le=\"+Inf\"} 10\n",
        );
        let after = Scrape::parse(
            "adit_sink_rows_written_total{sink=\"sqlite\"} 300\nlat_bucket{sink=\"sqlite\",le=\"0.1\"} 100\nlat_bucket{sink=\"sqlite\",le=\"0.2\"} 110\nlat_bucket{sink=\"sqlite\",le=\"+Inf\"} 110\n",
        );
        assert_eq!(before.sum("adit_sink_rows_written_total", ""), 150.0);
        assert_eq!(
            before.sum("adit_sink_rows_written_total", "sink=\"sqlite\""),
            100.0
        );
        let (b, a) = (
            before.buckets("lat", "sink=\"sqlite\""),
            after.buckets("lat", "sink=\"sqlite\""),
        );
        // 90 new observations ≤ 0.1, 10 in (0.1, 0.2].
        let p50 = quantile_between(&b, &a, 0.5).unwrap();
        assert!((p50 - 0.1 * 50.0 / 90.0).abs() < 1e-9, "{p50}");
        let p95 = quantile_between(&b, &a, 0.95).unwrap();
        assert!((p95 - 0.15).abs() < 1e-9, "{p95}");
        assert!(quantile_between(&a, &a, 0.5).is_none());
    }
}
