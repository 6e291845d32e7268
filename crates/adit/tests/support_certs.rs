//! A site CA made by the `openssl` command (Debian package `openssl`), with
//! a server certificate for 127.0.0.1 and a client certificate, both signed
//! by it. Shared by the https alert test (adit-watchdog, via `#[path]`) and
//! the MQTT TLS test. Files written in `dir`: `ca.pem`, `ca.key`,
//! `server.pem`, `server.key`, `client.pem`, `client.key`.

#![allow(dead_code, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl must be installed (Debian: package openssl)");
    assert!(status.success(), "openssl {args:?}");
}

/// A key and CSR `name.key`/`name.csr`, signed by the CA into `name.pem`
/// with the given extensions.
fn signed(dir: &Path, name: &str, subject: &str, extensions: &str) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let pem = format!("{name}.pem");
    let ext = format!("{name}.ext");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ],
    );
    std::fs::write(dir.join(&ext), extensions).expect("write the extensions file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

/// The CA, a server certificate for 127.0.0.1 and a client certificate.
pub fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=adit test site CA",
        ],
    );
    signed(
        dir,
        "server",
        "/CN=127.0.0.1",
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    signed(
        dir,
        "client",
        "/CN=adit-test-client",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
}

/// A rustls server config (ring) serving `server.pem` with `server.key`
/// from `dir` (after [`make_certificates`]).
pub fn tls_server_config(dir: &Path) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<_, _>>()
        .expect("server.pem certificates");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate"),
    )
}
