//! A small cluster on one machine for the cross-node tests: an underlay
//! (a bridge in a hub namespace), nodes (a namespace each, a veth on the
//! bridge, a memifd inside) and pods (a namespace each, attached through
//! their node's memifd). Everything is named after the test and the
//! process id, and removed on drop.
//!
//! Underlay addresses are 198.18.200.<n>/24 and fd00:c612::<n>/64 (the
//! benchmarking range and a ULA) inside the cluster's own namespaces: no
//! packet leaves them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use memif_cni::api::{AttachRequest, MemifSpec, RemoteInfo, RxMode};
use memif_cni::memif::wire::Mode;

use super::kube_standin::KubeStandin;
use super::memifd_common::*;

/// Runs `ip` with `args`; panics with its stderr when it fails.
#[track_caller]
pub fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A node's underlay address.
pub fn underlay_v4(n: usize) -> IpAddr {
    format!("198.18.200.{n}").parse().unwrap()
}

pub fn underlay_v6(n: usize) -> IpAddr {
    format!("fd00:c612::{n}").parse().unwrap()
}

/// One node: its namespace and memifd.
pub struct Node {
    pub name: String,
    /// Dropped before its namespace.
    pub memifd: Memifd,
    /// Its state directory (removed on drop).
    #[allow(dead_code)]
    pub dir: TempDir,
    pub ns: Netns,
}

/// The cluster: a hub with the underlay bridge, and nodes.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The stand-in API server (in the hub, at 198.18.200.254), in
    /// [`Peers::Kube`] mode.
    pub api: Option<KubeStandin>,
    pub files: TempDir,
    /// Dropped last: the nodes' memifds and the API live in it.
    pub hub: Netns,
}

/// How nodes learn about each other.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Peers {
    /// A peers file the test writes ([`Cluster::publish`]).
    File,
    /// The Kubernetes API: a stand-in serving MemifNode objects and the
    /// nodes' Node objects.
    Kube,
}

impl Cluster {
    /// `n` nodes; memifd's underlay address is the node's IPv6 one when
    /// `v6`, else its IPv4 one.
    #[track_caller]
    pub fn new(tag: &str, n: usize, v6: bool, peers: Peers) -> Cluster {
        let hub = Netns::new(&format!("{tag}-hub"));
        let h = hub.name().to_string();
        ip(&["-n", &h, "link", "set", "lo", "up"]);
        ip(&["-n", &h, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &h, "link", "set", "br0", "up"]);
        ip(&["-n", &h, "addr", "add", "198.18.200.254/24", "dev", "br0"]);
        let api = (peers == Peers::Kube).then(|| {
            let api = KubeStandin::start_in(&hub.path(), "198.18.200.254".parse().unwrap());
            api.serve_memifnodes();
            for i in 1..=n {
                api.insert_node(&format!("n{i}"));
            }
            api
        });
        let files = TempDir::new(&format!("{tag}-files"));
        let mut c = Cluster {
            nodes: Vec::new(),
            api,
            files,
            hub,
        };
        for i in 1..=n {
            c.add_node(tag, i, v6, peers);
        }
        c
    }

    /// The peers file every node reads (in [`Peers::File`] mode).
    pub fn peers_file(&self) -> PathBuf {
        self.files.path.join("peers.json")
    }

    #[track_caller]
    fn add_node(&mut self, tag: &str, i: usize, v6: bool, peers: Peers) {
        let ns = Netns::new(&format!("{tag}-n{i}"));
        let n = ns.name().to_string();
        // Short, unique veth names (the kernel allows 15 characters):
        // process, cluster, node.
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let a = format!("x{}-{seq}a", std::process::id() % 100_000);
        let b = format!("x{}-{seq}b", std::process::id() % 100_000);
        let h = self.hub.name().to_string();
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &a, "netns", &n, "name", "under0"]);
        ip(&["link", "set", &b, "netns", &h]);
        ip(&["-n", &h, "link", "set", &b, "master", "br0", "up"]);
        ip(&["-n", &n, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &n,
            "addr",
            "add",
            &format!("{}/24", underlay_v4(i)),
            "dev",
            "under0",
        ]);
        ip(&[
            "-n",
            &n,
            "addr",
            "add",
            &format!("{}/64", underlay_v6(i)),
            "dev",
            "under0",
            "nodad",
        ]);
        ip(&["-n", &n, "link", "set", "under0", "up"]);
        let dir = TempDir::new(&format!("{tag}-n{i}"));
        let name = format!("n{i}");
        let address = if v6 { underlay_v6(i) } else { underlay_v4(i) };
        let mut config = serde_json::json!({
            "nodeName": name,
            "underlay": {"address": address},
        });
        let kubeconfig = match peers {
            Peers::File => {
                config["peersFile"] = serde_json::json!(self.peers_file());
                None
            }
            Peers::Kube => Some(self.api.as_ref().expect("the stand-in").kubeconfig()),
        };
        let memifd = Memifd::start_node(&dir.path, &n, config, kubeconfig.as_deref());
        self.nodes.push(Node {
            name,
            memifd,
            dir,
            ns,
        });
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i - 1]
    }

    /// Writes every node's own object into the peers file (atomically), as
    /// an operator without Kubernetes would.
    #[track_caller]
    pub fn publish(&self) {
        let items: Vec<serde_json::Value> =
            self.nodes.iter().map(|n| n.remote().local_object).collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        let tmp = self.files.path.join("peers.json.tmp");
        std::fs::write(&tmp, list.to_string()).expect("write the peers file");
        std::fs::rename(&tmp, self.peers_file()).expect("rename the peers file");
    }
}

impl Node {
    #[track_caller]
    pub fn remote(&self) -> RemoteInfo {
        self.memifd
            .client()
            .remote()
            .unwrap_or_else(|e| panic!("{}: remote: {e}\n{}", self.name, self.memifd.log()))
    }

    /// Waits until this node knows `ip` of `network` as a remote pod.
    #[track_caller]
    pub fn wait_remote(&self, network: &str, ip: IpAddr) {
        wait_for(
            &format!("{} to learn {network} {ip}", self.name),
            WAIT,
            || {
                let r = self.remote();
                r.networks
                    .iter()
                    .any(|n| n.name == network && n.endpoints.iter().any(|e| e.ip == ip))
                    .then_some(())
            },
        );
    }

    /// Waits until this node no longer knows `ip` of `network`.
    #[track_caller]
    pub fn wait_no_remote(&self, network: &str, ip: IpAddr) {
        wait_for(
            &format!("{} to forget {network} {ip}", self.name),
            WAIT,
            || {
                let r = self.remote();
                (!r.networks
                    .iter()
                    .any(|n| n.name == network && n.endpoints.iter().any(|e| e.ip == ip)))
                .then_some(())
            },
        );
    }
}

/// A pod: its namespace and attach request on a node.
pub struct Pod {
    pub ns: Netns,
    pub req: AttachRequest,
}

impl Pod {
    /// Attaches a pod in a new namespace to `node`'s memifd.
    #[track_caller]
    pub fn attach(node: &Node, tag: &str, network: &str, mode: Mode, ips: &[IpAddr]) -> Pod {
        let ns = Netns::new(tag);
        let req = AttachRequest {
            key: key(&format!("c-{}", ns.name()), "memif-eth1"),
            network: network.into(),
            netns: ns.path(),
            socket: None,
            spec: MemifSpec {
                mode,
                rx_mode: RxMode::Adaptive,
                ..MemifSpec::default()
            },
            ips: ips.to_vec(),
            pod: None,
            steer: None,
            vni: None,
        };
        node.memifd
            .client()
            .attach(req.clone())
            .unwrap_or_else(|e| panic!("attach {tag} on {}: {e}", node.name));
        Pod { ns, req }
    }

    #[track_caller]
    pub fn detach(&self, node: &Node) {
        assert!(node
            .memifd
            .client()
            .detach(self.req.key.clone())
            .expect("detach"));
    }
}

/// `memifctl client` inside the pod, with `args`.
pub fn client(pod: &Pod, args: &[String]) -> Child {
    spawn_memifctl_client(&pod.req, &pod.ns.path(), args)
}

/// A child process killed and reaped when dropped.
pub struct Reaper(pub Child);
impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A responder in `pod` (on `node`) answering for `ips` for a minute,
/// connected when this returns.
#[track_caller]
pub fn responder(node: &Node, pod: &Pod, ips: &[IpAddr]) -> Reaper {
    let mut args = vec!["--duration".to_string(), "60".to_string()];
    for ip in ips {
        args.push("--ip".into());
        args.push(ip.to_string());
    }
    let r = Reaper(client(pod, &args));
    wait_connected(&node.memifd, &pod.req.key, true);
    r
}

/// Pings `dst` from `pod` (as `src`) `count` times; returns success and
/// the client's output.
pub fn ping(pod: &Pod, src: IpAddr, dst: IpAddr, count: u32) -> (bool, String) {
    ping_sized(pod, src, dst, count, None)
}

/// As [`ping`], with `size` bytes of ICMP payload when given.
pub fn ping_sized(
    pod: &Pod,
    src: IpAddr,
    dst: IpAddr,
    count: u32,
    size: Option<usize>,
) -> (bool, String) {
    let mut args: Vec<String> = vec![
        "--ip".into(),
        src.to_string(),
        "--ping".into(),
        dst.to_string(),
        "--count".into(),
        count.to_string(),
        "--interval".into(),
        "0.1".into(),
    ];
    if let Some(n) = size {
        args.extend(["--size".into(), n.to_string()]);
    }
    let mut c = client(pod, &args);
    let st = exit_within(&mut c, Duration::from_secs(30));
    let o = c.wait_with_output().expect("client output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (st.is_some_and(|s| s.success()), text)
}

/// Three pings from `pod` answered across the cluster (the nodes' logs
/// when not).
#[track_caller]
pub fn assert_pings(pod: &Pod, src: IpAddr, dst: IpAddr, cluster: &Cluster) {
    let (ok, out) = ping(pod, src, dst, 3);
    if !ok || !out.contains("3 transmitted, 3 received") {
        let logs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.name, n.memifd.log()))
            .collect();
        panic!("ping {src} -> {dst} failed:\n{out}\n{}", logs.join("\n"));
    }
    // One link: the TTL is kept across nodes.
    assert!(out.contains("ttl=64"), "{out}");
}
