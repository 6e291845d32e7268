//! The watchdog: alert rules evaluated on every reading, apart from the sink
//! path (it sees readings right after normalization, so it keeps working when
//! the database or the spool fails), and alerts delivered to Alertmanager,
//! webhooks, MQTT and the log.
//!
//! Modules: [`engine`] (rules bound to points, alert state and
//! transitions), [`rules`] (conditions, pure), [`deliver`] (the watchdog's
//! loop and its receivers), [`keep`] (firing alerts kept across restarts),
//! [`http`] and [`mqtt`] (receivers), [`selfhealth`] (adit's own alerts),
//! [`glob`] (point patterns).

pub mod deliver;
pub mod engine;
pub mod glob;
pub mod http;
pub mod keep;
pub mod mqtt;
pub mod rules;
pub mod selfhealth;

pub use engine::{AlertView, Engine, Event, FiringRecord, RuleSpec};
