//! `adit opcua trust FILE`: moves a server certificate that adit refused
//! (`<pki>/rejected/"<CN> [<thumbprint>].der"`) into `<pki>/trusted/` under
//! the exact name async-opcua looks for, after checking that it is a
//! certificate. Prints what it trusted (CN, thumbprint, expiry).

use std::path::{Path, PathBuf};

use opcua::crypto::{CertificateStore, X509};

/// What was trusted.
#[derive(Debug)]
pub struct Trusted {
    pub file: PathBuf,
    pub subject: String,
    pub thumbprint: String,
    pub not_after: String,
}

/// Trusts `file` (a DER certificate, usually in `<pki>/rejected/`). The PKI
/// directory is `file`'s grandparent unless `pki_dir` is given.
pub fn trust(file: &Path, pki_dir: Option<&Path>) -> Result<Trusted, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let cert = X509::from_der(&bytes)
        .map_err(|e| format!("{} is not a DER certificate: {e}", file.display()))?;
    let pki = match pki_dir {
        Some(p) => p.to_path_buf(),
        None => file
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .ok_or_else(|| format!("{}: give --pki-dir", file.display()))?,
    };
    let trusted_dir = pki.join("trusted");
    std::fs::create_dir_all(&trusted_dir).map_err(|e| format!("{}: {e}", trusted_dir.display()))?;
    let name = CertificateStore::cert_file_name(&cert);
    let target = trusted_dir.join(&name);
    // Durable before the rejected copy goes: a crash leaves the
    // certificate in one place or the other, never in neither.
    adit_core::durable::replace_file(&trusted_dir, &name, &bytes)
        .map_err(|e| format!("{}: {e}", target.display()))?;
    if file.parent().and_then(Path::file_name) == Some(std::ffi::OsStr::new("rejected")) {
        let _ = std::fs::remove_file(file);
    }
    Ok(Trusted {
        file: target,
        subject: cert.subject_name(),
        thumbprint: cert.thumbprint().as_hex_string(),
        not_after: cert
            .not_after()
            .map_or_else(|_| "unknown".into(), |t| t.to_rfc3339()),
    })
}
