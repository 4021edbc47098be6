//! memifctl: operator CLI for memif-cni.
use clap::{Parser, Subcommand};
use memif_cni::ctl;

#[derive(Parser)]
#[command(name = "memifctl", version, about = "memif-cni operator tool")]
struct Cli {
    /// Log filter (e.g. debug, memif_cni=trace); default MEMIF_LOG or info.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a memif endpoint (master or slave) that receives, sends or echoes frames.
    Peer(ctl::peer::PeerOpts),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    ctl::init_logging(cli.log.as_deref());
    match cli.cmd {
        Cmd::Peer(o) => match ctl::peer::run(&o) {
            Ok(r) => {
                if o.json {
                    println!("{}", serde_json::to_string(&r).expect("report serializes"));
                } else {
                    println!("{r}");
                }
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("memifctl peer: {e}");
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    eprintln!("  caused by: {s}");
                    src = s.source();
                }
                std::process::ExitCode::FAILURE
            }
        },
    }
}
