//! `adit probe opcua`: what a field engineer runs when commissioning. Lists
//! the server's endpoints and their security (no session needed), then,
//! with a session of the chosen security, browses one level under a node
//! and reads values with their status, quality and timestamps exactly as
//! adit would store them.

use std::path::PathBuf;
use std::time::Duration;

use adit_config::{Identity, OpcuaSettings, SecurityMode, SecurityPolicy, TimestampSource};
use adit_core::opcua::NodeRef;
use adit_core::{Quality, Timestamp};
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, NodeId, QualifiedName, ReadValueId,
    ReferenceTypeId, TimestampsToReturn,
};

use futures_util::StreamExt;
use opcua::client::SessionPollResult;

use crate::client::{self, build_client, endpoint, identity_token};
use crate::convert::{convert, Scaling};
use crate::node::{resolution, resolve};

pub struct ProbeArgs {
    pub endpoint: String,
    pub security_mode: SecurityMode,
    pub security_policy: SecurityPolicy,
    pub pki_dir: PathBuf,
    pub identity: Identity,
    /// Browse one level under this node (e.g. `i=85`, the Objects folder).
    pub browse: Option<String>,
    pub read: Vec<String>,
    pub timeout: Duration,
}

pub async fn probe(args: &ProbeArgs, out: &mut dyn FnMut(String)) -> Result<(), String> {
    let settings = OpcuaSettings {
        endpoint: args.endpoint.clone(),
        security_mode: args.security_mode,
        security_policy: args.security_policy,
        allow_insecure: args.security_mode == SecurityMode::None,
        identity: args.identity.clone(),
        pki_dir: args.pki_dir.clone(),
        application_uri: "urn:adit:probe".into(),
        timestamp: TimestampSource::Source,
        keep_alive: Duration::from_secs(5),
        groups: Vec::new(),
    };
    let mut client = build_client(
        &settings,
        args.timeout,
        Duration::from_millis(250),
        Duration::from_secs(2),
    )?;
    let endpoints = tokio::time::timeout(
        args.timeout * 5,
        client.get_server_endpoints_from_url(args.endpoint.as_str()),
    )
    .await
    .map_err(|_| format!("{}: GetEndpoints timed out", args.endpoint))?
    .map_err(|e| format!("{}: GetEndpoints failed: {e}", args.endpoint))?;
    out(format!(
        "{} offers {} endpoint(s):",
        args.endpoint,
        endpoints.len()
    ));
    for e in &endpoints {
        let policy = opcua::crypto::SecurityPolicy::from_uri(e.security_policy_uri.as_ref());
        let tokens: Vec<String> = e
            .user_identity_tokens
            .iter()
            .flatten()
            .map(|t| format!("{:?}", t.token_type))
            .collect();
        let cert = client::cert_file_name(&e.server_certificate).unwrap_or_else(|| "-".into());
        out(format!(
            "  {:<22} {:<15} level {:>3}  identities: {}  certificate: {cert}",
            policy.to_str(),
            format!("{:?}", e.security_mode),
            e.security_level,
            tokens.join(", ")
        ));
    }
    if args.browse.is_none() && args.read.is_empty() {
        return Ok(());
    }
    let mut matching = opcua::client::Client::find_matching_endpoint(
        &endpoints,
        args.endpoint.as_str(),
        client::ua_policy(args.security_policy),
        client::ua_mode(args.security_mode),
    )
    .ok_or_else(|| {
        format!(
            "no endpoint with {}/{:?}; choose one listed above (--security-mode, --security-policy)",
            args.security_policy.name(),
            endpoint(&settings).security_mode
        )
    })?;
    matching.endpoint_url = args.endpoint.as_str().into();
    let server_cert = matching.server_certificate.clone();
    let (session, event_loop) = client
        .connect_to_endpoint_directly(matching, identity_token(&args.identity)?)
        .map_err(|e| e.to_string())?;
    // Drive the loop here until the first connect succeeds or fails, to
    // report the real status; then in a task while the probe works.
    let mut stream = Box::pin(event_loop.enter());
    let first = tokio::time::timeout(args.timeout * 10, async {
        while let Some(event) = stream.next().await {
            match event {
                Ok(SessionPollResult::Reconnected(_)) => return Ok(()),
                Ok(SessionPollResult::ReconnectFailed(code)) | Err(code) => return Err(code),
                Ok(_) => {}
            }
        }
        Err(opcua::types::StatusCode::BadNotConnected)
    })
    .await
    .unwrap_or(Err(opcua::types::StatusCode::BadTimeout));
    if let Err(code) = first {
        return Err(client::explain_rejection(
            code,
            &args.endpoint,
            &args.pki_dir,
            Some(&server_cert),
        )
        .unwrap_or_else(|| format!("{}: no session: {code}", args.endpoint)));
    }
    let handle = tokio::spawn(async move { while stream.next().await.is_some() {} });
    let result = session_work(args, &session, out).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
    handle.abort();
    result
}

async fn session_work(
    args: &ProbeArgs,
    session: &opcua::client::Session,
    out: &mut dyn FnMut(String),
) -> Result<(), String> {
    let map = session
        .read_namespace_array()
        .await
        .map_err(|e| format!("reading the namespace array: {e}"))?;
    let mut refs = Vec::new();
    for text in args.browse.iter().chain(&args.read) {
        refs.push(NodeRef::parse(text)?);
    }
    let namespaces = resolution(refs.iter().map(|r| &r.namespace), &map);
    let mut refs = refs.into_iter();
    if args.browse.is_some() {
        let root = refs.next().ok_or("no node to browse")?;
        let node = resolve(&root, &namespaces)?;
        let results = session
            .browse(
                &[BrowseDescription {
                    node_id: node.clone(),
                    browse_direction: BrowseDirection::Forward,
                    reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                    include_subtypes: true,
                    node_class_mask: 0,
                    result_mask: 0x3F,
                }],
                1000,
                None,
            )
            .await
            .map_err(|e| format!("browse {root}: {e}"))?;
        out(format!("browse {root}:"));
        for r in results.iter().flat_map(|r| r.references.iter().flatten()) {
            let id = &r.node_id.node_id;
            let uri = map
                .known_namespaces()
                .iter()
                .find(|(_, i)| **i == id.namespace)
                .map(|(u, _)| u.clone());
            let name = match uri {
                Some(u) if id.namespace != 0 => format!("nsu={u};{}", id.identifier),
                _ => format!("{id}"),
            };
            out(format!(
                "  {:<40} {:<10?} {}",
                r.display_name.text.as_ref(),
                r.node_class,
                name
            ));
        }
    }
    let reads: Vec<NodeRef> = refs.collect();
    if reads.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<ReadValueId> = Vec::new();
    for r in &reads {
        let node_id: NodeId = resolve(r, &namespaces)?;
        ids.push(ReadValueId {
            node_id,
            attribute_id: AttributeId::Value as u32,
            index_range: opcua::types::NumericRange::None,
            data_encoding: QualifiedName::null(),
        });
    }
    let values = session
        .read(&ids, TimestampsToReturn::Both, 0.0)
        .await
        .map_err(|e| format!("read: {e}"))?;
    for (r, dv) in reads.iter().zip(&values) {
        let c = convert(dv, Scaling::NONE, TimestampSource::Source, Timestamp::now());
        let value = c.value.map_or_else(|| "-".into(), |v| v.to_string());
        let status = dv.status.unwrap_or_default();
        let quality = match c.quality {
            Quality::Good => "good".to_string(),
            q => format!(
                "{} ({})",
                q.class().name(),
                q.reason().map(|x| x.to_string()).unwrap_or_default()
            ),
        };
        out(format!(
            "  {r}\n    value {value}  status {status} ({:#010X})  quality {quality}\n    source {}  server {}",
            status.bits(),
            dv.source_timestamp.map_or_else(|| "-".into(), |t| t.to_string()),
            dv.server_timestamp.map_or_else(|| "-".into(), |t| t.to_string()),
        ));
    }
    Ok(())
}
