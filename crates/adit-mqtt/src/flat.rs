//! The common JSON payload read without serde: one flat object of scalar
//! members (`{"value": 21.5, "ts": 1733400000000, "quality": "good"}`).
//!
//! Invariant: [`parse`] returns `Some` only for a text that is valid JSON
//! in this narrow shape, and then exactly the [`Doc`] that
//! `Doc::parse_members_serde` builds through `serde_json` (kept members in
//! document order; numbers of the same kind and value: floats are read by
//! `serde_json` itself). Anything else (nesting, an escape in a string, a
//! control byte, an integer beyond 64 bits, any syntax error) gives `None`,
//! and the caller takes the serde path, which also names the fault. A
//! property test compares the two (floats bit for bit, strings borrowed).
//! It reads a text already checked as UTF-8 (the caller checked the whole
//! payload once): strings are slices of it, cut at ASCII quotes, never
//! checked again.

use std::borrow::Cow;

use crate::doc::{Doc, Num};

/// The root object's members named in `names`, or `None` (see the module).
pub fn parse<'a>(payload: &'a str, names: &[&str]) -> Option<Doc<'a>> {
    let mut s = Scan {
        text: payload,
        b: payload.as_bytes(),
        i: 0,
    };
    s.ws();
    s.eat(b'{')?;
    let mut members = Vec::with_capacity(names.len());
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.ws();
            let key = s.string()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            let wanted = names.contains(&key);
            let value = s.scalar(wanted)?;
            if wanted {
                members.push((Cow::Borrowed(key), value));
            }
            s.ws();
            match s.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == payload.len()).then_some(Doc::Object(members))
}

struct Scan<'a> {
    text: &'a str,
    /// `text`'s bytes.
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string without escapes or control bytes.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let len = plain_run(self.b.get(start..)?);
        let end = start + len;
        // The run ends at its closing quote, or the string is not plain.
        (self.b.get(end) == Some(&b'"')).then_some(())?;
        self.i = end + 1;
        self.text.get(start..end)
    }

    /// A string, number, `true`, `false` or `null`; built when `wanted`.
    fn scalar(&mut self, wanted: bool) -> Option<Doc<'a>> {
        match self.peek()? {
            b'"' => self.string().map(|s| Doc::Str(Cow::Borrowed(s))),
            b't' => self.word(b"true", Doc::Bool(true)),
            b'f' => self.word(b"false", Doc::Bool(false)),
            b'n' => self.word(b"null", Doc::Null),
            b'-' | b'0'..=b'9' => self.number(wanted),
            _ => None,
        }
    }

    fn word(&mut self, word: &[u8], doc: Doc<'a>) -> Option<Doc<'a>> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| {
            self.i = end;
            doc
        })
    }

    /// RFC 8259's number grammar; integers as `serde_json` keeps them,
    /// anything with a fraction or an exponent read by `serde_json`.
    fn number(&mut self, wanted: bool) -> Option<Doc<'a>> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let int_start = self.i;
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let int_end = self.i;
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digit()?;
            self.digits();
            float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digit()?;
            self.digits();
            float = true;
        }
        if !wanted {
            return Some(Doc::Null);
        }
        let text = &self.b[start..self.i];
        if float {
            return serde_json::from_slice::<f64>(text)
                .ok()
                .map(|f| Doc::Num(Num::Float(f)));
        }
        // Integers beyond 64 bits become doubles in serde_json: left to it.
        let magnitude: u64 = self.text.get(int_start..int_end)?.parse().ok()?;
        // `-0` is serde_json's negative zero double: left to it.
        Some(Doc::Num(if negative {
            Num::Neg(0i64.checked_sub_unsigned(magnitude).filter(|&n| n < 0)?)
        } else {
            Num::Pos(magnitude)
        }))
    }

    fn digit(&mut self) -> Option<()> {
        self.next()?.is_ascii_digit().then_some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }
}

/// How many bytes of `b` come before the first quote, backslash or
/// control byte (all of `b` if none): eight bytes at a time, since a
/// payload's strings (names, units, padding) are most of its bytes.
///
/// In each word, a byte that matches sets its high bit in `hit`; a borrow
/// can flag bytes above the first match, never one below it, so the
/// lowest flagged byte is the first match.
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(word) = b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let w = u64::from_le_bytes(word);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let hit = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGHS;
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + b[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .unwrap_or(b.len() - i)
}

#[cfg(test)]
mod tests {
    use super::parse;
    use crate::doc::{Doc, Num};
    use proptest::prelude::*;

    #[test]
    fn the_common_payloads() {
        let names = ["value", "ts", "quality"];
        let doc = parse(
            r#" {"value": -21.5, "ts":1733400000000 , "quality":"good", "unit": "ppm", "x": [1]} "#,
            &names,
        );
        assert_eq!(doc, None, "a nested member: the serde path");
        let doc = parse(
            r#" {"value": -21.5, "ts":1733400000000 , "quality":"good", "unit": "ppm"} "#,
            &names,
        )
        .unwrap();
        assert_eq!(doc.get("value"), Some(&Doc::Num(Num::Float(-21.5))));
        assert_eq!(doc.get("ts"), Some(&Doc::Num(Num::Pos(1_733_400_000_000))));
        assert_eq!(doc.get("unit"), None, "not asked for");
        assert_eq!(
            parse(r#"{"value":-9223372036854775808}"#, &names)
                .unwrap()
                .get("value"),
            Some(&Doc::Num(Num::Neg(i64::MIN)))
        );
        for refused in [
            r#"{"value": 01}"#,
            r#"{"value": 1.}"#,
            r#"{"value": -}"#,
            r#"{"value": 1e}"#,
            r#"{"value": tru}"#,
            r#"{"value": 1,}"#,
            r#"{"value": 1} x"#,
            r#"{"value": "a\n"}"#,
            r#"{"value": 18446744073709551616}"#,
            r#"{"value": -9223372036854775809}"#,
            r#"{"value": 1e999}"#,
            "[1]",
            "{\"value\": \"a\tb\"}",
            r#"{"value" 1}"#,
            "{value: 1}",
            "",
        ] {
            assert_eq!(parse(refused, &names), None, "{refused}");
        }
    }

    proptest! {
        /// The word-at-a-time scan finds what a byte-at-a-time one does.
        #[test]
        fn plain_run_stops_where_a_byte_scan_does(
            bytes in proptest::collection::vec(prop_oneof![
                6 => 0x20u8..0x7f,
                1 => Just(b'"'),
                1 => Just(b'\\'),
                1 => 0u8..0x20,
                2 => 0x80u8..=0xff,
            ], 0..40),
        ) {
            let expected = bytes
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(bytes.len());
            prop_assert_eq!(super::plain_run(&bytes), expected);
        }
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<u64>().prop_map(|u| u.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            any::<f64>().prop_map(|f| format!("{f}")),
            "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
            "\"([a-z ~/é]|\\\\n){0,6}\"",
            "\"([a-zé\"]|\\\\n|\t){0,40}\"",
            "[-+]?[0-9.eE+-]{1,8}",
            "(tru|fals|nul|truee|nulll|True)",
            "\"[a-z\t\u{1}]{0,3}\"",
            Just("[1]".to_string()),
            Just("{}".to_string()),
        ]
    }

    fn flat_text() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(("(value|ts|q|a|value)", scalar(), "[ \t\n]{0,2}"), 0..6),
            "[ \n]{0,2}",
        )
            .prop_map(|(members, ws)| {
                let members: Vec<String> = members
                    .iter()
                    .map(|(k, v, w)| format!("{w}\"{k}\"{w}:{w}{v}{w}"))
                    .collect();
                format!("{ws}{{{}}}{ws}", members.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Whatever the flat reader accepts, the serde path reads the same;
        /// mutated texts (a byte changed, dropped or added) included.
        #[test]
        fn what_it_accepts_serde_json_reads_the_same(
            text in flat_text(),
            edit in proptest::option::of((any::<prop::sample::Index>(), any::<u8>(), 0u8..3)),
        ) {
            let mut bytes = text.into_bytes();
            if let Some((at, byte, how)) = edit {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    match how {
                        0 => bytes[i] = byte,
                        1 => { bytes.remove(i); }
                        _ => bytes.insert(i, byte),
                    }
                }
            }
            prop_assume!(std::str::from_utf8(&bytes).is_ok());
            let text = std::str::from_utf8(&bytes).unwrap();
            let names = ["value", "ts", "q"];
            if let Some(flat) = parse(text, &names) {
                let serde = Doc::parse_members_serde(&bytes, &names);
                prop_assert_eq!(Some(&flat), serde.as_ref().ok(), "{}", String::from_utf8_lossy(&bytes));
                // What PartialEq does not tell apart: -0.0 from 0.0, and a
                // borrowed string from a copied one.
                if let (Doc::Object(ours), Ok(Doc::Object(theirs))) = (&flat, &serde) {
                    for ((_, a), (_, b)) in ours.iter().zip(theirs) {
                        if let (Doc::Num(Num::Float(x)), Doc::Num(Num::Float(y))) = (a, b) {
                            prop_assert_eq!(x.to_bits(), y.to_bits());
                        }
                        if let Doc::Str(text) = a {
                            prop_assert!(matches!(text, std::borrow::Cow::Borrowed(_)));
                        }
                    }
                }
            }
        }

        /// And it takes the common shape: a flat object of plain scalars.
        #[test]
        fn it_reads_flat_objects_of_plain_scalars(
            members in proptest::collection::vec(("(value|ts|q|a)", prop_oneof![
                any::<i64>().prop_map(|i| i.to_string()),
                (-1e6f64..1e6).prop_map(|f| format!("{f}")),
                "\"[a-z ]{0,8}\"",
            ]), 0..6),
        ) {
            let members: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
            let text = format!("{{{}}}", members.join(", "));
            prop_assert!(parse(&text, &["value"]).is_some(), "{}", text);
        }
    }
}
