//! memifctl: operator CLI for memif-cni.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use memif_cni::ctl;

#[derive(Parser)]
#[command(name = "memifctl", version = memif_cni::VERSION, about = "memif-cni operator tool")]
struct Cli {
    /// Log filter (e.g. debug, memif_cni=trace); default MEMIF_LOG or info.
    #[arg(long, global = true)]
    log: Option<String>,
    /// memifd's API socket; default MEMIFD_SOCKET or /run/memif-cni/memifd.sock.
    #[arg(long, global = true, value_name = "PATH")]
    api: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a memif endpoint (master or slave) that receives, sends or echoes frames.
    Peer(ctl::peer::PeerOpts),
    /// Show memifd's interfaces, addresses, counters or status (VPP-style).
    Show(ctl::show::ShowOpts),
    /// Connect to a memif master as a small host: print frames, answer
    /// ARP/ND/ping for --ip, and ping through the master with --ping.
    Client(ctl::client::ClientOpts),
    /// Ask memifd for a memif server in a network namespace (what the CNI
    /// plugin does on ADD), without Kubernetes.
    Attach(ctl::manage::AttachOpts),
    /// Remove an attachment (what the plugin does on DEL); idempotent.
    Detach(ctl::manage::DetachOpts),
    /// memifd's attachments, one line each.
    List(ctl::manage::ListOpts),
}

/// Prints `what: error`, its causes and a hint, to stderr.
fn report_error(what: &str, e: &dyn std::error::Error, hint: Option<&str>) {
    eprintln!("memifctl {what}: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        eprintln!("  caused by: {s}");
        src = s.source();
    }
    if let Some(h) = hint {
        eprintln!("  hint: {h}");
    }
}

/// Prints an API command's output, or its error with a hint.
fn api_command(what: &str, r: Result<String, memif_cni::api::ClientError>) -> ExitCode {
    match r {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let e = ctl::show::ShowError::Api(e);
            report_error(what, &e, e.hint());
            ExitCode::FAILURE
        }
    }
}

fn api_path(cli: &Cli) -> PathBuf {
    cli.api
        .clone()
        .or_else(|| std::env::var_os("MEMIFD_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(memif_cni::api::DEFAULT_SOCKET))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    memif_cni::logging::init(cli.log.as_deref(), "MEMIF_LOG", "info", true);
    match &cli.cmd {
        Cmd::Peer(o) => match ctl::peer::run(o) {
            Ok(r) => {
                if o.json {
                    println!("{}", serde_json::to_string(&r).expect("report serializes"));
                } else {
                    println!("{r}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                report_error("peer", &e, None);
                ExitCode::FAILURE
            }
        },
        Cmd::Show(o) => {
            let path = api_path(&cli);
            match ctl::show::run(&o.what, &path, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                // `memifctl show ... | head`: not an error.
                Err(ctl::show::ShowError::Output(e))
                    if e.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    report_error("show", &e, e.hint());
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Attach(o) => api_command("attach", ctl::manage::attach(o, &api_path(&cli))),
        Cmd::Detach(o) => api_command("detach", ctl::manage::detach(o, &api_path(&cli))),
        Cmd::List(o) => api_command("list", ctl::manage::list(o, &api_path(&cli))),
        Cmd::Client(o) => {
            let stop = ctl::client::stop_on_ctrl_c();
            let result = ctl::client::run(o, &stop, &mut std::io::stdout().lock());
            match result {
                Ok(r) => {
                    if o.json {
                        println!("{}", serde_json::to_string(&r).expect("report serializes"));
                    } else {
                        println!("{r}");
                    }
                    if r.success() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    report_error("client", &e, None);
                    ExitCode::FAILURE
                }
            }
        }
    }
}
