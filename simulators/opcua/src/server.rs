//! The simulator's server: async-opcua with a secure endpoint
//! (`Basic256Sha256`, `Aes128_Sha256_RsaOaep` and `Aes256_Sha256_RsaPss`, Sign and
//! `SignAndEncrypt`), optionally an insecure one, anonymous and user/password
//! identities, raised limits (the library allows 1,000 monitored items and
//! 20 queued notifications by default), and a task that moves the values.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use adit_sim_modbus::scenario::TunnelModel;
use opcua::crypto::SecurityPolicy;
use opcua::nodes::Variable;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{simple_node_manager, SimpleNodeManager};
use opcua::server::{ServerBuilder, ServerHandle, ServerUserToken, ANONYMOUS_USER_TOKEN_ID};
use opcua::types::{
    DataValue, DateTime, MessageSecurityMode, NodeId, ObjectId, QualifiedName, StatusCode, Variant,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::variables::{
    bulk_name, mode_text, node_name, value_of, BORES, BORE_VARIABLES, CLOCK_ID,
    DECOY_NAMESPACE_URI, DECOY_VALUE, MODE_ID, NAMESPACE_URI,
};

/// How the simulator serves.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Own certificate, trusted clients (`trusted/`) and rejected ones.
    pub pki_dir: PathBuf,
    /// How often values move.
    pub update_interval: Duration,
    /// Extra `Load.<i>` doubles that change on every update (load tests).
    pub bulk_variables: usize,
    /// Offer the `None` endpoint (anonymous) beside the secure ones.
    pub offer_insecure: bool,
    /// Offer the secure endpoints (false with `offer_insecure`: a server
    /// that knows only `None`).
    pub offer_secure: bool,
    /// Trust every client certificate (demo); else only those in `trusted/`.
    pub trust_clients: bool,
    /// Users for username/password identity.
    pub users: Vec<(String, String)>,
    /// Host name advertised in endpoint URLs (and in the certificate).
    pub host: String,
    /// Register a decoy namespace ([`DECOY_NAMESPACE_URI`]) before the
    /// tunnel's, so the tunnel's index moves up by one, and serve the same
    /// node ids there with the constant [`DECOY_VALUE`]: a server whose
    /// namespace table changed (an upgrade, a plugin loaded in another
    /// order). A client that kept the old indexes reads the decoys.
    pub decoy_namespace: bool,
}

impl SimOptions {
    pub fn new(pki_dir: impl Into<PathBuf>) -> Self {
        Self {
            pki_dir: pki_dir.into(),
            update_interval: Duration::from_secs(1),
            bulk_variables: 0,
            offer_insecure: false,
            offer_secure: true,
            trust_clients: true,
            users: Vec::new(),
            host: "127.0.0.1".into(),
            decoy_namespace: false,
        }
    }
}

/// Faults on command.
#[derive(Default)]
struct Faults {
    /// Variables served with this status (value kept).
    bad: HashMap<String, StatusCode>,
    /// Variables that stop changing.
    stuck: HashSet<String>,
}

/// A running simulator.
pub struct OpcuaSim {
    handle: ServerHandle,
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    updates: Arc<AtomicU64>,
    namespace_index: u16,
    server_task: JoinHandle<()>,
    tick_task: JoinHandle<()>,
}

impl OpcuaSim {
    /// Starts serving on `listener` (bind port 0 in tests).
    pub fn start(options: &SimOptions, listener: TcpListener) -> Result<Self, String> {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let builder = build(options, addr.port());
        let (server, handle) = builder.build()?;
        let manager = handle
            .node_managers()
            .get_by_name::<SimpleNodeManager>("tunnel")
            .ok_or("the simulator's node manager is missing")?;
        if options.decoy_namespace {
            let decoy = handle
                .node_managers()
                .get_by_name::<SimpleNodeManager>("decoy")
                .ok_or("the decoy node manager is missing")?;
            let ns = handle
                .get_namespace_index(DECOY_NAMESPACE_URI)
                .ok_or("the decoy namespace is missing")?;
            add_decoys(&decoy, ns);
        }
        let namespace_index = handle
            .get_namespace_index(NAMESPACE_URI)
            .ok_or("the simulator's namespace is missing")?;
        let ids = add_variables(&manager, namespace_index, options.bulk_variables);
        let faults = Arc::new(Mutex::new(Faults::default()));
        let updates = Arc::new(AtomicU64::new(0));
        let server_task = tokio::spawn(async move {
            if let Err(e) = server.run_with(listener).await {
                tracing::warn!(error = %e, "OPC UA simulator stopped");
            }
        });
        let tick_task = tokio::spawn(tick(
            manager,
            handle.clone(),
            ids,
            faults.clone(),
            updates.clone(),
            options.update_interval,
        ));
        Ok(Self {
            handle,
            addr,
            faults,
            updates,
            namespace_index,
            server_task,
            tick_task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `opc.tcp://127.0.0.1:PORT/`.
    pub fn endpoint(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/", self.addr.port())
    }

    /// The index the server gave [`NAMESPACE_URI`].
    pub fn namespace_index(&self) -> u16 {
        self.namespace_index
    }

    /// Value updates applied so far (ground truth for tests).
    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    /// Serves `name` (a node id string) with `status` from now on.
    pub fn set_bad(&self, name: &str, status: StatusCode) {
        self.lock().bad.insert(name.to_string(), status);
    }

    /// Stops (or resumes) changes of `name`.
    pub fn set_stuck(&self, name: &str, stuck: bool) {
        let mut f = self.lock();
        if stuck {
            f.stuck.insert(name.to_string());
        } else {
            f.stuck.remove(name);
        }
    }

    /// Clears every fault.
    pub fn clear_faults(&self) {
        *self.lock() = Faults::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops serving and waits until the port is closed.
    pub async fn shutdown(self) {
        self.tick_task.abort();
        self.handle.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server_task).await;
    }
}

fn build(options: &SimOptions, port: u16) -> ServerBuilder {
    let mut token_ids: Vec<String> = vec![ANONYMOUS_USER_TOKEN_ID.to_string()];
    let mut builder = ServerBuilder::new();
    if options.decoy_namespace {
        builder = builder.with_node_manager(simple_node_manager(
            NamespaceMetadata {
                namespace_uri: DECOY_NAMESPACE_URI.to_string(),
                ..Default::default()
            },
            "decoy",
        ));
    }
    builder = builder
        .application_name("adit OPC UA simulator")
        .application_uri("urn:adit:sim:opcua")
        .product_uri("urn:adit:sim:opcua")
        .create_sample_keypair(true)
        .pki_dir(options.pki_dir.clone())
        .trust_client_certs(options.trust_clients)
        .host(options.host.clone())
        .port(port)
        .discovery_urls(vec![format!("opc.tcp://{}:{port}/", options.host)])
        .with_node_manager(simple_node_manager(
            NamespaceMetadata {
                namespace_uri: NAMESPACE_URI.to_string(),
                ..Default::default()
            },
            "tunnel",
        ));
    for (i, (user, pass)) in options.users.iter().enumerate() {
        let id = format!("user{i}");
        builder = builder.add_user_token(
            &id,
            ServerUserToken::user_pass(user.as_str(), pass.as_str()),
        );
        token_ids.push(id);
    }
    let ids: Vec<&str> = token_ids.iter().map(String::as_str).collect();
    let secure = [
        ("b256s256", SecurityPolicy::Basic256Sha256),
        ("aes128", SecurityPolicy::Aes128Sha256RsaOaep),
        ("aes256", SecurityPolicy::Aes256Sha256RsaPss),
    ];
    let secure = if options.offer_secure {
        &secure[..]
    } else {
        &[]
    };
    for &(name, policy) in secure {
        for (suffix, mode) in [
            ("sign", MessageSecurityMode::Sign),
            ("sign_encrypt", MessageSecurityMode::SignAndEncrypt),
        ] {
            builder =
                builder.add_endpoint(format!("{name}_{suffix}"), ("/", policy, mode, &ids[..]));
        }
    }
    if options.offer_insecure {
        builder = builder.add_endpoint(
            "none",
            (
                "/",
                SecurityPolicy::None,
                MessageSecurityMode::None,
                &ids[..],
            ),
        );
    }
    let limits = builder.limits_mut();
    limits.subscriptions.max_monitored_items_per_sub = 100_000;
    limits.subscriptions.max_queued_notifications = 1_000;
    limits.operational.max_monitored_items_per_call = 10_000;
    limits.operational.max_nodes_per_read = 10_000;
    limits.max_message_size = 64 * 1024 * 1024;
    limits.max_array_length = 1_000_000;
    limits.max_chunk_count = 1024;
    builder
}

/// The decoys: every variable id of a bore, a constant double.
fn add_decoys(manager: &SimpleNodeManager, ns: u16) {
    let mut space = manager.address_space().write();
    let root = NodeId::new(ns, "Decoy");
    space.add_folder(
        &root,
        QualifiedName::new(ns, "Decoy"),
        "Decoy",
        &ObjectId::ObjectsFolder.into(),
    );
    let vars = BORES
        .iter()
        .flat_map(|bore| BORE_VARIABLES.iter().map(move |spec| node_name(bore, spec)))
        .map(|name| {
            let id = NodeId::new(ns, name.clone());
            Variable::new(
                &id,
                QualifiedName::new(ns, name.as_str()),
                name,
                Variant::Double(DECOY_VALUE),
            )
        })
        .collect();
    space.add_variables(vars, &root);
}

/// Variables by node id, with what moves them.
struct Served {
    bore_vars: Vec<(NodeId, usize, usize)>,
    bulk: Vec<NodeId>,
    mode: NodeId,
    clock: NodeId,
}

fn add_variables(manager: &SimpleNodeManager, ns: u16, bulk: usize) -> Served {
    let mut space = manager.address_space().write();
    let root = NodeId::new(ns, "Tunnel");
    // Browse names in the simulator's namespace (browse paths name it by URI).
    let q = |name: &str| QualifiedName::new(ns, name);
    space.add_folder(
        &root,
        q("Tunnel"),
        "Tunnel",
        &ObjectId::ObjectsFolder.into(),
    );
    let model = TunnelModel::new(0.0);
    let mut bore_vars = Vec::new();
    for (b, bore) in BORES.iter().enumerate() {
        let folder = NodeId::new(ns, format!("Tunnel.{bore}"));
        space.add_folder(&folder, q(bore), *bore, &root);
        for (v, spec) in BORE_VARIABLES.iter().enumerate() {
            let id = NodeId::new(ns, node_name(bore, spec));
            let variable = Variable::new(&id, q(spec.name), spec.name, value_of(&model, spec));
            space.add_variables(vec![variable], &folder);
            bore_vars.push((id, b, v));
        }
    }
    let mode = NodeId::new(ns, MODE_ID);
    let clock = NodeId::new(ns, CLOCK_ID);
    space.add_variables(
        vec![
            Variable::new(&mode, q("Mode"), "Mode", Variant::String("normal".into())),
            Variable::new(
                &clock,
                q("Clock"),
                "Clock",
                Variant::DateTime(Box::new(DateTime::now())),
            ),
        ],
        &root,
    );
    let mut bulk_ids = Vec::with_capacity(bulk);
    if bulk > 0 {
        let folder = NodeId::new(ns, "Load");
        space.add_folder(&folder, q("Load"), "Load", &root);
        let vars = (0..bulk)
            .map(|i| {
                let id = NodeId::new(ns, bulk_name(i));
                bulk_ids.push(id.clone());
                Variable::new(&id, q(&bulk_name(i)), bulk_name(i), Variant::Double(0.0))
            })
            .collect();
        space.add_variables(vars, &folder);
    }
    Served {
        bore_vars,
        bulk: bulk_ids,
        mode,
        clock,
    }
}

async fn tick(
    manager: Arc<SimpleNodeManager>,
    handle: ServerHandle,
    served: Served,
    faults: Arc<Mutex<Faults>>,
    updates: Arc<AtomicU64>,
    every: Duration,
) {
    let mut models = [TunnelModel::new(0.0), TunnelModel::new(1.7)];
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u64;
    loop {
        timer.tick().await;
        round += 1;
        for m in &mut models {
            m.step(every.as_secs_f64());
        }
        let now = DateTime::now();
        let mut values: Vec<(&NodeId, DataValue)> =
            Vec::with_capacity(served.bore_vars.len() + served.bulk.len() + 2);
        {
            let f = faults.lock().unwrap_or_else(PoisonError::into_inner);
            for (id, bore, v) in &served.bore_vars {
                let name = id.identifier.to_string();
                let name = name.trim_start_matches("s=");
                if f.stuck.contains(name) {
                    continue;
                }
                let value = value_of(&models[*bore], &BORE_VARIABLES[*v]);
                let mut dv = DataValue::new_at(value, now);
                if let Some(status) = f.bad.get(name) {
                    dv.status = Some(*status);
                }
                values.push((id, dv));
            }
        }
        values.push((
            &served.mode,
            DataValue::new_at(Variant::String(mode_text(&models[0]).into()), now),
        ));
        values.push((
            &served.clock,
            DataValue::new_at(Variant::DateTime(Box::new(now)), now),
        ));
        for (i, id) in served.bulk.iter().enumerate() {
            let v = (round as f64) + i as f64 * 0.001;
            values.push((id, DataValue::new_at(Variant::Double(v), now)));
        }
        if let Err(e) = manager.set_values(
            handle.subscriptions(),
            values.into_iter().map(|(id, dv)| (id, None, dv)),
        ) {
            tracing::warn!(error = %e, "simulator could not set values");
        }
        updates.fetch_add(1, Ordering::Relaxed);
    }
}
