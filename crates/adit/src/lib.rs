//! The `adit` application: assembles config, sources, pipeline, sink and the
//! HTTP endpoint into one running process. The binary (`main.rs`) is a thin
//! command-line layer over this library, so integration tests can run the same
//! assembly in-process.

pub mod app;
pub mod demo_broker;
pub mod http;
pub mod logging;
pub mod opcua_cmd;
pub mod spool_cmd;
pub mod summary;
