//! `adit`: the command line. Subcommands:
//! - `run -c FILE`      run the ingestor until SIGINT/SIGTERM;
//! - `check -c FILE…`   validate configs, print a summary or every error;
//! - `demo`             simulator + ingestor + `SQLite`, nothing to install;
//! - `sim modbus …`     run the tunnel Modbus simulator on its own;
//! - `sim mqtt …`       publish the tunnel scenario to a broker (JSON, Sparkplug B);
//! - `probe modbus …`   read a block once and show it decoded every way;
//! - `probe mqtt …`     show each message as adit would map it, or why not;
//! - `sim opcua …`      serve the tunnel scenario as an OPC UA server;
//! - `probe opcua …`    list endpoints, browse, read values with status;
//! - `opcua trust FILE` trust a server certificate adit refused;
//! - `audit verify|tail` check or read the hash-chained audit log;
//! - `spool quarantine list|retry DIR` show or re-deliver quarantined batches.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use adit::app::{App, HttpBind};
use adit::logging::{self, LogFormat};
use adit::summary::SummaryClock;
use adit_config::Config;
use adit_modbus::endpoint::Endpoint;
use adit_sim_modbus::{Framing, Simulator, UnitSpec};
use clap::{Parser, Subcommand};

/// Prints a line to stdout; a closed pipe (`adit … | head`) is not an error
/// worth a panic, so write failures are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The example config `adit demo` runs, compiled in so the demo needs no files.
const DEMO_CONFIG: &str = include_str!("../../../config/demo.toml");

#[derive(Parser)]
#[command(
    name = "adit",
    version,
    about = "SCADA sensor telemetry ingestor: Modbus → normalized, quality-flagged readings → durable storage"
)]
struct Cli {
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
    /// Log level or filter (e.g. `info`, `debug`, `adit_modbus=debug,info`).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ingestor with a config file until SIGINT or SIGTERM.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate config files; print a summary of each, or every error.
    Check {
        #[arg(short, long, required = true, num_args = 1..)]
        config: Vec<PathBuf>,
    },
    /// Run a simulated tunnel, the ingestor and `SQLite` together.
    Demo {
        /// Where the demo keeps its data.
        #[arg(long, default_value = "./adit-demo")]
        dir: PathBuf,
        /// Stop after this long (e.g. `30s`); default: until Ctrl-C.
        #[arg(long = "for", value_parser = parse_duration)]
        run_for: Option<Duration>,
        /// Seconds between summary lines.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        every: Duration,
        /// No scripted faults (by default a 150 s cycle: CO rise in bore B,
        /// bore A's values stuck, bore B's PLC silent, each then recovering).
        #[arg(long)]
        no_faults: bool,
    },
    /// Device simulators for tests, demos and commissioning.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Read a block from a device once and show it decoded every way.
    #[command(subcommand)]
    Probe(ProbeCommand),
    /// Check or read the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The spool's quarantine: list it, or re-deliver refused batches.
    #[command(subcommand)]
    Spool(SpoolCommand),
    /// OPC UA certificates.
    #[command(subcommand)]
    Opcua(OpcuaCommand),
}

#[derive(Subcommand)]
enum OpcuaCommand {
    /// Trust a server certificate adit refused (moves it from
    /// `<pki>/rejected/` to `<pki>/trusted/`); check its thumbprint first.
    Trust {
        file: PathBuf,
        /// The PKI directory (default: the file's grandparent).
        #[arg(long)]
        pki_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SpoolCommand {
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// What `quarantine/` holds and what can be retried.
    List {
        /// The spool directory (e.g. ./adit-data/spool).
        dir: PathBuf,
    },
    /// Append every batch a sink refused to the spool again (adit stopped).
    Retry { dir: PathBuf },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; name the first entry changed, removed or inserted.
    Verify {
        /// The audit directory (e.g. ./adit-demo/audit) or one audit file.
        path: PathBuf,
    },
    /// Print the last entries for people.
    Tail {
        path: PathBuf,
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum ProbeCommand {
    /// Read registers or bits and print them as every type × byte/word order.
    #[command(
        after_help = "Examples:\n  adit probe modbus --addr 10.0.0.5:502 --unit 1 --read holding:100..104\n  adit probe modbus --serial /dev/ttyUSB0 --baud 9600 --parity even --unit 3 --read input:0..=9\n\nRanges: holding:100..104 reads 100-103, holding:100..=104 reads 100-104, coil:7 reads one."
    )]
    Modbus {
        /// host:port of a Modbus TCP device or gateway.
        #[arg(long, conflicts_with = "serial", required_unless_present = "serial")]
        addr: Option<String>,
        /// Speak RTU framing over the TCP connection (transparent serial gateways).
        #[arg(long, requires = "addr")]
        rtu_over_tcp: bool,
        /// Serial port for Modbus RTU.
        #[arg(long)]
        serial: Option<String>,
        #[arg(long, default_value_t = 9600)]
        baud: u32,
        #[arg(long, default_value = "even", value_parser = ["none", "even", "odd"])]
        parity: String,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        stop_bits: u8,
        #[arg(long, default_value_t = 1)]
        unit: u8,
        /// TABLE:RANGE, e.g. holding:100..104 (table: holding, input, coil, discrete).
        #[arg(long, value_parser = adit_modbus::probe::parse_range)]
        read: adit_modbus::probe::ProbeRange,
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Subscribe and show each message as adit would map it, or why not.
    #[command(
        after_help = "Examples:\n  adit probe mqtt --broker mqtt://10.0.0.9:1883 --topic 'tunnel/+/sensors/+' --template 'tunnel/{bore}/sensors/{sensor}' --timestamp /ts\n  adit probe mqtt --broker mqtts://broker:8883 --topic 'spBv1.0/tunnel/#' --format sparkplug"
    )]
    Mqtt {
        /// <mqtt://host>[:port] or <mqtts://host>[:port].
        #[arg(long)]
        broker: String,
        /// Topic filter to subscribe to.
        #[arg(long)]
        topic: String,
        #[arg(long, default_value = "json", value_parser = ["json", "plain", "sparkplug"])]
        format: String,
        /// Topic template with {captures} (default: every level captured).
        #[arg(long)]
        template: Option<String>,
        /// Point id pattern from the captures, e.g. `{bore}.{sensor}`.
        #[arg(long)]
        point: Option<String>,
        /// JSON pointer of the value (default /value).
        #[arg(long)]
        value: Option<String>,
        /// JSON pointer of the timestamp.
        #[arg(long)]
        timestamp: Option<String>,
        /// JSON pointer of an object or array with many readings.
        #[arg(long)]
        many: Option<String>,
        #[arg(long)]
        username: Option<String>,
        /// Name of the environment variable holding the password.
        #[arg(long)]
        password_env: Option<String>,
        /// CA certificate (PEM) that signed the broker's certificate (mqtts).
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
        /// Client certificate (PEM) for brokers that require one (mqtts).
        #[arg(long, requires = "client_key")]
        client_cert: Option<std::path::PathBuf>,
        /// The client certificate's private key (PEM).
        #[arg(long, requires = "client_cert")]
        client_key: Option<std::path::PathBuf>,
        /// Stop after this many messages.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Stop after this long.
        #[arg(long = "for", default_value = "30s", value_parser = parse_duration)]
        run_for: Duration,
    },
    /// List an OPC UA server's endpoints; browse a node; read values.
    Opcua {
        /// opc.tcp://host:port[/path]
        #[arg(long)]
        endpoint: String,
        #[arg(long, default_value = "sign_and_encrypt", value_parser = ["none", "sign", "sign_and_encrypt"])]
        security_mode: String,
        #[arg(long, default_value = "Basic256Sha256", value_parser = ["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"])]
        security_policy: String,
        /// adit's PKI directory (own certificate, trusted/, rejected/).
        #[arg(long, default_value = "./pki")]
        pki_dir: PathBuf,
        #[arg(long)]
        username: Option<String>,
        /// Name of the environment variable holding the password.
        #[arg(long)]
        password_env: Option<String>,
        /// Browse one level under this node, e.g. `i=85` (Objects).
        #[arg(long)]
        browse: Option<String>,
        /// Read these nodes, e.g. `nsu=urn:adit:sim:tunnel;s=Tunnel.North.CO`.
        #[arg(long, num_args = 1..)]
        read: Vec<String>,
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

#[derive(Subcommand)]
enum SimCommand {
    /// Serve the tunnel scenario over Modbus TCP (or RTU over TCP).
    #[command(
        after_help = "Faults (repeatable --fault UNIT:SPEC): no_answer, delay=3s, exception=4,\nmax_registers=32, stuck, nan, out_of_range, disconnect_every=30s, clock_reset
(the clock at holding 900..901, u32 Unix seconds, restarts from 1970). Example:\n  adit sim modbus --units 1,2,3 --fault 2:no_answer --fault 3:delay=3s"
    )]
    Modbus {
        #[arg(long, default_value = "127.0.0.1:5020")]
        listen: SocketAddr,
        /// Unit ids to serve, one simulated bore each.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        units: Vec<u8>,
        /// Frame format.
        #[arg(long, default_value = "tcp", value_parser = ["tcp", "rtu-over-tcp"])]
        framing: String,
        /// A fault for one unit, e.g. `2:no_answer` or `3:delay=3s`.
        #[arg(long = "fault", value_name = "UNIT:SPEC")]
        faults: Vec<String>,
        /// Start this many servers (one device each) on consecutive ports
        /// from --listen's port, or on free ports if it is 0; prints each address.
        #[arg(long, default_value_t = 1)]
        count: u16,
        /// Also serve this many holding registers from address 1000 (u16
        /// values counting up), for load tests.
        #[arg(long, default_value_t = 0)]
        bulk: u16,
        /// Units, faults and frozen values from a scenario file (replaces
        /// --units, --fault and --bulk); see simulators/modbus/scenarios/.
        #[arg(long, conflicts_with_all = ["faults", "bulk"])]
        scenario: Option<PathBuf>,
    },
    /// Publish the tunnel scenario to an MQTT broker, as JSON and Sparkplug B.
    #[command(
        after_help = "Faults (repeatable --fault SPEC, applied at start): malformed=N, out_of_range=N, silence,\ndie (drop the Sparkplug connection without NDEATH: the broker sends the will), gap (a Sparkplug sequence gap).\nExample:\n  adit sim mqtt --broker mqtt://127.0.0.1:1883 --interval 500ms --fault malformed=3"
    )]
    Mqtt {
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// JSON topic prefix (`{prefix}/{bore}/sensors/{sensor}`); `none` for no JSON.
        #[arg(long, default_value = "tunnel")]
        json_prefix: String,
        /// Sparkplug GROUP/NODE; `none` for no Sparkplug.
        #[arg(long, default_value = "tunnel/plc1")]
        sparkplug: String,
        #[arg(long = "fault", value_name = "SPEC")]
        faults: Vec<String>,
    },
    /// Serve the tunnel scenario as an OPC UA server (namespace
    /// urn:adit:sim:tunnel; secure endpoints; its certificate in --pki-dir/own).
    Opcua {
        #[arg(long, default_value = "127.0.0.1:4840")]
        listen: SocketAddr,
        #[arg(long, default_value = "./sim-pki")]
        pki_dir: PathBuf,
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Also serve this many `Load.<i>` doubles that change every interval.
        #[arg(long, default_value_t = 0)]
        bulk: usize,
        /// Also offer the insecure `None` endpoint.
        #[arg(long)]
        insecure: bool,
        /// A user for username/password identity, NAME:PASSWORD (repeatable).
        #[arg(long = "user")]
        users: Vec<String>,
        /// `bad=NODE:STATUS`, `stuck=NODE`, `restart_every=PERIOD[:DOWN]`,
        /// `quiet_every=PERIOD[:FOR]` (repeatable).
        #[arg(long = "fault", value_name = "SPEC")]
        faults: Vec<String>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    adit_config::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    if let Command::Check { config } = &cli.command {
        return check(config);
    }
    if let Command::Audit(cmd) = &cli.command {
        return audit(cmd);
    }
    if let Command::Opcua(OpcuaCommand::Trust { file, pki_dir }) = &cli.command {
        return match adit::opcua_cmd::trust(file, pki_dir.as_deref()) {
            Ok(text) => {
                say!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("adit: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Spool(SpoolCommand::Quarantine(cmd)) = &cli.command {
        let result = match cmd {
            QuarantineCommand::List { dir } => adit::spool_cmd::list(dir),
            QuarantineCommand::Retry { dir } => adit::spool_cmd::retry(dir),
        };
        return match result {
            Ok(text) => {
                say!("{}", text.trim_end());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("adit: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // One async worker unless TOKIO_WORKER_THREADS says otherwise: the
    // async side (collectors, HTTP, watchdog) waits on I/O and timers, and
    // everything that computes or blocks has a thread of its own (ingest,
    // one per sink, the fsync flusher, the audit writer, spawn_blocking).
    // A second worker only added wake-ups between the two (measured at the
    // small site load: 1.52/1.60 -> 1.42/1.49 CPU-µs per reading).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("adit: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { config } => run(&config).await,
            Command::Demo {
                dir,
                run_for,
                every,
                no_faults,
            } => demo(dir, run_for, every, !no_faults).await,
            Command::Sim(SimCommand::Modbus {
                listen,
                units,
                framing,
                faults,
                count,
                bulk,
                scenario,
            }) => {
                let specs = match scenario {
                    Some(path) => adit_sim_modbus::load_scenario(&path)?,
                    None => unit_specs(&units, &faults, bulk)?,
                };
                sim_modbus(listen, &specs, &framing, count).await
            }
            Command::Probe(ProbeCommand::Modbus {
                addr,
                rtu_over_tcp,
                serial,
                baud,
                parity,
                stop_bits,
                unit,
                read,
                timeout,
            }) => {
                let endpoint = match (addr, serial) {
                    (Some(a), _) if rtu_over_tcp => Endpoint::RtuOverTcp(a),
                    (Some(a), _) => Endpoint::Tcp(a),
                    (None, Some(port)) => Endpoint::Rtu(adit_config::SerialConfig {
                        port,
                        baud_rate: baud,
                        parity: match parity.as_str() {
                            "none" => adit_config::Parity::None,
                            "odd" => adit_config::Parity::Odd,
                            _ => adit_config::Parity::Even,
                        },
                        data_bits: 8,
                        stop_bits,
                    }),
                    (None, None) => return Err("give --addr or --serial".to_string()),
                };
                let text = adit_modbus::probe::probe(&endpoint, unit, &read, timeout).await?;
                {
                    use std::io::Write as _;
                    let _ = std::io::stdout().write_all(text.as_bytes());
                }
                Ok(())
            }
            Command::Probe(ProbeCommand::Mqtt {
                broker,
                topic,
                format,
                template,
                point,
                value,
                timestamp,
                many,
                username,
                password_env,
                ca_file,
                client_cert,
                client_key,
                count,
                run_for,
            }) => {
                let args = adit_mqtt::probe::ProbeArgs {
                    broker,
                    topic,
                    format,
                    template,
                    point,
                    value,
                    timestamp,
                    many,
                    username,
                    password_env,
                    ca_file,
                    client_cert,
                    client_key,
                    count,
                    duration: run_for,
                };
                adit_mqtt::probe::probe(&args, &mut |line| say!("{line}")).await
            }
            Command::Sim(SimCommand::Mqtt {
                broker,
                interval,
                json_prefix,
                sparkplug,
                faults,
            }) => sim_mqtt(&broker, interval, &json_prefix, &sparkplug, &faults).await,
            Command::Sim(SimCommand::Opcua {
                listen,
                pki_dir,
                interval,
                bulk,
                insecure,
                users,
                faults,
            }) => {
                adit::opcua_cmd::sim(listen, pki_dir, interval, bulk, insecure, &users, &faults)
                    .await
            }
            Command::Probe(ProbeCommand::Opcua {
                endpoint,
                security_mode,
                security_policy,
                pki_dir,
                username,
                password_env,
                browse,
                read,
                timeout,
            }) => {
                let identity = match username {
                    None => adit_config::Identity::Anonymous,
                    Some(user) => adit_config::Identity::UserName {
                        user,
                        password: adit_config::Secret::new(
                            password_env
                                .and_then(|v| std::env::var(v).ok())
                                .unwrap_or_default(),
                        ),
                    },
                };
                let pick = |n: &str| match n {
                    "none" => adit_config::SecurityMode::None,
                    "sign" => adit_config::SecurityMode::Sign,
                    _ => adit_config::SecurityMode::SignAndEncrypt,
                };
                let policy = adit_config::SecurityPolicy::NAMES
                    .iter()
                    .find(|(n, _)| *n == security_policy)
                    .map_or(adit_config::SecurityPolicy::Basic256Sha256, |(_, p)| *p);
                let args = adit_opcua::probe::ProbeArgs {
                    endpoint,
                    security_mode: pick(&security_mode),
                    security_policy: policy,
                    pki_dir,
                    identity,
                    browse,
                    read,
                    timeout,
                };
                adit_opcua::probe::probe(&args, &mut |line| say!("{line}")).await
            }
            Command::Check { .. } | Command::Audit(_) | Command::Spool(_) | Command::Opcua(_) => {
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("adit: {message}");
            ExitCode::FAILURE
        }
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for file in files {
        match adit_config::load_file(file) {
            Ok(config) => say!("{}: ok — {}", file.display(), describe(&config)),
            Err(errors) => {
                ok = false;
                eprintln!("{}: {} error(s)", file.display(), errors.0.len());
                eprintln!("{errors}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn audit(cmd: &AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify { path } => match adit_audit::verify(path) {
            Ok(report) => {
                say!(
                    "{}: ok — {} entries in {} file(s), chain intact",
                    path.display(),
                    report.entries,
                    report.files
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: TAMPERED OR DAMAGED: {e}", path.display());
                ExitCode::FAILURE
            }
        },
        AuditCommand::Tail { path, lines } => match adit_audit::read_entries(path) {
            Ok(entries) => {
                for e in entries.iter().skip(entries.len().saturating_sub(*lines)) {
                    say!("{}", adit_audit::format_entry(e));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                ExitCode::FAILURE
            }
        },
    }
}

fn describe(config: &Config) -> String {
    let http = config
        .http
        .listen
        .map_or_else(|| "off".to_string(), |a| a.to_string());
    let mut protocols: Vec<&str> = config.devices.iter().map(|d| d.protocol.name()).collect();
    protocols.sort_unstable();
    protocols.dedup();
    let mut sinks = Vec::new();
    if let Some(sqlite) = &config.sinks.sqlite {
        sinks.push(format!("sqlite at {}", sqlite.path.display()));
    }
    if let Some(q) = &config.sinks.questdb {
        sinks.push(format!("questdb table {}", q.table));
    }
    format!(
        "site {:?}: {} device(s) ({}), {} point(s); sink {}; spool {}; http {}",
        config.site,
        config.devices.len(),
        protocols.join(", "),
        config.point_count(),
        sinks.join(" + "),
        config.spool.dir.display(),
        http
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn run(path: &std::path::Path) -> Result<(), String> {
    let config = adit_config::load_file(path).map_err(|e| format!("invalid config\n{e}"))?;
    tracing::info!(config = %path.display(), summary = %describe(&config), "starting");
    let app = App::start(&config, HttpBind::Required)
        .await
        .map_err(|e| e.to_string())?;
    // The running app keeps what it needs; the parsed file (every point's
    // settings, hundreds of bytes each) is not kept for the whole run.
    let page = config.http.page;
    drop(config);
    if let Some(addr) = app.http_addr {
        if page {
            tracing::info!(%addr, "http endpoint: the page at / (/events, /api/points), /metrics /healthz /readyz");
        } else {
            tracing::info!(%addr, "http endpoint: /api/points /metrics /healthz /readyz");
        }
    }
    let live = app.live();
    let mut clock = SummaryClock::new(&app.metrics);
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut fatal = false;
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = app.health.fatal() => {
                tracing::error!("a fatal failure (spool writer) needs a restart: stopping so the supervisor restarts adit");
                fatal = true;
                break;
            }
            _ = tick.tick() => {
                let (line, _) = clock.line(&app.metrics, &live.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
                tracing::info!(summary = %line, "status");
            }
        }
    }
    tracing::info!("shutting down: delivering spooled readings until the drain deadline");
    let metrics = app.metrics.clone();
    let drained = app.shutdown().await;
    log_final_accounting(&metrics);
    if fatal {
        return Err("stopped after a fatal spool failure; restart to recover".into());
    }
    if drained {
        tracing::info!("stopped cleanly; every sink has every reading");
    } else {
        tracing::warn!(
            "stopped; the readings not yet stored are kept in the spool for the next start"
        );
    }
    Ok(())
}

/// One line that accounts for every reading of this run (load tools and
/// operators check that nothing went missing): accepted = stored per sink +
/// suppressed by deadband + dropped with a reason + left in the spool.
/// `stored` is what each database reports it now holds that it did not
/// before (SQLite counts the rows its inserts added, so distinct samples
/// that collapsed onto one key would show up as missing here; a
/// line-protocol server gives no count, so there it is the rows it
/// accepted); `written` adds the replays the database already had, and
/// `duplicates` is the difference.
fn log_final_accounting(m: &adit_pipeline::Metrics) {
    let sum = |name: &str| m.counter_sum(name, &[]) as u64;
    let per_sink = |name: &str| -> Vec<(String, u64)> {
        m.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .map(|metric| {
                let sink = metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "sink")
                    .map_or("?", |l| l.value());
                (sink.to_string(), metric.get_counter().get_value() as u64)
            })
            .collect()
    };
    let join = |v: &[(String, u64)]| {
        v.iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let stored = per_sink("adit_sink_rows_stored_total");
    let written = per_sink("adit_sink_rows_written_total");
    let duplicates: Vec<(String, u64)> = written
        .iter()
        .map(|(sink, w)| {
            let s = stored
                .iter()
                .find(|(n, _)| n == sink)
                .map_or(0, |(_, s)| *s);
            (sink.clone(), w.saturating_sub(s))
        })
        .collect();
    tracing::info!(
        accepted = sum("adit_readings_total"),
        from_sources = sum("adit_source_readings_total"),
        stored = %join(&stored),
        written = %join(&written),
        duplicates = %join(&duplicates),
        deadband_suppressed = sum("adit_deadband_suppressed_total"),
        spool_dropped = sum("adit_spool_dropped_readings_total"),
        sink_dropped = sum("adit_sink_readings_dropped_total"),
        left_in_spool_records = m.spool.pending_records.get(),
        "final accounting"
    );
}

fn parse_sim_fault(spec: &str) -> Result<adit_sim_mqtt::Fault, String> {
    use adit_sim_mqtt::Fault;
    let (name, arg) = spec.split_once('=').unwrap_or((spec, "1"));
    let n = || {
        arg.parse::<u32>()
            .map_err(|_| format!("{spec:?}: {arg:?} is not a count"))
    };
    Ok(match name {
        "malformed" => Fault::Malformed(n()?),
        "out_of_range" => Fault::OutOfRange(n()?),
        "silence" => Fault::Silence(true),
        "die" => Fault::DieWithoutDeath,
        "gap" => Fault::SequenceGap,
        _ => {
            return Err(format!(
                "unknown fault {spec:?}; expected malformed=N, out_of_range=N, silence, die or gap"
            ))
        }
    })
}

async fn sim_mqtt(
    broker: &str,
    interval: Duration,
    json_prefix: &str,
    sparkplug: &str,
    faults: &[String],
) -> Result<(), String> {
    use adit_core::url::{Scheme, Url};
    let url = Url::parse(broker, &[Scheme::Mqtt]).map_err(|e| e.clone())?;
    let mut config = adit_sim_mqtt::SimConfig::tunnel(&url.host, url.port);
    config.interval = interval;
    config.json_prefix = (json_prefix != "none").then(|| json_prefix.to_string());
    config.sparkplug = match sparkplug {
        "none" => None,
        other => Some(
            other
                .split_once('/')
                .map(|(g, n)| (g.to_string(), n.to_string()))
                .ok_or_else(|| format!("--sparkplug {other:?}: write GROUP/NODE"))?,
        ),
    };
    let faults: Vec<adit_sim_mqtt::Fault> = faults
        .iter()
        .map(|f| parse_sim_fault(f))
        .collect::<Result<_, _>>()?;
    let sim = adit_sim_mqtt::start(config);
    for f in faults {
        sim.fault(f);
    }
    say!("publishing the tunnel scenario to {broker} every {interval:?}; Ctrl-C stops");
    shutdown_signal().await;
    sim.stop().await;
    Ok(())
}

/// Waits (at most `limit`) until the broker confirmed the subscriptions of
/// every MQTT connection of `app`.
async fn wait_subscribed(app: &App, limit: Duration) {
    let connected = || {
        app.metrics
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == "adit_mqtt_subscribed")
            .flat_map(|f| f.get_metric().iter())
            .all(|m| m.get_gauge().get_value() >= 1.0)
    };
    let deadline = tokio::time::Instant::now() + limit;
    while !connected() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn demo(
    dir: PathBuf,
    run_for: Option<Duration>,
    every: Duration,
    faults: bool,
) -> Result<(), String> {
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), &[1, 2])
        .await
        .map_err(|e| e.to_string())?;
    let broker_port = adit::demo_broker::start()?;
    let opcua_sim = adit::opcua_cmd::demo_sim(&dir).await?;
    let mut config =
        adit_config::load_str(DEMO_CONFIG, "config/demo.toml").map_err(|e| e.to_string())?;
    let sim_addr = sim.addr().to_string();
    for device in &mut config.devices {
        match &mut device.settings {
            adit_config::DeviceSettings::Modbus(m) => m.address.clone_from(&sim_addr),
            adit_config::DeviceSettings::Mqtt(m) => m.port = broker_port,
            adit_config::DeviceSettings::Opcua(o) => {
                o.endpoint = opcua_sim.endpoint();
                o.pki_dir = dir.join("pki");
            }
        }
    }
    adit::opcua_cmd::trust_demo_sim(&dir.join("sim-pki"), &dir.join("pki"))?;
    let db_path = dir.join("readings.db");
    if let Some(sqlite) = config.sinks.sqlite.as_mut() {
        sqlite.path.clone_from(&db_path);
    }
    config.spool.dir = dir.join("spool");
    config.audit.dir = dir.join("audit");
    config.data_dir = dir;

    let app = App::start(&config, HttpBind::BestEffort)
        .await
        .map_err(|e| e.to_string())?;
    // The MQTT simulator starts once adit has subscribed, so adit sees its
    // Sparkplug births (otherwise it would first count data without a
    // birth and ask for a rebirth: correct, but noise in a demo).
    wait_subscribed(&app, Duration::from_secs(3)).await;
    let mqtt_sim = adit_sim_mqtt::start(adit_sim_mqtt::SimConfig::tunnel("127.0.0.1", broker_port));
    let db = db_path.display();
    say!(
        "adit demo — a simulated road tunnel, two bores, {} points",
        config.point_count()
    );
    say!("  simulator  Modbus TCP on {sim_addr}, units 1 (bore A) and 2 (bore B)");
    say!("  simulator  MQTT on mqtt://127.0.0.1:{broker_port} (embedded broker): JSON tunnel/+/sensors/+, Sparkplug B spBv1.0/tunnel/#");
    say!(
        "  simulator  OPC UA on {} (SignAndEncrypt, Basic256Sha256; namespace {})",
        opcua_sim.endpoint(),
        adit_sim_opcua::NAMESPACE_URI
    );
    say!("  readings   {db} (SQLite)");
    if let Some(addr) = app.http_addr {
        if config.http.page {
            say!("  page       http://{addr}/   (the control room: live values, quality, age, alerts)");
        }
        say!("  metrics    http://{addr}/metrics   health: /healthz /readyz");
    }
    say!("  look       sqlite3 {db} \"SELECT * FROM readings_view ORDER BY time DESC LIMIT 20\"");
    say!("             (sqlite3 is in Debian's package 'sqlite3')");
    say!(
        "  audit      adit audit tail {0}   ·   adit audit verify {0}",
        config.audit.dir.display()
    );
    if faults {
        say!(
            "  faults     a {} s cycle from 30 s: CO rise (bore B), values stuck (bore A), PLC silent (bore B); --no-faults turns it off",
            adit::demo_faults::CYCLE
        );
    }
    say!("  stop       Ctrl-C");

    let live = app.live();
    let mut clock = SummaryClock::new(&app.metrics);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let deadline = run_for.map(|d| tokio::time::Instant::now() + d);
    let until = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    let started = tokio::time::Instant::now();
    let mut script = adit::demo_faults::Script::default();
    let mut fault_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = &mut until => break,
            _ = fault_tick.tick(), if faults => {
                if let Some(line) = script.tick(&sim, started.elapsed()) {
                    say!("{}  {line}", wall_clock());
                }
            }
            _ = tick.tick() => {
                let (line, _) = clock.line(&app.metrics, &live.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
                say!("{}  {line}", wall_clock());
            }
        }
    }
    say!("stopping: draining readings into SQLite…");
    let drained = app.shutdown().await;
    sim.stop().await;
    mqtt_sim.stop().await;
    let stored = rows_in(&db_path);
    if drained {
        say!("stopped; {db} holds {stored} readings");
    } else {
        say!(
            "stopped; {db} holds {stored} readings, the rest waits in the spool for the next start"
        );
    }
    Ok(())
}

fn rows_in(path: &std::path::Path) -> String {
    rusqlite_count(path).map_or_else(|e| format!("? ({e})"), |n| n.to_string())
}

fn rusqlite_count(path: &std::path::Path) -> Result<i64, String> {
    let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    conn.query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
        .map_err(|e| e.to_string())
}

fn wall_clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02}Z",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

fn unit_specs(units: &[u8], faults: &[String], bulk: u16) -> Result<Vec<UnitSpec>, String> {
    let mut specs: Vec<UnitSpec> = units
        .iter()
        .map(|&id| UnitSpec {
            bulk_registers: bulk,
            ..UnitSpec::healthy(id)
        })
        .collect();
    for fault in faults {
        let (unit, spec) = fault
            .split_once(':')
            .ok_or_else(|| format!("--fault {fault:?}: write UNIT:SPEC, e.g. 2:no_answer"))?;
        let unit: u8 = unit
            .parse()
            .map_err(|_| format!("--fault {fault:?}: {unit:?} is not a unit id"))?;
        let target = specs
            .iter_mut()
            .find(|s| s.id == unit)
            .ok_or_else(|| format!("--fault {fault:?}: unit {unit} is not in --units"))?;
        target.faults.apply(spec)?;
    }
    Ok(specs)
}

async fn sim_modbus(
    listen: SocketAddr,
    specs: &[UnitSpec],
    framing: &str,
    count: u16,
) -> Result<(), String> {
    let units: Vec<u8> = specs.iter().map(|s| s.id).collect();
    let framing = if framing == "rtu-over-tcp" {
        Framing::RtuOverTcp
    } else {
        Framing::Tcp
    };
    let mut sims = Vec::with_capacity(usize::from(count));
    for i in 0..count {
        let port = if listen.port() == 0 {
            0
        } else {
            listen
                .port()
                .checked_add(i)
                .ok_or("port range runs past 65535")?
        };
        let sim = Simulator::start_tcp(SocketAddr::new(listen.ip(), port), framing, specs)
            .await
            .map_err(|e| e.to_string())?;
        say!(
            "modbus simulator on {} ({framing:?}) serving units {units:?}",
            sim.addr()
        );
        sims.push(sim);
    }
    say!("Ctrl-C stops");
    shutdown_signal().await;
    for sim in sims {
        sim.stop().await;
    }
    Ok(())
}
