//! The source contract: everything a collector (Modbus, OPC UA, MQTT, a test
//! source) needs from the pipeline, and nothing more. Collectors depend on
//! this crate only, never on the spool or a sink:
//!
//! ```text
//! adit-modbus, adit-opcua, adit-mqtt ──► adit-source ◄── adit-pipeline ──► adit-spool
//!                                                              └──► sinks (via the Sink trait)
//! ```
//!
//! Modules:
//! - [`source`]: the [`Source`] trait (a task per device or connection, polled
//!   or pushed), its [`SourceContext`] and errors;
//! - [`sender`]: [`ReadingSender`], the bounded channel into the pipeline,
//!   with [`ReadingSender::send_acked`] for sources that must know when
//!   their readings are durable, and [`ReadingSender::mark_bad`] for a
//!   pushed source that lost its peer;
//! - [`ack`]: [`Ack`] and [`Outcome`]: what "acknowledged" means under each
//!   `spool.fsync` policy (read its docs before acknowledging a peer).
//! - [`deadline`]: [`Deadline`], a batch or check deadline for a collector's
//!   `select!` loop that updates the runtime's timers only when it moves.

pub mod ack;
pub mod deadline;
pub mod sender;
pub mod source;

pub use ack::{Ack, DropReason, Outcome};
pub use deadline::Deadline;
pub use sender::{Envelope, ReadingSender, SendError};
pub use source::{PointRegistrar, Source, SourceContext, SourceError, SourceFuture};
