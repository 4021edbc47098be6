//! Helpers shared by the in-process memif tests (`loopback.rs`,
//! `hostile.rs`). Nothing here needs root: every server listens on an
//! abstract socket whose name carries the process id and the test's name, so
//! tests running in parallel (and concurrent `cargo test` runs) never meet.
//!
//! Every wait is bounded: server events use `recv_timeout`, control channels
//! get `SO_RCVTIMEO`, so a broken library fails a test instead of hanging it.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod kube_standin;

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use memif_cni::memif::master::MasterConnection;
use memif_cni::memif::server::{self, ServerConfig, ServerEvent, ServerHandle};
use memif_cni::memif::socket::{Channel, Listener, SocketAddr, SocketError};
use memif_cni::memif::wire::{Hello, Message, REASON_LEN};
use memif_cni::memif::{
    InterfaceConfig, MasterRx, MasterTx, PacketBuf, SlaveConfig, SlaveConnection, SlaveError,
    SlaveRx, SlaveTx,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

/// Upper bound for anything we wait for; only reached when a test fails.
pub const WAIT: Duration = Duration::from_secs(5);
/// The library's default frame limit (jumbo ethernet).
pub const MAX_FRAME: usize = 9216;

/// An abstract socket address unique to this process and test.
pub fn unique_addr(name: &str) -> SocketAddr {
    SocketAddr::Abstract(format!("memif-test-{}-{}", std::process::id(), name))
}

/// An interface config named after its id (`if<id>`).
pub fn iface(id: u32) -> InterfaceConfig {
    InterfaceConfig::new(id, &format!("if{id}"))
}

/// A small slave config: one queue each way, 64-slot rings.
pub fn slave_cfg(id: u32) -> SlaveConfig {
    SlaveConfig {
        id,
        name: format!("slave{id}"),
        log2_ring_size: 6,
        ..SlaveConfig::default()
    }
}

/// Sets `SO_RCVTIMEO` so a blocking `recv` cannot hang a test.
pub fn set_recv_timeout(chan: &Channel) {
    setsockopt(
        chan,
        sockopt::ReceiveTimeout,
        &TimeVal::new(WAIT.as_secs() as _, 0),
    )
    .expect("SO_RCVTIMEO");
}

/// `SlaveConnection::connect` with a receive timeout on the channel.
pub fn connect_slave(addr: &SocketAddr, cfg: &SlaveConfig) -> Result<SlaveConnection, SlaveError> {
    let chan = Channel::connect(addr)?;
    set_recv_timeout(&chan);
    SlaveConnection::handshake(chan, cfg)
}

/// Whether `fd` becomes readable within `ms` milliseconds.
pub fn readable(fd: BorrowedFd<'_>, ms: u16) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let n = poll(&mut fds, PollTimeout::from(ms)).expect("poll");
    n > 0
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
}

/// Waits (bounded) until the slave sees the master's DISCONNECT.
pub fn wait_master_disconnect(slave: &SlaveConnection) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(reason) = slave.poll_disconnect() {
            return reason;
        }
        assert!(
            Instant::now() < deadline,
            "slave saw no DISCONNECT within {WAIT:?}"
        );
        readable(slave.control_fd(), 100);
    }
}

/// What a peer receives of a reason: the wire field holds 95 bytes.
pub fn on_wire(reason: &str) -> &str {
    &reason[..reason.len().min(REASON_LEN - 1)]
}

#[track_caller]
pub fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected {needle:?} in {haystack:?}"
    );
}

/// A running master socket and its event stream.
pub struct TestServer {
    pub handle: ServerHandle,
    pub events: Receiver<ServerEvent>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn start(name: &str, cfg: ServerConfig, ifaces: Vec<InterfaceConfig>) -> TestServer {
        let addr = unique_addr(name);
        let listener = Listener::bind(&addr).expect("bind abstract socket");
        let (handle, events) = server::spawn(listener, cfg, ifaces).expect("spawn server");
        TestServer {
            handle,
            events,
            addr,
        }
    }

    /// A server with default settings serving `if<id>` for each id.
    pub fn with_ids(name: &str, ids: &[u32]) -> TestServer {
        Self::start(
            name,
            ServerConfig::default(),
            ids.iter().map(|&id| iface(id)).collect(),
        )
    }

    #[track_caller]
    pub fn event(&self) -> ServerEvent {
        self.events
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("no server event within {WAIT:?}: {e}"))
    }

    #[track_caller]
    pub fn connected(&self) -> Box<MasterConnection> {
        match self.event() {
            ServerEvent::Connected(c) => c,
            other => panic!("expected Connected, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn rejected(&self) -> (Option<u32>, String) {
        match self.event() {
            ServerEvent::Rejected { id, reason } => (id, reason),
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    /// The next event must be `Rejected` for `id` with the reason the peer
    /// received in DISCONNECT.
    #[track_caller]
    pub fn expect_rejected(&self, id: Option<u32>, peer_reason: &str) {
        let (got_id, reason) = self.rejected();
        assert_eq!(got_id, id, "rejected id (reason {reason:?})");
        assert_eq!(on_wire(&reason), peer_reason);
    }

    #[track_caller]
    pub fn disconnected(&self) -> (u32, String, bool) {
        match self.event() {
            ServerEvent::Disconnected {
                id,
                reason,
                by_peer,
            } => (id, reason, by_peer),
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }

    /// No event is pending.
    #[track_caller]
    pub fn assert_quiet(&self) {
        match self.events.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("unexpected server event: {other:?}"),
        }
    }

    /// The server still accepts a well-behaved slave for `id`: it connects,
    /// frames pass both ways, and its disconnect is reported.
    #[track_caller]
    pub fn assert_serves(&self, id: u32) {
        let mut slave = connect_slave(&self.addr, &slave_cfg(id))
            .unwrap_or_else(|e| panic!("well-behaved slave for id {id} failed: {e:?}"));
        let mut m = self.connected();
        assert_eq!(m.id, id);
        exchange(&mut m, &mut slave, id, 20, 100);
        slave.disconnect("test done");
        let (got, reason, by_peer) = self.disconnected();
        assert_eq!((got, by_peer), (id, true), "{reason}");
        assert!(!m.state.is_up());
    }
}

/// A deterministic frame: 4-byte tag, 4-byte sequence number, then a
/// pattern that depends on both (so misplaced bytes are caught).
pub fn frame(tag: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(7)
                .wrapping_add(tag.wrapping_mul(31))
                .wrapping_add(seq.wrapping_mul(13)) as u8
        })
        .collect();
    let head: Vec<u8> = tag
        .to_le_bytes()
        .into_iter()
        .chain(seq.to_le_bytes())
        .collect();
    let n = len.min(8);
    f[..n].copy_from_slice(&head[..n]);
    f
}

/// `count` frames tagged `tag` with sizes cycling over `lens`.
pub fn frames(tag: u32, count: usize, lens: &[usize]) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| frame(tag, i as u32, lens[i % lens.len()]))
        .collect()
}

#[track_caller]
fn check_frame(what: &str, i: usize, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: frame {i} differs: got {} bytes, want {}, first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

/// Sends `frames` slave -> master on one queue pair, receiving as the ring
/// allows, and checks every frame byte for byte, in order, with exact
/// counts and nothing extra.
#[track_caller]
pub fn pump_s2m(tx: &mut SlaveTx, rx: &mut MasterRx, frames: &[Vec<u8>]) {
    let mut bufs = PacketBuf::batch(64, MAX_FRAME);
    let (tx0, rx0) = (tx.stats(), rx.stats());
    let (mut sent, mut got, mut idle) = (0, 0, 0);
    while got < frames.len() {
        if sent < frames.len() {
            sent += tx.tx_burst(&frames[sent..]).expect("slave tx_burst");
        }
        let n = rx.rx_burst(&mut bufs).expect("master rx_burst");
        assert!(got + n <= sent, "received {} frames, sent {sent}", got + n);
        for b in &bufs[..n] {
            check_frame("s2m", got, b.as_slice(), &frames[got]);
            got += 1;
        }
        idle = if n == 0 { idle + 1 } else { 0 };
        assert!(idle < 3, "s2m stalled: sent {sent}, received {got}");
    }
    assert_eq!(rx.rx_burst(&mut bufs).expect("rx_burst"), 0, "extra frame");
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    assert_eq!(tx.stats().packets - tx0.packets, frames.len() as u64);
    assert_eq!(tx.stats().bytes - tx0.bytes, bytes);
    assert_eq!(tx.stats().drops, tx0.drops);
    assert_eq!(rx.stats().packets - rx0.packets, frames.len() as u64);
    assert_eq!(rx.stats().bytes - rx0.bytes, bytes);
}

/// Sends `frames` master -> slave on one queue pair; checks as `pump_s2m`.
#[track_caller]
pub fn pump_m2s(tx: &mut MasterTx, rx: &mut SlaveRx, frames: &[Vec<u8>]) {
    let mut bufs = PacketBuf::batch(64, MAX_FRAME);
    let (tx0, rx0) = (tx.stats(), rx.stats());
    let (mut sent, mut got, mut idle) = (0, 0, 0);
    while got < frames.len() {
        if sent < frames.len() {
            sent += tx.tx_burst(&frames[sent..]).expect("master tx_burst");
        }
        let n = rx.rx_burst(&mut bufs).expect("slave rx_burst");
        assert!(got + n <= sent, "received {} frames, sent {sent}", got + n);
        for b in &bufs[..n] {
            check_frame("m2s", got, b.as_slice(), &frames[got]);
            got += 1;
        }
        idle = if n == 0 { idle + 1 } else { 0 };
        assert!(idle < 3, "m2s stalled: sent {sent}, received {got}");
    }
    assert_eq!(rx.rx_burst(&mut bufs).expect("rx_burst"), 0, "extra frame");
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    assert_eq!(tx.stats().packets - tx0.packets, frames.len() as u64);
    assert_eq!(tx.stats().bytes - tx0.bytes, bytes);
    assert_eq!(tx.stats().drops, tx0.drops);
    assert_eq!(rx.stats().packets - rx0.packets, frames.len() as u64);
    assert_eq!(rx.stats().bytes - rx0.bytes, bytes);
}

/// Every master rx queue and every slave rx queue is empty.
#[track_caller]
pub fn assert_all_empty(m: &mut MasterConnection, s: &mut SlaveConnection) {
    let mut bufs = PacketBuf::batch(8, MAX_FRAME);
    for (q, rx) in m.rx.iter_mut().enumerate() {
        assert_eq!(rx.rx_burst(&mut bufs).unwrap(), 0, "master rx {q}");
    }
    for (q, rx) in s.rx.iter_mut().enumerate() {
        assert_eq!(rx.rx_burst(&mut bufs).unwrap(), 0, "slave rx {q}");
    }
}

/// `count` frames of `len` bytes on every queue in both directions, each
/// queue with its own tag (`tag * 100 + queue`, `+ 50` for m2s); checks
/// contents, counts, and that nothing lands on another queue.
#[track_caller]
pub fn exchange(
    m: &mut MasterConnection,
    s: &mut SlaveConnection,
    tag: u32,
    count: usize,
    len: usize,
) {
    exchange_lens(m, s, tag, count, &[len]);
}

/// As [`exchange`] with frame sizes cycling over `lens`.
#[track_caller]
pub fn exchange_lens(
    m: &mut MasterConnection,
    s: &mut SlaveConnection,
    tag: u32,
    count: usize,
    lens: &[usize],
) {
    assert_eq!(m.rx.len(), s.tx.len());
    assert_eq!(m.tx.len(), s.rx.len());
    for q in 0..s.tx.len() {
        let f = frames(tag * 100 + q as u32, count, lens);
        pump_s2m(&mut s.tx[q], &mut m.rx[q], &f);
        assert_all_empty(m, s);
    }
    for q in 0..m.tx.len() {
        let f = frames(tag * 100 + 50 + q as u32, count, lens);
        pump_m2s(&mut m.tx[q], &mut s.rx[q], &f);
        assert_all_empty(m, s);
    }
}

/// A hand-driven slave: a raw control channel on which a test sends any
/// message (or bytes) it likes.
pub struct RawPeer {
    pub chan: Channel,
    pub hello: Hello,
}

impl RawPeer {
    /// Connects and receives HELLO.
    #[track_caller]
    pub fn connect(addr: &SocketAddr) -> RawPeer {
        let chan = Channel::connect(addr).expect("connect");
        set_recv_timeout(&chan);
        let hello = match chan.recv().expect("HELLO").msg {
            Message::Hello(h) => h,
            other => panic!("expected HELLO, got {other:?}"),
        };
        RawPeer { chan, hello }
    }

    pub fn send(&self, m: &Message, fd: Option<BorrowedFd<'_>>) {
        self.chan.send(m, fd).expect("send");
    }

    /// Receives one message (bounded by `SO_RCVTIMEO`).
    #[track_caller]
    pub fn recv(&self) -> Message {
        self.chan
            .recv()
            .unwrap_or_else(|e| panic!("expected a message: {e:?}"))
            .msg
    }

    /// Sends `m`; the master must answer ACK.
    #[track_caller]
    pub fn ack(&self, m: &Message, fd: Option<BorrowedFd<'_>>) {
        self.send(m, fd);
        match self.recv() {
            Message::Ack => {}
            other => panic!("expected ACK for {:?}, got {other:?}", m.msg_type()),
        }
    }

    /// The master must send DISCONNECT and close: returns its reason.
    #[track_caller]
    pub fn expect_disconnect(&self) -> String {
        let reason = match self.recv() {
            Message::Disconnect(d) => d.reason,
            other => panic!("expected DISCONNECT, got {other:?}"),
        };
        match self.chan.recv() {
            Err(SocketError::Closed) => {}
            other => panic!("master did not close after DISCONNECT: {other:?}"),
        }
        reason
    }

    /// Sends `m`; the master must refuse it with DISCONNECT and close.
    #[track_caller]
    pub fn refused(&self, m: &Message, fd: Option<BorrowedFd<'_>>) -> String {
        self.send(m, fd);
        self.expect_disconnect()
    }

    /// Sends raw bytes; the master must refuse them.
    #[track_caller]
    pub fn refused_raw(&self, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> String {
        self.chan.send_raw(bytes, fd).expect("send_raw");
        self.expect_disconnect()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.chan.as_fd()
    }
}
