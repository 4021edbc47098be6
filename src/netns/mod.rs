//! Network namespaces: a guard that enters one and restores the original on
//! every path (panics included), and a helper that runs a closure inside a
//! namespace on a dedicated thread, so no shared worker thread ever changes
//! namespace.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

/// Namespace errors.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("namespace thread failed: {0}")]
    Thread(String),
}

/// While alive, the current thread is in another network namespace; on drop
/// it returns to the one it was in.
#[derive(Debug)]
pub struct NetnsGuard {
    orig: File,
}

impl NetnsGuard {
    /// Moves the calling thread into the namespace at `path`.
    pub fn enter(path: &Path) -> Result<NetnsGuard, NetnsError> {
        let open = |p: &Path| {
            File::open(p).map_err(|source| NetnsError::Open {
                path: p.to_path_buf(),
                source,
            })
        };
        let orig = open(Path::new("/proc/thread-self/ns/net"))?;
        let target = open(path)?;
        setns(&target, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(NetnsGuard { orig })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.orig, CloneFlags::CLONE_NEWNET) {
            // The thread is left in the pod's namespace: it must not run
            // anything else. Dedicated threads end right after the guard.
            tracing::error!(error = %e, "cannot restore the original network namespace");
        }
    }
}

/// Runs `f` inside the network namespace at `path` on a fresh thread and
/// returns its result. `None` as path runs it in the current namespace.
pub fn run_in<T, F>(path: Option<&Path>, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = path.map(Path::to_path_buf);
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            let _guard = match &path {
                Some(p) => Some(NetnsGuard::enter(p)?),
                None => None,
            };
            Ok(f())
        })
        .map_err(|e| NetnsError::Thread(e.to_string()))?
        .join()
        .map_err(|_| NetnsError::Thread("panicked".into()))?
}
