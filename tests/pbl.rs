//! PBL ("port-based balancer", `vppExtraMemifPorts`) end to end: the
//! conflist `[bridge (Debian's reference plugin), memif-cni "pbl": true]`
//! driven by libcni (`e2e/cnidriver`) in real namespaces, annotations from
//! the Kubernetes stand-in, memifd's policy rules on this host, an
//! in-process memif client (ip mode) in the pod that reads the steered
//! packets and answers them, and real sockets on the pod's eth0 for the
//! rest.
//!
//! Needs root, `ip netns`, the bridge link type, `/dev/net/tun` and
//! Debian's containernetworking-plugins; without them the tests FAIL with
//! the reason, they never skip. Bridges are `pbl<pid><tag>` and removed on
//! drop; subnets are 10.<100 + pid % 50>.<test>.0/24; networks carry the
//! process id, so tables and rules never meet another run's. Traffic only
//! goes between the host and the pod namespaces.

#[path = "common/cni.rs"]
mod cni_common;
#[path = "common/kube_standin.rs"]
#[allow(dead_code)]
mod kube_standin;
#[path = "common/memifd.rs"]
mod memifd_common;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr as NetAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cni_common::*;
use memif_cni::dataplane::uplink::{steer_table, tun_name};
use memif_cni::memif::socket::Channel;
use memif_cni::memif::wire::Mode;
use memif_cni::memif::{PacketBuf, SlaveConfig, SlaveConnection, SocketAddr};
use memif_cni::packet;
use memifd_common::*;
use serde_json::{json, Value};

const PORTS: &str = "cni.projectcalico.org/vppExtraMemifPorts";
const SPEC: &str = "cni.projectcalico.org/vppExtraMemifSpec";
const NS: &str = "pbl";

fn pid() -> u32 {
    std::process::id()
}

fn subnet(test: u8) -> String {
    format!("10.{}.{test}.0/24", 100 + pid() % 50)
}

fn network(tag: &str) -> String {
    format!("pbl{}-{tag}", pid())
}

/// Fails (never skips) without what these tests need.
#[track_caller]
fn preflight_pbl() {
    preflight();
    let mut missing = Vec::new();
    if !std::path::Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun (the kernel's tun driver)".to_string());
    }
    static PROBE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PROBE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("pblp{}-{n}", pid() % 100_000);
    match Command::new("ip")
        .args(["link", "add", &probe, "type", "bridge"])
        .output()
    {
        Ok(o) if o.status.success() => {
            let _ = Command::new("ip").args(["link", "del", &probe]).status();
        }
        Ok(o) => missing.push(format!(
            "the bridge link type: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => missing.push(format!("ip link add: {e}")),
    }
    assert!(
        missing.is_empty(),
        "PBL tests cannot run here; missing:\n  - {}",
        missing.join("\n  - ")
    );
}

/// The bridge plugin with `isGateway` turns on `net.ipv4.ip_forward`; the
/// last world of this process puts back what was there before the first.
static FORWARD: Mutex<(usize, Option<String>)> = Mutex::new((0, None));
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// One test's world: the Kubernetes stand-in, memifd with access to it,
/// the CNI directory, a bridge that is removed on drop.
struct World {
    api: kube_standin::KubeStandin,
    cni: Cni,
    bridge: String,
    net: String,
    subnet: String,
    conf: std::path::PathBuf,
}

impl World {
    #[track_caller]
    fn new(tag: &str, test: u8, memifd_extra: Value) -> World {
        preflight_pbl();
        {
            let mut f = FORWARD.lock().unwrap();
            if f.0 == 0 {
                f.1 = std::fs::read_to_string(IP_FORWARD).ok();
            }
            f.0 += 1;
        }
        let api = kube_standin::KubeStandin::start();
        let dir = TempDir::new(tag);
        let m = Memifd::start_kube_with(&dir.path, &api.kubeconfig(), memifd_extra);
        let cni = Cni::with(dir, m);
        let bridge = format!("pbl{}{tag}", pid() % 100_000);
        assert!(bridge.len() <= 15, "{bridge}");
        let net = network(tag);
        let subnet = subnet(test);
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": net,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": cni.ipam_dir(),
                        "ranges": [[{"subnet": subnet}]]
                    }
                },
                {
                    "type": "memif-cni",
                    "pbl": true,
                    "memifdSocket": cni.memifd.api_socket(),
                    "capabilities": {"CNIDeviceInfoFile": true}
                }
            ]
        });
        let conf = cni.write_conf(&format!("{tag}.conflist"), &conflist);
        World {
            api,
            cni,
            bridge,
            net,
            subnet,
            conf,
        }
    }

    fn args(pod: &str) -> String {
        format!("IgnoreUnknown=true;K8S_POD_NAMESPACE={NS};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID=x")
    }

    fn pod(&self, name: &str, ann: &[(&str, &str)]) {
        let a: BTreeMap<String, String> = ann
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.api.insert_pod(NS, name, &a);
    }

    fn devinfo(&self, cid: &str) -> std::path::PathBuf {
        self.cni.dir.path.join(format!("devinfo-{cid}.json"))
    }

    /// ADD through libcni for pod `pod` in `ns` as container `cid`.
    fn add(&self, ns: &Netns, cid: &str, pod: &str) -> Run {
        let cap = json!({"CNIDeviceInfoFile": self.devinfo(cid)});
        self.cni.lib_with(
            "add",
            &self.conf,
            &ns.path().display().to_string(),
            "eth0",
            cid,
            Some(&World::args(pod)),
            Some(&cap),
        )
    }

    fn del(&self, ns: &Netns, cid: &str, pod: &str) -> Run {
        let cap = json!({"CNIDeviceInfoFile": self.devinfo(cid)});
        self.cni.lib_with(
            "del",
            &self.conf,
            &ns.path().display().to_string(),
            "eth0",
            cid,
            Some(&World::args(pod)),
            Some(&cap),
        )
    }

    fn table(&self) -> u32 {
        steer_table(&self.net)
    }

    /// `ip rule` lines of this network's table, both families.
    fn rules(&self) -> Vec<String> {
        let mut v = Vec::new();
        for fam in ["-4", "-6"] {
            let o = Command::new("ip")
                .args([fam, "rule", "show"])
                .output()
                .unwrap();
            v.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.contains(&format!("lookup {}", self.table())))
                    .map(|l| l.trim().to_string()),
            );
        }
        v
    }

    /// Routes of this network's steering table.
    fn table_routes(&self) -> String {
        let o = Command::new("ip")
            .args(["route", "show", "table", &self.table().to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Main-table routes through this network's uplink.
    fn main_routes_via_uplink(&self) -> String {
        let o = Command::new("ip")
            .args(["route", "show", "dev", &tun_name(&self.net)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    #[track_caller]
    fn assert_no_steering(&self) {
        assert_eq!(self.rules(), Vec::<String>::new(), "rules left");
        assert_eq!(self.table_routes(), "", "table routes left");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        let mut f = FORWARD.lock().unwrap();
        f.0 -= 1;
        if f.0 == 0 {
            if let Some(v) = f.1.take() {
                let _ = std::fs::write(IP_FORWARD, v);
            }
        }
    }
}

/// The pod's eth0 address from the ADD result.
#[track_caller]
fn pod_ip(result: &Value) -> Ipv4Addr {
    let ifs = result["interfaces"].as_array().expect("interfaces");
    let eth0 = ifs
        .iter()
        .position(|i| i["name"] == "eth0" && i.get("sandbox").is_some())
        .expect("eth0 in the result");
    let ip = result["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .find(|i| i["interface"] == eth0)
        .expect("an address on eth0");
    let cidr = ip["address"].as_str().unwrap();
    cidr.split('/').next().unwrap().parse().unwrap()
}

/// The in-process memif client (ip mode) of the pod's PBL memif.
#[track_caller]
fn client(w: &World, ns: &Netns, cid: &str) -> SlaveConnection {
    let addr = SocketAddr::parse("@vpp/memif-eth0").unwrap();
    let cfg = SlaveConfig {
        name: format!("pbl-client-{cid}"),
        mode: Mode::Ip,
        log2_ring_size: 6,
        ..SlaveConfig::default()
    };
    let chan = memif_cni::netns::run_in(Some(&ns.path()), move || {
        let c = Channel::connect(&addr)?;
        set_recv_timeout(&c);
        Ok::<Channel, memif_cni::memif::socket::SocketError>(c)
    })
    .expect("enter the pod netns")
    .expect("connect to @vpp/memif-eth0");
    let s = SlaveConnection::handshake(chan, &cfg).expect("memif handshake");
    wait_connected(&w.cni.memifd, &key(cid, "eth0"), true);
    s
}

/// The next packet on the client, within `within`.
fn recv(s: &mut SlaveConnection, within: Duration) -> Option<Vec<u8>> {
    let mut bufs = PacketBuf::batch(1, 9216);
    let deadline = Instant::now() + within;
    loop {
        if s.rx[0].rx_burst(&mut bufs).expect("client rx") == 1 {
            return Some(bufs[0].as_slice().to_vec());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn send(s: &mut SlaveConnection, pkt: &[u8]) {
    let deadline = Instant::now() + WAIT;
    while s.tx[0].tx_burst(&[pkt]).expect("client tx") == 0 {
        assert!(Instant::now() < deadline, "client tx ring stays full");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// An IPv4 packet's fields the tests look at.
#[derive(Debug)]
struct V4<'a> {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    sport: u16,
    dport: u16,
    l4: &'a [u8],
}

#[track_caller]
fn parse_v4(p: &[u8]) -> V4<'_> {
    assert!(p.len() >= 28 && p[0] >> 4 == 4, "not IPv4: {p:02x?}");
    let ihl = (p[0] & 0xf) as usize * 4;
    let l4 = &p[ihl..];
    V4 {
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        proto: p[9],
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        l4,
    }
}

fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut seg = Vec::with_capacity(8 + payload.len());
    seg.extend_from_slice(&sport.to_be_bytes());
    seg.extend_from_slice(&dport.to_be_bytes());
    seg.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    seg.extend_from_slice(&[0, 0]);
    seg.extend_from_slice(payload);
    let c = packet::l4_checksum(src.into(), dst.into(), packet::PROTO_UDP, &seg);
    seg[6..8].copy_from_slice(&c.to_be_bytes());
    packet::ipv4(src, dst, packet::PROTO_UDP, 64, &seg)
}

/// The RST|ACK a closed port answers a SYN with.
fn tcp_rst_for(syn: &V4<'_>) -> Vec<u8> {
    let seq = u32::from_be_bytes(syn.l4[4..8].try_into().unwrap());
    let mut seg = Vec::with_capacity(20);
    seg.extend_from_slice(&syn.dport.to_be_bytes());
    seg.extend_from_slice(&syn.sport.to_be_bytes());
    seg.extend_from_slice(&0u32.to_be_bytes());
    seg.extend_from_slice(&seq.wrapping_add(1).to_be_bytes());
    seg.extend_from_slice(&[5 << 4, 0x14, 0, 0, 0, 0, 0, 0]);
    let c = packet::l4_checksum(syn.dst.into(), syn.src.into(), packet::PROTO_TCP, &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    packet::ipv4(syn.dst, syn.src, packet::PROTO_TCP, 64, &seg)
}

/// A host UDP socket with a receive timeout.
fn host_udp() -> UdpSocket {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// A UDP socket bound to `ip:port` inside `ns` (on eth0's address).
fn pod_udp(ns: &Netns, ip: Ipv4Addr, port: u16) -> UdpSocket {
    let s = memif_cni::netns::run_in(Some(&ns.path()), move || UdpSocket::bind((ip, port)))
        .expect("enter the pod netns")
        .expect("bind in the pod");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn pod_tcp(ns: &Netns, ip: Ipv4Addr, port: u16) -> TcpListener {
    memif_cni::netns::run_in(Some(&ns.path()), move || TcpListener::bind((ip, port)))
        .expect("enter the pod netns")
        .expect("listen in the pod")
}

/// One UDP request from the host to `pod:port`, read by the memif client
/// and answered from the pod's address; the host gets the answer.
#[track_caller]
fn udp_round_trip_via_memif(s: &mut SlaveConnection, pod: Ipv4Addr, port: u16, tag: &str) {
    let h = host_udp();
    let msg = format!("to-memif {tag}");
    h.send_to(msg.as_bytes(), (pod, port)).unwrap();
    let p = recv(s, WAIT).unwrap_or_else(|| panic!("{tag}: nothing on the memif for udp:{port}"));
    let v = parse_v4(&p);
    assert_eq!(
        (v.dst, v.proto, v.dport),
        (pod, packet::PROTO_UDP, port),
        "{tag}: {v:?}"
    );
    assert_eq!(&v.l4[8..], msg.as_bytes(), "{tag}");
    let reply = format!("from-memif {tag}");
    send(s, &udp(pod, port, v.src, v.sport, reply.as_bytes()));
    let mut buf = [0u8; 256];
    let (n, from) = h
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("{tag}: the memif's reply did not reach the host: {e}"));
    assert_eq!(from, NetAddr::new(pod.into(), port), "{tag}");
    assert_eq!(&buf[..n], reply.as_bytes(), "{tag}");
}

#[track_caller]
fn expect_nothing(s: &mut SlaveConnection, what: &str) {
    if let Some(p) = recv(s, Duration::from_millis(300)) {
        panic!("{what}: unexpected packet on the memif {:?}", parse_v4(&p));
    }
}

#[test]
fn steered_ports_reach_the_memif_the_rest_eth0_and_del_leaves_nothing() {
    let w = World::new("steer", 1, json!({}));
    let ns = Netns::new("pbl-steer");
    let cid = format!("pbl{}-steer", pid());
    w.pod(
        "steer",
        &[
            (PORTS, " udp:5000-5999 , TCP:6000-6999,udp:7777"),
            (SPEC, r#"{"isl3": true, "rxqsz": 256}"#),
        ],
    );
    let r = w.add(&ns, &cid, "steer");
    r.ok();
    let res = r.json();
    // prevResult plus the memif's entry; the addresses are the bridge's.
    let ifs = res["interfaces"].as_array().unwrap();
    let memif = ifs.last().unwrap();
    assert_eq!(memif["name"], "memif-eth0", "{res}");
    assert_eq!(memif["sandbox"], ns.path().display().to_string(), "{res}");
    let pod = pod_ip(&res);
    let sub: ipnetwork::Ipv4Network = w.subnet.parse().unwrap();
    assert!(sub.contains(pod), "{pod} not in {}", w.subnet);
    assert!(res["ips"][0]["address"].as_str().unwrap().ends_with("/24"));
    // device-info names the socket.
    let di: Value =
        serde_json::from_str(&std::fs::read_to_string(w.devinfo(&cid)).unwrap()).unwrap();
    assert_eq!(di["memif"]["path"], "@vpp/memif-eth0", "{di}");
    assert_eq!(di["memif"]["mode"], "ip", "{di}");
    assert_eq!(
        ns.listener_set(),
        ["@vpp/memif-eth0".to_string()].into_iter().collect()
    );
    let a = &w.cni.attachments(&w.net)[0];
    assert_eq!(a.request.spec.mode, Mode::Ip);
    assert_eq!(a.request.spec.rx_ring_size, 256);
    assert_eq!(a.request.ips, vec![IpAddr::from(pod)]);

    // On the host: one rule per range, the table route, no main route.
    let rules = w.rules();
    assert_eq!(rules.len(), 3, "{rules:?}");
    for want in [
        format!("to {pod} ipproto udp dport 5000-5999 lookup {}", w.table()),
        format!("to {pod} ipproto tcp dport 6000-6999 lookup {}", w.table()),
        format!("to {pod} ipproto udp dport 7777 lookup {}", w.table()),
    ] {
        assert!(
            rules
                .iter()
                .any(|r| r.starts_with("2000:") && r.contains(&want)),
            "{want:?} not in {rules:?}"
        );
    }
    let dev = tun_name(&w.net);
    assert!(
        w.table_routes().contains(&format!("{pod} dev {dev}")),
        "{}",
        w.table_routes()
    );
    assert_eq!(w.main_routes_via_uplink(), "");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter"))
            .unwrap()
            .trim(),
        "2"
    );

    let mut s = client(&w, &ns, &cid);
    // UDP in range (both edges and the single port): to the memif, and
    // the memif's replies reach the sender.
    for port in [5000, 5999, 7777] {
        udp_round_trip_via_memif(&mut s, pod, port, &format!("udp:{port}"));
    }
    // UDP out of range (below, above, and a port steered only for TCP):
    // to eth0, never to the memif.
    let h = host_udp();
    for port in [4999u16, 7000, 6000] {
        let eth0 = pod_udp(&ns, pod, port);
        h.send_to(b"to-eth0", (pod, port)).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = eth0
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("udp:{port} on eth0: {e}"));
        assert_eq!(&buf[..n], b"to-eth0");
        eth0.send_to(b"eth0-reply", from).unwrap();
        let (n, _) = h.recv_from(&mut buf).expect("eth0's reply");
        assert_eq!(&buf[..n], b"eth0-reply");
    }
    expect_nothing(&mut s, "udp:4999, 7000, 6000 (not steered)");

    // TCP out of range: a real listener on eth0 accepts.
    let l = pod_tcp(&ns, pod, 7100);
    let c = TcpStream::connect_timeout(&(pod, 7100).into(), WAIT).expect("tcp:7100 to eth0");
    let (_conn, peer) = l.accept().unwrap();
    assert_eq!(peer, c.local_addr().unwrap());
    expect_nothing(&mut s, "tcp:7100 (not steered)");
    // TCP in range: the SYN arrives at the memif; its RST reaches the
    // host's stack (connection refused), not a timeout.
    let t = std::thread::spawn(move || TcpStream::connect_timeout(&(pod, 6500).into(), WAIT));
    let p = recv(&mut s, WAIT).expect("a SYN for tcp:6500 on the memif");
    let syn = parse_v4(&p);
    assert_eq!((syn.proto, syn.dport), (packet::PROTO_TCP, 6500), "{syn:?}");
    assert_eq!(syn.l4[13] & 0x12, 0x02, "a SYN: {syn:?}");
    send(&mut s, &tcp_rst_for(&syn));
    match t.join().unwrap() {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        other => panic!("tcp:6500 should be refused by the memif's RST: {other:?}"),
    }
    // A listener on eth0 in the steered range never sees its port's
    // traffic: it goes to the memif.
    let l2 = pod_tcp(&ns, pod, 6001);
    l2.set_nonblocking(true).unwrap();
    let t = std::thread::spawn(move || TcpStream::connect_timeout(&(pod, 6001).into(), WAIT));
    let p = recv(&mut s, WAIT).expect("a SYN for tcp:6001 on the memif");
    let syn = parse_v4(&p);
    assert_eq!(syn.dport, 6001);
    send(&mut s, &tcp_rst_for(&syn));
    assert!(t.join().unwrap().is_err());
    assert!(
        l2.accept().is_err(),
        "eth0's listener got a steered connection"
    );

    wait_stats(
        &w.cni.memifd,
        &key(&cid, "eth0"),
        "5 packets each way",
        |st| st.tx_packets >= 5 && st.rx_packets >= 5,
    );

    // CHECK passes while everything is there.
    w.cni
        .lib_with(
            "check",
            &w.conf,
            &ns.path().display().to_string(),
            "eth0",
            &cid,
            Some(&World::args("steer")),
            Some(&json!({"CNIDeviceInfoFile": w.devinfo(&cid)})),
        )
        .ok();

    // DEL: no rule, no route, no listener, no attachment, no device-info.
    drop(s);
    w.del(&ns, &cid, "steer").ok();
    w.assert_no_steering();
    ns.wait_listeners(&Default::default());
    assert!(w.cni.attachments(&w.net).is_empty());
    assert!(!w.devinfo(&cid).exists());
    assert!(w.cni.allocations(&w.net).is_empty());
    // Twice is fine.
    w.del(&ns, &cid, "steer").ok();
}

#[test]
fn a_pod_without_the_annotation_is_untouched() {
    let w = World::new("plain", 2, json!({}));
    let ns = Netns::new("pbl-plain");
    let cid = format!("pbl{}-plain", pid());
    // Other CalicoVPP annotations (and a spec without ports) ask for no
    // PBL memif.
    w.pod(
        "plain",
        &[
            (SPEC, r#"{"isl3": true}"#),
            (
                "cni.projectcalico.org/vppInterfacesSpec",
                r#"{"memif-eth1": {"rx": 2}}"#,
            ),
        ],
    );
    let r = w.add(&ns, &cid, "plain");
    r.ok();
    let res = r.json();
    // Exactly the bridge plugin's result: its interfaces, nothing of ours.
    let names: Vec<&str> = res["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{res}");
    assert_eq!(names[2], "eth0", "{res}");
    assert!(names.iter().all(|n| !n.starts_with("memif")), "{res}");
    assert!(!w.devinfo(&cid).exists());
    assert!(w.cni.attachments(&w.net).is_empty());
    assert!(ns.listener_set().is_empty());
    w.assert_no_steering();
    assert!(w.cni.memifd.client().uplinks().unwrap().is_empty());
    // The pod's eth0 works as the bridge made it.
    let pod = pod_ip(&res);
    let l = pod_tcp(&ns, pod, 5001);
    TcpStream::connect_timeout(&(pod, 5001).into(), WAIT).expect("tcp to eth0");
    l.accept().unwrap();
    // Without the pod's identity in CNI_ARGS memifd is not even asked.
    let ns2 = Netns::new("pbl-plain2");
    let r2 = w.cni.lib_with(
        "add",
        &w.conf,
        &ns2.path().display().to_string(),
        "eth0",
        &format!("{cid}-2"),
        None,
        None,
    );
    r2.ok();
    assert_eq!(r2.json()["interfaces"].as_array().unwrap().len(), 3);
    w.del(&ns, &cid, "plain").ok();
    w.cni
        .lib_with(
            "del",
            &w.conf,
            &ns2.path().display().to_string(),
            "eth0",
            &format!("{cid}-2"),
            None,
            None,
        )
        .ok();
    assert!(w.cni.allocations(&w.net).is_empty());
}

/// ADD+DEL through libcni, round robin: the conflist for a pod with the
/// annotation, for a pod without it, and the bridge plugin alone; prints
/// the mean ADD latency of each (what the plugin costs pods that do not
/// ask: one more plugin exec, one memifd connection with two requests, of
/// which memifd's annotation lookup is a Kubernetes API GET).
#[test]
fn add_latency_with_and_without_the_annotation() {
    let w = World::new("lat", 3, json!({}));
    w.pod("lat-yes", &[(PORTS, "udp:5000-5999")]);
    w.pod("lat-no", &[]);
    let mut alone: Value = serde_json::from_slice(&std::fs::read(&w.conf).unwrap()).unwrap();
    alone["plugins"].as_array_mut().unwrap().truncate(1);
    let alone = w.cni.write_conf("lat-bridge-only.conflist", &alone);
    let n = 10;
    let mut t = [Duration::ZERO; 4];
    for i in 0..4 * n {
        let slot = i % 4;
        let pod = ["lat-yes", "lat-no", "lat-no", ""][slot];
        let conf = if slot == 2 { &alone } else { &w.conf };
        let ns = Netns::new(&format!("pbl-lat{i}"));
        let nsp = ns.path().display().to_string();
        let cid = format!("pbl{}-lat{i}", pid());
        // Slot 3: no pod identity in CNI_ARGS, memifd is not asked.
        let args = (slot != 3).then(|| World::args(pod));
        let t0 = Instant::now();
        let r = w
            .cni
            .lib_with("add", conf, &nsp, "eth0", &cid, args.as_deref(), None);
        t[slot] += t0.elapsed();
        r.ok();
        let memifs = w.cni.attachments(&w.net).len();
        assert_eq!(memifs, usize::from(slot == 0), "{pod}");
        w.cni
            .lib_with("del", conf, &nsp, "eth0", &cid, args.as_deref(), None)
            .ok();
    }
    w.assert_no_steering();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / n as f64;
    eprintln!(
        "ADD through libcni, mean of {n} each: [bridge, memif-cni pbl] with vppExtraMemifPorts {:.1} ms, without {:.1} ms, without and no pod in CNI_ARGS {:.1} ms; [bridge] alone {:.1} ms",
        ms(t[0]),
        ms(t[1]),
        ms(t[3]),
        ms(t[2])
    );
}

#[test]
fn memifd_restart_restores_the_steering_and_cleans_stale_rules() {
    let mut w = World::new("rst", 4, json!({}));
    let ns = Netns::new("pbl-rst");
    let mut gone = Netns::new("pbl-rst-gone");
    let cid = format!("pbl{}-rst", pid());
    let cid2 = format!("pbl{}-rstg", pid());
    w.pod(
        "rst",
        &[(PORTS, "udp:5000-5099"), (SPEC, r#"{"isl3": true}"#)],
    );
    w.pod("rstg", &[(PORTS, "udp:5000-5099,tcp:80")]);
    let pod = pod_ip(&w.add(&ns, &cid, "rst").ok().json());
    let pod2 = pod_ip(&w.add(&gone, &cid2, "rstg").ok().json());
    assert_eq!(w.rules().len(), 3, "{:?}", w.rules());
    {
        let mut s = client(&w, &ns, &cid);
        udp_round_trip_via_memif(&mut s, pod, 5050, "before the restart");
    }

    // A crash: the TUN and its routes go with the process; the rules stay
    // (stale), pointing at an empty table.
    w.cni.memifd.stop(Stop::Kill);
    assert_eq!(w.rules().len(), 3, "{:?}", w.rules());
    assert_eq!(w.table_routes(), "");
    // One pod goes while memifd is down.
    gone.delete();
    w.cni.memifd.restart();
    // The remaining pod's rule and route are back, the gone pod's stale
    // rules are deleted, nothing is doubled.
    let rules = w.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(rules[0].contains(&format!("to {pod} ipproto udp dport 5000-5099")));
    assert!(!rules.iter().any(|r| r.contains(&pod2.to_string())));
    let routes = w.table_routes();
    assert!(
        routes.contains(&pod.to_string()) && !routes.contains(&pod2.to_string()),
        "{routes}"
    );
    assert_eq!(w.main_routes_via_uplink(), "");
    ns.wait_listeners(&["@vpp/memif-eth0".to_string()].into_iter().collect());
    {
        let mut s = client(&w, &ns, &cid);
        udp_round_trip_via_memif(&mut s, pod, 5099, "after the restart");
    }

    // A clean stop removes the rules; the next start puts them back.
    assert!(w.cni.memifd.stop(Stop::Term).success());
    w.assert_no_steering();
    w.cni.memifd.restart();
    assert_eq!(w.rules().len(), 1, "{:?}", w.rules());
    {
        let mut s = client(&w, &ns, &cid);
        udp_round_trip_via_memif(&mut s, pod, 5000, "after a clean restart");
    }
    w.del(&ns, &cid, "rst").ok();
    w.del(&gone, &cid2, "rstg").ok();
    w.assert_no_steering();
    assert!(w.cni.attachments(&w.net).is_empty());
}

#[test]
fn bad_annotations_and_the_gate_are_clear_errors_that_leave_nothing() {
    let w = World::new("bad", 5, json!({}));
    let ns = Netns::new("pbl-bad");
    let cases: &[(&str, Option<&str>, u64, &[&str])] = &[
        (
            "sctp:80",
            None,
            7,
            &["vppExtraMemifPorts", "\"sctp\"", "only tcp and udp"],
        ),
        ("icmp:0", None, 7, &["\"icmp\""]),
        ("tcp:20-10", None, 7, &["starts after it ends"]),
        ("udp:70000", None, 7, &["\"70000\"", "not a port"]),
        (
            "tcp:1-100,udp:1-100,tcp:100",
            None,
            7,
            &["tcp:1-100 and tcp:100 overlap"],
        ),
        ("", None, 7, &["empty"]),
        ("tcp80", None, 7, &["proto:port"]),
        (
            "udp:5000",
            Some(r#"{"rx": 0}"#),
            7,
            &["vppExtraMemifSpec", "rx=0"],
        ),
        ("udp:5000", Some(r#"{"rx": 64}"#), 7, &["rx"]),
        (
            "udp:5000",
            Some(r#"{"mtu": 9000}"#),
            7,
            &["unknown key \"mtu\""],
        ),
        (
            "udp:5000",
            Some("{isl3"),
            7,
            &["vppExtraMemifSpec", "not JSON"],
        ),
    ];
    for (i, (ports, spec, code, needles)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        let mut ann = vec![(PORTS, *ports)];
        if let Some(s) = spec {
            ann.push((SPEC, s));
        }
        w.pod(&name, &ann);
        let cid = format!("pbl{}-bad{i}", pid());
        let r = w.add(&ns, &cid, &name);
        r.fails(*code, needles);
        assert!(
            r.json()["msg"]
                .as_str()
                .unwrap()
                .contains(&format!("{NS}/{name}"))
                || spec.is_some(),
            "{r:?}"
        );
        assert!(w.cni.attachments(&w.net).is_empty());
        w.assert_no_steering();
        assert!(ns.listener_set().is_empty());
        // The bridge's part is cleaned by the runtime's DEL.
        w.del(&ns, &cid, &name).ok();
    }
    assert!(w.cni.allocations(&w.net).is_empty());

    // The memif gate off: a PBL request is an error (CalicoVPP ignores
    // it), a pod that asks for nothing is served.
    let off = World::new("off", 6, json!({"featureGates": {"memifEnabled": false}}));
    off.pod("wants", &[(PORTS, "udp:5000")]);
    off.pod("plain", &[]);
    let cid = format!("pbl{}-off", pid());
    off.add(&ns, &cid, "wants").fails(
        101,
        &["memif is disabled", "vppExtraMemifPorts", "pbl/wants"],
    );
    off.del(&ns, &cid, "wants").ok();
    off.add(&ns, &cid, "plain").ok();
    off.del(&ns, &cid, "plain").ok();
    assert!(off.cni.attachments(&off.net).is_empty());

    // Config errors, run directly: ipam in memif-cni's entry, no prevResult.
    let base = json!({"cniVersion": "1.0.0", "name": w.net, "type": "memif-cni", "pbl": true,
        "memifdSocket": w.cni.memifd.api_socket()});
    let nsp = ns.path().display().to_string();
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c-direct"),
        ("CNI_NETNS", nsp.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    w.cni
        .exec(&env, base.to_string().as_bytes())
        .fails(7, &["prevResult", "[bridge, memif-cni]"]);
    let mut with_ipam = base.clone();
    with_ipam["ipam"] = json!({"type": "host-local"});
    with_ipam["prevResult"] = json!({"cniVersion": "1.0.0"});
    w.cni
        .exec(&env, with_ipam.to_string().as_bytes())
        .fails(7, &["ipam"]);
}

/// At 1.1.0 the memif's result entry carries its socketPath; the rest of
/// prevResult passes through as it was.
#[test]
fn the_result_at_1_1_0_is_prev_result_plus_the_memif_with_its_socket_path() {
    let w = World::new("v11", 7, json!({}));
    let ns = Netns::new("pbl-v11");
    w.pod("v11", &[(PORTS, "tcp:8080")]);
    let nsp = ns.path().display().to_string();
    let prev = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "veth9", "mac": "02:00:00:00:00:09"},
                       {"name": "eth0", "mac": "02:00:00:00:00:0a", "sandbox": nsp, "mtu": 1450}],
        "ips": [{"address": "10.77.0.5/24", "gateway": "10.77.0.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}],
        "dns": {"nameservers": ["10.96.0.10"]},
        "custom": {"kept": true}
    });
    let conf = json!({"cniVersion": "1.1.0", "name": w.net, "type": "memif-cni", "pbl": true,
        "memifdSocket": w.cni.memifd.api_socket(), "prevResult": prev});
    let args = World::args("v11");
    let env = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c-v11"),
            ("CNI_NETNS", nsp.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", args.as_str()),
        ]
    };
    let r = w.cni.exec(&env("ADD"), conf.to_string().as_bytes());
    r.ok();
    let mut want = prev.clone();
    want["interfaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "memif-eth0", "sandbox": nsp, "socketPath": "@vpp/memif-eth0"}));
    assert_eq!(r.json(), want);
    let a = &w.cni.attachments(&w.net)[0];
    assert_eq!(a.request.ips, vec!["10.77.0.5".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        a.request.spec.mode,
        Mode::Ethernet,
        "isl3 defaults to false"
    );
    assert_eq!(w.rules().len(), 1);
    let mut check = conf.clone();
    check["prevResult"] = r.json();
    w.cni.exec(&env("CHECK"), check.to_string().as_bytes()).ok();
    w.cni.exec(&env("DEL"), conf.to_string().as_bytes()).ok();
    // CHECK after DEL: the memif is missing.
    w.cni
        .exec(&env("CHECK"), check.to_string().as_bytes())
        .fails(107, &["no PBL memif"]);
    w.assert_no_steering();
}

/// Per-packet cost: UDP request/response round trips from the host to
/// the pod's address, steered (host -> TUN -> memifd -> memif client,
/// which answers) against the plain primary path (host -> bridge -> veth
/// -> a socket on eth0, which answers), in alternating blocks in one run.
/// Prints a table; `PBL_BENCH_N` sets the round trips per path (default
/// 2000; `e2e/bench-pbl.sh` runs it in release with more).
#[test]
fn per_packet_cost_steered_vs_eth0() {
    let w = World::new("bench", 8, json!({}));
    let ns = Netns::new("pbl-bench");
    let cid = format!("pbl{}-bench", pid());
    // Interrupt mode on both memif ends: nobody busy-polls, so memifd's
    // CPU time is its per-packet work, and the 2 cores are not
    // oversubscribed.
    // (`PBL_BENCH_RX_MODE` sets memifd's side, e.g. polling.)
    let rx_mode = std::env::var("PBL_BENCH_RX_MODE").unwrap_or_else(|_| "interrupt".into());
    let spec = json!({"isl3": true, "rxMode": rx_mode}).to_string();
    w.pod("bench", &[(PORTS, "udp:5000"), (SPEC, &spec)]);
    eprintln!("memifd rx mode {rx_mode}; the memif client sleeps on interrupts");
    let pod = pod_ip(&w.add(&ns, &cid, "bench").ok().json());
    let n: usize = std::env::var("PBL_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The memif client: echoes every UDP packet back to its sender.
    let mut s = client(&w, &ns, &cid);
    let st = stop.clone();
    let echo_memif = std::thread::spawn(move || {
        let mut bufs = PacketBuf::batch(32, 2048);
        let mut out = Vec::new();
        s.rx[0].set_interrupts(true);
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            let k = s.rx[0].rx_burst(&mut bufs).expect("client rx");
            if k == 0 {
                use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                let mut fds = [PollFd::new(s.rx[0].event_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(100u16));
                s.rx[0].ack_interrupt();
                continue;
            }
            out.clear();
            for b in &bufs[..k] {
                let v = parse_v4(b.as_slice());
                out.push(udp(v.dst, v.dport, v.src, v.sport, &v.l4[8..]));
            }
            let refs: Vec<&[u8]> = out.iter().map(|p| p.as_slice()).collect();
            send_all(&mut s, &refs);
        }
    });
    // The eth0 side: a socket echoing on port 7000.
    let eth0 = pod_udp(&ns, pod, 7000);
    eth0.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let st = stop.clone();
    let echo_eth0 = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((k, from)) = eth0.recv_from(&mut buf) {
                eth0.send_to(&buf[..k], from).unwrap();
            }
        }
    });
    let h = host_udp();
    let mut lat: [Vec<f64>; 2] = [Vec::with_capacity(n), Vec::with_capacity(n)];
    let mut cpu = [0u64; 2];
    let memifd = w.cni.memifd.pid();
    let blocks = 10;
    let payload = [0x42u8; 64];
    for b in 0..2 * blocks {
        let path = b % 2;
        let port = [5000u16, 7000][path];
        let c0 = cpu_ticks(memifd);
        for _ in 0..n / blocks {
            let t0 = Instant::now();
            h.send_to(&payload, (pod, port)).unwrap();
            let mut buf = [0u8; 2048];
            let (k, _) = h
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("round trip via port {port}: {e}"));
            lat[path].push(t0.elapsed().as_secs_f64() * 1e6);
            assert_eq!(k, payload.len());
        }
        cpu[path] += cpu_ticks(memifd) - c0;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    echo_memif.join().unwrap();
    echo_eth0.join().unwrap();
    let tick_us = 1e6
        / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap() as f64;
    let row = |name: &str, v: &mut Vec<f64>, ticks: u64| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
        eprintln!(
            "{name:<28} {:>7} {mean:>9.1} {:>9.1} {:>9.1} {:>14.2}",
            v.len(),
            p(0.5),
            p(0.99),
            ticks as f64 * tick_us / v.len() as f64 / 2.0
        );
        mean
    };
    eprintln!(
        "{:<28} {:>7} {:>9} {:>9} {:>9} {:>14}",
        "UDP round trip host->pod", "n", "mean us", "p50 us", "p99 us", "memifd cpu/pkt"
    );
    let [ref mut a, ref mut b] = lat;
    let steered = row("steered (TUN, memifd, memif)", a, cpu[0]);
    let plain = row("eth0 (bridge, veth)", b, cpu[1]);
    eprintln!("ratio steered/eth0 (mean): {:.2}", steered / plain);
    w.del(&ns, &cid, "bench").ok();
    w.assert_no_steering();
}

/// Sends every packet (bounded wait for ring space).
fn send_all(s: &mut SlaveConnection, pkts: &[&[u8]]) {
    let deadline = Instant::now() + WAIT;
    let mut sent = 0;
    while sent < pkts.len() {
        sent += s.tx[0].tx_burst(&pkts[sent..]).expect("client tx");
        assert!(Instant::now() < deadline, "client tx ring stays full");
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
