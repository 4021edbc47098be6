//! Crash consistency through the plugin (issue 18, item 4): `kill -9`
//! memifd during a storm of concurrent ADDs and DELs that libcni
//! (`e2e/cnidriver`) runs, as a container runtime does, then restart it.
//!
//! The conflist is PBL's, `[bridge with host-local IPAM, memif-cni
//! "pbl": true]`: on a kernel without the `dummy` link type (this
//! project's CI machines) it is the plugin's one mode that succeeds on the
//! host itself (the standalone mode's dummy needs the VM, far too slow for
//! a storm). Each ADD of an annotated pod gives it a memifd attachment
//! with its listener `@vpp/memif-eth0`, the bridge's veth `eth0` and a
//! host-local lease.
//!
//! The runtime is modelled as containerd/CRI-O behave: every ADD is for a
//! new sandbox (netns, container id); after a successful DEL the sandbox
//! and its netns are removed; after a failed ADD the runtime calls DEL to
//! clean up (here only once memifd is back, so that what the failed ADD
//! itself left can be checked first). After the storm and the restart:
//!
//! - every ADD that returned success and was not DELeted has its
//!   attachment back (same key, same netns) and its listener in its
//!   netns; nothing a successful DEL removed came back;
//! - a failed ADD left no attachment and no listener, unless it failed
//!   in doubt: the plugin's attach request was sent but memifd died
//!   before answering (`memifd attach: ...`); memifd may have made it
//!   durable, so it may be restored: the runtime's DEL is what removes it,
//!   which is checked;
//! - the runtime's clean-up DEL of each failed ADD leaves no `eth0`, no
//!   attachment and no lease for it;
//! - DEL stays idempotent: DEL of every sandbox ever added, twice (most
//!   netns gone by then), succeeds, and leaves no attachment, no lease,
//!   no listener, no `eth0` and no steering rule.
//!
//! Needs root, `ip netns`, the bridge link type, `/dev/net/tun` and
//! Debian's containernetworking-plugins; without them it FAILS with the
//! reason, it never skips. Traffic: none.

#[path = "common/cni.rs"]
mod cni_common;
#[path = "common/kube_standin.rs"]
#[allow(dead_code)]
mod kube_standin;
#[path = "common/memifd.rs"]
mod memifd_common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cni_common::*;
use memif_cni::dataplane::uplink::steer_table;
use memifd_common::*;
use serde_json::json;

const PORTS: &str = "cni.projectcalico.org/vppExtraMemifPorts";
const K8S_NS: &str = "crash";
const LISTENER: &str = "@vpp/memif-eth0";
/// Concurrent runtime workers.
const WORKERS: usize = 4;
/// Operations completed before the kill.
const OPS_BEFORE_KILL: usize = 24;
/// Operations completed (at least) while memifd is down.
const OPS_WHILE_DOWN: usize = 12;
/// Sandboxes each worker may create.
const PODS_PER_WORKER: usize = 24;
/// Bound on the storm: reached only when something hangs.
const STORM_LIMIT: Duration = Duration::from_secs(60);

/// Fails (never skips) without what this test needs.
#[track_caller]
fn preflight_crash() {
    preflight();
    let mut missing = Vec::new();
    if !std::path::Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun (the kernel's tun driver)".to_string());
    }
    let probe = format!("crp{}", std::process::id() % 100_000);
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
        "the crash test cannot run here; missing:\n  - {}",
        missing.join("\n  - ")
    );
}

/// How a sandbox's ADD ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// ADD succeeded and no DEL followed.
    Added,
    /// ADD succeeded, then DEL succeeded and the netns was removed.
    Deleted,
    /// ADD failed; `in_doubt` when the attach request may have been made
    /// durable by memifd before it died.
    Failed { msg: String, in_doubt: bool },
}

/// One sandbox: container id, pod name, its netns (until removed).
struct Sandbox {
    cid: String,
    pod: String,
    ns: Option<Netns>,
    netns_path: String,
    outcome: Outcome,
    /// Whether memifd had been killed when the ADD returned.
    after_kill: bool,
    /// Whether its DEL returned after memifd had been killed.
    del_after_kill: bool,
}

/// The test's world: stand-in API server, memifd, CNI dir, the bridge.
struct World {
    api: kube_standin::KubeStandin,
    cni: Cni,
    bridge: String,
    net: String,
    conf: std::path::PathBuf,
}

impl World {
    fn new() -> World {
        preflight_crash();
        let pid = std::process::id();
        let api = kube_standin::KubeStandin::start();
        let dir = TempDir::new("crash");
        let m = Memifd::start_kube_with(&dir.path, &api.kubeconfig(), json!({}));
        let cni = Cni::with(dir, m);
        let bridge = format!("crash{}", pid % 100_000);
        let net = format!("crash{pid}");
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": net,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": cni.ipam_dir(),
                        "ranges": [[{"subnet": format!("10.{}.200.0/24", 100 + pid % 50)}]]
                    }
                },
                {
                    "type": "memif-cni",
                    "pbl": true,
                    "memifdSocket": cni.memifd.api_socket()
                }
            ]
        });
        let conf = cni.write_conf("crash.conflist", &conflist);
        World {
            api,
            cni,
            bridge,
            net,
            conf,
        }
    }

    fn run(&self, verb: &str, netns: &str, cid: &str, pod: &str) -> Run {
        let args = format!(
            "IgnoreUnknown=true;K8S_POD_NAMESPACE={K8S_NS};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={cid}"
        );
        self.cni
            .lib_with(verb, &self.conf, netns, "eth0", cid, Some(&args), None)
    }

    /// `ip rule` lines that look up this network's steering table.
    fn rules(&self) -> Vec<String> {
        let table = steer_table(&self.net).to_string();
        let mut v = Vec::new();
        for fam in ["-4", "-6"] {
            let o = Command::new("ip")
                .args([fam, "rule", "show"])
                .output()
                .expect("ip rule show");
            v.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.contains(&format!("lookup {table}")))
                    .map(|l| l.trim().to_string()),
            );
        }
        v
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A small deterministic generator (xorshift), seeded per worker.
fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// A failed ADD whose attach request may have reached memifd: the
/// plugin's message for an attach that got no answer.
fn in_doubt(msg: &str) -> bool {
    msg.contains("memifd attach:")
}

/// One runtime worker: new sandboxes and ADDs, DELs of its own live ones,
/// until `stop`. Returns its sandboxes.
fn worker(
    w: &World,
    id: usize,
    killed: &AtomicBool,
    stop: &AtomicBool,
    done: &AtomicUsize,
    defects: &Mutex<Vec<String>>,
) -> Vec<Sandbox> {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (id as u64 + 1).wrapping_mul(0x2545_f491);
    let mut boxes: Vec<Sandbox> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let live: Vec<usize> = (0..boxes.len())
            .filter(|&i| boxes[i].outcome == Outcome::Added)
            .collect();
        if !live.is_empty() && next(&mut rng) % 3 == 0 {
            let i = live[(next(&mut rng) % live.len() as u64) as usize];
            let b = &mut boxes[i];
            let r = w.run("del", &b.netns_path, &b.cid, &b.pod);
            if r.exit != 0 {
                defects.lock().unwrap().push(format!(
                    "DEL {} failed (memifd killed: {}): {r:?}",
                    b.cid,
                    killed.load(Ordering::SeqCst)
                ));
            } else {
                // The runtime removes the sandbox after its DEL.
                b.ns.take().expect("a live sandbox has its netns").delete();
                b.outcome = Outcome::Deleted;
                b.del_after_kill = killed.load(Ordering::SeqCst);
            }
        } else {
            if boxes.len() == PODS_PER_WORKER {
                break;
            }
            let k = boxes.len();
            let ns = Netns::new(&format!("cr{id}-{k}"));
            let b = Sandbox {
                cid: format!("crash-{id}-{k}"),
                pod: format!("pod-{id}-{k}"),
                netns_path: ns.path().display().to_string(),
                ns: Some(ns),
                outcome: Outcome::Added,
                after_kill: false,
                del_after_kill: false,
            };
            let r = w.run("add", &b.netns_path, &b.cid, &b.pod);
            let after_kill = killed.load(Ordering::SeqCst);
            let outcome = if r.exit == 0 {
                let v = r.json();
                let has_memif = v["interfaces"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|i| i["name"] == "memif-eth0"));
                if !has_memif {
                    defects
                        .lock()
                        .unwrap()
                        .push(format!("ADD {} succeeded without the memif: {v}", b.cid));
                }
                Outcome::Added
            } else {
                let msg = r.json()["msg"].as_str().unwrap_or_default().to_string();
                if !after_kill {
                    defects
                        .lock()
                        .unwrap()
                        .push(format!("ADD {} failed while memifd was up: {r:?}", b.cid));
                }
                Outcome::Failed {
                    in_doubt: in_doubt(&msg),
                    msg,
                }
            };
            boxes.push(Sandbox {
                outcome,
                after_kill,
                ..b
            });
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    boxes
}

#[test]
fn kill_9_during_an_add_del_storm_keeps_the_plugin_and_memifd_consistent() {
    let t0 = Instant::now();
    let mut w = World::new();
    for id in 0..WORKERS {
        for k in 0..PODS_PER_WORKER {
            w.api.insert_pod(
                K8S_NS,
                &format!("pod-{id}-{k}"),
                &BTreeMap::from([(PORTS.to_string(), "tcp:4444-4450,udp:5000".to_string())]),
            );
        }
    }
    // libcni's driver is built on first use: before the storm.
    driver();

    let killed = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let defects = Mutex::new(Vec::new());
    let pid = w.cni.memifd.pid();
    let (boxes, ops_at_kill) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|id| {
                let (w, killed, stop, done, defects) = (&w, &killed, &stop, &done, &defects);
                s.spawn(move || worker(w, id, killed, stop, done, defects))
            })
            .collect();
        let deadline = Instant::now() + STORM_LIMIT;
        let wait_ops = |n: usize, what: &str| {
            while done.load(Ordering::SeqCst) < n {
                if Instant::now() >= deadline || handles.iter().all(|h| h.is_finished()) {
                    stop.store(true, Ordering::SeqCst);
                    panic!(
                        "{what}: {} of {n} operations done within {STORM_LIMIT:?}",
                        done.load(Ordering::SeqCst)
                    );
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        wait_ops(OPS_BEFORE_KILL, "before the kill");
        // kill -9 while the workers' next ADDs and DELs are in flight.
        killed.store(true, Ordering::SeqCst);
        let st = Command::new("kill")
            .args(["-s", "KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -9 memifd: {st}");
        let at_kill = done.load(Ordering::SeqCst);
        wait_ops(at_kill + OPS_WHILE_DOWN, "while memifd is down");
        stop.store(true, Ordering::SeqCst);
        let boxes: Vec<Sandbox> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker panicked"))
            .collect();
        (boxes, at_kill)
    });
    let storm = t0.elapsed();
    // Reap the killed memifd, start it again on the same state.
    let st = w.cni.memifd.stop(Stop::Kill);
    assert!(!st.success(), "memifd was not killed: {st}");
    w.cni.memifd.restart();

    let defects = defects.into_inner().unwrap();
    assert!(
        defects.is_empty(),
        "the storm went wrong:\n  - {}",
        defects.join("\n  - ")
    );
    let count = |f: &dyn Fn(&Sandbox) -> bool| boxes.iter().filter(|b| f(b)).count();
    let added = count(&|b| b.outcome == Outcome::Added);
    let deleted = count(&|b| b.outcome == Outcome::Deleted);
    let failed = count(&|b| matches!(b.outcome, Outcome::Failed { .. }));
    let doubt = count(&|b| matches!(b.outcome, Outcome::Failed { in_doubt: true, .. }));
    let ok_after_kill = count(&|b| b.after_kill && !matches!(b.outcome, Outcome::Failed { .. }));
    let del_after_kill = count(&|b| b.del_after_kill);
    eprintln!(
        "crash: {} sandboxes, {ops_at_kill} operations before the kill; \
         {added} added, {deleted} added then deleted ({del_after_kill} of the DELs with memifd down), \
         {failed} failed ADDs ({doubt} in doubt), {ok_after_kill} successful ADDs returned after the kill; \
         storm {:.1} s",
        boxes.len(),
        storm.as_secs_f64()
    );
    assert!(
        added > 0 && failed > 0,
        "the storm must leave both live sandboxes and failed ADDs to check \
         ({added} live, {failed} failed)"
    );

    // Every successful ADD without DEL is back, with its listener; nothing
    // else but failed ADDs in doubt.
    let list = w.cni.attachments(&w.net);
    let got: BTreeMap<String, String> = list
        .iter()
        .map(|a| {
            (
                a.request.key.container_id.clone(),
                a.request.netns.display().to_string(),
            )
        })
        .collect();
    for b in &boxes {
        match &b.outcome {
            Outcome::Added => {
                assert_eq!(
                    got.get(&b.cid),
                    Some(&b.netns_path),
                    "{}: ADD returned success, the attachment is not restored: {got:?}",
                    b.cid
                );
                b.ns.as_ref()
                    .unwrap()
                    .wait_listeners(&BTreeSet::from([LISTENER.to_string()]));
                assert!(link_exists(b.ns.as_ref().unwrap(), "eth0"), "{}", b.cid);
            }
            Outcome::Deleted => assert!(
                !got.contains_key(&b.cid),
                "{}: DEL returned success, memifd restored it",
                b.cid
            ),
            Outcome::Failed { msg, in_doubt } => {
                if *in_doubt {
                    eprintln!(
                        "crash: {} failed in doubt ({msg}); memifd {} it",
                        b.cid,
                        if got.contains_key(&b.cid) {
                            "restored"
                        } else {
                            "did not restore"
                        }
                    );
                } else {
                    assert!(
                        !got.contains_key(&b.cid),
                        "{}: the failed ADD ({msg}) left an attachment",
                        b.cid
                    );
                    assert_eq!(
                        b.ns.as_ref().unwrap().listener_set(),
                        BTreeSet::new(),
                        "{}: the failed ADD ({msg}) left a listener",
                        b.cid
                    );
                }
            }
        }
    }
    let known: BTreeSet<&String> = boxes.iter().map(|b| &b.cid).collect();
    for cid in got.keys() {
        assert!(known.contains(cid), "memifd restored an unknown {cid}");
    }
    let sid = |list: &[memif_cni::api::AttachmentInfo]| {
        list.iter()
            .map(|a| (a.request.key.clone(), a.socket_id.0))
            .collect::<BTreeMap<_, _>>()
    };
    let state: BTreeMap<_, _> = w
        .cni
        .memifd
        .state()
        .expect("state file")
        .into_iter()
        .map(|(r, s)| (r.key, s))
        .collect();
    assert_eq!(state, sid(&list), "the state file and memifd disagree");

    // The runtime's clean-up DEL of each failed ADD, then its sandbox goes.
    let mut boxes = boxes;
    for b in boxes
        .iter_mut()
        .filter(|b| matches!(b.outcome, Outcome::Failed { .. }))
    {
        w.run("del", &b.netns_path, &b.cid, &b.pod).ok();
        let ns = b.ns.take().unwrap();
        assert!(!link_exists(&ns, "eth0"), "{}: eth0 left after DEL", b.cid);
        assert_eq!(ns.listener_set(), BTreeSet::new(), "{}", b.cid);
        let a = w.cni.attachments(&w.net);
        assert!(
            !a.iter().any(|a| a.request.key.container_id == b.cid),
            "{}: attachment left after DEL",
            b.cid
        );
        let mut ns = ns;
        ns.delete();
    }
    let live_leases = w.cni.allocations(&w.net).len();
    assert_eq!(
        live_leases,
        added,
        "host-local leases: one per live sandbox ({added}), got {:?}",
        w.cni.allocations(&w.net)
    );

    // DEL of everything, twice: every one succeeds and nothing is left.
    for round in 1..=2 {
        for b in &boxes {
            let r = w.run("del", &b.netns_path, &b.cid, &b.pod);
            assert_eq!(r.exit, 0, "DEL round {round} of {}: {r:?}", b.cid);
        }
        let a = w.cni.attachments(&w.net);
        assert!(a.is_empty(), "round {round}: attachments left: {a:?}");
        let l = w.cni.allocations(&w.net);
        assert!(l.is_empty(), "round {round}: leases left: {l:?}");
        for b in &boxes {
            if let Some(ns) = &b.ns {
                assert!(!link_exists(ns, "eth0"), "round {round}: {} eth0", b.cid);
                ns.wait_listeners(&BTreeSet::new());
            }
        }
        assert_eq!(w.rules(), Vec::<String>::new(), "steering rules left");
    }
    w.cni.memifd.assert_alive();
    eprintln!("crash: done in {:.1} s", t0.elapsed().as_secs_f64());
}
