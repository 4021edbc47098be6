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
//! **Forwarding** (per network, see the `worker` module):
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
//! while busy, sleep after [`ADAPTIVE_IDLE_POLLS`] empty polls). A worker
//! whose ports all sleep blocks in `epoll_wait`: an idle node costs no
//! CPU.
//!
//! **Copies.** Up to [`BURST`] frames per ring per turn; a frame is copied
//! once, straight from the sender's buffers into the receiver's (only its
//! first bytes are copied out before, to decide). No allocation per
//! packet: scratch space is allocated when a worker starts. The common
//! case (a one-buffer unicast IP frame, from the pod's learned MAC on
//! ethernet, to a port of the same mode) takes a fast path: its first 64
//! bytes are read once into registers, decided on there
//! ([`pkt::unicast_dst_in_lanes`], checked against the general parser),
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

pub mod pkt;
pub mod uplink;
mod worker;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::api::{IfStats, RxMode};
use crate::memif::master::MasterConnection;
use crate::memif::wire::Mode;
use crate::spec::ports::PortRange;

use uplink::{Netlink, Tun, UplinkError};

/// Frames taken from one ring per turn (32..=256).
pub const BURST: usize = 64;
/// Empty polls in a row after which an adaptive interface sleeps on its
/// interrupts.
pub const ADAPTIVE_IDLE_POLLS: u32 = 1024;

/// Why the dataplane dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// No port owns the destination (frames from the uplink), or the
    /// network has no uplink.
    NoRoute,
    /// Multicast, broadcast, link-local or other destinations that are
    /// never routed.
    NotRoutable,
    /// An ethertype other than IPv4, IPv6, ARP (ethernet ports).
    Ethertype,
    /// Too short, or not IPv4/IPv6 where an IP packet was expected.
    Malformed,
    /// TTL or hop limit would reach 0 crossing the uplink.
    TtlExpired,
    /// ARP or neighbour discovery that needs no answer (the pod's own
    /// address, replies, duplicate address detection, router discovery).
    Neighbor,
    /// The destination's ring had no free buffer.
    TxRingFull,
    /// The destination port has no connected client.
    TxDown,
    /// Larger than the destination can ever take.
    TooLong,
    /// The uplink refused the packet (write error).
    Uplink,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::NoRoute,
        DropReason::NotRoutable,
        DropReason::Ethertype,
        DropReason::Malformed,
        DropReason::TtlExpired,
        DropReason::Neighbor,
        DropReason::TxRingFull,
        DropReason::TxDown,
        DropReason::TooLong,
        DropReason::Uplink,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// The name in `show stats` and the metrics' `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoRoute => "no-route",
            DropReason::NotRoutable => "not-routable",
            DropReason::Ethertype => "ethertype",
            DropReason::Malformed => "malformed",
            DropReason::TtlExpired => "ttl-expired",
            DropReason::Neighbor => "neighbor",
            DropReason::TxRingFull => "tx-ring-full",
            DropReason::TxDown => "tx-down",
            DropReason::TooLong => "too-long",
            DropReason::Uplink => "uplink-error",
        }
    }

    #[inline]
    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one attachment, across its connections.
#[derive(Debug, Default)]
pub struct IfCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Indexed by [`DropReason`].
    pub drops: [AtomicU64; DropReason::COUNT],
    pub errors: AtomicU64,
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
}

impl IfCounters {
    /// Frames dropped for `r` so far.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()].load(Ordering::Relaxed)
    }

    /// A consistent-enough snapshot for display.
    pub fn snapshot(&self) -> IfStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IfStats {
            rx_packets: l(&self.rx_packets),
            rx_bytes: l(&self.rx_bytes),
            tx_packets: l(&self.tx_packets),
            tx_bytes: l(&self.tx_bytes),
            drops: drops_map(&self.drops),
            errors: l(&self.errors),
            connects: l(&self.connects),
            disconnects: l(&self.disconnects),
        }
    }
}

fn drops_map(d: &[AtomicU64; DropReason::COUNT]) -> std::collections::BTreeMap<String, u64> {
    DropReason::ALL
        .iter()
        .filter_map(|r| {
            let n = d[r.index()].load(Ordering::Relaxed);
            (n > 0).then(|| (r.name().to_string(), n))
        })
        .collect()
}

/// Counters of a network's uplink: rx is what the host sent towards the
/// pods, tx what the pods sent to the host.
#[derive(Debug, Default)]
pub struct UplinkCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
}

/// A network's uplink as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkInfo {
    pub network: String,
    /// The TUN device; `None` when it could not be created (see `error`).
    pub device: Option<String>,
    pub error: Option<String>,
    pub stats: IfStats,
}

/// Per-ring interrupt counts of one connection (for `show memif`).
#[derive(Debug)]
pub struct RingCounters {
    pub s2m_interrupts: Box<[AtomicU64]>,
    pub m2s_interrupts: Box<[AtomicU64]>,
}

impl RingCounters {
    pub fn new(s2m: usize, m2s: usize) -> RingCounters {
        let z = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        RingCounters {
            s2m_interrupts: z(s2m),
            m2s_interrupts: z(m2s),
        }
    }
}

/// The control plane's key for an interface in the dataplane.
pub type IfKey = u32;

/// A port: an attachment as the dataplane sees it.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub key: IfKey,
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
    pub mac: [u8; 6],
    pub counters: Arc<IfCounters>,
}

/// The memif's MAC: `spec` (`aa:bb:cc:dd:ee:ff`) when given and valid,
/// else a locally administered one derived from `seed` (stable for an
/// attachment: `02:fe` and 4 bytes of a hash of it).
pub fn port_mac(spec: Option<&str>, seed: &str) -> [u8; 6] {
    if let Some(s) = spec {
        let b: Vec<u8> = s
            .split(':')
            .filter_map(|x| u8::from_str_radix(x, 16).ok())
            .collect();
        if b.len() == 6 && s.split(':').count() == 6 {
            let mut m = [0u8; 6];
            m.copy_from_slice(&b);
            return m;
        }
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let t = (h >> 32) as u32 ^ h as u32;
    let t = t.to_be_bytes();
    [0x02, 0xfe, t[0], t[1], t[2], t[3]]
}

/// A connected interface handed to its worker.
pub struct Attached {
    pub key: IfKey,
    pub conn: MasterConnection,
    pub rx_mode: RxMode,
    pub counters: Arc<IfCounters>,
    pub rings: Arc<RingCounters>,
}

/// Told (key, memif interface id, reason) when a worker drops an
/// interface because its peer broke the ring protocol, so the control
/// plane can disconnect it with the reason. Runs on the worker: it must
/// not block on the control plane.
pub type OnBadPeer = Arc<dyn Fn(IfKey, u32, String) + Send + Sync>;

enum Cmd {
    AddPort(Box<PortConfig>),
    RemovePort(IfKey),
    Connect(Box<Attached>, mpsc::Sender<()>),
    Disconnect(IfKey),
    AddUplink {
        network: String,
        tun: Tun,
        counters: Arc<UplinkCounters>,
    },
    RemoveUplink {
        network: String,
        done: mpsc::Sender<()>,
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

/// The control plane's view of one network.
struct CtlNet {
    ports: usize,
    /// Name and ifindex of the TUN, once created.
    tun: Option<(String, u32)>,
    error: Option<String>,
    counters: Arc<UplinkCounters>,
}

struct CtlPort {
    worker: usize,
    network: String,
    ips: Vec<IpAddr>,
    steer: Option<Vec<PortRange>>,
}

/// The steering rules of address `ip` for `ranges` into `table`.
fn steer_rules(ip: IpAddr, table: u32, ranges: &[PortRange]) -> Vec<uplink::SteerRule> {
    ranges
        .iter()
        .map(|r| uplink::SteerRule {
            ip,
            proto: r.proto.number(),
            start: r.start,
            end: r.end,
            table,
            priority: uplink::STEER_PRIORITY,
        })
        .collect()
}

/// Routes `ip` to the uplink: a main-table host route, or (PBL) a route
/// in the network's steering table and then one rule per range.
fn install(
    nl: &mut Netlink,
    network: &str,
    ip: IpAddr,
    ifindex: u32,
    steer: Option<&[PortRange]>,
) -> Result<(), UplinkError> {
    match steer {
        None => nl.add_host_route(ip, ifindex),
        Some(ranges) => {
            let table = uplink::steer_table(network);
            nl.add_table_route(ip, ifindex, table)?;
            for r in steer_rules(ip, table, ranges) {
                nl.add_rule(&r)?;
            }
            Ok(())
        }
    }
}

/// Undoes [`install`]: the rules, then (when `route`) the route.
fn uninstall(
    nl: &mut Netlink,
    network: &str,
    ip: IpAddr,
    ifindex: u32,
    steer: Option<&[PortRange]>,
    route: bool,
) -> Result<(), UplinkError> {
    match steer {
        None if route => nl.del_host_route(ip, ifindex),
        None => Ok(()),
        Some(ranges) => {
            let table = uplink::steer_table(network);
            for r in steer_rules(ip, table, ranges) {
                nl.del_rule(&r)?;
            }
            if route {
                nl.del_table_route(ip, ifindex, table)?;
            }
            Ok(())
        }
    }
}

#[derive(Default)]
struct Ctl {
    ports: HashMap<IfKey, CtlPort>,
    nets: HashMap<String, CtlNet>,
    netlink: Option<Netlink>,
}

impl Ctl {
    fn netlink(&mut self) -> Result<&mut Netlink, UplinkError> {
        if self.netlink.is_none() {
            self.netlink = Some(Netlink::open()?);
        }
        Ok(self.netlink.as_mut().expect("just set"))
    }
}

/// Handle on the worker threads.
pub struct Dataplane {
    workers: Vec<WorkerHandle>,
    ctl: Mutex<Ctl>,
}

/// How long the control plane waits for a worker to let go of a TUN.
const WORKER_ACK: Duration = Duration::from_secs(2);

impl Dataplane {
    /// Starts `workers` threads (at least one).
    pub fn spawn(workers: usize, on_bad_peer: OnBadPeer) -> std::io::Result<Dataplane> {
        let mut v = Vec::new();
        for n in 0..workers.max(1) {
            let wake = Arc::new(
                EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                    .map_err(std::io::Error::from)?,
            );
            let (tx, rx) = mpsc::channel();
            let w = wake.clone();
            let bad = on_bad_peer.clone();
            let thread = std::thread::Builder::new()
                .name(format!("dp-worker-{n}"))
                .spawn(move || worker::Worker::new(n, bad).run(&w, rx))?;
            v.push(WorkerHandle {
                cmds: tx,
                wake,
                thread: Some(thread),
            });
        }
        Ok(Dataplane {
            workers: v,
            ctl: Mutex::new(Ctl::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ctl> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker that owns `network`'s ports and uplink.
    fn worker_for_network(&self, network: &str) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in network.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (h % self.workers.len() as u64) as usize
    }

    /// Adds a port (on attach and restore, before its listener exists, so
    /// it is known when its client connects). The first port of a network
    /// creates the network's uplink; the port's addresses get host routes
    /// to it. The port works without an uplink: the error is returned (and
    /// shown in [`Dataplane::uplinks`]) for the caller to report.
    pub fn add_port(&self, cfg: PortConfig) -> Result<(), String> {
        let mut guard = self.lock();
        if guard.ports.contains_key(&cfg.key) {
            drop(guard);
            self.remove_port(cfg.key);
            guard = self.lock();
        }
        let ctl: &mut Ctl = &mut guard;
        let worker = self.worker_for_network(&cfg.network);
        let net = ctl
            .nets
            .entry(cfg.network.clone())
            .or_insert_with(|| CtlNet {
                ports: 0,
                tun: None,
                error: None,
                counters: Arc::default(),
            });
        net.ports += 1;
        let mut result = Ok(());
        // (address, steering) pairs to route to the uplink.
        let mut routes_for: Vec<(IpAddr, Option<Vec<PortRange>>)> =
            cfg.ips.iter().map(|ip| (*ip, cfg.steer.clone())).collect();
        if net.tun.is_none() {
            let name = uplink::tun_name(&cfg.network);
            match Tun::create(&name) {
                Ok(tun) => {
                    tracing::info!(network = %cfg.network, device = %tun.name(), "uplink created");
                    net.tun = Some((tun.name().to_string(), tun.ifindex()));
                    net.error = None;
                    self.workers[worker].send(Cmd::AddUplink {
                        network: cfg.network.clone(),
                        tun,
                        counters: net.counters.clone(),
                    });
                    // Ports added while the uplink was missing get their
                    // routes now.
                    let others = ctl
                        .ports
                        .values()
                        .filter(|p| p.network == cfg.network)
                        .flat_map(|p| p.ips.iter().map(|ip| (*ip, p.steer.clone())))
                        .collect::<Vec<_>>();
                    routes_for.extend(others);
                }
                Err(e) => {
                    let msg = format!(
                        "network {}: no uplink: {}",
                        cfg.network,
                        crate::agent::error_chain(&e)
                    );
                    tracing::error!("{msg}");
                    net.error = Some(msg.clone());
                    result = Err(msg);
                }
            }
        }
        let tun = ctl.nets[&cfg.network].tun.clone();
        if let Some((dev, ifindex)) = tun {
            if routes_for.iter().any(|(_, s)| s.is_some()) {
                // PBL replies enter the host here with the pod's address
                // as source, which the main table routes elsewhere.
                if let Err(e) = uplink::set_rp_filter(&dev, 2) {
                    tracing::warn!(network = %cfg.network, device = %dev, error = %e,
                        "cannot set rp_filter 2 (loose) on the uplink; PBL replies may be dropped");
                }
            }
            for (ip, steer) in routes_for {
                let r = ctl
                    .netlink()
                    .and_then(|nl| install(nl, &cfg.network, ip, ifindex, steer.as_deref()));
                if let Err(e) = r {
                    let msg = format!(
                        "network {}: host route for {ip}: {}",
                        cfg.network,
                        crate::agent::error_chain(&e)
                    );
                    tracing::error!("{msg}");
                    result = Err(msg);
                }
            }
        }
        ctl.ports.insert(
            cfg.key,
            CtlPort {
                worker,
                network: cfg.network.clone(),
                ips: cfg.ips.clone(),
                steer: cfg.steer.clone(),
            },
        );
        tracing::debug!(key = cfg.key, network = %cfg.network, worker, ips = ?cfg.ips, steer = ?cfg.steer, "port added");
        self.workers[worker].send(Cmd::AddPort(Box::new(cfg)));
        result
    }

    /// Removes a port (detach): its rings, routes and host routes (and, for
    /// a PBL port, its steering rules and table routes); the last port of a
    /// network takes the uplink with it. Unknown keys are ignored.
    pub fn remove_port(&self, key: IfKey) {
        let mut guard = self.lock();
        let ctl: &mut Ctl = &mut guard;
        let Some(p) = ctl.ports.remove(&key) else {
            return;
        };
        self.workers[p.worker].send(Cmd::RemovePort(key));
        let Some(net) = ctl.nets.get_mut(&p.network) else {
            return;
        };
        net.ports -= 1;
        let last = net.ports == 0;
        let tun = net.tun.clone();
        if let Some((name, ifindex)) = &tun {
            // Another port of the network may hold the same address (in
            // the same table: both steered or both plain).
            let still: Vec<IpAddr> = ctl
                .ports
                .values()
                .filter(|o| o.network == p.network && o.steer.is_some() == p.steer.is_some())
                .flat_map(|o| o.ips.iter().copied())
                .collect();
            for ip in &p.ips {
                // Rules first, then the route: see uplink's module docs.
                // The last port's routes go with the TUN; rules do not.
                let route = !last && !still.contains(ip);
                let r = ctl.netlink().and_then(|nl| {
                    uninstall(nl, &p.network, *ip, *ifindex, p.steer.as_deref(), route)
                });
                if let Err(e) = r {
                    tracing::warn!(network = %p.network, device = %name, %ip,
                        error = %crate::agent::error_chain(&e), "cannot delete a host route or steering rule");
                }
            }
        }
        if last {
            // Closing the TUN deletes the device and its routes. Wait for
            // the worker to close it, so the next attach can create it again.
            let (done, wait) = mpsc::channel();
            if self.workers[p.worker].send(Cmd::RemoveUplink {
                network: p.network.clone(),
                done,
            }) && wait.recv_timeout(WORKER_ACK).is_err()
            {
                tracing::error!(network = %p.network, "worker did not release the uplink in time");
            }
            ctl.nets.remove(&p.network);
            if let Some((name, _)) = tun {
                tracing::info!(network = %p.network, device = %name, "uplink removed");
            }
        }
    }

    /// Deletes every steering rule this dataplane installed (on shutdown:
    /// the TUNs, and the table routes with them, go when memifd exits;
    /// rules would stay). Ports and routes are left as they are.
    pub fn remove_steering(&self) {
        let mut guard = self.lock();
        let ctl: &mut Ctl = &mut guard;
        let rules: Vec<uplink::SteerRule> = ctl
            .ports
            .values()
            .filter(|p| ctl.nets.get(&p.network).is_some_and(|n| n.tun.is_some()))
            .flat_map(|p| {
                let table = uplink::steer_table(&p.network);
                p.ips.iter().flat_map(move |ip| {
                    steer_rules(*ip, table, p.steer.as_deref().unwrap_or_default())
                })
            })
            .collect();
        for r in rules {
            if let Err(e) = ctl.netlink().and_then(|nl| nl.del_rule(&r)) {
                tracing::warn!(rule = %r, error = %crate::agent::error_chain(&e), "cannot delete a steering rule");
            }
        }
    }

    /// Deletes steering rules left by a memifd that did not stop cleanly
    /// (see [`uplink::Netlink::clean_stale_rules`]); call before restoring.
    pub fn clean_stale_steering(&self) {
        let r = self.lock().netlink().and_then(|nl| nl.clean_stale_rules());
        match r {
            Ok(gone) if gone.is_empty() => {}
            Ok(gone) => {
                for g in &gone {
                    tracing::info!(rule = %g, "deleted a stale steering rule");
                }
            }
            Err(e) => tracing::warn!(error = %crate::agent::error_chain(&e),
                "cannot look for stale steering rules"),
        }
    }

    /// Hands a connected interface to its port's worker; returns once the
    /// worker polls it (bounded wait).
    pub fn connect(&self, a: Attached) {
        let worker = self.lock().ports.get(&a.key).map(|p| p.worker);
        match worker {
            Some(w) => {
                let key = a.key;
                let (done, wait) = mpsc::channel();
                if self.workers[w].send(Cmd::Connect(Box::new(a), done))
                    && wait.recv_timeout(WORKER_ACK).is_err()
                {
                    tracing::warn!(key, "worker slow to take a connection");
                }
            }
            None => {
                tracing::warn!(
                    key = a.key,
                    "connection for an unknown port; dropping its rings"
                );
            }
        }
    }

    /// Takes a connection's rings away from its worker (the port stays).
    pub fn disconnect(&self, key: IfKey) {
        let worker = self.lock().ports.get(&key).map(|p| p.worker);
        if let Some(w) = worker {
            self.workers[w].send(Cmd::Disconnect(key));
        }
    }

    /// Every network's uplink.
    pub fn uplinks(&self) -> Vec<UplinkInfo> {
        let ctl = self.lock();
        let mut v: Vec<UplinkInfo> = ctl
            .nets
            .iter()
            .map(|(name, n)| {
                let c = &n.counters;
                let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
                UplinkInfo {
                    network: name.clone(),
                    device: n.tun.as_ref().map(|t| t.0.clone()),
                    error: n.error.clone(),
                    stats: IfStats {
                        rx_packets: l(&c.rx_packets),
                        rx_bytes: l(&c.rx_bytes),
                        tx_packets: l(&c.tx_packets),
                        tx_bytes: l(&c.tx_bytes),
                        drops: drops_map(&c.drops),
                        ..IfStats::default()
                    },
                }
            })
            .collect();
        v.sort_by(|a, b| a.network.cmp(&b.network));
        v
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_from_spec_or_derived() {
        assert_eq!(
            port_mac(Some("02:00:00:aa:bb:0c"), "x"),
            [2, 0, 0, 0xaa, 0xbb, 0x0c]
        );
        let d = port_mac(None, "c1/memif-eth1");
        assert_eq!(&d[..2], &[0x02, 0xfe]);
        assert_eq!(d, port_mac(Some("garbage"), "c1/memif-eth1"));
        assert_ne!(d, port_mac(None, "c2/memif-eth1"));
    }

    #[test]
    fn drop_reasons_have_distinct_names_and_indices() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
