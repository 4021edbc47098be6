//! Persistence: the state file (format in [`super::state`]) written by one
//! task with group commit, and the restore on start.
//!
//! A change bumps the registry's generation and kicks the task; the task
//! snapshots the registry, writes the file off the async workers
//! (`spawn_blocking`), and publishes the generation it made durable. An
//! `attach` answers only once its generation is durable, so a restart
//! never disagrees with an answer; many changes between two writes share
//! one write, which keeps concurrent attaches fast.

use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::{watch, Notify};

use super::state::{self, Loaded};
use super::{binder, Agent};
use crate::dataplane::IfCounters;

#[derive(Clone, Default)]
pub(super) struct PersistState {
    durable: u64,
    failed: Option<(u64, String)>,
}

/// The agent's handle on the persistence task.
pub(super) struct Persistence {
    kick: Arc<Notify>,
    persisted: watch::Receiver<PersistState>,
}

impl Persistence {
    /// The channel pair; [`Persistence::spawn`] starts the task once the
    /// agent exists.
    pub fn new() -> (Persistence, watch::Sender<PersistState>) {
        let (tx, rx) = watch::channel(PersistState::default());
        (
            Persistence {
                kick: Arc::new(Notify::new()),
                persisted: rx,
            },
            tx,
        )
    }

    pub fn spawn(&self, agent: Weak<Agent>, tx: watch::Sender<PersistState>) {
        tokio::spawn(persister(agent, self.kick.clone(), tx));
    }

    /// Asks for a write without waiting for it.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Waits until generation `g` is in the state file.
    pub async fn wait(&self, g: u64) -> Result<(), String> {
        self.kick.notify_one();
        let mut rx = self.persisted.clone();
        let s = rx
            .wait_for(|s| s.durable >= g || s.failed.as_ref().is_some_and(|(f, _)| *f >= g))
            .await
            .map_err(|_| "the persistence task stopped".to_string())?
            .clone();
        if s.durable >= g {
            Ok(())
        } else {
            Err(s.failed.map(|(_, m)| m).unwrap_or_default())
        }
    }
}

/// Writes the state file whenever kicked.
async fn persister(agent: Weak<Agent>, kick: Arc<Notify>, tx: watch::Sender<PersistState>) {
    loop {
        kick.notified().await;
        let Some(a) = agent.upgrade() else { return };
        let (g, snapshot) = {
            let reg = a.shared.lock();
            (reg.generation, reg.persisted())
        };
        if g <= tx.borrow().durable {
            continue;
        }
        let path = a.cfg.state_file();
        drop(a);
        let r = tokio::task::spawn_blocking(move || state::save(&path, &snapshot))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        tx.send_modify(|s| match r {
            Ok(()) => s.durable = g,
            Err(e) => {
                tracing::error!(error = %e, "cannot write the state file");
                s.failed = Some((g, e));
            }
        });
    }
}

impl Agent {
    /// Re-creates every persisted attachment whose netns still exists.
    pub(super) async fn restore(&self) {
        let path = self.cfg.state_file();
        let t0 = Instant::now();
        let p2 = path.clone();
        let loaded = tokio::task::spawn_blocking(move || state::load(&p2))
            .await
            .unwrap_or(Loaded::Missing);
        let items = match loaded {
            Loaded::Missing => {
                tracing::info!(state = %path.display(), "no state file; starting empty");
                return;
            }
            Loaded::MovedAside { to, reason } => {
                tracing::error!(state = %path.display(), moved_to = %to.display(), %reason,
                    "state file unusable; moved aside, starting empty");
                return;
            }
            Loaded::Found(v) => v,
        };
        let total = items.len();
        let mut restored = 0;
        for p in items {
            let key = p.request.key.clone();
            if !binder::netns_exists(&p.request.netns) {
                tracing::info!(attachment = %key, netns = %p.request.netns.display(),
                    "dropping attachment: its netns is gone");
                continue;
            }
            let counters = Arc::<IfCounters>::default();
            self.add_port(&p.request, p.socket_id, &counters).await;
            match self.bind_and_serve(&p.request, p.socket_id).await {
                Ok(fd) => {
                    self.shared.lock().insert(super::registry::Entry {
                        request: p.request,
                        id: p.socket_id,
                        created: p.created,
                        listener_fd: fd,
                        counters,
                        conn: None,
                    });
                    restored += 1;
                }
                Err(e) => {
                    self.remove_port(p.socket_id).await;
                    tracing::warn!(attachment = %key, error = %e.message, "dropping attachment: cannot restore its listener")
                }
            }
        }
        let snapshot = self.shared.lock().persisted();
        if restored != total {
            let p2 = path.clone();
            let r = tokio::task::spawn_blocking(move || state::save(&p2, &snapshot)).await;
            if let Ok(Err(e)) = r {
                tracing::error!(state = %path.display(), error = %e, "cannot rewrite the state file");
            }
        }
        tracing::info!(
            restored,
            dropped = total - restored,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "state restored"
        );
    }
}
