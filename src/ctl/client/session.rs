//! One `memifctl client` session on a connected memif: frames received
//! and printed, ARP, neighbour solicitations and echo requests answered,
//! `--ping` sent and timed.

use super::*;
use crate::packet::{Echo, Frame, Net, L4};

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

pub(super) struct Session<'a> {
    o: &'a ClientOpts,
    pub(super) conn: SlaveConnection,
    out: &'a mut dyn Write,
    pub(super) report: ClientReport,
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

impl<'a> Session<'a> {
    pub(super) fn new(
        o: &'a ClientOpts,
        conn: SlaveConnection,
        out: &'a mut dyn Write,
    ) -> Session<'a> {
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
                    errors: 0,
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
        Session {
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
    ) -> Result<(), MemifClientError> {
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
        r.map_err(MemifClientError::Output)
    }

    fn frame_event(&mut self, dir: &str, data: &[u8], note: &str) -> Result<(), MemifClientError> {
        let summary = packet::parse(self.o.mode, data).to_string();
        self.emit(
            dir,
            format_args!("{dir} {} {summary}{note}", data.len()),
            json!({"len": data.len(), "summary": summary, "note": note.trim()}),
        )
    }

    pub(super) fn run(&mut self, stop: &AtomicBool) -> Result<(), MemifClientError> {
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
    fn receive(&mut self, bufs: &mut [PacketBuf]) -> Result<(), MemifClientError> {
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

    fn send(&mut self, frame: &[u8]) -> Result<(), MemifClientError> {
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
    fn handle(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, MemifClientError> {
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
                L4::TooBig { mtu, quoted } if ip.checksums_ok => {
                    self.ping_error(&ip, mtu, quoted)?
                }
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

    fn resolved(&mut self, ip: IpAddr, mac: Mac) -> Result<(), MemifClientError> {
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
    ) -> Result<(), MemifClientError> {
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

    /// An ICMP "fragmentation needed" / "packet too big" about one of our
    /// requests: counted and shown as ping shows it.
    fn ping_error(
        &mut self,
        ip: &packet::Ip<'_>,
        mtu: u32,
        quoted: &[u8],
    ) -> Result<(), MemifClientError> {
        let Some(p) = &mut self.ping else {
            return Ok(());
        };
        let Net::Ip(q) = packet::parse_quoted(quoted) else {
            return Ok(());
        };
        let L4::EchoRequest(e) = q.l4 else {
            return Ok(());
        };
        if q.dst != p.dst || e.id != p.id {
            return Ok(());
        }
        p.stats.errors += 1;
        let what = if ip.is_v6() {
            "Packet too big"
        } else {
            "Frag needed and DF set"
        };
        self.emit(
            "too-big",
            format_args!("From {} icmp_seq={} {what} (mtu = {mtu})", ip.src, e.seq),
            json!({"from": ip.src, "seq": e.seq, "mtu": mtu}),
        )
    }

    /// Sends what is due for `--ping`; returns a reason to stop.
    fn ping_tick(
        &mut self,
        now: Instant,
        interval: Duration,
        linger: Duration,
    ) -> Result<Option<Stop>, MemifClientError> {
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
