//! `memifctl client` (the binary) against an in-process memif master:
//! it answers ARP, neighbour solicitations and echo requests for its
//! addresses with correct checksums, pings through a master that answers
//! like a dataplane, and stops on count, disconnect or connect timeout.
//!
//! No root: the master listens on an abstract socket in the current netns
//! (see `common`), and the client connects to it there.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{assert_contains, unique_addr, TestServer, MAX_FRAME, WAIT};
use memif_cni::mac::Mac;
use memif_cni::memif::{InterfaceConfig, MasterConnection, Mode, PacketBuf, ServerConfig};
use memif_cni::packet::{self, Echo, Net, L4};

const CLIENT_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xaa]);
const MASTER_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0xbb]);
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const MASTER_V4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

fn client_v6() -> Ipv6Addr {
    "fd00::2".parse().unwrap()
}
fn master_v6() -> Ipv6Addr {
    "fd00::1".parse().unwrap()
}

/// A master serving interface id 0 in `mode`.
fn master(name: &str, mode: Mode) -> TestServer {
    let mut i = InterfaceConfig::new(0, "pod-if");
    i.mode = mode;
    TestServer::start(name, ServerConfig::default(), vec![i])
}

/// Starts `memifctl client --socket <s.addr> args...`.
fn client(s: &TestServer, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_memifctl"))
        .arg("client")
        .arg("--socket")
        .arg(s.addr.to_string())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start memifctl client")
}

/// Waits (bounded) for the client to exit; kills it on timeout.
#[track_caller]
fn finish(mut c: Child) -> (Output, String, String) {
    let deadline = Instant::now() + 4 * WAIT;
    while c.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = c.kill();
            let out = c.wait_with_output().unwrap();
            panic!(
                "client did not stop; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = c.wait_with_output().unwrap();
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, so, se)
}

/// The next frame the client sends (bounded wait).
#[track_caller]
fn recv(m: &mut MasterConnection) -> Vec<u8> {
    let mut bufs = PacketBuf::batch(1, MAX_FRAME);
    let deadline = Instant::now() + WAIT;
    loop {
        if m.rx[0].rx_burst(&mut bufs).expect("master rx") == 1 {
            return bufs[0].as_slice().to_vec();
        }
        assert!(Instant::now() < deadline, "no frame from the client");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends one frame to the client. Retries while the ring has no buffers:
/// the slave posts them only once it has read CONNECTED, which can be just
/// after the master reported the connection.
#[track_caller]
fn send(m: &mut MasterConnection, frame: &[u8]) {
    let deadline = Instant::now() + WAIT;
    while m.tx[0].tx_burst(&[frame]).expect("master tx") == 0 {
        assert!(Instant::now() < deadline, "the client posts no buffers");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// Checksums recomputed here, independently of the library.

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]) as u32)
        .sum()
}

fn folds_to_ones(mut s: u32) -> bool {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

/// IPv4 header and ICMP checksums of a bare IPv4 packet.
#[track_caller]
fn assert_icmpv4_checksums(ip: &[u8]) {
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    assert!(folds_to_ones(sum16(&ip[..ihl])), "ipv4 header checksum");
    assert!(folds_to_ones(sum16(&ip[ihl..total])), "icmp checksum");
}

/// ICMPv6 checksum (with the pseudo-header) of a bare IPv6 packet.
#[track_caller]
fn assert_icmpv6_checksum(ip: &[u8]) {
    assert_eq!(ip[6], 58, "next header icmpv6");
    let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    let pseudo = sum16(&ip[8..40]) + plen as u32 + 58;
    assert!(
        folds_to_ones(pseudo + sum16(&ip[40..40 + plen])),
        "icmpv6 checksum"
    );
}

fn echo_request(src: IpAddr, dst: IpAddr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    packet::echo(src, dst, false, 64, Echo { id, seq, data }).unwrap()
}

#[test]
fn answers_arp_nd_and_echo_for_its_addresses() {
    let s = master("client-answers", Mode::Ethernet);
    let c = client(
        &s,
        &[
            "--ip",
            "10.1.0.2/24",
            "--ip",
            "fd00::2/64",
            "--mac",
            "02:00:00:00:00:aa",
            "--count",
            "2",
            "--duration",
            "30",
        ],
    );
    let mut m = s.connected();
    assert_eq!(m.peer_name, "memifctl-client");

    // ARP: who has 10.1.0.2?
    send(
        &mut m,
        &packet::arp_request(MASTER_MAC, MASTER_V4, CLIENT_V4),
    );
    let f = recv(&mut m);
    assert_eq!(f.len(), 42);
    assert_eq!(&f[0..6], &MASTER_MAC.0, "to the asker");
    assert_eq!(&f[6..12], &CLIENT_MAC.0);
    assert_eq!(&f[12..14], &[0x08, 0x06]);
    assert_eq!(&f[20..22], &[0, 2], "op reply");
    assert_eq!(&f[22..28], &CLIENT_MAC.0, "sender mac");
    assert_eq!(&f[28..32], &CLIENT_V4.octets(), "sender ip");
    assert_eq!(&f[32..38], &MASTER_MAC.0, "target mac");
    assert_eq!(&f[38..42], &MASTER_V4.octets(), "target ip");

    // ARP for another address: no answer (the next frame answers the NS).
    send(
        &mut m,
        &packet::arp_request(MASTER_MAC, MASTER_V4, Ipv4Addr::new(10, 1, 0, 99)),
    );

    // Neighbour solicitation for fd00::2, to its solicited-node group.
    let ns = packet::neighbor_solicit(master_v6(), client_v6(), MASTER_MAC);
    let group = packet::ipv6_multicast_mac(packet::solicited_node(client_v6()));
    send(
        &mut m,
        &packet::on_link(Mode::Ethernet, group, MASTER_MAC, &ns),
    );
    let f = recv(&mut m);
    assert_eq!(&f[0..6], &MASTER_MAC.0);
    assert_eq!(&f[12..14], &[0x86, 0xdd]);
    let ip = &f[14..];
    assert_icmpv6_checksum(ip);
    assert_eq!(ip[7], 255, "hop limit");
    assert_eq!(&ip[8..24], &client_v6().octets(), "from the target");
    assert_eq!(&ip[24..40], &master_v6().octets(), "to the solicitor");
    assert_eq!(ip[40], 136, "neighbor advertisement");
    assert_eq!(ip[44] & 0x60, 0x60, "solicited and override");
    assert_eq!(&ip[48..64], &client_v6().octets(), "target");
    assert_eq!(&ip[64..66], &[2, 1], "target link-layer option");
    assert_eq!(&ip[66..72], &CLIENT_MAC.0);

    // An echo request to another MAC is not for us: ignored.
    let req = echo_request(MASTER_V4.into(), CLIENT_V4.into(), 9, 1, b"nope");
    let other = Mac([0x02, 0, 0, 0, 0, 0xcc]);
    send(
        &mut m,
        &packet::on_link(Mode::Ethernet, other, MASTER_MAC, &req),
    );

    // ICMP echo request: the reply mirrors id, seq and data.
    let data: Vec<u8> = (0..56).collect();
    let req = echo_request(MASTER_V4.into(), CLIENT_V4.into(), 0x4242, 7, &data);
    send(
        &mut m,
        &packet::on_link(Mode::Ethernet, CLIENT_MAC, MASTER_MAC, &req),
    );
    let f = recv(&mut m);
    assert_eq!(&f[0..6], &MASTER_MAC.0);
    assert_eq!(&f[6..12], &CLIENT_MAC.0);
    assert_eq!(&f[12..14], &[0x08, 0x00]);
    let ip = &f[14..];
    assert_icmpv4_checksums(ip);
    assert_eq!(&ip[12..16], &CLIENT_V4.octets());
    assert_eq!(&ip[16..20], &MASTER_V4.octets());
    assert_eq!(ip[9], 1, "icmp");
    assert_eq!(&ip[20..22], &[0, 0], "echo reply");
    assert_eq!(&ip[24..28], &[0x42, 0x42, 0, 7], "id and seq");
    assert_eq!(&ip[28..], &data[..]);

    // ICMPv6 echo request.
    let req = echo_request(master_v6().into(), client_v6().into(), 5, 1, b"hello");
    send(
        &mut m,
        &packet::on_link(Mode::Ethernet, CLIENT_MAC, MASTER_MAC, &req),
    );
    let f = recv(&mut m);
    let ip = &f[14..];
    assert_icmpv6_checksum(ip);
    assert_eq!(ip[40], 129, "echo reply");
    assert_eq!(&ip[24..40], &master_v6().octets());
    assert_eq!(&ip[44..48], &[0, 5, 0, 1]);
    assert_eq!(&ip[48..], b"hello");

    // Two echo requests answered: --count 2 ends the client.
    let (out, stdout, stderr) = finish(c);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_contains(
        &stdout,
        "rx 42 02:00:00:00:00:bb > ff:ff:ff:ff:ff:ff, arp who-has 10.1.0.2 tell 10.1.0.1",
    );
    assert_contains(
        &stdout,
        "tx 42 02:00:00:00:00:aa > 02:00:00:00:00:bb, arp 10.1.0.2 is-at 02:00:00:00:00:aa",
    );
    assert_contains(
        &stdout,
        "icmp6 neighbor solicitation who-has fd00::2 from 02:00:00:00:00:bb",
    );
    assert_contains(&stdout, "(not our MAC: ignored)");
    assert_contains(
        &stdout,
        "ipv4 10.1.0.1 > 10.1.0.2 ttl 64: icmp echo request id 16962 seq 7 len 56",
    );
    assert_contains(
        &stdout,
        "answered 1 arp, 1 neighbor solicitations, 2 echo requests",
    );
    assert_contains(&stdout, "stopped: count reached");
    assert!(!stdout.contains("bad checksum"), "{stdout}");
    assert_contains(&s.disconnected().1, "memifctl client done");
}

#[test]
fn ip_mode_echo_and_json_lines() {
    let s = master("client-ipmode", Mode::Ip);
    let c = client(
        &s,
        &["--mode", "ip", "--ip", "10.9.0.2", "--count", "1", "--json"],
    );
    let mut m = s.connected();
    let me = Ipv4Addr::new(10, 9, 0, 2);
    let peer = Ipv4Addr::new(10, 9, 0, 1);
    // A request with a broken checksum is not answered...
    let mut bad = echo_request(peer.into(), me.into(), 1, 1, b"x");
    bad[22] ^= 0xff;
    send(&mut m, &bad);
    // ...a good one is, bare IPv4 (no Ethernet header in ip mode).
    send(&mut m, &echo_request(peer.into(), me.into(), 1, 2, b"abc"));
    let ip = recv(&mut m);
    assert_eq!(ip[0], 0x45);
    assert_icmpv4_checksums(&ip);
    assert_eq!(&ip[24..28], &[0, 1, 0, 2], "the reply is to seq 2");
    assert_eq!(&ip[28..], b"abc");

    let (out, stdout, stderr) = finish(c);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(lines[0]["event"], "connected");
    assert_eq!(lines[0]["mode"], "ip");
    let rx: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event"] == "rx").collect();
    assert_eq!(rx.len(), 2);
    assert!(rx[0]["summary"]
        .as_str()
        .unwrap()
        .ends_with("[bad checksum]"));
    let summary = lines.last().unwrap();
    assert_eq!(summary["echo_replies"], 1);
    assert_eq!(summary["rx_frames"], 2);
    assert_eq!(summary["stopped"]["why"], "count");
}

/// Answers like a dataplane: ARP and neighbour solicitations for any
/// address with `mac`, echo requests to any address with replies. Runs
/// until the client leaves.
fn responder(m: Box<MasterConnection>, mode: Mode, mac: Mac) -> JoinHandle<u64> {
    responder_counting(m, mode, mac, Arc::new(AtomicU64::new(0)))
}

/// [`responder`], counting its answers in `live` as it goes.
fn responder_counting(
    mut m: Box<MasterConnection>,
    mode: Mode,
    mac: Mac,
    live: Arc<AtomicU64>,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut bufs = PacketBuf::batch(32, MAX_FRAME);
        let deadline = Instant::now() + 6 * WAIT;
        let mut answered = 0;
        while m.state.is_up() && Instant::now() < deadline {
            let n = m.rx[0].rx_burst(&mut bufs).unwrap_or(0);
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            for b in &bufs[..n] {
                let f = packet::parse(mode, b.as_slice());
                let peer_mac = f.eth.map_or(Mac::BROADCAST, |e| e.src);
                let reply = match f.net {
                    Net::Arp(a) if a.op == packet::ARP_REQUEST => Some(packet::arp_reply(
                        mac,
                        a.target_ip,
                        a.sender_mac,
                        a.sender_ip,
                    )),
                    Net::Ip(ip) => match ip.l4 {
                        L4::NeighborSolicit { target, .. } => {
                            let IpAddr::V6(src) = ip.src else { continue };
                            let na = packet::neighbor_advert(target, src, mac, true);
                            Some(packet::on_link(mode, peer_mac, mac, &na))
                        }
                        L4::EchoRequest(e) => packet::echo(ip.dst, ip.src, true, 61, e)
                            .map(|p| packet::on_link(mode, peer_mac, mac, &p)),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(r) = reply {
                    answered += m.tx[0].tx_burst(&[r]).unwrap_or(0) as u64;
                    live.store(answered, Ordering::SeqCst);
                }
            }
        }
        answered
    })
}

#[test]
fn ping_ipv4_resolves_the_next_hop_by_arp() {
    let s = master("client-ping4", Mode::Ethernet);
    let c = client(
        &s,
        &[
            "--ip",
            "10.1.0.2/24",
            "--ping",
            "10.1.0.1",
            "--count",
            "3",
            "--interval",
            "0.05",
        ],
    );
    let r = responder(s.connected(), Mode::Ethernet, MASTER_MAC);
    let (out, stdout, stderr) = finish(c);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_contains(&stdout, "resolved 10.1.0.1 at 02:00:00:00:00:bb");
    for seq in 1..=3 {
        assert_contains(
            &stdout,
            &format!("64 bytes from 10.1.0.1: icmp_seq={seq} ttl=61 time="),
        );
    }
    assert_contains(&stdout, "--- 10.1.0.1 ping statistics ---");
    assert_contains(
        &stdout,
        "3 transmitted, 3 received, 0% loss, rtt min/avg/max = ",
    );
    assert_eq!(r.join().unwrap(), 4, "one ARP and three echo replies");
}

#[test]
fn ping_ipv6_resolves_the_next_hop_by_neighbor_discovery() {
    let s = master("client-ping6", Mode::Ethernet);
    let c = client(
        &s,
        &[
            "--ip",
            "10.1.0.2/24",
            "--ip",
            "fd00::2/64",
            "--ping",
            "fd00::1",
            "--count",
            "2",
            "--interval",
            "0.05",
            "--json",
        ],
    );
    let r = responder(s.connected(), Mode::Ethernet, MASTER_MAC);
    let (out, stdout, stderr) = finish(c);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let ping = &summary["ping"];
    assert_eq!(ping["dst"], "fd00::1");
    assert_eq!(ping["next_hop_mac"], "02:00:00:00:00:bb");
    assert_eq!(
        (ping["transmitted"].as_u64(), ping["received"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(ping["loss_percent"], 0.0);
    assert!(ping["rtt_max_ms"].as_f64().unwrap() >= ping["rtt_min_ms"].as_f64().unwrap());
    assert_eq!(r.join().unwrap(), 3, "one NA and two echo replies");
}

#[test]
fn ping_without_replies_fails() {
    let s = master("client-noreply", Mode::Ip);
    let c = client(
        &s,
        &[
            "--mode",
            "ip",
            "--ip",
            "fd00::2",
            "--ping",
            "fd00::1",
            "--count",
            "2",
            "--interval",
            "0.05",
        ],
    );
    let mut m = s.connected();
    // The requests arrive (bare IPv6, correct checksum); nobody answers.
    for seq in 1..=2u8 {
        let ip = recv(&mut m);
        assert_icmpv6_checksum(&ip);
        assert_eq!(ip[40], 128, "echo request");
        assert_eq!(&ip[46..48], &[0, seq]);
        assert_eq!(ip.len(), 40 + 8 + 56);
    }
    let (out, stdout, stderr) = finish(c);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_contains(&stdout, "2 transmitted, 0 received, 100% loss\n");
}

#[test]
fn unresolved_next_hop_stops_with_a_reason() {
    let s = master("client-noarp", Mode::Ethernet);
    let c = client(
        &s,
        &["--ip", "10.1.0.2/24", "--ping", "10.1.0.1", "--count", "1"],
    );
    let mut m = s.connected();
    let f = recv(&mut m);
    assert_eq!(
        packet::parse(Mode::Ethernet, &f).to_string(),
        "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff, arp who-has 10.1.0.1 tell 10.1.0.2"
    );
    let (out, stdout, stderr) = finish(c);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_contains(&stdout, "0 transmitted, 0 received, 0% loss");
    assert_contains(
        &stdout,
        "stopped: no ARP reply for 10.1.0.1 after 3 requests",
    );
}

#[test]
fn master_disconnect_ends_the_client_with_its_reason() {
    let s = master("client-bye", Mode::Ethernet);
    let c = client(&s, &["--ip", "10.1.0.2", "--duration", "30"]);
    let m = s.connected();
    s.handle.disconnect(0, "test says bye");
    let (out, stdout, stderr) = finish(c);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_contains(&stdout, "master disconnected: test says bye");
    assert_contains(&stdout, "stopped: master disconnected: test says bye");
    drop(m);
}

#[test]
fn no_master_fails_after_the_connect_timeout() {
    let addr = unique_addr("client-nobody");
    let out = Command::new(env!("CARGO_BIN_EXE_memifctl"))
        .args([
            "client",
            "--socket",
            &addr.to_string(),
            "--connect-timeout",
            "0.3",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_contains(
        &err,
        &format!("no memif master accepted on {addr} within 0.3 s"),
    );
}

#[test]
fn ctrl_c_stops_a_ping_with_its_summary() {
    let s = master("client-sigint", Mode::Ip);
    let c = client(
        &s,
        &[
            "--mode",
            "ip",
            "--ip",
            "10.1.0.2",
            "--ping",
            "10.1.0.1",
            "--interval",
            "0.05",
        ],
    );
    let live = Arc::new(AtomicU64::new(0));
    let r = responder_counting(s.connected(), Mode::Ip, MASTER_MAC, live.clone());
    // Connected, so the handler is long installed; let two pings pass.
    let deadline = Instant::now() + WAIT;
    while live.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "no echo replies");
        std::thread::sleep(Duration::from_millis(5));
    }
    let kill = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -INT {}", c.id()))
        .status()
        .expect("kill");
    assert!(kill.success());
    let (out, stdout, stderr) = finish(c);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_contains(&stdout, "--- 10.1.0.1 ping statistics ---");
    assert_contains(&stdout, "stopped: interrupted");
    assert!(r.join().unwrap() >= 2, "{stdout}");
}

#[test]
fn refused_handshake_and_bad_netns_are_reported() {
    let s = master("client-refused", Mode::Ethernet);
    let (out, stdout, stderr) = finish(client(&s, &["--id", "5", "--connect-timeout", "2"]));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_contains(
        &stderr,
        &format!("handshake with the master on {} failed", s.addr),
    );
    assert_contains(&stderr, "master refused");
    let (out, stdout, stderr) = finish(client(&s, &["--netns", "/nonexistent/netns"]));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_contains(&stderr, "cannot open network namespace /nonexistent/netns");
}
