//! Networks across nodes, the control plane: who is where.
//!
//! Every node has one cluster-scoped `MemifNode` object (group
//! [`API_GROUP`], named after the node, owned by its Node object so that
//! Kubernetes deletes it with the node) holding its underlay address and,
//! per network, the VNI, the mode and its pods' addresses (and memif MACs).
//! memifd publishes its own object from its attachments (server-side
//! apply, batched: an attach storm makes a few writes) and watches all of
//! them; from the others' objects it builds, per network, the table of
//! remote pods the dataplane encapsulates to ([`crate::dataplane::RemoteSet`]).
//! Without Kubernetes the same objects come from a peers file memifd reads
//! whenever it changes (`file`).
//!
//! Faults: the dataplane keeps the last tables while the source is away
//! (`memifctl show remote` and `status` say so); a deleted object's pods go
//! at once; a restart publishes the object again from the state file,
//! without the attachments that are gone. An address published by two
//! nodes of one network is a conflict: reported (log, metric, `show
//! remote`); each node keeps delivering its own, and of two remote ones the
//! node first by name wins.

mod file;
#[cfg(feature = "kube")]
mod kube;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::api::{
    AttachRequest, CrossNodeStatus, RemoteEndpointInfo, RemoteInfo, RemoteNetwork, RemotePeerInfo,
};
use crate::dataplane::{
    Dataplane, PeerCounters, RemoteEndpoint, RemotePeer, RemoteSet, UnderlayConfig,
};
use crate::mac::Mac;
use crate::memif::wire::Mode;

pub use file::parse_objects;

/// The custom resource's API group, version, kind and plural.
pub const API_GROUP: &str = "memif-cni.io";
pub const API_VERSION: &str = "v1alpha1";
pub const KIND: &str = "MemifNode";
pub const PLURAL: &str = "memifnodes";
/// The field manager of memifd's server-side applies.
pub const FIELD_MANAGER: &str = "memifd";

/// A node's object: its `spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    pub underlay: UnderlaySpec,
    #[serde(default)]
    pub networks: Vec<NetworkSpec>,
}

/// Where a node receives VXLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnderlaySpec {
    pub address: IpAddr,
    pub port: u16,
}

/// A network as one node serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSpec {
    pub name: String,
    pub vni: u32,
    /// `ethernet` or `ip`.
    pub mode: Mode,
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
}

/// A pod address (and, in ethernet networks, its memif's MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSpec {
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
}

/// The object of node `name` as the API (and the peers file) holds it.
pub fn object_json(name: &str, spec: &NodeSpec) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": format!("{API_GROUP}/{API_VERSION}"),
        "kind": KIND,
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// The memif MAC of an attachment: its spec's, or the one derived from
/// its key (what the dataplane uses).
pub fn port_mac(req: &AttachRequest) -> Mac {
    req.spec
        .mac
        .as_deref()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| Mac::derived(&req.key.to_string()))
}

/// This node's spec from its attachments (PBL attachments stay out: their
/// addresses are the pods' primary ones).
pub fn own_spec<'a>(
    underlay: UnderlaySpec,
    attachments: impl Iterator<Item = &'a AttachRequest>,
) -> NodeSpec {
    let mut nets: BTreeMap<String, NetworkSpec> = BTreeMap::new();
    for a in attachments.filter(|a| a.steer.is_none()) {
        let n = nets
            .entry(a.network.clone())
            .or_insert_with(|| NetworkSpec {
                name: a.network.clone(),
                vni: a.vni(),
                mode: a.spec.mode,
                endpoints: Vec::new(),
            });
        let mac = (a.spec.mode == Mode::Ethernet).then(|| port_mac(a));
        for ip in &a.ips {
            n.endpoints.push(EndpointSpec { ip: *ip, mac });
        }
    }
    for n in nets.values_mut() {
        n.endpoints.sort_by_key(|e| e.ip);
        n.endpoints.dedup_by_key(|e| e.ip);
    }
    NodeSpec {
        underlay,
        networks: nets.into_values().collect(),
    }
}

/// Where the other nodes are learned.
pub enum Source {
    /// The MemifNode objects of the Kubernetes API (and ours published
    /// there).
    #[cfg(feature = "kube")]
    Kube(::kube::Client),
    /// A peers file: a list of MemifNode objects.
    File(PathBuf),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            #[cfg(feature = "kube")]
            Source::Kube(_) => "kubernetes".into(),
            Source::File(p) => format!("file {}", p.display()),
        }
    }
}

/// What memifd needs to carry networks to other nodes.
pub struct CrossNode {
    /// This node's name (its object's).
    pub node: String,
    pub underlay: UnderlayConfig,
    pub source: Source,
}

#[derive(Default)]
struct State {
    /// The other nodes' specs and when each last changed.
    objects: BTreeMap<String, (NodeSpec, Instant)>,
    /// Ours.
    local: Option<NodeSpec>,
    source_ok: bool,
    source_error: Option<String>,
    synced: Option<Instant>,
    /// Per (network, node), kept across updates.
    counters: HashMap<(String, String), Arc<PeerCounters>>,
    /// Networks whose remote pods were handed to the dataplane.
    applied: BTreeSet<String>,
    /// Per network, the conflicts last found.
    conflicts: BTreeMap<String, Vec<String>>,
}

/// The cross-node control plane of one memifd.
pub struct Nodes {
    node: String,
    underlay: UnderlayConfig,
    source: String,
    dataplane: Arc<Dataplane>,
    state: Mutex<State>,
    /// Wakes the publisher (Kubernetes) when our spec changed.
    kick: Arc<Notify>,
}

impl Nodes {
    /// Starts the source's tasks (call inside a tokio runtime).
    pub fn start(cross: CrossNode, dataplane: Arc<Dataplane>) -> Arc<Nodes> {
        let nodes = Arc::new(Nodes {
            node: cross.node.clone(),
            underlay: cross.underlay,
            source: cross.source.describe(),
            dataplane,
            state: Mutex::new(State::default()),
            kick: Arc::new(Notify::new()),
        });
        tracing::info!(node = %nodes.node, underlay = %cross.underlay.local, source = %nodes.source,
            pod_mtu = cross.underlay.max_inner_ip(), "networks across nodes enabled");
        match cross.source {
            #[cfg(feature = "kube")]
            Source::Kube(client) => kube::spawn(nodes.clone(), client),
            Source::File(path) => file::spawn(nodes.clone(), path),
        }
        nodes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Our underlay as published.
    pub fn underlay_spec(&self) -> UnderlaySpec {
        UnderlaySpec {
            address: self.underlay.local.ip(),
            port: self.underlay.local.port(),
        }
    }

    /// Our attachments changed: the new spec is published (batched) and
    /// the conflicts with remote pods are checked again.
    pub fn set_local(&self, spec: NodeSpec) {
        let mut st = self.lock();
        if st.local.as_ref() == Some(&spec) {
            return;
        }
        st.local = Some(spec);
        self.recompute(&mut st);
        drop(st);
        self.kick.notify_one();
    }

    /// Our spec, if known yet.
    // Used by the Kubernetes watcher only.
    #[cfg_attr(not(feature = "kube"), allow(dead_code))]
    fn local(&self) -> Option<NodeSpec> {
        self.lock().local.clone()
    }

    /// The source answered: its objects (others' and possibly ours).
    fn replace_all(&self, objects: BTreeMap<String, NodeSpec>) {
        let mut st = self.lock();
        let now = Instant::now();
        let old = std::mem::take(&mut st.objects);
        for (name, spec) in objects {
            if name == self.node {
                continue;
            }
            let since = match old.get(&name) {
                Some((o, t)) if *o == spec => *t,
                _ => now,
            };
            st.objects.insert(name, (spec, since));
        }
        st.synced = Some(now);
        self.recompute(&mut st);
    }

    // Used by the Kubernetes watcher only.
    #[cfg_attr(not(feature = "kube"), allow(dead_code))]
    fn apply(&self, name: String, spec: NodeSpec) {
        if name == self.node {
            return;
        }
        let mut st = self.lock();
        if st.objects.get(&name).is_some_and(|(o, _)| *o == spec) {
            return;
        }
        tracing::info!(node = %name, networks = spec.networks.len(), "node object changed");
        st.objects.insert(name, (spec, Instant::now()));
        st.synced = Some(Instant::now());
        self.recompute(&mut st);
    }

    // Used by the Kubernetes watcher only.
    #[cfg_attr(not(feature = "kube"), allow(dead_code))]
    fn delete(&self, name: &str) {
        let mut st = self.lock();
        if st.objects.remove(name).is_some() {
            tracing::info!(node = %name, "node object deleted; its pods are gone from the tables");
            st.synced = Some(Instant::now());
            self.recompute(&mut st);
        }
    }

    fn source_result(&self, r: Result<(), String>) {
        let mut st = self.lock();
        match r {
            Ok(()) => {
                if !st.source_ok {
                    tracing::info!(source = %self.source, "node source reachable");
                }
                st.source_ok = true;
                st.source_error = None;
            }
            Err(e) => {
                if st.source_ok || st.source_error.is_none() {
                    tracing::warn!(source = %self.source, error = %e,
                        "node source unreachable; forwarding goes on with the last tables");
                }
                st.source_ok = false;
                st.source_error = Some(e);
            }
        }
    }

    /// Rebuilds every network's remote pods and hands them to the
    /// dataplane.
    fn recompute(&self, st: &mut State) {
        let local = st.local.clone();
        let local_nets: BTreeMap<&str, &NetworkSpec> = local
            .as_ref()
            .map(|l| l.networks.iter().map(|n| (n.name.as_str(), n)).collect())
            .unwrap_or_default();
        let mut sets: BTreeMap<String, RemoteSet> = BTreeMap::new();
        let mut conflicts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Who holds each address, per network (ours first).
        let mut owners: BTreeMap<(String, IpAddr), Vec<String>> = BTreeMap::new();
        for n in local_nets.values() {
            for e in &n.endpoints {
                owners
                    .entry((n.name.clone(), e.ip))
                    .or_default()
                    .push(self.node.clone());
            }
        }
        let objects: Vec<(String, NodeSpec)> = st
            .objects
            .iter()
            .map(|(k, (s, _))| (k.clone(), s.clone()))
            .collect();
        for (node, spec) in &objects {
            let addr = SocketAddr::new(spec.underlay.address, spec.underlay.port);
            for n in &spec.networks {
                // The VNI is the network's on the wire: a node that uses
                // another for the same network cannot be reached.
                if let Some(ours) = local_nets.get(n.name.as_str()) {
                    if ours.vni != n.vni {
                        conflicts.entry(n.name.clone()).or_default().push(format!(
                            "node {node} uses VNI {} for the network, this node {}",
                            n.vni, ours.vni
                        ));
                        continue;
                    }
                }
                let set = sets.entry(n.name.clone()).or_insert_with(|| RemoteSet {
                    vni: n.vni,
                    ..RemoteSet::default()
                });
                if set.vni != n.vni {
                    conflicts.entry(n.name.clone()).or_default().push(format!(
                        "node {node} uses VNI {} for the network, another node {}",
                        n.vni, set.vni
                    ));
                    continue;
                }
                let counters = st
                    .counters
                    .entry((n.name.clone(), node.clone()))
                    .or_default()
                    .clone();
                let peer = set.peers.len();
                set.peers.push(RemotePeer {
                    node: node.clone(),
                    addr,
                    counters,
                });
                for e in &n.endpoints {
                    let holders = owners.entry((n.name.clone(), e.ip)).or_default();
                    holders.push(node.clone());
                    if holders.len() > 1 {
                        // Ours, or an earlier node's by name: that one stays.
                        continue;
                    }
                    set.endpoints.push(RemoteEndpoint {
                        ip: e.ip,
                        peer,
                        mac: e.mac,
                    });
                }
            }
        }
        for ((net, ip), holders) in &owners {
            if holders.len() > 1 {
                conflicts
                    .entry(net.clone())
                    .or_default()
                    .push(format!("{ip} published by {}", holders.join(", ")));
            }
        }
        for (net, c) in &conflicts {
            if st.conflicts.get(net) != Some(c) {
                for line in c {
                    tracing::warn!(network = %net, conflict = %line, "address or VNI conflict across nodes");
                }
            }
        }
        st.conflicts = conflicts;
        // Networks that lost every remote pod get an empty set.
        let mut gone: Vec<String> = st
            .applied
            .iter()
            .filter(|n| !sets.contains_key(*n))
            .cloned()
            .collect();
        for net in gone.drain(..) {
            let vni = local_nets.get(net.as_str()).map_or(0, |n| n.vni);
            self.dataplane.set_remotes(
                &net,
                RemoteSet {
                    vni,
                    ..RemoteSet::default()
                },
            );
            st.applied.remove(&net);
        }
        for (net, set) in sets {
            st.applied.insert(net.clone());
            self.dataplane.set_remotes(&net, set);
        }
    }

    /// The cross-node part of `status`.
    pub fn status(&self) -> CrossNodeStatus {
        let st = self.lock();
        CrossNodeStatus {
            node: self.node.clone(),
            underlay: self.underlay.local,
            pod_mtu: self.underlay.max_inner_ip() as u32,
            source: self.source.clone(),
            source_ok: st.source_ok,
            source_error: st.source_error.clone(),
            synced_secs_ago: st.synced.map(|t| t.elapsed().as_secs()),
        }
    }

    /// Address conflicts, counted over all networks (for the metrics).
    pub fn conflict_count(&self) -> usize {
        self.lock().conflicts.values().map(Vec::len).sum()
    }

    /// `remote`: every network's peers and remote pods.
    pub fn info(&self) -> RemoteInfo {
        let status = self.status();
        let st = self.lock();
        let local = st.local.clone().unwrap_or(NodeSpec {
            underlay: self.underlay_spec(),
            networks: Vec::new(),
        });
        let mut names: BTreeSet<String> = local.networks.iter().map(|n| n.name.clone()).collect();
        names.extend(self.dataplane.remotes().into_iter().map(|(n, _)| n));
        let remotes: BTreeMap<String, Arc<RemoteSet>> =
            self.dataplane.remotes().into_iter().collect();
        let mut networks = Vec::new();
        for name in names {
            let ours = local.networks.iter().find(|n| n.name == name);
            let set = remotes.get(&name);
            let vni = ours.map(|n| n.vni).or(set.map(|s| s.vni)).unwrap_or(0);
            let peers = set
                .map(|s| {
                    s.peers
                        .iter()
                        .enumerate()
                        .map(|(i, p)| RemotePeerInfo {
                            node: p.node.clone(),
                            address: p.addr,
                            updated_secs_ago: st
                                .objects
                                .get(&p.node)
                                .map_or(0, |(_, t)| t.elapsed().as_secs()),
                            endpoints: s.endpoints.iter().filter(|e| e.peer == i).count(),
                            tx_packets: p.counters.tx_packets.load(Relaxed),
                            tx_bytes: p.counters.tx_bytes.load(Relaxed),
                            rx_packets: p.counters.rx_packets.load(Relaxed),
                            rx_bytes: p.counters.rx_bytes.load(Relaxed),
                            drops: p.counters.drops.load(Relaxed),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let endpoints = set
                .map(|s| {
                    s.endpoints
                        .iter()
                        .map(|e| RemoteEndpointInfo {
                            ip: e.ip,
                            node: s.peers[e.peer].node.clone(),
                            mac: e.mac,
                        })
                        .collect()
                })
                .unwrap_or_default();
            networks.push(RemoteNetwork {
                local: ours
                    .map(|n| n.endpoints.iter().map(|e| e.ip).collect())
                    .unwrap_or_default(),
                name: name.clone(),
                vni,
                peers,
                endpoints,
                conflicts: st.conflicts.get(&name).cloned().unwrap_or_default(),
            });
        }
        RemoteInfo {
            local_object: object_json(&self.node, &local),
            status,
            networks,
            underlay: self.dataplane.underlay_stats(),
        }
    }
}

/// This node's name: configured, else `$NODE_NAME` (the DaemonSet sets it
/// from the pod's node), else the host name.
pub fn node_name(configured: Option<&str>) -> String {
    configured
        .map(str::to_string)
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_else(|| "localhost".into())
}

/// Decides whether this memifd carries networks to other nodes and how:
/// `None` (networks end at this node) without a source of nodes; an error
/// when a source exists but the underlay cannot be found.
#[cfg(feature = "kube")]
pub async fn configure(
    cfg: &super::config::Config,
    kube: Option<::kube::Client>,
) -> Result<Option<CrossNode>, String> {
    if !cfg.cross_node {
        tracing::info!("networks across nodes disabled by configuration (crossNode false)");
        return Ok(None);
    }
    let source = match (&cfg.peers_file, kube) {
        (Some(p), _) => Source::File(p.clone()),
        (None, Some(c)) => match kube::served(&c).await {
            Ok(true) => Source::Kube(c),
            Ok(false) => {
                tracing::info!("the Kubernetes API has no MemifNode resource (manifests/crd.yaml): networks end at this node");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(error = %crate::logging::error_chain(&e),
                    "cannot ask the Kubernetes API for MemifNode objects: networks end at this node (restart memifd once the API answers)");
                return Ok(None);
            }
        },
        (None, None) => {
            tracing::info!("no peers file and no Kubernetes API: networks end at this node");
            return Ok(None);
        }
    };
    let want = cfg.underlay.address;
    let found = tokio::task::spawn_blocking(move || {
        let link = crate::link::LinkThread::open(None)?;
        link.call(move |nl| crate::link::route::underlay(nl, want))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| {
        format!(
            "cannot find the underlay: {}",
            crate::logging::error_chain(&e)
        )
    })?;
    let Some((address, mtu)) = found else {
        return Err(match want {
            Some(a) => format!("underlay.address {a} is on no interface of this node"),
            None => "no default route to take the underlay address from: set underlay.address in memifd's config".into(),
        });
    };
    let underlay = UnderlayConfig {
        local: SocketAddr::new(address, cfg.underlay.port),
        mtu: cfg.underlay.mtu.unwrap_or(mtu),
    };
    Ok(Some(CrossNode {
        node: node_name(cfg.node_name.as_deref()),
        underlay,
        source,
    }))
}

#[cfg(test)]
mod tests;
