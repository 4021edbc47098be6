//! Forwarding: the ports and networks of a worker ([`Plane`]) and what
//! happens to each frame of a burst. A frame is decided on its first bytes
//! (the common case in registers: [`Plane::forward_run`]) and copied
//! once, straight from the sender's buffers into the receiver's; frames
//! for the host are written to the network's uplink, and what the host
//! sends is delivered from it ([`Plane::uplink_rx`]).

use std::sync::Arc;

use super::counters;
use super::counters::DropReason;
use super::port::{Leave, Port, SrcCtx, ETH_ADDRS_MASK};
use super::table::{Network, Remote};
use super::underlay::Underlay;
use super::BURST;
use crate::mac::Mac;
use crate::memif::queue::{MasterTx, Pushed, RxFrame, RxFrames};
use crate::memif::shm::{Desc, Region};
use crate::memif::wire::Mode;
use crate::packet::decide::{self, IpClass};
use crate::packet::{self, vxlan, IpKey, ETH_HLEN, PEEK};
use std::collections::HashMap;

/// Bytes of a frame read in one fixed-size copy: ethernet and an IPv6
/// header, or ethernet and ARP.
pub(super) const FAST_PEEK: usize = 64;

/// The tx queue, of a destination's `n`, that frames received on rx queue
/// `q` go out on: the same index, modulo `n`. None without tx queues.
#[inline]
fn tx_queue(q: usize, n: usize) -> Option<usize> {
    match n {
        0 => None,
        _ if q < n => Some(q),
        _ => Some(q % n),
    }
}

/// Where [`Plane::forward_run`] writes the frames for one destination
/// address: the route's port and its tx queue, found once for a run of
/// frames.
struct Hop<'p> {
    key: IpKey,
    to: usize,
    qi: usize,
    eth_addrs: u128,
    txq: &'p mut MasterTx,
}

impl<'p> Hop<'p> {
    /// Port `to`'s tx queue `q` (modulo its queues), for frames of `mode`
    /// to `key`. None when the port is gone, of another mode, or not
    /// connected (the general path decides what then).
    #[inline]
    fn to(
        ports: &'p mut [Option<Port>],
        to: usize,
        q: usize,
        mode: Mode,
        key: IpKey,
    ) -> Option<Hop<'p>> {
        let p = ports.get_mut(to)?.as_mut()?;
        if p.mode != mode {
            return None;
        }
        let eth_addrs = p.eth_addrs;
        let tx = &mut p.conn.as_mut()?.a.conn.tx;
        let qi = tx_queue(q, tx.len())?;
        Some(Hop {
            key,
            to,
            qi,
            eth_addrs,
            txq: &mut tx[qi],
        })
    }
}

/// Ports and networks: everything forwarding reads and writes.
pub(super) struct Plane {
    pub(super) ports: Vec<Option<Port>>,
    pub(super) nets: Vec<Option<Network>>,
    /// (port slot, tx queue) with pushed, unpublished frames.
    pub(super) dirty_tx: Vec<(usize, usize)>,
    /// Destinations that broke the ring protocol during this turn.
    pub(super) leaving: Vec<(usize, Leave)>,
    /// The underlay, when this node carries networks to others.
    pub(super) underlay: Option<Underlay>,
    /// The worker's networks by VNI (for what the underlay brings).
    pub(super) vni_nets: HashMap<u32, usize>,
}

/// Buffers reused for every burst, allocated once.
pub(super) struct Scratch {
    /// A burst's descriptor copies (as many as the largest ring holds).
    pub(super) descs: Box<[Desc]>,
    /// The first bytes of a frame, copied out to decide.
    pub(super) head: [u8; PEEK],
    /// A whole packet: to or from the uplink.
    pub(super) packet: Box<[u8]>,
    /// ARP and neighbour answers.
    pub(super) answer: [u8; 128],
}

/// Where the bytes of a forwarded frame come from.
#[derive(Clone, Copy)]
pub(super) enum Body<'a> {
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
pub(super) struct Out<'a> {
    pub(super) body: Body<'a>,
    pub(super) skip: usize,
    /// The body's length (the source frame, `skip` included).
    pub(super) body_len: usize,
}

impl<'a> Out<'a> {
    /// A frame of our own bytes, as is.
    pub(super) fn local(b: &'a [u8]) -> Out<'a> {
        Out {
            body: Body::Local(b),
            skip: 0,
            body_len: b.len(),
        }
    }

    /// The frame's length behind a `head_len`-byte header.
    #[inline]
    pub(super) fn len(&self, head_len: usize) -> usize {
        head_len + self.body_len - self.skip
    }

    /// Writes bytes `[at, at + n)` of the frame (`head`, then the body)
    /// into `dst` at `dst_off`.
    #[inline]
    pub(super) fn fill(
        &self,
        head: &[u8],
        dst: &Region,
        mut dst_off: usize,
        mut at: usize,
        n: usize,
    ) {
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
pub(super) fn gather(regions: &[Arc<Region>], descs: &[Desc], from: usize, out: &mut [u8]) {
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
    pub(super) fn port(&mut self, slot: usize) -> &mut Port {
        self.ports[slot].as_mut().expect("live slot")
    }

    /// Pushes `out` to port `dst`'s tx queue `q` (modulo its queues).
    /// Counts drops on the destination.
    #[inline]
    pub(super) fn push(&mut self, dst: usize, q: usize, head: &[u8], out: &Out<'_>) {
        let Some(p) = self.ports[dst].as_mut() else {
            return;
        };
        let Some(c) = p.conn.as_mut() else {
            p.local.drop(DropReason::TxDown);
            p.dirty = true;
            return;
        };
        let Some(qi) = tx_queue(q, c.a.conn.tx.len()) else {
            return;
        };
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
    pub(super) fn deliver_ip(&mut self, dst: usize, q: usize, first_byte: u8, out: &Out<'_>) {
        let Some(p) = self.ports[dst].as_ref() else {
            return;
        };
        if p.mode == Mode::Ethernet {
            let mut h = [0u8; ETH_HLEN];
            packet::eth_header_into(
                &mut h,
                p.peer_mac.unwrap_or(Mac::BROADCAST),
                p.mac,
                packet::ethertype_of(first_byte),
            );
            self.push(dst, q, &h, out);
        } else {
            self.push(dst, q, &[], out);
        }
    }

    pub(super) fn src_ctx(&self, slot: usize) -> SrcCtx {
        let p = self.ports[slot].as_ref().expect("live slot");
        SrcCtx {
            mode: p.mode,
            net: p.net,
            peer_mac: p.peer_mac.map_or(u64::MAX, |m| {
                let mut b = [0u8; 8];
                b[..6].copy_from_slice(&m.0);
                u64::from_le_bytes(b)
            }),
        }
    }

    #[inline]
    pub(super) fn next_hop(&self, slot: usize) -> Option<(usize, usize)> {
        self.ports[slot].as_ref()?.conn.as_ref()?.next_hop
    }

    /// Publishes every destination ring that got frames this turn.
    pub(super) fn flush(&mut self) {
        for (slot, q) in self.dirty_tx.drain(..) {
            if let Some(p) = self.ports[slot].as_mut() {
                if let Some(c) = p.conn.as_mut() {
                    if let Some(txq) = c.a.conn.tx.get_mut(q) {
                        let (f, b) = txq.flush();
                        p.local.tx_packets += f;
                        p.local.tx_bytes += b;
                        // Interrupts towards the pod, for `show memif`.
                        if let Some(cnt) = c.a.rings.m2s_interrupts.get(q) {
                            cnt.store(txq.stats().interrupts, std::sync::atomic::Ordering::Relaxed);
                        }
                        p.dirty = true;
                    }
                }
            }
        }
    }

    /// Forwards one frame received on port `src`'s rx queue `q`.
    pub(super) fn forward(
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
                packet::ETHERTYPE_IPV4 => ETH_HLEN,
                packet::ETHERTYPE_IPV6
                    if n > 54 && sc.head[ETH_HLEN + 6] == packet::PROTO_ICMPV6 =>
                {
                    // Neighbour discovery needs more than the fast copy.
                    n = len.min(PEEK);
                    gather(regions, descs, 0, &mut sc.head[..n]);
                    if decide::is_nd(&sc.head[ETH_HLEN..n]) {
                        self.neighbor_solicit(sc, src, q, n);
                        return;
                    }
                    ETH_HLEN
                }
                packet::ETHERTYPE_IPV6 => ETH_HLEN,
                packet::ETHERTYPE_ARP => {
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
        let dst = match decide::classify(ip) {
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
        if let Some(&r) = netw.remotes.get(&dst) {
            let (mode, head) = (self.port(src).mode, &sc.head[ip_off..n]);
            let flow = vxlan::flow_hash(head);
            let why = self.encap(net, r, mode, regions, descs, len, ip_off, first, flow);
            if let Err(why) = why {
                self.port(src).local.drop(why);
                if why == DropReason::TooBig {
                    self.too_big(sc, src, q, regions, descs, len - ip_off, ip_off);
                }
            }
            return;
        }
        // Not a pod of the network: to the host, as a routed hop.
        let l = len - ip_off;
        let sent = match netw.uplink.as_mut() {
            None => Err(DropReason::NoRoute),
            Some(up) => {
                let buf = &mut sc.packet[..l];
                gather(regions, descs, ip_off, buf);
                if !decide::decrement_ttl(buf) {
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

    /// The common case, decided and written in fewer steps, for a run of
    /// a burst's frames: one-buffer frames from the port `ctx` describes
    /// (rx queue `q`), whose first [`FAST_PEEK`] bytes are read once into
    /// registers, carrying unicast IP packets (from the pod's learned MAC,
    /// on ethernet) to pods of the same mode. The decision reads the lanes
    /// in registers, nothing is staged in memory. A frame for the same
    /// destination as the one before it (the usual burst) reuses that
    /// one's route and destination queue, found once. Takes frames from
    /// `frames` until one is not that case and returns it, untouched, for
    /// the general path ([`Plane::forward`]); None when the burst is done.
    pub(super) fn forward_run<'d>(
        &mut self,
        ctx: &SrcCtx,
        q: usize,
        regions: &[Arc<Region>],
        frames: &mut RxFrames<'d>,
    ) -> Option<RxFrame<'d>> {
        let Plane {
            ports,
            nets,
            dirty_tx,
            leaving,
            ..
        } = self;
        let Some(net) = nets.get_mut(ctx.net).and_then(|n| n.as_mut()) else {
            return frames.next();
        };
        let ethernet = ctx.mode == Mode::Ethernet;
        let mut hop: Option<Hop<'_>> = None;
        for f in frames {
            let [d] = f.descs else {
                return Some(f);
            };
            let (len, off) = (f.len, d.offset as usize);
            let Some(region) = regions.get(d.region as usize) else {
                return Some(f);
            };
            let Some(mut lanes) = region.read_lanes(off) else {
                return Some(f);
            };
            // Frames from a MAC not (yet) the learned one go the general
            // way, which learns it.
            if ethernet && (lanes[0] >> 48) as u64 & 0xffff_ffff_ffff != ctx.peer_mac {
                return Some(f);
            }
            let Some(dst) = decide::unicast_dst_in_lanes(&lanes, len, ethernet) else {
                return Some(f);
            };
            let h = match hop {
                Some(ref mut h) if h.key == dst => h,
                _ => {
                    hop = None;
                    let Some(to) = net.lookup(dst) else {
                        return Some(f);
                    };
                    let Some(h) = Hop::to(ports, to, q, ctx.mode, dst) else {
                        return Some(f);
                    };
                    hop.insert(h)
                }
            };
            if len < FAST_PEEK {
                // The source buffer's bytes past the frame are another
                // frame's (another pod's, maybe): never carry them over.
                for (i, l) in lanes.iter_mut().enumerate() {
                    let keep = len.saturating_sub(16 * i).min(16);
                    *l &= if keep == 16 {
                        !0
                    } else {
                        (1u128 << (8 * keep)) - 1
                    };
                }
            }
            // Ethernet frames only change their addresses (pod MAC, memif
            // MAC; the ethertype stays), IP packets nothing: the first
            // bytes are written as one block edited in registers, the rest
            // (if any) copied region to region.
            if ethernet {
                lanes[0] = (lanes[0] & !ETH_ADDRS_MASK) | h.eth_addrs;
            }
            let was_pending = h.txq.has_pending();
            let pushed = h.txq.push_one(len, |r, o, room| {
                if room >= FAST_PEEK {
                    r.write_lanes(o, &lanes);
                } else {
                    let mut b = [0u8; FAST_PEEK];
                    for (i, l) in lanes.iter().enumerate() {
                        b[16 * i..16 * i + 16].copy_from_slice(&l.to_le_bytes());
                    }
                    r.write(o, &b[..len]);
                }
                if len > FAST_PEEK {
                    r.copy_from_region(o + FAST_PEEK, region, off + FAST_PEEK, len - FAST_PEEK);
                }
            });
            let r = match pushed {
                Ok(Some(Pushed::Queued)) => {
                    if !was_pending {
                        dirty_tx.push((h.to, h.qi));
                    }
                    continue;
                }
                // A chain is needed: the general path writes one.
                Ok(None) => return Some(f),
                Ok(Some(r)) => Ok(r),
                Err(e) => Err(e),
            };
            // A drop or a broken ring: booked on the destination, whose
            // queue is found again for the next frame.
            let to = h.to;
            hop = None;
            if let Some(p) = ports[to].as_mut() {
                p.book_failed(r, to, leaving);
            }
        }
        None
    }

    /// Puts a frame for a pod on another node (`r`, in network `net`) into
    /// the underlay's send batch, behind its VXLAN header: an ethernet
    /// port's frame as it is but for its destination MAC (the remote
    /// memif's), an ip port's packet behind the fixed Ethernet header of
    /// ip networks. The TTL is kept: a network is one link.
    #[allow(clippy::too_many_arguments)]
    fn encap(
        &mut self,
        net: usize,
        r: Remote,
        mode: Mode,
        regions: &[Arc<Region>],
        descs: &[Desc],
        len: usize,
        ip_off: usize,
        first: u8,
        flow: u32,
    ) -> Result<(), DropReason> {
        let Some(ul) = self.underlay.as_mut() else {
            return Err(DropReason::NoRoute);
        };
        let Some(netw) = self.nets[net].as_ref() else {
            return Err(DropReason::NoRoute);
        };
        let ip_len = len - ip_off;
        if ip_len > ul.cfg.max_inner_ip() {
            if let Some(p) = netw.peers.get(r.peer) {
                counters::add(&p.counters.drops, 1);
            }
            return Err(DropReason::TooBig);
        }
        let peer = &netw.peers[r.peer];
        let vni = netw.vni;
        let buf = ul.slot();
        let mut at = vxlan::header_into(buf, vni);
        let dst = r.mac.map_or([2, 0, 0, 0, 0, 2], |m| m.0);
        if mode == Mode::Ethernet {
            // The pod's frame: its source MAC and ethertype stay.
            gather(regions, descs, 0, &mut buf[at..at + len]);
            buf[at..at + 6].copy_from_slice(&dst);
            at += len;
        } else {
            buf[at..at + 12].copy_from_slice(&vxlan::IP_NETWORK_ETH);
            buf[at..at + 6].copy_from_slice(&dst);
            buf[at + 12..at + 14].copy_from_slice(&packet::ethertype_of(first).to_be_bytes());
            at += ETH_HLEN;
            gather(regions, descs, 0, &mut buf[at..at + len]);
            at += len;
        }
        ul.queue(at, peer.addr, flow, &peer.counters);
        Ok(())
    }

    /// Tells the pod on port `src` that its IP packet (`ip_len` bytes from
    /// `ip_off` in the frame) is too long for the underlay: ICMP
    /// "fragmentation needed" or ICMPv6 "packet too big" with the largest
    /// IP packet the underlay carries, quoting the packet's start, back on
    /// the queue it came by. Nothing when the RFCs forbid an answer (see
    /// [`packet::too_big_in_place`]); the drop is counted either way.
    #[allow(clippy::too_many_arguments)]
    fn too_big(
        &mut self,
        sc: &mut ScratchRefs<'_>,
        src: usize,
        q: usize,
        regions: &[Arc<Region>],
        descs: &[Desc],
        ip_len: usize,
        ip_off: usize,
    ) {
        let Some(mtu) = self.underlay.as_ref().map(|u| u.cfg.max_inner_ip()) else {
            return;
        };
        let first = sc.head.get(ip_off).copied().unwrap_or(0);
        let quoted = ip_len.min(packet::too_big_quote(first >> 4 == 6));
        let room = packet::TOO_BIG_ROOM;
        gather(regions, descs, ip_off, &mut sc.packet[room..room + quoted]);
        if let Some(start) = packet::too_big_in_place(&mut sc.packet[..], quoted, mtu) {
            let error = &sc.packet[start..room + quoted];
            self.deliver_ip(src, q, error[0], &Out::local(error));
        }
    }

    /// Sends the underlay's batch, if any.
    #[inline]
    pub(super) fn flush_underlay(&mut self) {
        if let Some(u) = self.underlay.as_mut() {
            if u.has_pending() {
                u.flush();
            }
        }
    }

    /// What the underlay brought: up to a batch of VXLAN packets, each
    /// delivered to the local pod that owns its inner destination in the
    /// network of its VNI, or dropped and counted (never sent on: what
    /// comes from the underlay is for this node's pods). Returns how many
    /// datagrams it took.
    pub(super) fn underlay_rx(&mut self) -> usize {
        let Some(mut ul) = self.underlay.take() else {
            return 0;
        };
        let n = ul.receive();
        for i in 0..n {
            let (p, from) = ul.received(i);
            if p.is_empty() {
                ul.drop_rx(DropReason::VxlanMalformed);
                continue;
            }
            ul.count_rx(p.len());
            let vni = match vxlan::parse(p) {
                Ok(v) => v,
                Err(_) => {
                    ul.drop_rx(DropReason::VxlanMalformed);
                    continue;
                }
            };
            let Some(&net) = self.vni_nets.get(&vni) else {
                ul.drop_rx(DropReason::UnknownVni);
                continue;
            };
            let Some(netw) = self.nets[net].as_mut() else {
                ul.drop_rx(DropReason::UnknownVni);
                continue;
            };
            // Per peer: by source address (the port is a flow's).
            if let Some(peer) = from.and_then(|a| netw.peers.iter().find(|p| p.addr.ip() == a)) {
                counters::add(&peer.counters.rx_packets, 1);
                counters::add(&peer.counters.rx_bytes, p.len() as u64);
            }
            let inner = &p[vxlan::VXLAN_HLEN..];
            let et = u16::from_be_bytes([inner[12], inner[13]]);
            let ip = &inner[ETH_HLEN..];
            let ok_type = match ip.first().map(|b| b >> 4) {
                Some(4) => et == packet::ETHERTYPE_IPV4,
                Some(6) => et == packet::ETHERTYPE_IPV6,
                _ => false,
            };
            if !ok_type {
                ul.drop_rx(DropReason::Ethertype);
                continue;
            }
            let to = match decide::classify(ip) {
                IpClass::Unicast(k) => match netw.lookup(k) {
                    Some(to) => to,
                    None => {
                        ul.drop_rx(DropReason::NoRoute);
                        continue;
                    }
                },
                IpClass::Local => {
                    ul.drop_rx(DropReason::NotRoutable);
                    continue;
                }
                IpClass::Malformed => {
                    ul.drop_rx(DropReason::Malformed);
                    continue;
                }
            };
            let q = vxlan::flow_hash(ip) as usize;
            self.deliver_ip(to, q, ip[0], &Out::local(ip));
        }
        self.underlay = Some(ul);
        n
    }

    /// Packets the host sent into network `net`'s uplink: up to a burst.
    pub(super) fn uplink_rx(&mut self, packet: &mut [u8], net: usize) -> usize {
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
            let to = match decide::classify(pkt) {
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
            if !decide::decrement_ttl(pkt) {
                up.local.drop(DropReason::TtlExpired);
                continue;
            }
            // The pod's queues share the host's flows by the same flow
            // hash the underlay uses: one flow stays on one queue.
            let first = pkt[0];
            let q = vxlan::flow_hash(pkt) as usize;
            self.deliver_ip(to, q, first, &Out::local(pkt));
        }
        done
    }
}

/// The scratch buffers forwarding writes to, borrowed apart from the
/// descriptor list it reads.
pub(super) struct ScratchRefs<'a> {
    pub(super) head: &'a mut [u8; PEEK],
    pub(super) packet: &'a mut [u8],
    pub(super) answer: &'a mut [u8; 128],
}
