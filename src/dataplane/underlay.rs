//! The underlay: memifd's own UDP sockets on the node's underlay address,
//! carrying networks between nodes as VXLAN (see [`crate::packet::vxlan`]).
//!
//! **Sockets.** Each worker has one receive socket bound to the underlay
//! address and port (4789 unless configured; `SO_REUSEPORT` across the
//! workers, with a classic BPF program that hands a packet to the socket
//! of worker `VNI % workers`, which is the worker that owns that VNI's
//! network) and [`TX_PORTS`] send sockets bound to the same address on
//! ephemeral ports: a frame leaves from the one its inner flow hashes to,
//! so the outer UDP source port is a hash of the inner flow (RSS and ECMP
//! on the way spread flows; one flow keeps its order). The kernel builds
//! the outer IP and UDP headers and their checksums.
//!
//! **Batches.** Frames for remote pods are copied once, behind their
//! VXLAN header, into a worker's send batch while a burst is forwarded,
//! and the batch leaves in one `sendmmsg` per send socket when the burst
//! ends. Received packets come [`BATCH`] at a time from `recvmmsg`. No
//! allocation per packet: the buffers are allocated with the worker.
//!
//! **Segmentation offload.** Where the kernel has it (Linux 4.18 and
//! later), a run of equal-size frames to one peer from one send socket
//! goes down the stack as one UDP GSO datagram (`UDP_SEGMENT`): one route
//! lookup and one pass through UDP and IP for up to [`GSO_MAX_SEGMENTS`]
//! frames, cut into datagrams by the NIC or, without that offload, by the
//! kernel just before the device. The receive sockets ask for UDP GRO
//! (Linux 5.0 and later): datagrams of one sender that the receive path
//! coalesced come up as one, with their segment size, and are taken
//! apart here. On the wire nothing changes: every VXLAN packet is its own
//! UDP datagram, whatever the peer runs.

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use nix::sys::socket::{
    bind, getsockname, recvmmsg, sendmmsg, setsockopt, socket, sockopt, AddressFamily,
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockFlag, SockType,
    SockaddrStorage,
};

use super::counters::DropReason;
use crate::memif::queue::DEFAULT_MAX_FRAME;
use crate::packet::vxlan::VXLAN_HLEN;
use crate::packet::ETH_HLEN;

/// Send sockets (source ports) per worker.
pub const TX_PORTS: usize = 16;
/// Datagrams per `recvmmsg`, and the size of a send batch.
pub const BATCH: usize = 64;
/// The largest UDP payload memifd sends or takes: VXLAN header, inner
/// Ethernet header, and the largest frame a memif carries.
pub const MAX_PAYLOAD: usize = VXLAN_HLEN + ETH_HLEN + DEFAULT_MAX_FRAME;
/// Most frames in one GSO send (the kernel's `UDP_MAX_SEGMENTS` of older
/// kernels; newer ones take 128).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO send: an IP datagram is at most 65535
/// bytes, headers included (IPv6's 40 and UDP's 8, with room to spare).
const GSO_MAX_BYTES: usize = 65_000;
/// A receive buffer when GRO is on: a coalesced datagram is at most 64 KiB.
const GRO_BUF: usize = 65_536;

/// Where the underlay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnderlayConfig {
    /// The node's underlay address and the VXLAN port (receive side, and
    /// the destination port of what memifd sends).
    pub local: SocketAddr,
    /// The underlay's MTU: inner IP packets longer than this less the
    /// VXLAN overhead (50 bytes over IPv4, 70 over IPv6) are dropped.
    pub mtu: u32,
}

impl UnderlayConfig {
    /// The longest inner IP packet the underlay carries.
    pub fn max_inner_ip(&self) -> usize {
        let overhead = if self.local.is_ipv4() {
            crate::packet::vxlan::OVERHEAD_V4
        } else {
            crate::packet::vxlan::OVERHEAD_V6
        };
        self.mtu.saturating_sub(overhead) as usize
    }
}

/// A worker's sockets.
#[derive(Debug)]
pub struct Sockets {
    pub rx: OwnedFd,
    pub tx: Vec<OwnedFd>,
    /// The kernel takes UDP GSO sends (`UDP_SEGMENT`).
    pub gso: bool,
    /// The receive socket has UDP GRO on (`UDP_GRO`).
    pub gro: bool,
}

fn udp_socket(local: &SocketAddr, reuse: bool) -> std::io::Result<OwnedFd> {
    let family = if local.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    if reuse {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    if local.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    // Room for bursts; the force variants need CAP_NET_ADMIN, which memifd
    // has; without it the plain ones (capped by the sysctls) still work.
    let big = 8 << 20;
    if setsockopt(&fd, sockopt::RcvBufForce, &big).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &big);
    }
    if setsockopt(&fd, sockopt::SndBufForce, &big).is_err() {
        let _ = setsockopt(&fd, sockopt::SndBuf, &big);
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(*local))?;
    Ok(fd)
}

/// The classic BPF program of the receive sockets: the socket index is
/// the VNI (UDP payload bytes 4..7) modulo `n`.
fn steering_program(n: u32) -> [nix::libc::sock_filter; 4] {
    use nix::libc::{
        sock_filter, BPF_A, BPF_ABS, BPF_ALU, BPF_K, BPF_LD, BPF_MOD, BPF_RET, BPF_RSH, BPF_W,
    };
    let op = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    [
        // A = the payload's second 32-bit word: VNI << 8 | reserved.
        op(BPF_LD | BPF_W | BPF_ABS, 4),
        op(BPF_ALU | BPF_RSH | BPF_K, 8),
        op(BPF_ALU | BPF_MOD | BPF_K, n),
        op(BPF_RET | BPF_A, 0),
    ]
}

/// Opens every worker's sockets on `cfg.local`.
pub fn open(cfg: &UnderlayConfig, workers: usize) -> std::io::Result<Vec<Sockets>> {
    let workers = workers.max(1);
    let mut out = Vec::with_capacity(workers);
    for _ in 0..workers {
        let rx = udp_socket(&cfg.local, workers > 1)?;
        let mut tx = Vec::with_capacity(TX_PORTS);
        for _ in 0..TX_PORTS {
            tx.push(udp_socket(&SocketAddr::new(cfg.local.ip(), 0), false)?);
        }
        // A kernel without UDP GSO does not know the option; one without
        // GRO refuses to set it. Either way memifd sends and receives
        // datagram by datagram, as it would without the offloads.
        let gso = nix::sys::socket::getsockopt(&tx[0], sockopt::UdpGsoSegment).is_ok();
        let gro = setsockopt(&rx, sockopt::UdpGroSegment, &true).is_ok();
        out.push(Sockets { rx, tx, gso, gro });
    }
    if let Some(s) = out.first() {
        tracing::debug!(gso = s.gso, gro = s.gro, "underlay segmentation offloads");
    }
    if workers > 1 {
        let mut prog = steering_program(workers as u32);
        let fprog = nix::libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_mut_ptr(),
        };
        setsockopt(&out[0].rx, sockopt::AttachReusePortCbpf, &fprog)?;
    }
    Ok(out)
}

/// The local port a socket is bound to.
pub fn local_port(fd: BorrowedFd<'_>) -> Option<u16> {
    let a: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    a.as_sockaddr_in()
        .map(|s| s.port())
        .or_else(|| a.as_sockaddr_in6().map(|s| s.port()))
}

/// Counters of one remote node in one network.
#[derive(Debug, Default)]
pub struct PeerCounters {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Frames for this peer that could not be sent.
    pub drops: AtomicU64,
}

/// Counters of a worker's underlay: what arrived that belongs to no
/// network or is not VXLAN, and send failures.
#[derive(Debug, Default)]
pub struct UnderlayCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
}

/// One frame waiting in a send batch.
#[derive(Clone, Copy)]
struct Pending {
    len: usize,
    to: SocketAddr,
    sock: usize,
}

/// One message of a `sendmmsg`: frames `start..start + frames` of a send
/// socket's part of the batch, all to one peer and, when there are more
/// than one, of one size (a GSO datagram).
#[derive(Clone, Copy, Default)]
struct Message {
    start: u8,
    frames: u8,
}

/// One datagram of the last receive: bytes `off..off + len` of a receive
/// buffer (several when GRO coalesced them), from `from`.
#[derive(Clone, Copy)]
struct Datagram {
    buf: u16,
    off: u32,
    len: u32,
    from: Option<IpAddr>,
}

/// A worker's underlay: its sockets and batches.
pub(super) struct Underlay {
    pub cfg: UnderlayConfig,
    pub sockets: Sockets,
    pub counters: Arc<UnderlayCounters>,
    pub readable: bool,
    tx_bufs: Vec<Box<[u8]>>,
    pending: Vec<Pending>,
    /// The peers' counters of the frames in the batch, frame by frame (to
    /// count failures).
    pending_peers: Vec<Arc<PeerCounters>>,
    rx_bufs: Vec<Box<[u8]>>,
    rx_datagrams: Vec<Datagram>,
    send_headers: MultiHeaders<SockaddrStorage>,
    /// Headers with room for the `UDP_SEGMENT` control message.
    gso_headers: MultiHeaders<SockaddrStorage>,
    recv_headers: MultiHeaders<SockaddrStorage>,
}

impl Underlay {
    pub fn new(cfg: UnderlayConfig, sockets: Sockets, counters: Arc<UnderlayCounters>) -> Underlay {
        let bufs = |size: usize| {
            (0..BATCH)
                .map(|_| vec![0u8; size].into_boxed_slice())
                .collect::<Vec<_>>()
        };
        let (rx_size, rx_datagrams) = if sockets.gro {
            (GRO_BUF, BATCH * GSO_MAX_SEGMENTS)
        } else {
            (MAX_PAYLOAD, BATCH)
        };
        Underlay {
            cfg,
            counters,
            readable: true,
            tx_bufs: bufs(MAX_PAYLOAD),
            pending: Vec::with_capacity(BATCH),
            pending_peers: Vec::with_capacity(BATCH),
            rx_bufs: bufs(rx_size),
            rx_datagrams: Vec::with_capacity(rx_datagrams),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            gso_headers: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(u16))),
            recv_headers: Self::recv_headers(sockets.gro),
            sockets,
        }
    }

    fn recv_headers(gro: bool) -> MultiHeaders<SockaddrStorage> {
        MultiHeaders::preallocate(BATCH, gro.then(|| nix::cmsg_space!(i32)))
    }

    /// The receive socket (for epoll).
    pub fn rx_fd(&self) -> BorrowedFd<'_> {
        self.sockets.rx.as_fd()
    }

    /// The next free send buffer, flushing the batch first when it is
    /// full. The caller writes the payload, then calls [`Underlay::queue`].
    pub fn slot(&mut self) -> &mut [u8] {
        if self.pending.len() == BATCH {
            self.flush();
        }
        &mut self.tx_bufs[self.pending.len()]
    }

    /// Queues the payload written into the last [`Underlay::slot`]:
    /// `len` bytes to `to`, from the send socket of `flow`.
    pub fn queue(&mut self, len: usize, to: SocketAddr, flow: u32, peer: &Arc<PeerCounters>) {
        let sock = flow as usize % self.sockets.tx.len().max(1);
        self.pending.push(Pending { len, to, sock });
        self.pending_peers.push(peer.clone());
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sends the batch: per send socket that has frames, in their order,
    /// as few `sendmmsg` calls as segmentation offload allows (one when
    /// all its frames are of one size, or one to a peer). Frames the
    /// kernel refuses are counted on their peers and on the underlay
    /// (`underlay-error`).
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        debug_assert!(self.pending.len() <= BATCH);
        let mut order: [u8; BATCH] = [0; BATCH];
        for s in 0..self.sockets.tx.len() {
            let mut k = 0;
            for (i, p) in self.pending.iter().enumerate() {
                if p.sock == s {
                    order[k] = i as u8;
                    k += 1;
                }
            }
            if k > 0 {
                self.send_socket(s, &order[..k]);
            }
        }
        self.pending.clear();
        self.pending_peers.clear();
    }

    /// Whether frames of `len` bytes may go as segments of a GSO datagram:
    /// the kernel refuses a segment that, with its IP and UDP headers, is
    /// longer than the path MTU (a lone datagram it would fragment).
    fn gso_segment_fits(&self, len: usize) -> bool {
        let headers = if self.cfg.local.is_ipv4() { 28 } else { 48 };
        self.sockets.gso && len + headers <= self.cfg.mtu as usize && len <= u16::MAX as usize
    }

    /// Sends frames `idx` (indices into the batch, in order) of send
    /// socket `s`: runs of equal-size frames to one peer become one GSO
    /// message each, and consecutive messages that can share a segment
    /// size share a `sendmmsg`.
    fn send_socket(&mut self, s: usize, idx: &[u8]) {
        let mut msgs = [Message::default(); BATCH];
        let mut m = 0;
        for (j, &i) in idx.iter().enumerate() {
            let p = self.pending[i as usize];
            if m > 0 {
                let last = msgs[m - 1];
                let q = self.pending[idx[last.start as usize] as usize];
                let n = last.frames as usize;
                if q.to == p.to
                    && q.len == p.len
                    && n < GSO_MAX_SEGMENTS
                    && (n + 1) * p.len <= GSO_MAX_BYTES
                    && self.gso_segment_fits(p.len)
                {
                    msgs[m - 1].frames += 1;
                    continue;
                }
            }
            msgs[m] = Message {
                start: j as u8,
                frames: 1,
            };
            m += 1;
        }
        // A call's segment size: that of its multi-frame messages; a lone
        // frame no longer than it goes unsegmented in the same call.
        let mut first = 0;
        let mut gso: Option<usize> = None;
        let mut longest_lone = 0;
        for i in 0..m {
            let len = self.pending[idx[msgs[i].start as usize] as usize].len;
            let lone = msgs[i].frames == 1;
            let fits = match (lone, gso) {
                (true, None) => true,
                (true, Some(g)) => len <= g,
                (false, Some(g)) => len == g,
                (false, None) => longest_lone <= len,
            };
            if !fits {
                self.send_call(s, idx, &msgs[first..i], gso);
                first = i;
                gso = None;
                longest_lone = 0;
            }
            if lone {
                longest_lone = longest_lone.max(len);
            } else {
                gso = Some(len);
            }
        }
        self.send_call(s, idx, &msgs[first..m], gso);
    }

    /// One `sendmmsg` of `msgs` on send socket `s`, with segment size
    /// `gso` if any, then the counters. A GSO call the kernel refuses
    /// outright is sent again frame by frame.
    fn send_call(&mut self, s: usize, idx: &[u8], msgs: &[Message], gso: Option<usize>) {
        if msgs.is_empty() {
            return;
        }
        let result = {
            let iovs: Vec<IoSlice<'_>> = idx
                .iter()
                .map(|&i| {
                    let i = i as usize;
                    IoSlice::new(&self.tx_bufs[i][..self.pending[i].len])
                })
                .collect();
            let slices: Vec<&[IoSlice<'_>]> = msgs
                .iter()
                .map(|m| &iovs[m.start as usize..m.start as usize + m.frames as usize])
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = msgs
                .iter()
                .map(|m| {
                    let p = &self.pending[idx[m.start as usize] as usize];
                    Some(SockaddrStorage::from(p.to))
                })
                .collect();
            let fd = self.sockets.tx[s].as_raw_fd();
            match gso {
                Some(g) => {
                    let segment = g as u16;
                    sendmmsg(
                        fd,
                        &mut self.gso_headers,
                        &slices,
                        &addrs,
                        [ControlMessage::UdpGsoSegments(&segment)],
                        MsgFlags::MSG_DONTWAIT,
                    )
                    .map(|r| r.count())
                }
                None => sendmmsg(
                    fd,
                    &mut self.send_headers,
                    &slices,
                    &addrs,
                    [],
                    MsgFlags::MSG_DONTWAIT,
                )
                .map(|r| r.count()),
            }
        };
        let sent = match result {
            Ok(n) => n,
            Err(e) if gso.is_some() && !matches!(e, nix::Error::EAGAIN | nix::Error::ENOBUFS) => {
                // Not for lack of room: the offload itself (a device or
                // route that cannot take it). Frame by frame instead.
                tracing::debug!(error = %e, "underlay GSO send refused, sending frame by frame");
                let mut lone = [Message::default(); BATCH];
                let mut n = 0;
                for m in msgs {
                    for j in 0..m.frames {
                        lone[n] = Message {
                            start: m.start + j,
                            frames: 1,
                        };
                        n += 1;
                    }
                }
                self.send_call(s, idx, &lone[..n], None);
                return;
            }
            Err(e) => {
                tracing::trace!(error = %e, "underlay send failed");
                0
            }
        };
        for (k, m) in msgs.iter().enumerate() {
            let frames = &idx[m.start as usize..m.start as usize + m.frames as usize];
            for &i in frames {
                let p = self.pending[i as usize];
                let peer = &self.pending_peers[i as usize];
                if k < sent {
                    super::counters::add(&peer.tx_packets, 1);
                    super::counters::add(&peer.tx_bytes, p.len as u64);
                    super::counters::add(&self.counters.tx_packets, 1);
                    super::counters::add(&self.counters.tx_bytes, p.len as u64);
                } else {
                    super::counters::add(&peer.drops, 1);
                    super::counters::add(
                        &self.counters.drops[DropReason::UnderlayError.index()],
                        1,
                    );
                }
            }
        }
    }

    /// Receives up to [`BATCH`] messages and returns how many datagrams
    /// they held (more than one in a message GRO coalesced). Each is
    /// [`Underlay::received`]`(i)`. Fewer than a batch waiting clears
    /// `readable`.
    pub fn receive(&mut self) -> usize {
        self.rx_datagrams.clear();
        if self.sockets.gro {
            // The kernel shortens each header's control length to what it
            // wrote; a header must offer the full room again.
            self.recv_headers = Self::recv_headers(true);
        }
        let mut messages = 0;
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .rx_bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        match recvmmsg(
            self.sockets.rx.as_raw_fd(),
            &mut self.recv_headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(msgs) => {
                for (b, m) in msgs.enumerate() {
                    messages += 1;
                    let from = m.address.and_then(|a: SockaddrStorage| {
                        a.as_sockaddr_in()
                            .map(|s| IpAddr::V4(s.ip()))
                            .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
                    });
                    // A datagram longer than memifd sends (an oversize
                    // inner frame) is kept as an empty one: garbage.
                    let mut push = |off: usize, len: usize| {
                        let len = if len > MAX_PAYLOAD { 0 } else { len };
                        self.rx_datagrams.push(Datagram {
                            buf: b as u16,
                            off: off as u32,
                            len: len as u32,
                            from,
                        })
                    };
                    // Cut short, or coalesced without the size to take
                    // it apart by: one empty datagram (dropped as garbage).
                    if m.flags.contains(MsgFlags::MSG_TRUNC) {
                        push(0, 0);
                        continue;
                    }
                    let Ok(mut cmsgs) = m.cmsgs() else {
                        push(0, 0);
                        continue;
                    };
                    let segment = cmsgs
                        .find_map(|c| match c {
                            ControlMessageOwned::UdpGroSegments(g) if g > 0 => Some(g as usize),
                            _ => None,
                        })
                        .unwrap_or(m.bytes);
                    let mut off = 0;
                    loop {
                        let len = segment.min(m.bytes - off);
                        push(off, len);
                        off += len;
                        if off >= m.bytes {
                            break;
                        }
                    }
                }
            }
            Err(nix::Error::EAGAIN) => self.readable = false,
            Err(e) => {
                tracing::warn!(error = %e, "underlay receive failed");
                self.readable = false;
            }
        }
        if messages < BATCH {
            self.readable = false;
        }
        self.rx_datagrams.len()
    }

    /// Datagram `i` of the last [`Underlay::receive`]: its payload (empty
    /// when it was truncated or longer than [`MAX_PAYLOAD`]) and its
    /// source address.
    pub fn received(&self, i: usize) -> (&[u8], Option<IpAddr>) {
        let d = self.rx_datagrams[i];
        let off = d.off as usize;
        (
            &self.rx_bufs[d.buf as usize][off..off + d.len as usize],
            d.from,
        )
    }

    /// Counts a dropped datagram (garbage, unknown VNI, ...).
    pub fn drop_rx(&self, why: DropReason) {
        super::counters::add(&self.counters.drops[why.index()], 1);
    }

    /// Counts a received datagram.
    pub fn count_rx(&self, len: usize) {
        super::counters::add(&self.counters.rx_packets, 1);
        super::counters::add(&self.counters.rx_bytes, len as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steering_program_picks_vni_modulo_workers() {
        let p = steering_program(3);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].k, 4);
        assert_eq!(p[1].k, 8);
        assert_eq!(p[2].k, 3);
    }

    /// One worker's underlay on loopback, its own receive socket's
    /// address as `cfg.local` (where the tests send to).
    fn loopback() -> Underlay {
        let cfg = UnderlayConfig {
            local: "127.0.0.1:0".parse().unwrap(),
            mtu: 1500,
        };
        // Bind the receive side first to learn its port.
        let mut socks = open(&cfg, 1).unwrap();
        let port = local_port(socks[0].rx.as_fd()).unwrap();
        let cfg = UnderlayConfig {
            local: SocketAddr::new(cfg.local.ip(), port),
            ..cfg
        };
        Underlay::new(cfg, socks.remove(0), Arc::default())
    }

    #[test]
    fn batches_go_out_and_come_back_on_loopback() {
        let mut u = loopback();
        let cfg = u.cfg;
        let peer = Arc::new(PeerCounters::default());
        for i in 0..10u8 {
            let s = u.slot();
            s[..3].copy_from_slice(&[i, i, i]);
            u.queue(3, cfg.local, i as u32, &peer);
        }
        u.flush();
        assert_eq!(
            peer.tx_packets.load(std::sync::atomic::Ordering::Relaxed),
            10
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        let n = u.receive();
        assert_eq!(n, 10);
        let mut firsts: Vec<u8> = (0..n).map(|i| u.received(i).0[0]).collect();
        firsts.sort();
        assert_eq!(firsts, (0..10).collect::<Vec<u8>>());
        assert_eq!(u.received(0).1, Some(cfg.local.ip()));
        assert!(!u.readable);
    }

    /// One flow's frames, so they share a send socket: runs of one size
    /// go as GSO datagrams (when the kernel has it), a shorter lone frame
    /// rides along, a longer one needs a call of its own; whatever the
    /// kernel does with them, each frame arrives as its own datagram, in
    /// order, and is counted once.
    #[test]
    fn runs_of_one_size_arrive_as_separate_datagrams_in_order() {
        let mut u = loopback();
        let cfg = u.cfg;
        assert!(
            u.sockets.gso && u.sockets.gro,
            "this kernel has UDP GSO and GRO; both must be on"
        );
        let peer = Arc::new(PeerCounters::default());
        // 40 x 100 bytes, one of 60, 20 x 100, one of 700, 3 x 100.
        let lens: Vec<usize> = std::iter::repeat_n(100, 40)
            .chain([60])
            .chain(std::iter::repeat_n(100, 20))
            .chain([700])
            .chain(std::iter::repeat_n(100, 3))
            .collect();
        for (i, &len) in lens.iter().enumerate() {
            let s = u.slot();
            s[..len].fill(i as u8);
            u.queue(len, cfg.local, 7, &peer);
        }
        u.flush();
        let sent = peer.tx_packets.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(sent, lens.len() as u64);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut got = Vec::new();
        u.readable = true;
        let mut calls = 0;
        while u.readable {
            calls += 1;
            for i in 0..u.receive() {
                let (p, from) = u.received(i);
                assert_eq!(from, Some(cfg.local.ip()));
                assert!(p.iter().all(|&b| b == p[0]), "datagram {i} mixes frames");
                got.push((p[0] as usize, p.len()));
            }
        }
        let want: Vec<(usize, usize)> = lens.iter().copied().enumerate().collect();
        assert_eq!(got, want);
        // 65 datagrams in one receive of at most BATCH (64) messages: the
        // runs went as GSO datagrams and came back coalesced (loopback
        // keeps them whole), taken apart here.
        assert!(lens.len() > BATCH);
        assert_eq!(calls, 1, "GSO/GRO did not coalesce");
    }
}
