//! The slave (client) side: allocates one memfd region holding every ring
//! and buffer, one eventfd per ring, and runs the lock-step handshake.
//!
//! Region layout: S2M rings, then M2S rings (each `128 + 16 * 2^log2`
//! bytes), then for each ring in the same order `2^log2` buffers of
//! `buffer_size` bytes. Slot `i` of a ring always uses buffer `i` of it.

use std::os::fd::AsFd;
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::queue::{BufferLayout, ConnState, Notifier, SlaveRx, SlaveTx, DEFAULT_MAX_FRAME};
use super::shm::{Region, RingRef, ShmError, MAX_LOG2_RING_SIZE};
use super::socket::{Channel, SocketAddr, SocketError};
use super::wire::{AddRegion, AddRing, Disconnect, Init, Message, Mode, RING_FLAG_S2M, VERSION};

/// What the slave asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveConfig {
    pub id: u32,
    pub mode: Mode,
    pub secret: String,
    /// Our name, sent in INIT and CONNECT.
    pub name: String,
    /// Slave-to-master queues (our tx).
    pub s2m_queues: u16,
    /// Master-to-slave queues (our rx).
    pub m2s_queues: u16,
    pub log2_ring_size: u8,
    pub buffer_size: u32,
    pub max_frame: usize,
}

impl Default for SlaveConfig {
    fn default() -> SlaveConfig {
        SlaveConfig {
            id: 0,
            mode: Mode::Ethernet,
            secret: String::new(),
            name: "memif-cni-client".into(),
            s2m_queues: 1,
            m2s_queues: 1,
            log2_ring_size: 10,
            buffer_size: 2048,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// Why a slave could not connect or stay connected.
#[derive(Debug, thiserror::Error)]
pub enum SlaveError {
    #[error("control channel")]
    Socket(#[from] SocketError),
    #[error("shared memory")]
    Shm(#[from] ShmError),
    #[error("eventfd: {0}")]
    EventFd(#[source] nix::Error),
    #[error("master refused: {reason} (code {code})")]
    Refused { code: u32, reason: String },
    #[error("master does not speak version 2.0 (offers {min:#06x}..={max:#06x})")]
    Version { min: u16, max: u16 },
    #[error("{0}")]
    Limits(String),
    #[error("expected {expected}, got {got:?}")]
    Unexpected {
        expected: &'static str,
        got: Message,
    },
}

/// A connected slave: its queues and the control channel.
#[derive(Debug)]
pub struct SlaveConnection {
    /// One per S2M ring: what we send.
    pub tx: Vec<SlaveTx>,
    /// One per M2S ring: what we receive.
    pub rx: Vec<SlaveRx>,
    pub master_name: String,
    pub remote_if_name: String,
    pub region: Arc<Region>,
    pub state: Arc<ConnState>,
    chan: Channel,
}

impl SlaveConnection {
    /// Connects to `addr` (abstract names resolve in the caller's netns).
    pub fn connect(addr: &SocketAddr, cfg: &SlaveConfig) -> Result<SlaveConnection, SlaveError> {
        Self::handshake(Channel::connect(addr)?, cfg)
    }

    /// Runs the handshake on an already connected channel.
    pub fn handshake(chan: Channel, cfg: &SlaveConfig) -> Result<SlaveConnection, SlaveError> {
        let hello = match expect(&chan)? {
            Message::Hello(h) => h,
            got => {
                return Err(SlaveError::Unexpected {
                    expected: "HELLO",
                    got,
                })
            }
        };
        if !(hello.min_version <= VERSION && VERSION <= hello.max_version) {
            return Err(SlaveError::Version {
                min: hello.min_version,
                max: hello.max_version,
            });
        }
        if cfg.s2m_queues == 0 || cfg.m2s_queues == 0 {
            return Err(SlaveError::Limits(
                "at least one queue per direction".into(),
            ));
        }
        if cfg.s2m_queues - 1 > hello.max_s2m_ring || cfg.m2s_queues - 1 > hello.max_m2s_ring {
            return Err(SlaveError::Limits(format!(
                "master allows {} s2m and {} m2s rings, asked {} and {}",
                hello.max_s2m_ring as u32 + 1,
                hello.max_m2s_ring as u32 + 1,
                cfg.s2m_queues,
                cfg.m2s_queues
            )));
        }
        let log2 = cfg.log2_ring_size;
        if log2 > hello.max_log2_ring_size || log2 > MAX_LOG2_RING_SIZE {
            return Err(SlaveError::Limits(format!(
                "ring log2 size {log2} above master's max {}",
                hello.max_log2_ring_size
            )));
        }
        if cfg.buffer_size == 0 || cfg.buffer_size % 8 != 0 {
            return Err(SlaveError::Limits(format!(
                "buffer size {} must be a positive multiple of 8",
                cfg.buffer_size
            )));
        }

        // Allocate: rings first, then buffers.
        let nrings = cfg.s2m_queues as usize + cfg.m2s_queues as usize;
        let ring_bytes = RingRef::bytes_for(log2);
        let rings_total = ring_bytes * nrings;
        let per_ring_buffers = (1usize << log2) * cfg.buffer_size as usize;
        let size = rings_total + per_ring_buffers * nrings;
        if size as u64 > super::shm::MAX_REGION_SIZE {
            return Err(SlaveError::Limits(format!(
                "region of {size} bytes is too large"
            )));
        }
        let region = Arc::new(Region::create("memif region 0", size)?);
        let regions: Arc<[Arc<Region>]> = vec![region.clone()].into();

        chan.send(
            &Message::Init(Init {
                version: VERSION,
                id: cfg.id,
                mode: cfg.mode,
                secret: cfg.secret.clone(),
                name: cfg.name.clone(),
            }),
            None,
        )?;
        expect_ack(&chan)?;
        chan.send(
            &Message::AddRegion(AddRegion {
                index: 0,
                size: size as u64,
            }),
            Some(region.fd()),
        )?;
        expect_ack(&chan)?;

        let state = ConnState::new_up();
        let mut tx = Vec::new();
        let mut rx = Vec::new();
        for i in 0..nrings {
            let s2m = i < cfg.s2m_queues as usize;
            let index = if s2m { i } else { i - cfg.s2m_queues as usize } as u16;
            let offset = (i * ring_bytes) as u32;
            let ring = RingRef::new(region.clone(), offset, log2)?;
            ring.init_header(0);
            let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(SlaveError::EventFd)?;
            chan.send(
                &Message::AddRing(AddRing {
                    flags: if s2m { RING_FLAG_S2M } else { 0 },
                    index,
                    region: 0,
                    offset,
                    log2_ring_size: log2,
                    private_hdr_size: 0,
                }),
                Some(efd.as_fd()),
            )?;
            expect_ack(&chan)?;
            let layout = BufferLayout {
                region: 0,
                base: (rings_total + i * per_ring_buffers) as u32,
                buffer_size: cfg.buffer_size,
            };
            let notifier = Notifier::new(efd.into());
            if s2m {
                tx.push(SlaveTx::new(
                    ring,
                    regions.clone(),
                    notifier,
                    state.clone(),
                    layout,
                    cfg.max_frame,
                ));
            } else {
                rx.push(SlaveRx::new(
                    ring,
                    regions.clone(),
                    notifier,
                    state.clone(),
                    layout,
                    cfg.max_frame,
                ));
            }
        }
        chan.send(
            &Message::Connect {
                if_name: cfg.name.clone(),
            },
            None,
        )?;
        let remote_if_name = match expect(&chan)? {
            Message::Connected { if_name } => if_name,
            got => {
                return Err(SlaveError::Unexpected {
                    expected: "CONNECTED",
                    got,
                })
            }
        };
        // Buffers are posted only now: before CONNECTED the master has not
        // mapped the region.
        for q in &mut rx {
            q.post_all();
        }
        Ok(SlaveConnection {
            tx,
            rx,
            master_name: hello.name,
            remote_if_name,
            region,
            state,
            chan,
        })
    }

    /// Sends DISCONNECT with a reason and closes.
    pub fn disconnect(self, reason: &str) {
        self.state.set_down();
        let _ = self.chan.send(
            &Message::Disconnect(Disconnect {
                code: 0,
                reason: reason.to_string(),
            }),
            None,
        );
    }

    /// Non-blocking check of the control channel: `Some(reason)` once the
    /// master has disconnected (the link is then marked down).
    pub fn poll_disconnect(&self) -> Option<String> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.chan.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
        let reason = match self.chan.recv() {
            Ok(r) => match r.msg {
                Message::Disconnect(d) => d.reason,
                other => format!("unexpected {:?} from master", other.msg_type()),
            },
            Err(e) => e.to_string(),
        };
        self.state.set_down();
        Some(reason)
    }

    /// The control channel (to wait on it with poll/epoll).
    pub fn control_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.chan.as_fd()
    }
}

fn expect(chan: &Channel) -> Result<Message, SlaveError> {
    match chan.recv()?.msg {
        Message::Disconnect(d) => Err(SlaveError::Refused {
            code: d.code,
            reason: d.reason,
        }),
        m => Ok(m),
    }
}

fn expect_ack(chan: &Channel) -> Result<(), SlaveError> {
    match expect(chan)? {
        Message::Ack => Ok(()),
        got => Err(SlaveError::Unexpected {
            expected: "ACK",
            got,
        }),
    }
}
