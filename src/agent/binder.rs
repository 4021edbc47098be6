//! The netns thread: binds listeners inside pod network namespaces.
//!
//! One dedicated OS thread (never a tokio worker) takes jobs from a
//! channel: enter the pod netns through a guard, bind, leave. The guard
//! restores the namespace on every path; a panicking job is caught, its
//! guard having already restored the namespace during unwinding, so the
//! thread keeps serving. The listener fd works from any namespace after.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::memif::socket::{Listener, SocketAddr};
use crate::netns::NetnsGuard;

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("network namespace {0} does not exist")]
    NoNetns(PathBuf),
    #[error("{0}")]
    Netns(#[source] crate::netns::NetnsError),
    #[error("cannot bind {addr} in {netns}")]
    Bind {
        addr: String,
        netns: PathBuf,
        #[source]
        source: crate::memif::socket::SocketError,
    },
    #[error("the netns thread is gone")]
    Gone,
}

type Job = (
    PathBuf,
    SocketAddr,
    oneshot::Sender<Result<Listener, BindError>>,
);

/// Handle on the netns thread.
#[derive(Clone)]
pub struct Binder {
    jobs: mpsc::Sender<Job>,
}

impl Binder {
    /// Starts the thread.
    pub fn spawn() -> std::io::Result<Binder> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || {
                for (netns, addr, reply) in rx {
                    let r = std::panic::catch_unwind(|| bind_in(&netns, &addr))
                        .unwrap_or_else(|_| Err(BindError::Gone));
                    let _ = reply.send(r);
                }
            })?;
        Ok(Binder { jobs: tx })
    }

    /// Binds `addr` inside the netns at `netns`.
    pub async fn bind(&self, netns: &Path, addr: SocketAddr) -> Result<Listener, BindError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((netns.to_path_buf(), addr, tx))
            .map_err(|_| BindError::Gone)?;
        rx.await.map_err(|_| BindError::Gone)?
    }
}

/// Whether `path` names something a netns can be entered from (a bind
/// mount of nsfs or /proc/PID/ns/net). Absent paths are the common case
/// of a pod that went away.
pub fn netns_exists(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| !m.file_type().is_dir() && !m.file_type().is_socket())
        .unwrap_or(false)
}

fn bind_in(netns: &Path, addr: &SocketAddr) -> Result<Listener, BindError> {
    if !netns_exists(netns) {
        return Err(BindError::NoNetns(netns.to_path_buf()));
    }
    let _guard = NetnsGuard::enter(netns).map_err(BindError::Netns)?;
    Listener::bind(addr).map_err(|source| BindError::Bind {
        addr: addr.to_string(),
        netns: netns.to_path_buf(),
        source,
    })
}
