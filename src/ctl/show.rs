//! `memifctl show ...`: memifd's attachments as an operator reads them,
//! modelled on VPP's `show memif`, `show int addr` and its counters, so a
//! CalicoVPP user finds the same layout.
//!
//! The renderers are pure functions of the API data (sorted by socket id,
//! so the output is stable); [`run`] fetches the data from memifd.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::api::{self, AttachmentInfo, RingState, StatusInfo};

/// How long memifd may take to answer.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

/// `memifctl show` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ShowOpts {
    #[command(subcommand)]
    pub what: ShowWhat,
}

/// What to show.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ShowWhat {
    /// memif sockets and interfaces, like VPP's `show memif`.
    Memif {
        /// Only this interface: the pod's ifname (e.g. memif-eth1) or its
        /// memif name (e.g. memif3/0: socket id 3, interface id 0).
        interface: Option<String>,
        /// Only this pod's interfaces, by container id (or a prefix of it,
        /// as `crictl ps` prints it).
        #[arg(long)]
        container: Option<String>,
        /// Only the interfaces in this network namespace (its path, or its
        /// name under /run/netns).
        #[arg(long)]
        netns: Option<String>,
        /// Print the API data as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Interfaces (`show int addr`, like VPP).
    #[command(visible_alias = "interface")]
    Int {
        #[command(subcommand)]
        what: IntWhat,
    },
    /// Per-interface packet, byte, drop and error counters.
    Stats {
        /// Print the API data as JSON.
        #[arg(long)]
        json: bool,
    },
    /// memifd's version, feature gates, limits and counts.
    Status {
        /// Print the API data as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Networks across nodes: per network the VNI, the peers (node,
    /// address, last update, traffic) and the remote pods.
    Remote {
        /// Print the API data as JSON (with this node's own object).
        #[arg(long)]
        json: bool,
    },
}

/// `show int ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum IntWhat {
    /// Each interface's state and the pod addresses it carries.
    #[command(visible_alias = "address")]
    Addr {
        /// Print the API data as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `show` failures.
#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    #[error(transparent)]
    Api(#[from] api::ClientError),
    #[error("no memif interface matches {0} (give a pod ifname or memif<socket-id>/<id>, and --container or --netns to pick a pod)")]
    NoMatch(String),
    #[error("writing output")]
    Output(#[source] std::io::Error),
}

impl ShowError {
    /// A hint for the operator, when there is an obvious next step.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ShowError::Api(api::ClientError::Connect { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Some("memifd's socket is there but you may not use it: run memifctl as root (memifd serves root only)")
            }
            ShowError::Api(api::ClientError::Connect { .. }) => {
                Some("is memifd running on this node? Point --api (or MEMIFD_SOCKET) at its socket")
            }
            ShowError::Api(api::ClientError::Version(_)) => {
                Some("memifctl and memifd come from different releases")
            }
            _ => None,
        }
    }
}

/// Fetches what `what` needs from memifd at `api` and writes it to `out`.
pub fn run(what: &ShowWhat, api_path: &Path, out: &mut dyn Write) -> Result<(), ShowError> {
    let mut client = api::Client::connect(api_path, API_TIMEOUT)?;
    let text = match what {
        ShowWhat::Status { json } => {
            let s = client.status()?;
            if *json {
                render_json(&s)
            } else {
                render_status(&s)
            }
        }
        ShowWhat::Memif {
            interface,
            container,
            netns,
            json,
        } => {
            let items = client.list(None)?;
            let only = interface.as_deref();
            let pod = PodFilter {
                container: container.as_deref(),
                netns: netns.as_deref(),
            };
            let selected: Vec<AttachmentInfo> = sorted(&items)
                .into_iter()
                .filter(|a| selects(a, only) && pod.keeps(a))
                .cloned()
                .collect();
            if selected.is_empty() && (only.is_some() || !pod.is_empty()) {
                return Err(ShowError::NoMatch(describe(only, &pod)));
            }
            if *json {
                render_json(&selected)
            } else {
                render_memif(&selected, None)
            }
        }
        ShowWhat::Int {
            what: IntWhat::Addr { json },
        } => {
            let items = sort_owned(client.list(None)?);
            if *json {
                render_json(&items)
            } else {
                render_int_addr(&items)
            }
        }
        ShowWhat::Remote { json } => {
            let r = client.remote()?;
            if *json {
                render_json(&r)
            } else {
                render_remote(&r)
            }
        }
        ShowWhat::Stats { json } => {
            let items = sort_owned(client.list(None)?);
            if *json {
                render_json(&items)
            } else {
                render_stats(&items)
            }
        }
    };
    out.write_all(text.as_bytes()).map_err(ShowError::Output)?;
    out.flush().map_err(ShowError::Output)
}

/// Pretty JSON of API data, with a final newline.
pub fn render_json<T: Serialize + ?Sized>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("API data serializes");
    s.push('\n');
    s
}

/// VPP's name of the interface: `memif<socket-id>/<id>`.
pub fn vpp_name(a: &AttachmentInfo) -> String {
    format!("memif{}/{}", a.socket_id, a.request.spec.id)
}

/// VPP's `filename` of the listener socket:
/// `abstract:<name>,netns_name=<netns>` (or the path for a path socket).
pub fn socket_filename(a: &AttachmentInfo) -> String {
    let name = a.request.socket_name();
    let base = match name.strip_prefix('@') {
        Some(n) => format!("abstract:{n}"),
        None => name,
    };
    format!("{base},netns_name={}", a.request.netns.display())
}

/// Attachments in display order: socket id, then interface id, then key.
fn sorted(items: &[AttachmentInfo]) -> Vec<&AttachmentInfo> {
    let mut v: Vec<&AttachmentInfo> = items.iter().collect();
    v.sort_by(|a, b| {
        (a.socket_id, a.request.spec.id, &a.request.key).cmp(&(
            b.socket_id,
            b.request.spec.id,
            &b.request.key,
        ))
    });
    v
}

fn sort_owned(items: Vec<AttachmentInfo>) -> Vec<AttachmentInfo> {
    sorted(&items).into_iter().cloned().collect()
}

/// Which pod's interfaces `show memif` keeps: every pod names its memif
/// `memif-eth1`, so the ifname alone does not pick one.
#[derive(Debug, Default, Clone, Copy)]
pub struct PodFilter<'a> {
    /// A container id or a prefix of it.
    pub container: Option<&'a str>,
    /// A netns path, or a name under /run/netns.
    pub netns: Option<&'a str>,
}

impl PodFilter<'_> {
    pub fn is_empty(&self) -> bool {
        self.container.is_none() && self.netns.is_none()
    }

    pub fn keeps(&self, a: &AttachmentInfo) -> bool {
        let r = &a.request;
        self.container
            .is_none_or(|c| !c.is_empty() && r.key.container_id.starts_with(c))
            && self.netns.is_none_or(|n| {
                let p = Path::new(n);
                r.netns == p || (!n.contains('/') && r.netns.file_name() == Some(n.as_ref()))
            })
    }
}

/// What a `show memif` selection asked for, for the error.
fn describe(only: Option<&str>, pod: &PodFilter<'_>) -> String {
    let mut parts = Vec::new();
    if let Some(i) = only {
        parts.push(format!("interface {i:?}"));
    }
    if let Some(c) = pod.container {
        parts.push(format!("container {c:?}"));
    }
    if let Some(n) = pod.netns {
        parts.push(format!("netns {n:?}"));
    }
    parts.join(", ")
}

fn selects(a: &AttachmentInfo, only: Option<&str>) -> bool {
    only.is_none_or(|o| a.request.key.ifname == o || vpp_name(a) == o)
}

/// Docker-style short container id.
fn short_id(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

/// `show memif [IF]`: the sockets table, then one block per interface.
/// `only` keeps the interfaces whose pod ifname or `memif<sid>/<id>` name
/// equals it (the sockets table then lists only their sockets).
pub fn render_memif(items: &[AttachmentInfo], only: Option<&str>) -> String {
    let sel: Vec<&AttachmentInfo> = sorted(items)
        .into_iter()
        .filter(|a| selects(a, only))
        .collect();
    let mut s = String::new();

    // One row per listener socket; memifd serves one interface per socket,
    // but count them as VPP does.
    let mut sockets: BTreeMap<crate::ids::AttachmentId, (&AttachmentInfo, usize)> = BTreeMap::new();
    for a in &sel {
        sockets.entry(a.socket_id).or_insert((a, 0)).1 += 1;
    }
    let rows: Vec<(String, String, String)> = sockets
        .iter()
        .map(|(id, (a, n))| {
            let listener = if a.listener_fd >= 0 {
                format!("yes ({n})")
            } else {
                "no".to_string()
            };
            (id.to_string(), listener, socket_filename(a))
        })
        .collect();
    let wid = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(3);
    let wl = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(11);
    s.push_str("sockets\n");
    let _ = writeln!(s, "  {:<wid$} {:<wl$} filename", "id", "listener");
    for (id, l, f) in &rows {
        let _ = writeln!(s, "  {id:<wid$} {l:<wl$} {f}");
    }

    for a in sel {
        s.push('\n');
        memif_block(&mut s, a);
    }
    s
}

fn memif_block(s: &mut String, a: &AttachmentInfo) {
    let r = &a.request;
    let _ = write!(s, "interface {} ({}", vpp_name(a), r.key.ifname);
    if let Some(p) = &r.pod {
        let _ = write!(s, ", pod {}/{}", p.namespace, p.name);
    }
    let _ = writeln!(
        s,
        ", network {}, container {})",
        r.network,
        short_id(&r.key.container_id)
    );
    let conn = a.connection.as_ref();
    let mode = conn.map_or(r.spec.mode, |c| c.mode);
    let _ = writeln!(
        s,
        "  socket-id {} id {} mode {mode}",
        a.socket_id, r.spec.id
    );
    let _ = writeln!(
        s,
        "  flags admin-up{}",
        if conn.is_some() { " connected" } else { "" }
    );
    let _ = writeln!(
        s,
        "  listener-fd {} conn-fd {}",
        a.listener_fd,
        conn.map_or(0, |c| c.conn_fd)
    );
    let _ = writeln!(
        s,
        "  num-s2m-rings {} num-m2s-rings {} buffer-size {} num-regions {}",
        conn.map_or(0, |c| c.s2m.len()),
        conn.map_or(0, |c| c.m2s.len()),
        conn.map_or(0, |c| c.buffer_size),
        conn.map_or(0, |c| c.regions.len()),
    );
    let sp = &r.spec;
    let _ = write!(
        s,
        "  spec rx-queues {} tx-queues {} rx-ring-size {} tx-ring-size {} buffer-size {} rx-mode {}",
        sp.rx_queues, sp.tx_queues, sp.rx_ring_size, sp.tx_ring_size, sp.buffer_size, sp.rx_mode
    );
    if let Some(mac) = &sp.mac {
        let _ = write!(s, " mac {mac}");
    }
    let ips: Vec<String> = r.ips.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        s,
        " ips {}",
        if ips.is_empty() {
            "none".to_string()
        } else {
            ips.join(",")
        }
    );
    let Some(c) = conn else { return };
    // The peer chose its name: quote and escape it.
    let _ = writeln!(s, "  remote-name {:?}", c.peer_name);
    for reg in &c.regions {
        let _ = writeln!(s, "  region {} size {} fd {}", reg.index, reg.size, reg.fd);
    }
    for ring in &c.m2s {
        ring_block(s, "master-to-slave", ring);
    }
    for ring in &c.s2m {
        ring_block(s, "slave-to-master", ring);
    }
}

fn ring_block(s: &mut String, dir: &str, r: &RingState) {
    let _ = writeln!(s, "  {dir} ring {}:", r.index);
    let _ = writeln!(
        s,
        "    region {} offset {} ring-size {} int-fd {}",
        r.region, r.offset, r.size, r.int_fd
    );
    let _ = writeln!(
        s,
        "    head {} tail {} flags {:#06x} interrupts {}",
        r.head, r.tail, r.flags, r.interrupts
    );
}

/// `show int addr`: each interface with `(up)` (a client is connected) or
/// `(dn)`, the pod interface it is unnumbered to, and its addresses as
/// host prefixes.
pub fn render_int_addr(items: &[AttachmentInfo]) -> String {
    let mut s = String::new();
    for a in sorted(items) {
        let state = if a.connection.is_some() { "up" } else { "dn" };
        let _ = writeln!(s, "{} ({state}):", vpp_name(a));
        let _ = writeln!(s, "  unnumbered, use {}", a.request.key.ifname);
        for ip in &a.request.ips {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            let _ = writeln!(s, "  L3 {ip}/{len}");
        }
    }
    s
}

/// `show stats`: one row of counters per interface; drop reasons, when
/// there are any, on the line below as `reason=count` pairs.
pub fn render_stats(items: &[AttachmentInfo]) -> String {
    const HEAD: [&str; 10] = [
        "interface",
        "ifname",
        "network",
        "state",
        "rx-packets",
        "rx-bytes",
        "tx-packets",
        "tx-bytes",
        "drops",
        "errors",
    ];
    // The first four columns are text (left-aligned), the rest numbers.
    const TEXT: usize = 4;
    let list = sorted(items);
    let rows: Vec<[String; 10]> = list
        .iter()
        .map(|a| {
            let st = &a.stats;
            [
                vpp_name(a),
                a.request.key.ifname.clone(),
                a.request.network.clone(),
                if a.connection.is_some() { "up" } else { "down" }.to_string(),
                st.rx_packets.to_string(),
                st.rx_bytes.to_string(),
                st.tx_packets.to_string(),
                st.tx_bytes.to_string(),
                st.drops.values().sum::<u64>().to_string(),
                st.errors.to_string(),
            ]
        })
        .collect();
    let mut w = HEAD.map(str::len);
    for r in &rows {
        for (wi, c) in w.iter_mut().zip(r) {
            *wi = (*wi).max(c.len());
        }
    }
    let line = |s: &mut String, cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let wi = w[i];
            if i < TEXT {
                let _ = write!(l, "{c:<wi$}");
            } else {
                let _ = write!(l, "{c:>wi$}");
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    let mut s = String::new();
    line(&mut s, &HEAD);
    for (a, r) in list.iter().zip(&rows) {
        line(&mut s, &r.each_ref().map(String::as_str));
        let reasons: Vec<String> = a
            .stats
            .drops
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        if !reasons.is_empty() {
            let _ = writeln!(s, "  drops: {}", reasons.join(" "));
        }
    }
    s
}

/// `show status`: memifd's health as `name  value` lines.
pub fn render_status(st: &StatusInfo) -> String {
    let gates = if st.feature_gates.is_empty() {
        "none".to_string()
    } else {
        st.feature_gates
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let m = &st.max_spec;
    let rows = [
        ("version", st.version.clone()),
        ("api", st.api.to_string()),
        (
            "memif gate",
            if st.memif_enabled {
                "enabled"
            } else {
                "disabled"
            }
            .to_string(),
        ),
        ("feature gates", gates),
        (
            "max spec",
            format!(
                "rx-queues {} tx-queues {} ring-size {} buffer-size {}",
                m.rx_queues, m.tx_queues, m.ring_size, m.buffer_size
            ),
        ),
        (
            "attachments",
            format!("{} ({} connected)", st.attachments, st.connected),
        ),
        ("kube", if st.kube { "yes" } else { "no" }.to_string()),
        ("uptime", uptime(st.uptime_secs)),
        ("state file", st.state_file.display().to_string()),
    ];
    let mut s = String::new();
    for (k, v) in rows {
        let _ = writeln!(s, "{k:<13}  {v}");
    }
    if let Some(c) = &st.cross_node {
        let _ = writeln!(s, "{:<13}  {}", "cross-node", cross_node_line(c));
    }
    s
}

/// The one-line summary of the cross-node status.
fn cross_node_line(c: &crate::api::CrossNodeStatus) -> String {
    let source = match (&c.source_error, c.source_ok) {
        (_, true) => format!(
            "{} (ok{})",
            c.source,
            c.synced_secs_ago
                .map(|t| format!(", synced {} ago", uptime(t)))
                .unwrap_or_default()
        ),
        (Some(e), false) => format!(
            "{} UNREACHABLE, forwarding with the last tables{}: {e}",
            c.source,
            c.synced_secs_ago
                .map(|t| format!(" (synced {} ago)", uptime(t)))
                .unwrap_or_default()
        ),
        (None, false) => format!("{} (not synced yet)", c.source),
    };
    format!(
        "node {} underlay {} pod-mtu {} source {source}",
        c.node, c.underlay, c.pod_mtu
    )
}

/// `show remote`: networks across nodes.
pub fn render_remote(r: &crate::api::RemoteInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", cross_node_line(&r.status));
    for n in &r.networks {
        let local: Vec<String> = n.local.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            s,
            "network {} vni {} local {}",
            n.name,
            n.vni,
            if local.is_empty() {
                "-".into()
            } else {
                local.join(" ")
            }
        );
        if n.peers.is_empty() {
            let _ = writeln!(s, "  no peers");
        } else {
            let _ = writeln!(
                s,
                "  {:<16} {:<24} {:>8} {:>9} {:>12} {:>12} {:>12} {:>12} {:>8}",
                "peer",
                "address",
                "updated",
                "endpoints",
                "tx-packets",
                "tx-bytes",
                "rx-packets",
                "rx-bytes",
                "drops"
            );
            for p in &n.peers {
                let _ = writeln!(
                    s,
                    "  {:<16} {:<24} {:>8} {:>9} {:>12} {:>12} {:>12} {:>12} {:>8}",
                    p.node,
                    p.address.to_string(),
                    uptime(p.updated_secs_ago),
                    p.endpoints,
                    p.tx_packets,
                    p.tx_bytes,
                    p.rx_packets,
                    p.rx_bytes,
                    p.drops
                );
            }
        }
        for e in &n.endpoints {
            let _ = writeln!(
                s,
                "  remote {} on {}{}",
                e.ip,
                e.node,
                e.mac.map(|m| format!(" mac {m}")).unwrap_or_default()
            );
        }
        for c in &n.conflicts {
            let _ = writeln!(s, "  CONFLICT {c}");
        }
    }
    let u = &r.underlay;
    let drops: Vec<String> = u.drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        s,
        "underlay rx {} packets {} bytes, tx {} packets {} bytes, drops {}",
        u.rx_packets,
        u.rx_bytes,
        u.tx_packets,
        u.tx_bytes,
        if drops.is_empty() {
            "0".into()
        } else {
            drops.join(", ")
        }
    );
    s
}

/// `1d 2h 3m 4s`, leading zero units left out.
fn uptime(secs: u64) -> String {
    let parts = [
        (secs / 86400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..]
        .iter()
        .map(|(n, u)| format!("{n}{u}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_units() {
        assert_eq!(uptime(0), "0s");
        assert_eq!(uptime(59), "59s");
        assert_eq!(uptime(3600), "1h 0m 0s");
        assert_eq!(uptime(86400 + 2 * 3600 + 3 * 60 + 4), "1d 2h 3m 4s");
    }

    #[test]
    fn short_container_ids() {
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }
}
