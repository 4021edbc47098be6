//! One dataplane worker: its ports, networks and uplinks, the epoll loop
//! with the rx modes, and the forwarding of each burst.
//!
//! A burst from a port's rx ring is peeked (descriptors copied once and
//! validated), each frame routed and copied once into its destination's
//! buffers, then the source ring is released and every destination ring
//! that got frames is published (one tail store and at most one interrupt
//! per ring per burst).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;

use super::pkt::{self, IpClass, IpKey, ETH_HLEN, PEEK};

/// Bytes of a frame read in one fixed-size copy: ethernet and an IPv6
/// header, or ethernet and ARP.
const FAST_PEEK: usize = 64;
use super::uplink::Tun;
use super::{
    Attached, Cmd, DropReason, IfCounters, IfKey, OnBadPeer, PortConfig, UplinkCounters,
    ADAPTIVE_IDLE_POLLS, BURST,
};
use crate::api::RxMode;
use crate::memif::queue::{Pushed, RingError, RxFrame};
use crate::memif::shm::{Desc, Region, MAX_LOG2_RING_SIZE};
use crate::memif::wire::Mode;

/// A multiplicative hasher for routing keys (addresses are not chosen by
/// an attacker who could benefit from collisions: only pods' own /32s and
/// /128s are in the table, put there by the control plane).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    #[inline]
    fn write_u128(&mut self, v: u128) {
        let x = (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
        let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 32);
    }
}

type Routes = HashMap<IpKey, usize, BuildHasherDefault<KeyHasher>>;

/// Counts not yet added to the shared atomics.
#[derive(Default)]
struct Local {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    drops: [u64; DropReason::COUNT],
}

impl Local {
    #[inline]
    fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }
}

/// A connected port's rings and rx-mode state.
struct Conn {
    a: Attached,
    idle_polls: u32,
    /// Interrupts unmasked and the eventfds armed: waiting to be woken.
    sleeping: bool,
    /// Where the last burst from this port went first (port slot, tx
    /// queue): the next one most likely goes there too, and its buffers
    /// are prefetched for writing before it is forwarded.
    next_hop: Option<(usize, usize)>,
}

struct Port {
    key: IfKey,
    net: usize,
    mode: Mode,
    ips: Vec<IpKey>,
    mac: [u8; 6],
    /// The pod's MAC, learned from the source of its frames.
    peer_mac: Option<[u8; 6]>,
    /// The first 12 bytes of frames to the pod (its MAC or broadcast,
    /// then ours) as the low bytes of a little-endian lane.
    eth_addrs: u128,
    counters: Arc<IfCounters>,
    local: Local,
    dirty: bool,
    conn: Option<Conn>,
}

/// The bytes of a frame's first lane that [`Port::eth_addrs`] replaces.
const ETH_ADDRS_MASK: u128 = (1 << 96) - 1;

impl Port {
    /// Books what a push into this port's tx queue did: a queue that got
    /// its first frame this turn is marked for the flush (`to` is (this
    /// port's slot, the queue)); a drop is counted; a broken ring sends
    /// the port away.
    #[inline(always)]
    fn book(
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
    fn book_failed(
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

    fn set_peer_mac(&mut self, m: Option<[u8; 6]>) {
        self.peer_mac = m;
        self.eth_addrs = eth_addrs(m.unwrap_or(pkt::BROADCAST), self.mac);
    }
}

/// Destination then source MAC as the low 12 bytes of a little-endian lane.
fn eth_addrs(dst: [u8; 6], src: [u8; 6]) -> u128 {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&dst);
    b[6..12].copy_from_slice(&src);
    u128::from_le_bytes(b)
}

struct Uplink {
    tun: Tun,
    counters: Arc<UplinkCounters>,
    local: Local,
    readable: bool,
}

struct Net {
    name: String,
    routes: Routes,
    /// The last lookup (key, port slot): consecutive frames mostly go to
    /// the same pod. Key 0 (never a unicast key) means empty; cleared on
    /// every route change.
    last: (IpKey, usize),
    uplink: Option<Uplink>,
    ports: usize,
}

impl Net {
    #[inline]
    fn lookup(&mut self, k: IpKey) -> Option<usize> {
        if self.last.0 == k {
            return Some(self.last.1);
        }
        let to = *self.routes.get(&k)?;
        self.last = (k, to);
        Some(to)
    }

    fn set_route(&mut self, k: IpKey, slot: Option<usize>) -> Option<usize> {
        self.last = (0, 0);
        match slot {
            Some(s) => self.routes.insert(k, s),
            None => self.routes.remove(&k),
        }
    }
}

/// What the fast path needs of a burst's source port, read once a burst.
struct SrcCtx {
    mode: Mode,
    net: usize,
    /// The learned pod MAC as the low 48 bits of a little-endian number,
    /// or a value no 48-bit MAC equals.
    peer_mac: u64,
}

/// Why a port's connection leaves the worker.
enum Leave {
    LinkDown,
    BadPeer(String),
}

/// Ports and networks: everything forwarding reads and writes.
struct Plane {
    ports: Vec<Option<Port>>,
    nets: Vec<Option<Net>>,
    /// (port slot, tx queue) with pushed, unpublished frames.
    dirty_tx: Vec<(usize, usize)>,
    /// Destinations that broke the ring protocol during this turn.
    leaving: Vec<(usize, Leave)>,
}

/// Buffers reused for every burst, allocated once.
struct Scratch {
    descs: Vec<Desc>,
    frames: Vec<RxFrame>,
    /// The first bytes of a frame, copied out to decide.
    head: [u8; PEEK],
    /// A whole packet: to or from the uplink.
    packet: Box<[u8]>,
    /// ARP and neighbour answers.
    answer: [u8; 128],
}

/// Where the bytes of a forwarded frame come from.
#[derive(Clone, Copy)]
enum Body<'a> {
    /// Chained descriptors of a peeked rx frame.
    Ring {
        regions: &'a [Arc<Region>],
        descs: &'a [Desc],
    },
    Local(&'a [u8]),
}

/// A frame's body as written to a destination: from byte `skip` on,
/// after a link header of our own (given apart: see [`Plane::push`]).
#[derive(Clone, Copy)]
struct Out<'a> {
    body: Body<'a>,
    skip: usize,
    /// The body's length (the source frame, `skip` included).
    body_len: usize,
}

impl<'a> Out<'a> {
    /// A frame of our own bytes, as is.
    fn local(b: &'a [u8]) -> Out<'a> {
        Out {
            body: Body::Local(b),
            skip: 0,
            body_len: b.len(),
        }
    }

    /// The frame's length behind a `head_len`-byte header.
    #[inline]
    fn len(&self, head_len: usize) -> usize {
        head_len + self.body_len - self.skip
    }

    /// Writes bytes `[at, at + n)` of the frame (`head`, then the body)
    /// into `dst` at `dst_off`.
    #[inline]
    fn fill(&self, head: &[u8], dst: &Region, mut dst_off: usize, mut at: usize, n: usize) {
        let end = at + n;
        if at < head.len() {
            let k = (head.len() - at).min(n);
            dst.write(dst_off, &head[at..at + k]);
            at += k;
            dst_off += k;
        }
        if at >= end {
            return;
        }
        let mut s = at - head.len() + self.skip;
        let mut left = end - at;
        match self.body {
            Body::Local(b) => {
                if let Some(src) = b.get(s..s + left) {
                    dst.write(dst_off, src);
                }
            }
            Body::Ring { regions, descs } => {
                let mut start = 0usize;
                for d in descs {
                    let l = d.length as usize;
                    if s < start + l {
                        let within = s - start;
                        let k = (l - within).min(left);
                        if let Some(r) = regions.get(d.region as usize) {
                            dst.copy_from_region(dst_off, r, d.offset as usize + within, k);
                        }
                        dst_off += k;
                        s += k;
                        left -= k;
                        if left == 0 {
                            break;
                        }
                    }
                    start += l;
                }
            }
        }
    }
}

/// Copies bytes `[from, from + out.len())` of a ring frame into `out`.
fn gather(regions: &[Arc<Region>], descs: &[Desc], from: usize, out: &mut [u8]) {
    let mut start = 0usize;
    let mut s = from;
    let mut o = 0usize;
    for d in descs {
        if o == out.len() {
            break;
        }
        let l = d.length as usize;
        if s < start + l {
            let within = s - start;
            let k = (l - within).min(out.len() - o);
            if let Some(r) = regions.get(d.region as usize) {
                r.read(d.offset as usize + within, &mut out[o..o + k]);
            }
            o += k;
            s += k;
        }
        start += l;
    }
}

impl Plane {
    fn port(&mut self, slot: usize) -> &mut Port {
        self.ports[slot].as_mut().expect("live slot")
    }

    /// Pushes `out` to port `dst`'s tx queue `q` (modulo its queues).
    /// Counts drops on the destination.
    #[inline]
    fn push(&mut self, dst: usize, q: usize, head: &[u8], out: &Out<'_>) {
        let Some(p) = self.ports[dst].as_mut() else {
            return;
        };
        let Some(c) = p.conn.as_mut() else {
            p.local.drop(DropReason::TxDown);
            p.dirty = true;
            return;
        };
        let n = c.a.conn.tx.len();
        if n == 0 {
            return;
        }
        let qi = if q < n { q } else { q % n };
        let txq = &mut c.a.conn.tx[qi];
        let was_pending = txq.has_pending();
        let r = txq.push(out.len(head.len()), |r, off, at, k| {
            out.fill(head, r, off, at, k)
        });
        p.book(
            r,
            (dst, qi),
            was_pending,
            &mut self.dirty_tx,
            &mut self.leaving,
        );
    }

    /// Delivers an IP packet (the body from `out.skip`) to port `dst`,
    /// adding an ethernet header for ethernet ports.
    #[inline]
    fn deliver_ip(&mut self, dst: usize, q: usize, first_byte: u8, out: &Out<'_>) {
        let Some(p) = self.ports[dst].as_ref() else {
            return;
        };
        if p.mode == Mode::Ethernet {
            let mut h = [0u8; ETH_HLEN];
            pkt::eth_header(
                &mut h,
                p.peer_mac.unwrap_or(pkt::BROADCAST),
                p.mac,
                pkt::ethertype_of(first_byte),
            );
            self.push(dst, q, &h, out);
        } else {
            self.push(dst, q, &[], out);
        }
    }

    fn src_ctx(&self, slot: usize) -> SrcCtx {
        let p = self.ports[slot].as_ref().expect("live slot");
        SrcCtx {
            mode: p.mode,
            net: p.net,
            peer_mac: p.peer_mac.map_or(u64::MAX, |m| {
                let mut b = [0u8; 8];
                b[..6].copy_from_slice(&m);
                u64::from_le_bytes(b)
            }),
        }
    }

    #[inline]
    fn next_hop(&self, slot: usize) -> Option<(usize, usize)> {
        self.ports[slot].as_ref()?.conn.as_ref()?.next_hop
    }

    /// Publishes every destination ring that got frames this turn.
    fn flush(&mut self) {
        for (slot, q) in self.dirty_tx.drain(..) {
            if let Some(p) = self.ports[slot].as_mut() {
                if let Some(c) = p.conn.as_mut() {
                    if let Some(txq) = c.a.conn.tx.get_mut(q) {
                        let (f, b) = txq.flush();
                        p.local.tx_packets += f;
                        p.local.tx_bytes += b;
                        p.dirty = true;
                    }
                }
            }
        }
    }

    /// Forwards one frame received on port `src`'s rx queue `q`.
    fn forward(
        &mut self,
        sc: &mut ScratchRefs<'_>,
        src: usize,
        q: usize,
        regions: &[Arc<Region>],
        descs: &[Desc],
        len: usize,
    ) {
        // The first 64 bytes (ethernet + IPv4/IPv6 headers) in one fixed
        // copy when the first buffer holds them; else gathered.
        let mut n = len.min(FAST_PEEK);
        let d0 = descs[0];
        let fixed = d0.length as usize >= n
            && regions.get(d0.region as usize).is_some_and(|r| {
                let h: &mut [u8; FAST_PEEK] = (&mut sc.head[..FAST_PEEK]).try_into().expect("size");
                r.read_fixed(d0.offset as usize, h)
            });
        if !fixed {
            gather(regions, descs, 0, &mut sc.head[..n]);
        }
        let (mode, net) = {
            let p = self.port(src);
            (p.mode, p.net)
        };
        let ip_off = if mode == Mode::Ethernet {
            if n < ETH_HLEN {
                self.port(src).local.drop(DropReason::Malformed);
                return;
            }
            self.learn(src, &sc.head[6..12]);
            match u16::from_be_bytes([sc.head[12], sc.head[13]]) {
                pkt::ETHERTYPE_IPV4 => ETH_HLEN,
                pkt::ETHERTYPE_IPV6 if n > 54 && sc.head[ETH_HLEN + 6] == pkt::PROTO_ICMPV6 => {
                    // Neighbour discovery needs more than the fast copy.
                    n = len.min(PEEK);
                    gather(regions, descs, 0, &mut sc.head[..n]);
                    if pkt::is_nd(&sc.head[ETH_HLEN..n]) {
                        self.neighbor_solicit(sc, src, q, n);
                        return;
                    }
                    ETH_HLEN
                }
                pkt::ETHERTYPE_IPV6 => ETH_HLEN,
                pkt::ETHERTYPE_ARP => {
                    self.arp(sc, src, q, n);
                    return;
                }
                _ => {
                    self.port(src).local.drop(DropReason::Ethertype);
                    return;
                }
            }
        } else {
            0
        };
        let ip = &sc.head[ip_off..n];
        let first = ip.first().copied().unwrap_or(0);
        let dst = match pkt::classify(ip) {
            IpClass::Unicast(k) => k,
            IpClass::Local => {
                self.port(src).local.drop(DropReason::NotRoutable);
                return;
            }
            IpClass::Malformed => {
                self.port(src).local.drop(DropReason::Malformed);
                return;
            }
        };
        let Some(netw) = self.nets[net].as_mut() else {
            return;
        };
        if let Some(to) = netw.lookup(dst) {
            let out = Out {
                body: Body::Ring { regions, descs },
                skip: ip_off,
                body_len: len,
            };
            self.deliver_ip(to, q, first, &out);
            return;
        }
        // Not a pod of the network: to the host, as a routed hop.
        let l = len - ip_off;
        let sent = match netw.uplink.as_mut() {
            None => Err(DropReason::NoRoute),
            Some(up) => {
                let buf = &mut sc.packet[..l];
                gather(regions, descs, ip_off, buf);
                if !pkt::decrement_ttl(buf) {
                    Err(DropReason::TtlExpired)
                } else {
                    match up.tun.send(buf) {
                        Ok(()) => {
                            up.local.tx_packets += 1;
                            up.local.tx_bytes += l as u64;
                            Ok(())
                        }
                        Err(e) => {
                            tracing::trace!(error = %e, "uplink write failed");
                            Err(DropReason::Uplink)
                        }
                    }
                }
            }
        };
        if let Err(r) = sent {
            self.port(src).local.drop(r);
        }
    }

    /// The common case, decided and written in fewer steps: a one-buffer
    /// frame (descriptor `d`, `len` bytes) from the port `ctx` describes, whose
    /// first [`FAST_PEEK`] bytes are read once into registers, carrying a
    /// unicast IP packet (from the pod's learned MAC, on ethernet) to a pod
    /// of the same mode. The decision reads the lanes in registers, nothing
    /// is staged in memory. False, having done nothing, for anything else:
    /// the general path ([`Plane::forward`]) takes it.
    #[inline]
    fn forward_lanes(
        &mut self,
        ctx: &SrcCtx,
        q: usize,
        regions: &[Arc<Region>],
        d: Desc,
        len: usize,
    ) -> bool {
        let off = d.offset as usize;
        let Some(region) = regions.get(d.region as usize) else {
            return false;
        };
        let Some(lanes) = region.read_lanes(off) else {
            return false;
        };
        let ethernet = ctx.mode == Mode::Ethernet;
        // Frames from a MAC not (yet) the learned one go the general way,
        // which learns it.
        if ethernet && (lanes[0] >> 48) as u64 & 0xffff_ffff_ffff != ctx.peer_mac {
            return false;
        }
        let Some(dst) = pkt::unicast_dst_in_lanes(&lanes, len, ethernet) else {
            return false;
        };
        let Some(to) = self.nets[ctx.net].as_mut().and_then(|n| n.lookup(dst)) else {
            return false;
        };
        self.forward_fast(ctx.mode, to, q, len, lanes, region, off)
    }

    /// Writes a one-buffer frame (at `src_off` in `src`, its first
    /// [`FAST_PEEK`] bytes read into `lanes`, already routed to port
    /// `dst`) between two ports of the same mode. Ethernet frames only
    /// change their addresses (pod MAC, memif MAC; the ethertype stays),
    /// IP packets nothing, so the first bytes are written as one block
    /// edited in registers and the rest (if any) copied region to region.
    /// False, having done nothing, when this is not that case (the caller
    /// takes the general path).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn forward_fast(
        &mut self,
        mode: Mode,
        dst: usize,
        q: usize,
        len: usize,
        mut lanes: [u128; 4],
        src: &Region,
        src_off: usize,
    ) -> bool {
        let Some(p) = self.ports[dst].as_mut() else {
            return false;
        };
        if p.mode != mode {
            return false;
        }
        let Some(c) = p.conn.as_mut() else {
            return false;
        };
        let n = c.a.conn.tx.len();
        if n == 0 {
            return false;
        }
        if len < FAST_PEEK {
            // The source buffer's bytes past the frame are another frame's
            // (another pod's, maybe): never carry them over.
            for (i, l) in lanes.iter_mut().enumerate() {
                let keep = len.saturating_sub(16 * i).min(16);
                *l &= if keep == 16 {
                    !0
                } else {
                    (1u128 << (8 * keep)) - 1
                };
            }
        }
        if mode == Mode::Ethernet {
            lanes[0] = (lanes[0] & !ETH_ADDRS_MASK) | p.eth_addrs;
        }
        let qi = if q < n { q } else { q % n };
        let txq = &mut c.a.conn.tx[qi];
        let was_pending = txq.has_pending();
        let pushed = txq.push_one(len, |r, off, room| {
            if room >= FAST_PEEK {
                r.write_lanes(off, &lanes);
            } else {
                let mut b = [0u8; FAST_PEEK];
                for (i, l) in lanes.iter().enumerate() {
                    b[16 * i..16 * i + 16].copy_from_slice(&l.to_le_bytes());
                }
                r.write(off, &b[..len]);
            }
            if len > FAST_PEEK {
                r.copy_from_region(off + FAST_PEEK, src, src_off + FAST_PEEK, len - FAST_PEEK);
            }
        });
        let r = match pushed {
            Ok(None) => return false,
            Ok(Some(x)) => Ok(x),
            Err(e) => Err(e),
        };
        p.book(
            r,
            (dst, qi),
            was_pending,
            &mut self.dirty_tx,
            &mut self.leaving,
        );
        true
    }

    /// Learns the pod's MAC from the source of its frame.
    #[inline]
    fn learn(&mut self, src: usize, smac: &[u8]) {
        let p = self.port(src);
        if pkt::is_unicast_mac(smac) && p.peer_mac.is_none_or(|m| m[..] != *smac) {
            let mut m = [0u8; 6];
            m.copy_from_slice(smac);
            tracing::debug!(key = p.key, mac = ?m, "learned the pod's MAC");
            p.set_peer_mac(Some(m));
        }
    }

    /// An ARP frame from an ethernet port: requests for anything but the
    /// pod's own addresses are answered with the port's MAC.
    fn arp(&mut self, sc: &mut ScratchRefs<'_>, src: usize, q: usize, n: usize) {
        let p = self.port(src);
        let r = match pkt::arp_request(&sc.head[ETH_HLEN..n]) {
            Some(r) if !p.ips.contains(&pkt::key_of(r.target_ip.into())) => r,
            _ => {
                p.local.drop(DropReason::Neighbor);
                return;
            }
        };
        let to = if pkt::is_unicast_mac(&r.sender_mac) {
            r.sender_mac
        } else {
            let mut m = [0u8; 6];
            m.copy_from_slice(&sc.head[6..12]);
            m
        };
        let len = pkt::arp_reply(&mut sc.answer[..], p.mac, to, &r);
        self.push(src, q, &[], &Out::local(&sc.answer[..len]));
    }

    /// Neighbour discovery from an ethernet port: solicitations for
    /// anything but the pod's own addresses (and not duplicate address
    /// detection) are answered with the port's MAC; the rest is consumed.
    fn neighbor_solicit(&mut self, sc: &mut ScratchRefs<'_>, src: usize, q: usize, n: usize) {
        let p = self.port(src);
        let s = match pkt::solicit(&sc.head[ETH_HLEN..n]) {
            Some(s) if s.src != [0; 16] && !p.ips.contains(&u128::from_be_bytes(s.target)) => s,
            _ => {
                p.local.drop(DropReason::Neighbor);
                return;
            }
        };
        let to = s.source_mac.unwrap_or_else(|| {
            let mut m = [0u8; 6];
            m.copy_from_slice(&sc.head[6..12]);
            m
        });
        let len = pkt::neighbor_advert(&mut sc.answer[..], p.mac, to, &s);
        self.push(src, q, &[], &Out::local(&sc.answer[..len]));
    }

    /// Packets the host sent into network `net`'s uplink: up to a burst.
    fn uplink_rx(&mut self, packet: &mut [u8], net: usize) -> usize {
        let mut done = 0;
        while done < BURST {
            let Some(n) = self.nets[net].as_mut() else {
                return done;
            };
            let Some(up) = n.uplink.as_mut() else {
                return done;
            };
            let len = match up.tun.recv(packet) {
                Ok(Some(len)) => len,
                Ok(None) => {
                    up.readable = false;
                    return done;
                }
                Err(e) => {
                    tracing::warn!(network = %n.name, error = %e, "uplink read failed");
                    up.readable = false;
                    return done;
                }
            };
            done += 1;
            up.local.rx_packets += 1;
            up.local.rx_bytes += len as u64;
            let pkt = &mut packet[..len];
            let to = match pkt::classify(pkt) {
                IpClass::Unicast(k) => match n.routes.get(&k) {
                    Some(&to) => to,
                    None => {
                        // Never back to the host: that would loop.
                        up.local.drop(DropReason::NoRoute);
                        continue;
                    }
                },
                IpClass::Local => {
                    up.local.drop(DropReason::NotRoutable);
                    continue;
                }
                IpClass::Malformed => {
                    up.local.drop(DropReason::Malformed);
                    continue;
                }
            };
            if !pkt::decrement_ttl(pkt) {
                up.local.drop(DropReason::TtlExpired);
                continue;
            }
            let first = pkt[0];
            self.deliver_ip(to, 0, first, &Out::local(pkt));
        }
        done
    }
}

/// The scratch buffers forwarding writes to, borrowed apart from the
/// descriptor list it reads.
struct ScratchRefs<'a> {
    head: &'a mut [u8; PEEK],
    packet: &'a mut [u8],
    answer: &'a mut [u8; 128],
}

pub(super) struct Worker {
    n: usize,
    on_bad_peer: OnBadPeer,
    plane: Plane,
    scratch: Scratch,
    by_key: HashMap<IfKey, usize>,
    net_by_name: HashMap<String, usize>,
}

/// epoll data for the worker's own wake-up fd.
const WAKE_TOKEN: u64 = u64::MAX;
/// A busy worker calls `epoll_wait` once in this many turns.
const EPOLL_EVERY: u32 = 64;
/// epoll data of an uplink: this bit and the network's slot.
const UPLINK_BIT: u64 = 1 << 62;

fn ring_token(slot: usize, ring: usize) -> u64 {
    ((slot as u64) << 16) | ring as u64
}

impl Worker {
    pub(super) fn new(n: usize, on_bad_peer: OnBadPeer) -> Worker {
        Worker {
            n,
            on_bad_peer,
            plane: Plane {
                ports: Vec::new(),
                nets: Vec::new(),
                dirty_tx: Vec::with_capacity(1024),
                leaving: Vec::new(),
            },
            scratch: Scratch {
                // A peek never holds more descriptors than the ring.
                descs: Vec::with_capacity(1 << MAX_LOG2_RING_SIZE),
                frames: Vec::with_capacity(BURST),
                head: [0; PEEK],
                packet: vec![0u8; 1 << 16].into_boxed_slice(),
                answer: [0; 128],
            },
            by_key: HashMap::new(),
            net_by_name: HashMap::new(),
        }
    }

    pub(super) fn run(mut self, wake: &EventFd, cmds: mpsc::Receiver<Cmd>) {
        let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(worker = self.n, error = %e, "cannot create epoll; worker stops");
                return;
            }
        };
        if let Err(e) = epoll.add(
            wake.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN),
        ) {
            tracing::error!(worker = self.n, error = %e, "cannot watch the wake fd; worker stops");
            return;
        }
        let mut events = [EpollEvent::empty(); 64];
        let mut spins: u32 = 0;
        loop {
            let busy = self
                .plane
                .ports
                .iter()
                .flatten()
                .any(|p| p.conn.as_ref().is_some_and(|c| !c.sleeping))
                || self
                    .plane
                    .nets
                    .iter()
                    .flatten()
                    .any(|n| n.uplink.as_ref().is_some_and(|u| u.readable));
            // Busy: look at the fds (commands, interrupts of sleeping
            // ports, uplinks) only every EPOLL_EVERY turns: the syscall
            // would otherwise cost more than a burst of frames.
            spins = spins.wrapping_add(1);
            let n = if busy && spins % EPOLL_EVERY != 0 {
                0
            } else {
                // Counters reach the control plane at least this often,
                // and always before the worker sleeps.
                self.publish_counters();
                while let Ok(c) = cmds.try_recv() {
                    if !self.command(&epoll, c) {
                        return;
                    }
                }
                let timeout = if busy {
                    EpollTimeout::ZERO
                } else {
                    EpollTimeout::NONE
                };
                match epoll.wait(&mut events, timeout) {
                    Ok(n) => n,
                    Err(nix::Error::EINTR) => 0,
                    Err(e) => {
                        tracing::error!(worker = self.n, error = %e, "epoll failed; worker stops");
                        return;
                    }
                }
            };
            for ev in &events[..n] {
                let t = ev.data();
                if t == WAKE_TOKEN {
                    let _ = wake.read();
                    while let Ok(c) = cmds.try_recv() {
                        if !self.command(&epoll, c) {
                            return;
                        }
                    }
                } else if t & UPLINK_BIT != 0 {
                    let net = (t & !UPLINK_BIT) as usize;
                    if let Some(Some(n)) = self.plane.nets.get_mut(net) {
                        if let Some(u) = n.uplink.as_mut() {
                            u.readable = true;
                        }
                    }
                } else {
                    self.ring_event((t >> 16) as usize, (t & 0xffff) as usize);
                }
            }
            for slot in 0..self.plane.ports.len() {
                let awake = self.plane.ports[slot]
                    .as_ref()
                    .and_then(|p| p.conn.as_ref())
                    .is_some_and(|c| !c.sleeping);
                if awake {
                    if let Err(e) = self.poll_port(slot) {
                        self.plane.leaving.push((slot, e));
                    }
                }
            }
            for net in 0..self.plane.nets.len() {
                let readable = self.plane.nets[net]
                    .as_ref()
                    .and_then(|n| n.uplink.as_ref())
                    .is_some_and(|u| u.readable);
                if readable {
                    self.plane.uplink_rx(&mut self.scratch.packet, net);
                    self.plane.flush();
                }
            }
            while let Some((slot, why)) = self.plane.leaving.pop() {
                self.leave(&epoll, slot, why);
            }
        }
    }

    /// Applies a control-plane command; false on shutdown.
    fn command(&mut self, epoll: &Epoll, c: Cmd) -> bool {
        match c {
            Cmd::AddPort(cfg) => self.add_port(epoll, *cfg),
            Cmd::RemovePort(key) => self.remove_port(epoll, key),
            Cmd::Connect(a, done) => {
                self.connect(epoll, *a);
                let _ = done.send(());
            }
            Cmd::Disconnect(key) => {
                if let Some(&slot) = self.by_key.get(&key) {
                    self.drop_conn(epoll, slot);
                }
            }
            Cmd::AddUplink {
                network,
                tun,
                counters,
            } => {
                let net = self.net(&network);
                if let Err(e) = epoll.add(
                    tun.fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, UPLINK_BIT | net as u64),
                ) {
                    tracing::error!(network, error = %e, "cannot watch the uplink");
                }
                if let Some(n) = self.plane.nets[net].as_mut() {
                    n.uplink = Some(Uplink {
                        tun,
                        counters,
                        local: Local::default(),
                        readable: true,
                    });
                }
            }
            Cmd::RemoveUplink { network, done } => {
                if let Some(&net) = self.net_by_name.get(&network) {
                    self.publish_counters();
                    if let Some(n) = self.plane.nets[net].as_mut() {
                        if let Some(u) = n.uplink.take() {
                            let _ = epoll.delete(u.tun.fd());
                        }
                    }
                    self.gc_net(net);
                }
                let _ = done.send(());
            }
            Cmd::Shutdown => return false,
        }
        true
    }

    fn net(&mut self, name: &str) -> usize {
        if let Some(&i) = self.net_by_name.get(name) {
            return i;
        }
        let net = Net {
            name: name.to_string(),
            routes: Routes::default(),
            last: (0, 0),
            uplink: None,
            ports: 0,
        };
        let i = match self.plane.nets.iter().position(Option::is_none) {
            Some(i) => {
                self.plane.nets[i] = Some(net);
                i
            }
            None => {
                self.plane.nets.push(Some(net));
                self.plane.nets.len() - 1
            }
        };
        self.net_by_name.insert(name.to_string(), i);
        i
    }

    /// Forgets a network with neither ports nor uplink.
    fn gc_net(&mut self, net: usize) {
        let empty = self.plane.nets[net]
            .as_ref()
            .is_some_and(|n| n.ports == 0 && n.uplink.is_none());
        if empty {
            let n = self.plane.nets[net].take().expect("checked");
            self.net_by_name.remove(&n.name);
        }
    }

    fn add_port(&mut self, epoll: &Epoll, cfg: PortConfig) {
        self.remove_port(epoll, cfg.key);
        let net = self.net(&cfg.network);
        let port = Port {
            key: cfg.key,
            net,
            mode: cfg.mode,
            ips: cfg.ips.iter().map(|ip| pkt::key_of(*ip)).collect(),
            mac: cfg.mac,
            peer_mac: None,
            eth_addrs: eth_addrs(pkt::BROADCAST, cfg.mac),
            counters: cfg.counters,
            local: Local::default(),
            dirty: false,
            conn: None,
        };
        let slot = match self.plane.ports.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.plane.ports.push(None);
                self.plane.ports.len() - 1
            }
        };
        let n = self.plane.nets[net].as_mut().expect("just made");
        n.ports += 1;
        for ip in &port.ips {
            if let Some(old) = n.set_route(*ip, Some(slot)) {
                tracing::warn!(network = %n.name, key = cfg.key, other_slot = old,
                    "address already held by another port of the network; the newest wins");
            }
        }
        self.plane.ports[slot] = Some(port);
        self.by_key.insert(cfg.key, slot);
        tracing::debug!(worker = self.n, key = cfg.key, network = %cfg.network, slot, "port joins the worker");
    }

    fn remove_port(&mut self, epoll: &Epoll, key: IfKey) {
        let Some(slot) = self.by_key.remove(&key) else {
            return;
        };
        self.drop_conn(epoll, slot);
        self.publish_counters();
        let Some(port) = self.plane.ports[slot].take() else {
            return;
        };
        self.plane.dirty_tx.retain(|(s, _)| *s != slot);
        let net = port.net;
        if let Some(n) = self.plane.nets[net].as_mut() {
            n.ports -= 1;
            for ip in &port.ips {
                if n.routes.get(ip) == Some(&slot) {
                    n.set_route(*ip, None);
                    // Another port of the network holding it takes over.
                    let heir = self.plane.ports.iter().enumerate().find_map(|(i, p)| {
                        p.as_ref()
                            .filter(|p| p.net == net && p.ips.contains(ip))
                            .map(|_| i)
                    });
                    if let Some(h) = heir {
                        n.set_route(*ip, Some(h));
                    }
                }
            }
        }
        self.gc_net(net);
    }

    fn connect(&mut self, epoll: &Epoll, a: Attached) {
        let Some(&slot) = self.by_key.get(&a.key) else {
            tracing::warn!(
                worker = self.n,
                key = a.key,
                "connection for a removed port; dropped"
            );
            return;
        };
        self.drop_conn(epoll, slot);
        for (r, q) in a.conn.rx.iter().enumerate() {
            if let Err(e) = epoll.add(
                q.event_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, ring_token(slot, r)),
            ) {
                tracing::warn!(key = a.key, ring = r, error = %e, "cannot watch a ring's eventfd");
            }
            // Start polling; interrupt and adaptive ports unmask when idle.
            q.set_interrupts(false);
        }
        tracing::debug!(worker = self.n, key = a.key, rx_mode = %a.rx_mode, "interface joins the worker");
        let p = self.plane.port(slot);
        p.set_peer_mac(None);
        p.conn = Some(Conn {
            a,
            idle_polls: 0,
            sleeping: false,
            next_hop: None,
        });
    }

    fn drop_conn(&mut self, epoll: &Epoll, slot: usize) {
        let Some(p) = self.plane.ports[slot].as_mut() else {
            return;
        };
        if let Some(c) = p.conn.take() {
            for q in &c.a.conn.rx {
                // The fd may already be closed by the peer side; ignore.
                let _ = epoll.delete(q.event_fd());
            }
            tracing::debug!(worker = self.n, key = p.key, "interface leaves the worker");
        }
        self.plane.dirty_tx.retain(|(s, _)| *s != slot);
    }

    fn leave(&mut self, epoll: &Epoll, slot: usize, why: Leave) {
        let Some((key, id)) = self.plane.ports[slot]
            .as_ref()
            .and_then(|p| p.conn.as_ref().map(|c| (p.key, c.a.conn.id)))
        else {
            return;
        };
        self.drop_conn(epoll, slot);
        match why {
            Leave::LinkDown => {
                tracing::debug!(
                    worker = self.n,
                    key,
                    "link down; interface leaves the worker"
                )
            }
            Leave::BadPeer(reason) => {
                tracing::warn!(worker = self.n, key, %reason, "bad memif peer; interface leaves the worker");
                (self.on_bad_peer)(key, id, reason);
            }
        }
    }

    fn ring_event(&mut self, slot: usize, ring: usize) {
        let Some(Some(p)) = self.plane.ports.get_mut(slot) else {
            return;
        };
        let Some(c) = p.conn.as_mut() else {
            return;
        };
        if let Some(q) = c.a.conn.rx.get(ring) {
            let n = q.ack_interrupt();
            if let Some(cnt) = c.a.rings.s2m_interrupts.get(ring) {
                cnt.fetch_add(n, Ordering::Relaxed);
            }
        }
        if c.sleeping {
            c.sleeping = false;
            c.idle_polls = 0;
            if c.a.rx_mode == RxMode::Adaptive {
                // Busy again: poll without interrupts.
                for q in &c.a.conn.rx {
                    q.set_interrupts(false);
                }
            }
        }
    }

    /// One turn on one port: a burst from each rx ring, forwarded.
    fn poll_port(&mut self, slot: usize) -> Result<(), Leave> {
        let p = self.plane.port(slot);
        let c = p.conn.as_mut().expect("awake ports are connected");
        if !c.a.conn.link.is_up() {
            return Err(Leave::LinkDown);
        }
        // Take the rx queues out so forwarding may borrow any port's tx,
        // this one's included (hairpin).
        let mut rxqs = std::mem::take(&mut c.a.conn.rx);
        let mut got = 0usize;
        let mut result = Ok(());
        let Scratch {
            descs,
            frames,
            head,
            packet,
            answer,
        } = &mut self.scratch;
        let mut refs = ScratchRefs {
            head,
            packet,
            answer,
        };
        for (qi, q) in rxqs.iter_mut().enumerate() {
            let n = match q.peek(BURST, descs, frames) {
                Ok(n) => n,
                Err(e) => {
                    result = Err(Leave::BadPeer(format!("bad descriptor: {e}")));
                    break;
                }
            };
            if n == 0 {
                continue;
            }
            got += n;
            if let Some((to, tq)) = self.plane.next_hop(slot) {
                if let Some(t) = self.plane.ports[to]
                    .as_ref()
                    .and_then(|p| p.conn.as_ref())
                    .and_then(|c| c.a.conn.tx.get(tq))
                {
                    t.prefetch_burst(n);
                }
            }
            let regions: &[Arc<Region>] = q.regions();
            let mut bytes = 0u64;
            // Start fetching every frame's first bytes (written by the
            // other core) before deciding on the first.
            for f in frames.iter() {
                let d = descs[f.first as usize];
                if let Some(r) = regions.get(d.region as usize) {
                    r.prefetch(d.offset as usize);
                }
            }
            let mut ctx = self.plane.src_ctx(slot);
            for f in frames.iter() {
                bytes += f.len as u64;
                let len = f.len as usize;
                if f.count == 1
                    && self
                        .plane
                        .forward_lanes(&ctx, qi, regions, descs[f.first as usize], len)
                {
                    continue;
                }
                let d = &descs[f.first as usize..(f.first + f.count) as usize];
                self.plane.forward(&mut refs, slot, qi, regions, d, len);
                // It may have learned the pod's MAC.
                ctx = self.plane.src_ctx(slot);
            }
            q.release();
            let hop = self.plane.dirty_tx.first().copied();
            let p = self.plane.port(slot);
            p.local.rx_packets += n as u64;
            p.local.rx_bytes += bytes;
            p.dirty = true;
            if let Some(c) = p.conn.as_mut() {
                c.next_hop = hop;
            }
            self.plane.flush();
        }
        let p = self.plane.port(slot);
        let c = p.conn.as_mut().expect("still connected");
        c.a.conn.rx = rxqs;
        if result.is_err() {
            c.a.counters.errors.fetch_add(1, Ordering::Relaxed);
            return result;
        }
        if got > 0 {
            c.idle_polls = 0;
            return Ok(());
        }
        c.idle_polls = c.idle_polls.saturating_add(1);
        let sleep = match c.a.rx_mode {
            RxMode::Polling => false,
            RxMode::Interrupt => true,
            RxMode::Adaptive => c.idle_polls >= ADAPTIVE_IDLE_POLLS,
        };
        if sleep {
            // Unmask, then look again: a frame published between the last
            // poll and the unmask raised no interrupt.
            for q in &c.a.conn.rx {
                q.set_interrupts(true);
            }
            let late =
                c.a.conn
                    .rx
                    .iter()
                    .map(|q| q.pending().unwrap_or(1))
                    .any(|n| n > 0);
            if !late {
                c.sleeping = true;
            } else if c.a.rx_mode == RxMode::Adaptive {
                for q in &c.a.conn.rx {
                    q.set_interrupts(false);
                }
            }
        }
        Ok(())
    }

    /// Adds every port's and uplink's pending counts to the shared
    /// counters.
    fn publish_counters(&mut self) {
        for p in self.plane.ports.iter_mut().flatten() {
            if !p.dirty {
                continue;
            }
            p.dirty = false;
            let l = std::mem::take(&mut p.local);
            let c = &p.counters;
            add(&c.rx_packets, l.rx_packets);
            add(&c.rx_bytes, l.rx_bytes);
            add(&c.tx_packets, l.tx_packets);
            add(&c.tx_bytes, l.tx_bytes);
            for (a, n) in c.drops.iter().zip(l.drops) {
                add(a, n);
            }
        }
        for n in self.plane.nets.iter_mut().flatten() {
            if let Some(u) = n.uplink.as_mut() {
                let l = std::mem::take(&mut u.local);
                let c = &u.counters;
                add(&c.rx_packets, l.rx_packets);
                add(&c.rx_bytes, l.rx_bytes);
                add(&c.tx_packets, l.tx_packets);
                add(&c.tx_bytes, l.tx_bytes);
                for (a, n) in c.drops.iter().zip(l.drops) {
                    add(a, n);
                }
            }
        }
    }
}

#[inline]
fn add(a: &std::sync::atomic::AtomicU64, n: u64) {
    if n > 0 {
        a.fetch_add(n, Ordering::Relaxed);
    }
}
