//! memifd, the node agent: the attachment registry behind the API, the
//! memif control thread, persistence, restore on start, Kubernetes lookups
//! and metrics.
//!
//! Threads: tokio runs the API and persistence; one `memif-control` thread
//! accepts memif clients and runs their handshakes for every listener; one
//! `netns` thread binds listeners inside pod namespaces; dataplane workers
//! own the rings of connected interfaces.

pub mod api_server;
pub mod binder;
pub mod config;
pub mod kube;
pub mod metrics;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};

use crate::api::{
    ApiError, AttachRequest, AttachmentInfo, AttachmentKey, ConnectionInfo, ErrorCode, MemifSpec,
    PodRef, RegionInfo, RingState, StatusInfo, UplinkStatus, API_VERSION,
};
use crate::dataplane::{port_mac, Attached, Dataplane, IfCounters, PortConfig, RingCounters};
use crate::memif::master::{InterfaceConfig, Limits, MasterConnection, RingInfo};
use crate::memif::server::{Server, ServerConfig, ServerEvent, SocketId};
use crate::memif::shm::{Region, RingRef};
use crate::memif::socket::SocketAddr;
use crate::memif::wire::Mode;

use binder::{BindError, Binder};
use config::Config;
use state::{Loaded, Persisted};

/// Where pod annotations come from (the Kubernetes API in memifd; a fake
/// in tests). Errors are one line with their causes.
pub trait AnnotationSource: Send + Sync {
    fn annotations<'a>(&'a self, pod: &'a PodRef) -> AnnotationsFuture<'a>;
}

/// What [`AnnotationSource::annotations`] returns.
pub type AnnotationsFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<BTreeMap<String, String>, String>> + Send + 'a>,
>;

/// Fatal start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start a thread or fd")]
    Io(#[source] std::io::Error),
    #[error("cannot start the memif control thread")]
    Server(#[source] crate::memif::socket::SocketError),
}

fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
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

/// A connected client, as the control plane remembers it.
struct LiveConn {
    peer_name: String,
    mode: Mode,
    control_fd: i32,
    regions: Arc<[Arc<Region>]>,
    s2m: Vec<(RingInfo, i32)>,
    m2s: Vec<(RingInfo, i32)>,
    rings: Arc<RingCounters>,
}

struct Entry {
    request: AttachRequest,
    socket_id: SocketId,
    created: u64,
    listener_fd: i32,
    counters: Arc<IfCounters>,
    conn: Option<LiveConn>,
}

#[derive(Default)]
struct Registry {
    by_key: HashMap<AttachmentKey, Entry>,
    by_socket: HashMap<SocketId, AttachmentKey>,
    next_socket: SocketId,
    /// Bumped on every change that must reach the state file.
    generation: u64,
}

impl Registry {
    fn persisted(&self) -> Vec<Persisted> {
        let mut v: Vec<Persisted> = self
            .by_key
            .values()
            .map(|e| Persisted {
                request: e.request.clone(),
                socket_id: e.socket_id,
                created: e.created,
            })
            .collect();
        v.sort_by_key(|p| p.socket_id);
        v
    }

    fn insert(&mut self, e: Entry) {
        self.next_socket = self.next_socket.max(e.socket_id.wrapping_add(1));
        self.by_socket.insert(e.socket_id, e.request.key.clone());
        self.by_key.insert(e.request.key.clone(), e);
    }

    fn remove(&mut self, key: &AttachmentKey) -> Option<Entry> {
        let e = self.by_key.remove(key)?;
        self.by_socket.remove(&e.socket_id);
        Some(e)
    }

    fn entry_by_socket(&mut self, sock: SocketId) -> Option<&mut Entry> {
        let key = self.by_socket.get(&sock)?;
        self.by_key.get_mut(key)
    }
}

/// State shared with the memif control thread's event sink.
struct Shared {
    reg: Mutex<Registry>,
    dataplane: Dataplane,
    server: OnceLock<Weak<Server>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain data behind; keep
        // serving rather than poisoning every later request.
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_event(&self, sock: SocketId, ev: ServerEvent) {
        match ev {
            ServerEvent::Connected(c) => self.on_connected(sock, *c),
            ServerEvent::Disconnected { id, reason, .. } => {
                let mut reg = self.lock();
                if let Some(e) = reg.entry_by_socket(sock) {
                    e.conn = None;
                    e.counters.disconnects.fetch_add(1, Relaxed);
                    tracing::info!(attachment = %e.request.key, network = %e.request.network, id, %reason, "memif client disconnected");
                }
                drop(reg);
                self.dataplane.disconnect(sock);
            }
            ServerEvent::Rejected { id, reason } => {
                let mut reg = self.lock();
                if let Some(e) = reg.entry_by_socket(sock) {
                    e.counters.errors.fetch_add(1, Relaxed);
                    tracing::warn!(attachment = %e.request.key, ?id, %reason, "memif client refused");
                }
            }
        }
    }

    fn on_connected(&self, sock: SocketId, c: MasterConnection) {
        let mut reg = self.lock();
        let Some(e) = reg.entry_by_socket(sock) else {
            // Detached while the handshake finished: dropping the queues is
            // all there is to do; the listener is already gone.
            return;
        };
        let fds = |q: &dyn Fn(usize) -> i32, n: usize| (0..n).map(q).collect::<Vec<i32>>();
        let s2m_fds = fds(&|i| c.rx[i].event_fd().as_raw_fd(), c.rx.len());
        let m2s_fds = fds(&|i| c.tx[i].event_fd().as_raw_fd(), c.tx.len());
        let rings = Arc::new(RingCounters::new(c.rx.len(), c.tx.len()));
        e.conn = Some(LiveConn {
            peer_name: c.peer_name.clone(),
            mode: c.mode,
            control_fd: c.control_fd,
            regions: c.regions.clone(),
            s2m: c.s2m_rings.iter().copied().zip(s2m_fds).collect(),
            m2s: c.m2s_rings.iter().copied().zip(m2s_fds).collect(),
            rings: rings.clone(),
        });
        e.counters.connects.fetch_add(1, Relaxed);
        tracing::info!(attachment = %e.request.key, network = %e.request.network, peer = %c.peer_name,
            rx_queues = c.rx.len(), tx_queues = c.tx.len(), "memif client connected");
        let a = Attached {
            key: sock,
            rx_mode: e.request.spec.rx_mode,
            counters: e.counters.clone(),
            rings,
            conn: c,
        };
        // Still holding the registry: the API shows "connected" only once
        // the worker polls the rings (connect waits for it), so frames to
        // a pod reported connected are delivered. Workers never take the
        // registry lock (see `on_bad_peer`), so this cannot deadlock.
        self.dataplane.connect(a);
        drop(reg);
    }

    /// Called on a dataplane worker: must not take the registry lock.
    fn on_bad_peer(&self, sock: SocketId, id: u32, reason: String) {
        if let Some(server) = self.server.get().and_then(Weak::upgrade) {
            server.disconnect(sock, id, reason);
        }
    }
}

use std::sync::atomic::Ordering::Relaxed;

#[derive(Clone, Default)]
struct PersistState {
    durable: u64,
    failed: Option<(u64, String)>,
}

/// memifd's core: everything the API can ask for.
pub struct Agent {
    cfg: Config,
    shared: Arc<Shared>,
    server: Arc<Server>,
    binder: Binder,
    /// Serializes changes (attach, detach, gc) so a key is bound once.
    ops: tokio::sync::Mutex<()>,
    persist_kick: Arc<Notify>,
    persisted: watch::Receiver<PersistState>,
    kube: Option<Arc<dyn AnnotationSource>>,
    started: Instant,
}

impl Agent {
    /// Starts the threads and the persistence task (call inside a tokio
    /// runtime), restores the state file, and returns the agent ready to
    /// serve. `kube` is the Kubernetes lookup, if any.
    pub async fn start(
        cfg: Config,
        kube: Option<Arc<dyn AnnotationSource>>,
    ) -> Result<Arc<Agent>, StartError> {
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            let w = weak.clone();
            let on_bad: crate::dataplane::OnBadPeer = Arc::new(move |k, id, reason| {
                if let Some(s) = w.upgrade() {
                    s.on_bad_peer(k, id, reason)
                }
            });
            Shared {
                reg: Mutex::new(Registry::default()),
                dataplane: Dataplane::spawn(cfg.workers, on_bad).expect("dataplane workers start"),
                server: OnceLock::new(),
            }
        });
        let sink_shared = Arc::downgrade(&shared);
        let server = Arc::new(
            Server::spawn(
                ServerConfig {
                    name: "memifd".into(),
                    limits: Limits::default(),
                    handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
                    max_pending: 64,
                },
                Box::new(move |sock, ev| {
                    if let Some(s) = sink_shared.upgrade() {
                        s.on_event(sock, ev)
                    }
                }),
            )
            .map_err(StartError::Server)?,
        );
        let _ = shared.server.set(Arc::downgrade(&server));
        let binder = Binder::spawn().map_err(StartError::Io)?;
        let (ptx, prx) = watch::channel(PersistState::default());
        let kick = Arc::new(Notify::new());
        let agent = Arc::new(Agent {
            cfg,
            shared,
            server,
            binder,
            ops: tokio::sync::Mutex::new(()),
            persist_kick: kick.clone(),
            persisted: prx,
            kube,
            started: Instant::now(),
        });
        // Rules of a memifd that crashed; then ours come back in restore.
        agent.shared.dataplane.clean_stale_steering();
        agent.restore().await;
        tokio::spawn(persister(Arc::downgrade(&agent), kick, ptx));
        Ok(agent)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Re-creates every persisted attachment whose netns still exists.
    async fn restore(&self) {
        let path = self.cfg.state_file();
        let t0 = Instant::now();
        let items = match state::load(&path) {
            Loaded::Missing => {
                tracing::info!(state = %path.display(), "no state file; starting empty");
                return;
            }
            Loaded::MovedAside { to, reason } => {
                tracing::error!(state = %path.display(), moved_to = %to.display(), %reason,
                    "state file unusable; moved aside, starting empty");
                return;
            }
            Loaded::Found(v) => v,
        };
        let total = items.len();
        let mut restored = 0;
        for p in items {
            let key = p.request.key.clone();
            if !binder::netns_exists(&p.request.netns) {
                tracing::info!(attachment = %key, netns = %p.request.netns.display(),
                    "dropping attachment: its netns is gone");
                continue;
            }
            let counters = Arc::<IfCounters>::default();
            self.add_port(&p.request, p.socket_id, &counters);
            match self.bind_and_serve(&p.request, p.socket_id).await {
                Ok(fd) => {
                    self.shared.lock().insert(Entry {
                        request: p.request,
                        socket_id: p.socket_id,
                        created: p.created,
                        listener_fd: fd,
                        counters,
                        conn: None,
                    });
                    restored += 1;
                }
                Err(e) => {
                    self.shared.dataplane.remove_port(p.socket_id);
                    tracing::warn!(attachment = %key, error = %e.message, "dropping attachment: cannot restore its listener")
                }
            }
        }
        let snapshot = self.shared.lock().persisted();
        if restored != total {
            if let Err(e) = state::save(&path, &snapshot) {
                tracing::error!(state = %path.display(), error = %e, "cannot rewrite the state file");
            }
        }
        tracing::info!(
            restored,
            dropped = total - restored,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "state restored"
        );
    }

    /// Registers the attachment with the dataplane as a port of its
    /// network (before its listener exists, so the port is known when the
    /// client connects). An uplink problem does not fail the attachment:
    /// pods of the network still reach each other; it is logged and shown
    /// by the dataplane.
    fn add_port(&self, req: &AttachRequest, sid: SocketId, counters: &Arc<IfCounters>) {
        let cfg = PortConfig {
            key: sid,
            network: req.network.clone(),
            mode: req.spec.mode,
            ips: req.ips.clone(),
            steer: req.steer.clone(),
            mac: port_mac(req.spec.mac.as_deref(), &req.key.to_string()),
            counters: counters.clone(),
        };
        if let Err(e) = self.shared.dataplane.add_port(cfg) {
            tracing::warn!(attachment = %req.key, error = %e, "attached without a working uplink");
        }
    }

    /// Binds the request's listener in its netns and hands it to the memif
    /// control thread as socket `sid`. Returns the listener's fd number.
    async fn bind_and_serve(&self, req: &AttachRequest, sid: SocketId) -> Result<i32, ApiError> {
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
            .add_socket(sid, listener, vec![interface_config(req)]);
        Ok(fd)
    }

    /// Closes a listener and waits until it is closed, so the next attach
    /// (a CNI DEL then ADD) can bind the same name at once.
    async fn close_socket(&self, sid: SocketId) {
        let ack = self.server.remove_socket_acked(sid);
        let done = tokio::task::spawn_blocking(move || ack.recv_timeout(Duration::from_secs(5)))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        if !done {
            tracing::error!(
                socket_id = sid,
                "memif control thread did not close a listener in time"
            );
        }
    }

    /// Checks a spec against the gate and the node's maximum.
    fn check(&self, req: &AttachRequest) -> Result<(), ApiError> {
        if !self.cfg.feature_gates.memif_enabled() {
            return Err(err(
                ErrorCode::Disabled,
                "memif is disabled on this node (feature gate memifEnabled is false); enable memif in the config for memif interfaces",
            ));
        }
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
            crate::spec::ports::validate(ranges)
                .map_err(|e| err(ErrorCode::InvalidSpec, format!("steered ports: {e}")))?;
            if req.ips.is_empty() {
                return Err(err(
                    ErrorCode::BadRequest,
                    "a PBL attachment (steer) needs the pod's addresses",
                ));
            }
        }
        check_spec(&req.spec, &self.cfg.max_interface_spec)
    }

    /// Before exit: deletes the PBL steering rules (the uplinks and their
    /// routes go with the process; rules would stay behind). The state
    /// file is kept: the next start restores them.
    pub fn shutdown(&self) {
        self.shared.dataplane.remove_steering();
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
        let sid = self.shared.lock().next_socket;
        let counters = Arc::<IfCounters>::default();
        self.add_port(&req, sid, &counters);
        let fd = match self.bind_and_serve(&req, sid).await {
            Ok(fd) => fd,
            Err(e) => {
                self.shared.dataplane.remove_port(sid);
                return Err(e);
            }
        };
        let g = {
            let mut reg = self.shared.lock();
            reg.insert(Entry {
                request: req.clone(),
                socket_id: sid,
                created: now_secs(),
                listener_fd: fd,
                counters,
                conn: None,
            });
            reg.generation += 1;
            reg.generation
        };
        drop(op);
        if let Err(e) = self.persist(g).await {
            // Not durable: undo, so a restart cannot disagree with the
            // answer we give.
            // The next successful write drops it from the file too.
            let _op = self.ops.lock().await;
            {
                let mut reg = self.shared.lock();
                if reg.by_socket.get(&sid) == Some(&req.key) {
                    reg.remove(&req.key);
                }
                reg.generation += 1;
            }
            self.close_socket(sid).await;
            self.shared.dataplane.remove_port(sid);
            self.persist_kick.notify_one();
            return Err(err(
                ErrorCode::Internal,
                format!("cannot persist state: {e}"),
            ));
        }
        tracing::info!(attachment = %req.key, network = %req.network, netns = %req.netns.display(),
            socket = %req.socket_name(), socket_id = sid, mode = ?req.spec.mode,
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
        self.close_socket(e.socket_id).await;
        self.shared.dataplane.remove_port(e.socket_id);
        drop(op);
        tracing::info!(attachment = %key, network = %e.request.network, "detached");
        self.persist(g).await.map_err(|m| {
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
            self.close_socket(e.socket_id).await;
            self.shared.dataplane.remove_port(e.socket_id);
            tracing::info!(attachment = %e.request.key, network, "garbage-collected");
        }
        drop(op);
        if !gone.is_empty() {
            self.persist(g)
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

    /// Waits until generation `g` is in the state file.
    async fn persist(&self, g: u64) -> Result<(), String> {
        self.persist_kick.notify_one();
        let mut rx = self.persisted.clone();
        let s = rx
            .wait_for(|s| s.durable >= g || s.failed.as_ref().is_some_and(|(f, _)| *f >= g))
            .await
            .map_err(|_| "the persistence task stopped".to_string())?
            .clone();
        if s.durable >= g {
            Ok(())
        } else {
            Err(s.failed.map(|(_, m)| m).unwrap_or_default())
        }
    }

    fn info(&self, e: &Entry) -> AttachmentInfo {
        AttachmentInfo {
            request: e.request.clone(),
            socket_id: e.socket_id,
            listener_fd: e.listener_fd,
            created: e.created,
            connection: e.conn.as_ref().map(|c| connection_info(c, &e.request.spec)),
            stats: e.counters.snapshot(),
        }
    }
}

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

/// Validates a spec on its own and against the node's maximum.
pub fn check_spec(s: &MemifSpec, max: &crate::api::MaxSpec) -> Result<(), ApiError> {
    let bad = |m: String| Err(err(ErrorCode::InvalidSpec, m));
    if s.rx_queues == 0 || s.rx_queues > max.rx_queues {
        return bad(format!(
            "rx queues {} must be 1..={} (node maximum)",
            s.rx_queues, max.rx_queues
        ));
    }
    if s.tx_queues == 0 || s.tx_queues > max.tx_queues {
        return bad(format!(
            "tx queues {} must be 1..={} (node maximum)",
            s.tx_queues, max.tx_queues
        ));
    }
    for (what, size) in [("rx", s.rx_ring_size), ("tx", s.tx_ring_size)] {
        if !size.is_power_of_two() || size < 2 || size > max.ring_size {
            return bad(format!(
                "{what} ring size {size} must be a power of two in 2..={} (node maximum)",
                max.ring_size
            ));
        }
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
        let ok = mac.split(':').count() == 6
            && mac
                .split(':')
                .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok());
        if !ok {
            return bad(format!("mac {mac:?} is not of the form aa:bb:cc:dd:ee:ff"));
        }
    }
    if s.secret.as_ref().is_some_and(|x| x.len() > 24) {
        return bad("secret is longer than memif's 24 bytes".into());
    }
    Ok(())
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s = format!("{s}: {t}");
        }
        src = c.source();
    }
    s
}

/// Writes the state file whenever kicked; many changes between two writes
/// share one write (group commit), which keeps concurrent attaches fast.
async fn persister(agent: Weak<Agent>, kick: Arc<Notify>, tx: watch::Sender<PersistState>) {
    loop {
        kick.notified().await;
        let Some(a) = agent.upgrade() else { return };
        let (g, snapshot) = {
            let reg = a.shared.lock();
            (reg.generation, reg.persisted())
        };
        if g <= tx.borrow().durable {
            continue;
        }
        let path = a.cfg.state_file();
        drop(a);
        let r = tokio::task::spawn_blocking(move || state::save(&path, &snapshot))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        tx.send_modify(|s| match r {
            Ok(()) => s.durable = g,
            Err(e) => {
                tracing::error!(error = %e, "cannot write the state file");
                s.failed = Some((g, e));
            }
        });
    }
}
