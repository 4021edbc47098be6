//! The CNI plugin on this host, driven by the reference runtime library
//! (libcni, through `e2e/cnidriver`) and, where libcni refuses the input
//! itself, by running the plugin directly: version negotiation, every
//! error case with its code and nothing left behind (no link, no memifd
//! attachment, no IPAM allocation), DEL's idempotency, STATUS and GC.
//!
//! The cases that create the dummy interface are in `tests/cni_dummy.rs`
//! (they run in a VM when this kernel has no dummy). Needs root; fails,
//! never skips, when something is missing.

#[path = "common/cni.rs"]
mod cni_common;
#[path = "common/kube_standin.rs"]
#[allow(dead_code)]
mod kube_standin;
#[path = "common/memifd.rs"]
mod memifd_common;

use std::collections::BTreeMap;

use cni_common::*;
use memifd_common::*;
use serde_json::{json, Value};

const IF: &str = "memif-eth1";

fn env<'a>(cmd: &'a str, ns: &'a str, cid: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", ns),
        ("CNI_IFNAME", IF),
    ]
}

#[test]
fn version_negotiation_and_about() {
    preflight();
    let w = Cni::new("cni-version", "{}");
    for v in VERSIONS {
        let conf = w.write_conf(&format!("v{v}"), &w.conf(v, "blue", "10.61.0.0/24"));
        let out = std::process::Command::new(driver())
            .arg("version")
            .arg("--conf")
            .arg(&conf)
            .arg("--cni-path")
            .arg(w.bin())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let got: Vec<&str> = v["memif-cni"]["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(got, VERSIONS, "{v}");
        // VERSION answers in the version asked.
        let r = w.exec(
            &[("CNI_COMMAND", "VERSION")],
            format!(
                r#"{{"cniVersion":"{}"}}"#,
                v["memif-cni"]["cniVersion"].as_str().unwrap()
            )
            .as_bytes(),
        );
        r.ok();
        assert_eq!(r.json()["supportedVersions"].as_array().unwrap().len(), 5);
    }
    let about = w.exec(&[], b"");
    assert_eq!(about.exit, 0, "{about:?}");
    assert!(about.stdout.is_empty());
    assert!(
        about.stderr.contains("CNI memif-cni plugin")
            && about.stderr.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
        "{about:?}"
    );
}

#[test]
fn bad_inputs_get_precise_codes_and_leave_nothing() {
    preflight();
    let w = Cni::new("cni-bad", "{}");
    let ns = Netns::new("cni-bad");
    let nsp = ns.path().display().to_string();
    let net = "badnet";
    let conf = w.conf("1.0.0", net, "10.62.0.0/24");
    let conf_file = w.write_conf("good", &conf);
    let body = serde_json::to_vec(&conf).unwrap();

    // Malformed JSON: 6. Not an object: 6.
    w.exec(&env("ADD", &nsp, "c1"), b"{\"cniVersion\": \"1.0.0\",")
        .fails(6, &["not valid JSON"]);
    w.exec(&env("ADD", &nsp, "c1"), b"[]")
        .fails(6, &["JSON object"]);
    // Unknown or unsupported versions: 1, naming the supported ones.
    for bad in ["0.2.0", "2.0.0", "1.0", ""] {
        let mut c = conf.clone();
        c["cniVersion"] = json!(bad);
        w.exec(&env("ADD", &nsp, "c1"), &serde_json::to_vec(&c).unwrap())
            .fails(1, &["not supported", "0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"]);
    }
    // Verbs above the config's version: 1.
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.3.1");
    w.exec(
        &env("CHECK", &nsp, "c1"),
        &serde_json::to_vec(&old).unwrap(),
    )
    .fails(1, &["CHECK needs cniVersion 0.4.0"]);
    w.exec(&[("CNI_COMMAND", "STATUS")], &body)
        .fails(1, &["STATUS needs cniVersion 1.1.0"]);
    w.exec(&[("CNI_COMMAND", "GC")], &body)
        .fails(1, &["GC needs cniVersion 1.1.0"]);
    // Missing or invalid environment: 4 (3 for the container id).
    let mut e = env("ADD", &nsp, "c1");
    e.retain(|(k, _)| *k != "CNI_IFNAME");
    w.exec(&e, &body).fails(4, &["CNI_IFNAME"]);
    let mut e = env("ADD", &nsp, "c1");
    e.retain(|(k, _)| *k != "CNI_NETNS");
    w.exec(&e, &body).fails(4, &["CNI_NETNS"]);
    let mut e = env("ADD", &nsp, "c1");
    e.retain(|(k, _)| *k != "CNI_CONTAINERID");
    w.exec(&e, &body).fails(3, &["CNI_CONTAINERID"]);
    let mut e = env("ADD", &nsp, "c1");
    e.push(("CNI_PATH", ""));
    w.exec(&e, &body).fails(4, &["CNI_PATH"]);
    let mut e = env("ADD", &nsp, "c1");
    e[3] = ("CNI_IFNAME", "memif/eth1");
    w.exec(&e, &body).fails(4, &["CNI_IFNAME"]);
    let mut e = env("ADD", &nsp, "c1");
    e[3] = ("CNI_IFNAME", "memif-eth1-way-too-long");
    w.exec(&e, &body).fails(4, &["15"]);
    let mut e = env("ADD", &nsp, "c1");
    e.push(("CNI_ARGS", "K8S_POD_NAME"));
    w.exec(&e, &body).fails(4, &["CNI_ARGS"]);
    w.exec(&[("CNI_COMMAND", "FROB"), ("CNI_PATH", "/x")], &body)
        .fails(4, &["FROB"]);
    // Through libcni: a name that is not a memif: 7.
    w.lib("add", &conf_file, &nsp, "eth1", "c1")
        .fails(7, &["\"memif\"", "eth1"]);
    // Bad cni-args (args.cni): 7, naming key and value.
    for (args, needles) in [
        (json!({"rx": 0}), vec!["args.cni: rx=0", "at least 1"]),
        (json!({"rxqsz": 1000}), vec!["rxqsz=1000", "power of two"]),
        (json!({"txqsz": 0}), vec!["txqsz=0"]),
        (json!({"tx": 17}), vec!["tx=17", "maximum 16"]),
        (
            json!({"rxMode": "turbo"}),
            vec!["rxMode=\"turbo\"", "unknown rx mode"],
        ),
        (json!({"isl3": "yes"}), vec!["isl3=\"yes\""]),
    ] {
        let mut c = conf.clone();
        c["args"] = json!({"cni": args});
        let f = w.write_conf("args", &c);
        w.lib("add", &f, &nsp, IF, "c1").fails(7, &needles);
        w.assert_nothing_left(&ns, IF, net);
    }
    // A bad default spec in the network config: 7.
    let mut c = conf.clone();
    c["interfaceSpec"] = json!({"txqsz": 3});
    let f = w.write_conf("netspec", &c);
    w.lib("add", &f, &nsp, IF, "c1")
        .fails(7, &["interfaceSpec", "txqsz=3"]);
    let mut c = conf.clone();
    c["interfaceSpec"] = json!({"queues": 3});
    let f = w.write_conf("netspec2", &c);
    w.lib("add", &f, &nsp, IF, "c1")
        .fails(7, &["unknown key \"queues\""]);
    // A bad MAC capability: 7.
    w.lib_with(
        "add",
        &conf_file,
        &nsp,
        IF,
        "c1",
        None,
        Some(&json!({"mac": "02:00:00:00:01"})),
    )
    .fails(7, &["mac"]);
    // IPAM plugin missing: 7, naming it.
    let mut c = conf.clone();
    c["ipam"]["type"] = json!("no-such-ipam");
    let f = w.write_conf("noipam", &c);
    w.lib("add", &f, &nsp, IF, "c1")
        .fails(7, &["no-such-ipam", "not found in CNI_PATH"]);
    // The netns is gone: 3.
    w.lib(
        "add",
        &conf_file,
        "/run/netns/memif-cni-no-such-netns",
        IF,
        "c1",
    )
    .fails(3, &["does not exist"]);
    w.assert_nothing_left(&ns, IF, net);
}

#[test]
fn gate_off_and_memifd_down_are_clear_errors() {
    preflight();
    let w = Cni::new("cni-gate", r#"{"featureGates": {"memifEnabled": false}}"#);
    let ns = Netns::new("cni-gate");
    let nsp = ns.path().display().to_string();
    let conf = w.conf("1.1.0", "gatenet", "10.63.0.0/24");
    let f = w.write_conf("gate", &conf);
    w.lib("add", &f, &nsp, IF, "c1")
        .fails(101, &["memifEnabled is false"]);
    w.assert_nothing_left(&ns, IF, "gatenet");
    w.exec(
        &[("CNI_COMMAND", "STATUS")],
        &serde_json::to_vec(&conf).unwrap(),
    )
    .fails(50, &["memifEnabled"]);

    let mut w = Cni::new("cni-down", "{}");
    let conf = w.conf("1.1.0", "downnet", "10.64.0.0/24");
    let f = w.write_conf("down", &conf);
    let body = serde_json::to_vec(&conf).unwrap();
    w.exec(&[("CNI_COMMAND", "STATUS")], &body).ok();
    w.memifd.stop(Stop::Term);
    w.lib("add", &f, &nsp, IF, "c2")
        .fails(11, &["memifd is not reachable"]);
    w.assert_nothing_left_without_memifd(&ns, IF, "downnet");
    w.exec(&[("CNI_COMMAND", "STATUS")], &body)
        .fails(50, &["memifd is not reachable"]);
    // DEL with memifd down still succeeds (the pod side is cleaned).
    w.lib("del", &f, &nsp, IF, "c2").ok();
}

#[test]
fn del_is_idempotent() {
    preflight();
    let w = Cni::new("cni-del", "{}");
    let mut ns = Netns::new("cni-del");
    let nsp = ns.path().display().to_string();
    for v in VERSIONS {
        let conf = w.conf(v, "delnet", "10.65.0.0/24");
        let body = serde_json::to_vec(&conf).unwrap();
        if *v != "1.1.0" {
            // libcni: without prevResult (< 0.4.0, or nothing cached).
            let f = w.write_conf("del", &conf);
            w.lib("del", &f, &nsp, IF, "c1").ok();
            w.lib("del", &f, &nsp, IF, "c1").ok();
        }
        // No netns at all, and an empty one.
        let mut e = env("DEL", &nsp, "c1");
        e.retain(|(k, _)| *k != "CNI_NETNS");
        w.exec(&e, &body).ok();
        w.exec(&env("DEL", "", "c1"), &body).ok();
    }
    // A netns that is gone, with an attachment memifd still has.
    let mut c = w.memifd.client();
    let mut req = request(&ns, "c9", IF, "delnet");
    req.ips = vec!["10.65.0.9".parse().unwrap()];
    c.attach(req).expect("attach");
    ns.delete();
    let conf = w.conf("1.0.0", "delnet", "10.65.0.0/24");
    let f = w.write_conf("gone", &conf);
    w.lib("del", &f, &nsp, IF, "c9").ok();
    w.lib("del", &f, &nsp, IF, "c9").ok();
    assert!(w.attachments("delnet").is_empty());
}

#[test]
fn status_and_gc() {
    preflight();
    let w = Cni::new("cni-gc", "{}");
    let ns = Netns::new("cni-gc");
    let mut c = w.memifd.client();
    for (cid, ifn, net) in [
        ("keep", "memif-eth1", "gcnet"),
        ("stale1", "memif-eth2", "gcnet"),
        ("stale2", "memif-eth3", "gcnet"),
        ("other", "memif-eth4", "othernet"),
    ] {
        let mut r = request(&ns, cid, ifn, net);
        r.ips = vec![];
        c.attach(r).expect("attach");
    }
    let mut conf = w.conf("1.1.0", "gcnet", "10.66.0.0/24");
    w.exec(
        &[("CNI_COMMAND", "STATUS")],
        &serde_json::to_vec(&conf).unwrap(),
    )
    .ok();
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "memif-eth1"}]);
    let r = w.exec(
        &[("CNI_COMMAND", "GC")],
        &serde_json::to_vec(&conf).unwrap(),
    );
    r.ok();
    assert!(r.stderr.contains("removed 2 attachments"), "{r:?}");
    let left: Vec<String> = w
        .attachments("gcnet")
        .iter()
        .map(|a| a.request.key.container_id.clone())
        .collect();
    assert_eq!(left, ["keep"]);
    assert_eq!(
        w.attachments("othernet").len(),
        1,
        "other networks untouched"
    );
    // host-local 1.1.1 does not speak 1.1.0: GC is not forwarded, and says so.
    assert!(
        r.stderr.contains("IPAM host-local does not speak 1.1.0"),
        "{r:?}"
    );
}

#[test]
fn pod_annotation_errors() {
    preflight();
    let api = kube_standin::KubeStandin::start_tls();
    let dir = TempDir::new("cni-ann");
    let m = Memifd::start_kube(&dir.path, &api.kubeconfig());
    let w = Cni::with(dir, m);
    let ns = Netns::new("cni-ann");
    let nsp = ns.path().display().to_string();
    let conf = w.conf("1.0.0", "annnet", "10.67.0.0/24");
    let f = w.write_conf("ann", &conf);
    let args = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME=bad-pod;K8S_POD_INFRA_CONTAINER_ID=c1",
        kube_standin::POD_NAMESPACE
    );
    for (text, needles) in [
        ("{not json", vec!["vppInterfacesSpec", "not valid JSON"]),
        (r#"["memif-eth1"]"#, vec!["keyed by interface name"]),
        (r#"{"memif-eth1": {"rx": 99}}"#, vec!["rx=99", "maximum 16"]),
        (
            r#"{"memif-eth1": {"rxqsz": 1000}}"#,
            vec!["rxqsz=1000", "power of two"],
        ),
        (
            r#"{"memif-eth1": {"rxMode": "fast"}}"#,
            vec!["rxMode=\"fast\""],
        ),
        (r#"{"memif-eth1": {"isl3": 1}}"#, vec!["isl3=1"]),
        (r#"{"memif-eth1": {"rq": 1}}"#, vec!["unknown key \"rq\""]),
    ] {
        let ann = BTreeMap::from([(
            "cni.projectcalico.org/vppInterfacesSpec".to_string(),
            text.to_string(),
        )]);
        api.insert_pod(kube_standin::POD_NAMESPACE, "bad-pod", &ann);
        w.lib_with("add", &f, &nsp, IF, "c1", Some(&args), None)
            .fails(7, &needles);
        w.assert_nothing_left(&ns, IF, "annnet");
    }
    // The pod cannot be read: try again later, saying why.
    let args = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME=no-such-pod",
        kube_standin::POD_NAMESPACE
    );
    w.lib_with("add", &f, &nsp, IF, "c1", Some(&args), None)
        .fails(105, &["no-such-pod"]);
    w.assert_nothing_left(&ns, IF, "annnet");
}

/// On a kernel without dummy, ADD says exactly that, after IPAM allocated:
/// the allocation is released and nothing is left. On a kernel with dummy
/// (or with `MEMIF_CNI_FORCE_VM=1`) the test runs in the VM after
/// unloading dummy.ko there.
#[test]
fn add_without_dummy_support_fails_cleanly() {
    preflight();
    if in_vm() {
        let st = std::process::Command::new("rmmod").arg("dummy").status();
        assert!(
            matches!(st, Ok(s) if s.success()),
            "rmmod dummy in the VM: {st:?}"
        );
    } else if kernel_has_dummy() || std::env::var_os("MEMIF_CNI_FORCE_VM").is_some() {
        run_self_in_vm("add_without_dummy_support_fails_cleanly");
        return;
    }
    assert!(!kernel_has_dummy(), "dummy is still available");
    let w = Cni::new("cni-nodummy", "{}");
    let ns = Netns::new("cni-nodummy");
    let nsp = ns.path().display().to_string();
    for v in ["0.3.1", "1.0.0"] {
        let f = w.write_conf("nd", &w.conf(v, "ndnet", "10.68.0.0/24"));
        w.lib("add", &f, &nsp, IF, "c1")
            .fails(102, &["no dummy link type"]);
        w.assert_nothing_left(&ns, IF, "ndnet");
    }
}

/// Every example network config in conf/ is valid for the plugin: it
/// parses, names a supported version, and its default spec resolves
/// within the default node maximum.
#[test]
fn example_network_configs_parse() {
    use memif_cni::cni::types::NetConf;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
        if ext != "conf" && ext != "conflist" {
            continue;
        }
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let plugins: Vec<Value> = match v.get("plugins") {
            Some(list) => list.as_array().unwrap().clone(),
            None => vec![v.clone()],
        };
        let mine: Vec<&Value> = plugins
            .iter()
            .filter(|p| p["type"] == "memif-cni")
            .collect();
        assert_eq!(mine.len(), 1, "{}: one memif-cni plugin", p.display());
        let mut c = mine[0].clone();
        c["cniVersion"] = v["cniVersion"].clone();
        c["name"] = v["name"].clone();
        let conf = NetConf::parse(&serde_json::to_vec(&c).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        memif_cni::cni::version::check(&conf.cni_version).unwrap();
        if let Some(spec) = conf.default_spec().unwrap() {
            memif_cni::calico::interfaces::resolve(&[&spec], &Default::default())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        seen += 1;
    }
    assert!(seen >= 3, "the examples are in conf/");
}
