//! The watchdog: alert rules evaluated on every reading, apart from the sink
//! path (it sees readings right after normalization, so it keeps working when
//! the database or the spool fails), and alerts delivered to Alertmanager,
//! webhooks, MQTT and the log.

pub mod deliver;
pub mod engine;
pub mod glob;
pub mod http;
pub mod mqtt;
pub mod rules;
pub mod selfhealth;

pub use engine::{AlertView, Engine, Event, RuleSpec};
