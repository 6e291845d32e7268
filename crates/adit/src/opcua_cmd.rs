//! The OPC UA subcommands: `adit sim opcua` (the simulator on its own) and
//! `adit opcua trust FILE` (accept a server certificate adit refused).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use adit_sim_opcua::{OpcuaSim, SimOptions};

/// Runs the OPC UA simulator until Ctrl-C.
pub async fn sim(
    listen: SocketAddr,
    pki_dir: PathBuf,
    interval: Duration,
    bulk: usize,
    insecure: bool,
    users: &[String],
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
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    let sim = OpcuaSim::start(&options, listener)?;
    println!(
        "OPC UA simulator on {} (namespace {:?} = ns={}), variables Tunnel.North.CO …, certificate {}",
        sim.endpoint(),
        adit_sim_opcua::NAMESPACE_URI,
        sim.namespace_index(),
        options.pki_dir.join("own/cert.der").display()
    );
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    sim.shutdown().await;
    Ok(())
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
