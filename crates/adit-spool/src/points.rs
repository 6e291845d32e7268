//! Point tables: readings in the spool carry dense point ids, which depend on
//! the order of points in the config. Each record names the table its ids
//! refer to by a fingerprint; the table itself (`points-<fp>.txt`, one name
//! per line) is written once, so a replay after a config change maps old ids
//! to names to current ids.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use std::time::Duration;

use adit_core::{PointId, PointMeta, PointRegistry};

/// FNV-1a 64 of the names in id order: stable across builds and platforms.
pub fn fingerprint(names: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for name in names {
        for b in name.bytes().chain(std::iter::once(b'\n')) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

pub fn registry_names(registry: &PointRegistry) -> Vec<&str> {
    registry.iter().map(|(_, m)| m.name.as_ref()).collect()
}

fn table_name(fp: u64) -> String {
    format!("points-{fp:016x}.txt")
}

fn table_path(dir: &Path, fp: u64) -> PathBuf {
    dir.join(table_name(fp))
}

/// Writes the table for `names` if it is not there yet (atomically).
pub fn save_table(dir: &Path, fp: u64, names: &[&str]) -> std::io::Result<()> {
    let path = table_path(dir, fp);
    if path.exists() {
        return Ok(());
    }
    let mut text = String::new();
    for n in names {
        text.push_str(n);
        text.push('\n');
    }
    adit_core::durable::replace_file(dir, &table_name(fp), text.as_bytes())
}

/// One line of a point table: a configured point is its name alone; a point
/// registered at run time also carries what is needed to register it again
/// (`name\tdevice\tunit\tstale_after_ms`).
#[derive(Clone, Debug, PartialEq)]
pub struct TableEntry {
    pub name: String,
    pub runtime: Option<PointMeta>,
}

fn parse_entry(line: &str) -> TableEntry {
    let mut parts = line.split('\t');
    let name = parts.next().unwrap_or_default().to_string();
    let runtime = match (parts.next(), parts.next(), parts.next()) {
        (Some(device), Some(unit), Some(stale)) => {
            let mut meta = PointMeta::plain(&name, device, 1000);
            meta.unit = unit.into();
            meta.stale_after = Duration::from_millis(stale.parse().unwrap_or(60_000));
            Some(meta)
        }
        _ => None,
    };
    TableEntry { name, runtime }
}

/// The entries of table `fp`, if it exists.
pub fn load_table(dir: &Path, fp: u64) -> Option<Vec<TableEntry>> {
    let text = std::fs::read_to_string(table_path(dir, fp)).ok()?;
    Some(text.lines().map(parse_entry).collect())
}

/// The whole lines of table `fp` (a torn last line, without its newline,
/// is left out) with the byte offset just past each.
pub fn load_table_lines(dir: &Path, fp: u64) -> Option<Vec<(TableEntry, u64)>> {
    let text = std::fs::read_to_string(table_path(dir, fp)).ok()?;
    let mut out = Vec::new();
    let mut end = 0u64;
    for line in text.split_inclusive('\n') {
        let Some(body) = line.strip_suffix('\n') else {
            break;
        };
        end += line.len() as u64;
        out.push((parse_entry(body), end));
    }
    Some(out)
}

/// Cuts table `fp` back to `len` bytes (a torn or inconsistent tail).
pub fn truncate_table(dir: &Path, fp: u64, len: u64) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(table_path(dir, fp))?;
    f.set_len(len)?;
    f.sync_data()
}

/// Appends points registered at run time to table `fp`, fsynced: it must
/// be on disk before any record that names them. Returns the bytes added.
pub fn append_runtime(dir: &Path, fp: u64, points: &[&PointMeta]) -> std::io::Result<u64> {
    let mut text = String::new();
    for m in points {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}",
            clean(&m.name),
            clean(&m.device),
            clean(&m.unit),
            m.stale_after.as_millis()
        );
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(table_path(dir, fp))?;
    f.write_all(text.as_bytes())?;
    f.sync_data()?;
    Ok(text.len() as u64)
}

/// Maps ids of older point tables to current ids, loading tables on demand.
/// Points of an older table that were registered at run time are registered
/// again in the live registry (so a replay after a config change keeps them).
#[derive(Debug, Default)]
pub struct IdMapper {
    current: u64,
    by_name: HashMap<String, PointId>,
    /// Old fingerprint → (old id → current id); `None` if the table is missing.
    tables: HashMap<u64, Option<Vec<Option<PointId>>>>,
}

impl IdMapper {
    /// `current` is the fingerprint of the spool's own table.
    pub fn new(registry: &PointRegistry, current: u64) -> Self {
        Self {
            current,
            by_name: registry
                .iter()
                .map(|(id, m)| (m.name.to_string(), id))
                .collect(),
            tables: HashMap::new(),
        }
    }

    pub fn current(&self) -> u64 {
        self.current
    }

    /// The current id of `old` in table `fp`; `None` if the point is no
    /// longer configured or the table is unknown.
    pub fn map(
        &mut self,
        dir: &Path,
        fp: u64,
        old: PointId,
        live: Option<&PointRegistry>,
    ) -> Option<PointId> {
        if fp == self.current {
            return Some(old);
        }
        let by_name = &self.by_name;
        let table = self.tables.entry(fp).or_insert_with(|| {
            Some(
                load_table(dir, fp)?
                    .into_iter()
                    .map(|e| {
                        by_name
                            .get(&e.name)
                            .copied()
                            .or_else(|| live?.id_of(&e.name))
                            .or_else(|| live?.get_or_register(e.runtime?).ok().map(|(id, _)| id))
                    })
                    .collect(),
            )
        });
        table.as_ref()?.get(old.index()).copied().flatten()
    }
}
