//! `memifctl client`: a memif slave for troubleshooting, like a tiny host on
//! the pod side of a memif. It connects to a master (memifd's listener in
//! a pod netns, or any memif master), prints every frame it receives in one
//! line, answers ARP, IPv6 neighbour solicitations and ICMP/ICMPv6 echo
//! requests for its own addresses, and with `--ping` pings through the
//! master like `ping` does (resolving the next hop by ARP/ND first in
//! ethernet mode).
//!
//! The connect runs on a dedicated thread inside `--netns` (see
//! [`crate::netns::run_in`]); the control channel and the shared memory
//! keep working from our own namespace afterwards. The session itself
//! (receive, answer, ping) is in `session`.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnetwork::IpNetwork;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use serde::Serialize;
use serde_json::json;

use crate::mac::Mac;
use crate::memif::queue::DEFAULT_MAX_FRAME;
use crate::memif::socket::{Channel, SocketAddr, SocketError};
use crate::memif::{Mode, PacketBuf, RingError, SlaveConfig, SlaveConnection, SlaveError};
use crate::netns;
use crate::packet;

mod session;
use session::Session;

/// Name we give the master in INIT and CONNECT.
pub const CLIENT_NAME: &str = "memifctl-client";
/// The MAC CalicoVPP's examples give memif clients.
pub const DEFAULT_MAC: &str = "02:00:00:00:00:01";
/// ARP/ND attempts for the next hop before giving up, one per second.
const RESOLVE_TRIES: u32 = 3;
const RESOLVE_EVERY: Duration = Duration::from_secs(1);
/// Frames per receive burst.
const BURST: usize = 32;
/// Longest sleep between checks of the stop flag.
const TICK: Duration = Duration::from_millis(100);
/// TTL / hop limit of what we originate.
const TTL: u8 = 64;

/// `memifctl client` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientOpts {
    /// The master's socket: `@name` (abstract, e.g. @memif-eth1) or a path.
    #[arg(long)]
    pub socket: SocketAddr,
    /// Network namespace to connect in (e.g. /var/run/netns/pod1 or
    /// /proc/PID/ns/net); abstract names are per namespace.
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// Interface mode: ethernet frames or bare IP packets.
    #[arg(long, default_value = "ethernet")]
    pub mode: Mode,
    /// Interface id to ask for.
    #[arg(long, default_value_t = 0)]
    pub id: u32,
    #[arg(long, default_value = "")]
    pub secret: String,
    /// Our address (repeat for IPv4 and IPv6): ARP, neighbour solicitations
    /// and echo requests for it are answered; the source of --ping.
    #[arg(long = "ip", value_name = "ADDR[/LEN]")]
    pub ips: Vec<IpNetwork>,
    /// Our MAC (ethernet mode).
    #[arg(long, default_value = DEFAULT_MAC)]
    pub mac: Mac,
    /// Accept frames to any destination MAC, not only ours and group ones.
    #[arg(long)]
    pub promiscuous: bool,
    /// Send ICMP (ICMPv6) echo requests to DST and report replies.
    #[arg(long, value_name = "DST")]
    pub ping: Option<IpAddr>,
    /// With --ping: requests to send. Without: echo requests to answer.
    /// Then stop.
    #[arg(long)]
    pub count: Option<u64>,
    /// Seconds between echo requests.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Bytes of echo payload.
    #[arg(long, default_value_t = 56)]
    pub size: usize,
    /// Stop after this many seconds connected.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Give up if no master accepts (and completes the handshake) within
    /// this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Queues per direction.
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// Print JSON lines (events, then the summary) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum MemifClientError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("no memif master accepted on {addr} within {secs:.1} s")]
    NoMaster {
        addr: SocketAddr,
        secs: f64,
        #[source]
        source: SocketError,
    },
    #[error("handshake with the master on {addr} failed")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: SlaveError,
    },
    #[error("interrupted before connecting")]
    Interrupted,
    #[error("ring error (the master broke the ring protocol)")]
    Ring(#[from] RingError),
    #[error("writing output")]
    Output(#[source] std::io::Error),
}

/// Why the client stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "why", content = "detail")]
pub enum Stop {
    Count,
    Duration,
    Interrupted,
    MasterDisconnected(String),
    Unresolved(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Count => f.write_str("count reached"),
            Stop::Duration => f.write_str("duration elapsed"),
            Stop::Interrupted => f.write_str("interrupted"),
            Stop::MasterDisconnected(r) => write!(f, "master disconnected: {r}"),
            Stop::Unresolved(what) => f.write_str(what),
        }
    }
}

/// Ping results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PingStats {
    pub dst: IpAddr,
    /// The next hop's MAC (ethernet mode), once resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop_mac: Option<String>,
    pub transmitted: u64,
    pub received: u64,
    pub duplicates: u64,
    /// ICMP errors about our requests ("fragmentation needed", "packet
    /// too big"), as ping's "+N errors".
    pub errors: u64,
    pub loss_percent: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_min_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_avg_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_max_ms: Option<f64>,
}

/// What the client saw and did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientReport {
    /// The master's name (HELLO) and interface name (CONNECTED).
    pub master: String,
    pub remote_interface: String,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames we could not send (ring full).
    pub tx_dropped: u64,
    pub arp_replies: u64,
    pub neighbor_adverts: u64,
    pub echo_replies: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingStats>,
    pub stopped: Stop,
}

impl ClientReport {
    /// Success: when pinging, at least one reply came back.
    pub fn success(&self) -> bool {
        self.ping.as_ref().is_none_or(|p| p.received > 0)
    }
}

impl fmt::Display for ClientReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.ping {
            writeln!(f, "--- {} ping statistics ---", p.dst)?;
            write!(
                f,
                "{} transmitted, {} received, ",
                p.transmitted, p.received
            )?;
            if p.duplicates > 0 {
                write!(f, "+{} duplicates, ", p.duplicates)?;
            }
            if p.errors > 0 {
                write!(f, "+{} errors, ", p.errors)?;
            }
            write!(f, "{}% loss", fmt_percent(p.loss_percent))?;
            if let (Some(min), Some(avg), Some(max)) = (p.rtt_min_ms, p.rtt_avg_ms, p.rtt_max_ms) {
                write!(f, ", rtt min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms")?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "rx {} frames {} bytes, tx {} frames {} bytes ({} dropped)",
            self.rx_frames, self.rx_bytes, self.tx_frames, self.tx_bytes, self.tx_dropped
        )?;
        writeln!(
            f,
            "answered {} arp, {} neighbor solicitations, {} echo requests",
            self.arp_replies, self.neighbor_adverts, self.echo_replies
        )?;
        write!(f, "stopped: {}", self.stopped)
    }
}

fn fmt_percent(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}

/// A flag set by the first Ctrl-C (SIGINT); a second one exits at once
/// with status 130. The handler runs on its own thread.
pub fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let spawned = std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!(error = %e, "no Ctrl-C handler");
                    return;
                }
            };
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    f.store(true, Ordering::SeqCst);
                }
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no Ctrl-C handler");
    }
    flag
}

/// Checks the options that clap cannot.
fn validate(o: &ClientOpts) -> Result<(), MemifClientError> {
    let usage = |m: String| Err(MemifClientError::Usage(m));
    if o.mode == Mode::PuntInject {
        return usage("--mode must be ethernet or ip".into());
    }
    if !(o.interval.is_finite() && o.interval >= 0.001) {
        return usage(format!(
            "--interval {} must be at least 0.001 s",
            o.interval
        ));
    }
    if let Some(d) = o.duration {
        if !(d.is_finite() && d >= 0.0) {
            return usage(format!("--duration {d} must be a number of seconds"));
        }
    }
    if !(o.connect_timeout.is_finite() && o.connect_timeout >= 0.0) {
        return usage(format!(
            "--connect-timeout {} must be a number of seconds",
            o.connect_timeout
        ));
    }
    if o.queues == 0 {
        return usage("--queues must be at least 1".into());
    }
    // 20/40 bytes of IP and 8 of ICMP must fit the largest frame.
    if o.size > DEFAULT_MAX_FRAME - packet::ETH_HLEN - 48 {
        return usage(format!(
            "--size {} above {}",
            o.size,
            DEFAULT_MAX_FRAME - packet::ETH_HLEN - 48
        ));
    }
    if let Some(dst) = o.ping {
        if !o.ips.iter().any(|n| n.ip().is_ipv4() == dst.is_ipv4()) {
            return usage(format!(
                "--ping {dst} needs an --ip of the same family as its source"
            ));
        }
        if dst.is_unspecified() || dst.is_multicast() {
            return usage(format!("--ping {dst}: not a unicast address"));
        }
    }
    Ok(())
}

/// Connects (retrying until the master is there or the timeout), then
/// runs until count, duration, disconnect or `stop`. Events go to `out`
/// as they happen; the summary is returned.
pub fn run(
    o: &ClientOpts,
    stop: &AtomicBool,
    out: &mut dyn Write,
) -> Result<ClientReport, MemifClientError> {
    validate(o)?;
    let conn = connect(o, stop)?;
    let mut c = Session::new(o, conn, out);
    let result = c.run(stop);
    let Session { conn, report, .. } = c;
    if !matches!(report.stopped, Stop::MasterDisconnected(_)) {
        conn.disconnect("memifctl client done");
    }
    result.map(|()| report)
}

fn connect(o: &ClientOpts, stop: &AtomicBool) -> Result<SlaveConnection, MemifClientError> {
    let cfg = SlaveConfig {
        id: o.id,
        mode: o.mode,
        secret: o.secret.clone(),
        name: CLIENT_NAME.into(),
        s2m_queues: o.queues,
        m2s_queues: o.queues,
        ..SlaveConfig::default()
    };
    let timeout = Duration::from_secs_f64(o.connect_timeout);
    let deadline = Instant::now() + timeout;
    let chan = loop {
        let addr = o.socket.clone();
        // Abstract names resolve in the caller's netns: connect there.
        match netns::run_in(o.netns.as_deref(), move || Channel::connect(&addr))? {
            Ok(c) => break c,
            Err(source) if Instant::now() >= deadline => {
                return Err(MemifClientError::NoMaster {
                    addr: o.socket.clone(),
                    secs: o.connect_timeout,
                    source,
                })
            }
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    return Err(MemifClientError::Interrupted);
                }
                tracing::debug!(error = %e, "no master yet; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    // A master that accepts and then stays silent must not hang us.
    let t = timeout.max(Duration::from_secs(1));
    if let Err(e) = setsockopt(
        &chan,
        sockopt::ReceiveTimeout,
        &TimeVal::new(t.as_secs() as _, t.subsec_micros() as _),
    ) {
        tracing::warn!(error = %e, "cannot bound the handshake");
    }
    SlaveConnection::handshake(chan, &cfg).map_err(|source| MemifClientError::Handshake {
        addr: o.socket.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        o: ClientOpts,
    }

    fn opts(args: &[&str]) -> ClientOpts {
        let mut v = vec!["client", "--socket", "@x"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).expect("parses").o
    }

    #[test]
    fn options_parse_and_validate() {
        let o = opts(&[
            "--ip",
            "10.1.0.2/24",
            "--ip",
            "fd00::2",
            "--ping",
            "fd00::1",
        ]);
        assert_eq!(o.ips.len(), 2);
        assert_eq!(o.mac.to_string(), DEFAULT_MAC);
        assert!(validate(&o).is_ok());
        let bad = |args: &[&str], want: &str| {
            let e = validate(&opts(args)).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        };
        bad(&["--ping", "10.0.0.1"], "needs an --ip");
        bad(&["--ip", "fd00::2", "--ping", "10.0.0.1"], "needs an --ip");
        bad(
            &["--ip", "10.0.0.2", "--ping", "224.0.0.1"],
            "not a unicast",
        );
        bad(&["--mode", "punt-inject"], "ethernet or ip");
        bad(&["--interval", "0"], "--interval");
        bad(&["--queues", "0"], "--queues");
        bad(&["--size", "100000"], "--size");
        assert!(Cli::try_parse_from(["c", "--socket", "@x", "--mac", "zz"]).is_err());
    }

    #[test]
    fn report_text() {
        let mut r = ClientReport {
            master: "m".into(),
            remote_interface: "i".into(),
            rx_frames: 3,
            rx_bytes: 300,
            tx_frames: 4,
            tx_bytes: 400,
            tx_dropped: 0,
            arp_replies: 1,
            neighbor_adverts: 0,
            echo_replies: 2,
            ping: None,
            stopped: Stop::MasterDisconnected("bye".into()),
        };
        assert!(r.success());
        assert_eq!(
            r.to_string(),
            "rx 3 frames 300 bytes, tx 4 frames 400 bytes (0 dropped)\n\
             answered 1 arp, 0 neighbor solicitations, 2 echo requests\n\
             stopped: master disconnected: bye"
        );
        r.ping = Some(PingStats {
            dst: "10.0.0.1".parse().unwrap(),
            next_hop_mac: None,
            transmitted: 3,
            received: 2,
            duplicates: 0,
            errors: 0,
            loss_percent: 100.0 / 3.0,
            rtt_min_ms: Some(0.1),
            rtt_avg_ms: Some(0.15),
            rtt_max_ms: Some(0.2),
        });
        assert!(r.to_string().starts_with(
            "--- 10.0.0.1 ping statistics ---\n\
             3 transmitted, 2 received, 33.3% loss, rtt min/avg/max = 0.100/0.150/0.200 ms\n"
        ));
        r.ping.as_mut().unwrap().received = 0;
        assert!(!r.success());
    }
}
