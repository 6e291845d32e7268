//! The collector interface, shaped for polled sources (Modbus: the source owns
//! a schedule) and pushed ones (OPC UA subscriptions, MQTT: the source owns an
//! event loop) alike: a source is a task that runs until shutdown and emits
//! batches of readings whenever it has them.

use std::future::Future;
use std::pin::Pin;

use std::sync::Arc;

use adit_core::{PointId, PointMeta, PointRegistry, PointRegistryError};
use prometheus::IntCounter;
use tokio_util::sync::CancellationToken;

use crate::sender::ReadingSender;

/// What a source run returns when it stops for a reason other than shutdown.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The pipeline downstream is gone (only during shutdown).
    #[error("pipeline closed")]
    PipelineClosed,
    /// Anything the source could not handle itself; the supervisor restarts it.
    #[error("{0}")]
    Failed(String),
}

pub type SourceFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send + 'a>>;

/// A collector: one task per device or connection.
///
/// `run` returns `Ok(())` once `ctx.shutdown` is cancelled, and `Err` for a
/// failure it could not recover from; it must handle ordinary link loss
/// itself (reconnect with backoff, `Bad(CommFailure)` readings) and never
/// block past its own timeouts.
pub trait Source: Send + 'static {
    /// Stable name for logs, e.g. the device id.
    fn name(&self) -> &str;
    /// Protocol label for metrics (`modbus_tcp`, `opcua`, `mqtt`).
    fn protocol(&self) -> &'static str;
    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> SourceFuture<'a>;
}

/// What a running source gets from the pipeline.
#[derive(Clone)]
pub struct SourceContext {
    pub out: ReadingSender,
    pub shutdown: CancellationToken,
    /// Points that appear at run time (MQTT wildcards, Sparkplug births).
    pub points: PointRegistrar,
}

/// Registers points at run time, bounded by the registry's `max_points`: a
/// point beyond the bound is refused, counted and reported (audited by the
/// pipeline), never a crash. A registered point reaches the live state, the
/// watchdog's glob-bound rules, the spool's point table and every sink with
/// its first reading.
#[derive(Clone)]
pub struct PointRegistrar {
    registry: Arc<PointRegistry>,
    refused: IntCounter,
    on_refused: OnRefused,
    /// Names already reported (bounded): every refusal is counted, each
    /// name is reported (logged, audited) once.
    reported: Arc<std::sync::Mutex<std::collections::HashSet<Arc<str>>>>,
}

/// Most refused names remembered for reporting once each.
const REPORTED_MAX: usize = 1024;

/// Told of each refused point (its name and why): the pipeline logs and audits.
pub type OnRefused = Arc<dyn Fn(&str, &PointRegistryError) + Send + Sync>;

impl PointRegistrar {
    pub fn new(registry: Arc<PointRegistry>, refused: IntCounter, on_refused: OnRefused) -> Self {
        Self {
            registry,
            refused,
            on_refused,
            reported: Arc::default(),
        }
    }

    /// The id of `meta.name`, registering the point if it is new; `None`
    /// (counted, reported) when the registry is full.
    pub fn register(&self, meta: PointMeta) -> Option<PointId> {
        let name = meta.name.clone();
        match self.registry.get_or_register(meta) {
            Ok((id, _)) => Some(id),
            Err(e) => {
                self.refused.inc();
                let first = {
                    let mut reported = self
                        .reported
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    reported.len() < REPORTED_MAX && reported.insert(name.clone())
                };
                if first {
                    (self.on_refused)(&name, &e);
                }
                None
            }
        }
    }

    pub fn registry(&self) -> &Arc<PointRegistry> {
        &self.registry
    }
}
