//! The attachment registry (what the API answers from) and the memif
//! control thread's events applied to it.
//!
//! The registry is a plain mutex, held only for bookkeeping: no kernel
//! work, no wait for a worker or the disk happens under it, so `get`,
//! `list` and `status` answer at once whatever attaches and detaches run.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::api::AttachRequest;
use crate::api::AttachmentKey;
use crate::dataplane::{Attached, Dataplane, IfCounters, RingCounters};
use crate::ids::AttachmentId;
use crate::memif::master::{MasterConnection, RingInfo};
use crate::memif::server::{Server, ServerEvent};
use crate::memif::shm::Region;
use crate::memif::wire::Mode;

use super::state::Persisted;

/// A connected client, as the control plane remembers it.
pub(super) struct LiveConn {
    pub peer_name: String,
    pub mode: Mode,
    pub control_fd: i32,
    pub regions: Arc<[Arc<Region>]>,
    pub s2m: Vec<(RingInfo, i32)>,
    pub m2s: Vec<(RingInfo, i32)>,
    pub rings: Arc<RingCounters>,
}

pub(super) struct Entry {
    pub request: AttachRequest,
    pub id: AttachmentId,
    pub created: u64,
    pub listener_fd: i32,
    pub counters: Arc<IfCounters>,
    pub conn: Option<LiveConn>,
}

#[derive(Default)]
pub(super) struct Registry {
    pub by_key: HashMap<AttachmentKey, Entry>,
    pub by_id: HashMap<AttachmentId, AttachmentKey>,
    pub next_id: AttachmentId,
    /// Bumped on every change that must reach the state file.
    pub generation: u64,
}

impl Registry {
    pub fn persisted(&self) -> Vec<Persisted> {
        let mut v: Vec<Persisted> = self
            .by_key
            .values()
            .map(|e| Persisted {
                request: e.request.clone(),
                socket_id: e.id,
                created: e.created,
            })
            .collect();
        v.sort_by_key(|p| p.socket_id);
        v
    }

    pub fn insert(&mut self, e: Entry) {
        self.next_id = self.next_id.max(e.id.next());
        self.by_id.insert(e.id, e.request.key.clone());
        self.by_key.insert(e.request.key.clone(), e);
    }

    pub fn remove(&mut self, key: &AttachmentKey) -> Option<Entry> {
        let e = self.by_key.remove(key)?;
        self.by_id.remove(&e.id);
        Some(e)
    }

    pub fn entry_by_id(&mut self, id: AttachmentId) -> Option<&mut Entry> {
        let key = self.by_id.get(&id)?;
        self.by_key.get_mut(key)
    }
}

/// State shared with the memif control thread's event sink and the
/// dataplane workers' callback.
pub(super) struct Shared {
    pub reg: Mutex<Registry>,
    pub dataplane: Arc<Dataplane>,
    pub server: OnceLock<Weak<Server>>,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain data behind; keep
        // serving rather than poisoning every later request.
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs on the memif control thread.
    pub fn on_event(&self, id: AttachmentId, ev: ServerEvent) {
        match ev {
            ServerEvent::Connected(c) => self.on_connected(id, *c),
            ServerEvent::Disconnected {
                id: ifid, reason, ..
            } => {
                let mut reg = self.lock();
                if let Some(e) = reg.entry_by_id(id) {
                    e.conn = None;
                    e.counters.disconnects.fetch_add(1, Relaxed);
                    tracing::info!(attachment = %e.request.key, network = %e.request.network, id = ifid, %reason, "memif client disconnected");
                }
                drop(reg);
                self.dataplane.disconnect(id);
            }
            ServerEvent::Rejected { id: ifid, reason } => {
                let mut reg = self.lock();
                if let Some(e) = reg.entry_by_id(id) {
                    e.counters.errors.fetch_add(1, Relaxed);
                    match ifid {
                        Some(ifid) => {
                            tracing::warn!(attachment = %e.request.key, id = ifid, %reason, "memif client refused")
                        }
                        None => {
                            tracing::warn!(attachment = %e.request.key, %reason, "memif client refused before it sent an interface id")
                        }
                    }
                }
            }
        }
    }

    fn on_connected(&self, id: AttachmentId, c: MasterConnection) {
        let (attached, live) = {
            let mut reg = self.lock();
            let Some(e) = reg.entry_by_id(id) else {
                // Detached while the handshake finished: dropping the
                // queues is all there is to do; the listener is already
                // gone.
                return;
            };
            let s2m_fds = c.rx.iter().map(|q| q.event_fd().as_raw_fd());
            let m2s_fds = c.tx.iter().map(|q| q.event_fd().as_raw_fd());
            let rings = Arc::new(RingCounters::new(c.rx.len(), c.tx.len()));
            let live = LiveConn {
                peer_name: c.peer_name.clone(),
                mode: c.mode,
                control_fd: c.control_fd,
                regions: c.regions.clone(),
                s2m: c.s2m_rings.iter().copied().zip(s2m_fds).collect(),
                m2s: c.m2s_rings.iter().copied().zip(m2s_fds).collect(),
                rings: rings.clone(),
            };
            e.counters.connects.fetch_add(1, Relaxed);
            tracing::info!(attachment = %e.request.key, network = %e.request.network, peer = %c.peer_name,
                rx_queues = c.rx.len(), tx_queues = c.tx.len(), "memif client connected");
            let a = Attached {
                id,
                rx_mode: e.request.spec.rx_mode,
                counters: e.counters.clone(),
                rings,
                conn: c,
            };
            (a, live)
        };
        // Without the registry lock: `get`, `list` and `status` never wait
        // for a worker. The API shows "connected" only once the worker
        // polls the rings (connect waits for it), so frames to a pod
        // reported connected are delivered.
        self.dataplane.connect(attached);
        let mut reg = self.lock();
        if let Some(e) = reg.entry_by_id(id) {
            e.conn = Some(live);
        }
    }

    /// Called on a dataplane worker: must not take the registry lock.
    pub fn on_bad_peer(&self, id: AttachmentId, ifid: u32, reason: String) {
        if let Some(server) = self.server.get().and_then(Weak::upgrade) {
            server.disconnect(id, ifid, reason);
        }
    }
}
