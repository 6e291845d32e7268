//! adit's configuration: TOML in, validated typed structs out.
//!
//! Loading happens once, up front. The file is parsed with spans, deserialized
//! into permissive raw structs (unknown keys are collected, not fatal), then
//! validated; every problem found is reported together, each with the file,
//! the line and the key path. Nothing downstream re-reads strings.

mod human;
pub mod modbus;
pub mod model;
pub mod mqtt;
pub mod opcua;
mod raw;
mod spans;
mod validate;

use std::fmt;
use std::path::Path;

pub use human::{parse_duration, parse_size};
pub use model::*;

use spans::{ignored_path_to_string, SpanIndex};

/// One config error, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    /// Key path such as `device[0].point[2].address`; empty for syntax errors.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: ", self.file)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(source) => load_str(&source, &name),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: name,
            line: None,
            path: String::new(),
            message: format!("cannot read file: {e}"),
        }])),
    }
}

/// Validates config text; `file_name` is used in error messages only.
pub fn load_str(source: &str, file_name: &str) -> Result<Config, ConfigErrors> {
    let located = |index: &SpanIndex, path: String, message: String| ConfigError {
        file: file_name.to_string(),
        line: index.line_of_path(&path),
        path,
        message,
    };

    let root = match toml::de::DeTable::parse(source) {
        Ok(root) => root,
        Err(e) => {
            let index = SpanIndex::lines_only(source);
            return Err(ConfigErrors(vec![ConfigError {
                file: file_name.to_string(),
                line: e.span().map(|s| index.line_of_offset(s.start)),
                path: String::new(),
                message: format!("TOML syntax error: {}", e.message().trim()),
            }]));
        }
    };
    let index = SpanIndex::build(source, &root);

    let mut errors = Vec::new();
    let mut unknown = Vec::new();
    let deserializer = toml::de::Deserializer::from(root);
    let raw: Result<raw::RawConfig, _> = serde_ignored::deserialize(deserializer, |path| {
        unknown.push(ignored_path_to_string(&path));
    });
    for path in unknown {
        errors.push(located(&index, path, "unknown key".to_string()));
    }
    let raw = match raw {
        Ok(raw) => Some(raw),
        Err(e) => {
            let path = e
                .span()
                .and_then(|s| index.path_at(&s).map(str::to_string))
                .unwrap_or_default();
            let line = e.span().map(|s| index.line_of_offset(s.start));
            errors.push(ConfigError {
                file: file_name.to_string(),
                line: index.line_of_path(&path).or(line),
                path,
                message: e.message().trim().to_string(),
            });
            None
        }
    };
    if let Some(raw) = raw {
        match validate::validate(&raw) {
            Ok(mut config) if errors.is_empty() => {
                use sha2::Digest as _;
                let digest = sha2::Sha256::digest(source.as_bytes());
                config.origin = ConfigOrigin {
                    file: file_name.to_string(),
                    sha256: adit_core::to_hex(&digest),
                };
                return Ok(config);
            }
            Ok(_) => {}
            Err(problems) => {
                errors.extend(
                    problems
                        .into_iter()
                        .map(|p| located(&index, p.path, p.message)),
                );
            }
        }
    }
    errors.sort_by_key(|e| e.line.unwrap_or(0));
    Err(ConfigErrors(errors))
}
