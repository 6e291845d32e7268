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
            // async-opcua logs every connection, session and publish at
            // info, and a publish sent before the first subscription (or a
            // graceful close) at error or warn; adit reports connects,
            // losses, rebuilds and certificate refusals itself: the
            // library's crates are quiet unless asked for by name.
            let mut filter = level.to_string();
            if !level.contains("rumqttd") {
                filter.push_str(",rumqttd=off");
            }
            if !level.contains("opcua") {
                filter.push_str(
                    ",opcua_client=off,opcua_core=error,opcua_crypto=error,opcua_server=off",
                );
            }
            EnvFilter::try_new(filter)
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
