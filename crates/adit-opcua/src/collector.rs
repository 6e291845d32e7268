//! The OPC UA collector: one task per server connection.
//!
//! Invariants:
//! - the session is driven with `event_loop.enter()` in this task, never
//!   `spawn()`: after every `Reconnected` the worker calls
//!   `session.trigger_publish_now()` once it has verified the namespace
//!   indexes, because async-opcua 0.17–0.19 never sends a Publish after it
//!   transferred or recreated subscriptions (the new subscription loop
//!   treats the trigger fired during the transfer as already seen); until
//!   then no Publish goes out on the new session;
//! - subscription ids are never kept: the group of a subscription is found
//!   from its monitored items' client handles (point index + 1), which the
//!   library keeps when it recreates subscriptions;
//! - liveness: a subscribed group that hears nothing (data or keep-alive;
//!   keep-alive count 1, so one per publishing interval) for
//!   [`SILENT_INTERVALS`] intervals (at least [`SILENT_MIN`]) while the
//!   session is up gets the whole client rebuilt; the check is a timer set
//!   to the earliest such deadline, none while disconnected;
//! - namespaces are resolved by URI at connect and verified after every
//!   reconnect; if an index changed, or cannot be read, the client is
//!   rebuilt (its recreated items would name other nodes). Values that come
//!   over a link not yet verified are dropped and counted (`Pending`'s
//!   link epochs): a Read the worker sent as the link came back, a Publish
//!   the library sent on its own;
//! - when the link is lost, every point is marked `Bad(CommFailure)` (last
//!   values kept by the live state) and no old value is re-confirmed; fresh
//!   values make points good again;
//! - a node the server refuses (`BadNodeIdUnknown`, …) is `Bad` with that
//!   status for that point only and retried every [`RETRY_FAILED`]; the
//!   others go on;
//! - `None` security is logged and audited at every connect.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use adit_audit::Audit;
use adit_config::{
    DataChangeTrigger, DeviceConfig, GroupMode, OpcuaSettings, SecurityMode, ServerDeadband,
};
use adit_core::opcua::NodeTarget;
use adit_core::{Backoff, PointId, Quality, Reason};
use adit_source::{Deadline, Source, SourceContext, SourceError, SourceFuture};
use futures_util::StreamExt;
use opcua::client::{Session, SessionPollResult};
use opcua::types::{
    AttributeId, BrowsePath, DataChangeFilter, DeadbandType, ExtensionObject,
    MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters, NodeId, QualifiedName,
    ReadValueId, StatusCode, TimestampsToReturn,
};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{self, build_client, endpoint, identity_token};
use crate::convert::Scaling;
use crate::metrics::ConnectionMetrics;
use crate::node::{browse_path, index_uris, resolution, resolve};
use crate::pending::{GroupCallback, Pending, PointTable};
use crate::status::reason_of;

/// Silent publishing intervals before the client is rebuilt.
pub const SILENT_INTERVALS: u32 = 5;
/// The liveness bound is never shorter than this.
pub const SILENT_MIN: Duration = Duration::from_secs(3);
/// Refused nodes are tried again this often.
pub const RETRY_FAILED: Duration = Duration::from_secs(30);
/// Monitored items created per request.
pub const ITEMS_PER_CALL: usize = 1000;
/// Nodes read per request (poll groups).
pub const NODES_PER_READ: usize = 1000;

/// One server connection as configured, with what it needs at run time.
pub struct OpcuaConnection {
    pub config: DeviceConfig,
    pub settings: OpcuaSettings,
    /// Registry ids of `config.points`, in order.
    pub ids: Vec<PointId>,
    pub metrics: ConnectionMetrics,
    pub audit: Audit,
}

impl OpcuaConnection {
    pub fn new(
        config: DeviceConfig,
        ids: Vec<PointId>,
        metrics: ConnectionMetrics,
        audit: Audit,
    ) -> Result<Self, String> {
        let settings = config
            .opcua()
            .cloned()
            .ok_or_else(|| format!("{} is not an OPC UA device", config.id))?;
        Ok(Self {
            config,
            settings,
            ids,
            metrics,
            audit,
        })
    }

    fn table(&self) -> PointTable {
        let points = &self.config.points;
        let mut members = vec![Vec::new(); self.settings.groups.len()];
        let mut group = Vec::with_capacity(points.len());
        let mut scaling = Vec::with_capacity(points.len());
        for (i, p) in points.iter().enumerate() {
            let (g, index) = p.opcua().map_or((0, None), |a| (a.group, a.index));
            if let Some(m) = members.get_mut(g) {
                m.push(i);
            }
            group.push(g);
            scaling.push(Scaling {
                index,
                scale: p.scale,
                offset: p.offset,
            });
        }
        PointTable {
            ids: self.ids.clone(),
            scaling,
            group,
            interval: points.iter().map(|p| p.interval).collect(),
            members,
            timestamps: self.settings.timestamp,
        }
    }
}

/// The collector of one connection (rebuilt by the supervisor if it fails).
pub struct OpcuaCollector {
    conn: Arc<OpcuaConnection>,
}

impl OpcuaCollector {
    pub fn new(conn: Arc<OpcuaConnection>) -> Self {
        Self { conn }
    }
}

/// Why one client's life ended.
enum End {
    Shutdown,
    Rebuild(String),
}

impl Source for OpcuaCollector {
    fn name(&self) -> &str {
        &self.conn.config.id
    }

    fn protocol(&self) -> &'static str {
        "opcua"
    }

    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> SourceFuture<'a> {
        Box::pin(async move {
            let conn = &self.conn;
            let table = Arc::new(conn.table());
            let mut backoff = Backoff::new(conn.config.reconnect_min, conn.config.reconnect_max);
            loop {
                let pending = Pending::new(table.clone(), conn.metrics.clone());
                let started = Instant::now();
                let end = run_client(conn, ctx, &pending).await;
                conn.metrics.connected.set(0);
                // Whatever arrived before the end still goes out.
                let left = pending.take();
                if !left.is_empty() {
                    ctx.out
                        .send(left)
                        .await
                        .map_err(|_| SourceError::PipelineClosed)?;
                }
                match end {
                    End::Shutdown => return Ok(()),
                    End::Rebuild(why) => {
                        tracing::warn!(device = %conn.config.id, reason = %why, "OPC UA client rebuilt");
                        if ctx
                            .out
                            .mark_bad(&conn.ids, Reason::CommFailure)
                            .await
                            .is_err()
                        {
                            return Err(SourceError::PipelineClosed);
                        }
                    }
                }
                if started.elapsed() > conn.config.reconnect_max * 2 {
                    backoff.reset();
                }
                let wait = backoff.next_delay();
                tokio::select! {
                    () = ctx.shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        })
    }
}

/// One client, from connect to rebuild or shutdown.
async fn run_client(conn: &OpcuaConnection, ctx: &SourceContext, pending: &Pending) -> End {
    let s = &conn.settings;
    let c = &conn.config;
    // Off the async worker: building reads the PKI directory and, on the
    // first start, generates adit's RSA key pair.
    let built = {
        let s = s.clone();
        let (timeout, min, max) = (c.timeout, c.reconnect_min, c.reconnect_max);
        tokio::task::spawn_blocking(move || build_client(&s, timeout, min, max)).await
    };
    let mut client = match built {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return End::Rebuild(e),
        Err(e) => return End::Rebuild(format!("OPC UA client: {e}")),
    };
    if let Some(days) = client::own_certificate(&s.pki_dir)
        .as_ref()
        .and_then(client::days_left)
    {
        conn.metrics.own_cert_days.set(days);
        if days < 30 {
            tracing::warn!(device = %c.id, days, "adit's OPC UA application certificate expires soon");
        }
    }
    let identity = match identity_token(&s.identity) {
        Ok(t) => t,
        Err(e) => return End::Rebuild(e),
    };
    // GetEndpoints first: it tells what the server offers, and its certificate.
    let offered = tokio::select! {
        () = ctx.shutdown.cancelled() => return End::Shutdown,
        r = tokio::time::timeout(c.timeout * 5, client.get_server_endpoints_from_url(s.endpoint.as_str())) => r,
    };
    let offered = match offered {
        Ok(Ok(list)) => list,
        Ok(Err(e)) => {
            conn.metrics.rebuild_failed.inc();
            return End::Rebuild(format!("{}: GetEndpoints failed: {e}", s.endpoint));
        }
        Err(_) => {
            conn.metrics.rebuild_failed.inc();
            return End::Rebuild(format!("{}: GetEndpoints timed out", s.endpoint));
        }
    };
    let wanted = endpoint(s);
    let Some(mut matching) = opcua::client::Client::find_matching_endpoint(
        &offered,
        s.endpoint.as_str(),
        client::ua_policy(s.security_policy),
        client::ua_mode(s.security_mode),
    ) else {
        let why = format!(
            "{} offers no endpoint with {}/{:?} (it offers: {}); adit does not fall back to weaker security",
            s.endpoint,
            s.security_policy.name(),
            wanted.security_mode,
            client::describe_endpoints(&offered)
        );
        conn.audit.record(
            "opcua_refused",
            serde_json::json!({"device": c.id, "endpoint": s.endpoint, "why": why}),
        );
        conn.metrics.rebuild_failed.inc();
        return End::Rebuild(why);
    };
    // Connect where the config says, not where the server advertises: the
    // library replaces only the host name, and a server behind a port
    // forward or a relay advertises a port adit cannot reach.
    matching.endpoint_url = s.endpoint.as_str().into();
    let server_cert = matching.server_certificate.clone();
    if let Some(days) = client::days_left(&server_cert) {
        conn.metrics.server_cert_days.set(days);
        if days < 30 {
            tracing::warn!(device = %c.id, days, "the OPC UA server's certificate expires soon");
        }
    }
    if s.security_mode == SecurityMode::None {
        tracing::warn!(device = %c.id, endpoint = %s.endpoint, "OPC UA connection WITHOUT security (allow_insecure = true): values and credentials travel in clear");
        conn.audit.record(
            "opcua_insecure_connect",
            serde_json::json!({"device": c.id, "endpoint": s.endpoint}),
        );
    }
    let (session, event_loop) = match client.connect_to_endpoint_directly(matching, identity) {
        Ok(pair) => pair,
        Err(e) => {
            conn.metrics.rebuild_failed.inc();
            return End::Rebuild(format!("{}: {e}", s.endpoint));
        }
    };
    let stream = event_loop.enter();
    tokio::pin!(stream);
    let mut workers = JoinSet::new();
    let (reconnected_tx, reconnected_rx) = tokio::sync::watch::channel(0u64);
    workers.spawn(worker(
        session.clone(),
        conn.settings.clone(),
        conn.config.clone(),
        pending.clone(),
        reconnected_rx,
    ));
    let silent_after: Vec<Option<Duration>> = s
        .groups
        .iter()
        .map(|g| match g.mode {
            GroupMode::Subscribe(_) => Some((g.interval * SILENT_INTERVALS).max(SILENT_MIN)),
            GroupMode::Poll => None,
        })
        .collect();
    let mut connected = false;
    let mut reconnects = 0u64;
    let mut last_refusal: Option<String> = None;
    let mut marked_bad = false;
    // Re-armed only when the next check moves earlier (the check verifies
    // when it fires): not one timer registration per session event.
    let mut silence_check = Deadline::new();
    let end = loop {
        // The next moment a subscription could be silent for too long (no
        // timer at all while disconnected or with only poll groups).
        let check_at = silent_after
            .iter()
            .enumerate()
            .filter_map(|(g, bound)| bound.map(|b| pending.silent_until(g, b, SILENT_INTERVALS).0))
            .min()
            .filter(|_| connected);
        // Just past the bound: silence is "more than" it.
        silence_check.set_at_most(check_at.map(|at| at + Duration::from_millis(1)));
        tokio::select! {
            () = ctx.shutdown.cancelled() => break End::Shutdown,
            event = stream.next() => match event {
                None => break End::Rebuild("the session loop ended".into()),
                Some(Err(code)) => {
                    conn.metrics.rebuild_failed.inc();
                    break End::Rebuild(format!("session failed: {code}"));
                }
                Some(Ok(SessionPollResult::Reconnected(mode))) => {
                    // Nothing is taken until the worker has verified the
                    // namespace indexes; it then re-triggers publishing (the
                    // publish trap: without that, no Publish is ever sent again).
                    pending.link_changed();
                    reconnects += 1;
                    if reconnects == 1 {
                        tracing::info!(device = %c.id, endpoint = %s.endpoint, policy = s.security_policy.name(), mode = ?s.security_mode, "connected");
                    } else {
                        conn.metrics.reconnects.inc();
                        tracing::info!(device = %c.id, ?mode, "OPC UA session re-established; publishing is re-triggered once its namespace indexes are verified");
                    }
                    connected = true;
                    marked_bad = false;
                    conn.metrics.connected.set(1);
                    last_refusal = None;
                    pending.reset_heard();
                    let _ = reconnected_tx.send(reconnects);
                }
                Some(Ok(SessionPollResult::ConnectionLost(code))) => {
                    tracing::warn!(device = %c.id, status = %code, "OPC UA connection lost");
                    pending.link_changed();
                    connected = false;
                    conn.metrics.connected.set(0);
                    pending.forget();
                    marked_bad = true;
                    if ctx.out.mark_bad(&conn.ids, Reason::CommFailure).await.is_err() {
                        break End::Shutdown;
                    }
                }
                Some(Ok(SessionPollResult::ReconnectFailed(code))) => {
                    let rejection = client::explain_rejection(code, &s.endpoint, &s.pki_dir, Some(&server_cert));
                    let why = rejection
                        .clone()
                        .unwrap_or_else(|| format!("{}: connect failed: {code}", s.endpoint));
                    if last_refusal.as_deref() != Some(why.as_str()) {
                        tracing::error!(device = %c.id, "{why}");
                        if rejection.is_some() {
                            conn.audit.record(
                                "opcua_certificate_rejected",
                                serde_json::json!({"device": c.id, "endpoint": s.endpoint, "status": code.sub_code().name(), "message": why}),
                            );
                        }
                        last_refusal = Some(why);
                    }
                    if !marked_bad {
                        marked_bad = true;
                        pending.forget();
                        if ctx.out.mark_bad(&conn.ids, Reason::CommFailure).await.is_err() {
                            break End::Shutdown;
                        }
                    }
                }
                Some(Ok(_)) => {}
            },
            result = workers.join_next() => {
                let end = match result {
                    Some(Ok(end)) => end,
                    Some(Err(e)) => format!("worker failed: {e}").into(),
                    None => "worker gone".into(),
                };
                if end.namespaces_moved {
                    conn.metrics.rebuild_namespaces.inc();
                } else {
                    conn.metrics.rebuild_failed.inc();
                }
                break End::Rebuild(end.why);
            }
            () = silence_check.elapsed() => {
                let now = Instant::now();
                let silent = silent_after.iter().enumerate().find_map(|(g, bound)| {
                    let (until, bound) = pending.silent_until(g, (*bound)?, SILENT_INTERVALS);
                    (now > until).then_some((g, bound))
                });
                if let Some((g, bound)) = silent {
                    conn.metrics.rebuild_silent.inc();
                    break End::Rebuild(format!(
                        "subscription of group {:?} silent for more than {bound:?} (no data, no keep-alive)",
                        s.groups[g].name
                    ));
                }
            }
            () = pending.wake.notified() => {}
        }
        let batch = pending.take();
        if !batch.is_empty() && ctx.out.send(batch).await.is_err() {
            break End::Shutdown;
        }
    };
    workers.abort_all();
    // A graceful close (bounded), so the server frees the session at once.
    let close = session.disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        tokio::pin!(close);
        loop {
            tokio::select! {
                _ = &mut close => break,
                ev = stream.next() => if ev.is_none() { break },
            }
        }
    })
    .await;
    end
}

/// Why the worker ended (the client is then rebuilt).
struct WorkerEnd {
    /// Namespace indexes in use name other namespaces now.
    namespaces_moved: bool,
    why: String,
}

impl WorkerEnd {
    fn moved(why: String) -> Self {
        Self {
            namespaces_moved: true,
            why,
        }
    }
}

impl From<String> for WorkerEnd {
    fn from(why: String) -> Self {
        Self {
            namespaces_moved: false,
            why,
        }
    }
}

impl From<&str> for WorkerEnd {
    fn from(why: &str) -> Self {
        why.to_string().into()
    }
}

/// Resolves namespaces, creates subscriptions and items, polls the poll
/// groups, retries refused nodes, and checks namespaces after reconnects.
/// Returns why the client must be rebuilt.
async fn worker(
    session: Arc<Session>,
    settings: OpcuaSettings,
    config: DeviceConfig,
    pending: Pending,
    mut reconnected: tokio::sync::watch::Receiver<u64>,
) -> WorkerEnd {
    if !session.wait_for_connection().await {
        return "the session never connected".into();
    }
    // The collector has counted this link (its epoch is what is verified).
    if reconnected.wait_for(|n| *n >= 1).await.is_err() {
        return "collector gone".into();
    }
    let epoch = pending.link_epoch();
    let targets: Vec<&NodeTarget> = config
        .points
        .iter()
        .filter_map(|p| p.opcua().map(|a| &a.target))
        .collect();
    let namespaces_of = || targets.iter().flat_map(|t| t.namespaces());
    let namespaces = match session.read_namespace_array().await {
        Ok(map) => (resolution(namespaces_of(), &map), map),
        Err(e) => return format!("reading the namespace array failed: {e}").into(),
    };
    let (namespaces, map) = namespaces;
    let table = pending.table.clone();
    // Resolve every point; the ones that cannot be resolved are bad alone.
    let nodes = match resolve_targets(&session, &targets, &namespaces, &pending, &config).await {
        Ok(nodes) => nodes,
        Err(e) => return format!("translating browse paths failed: {e}").into(),
    };
    // Every index in use (configured and in resolved node ids) with its
    // URI: what must not move while the library recreates items.
    let in_use = index_uris(
        nodes
            .iter()
            .flatten()
            .map(|n| n.namespace)
            .chain(namespaces.values().flatten().copied()),
        &map,
    );
    if !pending.verify(epoch) {
        return "the link changed while its namespace indexes were resolved".into();
    }
    let mut failed: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut created: Vec<Option<u32>> = vec![None; settings.groups.len()];
    for (g, group) in settings.groups.iter().enumerate() {
        let GroupMode::Subscribe(sub) = &group.mode else {
            continue;
        };
        let id = match session
            .create_subscription(
                group.interval,
                30,
                1,
                0,
                0,
                true,
                GroupCallback {
                    group: g,
                    pending: pending.clone(),
                },
            )
            .await
        {
            Ok(id) => id,
            Err(e) => {
                return format!(
                    "creating the subscription of group {:?} failed: {e}",
                    group.name
                )
                .into()
            }
        };
        created[g] = Some(id);
        note_granted(&session, &pending, g, id);
        let members: Vec<usize> = table.members[g]
            .iter()
            .copied()
            .filter(|&i| nodes[i].is_some())
            .collect();
        let refused = create_items(&session, id, sub, &members, &nodes, &pending).await;
        match refused {
            Ok(r) => {
                if !r.is_empty() {
                    failed.insert(g, r);
                }
            }
            Err(e) => {
                return format!(
                    "creating monitored items of group {:?} failed: {e}",
                    group.name
                )
                .into()
            }
        }
    }
    // Created over another link than the one verified: what the library
    // recreated there was never checked (and its first values were dropped).
    if pending.link_epoch() != epoch {
        return "the link changed while subscriptions were created".into();
    }
    pending.metrics_items_failed(failed.values().map(Vec::len).sum());
    let mut polls: Vec<(usize, tokio::time::Interval)> = settings
        .groups
        .iter()
        .enumerate()
        .filter(|(_, g)| g.mode == GroupMode::Poll)
        .map(|(g, group)| {
            let mut t = tokio::time::interval(group.interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            (g, t)
        })
        .collect();
    let mut retry = tokio::time::interval_at(Instant::now() + RETRY_FAILED, RETRY_FAILED);
    // Ticks missed while the branch was off (nothing failed, an unverified
    // link) are not made up in a burst.
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next_poll = async {
            if polls.is_empty() {
                std::future::pending::<usize>().await
            } else {
                let ticks = polls.iter_mut().map(|(g, t)| {
                    Box::pin(async move {
                        t.tick().await;
                        *g
                    })
                });
                futures_util::future::select_all(ticks).await.0
            }
        };
        tokio::select! {
            g = next_poll => {
                // Not over a link whose namespace indexes are unverified
                // (its answers would be dropped): polled after the check.
                if !pending.verified() {
                    continue;
                }
                let members: Vec<usize> = table.members[g].iter().copied().filter(|&i| nodes[i].is_some()).collect();
                read_group(&session, &members, &nodes, &pending).await;
            }
            // Not over an unverified link (its node ids may name other nodes).
            _ = retry.tick(), if !failed.is_empty() && pending.verified() => {
                let mut still = BTreeMap::new();
                for (g, points) in std::mem::take(&mut failed) {
                    let GroupMode::Subscribe(sub) = &settings.groups[g].mode else { continue };
                    let Some(id) = current_subscription(&session, &table, g, created[g]) else {
                        still.insert(g, points);
                        continue;
                    };
                    match create_items(&session, id, sub, &points, &nodes, &pending).await {
                        Ok(r) if !r.is_empty() => { still.insert(g, r); }
                        Ok(_) => {}
                        Err(_) => { still.insert(g, points); }
                    }
                }
                failed = still;
                pending.metrics_items_failed(failed.values().map(Vec::len).sum());
            }
            changed = reconnected.changed() => {
                if changed.is_err() {
                    return "collector gone".into();
                }
                let epoch = pending.link_epoch();
                match session.read_namespace_array().await {
                    Ok(map) => {
                        let now = resolution(namespaces_of(), &map);
                        if now != namespaces {
                            return WorkerEnd::moved(format!("namespace indexes changed on reconnect ({namespaces:?} → {now:?})"));
                        }
                        let now = index_uris(in_use.keys().copied(), &map);
                        if now != in_use {
                            return WorkerEnd::moved(format!("namespaces in use moved on reconnect ({in_use:?} → {now:?})"));
                        }
                    }
                    // Unverified indexes may name other nodes: start over.
                    Err(e) => return format!("re-reading the namespace array after a reconnect failed: {e}").into(),
                }
                // Else the link changed again meanwhile: its own turn comes.
                if pending.verify(epoch) {
                    session.trigger_publish_now();
                }
                // The library recreates a subscription the server lost, but
                // ignores the items it could not create again (keep-alives
                // then keep the group looking alive): those are retried
                // like any item refused at the start.
                // Recreated subscriptions may have been granted other periods.
                for (g, group) in settings.groups.iter().enumerate() {
                    if matches!(group.mode, GroupMode::Subscribe(_)) {
                        if let Some(id) = current_subscription(&session, &table, g, created[g]) {
                            note_granted(&session, &pending, g, id);
                        }
                    }
                }
                let (lost, emptied) = lost_items(&session, &table, &settings, &nodes, &failed);
                // A group with no item left cannot even be found again (its
                // subscription's id changed): the client is rebuilt.
                if let Some(&g) = emptied.first() {
                    return format!("every monitored item of group {:?} was lost on reconnect", settings.groups[g].name).into();
                }
                if !lost.is_empty() {
                    tracing::warn!(device = %config.id, items = lost.values().map(Vec::len).sum::<usize>(), "monitored items missing after a reconnect: creating them again");
                    for (g, points) in lost {
                        failed.entry(g).or_default().extend(points);
                    }
                    pending.metrics_items_failed(failed.values().map(Vec::len).sum());
                }
            }
        }
    }
}

/// The node id of every target (`None`, with a Bad reading for that point
/// alone, where there is none): nodes directly, browse paths through
/// `TranslateBrowsePathsToNodeIds` in chunks.
async fn resolve_targets(
    session: &Session,
    targets: &[&NodeTarget],
    namespaces: &crate::node::Resolution,
    pending: &Pending,
    config: &DeviceConfig,
) -> Result<Vec<Option<NodeId>>, opcua::types::Error> {
    let unresolved = |i: usize, status: StatusCode, why: &str| {
        tracing::warn!(device = %config.id, point = %config.points[i].id, target = %targets[i], "{why}");
        pending.mark_unmonitored(i, Quality::Bad(reason_of(status)));
    };
    let mut nodes: Vec<Option<NodeId>> = vec![None; targets.len()];
    let mut paths: Vec<(usize, BrowsePath)> = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        match target {
            NodeTarget::Node(node) => match resolve(node, namespaces) {
                Ok(id) => nodes[i] = Some(id),
                Err(why) => unresolved(i, StatusCode::BadNodeIdUnknown, &why),
            },
            NodeTarget::Path { root, path } => match browse_path(root, path, namespaces) {
                Ok(p) => paths.push((i, p)),
                Err(why) => unresolved(i, StatusCode::BadNoMatch, &why),
            },
        }
    }
    for chunk in paths.chunks(NODES_PER_READ) {
        let request: Vec<BrowsePath> = chunk.iter().map(|(_, p)| p.clone()).collect();
        let results = session.translate_browse_paths_to_node_ids(&request).await?;
        for ((i, _), r) in chunk.iter().zip(results) {
            let target = r
                .targets
                .into_iter()
                .flatten()
                .next()
                .filter(|_| r.status_code.is_good());
            match target {
                Some(t) => nodes[*i] = Some(t.target_id.node_id),
                None => unresolved(*i, r.status_code, "the browse path leads nowhere"),
            }
        }
    }
    Ok(nodes)
}

/// Creates the monitored items of `points` on subscription `id`; returns
/// the points the server refused (each marked Bad with its status).
async fn create_items(
    session: &Session,
    id: u32,
    sub: &adit_config::SubscribeSettings,
    points: &[usize],
    nodes: &[Option<NodeId>],
    pending: &Pending,
) -> Result<Vec<usize>, opcua::types::Error> {
    let filter = data_change_filter(sub);
    let mut refused = Vec::new();
    for chunk in points.chunks(ITEMS_PER_CALL) {
        let requests: Vec<MonitoredItemCreateRequest> = chunk
            .iter()
            .filter_map(|&i| {
                let node = nodes[i].clone()?;
                Some(MonitoredItemCreateRequest {
                    item_to_monitor: value_of(node),
                    monitoring_mode: MonitoringMode::Reporting,
                    requested_parameters: MonitoringParameters {
                        client_handle: PointTable::handle(i),
                        sampling_interval: sub.sampling_interval.as_secs_f64() * 1000.0,
                        filter: filter.clone(),
                        queue_size: sub.queue_size,
                        discard_oldest: true,
                    },
                })
            })
            .collect();
        let results = session
            .create_monitored_items(id, TimestampsToReturn::Both, requests)
            .await?;
        for (r, &i) in results.iter().zip(chunk) {
            let status = r.result.status_code;
            if !status.is_good() {
                refused.push(i);
                pending.mark_unmonitored(i, Quality::Bad(reason_of(status)));
            }
        }
    }
    Ok(refused)
}

/// Tells `pending` the keep-alive period the server granted group `g`'s
/// subscription `id` (its revised publishing interval × keep-alive count).
fn note_granted(session: &Session, pending: &Pending, g: usize, id: u32) {
    let granted = {
        let state = session.subscription_state().lock();
        state.get(id).map(|sub| {
            sub.publishing_interval()
                .saturating_mul(sub.max_keep_alive_count().max(1))
        })
    };
    if let Some(period) = granted {
        pending.set_granted(g, period);
    }
}

/// Per subscribed group, the points that should be monitored (their node
/// resolved, not already waiting for a retry) but have no item in the
/// library's subscription state; and the groups with no item at all.
fn lost_items(
    session: &Session,
    table: &PointTable,
    settings: &OpcuaSettings,
    nodes: &[Option<NodeId>],
    failed: &BTreeMap<usize, Vec<usize>>,
) -> (BTreeMap<usize, Vec<usize>>, Vec<usize>) {
    let mut present = vec![false; table.ids.len()];
    {
        let state = session.subscription_state().lock();
        for id in state.subscription_ids().unwrap_or_default() {
            let Some(sub) = state.get(id) else { continue };
            for m in sub.monitored_items() {
                if let Some(i) = table.point_of(m.client_handle()) {
                    present[i] = true;
                }
            }
        }
    }
    let mut lost = BTreeMap::new();
    let mut emptied = Vec::new();
    for (g, group) in settings.groups.iter().enumerate() {
        if !matches!(group.mode, GroupMode::Subscribe(_)) {
            continue;
        }

        let waiting = failed.get(&g);
        let missing: Vec<usize> = table.members[g]
            .iter()
            .copied()
            .filter(|&i| nodes[i].is_some() && !present[i])
            .filter(|i| !waiting.is_some_and(|w| w.contains(i)))
            .collect();
        if !missing.is_empty() {
            // Items were expected and not one of the group is left.
            if !table.members[g].iter().any(|&i| present[i]) {
                emptied.push(g);
            }
            lost.insert(g, missing);
        }
    }
    (lost, emptied)
}

/// The current id of group `g`'s subscription: found by its items' client
/// handles (ids change when the library recreates subscriptions).
fn current_subscription(
    session: &Session,
    table: &PointTable,
    g: usize,
    created: Option<u32>,
) -> Option<u32> {
    let state = session.subscription_state().lock();
    let ids = state.subscription_ids().unwrap_or_default();
    let by_items = ids.iter().copied().find(|id| {
        state.get(*id).is_some_and(|s| {
            s.monitored_items().any(|m| {
                table
                    .point_of(m.client_handle())
                    .is_some_and(|i| table.group[i] == g)
            })
        })
    });
    by_items.or(created.filter(|id| state.subscription_exists(*id)))
}

fn data_change_filter(sub: &adit_config::SubscribeSettings) -> ExtensionObject {
    let trigger = match sub.trigger {
        DataChangeTrigger::Status => opcua::types::DataChangeTrigger::Status,
        DataChangeTrigger::StatusValue => opcua::types::DataChangeTrigger::StatusValue,
        DataChangeTrigger::StatusValueTimestamp => {
            opcua::types::DataChangeTrigger::StatusValueTimestamp
        }
    };
    let (deadband_type, deadband_value) = match sub.deadband {
        None => (DeadbandType::None as u32, 0.0),
        Some(ServerDeadband::Absolute(v)) => (DeadbandType::Absolute as u32, v),
        Some(ServerDeadband::Percent(v)) => (DeadbandType::Percent as u32, v),
    };
    ExtensionObject::from_message(DataChangeFilter {
        trigger,
        deadband_type,
        deadband_value,
    })
}

fn value_of(node_id: NodeId) -> ReadValueId {
    ReadValueId {
        node_id,
        attribute_id: AttributeId::Value as u32,
        index_range: opcua::types::NumericRange::None,
        data_encoding: QualifiedName::null(),
    }
}

/// Reads `points` of a poll group; a failed Read marks them all Bad.
async fn read_group(
    session: &Session,
    points: &[usize],
    nodes: &[Option<NodeId>],
    pending: &Pending,
) {
    for chunk in points.chunks(NODES_PER_READ) {
        let ids: Vec<ReadValueId> = chunk
            .iter()
            .filter_map(|&i| nodes[i].clone().map(value_of))
            .collect();
        match session.read(&ids, TimestampsToReturn::Both, 0.0).await {
            Ok(values) => pending.on_read(chunk, &values),
            Err(e) => pending.on_read_failed(chunk, Quality::Bad(reason_of(e.status()))),
        }
    }
}
