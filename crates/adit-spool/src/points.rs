//! Point tables: readings in the spool carry dense point ids, which depend on
//! the order of points in the config. Each record names the table its ids
//! refer to by a fingerprint; the table itself (`points-<fp>.txt`, one name
//! per line) is written once, so a replay after a config change maps old ids
//! to names to current ids.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use adit_core::{PointId, PointRegistry};

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

fn table_path(dir: &Path, fp: u64) -> PathBuf {
    dir.join(format!("points-{fp:016x}.txt"))
}

/// Writes the table for `names` if it is not there yet (atomically).
pub fn save_table(dir: &Path, fp: u64, names: &[&str]) -> std::io::Result<()> {
    let path = table_path(dir, fp);
    if path.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!("points-{fp:016x}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    for n in names {
        writeln!(f, "{n}")?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    crate::sync_dir(dir)
}

/// Maps ids of older point tables to current ids, loading tables on demand.
#[derive(Debug, Default)]
pub struct IdMapper {
    current: u64,
    by_name: HashMap<String, PointId>,
    /// Old fingerprint → (old id → current id); `None` if the table is missing.
    tables: HashMap<u64, Option<Vec<Option<PointId>>>>,
}

impl IdMapper {
    pub fn new(registry: &PointRegistry) -> Self {
        let names = registry_names(registry);
        Self {
            current: fingerprint(&names),
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
    pub fn map(&mut self, dir: &Path, fp: u64, old: PointId) -> Option<PointId> {
        if fp == self.current {
            return Some(old);
        }
        let by_name = &self.by_name;
        let table = self.tables.entry(fp).or_insert_with(|| {
            let text = std::fs::read_to_string(table_path(dir, fp)).ok()?;
            Some(
                text.lines()
                    .map(|name| by_name.get(name).copied())
                    .collect(),
            )
        });
        table.as_ref()?.get(old.index()).copied().flatten()
    }
}
