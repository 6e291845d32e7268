//! Logging setup: human-readable or JSON lines on stderr, level from the CLI
//! (or `RUST_LOG` when set).

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| {
            // The demo's embedded broker logs every connection at info, and
            // at error the demo's own readiness probe and its stop (whose
            // failures adit reports itself): off unless asked for by name.
            if level.contains("rumqttd") {
                EnvFilter::try_new(level)
            } else {
                EnvFilter::try_new(format!("{level},rumqttd=off"))
            }
        })
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
