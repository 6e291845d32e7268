//! Where each key of a TOML document is, so that every error can name a line.
//!
//! The index maps key paths in the form used by all config errors
//! (`device[1].point[3].address`) to the byte span of the key and of its value.

use std::collections::HashMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

#[derive(Debug, Default)]
pub struct SpanIndex {
    /// Path → (key span, value span).
    entries: HashMap<String, (Range<usize>, Range<usize>)>,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
}

impl SpanIndex {
    pub fn build(source: &str, root: &Spanned<DeTable<'_>>) -> Self {
        let mut index = SpanIndex {
            entries: HashMap::new(),
            line_starts: std::iter::once(0)
                .chain(source.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        };
        index.walk_table("", root.get_ref());
        index
    }

    /// An index with line information only (for syntax errors).
    pub fn lines_only(source: &str) -> Self {
        SpanIndex {
            entries: HashMap::new(),
            line_starts: std::iter::once(0)
                .chain(source.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        }
    }

    fn walk_table(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            self.entries
                .insert(path.clone(), (key.span(), value.span()));
            self.walk_value(&path, value, key.span());
        }
    }

    fn walk_value(&mut self, path: &str, value: &Spanned<DeValue<'_>>, key_span: Range<usize>) {
        match value.get_ref() {
            DeValue::Table(t) => self.walk_table(path, t),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    // Array-of-tables elements have no key of their own: use the
                    // element's span for both, so that errors point at its header.
                    let span = if item.span().is_empty() {
                        key_span.clone()
                    } else {
                        item.span()
                    };
                    self.entries
                        .insert(item_path.clone(), (span.clone(), span.clone()));
                    self.walk_value(&item_path, item, span);
                }
            }
            _ => {}
        }
    }

    /// The 1-based line of a byte offset.
    pub fn line_of_offset(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// The line of the key at `path`, or of its closest ancestor that exists.
    pub fn line_of_path(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some((key, _)) = self.entries.get(p) {
                return Some(self.line_of_offset(key.start));
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// The path of the innermost value whose span contains `span`.
    pub fn path_at(&self, span: &Range<usize>) -> Option<&str> {
        self.entries
            .iter()
            .filter(|(_, (_, v))| v.start <= span.start && span.end <= v.end)
            .min_by_key(|(_, (_, v))| v.end - v.start)
            .map(|(p, _)| p.as_str())
    }
}

/// Formats a `serde_ignored` path in the same form as [`SpanIndex`] paths.
pub fn ignored_path_to_string(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path_to_string(parent)),
        Path::Map { parent, key } => {
            let parent = ignored_path_to_string(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path_to_string(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "site = \"x\"\n\n[[device]]\nid = \"a\"\n\n[[device.point]]\nid = \"p\"\naddress = 7\n";

    #[test]
    fn nested_array_of_table_keys_have_their_lines() {
        let root = DeTable::parse(DOC).unwrap();
        let index = SpanIndex::build(DOC, &root);
        assert_eq!(index.line_of_path("site"), Some(1));
        assert_eq!(index.line_of_path("device[0].id"), Some(4));
        assert_eq!(index.line_of_path("device[0].point[0].address"), Some(8));
        // A key that does not exist falls back to its nearest ancestor.
        assert_eq!(index.line_of_path("device[0].point[0].missing"), Some(6));
    }
}
