//! (e) Latency: the round trip of single 64-byte frames, one in flight,
//! through memifd and through a testpmd middle box (io forwarding).
//!
//! One client thread on core 1 holds two memif client connections (our
//! own slave code, busy-polling, interrupts masked): it writes a frame on
//! connection 0, spins on connection 1 until the frame comes back, and
//! times that with the monotonic clock; then the next frame. The middle box
//! runs on core 0: memifd (pinned there) with its two ports in polling,
//! adaptive or interrupt mode, or testpmd's forwarding lcore.
//!
//! Rounds alternate the four middle boxes (memifd polling, adaptive,
//! interrupt, testpmd) so that each round of a kind sees the same
//! placement of the two vCPUs as its neighbours; in each round, the first
//! `WARMUP` trips are not counted. memifd's two ports are attached for its
//! round and detached after it, so that no idle polling port of memifd
//! takes core 0 from testpmd; testpmd's forwarding is started for its
//! round only. The ratio of p50s is taken round by round (memifd polling
//! against the testpmd round next to it), then the median. As in (a), the
//! placement is probed before and after each measurement (with memifd's
//! ports detached and testpmd stopped, so that the probe has core 0): a
//! round's ratio counts only when each measurement's two probes agree and
//! both measurements saw the same band (as (a) splits them), since one
//! measurement after the vCPUs moved can be 3x off its neighbour.

use std::path::Path;
use std::time::{Duration, Instant};

use memif_cni::api::RxMode;
use memif_cni::memif::queue::PacketBuf;
use memif_cni::memif::wire::Mode;
use memif_cni::memif::{SlaveConfig, SlaveConnection, SocketAddr};

use crate::harness::{attach, median, pin, probe, Daemon};
use crate::testpmd::{Testpmd, TestpmdOpts};
use crate::{agree, BAND, STEADY};

/// Trips per round left out while caches and branch predictors settle.
const WARMUP: usize = 1000;

/// The middle boxes measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Via {
    Memifd(RxMode),
    Testpmd,
}

impl Via {
    pub fn label(self) -> String {
        match self {
            Via::Memifd(m) => format!("memifd {m}"),
            Via::Testpmd => "testpmd".into(),
        }
    }
}

/// Round-trip times (ns) of one middle box, pooled over its rounds, and
/// each round's p50.
#[derive(Default)]
pub struct Trips {
    pub all: Vec<u64>,
    pub p50s: Vec<f64>,
}

impl Trips {
    /// The `q` quantile (0..1) of the pooled trips, in ns.
    pub fn quantile(&self, q: f64) -> f64 {
        let mut v = self.all.clone();
        v.sort_unstable();
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() - 1) as f64 * q).round() as usize] as f64
    }
}

/// What the latency measure found.
pub struct Latency {
    pub vias: Vec<(Via, Trips)>,
    /// Median over the counted rounds of memifd polling's p50 /
    /// testpmd's p50 (None if no round counted).
    pub p50_ratio: Option<f64>,
    /// Rounds whose placement held through both measurements, of all.
    pub counted: usize,
    pub rounds: usize,
}

/// Connects a client (slave) to `socket` in netns `ns`, retrying while the
/// listener is not there yet.
fn connect(ns: &str, socket: &str, name: &str) -> SlaveConnection {
    let addr = SocketAddr::parse(socket).expect("socket address");
    let cfg = SlaveConfig {
        name: name.into(),
        ..SlaveConfig::default()
    };
    let path = format!("/run/netns/{ns}");
    let t0 = Instant::now();
    loop {
        let (a, c) = (addr.clone(), cfg.clone());
        let r = memif_cni::netns::run_in(Some(Path::new(&path)), move || {
            SlaveConnection::connect(&a, &c)
        })
        .expect("netns");
        match r {
            Ok(c) => {
                for q in &c.rx {
                    q.set_interrupts(false);
                }
                return c;
            }
            Err(e) if t0.elapsed() > Duration::from_secs(30) => {
                panic!("latency: cannot connect to {socket}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `n` round trips (after [`WARMUP`]) from `a` to `b`, on the calling
/// thread; ns each.
fn trips(a: &mut SlaveConnection, b: &mut SlaveConnection, n: usize) -> Vec<u64> {
    let frame = memif_cni::ctl::peer::udp_frame_between(
        Mode::Ethernet,
        64,
        0,
        [10, 199, 1, 1],
        [10, 199, 1, 2],
    );
    let mut bufs = PacketBuf::batch(4, 2048);
    let mut out = Vec::with_capacity(n);
    let limit = Duration::from_secs(1);
    for i in 0..WARMUP + n {
        let t0 = Instant::now();
        assert_eq!(a.tx[0].tx_burst(&[&frame]).expect("tx"), 1, "ring full");
        let mut got = 0;
        while got == 0 {
            got = b.rx[0].rx_burst(&mut bufs).expect("rx");
            if got == 0 && t0.elapsed() > limit {
                panic!("latency: frame {i} did not come back within {limit:?}");
            }
        }
        let dt = t0.elapsed().as_nanos() as u64;
        assert_eq!(got, 1, "one frame in flight, {got} came back");
        if i >= WARMUP {
            out.push(dt);
        }
    }
    out
}

/// Runs `rounds` rounds of `per_round` trips through each middle box.
pub fn run(memifd: &Path, ns: &str, dir: &Path, rounds: usize, per_round: usize) -> Latency {
    let pid = std::process::id();
    let d = Daemon::start(memifd, &dir.join("memifd-rtt"), "0");
    let (s0, s1) = (format!("dp-rtt-{pid}-m0"), format!("dp-rtt-{pid}-m1"));
    let mut mid = Testpmd::start(TestpmdOpts {
        label: "middle",
        prefix: format!("dp-rtt-{pid}-mid"),
        netns: Some(ns),
        ports: vec![("server", s0.clone()), ("server", s1.clone())],
        lcores: (1, 0),
        args: vec!["--forward-mode=io".into(), "--burst=32".into()],
        out: dir.join("middle-rtt.out"),
    });
    let mut t0 = connect(ns, &format!("@{s0}"), "rtt-t0");
    let mut t1 = connect(ns, &format!("@{s1}"), "rtt-t1");
    mid.wait_link_up(0);
    mid.wait_link_up(1);
    let vias = [
        Via::Memifd(RxMode::Polling),
        Via::Testpmd,
        Via::Memifd(RxMode::Adaptive),
        Via::Memifd(RxMode::Interrupt),
    ];
    let mut found: Vec<(Via, Trips)> = vias.iter().map(|&v| (v, Trips::default())).collect();
    let mut ratios = Vec::new();
    pin(1);
    for round in 0..rounds {
        let mut polling_p50 = None;
        let mut testpmd_p50 = None;
        // The placement probes around memifd polling and testpmd.
        let mut places = Vec::new();
        for (k, &via) in vias.iter().enumerate() {
            let compared = matches!(via, Via::Testpmd | Via::Memifd(RxMode::Polling));
            if compared {
                places.push(probe());
            }
            let v = match via {
                Via::Testpmd => {
                    mid.cmd("start");
                    let v = trips(&mut t0, &mut t1, per_round);
                    mid.cmd("stop");
                    v
                }
                Via::Memifd(mode) => {
                    let net = format!("dp-rtt-{pid}-{round}-{k}");
                    let ports = [("memif-r0", "10.199.1.1"), ("memif-r1", "10.199.1.2")];
                    let reqs: Vec<_> = ports
                        .iter()
                        .map(|(ifn, ip)| attach(&d, ns, &format!("rtt-{ifn}"), ifn, &net, ip, mode))
                        .collect();
                    let mut c0 = connect(ns, &reqs[0].socket_name(), "rtt-m0");
                    let mut c1 = connect(ns, &reqs[1].socket_name(), "rtt-m1");
                    wait_connected(&d, 2);
                    let v = trips(&mut c0, &mut c1, per_round);
                    c0.disconnect("round done");
                    c1.disconnect("round done");
                    for r in reqs {
                        d.client().detach(r.key).expect("detach");
                    }
                    v
                }
            };
            if compared {
                places.push(probe());
            }
            let mut sorted = v.clone();
            sorted.sort_unstable();
            let p50 = sorted[sorted.len() / 2] as f64;
            eprintln!(
                "rtt round {}: {} p50 {p50:.0} ns, p99 {} ns{}",
                round + 1,
                via.label(),
                sorted[sorted.len() * 99 / 100],
                match places.as_slice() {
                    [.., b, a] if compared => format!(" (probe {:.0} ns)", (a + b) / 2.0),
                    _ => String::new(),
                }
            );
            match via {
                Via::Memifd(RxMode::Polling) => polling_p50 = Some(p50),
                Via::Testpmd => testpmd_p50 = Some(p50),
                _ => {}
            }
            let t = &mut found[k].1;
            t.all.extend(v);
            t.p50s.push(p50);
        }
        // Each measurement steady (its probes agree), both in one band.
        let held = match places.as_slice() {
            &[a, b, c, d] => {
                let (p, q) = ((a + b) / 2.0, (c + d) / 2.0);
                agree(a, b, STEADY) && agree(c, d, STEADY) && agree(p, q, BAND)
            }
            _ => false,
        };
        match (polling_p50, testpmd_p50) {
            (Some(m), Some(t)) if held => ratios.push(m / t),
            _ => eprintln!(
                "rtt round {}: left out, the placement moved ({})",
                round + 1,
                places
                    .iter()
                    .map(|p| format!("{p:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    t0.disconnect("done");
    t1.disconnect("done");
    mid.quit();
    Latency {
        vias: found,
        counted: ratios.len(),
        rounds,
        p50_ratio: (!ratios.is_empty()).then(|| median(ratios)),
    }
}

/// Waits until memifd counts `n` connected interfaces.
fn wait_connected(d: &Daemon, n: usize) {
    let t0 = Instant::now();
    while d.client().status().expect("status").connected < n {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "latency: memifd's ports did not connect"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The table rows of (e).
pub fn print(l: &Latency) {
    for (via, t) in &l.vias {
        let target = match via {
            Via::Memifd(RxMode::Interrupt) => "p99 stated",
            _ => "",
        };
        println!(
            "| (e) round trip, one 64-byte frame, {} (ns, p50 / p99 / p99.9) | {:.0} / {:.0} / {:.0} | | {target} |",
            via.label(),
            t.quantile(0.5),
            t.quantile(0.99),
            t.quantile(0.999)
        );
    }
    println!(
        "| (e) rtt p50 memifd polling / testpmd (median of the {} of {} rounds whose placement held) | | {} | <= 1.1 {} |",
        l.counted,
        l.rounds,
        l.p50_ratio.map_or("-".into(), |x| format!("{x:.2}")),
        match l.p50_ratio {
            None => "inconclusive: the placement moved in every round",
            Some(x) if x <= 1.1 => "met",
            Some(_) => "NOT MET",
        }
    );
}
