//! Queues: burst receive and transmit on memif rings, for both roles.
//!
//! Invariant of the protocol: the slave writes `head`, the master writes
//! `tail`, on both rings. Counters are free-running u16; a slot is
//! `counter & (size - 1)`.
//!
//! | queue          | ring | role   | we read      | we write            |
//! |----------------|------|--------|--------------|---------------------|
//! | [`MasterRx`]   | S2M  | master | head, descs  | tail                |
//! | [`MasterTx`]   | M2S  | master | head, descs  | desc length/flags, tail |
//! | [`SlaveTx`]    | S2M  | slave  | tail         | descs, head         |
//! | [`SlaveRx`]    | M2S  | slave  | tail, descs  | descs (re-post), head |
//!
//! Every descriptor the master reads is copied once (see
//! [`RingRef::desc`]) and the copy validated: region index, offset + length
//! inside the region (checked arithmetic), length > 0, frame length bound.
//! A violation is a [`RingError`]: the owner disconnects the peer with its
//! text as the reason.
//!
//! The master's queues are in `master`, the slave's in `slave`; both are
//! re-exported here.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::shm::{Desc, Region, RingRef, DESC_FLAG_NEXT, RING_FLAG_MASK_INT};

/// Default largest frame accepted or sent (jumbo ethernet).
pub const DEFAULT_MAX_FRAME: usize = 9216;

/// The peer broke the ring protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("ring index out of range: head {head} tail {tail} ring size {size}")]
    IndexOutOfRange { head: u16, tail: u16, size: u16 },
    #[error("descriptor {slot}: region {region} does not exist")]
    BadRegion { slot: u16, region: u16 },
    #[error("descriptor {slot}: offset {offset} + length {length} is outside region {region}")]
    OutOfBounds {
        slot: u16,
        region: u16,
        offset: u32,
        length: u32,
    },
    #[error("descriptor {slot}: zero length")]
    ZeroLength { slot: u16 },
    #[error("frame longer than {limit} bytes")]
    FrameTooLong { limit: usize },
    #[error("chained frame longer than the ring")]
    ChainTooLong,
}

/// The state of a connection, shared by the control plane and the queues of one connection:
/// the dataplane checks it once per burst and stops using the queues when
/// the control channel has gone.
#[derive(Debug, Default)]
pub struct ConnState {
    up: AtomicBool,
    /// Descriptors rejected by validation on this connection.
    pub bad_descriptors: AtomicU64,
}

impl ConnState {
    pub fn new_up() -> Arc<ConnState> {
        Arc::new(ConnState {
            up: AtomicBool::new(true),
            bad_descriptors: AtomicU64::new(0),
        })
    }
    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }
    pub fn set_down(&self) {
        self.up.store(false, Ordering::Release)
    }
}

/// A ring's interrupt eventfd.
#[derive(Debug)]
pub struct Notifier {
    fd: OwnedFd,
}

impl Notifier {
    /// Wraps an eventfd and makes it non-blocking: the spec says the slave
    /// creates it with `EFD_NONBLOCK`, but a peer that did not (and filled
    /// the counter) must not be able to block our writes or reads.
    pub fn new(fd: OwnedFd) -> Notifier {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        if let Ok(fl) = fcntl(&fd, FcntlArg::F_GETFL) {
            let fl = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
            let _ = fcntl(&fd, FcntlArg::F_SETFL(fl));
        }
        Notifier { fd }
    }
    /// Signals the peer: adds 1 to the eventfd. Non-blocking; a full
    /// counter (EAGAIN) already means "wake up".
    #[inline]
    pub fn notify(&self) {
        let _ = nix::unistd::write(&self.fd, &1u64.to_ne_bytes());
    }
    /// Clears pending notifications; returns how many were pending.
    pub fn drain(&self) -> u64 {
        let mut b = [0u8; 8];
        match nix::unistd::read(&self.fd, &mut b) {
            Ok(8) => u64::from_ne_bytes(b),
            _ => 0,
        }
    }
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A reusable frame buffer. Receive bursts fill a caller-owned slice of
/// these, so the packet path does not allocate.
#[derive(Clone)]
pub struct PacketBuf {
    data: Box<[u8]>,
    len: usize,
}

impl PacketBuf {
    pub fn new(capacity: usize) -> PacketBuf {
        PacketBuf {
            data: vec![0u8; capacity].into_boxed_slice(),
            len: 0,
        }
    }
    /// A batch of `n` buffers of `capacity` bytes.
    pub fn batch(n: usize, capacity: usize) -> Vec<PacketBuf> {
        (0..n).map(|_| PacketBuf::new(capacity)).collect()
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.data[..self.len]
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.data.len()
    }
    /// Replaces the content (truncated to the capacity).
    pub fn set(&mut self, src: &[u8]) {
        let n = src.len().min(self.data.len());
        self.data[..n].copy_from_slice(&src[..n]);
        self.len = n;
    }
    pub fn as_mut_full(&mut self) -> &mut [u8] {
        &mut self.data
    }
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.data.len());
    }
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PacketBuf({} bytes)", self.len)
    }
}

/// Per-queue counters, owned by the queue (single writer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub packets: u64,
    pub bytes: u64,
    /// Frames dropped because the ring was full (tx) or had no buffers.
    pub drops: u64,
    /// Interrupts signalled to the consumer (producer side: tail or head
    /// published while the consumer had interrupts unmasked).
    pub interrupts: u64,
}

/// Shared pieces of every queue.
#[derive(Debug)]
struct QueueCore {
    ring: RingRef,
    regions: Arc<[Arc<Region>]>,
    notifier: Notifier,
    state: Arc<ConnState>,
    /// Our own index: tail for the master, head for the slave.
    ours: u16,
    max_frame: usize,
    stats: QueueStats,
}

impl QueueCore {
    fn new(
        ring: RingRef,
        regions: Arc<[Arc<Region>]>,
        notifier: Notifier,
        state: Arc<ConnState>,
        ours: u16,
        max_frame: usize,
    ) -> QueueCore {
        QueueCore {
            ring,
            regions,
            notifier,
            state,
            ours,
            max_frame,
            stats: QueueStats::default(),
        }
    }

    /// Master side: descriptors the slave has published past our tail
    /// (filled frames on S2M, posted buffers on M2S), bounded by the ring.
    fn slave_ahead(&self) -> Result<u16, RingError> {
        let head = self.ring.head();
        let n = head.wrapping_sub(self.ours);
        if n > self.ring.size() {
            return Err(self.fail(RingError::IndexOutOfRange {
                head,
                tail: self.ours,
                size: self.ring.size(),
            }));
        }
        Ok(n)
    }
    #[inline]
    fn region_for(&self, slot: u16, d: &Desc) -> Result<&Region, RingError> {
        let r = self
            .regions
            .get(d.region as usize)
            .ok_or(RingError::BadRegion {
                slot,
                region: d.region,
            })?;
        if d.length == 0 {
            return Err(RingError::ZeroLength { slot });
        }
        if !r.contains(d.offset, d.length) {
            return Err(RingError::OutOfBounds {
                slot,
                region: d.region,
                offset: d.offset,
                length: d.length,
            });
        }
        Ok(r)
    }

    fn fail(&self, e: RingError) -> RingError {
        self.state.bad_descriptors.fetch_add(1, Ordering::Relaxed);
        e
    }

    /// Consumer side: mask or unmask interrupts on this ring.
    fn set_interrupts(&self, enabled: bool) {
        let f = self.ring.flags();
        let f = if enabled {
            f & !RING_FLAG_MASK_INT
        } else {
            f | RING_FLAG_MASK_INT
        };
        self.ring.set_flags(f);
    }

    /// Producer side: notify the consumer unless it masked interrupts
    /// (and count it).
    #[inline]
    fn kick(&mut self) {
        if !self.ring.interrupts_masked() {
            self.notifier.notify();
            self.stats.interrupts += 1;
        }
    }
}

macro_rules! queue_common {
    ($t:ty) => {
        impl $t {
            /// The queue's counters.
            pub fn stats(&self) -> QueueStats {
                self.core.stats
            }
            /// Whether the connection is still up.
            #[inline]
            pub fn is_up(&self) -> bool {
                self.core.state.is_up()
            }
            /// The ring's eventfd (to wait on in interrupt mode).
            pub fn event_fd(&self) -> BorrowedFd<'_> {
                self.core.notifier.fd()
            }
            /// The ring this queue works on.
            pub fn ring(&self) -> &RingRef {
                &self.core.ring
            }
            /// The connection's link state.
            pub fn state(&self) -> &Arc<ConnState> {
                &self.core.state
            }
        }
    };
}

/// Slave-side buffer layout of one ring: slot `i` always uses the buffer at
/// `base + i * buffer_size` of region `region`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BufferLayout {
    pub region: u16,
    pub base: u32,
    pub buffer_size: u32,
}

impl BufferLayout {
    #[inline]
    pub(super) fn offset(&self, slot: u16, mask: u16) -> u32 {
        self.base + (slot & mask) as u32 * self.buffer_size
    }
}

mod master;
mod slave;

pub use master::{MasterRx, MasterTx, Pushed, RxFrame, RxFrames};
pub use slave::{SlaveRx, SlaveTx};
