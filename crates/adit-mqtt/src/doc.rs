//! A JSON document that borrows from the payload: the tree `decode_json`
//! looks things up in, built without a `String` per key or text value
//! (they point into the payload unless they hold escapes) and without a
//! map per object (members are a `Vec` in document order).
//!
//! Invariants (so that it reads payloads exactly as `serde_json::Value`
//! would; the property test at the bottom compares the two):
//! - `pointer` follows RFC 6901 as `serde_json::Value::pointer` does:
//!   `~1` → `/` then `~0` → `~` in each token, array indices without `+`
//!   or leading zeros;
//! - an object's member looked up by name is the last of equal names;
//!   `members` iterates them sorted by name with the last of equal names,
//!   which is how a `serde_json::Map` (a `BTreeMap`) holds them;
//! - numbers keep `serde_json`'s three kinds (non-negative integer, negative
//!   integer, float), so conversions give the same values;
//! - nesting is bounded by `serde_json`'s own recursion limit (128);
//! - [`Doc::parse_members`] builds, of a root object, only the members it
//!   is asked for (whole), in document order; the others are read for
//!   syntax only (`serde_json`'s `IgnoredAny`), so it refuses every text
//!   `parse` refuses except one whose only fault sits inside a member
//!   nobody reads and is not syntax: a lone UTF-16 surrogate escape or a
//!   number too large for a double. Its caller checks UTF-8 first (a
//!   skipped string is not checked for it).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq)]
pub enum Doc<'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(Cow<'a, str>),
    Array(Vec<Doc<'a>>),
    Object(Vec<(Cow<'a, str>, Doc<'a>)>),
}

/// A JSON number as `serde_json` keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Pos(u64),
    Neg(i64),
    Float(f64),
}

impl Num {
    pub fn as_i64(self) -> Option<i64> {
        match self {
            Num::Pos(u) => i64::try_from(u).ok(),
            Num::Neg(i) => Some(i),
            Num::Float(_) => None,
        }
    }

    pub fn as_u64(self) -> Option<u64> {
        match self {
            Num::Pos(u) => Some(u),
            Num::Neg(_) | Num::Float(_) => None,
        }
    }

    #[allow(clippy::cast_precision_loss)]
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Pos(u) => u as f64,
            Num::Neg(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

impl<'a> Doc<'a> {
    /// Parses a whole payload (trailing data other than whitespace is an error).
    pub fn parse(payload: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// Like [`parse`](Self::parse), but of a root object keeps only the
    /// members named in `names` (see the module's invariants): lookups of
    /// pointers that start with one of them find what `parse` would, for a
    /// fraction of the work (no tree for the members nobody reads).
    ///
    /// A flat object of scalars (most payloads) is read by [`crate::flat`],
    /// which builds the same tree without serde.
    /// Takes text (UTF-8 checked once, by the caller).
    pub fn parse_members(payload: &'a str, names: &[&str]) -> Result<Self, serde_json::Error> {
        if let Some(doc) = crate::flat::parse(payload, names) {
            return Ok(doc);
        }
        Self::parse_members_serde(payload.as_bytes(), names)
    }

    /// [`parse_members`](Self::parse_members) through `serde_json` only.
    pub fn parse_members_serde(
        payload: &'a [u8],
        names: &[&str],
    ) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(payload);
        let doc = (&mut de).deserialize_any(MembersVisitor { names })?;
        de.end()?;
        Ok(doc)
    }

    /// The member named `name` (the last of equal names).
    pub fn get(&self, name: &str) -> Option<&Doc<'a>> {
        match self {
            Doc::Object(members) => members.iter().rev().find(|(k, _)| k == name).map(|m| &m.1),
            _ => None,
        }
    }

    /// An RFC 6901 pointer lookup (`""` is the document itself).
    pub fn pointer(&self, pointer: &str) -> Option<&Doc<'a>> {
        if pointer.is_empty() {
            return Some(self);
        }
        let rest = pointer.strip_prefix('/')?;
        rest.split('/').try_fold(self, |target, token| {
            let token: Cow<'_, str> = if token.contains('~') {
                Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
            } else {
                Cow::Borrowed(token)
            };
            match target {
                Doc::Object(_) => target.get(&token),
                Doc::Array(list) => index(&token).and_then(|i| list.get(i)),
                _ => None,
            }
        })
    }

    /// An object's members sorted by name, the last of equal names (empty
    /// for anything else).
    pub fn members(&self) -> Vec<(&str, &Doc<'a>)> {
        let Doc::Object(members) = self else {
            return Vec::new();
        };
        let mut sorted: Vec<(&str, &Doc<'a>)> =
            members.iter().map(|(k, v)| (k.as_ref(), v)).collect();
        // Stable: equal names keep document order, so the last one wins.
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut out: Vec<(&str, &Doc<'a>)> = Vec::with_capacity(sorted.len());
        for m in sorted {
            match out.last_mut() {
                Some(last) if last.0 == m.0 => *last = m,
                _ => out.push(m),
            }
        }
        out
    }
}

fn index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

impl<'de: 'a, 'a> Deserialize<'de> for Doc<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DocVisitor)
    }
}

struct DocVisitor;

impl<'de> Visitor<'de> for DocVisitor {
    type Value = Doc<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }
    fn visit_none<E>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Doc<'de>, E> {
        Ok(Doc::Bool(b))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Doc<'de>, E> {
        Ok(Doc::Num(Num::Pos(u)))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Doc<'de>, E> {
        // serde_json keeps non-negative integers as its positive kind.
        Ok(Doc::Num(match u64::try_from(i) {
            Ok(u) => Num::Pos(u),
            Err(_) => Num::Neg(i),
        }))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Doc<'de>, E> {
        Ok(Doc::Num(Num::Float(f)))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Doc<'de>, E> {
        Ok(Doc::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Doc<'de>, E> {
        Ok(Doc::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Doc<'de>, E> {
        Ok(Doc::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Doc::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).clamp(4, 64));
        while let Some(Key(k)) = map.next_key()? {
            members.push((k, map.next_value()?));
        }
        Ok(Doc::Object(members))
    }
}

/// A root that is an object keeps only the members named in `names`;
/// anything else is read as [`DocVisitor`] reads it.
struct MembersVisitor<'n> {
    names: &'n [&'n str],
}

impl<'de> Visitor<'de> for MembersVisitor<'_> {
    type Value = Doc<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Doc<'de>, E> {
        DocVisitor.visit_unit()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Doc<'de>, E> {
        DocVisitor.visit_none()
    }
    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Doc<'de>, E> {
        DocVisitor.visit_bool(b)
    }
    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Doc<'de>, E> {
        DocVisitor.visit_u64(u)
    }
    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<Doc<'de>, E> {
        DocVisitor.visit_i64(i)
    }
    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Doc<'de>, E> {
        DocVisitor.visit_f64(f)
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Doc<'de>, E> {
        DocVisitor.visit_borrowed_str(s)
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Doc<'de>, E> {
        DocVisitor.visit_str(s)
    }
    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Doc<'de>, E> {
        DocVisitor.visit_string(s)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Doc<'de>, A::Error> {
        DocVisitor.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc<'de>, A::Error> {
        let mut members = Vec::with_capacity(self.names.len());
        while let Some(Key(k)) = map.next_key()? {
            if self.names.iter().any(|n| *n == k) {
                members.push((k, map.next_value()?));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Doc::Object(members))
    }
}

/// An object member's name, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::{Doc, Num};
    use serde_json::Value as Json;

    /// The same document as `serde_json`'s `Value` (objects as its map holds them).
    fn to_json(d: &Doc<'_>) -> Json {
        match d {
            Doc::Null => Json::Null,
            Doc::Bool(b) => Json::Bool(*b),
            Doc::Num(Num::Pos(u)) => Json::from(*u),
            Doc::Num(Num::Neg(i)) => Json::from(*i),
            Doc::Num(Num::Float(f)) => {
                serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number)
            }
            Doc::Str(s) => Json::String(s.to_string()),
            Doc::Array(items) => Json::Array(items.iter().map(to_json).collect()),
            Doc::Object(_) => Json::Object(
                d.members()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), to_json(v)))
                    .collect(),
            ),
        }
    }

    #[test]
    fn borrows_names_and_text_without_escapes() {
        let payload =
            br#"{"value": "on", "a\"b": "x\ny", "n": [1, -2, 2.5, 18446744073709551615]}"#;
        let doc = Doc::parse(payload).unwrap();
        assert!(matches!(
            doc.get("value"),
            Some(Doc::Str(std::borrow::Cow::Borrowed("on")))
        ));
        assert!(
            matches!(doc.get("a\"b"), Some(Doc::Str(std::borrow::Cow::Owned(s))) if s == "x\ny")
        );
        assert_eq!(doc.pointer("/n/1"), Some(&Doc::Num(Num::Neg(-2))));
        assert_eq!(doc.pointer("/n/3"), Some(&Doc::Num(Num::Pos(u64::MAX))));
        assert_eq!(doc.pointer("/n/01"), None);
        assert_eq!(doc.pointer("n"), None);
        assert!(Doc::parse(b"{\"a\": 1} x").is_err());
    }

    #[test]
    fn duplicate_names_resolve_as_serde_json_does() {
        let payload = br#"{"b": 1, "a": 2, "b": 3}"#;
        let doc = Doc::parse(payload).unwrap();
        let json: Json = serde_json::from_slice(payload).unwrap();
        assert_eq!(to_json(&doc), json);
        assert_eq!(doc.get("b"), Some(&Doc::Num(Num::Pos(3))));
        let names: Vec<&str> = doc.members().iter().map(|m| m.0).collect();
        assert_eq!(names, ["a", "b"]);
    }

    /// Random JSON texts: whatever `serde_json`'s `Value` accepts, `Doc`
    /// accepts as the same document, and every pointer finds the same thing.
    fn json_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<u64>().prop_map(|u| u.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            "[0-9]{1,30}",
            "\"([a-z~/]|\\\\n|\\\\\"|\\\\u00e9|é){0,6}\"",
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(("(a|b|c~0|d~1|0|1|~|/)", inner), 0..6).prop_map(|m| {
                    let members: Vec<String> =
                        m.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    proptest::proptest! {
        /// `decode_json` relies on this to check UTF-8 only for payloads
        /// refused: whatever bytes sit in a key, a string or between the
        /// tokens, a document that parses is valid UTF-8.
        #[test]
        fn a_document_that_parses_is_valid_utf8(
            key in proptest::collection::vec(proptest::num::u8::ANY, 0..6),
            text in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
            between in proptest::collection::vec(proptest::num::u8::ANY, 0..2),
        ) {
            let mut payload = b"{\"".to_vec();
            payload.extend(key.iter().filter(|b| !matches!(b, b'"' | b'\\')));
            payload.extend_from_slice(b"\":");
            payload.extend(&between);
            payload.push(b'"');
            payload.extend(text.iter().filter(|b| !matches!(b, b'"' | b'\\')));
            payload.extend_from_slice(b"\"}");
            if Doc::parse(&payload).is_ok() {
                proptest::prop_assert!(std::str::from_utf8(&payload).is_ok());
            }
        }

        /// Pointers that start with a kept member find what a whole parse
        /// finds; texts without surrogate escapes or huge numbers (the
        /// documented exceptions) are refused by both or neither.
        #[test]
        fn a_parse_of_some_members_finds_what_a_whole_parse_finds(
            text in json_text(),
            names in proptest::collection::vec("(a|b|0|~|/|c~0)", 0..3),
            pointer in proptest::collection::vec("(a|b|c~0|d~1|0|1|~)", 1..4),
        ) {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let whole = Doc::parse(text.as_bytes());
            let some = Doc::parse_members(&text, &names);
            proptest::prop_assert_eq!(whole.is_ok(), some.is_ok(), "{}", text);
            if let (Ok(whole), Ok(some)) = (whole, some) {
                let p: String = pointer.iter().flat_map(|t| ["/", t.as_str()]).collect();
                let first = pointer[0].replace("~1", "/").replace("~0", "~");
                if names.contains(&first.as_str()) || !matches!(whole, Doc::Object(_)) {
                    proptest::prop_assert_eq!(some.pointer(&p), whole.pointer(&p), "{} {}", text, p);
                }
            }
        }

        #[test]
        fn reads_every_document_as_serde_json_does(
            text in json_text(),
            pointer in proptest::collection::vec("(a|b|c~0|d~1|0|1|01|~|~01|)", 0..4),
        ) {
            let json: Result<Json, _> = serde_json::from_str(&text);
            let doc = Doc::parse(text.as_bytes());
            proptest::prop_assert_eq!(json.is_ok(), doc.is_ok(), "{}", text);
            if let (Ok(json), Ok(doc)) = (json, doc) {
                proptest::prop_assert_eq!(&to_json(&doc), &json);
                let p: String = pointer.iter().flat_map(|t| ["/", t.as_str()]).collect();
                proptest::prop_assert_eq!(doc.pointer(&p).map(to_json), json.pointer(&p).cloned(), "{} {}", text, p);
            }
        }
    }
}
