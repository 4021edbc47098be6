//! What the API can ask of memifd: attach, detach, gc, get, list, status,
//! uplinks, pod annotations, and the checks a request passes first.
//!
//! Changes (attach, detach, gc) are serialized by the agent's `ops` lock,
//! an async mutex, so a key is bound once; the registry mutex is taken
//! only for bookkeeping. Kernel work (the dataplane's uplinks) runs on the
//! blocking pool, listener binding on the netns thread, and the state file
//! on the persistence task: nothing here blocks an async worker.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::binder::BindError;
use super::registry::{Entry, LiveConn};
use super::Agent;
use crate::api::{
    ApiError, AttachRequest, AttachmentInfo, AttachmentKey, ConnectionInfo, ErrorCode, MaxSpec,
    MemifSpec, PodRef, RegionInfo, RingState, StatusInfo, UplinkStatus, API_VERSION,
};
use crate::calico::interfaces::Violation;
use crate::dataplane::{IfCounters, PortConfig};
use crate::ids::AttachmentId;
use crate::logging::error_chain;
use crate::mac::Mac;
use crate::memif::master::{InterfaceConfig, Limits, RingInfo};
use crate::memif::shm::RingRef;
use crate::memif::socket::SocketAddr;
use crate::memif::wire::Mode;

pub(super) fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Agent {
    /// Registers the attachment with the dataplane as a port of its
    /// network (before its listener exists, so the port is known when the
    /// client connects). An uplink problem does not fail the attachment:
    /// pods of the network still reach each other; it is logged and shown
    /// by the dataplane.
    pub(super) async fn add_port(
        &self,
        req: &AttachRequest,
        id: AttachmentId,
        counters: &Arc<IfCounters>,
    ) {
        let mac = super::nodes::port_mac(req);
        let cfg = PortConfig {
            vni: req.vni(),
            id,
            network: req.network.clone(),
            mode: req.spec.mode,
            ips: req.ips.clone(),
            steer: req.steer.clone(),
            mac,
            counters: counters.clone(),
        };
        let dp = self.shared.dataplane.clone();
        let r = tokio::task::spawn_blocking(move || dp.add_port(cfg))
            .await
            .unwrap_or_else(|e| Err(format!("dataplane task failed: {e}")));
        if let Err(e) = r {
            tracing::warn!(attachment = %req.key, error = %e, "attached without a working uplink");
        }
    }

    /// Takes the port away from the dataplane (off the async workers).
    pub(super) async fn remove_port(&self, id: AttachmentId) {
        let dp = self.shared.dataplane.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || dp.remove_port(id)).await {
            tracing::error!(%id, error = %e, "dataplane task failed removing a port");
        }
    }

    /// Binds the request's listener in its netns and hands it to the memif
    /// control thread as socket `id`. Returns the listener's fd number.
    pub(super) async fn bind_and_serve(
        &self,
        req: &AttachRequest,
        id: AttachmentId,
    ) -> Result<i32, ApiError> {
        let addr = SocketAddr::parse(&req.socket_name())
            .map_err(|e| err(ErrorCode::InvalidSpec, format!("socket: {e}")))?;
        let listener = self
            .binder
            .bind(&req.netns, addr)
            .await
            .map_err(|e| match e {
                BindError::NoNetns(_) | BindError::Netns(_) => {
                    err(ErrorCode::Netns, error_chain(&e))
                }
                BindError::Bind { .. } => err(ErrorCode::Bind, error_chain(&e)),
                BindError::Gone => err(ErrorCode::Internal, error_chain(&e)),
            })?;
        let fd = listener.as_fd().as_raw_fd();
        self.server
            .add_socket(id, listener, vec![interface_config(req)]);
        Ok(fd)
    }

    /// Closes a listener and waits until it is closed, so the next attach
    /// (a CNI DEL then ADD) can bind the same name at once.
    async fn close_socket(&self, id: AttachmentId) {
        let ack = self.server.remove_socket_acked(id);
        let done = tokio::task::spawn_blocking(move || ack.recv_timeout(Duration::from_secs(5)))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        if !done {
            tracing::error!(
                socket_id = %id,
                "memif control thread did not close a listener in time"
            );
        }
    }

    /// Checks a request against the gate, then on its own and against the
    /// node's maximum ([`check_request`]).
    fn check(&self, req: &AttachRequest) -> Result<(), ApiError> {
        if !self.cfg.feature_gates.memif_enabled() {
            return Err(err(
                ErrorCode::Disabled,
                "memif is disabled on this node (feature gate memifEnabled is false); enable memif in the config for memif interfaces",
            ));
        }
        check_request(req, &self.cfg.max_interface_spec)
    }

    /// A network has one VNI, and a VNI one network, on this node.
    fn check_vni(&self, req: &AttachRequest) -> Result<(), ApiError> {
        let vni = req.vni();
        let reg = self.shared.lock();
        for e in reg.by_key.values() {
            let (n, v) = (&e.request.network, e.request.vni());
            if *n == req.network && v != vni {
                return Err(err(
                    ErrorCode::Conflict,
                    format!(
                        "network {} has VNI {v} on this node (attachment {}); this request asks for {vni}",
                        req.network, e.request.key
                    ),
                ));
            }
            if *n != req.network && v == vni {
                return Err(err(
                    ErrorCode::Conflict,
                    format!(
                        "VNI {vni} of network {} is network {n}'s on this node already (attachment {}): give one of them another vni",
                        req.network, e.request.key
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Hands this node's attachments to the cross-node control plane
    /// (which publishes them, batched).
    pub(super) fn publish_local(&self) {
        if let Some(n) = &self.nodes {
            let spec = {
                let reg = self.shared.lock();
                super::nodes::own_spec(n.underlay_spec(), reg.by_key.values().map(|e| &e.request))
            };
            n.set_local(spec);
        }
    }

    /// `remote`: networks across nodes.
    pub fn remote(&self) -> Result<crate::api::RemoteInfo, ApiError> {
        match &self.nodes {
            Some(n) => Ok(n.info()),
            None => Err(err(
                ErrorCode::NotFound,
                "this node carries no networks to other nodes (no peers file, or no MemifNode resource in the Kubernetes API)",
            )),
        }
    }

    /// `attach`: returns the existing attachment when identical.
    pub async fn attach(&self, req: AttachRequest) -> Result<AttachmentInfo, ApiError> {
        self.check(&req)?;
        let t0 = Instant::now();
        let op = self.ops.lock().await;
        {
            let reg = self.shared.lock();
            if let Some(e) = reg.by_key.get(&req.key) {
                return if e.request == req {
                    Ok(self.info(e))
                } else {
                    Err(err(
                        ErrorCode::Conflict,
                        format!(
                            "attachment {} exists with different parameters; detach it first",
                            req.key
                        ),
                    ))
                };
            }
        }
        self.check_vni(&req)?;
        let id = self.shared.lock().next_id;
        let counters = Arc::<IfCounters>::default();
        self.add_port(&req, id, &counters).await;
        let fd = match self.bind_and_serve(&req, id).await {
            Ok(fd) => fd,
            Err(e) => {
                self.remove_port(id).await;
                return Err(e);
            }
        };
        let g = {
            let mut reg = self.shared.lock();
            reg.insert(Entry {
                request: req.clone(),
                id,
                created: now_secs(),
                listener_fd: fd,
                counters,
                conn: None,
            });
            reg.generation += 1;
            reg.generation
        };
        drop(op);
        if let Err(e) = self.persist.wait(g).await {
            // Not durable: undo, so a restart cannot disagree with the
            // answer we give. The next successful write drops it from the
            // file too.
            let _op = self.ops.lock().await;
            {
                let mut reg = self.shared.lock();
                if reg.by_id.get(&id) == Some(&req.key) {
                    reg.remove(&req.key);
                }
                reg.generation += 1;
            }
            self.close_socket(id).await;
            self.remove_port(id).await;
            self.persist.kick();
            return Err(err(
                ErrorCode::Internal,
                format!("cannot persist state: {e}"),
            ));
        }
        self.publish_local();
        tracing::info!(attachment = %req.key, network = %req.network, netns = %req.netns.display(),
            socket = %req.socket_name(), socket_id = %id, mode = ?req.spec.mode,
            elapsed_us = t0.elapsed().as_micros() as u64, "attached");
        let reg = self.shared.lock();
        match reg.by_key.get(&req.key) {
            Some(e) if e.request == req => Ok(self.info(e)),
            _ => Err(err(
                ErrorCode::Conflict,
                format!("attachment {} was detached while attaching", req.key),
            )),
        }
    }

    /// `detach`: unknown attachments succeed (`Ok(false)`).
    pub async fn detach(&self, key: &AttachmentKey) -> Result<bool, ApiError> {
        let op = self.ops.lock().await;
        let (removed, g) = {
            let mut reg = self.shared.lock();
            let removed = reg.remove(key);
            if removed.is_some() {
                reg.generation += 1;
            }
            (removed, reg.generation)
        };
        let Some(e) = removed else {
            tracing::info!(attachment = %key, "detach of an unknown attachment: nothing to do");
            return Ok(false);
        };
        self.close_socket(e.id).await;
        self.remove_port(e.id).await;
        drop(op);
        self.publish_local();
        tracing::info!(attachment = %key, network = %e.request.network, "detached");
        self.persist.wait(g).await.map_err(|m| {
            err(
                ErrorCode::Internal,
                format!("detached, but cannot persist state: {m}"),
            )
        })?;
        Ok(true)
    }

    /// `gc`: drops the network's attachments not in `valid`.
    pub async fn gc(
        &self,
        network: &str,
        valid: &[AttachmentKey],
    ) -> Result<Vec<AttachmentKey>, ApiError> {
        let op = self.ops.lock().await;
        let (gone, g) = {
            let mut reg = self.shared.lock();
            let keys: Vec<AttachmentKey> = reg
                .by_key
                .values()
                .filter(|e| e.request.network == network && !valid.contains(&e.request.key))
                .map(|e| e.request.key.clone())
                .collect();
            let gone: Vec<Entry> = keys.iter().filter_map(|k| reg.remove(k)).collect();
            if !gone.is_empty() {
                reg.generation += 1;
            }
            (gone, reg.generation)
        };
        for e in &gone {
            self.close_socket(e.id).await;
            self.remove_port(e.id).await;
            tracing::info!(attachment = %e.request.key, network, "garbage-collected");
        }
        drop(op);
        if !gone.is_empty() {
            self.publish_local();
            self.persist
                .wait(g)
                .await
                .map_err(|m| err(ErrorCode::Internal, format!("cannot persist state: {m}")))?;
        }
        Ok(gone.into_iter().map(|e| e.request.key).collect())
    }

    pub fn get(&self, key: &AttachmentKey) -> Result<AttachmentInfo, ApiError> {
        let reg = self.shared.lock();
        reg.by_key
            .get(key)
            .map(|e| self.info(e))
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no attachment {key}")))
    }

    pub fn list(&self, network: Option<&str>) -> Vec<AttachmentInfo> {
        let reg = self.shared.lock();
        let mut v: Vec<AttachmentInfo> = reg
            .by_key
            .values()
            .filter(|e| network.is_none_or(|n| e.request.network == n))
            .map(|e| self.info(e))
            .collect();
        v.sort_by_key(|a| a.socket_id);
        v
    }

    /// Every network's uplink and its counters.
    pub fn uplinks(&self) -> Vec<UplinkStatus> {
        self.shared
            .dataplane
            .uplinks()
            .into_iter()
            .map(|u| UplinkStatus {
                network: u.network,
                device: u.device,
                error: u.error,
                stats: u.stats,
            })
            .collect()
    }

    pub fn status(&self) -> StatusInfo {
        let reg = self.shared.lock();
        StatusInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            api: API_VERSION,
            memif_enabled: self.cfg.feature_gates.memif_enabled(),
            feature_gates: self.cfg.feature_gates.0.clone(),
            max_spec: self.cfg.max_interface_spec,
            attachments: reg.by_key.len(),
            connected: reg.by_key.values().filter(|e| e.conn.is_some()).count(),
            kube: self.kube.is_some(),
            uptime_secs: self.started.elapsed().as_secs(),
            state_file: self.cfg.state_file(),
            cross_node: self.nodes.as_ref().map(|n| n.status()),
        }
    }

    /// The pod's memif-related annotations.
    pub async fn pod_annotations(
        &self,
        pod: &PodRef,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let Some(k) = &self.kube else {
            return Err(err(
                ErrorCode::Kube,
                "memifd has no Kubernetes API access (no kubeconfig or in-cluster config)",
            ));
        };
        k.annotations(pod)
            .await
            .map_err(|e| err(ErrorCode::Kube, e))
    }

    fn info(&self, e: &Entry) -> AttachmentInfo {
        AttachmentInfo {
            request: e.request.clone(),
            socket_id: e.id,
            listener_fd: e.listener_fd,
            created: e.created,
            connection: e.conn.as_ref().map(|c| connection_info(c, &e.request.spec)),
            stats: e.counters.snapshot(),
        }
    }
}

/// What `get` shows of a connection, with the rings read live.
fn connection_info(c: &LiveConn, spec: &MemifSpec) -> ConnectionInfo {
    let ring = |(i, ((r, fd), ints)): (usize, (&(RingInfo, i32), u64))| {
        let live = c
            .regions
            .get(r.region as usize)
            .and_then(|reg| RingRef::new(reg.clone(), r.offset, r.log2_size).ok());
        RingState {
            index: i as u16,
            region: r.region,
            offset: r.offset,
            size: 1 << r.log2_size,
            int_fd: *fd,
            head: live.as_ref().map_or(0, |l| l.head()),
            tail: live.as_ref().map_or(0, |l| l.tail()),
            flags: live.as_ref().map_or(0, |l| l.flags()),
            interrupts: ints,
        }
    };
    let load =
        |v: &[std::sync::atomic::AtomicU64]| v.iter().map(|a| a.load(Relaxed)).collect::<Vec<_>>();
    let s2m_ints = load(&c.rings.s2m_interrupts);
    let m2s_ints = load(&c.rings.m2s_interrupts);
    ConnectionInfo {
        peer_name: c.peer_name.clone(),
        mode: c.mode,
        conn_fd: c.control_fd,
        buffer_size: spec.buffer_size,
        regions: c
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| RegionInfo {
                index: i as u16,
                size: r.len() as u64,
                fd: r.fd().as_raw_fd(),
            })
            .collect(),
        s2m: c.s2m.iter().zip(s2m_ints).enumerate().map(ring).collect(),
        m2s: c.m2s.iter().zip(m2s_ints).enumerate().map(ring).collect(),
    }
}

/// The memif interface a request describes.
fn interface_config(req: &AttachRequest) -> InterfaceConfig {
    let s = &req.spec;
    InterfaceConfig {
        id: s.id,
        mode: s.mode,
        secret: s.secret.clone().filter(|x| !x.is_empty()),
        name: req.key.ifname.clone(),
        limits: Limits {
            max_s2m_rings: s.rx_queues,
            max_m2s_rings: s.tx_queues,
            max_log2_s2m_ring_size: s.rx_ring_size.trailing_zeros() as u8,
            max_log2_m2s_ring_size: s.tx_ring_size.trailing_zeros() as u8,
            ..Limits::default()
        },
    }
}

/// Checks an attach request on its own and against the node's maximum:
/// what memifd refuses before it touches anything (the gate aside). Pure,
/// so the request-line fuzzer runs exactly this.
pub fn check_request(req: &AttachRequest, max: &MaxSpec) -> Result<(), ApiError> {
    for (what, v) in [
        ("containerId", &req.key.container_id),
        ("ifname", &req.key.ifname),
        ("network", &req.network),
    ] {
        if v.is_empty() {
            return Err(err(ErrorCode::BadRequest, format!("{what} is empty")));
        }
    }
    if !req.netns.is_absolute() {
        return Err(err(
            ErrorCode::BadRequest,
            format!("netns {:?} is not an absolute path", req.netns),
        ));
    }
    if let Some(ranges) = &req.steer {
        crate::calico::ports::validate(ranges)
            .map_err(|e| err(ErrorCode::InvalidSpec, format!("steered ports: {e}")))?;
        if req.ips.is_empty() {
            return Err(err(
                ErrorCode::BadRequest,
                "a PBL attachment (steer) needs the pod's addresses",
            ));
        }
    }
    if let Some(v) = req.vni {
        if v == 0 || v > crate::packet::vxlan::MAX_VNI {
            return Err(err(
                ErrorCode::InvalidSpec,
                format!("vni {v} must be 1..=16777215"),
            ));
        }
    }
    if let Some(name) = &req.socket {
        SocketAddr::parse(name).map_err(|e| {
            err(
                ErrorCode::InvalidSpec,
                format!("socket {name:?} is not a memif socket address: {e}"),
            )
        })?;
    }
    check_spec(&req.spec, max)
}

/// Validates a spec on its own and against the node's maximum (the queue
/// and ring bounds are [`MaxSpec::check`], shared with the plugin; the
/// wording here is memifd's).
pub fn check_spec(s: &MemifSpec, max: &MaxSpec) -> Result<(), ApiError> {
    let bad = |m: String| Err(err(ErrorCode::InvalidSpec, m));
    if let Err(v) = max.check(s.rx_queues, s.tx_queues, s.rx_ring_size, s.tx_ring_size) {
        return bad(match v {
            Violation::RxQueues { value, max } => {
                format!("rx queues {value} must be 1..={max} (node maximum)")
            }
            Violation::TxQueues { value, max } => {
                format!("tx queues {value} must be 1..={max} (node maximum)")
            }
            Violation::RxRingSize { value, max } => {
                format!("rx ring size {value} must be a power of two in 2..={max} (node maximum)")
            }
            Violation::TxRingSize { value, max } => {
                format!("tx ring size {value} must be a power of two in 2..={max} (node maximum)")
            }
        });
    }
    if s.buffer_size < 128 || s.buffer_size > max.buffer_size {
        return bad(format!(
            "buffer size {} must be 128..={} (node maximum)",
            s.buffer_size, max.buffer_size
        ));
    }
    if s.mode == Mode::PuntInject {
        return bad("mode punt/inject is not served; use ethernet or ip".into());
    }
    if let Some(mac) = &s.mac {
        if mac.parse::<Mac>().is_err() {
            return bad(format!("mac {mac:?} is not of the form aa:bb:cc:dd:ee:ff"));
        }
    }
    if s.secret.as_ref().is_some_and(|x| x.len() > 24) {
        return bad("secret is longer than memif's 24 bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(socket: Option<&str>) -> AttachRequest {
        AttachRequest {
            key: AttachmentKey {
                container_id: "c1".into(),
                ifname: "memif-eth1".into(),
            },
            network: "blue".into(),
            netns: "/run/netns/pod".into(),
            socket: socket.map(String::from),
            spec: MemifSpec::default(),
            ips: Vec::new(),
            pod: None,
            steer: None,
            vni: None,
        }
    }

    /// Found by the `api_request` fuzz target: `"socket": ""` was accepted
    /// and only failed later, when the listener was made.
    #[test]
    fn a_socket_that_is_no_address_is_refused_up_front() {
        let max = MaxSpec::default();
        for bad in ["", "@", &"x".repeat(108)] {
            let e = check_request(&request(Some(bad)), &max).expect_err(bad);
            assert_eq!(e.code, ErrorCode::InvalidSpec, "{e:?}");
            assert!(e.message.contains("socket"), "{e:?}");
        }
        for good in [None, Some("@memif-eth1"), Some("/run/memif/pod.sock")] {
            check_request(&request(good), &max).unwrap();
        }
    }
}
