//! OPC UA for adit: subscriptions (or polling reads) on a server through
//! async-opcua's client, status codes as quality, sessions that recover by
//! themselves (the library's publish trap worked around), secure by
//! default, and the commissioning tools.
//!
//! Modules:
//! - [`status`]: `StatusCode` → Good/Uncertain/Bad with name and code (pure);
//! - [`convert`]: `DataValue` → value, quality and time (pure);
//! - [`node`]: configured node references → the server's node ids,
//!   namespaces by URI (pure);
//! - [`client`]: building the client (PKI, security, identity) and
//!   explaining refused connections;
//! - [`pending`]: what the subscription callbacks hand to the collector
//!   (bounded), and the re-confirmation of unchanged values;
//! - [`collector`]: the [`Source`](adit_source::Source) of one connection
//!   (session loop, subscriptions, polls, liveness, rebuilds);
//! - [`metrics`]: Prometheus metrics per connection;
//! - [`probe`]: `adit probe opcua`; [`trust`]: `adit opcua trust`.

pub use opcua;

pub mod client;
pub mod collector;
pub mod convert;
pub mod metrics;
pub mod node;
pub mod pending;
pub mod probe;
pub mod status;
pub mod trust;

pub use collector::{OpcuaCollector, OpcuaConnection};
pub use metrics::{ConnectionMetrics, OpcuaMetrics};
