//! Interop with DPDK's memif PMD: `memifctl peer` in both roles against
//! `dpdk-testpmd` (DPDK 22.11 `net_memif`), each pair inside its own network
//! namespace, with exact counter checks.
//!
//! Needs root, `ip netns`, `stdbuf` and `dpdk-testpmd`; without them every
//! test FAILS with the reason (they never skip). The tests serialize
//! themselves: the machines have two cores and both peers busy-poll.
//!
//! testpmd behaviour the tests are built around (DPDK 22.11, checked here):
//! - In interactive mode (`-i`) it reads commands from stdin and prints a
//!   prompt when each is done; stdout is made line-buffered (`stdbuf -oL`)
//!   so the output of a command sits between two prompts.
//! - Its memif port counters read 0 once the link is down (forward stats
//!   computed afterwards show wrapped garbage such as 18446744073709550592),
//!   so counts are read while the link is still up.
//! - Its memif rx path can SIGSEGV (in librte_net_memif) when the peer
//!   disconnects while a forwarding lcore polls the ring: the shared memory
//!   is unmapped under it. So testpmd always `stop`s forwarding before
//!   either side disconnects, which is also why the tx tests bound our peer
//!   by duration, not `--count` (our peer disconnects as soon as the count
//!   is sent, while testpmd is still receiving).
//! - A memif client posts its receive buffers on its first rx burst, not at
//!   connect, and after every burst refills its ring completely
//!   (`head = consumed + ring size`). Frames in flight when testpmd stops
//!   are therefore exactly one ring (1024 by default) in the tx tests.
//! - `start` drops whatever waits in the rx rings and leaves it out of the
//!   statistics unless `--no-flush-rx` is given.

#[path = "common/testpmd.rs"]
mod testpmd;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use testpmd::{number_after, wait_timeout, Testpmd, TestpmdOpts};

const MEMIFCTL: &str = env!("CARGO_BIN_EXE_memifctl");
/// Ring size on both sides: DPDK's default and ours (log2 10).
const RING: u64 = 1024;
/// testpmd txonly's default frame and our peer's `--size` here.
const FRAME: u64 = 64;
/// Lower bound for "frames flowed" in a one-second run: far below the rates
/// seen here (millions per second), but many rings' worth, so a link that
/// stalls after its first ring fails. Kept low because the machines are
/// shared: a ping-pong of few frames crawls when a core is taken.
const MIN_FRAMES: u64 = 10_000;
const STARTUP: Duration = Duration::from_secs(20);

static SERIAL: Mutex<()> = Mutex::new(());

/// Fails (never skips) when the environment cannot run these tests.
fn preflight() {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root privileges (network namespaces, dpdk-testpmd): run the tests as root, e.g. `sudo bash e2e/test.sh`".to_string());
    }
    for (tool, why) in [
        (
            "dpdk-testpmd",
            "Debian packages dpdk and librte-net-memif23 (`bash e2e/deps.sh`)",
        ),
        ("stdbuf", "coreutils"),
        ("taskset", "util-linux"),
        ("ip", "iproute2"),
    ] {
        if !in_path(tool) {
            missing.push(format!("`{tool}` in PATH ({why})"));
        }
    }
    if in_path("ip") {
        match Command::new("ip").args(["netns", "list"]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => missing.push(format!(
                "`ip netns` support: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => missing.push(format!("`ip netns`: {e}")),
        }
    }
    assert!(
        missing.is_empty(),
        "DPDK interop tests cannot run here; missing:\n  - {}",
        missing.join("\n  - ")
    );
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// One test's world: a fresh netns, names unique to this process and test,
/// a directory for output files. Processes are owned by [`Peer`] and
/// [`Testpmd`] values, which kill theirs when dropped; declare them after
/// the scene so they go first. Dropping the scene deletes the netns, the
/// files and DPDK's runtime directories, then lets the next test run.
struct Scene {
    name: String,
    dir: PathBuf,
    prefixes: std::cell::RefCell<Vec<String>>,
    _serial: MutexGuard<'static, ()>,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        preflight();
        let name = format!("memif-dpdk-{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the test's temp directory");
        let scene = Scene {
            name,
            dir,
            prefixes: Default::default(),
            _serial: serial,
        };
        let out = Command::new("ip")
            .args(["netns", "add", &scene.name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {}: {}",
            scene.name,
            String::from_utf8_lossy(&out.stderr)
        );
        scene
    }

    fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// The abstract socket name (DPDK spelling, without '@').
    fn socket(&self) -> &str {
        &self.name
    }

    /// Starts `memifctl peer` with its socket in the netns.
    fn peer(&self, label: &str, args: &[&str]) -> Peer {
        let mut full = vec![
            "peer".to_string(),
            "--socket".into(),
            format!("@{}", self.socket()),
            "--netns".into(),
            self.netns_path(),
            "--json".into(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        self.peer_raw(label, &full)
    }

    fn peer_raw(&self, label: &str, args: &[String]) -> Peer {
        let out = self.dir.join(format!("{label}.json"));
        let err = self.dir.join(format!("{label}.log"));
        // Pinned to core 0: testpmd forwards on core 1.
        let child = Command::new("taskset")
            .args(["-c", "0", MEMIFCTL])
            .args(args)
            .env("MEMIF_LOG", "info")
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("peer stdout file"))
            .stderr(File::create(&err).expect("peer stderr file"))
            .spawn()
            .expect("spawn memifctl peer");
        Peer {
            child,
            out,
            err,
            label: label.into(),
        }
    }

    /// Starts testpmd in interactive mode with one memif port (`role` is
    /// DPDK's: client or server), inside the netns unless `host` is set,
    /// forwarding on lcore 1. Waits for its first prompt.
    fn testpmd(&self, label: &str, role: &str, host: bool, args: &[&str]) -> Testpmd {
        let prefix = format!("{}-{label}", self.name);
        self.prefixes.borrow_mut().push(prefix.clone());
        let mut extra = vec!["--burst=32".to_string()];
        extra.extend(args.iter().map(|a| a.to_string()));
        Testpmd::start(TestpmdOpts {
            label,
            prefix,
            netns: (!host).then_some(self.name.as_str()),
            ports: vec![(role, self.socket().to_string())],
            lcores: (0, 1),
            args: extra,
            out: self.dir.join(format!("{label}.out")),
        })
    }

    /// Whether our abstract socket shows in `/proc/net/unix` of the netns
    /// (`inside`) or of the host.
    fn listening(&self, inside: bool) -> bool {
        let table = if inside {
            let o = Command::new("ip")
                .args(["netns", "exec", &self.name, "cat", "/proc/net/unix"])
                .output()
                .expect("read /proc/net/unix in the netns");
            String::from_utf8_lossy(&o.stdout).into_owned()
        } else {
            fs::read_to_string("/proc/net/unix").expect("read /proc/net/unix")
        };
        let want = format!("@{}", self.socket());
        table
            .lines()
            .any(|l| l.split_whitespace().last() == Some(want.as_str()))
    }

    /// Waits until our master listens inside the netns (DPDK clients
    /// connect once and never retry).
    fn wait_listening(&self, peer: &mut Peer) {
        let deadline = Instant::now() + STARTUP;
        while !self.listening(true) {
            if let Ok(Some(st)) = peer.child.try_wait() {
                panic!(
                    "peer {} exited ({st}) before listening:\n{}",
                    peer.label,
                    peer.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "peer {} never listened on @{} in netns {}:\n{}",
                peer.label,
                self.socket(),
                self.name,
                peer.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "cleanup: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("cleanup: ip netns del {}: {e}", self.name),
        }
        for p in self.prefixes.borrow().iter() {
            let _ = fs::remove_dir_all(Path::new("/var/run/dpdk").join(p));
        }
        if std::thread::panicking() {
            eprintln!("test output kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `memifctl peer --json`'s report.
#[derive(Debug, serde::Deserialize)]
struct Report {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    disconnected: Option<String>,
}

struct Peer {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    label: String,
}

impl Peer {
    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits for the exit; returns status, stdout, stderr.
    fn wait(&mut self, timeout: Duration) -> (ExitStatus, String, String) {
        let st = wait_timeout(&mut self.child, timeout).unwrap_or_else(|| {
            panic!(
                "peer {} still running after {timeout:?}:\n{}",
                self.label,
                self.stderr()
            )
        });
        let out = fs::read_to_string(&self.out).unwrap_or_default();
        (st, out, self.stderr())
    }

    /// Waits for a successful exit and parses the report.
    fn report(&mut self, timeout: Duration) -> Report {
        let (st, out, err) = self.wait(timeout);
        assert!(st.success(), "peer {} failed ({st}):\n{err}", self.label);
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("peer {} report {out:?}: {e}\n{err}", self.label))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port's counters as testpmd printed them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct PortCounts {
    rx_packets: u64,
    tx_packets: u64,
    rx_bytes: u64,
    tx_bytes: u64,
    /// Forward statistics only.
    rx_dropped: u64,
    tx_dropped: u64,
}

/// Parses the "Forward statistics for port 0" block `stop` prints.
fn forward_stats(text: &str) -> PortCounts {
    let at = text
        .find("Forward statistics for port 0")
        .unwrap_or_else(|| panic!("no forward statistics in:\n{text}"));
    let block = &text[at..];
    let block = &block[..block.find("Accumulated").unwrap_or(block.len())];
    PortCounts {
        rx_packets: number_after(block, "RX-packets:"),
        tx_packets: number_after(block, "TX-packets:"),
        rx_dropped: number_after(block, "RX-dropped:"),
        tx_dropped: number_after(block, "TX-dropped:"),
        ..Default::default()
    }
}

/// Parses the NIC statistics `show port stats all` prints.
fn port_stats(text: &str) -> PortCounts {
    let at = text
        .find("NIC statistics for port 0")
        .unwrap_or_else(|| panic!("no port statistics in:\n{text}"));
    let block = &text[at..];
    PortCounts {
        rx_packets: number_after(block, "RX-packets:"),
        tx_packets: number_after(block, "TX-packets:"),
        rx_bytes: number_after(block, "RX-bytes:"),
        tx_bytes: number_after(block, "TX-bytes:"),
        ..Default::default()
    }
}

const SECOND: Duration = Duration::from_secs(1);
const EXIT: Duration = Duration::from_secs(20);

/// (a) testpmd client `txonly` -> our master `rx`. testpmd `quit`s while
/// forwarding: it stops its lcore, prints its exact TX count, then closes
/// the port at once, so the last frames may still be in the ring when our
/// link goes down; the peer must drain them. Asserts our rx count equals
/// testpmd's TX-packets exactly, and the bytes match the frame size.
#[test]
fn testpmd_txonly_client_to_our_master_rx() {
    let s = Scene::new("a");
    let mut ours = s.peer(
        "master",
        &["--role", "master", "--action", "rx", "--duration", "30"],
    );
    s.wait_listening(&mut ours);
    let mut tp = s.testpmd(
        "client",
        "client",
        false,
        &["--forward-mode=txonly", "--txpkts=100"],
    );
    tp.wait_link_up(0);
    tp.cmd("start");
    std::thread::sleep(SECOND);
    let out = tp.quit();
    let theirs = forward_stats(&out);
    let r = ours.report(EXIT);
    eprintln!("ours {r:?}\ntestpmd {theirs:?}");
    assert_eq!(r.disconnected.as_deref(), Some("link down"), "{r:?}");
    assert!(r.rx_packets >= MIN_FRAMES, "too few frames: {r:?}");
    assert_eq!(
        r.rx_packets, theirs.tx_packets,
        "we received {} frames, testpmd sent {}",
        r.rx_packets, theirs.tx_packets
    );
    assert_eq!(r.rx_bytes, r.rx_packets * 100, "{r:?}");
    assert_eq!(r.tx_packets, 0);
}

/// (b) our master `tx` -> testpmd client `rxonly`. testpmd receives for a
/// second, stops (its counters read while the link is up), and our peer
/// then fills the buffers testpmd had posted before it ends by duration.
/// Asserts: testpmd's forward and port RX counts agree, and our
/// `tx_packets == testpmd RX-packets + 1024` exactly (one ring: the client
/// reposts a full ring after each burst), bytes likewise at 64 bytes each.
#[test]
fn our_master_tx_to_testpmd_rxonly_client() {
    let s = Scene::new("b");
    // Frames flow from testpmd's first rx burst (its `start`); the duration
    // counts from there and must outlast testpmd's `stop`.
    let mut ours = s.peer(
        "master",
        &[
            "--role",
            "master",
            "--action",
            "tx",
            "--size",
            "64",
            "--duration",
            "3",
        ],
    );
    s.wait_listening(&mut ours);
    let mut tp = s.testpmd("client", "client", false, &["--forward-mode=rxonly"]);
    tp.wait_link_up(0);
    tp.cmd("start");
    std::thread::sleep(SECOND);
    let fwd = forward_stats(&tp.cmd("stop"));
    let port = port_stats(&tp.cmd("show port stats all"));
    let r = ours.report(EXIT);
    tp.quit();
    eprintln!("ours {r:?}\ntestpmd {fwd:?} {port:?}");
    assert_eq!(r.disconnected, None, "the link went down early: {r:?}");
    assert_eq!(fwd.rx_packets, port.rx_packets, "{fwd:?} {port:?}");
    assert!(port.rx_packets >= MIN_FRAMES, "too few frames: {port:?}");
    assert_eq!(
        r.tx_packets,
        port.rx_packets + RING,
        "we sent {}, testpmd received {} (+{RING} expected left in its ring)",
        r.tx_packets,
        port.rx_packets
    );
    assert_eq!(r.tx_bytes, port.rx_bytes + RING * FRAME, "{r:?} {port:?}");
    assert_eq!(port.rx_bytes, port.rx_packets * FRAME);
    assert_eq!(r.rx_packets, 0);
}

/// (c) Round trip: testpmd client `macswap` with `--port-topology=loop`
/// reflects, our master `echo`es. A `start`/`stop` first makes testpmd post
/// its rx buffers (otherwise our first echoes find no buffers and are
/// dropped), then `start tx_first 4` injects 4 bursts of 32 frames that
/// circulate for a second. Asserts exactly: our rx == testpmd TX (all it
/// sent, the 128 included), our tx == our rx (echo lost nothing), testpmd
/// TX - testpmd RX == 128 (the injected frames, which end up on our tx ring
/// unread once testpmd stops), bytes likewise, no drops, and
/// [`MIN_FRAMES`] each way.
#[test]
fn round_trip_testpmd_macswap_and_our_echo() {
    const INJECTED: u64 = 4 * 32;
    let s = Scene::new("c");
    let mut ours = s.peer(
        "master",
        &["--role", "master", "--action", "echo", "--duration", "30"],
    );
    s.wait_listening(&mut ours);
    let mut tp = s.testpmd(
        "client",
        "client",
        false,
        &["--forward-mode=macswap", "--port-topology=loop"],
    );
    tp.wait_link_up(0);
    tp.cmd("start");
    tp.cmd("stop");
    tp.cmd("start tx_first 4");
    std::thread::sleep(SECOND);
    let fwd = forward_stats(&tp.cmd("stop"));
    let port = port_stats(&tp.cmd("show port stats all"));
    tp.quit();
    let r = ours.report(EXIT);
    eprintln!("ours {r:?}\ntestpmd {fwd:?} {port:?}");
    assert_eq!(r.disconnected.as_deref(), Some("link down"), "{r:?}");
    assert_eq!((fwd.rx_dropped, fwd.tx_dropped), (0, 0), "{fwd:?}");
    assert!(
        port.rx_packets >= MIN_FRAMES,
        "too few round trips: {port:?}"
    );
    assert_eq!(r.rx_packets, port.tx_packets, "ours {r:?} testpmd {port:?}");
    assert_eq!(r.rx_bytes, port.tx_bytes, "ours {r:?} testpmd {port:?}");
    assert_eq!(r.tx_packets, r.rx_packets, "echo lost frames: {r:?}");
    assert_eq!(r.tx_bytes, r.rx_bytes, "{r:?}");
    assert_eq!(port.tx_packets - port.rx_packets, INJECTED, "{port:?}");
    assert_eq!(port.tx_bytes - port.rx_bytes, INJECTED * FRAME, "{port:?}");
}

/// (d1) testpmd server `txonly` -> our slave `rx`. testpmd sends for a
/// second and stops; our slave ends by duration after that, having drained
/// the ring. Asserts our rx == testpmd TX-packets exactly, bytes too.
#[test]
fn testpmd_txonly_server_to_our_slave_rx() {
    let s = Scene::new("d1");
    let mut tp = s.testpmd("server", "server", false, &["--forward-mode=txonly"]);
    // The server takes slaves only once its port has started (an earlier
    // slave is refused with "ID not found"): the prompt means it has.
    let mut ours = s.peer(
        "slave",
        &[
            "--role",
            "slave",
            "--action",
            "rx",
            "--duration",
            "2.5",
            "--connect-timeout",
            "10",
        ],
    );
    tp.wait_link_up(0);
    tp.cmd("start");
    std::thread::sleep(SECOND);
    let fwd = forward_stats(&tp.cmd("stop"));
    let port = port_stats(&tp.cmd("show port stats all"));
    let r = ours.report(EXIT);
    tp.quit();
    eprintln!("ours {r:?}\ntestpmd {fwd:?} {port:?}");
    assert_eq!(fwd.tx_packets, port.tx_packets, "{fwd:?} {port:?}");
    assert!(r.rx_packets >= MIN_FRAMES, "too few frames: {r:?}");
    assert_eq!(r.rx_packets, port.tx_packets, "ours {r:?} testpmd {port:?}");
    assert_eq!(r.rx_bytes, port.tx_bytes, "ours {r:?} testpmd {port:?}");
}

/// (d2) our slave `tx` -> testpmd server `rxonly`. Our slave fills its own
/// ring from the start; testpmd receives for a second and stops; our slave
/// fills the ring again and ends by duration. Asserts our tx == testpmd
/// RX-packets + 1024 exactly (the slave's ring: the server consumed up to
/// its tail), bytes likewise.
#[test]
fn our_slave_tx_to_testpmd_rxonly_server() {
    let s = Scene::new("d2");
    let mut tp = s.testpmd("server", "server", false, &["--forward-mode=rxonly"]);
    let mut ours = s.peer(
        "slave",
        &[
            "--role",
            "slave",
            "--action",
            "tx",
            "--size",
            "64",
            "--duration",
            "3",
            "--connect-timeout",
            "10",
        ],
    );
    tp.wait_link_up(0);
    tp.cmd("start");
    std::thread::sleep(SECOND);
    let fwd = forward_stats(&tp.cmd("stop"));
    let port = port_stats(&tp.cmd("show port stats all"));
    let r = ours.report(EXIT);
    tp.quit();
    eprintln!("ours {r:?}\ntestpmd {fwd:?} {port:?}");
    assert_eq!(fwd.rx_packets, port.rx_packets, "{fwd:?} {port:?}");
    assert!(port.rx_packets >= MIN_FRAMES, "too few frames: {port:?}");
    assert_eq!(
        r.tx_packets,
        port.rx_packets + RING,
        "we sent {}, testpmd received {} (+{RING} expected left in our ring)",
        r.tx_packets,
        port.rx_packets
    );
    assert_eq!(r.tx_bytes, port.rx_bytes + RING * FRAME, "{r:?} {port:?}");
}

/// (e) Our master binds its abstract socket inside the netns: it is listed
/// in the netns's /proc/net/unix and not the host's; a testpmd client and
/// our slave in the host netns cannot connect (link down / ECONNREFUSED) and
/// the master sees nobody; then a testpmd client inside the netns connects
/// (the control, with the same command line otherwise).
#[test]
fn master_socket_in_netns_unreachable_from_host() {
    let s = Scene::new("e");
    let mut ours = s.peer(
        "master",
        &[
            "--role",
            "master",
            "--action",
            "rx",
            "--duration",
            "1",
            "--connect-timeout",
            "30",
        ],
    );
    s.wait_listening(&mut ours);
    assert!(
        !s.listening(false),
        "@{} is visible in the host netns",
        s.socket()
    );

    let mut host_tp = s.testpmd("host-client", "client", true, &["--forward-mode=rxonly"]);
    let info = host_tp.cmd("show port info 0");
    let out = host_tp.quit();
    assert!(
        info.contains("Link status: down"),
        "a host testpmd client reached the netns socket:\n{out}"
    );
    assert!(out.contains("Failed to connect socket"), "{out}");

    let socket = format!("@{}", s.socket());
    let args = [
        "peer",
        "--role",
        "slave",
        "--socket",
        &socket,
        "--action",
        "rx",
        "--duration",
        "1",
        "--connect-timeout",
        "1",
        "--json",
    ];
    let mut host_slave = s.peer_raw("host-slave", &args.map(String::from));
    let (st, _, err) = host_slave.wait(EXIT);
    assert!(
        !st.success(),
        "our slave in the host netns connected:\n{err}"
    );
    assert!(err.contains("ECONNREFUSED"), "unexpected failure:\n{err}");

    assert!(
        !ours.stderr().contains("memif connected"),
        "the master saw a connection from the host netns:\n{}",
        ours.stderr()
    );

    // Control: the same testpmd client inside the netns connects.
    let mut tp = s.testpmd("client", "client", false, &["--forward-mode=rxonly"]);
    tp.wait_link_up(0);
    tp.quit();
    let r = ours.report(EXIT);
    assert_eq!(r.disconnected.as_deref(), Some("link down"), "{r:?}");
    assert_eq!(ours.stderr().matches("memif connected").count(), 1);
}
