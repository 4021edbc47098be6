//! Churn without leaks (issue 18, item 3): memifd, the real binary, goes
//! through many attach/detach cycles while memif clients connect and
//! disconnect from inside pod network namespaces, pass traffic, or
//! misbehave; afterwards its open fds, threads, memory mappings and RSS
//! are back at their baseline.
//!
//! `MEMIF_CHURN_CYCLES` sets the number of cycles (default
//! [`DEFAULT_CYCLES`], a few seconds; the long run is 10,000). Each cycle
//! attaches one interface (every attach creates its network's uplink TUN
//! and host route, every detach removes them: one attachment per network
//! at a time) and does one of [`Kind`]'s scenarios with it, then detaches.
//! A resident attachment with a connected client stays up throughout and
//! must still pass traffic at the end.
//!
//! The baseline is taken after a warm-up round of every scenario, once the
//! counts have settled; the end figures once memifd has finished its
//! asynchronous cleanup (closing a listener, unmapping a region and
//! closing an API connection happen just after the reply), waited for
//! with a bound. What must return and how exactly:
//!
//! - **fds**: exactly the baseline (listeners, accepted sockets, region
//!   memfds, ring eventfds, TUNs and API connections are all per cycle).
//! - **threads**: every thread that is not tokio's blocking pool exactly
//!   the baseline (memifd's own threads are fixed: main, two `memifd-ctl`
//!   runtime workers, `memif-control`, `netns`, `netlink`, the dataplane
//!   workers). The blocking pool (`spawn_blocking`, also named
//!   `memifd-ctl`) grows on demand and retires a thread after 10 s idle
//!   (tokio's default keep-alive): those may be at most the baseline's,
//!   waiting up to [`POOL_KEEP_ALIVE`] plus a margin for extras to retire.
//!   A thread stuck in a blocking call would never retire and fails this.
//! - **memfd mappings** (`/memfd:` in `/proc/PID/maps`): exactly the
//!   baseline, i.e. the resident client's region only.
//! - **all mappings**: at most the baseline plus [`MAPS_SLACK`]: glibc
//!   keeps the stacks of exited threads mapped in its stack cache, and a
//!   blocking-pool thread that starts later may be given a new malloc
//!   arena (both bounded: 40 MiB of cached stacks, 8 arenas per core).
//! - **RSS** (`VmRSS`): at most the baseline plus [`RSS_SLACK_KIB`]:
//!   allocators keep freed memory.
//!
//! Needs root and `ip netns`; without them the test FAILS with the
//! reason, it never skips. Traffic never leaves memifd: clients send
//! frames of an unknown ethertype (counted, dropped) and ARP requests
//! (answered by memifd itself).

#[path = "common/memifd.rs"]
mod memifd_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memif_cni::api::{AttachRequest, Client, RxMode};
use memif_cni::mac::Mac;
use memif_cni::memif::shm::{Region, RingRef};
use memif_cni::memif::wire::{AddRegion, AddRing, Init, Message, Mode, RING_FLAG_S2M, VERSION};
use memif_cni::memif::{PacketBuf, SlaveConfig, SlaveConnection, SlaveError, SocketAddr};
use memif_cni::packet;
use memifd_common::*;
use nix::sys::eventfd::{EfdFlags, EventFd};

/// Cycles when `MEMIF_CHURN_CYCLES` is unset (CI).
const DEFAULT_CYCLES: usize = 400;
/// tokio's blocking-pool keep-alive: an idle pool thread exits after this.
const POOL_KEEP_ALIVE: Duration = Duration::from_secs(10);
/// How much RSS memifd may keep over its baseline.
const RSS_SLACK_KIB: u64 = 4 * 1024;
/// How many more mappings memifd may have than at its baseline.
const MAPS_SLACK: usize = 16;
/// The name tokio gives memifd's runtime threads (workers and pool).
const POOL_NAME: &str = "memifd-ctl";
/// Network namespaces the cycles' pods live in, round robin.
const PODS: usize = 4;

/// What one cycle does with its attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Attach and detach, no client.
    Idle,
    /// A client passes traffic both ways and disconnects cleanly.
    Traffic,
    /// A client passes traffic; memifd is told to detach under it.
    DetachConnected,
    /// A client connects and closes its socket without DISCONNECT.
    AbruptClose,
    /// A client publishes a descriptor of a region it never gave.
    BadDescriptor,
    /// A peer sends INIT, a region (memfd) and a ring (eventfd), then
    /// closes mid-handshake; a good client connects after it.
    HalfHandshake,
    /// A client with the wrong secret is refused; the right one connects.
    WrongSecret,
    /// Garbage after HELLO; then a two-queue client, traffic on both.
    GarbageThenTwoQueues,
}

const KINDS: [Kind; 8] = [
    Kind::Idle,
    Kind::Traffic,
    Kind::DetachConnected,
    Kind::AbruptClose,
    Kind::BadDescriptor,
    Kind::HalfHandshake,
    Kind::WrongSecret,
    Kind::GarbageThenTwoQueues,
];

/// memifd's resource use, from /proc.
#[derive(Debug, Clone)]
struct Usage {
    /// What each open fd points at (`readlink`), counted.
    fds: BTreeMap<String, usize>,
    /// Thread names (`comm`), counted.
    threads: BTreeMap<String, usize>,
    maps: usize,
    memfd_maps: usize,
    rss_kib: u64,
}

impl Usage {
    fn of(pid: u32) -> Usage {
        let proc = format!("/proc/{pid}");
        let mut fds = BTreeMap::new();
        for e in std::fs::read_dir(format!("{proc}/fd")).expect("read /proc/PID/fd") {
            // An fd closed between readdir and readlink: skip it.
            let Ok(target) = std::fs::read_link(e.expect("fd entry").path()) else {
                continue;
            };
            *fds.entry(fd_kind(&target.to_string_lossy())).or_default() += 1;
        }
        let mut threads = BTreeMap::new();
        for e in std::fs::read_dir(format!("{proc}/task")).expect("read /proc/PID/task") {
            let Ok(comm) = std::fs::read_to_string(e.expect("task entry").path().join("comm"))
            else {
                continue;
            };
            *threads.entry(comm.trim().to_string()).or_default() += 1;
        }
        let maps = std::fs::read_to_string(format!("{proc}/maps")).expect("read /proc/PID/maps");
        let status =
            std::fs::read_to_string(format!("{proc}/status")).expect("read /proc/PID/status");
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {proc}/status:\n{status}"));
        Usage {
            fds,
            threads,
            maps: maps.lines().count(),
            memfd_maps: maps.lines().filter(|l| l.contains("/memfd:")).count(),
            rss_kib,
        }
    }

    fn fd_count(&self) -> usize {
        self.fds.values().sum()
    }

    fn thread_count(&self) -> usize {
        self.threads.values().sum()
    }

    /// Threads named like tokio's (runtime workers and blocking pool).
    fn runtime_threads(&self) -> usize {
        self.threads.get(POOL_NAME).copied().unwrap_or(0)
    }

    /// Threads other than tokio's, by name.
    fn own_threads(&self) -> BTreeMap<String, usize> {
        let mut t = self.threads.clone();
        t.remove(POOL_NAME);
        t
    }

    fn summary(&self) -> String {
        format!(
            "fds {}, threads {} ({} {POOL_NAME}), maps {} ({} memfd), RSS {} KiB",
            self.fd_count(),
            self.thread_count(),
            self.runtime_threads(),
            self.maps,
            self.memfd_maps,
            self.rss_kib
        )
    }

    /// Where `self` is not back at `base`; empty when it is.
    fn leaks(&self, base: &Usage) -> Vec<String> {
        let mut v = Vec::new();
        if self.fds != base.fds {
            v.push(format!(
                "fds {} (baseline {}): {}",
                self.fd_count(),
                base.fd_count(),
                diff(&base.fds, &self.fds)
            ));
        }
        if self.own_threads() != base.own_threads() {
            v.push(format!(
                "memifd's own threads: {}",
                diff(&base.own_threads(), &self.own_threads())
            ));
        }
        if self.runtime_threads() > base.runtime_threads() {
            v.push(format!(
                "{POOL_NAME} threads {} > baseline {} (blocking-pool threads that never retire)",
                self.runtime_threads(),
                base.runtime_threads()
            ));
        }
        if self.memfd_maps != base.memfd_maps {
            v.push(format!(
                "memfd mappings {} (baseline {})",
                self.memfd_maps, base.memfd_maps
            ));
        }
        if self.maps > base.maps + MAPS_SLACK {
            v.push(format!(
                "mappings {} > baseline {} + {MAPS_SLACK}",
                self.maps, base.maps
            ));
        }
        if self.rss_kib > base.rss_kib + RSS_SLACK_KIB {
            v.push(format!(
                "RSS {} KiB > baseline {} KiB + {RSS_SLACK_KIB} KiB",
                self.rss_kib, base.rss_kib
            ));
        }
        v
    }
}

/// An fd target without its inode number, so fds of a kind compare:
/// `socket:[123]` -> `socket`, `anon_inode:[eventfd]` stays, a memfd
/// keeps its name without ` (deleted)`.
fn fd_kind(target: &str) -> String {
    if target.starts_with("socket:") {
        "socket".into()
    } else if target.starts_with("pipe:") {
        "pipe".into()
    } else {
        target.trim_end_matches(" (deleted)").to_string()
    }
}

/// `+n kind` / `-n kind` for every kind whose count changed.
fn diff(base: &BTreeMap<String, usize>, now: &BTreeMap<String, usize>) -> String {
    let keys: BTreeSet<&String> = base.keys().chain(now.keys()).collect();
    let mut v = Vec::new();
    for k in keys {
        let (b, n) = (
            base.get(k).copied().unwrap_or(0),
            now.get(k).copied().unwrap_or(0),
        );
        if b != n {
            v.push(format!("{:+} {k}", n as i64 - b as i64));
        }
    }
    v.join(", ")
}

/// The cycle count: `MEMIF_CHURN_CYCLES` or the CI default.
fn cycles() -> usize {
    match std::env::var("MEMIF_CHURN_CYCLES") {
        Err(_) => DEFAULT_CYCLES,
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("MEMIF_CHURN_CYCLES={v:?} is not a positive number")),
    }
}

/// Polls `f` every millisecond until it returns `Some`, at most `WAIT`.
#[track_caller]
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The pod's MAC and address in the cycles' ARP requests.
const POD_MAC: &str = "02:00:00:00:c4:01";

/// One pod network namespace and the test's view of memifd.
struct World {
    m: Memifd,
    api: Client,
    pods: Vec<Netns>,
    /// 10.250 + (pid % 5): a /16 of host routes no other run uses.
    net16: u8,
}

impl World {
    fn request(&self, i: usize, kind: Kind) -> AttachRequest {
        let ns = &self.pods[i % PODS];
        let mut r = request(ns, &format!("churn-{i}"), "memif-eth1", "");
        // One network per cycle slot: its uplink comes and goes with it.
        r.network = format!("churn{}-{}", std::process::id(), i % 3);
        r.socket = Some(format!("@churn-{}", i % 7));
        r.ips =
            vec![Ipv4Addr::new(10, self.net16, (i / 250 % 250) as u8, (i % 250) as u8 + 2).into()];
        r.spec.rx_mode = [RxMode::Interrupt, RxMode::Adaptive, RxMode::Polling][i % 3];
        if kind == Kind::WrongSecret {
            r.spec.secret = Some(format!("s3cret-{i}"));
        }
        if kind == Kind::GarbageThenTwoQueues {
            r.spec.rx_queues = 2;
            r.spec.tx_queues = 2;
        }
        r
    }

    /// A client inside the pod netns of `req`.
    fn slave(&self, req: &AttachRequest, cfg: &SlaveConfig) -> Result<SlaveConnection, SlaveError> {
        let ns = self.ns_of(req);
        ns.slave(&addr_of(req), cfg)
    }

    fn ns_of(&self, req: &AttachRequest) -> &Netns {
        self.pods
            .iter()
            .find(|n| n.path() == req.netns)
            .expect("the request's netns")
    }

    #[track_caller]
    fn wait_connected(&mut self, req: &AttachRequest, connected: bool) {
        let key = req.key.clone();
        let api = &mut self.api;
        poll(&format!("{key} connected={connected}"), || {
            let a = api.get(key.clone()).expect("get");
            (a.connection.is_some() == connected).then_some(())
        })
    }

    #[track_caller]
    fn wait_stats(
        &mut self,
        req: &AttachRequest,
        what: &str,
        ok: impl Fn(&memif_cni::api::IfStats) -> bool,
    ) {
        let key = req.key.clone();
        let api = &mut self.api;
        let mut last = None;
        let deadline = Instant::now() + WAIT;
        loop {
            let st = api.get(key.clone()).expect("get").stats;
            if ok(&st) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{key}: {what} not within {WAIT:?}; last {last:?}"
            );
            last = Some(st);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// One cycle: attach, the scenario, detach; checks what memifd saw.
    #[track_caller]
    fn cycle(&mut self, i: usize, kind: Kind) {
        let req = self.request(i, kind);
        self.api
            .attach(req.clone())
            .unwrap_or_else(|e| panic!("cycle {i} ({kind:?}): attach: {e}"));
        let cfg = SlaveConfig {
            name: format!("churn-{i}"),
            log2_ring_size: 6,
            ..SlaveConfig::default()
        };
        match kind {
            Kind::Idle => {}
            Kind::Traffic => {
                let mut s = self.slave(&req, &cfg).expect("client connects");
                self.wait_connected(&req, true);
                traffic(&mut s, 0, 20);
                self.wait_stats(&req, "20 frames and an ARP request", |s| {
                    s.rx_packets == 21 && s.tx_packets == 1
                });
                s.disconnect("pod stops");
                self.wait_connected(&req, false);
            }
            Kind::DetachConnected => {
                let mut s = self.slave(&req, &cfg).expect("client connects");
                self.wait_connected(&req, true);
                traffic(&mut s, 0, 5);
                self.wait_stats(&req, "5 frames and an ARP request", |s| {
                    s.rx_packets == 6 && s.tx_packets == 1
                });
                assert!(self.api.detach(req.key.clone()).expect("detach"));
                let reason = poll("the client sees memifd's DISCONNECT", || {
                    s.poll_disconnect()
                });
                assert!(!reason.is_empty());
                return;
            }
            Kind::AbruptClose => {
                let mut s = self.slave(&req, &cfg).expect("client connects");
                self.wait_connected(&req, true);
                traffic(&mut s, 0, 3);
                drop(s);
                self.wait_connected(&req, false);
            }
            Kind::BadDescriptor => {
                let s = self.slave(&req, &cfg).expect("client connects");
                self.wait_connected(&req, true);
                post_bad_descriptor(&s);
                let reason = poll("memifd disconnects the bad client", || s.poll_disconnect());
                assert!(reason.contains("bad descriptor"), "cycle {i}: {reason}");
                self.wait_connected(&req, false);
                self.wait_stats(&req, "the bad descriptor counted", |s| s.errors >= 1);
            }
            Kind::HalfHandshake => {
                half_handshake(self.ns_of(&req), &addr_of(&req), i);
                // The interface is free again: a good client gets it.
                let s = poll("a client after the half handshake connects", || {
                    match self.slave(&req, &cfg) {
                        Ok(s) => Some(s),
                        // The half-done peer may still hold the id for a
                        // moment (memifd notices the close asynchronously).
                        Err(SlaveError::Refused { .. }) => None,
                        Err(e) => panic!("cycle {i}: {e:?}"),
                    }
                });
                self.wait_connected(&req, true);
                s.disconnect("done");
                self.wait_connected(&req, false);
            }
            Kind::WrongSecret => {
                let wrong = SlaveConfig {
                    secret: "wrong".into(),
                    ..cfg.clone()
                };
                match self.slave(&req, &wrong) {
                    Err(SlaveError::Refused { reason, .. }) => {
                        assert!(reason.contains("secret"), "cycle {i}: {reason}")
                    }
                    other => panic!("cycle {i}: a wrong secret: {:?}", other.map(|_| ())),
                }
                let right = SlaveConfig {
                    secret: req.spec.secret.clone().unwrap(),
                    ..cfg
                };
                let mut s = self.slave(&req, &right).expect("the right secret connects");
                self.wait_connected(&req, true);
                traffic(&mut s, 0, 4);
                self.wait_stats(&req, "4 frames and an ARP request", |s| {
                    s.rx_packets == 5 && s.tx_packets == 1
                });
                // Detached under the client, which is then dropped.
                assert!(self.api.detach(req.key.clone()).expect("detach"));
                return;
            }
            Kind::GarbageThenTwoQueues => {
                let chan = self.ns_of(&req).connect(&addr_of(&req)).expect("connect");
                match chan.recv().expect("HELLO").msg {
                    Message::Hello(_) => {}
                    other => panic!("expected HELLO, got {other:?}"),
                }
                chan.send_raw(b"\xffgarbage", None).expect("send garbage");
                drop(chan);
                let two = SlaveConfig {
                    s2m_queues: 2,
                    m2s_queues: 2,
                    ..cfg
                };
                let mut s = poll("a two-queue client connects", || {
                    match self.slave(&req, &two) {
                        Ok(s) => Some(s),
                        Err(SlaveError::Refused { .. }) => None,
                        Err(e) => panic!("cycle {i}: {e:?}"),
                    }
                });
                self.wait_connected(&req, true);
                traffic(&mut s, 0, 7);
                traffic(&mut s, 1, 9);
                self.wait_stats(&req, "16 frames and two ARP requests", |s| {
                    s.rx_packets == 18 && s.tx_packets == 2
                });
                s.disconnect("done");
                self.wait_connected(&req, false);
            }
        }
        assert!(
            self.api.detach(req.key.clone()).expect("detach"),
            "cycle {i} ({kind:?}): the attachment was gone before its detach"
        );
    }

    /// Bounded wait until memifd's use is back at `base`; the last
    /// reading either way.
    fn settle(&self, base: &Usage, within: Duration) -> (Usage, Vec<String>) {
        let deadline = Instant::now() + within;
        loop {
            let u = Usage::of(self.m.pid());
            let leaks = u.leaks(base);
            if leaks.is_empty() || Instant::now() >= deadline {
                return (u, leaks);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn addr_of(req: &AttachRequest) -> SocketAddr {
    SocketAddr::parse(&req.socket_name()).expect("socket name")
}

/// `n` frames of an unknown ethertype (memifd counts and drops them) and
/// one ARP request (memifd answers it) on queue `q`; waits for the answer.
#[track_caller]
fn traffic(s: &mut SlaveConnection, q: usize, n: usize) {
    send_frames(s, q, n, 64);
    let me: Mac = POD_MAC.parse().unwrap();
    let arp = packet::arp_request(me, Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
    let deadline = Instant::now() + WAIT;
    while s.tx[q].tx_burst(&[arp.as_slice()]).expect("tx ARP") == 0 {
        assert!(Instant::now() < deadline, "the client's tx ring stays full");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut bufs = PacketBuf::batch(4, 2048);
    let got = poll("memifd answers the ARP request", || {
        (0..s.rx.len())
            .map(|r| s.rx[r].rx_burst(&mut bufs).expect("client rx"))
            .find(|&n| n > 0)
    });
    assert_eq!(got, 1, "one ARP reply");
    let p = packet::parse(Mode::Ethernet, bufs[0].as_slice());
    assert!(
        matches!(p.net, packet::Net::Arp(ref a) if a.op == packet::ARP_REPLY),
        "not an ARP reply: {p}"
    );
}

/// INIT, a region (a sealed memfd) and an s2m ring (an eventfd), each
/// acknowledged, then the peer closes without CONNECT.
fn half_handshake(ns: &Netns, addr: &SocketAddr, i: usize) {
    let chan = ns.connect(addr).expect("connect");
    match chan.recv().expect("HELLO").msg {
        Message::Hello(_) => {}
        other => panic!("expected HELLO, got {other:?}"),
    }
    let ack = |m: &Message, fd: Option<std::os::fd::BorrowedFd<'_>>| {
        chan.send(m, fd).expect("send");
        match chan.recv().expect("reply").msg {
            Message::Ack => {}
            other => panic!("expected ACK for {:?}, got {other:?}", m.msg_type()),
        }
    };
    ack(
        &Message::Init(Init {
            version: VERSION,
            id: 0,
            mode: Mode::Ethernet,
            secret: String::new(),
            name: format!("half-{i}"),
        }),
        None,
    );
    let log2 = 4;
    let size = RingRef::bytes_for(log2) + (1 << log2) * 2048;
    let region = Arc::new(Region::create(&format!("churn-half-{i}"), size).expect("region"));
    RingRef::new(region.clone(), 0, log2)
        .expect("ring")
        .init_header(0);
    ack(
        &Message::AddRegion(AddRegion {
            index: 0,
            size: size as u64,
        }),
        Some(region.fd()),
    );
    let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).expect("eventfd");
    ack(
        &Message::AddRing(AddRing {
            flags: RING_FLAG_S2M,
            index: 0,
            region: 0,
            offset: 0,
            log2_ring_size: log2,
            private_hdr_size: 0,
        }),
        Some(efd.as_fd()),
    );
    drop(chan);
}

#[test]
fn churn_leaves_no_fds_threads_mappings_or_memory_behind() {
    preflight();
    let n = cycles();
    let t0 = Instant::now();
    let dir = TempDir::new("churn");
    let m = Memifd::start(&dir.path);
    let api = m.client();
    let pods = (0..PODS)
        .map(|p| Netns::new(&format!("churn{p}")))
        .collect();
    let mut w = World {
        m,
        api,
        pods,
        net16: 250 + (std::process::id() % 5) as u8,
    };

    // The resident: attached and connected throughout.
    let mut resident = request(&w.pods[0], "churn-resident", "memif-eth1", "");
    resident.network = format!("churn{}-resident", std::process::id());
    resident.socket = Some("@churn-resident".into());
    resident.ips = vec![Ipv4Addr::new(10, w.net16, 255, 2).into()];
    resident.spec.rx_mode = RxMode::Interrupt;
    w.api.attach(resident.clone()).expect("attach the resident");
    let mut res_client = w
        .slave(&resident, &slave_cfg("resident"))
        .expect("the resident's client connects");
    w.wait_connected(&resident, true);
    traffic(&mut res_client, 0, 10);

    // Warm-up: every scenario once, then let the counts settle.
    for (i, k) in KINDS.iter().enumerate() {
        w.cycle(i, *k);
    }
    // Settled: the same fds, threads and mappings in three readings 200 ms
    // apart (a state-file write or a closing socket is transient).
    let base = {
        let key = |u: &Usage| (u.fds.clone(), u.threads.clone(), u.maps, u.memfd_maps);
        let mut prev = Usage::of(w.m.pid());
        let mut same = 0;
        let deadline = Instant::now() + WAIT;
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let u = Usage::of(w.m.pid());
            same = if key(&u) == key(&prev) { same + 1 } else { 0 };
            if same == 2 {
                break u;
            }
            assert!(
                Instant::now() < deadline,
                "memifd's counts do not settle after the warm-up: {} then {}",
                prev.summary(),
                u.summary()
            );
            prev = u;
        }
    };
    assert!(
        base.memfd_maps >= 1,
        "the resident's region is not mapped: {}",
        base.summary()
    );
    eprintln!(
        "churn: baseline after warm-up: {}\nchurn: its fds: {:?}",
        base.summary(),
        base.fds
    );

    let t_cycles = Instant::now();
    let mut peak = base.clone();
    let mut seen = BTreeMap::<Kind, usize>::new();
    for c in 0..n {
        let i = KINDS.len() + c;
        let kind = KINDS[c % KINDS.len()];
        w.cycle(i, kind);
        *seen.entry(kind).or_default() += 1;
        if c % 100 == 99 {
            w.m.assert_alive();
            let u = Usage::of(w.m.pid());
            if u.fd_count() > peak.fd_count() {
                peak.fds = u.fds.clone();
            }
            if u.thread_count() > peak.thread_count() {
                peak.threads = u.threads.clone();
            }
            peak.maps = peak.maps.max(u.maps);
            peak.memfd_maps = peak.memfd_maps.max(u.memfd_maps);
            peak.rss_kib = peak.rss_kib.max(u.rss_kib);
            if c % 1000 == 999 {
                eprintln!(
                    "churn: after {} cycles ({:.1} s): {}",
                    c + 1,
                    t_cycles.elapsed().as_secs_f64(),
                    u.summary()
                );
            }
        }
    }
    let cycles_took = t_cycles.elapsed();

    // The resident never noticed.
    traffic(&mut res_client, 0, 10);
    w.wait_stats(&resident, "the resident's traffic", |s| {
        s.rx_packets == 22 && s.tx_packets == 2 && s.connects == 1 && s.disconnects == 0
    });
    let list = w.api.list(None).expect("list");
    assert_eq!(
        list.iter().map(|a| &a.request.key).collect::<Vec<_>>(),
        vec![&resident.key],
        "only the resident is attached"
    );
    for ns in &w.pods[1..] {
        ns.wait_listeners(&BTreeSet::new());
    }
    w.pods[0].wait_listeners(&BTreeSet::from(["@churn-resident".to_string()]));

    let (end, leaks) = w.settle(&base, POOL_KEEP_ALIVE + Duration::from_secs(5));
    eprintln!(
        "churn: {n} cycles ({}) in {:.1} s ({:.2} ms per cycle), {:.1} s in all\n\
         churn: baseline {}\n\
         churn: peak     {}\n\
         churn: end      {}",
        seen.iter()
            .map(|(k, v)| format!("{v} {k:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        cycles_took.as_secs_f64(),
        cycles_took.as_secs_f64() * 1000.0 / n as f64,
        t0.elapsed().as_secs_f64(),
        base.summary(),
        peak.summary(),
        end.summary()
    );
    assert!(
        leaks.is_empty(),
        "memifd did not return to its baseline after {n} cycles:\n  - {}\nbaseline: {}\nend: {}",
        leaks.join("\n  - "),
        base.summary(),
        end.summary()
    );
    w.m.assert_alive();
    res_client.disconnect("test done");
}
