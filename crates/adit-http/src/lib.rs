//! The one blocking HTTP/1.1 client of adit, for the QuestDB sink's ILP
//! writer (a kept-alive connection on the sink's thread) and the
//! watchdog's alert receivers (one request per delivery). TLS through
//! rustls with the ring provider; the callers build the `ClientConfig`
//! (`adit-tls`).
//!
//! Modules:
//! - [`conn`]: a connection (TCP, optional TLS) and one request on it, every
//!   step bounded by the request's deadline;
//! - [`answer`]: answers parsed from bytes (pure).

pub mod answer;
pub mod conn;

pub use answer::{truncate, Answer, MAX_ANSWER};
pub use conn::{Connection, Failure, Request};
