//! The dataplane benchmark, everything measured side by side in one run
//! (run as root through `e2e/bench-dataplane.sh`, which builds in release):
//!
//! (a) a loop of 64-byte frames between the two memif ports of one
//!     `dpdk-testpmd` (io forwarding, started with `tx_first`), through
//!     memifd (two pods' attachments, one network, adaptive) against the
//!     same loop through a second testpmd as the middle box (two memif
//!     server ports, io forwarding). The figure is the loop testpmd's
//!     receive rate on both ports: every frame crosses the middle box once
//!     per lap. The loop testpmd forwards on core 1, the middle box on
//!     core 0 (memifd pinned there with taskset).
//!     Port 0 alone injects (`tx_first` with one forwarding port, twice
//!     the bursts, then both ports forward), so both middle boxes carry
//!     the same loop: testpmd's generator gives every frame one destination
//!     address (`--tx-ip` is global), and memifd routes on it, so through
//!     memifd every frame leaves the loop testpmd on port 0 and comes back
//!     on port 1. The middle box (a cross-connect) sends it the same way.
//! (b) the kernel path: 64-byte UDP frames from namespace A to namespace
//!     B over veth pairs, routed by the kernel of a third namespace
//!     (a stand-in for the host: same code, without touching the host's
//!     forwarding sysctl); the figure is the router's forwarding rate
//!     (its egress veth's tx packets). Sender on core 1, receiver core 0.
//! (c) memifd's CPU with 100 connected, idle interfaces in interrupt, then
//!     adaptive mode (utime + stime over a window, % of one core).
//!
//! (a)'s two loops are set up once and measured in alternation, `--reps`
//! pairs of rounds (ABBA order); a round warms up for half a second and
//! samples `--samples` one-second windows. On this shared 2-vCPU machine
//! the absolute rates jump (the testpmd loop between ~6 and ~25 Mpps) as
//! the host moves the vCPUs: what crossing cores costs depends on where
//! they land. So each round is bracketed by a placement probe (the round
//! trip of a cache line bounced between a thread on core 0 and one on
//! core 1: ~60 ns or ~190 ns here). Rounds whose two probes disagree
//! (the vCPUs moved) are left out, the steady ones are grouped by probe
//! (one band, or two split at the widest gap), and a pair counts for a
//! band when both its rounds fell in it. Each band with at least three
//! pairs gives a ratio (the median of its pairs'); the verdict is the
//! worse of them, "inconclusive" if no band has three. Beside each median
//! is its 95% interval (order statistics, from six pairs on): one pair's
//! ratio here spreads by +-15% even within a band, so a median a few
//! percent from the target is only told apart from it with many pairs
//! (`--reps 40`), and the verdict says when the interval straddles 1.05.
//! With `--memifd-before PATH`, the same holds for after / before, per
//! band, from the triples whose two memifd rounds saw that band. While
//! memifd's rounds sample, a thread reads its rings through its API every
//! 100 ms: the share of the loop's waiting frames that wait in memifd's
//! receive ring rather than in the loop testpmd's says which of the two is
//! the slower stage, that is what the round measured (printed per pair and
//! per band). (b) runs
//! `--kernel-reps` times after (a); its ratio uses memifd's rate in its
//! slower band.
//! (a') a diagnostic, no target: (a) with both ports injecting
//!     (`--both-reps` pairs, 0 to skip). The two middle boxes then carry
//!     different loops: through memifd still one-sided (port 0 out, port 1
//!     in), through the cross-connect two loops of opposite direction,
//!     which the loop testpmd forwards more cheaply (its stores into its
//!     transmit ring stall less). So (a') measures the loop testpmd in two
//!     traffic patterns more than the middle boxes.
//! (a'') a diagnostic, no target: the loops of (a') with the loop testpmd
//!     in `5tswap` mode instead of `io` (`--swap-reps` pairs, 0 to skip).
//!     `5tswap` swaps addresses on every lap, which sends each frame back
//!     the way it came: both paths become two-sided again and carry the
//!     same traffic.
//! (d) the host path: memifd's uplink (TUN) from a pod to the host and
//!     back, against the kernel's veth path (uplink.rs).
//! (e) latency: the round trip of single frames through memifd (polling,
//!     adaptive, interrupt) and through a testpmd middle box (rtt.rs).
//! (f) instructions per forwarded frame under callgrind, memifd against
//!     testpmd: measured by `examples/dp_instr.rs`, which the script runs
//!     first; its rows come in with `--instr-table FILE`.
//! `--only a,b,...` runs some measures; the last line sums up:
//! `dataplane: a X.XX, instr memifd/testpmd Y.YY, rtt p50 memifd/testpmd
//! Z.ZZ, uplink/veth W.WW` ("-" for what did not run).
//! `DP_BENCH_ONLY=memifd|testpmd` measures one loop only (to profile it).

mod harness;
mod rtt;
#[path = "../../tests/common/testpmd.rs"]
mod testpmd;
mod uplink;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{attach, median, median_ci, pin, probe, sample, sh, Daemon, Namespaces};
use memif_cni::api::{AttachmentKey, Client, ConnectionInfo, RingState, RxMode};
use memif_cni::memif::socket::Channel;
use memif_cni::memif::{SlaveConfig, SlaveConnection, SocketAddr};
use memif_cni::netns::NetnsGuard;
use testpmd::{Testpmd, TestpmdOpts};

struct Args {
    memifd: PathBuf,
    /// Another memifd build (the one before a change) measured in (a)
    /// beside this one, in the same alternation.
    before: Option<PathBuf>,
    reps: usize,
    samples: usize,
    bursts: usize,
    idle: usize,
    kernel_reps: usize,
    both_reps: usize,
    swap_reps: usize,
    /// (e): rounds, and round trips per round and middle box.
    rtt_rounds: usize,
    rtt_trips: usize,
    /// Only these measures (letters, e.g. "e"); all when empty.
    only: String,
    /// (d).
    uplink: uplink::Opts,
    /// (f): the output of `dp_instr` (run before, by the script).
    instr_table: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        memifd: "target/release/memifd".into(),
        before: None,
        reps: 10,
        samples: 1,
        bursts: 8,
        idle: 100,
        kernel_reps: 3,
        both_reps: 6,
        swap_reps: 6,
        rtt_rounds: 16,
        rtt_trips: 20000,
        only: String::new(),
        uplink: uplink::Opts::default(),
        instr_table: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--memifd" => a.memifd = val.into(),
            "--memifd-before" => a.before = Some(val.into()),
            "--reps" => a.reps = val.parse().expect("--reps N"),
            "--samples" => a.samples = val.parse().expect("--samples N"),
            "--bursts" => a.bursts = val.parse().expect("--bursts N"),
            "--idle" => a.idle = val.parse().expect("--idle N"),
            "--kernel-reps" => a.kernel_reps = val.parse().expect("--kernel-reps N"),
            "--both-reps" => a.both_reps = val.parse().expect("--both-reps N"),
            "--swap-reps" => a.swap_reps = val.parse().expect("--swap-reps N"),
            "--rtt-rounds" => a.rtt_rounds = val.parse().expect("--rtt-rounds N"),
            "--rtt-trips" => a.rtt_trips = val.parse().expect("--rtt-trips N"),
            "--only" => a.only = val,
            "--instr-table" => a.instr_table = Some(val.into()),
            k if a.uplink.parse(k, &val) => {}
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// One kind of loop: how the loop testpmd forwards and which of its ports
/// inject the frames.
#[derive(Clone, Copy)]
struct Loop {
    /// Names its files, sockets and log lines.
    tag: &'static str,
    /// The loop testpmd's forward mode.
    fwd: &'static str,
    /// Port 0 alone injects; else both ports do (`tx_first`'s default).
    one_port: bool,
}

/// (a): io forwarding, port 0 injects.
const IO: Loop = Loop {
    tag: "io",
    fwd: "io",
    one_port: true,
};
/// (a'): io forwarding, both ports inject.
const IO_BOTH: Loop = Loop {
    tag: "io-both",
    fwd: "io",
    one_port: false,
};
/// (a''): 5tswap forwarding, both ports inject.
const SWAP: Loop = Loop {
    tag: "5tswap",
    fwd: "5tswap",
    one_port: false,
};

/// The loop testpmd: two memif client ports (sockets `s0`, `s1`) in
/// netns `ns`, forwarding on core 1 as `lp` says; waits for both links.
fn loop_testpmd(ns: &str, dir: &Path, lp: Loop, via: &str, s0: &str, s1: &str) -> Testpmd {
    let (tag, fwd) = (lp.tag, lp.fwd);
    let mut t = Testpmd::start(TestpmdOpts {
        label: "loop",
        prefix: format!("dp-bench-{}-loop-{tag}-{via}", std::process::id()),
        netns: Some(ns),
        ports: vec![("client", s0.into()), ("client", s1.into())],
        lcores: (0, 1),
        args: vec![
            format!("--forward-mode={fwd}"),
            "--burst=32".into(),
            "--tx-ip=10.199.1.1,10.199.1.2".into(),
        ],
        out: dir.join(format!("loop-{tag}-{via}.out")),
    });
    t.wait_link_up(0);
    t.wait_link_up(1);
    t
}

/// Per-port receive counters of the loop testpmd, summed.
fn loop_count(t: &mut Testpmd) -> u64 {
    t.port_stats(0).rx_packets + t.port_stats(1).rx_packets
}

/// One measured round of a loop: (re)starts the loop testpmd (injecting
/// frames, as `inject` says, the first time only: what is in flight stays
/// in the rings between rounds, `--no-flush-rx`), samples, stops it.
fn round(a: &Args, t: &mut Testpmd, inject: Option<Loop>, watch: Option<&Watch>) -> Round {
    let before = probe();
    if let Some(lp) = inject {
        // A memif client posts its receive buffers on its first rx burst:
        // poll once before injecting, or the first frames find no buffers.
        t.cmd("start");
        std::thread::sleep(Duration::from_millis(300));
        t.cmd("stop");
        if lp.one_port {
            // The same number of frames from port 0 alone: they wait in
            // port 1's receive ring until both ports forward.
            let n = 2 * a.bursts;
            t.cmd("set nbport 1");
            t.cmd(&format!("start tx_first {n}"));
            std::thread::sleep(Duration::from_millis(300));
            t.cmd("stop");
            let sent = t.port_stats(0).tx_packets;
            assert_eq!(sent, n as u64 * 32, "port 0 did not inject every frame");
            t.cmd("set nbport 2");
            t.cmd("start");
        } else {
            t.cmd(&format!("start tx_first {}", a.bursts));
        }
    } else {
        t.cmd("start");
    }
    let (pps, held) = match watch {
        Some(w) => w.during(|| sample(a.samples, || loop_count(t))),
        None => (sample(a.samples, || loop_count(t)), None),
    };
    let out = t.cmd("stop");
    if std::env::var_os("DP_BENCH_DEBUG").is_some() {
        eprintln!("{out}");
    }
    let after = probe();
    Round {
        pps,
        place: (before + after) / 2.0,
        steady: agree(before, after, STEADY),
        held,
    }
}

/// Ring 0 of an attachment's live connection, as `rings` picks (its
/// slave-to-master or master-to-slave rings).
fn first_ring(
    c: &mut Client,
    key: &AttachmentKey,
    rings: impl FnOnce(ConnectionInfo) -> Vec<RingState>,
) -> Option<RingState> {
    let conn = c.get(key.clone()).ok()?.connection?;
    rings(conn).into_iter().next()
}

/// Where a loop through memifd keeps its frames, read from memifd's rings
/// (its API) while a round samples: frames wait either in memifd's receive
/// ring (port `from`'s slave-to-master ring, published and not consumed)
/// or in the loop testpmd's (port `to`'s master-to-slave ring, filled and
/// not yet given back). They pile up before the slower stage of the loop.
struct Watch<'d> {
    daemon: &'d Daemon,
    from: AttachmentKey,
    to: AttachmentKey,
}

impl Watch<'_> {
    /// Runs `f` while a thread reads the rings every 100 ms; returns `f`'s
    /// result and the median share of the frames that waited in memifd
    /// (None if no reading found any).
    fn during<R>(&self, f: impl FnOnce() -> R) -> (R, Option<f64>) {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut c = self.daemon.client();
                let mut shares = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    shares.extend(self.share(&mut c));
                }
                (!shares.is_empty()).then(|| median(shares))
            });
            let r = f();
            stop.store(true, Ordering::Relaxed);
            (r, reader.join().expect("ring reader"))
        })
    }

    /// One reading: the share of the waiting frames that wait in memifd.
    fn share(&self, c: &mut Client) -> Option<f64> {
        let rx = first_ring(c, &self.from, |conn| conn.s2m)?;
        let tx = first_ring(c, &self.to, |conn| conn.m2s)?;
        let in_memifd = f64::from(rx.head.wrapping_sub(rx.tail));
        let posted = f64::from(tx.head.wrapping_sub(tx.tail));
        let in_loop = (f64::from(tx.size) - posted).max(0.0);
        let all = in_memifd + in_loop;
        (all > 0.0).then(|| in_memifd / all)
    }
}

/// One measured round of a loop, with the placement probed around it.
#[derive(Clone, Copy, Default)]
struct Round {
    pps: f64,
    /// [`probe`]'s round trip (ns), the mean of before and after.
    place: f64,
    /// The probes before and after agree (within [`STEADY`]): the vCPUs
    /// did not move (much) during the round.
    steady: bool,
    /// memifd's rounds: the share of the loop's waiting frames that waited
    /// in memifd ([`Watch`]). Near 1: memifd was the slower stage, the
    /// round measured it; near 0: the loop testpmd was, and the round
    /// measured the loop testpmd more than memifd.
    held: Option<f64>,
}

/// Probes closer than this factor saw the same placement.
const STEADY: f64 = 1.3;

/// Steady rounds whose probes differ by more than this factor saw two
/// placements (bands).
const BAND: f64 = 1.5;

/// Whether two probes are within `factor` of each other.
fn agree(x: f64, y: f64, factor: f64) -> bool {
    x.max(y) < factor * x.min(y)
}

/// (a), (a') or (a'') as `lp` says, `reps` pairs: both loops set up
/// once, side by side, and measured in alternation (ABBA order), so that
/// each pair of rounds sees the same machine. memifd's two ports are
/// adaptive: busy they poll exactly as in polling mode, idle (while the
/// other loop runs) they sleep and leave core 0 to the middle box.
/// Returns (memifd, testpmd) per pair, and memifd's drop counts.
fn run_loops(
    a: &Args,
    ns: &str,
    dir: &Path,
    lp: Loop,
    reps: usize,
) -> (Vec<(Round, Round)>, String, Vec<Round>) {
    let pid = std::process::id();
    let tag = lp.tag;
    let d = Daemon::start(&a.memifd, &dir.join(format!("memifd-{tag}")), "0");
    // The build before, on the same core, its own ports and network: only
    // in (a).
    let before = a.before.as_ref().filter(|_| lp.tag == IO.tag).map(|b| {
        let d = Daemon::start(b, &dir.join(format!("memifd-before-{tag}")), "0");
        let net = format!("dp-bench-{pid}-before");
        for (c, i, ip) in [
            ("bench-o0", "memif-o0", "10.199.1.1"),
            ("bench-o1", "memif-o1", "10.199.1.2"),
        ] {
            attach(&d, ns, c, i, &net, ip, RxMode::Adaptive);
        }
        d
    });
    let net = format!("dp-bench-{pid}");
    let r0 = attach(
        &d,
        ns,
        "bench-p0",
        "memif-b0",
        &net,
        "10.199.1.1",
        RxMode::Adaptive,
    );
    let r1 = attach(
        &d,
        ns,
        "bench-p1",
        "memif-b1",
        &net,
        "10.199.1.2",
        RxMode::Adaptive,
    );
    let (s0, s1) = (
        format!("dp-bench-{pid}-{tag}-m0"),
        format!("dp-bench-{pid}-{tag}-m1"),
    );
    let mut mid = Testpmd::start(TestpmdOpts {
        label: "middle",
        prefix: format!("dp-bench-{pid}-{tag}-mid"),
        netns: Some(ns),
        ports: vec![("server", s0.clone()), ("server", s1.clone())],
        lcores: (1, 0),
        args: vec!["--forward-mode=io".into(), "--burst=32".into()],
        out: dir.join(format!("middle-{tag}.out")),
    });
    let mut via_memifd = loop_testpmd(ns, dir, lp, "memifd", "memif-b0", "memif-b1");
    let mut via_mid = loop_testpmd(ns, dir, lp, "testpmd", &s0, &s1);
    let mut via_before = before
        .as_ref()
        .map(|_| loop_testpmd(ns, dir, lp, "before", "memif-o0", "memif-o1"));
    let only = std::env::var("DP_BENCH_ONLY").unwrap_or_default();
    let watch = Watch {
        daemon: &d,
        from: r0.key,
        to: r1.key.clone(),
    };
    let mut pairs = Vec::new();
    let mut olds = Vec::new();
    for rep in 0..reps {
        let inject = (rep == 0).then_some(lp);
        let memifd_round = |t: &mut Testpmd| {
            if only == "testpmd" {
                return Round::default();
            }
            round(a, t, inject, Some(&watch))
        };
        let testpmd_round = |mid: &mut Testpmd, t: &mut Testpmd| {
            if only == "memifd" {
                return Round::default();
            }
            mid.cmd("start");
            let r = round(a, t, inject, None);
            mid.cmd("stop");
            r
        };
        let (m, t) = match via_before.as_mut() {
            None if rep % 2 == 0 => {
                let m = memifd_round(&mut via_memifd);
                (m, testpmd_round(&mut mid, &mut via_mid))
            }
            None => {
                let t = testpmd_round(&mut mid, &mut via_mid);
                (memifd_round(&mut via_memifd), t)
            }
            // Three loops: the order rotates so each goes first as often.
            Some(vb) => {
                let (mut m, mut t, mut o) = (None, None, None);
                for k in 0..3 {
                    match (rep + k) % 3 {
                        0 => m = Some(memifd_round(&mut via_memifd)),
                        1 => t = Some(testpmd_round(&mut mid, &mut via_mid)),
                        _ => o = Some(round(a, vb, inject, None)),
                    }
                }
                let o = o.expect("ran");
                eprintln!(
                    "{tag} pair {}: memifd before {:.2} Mpps (probe {:.0} ns{})",
                    rep + 1,
                    o.pps / 1e6,
                    o.place,
                    if o.steady { "" } else { ", moved" }
                );
                olds.push(o);
                (m.expect("ran"), t.expect("ran"))
            }
        };
        eprintln!(
            "{tag} pair {}: memifd {:.2} Mpps (probe {:.0} ns{}{}), testpmd {:.2} Mpps (probe {:.0} ns{}), ratio {:.2}",
            rep + 1,
            m.pps / 1e6,
            m.place,
            if m.steady { "" } else { ", moved" },
            m.held.map_or(String::new(), |h| format!(", {:.0}% of the waiting frames in memifd", 100.0 * h)),
            t.pps / 1e6,
            t.place,
            if t.steady { "" } else { ", moved" },
            m.pps / t.pps
        );
        pairs.push((m, t));
    }
    let drops = format!("{:?}", d.client().get(r1.key).expect("get").stats.drops);
    via_memifd.quit();
    via_mid.quit();
    if let Some(mut vb) = via_before {
        vb.quit();
    }
    mid.quit();
    (pairs, drops, olds)
}

fn tx_packets(ns: &str, dev: &str) -> u64 {
    let o = Command::new("ip")
        .args(["-n", ns, "-s", "-j", "link", "show", dev])
        .output()
        .expect("ip link");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ip -j");
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .expect("tx packets")
}

/// (b) the kernel path. Returns the router's forwarding rate.
fn run_kernel(a: &Args, nss: &[String; 3]) -> f64 {
    let [na, nr, nb] = nss;
    let stop = Arc::new(AtomicBool::new(false));
    let rx = {
        let (stop, nb) = (stop.clone(), nb.clone());
        std::thread::spawn(move || {
            pin(0);
            let _g = NetnsGuard::enter(Path::new(&format!("/run/netns/{nb}"))).unwrap();
            let s = UdpSocket::bind("10.199.3.2:9").expect("bind receiver");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let _ = s.recv(&mut buf);
            }
        })
    };
    let tx = {
        let (stop, na) = (stop.clone(), na.clone());
        std::thread::spawn(move || {
            pin(1);
            let _g = NetnsGuard::enter(Path::new(&format!("/run/netns/{na}"))).unwrap();
            let s = UdpSocket::bind("10.199.2.2:0").expect("bind sender");
            s.connect("10.199.3.2:9").expect("connect");
            // 14 + 20 + 8 + 22 = 64-byte frames.
            let payload = [0x42u8; 22];
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    let _ = s.send(&payload);
                }
            }
        })
    };
    let pps = sample(a.samples, || tx_packets(nr, "r-b"));
    stop.store(true, Ordering::Relaxed);
    tx.join().unwrap();
    rx.join().unwrap();
    pps
}

fn setup_kernel(ns: &mut Namespaces, tag: &str) -> [String; 3] {
    let names = [
        format!("dp-bk-{tag}-a"),
        format!("dp-bk-{tag}-r"),
        format!("dp-bk-{tag}-b"),
    ];
    for n in &names {
        ns.add(n);
    }
    let [na, nr, nb] = &names;
    sh(&[
        "ip", "-n", na, "link", "add", "a-r", "type", "veth", "peer", "name", "r-a", "netns", nr,
    ]);
    sh(&[
        "ip", "-n", nb, "link", "add", "b-r", "type", "veth", "peer", "name", "r-b", "netns", nr,
    ]);
    for (n, dev, addr) in [
        (na, "a-r", "10.199.2.2/24"),
        (nr, "r-a", "10.199.2.1/24"),
        (nr, "r-b", "10.199.3.1/24"),
        (nb, "b-r", "10.199.3.2/24"),
    ] {
        sh(&["ip", "-n", n, "addr", "add", addr, "dev", dev]);
        sh(&["ip", "-n", n, "link", "set", dev, "up"]);
    }
    for n in [na, nr, nb] {
        sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
    }
    sh(&[
        "ip",
        "-n",
        na,
        "route",
        "add",
        "default",
        "via",
        "10.199.2.1",
    ]);
    sh(&[
        "ip",
        "-n",
        nb,
        "route",
        "add",
        "default",
        "via",
        "10.199.3.1",
    ]);
    sh(&[
        "ip",
        "netns",
        "exec",
        nr,
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_forward=1",
    ]);
    names
}

/// (c) memifd's CPU with `n` connected idle interfaces in `mode`, as % of
/// one core over 5 s.
fn run_idle(a: &Args, ns: &str, dir: &Path, mode: RxMode) -> f64 {
    let d = Daemon::start(&a.memifd, &dir.join(format!("memifd-idle-{mode}")), "0");
    let net = format!("dp-idle-{}", std::process::id());
    let mut slaves: Vec<SlaveConnection> = Vec::new();
    for i in 0..a.idle {
        let ifname = format!("memif-i{i}");
        let ip = format!("10.199.{}.{}", 10 + i / 250, i % 250 + 1);
        let r = attach(&d, ns, &format!("idle-{i}"), &ifname, &net, &ip, mode);
        let addr = SocketAddr::parse(&r.socket_name()).unwrap();
        let chan =
            memif_cni::netns::run_in(Some(Path::new(&format!("/run/netns/{ns}"))), move || {
                Channel::connect(&addr)
            })
            .expect("netns")
            .expect("connect");
        let cfg = SlaveConfig {
            name: format!("idle-{i}"),
            log2_ring_size: 8,
            ..SlaveConfig::default()
        };
        slaves.push(SlaveConnection::handshake(chan, &cfg).expect("handshake"));
    }
    let t0 = Instant::now();
    while d.client().status().expect("status").connected < a.idle {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "idle interfaces did not all connect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Adaptive interfaces poll a little before they sleep.
    std::thread::sleep(Duration::from_secs(2));
    let hz = 100.0;
    let (c0, t0) = (d.cpu_ticks(), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let (c1, t1) = (d.cpu_ticks(), Instant::now());
    drop(slaves);
    (c1 - c0) as f64 / hz / (t1 - t0).as_secs_f64() * 100.0
}

/// (a)'s pairs grouped by placement. The ratio is taken pair by pair
/// (each pair measured back to back), then the median: the machine's
/// speed drifts between pairs (2 shared vCPUs; where the host places them
/// changes the cost of a cache line crossing cores several times over).
/// Each round's placement is probed before and after ([`probe`]): the
/// steady rounds' probes fall in one band or two (split at the widest
/// gap, when it is wider than 1.5x). A pair counts for a band when both
/// its rounds were steady and in that band; the others compare two
/// different machines and are left out.
struct Bands {
    /// Medians over all pairs (Mpps): memifd's loop, testpmd's loop.
    memifd: f64,
    testpmd: f64,
    bands: Vec<Band>,
    left_out: usize,
    /// The worse ratio of the bands with at least [`Bands::MIN_PAIRS`],
    /// and its band's 95% interval.
    worst: Option<(f64, Option<Interval>)>,
    /// Probes above this are the second band.
    cut: f64,
    /// memifd's loop in its slower band (all pairs if none counts).
    slow_memifd: f64,
}

/// One placement band of [`Bands`].
struct Band {
    /// The median probe (ns) of its steady rounds.
    probe_ns: f64,
    pairs: usize,
    /// The median of its pairs' memifd / testpmd, and its 95% interval.
    ratio: f64,
    ci: Option<Interval>,
    /// The median share of memifd's waiting frames that waited in memifd
    /// ([`Round::held`]).
    held: Option<f64>,
}

/// A median's 95% interval ([`median_ci`]): its low and high end.
type Interval = (f64, f64);

/// A median's 95% interval as printed beside it.
fn ci_text(ci: Option<Interval>) -> String {
    ci.map_or("(95%: too few)".into(), |(lo, hi)| {
        format!("(95%: {lo:.2}-{hi:.2})")
    })
}

impl Bands {
    /// A band needs this many pairs to count for the verdict.
    const MIN_PAIRS: usize = 3;

    fn of(pairs: &[(Round, Round)]) -> Bands {
        let mut places: Vec<f64> = pairs
            .iter()
            .flat_map(|(m, t)| [m, t])
            .filter(|r| r.steady)
            .map(|r| r.place)
            .collect();
        places.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let split = places
            .windows(2)
            .map(|w| (w[1] / w[0], (w[0] + w[1]) / 2.0))
            .fold(
                (1.0, f64::MAX),
                |best, g| if g.0 > best.0 { g } else { best },
            );
        let cut = if split.0 > BAND { split.1 } else { f64::MAX };
        let mut out = Bands {
            memifd: median(pairs.iter().map(|p| p.0.pps).collect()),
            testpmd: median(pairs.iter().map(|p| p.1.pps).collect()),
            bands: Vec::new(),
            left_out: pairs.len(),
            worst: None,
            cut,
            slow_memifd: f64::MAX,
        };
        for b in 0..2 {
            let in_band: Vec<&(Round, Round)> =
                pairs.iter().filter(|(m, t)| out.both_in(b, m, t)).collect();
            if in_band.is_empty() {
                continue;
            }
            let held: Vec<f64> = in_band.iter().filter_map(|(m, _)| m.held).collect();
            let held = (!held.is_empty()).then(|| median(held));
            let in_band: Vec<(f64, f64)> = in_band.iter().map(|(m, t)| (m.pps, t.pps)).collect();
            let probe_ns = out.probe_in(b, pairs.iter().flat_map(|(m, t)| [m, t]));
            let ratios: Vec<f64> = in_band.iter().map(|(m, t)| m / t).collect();
            let x = median(ratios.clone());
            let ci = median_ci(ratios);
            let n = in_band.len();
            out.left_out -= n;
            if n >= Self::MIN_PAIRS && out.worst.is_none_or(|w| x < w.0) {
                out.worst = Some((x, ci));
            }
            let slow = median(in_band.iter().map(|p| p.0).collect());
            out.slow_memifd = out.slow_memifd.min(slow);
            out.bands.push(Band {
                probe_ns,
                pairs: n,
                ratio: x,
                ci,
                held,
            });
        }
        if out.slow_memifd == f64::MAX {
            out.slow_memifd = out.memifd;
        }
        out
    }

    fn worst_text(&self) -> String {
        self.worst.map_or("-".into(), |w| format!("{:.2}", w.0))
    }

    /// Which band a steady round's probe falls in.
    fn band_of(&self, r: &Round) -> usize {
        usize::from(r.place > self.cut)
    }

    /// Whether both rounds were steady and in band `b`.
    fn both_in(&self, b: usize, x: &Round, y: &Round) -> bool {
        x.steady && y.steady && self.band_of(x) == b && self.band_of(y) == b
    }

    /// The median probe of the steady `rounds` in band `b`.
    fn probe_in<'r>(&self, b: usize, rounds: impl Iterator<Item = &'r Round>) -> f64 {
        median(
            rounds
                .filter(|r| r.steady && self.band_of(r) == b)
                .map(|r| r.place)
                .collect(),
        )
    }

    /// The rates and the per-band rows, labelled `what`.
    fn print(&self, what: &str, target: &str) {
        println!(
            "| {what} through memifd (Mpps, median) | {:.2} | | |",
            self.memifd / 1e6
        );
        println!(
            "| {what} through a testpmd middle box (Mpps, median) | {:.2} | | |",
            self.testpmd / 1e6
        );
        let tag = &what[..what.find(' ').unwrap_or(what.len())];
        for &Band {
            probe_ns,
            pairs: n,
            ratio: x,
            ci,
            held,
        } in &self.bands
        {
            let note = if n >= Self::MIN_PAIRS {
                ""
            } else {
                " (too few pairs to count)"
            };
            println!(
                "| {tag} memifd / testpmd, pairs at placement probe ~{probe_ns:.0} ns{note} | {n} pairs | {x:.2} {} | {target} |",
                ci_text(ci)
            );
            if let Some(h) = held {
                println!(
                    "| {tag} of those memifd rounds' waiting frames, the share in memifd (1: memifd the slower stage; 0: the loop testpmd) | {:.0}% | | |",
                    100.0 * h
                );
            }
        }
        if self.left_out > 0 {
            println!(
                "| {tag} pairs left out (placement moved or differed between halves) | {} | | |",
                self.left_out
            );
        }
    }
}

fn main() {
    let a = args();
    let want = |m: &str| a.only.is_empty() || a.only.split(',').any(|x| x == m);
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("dp-bench-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut ns = Namespaces(Vec::new());
    let pod_ns = format!("dp-bench-{pid}");
    ns.add(&pod_ns);

    let loops = |lp: Loop, reps: usize| {
        (reps > 0).then(|| {
            let (p, drops, olds) = run_loops(&a, &pod_ns, &dir, lp, reps);
            eprintln!("memifd drops at the receiving port ({}): {drops}", lp.tag);
            (p, olds)
        })
    };
    let io = want("a").then(|| loops(IO, a.reps.max(1)).expect("(a) runs at least one pair"));
    let both = want("a'")
        .then(|| loops(IO_BOTH, a.both_reps).map(|x| x.0))
        .flatten();
    let swap = want("a''")
        .then(|| loops(SWAP, a.swap_reps).map(|x| x.0))
        .flatten();
    let kernel = (want("b") && a.kernel_reps > 0).then(|| {
        let knss = setup_kernel(&mut ns, &pid.to_string());
        let mut kernel = Vec::new();
        for rep in 0..a.kernel_reps {
            let k = run_kernel(&a, &knss);
            eprintln!("kernel run {}: {:.3} Mpps", rep + 1, k / 1e6);
            kernel.push(k);
        }
        median(kernel)
    });
    let idle = want("c").then(|| {
        (
            run_idle(&a, &pod_ns, &dir, RxMode::Interrupt),
            run_idle(&a, &pod_ns, &dir, RxMode::Adaptive),
        )
    });
    let host_path = want("d")
        .then(|| uplink::run(&a.memifd, &dir, &a.uplink))
        .flatten();
    let latency = (want("e") && a.rtt_rounds > 0)
        .then(|| rtt::run(&a.memifd, &pod_ns, &dir, a.rtt_rounds, a.rtt_trips));

    let mut ran = Vec::new();
    if io.is_some() {
        ran.push(format!("(a) {} alternated pairs", a.reps));
    }
    if both.is_some() {
        ran.push(format!("(a') {}", a.both_reps));
    }
    if swap.is_some() {
        ran.push(format!("(a'') {}", a.swap_reps));
    }
    if kernel.is_some() {
        ran.push(format!("(b) median of {} runs", a.kernel_reps));
    }
    if host_path.is_some() {
        ran.push(format!("(d) {} rounds", a.uplink.reps));
    }
    if latency.is_some() {
        ran.push(format!(
            "(e) {} rounds of {} round trips",
            a.rtt_rounds, a.rtt_trips
        ));
    }
    println!(
        "dataplane benchmark: 64-byte frames, 2 cores; {}",
        ran.join(", ")
    );
    println!("| measure | value | ratio | target |");
    println!("|---|---:|---:|---:|");
    let bands = io.as_ref().map(|(pairs, olds)| {
        let io = Bands::of(pairs);
        io.print("(a) io loop from port 0", ">= 1.05");
        // The verdict is the median's; the interval says whether the
        // pairs' spread could have put it on the other side of 1.05.
        println!(
            "| (a) memifd / testpmd, the worse placement | | {} | >= 1.05 {} |",
            io.worst_text(),
            match io.worst {
                None => "inconclusive: too few comparable pairs",
                Some((x, Some((lo, _)))) if x >= 1.05 && lo >= 1.05 => "met",
                Some((x, _)) if x >= 1.05 => "met (its 95% interval reaches below)",
                Some((_, Some((_, hi)))) if hi >= 1.05 => {
                    "NOT MET (its 95% interval reaches above)"
                }
                Some(_) => "NOT MET",
            }
        );
        if !olds.is_empty() {
            let after_before = median(
                pairs
                    .iter()
                    .zip(olds)
                    .map(|((m, _), o)| m.pps / o.pps)
                    .collect(),
            );
            // Triples whose two memifd rounds saw the same steady band.
            for b in 0..2 {
                let r: Vec<f64> = pairs
                    .iter()
                    .zip(olds)
                    .filter(|((m, _), o)| io.both_in(b, m, o))
                    .map(|((m, _), o)| m.pps / o.pps)
                    .collect();
                if r.is_empty() {
                    continue;
                }
                let probe_ns =
                    io.probe_in(b, pairs.iter().zip(olds).flat_map(|((m, _), o)| [m, o]));
                println!(
                    "| (a) memifd after / before, both at placement probe ~{probe_ns:.0} ns | {} triples | {:.2} {} | |",
                    r.len(),
                    median(r.clone()),
                    ci_text(median_ci(r))
                );
            }
            let before_tp = median(
                pairs
                    .iter()
                    .zip(olds)
                    .map(|((_, t), o)| o.pps / t.pps)
                    .collect(),
            );
            println!(
                "| (a) memifd before (Mpps, median) | {:.2} | {before_tp:.2} vs testpmd | |",
                median(olds.iter().map(|o| o.pps).collect()) / 1e6
            );
            println!(
                "| (a) memifd after / before (median of {} triples) | | {after_before:.2} | >= 1.0 (no slowdown) |",
                olds.len()
            );
        }
        io
    });
    let diagnostics = [
        (
            both,
            "(a')",
            "io loop from both ports",
            "memifd one-sided, the cross-connect two-sided",
        ),
        (
            swap,
            "(a'')",
            "5tswap loop from both ports",
            "both paths two-sided",
        ),
    ];
    for (p, tag, what, paths) in diagnostics {
        let Some(p) = p else { continue };
        let b = Bands::of(&p);
        b.print(&format!("{tag} {what} (diagnostic)"), "");
        println!(
            "| {tag} memifd / testpmd, the worse placement ({paths}) | | {} | |",
            b.worst_text()
        );
    }
    if let Some(k) = kernel {
        // (b) conservatively: memifd's rate in its slower band, whichever
        // band the kernel runs saw.
        let ratio = bands.as_ref().map_or("-".into(), |io| {
            format!("memifd (slower band) / kernel = {:.1}", io.slow_memifd / k)
        });
        println!(
            "| (b) kernel path, veth + routing netns (Mpps) | {:.3} | {ratio} | >= 10 |",
            k / 1e6,
        );
    }
    if let Some((cpu_int, cpu_ad)) = idle {
        println!(
            "| (c) memifd CPU, {} idle interfaces, interrupt (% of a core) | {cpu_int:.2} | | ~0 |",
            a.idle
        );
        println!(
            "| (c) memifd CPU, {} idle interfaces, adaptive (% of a core) | {cpu_ad:.2} | | ~0 |",
            a.idle
        );
    }
    if let Some(h) = &host_path {
        h.print();
    }
    if let Some(l) = &latency {
        rtt::print(l);
    }
    // (f) instructions per packet, measured by `dp_instr` (see its
    // header): its rows, and the ratio from its last line.
    let instr = a.instr_table.as_ref().map(|p| {
        let t = std::fs::read_to_string(p).expect("--instr-table FILE");
        for l in t.lines().filter(|l| l.starts_with("| (f)")) {
            println!("{l}");
        }
        t.lines()
            .last()
            .and_then(|l| l.strip_prefix("instr memifd/testpmd "))
            .and_then(|x| x.trim().parse::<f64>().ok())
            .expect("dp_instr's last line: instr memifd/testpmd X.XX")
    });
    let fig = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
    println!(
        "dataplane: a {}, instr memifd/testpmd {}, rtt p50 memifd/testpmd {}, uplink/veth {}",
        fig(bands.as_ref().and_then(|b| b.worst).map(|w| w.0)),
        fig(instr),
        fig(latency.as_ref().and_then(|l| l.p50_ratio)),
        fig(host_path.as_ref().map(uplink::HostPath::worst)),
    );
    drop(ns);
    let _ = std::fs::remove_dir_all(&dir);
}
