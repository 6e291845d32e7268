//! Point identity: names from config interned into dense ids.
//!
//! The registry is built once from the validated config and never changes while
//! adit runs; `PointId(n)` is the index of the n-th point, so per-point state can
//! live in plain vectors indexed by id.

use std::collections::HashMap;
use std::sync::Arc;

/// Dense, interned point id (index into the [`PointRegistry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PointId(pub u32);

impl PointId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What the rest of the pipeline needs to know about a point.
#[derive(Clone, Debug, PartialEq)]
pub struct PointMeta {
    /// Globally unique name, e.g. `bore_a.co.km1_2`.
    pub name: Arc<str>,
    /// The device (or connection) the point is read from.
    pub device: Arc<str>,
    /// Engineering unit, e.g. `ppm`.
    pub unit: Arc<str>,
    /// Engineering range; a value outside it is `Bad(OutOfRange)`.
    pub range: Option<(f64, f64)>,
    /// How often the point is expected to be sampled, in milliseconds.
    pub expected_interval_ms: u64,
    /// Store a reading only when it moved by at least this much (engineering
    /// units), its quality changed, or `deadband_heartbeat` passed.
    pub deadband: Option<f64>,
    pub deadband_heartbeat: std::time::Duration,
    /// No sample for this long makes the point `Bad(Stale)`.
    pub stale_after: std::time::Duration,
}

impl PointMeta {
    /// A point with no range and no deadband (tests, tools).
    pub fn plain(name: &str, device: &str, expected_interval_ms: u64) -> Self {
        Self {
            name: name.into(),
            device: device.into(),
            unit: "".into(),
            range: None,
            expected_interval_ms,
            deadband: None,
            deadband_heartbeat: std::time::Duration::from_secs(60),
            stale_after: std::time::Duration::from_millis(expected_interval_ms.saturating_mul(3)),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PointRegistryError {
    #[error("duplicate point id {0:?}")]
    Duplicate(String),
    #[error("more than u32::MAX points")]
    TooMany,
}

/// All configured points, by id and by name.
#[derive(Debug, Default)]
pub struct PointRegistry {
    points: Vec<PointMeta>,
    by_name: HashMap<Arc<str>, PointId>,
}

impl PointRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a point and returns its id; names must be unique.
    pub fn insert(&mut self, meta: PointMeta) -> Result<PointId, PointRegistryError> {
        if self.by_name.contains_key(&meta.name) {
            return Err(PointRegistryError::Duplicate(meta.name.to_string()));
        }
        let id =
            PointId(u32::try_from(self.points.len()).map_err(|_| PointRegistryError::TooMany)?);
        self.by_name.insert(meta.name.clone(), id);
        self.points.push(meta);
        Ok(id)
    }

    pub fn get(&self, id: PointId) -> Option<&PointMeta> {
        self.points.get(id.index())
    }

    pub fn id_of(&self, name: &str) -> Option<PointId> {
        self.by_name.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (PointId, &PointMeta)> {
        self.points
            .iter()
            .enumerate()
            .map(|(i, m)| (PointId(i as u32), m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str) -> PointMeta {
        PointMeta {
            name: name.into(),
            device: "d".into(),
            unit: "ppm".into(),
            range: None,
            expected_interval_ms: 1000,
            deadband: None,
            deadband_heartbeat: std::time::Duration::from_secs(60),
            stale_after: std::time::Duration::from_secs(3),
        }
    }

    #[test]
    fn ids_are_dense_and_names_resolve() {
        let mut r = PointRegistry::new();
        let a = r.insert(meta("a")).unwrap();
        let b = r.insert(meta("b")).unwrap();
        assert_eq!((a, b), (PointId(0), PointId(1)));
        assert_eq!(r.id_of("b"), Some(b));
        assert_eq!(r.get(a).unwrap().name.as_ref(), "a");
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let mut r = PointRegistry::new();
        r.insert(meta("a")).unwrap();
        assert_eq!(
            r.insert(meta("a")),
            Err(PointRegistryError::Duplicate("a".into()))
        );
    }
}
