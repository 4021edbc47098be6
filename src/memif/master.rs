//! The master (server) side of the handshake, as a state machine without
//! I/O: feed it each received message, send what it answers. The blocking
//! driver is [`super::server`]; memifd can drive the same machine from
//! tokio.
//!
//! Lock-step: HELLO (sent on accept) -> INIT/ACK -> ADD_REGION/ACK ... ->
//! ADD_RING/ACK ... -> CONNECT/CONNECTED. Any violation rejects the peer with
//! a reason, which the driver sends as DISCONNECT before closing.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::queue::{ConnState, MasterRx, MasterTx, Notifier, DEFAULT_MAX_FRAME};
use super::shm::{Region, RingRef, ShmError, MAX_LOG2_RING_SIZE};
use super::socket::Received;
use super::wire::{AddRing, Disconnect, Hello, Init, Message, Mode, VERSION};

/// Limits a master enforces on what a slave may allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Number of regions accepted (HELLO announces this minus one).
    pub max_regions: u16,
    /// Number of slave-to-master rings (our rx queues) accepted.
    pub max_s2m_rings: u16,
    /// Number of master-to-slave rings (our tx queues) accepted.
    pub max_m2s_rings: u16,
    /// Largest slave-to-master ring, as log2 of its descriptor count (at
    /// most 14).
    pub max_log2_s2m_ring_size: u8,
    /// Largest master-to-slave ring, as log2 (at most 14).
    pub max_log2_m2s_ring_size: u8,
    /// Largest frame accepted or sent, in bytes.
    pub max_frame: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_regions: 256,
            max_s2m_rings: 256,
            max_m2s_rings: 256,
            max_log2_s2m_ring_size: MAX_LOG2_RING_SIZE,
            max_log2_m2s_ring_size: MAX_LOG2_RING_SIZE,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// One memif interface a master serves on a socket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InterfaceConfig {
    /// Interface id the slave asks for in INIT.
    pub id: u32,
    pub mode: Mode,
    /// Required secret; `None` or empty means none.
    pub secret: Option<String>,
    /// Our name for the interface, sent in CONNECTED.
    pub name: String,
    pub limits: Limits,
}

impl InterfaceConfig {
    pub fn new(id: u32, name: &str) -> InterfaceConfig {
        InterfaceConfig {
            id,
            mode: Mode::Ethernet,
            secret: None,
            name: name.to_string(),
            limits: Limits::default(),
        }
    }
}

/// What the server knows of an interface id a slave asks for.
#[derive(Debug)]
pub enum Lookup {
    Found(InterfaceConfig),
    Unknown,
    AlreadyConnected,
}

/// Why a handshake or connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// We refuse the peer; the reason goes out in DISCONNECT.
    #[error("{0}")]
    Protocol(String),
    /// The peer sent DISCONNECT.
    #[error("peer disconnected (code {}): {}", .0.code, .0.reason)]
    Peer(Disconnect),
}

impl Reject {
    fn new(s: impl Into<String>) -> Reject {
        Reject::Protocol(s.into())
    }
}

/// A handshake step's result.
#[derive(Debug)]
pub enum Outcome {
    /// Send this and wait for the next message.
    Reply(Message),
    /// Send CONNECTED: the link is up and here are its queues.
    Connected(Box<MasterConnection>, Message),
}

/// Shape of one ring, for `show memif`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RingInfo {
    pub region: u16,
    pub offset: u32,
    pub log2_size: u8,
}

/// A connected interface, master side: the queues to hand to a dataplane
/// worker, plus what `show memif` needs.
#[derive(Debug)]
pub struct MasterConnection {
    pub id: u32,
    pub mode: Mode,
    pub peer_name: String,
    pub regions: Arc<[Arc<Region>]>,
    /// One per S2M ring: what the slave sends.
    pub rx: Vec<MasterRx>,
    /// One per M2S ring: what we send.
    pub tx: Vec<MasterTx>,
    pub state: Arc<ConnState>,
    pub s2m_rings: Vec<RingInfo>,
    pub m2s_rings: Vec<RingInfo>,
    /// The control channel's fd number in the server (for `show memif`);
    /// -1 until a server fills it in.
    pub control_fd: i32,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    AwaitInit,
    AwaitResources,
    Connected,
}

/// The master's handshake with one slave.
#[derive(Debug)]
pub struct Handshake {
    state: State,
    socket_limits: Limits,
    cfg: Option<InterfaceConfig>,
    /// The id the slave's INIT asked for, accepted or not (for the logs).
    asked: Option<u32>,
    peer_name: String,
    regions: Vec<(u64, OwnedFd)>,
    s2m: Vec<(AddRing, OwnedFd)>,
    m2s: Vec<(AddRing, OwnedFd)>,
}

impl Handshake {
    /// Starts a handshake; returns the HELLO to send first. The HELLO
    /// announces `limits` (socket-wide: the id is not known yet).
    pub fn start(name: &str, limits: Limits) -> (Handshake, Message) {
        let idx = |n: u16| n.saturating_sub(1);
        let hello = Message::Hello(Hello {
            name: name.to_string(),
            min_version: VERSION,
            max_version: VERSION,
            max_region: idx(limits.max_regions),
            max_m2s_ring: idx(limits.max_m2s_rings),
            max_s2m_ring: idx(limits.max_s2m_rings),
            max_log2_ring_size: limits
                .max_log2_s2m_ring_size
                .max(limits.max_log2_m2s_ring_size)
                .min(MAX_LOG2_RING_SIZE),
        });
        (
            Handshake {
                state: State::AwaitInit,
                socket_limits: limits,
                cfg: None,
                asked: None,
                peer_name: String::new(),
                regions: Vec::new(),
                s2m: Vec::new(),
                m2s: Vec::new(),
            },
            hello,
        )
    }

    /// The interface id, once INIT was accepted.
    pub fn id(&self) -> Option<u32> {
        self.cfg.as_ref().map(|c| c.id)
    }

    /// The id the slave asked for in INIT, even when INIT was refused
    /// (unknown id, wrong secret, mode mismatch); `None` before INIT.
    pub fn asked_id(&self) -> Option<u32> {
        self.asked
    }

    /// Handles one message. `lookup` resolves the id in INIT.
    pub fn on_message(
        &mut self,
        rx: Received,
        lookup: impl FnOnce(u32) -> Lookup,
    ) -> Result<Outcome, Reject> {
        let Received { msg, fd, .. } = rx;
        if let Message::Disconnect(d) = msg {
            return Err(Reject::Peer(d));
        }
        if msg.needs_fd() != fd.is_some() {
            return Err(match fd {
                None => Reject::new(format!("{:?} without a file descriptor", msg.msg_type())),
                Some(_) => Reject::new(format!(
                    "{:?} with an unexpected file descriptor",
                    msg.msg_type()
                )),
            });
        }
        match (&self.state, msg) {
            (State::AwaitInit, Message::Init(init)) => self.on_init(init, lookup),
            (State::AwaitInit, m) => Err(Reject::new(format!("{:?} before INIT", m.msg_type()))),
            (State::AwaitResources, Message::AddRegion(r)) => {
                let lim = self.limits();
                if r.index as usize != self.regions.len() {
                    return Err(Reject::new(format!(
                        "region index {} out of sequence (expected {})",
                        r.index,
                        self.regions.len()
                    )));
                }
                if self.regions.len() >= lim.max_regions as usize {
                    return Err(Reject::new(format!(
                        "too many regions (max {})",
                        lim.max_regions
                    )));
                }
                if r.size == 0 || r.size > super::shm::MAX_REGION_SIZE {
                    return Err(Reject::new(format!(
                        "region {} size {} out of range",
                        r.index, r.size
                    )));
                }
                self.regions.push((r.size, fd.expect("checked above")));
                Ok(Outcome::Reply(Message::Ack))
            }
            (State::AwaitResources, Message::AddRing(r)) => {
                let lim = self.limits();
                let (list, max, dir) = if r.is_s2m() {
                    (&mut self.s2m, lim.max_s2m_rings, "s2m")
                } else {
                    (&mut self.m2s, lim.max_m2s_rings, "m2s")
                };
                if r.index as usize != list.len() {
                    return Err(Reject::new(format!(
                        "{dir} ring index {} out of sequence (expected {})",
                        r.index,
                        list.len()
                    )));
                }
                if list.len() >= max as usize {
                    return Err(Reject::new(format!("too many {dir} rings (max {max})")));
                }
                let max_log2 = if r.is_s2m() {
                    lim.max_log2_s2m_ring_size
                } else {
                    lim.max_log2_m2s_ring_size
                };
                if r.log2_ring_size > max_log2 {
                    return Err(Reject::new(format!(
                        "{dir} ring {} log2 size {} above max {max_log2}",
                        r.index, r.log2_ring_size
                    )));
                }
                if r.region as usize >= self.regions.len() {
                    return Err(Reject::new(format!(
                        "{dir} ring {} in unknown region {}",
                        r.index, r.region
                    )));
                }
                let fd = fd.expect("checked above");
                if !is_eventfd(&fd) {
                    return Err(Reject::new(format!(
                        "{dir} ring {} fd is not an eventfd",
                        r.index
                    )));
                }
                list.push((r, fd));
                Ok(Outcome::Reply(Message::Ack))
            }
            (State::AwaitResources, Message::Connect { if_name }) => self.on_connect(if_name),
            (State::AwaitResources, m) => Err(Reject::new(format!(
                "unexpected {:?} during setup",
                m.msg_type()
            ))),
            (State::Connected, m) => Err(Reject::new(format!(
                "unexpected {:?} on a connected interface",
                m.msg_type()
            ))),
        }
    }

    fn limits(&self) -> Limits {
        self.cfg.as_ref().map_or(self.socket_limits, |c| c.limits)
    }

    fn on_init(
        &mut self,
        init: Init,
        lookup: impl FnOnce(u32) -> Lookup,
    ) -> Result<Outcome, Reject> {
        self.asked = Some(init.id);
        if init.version != VERSION {
            return Err(Reject::new(format!(
                "incompatible protocol version {:#06x} (need {VERSION:#06x})",
                init.version
            )));
        }
        let cfg = match lookup(init.id) {
            Lookup::Found(c) => c,
            Lookup::Unknown => {
                return Err(Reject::new(format!("unknown interface id {}", init.id)))
            }
            Lookup::AlreadyConnected => {
                return Err(Reject::new(format!(
                    "interface id {} already connected",
                    init.id
                )))
            }
        };
        if init.mode != cfg.mode {
            return Err(Reject::new(format!(
                "mode mismatch: interface is {}, peer asked for {}",
                cfg.mode, init.mode
            )));
        }
        match cfg.secret.as_deref().filter(|s| !s.is_empty()) {
            Some(_) if init.secret.is_empty() => return Err(Reject::new("secret required")),
            Some(s) if !constant_time_eq(s.as_bytes(), init.secret.as_bytes()) => {
                return Err(Reject::new("incorrect secret"))
            }
            _ => {}
        }
        self.peer_name = init.name;
        self.cfg = Some(cfg);
        self.state = State::AwaitResources;
        Ok(Outcome::Reply(Message::Ack))
    }

    fn on_connect(&mut self, if_name: String) -> Result<Outcome, Reject> {
        let cfg = self.cfg.clone().expect("INIT accepted");
        if self.s2m.is_empty() || self.m2s.is_empty() {
            return Err(Reject::new(
                "at least one ring in each direction is required",
            ));
        }
        let shm = |what: String, e: ShmError| Reject::new(format!("{what}: {e}"));
        let regions: Vec<Arc<Region>> = std::mem::take(&mut self.regions)
            .into_iter()
            .enumerate()
            .map(|(i, (size, fd))| {
                Region::from_peer(fd, size)
                    .map(Arc::new)
                    .map_err(|e| shm(format!("region {i}"), e))
            })
            .collect::<Result<_, _>>()?;
        let regions: Arc<[Arc<Region>]> = regions.into();
        let state = ConnState::new_up();
        let ring = |dir: &str, r: &AddRing| -> Result<RingRef, Reject> {
            let rr = RingRef::new(
                regions[r.region as usize].clone(),
                r.offset,
                r.log2_ring_size,
            )
            .map_err(|e| shm(format!("{dir} ring {}", r.index), e))?;
            rr.check_cookie()
                .map_err(|e| shm(format!("{dir} ring {}", r.index), e))?;
            Ok(rr)
        };
        let info = |r: &AddRing| RingInfo {
            region: r.region,
            offset: r.offset,
            log2_size: r.log2_ring_size,
        };
        let s2m_rings = self.s2m.iter().map(|(r, _)| info(r)).collect();
        let m2s_rings = self.m2s.iter().map(|(r, _)| info(r)).collect();
        let mut rx = Vec::new();
        for (r, fd) in std::mem::take(&mut self.s2m) {
            let rr = ring("s2m", &r)?;
            rx.push(MasterRx::new(
                rr,
                regions.clone(),
                Notifier::new(fd),
                state.clone(),
                cfg.limits.max_frame,
            ));
        }
        let mut tx = Vec::new();
        for (r, fd) in std::mem::take(&mut self.m2s) {
            let rr = ring("m2s", &r)?;
            tx.push(MasterTx::new(
                rr,
                regions.clone(),
                Notifier::new(fd),
                state.clone(),
                cfg.limits.max_frame,
            ));
        }
        self.state = State::Connected;
        tracing::debug!(id = cfg.id, peer = %self.peer_name, remote_if = %if_name, "memif handshake complete");
        let conn = MasterConnection {
            id: cfg.id,
            mode: cfg.mode,
            peer_name: self.peer_name.clone(),
            regions,
            rx,
            tx,
            state,
            s2m_rings,
            m2s_rings,
            control_fd: -1,
        };
        Ok(Outcome::Connected(
            Box::new(conn),
            Message::Connected { if_name: cfg.name },
        ))
    }
}

/// Compares secrets without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `fd` is an eventfd. A peer could pass a pipe or socket instead,
/// whose write would block the dataplane.
fn is_eventfd(fd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.as_os_str() == "anon_inode:[eventfd]")
        .unwrap_or(false)
}
