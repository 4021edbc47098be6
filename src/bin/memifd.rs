//! memifd: the memif-cni node agent. The binary only parses arguments and
//! wires the library's pieces together.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use memif_cni::agent::{self, api_server, config::Config, Agent};
use memif_cni::calico::gates;
use memif_cni::logging::error_chain;

#[derive(Parser)]
#[command(
    name = "memifd",
    version = memif_cni::VERSION,
    about = "memif-cni node agent: memif servers in pod namespaces"
)]
struct Cli {
    /// Config file (JSON); default /etc/memif-cni/memifd.json when it exists.
    #[arg(long, env = "MEMIFD_CONFIG")]
    config: Option<PathBuf>,
    /// API socket (overrides the config file).
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// State directory (overrides the config file).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on ADDR:PORT (off by default).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Kubeconfig for pod annotation lookups (default: discovery).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Never talk to the Kubernetes API.
    #[arg(long)]
    no_kubernetes: bool,
    /// Dataplane worker threads.
    #[arg(long)]
    workers: Option<usize>,
    /// This node's name (default NODE_NAME, else the host name).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// The other nodes' MemifNode objects, without Kubernetes.
    #[arg(long)]
    peers_file: Option<PathBuf>,
    /// Log filter (e.g. debug, memif_cni=trace); default MEMIF_LOG or info.
    #[arg(long)]
    log: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    memif_cni::logging::init(cli.log.as_deref(), "MEMIF_LOG", "info", true);
    let gates_env = std::env::var(gates::ENV).ok();
    let mut cfg = match Config::load(cli.config.as_deref(), gates_env.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("memifd: {}", error_chain(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(p) = cli.api_socket {
        cfg.api_socket = p;
    }
    if let Some(p) = cli.state_dir {
        cfg.state_dir = p;
    }
    if cli.metrics_listen.is_some() {
        cfg.metrics_listen = cli.metrics_listen;
    }
    if cli.kubeconfig.is_some() {
        cfg.kubeconfig = cli.kubeconfig;
    }
    if cli.no_kubernetes {
        cfg.kubernetes = false;
    }
    if let Some(w) = cli.workers {
        cfg.workers = w;
    }
    if cli.node_name.is_some() {
        cfg.node_name = cli.node_name;
    }
    if cli.peers_file.is_some() {
        cfg.peers_file = cli.peers_file;
    }
    if let Err(e) = cfg.validate() {
        eprintln!("memifd: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("memifd-ctl")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("memifd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        // Once, through the log (on stderr), not twice.
        Err(e) => {
            tracing::error!("memifd cannot go on: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> Result<(), String> {
    tracing::info!(version = memif_cni::VERSION, api_socket = %cfg.api_socket.display(),
        state = %cfg.state_file().display(), memif_enabled = cfg.feature_gates.memif_enabled(),
        gates = ?cfg.feature_gates.0, workers = cfg.workers, "memifd starting");
    // Refuse at once what would only fail at the first attach.
    match agent::caps::missing_here() {
        Ok(m) if !m.is_empty() => {
            return Err(format!(
                "memifd lacks {}: run it as root or as a privileged container (the DaemonSet does)",
                m.join(", ")
            ))
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot check memifd's privileges: {e}"),
    }
    // First of all: one memifd per state directory. A second one must not
    // restore, sweep or rewrite what the first serves.
    let _lock = agent::state::lock_dir(&cfg.state_dir).map_err(|e| error_chain(&e))?;
    tracing::info!(dir = %cfg.state_dir.display(), "state directory locked");
    let (kube, watch_client) = if cfg.kubernetes {
        match agent::kube::discover(cfg.kubeconfig.as_deref()).await {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        }
    } else {
        tracing::info!("Kubernetes lookups disabled by configuration");
        (None, None)
    };
    // Bind the API first: a second memifd must not restore (and steal) the
    // first one's listeners.
    let api = api_server::listen(&cfg.api_socket).map_err(|e| error_chain(&e))?;
    let metrics = match cfg.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?,
        ),
        None => None,
    };
    let cross = agent::nodes::configure(&cfg, watch_client).await?;
    let host = Box::new(memif_cni::link::KernelHost::default());
    let agent: Arc<Agent> = Agent::start_with(cfg, kube, host, cross)
        .await
        .map_err(|e| error_chain(&e))?;
    if let Some(l) = metrics {
        let a = agent.clone();
        tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving metrics");
        tokio::spawn(async move {
            let snap = move || (a.status(), a.list(None), a.remote().ok());
            if let Err(e) = agent::metrics::serve(l, snap).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    tracing::info!("memifd ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = api_server::serve(api, agent.clone()) => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping (state kept for the next start)"),
        _ = term.recv() => tracing::info!("terminated; stopping (state kept for the next start)"),
    }
    agent.shutdown().await;
    let _ = std::fs::remove_file(&agent.config().api_socket);
    Ok(())
}
