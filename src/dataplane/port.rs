//! A port inside a worker: an attachment of one of the worker's
//! networks, its memif connection (rings and rx-mode state) while a client
//! is connected, and what a push into its rings did.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::counters::{DropReason, IfCounters, Local};
use super::Attached;
use crate::ids::AttachmentId;
use crate::mac::Mac;
use crate::memif::queue::{Pushed, RingError};
use crate::memif::wire::Mode;
use crate::packet::IpKey;

/// A connected port's rings and rx-mode state.
pub(super) struct Conn {
    pub(super) a: Attached,
    pub(super) idle_polls: u32,
    /// Interrupts unmasked and the eventfds armed: waiting to be woken.
    pub(super) sleeping: bool,
    /// Where the last burst from this port went first (port slot, tx
    /// queue): the next one most likely goes there too, and its buffers
    /// are prefetched for writing before it is forwarded.
    pub(super) next_hop: Option<(usize, usize)>,
}

/// A port: an attachment in its worker.
pub(super) struct Port {
    pub(super) id: AttachmentId,
    pub(super) net: usize,
    pub(super) mode: Mode,
    pub(super) ips: Vec<IpKey>,
    pub(super) mac: Mac,
    /// The pod's MAC, learned from the source of its frames.
    pub(super) peer_mac: Option<Mac>,
    /// The first 12 bytes of frames to the pod (its MAC or broadcast,
    /// then ours) as the low bytes of a little-endian lane.
    pub(super) eth_addrs: u128,
    pub(super) counters: Arc<IfCounters>,
    pub(super) local: Local,
    pub(super) dirty: bool,
    pub(super) conn: Option<Conn>,
}

/// The bytes of a frame's first lane that [`Port::eth_addrs`] replaces.
pub(super) const ETH_ADDRS_MASK: u128 = (1 << 96) - 1;

impl Port {
    /// Books what a push into this port's tx queue did: a queue that got
    /// its first frame this turn is marked for the flush (`to` is (this
    /// port's slot, the queue)); a drop is counted; a broken ring sends
    /// the port away.
    #[inline(always)]
    pub(super) fn book(
        &mut self,
        r: Result<Pushed, RingError>,
        to: (usize, usize),
        was_pending: bool,
        dirty_tx: &mut Vec<(usize, usize)>,
        leaving: &mut Vec<(usize, Leave)>,
    ) {
        // The common case inline, nothing else: a call here costs its
        // register saves, stores that wait behind the frame's stores to
        // the peer's lines.
        match r {
            Ok(Pushed::Queued) => {
                if !was_pending {
                    dirty_tx.push(to);
                }
            }
            r => self.book_failed(r, to.0, leaving),
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn book_failed(
        &mut self,
        r: Result<Pushed, RingError>,
        slot: usize,
        leaving: &mut Vec<(usize, Leave)>,
    ) {
        let why = match r {
            Ok(Pushed::Queued) => return,
            Ok(Pushed::RingFull) => DropReason::TxRingFull,
            Ok(Pushed::Unsendable) => DropReason::TooLong,
            Err(e) => {
                if let Some(c) = self.conn.as_ref() {
                    c.a.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                leaving.push((slot, Leave::BadPeer(format!("bad tx descriptor: {e}"))));
                DropReason::TxDown
            }
        };
        self.local.drop(why);
        self.dirty = true;
    }

    pub(super) fn set_peer_mac(&mut self, m: Option<Mac>) {
        self.peer_mac = m;
        self.eth_addrs = eth_addrs(m.unwrap_or(Mac::BROADCAST), self.mac);
    }
}

/// Destination then source MAC as the low 12 bytes of a little-endian lane.
pub(super) fn eth_addrs(dst: Mac, src: Mac) -> u128 {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&dst.0);
    b[6..12].copy_from_slice(&src.0);
    u128::from_le_bytes(b)
}

/// What the fast path needs of a burst's source port, read once a burst.
pub(super) struct SrcCtx {
    pub(super) mode: Mode,
    pub(super) net: usize,
    /// The learned pod MAC as the low 48 bits of a little-endian number,
    /// or a value no 48-bit MAC equals.
    pub(super) peer_mac: u64,
}

/// Why a port's connection leaves the worker.
pub(super) enum Leave {
    LinkDown,
    BadPeer(String),
}
