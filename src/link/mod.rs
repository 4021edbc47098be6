//! All of memif-cni's kernel networking, on one netlink stack (the
//! rtnetlink / netlink-packet-route crates):
//!
//! - [`dummy`]: the pod's dummy interface (created, inspected, deleted),
//!   its /32 and /128 addresses and device routes;
//! - [`route`]: host routes, routes in other tables and the PBL policy
//!   rules, with the dumps the stale-rule clean-up needs;
//! - [`tun`]: the uplink TUN devices;
//! - [`sysctl`]: the few sysctls memif-cni writes;
//! - [`host`]: [`HostNet`], what the dataplane asks of the host's kernel,
//!   with its real implementation and a recording fake for tests.
//!
//! [`Netlink`] is synchronous: one netlink socket and a single-threaded
//! runtime that drives rtnetlink's futures to completion on the calling
//! thread. A socket belongs to the network namespace it was created in, so
//! a `Netlink` lives on a [`LinkThread`]: a thread that entered the
//! namespace (a pod's, for the plugin, which keeps one for the whole
//! process; the host's, for memifd) and runs every request there. Callers
//! block until their request is answered; memifd makes them off its async
//! workers.

pub mod dummy;
pub mod host;
pub mod route;
pub mod sysctl;
pub mod tun;

use std::path::{Path, PathBuf};
use std::sync::mpsc;

pub use dummy::{DummySpec, LinkState};
pub use host::{HostNet, KernelHost};

pub use route::{HostRoute, SteerRule};
pub use tun::Tun;

use crate::netns::{NetnsError, NetnsGuard};

/// Link errors.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "this kernel has no dummy link type (CONFIG_DUMMY / dummy.ko): memif-cni needs a dummy interface to hold the pod's addresses"
    )]
    NoDummy,
    #[error("an interface named {0:?} already exists in the pod netns")]
    Exists(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("netlink {op} failed: {msg}")]
    Netlink { op: String, msg: String, errno: i32 },
    #[error("cannot create TUN device {name}")]
    Tun {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl LinkError {
    /// The errno of a failed netlink request (0 for other errors).
    pub fn errno(&self) -> i32 {
        match self {
            LinkError::Netlink { errno, .. } => *errno,
            _ => 0,
        }
    }
}

/// Maps an rtnetlink error of operation `op`.
pub(crate) fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    move |e| LinkError::Netlink {
        op: op.into(),
        errno: errno(&e),
        msg: match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            other => other.to_string(),
        },
    }
}

pub(crate) fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.raw_code().abs(),
        _ => 0,
    }
}

/// A netlink connection in the calling thread's network namespace, used
/// synchronously. Not for async contexts: its calls block.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket in the current thread's namespace.
    pub fn open() -> Result<Netlink, LinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| LinkError::Other(format!("netlink runtime: {e}")))?;
        let (conn, handle, _) = rt
            .block_on(async { rtnetlink::new_connection() })
            .map_err(|e| LinkError::Other(format!("netlink socket: {e}")))?;
        // Driven whenever a request is (a current-thread runtime runs its
        // tasks inside block_on).
        rt.spawn(conn);
        Ok(Netlink { rt, handle })
    }

    /// Runs `f` with the handle to completion. The kernel answers at once;
    /// a lost answer would hang, so every request is bounded.
    pub(crate) fn run<T, F>(
        &self,
        op: &str,
        f: impl FnOnce(rtnetlink::Handle) -> F,
    ) -> Result<T, LinkError>
    where
        F: std::future::Future<Output = Result<T, LinkError>>,
    {
        let fut = f(self.handle.clone());
        self.rt.block_on(async {
            match tokio::time::timeout(NETLINK_TIMEOUT, fut).await {
                Ok(r) => r,
                Err(_) => Err(LinkError::Other(format!(
                    "netlink {op}: no answer in {NETLINK_TIMEOUT:?}"
                ))),
            }
        })
    }
}

/// How long a netlink request may take.
pub const NETLINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

type Job = Box<dyn FnOnce(&mut Netlink) + Send>;

/// A thread inside a network namespace holding one netlink connection, for
/// every request made there. It entered the namespace through a guard and
/// ends (leaving it, and closing the socket off any async context) when
/// the `LinkThread` is dropped.
pub struct LinkThread {
    netns: Option<PathBuf>,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LinkThread {
    /// Starts the thread in `netns` (`None`: the caller's namespace) and
    /// opens the connection there.
    pub fn open(netns: Option<&Path>) -> Result<LinkThread, LinkError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready, ready_rx) = mpsc::channel::<Result<(), LinkError>>();
        let path = netns.map(Path::to_path_buf);
        let thread = std::thread::Builder::new()
            .name("netlink".into())
            .spawn(move || {
                let _guard = match path.as_deref().map(NetnsGuard::enter).transpose() {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = ready.send(Err(e.into()));
                        return;
                    }
                };
                let mut nl = match Netlink::open() {
                    Ok(nl) => nl,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                for job in rx {
                    job(&mut nl);
                }
            })
            .map_err(|e| LinkError::Netns(NetnsError::Thread(e.to_string())))?;
        let r = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(LinkError::Netns(NetnsError::Thread("panicked".into()))));
        let link = LinkThread {
            netns: netns.map(Path::to_path_buf),
            jobs: Some(jobs),
            thread: Some(thread),
        };
        r.map(|()| link)
    }

    /// The namespace this thread works in (`None`: where it was started).
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// Runs `f` on the thread and returns its result.
    pub fn call<T, F>(&self, f: F) -> Result<T, LinkError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Netlink) -> Result<T, LinkError> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let gone = || LinkError::Netns(NetnsError::Thread("the netlink thread is gone".into()));
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(Box::new(move |nl| {
                let _ = tx.send(f(nl));
            }))
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

impl Drop for LinkThread {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
