//! The pipeline runtime: sources → normalize → live state → sink, over bounded
//! channels, with supervision and graceful shutdown.
//!
//! Invariants:
//! - every channel is bounded; a full channel applies backpressure (counted in
//!   `adit_pipeline_backpressure_total`), it never drops;
//! - a reading accepted from a source reaches the sink, or is counted in
//!   `adit_sink_readings_dropped_total` with a reason;
//! - on shutdown, sources stop first, then every stage drains what it holds
//!   before it exits;
//! - a source task that fails or panics is restarted with backoff and counted.

pub mod deadband;
pub mod health;
pub mod live;
pub mod metrics;
pub mod normalize;
pub mod runtime;
pub mod sink;
pub mod source;
mod supervisor;

pub use health::Health;
pub use live::{LiveState, PointState, QualitySummary};
pub use metrics::Metrics;
pub use normalize::{normalize_batch, ClockRules};
pub use runtime::{Pipeline, PipelineOptions, SourceFactory};
pub use sink::{Sink, SinkError, SinkOptions};
pub use source::{ReadingSender, SendError, Source, SourceContext, SourceError, SourceFuture};
