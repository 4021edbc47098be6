//! (d) The host path: memifd's uplink, the TUN device that carries a
//! network's traffic between its pods and the host, against the kernel's
//! own path between two namespaces over a veth pair, side by side in one
//! run, 64-byte frames (a 50-byte IPv4/UDP packet: 14 + 20 + 8 + 22 bytes
//! on an ethernet link).
//!
//! Nothing here touches the machine's own namespace: memifd runs inside a
//! dedicated "host" namespace (`ip netns exec`), so its uplink TUN, the
//! host routes and policy rules it installs live there and go with it.
//!
//! (d) pod -> host: a memif client (in-process, the library's slave, an
//!     ethernet memif attached through memifd's API in a "pod" namespace)
//!     sends 64-byte UDP frames as fast as its ring takes them to an
//!     address on the host namespace's `lo`; memifd forwards them into its
//!     uplink TUN. Delivered = what reached the host's UDP layer for a
//!     bound socket nobody reads: `Udp: InDatagrams + RcvbufErrors` of the
//!     host namespace (`/proc/net/snmp`): the socket's queue is full after
//!     a moment, so the kernel drops at the socket, having done all the
//!     work of delivering the packet.
//! (d) host -> pod: a UDP sender in the host namespace (blocking socket,
//!     as `udp_blast`) to the pod's address, routed by the host into the
//!     TUN; delivered = frames the memif client reads from its ring (4096
//!     slots; it drains the ring every ~50 us and sleeps in between, so it
//!     takes little of the generator's core; memifd's `tx-ring-full` drops
//!     show if it fell behind). What the TUN queue cannot take is dropped by
//!     the kernel at the TUN (its `tx_dropped`), as offered load above
//!     what memifd reads.
//! (d) the kernel's veth path: the same UDP datagrams from namespace A to
//!     a bound, unread socket in namespace B over a veth pair, counted as
//!     in pod -> host. The kernel's path is symmetric: one direction.
//!
//! memifd is pinned to core 0 (`taskset`), every generator (the memif
//! client, the UDP senders) and the memif client's receive loop to core 1,
//! as `dataplane_bench` does. Each round measures the three paths in turn
//! (the order alternates between rounds), each with a warm-up and one
//! window; the table has the medians over the rounds and the ratios
//! uplink / veth per direction (the median of the rounds' ratios). CPU per
//! packet: memifd's `utime + stime` over the window (`/proc/PID/stat`), and
//! both cores' busy time (`/proc/stat`: user, nice, system, irq, softirq;
//! other work on the machine shows up there too). The last line is
//! `uplink/veth W.WW`, the worse direction's ratio.
//!
//! Options (of `bench-dataplane.sh`): `--uplink-reps 5`, `--uplink-window 2`,
//! `--uplink-warmup 0.5`, `--uplink-rx-mode adaptive|polling|interrupt`,
//! `--uplink-only pod-host|host-pod|veth` (one path, no table: to profile).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use memif_cni::api::{AttachRequest, AttachmentKey, MemifSpec, RxMode};
use memif_cni::ctl::peer::udp_frame_between;
use memif_cni::memif::queue::PacketBuf;
use memif_cni::memif::wire::Mode;
use memif_cni::memif::{SlaveConfig, SlaveConnection, SocketAddr};
use memif_cni::netns::NetnsGuard;

use crate::harness::{median, pin, sh, Daemon, Namespaces};

/// The host namespace's own address (on its `lo`): pod -> host target.
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 198, 0, 1);
/// The pod's address (memifd routes it into the pod's memif).
const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 198, 1, 2);
/// The veth pair's ends, in namespaces A and B.
const VETH_A: Ipv4Addr = Ipv4Addr::new(10, 198, 2, 1);
const VETH_B: Ipv4Addr = Ipv4Addr::new(10, 198, 2, 2);
/// Destination UDP port of every path (a bound socket that is never read):
/// 9, the port of `udp_frame_between`'s frames, which the pod sends.
const SINK_PORT: u16 = 9;
/// 14 + 20 + 8 + 22 = 64-byte frames.
const PAYLOAD: usize = 22;
/// The memif's rings: 4096 slots, 8 ms of frames at 0.5 Mpps, so the
/// client's receive loop (sharing core 1 with the sender, woken every
/// ~50 us when the scheduler lets it) does not overflow them.
const RING_LOG2: u8 = 12;
/// The CPU memifd runs on, and the one of the generators.
const MEMIFD_CPU: usize = 0;
const GEN_CPU: usize = 1;

/// What `bench-dataplane.sh` passes to (d).
pub struct Opts {
    pub reps: usize,
    pub window: f64,
    pub warmup: f64,
    pub rx_mode: RxMode,
    /// Measure one path only (to profile it).
    pub only: Option<Path3>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            reps: 5,
            window: 2.0,
            warmup: 0.5,
            rx_mode: RxMode::Adaptive,
            only: None,
        }
    }
}

impl Opts {
    /// Takes `--uplink-*` option `k` with value `v`; false if not ours.
    pub fn parse(&mut self, k: &str, v: &str) -> bool {
        match k {
            "--uplink-reps" => self.reps = v.parse().expect("--uplink-reps N"),
            "--uplink-window" => self.window = v.parse().expect("--uplink-window SECONDS"),
            "--uplink-warmup" => self.warmup = v.parse().expect("--uplink-warmup SECONDS"),
            "--uplink-rx-mode" => {
                self.rx_mode = v
                    .parse()
                    .expect("--uplink-rx-mode polling|interrupt|adaptive")
            }
            "--uplink-only" => {
                self.only = Some(match v {
                    "pod-host" => Path3::PodToHost,
                    "host-pod" => Path3::HostToPod,
                    "veth" => Path3::Veth,
                    _ => panic!("--uplink-only pod-host|host-pod|veth"),
                })
            }
            _ => return false,
        }
        true
    }
}

fn out(args: &[&str]) -> String {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ns_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{name}"))
}

/// A namespace's `/proc/net/snmp`, opened from inside it (the open file
/// stays bound to that namespace).
struct Snmp(File);

impl Snmp {
    fn open(ns: &str) -> Snmp {
        let p = ns_path(ns);
        let f = memif_cni::netns::run_in(Some(&p), || File::open("/proc/thread-self/net/snmp"))
            .expect("netns")
            .expect("open snmp");
        Snmp(f)
    }

    /// The `Udp:` counters by name.
    fn udp(&mut self) -> Vec<(String, u64)> {
        let mut s = String::new();
        self.0.seek(SeekFrom::Start(0)).expect("seek snmp");
        self.0.read_to_string(&mut s).expect("read snmp");
        let mut lines = s.lines().filter(|l| l.starts_with("Udp: "));
        let (Some(names), Some(vals)) = (lines.next(), lines.next()) else {
            panic!("no Udp lines in /proc/net/snmp");
        };
        names
            .split_whitespace()
            .skip(1)
            .zip(vals.split_whitespace().skip(1))
            .map(|(n, v)| (n.to_string(), v.parse().unwrap_or(0)))
            .collect()
    }

    fn get(&mut self, name: &str) -> u64 {
        self.udp()
            .into_iter()
            .find(|(n, _)| n == name)
            .map_or(0, |x| x.1)
    }

    /// Datagrams that reached a socket: queued or dropped at its full
    /// receive buffer.
    fn delivered(&mut self) -> u64 {
        let u = self.udp();
        let g = |k: &str| u.iter().find(|(n, _)| n == k).map_or(0, |x| x.1);
        g("InDatagrams") + g("RcvbufErrors")
    }
}

/// Busy jiffies of cores 0 and 1 (user, nice, system, irq, softirq).
fn busy_jiffies() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    s.lines()
        .filter(|l| l.starts_with("cpu0 ") || l.starts_with("cpu1 "))
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            // user nice system idle iowait irq softirq steal ...
            f[0] + f[1] + f[2] + f[5] + f[6]
        })
        .sum()
}

/// What the pod's memif client does.
const POD_IDLE: u8 = 0;
const POD_TX: u8 = 1;
const POD_RX: u8 = 2;
const POD_QUIT: u8 = 3;

/// The pod: a memif client thread on [`GEN_CPU`], connected once, sending
/// (pod -> host), receiving (host -> pod) or idle, as `mode` says.
struct Pod {
    mode: Arc<AtomicU8>,
    tx: Arc<AtomicU64>,
    rx: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

/// A 64-byte ethernet frame: UDP from the pod to the host's address
/// (port 9, [`SINK_PORT`]).
fn pod_frame(seq: u32) -> Vec<u8> {
    udp_frame_between(Mode::Ethernet, 64, seq, POD_IP.octets(), HOST_IP.octets())
}

impl Pod {
    fn start(ns: &str, socket: &str) -> Pod {
        let mode = Arc::new(AtomicU8::new(POD_IDLE));
        let tx = Arc::new(AtomicU64::new(0));
        let rx = Arc::new(AtomicU64::new(0));
        let (up_tx, up_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (m, t, r) = (mode.clone(), tx.clone(), rx.clone());
        let path = ns_path(ns);
        let addr = SocketAddr::parse(socket).expect("socket name");
        let thread = std::thread::spawn(move || {
            pin(GEN_CPU);
            let cfg = SlaveConfig {
                name: "dp-uplink".into(),
                log2_ring_size: RING_LOG2,
                ..SlaveConfig::default()
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut conn = loop {
                let res = {
                    let _g = NetnsGuard::enter(&path).map_err(|e| e.to_string())?;
                    SlaveConnection::connect(&addr, &cfg)
                };
                match res {
                    Ok(c) => break c,
                    Err(e) if Instant::now() > deadline => {
                        let e = format!("memif connect: {e}");
                        let _ = up_tx.send(Err(e.clone()));
                        return Err(e);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            // Polling: memifd need not signal us.
            conn.rx.iter().for_each(|q| q.set_interrupts(false));
            let _ = up_tx.send(Ok(()));
            let frames: Vec<Vec<u8>> = (0..32).map(pod_frame).collect();
            let mut bufs = PacketBuf::batch(64, 2048);
            let err = |e: &dyn std::fmt::Display| format!("memif ring: {e}");
            loop {
                if !conn.state.is_up() {
                    return Err("memif link went down".into());
                }
                match m.load(Ordering::Relaxed) {
                    POD_QUIT => break,
                    POD_TX => {
                        // As fast as the ring takes them.
                        for _ in 0..64 {
                            let n = conn.tx[0].tx_burst(&frames).map_err(|e| err(&e))?;
                            if n > 0 {
                                t.fetch_add(n as u64, Ordering::Relaxed);
                            } else {
                                std::hint::spin_loop();
                            }
                        }
                    }
                    mode => {
                        // Drain (this also keeps our receive buffers
                        // posted), then sleep: little CPU for the sender.
                        loop {
                            let n = conn.rx[0].rx_burst(&mut bufs).map_err(|e| err(&e))?;
                            if n == 0 {
                                break;
                            }
                            r.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        let nap = if mode == POD_RX { 50 } else { 5000 };
                        std::thread::sleep(Duration::from_micros(nap));
                    }
                }
            }
            conn.disconnect("dp_uplink done");
            Ok(())
        });
        match up_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("pod: {e}"),
            Err(_) => panic!("pod: no memif connection"),
        }
        Pod {
            mode,
            tx,
            rx,
            thread: Some(thread),
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::Relaxed);
    }

    fn check(&mut self) {
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            let r = self.thread.take().unwrap().join();
            panic!("pod thread ended: {r:?}");
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.set(POD_QUIT);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A blocking UDP sender on [`GEN_CPU`] in namespace `ns` to `to`, until
/// stopped; counts what it sent.
struct Sender {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    fn start(ns: &str, to: (Ipv4Addr, u16)) -> Sender {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, c, path) = (stop.clone(), sent.clone(), ns_path(ns));
        let thread = std::thread::spawn(move || {
            pin(GEN_CPU);
            let _g = NetnsGuard::enter(&path).expect("enter netns");
            let sock = UdpSocket::bind("0.0.0.0:0").expect("bind sender");
            sock.connect(to).expect("connect");
            let payload = [0x42u8; PAYLOAD];
            while !s.load(Ordering::Relaxed) {
                let mut n = 0;
                for _ in 0..64 {
                    if sock.send(&payload).is_ok() {
                        n += 1;
                    }
                }
                c.fetch_add(n, Ordering::Relaxed);
            }
        });
        Sender {
            stop,
            sent,
            thread: Some(thread),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One path's window.
#[derive(Clone, Copy, Debug)]
struct Window {
    /// Delivered packets per second.
    pps: f64,
    /// Offered (sent by the generator) packets per second.
    offered: f64,
    /// memifd's CPU per delivered packet (ns): user, system.
    memifd_user_ns: f64,
    memifd_sys_ns: f64,
    /// Both cores' busy time per delivered packet (ns).
    total_ns: f64,
}

/// Warms up, then measures one window of `delivered` (and `offered`).
fn window(
    a: &Opts,
    d: &Daemon,
    mut delivered: impl FnMut() -> u64,
    offered: impl Fn() -> u64,
) -> Window {
    let tick_ns = 1e9 / 100.0;
    std::thread::sleep(Duration::from_secs_f64(a.warmup));
    let (c0, o0, m0, b0, t0) = (
        delivered(),
        offered(),
        d.cpu_split(),
        busy_jiffies(),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(a.window));
    let (c1, o1, m1, b1, t1) = (
        delivered(),
        offered(),
        d.cpu_split(),
        busy_jiffies(),
        Instant::now(),
    );
    let secs = (t1 - t0).as_secs_f64();
    let pkts = (c1 - c0).max(1) as f64;
    Window {
        pps: (c1 - c0) as f64 / secs,
        offered: (o1 - o0) as f64 / secs,
        memifd_user_ns: (m1.0 - m0.0) as f64 * tick_ns / pkts,
        memifd_sys_ns: (m1.1 - m0.1) as f64 * tick_ns / pkts,
        total_ns: (b1 - b0) as f64 * tick_ns / pkts,
    }
}

/// The three paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path3 {
    PodToHost,
    HostToPod,
    Veth,
}

struct Bench {
    nss: [String; 4],
    daemon: Daemon,
    pod: Pod,
    host_snmp: Snmp,
    b_snmp: Snmp,
}

impl Bench {
    fn run(&mut self, a: &Opts, p: Path3) -> Window {
        let [host, _pod, va, _vb] = &self.nss;
        self.pod.check();
        let w = match p {
            Path3::PodToHost => {
                self.pod.set(POD_TX);
                let tx = self.pod.tx.clone();
                let snmp = &mut self.host_snmp;
                let w = window(
                    a,
                    &self.daemon,
                    || snmp.delivered(),
                    || tx.load(Ordering::Relaxed),
                );
                self.pod.set(POD_IDLE);
                w
            }
            Path3::HostToPod => {
                self.pod.set(POD_RX);
                let s = Sender::start(host, (POD_IP, SINK_PORT));
                let rx = self.pod.rx.clone();
                let w = window(
                    a,
                    &self.daemon,
                    || rx.load(Ordering::Relaxed),
                    || s.sent.load(Ordering::Relaxed),
                );
                drop(s);
                // Let the client drain what is in flight.
                std::thread::sleep(Duration::from_millis(50));
                self.pod.set(POD_IDLE);
                w
            }
            Path3::Veth => {
                let s = Sender::start(va, (VETH_B, SINK_PORT));
                let snmp = &mut self.b_snmp;
                let w = window(
                    a,
                    &self.daemon,
                    || snmp.delivered(),
                    || s.sent.load(Ordering::Relaxed),
                );
                drop(s);
                w
            }
        };
        self.pod.check();
        // Let memifd's port fall asleep (adaptive) between paths.
        std::thread::sleep(Duration::from_millis(100));
        w
    }
}

/// What (d) found: per round, the three paths' windows.
pub struct HostPath {
    res: Vec<[Window; 3]>,
    rx_mode: RxMode,
    reps: usize,
    window: f64,
}

/// Runs (d): memifd (`memifd`) in a namespace of its own, state under
/// `dir`. None when `--uplink-only` measured one path.
pub fn run(memifd: &Path, dir: &Path, a: &Opts) -> Option<HostPath> {
    let pid = std::process::id();
    let mut ns = Namespaces(Vec::new());
    let nss = [
        format!("dpu-{pid}-host"),
        format!("dpu-{pid}-pod"),
        format!("dpu-{pid}-a"),
        format!("dpu-{pid}-b"),
    ];
    for n in &nss {
        ns.add(n);
    }
    let [host, pod, va, vb] = &nss;
    // The host's own address, the target of pod -> host.
    sh(&[
        "ip",
        "-n",
        host,
        "addr",
        "add",
        &format!("{HOST_IP}/32"),
        "dev",
        "lo",
    ]);
    // The veth pair.
    sh(&[
        "ip", "-n", va, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", vb,
    ]);
    for (n, dev, addr) in [(va, "va", VETH_A), (vb, "vb", VETH_B)] {
        sh(&[
            "ip",
            "-n",
            n,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            dev,
        ]);
        sh(&["ip", "-n", n, "link", "set", dev, "up"]);
    }
    // The sinks: bound, never read.
    let bind = |n: &str, ip: Ipv4Addr| {
        memif_cni::netns::run_in(Some(&ns_path(n)), move || UdpSocket::bind((ip, SINK_PORT)))
            .expect("netns")
            .expect("bind sink")
    };
    let _host_sink = bind(host, HOST_IP);
    let _b_sink = bind(vb, VETH_B);

    let daemon = Daemon::start_in(
        memifd,
        &dir.join("memifd-uplink"),
        &MEMIFD_CPU.to_string(),
        Some(host),
    );
    let network = format!("dp-uplink-{pid}");
    let req = AttachRequest {
        key: AttachmentKey {
            container_id: format!("dp-uplink-{pid}"),
            ifname: "memif-ul".into(),
        },
        network: network.clone(),
        netns: ns_path(pod),
        socket: None,
        spec: MemifSpec {
            mode: Mode::Ethernet,
            rx_mode: a.rx_mode,
            rx_ring_size: 1 << RING_LOG2,
            tx_ring_size: 1 << RING_LOG2,
            ..MemifSpec::default()
        },
        ips: vec![POD_IP.into()],
        pod: None,
        steer: None,
        vni: None,
    };
    daemon.client().attach(req.clone()).expect("attach");
    let ups = daemon.client().uplinks().expect("uplinks");
    let dev = ups
        .iter()
        .find(|u| u.network == network)
        .and_then(|u| u.device.clone())
        .unwrap_or_else(|| panic!("no uplink device: {ups:?}"));
    let route = out(&["ip", "-n", host, "route", "get", &POD_IP.to_string()]);
    assert!(
        route.contains(&dev),
        "the host does not route {POD_IP} into {dev}: {route}"
    );
    let pod_thread = Pod::start(pod, &req.socket_name());
    let mut b = Bench {
        host_snmp: Snmp::open(host),
        b_snmp: Snmp::open(vb),
        nss: nss.clone(),
        daemon,
        pod: pod_thread,
    };
    let noports0 = (b.host_snmp.get("NoPorts"), b.b_snmp.get("NoPorts"));

    let order = [Path3::PodToHost, Path3::HostToPod, Path3::Veth];
    let mut res: Vec<[Window; 3]> = Vec::new();
    for rep in 0..a.reps {
        let mut ws = [None; 3];
        let mut o = order;
        if rep % 2 == 1 {
            o.reverse();
        }
        for p in o {
            if a.only.is_none_or(|x| x == p) {
                ws[p as usize] = Some(b.run(a, p));
            }
        }
        let Some(ws) = ws
            .iter()
            .all(Option::is_some)
            .then(|| ws.map(Option::unwrap))
        else {
            eprintln!("{:?}", ws.iter().flatten().collect::<Vec<_>>());
            continue;
        };
        eprintln!(
            "round {}: pod->host {:.3} Mpps (offered {:.3}), host->pod {:.3} (offered {:.3}), veth {:.3} (offered {:.3})",
            rep + 1,
            ws[0].pps / 1e6,
            ws[0].offered / 1e6,
            ws[1].pps / 1e6,
            ws[1].offered / 1e6,
            ws[2].pps / 1e6,
            ws[2].offered / 1e6,
        );
        res.push(ws);
    }

    if res.is_empty() {
        return None;
    }
    // Diagnostics: drops on the way.
    let st = b.daemon.client().get(req.key.clone()).expect("get").stats;
    let up = b
        .daemon
        .client()
        .uplinks()
        .expect("uplinks")
        .into_iter()
        .find(|u| u.network == network)
        .expect("uplink");
    eprintln!(
        "memifd pod port: rx {} tx {} drops {:?}; uplink: rx {} tx {} drops {:?}",
        st.rx_packets,
        st.tx_packets,
        st.drops,
        up.stats.rx_packets,
        up.stats.tx_packets,
        up.stats.drops
    );
    let tun = out(&["ip", "-n", host, "-s", "link", "show", &dev]);
    eprintln!("host {dev}:\n{tun}");
    eprintln!(
        "NoPorts during the run: host {}, B {}",
        b.host_snmp.get("NoPorts") - noports0.0,
        b.b_snmp.get("NoPorts") - noports0.1
    );

    // Teardown in order: the client, memifd, the namespaces.
    drop(b);
    drop(_host_sink);
    drop(_b_sink);
    drop(ns);
    Some(HostPath {
        res,
        rx_mode: a.rx_mode,
        reps: a.reps,
        window: a.window,
    })
}

impl HostPath {
    /// The worse direction's uplink / veth ratio.
    pub fn worst(&self) -> f64 {
        self.ratio(0).min(self.ratio(1))
    }

    /// Median over rounds of path `i`'s rate / veth's.
    fn ratio(&self, i: usize) -> f64 {
        median(self.res.iter().map(|w| w[i].pps / w[2].pps).collect())
    }

    /// The table rows of (d).
    pub fn print(&self) {
        let res = &self.res;
        let col = |i: usize, f: fn(&Window) -> f64| median(res.iter().map(|w| f(&w[i])).collect());
        let pps = |i| col(i, |w| w.pps);
        let (r_up, r_down) = (self.ratio(0), self.ratio(1));
        let verdict = |r: f64| if r >= 1.0 { "met" } else { "NOT MET" };
        println!(
            "| (d) host path, 64-byte UDP: memifd ({} rx) on core {MEMIFD_CPU}, generators on core {GEN_CPU}; median of {} rounds of {:.1} s windows | | | |",
            self.rx_mode, self.reps, self.window
        );
        println!(
            "| (d) pod -> host through memifd's uplink (TUN), delivered to a host UDP socket | {:.3} | | |",
            pps(0) / 1e6
        );
        println!(
            "| (d) host -> pod through memifd's uplink, received by the pod's memif client | {:.3} | | |",
            pps(1) / 1e6
        );
        println!(
            "| (d) kernel veth, netns A -> B, delivered to a UDP socket | {:.3} | | |",
            pps(2) / 1e6
        );
        println!(
            "| (d) uplink / veth, pod -> host | | {r_up:.2} | >= 1.0 {} |",
            verdict(r_up)
        );
        println!(
            "| (d) uplink / veth, host -> pod | | {r_down:.2} | >= 1.0 {} |",
            verdict(r_down)
        );
        println!(
            "| (d) offered by the generator: pod -> host / host -> pod / veth (Mpps) | {:.3} / {:.3} / {:.3} | | |",
            col(0, |w| w.offered) / 1e6,
            col(1, |w| w.offered) / 1e6,
            col(2, |w| w.offered) / 1e6
        );
        for (i, what) in [(0, "pod -> host"), (1, "host -> pod")] {
            println!(
                "| (d) memifd CPU per packet, {what} (ns: user + sys = total) | {:.0} + {:.0} = {:.0} | | |",
                col(i, |w| w.memifd_user_ns),
                col(i, |w| w.memifd_sys_ns),
                col(i, |w| w.memifd_user_ns + w.memifd_sys_ns)
            );
        }
        println!(
            "| (d) both cores' CPU per packet: pod -> host / host -> pod / veth (ns) | {:.0} / {:.0} / {:.0} | | |",
            col(0, |w| w.total_ns),
            col(1, |w| w.total_ns),
            col(2, |w| w.total_ns)
        );
    }
}
