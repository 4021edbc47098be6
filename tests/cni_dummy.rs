//! The plugin end to end where it creates the dummy interface: for every
//! cniVersion, standalone with host-local and with static IPAM and chained
//! behind a plugin that provides prevResult, ADD, CHECK, DEL and DEL again
//! through libcni (1.1.0 by running the plugin directly: this libcni cannot
//! read 1.1.0 results); the kernel state (a dummy, up, /32 and /128
//! addresses, device routes), memifd's attachment and a memif client
//! connecting from the pod netns; capabilities; every spec key; rollback;
//! and a network across two nodes made by one ADD per node.
//!
//! This kernel may have no `dummy` link type (see the shared notes): then
//! each test boots a stock Debian kernel under QEMU (`e2e/vm/run.sh`) and
//! runs itself there, with the host's file system read-only underneath.
//! Inside the VM (`MEMIF_CNI_IN_VM=1`) a kernel without dummy is a failure.

#[path = "common/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "common/cni.rs"]
mod cni_common;
#[path = "common/kube_standin.rs"]
#[allow(dead_code)]
mod kube_standin;
#[path = "common/memifd.rs"]
mod memifd_common;

use std::collections::BTreeMap;
use std::process::Command;

use cni_common::*;
use memif_cni::api::{AttachmentKey, RxMode};
use memif_cni::memif::wire::Mode;
use memif_cni::memif::SocketAddr;
use memifd_common::*;
use serde_json::{json, Value};

const IF: &str = "memif-eth1";

/// True when this test should run here: the kernel has dummy. Otherwise
/// runs this same test inside a VM and returns false.
fn here_or_in_vm(test: &str) -> bool {
    preflight();
    if kernel_has_dummy() && std::env::var_os("MEMIF_CNI_FORCE_VM").is_none() {
        return true;
    }
    assert!(
        !in_vm(),
        "inside the VM and still no dummy link type: dummy.ko was not loaded"
    );
    run_self_in_vm(test);
    false
}

/// `ip -j` output for `ifname` in `ns`: (link, addresses).
fn ip_json(ns: &Netns, args: &[&str]) -> Value {
    let out = Command::new("ip")
        .args(["-n", ns.name(), "-j", "-d"])
        .args(args)
        .output()
        .expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The dummy as the kernel has it: kind dummy, up, exactly `want` as /32
/// and /128, and a device route for each of `routes`.
#[track_caller]
fn assert_dummy(ns: &Netns, want: &[&str], routes: &[&str], mac: Option<&str>) -> Value {
    let link = ip_json(ns, &["link", "show", "dev", IF]);
    let l = &link[0];
    assert_eq!(l["linkinfo"]["info_kind"], "dummy", "{l}");
    let flags: Vec<&str> = l["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(flags.contains(&"UP"), "{l}");
    if let Some(m) = mac {
        assert_eq!(l["address"], m);
    }
    let addr = ip_json(ns, &["addr", "show", "dev", IF]);
    let mut got: Vec<String> = addr[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] != "link")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    got.sort();
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "addresses on the dummy");
    for r in routes {
        let fam = if r.contains(':') { "-6" } else { "-4" };
        let out = Command::new("ip")
            .args(["-n", ns.name(), fam, "route", "show", r, "dev", IF])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(r.split('/').next().unwrap()),
            "no device route {r} dev {IF}: {out:?}"
        );
    }
    l.clone()
}

/// ADD through libcni, or directly for 1.1.0; returns the printed result.
fn add(
    w: &Cni,
    v: &str,
    conf: &Value,
    ns: &Netns,
    cid: &str,
    args: Option<&str>,
    caps: Option<&Value>,
) -> Run {
    let nsp = ns.path().display().to_string();
    if v == "1.1.0" {
        let mut c = conf.clone();
        if let Some(caps) = caps {
            c["runtimeConfig"] = caps.clone();
        }
        let mut env = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", nsp.as_str()),
            ("CNI_IFNAME", IF),
        ];
        if let Some(a) = args {
            env.push(("CNI_ARGS", a));
        }
        return w.exec(&env, &serde_json::to_vec(&c).unwrap());
    }
    let f = w.write_conf(&format!("{cid}-{v}"), conf);
    w.lib_with("add", &f, &nsp, IF, cid, args, caps)
}

/// CHECK and DEL the same way (1.1.0 with prevResult, as a runtime sends).
fn verb(
    w: &Cni,
    verb: &str,
    v: &str,
    conf: &Value,
    ns: &Netns,
    cid: &str,
    prev: Option<&Value>,
) -> Run {
    let nsp = ns.path().display().to_string();
    if v == "1.1.0" {
        let mut c = conf.clone();
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        let env = [
            ("CNI_COMMAND", verb),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", nsp.as_str()),
            ("CNI_IFNAME", IF),
        ];
        return w.exec(&env, &serde_json::to_vec(&c).unwrap());
    }
    let f = w.write_conf(&format!("{cid}-{v}"), conf);
    w.lib(&verb.to_lowercase(), &f, &nsp, IF, cid)
}

/// The result's shape for version `v`: our interface last with its
/// sandbox (and mtu, socketPath from 1.1.0), every IP pointing at it,
/// `version` on IPs below 1.0.0.
#[track_caller]
fn assert_result(r: &Value, v: &str, ns: &Netns, ips: &[&str]) -> usize {
    assert_eq!(r["cniVersion"], v, "{r}");
    let ifs = r["interfaces"].as_array().expect("interfaces");
    let idx = ifs.len() - 1;
    let me = &ifs[idx];
    assert_eq!(me["name"], IF);
    assert_eq!(me["sandbox"], ns.path().display().to_string());
    assert!(me["mac"].as_str().is_some_and(|m| m.len() == 17), "{me}");
    if v == "1.1.0" {
        assert_eq!(me["socketPath"], "@memif-eth1");
        assert!(me["mtu"].as_u64().is_some(), "{me}");
    } else {
        assert!(
            me.get("socketPath").is_none() && me.get("mtu").is_none(),
            "{me}"
        );
    }
    let got: Vec<&str> = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap())
        .collect();
    assert_eq!(got, ips, "{r}");
    for ip in r["ips"].as_array().unwrap() {
        assert_eq!(ip["interface"], idx, "{ip}");
        let want = if ip["address"].as_str().unwrap().contains(':') {
            "6"
        } else {
            "4"
        };
        if v.starts_with("0.") {
            assert_eq!(ip["version"], want, "{ip}");
        } else {
            assert!(ip.get("version").is_none(), "{ip}");
        }
    }
    idx
}

/// A memif client in the pod netns connects to `@memif-eth1` and memifd
/// counts its frames.
#[track_caller]
fn assert_memif_serves(w: &Cni, ns: &Netns, cid: &str) {
    let key = AttachmentKey {
        container_id: cid.into(),
        ifname: IF.into(),
    };
    let a = w
        .memifd
        .client()
        .get(key.clone())
        .expect("memifd attachment");
    assert_eq!(a.request.netns, ns.path());
    let mut s = ns
        .slave(&SocketAddr::Abstract(IF.into()), &slave_cfg("conformance"))
        .expect("memif client in the pod netns");
    wait_connected(&w.memifd, &key, true);
    send_frames(&mut s, 0, 5, 64);
    wait_rx(&w.memifd, &key, 5);
    s.disconnect("done");
    wait_connected(&w.memifd, &key, false);
}

#[derive(Clone, Copy, Debug)]
enum Flavour {
    HostLocal,
    Static,
    Chained,
}

fn conf_for(
    w: &Cni,
    v: &str,
    f: Flavour,
    net: &str,
) -> (Value, Vec<&'static str>, Vec<&'static str>) {
    match f {
        Flavour::HostLocal => (
            w.conf(v, net, "10.71.0.0/24"),
            vec!["10.71.0.2/32"],
            vec!["10.71.0.0/24", "10.200.0.0/16"],
        ),
        Flavour::Static => {
            let mut c = w.conf(v, net, "unused");
            c["ipam"] = json!({
                "type": "static",
                "addresses": [{"address": "10.72.0.5/24"}, {"address": "fd00:72::5/64"}],
                "routes": [{"dst": "10.201.0.0/16"}]
            });
            (
                c,
                vec!["10.72.0.5/32", "fd00:72::5/128"],
                vec!["10.72.0.0/24", "fd00:72::/64", "10.201.0.0/16"],
            )
        }
        Flavour::Chained => {
            // [cni-prev-provider, memif-cni]: IPs come from prevResult.
            let mut mine = w.conf(v, net, "unused");
            mine.as_object_mut().unwrap().remove("ipam");
            mine.as_object_mut().unwrap().remove("name");
            mine.as_object_mut().unwrap().remove("cniVersion");
            let prev = json!({
                "type": "cni-prev-provider",
                "testResult": {
                    "ips": [{"address": "10.73.0.7/24", "gateway": "10.73.0.1"}],
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.73.0.1"}],
                    "dns": {"nameservers": ["10.73.0.53"]}
                }
            });
            let list = json!({"cniVersion": v, "name": net, "plugins": [prev, mine]});
            (list, vec!["10.73.0.7/32"], vec!["10.73.0.0/24"])
        }
    }
}

#[test]
fn conformance_matrix() {
    if !here_or_in_vm("conformance_matrix") {
        return;
    }
    let w = Cni::new("cni-matrix", "{}");
    let mut table = Vec::new();
    for v in VERSIONS {
        for f in [Flavour::HostLocal, Flavour::Static, Flavour::Chained] {
            if v == &"1.1.0" && matches!(f, Flavour::Chained) {
                // A conflist at 1.1.0 needs a 1.1.0 runtime; the single
                // plugin is driven directly instead (covered above).
                continue;
            }
            let net = format!("m{}", v.replace('.', ""));
            let ns = Netns::new(&format!("mx-{}", v.replace('.', "")));
            let cid = format!("ctr-{:?}-{}", f, v.replace('.', "")).to_lowercase();
            let (conf, ips, routes) = conf_for(&w, v, f, &net);
            let r = add(&w, v, &conf, &ns, &cid, None, None);
            r.ok();
            let res = r.json();
            let idx = assert_result(&res, v, &ns, &ips);
            if matches!(f, Flavour::Chained) {
                assert_eq!(
                    res["dns"]["nameservers"][0], "10.73.0.53",
                    "prevResult passes through"
                );
                assert_eq!(res["routes"][0]["dst"], "0.0.0.0/0");
                assert_eq!(idx, 0);
            }
            assert_dummy(&ns, &ips, &routes, res["interfaces"][idx]["mac"].as_str());
            assert_memif_serves(&w, &ns, &cid);
            let mut checked = "n/a (< 0.4.0)";
            if !v.starts_with("0.3") {
                verb(&w, "CHECK", v, &conf, &ns, &cid, Some(&res)).ok();
                // A changed interface fails CHECK.
                Command::new("ip")
                    .args(["-n", ns.name(), "link", "set", IF, "down"])
                    .status()
                    .unwrap();
                verb(&w, "CHECK", v, &conf, &ns, &cid, Some(&res)).fails(107, &["down"]);
                Command::new("ip")
                    .args(["-n", ns.name(), "link", "set", IF, "up"])
                    .status()
                    .unwrap();
                verb(&w, "CHECK", v, &conf, &ns, &cid, Some(&res)).ok();
                checked = "ok, down->107";
            }
            verb(&w, "DEL", v, &conf, &ns, &cid, Some(&res)).ok();
            w.assert_nothing_left(&ns, IF, &net);
            verb(&w, "DEL", v, &conf, &ns, &cid, None).ok();
            table.push(format!(
                "{v:6} {:10} ADD ok  CHECK {checked:14} DEL ok  DEL again ok  leftovers none",
                format!("{f:?}")
            ));
        }
    }
    eprintln!("conformance matrix:\n  {}", table.join("\n  "));
}

#[test]
fn capabilities_spec_keys_and_rollback() {
    if !here_or_in_vm("capabilities_spec_keys_and_rollback") {
        return;
    }
    let api = kube_standin::KubeStandin::start();
    let dir = TempDir::new("cni-caps");
    let m = Memifd::start_kube(&dir.path, &api.kubeconfig());
    let w = Cni::with(dir, m);
    let net = "capnet";

    // mac, ips (static IPAM reads runtimeConfig.ips), CNIDeviceInfoFile.
    let ns = Netns::new("caps");
    let mut conf = w.conf("1.0.0", net, "unused");
    conf["ipam"] = json!({"type": "static"});
    let devinfo = w.dir.path.join("devinfo/cni/net1.json");
    let caps =
        json!({"mac": "02:aa:00:00:00:07", "ips": ["10.74.0.9/24"], "CNIDeviceInfoFile": devinfo});
    let r = add(&w, "1.0.0", &conf, &ns, "caps", None, Some(&caps));
    r.ok();
    assert_dummy(
        &ns,
        &["10.74.0.9/32"],
        &["10.74.0.0/24"],
        Some("02:aa:00:00:00:07"),
    );
    let di: Value =
        serde_json::from_str(&std::fs::read_to_string(&devinfo).expect("device-info written"))
            .unwrap();
    assert_eq!(
        di,
        json!({"type": "memif", "version": "1.1.0", "memif": {"role": "slave", "path": "@memif-eth1", "mode": "ethernet"}})
    );
    let f = w.write_conf("caps-del", &conf);
    w.lib_with(
        "del",
        &f,
        &ns.path().display().to_string(),
        IF,
        "caps",
        None,
        Some(&caps),
    )
    .ok();
    assert!(!devinfo.exists(), "device-info removed on DEL");

    // Every spec key takes effect; annotation > args.cni > network default.
    let ann = BTreeMap::from([(
        "cni.projectcalico.org/vppInterfacesSpec".to_string(),
        r#"{"memif-eth1": {"rx": 4, "rxqsz": 2048}}"#.to_string(),
    )]);
    api.insert_pod("demo", "spec-pod", &ann);
    let ns2 = Netns::new("spec");
    let mut conf = w.conf("1.0.0", net, "10.75.0.0/24");
    conf["args"] = json!({"cni": {"rx": 2, "tx": 3, "txqsz": 512, "rxMode": "polling"}});
    conf["interfaceSpec"] = json!({"tx": 8, "isl3": true, "rxMode": "interrupt"});
    let args = "IgnoreUnknown=true;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=spec-pod";
    add(&w, "1.0.0", &conf, &ns2, "spec", Some(args), None).ok();
    let key = AttachmentKey {
        container_id: "spec".into(),
        ifname: IF.into(),
    };
    let s = w.memifd.client().get(key).unwrap().request.spec;
    assert_eq!(
        (
            s.rx_queues,
            s.tx_queues,
            s.rx_ring_size,
            s.tx_ring_size,
            s.mode,
            s.rx_mode
        ),
        (4, 3, 2048, 512, Mode::Ip, RxMode::Polling),
        "annotation rx/rxqsz, args.cni tx/txqsz/rxMode, network isl3"
    );
    let f = w.write_conf("spec-del", &conf);
    w.lib_with(
        "del",
        &f,
        &ns2.path().display().to_string(),
        IF,
        "spec",
        Some(args),
        None,
    )
    .ok();
    w.assert_nothing_left(&ns2, IF, net);

    // Rollback after the dummy: memifd refuses the attach (the same key is
    // attached with other parameters): the dummy and the IP are undone.
    let ns3 = Netns::new("rb");
    let mut other = request(&ns3, "rb", IF, net);
    other.socket = Some("@elsewhere".into());
    w.memifd.client().attach(other).unwrap();
    let conf = w.conf("1.0.0", net, "10.76.0.0/24");
    add(&w, "1.0.0", &conf, &ns3, "rb", None, None).fails(105, &["attach"]);
    assert!(!link_exists(&ns3, IF), "dummy rolled back");
    assert!(w.allocations(net).is_empty(), "IPAM rolled back");
    w.memifd
        .client()
        .detach(AttachmentKey {
            container_id: "rb".into(),
            ifname: IF.into(),
        })
        .unwrap();

    // An interface of that name already there: 104, and it is left alone.
    Command::new("ip")
        .args(["-n", ns3.name(), "link", "add", IF, "type", "dummy"])
        .status()
        .unwrap();
    add(&w, "1.0.0", &conf, &ns3, "rb", None, None).fails(104, &["already exists"]);
    assert!(
        link_exists(&ns3, IF),
        "the existing interface is not ours to delete"
    );
    assert!(w.allocations(net).is_empty());
    assert!(w.attachments(net).is_empty());
}

/// conf/'s examples through libcni as a runtime would run them: the
/// standalone host-local network, and the conflist that chains memif-cni
/// behind Debian's `static` plugin fed by the `ips` capability.
#[test]
fn example_configs_work() {
    if !here_or_in_vm("example_configs_work") {
        return;
    }
    let w = Cni::new("cni-examples", "{}");
    let conf_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let load = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(conf_dir.join(name)).unwrap()).unwrap()
    };
    let socket = w.memifd.api_socket();

    let mut l2 = load("memif-l2.conf");
    l2["memifdSocket"] = json!(socket);
    l2["ipam"]["dataDir"] = json!(w.ipam_dir());
    let ns = Netns::new("ex-l2");
    let f = w.write_conf("ex-l2", &l2);
    let nsp = ns.path().display().to_string();
    let r = w.lib("add", &f, &nsp, IF, "ex1");
    r.ok();
    assert_result(&r.json(), "1.0.0", &ns, &["10.10.0.2/32", "fd00:10::2/128"]);
    assert_dummy(
        &ns,
        &["10.10.0.2/32", "fd00:10::2/128"],
        &["10.10.0.0/16", "10.10.0.0/24", "fd00:10::/64"],
        None,
    );
    assert_memif_serves(&w, &ns, "ex1");
    w.lib("check", &f, &nsp, IF, "ex1").ok();
    w.lib("del", &f, &nsp, IF, "ex1").ok();
    w.assert_nothing_left(&ns, IF, "network-blue");

    let mut chained = load("memif-chained.conflist");
    chained["plugins"][1]["memifdSocket"] = json!(socket);
    let ns = Netns::new("ex-ch");
    let f = w.write_conf("ex-ch", &chained);
    let nsp = ns.path().display().to_string();
    let caps = json!({"ips": ["10.30.1.5/24"], "mac": "02:30:00:00:01:05"});
    let r = w.lib_with("add", &f, &nsp, IF, "ex2", None, Some(&caps));
    r.ok();
    let res = r.json();
    assert_result(&res, "1.0.0", &ns, &["10.30.1.5/32"]);
    assert_eq!(
        res["routes"][0]["dst"], "10.30.0.0/16",
        "static's routes pass through"
    );
    assert_dummy(
        &ns,
        &["10.30.1.5/32"],
        &["10.30.1.0/24", "10.30.0.0/16"],
        Some("02:30:00:00:01:05"),
    );
    w.lib_with("check", &f, &nsp, IF, "ex2", None, Some(&caps))
        .ok();
    w.lib_with("del", &f, &nsp, IF, "ex2", None, Some(&caps))
        .ok();
    assert!(!link_exists(&ns, IF));
    assert!(w.attachments("network-green").is_empty());
}

/// A network across nodes made the way a cluster makes it: two node
/// namespaces on an underlay bridge with a memifd each (peers file), one
/// ADD per node through libcni (static IPAM: the addresses are
/// cluster-unique), the dummy's MTU from the underlay's less VXLAN's, a
/// ping from the pod on node 1 to the pod on node 2, then DEL on both
/// nodes and the remote entries gone.
#[test]
fn one_add_per_node_makes_a_network_across_nodes() {
    if !here_or_in_vm("one_add_per_node_makes_a_network_across_nodes") {
        return;
    }
    if in_vm() {
        // Bundled with the VM's kernel, loaded on demand by busybox's
        // modprobe (e2e/vm/README.md): the kernel cannot load it itself.
        let st = Command::new("/run/vm/bin/modprobe").arg("bridge").status();
        assert!(
            st.as_ref().is_ok_and(|s| s.success()),
            "modprobe bridge in the VM: {st:?}"
        );
    }
    let c = cluster::Cluster::new("xcni", 2, false, cluster::Peers::File);
    let net = "xn-cni";
    let ips = ["10.61.0.1", "10.61.0.2"];
    let mut pods = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let node = c.node(i + 1);
        let rt = Runtime::new(&format!("xcni-rt{}", i + 1));
        let ns = Netns::new(&format!("xcni-pod{}", i + 1));
        let cid = format!("xcni-c{}", i + 1);
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": net,
            "type": "memif-cni",
            "memifdSocket": node.memifd.api_socket(),
            "ipam": {"type": "static", "addresses": [{"address": format!("{ip}/24")}]}
        });
        let f = rt.write_conf(&cid, &conf);
        let nsp = ns.path().display().to_string();
        let r = rt.lib("add", &f, &nsp, IF, &cid);
        r.ok();
        assert_result(&r.json(), "1.0.0", &ns, &[&format!("{ip}/32")]);
        let link = assert_dummy(&ns, &[&format!("{ip}/32")], &["10.61.0.0/24"], None);
        // The underlay (a veth) has 1500; VXLAN over IPv4 takes 50.
        assert_eq!(link["mtu"], 1450, "the dummy's MTU: {link}");
        let req = node
            .memifd
            .client()
            .get(key(&cid, IF))
            .expect("memifd attachment")
            .request;
        pods.push((rt, f, cid, cluster::Pod { ns, req }));
    }
    c.publish();
    let (ip1, ip2): (std::net::IpAddr, std::net::IpAddr) =
        (ips[0].parse().unwrap(), ips[1].parse().unwrap());
    c.node(1).wait_remote(net, ip2);
    c.node(2).wait_remote(net, ip1);

    // Pod 2 answers; pod 1 pings it through both memifds and the underlay.
    let responder = cluster::responder(c.node(2), &pods[1].3, &[ip2]);
    cluster::assert_pings(&pods[0].3, ip1, ip2, &c);
    drop(responder);

    // DEL on both nodes: nothing left, and each node forgets the other's pod.
    for (i, (rt, f, cid, pod)) in pods.iter().enumerate() {
        rt.lib("del", f, &pod.ns.path().display().to_string(), IF, cid)
            .ok();
        assert!(
            !link_exists(&pod.ns, IF),
            "the dummy outlived DEL on node {}",
            i + 1
        );
        let left = c
            .node(i + 1)
            .memifd
            .client()
            .list(Some(net.into()))
            .expect("list");
        assert!(
            left.is_empty(),
            "attachments left on node {}: {left:?}",
            i + 1
        );
    }
    c.publish();
    c.node(1).wait_no_remote(net, ip2);
    c.node(2).wait_no_remote(net, ip1);
    for n in &c.nodes {
        n.memifd.assert_alive();
    }
}
