//! The OPC UA subcommands: `adit sim opcua` (the simulator on its own) and
//! `adit opcua trust FILE` (accept a server certificate adit refused).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use adit_sim_opcua::{Fault, FreezeRelay, OpcuaSim, SimOptions};

/// Runs the OPC UA simulator until Ctrl-C, with `faults` applied.
#[allow(clippy::too_many_arguments)] // the command line's options
pub async fn sim(
    listen: SocketAddr,
    pki_dir: PathBuf,
    interval: Duration,
    bulk: usize,
    insecure: bool,
    users: &[String],
    faults: &[String],
) -> Result<(), String> {
    let mut options = SimOptions::new(pki_dir);
    options.update_interval = interval;
    options.bulk_variables = bulk;
    options.offer_insecure = insecure;
    options.host = listen.ip().to_string();
    for u in users {
        let (user, pass) = u
            .split_once(':')
            .ok_or_else(|| format!("--user {u:?}: expected NAME:PASSWORD"))?;
        options.users.push((user.into(), pass.into()));
    }
    let faults: Vec<Fault> = faults.iter().map(|f| f.parse()).collect::<Result<_, _>>()?;
    let restart = faults.iter().find_map(|f| match f {
        Fault::RestartEvery { every, down } => Some((*every, *down)),
        _ => None,
    });
    let quiet = faults.iter().find_map(|f| match f {
        Fault::QuietEvery { every, quiet } => Some((*every, *quiet)),
        _ => None,
    });
    // With quiet periods, a relay serves `listen` and the server a port of its own.
    let (server_addr, relay) = if quiet.is_some() {
        let inner = std::net::TcpListener::bind((listen.ip(), 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("{listen}: {e}"))?;
        let outer = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("{listen}: {e}"))?;
        (inner, Some(FreezeRelay::start(outer, inner)?))
    } else {
        (listen, None)
    };
    let mut sim = start(&options, server_addr, &faults).await?;
    println!(
        "OPC UA simulator on opc.tcp://{listen}/ (namespace {:?} = ns={}), variables Tunnel.North.CO …, certificate {}",
        adit_sim_opcua::NAMESPACE_URI,
        sim.namespace_index(),
        options.pki_dir.join("own/cert.der").display()
    );
    let far = Duration::from_secs(86_400 * 365);
    let mut next_restart = tokio::time::Instant::now() + restart.map_or(far, |r| r.0);
    let mut next_quiet = tokio::time::Instant::now() + quiet.map_or(far, |q| q.0);
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                r.map_err(|e| e.to_string())?;
                break;
            }
            () = tokio::time::sleep_until(next_restart) => {
                let (every, down) = restart.unwrap_or((far, Duration::ZERO));
                println!("fault: server stopped for {down:?}");
                sim.shutdown().await;
                tokio::time::sleep(down).await;
                sim = start(&options, server_addr, &faults).await?;
                println!("fault: server back");
                next_restart += every;
            }
            () = tokio::time::sleep_until(next_quiet) => {
                let (every, for_) = quiet.unwrap_or((far, Duration::ZERO));
                if let Some(relay) = &relay {
                    println!("fault: server quiet for {for_:?} (connections kept)");
                    relay.set_frozen(true);
                    tokio::time::sleep(for_).await;
                    relay.set_frozen(false);
                    println!("fault: server answers again");
                }
                next_quiet += every;
            }
        }
    }
    sim.shutdown().await;
    Ok(())
}

/// Starts the simulator on `addr` with the per-variable `faults`.
async fn start(
    options: &SimOptions,
    addr: SocketAddr,
    faults: &[Fault],
) -> Result<OpcuaSim, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let sim = OpcuaSim::start(options, listener)?;
    for f in faults {
        match f {
            Fault::Bad { node, status } => sim.set_bad(node, *status),
            Fault::Stuck { node } => sim.set_stuck(node, true),
            Fault::RestartEvery { .. } | Fault::QuietEvery { .. } => {}
        }
    }
    Ok(sim)
}

/// `adit opcua trust FILE`.
pub fn trust(file: &Path, pki_dir: Option<&Path>) -> Result<String, String> {
    let t = adit_opcua::trust::trust(file, pki_dir)?;
    Ok(format!(
        "trusted {}\n  subject    {}\n  thumbprint {}\n  expires    {}",
        t.file.display(),
        t.subject,
        t.thumbprint,
        t.not_after
    ))
}

/// The demo's OPC UA simulator: a free loopback port, its PKI under `dir`.
pub async fn demo_sim(dir: &Path) -> Result<OpcuaSim, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("OPC UA simulator: {e}"))?;
    OpcuaSim::start(&SimOptions::new(dir.join("sim-pki")), listener)
}

/// The demo trusts its own simulator: copies the simulator's certificate
/// into adit's `trusted/` under the name async-opcua looks for.
pub fn trust_demo_sim(sim_pki: &Path, adit_pki: &Path) -> Result<(), String> {
    let cert = sim_pki.join("own").join("cert.der");
    let der = std::fs::read(&cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let name = adit_opcua::client::cert_file_name(&der.clone().into())
        .ok_or_else(|| format!("{} is not a certificate", cert.display()))?;
    let trusted = adit_pki.join("trusted");
    std::fs::create_dir_all(&trusted).map_err(|e| format!("{}: {e}", trusted.display()))?;
    std::fs::write(trusted.join(name), der).map_err(|e| format!("{}: {e}", trusted.display()))
}
