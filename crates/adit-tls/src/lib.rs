//! The one TLS client configuration of adit (rustls with the ring provider,
//! never aws-lc-rs): alert receivers over https and MQTT brokers over
//! `mqtts://` both build theirs here.
//!
//! Trust: the Mozilla roots, plus every certificate of a site's own CA file
//! (PEM) when one is given; optionally a client certificate and key (PEM).
//! [`client_config_only`] trusts a CA file alone (the QuestDB connection
//! string's `tls_roots`, whose meaning is "these roots, no others").

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A client certificate and its private key, both PEM files.
#[derive(Clone, Copy, Debug)]
pub struct ClientAuth<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// A rustls client config trusting the Mozilla roots and `ca_file`.
pub fn client_config(
    ca_file: Option<&Path>,
    client_auth: Option<ClientAuth<'_>>,
) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        add_file(&mut roots, path)?;
    }
    with_roots(roots, client_auth)
}

/// A rustls client config trusting only the certificates in `ca_file`.
pub fn client_config_only(ca_file: &Path) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    add_file(&mut roots, ca_file)?;
    with_roots(roots, None)
}

fn add_file(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    for cert in certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn with_roots(
    roots: RootCertStore,
    client_auth: Option<ClientAuth<'_>>,
) -> Result<ClientConfig, String> {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
    match client_auth {
        None => Ok(builder.with_no_client_auth()),
        Some(auth) => {
            let chain = certificates(auth.cert)?;
            let key = PrivateKeyDer::from_pem_file(auth.key)
                .map_err(|e| format!("{}: no PEM private key ({e})", auth.key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{}: {e}", auth.cert.display()))
        }
    }
}

/// Every PEM certificate in `path` (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}
