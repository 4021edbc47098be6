//! memifctl: the operator's commands. The binary only parses arguments.

pub mod client;
pub mod packet;
pub mod peer;
pub mod show;

/// Sets up logging to stderr: `level` or `MEMIF_LOG`/`RUST_LOG`, default info.
pub fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = level
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_env("MEMIF_LOG").ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
