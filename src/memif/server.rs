//! A memif master socket served by its own thread: accepts slaves, runs the
//! handshake for each, serves several interface ids, reports connections
//! and disconnections as events, and disconnects on request.
//!
//! The thread never touches packet memory: connected queues are handed out
//! in [`ServerEvent::Connected`] for a dataplane worker to own.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::master::{
    Handshake, InterfaceConfig, Limits, Lookup, MasterConnection, Outcome, Reject,
};
use super::queue::ConnState;
use super::socket::{Channel, Listener, SocketAddr, SocketError};
use super::wire::{Disconnect, Message};
use crate::ids::AttachmentId;
use std::sync::Arc;

/// Disconnect code we send with our reasons.
pub const DISCONNECT_CODE: u32 = 0;

/// Socket-wide settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Name sent in HELLO.
    pub name: String,
    /// Limits announced in HELLO (per-interface limits apply after INIT).
    pub limits: Limits,
    /// A slave that has not finished its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Connections still in their handshake beyond this are refused at
    /// once, so a peer cannot exhaust our fds by connecting in a loop.
    pub max_pending: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            name: "memif-cni".into(),
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(5),
            max_pending: 64,
        }
    }
}

/// What happened on the socket.
#[derive(Debug)]
pub enum ServerEvent {
    /// A slave completed the handshake; its queues are yours.
    Connected(Box<MasterConnection>),
    /// A connected interface went down.
    Disconnected {
        id: u32,
        reason: String,
        by_peer: bool,
    },
    /// A slave was refused during the handshake; `id` is the interface id
    /// its INIT asked for (`None`: refused before INIT).
    Rejected { id: Option<u32>, reason: String },
}

/// Receives what happens on the sockets, on the server thread: keep it
/// short (forward to a channel).
pub type EventSink = Box<dyn FnMut(AttachmentId, ServerEvent) + Send>;

enum Cmd {
    AddSocket(AttachmentId, Listener, Vec<InterfaceConfig>),
    RemoveSocket(AttachmentId, Option<mpsc::Sender<()>>),
    Add(AttachmentId, InterfaceConfig),
    Remove(AttachmentId, u32),
    Disconnect(AttachmentId, u32, String),
    Shutdown,
}

/// One thread serving any number of listener sockets: memifd binds each
/// pod's listener inside the pod netns and hands it over here. Dropping it
/// stops the thread and closes every listener and connection.
pub struct Server {
    cmds: mpsc::Sender<Cmd>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// Starts the server thread with no sockets.
    pub fn spawn(cfg: ServerConfig, sink: EventSink) -> Result<Server, SocketError> {
        let wake = Arc::new(
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| SocketError::Io("eventfd", e))?,
        );
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let mut state = Loop {
            cfg,
            sockets: HashMap::new(),
            conns: HashMap::new(),
            next_token: 0,
            sink,
        };
        let w = wake.clone();
        let thread = std::thread::Builder::new()
            .name("memif-control".into())
            .spawn(move || state.run(&w, cmd_rx))
            .map_err(|e| {
                SocketError::Io("spawn", nix::Error::from_raw(e.raw_os_error().unwrap_or(0)))
            })?;
        Ok(Server {
            cmds: cmd_tx,
            wake,
            thread: Some(thread),
        })
    }

    fn send(&self, c: Cmd) {
        if self.cmds.send(c).is_ok() {
            let _ = self.wake.write(1);
        }
    }

    /// Serves `listener` (already bound, possibly inside another netns) as
    /// socket `id` with the given interfaces. An existing socket `id` is
    /// replaced (its connections closed).
    pub fn add_socket(&self, id: AttachmentId, listener: Listener, ifaces: Vec<InterfaceConfig>) {
        self.send(Cmd::AddSocket(id, listener, ifaces))
    }
    /// Closes socket `id`, its listener and every connection on it.
    pub fn remove_socket(&self, id: AttachmentId) {
        self.send(Cmd::RemoveSocket(id, None))
    }
    /// Like [`Server::remove_socket`], and returns a receiver that gets a
    /// message once the listener is closed, so its name can be bound again.
    pub fn remove_socket_acked(&self, id: AttachmentId) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel();
        self.send(Cmd::RemoveSocket(id, Some(tx)));
        rx
    }
    /// Serves a new interface id on socket `sock`.
    pub fn add_interface(&self, sock: AttachmentId, cfg: InterfaceConfig) {
        self.send(Cmd::Add(sock, cfg))
    }
    /// Stops serving an id (disconnecting its peer).
    pub fn remove_interface(&self, sock: AttachmentId, id: u32) {
        self.send(Cmd::Remove(sock, id))
    }
    /// Disconnects the peer of `id` with a reason (e.g. a bad descriptor).
    pub fn disconnect(&self, sock: AttachmentId, id: u32, reason: impl Into<String>) {
        self.send(Cmd::Disconnect(sock, id, reason.into()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.send(Cmd::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Controls a server of one socket (see [`spawn`]).
pub struct ServerHandle {
    server: Server,
    addr: SocketAddr,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

const ONLY_SOCKET: AttachmentId = AttachmentId(0);

impl ServerHandle {
    /// Serves a new interface id on this socket.
    pub fn add_interface(&self, cfg: InterfaceConfig) {
        self.server.add_interface(ONLY_SOCKET, cfg)
    }
    /// Stops serving an id (disconnecting its peer).
    pub fn remove_interface(&self, id: u32) {
        self.server.remove_interface(ONLY_SOCKET, id)
    }
    /// Disconnects the peer of `id` with a reason (e.g. a bad descriptor).
    pub fn disconnect(&self, id: u32, reason: impl Into<String>) {
        self.server.disconnect(ONLY_SOCKET, id, reason)
    }
    pub fn addr(&self) -> &SocketAddr {
        &self.addr
    }
}

/// Starts serving one `listener` (already bound, possibly inside another
/// netns) with the given interfaces, on its own thread. Dropping the handle
/// stops the thread and closes the listener and every connection.
pub fn spawn(
    listener: Listener,
    cfg: ServerConfig,
    interfaces: Vec<InterfaceConfig>,
) -> Result<(ServerHandle, mpsc::Receiver<ServerEvent>), SocketError> {
    listener.set_nonblocking()?;
    let (ev_tx, ev_rx) = mpsc::channel();
    let addr = listener.addr().clone();
    let server = Server::spawn(
        cfg,
        Box::new(move |_, ev| {
            let _ = ev_tx.send(ev);
        }),
    )?;
    server.add_socket(ONLY_SOCKET, listener, interfaces);
    Ok((ServerHandle { server, addr }, ev_rx))
}

struct Sock {
    listener: Listener,
    ifaces: HashMap<u32, Iface>,
}

struct Iface {
    cfg: InterfaceConfig,
    /// Token of the connection that holds this id (from INIT on).
    conn: Option<u64>,
}

struct Conn {
    sock: AttachmentId,
    chan: Channel,
    hs: Handshake,
    deadline: Option<Instant>,
    state: Option<Arc<ConnState>>,
}

struct Loop {
    cfg: ServerConfig,
    sockets: HashMap<AttachmentId, Sock>,
    conns: HashMap<u64, Conn>,
    next_token: u64,
    sink: EventSink,
}

impl Loop {
    fn run(&mut self, wake: &EventFd, cmds: mpsc::Receiver<Cmd>) {
        loop {
            let socks: Vec<AttachmentId> = self.sockets.keys().copied().collect();
            let tokens: Vec<u64> = self.conns.keys().copied().collect();
            let (ready_wake, ready_listen, ready) = {
                let mut fds = Vec::with_capacity(1 + socks.len() + tokens.len());
                fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
                for s in &socks {
                    fds.push(PollFd::new(
                        self.sockets[s].listener.as_fd(),
                        PollFlags::POLLIN,
                    ));
                }
                for t in &tokens {
                    fds.push(PollFd::new(self.conns[t].chan.as_fd(), PollFlags::POLLIN));
                }
                let timeout = self.next_timeout();
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::Error::EINTR) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "memif server poll failed; stopping");
                        return;
                    }
                }
                let ready = |p: &PollFd| !p.revents().unwrap_or(PollFlags::empty()).is_empty();
                let (lfds, cfds) = fds[1..].split_at(socks.len());
                (
                    ready(&fds[0]),
                    socks
                        .iter()
                        .zip(lfds)
                        .filter(|(_, p)| ready(p))
                        .map(|(s, _)| *s)
                        .collect::<Vec<_>>(),
                    tokens
                        .iter()
                        .zip(cfds)
                        .filter(|(_, p)| ready(p))
                        .map(|(t, _)| *t)
                        .collect::<Vec<_>>(),
                )
            };
            if ready_wake {
                let _ = wake.read();
                while let Ok(c) = cmds.try_recv() {
                    if !self.on_cmd(c) {
                        self.shutdown();
                        return;
                    }
                }
            }
            for s in ready_listen {
                self.accept_all(s);
            }
            for t in ready {
                self.on_readable(t);
            }
            self.expire();
        }
    }

    fn next_timeout(&self) -> PollTimeout {
        let now = Instant::now();
        match self.conns.values().filter_map(|c| c.deadline).min() {
            None => PollTimeout::NONE,
            Some(d) => {
                let ms = d.saturating_duration_since(now).as_millis().min(60_000) as u16;
                PollTimeout::from(ms.max(1))
            }
        }
    }

    fn tokens_of(&self, sock: AttachmentId) -> Vec<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| c.sock == sock)
            .map(|(t, _)| *t)
            .collect()
    }

    fn on_cmd(&mut self, c: Cmd) -> bool {
        match c {
            Cmd::AddSocket(id, listener, ifaces) => {
                if self.sockets.contains_key(&id) {
                    self.drop_socket(id, "socket replaced");
                }
                if let Err(e) = listener.set_nonblocking() {
                    tracing::error!(socket = %listener.addr(), error = %e, "cannot serve a listener");
                    return true;
                }
                let ifaces = ifaces
                    .into_iter()
                    .map(|c| (c.id, Iface { cfg: c, conn: None }))
                    .collect();
                self.sockets.insert(id, Sock { listener, ifaces });
            }
            Cmd::RemoveSocket(id, ack) => {
                self.drop_socket(id, "interface deleted");
                if let Some(a) = ack {
                    let _ = a.send(());
                }
            }
            Cmd::Add(sock, cfg) => {
                if let Some(s) = self.sockets.get_mut(&sock) {
                    let id = cfg.id;
                    match s.ifaces.get_mut(&id) {
                        Some(i) => i.cfg = cfg,
                        None => {
                            s.ifaces.insert(id, Iface { cfg, conn: None });
                        }
                    }
                }
            }
            Cmd::Remove(sock, id) => {
                let conn = self
                    .sockets
                    .get_mut(&sock)
                    .and_then(|s| s.ifaces.remove(&id))
                    .and_then(|i| i.conn);
                if let Some(t) = conn {
                    self.close(t, Some("interface deleted".into()), false);
                }
            }
            Cmd::Disconnect(sock, id, reason) => {
                let conn = self
                    .sockets
                    .get(&sock)
                    .and_then(|s| s.ifaces.get(&id))
                    .and_then(|i| i.conn);
                if let Some(t) = conn {
                    self.close(t, Some(reason), false);
                }
            }
            Cmd::Shutdown => return false,
        }
        true
    }

    fn drop_socket(&mut self, id: AttachmentId, reason: &str) {
        for t in self.tokens_of(id) {
            self.close(t, Some(reason.into()), false);
        }
        if let Some(s) = self.sockets.remove(&id) {
            tracing::debug!(socket = %s.listener.addr(), %id, "listener closed");
        }
    }

    fn shutdown(&mut self) {
        let tokens: Vec<u64> = self.conns.keys().copied().collect();
        for t in tokens {
            self.close(t, Some("memif server shutting down".into()), false);
        }
    }

    fn accept_all(&mut self, sock: AttachmentId) {
        loop {
            let Some(s) = self.sockets.get(&sock) else {
                return;
            };
            match s.listener.accept() {
                Ok(Some(chan)) => {
                    let addr = s.listener.addr();
                    let pending = self
                        .conns
                        .values()
                        .filter(|c| c.sock == sock && c.state.is_none())
                        .count();
                    if pending >= self.cfg.max_pending {
                        tracing::warn!(socket = %addr, pending, "too many handshakes in progress; refusing a slave");
                        let _ = chan.send(
                            &Message::Disconnect(Disconnect {
                                code: DISCONNECT_CODE,
                                reason: "too many connections in progress".into(),
                            }),
                            None,
                        );
                        continue;
                    }
                    let (hs, hello) = Handshake::start(&self.cfg.name, self.cfg.limits);
                    if let Err(e) = chan.send(&hello, None) {
                        tracing::warn!(socket = %addr, error = %e, "sending HELLO failed");
                        continue;
                    }
                    let t = self.next_token;
                    self.next_token += 1;
                    tracing::debug!(socket = %addr, token = t, peer = ?chan.peer_credentials(), "memif slave connected");
                    self.conns.insert(
                        t,
                        Conn {
                            sock,
                            chan,
                            hs,
                            deadline: Some(Instant::now() + self.cfg.handshake_timeout),
                            state: None,
                        },
                    );
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(socket = %s.listener.addr(), error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn on_readable(&mut self, t: u64) {
        let Some(conn) = self.conns.get_mut(&t) else {
            return;
        };
        let rx = match conn.chan.recv() {
            Ok(rx) => rx,
            Err(SocketError::Closed) => {
                self.close(t, None, true);
                return;
            }
            Err(e) => {
                // The peer gets the whole cause ("malformed message: message
                // is 64 bytes, ..."), not just the outer error.
                let mut reason = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    reason = format!("{reason}: {s}");
                    src = s.source();
                }
                self.close(t, Some(reason), false);
                return;
            }
        };
        let Some(sock) = self.sockets.get_mut(&conn.sock) else {
            return;
        };
        let ifaces = &mut sock.ifaces;
        let lookup = |id: u32| match ifaces.get_mut(&id) {
            None => Lookup::Unknown,
            Some(i) if i.conn.is_some() => Lookup::AlreadyConnected,
            Some(i) => {
                i.conn = Some(t);
                Lookup::Found(i.cfg.clone())
            }
        };
        match conn.hs.on_message(rx, lookup) {
            Ok(Outcome::Reply(m)) => {
                if let Err(e) = conn.chan.send(&m, None) {
                    self.close(t, Some(e.to_string()), true);
                }
            }
            Ok(Outcome::Connected(mut c, m)) => {
                if let Err(e) = conn.chan.send(&m, None) {
                    self.close(t, Some(e.to_string()), true);
                    return;
                }
                conn.deadline = None;
                conn.state = Some(c.state.clone());
                c.control_fd = conn.chan.as_fd().as_raw_fd();
                tracing::info!(socket = %sock.listener.addr(), id = c.id, peer = %c.peer_name,
                    s2m = c.rx.len(), m2s = c.tx.len(), regions = c.regions.len(), "memif connected");
                let sid = conn.sock;
                (self.sink)(sid, ServerEvent::Connected(c));
            }
            Err(Reject::Peer(d)) => self.close(t, Some(format!("peer: {}", d.reason)), true),
            Err(Reject::Protocol(reason)) => self.close(t, Some(reason), false),
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            self.close(t, Some("handshake timed out".into()), false);
        }
    }

    /// Ends connection `t`. `reason` is sent as DISCONNECT when we are the
    /// one ending it (`by_peer == false`).
    fn close(&mut self, t: u64, reason: Option<String>, by_peer: bool) {
        let Some(conn) = self.conns.remove(&t) else {
            return;
        };
        let reason = reason.unwrap_or_else(|| "peer closed the connection".into());
        if !by_peer {
            let _ = conn.chan.send(
                &Message::Disconnect(Disconnect {
                    code: DISCONNECT_CODE,
                    reason: reason.clone(),
                }),
                None,
            );
        }
        let id = conn.hs.id();
        let addr = match self.sockets.get_mut(&conn.sock) {
            Some(s) => {
                // Free the id this connection held. The lookup reserves it
                // before INIT's mode and secret checks, so a refused INIT
                // holds it too even though the handshake never learned the id.
                for i in s.ifaces.values_mut().filter(|i| i.conn == Some(t)) {
                    i.conn = None;
                }
                s.listener.addr().to_string()
            }
            None => String::from("?"),
        };
        match (conn.state, id) {
            (Some(state), Some(id)) => {
                state.set_down();
                tracing::info!(socket = %addr, id, %reason, by_peer, "memif disconnected");
                (self.sink)(
                    conn.sock,
                    ServerEvent::Disconnected {
                        id,
                        reason,
                        by_peer,
                    },
                );
            }
            _ => {
                // The id the slave asked for, accepted or not: a refused
                // INIT (unknown id, secret, mode) still names it.
                let id = id.or(conn.hs.asked_id());
                match id {
                    Some(id) => tracing::warn!(socket = %addr, id, %reason, "memif slave rejected"),
                    None => {
                        tracing::warn!(socket = %addr, %reason, "memif slave rejected before INIT")
                    }
                }
                (self.sink)(conn.sock, ServerEvent::Rejected { id, reason });
            }
        }
    }
}
