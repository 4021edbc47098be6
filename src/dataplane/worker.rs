//! One dataplane worker: a dedicated thread owning the ports, networks
//! and uplinks the control plane gave it, its epoll loop with the rx modes
//! (polling, interrupt, adaptive), and the control plane's commands,
//! applied between bursts.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;

use super::counters::Local;
use super::forward::{Plane, Scratch, ScratchRefs};
use super::port::{eth_addrs, Conn, Leave, Port};
use super::table::{Network, Peer, Remote, Routes, Uplink};
use super::underlay::Underlay;
use super::{Attached, Cmd, OnBadPeer, PortConfig, RemoteSet, ADAPTIVE_IDLE_POLLS, BURST};
use crate::api::RxMode;
use crate::ids::AttachmentId;
use crate::mac::Mac;
use crate::memif::shm::{Desc, Region, MAX_LOG2_RING_SIZE};
use crate::packet::{key_of, PEEK};

pub(super) struct Worker {
    n: usize,
    on_bad_peer: OnBadPeer,
    plane: Plane,
    scratch: Scratch,
    by_id: HashMap<AttachmentId, usize>,
    net_by_name: HashMap<String, usize>,
    /// Connected ports in polling or adaptive mode.
    eager: usize,
    /// Turns left in which the worker keeps looking at its uplinks and
    /// underlay although they were drained (see [`Worker::linger_after`]).
    linger: u32,
}

/// epoll data for the worker's own wake-up fd.
const WAKE_TOKEN: u64 = u64::MAX;
/// A busy worker calls `epoll_wait` once in this many turns.
const EPOLL_EVERY: u32 = 64;
/// epoll data of an uplink: this bit and the network's slot.
const UPLINK_BIT: u64 = 1 << 62;
/// epoll data of the underlay's receive socket.
const UNDERLAY_TOKEN: u64 = u64::MAX - 1;

fn ring_token(slot: usize, ring: usize) -> u64 {
    ((slot as u64) << 16) | ring as u64
}

impl Worker {
    pub(super) fn new(n: usize, on_bad_peer: OnBadPeer, underlay: Option<Underlay>) -> Worker {
        Worker {
            n,
            on_bad_peer,
            plane: Plane {
                ports: Vec::new(),
                nets: Vec::new(),
                dirty_tx: Vec::with_capacity(1024),
                leaving: Vec::new(),
                underlay,
                vni_nets: HashMap::new(),
            },
            scratch: Scratch {
                // A peek never holds more descriptors than the ring.
                descs: vec![Desc::default(); 1 << MAX_LOG2_RING_SIZE].into_boxed_slice(),
                head: [0; PEEK],
                packet: vec![0u8; 1 << 16].into_boxed_slice(),
                answer: [0; 128],
            },
            by_id: HashMap::new(),
            net_by_name: HashMap::new(),
            eager: 0,
            linger: 0,
        }
    }

    /// After a turn that took `got` packets from the fds (uplinks,
    /// underlay): how long the worker stays busy although they are drained.
    /// A TUN or a socket has no ring to poll and wakes a sleeping reader
    /// per packet (an IPI from the sender's core, a VM exit on a virtual
    /// machine), so the uplink and underlay follow the ports' adaptive
    /// rule: while any connected port polls or adapts, the worker keeps
    /// turning (and looks at its fds every [`EPOLL_EVERY`] turns) for
    /// [`ADAPTIVE_IDLE_POLLS`] turns after the last packet, then sleeps. A
    /// worker whose ports are all in interrupt mode sleeps at once.
    fn linger_after(&mut self, got: usize) {
        if got > 0 && self.eager > 0 {
            self.linger = ADAPTIVE_IDLE_POLLS;
        } else {
            self.linger = self.linger.saturating_sub(1);
        }
    }

    fn lingering(&self) -> bool {
        self.linger > 0
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
        if let Some(u) = self.plane.underlay.as_ref() {
            if let Err(e) = epoll.add(
                u.rx_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, UNDERLAY_TOKEN),
            ) {
                tracing::error!(worker = self.n, error = %e, "cannot watch the underlay socket");
            }
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
                    .any(|n| n.uplink.as_ref().is_some_and(|u| u.readable))
                || self.plane.underlay.as_ref().is_some_and(|u| u.readable)
                || self.lingering();
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
                } else if t == UNDERLAY_TOKEN {
                    if let Some(u) = self.plane.underlay.as_mut() {
                        u.readable = true;
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
            let mut from_fds = 0;
            for net in 0..self.plane.nets.len() {
                let readable = self.plane.nets[net]
                    .as_ref()
                    .and_then(|n| n.uplink.as_ref())
                    .is_some_and(|u| u.readable);
                if readable {
                    from_fds += self.plane.uplink_rx(&mut self.scratch.packet, net);
                    self.plane.flush();
                }
            }
            if self.plane.underlay.as_ref().is_some_and(|u| u.readable) {
                from_fds += self.plane.underlay_rx();
                self.plane.flush();
            }
            self.linger_after(from_fds);
            while let Some((slot, why)) = self.plane.leaving.pop() {
                self.leave(&epoll, slot, why);
            }
        }
    }

    /// Applies a control-plane command; false on shutdown.
    fn command(&mut self, epoll: &Epoll, c: Cmd) -> bool {
        match c {
            Cmd::AddPort(cfg) => self.add_port(epoll, *cfg),
            Cmd::RemovePort(id) => self.remove_port(epoll, id),
            Cmd::Connect(a, done) => {
                self.connect(epoll, *a);
                let _ = done.send(());
            }
            Cmd::Disconnect(id) => {
                if let Some(&slot) = self.by_id.get(&id) {
                    self.drop_conn(epoll, slot);
                }
            }
            Cmd::AddUplink {
                network,
                vni,
                tun,
                counters,
            } => {
                let net = self.net(&network, vni);
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
            Cmd::SetRemotes { network, set } => self.set_remotes(&network, &set),
            Cmd::Shutdown => return false,
        }
        true
    }

    fn net(&mut self, name: &str, vni: u32) -> usize {
        if let Some(&i) = self.net_by_name.get(name) {
            return i;
        }
        let net = Network {
            name: name.to_string(),
            routes: Routes::default(),
            last: (0, 0),
            uplink: None,
            ports: 0,
            vni,
            remotes: Default::default(),
            peers: Vec::new(),
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
        self.plane.vni_nets.insert(vni, i);
        i
    }

    /// Replaces a network's remote pods.
    fn set_remotes(&mut self, network: &str, set: &RemoteSet) {
        let Some(&i) = self.net_by_name.get(network) else {
            return;
        };
        let Some(n) = self.plane.nets[i].as_mut() else {
            return;
        };
        n.peers = set
            .peers
            .iter()
            .map(|p| Peer {
                addr: p.addr,
                counters: p.counters.clone(),
            })
            .collect();
        n.remotes.clear();
        for e in &set.endpoints {
            if e.peer < n.peers.len() {
                n.remotes.insert(
                    key_of(e.ip),
                    Remote {
                        peer: e.peer,
                        mac: e.mac,
                    },
                );
            }
        }
        tracing::debug!(
            worker = self.n,
            network,
            peers = n.peers.len(),
            endpoints = n.remotes.len(),
            "remote pods set"
        );
    }

    /// Forgets a network with neither ports nor uplink.
    fn gc_net(&mut self, net: usize) {
        let empty = self.plane.nets[net]
            .as_ref()
            .is_some_and(|n| n.ports == 0 && n.uplink.is_none());
        if empty {
            let n = self.plane.nets[net].take().expect("checked");
            self.net_by_name.remove(&n.name);
            if self.plane.vni_nets.get(&n.vni) == Some(&net) {
                self.plane.vni_nets.remove(&n.vni);
            }
        }
    }

    fn add_port(&mut self, epoll: &Epoll, cfg: PortConfig) {
        self.remove_port(epoll, cfg.id);
        let net = self.net(&cfg.network, cfg.vni);
        let port = Port {
            id: cfg.id,
            net,
            mode: cfg.mode,
            ips: cfg.ips.iter().map(|ip| key_of(*ip)).collect(),
            mac: cfg.mac,
            peer_mac: None,
            eth_addrs: eth_addrs(Mac::BROADCAST, cfg.mac),
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
                tracing::warn!(network = %n.name, id = %cfg.id, other_slot = old,
                    "address already held by another port of the network; the newest wins");
            }
        }
        self.plane.ports[slot] = Some(port);
        self.by_id.insert(cfg.id, slot);
        tracing::debug!(worker = self.n, id = %cfg.id, network = %cfg.network, slot, "port joins the worker");
    }

    fn remove_port(&mut self, epoll: &Epoll, id: AttachmentId) {
        let Some(slot) = self.by_id.remove(&id) else {
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
        let Some(&slot) = self.by_id.get(&a.id) else {
            tracing::warn!(
                worker = self.n,
                id = %a.id,
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
                tracing::warn!(id = %a.id, ring = r, error = %e, "cannot watch a ring's eventfd");
            }
            // Start polling; interrupt and adaptive ports unmask when idle.
            q.set_interrupts(false);
        }
        tracing::debug!(worker = self.n, id = %a.id, rx_mode = %a.rx_mode, "interface joins the worker");
        if a.rx_mode != RxMode::Interrupt {
            self.eager += 1;
        }
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
            if c.a.rx_mode != RxMode::Interrupt {
                self.eager -= 1;
            }
            for q in &c.a.conn.rx {
                // The fd may already be closed by the peer side; ignore.
                let _ = epoll.delete(q.event_fd());
            }
            tracing::debug!(worker = self.n, id = %p.id, "interface leaves the worker");
        }
        self.plane.dirty_tx.retain(|(s, _)| *s != slot);
    }

    fn leave(&mut self, epoll: &Epoll, slot: usize, why: Leave) {
        let Some((id, ifid)) = self.plane.ports[slot]
            .as_ref()
            .and_then(|p| p.conn.as_ref().map(|c| (p.id, c.a.conn.id)))
        else {
            return;
        };
        self.drop_conn(epoll, slot);
        match why {
            Leave::LinkDown => {
                tracing::debug!(
                    worker = self.n,
                    %id,
                    "link down; interface leaves the worker"
                )
            }
            Leave::BadPeer(reason) => {
                tracing::warn!(worker = self.n, %id, %reason, "bad memif peer; interface leaves the worker");
                (self.on_bad_peer)(id, ifid, reason);
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
        if !c.a.conn.state.is_up() {
            return Err(Leave::LinkDown);
        }
        // Take the rx queues out so forwarding may borrow any port's tx,
        // this one's included (hairpin).
        let mut rxqs = std::mem::take(&mut c.a.conn.rx);
        let mut got = 0usize;
        let mut result = Ok(());
        let Scratch {
            descs,
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
            let mut frames = match q.peek(BURST, descs) {
                Ok(f) => f,
                Err(e) => {
                    result = Err(Leave::BadPeer(format!("bad descriptor: {e}")));
                    break;
                }
            };
            let n = frames.len();
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
            let mut ctx = self.plane.src_ctx(slot);
            while let Some(f) = self.plane.forward_run(&ctx, qi, regions, &mut frames) {
                self.plane
                    .forward(&mut refs, slot, qi, regions, f.descs, f.len);
                // It may have learned the pod's MAC.
                ctx = self.plane.src_ctx(slot);
            }
            let bytes = q.peeked_bytes();
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
            self.plane.flush_underlay();
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
            p.local.publish(&p.counters.published());
        }
        for n in self.plane.nets.iter_mut().flatten() {
            if let Some(u) = n.uplink.as_mut() {
                u.local.publish(&u.counters.published());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> Worker {
        Worker::new(0, Arc::new(|_, _, _| {}), None)
    }

    #[test]
    fn without_a_polling_or_adaptive_port_the_fds_never_keep_the_worker_awake() {
        let mut w = worker();
        w.linger_after(64);
        assert!(!w.lingering());
        w.linger_after(0);
        assert!(!w.lingering());
    }

    #[test]
    fn the_fds_keep_the_worker_awake_for_the_adaptive_idle_polls_after_their_last_packet() {
        let mut w = worker();
        w.eager = 1;
        w.linger_after(3);
        assert!(w.lingering());
        for turn in 1..ADAPTIVE_IDLE_POLLS {
            w.linger_after(0);
            assert!(w.lingering(), "asleep after {turn} idle turns");
        }
        w.linger_after(0);
        assert!(
            !w.lingering(),
            "still awake after {ADAPTIVE_IDLE_POLLS} idle turns"
        );
        // A packet starts the count again.
        w.linger_after(1);
        assert!(w.lingering());
        w.linger_after(0);
        assert!(w.lingering());
    }
}
