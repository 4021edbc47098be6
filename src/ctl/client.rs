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
//! keep working from our own namespace afterwards.

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

use super::packet::{self, Echo, Frame, Mac, Net, L4};
use crate::memif::queue::DEFAULT_MAX_FRAME;
use crate::memif::socket::{Channel, SocketAddr, SocketError};
use crate::memif::{Mode, PacketBuf, RingError, SlaveConfig, SlaveConnection, SlaveError};
use crate::netns;

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
pub enum ClientError {
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
fn validate(o: &ClientOpts) -> Result<(), ClientError> {
    let usage = |m: String| Err(ClientError::Usage(m));
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
) -> Result<ClientReport, ClientError> {
    validate(o)?;
    let conn = connect(o, stop)?;
    let mut c = Client::new(o, conn, out);
    let result = c.run(stop);
    let Client { conn, report, .. } = c;
    if !matches!(report.stopped, Stop::MasterDisconnected(_)) {
        conn.disconnect("memifctl client done");
    }
    result.map(|()| report)
}

fn connect(o: &ClientOpts, stop: &AtomicBool) -> Result<SlaveConnection, ClientError> {
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
                return Err(ClientError::NoMaster {
                    addr: o.socket.clone(),
                    secs: o.connect_timeout,
                    source,
                })
            }
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    return Err(ClientError::Interrupted);
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
    SlaveConnection::handshake(chan, &cfg).map_err(|source| ClientError::Handshake {
        addr: o.socket.clone(),
        source,
    })
}

/// The state of `--ping`.
struct Ping {
    dst: IpAddr,
    src: IpAddr,
    id: u16,
    /// Ethernet mode: the next hop's MAC once resolved.
    next_hop: Option<Mac>,
    resolve_tries: u32,
    /// When the next request (or ARP/ND attempt) is due.
    next: Instant,
    /// Sequence number -> when it was sent.
    outstanding: HashMap<u16, Instant>,
    last_sent: Option<Instant>,
    stats: PingStats,
    rtt_sum: f64,
}

struct Client<'a> {
    o: &'a ClientOpts,
    conn: SlaveConnection,
    out: &'a mut dyn Write,
    report: ClientReport,
    ping: Option<Ping>,
    /// Echo requests answered, for `--count` without `--ping`.
    answered: u64,
}

/// Wall-clock time of day (UTC) with microseconds, like tcpdump.
fn clock() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let s = d.as_secs() % 86400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}

impl<'a> Client<'a> {
    fn new(o: &'a ClientOpts, conn: SlaveConnection, out: &'a mut dyn Write) -> Client<'a> {
        let now = Instant::now();
        let ping = o.ping.map(|dst| {
            let src = o
                .ips
                .iter()
                .map(|n| n.ip())
                .find(|ip| ip.is_ipv4() == dst.is_ipv4())
                .expect("validated: an --ip of the ping's family");
            Ping {
                dst,
                src,
                id: std::process::id() as u16,
                next_hop: None,
                resolve_tries: 0,
                next: now,
                outstanding: HashMap::new(),
                last_sent: None,
                stats: PingStats {
                    dst,
                    next_hop_mac: None,
                    transmitted: 0,
                    received: 0,
                    duplicates: 0,
                    loss_percent: 0.0,
                    rtt_min_ms: None,
                    rtt_avg_ms: None,
                    rtt_max_ms: None,
                },
                rtt_sum: 0.0,
            }
        });
        let report = ClientReport {
            master: conn.master_name.clone(),
            remote_interface: conn.remote_if_name.clone(),
            rx_frames: 0,
            rx_bytes: 0,
            tx_frames: 0,
            tx_bytes: 0,
            tx_dropped: 0,
            arp_replies: 0,
            neighbor_adverts: 0,
            echo_replies: 0,
            ping: None,
            stopped: Stop::Interrupted,
        };
        Client {
            o,
            conn,
            out,
            report,
            ping,
            answered: 0,
        }
    }

    /// One event: a text line, or a JSON object with `time` and `event`.
    fn emit(
        &mut self,
        event: &str,
        text: fmt::Arguments<'_>,
        mut fields: serde_json::Value,
    ) -> Result<(), ClientError> {
        let time = clock();
        let r = if self.o.json {
            if let Some(m) = fields.as_object_mut() {
                m.insert("time".into(), time.into());
                m.insert("event".into(), event.into());
            }
            writeln!(self.out, "{fields}")
        } else {
            writeln!(self.out, "{time} {text}")
        };
        r.map_err(ClientError::Output)
    }

    fn frame_event(&mut self, dir: &str, data: &[u8], note: &str) -> Result<(), ClientError> {
        let summary = packet::parse(self.o.mode, data).to_string();
        self.emit(
            dir,
            format_args!("{dir} {} {summary}{note}", data.len()),
            json!({"len": data.len(), "summary": summary, "note": note.trim()}),
        )
    }

    fn run(&mut self, stop: &AtomicBool) -> Result<(), ClientError> {
        let o = self.o;
        let ips: Vec<String> = o.ips.iter().map(ToString::to_string).collect();
        let (master, remote) = (
            self.report.master.clone(),
            self.report.remote_interface.clone(),
        );
        self.emit(
            "connected",
            format_args!(
                "connected to {master:?} interface {remote:?} on {} id {} mode {}{} ips {}",
                o.socket,
                o.id,
                o.mode,
                if o.mode == Mode::Ethernet {
                    format!(" mac {}", o.mac)
                } else {
                    String::new()
                },
                if ips.is_empty() {
                    "none".into()
                } else {
                    ips.join(",")
                },
            ),
            json!({"master": master, "interface": remote, "socket": o.socket.to_string(),
                   "id": o.id, "mode": o.mode, "mac": o.mac.to_string(), "ips": ips}),
        )?;
        for q in &self.conn.rx {
            q.set_interrupts(true);
        }
        let start = Instant::now();
        let deadline = o.duration.map(|d| start + Duration::from_secs_f64(d));
        let interval = Duration::from_secs_f64(o.interval);
        let linger = interval.clamp(Duration::from_secs(1), Duration::from_secs(10));
        let mut bufs = PacketBuf::batch(BURST, DEFAULT_MAX_FRAME);
        let stopped = loop {
            if stop.load(Ordering::SeqCst) {
                break Stop::Interrupted;
            }
            if let Some(reason) = self.conn.poll_disconnect() {
                // Frames it sent before leaving are still in our rings.
                self.receive(&mut bufs)?;
                self.emit(
                    "disconnected",
                    format_args!("master disconnected: {reason}"),
                    json!({"reason": reason}),
                )?;
                break Stop::MasterDisconnected(reason);
            }
            self.receive(&mut bufs)?;
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break Stop::Duration;
            }
            if let Some(s) = self.ping_tick(now, interval, linger)? {
                break s;
            }
            if self.ping.is_none() && o.count.is_some_and(|n| self.answered >= n) {
                break Stop::Count;
            }
            // Sleep until a frame, a control message, the next ping or the
            // deadline; at most a tick, to notice Ctrl-C.
            let mut wait = TICK;
            if let Some(d) = deadline {
                wait = wait.min(d.saturating_duration_since(now));
            }
            if let Some(p) = &self.ping {
                // The next request, or once all are sent, the end of the
                // wait for the last replies.
                let due = if p.stats.transmitted < o.count.unwrap_or(u64::MAX) {
                    Some(p.next)
                } else {
                    p.last_sent.map(|t| t + linger)
                };
                if let Some(due) = due {
                    wait = wait.min(due.saturating_duration_since(now));
                }
            }
            self.wait(wait);
        };
        self.finish_ping();
        self.report.stopped = stopped;
        Ok(())
    }

    fn wait(&self, d: Duration) {
        // Rounded up: a wait under a millisecond must not become a spin.
        let ms = d.as_micros().div_ceil(1000).min(u16::MAX as u128) as u16;
        let mut fds: Vec<PollFd<'_>> = self
            .conn
            .rx
            .iter()
            .map(|q| PollFd::new(q.event_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(self.conn.control_fd(), PollFlags::POLLIN));
        // EINTR and friends just end the wait early.
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }

    /// Drains every rx ring, handling each frame and sending the answers.
    fn receive(&mut self, bufs: &mut [PacketBuf]) -> Result<(), ClientError> {
        for q in 0..self.conn.rx.len() {
            // Clear the eventfd before reading, so a frame that lands after
            // the read wakes the next poll.
            self.conn.rx[q].ack_interrupt();
            loop {
                let n = self.conn.rx[q].rx_burst(bufs)?;
                if n == 0 {
                    break;
                }
                for b in &bufs[..n] {
                    let answers = self.handle(b.as_slice())?;
                    for a in answers {
                        self.send(&a)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        let sent = self.conn.tx[0].tx_burst(&[frame])?;
        if sent == 1 {
            self.report.tx_frames += 1;
            self.report.tx_bytes += frame.len() as u64;
            self.frame_event("tx", frame, "")
        } else {
            self.report.tx_dropped += 1;
            self.conn.tx[0].count_drops(1);
            self.frame_event("tx", frame, " (dropped: ring full)")
        }
    }

    fn ours(&self, ip: IpAddr) -> bool {
        self.o.ips.iter().any(|n| n.ip() == ip)
    }

    /// Handles one received frame; returns the frames to send back.
    fn handle(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, ClientError> {
        self.report.rx_frames += 1;
        self.report.rx_bytes += data.len() as u64;
        let o = self.o;
        let f = packet::parse(o.mode, data);
        let for_us = match &f.eth {
            Some(e) => o.promiscuous || e.dst == o.mac || e.dst.is_multicast(),
            None => true,
        };
        self.frame_event(
            "rx",
            data,
            if for_us {
                ""
            } else {
                " (not our MAC: ignored)"
            },
        )?;
        if !for_us {
            return Ok(Vec::new());
        }
        let mut answers = Vec::new();
        let now = Instant::now();
        match f.net {
            Net::Arp(a) if a.op == packet::ARP_REQUEST && self.ours(a.target_ip.into()) => {
                answers.push(packet::arp_reply(
                    o.mac,
                    a.target_ip,
                    a.sender_mac,
                    a.sender_ip,
                ));
                self.report.arp_replies += 1;
            }
            Net::Arp(a) if a.op == packet::ARP_REPLY => {
                self.resolved(a.sender_ip.into(), a.sender_mac)?;
            }
            Net::Ip(ip) => match ip.l4 {
                L4::EchoRequest(e) if self.ours(ip.dst) && ip.checksums_ok => {
                    let pkt = packet::echo(ip.dst, ip.src, true, TTL, e)
                        .expect("same family: parsed from one packet");
                    answers.push(self.on_link(&f, &pkt));
                    self.report.echo_replies += 1;
                    self.answered += 1;
                }
                L4::EchoReply(e) if ip.checksums_ok => self.ping_reply(&ip, e, now)?,
                L4::NeighborSolicit { target, source_mac }
                    if o.mode == Mode::Ethernet && self.ours(target.into()) =>
                {
                    let IpAddr::V6(src) = ip.src else {
                        unreachable!("ND is IPv6")
                    };
                    // From :: (duplicate address detection): answer to all nodes.
                    let dad = src.is_unspecified();
                    let dst = if dad {
                        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
                    } else {
                        src
                    };
                    let mac_to = match (dad, source_mac, &f.eth) {
                        (true, _, _) => packet::ipv6_multicast_mac(dst),
                        (false, Some(m), _) => m,
                        (false, None, Some(e)) => e.src,
                        (false, None, None) => Mac::BROADCAST,
                    };
                    let na = packet::neighbor_advert(target, dst, o.mac, !dad);
                    answers.push(packet::on_link(o.mode, mac_to, o.mac, &na));
                    self.report.neighbor_adverts += 1;
                }
                L4::NeighborAdvert {
                    target, target_mac, ..
                } => {
                    if let Some(m) = target_mac.or(f.eth.map(|e| e.src)) {
                        self.resolved(target.into(), m)?;
                    }
                }
                _ => {}
            },
            _ => {}
        }
        Ok(answers)
    }

    /// An answer to `f` on our link: back to its sender's MAC.
    fn on_link(&self, f: &Frame<'_>, ip_packet: &[u8]) -> Vec<u8> {
        let to = f.eth.map_or(Mac::BROADCAST, |e| e.src);
        packet::on_link(self.o.mode, to, self.o.mac, ip_packet)
    }

    fn resolved(&mut self, ip: IpAddr, mac: Mac) -> Result<(), ClientError> {
        let Some(p) = &mut self.ping else {
            return Ok(());
        };
        if p.dst != ip || p.next_hop.is_some() || self.o.mode != Mode::Ethernet {
            return Ok(());
        }
        p.next_hop = Some(mac);
        p.stats.next_hop_mac = Some(mac.to_string());
        p.next = Instant::now();
        self.emit(
            "resolved",
            format_args!("resolved {ip} at {mac}"),
            json!({"ip": ip, "mac": mac.to_string()}),
        )
    }

    fn ping_reply(
        &mut self,
        ip: &packet::Ip<'_>,
        e: Echo<'_>,
        now: Instant,
    ) -> Result<(), ClientError> {
        let Some(p) = &mut self.ping else {
            return Ok(());
        };
        if ip.src != p.dst || e.id != p.id {
            return Ok(());
        }
        let bytes = e.data.len() + 8;
        let Some(sent) = p.outstanding.remove(&e.seq) else {
            p.stats.duplicates += 1;
            return self.emit(
                "duplicate",
                format_args!(
                    "{bytes} bytes from {}: icmp_seq={} ttl={} (DUP!)",
                    ip.src, e.seq, ip.ttl
                ),
                json!({"from": ip.src, "seq": e.seq, "ttl": ip.ttl, "bytes": bytes}),
            );
        };
        let rtt = (now - sent).as_secs_f64() * 1e3;
        let s = &mut p.stats;
        s.received += 1;
        s.rtt_min_ms = Some(s.rtt_min_ms.map_or(rtt, |m| m.min(rtt)));
        s.rtt_max_ms = Some(s.rtt_max_ms.map_or(rtt, |m| m.max(rtt)));
        p.rtt_sum += rtt;
        self.emit(
            "reply",
            format_args!(
                "{bytes} bytes from {}: icmp_seq={} ttl={} time={rtt:.3} ms",
                ip.src, e.seq, ip.ttl
            ),
            json!({"from": ip.src, "seq": e.seq, "ttl": ip.ttl, "bytes": bytes, "rtt_ms": rtt}),
        )
    }

    /// Sends what is due for `--ping`; returns a reason to stop.
    fn ping_tick(
        &mut self,
        now: Instant,
        interval: Duration,
        linger: Duration,
    ) -> Result<Option<Stop>, ClientError> {
        let o = self.o;
        let Some(p) = &mut self.ping else {
            return Ok(None);
        };
        let count = o.count.unwrap_or(u64::MAX);
        if p.stats.transmitted >= count {
            let all_back = p.outstanding.is_empty();
            let waited = p.last_sent.is_none_or(|t| now >= t + linger);
            return Ok((all_back || waited).then_some(Stop::Count));
        }
        if now < p.next {
            return Ok(None);
        }
        let ethernet = o.mode == Mode::Ethernet;
        if ethernet && p.next_hop.is_none() {
            if p.resolve_tries >= RESOLVE_TRIES {
                let how = if p.dst.is_ipv4() { "ARP" } else { "neighbor" };
                return Ok(Some(Stop::Unresolved(format!(
                    "no {how} reply for {} after {RESOLVE_TRIES} requests",
                    p.dst
                ))));
            }
            p.resolve_tries += 1;
            p.next = now + RESOLVE_EVERY;
            let frame = match (p.src, p.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => packet::arp_request(o.mac, s, d),
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    let ns = packet::neighbor_solicit(s, d, o.mac);
                    let group = packet::ipv6_multicast_mac(packet::solicited_node(d));
                    packet::on_link(o.mode, group, o.mac, &ns)
                }
                _ => unreachable!("validated: source of the destination's family"),
            };
            self.send(&frame)?;
            return Ok(None);
        }
        let seq = (p.stats.transmitted + 1) as u16;
        let data: Vec<u8> = (0..o.size).map(|i| i as u8).collect();
        let pkt = packet::echo(
            p.src,
            p.dst,
            false,
            TTL,
            Echo {
                id: p.id,
                seq,
                data: &data,
            },
        )
        .expect("validated: source of the destination's family");
        let frame = packet::on_link(o.mode, p.next_hop.unwrap_or(Mac::BROADCAST), o.mac, &pkt);
        p.stats.transmitted += 1;
        p.outstanding.insert(seq, now);
        p.last_sent = Some(now);
        // Keep the cadence even if we woke late.
        p.next = (p.next + interval).max(now);
        self.send(&frame)?;
        Ok(None)
    }

    fn finish_ping(&mut self) {
        if let Some(p) = &mut self.ping {
            let s = &mut p.stats;
            if s.transmitted > 0 {
                let lost = s.transmitted.saturating_sub(s.received);
                s.loss_percent = lost as f64 * 100.0 / s.transmitted as f64;
            }
            if s.received > 0 {
                s.rtt_avg_ms = Some(p.rtt_sum / s.received as f64);
            }
            self.report.ping = Some(s.clone());
        }
    }
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
