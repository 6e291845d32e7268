//! The MQTT topic vocabulary, pure: topic filters (what a subscription asks
//! the broker for), topic templates with named captures (how a topic names
//! a point) and point-id patterns built from the captures.
//!
//! Invariants:
//! - a template is a filter whose `+` levels may carry a name: its filter
//!   (names replaced by `+`) matches exactly the topics it captures from;
//! - a shared subscription (`$share/{group}/{filter}`) matches what its
//!   filter matches; wildcards never match topics that start with `$`
//!   (MQTT 3.1.1 §4.7.2);
//! - a rendered point id only holds the characters a point id may have:
//!   anything else a topic level brings is replaced by `_`.

/// The filter without a shared-subscription prefix, and the group if any.
pub fn split_share(filter: &str) -> (Option<&str>, &str) {
    if let Some(rest) = filter.strip_prefix("$share/") {
        if let Some((group, f)) = rest.split_once('/') {
            return (Some(group), f);
        }
    }
    (None, filter)
}

/// Checks a filter the way a broker would (and a share group's name).
pub fn check_filter(filter: &str) -> Result<(), String> {
    let (group, f) = split_share(filter);
    if filter.starts_with("$share/") && group.is_none_or(|g| g.is_empty() || g.contains(['+', '#']))
    {
        return Err(format!(
            "{filter:?}: a shared subscription is $share/GROUP/FILTER"
        ));
    }
    if f.is_empty() {
        return Err("a topic filter must not be empty".into());
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "{filter:?}: '#' must be a whole level and the last one"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("{filter:?}: '+' must be a whole level"));
        }
    }
    Ok(())
}

/// Whether `topic` matches `filter` (a `$share/` prefix is ignored).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let (_, filter) = split_share(filter);
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return true,
            "+" => {
                if t.next().is_none() {
                    return false;
                }
            }
            lit => {
                if t.next() != Some(lit) {
                    return false;
                }
            }
        }
    }
    t.next().is_none()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// `+` or `{name}`: one level (captured when named).
    One(Option<usize>),
    /// `#` or a final `{name#}`: the rest, zero or more levels (captured,
    /// as one `/`-joined value, when named).
    Rest(Option<usize>),
}

/// A topic template such as `tunnel/{bore}/sensors/{sensor}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicTemplate {
    levels: Vec<Level>,
    names: Vec<String>,
}

impl TopicTemplate {
    /// Parses a template; `{name}` levels capture one level, a final
    /// `{name#}` captures the rest of the topic (`a/b/c`), `+` and a final
    /// `#` match without capturing.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (_, body) = split_share(text);
        let mut levels = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let parts: Vec<&str> = body.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let level = if let Some(inner) =
                part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
            {
                let (name, rest) = match inner.strip_suffix('#') {
                    Some(n) => (n, true),
                    None => (inner, false),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "{text:?}: capture {{{inner}}} needs a name of A-Z a-z 0-9 _"
                    ));
                }
                if names.iter().any(|n| n == name) {
                    return Err(format!("{text:?}: capture {{{name}}} appears twice"));
                }
                if rest && i + 1 != parts.len() {
                    return Err(format!(
                        "{text:?}: {{{inner}}} (the rest of the topic) must be the last level"
                    ));
                }
                names.push(name.to_string());
                if rest {
                    Level::Rest(Some(names.len() - 1))
                } else {
                    Level::One(Some(names.len() - 1))
                }
            } else if *part == "+" {
                Level::One(None)
            } else if *part == "#" {
                if i + 1 != parts.len() {
                    return Err(format!("{text:?}: '#' must be the last level"));
                }
                Level::Rest(None)
            } else if part.contains(['{', '}', '+', '#']) {
                return Err(format!(
                    "{text:?}: level {part:?} must be a literal, +, # or a whole {{name}}"
                ));
            } else {
                Level::Literal((*part).to_string())
            };
            levels.push(level);
        }
        Ok(Self { levels, names })
    }

    /// The capture names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The filter that matches what this template captures from.
    pub fn filter(&self) -> String {
        let parts: Vec<&str> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::One(_) => "+",
                Level::Rest(_) => "#",
            })
            .collect();
        parts.join("/")
    }

    /// Fills `out` with the captured levels of `topic` (in name order);
    /// false when the topic does not match.
    pub fn capture<'t>(&self, topic: &'t str, out: &mut Vec<&'t str>) -> bool {
        out.clear();
        out.resize(self.names.len(), "");
        // Wildcards never match a `$` topic's first level (like the filter).
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Literal(_))) {
            return false;
        }
        // `rest` is the part of the topic not yet matched; None once the
        // last level has been taken.
        let mut rest = Some(topic);
        for level in &self.levels {
            if let Level::Rest(name) = level {
                if let (Some(i), Some(r)) = (name, rest) {
                    out[*i] = r;
                }
                return true;
            }
            let Some(r) = rest else {
                return false;
            };
            let (this, next) = match r.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (r, None),
            };
            rest = next;
            match level {
                Level::Literal(s) if this != s.as_str() => return false,
                Level::One(Some(i)) => out[*i] = this,
                _ => {}
            }
        }
        rest.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(usize),
}

/// A point-id pattern such as `{bore}.{sensor}`: literal text and captures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointPattern {
    parts: Vec<Part>,
}

impl PointPattern {
    /// Parses `text` against the capture `names` it may use.
    pub fn parse(text: &str, names: &[&str]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 1..];
            let Some(end) = after.find('}') else {
                return Err(format!("{text:?}: unclosed {{"));
            };
            let name = &after[..end];
            let Some(i) = names.iter().position(|n| *n == name) else {
                return Err(format!(
                    "{text:?}: {{{name}}} is not a capture (known: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ));
            };
            parts.push(Part::Var(i));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("a point pattern must not be empty".into());
        }
        Ok(Self { parts })
    }

    /// The pattern joining every capture with `.` (the default).
    pub fn joined(count: usize) -> Self {
        let mut parts = Vec::new();
        for i in 0..count {
            if i > 0 {
                parts.push(Part::Literal(".".into()));
            }
            parts.push(Part::Var(i));
        }
        Self { parts }
    }

    /// Writes the point id for `values` into `out` (cleared first); a
    /// character a point id may not hold becomes `_`. False when a capture
    /// is empty or the id would be longer than 128 bytes.
    pub fn render(&self, values: &[&str], out: &mut String) -> bool {
        out.clear();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(i) => {
                    let v = values.get(*i).copied().unwrap_or("");
                    if v.is_empty() {
                        return false;
                    }
                    out.extend(v.chars().map(sanitize));
                }
            }
        }
        !out.is_empty() && out.len() <= 128
    }
}

/// The point-id character for `c` (ids are `A-Z a-z 0-9 _ . - : /`).
pub fn sanitize(c: char) -> char {
    if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '/') {
        c
    } else {
        '_'
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn filters_match_like_a_broker() {
        let table = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("$share/g/a/+", "a/b", true),
            ("a/+/c", "a//c", true),
            ("a/b", "a/b/", false),
        ];
        for (f, t, want) in table {
            assert_eq!(filter_matches(f, t), want, "{f} vs {t}");
        }
        for bad in ["", "a/#/b", "a/b#", "a+/b", "$share/g", "$share//a"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
        assert!(check_filter("$share/adit/tunnel/#").is_ok());
    }

    #[test]
    fn templates_capture_named_levels_and_render_point_ids() {
        let t = TopicTemplate::parse("tunnel/{bore}/sensors/{sensor}").unwrap();
        assert_eq!(t.filter(), "tunnel/+/sensors/+");
        let mut caps = Vec::new();
        assert!(t.capture("tunnel/north/sensors/co 1", &mut caps));
        assert_eq!(caps, ["north", "co 1"]);
        let mut other = Vec::new();
        assert!(!t.capture("tunnel/north/sensors", &mut other));
        assert!(!t.capture("tunnel/north/sensors/co/x", &mut other));
        let names: Vec<&str> = t.names().iter().map(String::as_str).collect();
        let p = PointPattern::parse("{bore}.{sensor}", &names).unwrap();
        let mut id = String::new();
        assert!(p.render(&caps, &mut id));
        assert_eq!(id, "north.co_1");
        assert!(!p.render(&["", "x"], &mut id));
        assert!(PointPattern::parse("{nope}", &names).is_err());
        assert!(TopicTemplate::parse("a/{x}/{x}").is_err());
        assert!(TopicTemplate::parse("a/x{y}").is_err());
        assert!(TopicTemplate::parse("a/#/b").is_err());
        let rest = TopicTemplate::parse("spBv1.0/{group}/#").unwrap();
        assert!(rest.capture("spBv1.0/g1/NDATA/n1", &mut caps));
        assert_eq!(caps, ["g1"]);
        let named_rest = TopicTemplate::parse("tunnel/{bore}/{rest#}").unwrap();
        assert_eq!(named_rest.filter(), "tunnel/+/#");
        assert!(named_rest.capture("tunnel/north/fans/f1/speed", &mut caps));
        assert_eq!(caps, ["north", "fans/f1/speed"]);
        assert!(named_rest.capture("tunnel/north", &mut caps));
        assert_eq!(
            caps,
            ["north", ""],
            "# matches zero levels; the capture is empty"
        );
        assert!(TopicTemplate::parse("a/{r#}/b").is_err());
        assert!(TopicTemplate::parse("a/{#}").is_err());
    }

    proptest! {
        #[test]
        fn a_template_captures_exactly_what_its_filter_matches(
            levels in proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("{x}"), Just("+")], 1..5),
            last in prop_oneof![Just(""), Just("#"), Just("{r#}")],
            topic in proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c"), Just(""), Just("$s")], 0..6),
        ) {
            let mut text: Vec<String> = Vec::new();
            for (i, l) in levels.iter().enumerate() {
                text.push(if *l == "{x}" { format!("{{x{i}}}") } else { (*l).to_string() });
            }
            if !last.is_empty() {
                text.push(last.to_string());
            }
            let t = TopicTemplate::parse(&text.join("/")).unwrap();
            let topic = topic.join("/");
            let mut caps = Vec::new();
            prop_assert_eq!(t.capture(&topic, &mut caps), filter_matches(&t.filter(), &topic));
        }

        #[test]
        fn rendered_ids_only_hold_id_characters(v in "\\PC{1,40}") {
            let p = PointPattern::parse("x.{a}", &["a"]).unwrap();
            let mut id = String::new();
            if p.render(&[v.as_str()], &mut id) {
                prop_assert!(id.chars().all(|c| sanitize(c) == c));
            }
        }
    }
}
