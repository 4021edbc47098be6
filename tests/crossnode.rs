//! Networks across nodes: three node namespaces on a bridge (the
//! underlay), a memifd in each, pods in their own namespaces, the nodes
//! learning each other from a peers file or from the stand-in Kubernetes
//! API (the MemifNode objects: list, watch, server-side apply).
//!
//! Needs root and `ip netns`; without them the tests FAIL with the reason,
//! they never skip. Pod addresses are 10.60.<test>.<n> and
//! fd60:<test>::<n>; the underlay is inside the cluster's namespaces.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/kube_standin.rs"]
#[allow(dead_code)]
mod kube_standin;
#[path = "common/memifd.rs"]
mod memifd_common;
#[path = "common/testpmd.rs"]
mod testpmd;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::Duration;

use cluster::{assert_pings, ping, ping_sized, responder, Cluster, Peers, Pod};
use memif_cni::memif::wire::Mode;
use memifd_common::*;

const MEMIFCTL: &str = env!("CARGO_BIN_EXE_memifctl");

fn v4(test: u8, host: u8) -> IpAddr {
    Ipv4Addr::new(10, 60, test, host).into()
}

fn v6(test: u8, host: u8) -> IpAddr {
    Ipv6Addr::new(0xfd60, test as u16, 0, 0, 0, 0, 0, host as u16).into()
}

#[test]
fn pods_ping_across_nodes_in_ip_and_ethernet_networks() {
    preflight();
    let t = 1;
    let c = Cluster::new("xn-ping", 2, false, Peers::File);
    let (n1, n2) = (c.node(1), c.node(2));
    let mut pods = Vec::new();
    for (net, mode, tag) in [
        ("xn-red", Mode::Ip, "ip"),
        ("xn-blue", Mode::Ethernet, "eth"),
    ] {
        let base = if mode == Mode::Ip { 0 } else { 10 };
        let a = Pod::attach(
            n1,
            &format!("xp-{tag}-a"),
            net,
            mode,
            &[v4(t, base + 1), v6(t, base + 1)],
        );
        let b = Pod::attach(
            n2,
            &format!("xp-{tag}-b"),
            net,
            mode,
            &[v4(t, base + 2), v6(t, base + 2)],
        );
        pods.push((net, a, b, base));
    }
    c.publish();
    for (net, a, b, base) in &pods {
        n1.wait_remote(net, v4(t, base + 2));
        n2.wait_remote(net, v6(t, base + 1));
        let _rb = responder(n2, b, &[v4(t, base + 2), v6(t, base + 2)]);
        assert_pings(a, v4(t, base + 1), v4(t, base + 2), &c);
        assert_pings(a, v6(t, base + 1), v6(t, base + 2), &c);
        drop(_rb);
        let _ra = responder(n1, a, &[v4(t, base + 1), v6(t, base + 1)]);
        assert_pings(b, v4(t, base + 2), v4(t, base + 1), &c);
        assert_pings(b, v6(t, base + 2), v6(t, base + 1), &c);
    }
    // `show remote` names the peer and counts the traffic both ways.
    let r = n1.remote();
    let blue = r.networks.iter().find(|n| n.name == "xn-blue").unwrap();
    assert_eq!(blue.peers.len(), 1);
    assert_eq!(blue.peers[0].node, "n2");
    assert!(
        blue.peers[0].tx_packets >= 12 && blue.peers[0].rx_packets >= 12,
        "{blue:?}"
    );
    for n in &c.nodes {
        n.memifd.assert_alive();
    }
}

/// Serializes the tests that run DPDK (both testpmds busy-poll).
static DPDK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn ipv6_underlay_carries_both_families() {
    preflight();
    let t = 2;
    let c = Cluster::new("xn-v6", 2, true, Peers::File);
    let (n1, n2) = (c.node(1), c.node(2));
    let a = Pod::attach(
        n1,
        "xv6-a",
        "xn6-net",
        Mode::Ethernet,
        &[v4(t, 1), v6(t, 1)],
    );
    let b = Pod::attach(
        n2,
        "xv6-b",
        "xn6-net",
        Mode::Ethernet,
        &[v4(t, 2), v6(t, 2)],
    );
    c.publish();
    n1.wait_remote("xn6-net", v6(t, 2));
    n2.wait_remote("xn6-net", v4(t, 1));
    assert!(n1.remote().status.underlay.is_ipv6());
    assert_eq!(n1.remote().status.pod_mtu, 1500 - 70);
    let _rb = responder(n2, &b, &[v4(t, 2), v6(t, 2)]);
    assert_pings(&a, v4(t, 1), v4(t, 2), &c);
    assert_pings(&a, v6(t, 1), v6(t, 2), &c);
}

#[test]
fn overlapping_ranges_in_two_networks_stay_apart() {
    preflight();
    let t = 3;
    let c = Cluster::new("xn-ovl", 2, false, Peers::File);
    let (n1, n2) = (c.node(1), c.node(2));
    // The same addresses in both networks, one pod of each on each node.
    let a1 = Pod::attach(n1, "xo-a1", "xn-ovl-a", Mode::Ip, &[v4(t, 1)]);
    let a2 = Pod::attach(n2, "xo-a2", "xn-ovl-a", Mode::Ip, &[v4(t, 2)]);
    let b1 = Pod::attach(n1, "xo-b1", "xn-ovl-b", Mode::Ip, &[v4(t, 1)]);
    let b2 = Pod::attach(n2, "xo-b2", "xn-ovl-b", Mode::Ip, &[v4(t, 2)]);
    c.publish();
    n1.wait_remote("xn-ovl-a", v4(t, 2));
    n1.wait_remote("xn-ovl-b", v4(t, 2));
    n2.wait_remote("xn-ovl-a", v4(t, 1));
    n2.wait_remote("xn-ovl-b", v4(t, 1));
    // Both networks' VNIs differ (derived from the names).
    let r = n1.remote();
    let vnis: Vec<u32> = r.networks.iter().map(|n| n.vni).collect();
    assert_eq!(vnis.len(), 2);
    assert_ne!(vnis[0], vnis[1]);
    // A2 answers; B2 listens. A1's pings reach A2 only.
    let _ra = responder(n2, &a2, &[v4(t, 2)]);
    let _rb = responder(n2, &b2, &[v4(t, 2)]);
    assert_pings(&a1, v4(t, 1), v4(t, 2), &c);
    let got = |n: &cluster::Node, p: &Pod| n.memifd.client().get(p.req.key.clone()).unwrap().stats;
    assert_eq!(
        got(n2, &b2).tx_packets,
        0,
        "network B's pod got network A's packets"
    );
    assert!(got(n2, &a2).tx_packets >= 3);
    // And the other way round: B1's pings reach B2.
    drop(_rb);
    let _rb = responder(n2, &b2, &[v4(t, 2)]);
    let a2_before = got(n2, &a2).tx_packets;
    assert_pings(&b1, v4(t, 1), v4(t, 2), &c);
    assert_eq!(got(n2, &a2).tx_packets, a2_before);
}

#[test]
fn frames_the_underlay_cannot_carry_are_dropped_and_counted() {
    preflight();
    let t = 4;
    let c = Cluster::new("xn-mtu", 2, false, Peers::File);
    let (n1, n2) = (c.node(1), c.node(2));
    let a = Pod::attach(n1, "xm-a", "xn-mtu-net", Mode::Ip, &[v4(t, 1), v6(t, 1)]);
    let b = Pod::attach(n2, "xm-b", "xn-mtu-net", Mode::Ip, &[v4(t, 2), v6(t, 2)]);
    c.publish();
    n1.wait_remote("xn-mtu-net", v4(t, 2));
    n1.wait_remote("xn-mtu-net", v6(t, 2));
    n2.wait_remote("xn-mtu-net", v4(t, 1));
    let _rb = responder(n2, &b, &[v4(t, 2), v6(t, 2)]);
    // 1450 bytes of IP (the underlay's 1500 less VXLAN's 50) pass...
    let (ok, out) = ping_sized(&a, v4(t, 1), v4(t, 2), 2, Some(1450 - 28));
    assert!(ok, "{out}");
    // ...one more byte is dropped, as too-big, at the sending node, which
    // tells the pod the size that fits (ICMP "fragmentation needed": the
    // client's requests have DF set).
    let (ok, out) = ping_sized(&a, v4(t, 1), v4(t, 2), 2, Some(1451 - 28));
    assert!(!ok, "oversize pings went through: {out}");
    for seq in [1, 2] {
        let want = format!("From 169.254.1.1 icmp_seq={seq} Frag needed and DF set (mtu = 1450)");
        assert!(out.contains(&want), "{out}");
    }
    assert!(
        out.contains("2 transmitted, 0 received, +2 errors"),
        "{out}"
    );
    // The same over IPv6: "packet too big".
    let (ok, out) = ping_sized(&a, v6(t, 1), v6(t, 2), 1, Some(1450 - 48));
    assert!(ok, "{out}");
    let (ok, out) = ping_sized(&a, v6(t, 1), v6(t, 2), 1, Some(1451 - 48));
    assert!(!ok, "oversize pings went through: {out}");
    assert!(
        out.contains("From fe80::1 icmp_seq=1 Packet too big (mtu = 1450)"),
        "{out}"
    );
    let stats = n1.memifd.client().get(a.req.key.clone()).unwrap().stats;
    assert_eq!(stats.drops.get("too-big"), Some(&3), "{stats:?}");
    let peer = &n1.remote().networks[0].peers[0];
    assert_eq!(peer.drops, 3, "{peer:?}");
}

/// A UDP socket inside `ns`, for garbage on the underlay.
fn socket_in(ns: &std::path::Path, bind: &str) -> std::net::UdpSocket {
    let ns = ns.to_path_buf();
    let bind = bind.to_string();
    std::thread::spawn(move || {
        let _g = memif_cni::netns::NetnsGuard::enter(&ns).unwrap();
        std::net::UdpSocket::bind(bind).unwrap()
    })
    .join()
    .unwrap()
}

#[test]
fn underlay_garbage_is_dropped_and_counted() {
    preflight();
    let t = 5;
    let c = Cluster::new("xn-junk", 2, false, Peers::File);
    let (n1, n2) = (c.node(1), c.node(2));
    let a = Pod::attach(n1, "xj-a", "xn-junk-a", Mode::Ip, &[v4(t, 1)]);
    let b = Pod::attach(n2, "xj-b", "xn-junk-a", Mode::Ip, &[v4(t, 2)]);
    // Another network on node 2 with a pod at another address.
    let o = Pod::attach(n2, "xj-o", "xn-junk-o", Mode::Ip, &[v4(t, 9)]);
    c.publish();
    n1.wait_remote("xn-junk-a", v4(t, 2));
    let _rb = responder(n2, &b, &[v4(t, 2)]);
    let _ro = responder(n2, &o, &[v4(t, 9)]);
    let vni_of = |net: &str| {
        n2.remote()
            .networks
            .iter()
            .find(|n| n.name == net)
            .map(|n| n.vni)
            .unwrap()
    };
    let (vni_a, vni_o) = (vni_of("xn-junk-a"), vni_of("xn-junk-o"));
    let s = socket_in(&n1.ns.path(), "198.18.200.1:0");
    let to = "198.18.200.2:4789";
    let vx = |vni: u32, flags: u8, inner: &[u8]| {
        let mut p = vec![
            flags,
            0,
            0,
            0,
            (vni >> 16) as u8,
            (vni >> 8) as u8,
            vni as u8,
            0,
        ];
        p.extend_from_slice(inner);
        p
    };
    let ip_eth = |ip: &[u8]| {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
        f.extend_from_slice(ip);
        f
    };
    let echo = |dst: IpAddr| {
        memif_cni::packet::echo(
            v4(t, 1),
            dst,
            false,
            64,
            memif_cni::packet::Echo {
                id: 1,
                seq: 1,
                data: &[0; 8],
            },
        )
        .unwrap()
    };
    let good_for_b = vx(vni_a, 0x08, &ip_eth(&echo(v4(t, 2))));
    let junk: Vec<(Vec<u8>, &str)> = vec![
        (vec![0x08, 0, 0], "vxlan-malformed"),
        (vx(vni_a, 0x0c, &ip_eth(&echo(v4(t, 2)))), "vxlan-malformed"),
        (vx(vni_a, 0x00, &ip_eth(&echo(v4(t, 2)))), "vxlan-malformed"),
        (
            vx(0x00ab_cdef, 0x08, &ip_eth(&echo(v4(t, 2)))),
            "vni-unknown",
        ),
        // Oversize: more than memifd takes in one datagram.
        (
            vx(vni_a, 0x08, &ip_eth(&vec![0x45; 9300])),
            "vxlan-malformed",
        ),
        // Network A's VNI for network O's pod: not A's, dropped.
        (vx(vni_a, 0x08, &ip_eth(&echo(v4(t, 9)))), "no-route"),
        // An ARP frame: memifd routes IP only.
        (
            vx(
                vni_a,
                0x08,
                &[
                    vec![0xff; 6],
                    vec![2, 0, 0, 0, 0, 1],
                    vec![8, 6],
                    vec![0; 28],
                ]
                .concat(),
            ),
            "ethertype",
        ),
        // A broadcast destination.
        (
            vx(
                vni_a,
                0x08,
                &ip_eth(&echo("255.255.255.255".parse().unwrap())),
            ),
            "not-routable",
        ),
    ];
    let before_o = n2
        .memifd
        .client()
        .get(o.req.key.clone())
        .unwrap()
        .stats
        .tx_packets;
    let mut want: std::collections::BTreeMap<&str, u64> = Default::default();
    for (p, why) in &junk {
        s.send_to(p, to).unwrap();
        *want.entry(why).or_default() += 1;
    }
    // The good one still goes through, after the garbage.
    s.send_to(&good_for_b, to).unwrap();
    let _ = vni_o;
    let u = wait_for("node 2 to count the garbage", WAIT, || {
        let u = n2.remote().underlay;
        (u.drops.values().sum::<u64>() >= junk.len() as u64).then_some(u)
    });
    for (why, n) in &want {
        assert_eq!(u.drops.get(*why), Some(n), "{why}: {u:?}");
    }
    wait_for("B to get the good packet", WAIT, || {
        (n2.memifd
            .client()
            .get(b.req.key.clone())
            .unwrap()
            .stats
            .tx_packets
            >= 1)
            .then_some(())
    });
    assert_eq!(
        n2.memifd
            .client()
            .get(o.req.key.clone())
            .unwrap()
            .stats
            .tx_packets,
        before_o,
        "garbage reached network O's pod"
    );
    n2.memifd.assert_alive();
    drop(a);
}

#[test]
fn what_a_network_sends_to_its_uplink_does_not_reach_another_network() {
    preflight();
    let t = 6;
    let c = Cluster::new("xn-iso", 1, false, Peers::File);
    let n1 = c.node(1);
    // A host that forwards, as Kubernetes nodes do.
    cluster::ip(&[
        "netns",
        "exec",
        n1.ns.name(),
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    let x = Pod::attach(n1, "xi-x", "xn-iso-x", Mode::Ip, &[v4(t, 1)]);
    let y = Pod::attach(n1, "xi-y", "xn-iso-y", Mode::Ip, &[v4(t, 9)]);
    let _ry = responder(n1, &y, &[v4(t, 9)]);
    // X's ping to Y's address goes into X's uplink; the host must not
    // route it on into Y's.
    let (ok, out) = ping(&x, v4(t, 1), v4(t, 9), 2);
    assert!(
        !ok,
        "a pod of network X reached network Y through the host:\n{out}"
    );
    let sy = n1.memifd.client().get(y.req.key.clone()).unwrap().stats;
    assert_eq!(sy.tx_packets, 0, "{sy:?}");
    // The host still reaches both pods.
    let _rx = responder(n1, &x, &[v4(t, 1)]);
    for dst in [v4(t, 1), v4(t, 9)] {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                n1.ns.name(),
                "ping",
                "-c",
                "1",
                "-W",
                "5",
                &dst.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "host ping {dst}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

#[test]
fn testpmd_pods_on_two_nodes_exchange_an_exact_burst() {
    let _serial = DPDK.lock().unwrap_or_else(|e| e.into_inner());
    preflight();
    assert!(
        in_path("dpdk-testpmd"),
        "dpdk-testpmd is needed (bash e2e/deps.sh)"
    );
    let t = 7;
    let c = Cluster::new("xn-tpmd", 2, false, Peers::File);
    let (n1, n2) = (c.node(1), c.node(2));
    let a = Pod::attach(n1, "xt-a", "xn-tpmd-net", Mode::Ethernet, &[v4(t, 1)]);
    let b = Pod::attach(n2, "xt-b", "xn-tpmd-net", Mode::Ethernet, &[v4(t, 2)]);
    c.publish();
    n1.wait_remote("xn-tpmd-net", v4(t, 2));
    let start = |p: &Pod, label: &str, lcores: (u32, u32)| {
        testpmd::Testpmd::start(testpmd::TestpmdOpts {
            label,
            prefix: format!("xn-{}-{label}", std::process::id()),
            netns: Some(p.ns.name()),
            ports: vec![(
                "client",
                p.req.socket_name().trim_start_matches('@').to_string(),
            )],
            lcores,
            args: vec![
                "--forward-mode=rxonly".into(),
                format!("--tx-ip={},{}", v4(t, 1), v4(t, 2)),
                "--burst=32".into(),
            ],
            out: c.files.path.join(format!("{label}.out")),
        })
    };
    let mut ta = start(&a, "tp-a", (1, 0));
    let mut tb = start(&b, "tp-b", (0, 1));
    ta.wait_link_up(0);
    tb.wait_link_up(0);
    // Both post their receive buffers first.
    tb.cmd("start");
    ta.cmd("start");
    std::thread::sleep(Duration::from_millis(500));
    ta.cmd("stop");
    // Four bursts of 32 from A, then A only receives.
    ta.cmd("start tx_first 4");
    let sent = 4 * 32;
    let got = wait_for("B to receive the burst", WAIT, || {
        let s = tb.port_stats(0);
        (s.rx_packets >= sent).then_some(s.rx_packets)
    });
    std::thread::sleep(Duration::from_millis(300));
    ta.cmd("stop");
    tb.cmd("stop");
    assert_eq!(got, sent);
    assert_eq!(
        tb.port_stats(0).rx_packets,
        sent,
        "more than the burst arrived"
    );
    assert_eq!(ta.port_stats(0).tx_packets, sent);
    let sa = n1.memifd.client().get(a.req.key.clone()).unwrap().stats;
    let sb = n2.memifd.client().get(b.req.key.clone()).unwrap().stats;
    assert_eq!(sa.rx_packets, sent, "{sa:?}");
    assert_eq!(sb.tx_packets, sent, "{sb:?}");
    let p1 = &n1.remote().networks[0].peers[0];
    let p2 = &n2.remote().networks[0].peers[0];
    assert_eq!((p1.tx_packets, p1.drops), (sent, 0), "{p1:?}");
    assert_eq!(p2.rx_packets, sent, "{p2:?}");
    ta.quit();
    tb.quit();
}

/// The PATCHes of node `n`'s object so far.
fn applies(api: &kube_standin::KubeStandin, n: &str) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains(&format!("/memifnodes/{n}?")))
        .count()
}

#[test]
fn kube_api_tables_follow_attach_detach_restart_and_node_deletion() {
    preflight();
    let t = 8;
    let mut c = Cluster::new("xn-kube", 3, false, Peers::Kube);
    let net = "xk-net";
    let a = Pod::attach(c.node(1), "xk-a", net, Mode::Ip, &[v4(t, 1)]);
    let b = Pod::attach(c.node(2), "xk-b", net, Mode::Ip, &[v4(t, 2)]);
    let c3 = Pod::attach(c.node(3), "xk-c", net, Mode::Ip, &[v4(t, 3)]);
    for (i, ip) in [(1, v4(t, 2)), (1, v4(t, 3)), (2, v4(t, 1)), (3, v4(t, 1))] {
        c.node(i).wait_remote(net, ip);
    }
    // The object: the node's underlay and pods, owned by its Node.
    let o = c
        .api
        .as_ref()
        .unwrap()
        .memifnode("n1")
        .expect("n1's object");
    assert_eq!(o["spec"]["underlay"]["address"], "198.18.200.1");
    assert_eq!(o["spec"]["underlay"]["port"], 4789);
    assert_eq!(o["spec"]["networks"][0]["name"], net);
    assert_eq!(
        o["spec"]["networks"][0]["endpoints"][0]["ip"],
        v4(t, 1).to_string()
    );
    let owner = &o["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Node");
    assert_eq!(owner["name"], "n1");
    assert!(owner["uid"].as_str().is_some_and(|u| !u.is_empty()));
    {
        let _rb = responder(c.node(2), &b, &[v4(t, 2)]);
        assert_pings(&a, v4(t, 1), v4(t, 2), &c);
    }
    // An attach storm makes a few writes, not one per attach.
    let before = applies(c.api.as_ref().unwrap(), "n1");
    let storm: Vec<Pod> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20u8)
            .map(|i| {
                let n1 = c.node(1);
                s.spawn(move || {
                    Pod::attach(n1, &format!("xk-s{i}"), net, Mode::Ip, &[v4(t, 100 + i)])
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    c.node(2).wait_remote(net, v4(t, 119));
    let writes = applies(c.api.as_ref().unwrap(), "n1") - before;
    assert!(writes <= 5, "{writes} applies for 20 attaches");
    eprintln!("20 concurrent attaches published in {writes} applies");
    drop(storm);
    // Detach on node 2: node 1's table loses that pod, keeps node 3's.
    b.detach(c.node(2));
    c.node(1).wait_no_remote(net, v4(t, 2));
    c.node(1).wait_remote(net, v4(t, 3));
    // kill -9 and restart of node 3: it republishes from its state,
    // without the attachment whose pod went away meanwhile.
    let gone = Pod::attach(c.node(3), "xk-gone", net, Mode::Ip, &[v4(t, 33)]);
    c.node(1).wait_remote(net, v4(t, 33));
    c.node_mut(3).memifd.stop(Stop::Kill);
    drop(gone);
    c.node_mut(3).memifd.restart();
    c.node(1).wait_no_remote(net, v4(t, 33));
    c.node(1).wait_remote(net, v4(t, 3));
    // The replies need node 3 to have listed node 1's object again.
    c.node(3).wait_remote(net, v4(t, 1));
    {
        let _rc = responder(c.node(3), &c3, &[v4(t, 3)]);
        assert_pings(&a, v4(t, 1), v4(t, 3), &c);
    }
    // Node 3's object deleted (as with its Node): its pods go at once.
    let t0 = std::time::Instant::now();
    assert!(c.api.as_ref().unwrap().delete_memifnode("n3"));
    c.node(1).wait_no_remote(net, v4(t, 3));
    let took = t0.elapsed();
    eprintln!("node object deleted -> entries gone in {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    for n in &c.nodes {
        n.memifd.assert_alive();
    }
}

#[test]
fn forwarding_goes_on_while_the_api_is_away_and_the_watch_resumes() {
    preflight();
    let t = 9;
    let c = Cluster::new("xn-away", 2, false, Peers::Kube);
    let (n1, n2) = (c.node(1), c.node(2));
    let net = "xa-net";
    let a = Pod::attach(n1, "xa-a", net, Mode::Ip, &[v4(t, 1)]);
    let b = Pod::attach(n2, "xa-b", net, Mode::Ip, &[v4(t, 2)]);
    n1.wait_remote(net, v4(t, 2));
    n2.wait_remote(net, v4(t, 1));
    let api = c.api.as_ref().unwrap();
    api.set_behaviour(kube_standin::Behaviour::Down);
    // A change while the API is away cannot be published yet.
    let late = Pod::attach(n2, "xa-late", net, Mode::Ip, &[v4(t, 3)]);
    wait_for(
        "node 1 to notice the API is away",
        Duration::from_secs(30),
        || {
            let st = n1.memifd.status();
            st.cross_node.filter(|x| !x.source_ok)
        },
    );
    let text = Command::new(MEMIFCTL)
        .args(["show", "status", "--api"])
        .arg(n1.memifd.api_socket())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("UNREACHABLE, forwarding with the last tables"),
        "{text}"
    );
    // Forwarding goes on with the last tables.
    let _rb = responder(n2, &b, &[v4(t, 2)]);
    assert_pings(&a, v4(t, 1), v4(t, 2), &c);
    // The API returns: the watch resumes, the late pod is published.
    api.set_behaviour(kube_standin::Behaviour::Serve);
    wait_for(
        "node 1 to learn the late pod",
        Duration::from_secs(60),
        || {
            let r = n1.remote();
            r.networks
                .iter()
                .any(|n| n.endpoints.iter().any(|e| e.ip == v4(t, 3)))
                .then_some(())
        },
    );
    wait_for(
        "node 1's source to be back",
        Duration::from_secs(30),
        || n1.memifd.status().cross_node.filter(|x| x.source_ok),
    );
    drop(late);
}
