//! The dataplane: worker threads that own the rings of connected memif
//! interfaces and forward between them and each network's uplink.
//!
//! **Ports and networks.** Every attachment is a *port* of its CNI network
//! ([`Dataplane::add_port`], from attach until detach); a port is
//! *connected* while a memif client is ([`Dataplane::connect`] /
//! [`Dataplane::disconnect`]). Networks are isolated: a port's frames are
//! only ever routed to ports of its own network or to its network's
//! uplink.
//!
//! **Forwarding** (per network, see the `forward` and `neighbor` modules):
//! - ip-mode ports (`isl3: true`) carry bare IP packets; ethernet-mode
//!   ports carry ethernet frames and are promiscuous: memifd answers ARP
//!   requests and IPv6 neighbour solicitations for any target other than
//!   the pod's own addresses with the port's MAC, learns the pod's MAC
//!   from the source of its frames, and drops (and counts) ethertypes
//!   other than IPv4, IPv6 and ARP;
//! - an IP packet goes to the port owning its destination /32 or /128,
//!   else to the network's uplink ([`uplink`]); what comes from the
//!   uplink goes to the owning port or is dropped (`no-route`);
//! - a frame sent to an ethernet port carries the pod's learned MAC
//!   (broadcast until one is learned) as destination and the port's MAC as
//!   source;
//! - a network is one link: between its pods, packets keep their TTL; a
//!   packet that crosses the uplink (pod to host, host to pod) is routed:
//!   its TTL or hop limit is decremented and it is dropped as
//!   `ttl-expired` when that reaches 0.
//!
//! **Threads.** Workers are dedicated OS threads ([`Dataplane::spawn`],
//! default one). All the ports and the uplink of a network live on one
//! worker (chosen by a hash of the network name), so a frame never crosses
//! threads and no lock or queue sits on the packet path. The control plane
//! talks to a worker through a channel plus an eventfd; the worker applies
//! commands between bursts. Only the control plane's bookkeeping (which
//! worker, which host routes) is behind a mutex here.
//!
//! **Rx modes** per port, as its spec says: polling (busy), interrupt
//! (sleep in epoll on the rings' eventfds, unmasked) and adaptive (poll
//! while busy, sleep after [`ADAPTIVE_IDLE_POLLS`] empty polls). The
//! uplinks and the underlay have no ring to poll; while any of a worker's
//! ports polls or adapts, the worker keeps looking at them (with a
//! non-blocking `epoll_wait`) for as many turns after their last packet
//! before it sleeps, so that a steady flow from the host or another node
//! does not pay a wake-up per packet. A worker whose ports all sleep
//! blocks in `epoll_wait`: an idle node costs no CPU.
//!
//! **Copies.** Up to [`BURST`] frames per ring per turn; a frame is copied
//! once, straight from the sender's buffers into the receiver's (only its
//! first bytes are copied out before, to decide). No allocation per
//! packet: scratch space is allocated when a worker starts. The common
//! case (a one-buffer unicast IP frame, from the pod's learned MAC on
//! ethernet, to a port of the same mode) takes a fast path: its first 64
//! bytes are read once into registers, decided on there
//! ([`crate::packet::decide::unicast_dst_in_lanes`], checked against the
//! general parser),
//! edited there (new MACs; bytes
//! past a short frame's end zeroed, never carried over from the sender's
//! buffer) and written straight from registers, the rest copied region to
//! region. Before a burst is forwarded, the buffers it will most likely
//! fill (where the previous burst from that ring went) are prefetched for
//! writing.
//!
//! **Counters** per port (rx/tx packets and bytes, drops by
//! [`DropReason`]) are atomics the control plane reads for `show stats` and
//! metrics; workers add to them once per burst.
//!
//! **Modules.** [`counters`]; [`uplink`] (which TUNs, routes and rules the
//! host gets, through [`crate::link::HostNet`]); `table` (a network's
//! addresses to ports); `port` (a port and its connection); `forward` (a
//! burst's frames to their destinations); `neighbor` (ARP and neighbour
//! solicitations answered); `worker` (the thread: epoll loop, rx modes,
//! commands). This file is the control plane's handle on all of it.
//!
//! **Blocking.** [`Dataplane::add_port`], [`Dataplane::remove_port`],
//! [`Dataplane::connect`] and the steering clean-ups do kernel work or wait
//! for a worker's acknowledgement: call them from a blocking context
//! (memifd uses `spawn_blocking` and its own threads), never from an async
//! task. [`Dataplane::uplinks`] and [`Dataplane::disconnect`] never wait.

pub mod counters;
mod forward;
mod neighbor;
mod port;
mod table;
pub mod underlay;
pub mod uplink;
mod worker;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};

pub use counters::{DropReason, IfCounters, RingCounters, UplinkCounters};
pub use underlay::{PeerCounters, UnderlayConfig, UnderlayCounters};
use uplink::{UplinkView, Uplinks};

use crate::api::{IfStats, RxMode};
use crate::calico::ports::PortRange;
use crate::ids::AttachmentId;
use crate::link::{HostNet, Tun};
use crate::mac::Mac;
use crate::memif::master::MasterConnection;
use crate::memif::wire::Mode;

/// Frames taken from one ring per turn (32..=256).
pub const BURST: usize = 64;
/// Empty polls in a row after which an adaptive interface sleeps on its
/// interrupts.
pub const ADAPTIVE_IDLE_POLLS: u32 = 1024;

/// A network's uplink as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkInfo {
    pub network: String,
    /// The TUN device; `None` when it could not be created (see `error`).
    pub device: Option<String>,
    pub error: Option<String>,
    pub stats: IfStats,
}

/// A port: an attachment as the dataplane sees it.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub id: AttachmentId,
    /// The CNI network; ports of different networks never meet.
    pub network: String,
    /// ethernet (L2) or ip (L3).
    pub mode: Mode,
    /// The pod's addresses: each is routed to this port.
    pub ips: Vec<IpAddr>,
    /// PBL: only these protocol/port ranges of traffic to `ips` are
    /// steered here (policy rules into the network's steering table, see
    /// [`uplink`]); `None`: main-table host routes.
    pub steer: Option<Vec<PortRange>>,
    /// The memif's own MAC (ethernet ports): the source of what we send
    /// and what we answer ARP and neighbour solicitations with.
    pub mac: Mac,
    pub counters: Arc<IfCounters>,
    /// The network's VXLAN network identifier (on the underlay, and which
    /// worker owns the network: VNI modulo the workers).
    pub vni: u32,
}

/// A network's pods on other nodes, as the control plane learned them
/// (from the Kubernetes API or the peers file).
#[derive(Debug, Clone, Default)]
pub struct RemoteSet {
    pub vni: u32,
    pub peers: Vec<RemotePeer>,
    pub endpoints: Vec<RemoteEndpoint>,
}

/// A node serving the network, and its counters (kept across updates).
#[derive(Debug, Clone)]
pub struct RemotePeer {
    pub node: String,
    /// Its underlay address and VXLAN port.
    pub addr: std::net::SocketAddr,
    pub counters: Arc<PeerCounters>,
}

/// A pod address on another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub ip: IpAddr,
    /// Its node: an index into [`RemoteSet::peers`].
    pub peer: usize,
    /// Its memif's MAC (ethernet networks), the inner destination.
    pub mac: Option<Mac>,
}

/// A connected interface handed to its worker.
pub struct Attached {
    pub id: AttachmentId,
    pub conn: MasterConnection,
    pub rx_mode: RxMode,
    pub counters: Arc<IfCounters>,
    pub rings: Arc<RingCounters>,
}

/// Told (attachment, memif interface id, reason) when a worker drops an
/// interface because its peer broke the ring protocol, so the control
/// plane can disconnect it with the reason. Runs on the worker: it must
/// not block on the control plane.
pub type OnBadPeer = Arc<dyn Fn(AttachmentId, u32, String) + Send + Sync>;

enum Cmd {
    AddPort(Box<PortConfig>),
    RemovePort(AttachmentId),
    Connect(Box<Attached>, mpsc::Sender<()>),
    Disconnect(AttachmentId),
    AddUplink {
        network: String,
        vni: u32,
        tun: Tun,
        counters: Arc<UplinkCounters>,
    },
    RemoveUplink {
        network: String,
        done: mpsc::Sender<()>,
    },
    /// Replaces a network's remote pods (a network the worker does not
    /// serve ignores it).
    SetRemotes {
        network: String,
        set: Arc<RemoteSet>,
    },
    Shutdown,
}

struct WorkerHandle {
    cmds: mpsc::Sender<Cmd>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    fn send(&self, c: Cmd) -> bool {
        if self.cmds.send(c).is_ok() {
            let _ = self.wake.write(1);
            true
        } else {
            false
        }
    }
}

/// Handle on the worker threads.
pub struct Dataplane {
    workers: Vec<WorkerHandle>,
    /// The host side (TUNs, routes, rules): held across kernel calls.
    uplinks: Mutex<Uplinks>,
    /// What [`Dataplane::uplinks`] shows, refreshed after every change,
    /// so that reading it never waits behind kernel work.
    views: Mutex<Vec<UplinkView>>,
    /// The worker of every port.
    worker_of: Mutex<HashMap<AttachmentId, usize>>,
    /// The underlay, when this node carries networks to others.
    underlay: Option<UnderlayConfig>,
    /// Per worker, the underlay's counters.
    underlay_counters: Vec<Arc<UnderlayCounters>>,
    /// The latest remote pods of every network.
    remotes: Mutex<HashMap<String, Arc<RemoteSet>>>,
}

/// How long the control plane waits for a worker's acknowledgement.
const WORKER_ACK: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dataplane {
    /// Starts `workers` threads (at least one); `host` is what the uplinks
    /// are made with ([`crate::link::KernelHost`] in memifd).
    pub fn spawn(
        workers: usize,
        host: Box<dyn HostNet>,
        on_bad_peer: OnBadPeer,
        underlay: Option<UnderlayConfig>,
    ) -> std::io::Result<Dataplane> {
        let mut v = Vec::new();
        let workers = workers.max(1);
        let mut sockets = match &underlay {
            Some(u) => underlay::open(u, workers)?.into_iter().map(Some).collect(),
            None => Vec::new(),
        };
        sockets.resize_with(workers, || None);
        let mut underlay_counters = Vec::new();
        for (n, socks) in sockets.into_iter().enumerate() {
            let counters = Arc::new(UnderlayCounters::default());
            underlay_counters.push(counters.clone());
            // Built on the worker's thread (its batch headers stay there).
            let ul = underlay.zip(socks).map(|(cfg, s)| (cfg, s, counters));
            let wake = Arc::new(
                EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                    .map_err(std::io::Error::from)?,
            );
            let (tx, rx) = mpsc::channel();
            let w = wake.clone();
            let bad = on_bad_peer.clone();
            let thread = std::thread::Builder::new()
                .name(format!("dp-worker-{n}"))
                .spawn(move || {
                    let ul = ul.map(|(cfg, s, c)| underlay::Underlay::new(cfg, s, c));
                    worker::Worker::new(n, bad, ul).run(&w, rx)
                })?;
            v.push(WorkerHandle {
                cmds: tx,
                wake,
                thread: Some(thread),
            });
        }
        Ok(Dataplane {
            workers: v,
            uplinks: Mutex::new(Uplinks::new(host)),
            views: Mutex::new(Vec::new()),
            worker_of: Mutex::new(HashMap::new()),
            underlay,
            underlay_counters,
            remotes: Mutex::new(HashMap::new()),
        })
    }

    /// The worker that owns the network of VNI `vni`: its ports, uplink and
    /// underlay traffic (the receive sockets steer by the same rule).
    fn worker_for_vni(&self, vni: u32) -> usize {
        vni as usize % self.workers.len()
    }

    /// The underlay, if this node carries networks to others.
    pub fn underlay(&self) -> Option<UnderlayConfig> {
        self.underlay
    }

    /// The underlay's counters, summed over the workers.
    pub fn underlay_stats(&self) -> IfStats {
        let mut total = IfStats::default();
        for c in &self.underlay_counters {
            let s = counters::snapshot_of(
                &c.rx_packets,
                &c.rx_bytes,
                &c.tx_packets,
                &c.tx_bytes,
                &c.drops,
            );
            total.rx_packets += s.rx_packets;
            total.rx_bytes += s.rx_bytes;
            total.tx_packets += s.tx_packets;
            total.tx_bytes += s.tx_bytes;
            for (k, v) in s.drops {
                *total.drops.entry(k).or_default() += v;
            }
        }
        total
    }

    /// Replaces network `network`'s remote pods. Never waits.
    pub fn set_remotes(&self, network: &str, set: RemoteSet) {
        let set = Arc::new(set);
        let w = self.worker_for_vni(set.vni);
        lock(&self.remotes).insert(network.to_string(), set.clone());
        self.workers[w].send(Cmd::SetRemotes {
            network: network.to_string(),
            set,
        });
    }

    /// Every network's remote pods as last set.
    pub fn remotes(&self) -> Vec<(String, Arc<RemoteSet>)> {
        let mut v: Vec<_> = lock(&self.remotes)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn refresh_views(&self, u: &Uplinks) {
        *lock(&self.views) = u.views();
    }

    /// Adds a port (on attach and restore, before its listener exists, so
    /// it is known when its client connects). The first port of a network
    /// creates the network's uplink; the port's addresses get host routes
    /// to it. The port works without an uplink: the error is returned (and
    /// shown in [`Dataplane::uplinks`]) for the caller to report. Blocks.
    pub fn add_port(&self, cfg: PortConfig) -> Result<(), String> {
        if lock(&self.uplinks).contains(cfg.id) {
            self.remove_port(cfg.id);
        }
        let worker = self.worker_for_vni(cfg.vni);
        let mut u = lock(&self.uplinks);
        let added = u.add_port(cfg.id, &cfg.network, &cfg.ips, cfg.steer.as_deref());
        if let Some((tun, counters)) = added.new_uplink {
            self.workers[worker].send(Cmd::AddUplink {
                network: cfg.network.clone(),
                vni: cfg.vni,
                tun,
                counters,
            });
        }
        self.refresh_views(&u);
        drop(u);
        lock(&self.worker_of).insert(cfg.id, worker);
        tracing::debug!(id = %cfg.id, network = %cfg.network, worker, ips = ?cfg.ips, steer = ?cfg.steer, "port added");
        let remotes = lock(&self.remotes).get(&cfg.network).cloned();
        let network = cfg.network.clone();
        self.workers[worker].send(Cmd::AddPort(Box::new(cfg)));
        if let Some(set) = remotes {
            self.workers[worker].send(Cmd::SetRemotes { network, set });
        }
        added.error.map_or(Ok(()), Err)
    }

    /// Removes a port (detach): its rings, routes and host routes (and, for
    /// a PBL port, its steering rules and table routes); the last port of a
    /// network takes the uplink with it. Unknown ids are ignored. Blocks.
    pub fn remove_port(&self, id: AttachmentId) {
        let Some(worker) = lock(&self.worker_of).remove(&id) else {
            return;
        };
        self.workers[worker].send(Cmd::RemovePort(id));
        let mut u = lock(&self.uplinks);
        let removed = u.remove_port(id);
        self.refresh_views(&u);
        drop(u);
        if let Some(r) = removed.filter(|r| r.last) {
            // Closing the TUN deletes the device and its routes. Wait for
            // the worker to close it, so the next attach can create it again.
            let (done, wait) = mpsc::channel();
            if self.workers[worker].send(Cmd::RemoveUplink {
                network: r.network.clone(),
                done,
            }) && wait.recv_timeout(WORKER_ACK).is_err()
            {
                tracing::error!(network = %r.network, "worker did not release the uplink in time");
            }
        }
    }

    /// Deletes every steering rule this dataplane installed (on shutdown:
    /// the TUNs, and the table routes with them, go when memifd exits;
    /// rules would stay). Ports and routes are left as they are. Blocks.
    pub fn remove_steering(&self) {
        lock(&self.uplinks).remove_steering();
    }

    /// Deletes steering rules left by a memifd that did not stop cleanly
    /// (see [`Uplinks::clean_stale_steering`]); call before restoring.
    /// Blocks.
    pub fn clean_stale_steering(&self) {
        lock(&self.uplinks).clean_stale_steering();
    }

    /// Hands a connected interface to its port's worker; returns once the
    /// worker polls it (bounded wait). Blocks.
    pub fn connect(&self, a: Attached) {
        let worker = lock(&self.worker_of).get(&a.id).copied();
        match worker {
            Some(w) => {
                let id = a.id;
                let (done, wait) = mpsc::channel();
                if self.workers[w].send(Cmd::Connect(Box::new(a), done))
                    && wait.recv_timeout(WORKER_ACK).is_err()
                {
                    tracing::warn!(%id, "worker slow to take a connection");
                }
            }
            None => {
                tracing::warn!(
                    id = %a.id,
                    "connection for an unknown port; dropping its rings"
                );
            }
        }
    }

    /// Takes a connection's rings away from its worker (the port stays).
    pub fn disconnect(&self, id: AttachmentId) {
        let worker = lock(&self.worker_of).get(&id).copied();
        if let Some(w) = worker {
            self.workers[w].send(Cmd::Disconnect(id));
        }
    }

    /// Every network's uplink. Never waits behind kernel work.
    pub fn uplinks(&self) -> Vec<UplinkInfo> {
        lock(&self.views)
            .iter()
            .map(|v| UplinkInfo {
                network: v.network.clone(),
                device: v.device.clone(),
                error: v.error.clone(),
                stats: v.counters.snapshot(),
            })
            .collect()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.remove_steering();
        for w in &self.workers {
            w.send(Cmd::Shutdown);
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}
