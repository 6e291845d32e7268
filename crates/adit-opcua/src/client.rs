//! Building an async-opcua client the way a collector needs it, and turning
//! connect failures into errors an engineer can act on.
//!
//! - retries forever (`session_retry_limit(-1)`) with adit's backoff bounds,
//!   and drops a session after 3 failed keep-alives (the library default 0
//!   never does);
//! - never trusts an unknown server certificate: the library writes it to
//!   `<pki>/rejected/` and adit names that file and `adit opcua trust FILE`;
//! - adit's own application certificate is created on first run (CN
//!   "adit", SAN: the application URI, localhost, 127.0.0.1 and this host's
//!   names) in `<pki>/own/cert.der`, its key in `<pki>/private/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use adit_config::{Identity, OpcuaSettings, SecurityMode, SecurityPolicy};
use opcua::client::{Client, ClientBuilder, IdentityToken};
use opcua::crypto::{CertificateStore, SecurityPolicy as UaPolicy, X509};
use opcua::types::{
    ByteString, EndpointDescription, MessageSecurityMode, StatusCode, UserTokenPolicy,
};

/// Failed keep-alives after which the library drops the session.
pub const MAX_FAILED_KEEP_ALIVES: u64 = 3;

pub fn ua_policy(p: SecurityPolicy) -> UaPolicy {
    match p {
        SecurityPolicy::None => UaPolicy::None,
        SecurityPolicy::Basic256Sha256 => UaPolicy::Basic256Sha256,
        SecurityPolicy::Aes128Sha256RsaOaep => UaPolicy::Aes128Sha256RsaOaep,
        SecurityPolicy::Aes256Sha256RsaPss => UaPolicy::Aes256Sha256RsaPss,
    }
}

pub fn ua_mode(m: SecurityMode) -> MessageSecurityMode {
    match m {
        SecurityMode::None => MessageSecurityMode::None,
        SecurityMode::Sign => MessageSecurityMode::Sign,
        SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    }
}

/// A client for `settings`; `timeout` bounds every request, reconnects back
/// off from `retry_min` to `retry_max`.
pub fn build_client(
    settings: &OpcuaSettings,
    timeout: Duration,
    retry_min: Duration,
    retry_max: Duration,
) -> Result<Client, String> {
    ClientBuilder::new()
        .application_name("adit")
        .application_uri(settings.application_uri.clone())
        .product_uri("urn:adit")
        .pki_dir(settings.pki_dir.clone())
        .create_sample_keypair(true)
        .trust_server_certs(false)
        .verify_server_certs(true)
        .session_retry_limit(-1)
        .session_retry_initial(retry_min)
        .session_retry_max(retry_max)
        .keep_alive_interval(settings.keep_alive)
        .max_failed_keep_alive_count(MAX_FAILED_KEEP_ALIVES)
        .request_timeout(timeout.max(Duration::from_millis(500)))
        .session_timeout(60_000)
        .recreate_subscriptions(true)
        .max_message_size(64 * 1024 * 1024)
        .max_chunk_count(1024)
        .max_array_length(1_000_000)
        .client()
        .map_err(|errors| format!("OPC UA client: {}", errors.join("; ")))
}

/// The endpoint adit asks the server for.
pub fn endpoint(settings: &OpcuaSettings) -> EndpointDescription {
    (
        settings.endpoint.as_str(),
        ua_policy(settings.security_policy).to_uri(),
        ua_mode(settings.security_mode),
        UserTokenPolicy::anonymous(),
    )
        .into()
}

pub fn identity_token(identity: &Identity) -> Result<IdentityToken, String> {
    Ok(match identity {
        Identity::Anonymous => IdentityToken::Anonymous,
        Identity::UserName { user, password } => {
            IdentityToken::new_user_name(user.clone(), password.expose().to_string())
        }
        Identity::X509 { cert, key } => IdentityToken::new_x509_path(cert, key)
            .map_err(|e| format!("user certificate {}: {e}", cert.display()))?,
    })
}

/// "Basic256Sha256/SignAndEncrypt, None/None" for what a server offers.
pub fn describe_endpoints(endpoints: &[EndpointDescription]) -> String {
    let mut offered: Vec<String> = endpoints
        .iter()
        .map(|e| {
            let policy = UaPolicy::from_uri(e.security_policy_uri.as_ref());
            format!("{}/{:?}", policy.to_str(), e.security_mode)
        })
        .collect();
    offered.sort();
    offered.dedup();
    offered.join(", ")
}

/// The file name async-opcua gives a certificate in `trusted/` or
/// `rejected/`: `"<CN> [<sha1 thumbprint>].der"`.
pub fn cert_file_name(der: &ByteString) -> Option<String> {
    X509::from_byte_string(der)
        .ok()
        .map(|c| CertificateStore::cert_file_name(&c))
}

/// Days until the certificate in `der` expires (negative once expired).
pub fn days_left(der: &ByteString) -> Option<i64> {
    let cert = X509::from_byte_string(der).ok()?;
    let not_after = cert.not_after().ok()?;
    Some((not_after - opcua::types::DateTime::now().as_chrono()).num_days())
}

/// adit's own certificate, if it exists yet.
pub fn own_certificate(pki_dir: &Path) -> Option<ByteString> {
    std::fs::read(pki_dir.join("own").join("cert.der"))
        .ok()
        .map(ByteString::from)
}

/// What to tell the engineer when a secure connection to `endpoint` failed
/// with `status` against a server whose certificate is `server_cert`;
/// `None` when the failure is not about certificates.
pub fn explain_rejection(
    status: StatusCode,
    endpoint: &str,
    pki_dir: &Path,
    server_cert: Option<&ByteString>,
) -> Option<String> {
    let code = status.sub_code().name();
    let host = endpoint
        .strip_prefix("opc.tcp://")
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or(endpoint);
    let own = pki_dir.join("own").join("cert.der");
    let rejected: Option<PathBuf> = server_cert
        .and_then(cert_file_name)
        .map(|name| pki_dir.join("rejected").join(name))
        .filter(|p| p.is_file());
    Some(match (code, rejected) {
        ("BadCertificateUntrusted" | "BadSecurityChecksFailed" | "BadCertificateInvalid", Some(file)) => format!(
            "{code}: adit does not trust the server's certificate; it was saved as {} — check its thumbprint with the server's administrator, then run: adit opcua trust {:?}",
            file.display(),
            file.display().to_string()
        ),
        ("BadCertificateHostNameInvalid", _) => format!(
            "{code}: the server's certificate does not name the host {host:?} of the endpoint URL; write the endpoint with a host name the certificate names (see `adit probe opcua`), or have the server's certificate reissued"
        ),
        ("BadCertificateUriInvalid", _) => format!(
            "{code}: the server's certificate does not carry the application URI the server announces; have the server's certificate reissued"
        ),
        ("BadCertificateTimeInvalid", _) => format!(
            "{code}: a certificate is expired or not yet valid (the server's, or adit's own {}); check both dates and the clocks",
            own.display()
        ),
        ("BadCertificateUntrusted" | "BadSecurityChecksFailed" | "BadCertificateInvalid"
        | "BadCertificateIssuerRevocationUnknown" | "BadCertificateRevoked", None) => format!(
            "{code}: the secure channel was refused; if the server does not trust adit, trust adit's certificate {} on the server (its CN is \"adit\")",
            own.display()
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_failures_are_explained_and_others_are_not() {
        let dir = Path::new("/nonexistent-pki");
        let explain = |bits: u32| {
            explain_rejection(
                StatusCode::from(bits),
                "opc.tcp://127.0.0.1:4840/",
                dir,
                None,
            )
        };
        let host = explain(0x8016_0000).unwrap_or_default();
        assert!(host.contains("\"127.0.0.1\""), "{host}");
        let untrusted = explain(0x801A_0000).unwrap_or_default();
        assert!(
            untrusted.contains("/nonexistent-pki/own/cert.der"),
            "{untrusted}"
        );
        assert!(
            explain(0x8005_0000).is_none(),
            "BadCommunicationError is not a certificate problem"
        );
    }
}
