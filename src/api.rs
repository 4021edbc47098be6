//! The plugin/memifctl <-> memifd API: messages, their protocol version and
//! framing, and a small blocking client.
//!
//! Transport: a unix stream socket (default [`DEFAULT_SOCKET`], mode 0600).
//! Each message is one line of JSON (no embedded newlines, at most
//! [`MAX_MESSAGE`] bytes); a connection carries any number of request/reply
//! pairs in lock-step. Every request and reply carries `"api": API_VERSION`;
//! memifd answers a request of another version with [`ErrorCode::Version`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::calico::interfaces::Resolved;
pub use crate::calico::interfaces::{MaxSpec, RxMode};
use crate::calico::ports::PortRange;
pub use crate::ids::AttachmentId;
use crate::memif::wire::Mode;

/// The version of this API. Bumped on any incompatible change.
pub const API_VERSION: u32 = 1;
/// Where memifd listens by default.
pub const DEFAULT_SOCKET: &str = "/run/memif-cni/memifd.sock";
/// Largest request or reply line accepted, in bytes.
pub const MAX_MESSAGE: usize = 4 << 20;

/// Identity of an attachment, as the CNI spec defines it. Also the shape
/// of a `cni.dev/valid-attachments` entry (which spells `containerID`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentKey {
    #[serde(alias = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl std::fmt::Display for AttachmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// The memif a pod gets: everything memifd needs to serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemifSpec {
    /// Interface id the client asks for (CalicoVPP uses 0).
    pub id: u32,
    /// `ethernet` (isl3 false) or `ip` (isl3 true).
    pub mode: Mode,
    /// Pod-to-node queues (slave-to-master rings) accepted.
    pub rx_queues: u16,
    /// Node-to-pod queues (master-to-slave rings) accepted.
    pub tx_queues: u16,
    /// Largest pod-to-node (slave-to-master) ring accepted, in descriptors
    /// (a power of two, 2..=16384): the annotation's `rxqsz`.
    pub rx_ring_size: u32,
    /// Largest node-to-pod (master-to-slave) ring accepted: `txqsz`.
    pub tx_ring_size: u32,
    /// Buffer size the node advertises for its side, in bytes.
    pub buffer_size: u32,
    pub rx_mode: RxMode,
    /// Secret the client must present; `None` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The memif's MAC (ethernet mode), `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl MemifSpec {
    /// The memif memifd is asked to serve for a resolved interface spec
    /// (the other keys at their defaults).
    pub fn from_resolved(r: &Resolved) -> MemifSpec {
        MemifSpec {
            mode: r.mode(),
            rx_queues: r.rx,
            tx_queues: r.tx,
            rx_ring_size: r.rxqsz,
            tx_ring_size: r.txqsz,
            rx_mode: r.rx_mode,
            ..MemifSpec::default()
        }
    }
}

impl Default for MemifSpec {
    fn default() -> MemifSpec {
        MemifSpec {
            id: 0,
            mode: Mode::Ethernet,
            rx_queues: 1,
            tx_queues: 1,
            rx_ring_size: 1024,
            tx_ring_size: 1024,
            buffer_size: 2048,
            rx_mode: RxMode::Adaptive,
            secret: None,
            mac: None,
        }
    }
}

/// The Kubernetes pod a request is for (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

/// Ask memifd for a memif server in a pod netns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachRequest {
    #[serde(flatten)]
    pub key: AttachmentKey,
    /// CNI network name; networks are isolated from each other.
    pub network: String,
    /// Path of the pod's network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    /// Listener address inside the pod netns; default `@<ifname>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    pub spec: MemifSpec,
    /// The pod's addresses on this interface (each a /32 or /128).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// PBL: the memif sits next to the pod's primary interface and shares
    /// its addresses; only these protocol/destination-port ranges of
    /// traffic to them are steered to it (policy routing rules, see
    /// `dataplane::uplink`), and no main-table host route is installed.
    /// `None`: a plain (multinet) attachment. Absent in older state files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steer: Option<Vec<PortRange>>,
    /// The network's VXLAN network identifier across nodes (the network
    /// config's `vni`); `None`: derived from the network name (see
    /// [`crate::packet::vxlan::default_vni`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

impl AttachRequest {
    /// The network's VNI: the requested one or the default of its name.
    pub fn vni(&self) -> u32 {
        self.vni
            .unwrap_or_else(|| crate::packet::vxlan::default_vni(&self.network))
    }

    /// The listener address: the configured one or `@<ifname>`.
    pub fn socket_name(&self) -> String {
        self.socket
            .clone()
            .unwrap_or_else(|| format!("@{}", self.key.ifname))
    }
}

/// Requests, tagged by `op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Create (or return the identical existing) attachment.
    Attach(Box<AttachRequest>),
    /// Remove an attachment; unknown ones succeed.
    Detach(AttachmentKey),
    /// One attachment, with its connection and counters.
    Get(AttachmentKey),
    /// All attachments, optionally of one network.
    List {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// memifd's health, gates and limits.
    Status,
    /// Drop every attachment of `network` that is not in `valid`.
    Gc {
        network: String,
        valid: Vec<AttachmentKey>,
    },
    /// The pod's memif-related annotations from the Kubernetes API.
    PodAnnotations(PodRef),
    /// Every network's uplink (TUN device) and its counters.
    Uplinks,
    /// Networks across nodes: peers, remote pods, counters.
    Remote,
}

/// A request as sent: the version and the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub api: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// Why memifd refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The request is not valid JSON or misses fields.
    BadRequest,
    /// The request's API version is not ours.
    Version,
    /// `get` of an unknown attachment.
    NotFound,
    /// `attach` of a key that exists with different parameters.
    Conflict,
    /// The spec exceeds the node's maximum or is invalid.
    InvalidSpec,
    /// The memif feature gate is off.
    Disabled,
    /// The netns does not exist or cannot be entered.
    Netns,
    /// The listener could not be bound (e.g. the name is taken).
    Bind,
    /// The Kubernetes API is not configured or failed.
    Kube,
    /// Persisting state failed, or another internal error.
    Internal,
}

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

/// Per-interface counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IfStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames dropped, by reason (`no-route`, `tx-ring-full`, ...).
    pub drops: BTreeMap<String, u64>,
    /// Bad descriptors and other peer errors.
    pub errors: u64,
    /// Times a slave connected.
    pub connects: u64,
    /// Times a slave disconnected (either side).
    pub disconnects: u64,
}

/// A shared-memory region of a connected interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionInfo {
    pub index: u16,
    pub size: u64,
    pub fd: i32,
}

/// One ring of a connected interface, read live from shared memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RingState {
    pub index: u16,
    pub region: u16,
    pub offset: u32,
    /// Descriptors.
    pub size: u32,
    pub int_fd: i32,
    pub head: u16,
    pub tail: u16,
    pub flags: u16,
    /// Interrupts signalled on this ring (towards the peer for m2s rings,
    /// received for s2m rings).
    pub interrupts: u64,
}

/// The live connection of an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    pub peer_name: String,
    pub mode: Mode,
    pub conn_fd: i32,
    pub buffer_size: u32,
    pub regions: Vec<RegionInfo>,
    /// Slave-to-master rings (our rx).
    pub s2m: Vec<RingState>,
    /// Master-to-slave rings (our tx).
    pub m2s: Vec<RingState>,
}

/// An attachment as memifd holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentInfo {
    pub request: AttachRequest,
    /// memifd's number for the attachment (VPP's socket-id).
    pub socket_id: AttachmentId,
    /// The listener's fd in memifd, -1 if it is not bound.
    pub listener_fd: i32,
    /// Unix seconds when the attachment was created.
    pub created: u64,
    /// `None` while no client is connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionInfo>,
    pub stats: IfStats,
}

/// memifd's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusInfo {
    /// memifd's package version.
    pub version: String,
    /// The API version memifd speaks (the envelope's `api` is the reply's).
    #[serde(rename = "apiVersion")]
    pub api: u32,
    pub memif_enabled: bool,
    /// The feature gates as configured (CALICOVPP_FEATURE_GATES shape).
    pub feature_gates: BTreeMap<String, bool>,
    pub max_spec: MaxSpec,
    pub attachments: usize,
    pub connected: usize,
    /// Whether a Kubernetes API client is configured.
    pub kube: bool,
    pub uptime_secs: u64,
    pub state_file: PathBuf,
    /// Networks across nodes: present when this node carries them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_node: Option<CrossNodeStatus>,
}

/// The cross-node side of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrossNodeStatus {
    /// This node's name (its MemifNode object).
    pub node: String,
    /// The underlay address and VXLAN port.
    pub underlay: std::net::SocketAddr,
    /// The largest pod MTU the underlay carries (its MTU less VXLAN's).
    pub pod_mtu: u32,
    /// Where the other nodes are learned: `kubernetes` or `file <path>`.
    pub source: String,
    /// Whether the last exchange with the source worked.
    pub source_ok: bool,
    /// The last error of the source, while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_error: Option<String>,
    /// Seconds since the tables were last updated from the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_secs_ago: Option<u64>,
}

/// `remote`: every network's pods on other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteInfo {
    pub status: CrossNodeStatus,
    /// This node's own MemifNode object, as memifd publishes it (or as an
    /// operator puts it in the other nodes' peers files).
    pub local_object: serde_json::Value,
    pub networks: Vec<RemoteNetwork>,
    /// The underlay's own counters: what arrived for no network, send
    /// failures.
    pub underlay: IfStats,
}

/// One network across nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteNetwork {
    pub name: String,
    pub vni: u32,
    /// Addresses of this node's pods in the network.
    pub local: Vec<IpAddr>,
    pub peers: Vec<RemotePeerInfo>,
    pub endpoints: Vec<RemoteEndpointInfo>,
    /// Addresses published by more than one node (this one included),
    /// with the nodes; each node delivers its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
}

/// A node serving the network, with the traffic exchanged with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemotePeerInfo {
    pub node: String,
    pub address: std::net::SocketAddr,
    /// Seconds since its object last changed (as this node saw it).
    pub updated_secs_ago: u64,
    pub endpoints: usize,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub drops: u64,
}

/// A pod address on another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteEndpointInfo {
    pub ip: IpAddr,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<crate::mac::Mac>,
}

/// Replies, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reply {
    /// To attach and get.
    Attachment(Box<AttachmentInfo>),
    /// To detach: whether there was such an attachment.
    Detached {
        existed: bool,
    },
    /// To list.
    Attachments {
        items: Vec<AttachmentInfo>,
    },
    Status(Box<StatusInfo>),
    /// To gc: what was removed.
    Collected {
        removed: Vec<AttachmentKey>,
    },
    /// To pod-annotations: only keys under `cni.projectcalico.org/` and
    /// `k8s.v1.cni.cncf.io/`.
    Annotations {
        annotations: BTreeMap<String, String>,
    },
    /// To uplinks.
    Uplinks {
        items: Vec<UplinkStatus>,
    },
    /// To remote.
    Remote(Box<RemoteInfo>),
    Error(ApiError),
}

/// A network's uplink: the TUN device in the host netns that the pods'
/// host routes point to. `stats`: rx is what the host sent into the
/// network, tx what the pods sent to the host; drops by reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UplinkStatus {
    pub network: String,
    /// The TUN device; absent when it could not be created (see `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub stats: IfStats,
}

/// A reply as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyEnvelope {
    pub api: u32,
    #[serde(flatten)]
    pub reply: Reply,
}

/// Client-side failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach memifd at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to memifd")]
    Io(#[source] std::io::Error),
    #[error("memifd closed the connection")]
    Closed,
    #[error("memifd sent an unreadable reply")]
    Decode(#[source] serde_json::Error),
    #[error("memifd speaks API version {0}, we speak {API_VERSION}")]
    Version(u32),
    #[error("memifd: {0}")]
    Api(ApiError),
    #[error("memifd sent an unexpected reply to {0}")]
    Unexpected(&'static str),
}

/// A blocking client: one connection, lock-step requests.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects with a timeout applied to every read and write.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let s = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        s.set_read_timeout(Some(timeout)).map_err(ClientError::Io)?;
        s.set_write_timeout(Some(timeout))
            .map_err(ClientError::Io)?;
        let writer = s.try_clone().map_err(ClientError::Io)?;
        Ok(Client {
            reader: BufReader::new(s),
            writer,
        })
    }

    /// Sends one request and returns its reply; an error reply becomes
    /// [`ClientError::Api`].
    pub fn call(&mut self, request: Request) -> Result<Reply, ClientError> {
        let mut line = serde_json::to_vec(&RequestEnvelope {
            api: API_VERSION,
            request,
        })
        .expect("requests serialize");
        line.push(b'\n');
        self.writer.write_all(&line).map_err(ClientError::Io)?;
        let mut buf = Vec::new();
        let n = Read::take(&mut self.reader, MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(ClientError::Io)?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        let env: ReplyEnvelope = serde_json::from_slice(&buf).map_err(ClientError::Decode)?;
        if env.api != API_VERSION {
            return Err(ClientError::Version(env.api));
        }
        match env.reply {
            Reply::Error(e) => Err(ClientError::Api(e)),
            r => Ok(r),
        }
    }

    pub fn attach(&mut self, req: AttachRequest) -> Result<AttachmentInfo, ClientError> {
        match self.call(Request::Attach(Box::new(req)))? {
            Reply::Attachment(a) => Ok(*a),
            _ => Err(ClientError::Unexpected("attach")),
        }
    }

    pub fn detach(&mut self, key: AttachmentKey) -> Result<bool, ClientError> {
        match self.call(Request::Detach(key))? {
            Reply::Detached { existed } => Ok(existed),
            _ => Err(ClientError::Unexpected("detach")),
        }
    }

    pub fn get(&mut self, key: AttachmentKey) -> Result<AttachmentInfo, ClientError> {
        match self.call(Request::Get(key))? {
            Reply::Attachment(a) => Ok(*a),
            _ => Err(ClientError::Unexpected("get")),
        }
    }

    pub fn list(&mut self, network: Option<String>) -> Result<Vec<AttachmentInfo>, ClientError> {
        match self.call(Request::List { network })? {
            Reply::Attachments { items } => Ok(items),
            _ => Err(ClientError::Unexpected("list")),
        }
    }

    pub fn uplinks(&mut self) -> Result<Vec<UplinkStatus>, ClientError> {
        match self.call(Request::Uplinks)? {
            Reply::Uplinks { items } => Ok(items),
            _ => Err(ClientError::Unexpected("uplinks")),
        }
    }

    pub fn remote(&mut self) -> Result<RemoteInfo, ClientError> {
        match self.call(Request::Remote)? {
            Reply::Remote(r) => Ok(*r),
            _ => Err(ClientError::Unexpected("remote")),
        }
    }

    pub fn status(&mut self) -> Result<StatusInfo, ClientError> {
        match self.call(Request::Status)? {
            Reply::Status(s) => Ok(*s),
            _ => Err(ClientError::Unexpected("status")),
        }
    }

    pub fn gc(
        &mut self,
        network: String,
        valid: Vec<AttachmentKey>,
    ) -> Result<Vec<AttachmentKey>, ClientError> {
        match self.call(Request::Gc { network, valid })? {
            Reply::Collected { removed } => Ok(removed),
            _ => Err(ClientError::Unexpected("gc")),
        }
    }

    pub fn pod_annotations(
        &mut self,
        pod: PodRef,
    ) -> Result<BTreeMap<String, String>, ClientError> {
        match self.call(Request::PodAnnotations(pod))? {
            Reply::Annotations { annotations } => Ok(annotations),
            _ => Err(ClientError::Unexpected("pod-annotations")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_shape() {
        let r = RequestEnvelope {
            api: API_VERSION,
            request: Request::Detach(AttachmentKey {
                container_id: "c1".into(),
                ifname: "memif-eth1".into(),
            }),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"api":1,"op":"detach","containerId":"c1","ifname":"memif-eth1"}"#
        );
        assert_eq!(serde_json::from_str::<RequestEnvelope>(&s).unwrap(), r);
    }

    #[test]
    fn attach_round_trips_and_defaults_socket() {
        let req = AttachRequest {
            key: AttachmentKey {
                container_id: "c".into(),
                ifname: "memif-eth1".into(),
            },
            network: "blue".into(),
            netns: "/var/run/netns/p".into(),
            socket: None,
            spec: MemifSpec::default(),
            ips: vec!["10.0.0.1".parse().unwrap()],
            pod: None,
            steer: None,
            vni: None,
        };
        assert_eq!(req.socket_name(), "@memif-eth1");
        let s = serde_json::to_string(&Request::Attach(Box::new(req.clone()))).unwrap();
        assert_eq!(
            serde_json::from_str::<Request>(&s).unwrap(),
            Request::Attach(Box::new(req))
        );
    }

    #[test]
    fn status_reply_decodes() {
        let r = ReplyEnvelope {
            api: API_VERSION,
            reply: Reply::Status(Box::new(StatusInfo {
                version: "0".into(),
                api: API_VERSION,
                memif_enabled: true,
                feature_gates: BTreeMap::new(),
                max_spec: MaxSpec::default(),
                attachments: 0,
                connected: 0,
                kube: false,
                uptime_secs: 0,
                state_file: "/s".into(),
                cross_node: None,
            })),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ReplyEnvelope>(&s).unwrap(), r);
    }

    #[test]
    fn rx_mode_parses_calicovpp_names() {
        assert_eq!("default".parse::<RxMode>().unwrap(), RxMode::Adaptive);
        assert_eq!("polling".parse::<RxMode>().unwrap(), RxMode::Polling);
        assert!("fast".parse::<RxMode>().unwrap_err().contains("fast"));
    }
}
