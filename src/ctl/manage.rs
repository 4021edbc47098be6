//! `memifctl attach`, `detach` and `list`: memifd's API from the command
//! line, for hosts without Kubernetes and for troubleshooting (what the
//! CNI plugin asks memifd for, without a container runtime).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::api::{self, AttachRequest, AttachmentInfo, AttachmentKey, MemifSpec};
use crate::calico::interfaces::RxMode;
use crate::memif::wire::Mode;

/// `memifctl attach`.
#[derive(Debug, Clone, clap::Args)]
pub struct AttachOpts {
    /// The pod's network namespace (a path, or a name under /run/netns).
    #[arg(long)]
    pub netns: String,
    /// The attachment's owner (the CNI container id).
    #[arg(long)]
    pub container: String,
    /// The interface name (also the listener's abstract name: @IFNAME).
    #[arg(long, default_value = "memif-eth1")]
    pub ifname: String,
    /// The network (memifd forwards within a network only).
    #[arg(long)]
    pub network: String,
    /// An address of the pod on this interface (repeat for more).
    #[arg(long = "ip")]
    pub ips: Vec<IpAddr>,
    /// ethernet or ip.
    #[arg(long, default_value = "ethernet")]
    pub mode: Mode,
    /// Queues in each direction.
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// polling, interrupt or adaptive.
    #[arg(long, default_value = "adaptive")]
    pub rx_mode: RxMode,
    /// The network's VXLAN VNI (networks across nodes); default: derived
    /// from the network name.
    #[arg(long)]
    pub vni: Option<u32>,
    /// Print the API's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `memifctl detach`.
#[derive(Debug, Clone, clap::Args)]
pub struct DetachOpts {
    #[arg(long)]
    pub container: String,
    #[arg(long, default_value = "memif-eth1")]
    pub ifname: String,
}

/// `memifctl list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListOpts {
    /// Only this network's attachments.
    #[arg(long)]
    pub network: Option<String>,
    /// Print the API data as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A netns argument as a path: names go under /run/netns.
pub fn netns_path(arg: &str) -> PathBuf {
    if arg.contains('/') {
        PathBuf::from(arg)
    } else {
        Path::new("/run/netns").join(arg)
    }
}

/// The request `memifctl attach` sends.
pub fn attach_request(o: &AttachOpts) -> AttachRequest {
    AttachRequest {
        key: AttachmentKey {
            container_id: o.container.clone(),
            ifname: o.ifname.clone(),
        },
        network: o.network.clone(),
        netns: netns_path(&o.netns),
        socket: None,
        spec: MemifSpec {
            mode: o.mode,
            rx_queues: o.queues,
            tx_queues: o.queues,
            rx_mode: o.rx_mode,
            ..MemifSpec::default()
        },
        ips: o.ips.clone(),
        pod: None,
        steer: None,
        vni: o.vni,
    }
}

/// One line per attachment: key, network, netns, socket, state.
pub fn render_list(items: &[AttachmentInfo]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "container/ifname  network  netns  socket  state  ips");
    for a in items {
        let r = &a.request;
        let ips: Vec<String> = r.ips.iter().map(|i| i.to_string()).collect();
        let _ = writeln!(
            s,
            "{}  {}  {}  {}  {}  {}",
            r.key,
            r.network,
            r.netns.display(),
            r.socket_name(),
            if a.connection.is_some() {
                "connected"
            } else {
                "listening"
            },
            if ips.is_empty() {
                "-".into()
            } else {
                ips.join(",")
            }
        );
    }
    s
}

/// Runs attach; returns what to print.
pub fn attach(o: &AttachOpts, api_path: &Path) -> Result<String, api::ClientError> {
    let mut c = api::Client::connect(api_path, super::show::API_TIMEOUT)?;
    let info = c.attach(attach_request(o))?;
    Ok(if o.json {
        serde_json::to_string_pretty(&info).expect("serializes")
    } else {
        format!(
            "attached {} in {}: memif server at {} (socket id {}, network {})",
            info.request.key,
            info.request.netns.display(),
            info.request.socket_name(),
            info.socket_id,
            info.request.network
        )
    })
}

/// Runs detach; returns what to print (detach is idempotent).
pub fn detach(o: &DetachOpts, api_path: &Path) -> Result<String, api::ClientError> {
    let mut c = api::Client::connect(api_path, super::show::API_TIMEOUT)?;
    let key = AttachmentKey {
        container_id: o.container.clone(),
        ifname: o.ifname.clone(),
    };
    Ok(if c.detach(key.clone())? {
        format!("detached {key}")
    } else {
        format!("nothing attached as {key} (already detached)")
    })
}

/// Runs list; returns what to print.
pub fn list(o: &ListOpts, api_path: &Path) -> Result<String, api::ClientError> {
    let mut c = api::Client::connect(api_path, super::show::API_TIMEOUT)?;
    let items = c.list(o.network.clone())?;
    Ok(if o.json {
        serde_json::to_string_pretty(&items).expect("serializes")
    } else {
        render_list(&items)
    })
}
