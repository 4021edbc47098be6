//! `memifctl peer`: a memif endpoint (master or slave) that receives,
//! transmits or echoes frames in a polling loop and reports counters. Used
//! for troubleshooting, the DPDK interop tests and the benchmark.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::mac::Mac;
use crate::memif::master::InterfaceConfig;
use crate::memif::queue::PacketBuf;
use crate::memif::server::{self, ServerConfig, ServerEvent};
use crate::memif::slave::{SlaveConfig, SlaveConnection};
use crate::memif::socket::{Listener, SocketAddr};
use crate::memif::Mode;
use crate::netns;

/// Which side of the memif to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Slave,
}

/// What to do with packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Count what arrives.
    Rx,
    /// Send generated UDP frames as fast as the ring allows.
    Tx,
    /// Send back what arrives (MACs swapped in ethernet mode).
    Echo,
}

/// Peer options (the `memifctl peer` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct PeerOpts {
    #[arg(long, value_enum, default_value = "master")]
    pub role: Role,
    /// `@name` (abstract) or a path.
    #[arg(long)]
    pub socket: SocketAddr,
    /// Network namespace to bind/connect the socket in (e.g. /run/netns/pod1).
    #[arg(long)]
    pub netns: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub id: u32,
    #[arg(long, default_value = "ethernet")]
    pub mode: Mode,
    #[arg(long, default_value = "")]
    pub secret: String,
    #[arg(long, value_enum, default_value = "rx")]
    pub action: Action,
    /// Frame size in bytes for tx.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Stop after this many seconds of traffic (from the first packet for rx).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Stop after this many packets (received for rx/echo, sent for tx).
    #[arg(long)]
    pub count: Option<u64>,
    /// Give up if no peer connects within this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Queues per direction (slave role).
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// log2 of the ring size (slave role).
    #[arg(long, default_value_t = 10)]
    pub ring_log2: u8,
    /// Buffer size in bytes (slave role).
    #[arg(long, default_value_t = 2048)]
    pub buffer_size: u32,
    /// Frames per burst.
    #[arg(long, default_value_t = 32)]
    pub burst: usize,
    /// rx/echo: sleep this many microseconds whenever a round finds every
    /// ring empty (0: poll without pause). A sink that leaves the CPU to
    /// others; size the ring (`--ring-log2`) for what arrives meanwhile.
    #[arg(long, default_value_t = 0)]
    pub idle_sleep_us: u64,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What the peer did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PeerReport {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Seconds between the first and last packet counted.
    pub seconds: f64,
    pub rx_mpps: f64,
    pub tx_mpps: f64,
    /// Set when the link went down before the end.
    pub disconnected: Option<String>,
}

impl std::fmt::Display for PeerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "rx {} packets {} bytes ({:.3} Mpps)",
            self.rx_packets, self.rx_bytes, self.rx_mpps
        )?;
        writeln!(
            f,
            "tx {} packets {} bytes ({:.3} Mpps)",
            self.tx_packets, self.tx_bytes, self.tx_mpps
        )?;
        write!(f, "over {:.3} s", self.seconds)?;
        if let Some(r) = &self.disconnected {
            write!(f, "\ndisconnected: {r}")?;
        }
        Ok(())
    }
}

/// Peer failures.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error(transparent)]
    Socket(#[from] crate::memif::socket::SocketError),
    #[error(transparent)]
    Slave(#[from] crate::memif::slave::SlaveError),
    #[error("no memif peer connected within {0:.1} s")]
    NoPeer(f64),
    #[error("peer refused: {0}")]
    Refused(String),
    #[error("ring error: {0}")]
    Ring(#[from] crate::memif::queue::RingError),
}

/// A generated UDP/IPv4 frame of `size` bytes (ethernet or ip mode). The
/// addresses are from the benchmarking range and never leave shared memory.
pub fn udp_frame(mode: Mode, size: usize, seq: u32) -> Vec<u8> {
    udp_frame_between(mode, size, seq, [198, 18, 0, 1], [198, 18, 0, 2])
}

/// [`udp_frame`] from IPv4 address `src` to `dst`.
pub fn udp_frame_between(mode: Mode, size: usize, seq: u32, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    use crate::packet::{build, ETHERTYPE_IPV4, ETH_HLEN, IPV4_HLEN, PROTO_UDP, UDP_HLEN};
    let l2 = if mode == Mode::Ethernet { ETH_HLEN } else { 0 };
    let size = size.max(l2 + IPV4_HLEN + UDP_HLEN);
    let mut f = vec![0u8; size];
    if l2 > 0 {
        build::eth_header_into(
            &mut f,
            Mac([0x02, 0, 0, 0, 0, 0x02]),
            Mac([0x02, 0, 0, 0, 0, 0x01]),
            ETHERTYPE_IPV4,
        );
    }
    let ip = &mut f[l2..];
    let payload = ip.len().min(u16::MAX as usize) - IPV4_HLEN - UDP_HLEN;
    build::ipv4_header_into(
        ip,
        src.into(),
        dst.into(),
        PROTO_UDP,
        64,
        UDP_HLEN + payload,
    );
    build::udp_header_into(&mut ip[IPV4_HLEN..], 9, 9, payload);
    if ip.len() >= 32 {
        ip[28..32].copy_from_slice(&seq.to_be_bytes());
    }
    f
}

/// Both roles' queues behind one interface for the loop.
enum Queues {
    Master(Box<crate::memif::MasterConnection>),
    Slave(SlaveConnection),
}

impl Queues {
    fn nq(&self) -> (usize, usize) {
        match self {
            Queues::Master(c) => (c.rx.len(), c.tx.len()),
            Queues::Slave(c) => (c.rx.len(), c.tx.len()),
        }
    }
    fn rx(&mut self, q: usize, bufs: &mut [PacketBuf]) -> Result<usize, PeerError> {
        Ok(match self {
            Queues::Master(c) => c.rx[q].rx_burst(bufs)?,
            Queues::Slave(c) => c.rx[q].rx_burst(bufs)?,
        })
    }
    fn tx<B: AsRef<[u8]>>(&mut self, q: usize, frames: &[B]) -> Result<usize, PeerError> {
        Ok(match self {
            Queues::Master(c) => c.tx[q].tx_burst(frames)?,
            Queues::Slave(c) => c.tx[q].tx_burst(frames)?,
        })
    }
    fn is_up(&self) -> bool {
        match self {
            Queues::Master(c) => c.state.is_up(),
            Queues::Slave(c) => c.state.is_up(),
        }
    }
    /// Polling: ask the producer not to signal us.
    fn mask_interrupts(&self) {
        match self {
            Queues::Master(c) => c.rx.iter().for_each(|q| q.set_interrupts(false)),
            Queues::Slave(c) => c.rx.iter().for_each(|q| q.set_interrupts(false)),
        }
    }
}

/// Runs the peer until duration/count is reached or the link goes down.
pub fn run(o: &PeerOpts) -> Result<PeerReport, PeerError> {
    let timeout = Duration::from_secs_f64(o.connect_timeout);
    // Kept alive for the whole run: dropping it closes the master socket.
    let mut _server = None;
    let mut events = None;
    let mut q = match o.role {
        Role::Master => {
            let addr = o.socket.clone();
            let listener = netns::run_in(o.netns.as_deref(), move || Listener::bind(&addr))??;
            let mut iface = InterfaceConfig::new(o.id, "memifctl");
            iface.mode = o.mode;
            iface.secret = Some(o.secret.clone()).filter(|s| !s.is_empty());
            let (h, ev) = server::spawn(listener, ServerConfig::default(), vec![iface])?;
            tracing::info!(socket = %o.socket, "waiting for a memif slave");
            let conn = wait_connected(&ev, timeout)?;
            _server = Some(h);
            events = Some(ev);
            Queues::Master(conn)
        }
        Role::Slave => {
            let cfg = SlaveConfig {
                id: o.id,
                mode: o.mode,
                secret: o.secret.clone(),
                name: "memifctl".into(),
                s2m_queues: o.queues,
                m2s_queues: o.queues,
                log2_ring_size: o.ring_log2,
                buffer_size: o.buffer_size,
                ..SlaveConfig::default()
            };
            let addr = o.socket.clone();
            let deadline = Instant::now() + timeout;
            let conn = loop {
                let (a, c) = (addr.clone(), cfg.clone());
                match netns::run_in(o.netns.as_deref(), move || SlaveConnection::connect(&a, &c))? {
                    Ok(c) => break c,
                    Err(crate::memif::SlaveError::Socket(e)) if Instant::now() < deadline => {
                        tracing::debug!(error = %e, "master not there yet; retrying");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            Queues::Slave(conn)
        }
    };
    q.mask_interrupts();
    let report = traffic(&mut q, o);
    if let Queues::Slave(c) = q {
        c.disconnect("memifctl peer done");
    }
    drop(events);
    report
}

fn wait_connected(
    ev: &mpsc::Receiver<ServerEvent>,
    timeout: Duration,
) -> Result<Box<crate::memif::MasterConnection>, PeerError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ev.recv_timeout(left) {
            Ok(ServerEvent::Connected(c)) => return Ok(c),
            Ok(ServerEvent::Rejected { reason, .. }) => {
                tracing::warn!(%reason, "slave rejected");
            }
            Ok(ServerEvent::Disconnected { .. }) => {}
            Err(_) => return Err(PeerError::NoPeer(timeout.as_secs_f64())),
        }
    }
}

fn traffic(q: &mut Queues, o: &PeerOpts) -> Result<PeerReport, PeerError> {
    let (nrx, ntx) = q.nq();
    let burst = o.burst.clamp(1, 256);
    let mut bufs = PacketBuf::batch(burst, crate::memif::queue::DEFAULT_MAX_FRAME);
    let template: Vec<Vec<u8>> = (0..burst as u32)
        .map(|i| udp_frame(o.mode, o.size, i))
        .collect();
    let mut r = PeerReport::default();
    let limit = o.count.unwrap_or(u64::MAX);
    let duration = Duration::from_secs_f64(o.duration);
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let start_wait = Instant::now();
    let mut iter: u32 = 0;
    loop {
        iter = iter.wrapping_add(1);
        match o.action {
            Action::Tx => {
                let want = (limit - r.tx_packets).min(burst as u64) as usize;
                let qi = (iter as usize) % ntx;
                let n = q.tx(qi, &template[..want])?;
                if n > 0 {
                    first.get_or_insert_with(Instant::now);
                    r.tx_packets += n as u64;
                    r.tx_bytes += (n * o.size) as u64;
                }
            }
            Action::Rx | Action::Echo => {
                let mut idle = true;
                for qi in 0..nrx {
                    let n = q.rx(qi, &mut bufs)?;
                    if n == 0 {
                        continue;
                    }
                    idle = false;
                    first.get_or_insert_with(Instant::now);
                    last = Instant::now();
                    r.rx_packets += n as u64;
                    r.rx_bytes += bufs[..n].iter().map(|b| b.len() as u64).sum::<u64>();
                    if o.action == Action::Echo {
                        if o.mode == Mode::Ethernet {
                            for b in &mut bufs[..n] {
                                let d = b.as_mut_full();
                                for i in 0..6 {
                                    d.swap(i, i + 6);
                                }
                            }
                        }
                        let frames: Vec<&[u8]> = bufs[..n].iter().map(|b| b.as_slice()).collect();
                        let sent = q.tx(qi % ntx, &frames)?;
                        r.tx_packets += sent as u64;
                        r.tx_bytes += frames[..sent].iter().map(|f| f.len() as u64).sum::<u64>();
                    }
                }
                if idle && o.idle_sleep_us > 0 {
                    std::thread::sleep(Duration::from_micros(o.idle_sleep_us));
                }
            }
        }
        if iter % 1024 == 0 {
            let now = Instant::now();
            if !q.is_up() {
                // Frames the peer published just before it left are still
                // in the ring (our mapping outlives the link): count them.
                // At most one ring's worth per queue, so a departed peer
                // that keeps writing cannot hold us here.
                if o.action != Action::Tx {
                    for qi in 0..nrx {
                        let mut left = 1usize << crate::memif::shm::MAX_LOG2_RING_SIZE;
                        while left > 0 && r.rx_packets < limit {
                            let m = burst.min(left).min((limit - r.rx_packets) as usize);
                            let Ok(n @ 1..) = q.rx(qi, &mut bufs[..m]) else {
                                break;
                            };
                            left -= n;
                            r.rx_packets += n as u64;
                            r.rx_bytes += bufs[..n].iter().map(|b| b.len() as u64).sum::<u64>();
                        }
                    }
                }
                r.disconnected = Some("link down".into());
                break;
            }
            match first {
                Some(t) if now - t >= duration => break,
                None if now - start_wait >= duration + Duration::from_secs(10) => break,
                _ => {}
            }
            if o.action == Action::Tx {
                last = now;
            }
        }
        if r.rx_packets >= limit || r.tx_packets >= limit {
            last = Instant::now();
            break;
        }
    }
    if o.action == Action::Tx {
        last = Instant::now();
    }
    r.seconds = first.map_or(0.0, |t| (last - t).as_secs_f64());
    if r.seconds > 0.0 {
        r.rx_mpps = r.rx_packets as f64 / r.seconds / 1e6;
        r.tx_mpps = r.tx_packets as f64 / r.seconds / 1e6;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_frame_shape() {
        let f = udp_frame(Mode::Ethernet, 64, 7);
        assert_eq!(f.len(), 64);
        assert_eq!(&f[12..14], &[8, 0]);
        assert_eq!(crate::packet::checksum::checksum(&f[14..34]), 0);
        let f = udp_frame(Mode::Ip, 100, 7);
        assert_eq!(f[0], 0x45);
        assert_eq!(u16::from_be_bytes([f[2], f[3]]), 100);
        assert_eq!(udp_frame(Mode::Ethernet, 10, 0).len(), 42);
    }
}
