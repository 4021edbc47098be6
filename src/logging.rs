//! How the binaries report: the log subscriber they install, and errors
//! with their causes on one line.

use tracing_subscriber::EnvFilter;

/// Installs the stderr log subscriber. The filter is `level` when given,
/// else the environment variable `env` (e.g. `MEMIF_LOG`), else `RUST_LOG`,
/// else `default`. Colours only when stderr is a terminal and `NO_COLOR`
/// is unset. `targets: false` leaves module paths out (the plugin's log is
/// read in the runtime's log, one line per event).
pub fn init(level: Option<&str>, env: &str, default: &str, targets: bool) {
    let filter = level
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_env(env).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_target(targets)
        .with_writer(std::io::stderr)
        .try_init();
}

/// An error and its causes on one line, `outer: cause: cause`; a cause
/// whose text the line already holds (an error that displays its source)
/// is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Shows(#[source] std::io::Error);

    #[test]
    fn chains_without_repeats() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(error_chain(&Outer(io())), "outer: disk on fire");
        assert_eq!(error_chain(&Shows(io())), "disk on fire");
    }
}
