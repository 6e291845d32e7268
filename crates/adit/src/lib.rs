//! The `adit` application: assembles config, sources, pipeline, sink and the
//! HTTP endpoint into one running process. The binary (`main.rs`) is a thin
//! command-line layer over this library, so integration tests can run the same
//! assembly in-process.
//!
//! - [`app`]: start and stop everything; [`http`]: the HTTP endpoint
//!   (metrics, health, JSON API); [`web`]: the control-room page, its event
//!   stream and access control; [`demo_broker`]: the demo's in-process MQTT
//!   broker; [`demo_faults`]: the demo's scripted faults; [`logging`]; [`opcua_cmd`], [`spool_cmd`], [`summary`]: CLI
//!   subcommands' bodies.

pub mod app;
pub mod demo_broker;
pub mod demo_faults;
pub mod http;
pub mod logging;
pub mod opcua_cmd;
pub mod spool_cmd;
pub mod summary;
pub mod web;
