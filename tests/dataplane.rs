//! The dataplane through the real memifd binary, with real peers in real
//! pod namespaces: in-process memif slaves (exact bytes), `memifctl
//! client` (ARP/ND/ICMP stacks in ip and ethernet mode), `dpdk-testpmd`
//! (ethernet) and the host's own `ping` through the uplink.
//!
//! Needs root, `ip netns`, `ping` (iputils-ping), `/dev/net/tun` and
//! `dpdk-testpmd`; without them the tests FAIL with the reason, they never
//! skip. Namespaces are named `dp-<pid>-<tag>` and deleted on drop;
//! networks carry the process id, so their uplinks (TUN devices, host
//! routes) never meet another run's. Pod addresses are 10.2xx.<test>.<n>
//! and fdd0:<pid>:<test>::<n>; every packet a test sends to an address no
//! pod owns has TTL 2, so the host (which decrements it to 1) can never
//! forward it off the machine.

#[path = "common/memifd.rs"]
mod memifd_common;
#[path = "common/testpmd.rs"]
mod testpmd;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memif_cni::api::{AttachRequest, IfStats, MemifSpec, RxMode, UplinkStatus};
use memif_cni::dataplane::uplink::tun_name;
use memif_cni::mac::Mac;
use memif_cni::memif::socket::Channel;
use memif_cni::memif::wire::Mode;
use memif_cni::memif::{PacketBuf, SlaveConfig, SlaveConnection, SocketAddr};
use memif_cni::packet::{self, Net, L4};
use memifd_common::*;
use testpmd::{Testpmd, TestpmdOpts};

const MEMIFCTL: &str = env!("CARGO_BIN_EXE_memifctl");
/// memif's largest frame (the library default).
const MAX_FRAME: usize = 9216;
/// DPDK tests serialize themselves: both testpmd peers busy-poll.
static DPDK: Mutex<()> = Mutex::new(());

/// Fails (never skips) without what these tests need.
#[track_caller]
fn preflight_dataplane(dpdk: bool) {
    preflight();
    let mut missing = Vec::new();
    if !in_path("ping") {
        missing.push("`ping` in PATH (Debian package iputils-ping; `bash e2e/deps.sh`)");
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun (the kernel's tun driver)");
    }
    if dpdk && !in_path("dpdk-testpmd") {
        missing.push("`dpdk-testpmd` (Debian packages dpdk, librte-net-memif23)");
    }
    if dpdk && !in_path("stdbuf") {
        missing.push("`stdbuf` (coreutils)");
    }
    assert!(
        missing.is_empty(),
        "dataplane tests cannot run here; missing:\n  - {}",
        missing.join("\n  - ")
    );
}

fn pid() -> u32 {
    std::process::id()
}

fn v4(test: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200 + (pid() % 50) as u8, test, host)
}

fn v6(test: u8, host: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfdd0, pid() as u16, test as u16, 0, 0, 0, 0, host as u16)
}

fn network(tag: &str) -> String {
    format!("dp{}-{tag}", pid())
}

/// A pod network namespace `dp-<pid>-<tag>`, deleted on drop.
struct PodNs {
    name: String,
}

impl PodNs {
    #[track_caller]
    fn new(tag: &str) -> PodNs {
        let name = format!("dp-{}-{tag}", pid());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PodNs { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for PodNs {
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
    }
}

/// An attached pod: its namespace and attach request.
struct Pod {
    ns: PodNs,
    req: AttachRequest,
}

/// What a test pod looks like.
struct PodSpec<'a> {
    tag: &'a str,
    network: &'a str,
    mode: Mode,
    ips: Vec<IpAddr>,
    mac: Option<&'a str>,
    rx: RxMode,
}

impl Pod {
    /// A pod with the memif's own MAC.
    #[track_caller]
    fn plain(
        m: &Memifd,
        tag: &str,
        network: &str,
        mode: Mode,
        ips: Vec<IpAddr>,
        rx: RxMode,
    ) -> Pod {
        Pod::attach(
            m,
            PodSpec {
                tag,
                network,
                mode,
                ips,
                mac: None,
                rx,
            },
        )
    }

    #[track_caller]
    fn attach(m: &Memifd, s: PodSpec<'_>) -> Pod {
        let ns = PodNs::new(s.tag);
        let ifname = format!("memif-{}", s.tag);
        let req = AttachRequest {
            key: key(&format!("c{}-{}", pid(), s.tag), &ifname),
            network: s.network.into(),
            netns: ns.path(),
            socket: None,
            spec: MemifSpec {
                mode: s.mode,
                rx_mode: s.rx,
                mac: s.mac.map(str::to_string),
                ..MemifSpec::default()
            },
            ips: s.ips,
            pod: None,
            steer: None,
            vni: None,
        };
        m.client()
            .attach(req.clone())
            .unwrap_or_else(|e| panic!("attach {}: {e}", s.tag));
        Pod { ns, req }
    }

    fn socket(&self) -> SocketAddr {
        SocketAddr::parse(&self.req.socket_name()).expect("socket name")
    }

    /// An in-process memif slave connected from inside the pod netns.
    #[track_caller]
    fn slave(&self, m: &Memifd, buffer_size: u32) -> SlaveConnection {
        self.slave_with(
            m,
            SlaveConfig {
                name: format!("slave-{}", self.req.key.ifname),
                mode: self.req.spec.mode,
                log2_ring_size: 6,
                buffer_size,
                ..SlaveConfig::default()
            },
        )
    }

    /// As [`Pod::slave`], with the client's configuration given.
    #[track_caller]
    fn slave_with(&self, m: &Memifd, cfg: SlaveConfig) -> SlaveConnection {
        let addr = self.socket();
        let chan = memif_cni::netns::run_in(Some(&self.ns.path()), move || {
            let c = Channel::connect(&addr)?;
            set_recv_timeout(&c);
            Ok::<Channel, memif_cni::memif::socket::SocketError>(c)
        })
        .expect("enter the pod netns")
        .expect("connect to memifd's listener");
        let s = SlaveConnection::handshake(chan, &cfg).expect("memif handshake");
        wait_connected(m, &self.req.key, true);
        s
    }

    fn stats(&self, m: &Memifd) -> IfStats {
        m.client().get(self.req.key.clone()).expect("get").stats
    }

    fn drops(&self, m: &Memifd, reason: &str) -> u64 {
        self.stats(m).drops.get(reason).copied().unwrap_or(0)
    }

    #[track_caller]
    fn detach(&self, m: &Memifd) {
        assert!(m.client().detach(self.req.key.clone()).expect("detach"));
    }
}

fn send(s: &mut SlaveConnection, frame: &[u8]) {
    let deadline = Instant::now() + WAIT;
    while s.tx[0].tx_burst(&[frame]).expect("slave tx") == 0 {
        assert!(Instant::now() < deadline, "slave tx ring stays full");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The next frame the slave receives, within `within`.
fn recv(s: &mut SlaveConnection, within: Duration) -> Option<Vec<u8>> {
    let mut bufs = PacketBuf::batch(1, MAX_FRAME);
    let deadline = Instant::now() + within;
    loop {
        if s.rx[0].rx_burst(&mut bufs).expect("slave rx") == 1 {
            return Some(bufs[0].as_slice().to_vec());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[track_caller]
fn expect_frame(s: &mut SlaveConnection, what: &str) -> Vec<u8> {
    recv(s, WAIT).unwrap_or_else(|| panic!("no frame within {WAIT:?}: {what}"))
}

#[track_caller]
fn expect_nothing(s: &mut SlaveConnection, what: &str) {
    if let Some(f) = recv(s, Duration::from_millis(300)) {
        panic!(
            "{what}: unexpected frame {}",
            packet::parse(Mode::Ethernet, &f)
        );
    }
}

/// A UDP packet (IPv4 or IPv6) with `payload`, TTL/hop limit `ttl`.
fn udp(src: IpAddr, dst: IpAddr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut seg = Vec::with_capacity(8 + payload.len());
    seg.extend_from_slice(&4000u16.to_be_bytes());
    seg.extend_from_slice(&5000u16.to_be_bytes());
    seg.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    seg.extend_from_slice(&[0, 0]);
    seg.extend_from_slice(payload);
    let c = packet::l4_checksum(src, dst, packet::PROTO_UDP, &seg);
    seg[6..8].copy_from_slice(&c.to_be_bytes());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => packet::ipv4(s, d, packet::PROTO_UDP, ttl, &seg),
        (IpAddr::V6(s), IpAddr::V6(d)) => packet::ipv6(s, d, packet::PROTO_UDP, ttl, &seg),
        _ => panic!("mixed families"),
    }
}

fn eth(dst: Mac, src: Mac, ip: &[u8]) -> Vec<u8> {
    packet::on_link(Mode::Ethernet, dst, src, ip)
}

/// Pseudo-random bytes, different for each `seed`.
fn payload(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn mac(s: &str) -> Mac {
    s.parse().expect("mac")
}

fn uplink(m: &Memifd, network: &str) -> Option<UplinkStatus> {
    m.client()
        .uplinks()
        .expect("uplinks")
        .into_iter()
        .find(|u| u.network == network)
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    o
}

#[track_caller]
fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected {needle:?} in:\n{haystack}"
    );
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `ip -o route show exact <ip>/<len>` in the host netns.
fn host_route(ip: IpAddr) -> String {
    let (fam, len) = if ip.is_ipv4() {
        ("-4", 32)
    } else {
        ("-6", 128)
    };
    let o =
        run(Command::new("ip").args([fam, "-o", "route", "show", "exact", &format!("{ip}/{len}")]));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

const POD_MAC: &str = "02:00:00:00:00:01";

#[test]
fn arp_and_neighbor_solicitations_are_answered_for_any_other_target() {
    preflight_dataplane(false);
    let dir = TempDir::new("dp-arp");
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr")
    };
    let m = Memifd::start_with(
        &dir.path,
        &format!(r#"{{"metricsListen": "{metrics}"}}"#),
        &[],
    );
    let net = network("arp");
    let (me4, me6) = (v4(1, 2), v6(1, 2));
    let a = Pod::attach(
        &m,
        PodSpec {
            tag: "arp",
            network: &net,
            mode: Mode::Ethernet,
            ips: vec![me4.into(), me6.into()],
            mac: Some("02:00:00:00:aa:01"),
            rx: RxMode::Interrupt,
        },
    );
    let port = mac("02:00:00:00:aa:01");
    let me = mac(POD_MAC);
    let mut s = a.slave(&m, 2048);

    // ARP for the gateway, and for any other address: answered with the
    // port's MAC.
    for target in [v4(1, 1), v4(1, 77), Ipv4Addr::new(192, 0, 2, 200)] {
        send(&mut s, &packet::arp_request(me, me4, target));
        let f = expect_frame(&mut s, "ARP reply");
        let p = packet::parse(Mode::Ethernet, &f);
        let e = p.eth.expect("ethernet");
        assert_eq!((e.dst, e.src), (me, port), "{p}");
        match p.net {
            Net::Arp(r) => {
                assert_eq!(r.op, packet::ARP_REPLY, "{p}");
                assert_eq!((r.sender_mac, r.sender_ip), (port, target), "{p}");
                assert_eq!((r.target_mac, r.target_ip), (me, me4), "{p}");
            }
            _ => panic!("not ARP: {p}"),
        }
    }
    // ARP for the pod's own address (gratuitous or a probe): silence.
    send(&mut s, &packet::arp_request(me, me4, me4));
    expect_nothing(&mut s, "ARP for the pod's own address");

    // Neighbour solicitations, the same.
    for target in [v6(1, 1), v6(1, 99)] {
        let ns = packet::neighbor_solicit(me6, target, me);
        let group = packet::ipv6_multicast_mac(packet::solicited_node(target));
        send(&mut s, &eth(group, me, &ns));
        let f = expect_frame(&mut s, "neighbor advertisement");
        let p = packet::parse(Mode::Ethernet, &f);
        let e = p.eth.expect("ethernet");
        assert_eq!((e.dst, e.src), (me, port), "{p}");
        match p.net {
            Net::Ip(ip) => {
                assert!(ip.checksums_ok, "{p}");
                assert_eq!(ip.dst, IpAddr::V6(me6), "{p}");
                assert_eq!(ip.src, IpAddr::V6(target), "{p}");
                match ip.l4 {
                    L4::NeighborAdvert {
                        target: t,
                        target_mac,
                        ..
                    } => {
                        assert_eq!(t, target);
                        assert_eq!(target_mac, Some(port));
                    }
                    other => panic!("not an advertisement: {other:?}"),
                }
            }
            _ => panic!("not IPv6: {p}"),
        }
    }
    // For its own address, and duplicate address detection: silence.
    let own = packet::neighbor_solicit(me6, me6, me);
    send(&mut s, &eth(Mac::BROADCAST, me, &own));
    let dad = packet::neighbor_solicit(Ipv6Addr::UNSPECIFIED, v6(1, 5), me);
    send(&mut s, &eth(Mac::BROADCAST, me, &dad));
    expect_nothing(&mut s, "NS for the pod's own address or DAD");

    // Other ethertypes: dropped and counted.
    let mut other = eth(mac("02:00:00:00:aa:01"), me, &[0u8; 46]);
    other[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    send(&mut s, &other);
    let mut vlan = other.clone();
    vlan[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    send(&mut s, &vlan);

    let st = wait_for("drop counters", WAIT, || {
        let st = a.stats(&m);
        (st.rx_packets == 10).then_some(st)
    });
    assert_eq!(st.drops.get("neighbor"), Some(&3), "{st:?}");
    assert_eq!(st.drops.get("ethertype"), Some(&2), "{st:?}");
    assert_eq!(st.tx_packets, 5, "5 answers: {st:?}");

    // `memifctl show stats` shows the reasons.
    let o = run(Command::new(MEMIFCTL)
        .arg("--api")
        .arg(m.api_socket())
        .args(["show", "stats"]));
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert_contains(&out, "ethertype=2");
    assert_contains(&out, "neighbor=3");
    // And the metrics endpoint.
    let body = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(metrics).expect("metrics endpoint");
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut b = String::new();
        c.read_to_string(&mut b).unwrap();
        b
    };
    assert_contains(&body, r#"reason="ethertype"} 2"#);
    assert_contains(&body, r#"reason="neighbor"} 3"#);
}

#[test]
fn pods_reach_each_other_across_modes_with_their_macs() {
    preflight_dataplane(false);
    let dir = TempDir::new("dp-fwd");
    let m = Memifd::start(&dir.path);
    let net = network("fwd");
    let t = 2;
    let pod = |tag, mode, host, mac, rx| {
        Pod::attach(
            &m,
            PodSpec {
                tag,
                network: &net,
                mode,
                ips: vec![v4(t, host).into(), v6(t, host).into()],
                mac,
                rx,
            },
        )
    };
    let a = pod(
        "fwd-a",
        Mode::Ethernet,
        2,
        Some("02:00:00:00:aa:0a"),
        RxMode::Adaptive,
    );
    let b = pod(
        "fwd-b",
        Mode::Ethernet,
        3,
        Some("02:00:00:00:aa:0b"),
        RxMode::Polling,
    );
    let c = pod("fwd-c", Mode::Ip, 4, None, RxMode::Interrupt);
    let (pa, pb) = (mac("02:00:00:00:aa:0a"), mac("02:00:00:00:aa:0b"));
    let (ma, mb) = (mac("02:00:00:00:00:0a"), mac("02:00:00:00:00:0b"));
    let mut sa = a.slave(&m, 2048);
    let mut sb = b.slave(&m, 2048);
    let mut sc = c.slave(&m, 2048);
    let (a4, b4, c4) = (v4(t, 2).into(), v4(t, 3).into(), v4(t, 4).into());
    let (a6, b6, c6) = (v6(t, 2).into(), v6(t, 3).into(), v6(t, 4).into());

    // A -> B before B ever spoke: B's MAC is unknown, so broadcast; the
    // source is B's port; the IP packet is untouched (same TTL: a network
    // is one link).
    let ip = udp(a4, b4, 64, b"hello b");
    send(&mut sa, &eth(pa, ma, &ip));
    let f = expect_frame(&mut sb, "A to B");
    assert_eq!(&f[..12], &[Mac::BROADCAST.0, pb.0].concat()[..]);
    assert_eq!(&f[12..14], &[0x08, 0x00]);
    assert_eq!(&f[14..], &ip[..]);

    // B answers (any destination MAC: promiscuous); A's MAC was learned.
    let ip = udp(b4, a4, 64, b"hello a");
    send(&mut sb, &eth(Mac([2, 2, 2, 2, 2, 2]), mb, &ip));
    let f = expect_frame(&mut sa, "B to A");
    assert_eq!(&f[..12], &[ma.0, pa.0].concat()[..]);
    assert_eq!(&f[14..], &ip[..]);

    // Now B's MAC is known too; IPv6 the same way.
    let ip = udp(a6, b6, 64, b"v6 to b");
    send(&mut sa, &eth(pa, ma, &ip));
    let f = expect_frame(&mut sb, "A to B, v6");
    assert_eq!(&f[..12], &[mb.0, pb.0].concat()[..]);
    assert_eq!(&f[12..14], &[0x86, 0xdd]);
    assert_eq!(&f[14..], &ip[..]);

    // Ethernet to ip mode: the header goes; ip to ethernet: it comes.
    let ip = udp(a4, c4, 64, b"to c");
    send(&mut sa, &eth(pa, ma, &ip));
    assert_eq!(expect_frame(&mut sc, "A to C"), ip);
    let ip = udp(c6, a6, 64, b"from c");
    send(&mut sc, &ip);
    let f = expect_frame(&mut sa, "C to A");
    assert_eq!(
        &f[..14],
        &[&ma.0[..], &pa.0[..], &[0x86, 0xdd]].concat()[..]
    );
    assert_eq!(&f[14..], &ip[..]);
    let ip = udp(c4, b4, 64, b"c to b");
    send(&mut sc, &ip);
    assert_eq!(&expect_frame(&mut sb, "C to B")[14..], &ip[..]);

    // A pod may send to itself.
    let ip = udp(a4, a4, 64, b"me");
    send(&mut sa, &eth(pa, ma, &ip));
    assert_eq!(&expect_frame(&mut sa, "A to A")[14..], &ip[..]);

    // Never routed: multicast, broadcast, link-local; garbage; and a TTL
    // that expires at the uplink.
    send(
        &mut sa,
        &eth(pa, ma, &udp(a4, "224.0.0.5".parse().unwrap(), 1, b"")),
    );
    send(
        &mut sa,
        &eth(pa, ma, &udp(a4, Ipv4Addr::BROADCAST.into(), 1, b"")),
    );
    send(
        &mut sa,
        &eth(pa, ma, &udp(a6, "fe80::1".parse().unwrap(), 1, b"")),
    );
    send(&mut sc, &[0u8; 40]);
    send(
        &mut sa,
        &eth(pa, ma, &udp(a4, v4(t, 250).into(), 1, b"ttl 1")),
    );
    let st = wait_for("A's counters", WAIT, || {
        let st = a.stats(&m);
        (st.rx_packets == 8).then_some(st)
    });
    assert_eq!(st.drops.get("not-routable"), Some(&3), "{st:?}");
    assert_eq!(st.drops.get("ttl-expired"), Some(&1), "{st:?}");
    assert_eq!(st.tx_packets, 3, "{st:?}");
    assert_eq!(c.drops(&m, "malformed"), 1);
    let sb_stats = b.stats(&m);
    assert_eq!((sb_stats.rx_packets, sb_stats.tx_packets), (1, 3));
    expect_nothing(&mut sb, "nothing else reaches B");
    expect_nothing(&mut sc, "nothing else reaches C");
}

/// Forwarding writes a short frame's first 64 bytes as one block: the
/// bytes past its end must be zeros, never what the sender's buffer held
/// from an earlier frame (to another pod).
#[test]
fn short_frames_carry_nothing_past_their_end() {
    preflight_dataplane(false);
    let dir = TempDir::new("dp-short");
    let m = Memifd::start(&dir.path);
    let net = network("short");
    let t = 9;
    let pod = |tag, host| {
        Pod::plain(
            &m,
            tag,
            &net,
            Mode::Ethernet,
            vec![v4(t, host).into()],
            RxMode::Polling,
        )
    };
    let (a, b, c) = (pod("short-a", 2), pod("short-b", 3), pod("short-c", 4));
    let mut sa = a.slave(&m, 2048);
    let mut sb = b.slave(&m, 2048);
    let mut sc = c.slave(&m, 2048);
    let (a4, b4, c4) = (v4(t, 2).into(), v4(t, 3).into(), v4(t, 4).into());
    let (to_a, from_a) = (mac("02:00:00:00:00:01"), mac("02:00:00:00:aa:0a"));
    // One lap of A's tx ring (64 slots) of long frames to C: every buffer
    // of A now holds bytes for C past byte 64.
    for i in 0..64 {
        let ip = udp(a4, c4, 64, &payload(i, 500));
        send(&mut sa, &eth(to_a, from_a, &ip));
        assert_eq!(&expect_frame(&mut sc, "A to C")[14..], &ip[..]);
    }
    // A short frame to B reuses A's first buffer.
    let ip = udp(a4, b4, 64, b"short");
    let frame = eth(to_a, from_a, &ip);
    assert!(frame.len() < 64);
    send(&mut sa, &frame);
    let got = expect_frame(&mut sb, "A to B");
    assert_eq!(got.len(), frame.len());
    assert_eq!(&got[14..], &ip[..]);
    // B's first buffer, as memifd wrote it (B reposted it since, with
    // its full length; the bytes stay): past the frame, zeros.
    let d = sb.rx[0].ring().desc(0);
    let mut past = vec![0xffu8; 64 - frame.len()];
    assert!(sb.region.read(d.offset as usize + frame.len(), &mut past));
    assert!(
        past.iter().all(|&x| x == 0),
        "bytes past the frame's end: {past:02x?}"
    );
}

/// One burst from a pod that goes to several destinations: forwarding
/// takes runs of frames for one destination at a time, finding each
/// destination once a run, and hands the frames it cannot take (an ip-mode
/// pod, a broadcast, a frame for the host) to the general path in between.
/// Every frame must arrive whole, in order, at its own pod.
#[test]
fn a_burst_for_several_pods_is_split_between_them_in_order() {
    preflight_dataplane(false);
    let dir = TempDir::new("dp-runs");
    let m = Memifd::start(&dir.path);
    let net = network("runs");
    let t = 10;
    let pod = |tag, mode, host| {
        Pod::plain(
            &m,
            tag,
            &net,
            mode,
            vec![v4(t, host).into(), v6(t, host).into()],
            RxMode::Polling,
        )
    };
    let a = pod("runs-a", Mode::Ethernet, 2);
    let b = pod("runs-b", Mode::Ethernet, 3);
    let c = pod("runs-c", Mode::Ethernet, 4);
    let d = pod("runs-d", Mode::Ip, 5);
    let mut sa = a.slave(&m, 2048);
    let mut sb = b.slave(&m, 2048);
    let mut sc = c.slave(&m, 2048);
    let mut sd = d.slave(&m, 2048);
    let (a4, b4, c4, d4) = (
        v4(t, 2).into(),
        v4(t, 3).into(),
        v4(t, 4).into(),
        v4(t, 5).into(),
    );
    let (a6, b6) = (v6(t, 2).into(), v6(t, 3).into());
    let (to_a, from_a) = (mac("02:00:00:00:00:01"), mac("02:00:00:00:aa:0a"));
    // A's MAC is learned first (the fast path takes frames from the
    // learned MAC only).
    let ip = udp(a4, b4, 64, b"learn");
    send(&mut sa, &eth(to_a, from_a, &ip));
    expect_frame(&mut sb, "A to B, first");

    let to = |dst, n: u32, len| eth(to_a, from_a, &udp(a4, dst, 64, &payload(n, len)));
    let burst = [
        (Some('b'), to(b4, 1, 20)),
        (Some('b'), to(b4, 2, 300)),
        (Some('c'), to(c4, 3, 20)),
        (Some('d'), to(d4, 4, 20)),
        (Some('c'), to(c4, 5, 1200)),
        (None, to(Ipv4Addr::BROADCAST.into(), 6, 20)),
        (
            Some('b'),
            eth(to_a, from_a, &udp(a6, b6, 64, &payload(7, 40))),
        ),
        (Some('a'), to(a4, 8, 20)),
        // For the host (an address of no pod), with a TTL the uplink
        // drops: it never leaves memifd.
        (
            None,
            eth(to_a, from_a, &udp(a4, v4(t, 99).into(), 1, &payload(9, 20))),
        ),
        (Some('b'), to(b4, 10, 2)),
        (Some('c'), to(c4, 11, 20)),
    ];
    let frames: Vec<&[u8]> = burst.iter().map(|(_, f)| &f[..]).collect();
    assert_eq!(
        sa.tx[0].tx_burst(&frames).expect("slave tx"),
        frames.len(),
        "A's ring takes the whole burst at once"
    );
    for (pod, s) in [
        ('b', &mut sb),
        ('c', &mut sc),
        ('d', &mut sd),
        ('a', &mut sa),
    ] {
        for (i, (_, f)) in burst
            .iter()
            .enumerate()
            .filter(|(_, (p, _))| *p == Some(pod))
        {
            let got = expect_frame(s, &format!("frame {i} at pod {pod}"));
            if pod == 'd' {
                assert_eq!(got, f[14..], "frame {i} at ip-mode pod d");
            } else {
                assert_eq!(got.len(), f.len(), "frame {i} at pod {pod}");
                assert_eq!(&got[12..], &f[12..], "frame {i} at pod {pod}");
            }
        }
        expect_nothing(s, &format!("nothing else reaches pod {pod}"));
    }
    let st = a.stats(&m);
    assert_eq!(st.rx_packets, 1 + burst.len() as u64, "{st:?}");
    assert_eq!(st.drops.get("not-routable"), Some(&1), "{st:?}");
    assert_eq!(st.drops.get("ttl-expired"), Some(&1), "{st:?}");
}

#[test]
fn mtu_sized_and_chained_frames_arrive_whole() {
    preflight_dataplane(false);
    let dir = TempDir::new("dp-mtu");
    let m = Memifd::start(&dir.path);
    let net = network("mtu");
    let t = 3;
    let a = Pod::attach(
        &m,
        PodSpec {
            tag: "mtu-a",
            network: &net,
            mode: Mode::Ethernet,
            ips: vec![v4(t, 2).into()],
            mac: Some("02:00:00:00:aa:0a"),
            rx: RxMode::Polling,
        },
    );
    let b = Pod::plain(
        &m,
        "mtu-b",
        &net,
        Mode::Ip,
        vec![v6(t, 3).into(), v4(t, 3).into()],
        RxMode::Adaptive,
    );
    let (pa, ma) = (mac("02:00:00:00:aa:0a"), mac(POD_MAC));
    // A's buffers hold 2048 bytes, B's only 256: what A sends is chained
    // on its side beyond 2048 bytes, and always chained into B's.
    let mut sa = a.slave(&m, 2048);
    let mut sb = b.slave(&m, 256);
    let (a4, b4) = (v4(t, 2).into(), v4(t, 3).into());
    // MTU-sized (1500-byte IP) and jumbo (9000) both ways.
    for (i, ip_len) in [1500usize, 9000, 64, 2048 - 14, 2048 - 13]
        .iter()
        .enumerate()
    {
        let body = payload(i as u32, ip_len - 28);
        let ip = udp(a4, b4, 64, &body);
        assert_eq!(ip.len(), *ip_len);
        send(&mut sa, &eth(pa, ma, &ip));
        let got = recv(&mut sb, WAIT).unwrap_or_else(|| {
            panic!(
                "{ip_len}-byte packet A to B did not arrive: A {:?} B {:?}",
                a.stats(&m),
                b.stats(&m)
            )
        });
        assert!(got == ip, "{ip_len}-byte packet changed on the way A to B");
        let ip = udp(b4, a4, 64, &body);
        send(&mut sb, &ip);
        let got = expect_frame(&mut sa, &format!("{ip_len}-byte packet B to A"));
        assert_eq!(got.len(), ip_len + 14);
        assert!(got[14..] == ip[..], "{ip_len}-byte packet changed B to A");
        assert_eq!(&got[..14], &[&ma.0[..], &pa.0[..], &[8, 0]].concat()[..]);
    }
    let sb_stats = b.stats(&m);
    assert_eq!(sb_stats.tx_packets, 5, "{sb_stats:?}");
    assert_eq!(
        sb_stats.tx_bytes,
        1500 + 9000 + 64 + 2034 + 2035,
        "{sb_stats:?}"
    );
}

/// `memifctl client` in the pod netns: a small IP stack on the memif.
fn memifctl_client(pod: &Pod, args: &[String]) -> Child {
    spawn_memifctl_client(&pod.req, &pod.ns.path(), args)
}

fn finish(mut c: Child, within: Duration) -> (bool, String) {
    let st = testpmd::wait_timeout(&mut c, within);
    if st.is_none() {
        let _ = c.kill();
    }
    let o = c.wait_with_output().expect("client output");
    (st.is_some_and(|s| s.success()), text(&o))
}

struct Reaper(Child);
impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ip_mode_clients_ping_each_other() {
    preflight_dataplane(false);
    let dir = TempDir::new("dp-ipmode");
    let m = Memifd::start(&dir.path);
    let net = network("ipmode");
    let t = 4;
    let pod = |tag, host| {
        Pod::plain(
            &m,
            tag,
            &net,
            Mode::Ip,
            vec![v4(t, host).into(), v6(t, host).into()],
            RxMode::Interrupt,
        )
    };
    let a = pod("ipm-a", 2);
    let b = pod("ipm-b", 3);
    let responder = Reaper(memifctl_client(
        &b,
        &[
            "--ip".into(),
            v4(t, 3).to_string(),
            "--ip".into(),
            v6(t, 3).to_string(),
            "--duration".into(),
            "60".into(),
        ],
    ));
    wait_connected(&m, &b.req.key, true);
    for (src, dst) in [
        (IpAddr::from(v4(t, 2)), IpAddr::from(v4(t, 3))),
        (v6(t, 2).into(), v6(t, 3).into()),
    ] {
        let c = memifctl_client(
            &a,
            &[
                "--ip".into(),
                src.to_string(),
                "--ping".into(),
                dst.to_string(),
                "--count".into(),
                "3".into(),
                "--interval".into(),
                "0.1".into(),
            ],
        );
        let (ok, out) = finish(c, Duration::from_secs(30));
        assert!(ok, "ping {dst} from an ip-mode client failed:\n{out}");
        assert_contains(&out, "3 transmitted, 3 received, 0% loss");
        // Pod to pod keeps the TTL: the client's 64 comes back as is.
        assert_contains(&out, &format!("bytes from {dst}: icmp_seq=1 ttl=64"));
    }
    drop(responder);
    let st = b.stats(&m);
    assert!(st.rx_packets >= 6 && st.tx_packets >= 6, "{st:?}");
}

/// `ping` from the host netns.
fn host_ping(args: &[&str]) -> (bool, String) {
    let o = run(Command::new("ping").args(["-n", "-W", "2"]).args(args));
    (o.status.success(), text(&o))
}

#[test]
fn the_host_reaches_pods_through_the_uplink() {
    preflight_dataplane(false);
    let dir = TempDir::new("dp-host");
    let m = Memifd::start(&dir.path);
    let net = network("host");
    let t = 5;
    let e = Pod::plain(
        &m,
        "host-e",
        &net,
        Mode::Ethernet,
        vec![v4(t, 2).into(), v6(t, 2).into()],
        RxMode::Adaptive,
    );
    let i = Pod::plain(
        &m,
        "host-i",
        &net,
        Mode::Ip,
        vec![v4(t, 3).into()],
        RxMode::Interrupt,
    );
    // The uplink: the documented name, host routes for every pod address.
    let up = uplink(&m, &net).expect("the network has an uplink");
    let dev = tun_name(&net);
    assert_eq!(up.device.as_deref(), Some(dev.as_str()), "{up:?}");
    assert!(dev.len() <= 15 && link_exists(&dev));
    for ip in [
        IpAddr::from(v4(t, 2)),
        IpAddr::from(v6(t, 2)),
        IpAddr::from(v4(t, 3)),
    ] {
        let r = host_route(ip);
        assert_contains(&r, &format!("dev {dev}"));
    }
    let _ce = Reaper(memifctl_client(
        &e,
        &[
            "--ip".into(),
            v4(t, 2).to_string(),
            "--ip".into(),
            v6(t, 2).to_string(),
            "--duration".into(),
            "60".into(),
        ],
    ));
    let _ci = Reaper(memifctl_client(
        &i,
        &[
            "--ip".into(),
            v4(t, 3).to_string(),
            "--duration".into(),
            "60".into(),
        ],
    ));
    wait_connected(&m, &e.req.key, true);
    wait_connected(&m, &i.req.key, true);
    // Replies leave the pod with TTL 64; memifd routes them into the
    // host: 63.
    for (dst, v6) in [
        (v4(t, 2).to_string(), false),
        (v6(t, 2).to_string(), true),
        (v4(t, 3).to_string(), false),
    ] {
        let fam = if v6 { "-6" } else { "-4" };
        let (ok, out) = host_ping(&[fam, "-c", "3", "-i", "0.2", &dst]);
        assert!(ok, "ping {dst} from the host:\n{out}");
        assert_contains(&out, "3 received");
        assert_contains(&out, "ttl=63");
    }
    // MTU-sized, unfragmented.
    let (ok, out) = host_ping(&[
        "-c",
        "2",
        "-i",
        "0.2",
        "-s",
        "1472",
        "-M",
        "do",
        &v4(t, 2).to_string(),
    ]);
    assert!(ok, "MTU-sized ping:\n{out}");
    assert_contains(&out, "1480 bytes from");
    // TTL 1: memifd cannot route it on; dropped and counted.
    let (ok, out) = host_ping(&["-c", "1", "-t", "1", &v4(t, 3).to_string()]);
    assert!(!ok, "a TTL 1 packet must not reach the pod:\n{out}");
    let up = uplink(&m, &net).expect("uplink");
    assert_eq!(up.stats.drops.get("ttl-expired"), Some(&1), "{up:?}");
    assert!(
        up.stats.rx_packets >= 12 && up.stats.tx_packets >= 11,
        "{up:?}"
    );

    // Detach: the pod's routes go; the last pod takes the uplink with it.
    e.detach(&m);
    assert_eq!(host_route(v4(t, 2).into()), "");
    assert_eq!(host_route(v6(t, 2).into()), "");
    assert_contains(&host_route(v4(t, 3).into()), &dev);
    i.detach(&m);
    wait_for("the uplink device to go", WAIT, || {
        (!link_exists(&dev)).then_some(())
    });
    assert_eq!(host_route(v4(t, 3).into()), "");
    assert!(uplink(&m, &net).is_none());
    // A new pod on the network brings it back.
    let again = Pod::plain(
        &m,
        "host-again",
        &net,
        Mode::Ip,
        vec![v4(t, 9).into()],
        RxMode::Interrupt,
    );
    assert!(link_exists(&dev));
    assert_contains(&host_route(v4(t, 9).into()), &dev);
    again.detach(&m);
}

#[test]
fn networks_are_isolated() {
    preflight_dataplane(false);
    let dir = TempDir::new("dp-iso");
    // Two workers: the networks may land on different threads.
    let m = Memifd::start_with(&dir.path, r#"{"workers": 2}"#, &[]);
    let (nx, ny) = (network("iso-x"), network("iso-y"));
    let t = 6;
    let pod = |tag, net: &str, host| {
        Pod::plain(
            &m,
            tag,
            net,
            Mode::Ip,
            vec![v4(t, host).into()],
            RxMode::Adaptive,
        )
    };
    // X1 and Y1 hold the same address, each in its own network.
    let x1 = pod("iso-x1", &nx, 1);
    let x2 = pod("iso-x2", &nx, 2);
    let y1 = pod("iso-y1", &ny, 1);
    let y2 = pod("iso-y2", &ny, 3);
    let (mut sx1, mut sx2) = (x1.slave(&m, 2048), x2.slave(&m, 2048));
    let (mut sy1, mut sy2) = (y1.slave(&m, 2048), y2.slave(&m, 2048));
    let shared: IpAddr = v4(t, 1).into();

    let ip = udp(v4(t, 2).into(), shared, 2, b"x2 to x1");
    send(&mut sx2, &ip);
    assert_eq!(expect_frame(&mut sx1, "X2 to X1"), ip);
    let ip = udp(v4(t, 3).into(), shared, 2, b"y2 to y1");
    send(&mut sy2, &ip);
    assert_eq!(expect_frame(&mut sy1, "Y2 to Y1"), ip);
    expect_nothing(&mut sy1, "X's packet in Y");
    expect_nothing(&mut sx1, "Y's packet in X");

    // An address only network Y has is not X's: X2's packet goes to X's
    // uplink (the host, which drops it: TTL 2 becomes 1 on the way).
    let ip = udp(v4(t, 2).into(), v4(t, 3).into(), 2, b"x2 to y2?");
    send(&mut sx2, &ip);
    expect_nothing(&mut sy2, "X2's packet for Y2's address");
    let ux = wait_for("X's uplink tx", WAIT, || {
        uplink(&m, &nx).filter(|u| u.stats.tx_packets == 1)
    });
    let uy = uplink(&m, &ny).expect("Y's uplink");
    assert_ne!(ux.device, uy.device);
    assert_eq!(uy.stats.tx_packets, 0, "{uy:?}");
}

#[test]
fn detach_while_traffic_flows() {
    preflight_dataplane(false);
    let dir = TempDir::new("dp-detach");
    let m = Memifd::start(&dir.path);
    let net = network("detach");
    let t = 7;
    let pod = |tag, host, rx| Pod::plain(&m, tag, &net, Mode::Ip, vec![v4(t, host).into()], rx);
    let a = pod("det-a", 2, RxMode::Polling);
    let b = pod("det-b", 3, RxMode::Adaptive);
    let c = pod("det-c", 4, RxMode::Interrupt);
    let sa = a.slave(&m, 2048);
    let sb = b.slave(&m, 2048);
    let sc = c.slave(&m, 2048);
    let stop = Arc::new(AtomicBool::new(false));
    let got_b = Arc::new(AtomicU64::new(0));
    let got_c = Arc::new(AtomicU64::new(0));
    // A sends to B and C as fast as it can; B and C drain.
    let blaster = {
        let stop = stop.clone();
        let (to_b, to_c) = (
            udp(v4(t, 2).into(), v4(t, 3).into(), 2, &[7; 100]),
            udp(v4(t, 2).into(), v4(t, 4).into(), 2, &[9; 100]),
        );
        let mut sa = sa;
        std::thread::spawn(move || {
            let burst: Vec<&[u8]> = (0..32)
                .map(|i| if i % 2 == 0 { &to_b[..] } else { &to_c[..] })
                .collect();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && sa.poll_disconnect().is_none() {
                match sa.tx[0].tx_burst(&burst) {
                    Ok(n) => sent += n as u64,
                    Err(_) => break,
                }
                std::thread::yield_now();
            }
            sent
        })
    };
    let drain = |mut s: SlaveConnection, n: Arc<AtomicU64>, stop: Arc<AtomicBool>| {
        std::thread::spawn(move || {
            let mut bufs = PacketBuf::batch(32, MAX_FRAME);
            while !stop.load(Ordering::Relaxed) && s.poll_disconnect().is_none() {
                match s.rx[0].rx_burst(&mut bufs) {
                    Ok(k) => {
                        n.fetch_add(k as u64, Ordering::Relaxed);
                        if k == 0 {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                    Err(_) => break,
                }
            }
        })
    };
    let db = drain(sb, got_b.clone(), stop.clone());
    let dc = drain(sc, got_c.clone(), stop.clone());
    wait_for("frames at B and C", WAIT, || {
        (got_b.load(Ordering::Relaxed) > 1000 && got_c.load(Ordering::Relaxed) > 1000).then_some(())
    });
    // B goes while A keeps sending to it.
    b.detach(&m);
    let c_then = got_c.load(Ordering::Relaxed);
    wait_for("C keeps receiving after B left", WAIT, || {
        (got_c.load(Ordering::Relaxed) > c_then + 1000).then_some(())
    });
    m.assert_alive();
    // B's address now goes to the uplink (and dies in the host).
    wait_for("A's frames for B reach the uplink", WAIT, || {
        uplink(&m, &net).filter(|u| u.stats.tx_packets > 0)
    });
    // The sender goes, mid-burst.
    a.detach(&m);
    stop.store(true, Ordering::Relaxed);
    let sent = blaster.join().expect("blaster");
    db.join().expect("drain b");
    dc.join().expect("drain c");
    m.assert_alive();
    assert!(sent > 2000);
    // C still works with a new sender.
    // A new sender and a new receiver for C's address.
    c.detach(&m);
    let a2 = pod("det-a2", 5, RxMode::Interrupt);
    let c2 = pod("det-c2", 4, RxMode::Interrupt);
    let mut s2 = a2.slave(&m, 2048);
    let mut sc2 = c2.slave(&m, 2048);
    let ip = udp(v4(t, 5).into(), v4(t, 4).into(), 2, b"after");
    send(&mut s2, &ip);
    assert_eq!(expect_frame(&mut sc2, "new A to new C"), ip);
    let st = m.status();
    assert_eq!(st.attachments, 2, "{st:?}");
}

#[test]
fn testpmd_pods_exchange_traffic() {
    let _serial = DPDK.lock().unwrap_or_else(|e| e.into_inner());
    preflight_dataplane(true);
    let dir = TempDir::new("dp-tpmd");
    let m = Memifd::start(&dir.path);
    let net = network("tpmd");
    let t = 8;
    let pod = |tag, host| {
        Pod::plain(
            &m,
            tag,
            &net,
            Mode::Ethernet,
            vec![v4(t, host).into()],
            RxMode::Interrupt,
        )
    };
    let a = pod("tp-a", 2);
    let b = pod("tp-b", 3);
    // Both testpmds busy-poll a core each: memifd's ports use interrupts,
    // so its worker runs only when frames wait.
    // 5-tuple swap on both sides: whatever arrives goes back with source
    // and destination (MAC, IP, port) swapped, so frames bounce between
    // the pods through memifd. Each starts with one txonly burst
    // (tx_first) addressed to the other.
    let start = |p: &Pod, label: &str, src: Ipv4Addr, dst: Ipv4Addr, lcores: (u32, u32)| {
        Testpmd::start(TestpmdOpts {
            label,
            prefix: format!("dp-{}-{label}", pid()),
            netns: Some(&p.ns.name),
            ports: vec![(
                "client",
                p.req.socket_name().trim_start_matches('@').to_string(),
            )],
            lcores,
            args: vec![
                "--forward-mode=5tswap".into(),
                format!("--tx-ip={src},{dst}"),
                "--burst=32".into(),
            ],
            out: dir.path.join(format!("{label}.out")),
        })
    };
    let mut ta = start(&a, "tp-a", v4(t, 2), v4(t, 3), (1, 0));
    let mut tb = start(&b, "tp-b", v4(t, 3), v4(t, 2), (0, 1));
    ta.wait_link_up(0);
    tb.wait_link_up(0);
    // Both forward (posting their rx buffers) before either injects: a
    // burst towards a client that has not posted buffers yet is dropped
    // (tx-ring-full) and nothing would be left to bounce.
    ta.cmd("start");
    tb.cmd("start");
    std::thread::sleep(Duration::from_millis(500));
    ta.cmd("stop");
    tb.cmd("stop");
    tb.cmd("start tx_first 16");
    ta.cmd("start tx_first 16");
    std::thread::sleep(Duration::from_secs(2));
    ta.cmd("stop");
    tb.cmd("stop");
    let (pa, pb) = (ta.port_stats(0), tb.port_stats(0));
    const MIN: u64 = 10_000;
    assert!(
        pa.rx_packets > MIN && pb.rx_packets > MIN,
        "too few frames bounced: A {pa:?} B {pb:?}\nmemifd: A {:?} B {:?}",
        a.stats(&m),
        b.stats(&m)
    );
    // memifd took everything each pod sent...
    let (sa, sb) = wait_for("memifd to drain both pods", WAIT, || {
        let (sa, sb) = (a.stats(&m), b.stats(&m));
        (sa.rx_packets == pa.tx_packets && sb.rx_packets == pb.tx_packets).then_some((sa, sb))
    });
    // ...and gave it to the other pod or counted why not.
    let dropped = |s: &IfStats| s.drops.values().sum::<u64>();
    assert_eq!(sa.rx_packets, sb.tx_packets + dropped(&sb), "{sa:?} {sb:?}");
    assert_eq!(sb.rx_packets, sa.tx_packets + dropped(&sa), "{sa:?} {sb:?}");
    for (s, p) in [(&sa, &pa), (&sb, &pb)] {
        // What memifd sent, the pod received, but for what was still in
        // its ring when it stopped.
        assert!(
            s.tx_packets >= p.rx_packets && s.tx_packets - p.rx_packets <= 1024,
            "{s:?} {p:?}"
        );
        assert_eq!(
            s.drops.keys().filter(|k| *k != "tx-ring-full").count(),
            0,
            "{s:?}"
        );
    }
    ta.quit();
    tb.quit();
}

/// Host -> pod traffic is spread over the pod's queues by the flow hash
/// (one flow stays on one queue), not all on queue 0.
#[test]
fn host_flows_spread_over_the_pods_queues() {
    preflight_dataplane(false);
    let dir = TempDir::new("dp-hostq");
    let m = Memifd::start(&dir.path);
    let net = network("hostq");
    let t = 12;
    let ns = PodNs::new("hostq");
    let ip = v4(t, 2);
    let req = AttachRequest {
        key: key(&format!("c{}-hostq", pid()), "memif-hostq"),
        network: net.clone(),
        netns: ns.path(),
        socket: None,
        spec: MemifSpec {
            mode: Mode::Ip,
            rx_mode: RxMode::Polling,
            rx_queues: 4,
            tx_queues: 4,
            ..MemifSpec::default()
        },
        ips: vec![ip.into()],
        pod: None,
        steer: None,
        vni: None,
    };
    m.client().attach(req.clone()).expect("attach");
    let pod = Pod { ns, req };
    let mut s = pod.slave_with(
        &m,
        SlaveConfig {
            name: "hostq".into(),
            mode: Mode::Ip,
            log2_ring_size: 8,
            s2m_queues: 4,
            m2s_queues: 4,
            ..SlaveConfig::default()
        },
    );
    assert_eq!(s.rx.len(), 4);
    // 32 flows (source ports), two packets each, from the host.
    let flows = 32u16;
    let base = 41000u16;
    let mut socks = Vec::new();
    for f in 0..flows {
        let u = std::net::UdpSocket::bind(("0.0.0.0", base + f)).expect("bind a flow's port");
        socks.push(u);
    }
    let mut queue_of: std::collections::BTreeMap<u16, std::collections::BTreeSet<usize>> =
        Default::default();
    let mut got = 0;
    let mut bufs = PacketBuf::batch(32, 2048);
    for round in 0..2 {
        for u in &socks {
            u.send_to(&[round; 16], (ip, 9)).expect("send to the pod");
        }
        let deadline = Instant::now() + WAIT;
        while got < (round as usize + 1) * flows as usize {
            assert!(Instant::now() < deadline, "{got} packets reached the pod");
            for (q, rx) in s.rx.iter_mut().enumerate() {
                let k = rx.rx_burst(&mut bufs).expect("slave rx");
                for b in &bufs[..k] {
                    let p = b.as_slice();
                    let ihl = (p[0] & 0x0f) as usize * 4;
                    if p[9] != 17 {
                        continue;
                    }
                    let sport = u16::from_be_bytes([p[ihl], p[ihl + 1]]);
                    queue_of.entry(sport).or_default().insert(q);
                    got += 1;
                }
            }
        }
    }
    let used: std::collections::BTreeSet<usize> = queue_of.values().flatten().copied().collect();
    assert!(used.len() >= 3, "32 flows used queues {used:?}");
    for (port, qs) in &queue_of {
        assert_eq!(qs.len(), 1, "flow from port {port} on queues {qs:?}");
    }
    eprintln!("32 host flows over the pod's 4 queues: {used:?}");
}
