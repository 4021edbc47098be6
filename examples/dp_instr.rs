//! (f) of the dataplane benchmark: instructions per forwarded packet,
//! memifd against a testpmd middle box, counted by valgrind's callgrind
//! (run as root through `e2e/bench-dataplane.sh`, which builds in release
//! and runs this first; `[profile.release]` keeps line tables, so callgrind
//! names memifd's functions).
//!
//! The figure does not depend on where the host puts the two vCPUs (what
//! the rate benchmark, `examples/dataplane_bench/`, fights with): it
//! counts guest instructions, not time. It leaves out the kernel (the
//! syscalls' own cost) and memory stalls; it is the CPU work per frame.
//!
//! **Set-up.** The middle box runs under callgrind on core 0 and forwards
//! between two memif ports:
//! - memifd (`--no-kubernetes`, one worker): two attachments in one
//!   network, ethernet mode, polling rx mode (the PMD polls too);
//! - `dpdk-testpmd --forward-mode=io` with two memif server ports, its
//!   forwarding lcore on core 0, `--burst` = memifd's burst
//!   ([`memif_cni::dataplane::BURST`]) unless `--testpmd-burst` says
//!   otherwise, so both take the same bursts from a full ring.
//!
//! The generator and sink is this process (our own memif slave code,
//! natively, on core 1): one thread with both slave connections sends
//! 64-byte UDP frames on both ports, each addressed to the other port's
//! pod address (memifd routes on the destination IP; io forwarding sends
//! port 0's frames out of port 1 and back), and drains both receive rings.
//! Natively it is far faster than the middle box under valgrind, so it
//! keeps the middle box's receive rings full; it masks its receive
//! interrupts, so the middle box never writes an eventfd for it.
//!
//! **Method: windows inside steady traffic.** Both middle boxes start
//! with instrumentation off (`--instr-atstart=no`: nothing is counted
//! while they start, connect and idle-poll). Traffic starts and reaches a
//! steady state; then a window is: `vgdb instrumentation on`, wait until
//! the sink has received N more frames, `vgdb instrumentation off`, `vgdb
//! dump`; the figure is the forwarding thread's instructions / N (N is
//! counted from when "on" has returned to when "off" is sent). Traffic
//! runs through both switches, so no window holds idle polls at its ends:
//! stopping the generator after exactly N frames would leave the middle
//! box idle-polling while the "off" command travels (under valgrind easily
//! 10^5 empty polls, more instructions than the frames themselves), and
//! subtracting an idle baseline would need the number of empty polls,
//! which neither side reports.
//!
//! The edges: a few frames may pass between a switch taking effect and the
//! count being read. The thread that counts and the vgdb it starts run at
//! real-time priority (`chrt -f`), so the switches do not wait for the
//! generator's or the middle box's time slice (without it the edges
//! varied by thousands of frames), and N is large (1.2 million) so
//! that what is left is well under 1%. As a check, each window of N comes
//! with a window of N/4 before it, and the slope between the two ((long's
//! instructions - short's) / (long's frames - short's), in which an edge
//! cost the same in both cancels) is reported beside the figure; the two
//! agree within a fraction of a percent (testpmd's windows repeat to ~100
//! instructions, memifd's to ~0.3%).
//!
//! Idle polls inside a window are ruled out, not subtracted: before each
//! refill the generator records how many frames still wait in each
//! receive ring of the middle box, and the minimum over the counted part
//! of every window is reported. Between two refills a ring only drains, so
//! a minimum of at least 1 means no poll of the middle box ever found its
//! ring short of a full burst, memifd's and testpmd's alike (both sides
//! also poll both ports every turn and both directions carry traffic: no
//! empty port either).
//!
//! Per-thread files (`--separate-threads=yes`): the figure is the
//! forwarding thread's (memifd's worker, testpmd's forwarding lcore: the
//! thread with the most instructions in the window); the other threads'
//! instructions are reported beside it (0: they sleep). Each side runs
//! `--pairs` pairs of windows; the table gives the median of the long
//! windows and their spread. The
//! same method on both sides: same generator, same frames, same full
//! rings, same bursts, same window rule, the whole forwarding loop counted
//! (memifd's epoll_wait every 64 turns and counter publishing; testpmd's
//! loop and stream bookkeeping).
//!
//! Then where memifd's instructions go: the forwarding thread's self cost
//! per packet in the median window (from `callgrind_annotate`), by
//! function and by source file. With LTO most of
//! the worker is inlined into `Worker::run`: callgrind splits a symbol's
//! cost by the source file of its lines, which shows where the inlined
//! code came from (`memif/shm.rs`, `packet/decide.rs`, ...).
//!
//! Output: a markdown table, last line `instr memifd/testpmd X.XX`.
//! `--keep` keeps the callgrind files (the directory is printed).
//! Caveats: callgrind counts user-space instructions only (not the
//! kernel's share of a syscall, not stalls); memifd's worker and the PMD
//! both skip eventfd kicks here (the generator masks its interrupts), as
//! in polling production; testpmd has no symbols (stripped Debian build),
//! so only its total is known.

#[allow(dead_code)]
#[path = "dataplane_bench/harness.rs"]
mod harness;
#[path = "../tests/common/testpmd.rs"]
mod testpmd;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use harness::{pin, sh, Daemon};
use memif_cni::api::{AttachRequest, AttachmentKey, MemifSpec, RxMode};
use memif_cni::mac::Mac;
use memif_cni::memif::queue::DEFAULT_MAX_FRAME;
use memif_cni::memif::socket::Channel;
use memif_cni::memif::wire::Mode;
use memif_cni::memif::{PacketBuf, SlaveConfig, SlaveConnection, SocketAddr};
use memif_cni::packet;
use testpmd::{Testpmd, TestpmdOpts};

struct Args {
    memifd: PathBuf,
    packets: u64,
    pairs: usize,
    top: usize,
    testpmd_burst: usize,
    keep: bool,
}

fn args() -> Args {
    let mut a = Args {
        memifd: "target/release/memifd".into(),
        packets: 1_200_000,
        pairs: 3,
        top: 8,
        testpmd_burst: memif_cni::dataplane::BURST,
        keep: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--keep" => {
                a.keep = true;
                i += 1;
                continue;
            }
            "--memifd" => a.memifd = val.into(),
            "--packets" => a.packets = val.parse().expect("--packets N"),
            "--pairs" => a.pairs = val.parse().expect("--pairs N"),
            "--top" => a.top = val.parse().expect("--top N"),
            "--testpmd-burst" => a.testpmd_burst = val.parse().expect("--testpmd-burst N"),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    assert!(a.pairs > 0 && a.packets >= 4, "--pairs > 0, --packets >= 4");
    a
}

/// The pods' addresses: port 0's frames go to `IPS[1]` and back.
const IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 199, 7, 1), Ipv4Addr::new(10, 199, 7, 2)];
/// The generator's ring size (log2): deep enough that the middle box
/// never catches up between two refills.
const RING_LOG2: u8 = 10;
const FRAME: usize = 64;

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        Netns(name)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// The valgrind command line for one middle box: callgrind, nothing
/// counted until `instrumentation on`, one file per thread, vgdb's pipes
/// under `dir`.
fn callgrind(dir: &Path, name: &str) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--instr-atstart=no".into(),
        "--separate-threads=yes".into(),
        "--vgdb=yes".into(),
        format!("--vgdb-prefix={}/vgdb", dir.display()),
        format!("--callgrind-out-file={}/{name}.%p", dir.display()),
    ]
}

/// The SCHED_FIFO priority of the thread that switches instrumentation
/// and of vgdb.
const RT_PRIO: &str = "20";

/// Real-time priority for the calling thread while it lives: when the
/// thread wakes up (a window's count reached) it runs at once, not after
/// the generator's or the middle box's time slice. Dropped before anything
/// is started (children would inherit the policy, and valgrind's thread
/// lock starves under SCHED_FIFO).
struct Realtime(String);

impl Realtime {
    fn new() -> Realtime {
        let tid = nix::unistd::gettid().to_string();
        sh(&["chrt", "-f", "-p", RT_PRIO, &tid]);
        Realtime(tid)
    }
}

impl Drop for Realtime {
    fn drop(&mut self) {
        let _ = Command::new("chrt")
            .args(["-o", "-p", "0", &self.0])
            .output();
    }
}

/// A directory, removed on drop unless kept.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("callgrind files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A callgrind monitor command (`instrumentation on`, `dump`, ...) to the
/// valgrind process `pid`, through vgdb; returns once it has been applied.
fn monitor(dir: &Path, pid: u32, cmd: &str) {
    // Real-time priority, as the caller has: the generator and the middle
    // box keep both cores busy, and a vgdb waiting for a time slice would
    // let an unknown number of frames pass after the switch.
    let o = Command::new("chrt")
        .args(["-f", RT_PRIO, "vgdb"])
        .arg(format!("--vgdb-prefix={}/vgdb", dir.display()))
        .arg(format!("--pid={pid}"))
        .args(cmd.split(' '))
        .output()
        .expect("spawn vgdb");
    assert!(
        o.status.success(),
        "vgdb {cmd} to {pid}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// memifd under callgrind, pinned to core 0; killed on drop.
/// One 64-byte UDP frame from port `p`'s pod to the other port's.
fn frame(p: usize, seq: u32) -> Vec<u8> {
    use packet::{ETHERTYPE_IPV4, ETH_HLEN, IPV4_HLEN, PROTO_UDP, UDP_HLEN};
    let mut f = vec![0u8; FRAME];
    let payload = FRAME - ETH_HLEN - IPV4_HLEN - UDP_HLEN;
    packet::eth_header_into(
        &mut f,
        Mac([0x02, 0, 0, 0, 0x70, 2 - p as u8]),
        Mac([0x02, 0, 0, 0, 0x70, 1 + p as u8]),
        ETHERTYPE_IPV4,
    );
    let ip = &mut f[ETH_HLEN..];
    packet::ipv4_header_into(ip, IPS[p], IPS[1 - p], PROTO_UDP, 64, UDP_HLEN + payload);
    packet::udp_header_into(&mut ip[IPV4_HLEN..], 9, 9, payload);
    ip[IPV4_HLEN + UDP_HLEN..IPV4_HLEN + UDP_HLEN + 4].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Connects a memif slave to `sock` (abstract, in `ns`), retrying while
/// the master is not listening yet.
fn slave(ns: &Netns, sock: &str, name: &str) -> SlaveConnection {
    let addr = SocketAddr::parse(sock).expect("socket name");
    let cfg = SlaveConfig {
        name: name.into(),
        log2_ring_size: RING_LOG2,
        ..SlaveConfig::default()
    };
    let t0 = Instant::now();
    loop {
        let a = addr.clone();
        let chan = memif_cni::netns::run_in(Some(&ns.path()), move || Channel::connect(&a))
            .expect("netns");
        match chan {
            Ok(c) => return SlaveConnection::handshake(c, &cfg).expect("memif handshake"),
            Err(e) if t0.elapsed() < Duration::from_secs(60) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connect {sock}: {e}"),
        }
    }
}

/// The generator and sink: one native thread on core 1 with both slave
/// connections.
struct Gen {
    shared: Arc<GenShared>,
    thread: Option<JoinHandle<Vec<SlaveConnection>>>,
}

#[derive(Default)]
struct GenShared {
    sending: AtomicBool,
    stop: AtomicBool,
    /// Track the minimum of frames waiting in the middle box's rx rings.
    measuring: AtomicBool,
    min_waiting: AtomicU64,
    tx: AtomicU64,
    rx: AtomicU64,
}

impl Gen {
    fn start(mut conns: Vec<SlaveConnection>) -> Gen {
        let shared = Arc::new(GenShared::default());
        let s = shared.clone();
        for c in &conns {
            c.rx.iter().for_each(|q| q.set_interrupts(false));
        }
        let thread = std::thread::spawn(move || {
            pin(1);
            let burst = 2 * memif_cni::dataplane::BURST;
            let tmpl: Vec<Vec<Vec<u8>>> = (0..2)
                .map(|p| (0..burst as u32).map(|i| frame(p, i)).collect())
                .collect();
            let mut bufs = PacketBuf::batch(burst, DEFAULT_MAX_FRAME);
            let size = 1u64 << RING_LOG2;
            let (mut tx, mut rx) = (0u64, 0u64);
            while !s.stop.load(Ordering::Relaxed) {
                let sending = s.sending.load(Ordering::Relaxed);
                let measuring = s.measuring.load(Ordering::Relaxed);
                for (p, c) in conns.iter_mut().enumerate() {
                    if sending {
                        let q = &mut c.tx[0];
                        let free = q.free().expect("tx ring") as u64;
                        if measuring {
                            s.min_waiting.fetch_min(size - free, Ordering::Relaxed);
                        }
                        if free > 0 {
                            tx += q.tx_burst(&tmpl[p]).expect("tx") as u64;
                        }
                    }
                    loop {
                        let n = c.rx[0].rx_burst(&mut bufs).expect("rx");
                        rx += n as u64;
                        if n < bufs.len() {
                            break;
                        }
                    }
                }
                s.tx.store(tx, Ordering::Relaxed);
                s.rx.store(rx, Ordering::Relaxed);
            }
            conns
        });
        Gen {
            shared,
            thread: Some(thread),
        }
    }

    fn rx(&self) -> u64 {
        self.shared.rx.load(Ordering::Relaxed)
    }

    fn sending(&self, on: bool) {
        self.shared.sending.store(on, Ordering::Relaxed);
    }

    /// Waits until `rx() >= n`, or panics after `timeout`.
    fn wait_rx(&self, n: u64, timeout: Duration, what: &str) {
        let t0 = Instant::now();
        while self.rx() < n {
            assert!(
                t0.elapsed() < timeout,
                "{what}: sink at {} of {n} frames after {timeout:?}",
                self.rx()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Stops sending, waits until what is in flight has come back (the
    /// count is still for 0.5 s); returns the frames lost (sent, not
    /// received).
    fn drain(&self) -> u64 {
        self.sending(false);
        let mut last = self.rx();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.rx();
            if now == last {
                break;
            }
            last = now;
        }
        self.shared.tx.load(Ordering::Relaxed) - last
    }

    fn stop(mut self) -> Vec<SlaveConnection> {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("once").join().expect("generator")
    }
}

impl Drop for Gen {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One measured window.
struct Window {
    /// Frames the sink received between "instrumentation on" returning
    /// and "instrumentation off" being sent.
    packets: u64,
    /// Frames received while the two vgdb commands ran (the switches
    /// happened somewhere in there).
    brackets: u64,
    /// The forwarding thread's instructions.
    fwd_ir: u64,
    /// The other threads' instructions.
    other_ir: u64,
    fwd_file: PathBuf,
    /// Fewest frames waiting in a middle-box rx ring, between the
    /// switches.
    min_waiting: u64,
}

/// A short and a long window back to back: the long one gives the figure,
/// their difference the cross-check (what happens at the switches
/// cancels).
struct Pair {
    short: Window,
    long: Window,
}

impl Window {
    /// The figure: the window's instructions per counted packet.
    fn per_packet(&self) -> f64 {
        self.fwd_ir as f64 / self.packets as f64
    }
}

impl Pair {
    /// The cross-check: the slope between the two windows, in which what
    /// happens at the switches cancels (when it is the same in both).
    fn slope(&self) -> f64 {
        (self.long.fwd_ir as f64 - self.short.fwd_ir as f64)
            / (self.long.packets - self.short.packets) as f64
    }
}

/// One side's pairs and the frames it lost.
struct Side {
    pairs: Vec<Pair>,
    lost: u64,
    sent: u64,
}

impl Side {
    /// The pairs by their long window's instructions per packet.
    fn sorted(&self) -> Vec<&Pair> {
        let mut w: Vec<&Pair> = self.pairs.iter().collect();
        w.sort_by(|x, y| {
            x.long
                .per_packet()
                .partial_cmp(&y.long.per_packet())
                .unwrap()
        });
        w
    }

    /// The pair whose long window is the median.
    fn median(&self) -> &Pair {
        let w = self.sorted();
        w[w.len() / 2]
    }

    fn median_slope(&self) -> f64 {
        let mut v: Vec<f64> = self.pairs.iter().map(Pair::slope).collect();
        v.sort_by(|x, y| x.partial_cmp(y).unwrap());
        v[v.len() / 2]
    }

    fn windows(&self) -> impl Iterator<Item = &Window> {
        self.pairs.iter().flat_map(|p| [&p.short, &p.long])
    }
}

/// The total instructions (`totals:` or `summary:` line) of a callgrind
/// output file.
fn total_ir(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file).expect("callgrind file");
    let mut total = None;
    for l in text.lines() {
        if let Some(v) = l
            .strip_prefix("totals:")
            .or_else(|| l.strip_prefix("summary:"))
        {
            let v = v.split_whitespace().next().and_then(|x| x.parse().ok());
            total = total.max(v);
        }
    }
    total.unwrap_or_else(|| panic!("no totals in {}", file.display()))
}

/// The per-thread files of dump `n` of the valgrind process `pid`
/// (`NAME.PID.N-TT`).
fn dump_files(dir: &Path, name: &str, pid: u32, n: usize) -> Vec<PathBuf> {
    let want = format!("{name}.{pid}.{n}-");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(&want))
        })
        .collect();
    v.sort();
    v
}

/// Measures one window of about `packets` frames through the middle box
/// `pid` (running, instrumentation off, traffic flowing); `n` is the
/// number of the callgrind dump it makes.
fn window(dir: &Path, name: &str, pid: u32, g: &Gen, packets: u64, n: usize) -> Window {
    let c0 = g.rx();
    monitor(dir, pid, "instrumentation on");
    let c1 = g.rx();
    g.shared.min_waiting.store(u64::MAX, Ordering::Relaxed);
    g.shared.measuring.store(true, Ordering::Relaxed);
    g.wait_rx(c1 + packets, Duration::from_secs(600), "window");
    g.shared.measuring.store(false, Ordering::Relaxed);
    let c2 = g.rx();
    monitor(dir, pid, "instrumentation off");
    let c3 = g.rx();
    let min_waiting = g.shared.min_waiting.load(Ordering::Relaxed);
    monitor(dir, pid, "dump");
    let files = dump_files(dir, name, pid, n);
    assert!(
        !files.is_empty(),
        "no callgrind dump {n} of {name} in {}",
        dir.display()
    );
    let mut irs: Vec<(u64, PathBuf)> = files.into_iter().map(|f| (total_ir(&f), f)).collect();
    irs.sort();
    let (fwd_ir, fwd_file) = irs.pop().expect("a thread");
    let w = Window {
        packets: c2 - c1,
        brackets: (c1 - c0) + (c3 - c2),
        fwd_ir,
        other_ir: irs.iter().map(|x| x.0).sum(),
        fwd_file,
        min_waiting,
    };
    eprintln!(
        "{name} window {n}: {} packets (+{} around the switches), forwarding thread {} instructions ({:.1}/packet), other threads {}, fewest frames waiting {}",
        w.packets,
        w.brackets,
        w.fwd_ir,
        w.fwd_ir as f64 / w.packets as f64,
        w.other_ir,
        w.min_waiting
    );
    w
}

/// `a.pairs` pairs of windows (a quarter of `a.packets`, then
/// `a.packets`) through the middle box `pid`.
fn pairs(a: &Args, dir: &Path, name: &str, pid: u32, g: &Gen) -> Vec<Pair> {
    // Steady state (uninstrumented, so fast) before the first window.
    let c = g.rx();
    g.wait_rx(c + 20_000, Duration::from_secs(60), "warm-up");
    let rt = Realtime::new();
    let t0 = Instant::now();
    let v: Vec<Pair> = (0..a.pairs)
        .map(|k| {
            let short = window(dir, name, pid, g, a.packets / 4, 2 * k + 1);
            let long = window(dir, name, pid, g, a.packets, 2 * k + 2);
            let p = Pair { short, long };
            eprintln!(
                "{name} pair {}: long window {:.1} instructions/packet, slope {:.1}",
                k + 1,
                p.long.per_packet(),
                p.slope()
            );
            p
        })
        .collect();
    drop(rt);
    eprintln!("{name}: windows took {:.1?}", t0.elapsed());
    v
}

fn run_memifd(a: &Args, ns: &Netns, dir: &Path) -> Side {
    let mut d = Daemon::start_wrapped(
        &a.memifd,
        &dir.join("memifd"),
        "0",
        None,
        &callgrind(dir, "memifd"),
        Duration::from_secs(120),
    );
    let pid = std::process::id();
    let net = format!("dp-instr-{pid}");
    let mut keys = Vec::new();
    let mut conns = Vec::new();
    for (p, ip) in IPS.iter().enumerate() {
        let req = AttachRequest {
            key: AttachmentKey {
                container_id: format!("dp-instr-{p}"),
                ifname: format!("memif-i{p}"),
            },
            network: net.clone(),
            netns: ns.path(),
            socket: None,
            spec: MemifSpec {
                mode: Mode::Ethernet,
                rx_mode: RxMode::Polling,
                ..MemifSpec::default()
            },
            ips: vec![ip.to_string().parse().unwrap()],
            pod: None,
            steer: None,
            vni: None,
        };
        d.client().attach(req.clone()).expect("attach");
        conns.push(slave(ns, &req.socket_name(), &format!("gen{p}")));
        keys.push(req.key);
    }
    let t0 = Instant::now();
    while d.client().status().expect("status").connected < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "memifd: the generator's interfaces did not connect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let g = Gen::start(conns);
    g.sending(true);
    let w = pairs(a, dir, "memifd", d.pid(), &g);
    let lost = g.drain();
    let sent = g.shared.tx.load(Ordering::Relaxed);
    let drops = format!(
        "{:?}",
        d.client().get(keys[1].clone()).expect("get").stats.drops
    );
    eprintln!("memifd: drops at port 1: {drops}");
    for c in g.stop() {
        c.disconnect("dp_instr done");
    }
    for k in keys {
        let _ = d.client().detach(k);
    }
    d.stop(Duration::from_secs(30));
    Side {
        pairs: w,
        lost,
        sent,
    }
}

fn run_testpmd(a: &Args, ns: &Netns, dir: &Path) -> Side {
    let pid = std::process::id();
    let socks = [format!("dp-instr-{pid}-m0"), format!("dp-instr-{pid}-m1")];
    let mut t = Testpmd::start_wrapped(
        TestpmdOpts {
            label: "middle",
            prefix: format!("dp-instr-{pid}-mid"),
            netns: Some(&ns.0),
            ports: vec![("server", socks[0].clone()), ("server", socks[1].clone())],
            lcores: (1, 0),
            args: vec![
                "--forward-mode=io".into(),
                format!("--burst={}", a.testpmd_burst),
            ],
            out: dir.join("testpmd.out"),
        },
        &callgrind(dir, "testpmd"),
        Duration::from_secs(120),
    );
    let conns: Vec<SlaveConnection> = socks
        .iter()
        .enumerate()
        .map(|(p, s)| slave(ns, &format!("@{s}"), &format!("gen{p}")))
        .collect();
    t.wait_link_up(0);
    t.wait_link_up(1);
    let g = Gen::start(conns);
    t.cmd("start");
    g.sending(true);
    let w = pairs(a, dir, "testpmd", t.pid(), &g);
    let lost = g.drain();
    let sent = g.shared.tx.load(Ordering::Relaxed);
    // The PMD may crash if a peer leaves while the lcore polls: stop first.
    let stats = t.cmd("stop");
    if std::env::var_os("DP_INSTR_DEBUG").is_some() {
        eprintln!("{stats}");
    }
    for c in g.stop() {
        c.disconnect("dp_instr done");
    }
    t.quit();
    Side {
        pairs: w,
        lost,
        sent,
    }
}

/// Self cost per `(source file, function)` of a callgrind file
/// (`callgrind_annotate`), names shortened by [`split_name`].
fn self_costs(file: &Path) -> HashMap<(String, String), u64> {
    let o = Command::new("callgrind_annotate")
        .args(["--threshold=100", "--auto=no"])
        .arg(file)
        .output()
        .expect("callgrind_annotate");
    assert!(
        o.status.success(),
        "callgrind_annotate: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    let mut v = HashMap::new();
    for l in text.lines() {
        let l = l.trim_start();
        let Some((num, rest)) = l.split_once(' ') else {
            continue;
        };
        let Ok(n) = num.replace(',', "").parse::<u64>() else {
            continue;
        };
        // "N (x.y%)  file:function [object]"
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix('(') {
            Some(r) => r.split_once(')').map_or(r, |x| x.1).trim_start(),
            None => rest,
        };
        if rest.starts_with("PROGRAM TOTALS") {
            continue;
        }
        let name = match rest.rfind(" [") {
            Some(i) => &rest[..i],
            None => rest,
        };
        *v.entry(split_name(name)).or_default() += n;
    }
    v
}

/// `file:function` as (file, function), shortened: the standard
/// library's paths from `core/` or `alloc/`, ours from below `src/`, the
/// crate's name and callgrind's recursion marker (`'2`) dropped.
fn split_name(name: &str) -> (String, String) {
    // The first single ':' (paths have none, names have "::").
    let b = name.as_bytes();
    let colon = (0..b.len())
        .find(|&i| b[i] == b':' && b.get(i + 1) != Some(&b':') && (i == 0 || b[i - 1] != b':'));
    let (file, func) = match colon {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => ("???", name),
    };
    let file = match (file.find("/library/"), file.find("src/")) {
        (Some(i), _) => &file[i + "/library/".len()..],
        (None, Some(i)) => &file[i + "src/".len()..],
        _ => file,
    };
    let func = func.strip_prefix("memif_cni::").unwrap_or(func);
    let func = match func.rfind('\'') {
        Some(i) if func[i + 1..].chars().all(|c| c.is_ascii_digit()) => &func[..i],
        _ => func,
    };
    (file.to_string(), func.to_string())
}

/// `(instructions per packet, name)`, most first.
type Places = Vec<(f64, String)>;

/// memifd's top `k` functions and top `k` source files by self cost per
/// packet in window `w`.
fn top_places(w: &Window, k: usize) -> (Places, Places) {
    let n = w.packets as f64;
    let mut by_fn: HashMap<String, f64> = HashMap::new();
    let mut by_file: HashMap<String, f64> = HashMap::new();
    for ((file, func), ir) in self_costs(&w.fwd_file) {
        *by_fn.entry(func).or_default() += ir as f64 / n;
        *by_file.entry(file).or_default() += ir as f64 / n;
    }
    let top = |m: HashMap<String, f64>| {
        let mut v: Vec<(f64, String)> = m.into_iter().map(|(k, x)| (x, k)).collect();
        v.retain(|x| x.0 >= 0.05);
        v.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap());
        v.truncate(k);
        v
    };
    (top(by_fn), top(by_file))
}

fn main() {
    let a = args();
    let pid = std::process::id();
    let tmp = TempDir {
        path: std::env::temp_dir().join(format!("dp-instr-{pid}")),
        keep: a.keep,
    };
    let dir = &tmp.path;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let ns = Netns::new(format!("dp-instr-{pid}"));

    let m = run_memifd(&a, &ns, dir);
    let t = run_testpmd(&a, &ns, dir);

    let (mm, tm) = (&m.median().long, &t.median().long);
    let ratio = mm.per_packet() / tm.per_packet();
    let spread = |s: &Side| {
        let w = s.sorted();
        format!(
            "{:.1}..{:.1}",
            w[0].long.per_packet(),
            w[w.len() - 1].long.per_packet()
        )
    };
    let min_waiting = |s: &Side| s.windows().map(|w| w.min_waiting).min().unwrap_or(0);
    let other = |w: &Window| w.other_ir as f64 / w.packets as f64;
    println!(
        "instructions per forwarded 64-byte frame (callgrind, user-space instructions): median of {} windows of {} frames per side",
        a.pairs, a.packets
    );
    println!("| measure | value | ratio | target |");
    println!("|---|---:|---:|---:|");
    println!(
        "| (f) memifd forwarding thread, instructions per packet (windows {}) | {:.1} | | |",
        spread(&m),
        mm.per_packet()
    );
    println!(
        "| (f) testpmd io forwarding lcore (burst {}), instructions per packet (windows {}) | {:.1} | | |",
        a.testpmd_burst,
        spread(&t),
        tm.per_packet()
    );
    println!(
        "| (f) memifd / testpmd, instructions per packet | | {ratio:.2} | <= 1.0 {} |",
        if ratio <= 1.0 { "met" } else { "NOT MET" }
    );
    let (ms, ts) = (m.median_slope(), t.median_slope());
    println!(
        "| (f) cross-check: slope between {}- and {}-frame windows (switch edges cancel), memifd / testpmd | {ms:.1} / {ts:.1} | {:.2} | |",
        a.packets / 4,
        a.packets,
        ms / ts
    );
    println!(
        "| (f) other threads' instructions per packet, memifd / testpmd | {:.2} / {:.2} | | ~0 |",
        other(mm),
        other(tm)
    );
    println!(
        "| (f) fewest frames waiting in a middle-box rx ring in any window, memifd / testpmd (>= 1: every poll a full burst) | {} / {} | | >= 1 |",
        min_waiting(&m),
        min_waiting(&t)
    );
    println!(
        "| (f) frames lost (sent, not received), memifd / testpmd | {} of {} / {} of {} | | 0 |",
        m.lost, m.sent, t.lost, t.sent
    );
    let (fns, files) = top_places(mm, a.top);
    for (what, places) in [
        (
            "(f) memifd self cost by function (symbols left by LTO)",
            fns,
        ),
        ("(f) memifd self cost by source file", files),
    ] {
        for (per, name) in places {
            let name = name.replace('|', "\\|");
            println!(
                "| {what}: `{name}` (instr/pkt, % of the thread's) | {per:.1} | {:.1}% | |",
                per / mm.per_packet() * 100.0
            );
        }
    }
    drop(ns);
    drop(tmp);
    println!("instr memifd/testpmd {ratio:.2}");
}
