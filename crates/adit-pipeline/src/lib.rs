//! The pipeline runtime: sources → normalize → live state → spool → sinks,
//! over bounded channels, with supervision and graceful shutdown.
//!
//! Invariants:
//! - every channel is bounded; a full channel applies backpressure (counted in
//!   `adit_pipeline_backpressure_total`), it never drops;
//! - a reading accepted from a source reaches the spool, or is counted in
//!   `adit_sink_readings_dropped_total` / the spool's drop counters with a
//!   reason; from the spool it reaches every sink, at least once;
//! - on shutdown, sources stop first, then every stage drains what it holds
//!   into the spool; sinks deliver until the drain deadline and the rest stays
//!   in the spool;
//! - a source task that fails or panics is restarted with backoff and counted.
//!
//! Modules: `runtime` (the stages and their threads), `normalize`, `live`
//! (the live state) with `stale` (staleness deadlines) on `wheel` (a timing
//! wheel of point ids), `deadband`, `sink` (sink stages), `latency` (sample
//! → ack histograms), `metrics`, `health`, `supervisor` (restarts).

pub mod deadband;
pub mod health;
pub mod latency;
pub mod live;
pub mod metrics;
pub mod normalize;
pub mod runtime;
pub mod sink;
pub mod stale;
mod supervisor;
mod wheel;

/// The source contract lives in `adit-source` (collectors depend on it
/// alone); re-exported here for the assembly and tests.
pub use adit_source::{
    Ack, DropReason, Envelope, Outcome, PointRegistrar, ReadingSender, SendError, Source,
    SourceContext, SourceError, SourceFuture,
};
pub use health::Health;
pub use live::{LiveState, PointState, QualitySummary};
pub use metrics::Metrics;
pub use normalize::{give_receive_times, normalize_batch, ClockRules, Ranges};
pub use runtime::{Observers, Pipeline, PipelineOptions, ShutdownReport, SourceFactory};
pub use sink::{Sink, SinkError, SinkOptions};
