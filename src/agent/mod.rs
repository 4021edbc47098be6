//! memifd, the node agent.
//!
//! - [`Agent`] (this file): start, the parts it holds, shutdown;
//! - `ops`: what the API can ask (attach, detach, gc, get, list, status,
//!   uplinks, pod annotations) and the checks a request passes;
//! - `registry`: the attachments and the memif control thread's events;
//! - `persist` and [`state`]: the state file, written with group commit,
//!   and the restore on start;
//! - [`api_server`]: the API socket; [`binder`]: the netns thread;
//!   [`config`]; [`kube`]: pod annotations; [`metrics`]: `/metrics`.
//!
//! Threads: tokio runs the API, persistence and metrics, and never blocks:
//! kernel work goes to the blocking pool, binds to the `netns` thread, file
//! writes to the persistence task. One `memif-control` thread accepts
//! memif clients and runs their handshakes for every listener; dataplane
//! workers own the rings of connected interfaces; one `netlink` thread
//! holds memifd's netlink socket.

pub mod api_server;
pub mod binder;
pub mod caps;
pub mod config;
#[cfg(feature = "kube")]
pub mod kube;
pub mod metrics;
pub mod nodes;
mod ops;
mod persist;
mod registry;
pub mod state;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::api::PodRef;
use crate::dataplane::Dataplane;
use crate::link::{HostNet, KernelHost};
use crate::memif::master::Limits;
use crate::memif::server::{Server, ServerConfig};

use binder::Binder;
use config::Config;
use persist::Persistence;
use registry::{Registry, Shared};

pub use ops::{check_request, check_spec};

/// Where pod annotations come from (the Kubernetes API in memifd; a fake
/// in tests). Errors are one line with their causes.
pub trait AnnotationSource: Send + Sync {
    fn annotations<'a>(&'a self, pod: &'a PodRef) -> AnnotationsFuture<'a>;
}

/// What [`AnnotationSource::annotations`] returns.
pub type AnnotationsFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<BTreeMap<String, String>, String>> + Send + 'a>,
>;

/// Fatal start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start a thread or fd")]
    Io(#[source] std::io::Error),
    #[error("cannot start the memif control thread")]
    Server(#[source] crate::memif::socket::SocketError),
    #[error("cannot start the dataplane (underlay {0})")]
    Underlay(String, #[source] std::io::Error),
}

/// memifd's core: everything the API can ask for.
pub struct Agent {
    cfg: Config,
    shared: Arc<Shared>,
    server: Arc<Server>,
    binder: Binder,
    /// Serializes changes (attach, detach, gc) so a key is bound once.
    ops: tokio::sync::Mutex<()>,
    persist: Persistence,
    kube: Option<Arc<dyn AnnotationSource>>,
    /// Networks across nodes, when this node carries them.
    nodes: Option<Arc<nodes::Nodes>>,
    started: Instant,
}

impl Agent {
    /// Starts the threads and the persistence task (call inside a tokio
    /// runtime), restores the state file, and returns the agent ready to
    /// serve. `kube` is the Kubernetes lookup, if any.
    pub async fn start(
        cfg: Config,
        kube: Option<Arc<dyn AnnotationSource>>,
    ) -> Result<Arc<Agent>, StartError> {
        Self::start_with(cfg, kube, Box::new(KernelHost::default()), None).await
    }

    /// [`Agent::start`] with the host kernel of the caller's choosing and,
    /// when `cross` is given, networks carried to other nodes.
    pub async fn start_with(
        cfg: Config,
        kube: Option<Arc<dyn AnnotationSource>>,
        host: Box<dyn HostNet>,
        cross: Option<nodes::CrossNode>,
    ) -> Result<Arc<Agent>, StartError> {
        // Workers report bad peers to the shared state, made just after.
        let slot: Arc<OnceLock<Weak<Shared>>> = Arc::new(OnceLock::new());
        let w = slot.clone();
        let on_bad: crate::dataplane::OnBadPeer = Arc::new(move |id, ifid, reason| {
            if let Some(s) = w.get().and_then(Weak::upgrade) {
                s.on_bad_peer(id, ifid, reason)
            }
        });
        let underlay = cross.as_ref().map(|c| c.underlay);
        let dataplane = Arc::new(
            Dataplane::spawn(cfg.workers, host, on_bad, underlay).map_err(|e| {
                StartError::Underlay(
                    underlay.map_or_else(String::new, |u| u.local.to_string()),
                    e,
                )
            })?,
        );
        let nodes = cross.map(|c| nodes::Nodes::start(c, dataplane.clone()));
        let shared = Arc::new(Shared {
            reg: Mutex::new(Registry::default()),
            dataplane,
            server: OnceLock::new(),
        });
        let _ = slot.set(Arc::downgrade(&shared));
        let sink_shared = Arc::downgrade(&shared);
        let server = Arc::new(
            Server::spawn(
                ServerConfig {
                    name: "memifd".into(),
                    limits: Limits::default(),
                    handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
                    max_pending: 64,
                },
                Box::new(move |id, ev| {
                    if let Some(s) = sink_shared.upgrade() {
                        s.on_event(id, ev)
                    }
                }),
            )
            .map_err(StartError::Server)?,
        );
        let _ = shared.server.set(Arc::downgrade(&server));
        let binder = Binder::spawn().map_err(StartError::Io)?;
        let (persist, persisted) = Persistence::new();
        let agent = Arc::new(Agent {
            cfg,
            shared,
            server,
            binder,
            ops: tokio::sync::Mutex::new(()),
            persist,
            kube,
            nodes,
            started: Instant::now(),
        });
        // Rules of a memifd that crashed; then ours come back in restore.
        let dp = agent.shared.dataplane.clone();
        let _ = tokio::task::spawn_blocking(move || dp.clean_stale_steering()).await;
        agent.restore().await;
        agent.publish_local();
        agent.persist.spawn(Arc::downgrade(&agent), persisted);
        Ok(agent)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Before exit: deletes the PBL steering rules (the uplinks and their
    /// routes go with the process; rules would stay behind). The state
    /// file is kept: the next start restores them.
    pub async fn shutdown(&self) {
        let dp = self.shared.dataplane.clone();
        let _ = tokio::task::spawn_blocking(move || dp.remove_steering()).await;
    }
}
