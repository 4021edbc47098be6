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

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use nix::sys::socket::{
    bind, getsockname, recvmmsg, sendmmsg, setsockopt, socket, sockopt, AddressFamily, MsgFlags,
    MultiHeaders, SockFlag, SockType, SockaddrStorage,
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
        out.push(Sockets { rx, tx });
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
    /// Index of the peer's counters in `peers` (for failures).
    peer: usize,
}

/// A worker's underlay: its sockets and batches.
pub(super) struct Underlay {
    pub cfg: UnderlayConfig,
    pub sockets: Sockets,
    pub counters: Arc<UnderlayCounters>,
    pub readable: bool,
    tx_bufs: Vec<Box<[u8]>>,
    pending: Vec<Pending>,
    /// The peers' counters of the frames in the batch (to count failures).
    pending_peers: Vec<Arc<PeerCounters>>,
    rx_bufs: Vec<Box<[u8]>>,
    rx_lens: Vec<(usize, Option<IpAddr>)>,
    send_headers: MultiHeaders<SockaddrStorage>,
    recv_headers: MultiHeaders<SockaddrStorage>,
}

impl Underlay {
    pub fn new(cfg: UnderlayConfig, sockets: Sockets, counters: Arc<UnderlayCounters>) -> Underlay {
        let bufs = || {
            (0..BATCH)
                .map(|_| vec![0u8; MAX_PAYLOAD].into_boxed_slice())
                .collect::<Vec<_>>()
        };
        Underlay {
            cfg,
            sockets,
            counters,
            readable: true,
            tx_bufs: bufs(),
            pending: Vec::with_capacity(BATCH),
            pending_peers: Vec::with_capacity(BATCH),
            rx_bufs: bufs(),
            rx_lens: Vec::with_capacity(BATCH),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            recv_headers: MultiHeaders::preallocate(BATCH, None),
        }
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
        self.pending.push(Pending {
            len,
            to,
            sock,
            peer: self.pending_peers.len(),
        });
        self.pending_peers.push(peer.clone());
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sends the batch: one `sendmmsg` per send socket that has frames.
    /// Frames the kernel refuses are counted on their peers and on the
    /// underlay (`underlay-error`).
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut order: [u8; BATCH] = [0; BATCH];
        let n = self.pending.len();
        for s in 0..self.sockets.tx.len() {
            let mut k = 0;
            for (i, p) in self.pending.iter().enumerate() {
                if p.sock == s {
                    order[k] = i as u8;
                    k += 1;
                }
            }
            if k == 0 {
                continue;
            }
            let idx = &order[..k];
            let slices: Vec<[IoSlice<'_>; 1]> = idx
                .iter()
                .map(|&i| {
                    let i = i as usize;
                    [IoSlice::new(&self.tx_bufs[i][..self.pending[i].len])]
                })
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = idx
                .iter()
                .map(|&i| Some(SockaddrStorage::from(self.pending[i as usize].to)))
                .collect();
            let sent = match sendmmsg(
                self.sockets.tx[s].as_raw_fd(),
                &mut self.send_headers,
                &slices,
                &addrs,
                [],
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(r) => r.count(),
                Err(e) => {
                    tracing::trace!(error = %e, "underlay send failed");
                    0
                }
            };
            for (j, &i) in idx.iter().enumerate() {
                let p = self.pending[i as usize];
                let peer = &self.pending_peers[p.peer];
                if j < sent {
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
        debug_assert!(n <= BATCH);
        self.pending.clear();
        self.pending_peers.clear();
    }

    /// Receives up to [`BATCH`] datagrams; returns how many. Each is
    /// [`Underlay::received`]`(i)`. None waiting clears `readable`.
    pub fn receive(&mut self) -> usize {
        self.rx_lens.clear();
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
                for m in msgs {
                    let from = m.address.and_then(|a: SockaddrStorage| {
                        a.as_sockaddr_in()
                            .map(|s| IpAddr::V4(s.ip()))
                            .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
                    });
                    let truncated = m.flags.contains(MsgFlags::MSG_TRUNC);
                    self.rx_lens
                        .push((if truncated { 0 } else { m.bytes }, from));
                }
            }
            Err(nix::Error::EAGAIN) => self.readable = false,
            Err(e) => {
                tracing::warn!(error = %e, "underlay receive failed");
                self.readable = false;
            }
        }
        if self.rx_lens.len() < BATCH {
            self.readable = false;
        }
        self.rx_lens.len()
    }

    /// Datagram `i` of the last [`Underlay::receive`]: its payload (empty
    /// when it was truncated) and its source address.
    pub fn received(&self, i: usize) -> (&[u8], Option<IpAddr>) {
        let (len, from) = self.rx_lens[i];
        (&self.rx_bufs[i][..len], from)
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

    #[test]
    fn batches_go_out_and_come_back_on_loopback() {
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
        let mut u = Underlay::new(cfg, socks.remove(0), Arc::default());
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
}
