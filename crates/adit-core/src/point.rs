//! Point identity: names from config interned into dense ids.
//!
//! The registry is built from the validated config, and sources may register
//! more points while adit runs (bounded by `max_points`); ids are dense and
//! stable, `PointId(n)` is the n-th point, so per-point state lives in plain
//! vectors indexed by id that grow when a new id shows up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

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
    #[error("the registry is full ({0} points, pipeline.max_points)")]
    Full(usize),
}

/// A fixed block of point slots; never moves once allocated.
type Chunk = Box<[OnceLock<PointMeta>]>;

/// Points per chunk of the registry's storage.
const CHUNK: usize = 1024;
/// The default bound: about a million points.
pub const DEFAULT_MAX_POINTS: usize = 1 << 20;

/// All points, by id and by name: the configured ones, then those a source
/// registered while running (MQTT topics, Sparkplug births), up to a bound.
///
/// Invariants: ids are dense and never reused or changed; a point's meta
/// never changes once registered, so [`get`](Self::get) is lock-free and
/// hands out plain references (chunked storage that never moves); writers
/// (registration) take one lock; at most `max_points` points.
pub struct PointRegistry {
    chunks: Box<[OnceLock<Chunk>]>,
    len: AtomicUsize,
    by_name: RwLock<HashMap<Arc<str>, PointId>>,
    writer: Mutex<()>,
    max_points: usize,
}

impl std::fmt::Debug for PointRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PointRegistry")
            .field("len", &self.len())
            .field("max_points", &self.max_points)
            .finish_non_exhaustive()
    }
}

impl Default for PointRegistry {
    fn default() -> Self {
        Self::with_max_points(DEFAULT_MAX_POINTS)
    }
}

impl PointRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry that refuses points beyond `max_points`.
    pub fn with_max_points(max_points: usize) -> Self {
        let max_points = max_points.clamp(1, u32::MAX as usize);
        Self {
            chunks: (0..max_points.div_ceil(CHUNK))
                .map(|_| OnceLock::new())
                .collect(),
            len: AtomicUsize::new(0),
            by_name: RwLock::default(),
            writer: Mutex::new(()),
            max_points,
        }
    }

    pub fn max_points(&self) -> usize {
        self.max_points
    }

    /// Adds a point from config and returns its id; names must be unique.
    pub fn insert(&mut self, meta: PointMeta) -> Result<PointId, PointRegistryError> {
        self.register(meta)
    }

    /// Adds a point while running (from any thread); names must be unique
    /// and the registry not full.
    pub fn register(&self, meta: PointMeta) -> Result<PointId, PointRegistryError> {
        self.add(meta, false).map(|(id, _)| id)
    }

    /// The id of `meta.name`, registering it first if it is new; says
    /// whether it was.
    pub fn get_or_register(&self, meta: PointMeta) -> Result<(PointId, bool), PointRegistryError> {
        self.add(meta, true)
    }

    fn add(
        &self,
        meta: PointMeta,
        existing_ok: bool,
    ) -> Result<(PointId, bool), PointRegistryError> {
        if existing_ok {
            // The common case for a source naming its points on every
            // message: known, no writer lock.
            if let Some(id) = self.id_of(&meta.name) {
                return Ok((id, false));
            }
        }
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = self.id_of(&meta.name) {
            return if existing_ok {
                Ok((id, false))
            } else {
                Err(PointRegistryError::Duplicate(meta.name.to_string()))
            };
        }
        let n = self.len.load(Ordering::Acquire);
        if n >= self.max_points {
            return Err(PointRegistryError::Full(self.max_points));
        }
        let chunk = self
            .chunks
            .get(n / CHUNK)
            .ok_or(PointRegistryError::Full(self.max_points))?
            .get_or_init(|| (0..CHUNK).map(|_| OnceLock::new()).collect());
        let name = meta.name.clone();
        let stored = chunk
            .get(n % CHUNK)
            .is_some_and(|slot| slot.set(meta).is_ok());
        if !stored {
            // Unreachable: slot n is only ever set here, under the writer lock.
            return Err(PointRegistryError::Full(self.max_points));
        }
        let id = PointId(n as u32);
        // Published before its name: whoever finds the name can `get` it.
        self.len.store(n + 1, Ordering::Release);
        self.by_name
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, id);
        Ok((id, true))
    }

    /// Lock-free.
    pub fn get(&self, id: PointId) -> Option<&PointMeta> {
        let i = id.index();
        if i >= self.len.load(Ordering::Acquire) {
            return None;
        }
        self.chunks.get(i / CHUNK)?.get()?.get(i % CHUNK)?.get()
    }

    /// Whether `id` is registered, without touching its metadata (one
    /// atomic load: slots are set before `len` is published).
    pub fn contains(&self, id: PointId) -> bool {
        id.index() < self.len.load(Ordering::Acquire)
    }

    pub fn id_of(&self, name: &str) -> Option<PointId> {
        self.by_name
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The points registered so far, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (PointId, &PointMeta)> {
        (0..self.len()).filter_map(|i| {
            let id = PointId(i as u32);
            self.get(id).map(|m| (id, m))
        })
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
    fn points_registered_while_running_are_bounded_and_seen_by_every_reader() {
        let r = std::sync::Arc::new(PointRegistry::with_max_points(3));
        r.register(meta("a")).unwrap();
        let t = {
            let r = r.clone();
            std::thread::spawn(move || r.register(meta("b")).unwrap())
        };
        let b = t.join().unwrap();
        assert_eq!(r.get(b).unwrap().name.as_ref(), "b");
        assert_eq!(r.get_or_register(meta("b")).unwrap(), (b, false));
        assert!(r.get_or_register(meta("c")).unwrap().1);
        assert_eq!(r.register(meta("d")), Err(PointRegistryError::Full(3)));
        assert_eq!(r.iter().count(), 3);
        assert!(r.get(PointId(3)).is_none());
        // `contains` agrees with `get` for every id.
        for i in 0..5 {
            assert_eq!(r.contains(PointId(i)), r.get(PointId(i)).is_some(), "{i}");
        }
    }

    #[test]
    fn a_registry_spans_many_chunks() {
        let r = PointRegistry::with_max_points(5000);
        for i in 0..5000 {
            r.register(meta(&format!("p{i}"))).unwrap();
        }
        assert_eq!(r.get(PointId(4999)).unwrap().name.as_ref(), "p4999");
        assert_eq!(r.id_of("p1234"), Some(PointId(1234)));
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
