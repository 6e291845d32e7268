//! The watchdog: alert rules evaluated on every reading, apart from the sink
//! path, and alerts delivered to Alertmanager, webhooks and the log.

pub mod glob;
pub mod rules;
