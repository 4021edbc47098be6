use super::*;
use crate::api::{AttachmentKey, MemifSpec};
use crate::link::host::Recording;

fn dataplane() -> Arc<Dataplane> {
    Arc::new(
        Dataplane::spawn(
            1,
            Box::new(Recording::default()),
            Arc::new(|_, _, _| {}),
            None,
        )
        .unwrap(),
    )
}

fn nodes(dp: Arc<Dataplane>) -> Nodes {
    Nodes {
        node: "n1".into(),
        underlay: UnderlayConfig {
            local: "198.18.200.1:4789".parse().unwrap(),
            mtu: 1500,
        },
        source: "test".into(),
        dataplane: dp,
        state: Mutex::new(State::default()),
        kick: Arc::new(Notify::new()),
    }
}

fn spec(addr: &str, nets: &[(&str, u32, &[&str])]) -> NodeSpec {
    NodeSpec {
        underlay: UnderlaySpec {
            address: addr.parse().unwrap(),
            port: 4789,
        },
        networks: nets
            .iter()
            .map(|(n, vni, ips)| NetworkSpec {
                name: n.to_string(),
                vni: *vni,
                mode: Mode::Ip,
                endpoints: ips
                    .iter()
                    .map(|ip| EndpointSpec {
                        ip: ip.parse().unwrap(),
                        mac: None,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn req(container: &str, network: &str, ip: &str, mode: Mode) -> AttachRequest {
    AttachRequest {
        key: AttachmentKey {
            container_id: container.into(),
            ifname: "memif-eth1".into(),
        },
        network: network.into(),
        netns: "/run/netns/x".into(),
        socket: None,
        spec: MemifSpec {
            mode,
            ..MemifSpec::default()
        },
        ips: vec![ip.parse().unwrap()],
        pod: None,
        steer: None,
        vni: None,
    }
}

#[test]
fn own_spec_groups_by_network_with_macs_for_ethernet() {
    let a = req("c1", "blue", "10.1.0.2", Mode::Ethernet);
    let b = req("c2", "blue", "10.1.0.3", Mode::Ethernet);
    let c = req("c3", "red", "10.2.0.2", Mode::Ip);
    let mut pbl = req("c4", "blue", "10.244.0.7", Mode::Ethernet);
    pbl.steer = Some(vec![]);
    let u = UnderlaySpec {
        address: "198.18.200.1".parse().unwrap(),
        port: 4789,
    };
    let s = own_spec(u, [&a, &b, &c, &pbl].into_iter());
    assert_eq!(s.networks.len(), 2);
    let blue = &s.networks[0];
    assert_eq!(blue.name, "blue");
    assert_eq!(blue.vni, crate::packet::vxlan::default_vni("blue"));
    assert_eq!(blue.endpoints.len(), 2, "PBL attachments stay out");
    assert_eq!(blue.endpoints[0].mac, Some(port_mac(&a)));
    assert_eq!(s.networks[1].endpoints[0].mac, None);
    // The object round-trips through the peers-file parser.
    let list = serde_json::json!({"items": [object_json("n1", &s)]});
    let back = parse_objects(&list.to_string()).unwrap();
    assert_eq!(back["n1"], s);
}

#[test]
fn peers_files_are_checked() {
    assert!(parse_objects("[]").unwrap().is_empty());
    assert!(parse_objects("{}").unwrap_err().contains("items"));
    assert!(parse_objects("[{\"spec\": {}}]")
        .unwrap_err()
        .contains("metadata.name"));
    let bad =
        r#"[{"metadata": {"name": "n2"}, "spec": {"underlay": {"address": "x", "port": 1}}}]"#;
    assert!(parse_objects(bad).unwrap_err().contains("node n2"));
    assert!(parse_objects("nope").unwrap_err().contains("not JSON"));
}

#[test]
fn remote_tables_follow_objects_and_report_conflicts() {
    let dp = dataplane();
    let n = nodes(dp.clone());
    n.set_local(spec("198.18.200.1", &[("blue", 7, &["10.1.0.2"])]));
    let mut objs = BTreeMap::new();
    objs.insert(
        "n1".into(),
        spec("198.18.200.1", &[("blue", 7, &["10.1.0.99"])]),
    );
    objs.insert(
        "n2".into(),
        spec("198.18.200.2", &[("blue", 7, &["10.1.0.3", "10.1.0.2"])]),
    );
    objs.insert(
        "n3".into(),
        spec(
            "198.18.200.3",
            &[("blue", 7, &["10.1.0.3"]), ("red", 9, &["10.2.0.1"])],
        ),
    );
    n.replace_all(objs);
    let remotes: BTreeMap<String, Arc<RemoteSet>> = dp.remotes().into_iter().collect();
    let blue = &remotes["blue"];
    assert_eq!(blue.vni, 7);
    assert_eq!(blue.peers.len(), 2, "our own object is not a peer");
    let ips: Vec<(String, String)> = blue
        .endpoints
        .iter()
        .map(|e| (e.ip.to_string(), blue.peers[e.peer].node.clone()))
        .collect();
    // 10.1.0.2 is ours; 10.1.0.3 goes to n2, first by name.
    assert_eq!(ips, vec![("10.1.0.3".to_string(), "n2".to_string())]);
    let info = n.info();
    let b = info.networks.iter().find(|x| x.name == "blue").unwrap();
    assert_eq!(b.conflicts.len(), 2, "{:?}", b.conflicts);
    assert!(b
        .conflicts
        .iter()
        .any(|c| c.contains("10.1.0.2") && c.contains("n1") && c.contains("n2")));
    assert_eq!(n.conflict_count(), 2);
    // A deleted object takes its pods; a network without peers empties.
    n.delete("n3");
    let remotes: BTreeMap<String, Arc<RemoteSet>> = dp.remotes().into_iter().collect();
    assert!(remotes["red"].endpoints.is_empty() && remotes["red"].peers.is_empty());
    assert_eq!(remotes["blue"].peers.len(), 1);
    // Another VNI for the same network on a peer: refused, reported.
    n.apply(
        "n2".into(),
        spec("198.18.200.2", &[("blue", 8, &["10.1.0.3"])]),
    );
    let remotes: BTreeMap<String, Arc<RemoteSet>> = dp.remotes().into_iter().collect();
    assert!(remotes["blue"].endpoints.is_empty());
    assert!(n.info().networks[0].conflicts[0].contains("VNI 8"));
    // Counters of a peer survive updates.
    n.apply(
        "n2".into(),
        spec("198.18.200.2", &[("blue", 7, &["10.1.0.3"])]),
    );
    let c1 = dp.remotes()[0].1.peers[0].counters.clone();
    n.apply(
        "n2".into(),
        spec("198.18.200.2", &[("blue", 7, &["10.1.0.3", "10.1.0.4"])]),
    );
    assert!(Arc::ptr_eq(&c1, &dp.remotes()[0].1.peers[0].counters));
}
