//! The dataplane: worker threads that own the rings of connected memif
//! interfaces.
//!
//! The control plane hands a connected interface to a worker through a
//! channel (never a lock on the packet path) and takes it back the same way.
//! Each interface's counters are shared atomics the control plane reads for
//! `show stats` and metrics.
//!
//! Forwarding between interfaces is not here yet: every received frame is
//! counted and dropped as `no-route`. Rx modes (polling, interrupt,
//! adaptive) already apply, so an idle node costs no CPU.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::api::{IfStats, RxMode};
use crate::memif::master::MasterConnection;
use crate::memif::queue::MasterRx;

/// Frames handled per ring per turn.
pub const BURST: usize = 64;
/// Empty polls in a row after which an adaptive interface sleeps on its
/// interrupts.
pub const ADAPTIVE_IDLE_POLLS: u32 = 1024;

/// Counters of one attachment, across its connections.
#[derive(Debug, Default)]
pub struct IfCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub drop_no_route: AtomicU64,
    pub errors: AtomicU64,
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
}

impl IfCounters {
    /// A consistent-enough snapshot for display.
    pub fn snapshot(&self) -> IfStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut drops = std::collections::BTreeMap::new();
        let nr = l(&self.drop_no_route);
        if nr > 0 {
            drops.insert("no-route".to_string(), nr);
        }
        IfStats {
            rx_packets: l(&self.rx_packets),
            rx_bytes: l(&self.rx_bytes),
            tx_packets: l(&self.tx_packets),
            tx_bytes: l(&self.tx_bytes),
            drops,
            errors: l(&self.errors),
            connects: l(&self.connects),
            disconnects: l(&self.disconnects),
        }
    }
}

/// Per-ring interrupt counts of one connection (for `show memif`).
#[derive(Debug)]
pub struct RingCounters {
    pub s2m_interrupts: Box<[AtomicU64]>,
    pub m2s_interrupts: Box<[AtomicU64]>,
}

impl RingCounters {
    pub fn new(s2m: usize, m2s: usize) -> RingCounters {
        let z = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        RingCounters {
            s2m_interrupts: z(s2m),
            m2s_interrupts: z(m2s),
        }
    }
}

/// The control plane's key for an interface in the dataplane.
pub type IfKey = u32;

enum Cmd {
    Add(Box<Attached>),
    Remove(IfKey),
    Shutdown,
}

/// An interface as a worker owns it.
pub struct Attached {
    pub key: IfKey,
    pub conn: MasterConnection,
    pub rx_mode: RxMode,
    pub counters: Arc<IfCounters>,
    pub rings: Arc<RingCounters>,
}

/// Told when a worker drops an interface because its peer broke the ring
/// protocol, so the control plane can disconnect it with the reason.
pub type OnBadPeer = Arc<dyn Fn(IfKey, String) + Send + Sync>;

/// Handle on the worker threads.
pub struct Dataplane {
    workers: Vec<WorkerHandle>,
}

struct WorkerHandle {
    cmds: mpsc::Sender<Cmd>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    fn send(&self, c: Cmd) {
        if self.cmds.send(c).is_ok() {
            let _ = self.wake.write(1);
        }
    }
}

impl Dataplane {
    /// Starts `workers` threads (at least one).
    pub fn spawn(workers: usize, on_bad_peer: OnBadPeer) -> std::io::Result<Dataplane> {
        let mut v = Vec::new();
        for n in 0..workers.max(1) {
            let wake = Arc::new(
                EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                    .map_err(std::io::Error::from)?,
            );
            let (tx, rx) = mpsc::channel();
            let w = wake.clone();
            let bad = on_bad_peer.clone();
            let thread = std::thread::Builder::new()
                .name(format!("dp-worker-{n}"))
                .spawn(move || Worker::new(n, bad).run(&w, rx))?;
            v.push(WorkerHandle {
                cmds: tx,
                wake,
                thread: Some(thread),
            });
        }
        Ok(Dataplane { workers: v })
    }

    fn worker_for(&self, key: IfKey) -> &WorkerHandle {
        &self.workers[key as usize % self.workers.len()]
    }

    /// Hands a connected interface to its worker.
    pub fn add(&self, a: Attached) {
        self.worker_for(a.key).send(Cmd::Add(Box::new(a)))
    }

    /// Takes an interface away from its worker (the rings are released).
    pub fn remove(&self, key: IfKey) {
        self.worker_for(key).send(Cmd::Remove(key))
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        for w in &self.workers {
            w.send(Cmd::Shutdown);
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

struct Iface {
    a: Attached,
    idle_polls: u32,
    /// Interrupts unmasked and the eventfds armed: waiting to be woken.
    sleeping: bool,
}

struct Worker {
    n: usize,
    ifaces: HashMap<IfKey, Iface>,
    on_bad_peer: OnBadPeer,
}

/// epoll data for the worker's own wake-up fd.
const WAKE_TOKEN: u64 = u64::MAX;

fn ring_token(key: IfKey, ring: usize) -> u64 {
    ((key as u64) << 16) | ring as u64
}

impl Worker {
    fn new(n: usize, on_bad_peer: OnBadPeer) -> Worker {
        Worker {
            n,
            ifaces: HashMap::new(),
            on_bad_peer,
        }
    }

    fn run(mut self, wake: &EventFd, cmds: mpsc::Receiver<Cmd>) {
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
        loop {
            let busy = self.ifaces.values().any(|i| !i.sleeping);
            let timeout = if busy {
                EpollTimeout::ZERO
            } else {
                EpollTimeout::NONE
            };
            let n = match epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => 0,
                Err(e) => {
                    tracing::error!(worker = self.n, error = %e, "epoll failed; worker stops");
                    return;
                }
            };
            for ev in &events[..n] {
                let t = ev.data();
                if t == WAKE_TOKEN {
                    let _ = wake.read();
                    while let Ok(c) = cmds.try_recv() {
                        match c {
                            Cmd::Add(a) => self.add(&epoll, *a),
                            Cmd::Remove(k) => self.remove(&epoll, k),
                            Cmd::Shutdown => return,
                        }
                    }
                    continue;
                }
                let key = (t >> 16) as IfKey;
                let ring = (t & 0xffff) as usize;
                if let Some(i) = self.ifaces.get_mut(&key) {
                    if let Some(q) = i.a.conn.rx.get(ring) {
                        let n = q.ack_interrupt();
                        if let Some(c) = i.a.rings.s2m_interrupts.get(ring) {
                            c.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                    i.sleeping = false;
                    i.idle_polls = 0;
                }
            }
            let mut gone = Vec::new();
            for (k, i) in self.ifaces.iter_mut() {
                if i.sleeping {
                    continue;
                }
                match poll_iface(i) {
                    Ok(()) => {}
                    Err(e) => gone.push((*k, e)),
                }
            }
            for (k, e) in gone {
                self.remove(&epoll, k);
                match e {
                    Leave::LinkDown => {
                        tracing::debug!(
                            worker = self.n,
                            key = k,
                            "link down; interface leaves the worker"
                        )
                    }
                    Leave::BadPeer(reason) => {
                        tracing::warn!(worker = self.n, key = k, %reason, "bad memif peer; interface leaves the worker");
                        (self.on_bad_peer)(k, reason);
                    }
                }
            }
        }
    }

    fn add(&mut self, epoll: &Epoll, a: Attached) {
        let key = a.key;
        self.remove(epoll, key);
        for (r, q) in a.conn.rx.iter().enumerate() {
            if let Err(e) = epoll.add(
                q.event_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, ring_token(key, r)),
            ) {
                tracing::warn!(key, ring = r, error = %e, "cannot watch a ring's eventfd");
            }
            // Polling interfaces never want interrupts; the others start
            // polling and unmask when idle.
            q.set_interrupts(false);
        }
        tracing::debug!(worker = self.n, key, rx_mode = %a.rx_mode, "interface joins the worker");
        self.ifaces.insert(
            key,
            Iface {
                a,
                idle_polls: 0,
                sleeping: false,
            },
        );
    }

    fn remove(&mut self, epoll: &Epoll, key: IfKey) {
        if let Some(i) = self.ifaces.remove(&key) {
            for q in &i.a.conn.rx {
                // The fd may already be closed by the peer side; ignore.
                let _ = epoll.delete(q.event_fd());
            }
        }
    }
}

/// Why an interface leaves its worker.
enum Leave {
    LinkDown,
    BadPeer(String),
}

/// One turn on one interface: drain every rx ring. `Err` when the
/// interface must leave the worker.
fn poll_iface(i: &mut Iface) -> Result<(), Leave> {
    let a = &mut i.a;
    if !a.conn.link.is_up() {
        return Err(Leave::LinkDown);
    }
    let mut got = 0usize;
    for q in a.conn.rx.iter_mut() {
        got += drain(q, &a.counters)?;
    }
    if got > 0 {
        i.idle_polls = 0;
        return Ok(());
    }
    i.idle_polls = i.idle_polls.saturating_add(1);
    let sleep = match a.rx_mode {
        RxMode::Polling => false,
        RxMode::Interrupt => true,
        RxMode::Adaptive => i.idle_polls >= ADAPTIVE_IDLE_POLLS,
    };
    if sleep {
        // Unmask, then look again: a frame published between the last
        // poll and the unmask raised no interrupt.
        for q in a.conn.rx.iter() {
            q.set_interrupts(true);
        }
        let mut late = 0;
        for q in a.conn.rx.iter_mut() {
            late += drain(q, &a.counters)?;
        }
        if late == 0 {
            i.sleeping = true;
        } else {
            for q in a.conn.rx.iter() {
                q.set_interrupts(false);
            }
        }
    }
    Ok(())
}

fn drain(q: &mut MasterRx, c: &IfCounters) -> Result<usize, Leave> {
    let mut bytes = 0u64;
    let n = q
        .rx_each(BURST, |_, _, _, d| {
            bytes += d.length as u64;
            true
        })
        .map_err(|e| {
            c.errors.fetch_add(1, Ordering::Relaxed);
            Leave::BadPeer(format!("bad descriptor: {e}"))
        })?;
    if n > 0 {
        c.rx_packets.fetch_add(n as u64, Ordering::Relaxed);
        c.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
        c.drop_no_route.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(n)
}
