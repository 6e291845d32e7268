//! Human-readable durations (`"500ms"`, `"5s"`, `"1m30s"`) and sizes (`"2 GiB"`).
//!
//! Pure parsing with messages meant for the person who wrote the config.

use std::time::Duration;

/// Parses a duration such as `250ms`, `5s`, `2m`, `1h`, `1m30s`, `1.5s`.
/// Negative or empty durations are errors; zero is allowed (callers decide).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. \"500ms\" or \"5s\"".into());
    }
    if s.starts_with('-') {
        return Err(format!("duration {text:?} is negative"));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "cannot read duration {text:?}; write e.g. \"500ms\", \"5s\", \"1m30s\""
            ));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("cannot read number in duration {text:?}"))?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "" => return Err(format!("duration {text:?} needs a unit (ms, s, m, h, d)")),
            other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
        };
        total += number * seconds_per_unit;
        rest = rest[unit_len..].trim_start();
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("duration {text:?} is too large"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses a size such as `512`, `64 KiB`, `2 GiB`, `10MB` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.starts_with('-') {
        return Err(format!("size {text:?} is negative"));
    }
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let number: f64 = s[..num_len]
        .parse()
        .map_err(|_| format!("cannot read size {text:?}; write e.g. \"512 MiB\" or \"2 GiB\""))?;
    let multiplier: f64 = match s[num_len..].trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit {other:?} in size {text:?}")),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("size {text:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_common_forms_parse() {
        let cases = [
            ("500ms", 500),
            ("5s", 5_000),
            ("1m30s", 90_000),
            ("1.5s", 1_500),
            ("2h", 7_200_000),
            (" 10 s ", 10_000),
            ("0s", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_say_why() {
        assert_eq!(
            parse_duration("-5s"),
            Err("duration \"-5s\" is negative".into())
        );
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        assert_eq!(parse_size("2 GiB"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("-1 GiB").is_err());
        assert!(parse_size("lots").is_err());
    }
}
