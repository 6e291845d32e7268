//! Glob patterns on point ids: `*` matches any run of characters, `?` one.

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn table_of_patterns() {
        let cases = [
            ("bore_*.co_*", "bore_a.co_1", true),
            ("bore_*.co_*", "bore_a.no2", false),
            ("*", "anything", true),
            ("bore_?.co_1", "bore_b.co_1", true),
            ("bore_?.co_1", "bore_bb.co_1", false),
            ("*.velocity*", "bore_a.air_velocity", false),
            ("*velocity*", "bore_a.air_velocity", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
        ];
        for (p, t, expected) in cases {
            assert_eq!(matches(p, t), expected, "{p} vs {t}");
        }
    }
}
