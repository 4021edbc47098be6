//! A UDP generator for benchmarks of kernel paths (`e2e/bench-crossnode.sh`):
//! sends datagrams of one size from inside a network namespace as fast as a
//! blocking socket takes them, for a number of seconds, and prints how many.
//! A blocking socket waits when its send buffer is full, so a slower path
//! behind it slows the generator down instead of making it fail (trafgen's
//! packet ring gives up with EAGAIN when receive steering holds its frames).
//!
//!   udp_blast --netns /run/netns/POD --to 198.19.0.2:9 --ip-size 64 --seconds 6
//!       [--from 198.18.200.3:49152] [--payload FILE] [--gso]
//!
//! `--ip-size` is the IPv4 packet's size (20 + 8 + payload bytes);
//! `--payload` gives the payload's bytes instead (a VXLAN packet, say).
//! `--gso` hands the kernel 64 datagrams per send as one UDP GSO datagram
//! (`UDP_SEGMENT`), which makes the generator cheap enough that what it
//! feeds is the bound: the kernel cuts it into its datagrams before the
//! device (or the device does, with UDP segmentation offload).

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Args {
    netns: Option<PathBuf>,
    to: SocketAddr,
    from: SocketAddr,
    ip_size: usize,
    payload: Option<PathBuf>,
    gso: bool,
    seconds: f64,
}

/// Datagrams per GSO send.
const GSO_SEGMENTS: usize = 64;

fn args() -> Result<Args, String> {
    let mut a = Args {
        netns: None,
        to: "127.0.0.1:9".parse().unwrap(),
        from: "0.0.0.0:0".parse().unwrap(),
        ip_size: 64,
        payload: None,
        gso: false,
        seconds: 5.0,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        if v[i] == "--gso" {
            a.gso = true;
            i += 1;
            continue;
        }
        let val = v.get(i + 1).ok_or(format!("{} needs a value", v[i]))?;
        match v[i].as_str() {
            "--netns" => a.netns = Some(val.into()),
            "--to" => a.to = val.parse().map_err(|e| format!("--to {val}: {e}"))?,
            "--from" => a.from = val.parse().map_err(|e| format!("--from {val}: {e}"))?,
            "--payload" => a.payload = Some(val.into()),
            "--ip-size" => a.ip_size = val.parse().map_err(|e| format!("--ip-size: {e}"))?,
            "--seconds" => a.seconds = val.parse().map_err(|e| format!("--seconds: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
        i += 2;
    }
    if a.ip_size < 28 {
        return Err("--ip-size must be at least 28 (IPv4 and UDP headers)".into());
    }
    Ok(a)
}

fn main() {
    let a = args().unwrap_or_else(|e| {
        eprintln!("udp_blast: {e}");
        std::process::exit(2)
    });
    let _ns = a.netns.as_ref().map(|p| {
        memif_cni::netns::NetnsGuard::enter(p).unwrap_or_else(|e| {
            eprintln!("udp_blast: enter {}: {e}", p.display());
            std::process::exit(1)
        })
    });
    let sock = UdpSocket::bind(a.from).expect("bind");
    sock.connect(a.to).expect("connect");
    let payload = match &a.payload {
        Some(p) => std::fs::read(p).unwrap_or_else(|e| {
            eprintln!("udp_blast: {}: {e}", p.display());
            std::process::exit(1)
        }),
        None => vec![0u8; a.ip_size - 28],
    };
    let segment = payload.len() as u16;
    let iov: Vec<IoSlice<'_>> = (0..GSO_SEGMENTS).map(|_| IoSlice::new(&payload)).collect();
    let end = Instant::now() + Duration::from_secs_f64(a.seconds);
    let (mut sent, mut failed) = (0u64, 0u64);
    while Instant::now() < end {
        // Check the clock every 256 datagrams.
        if a.gso {
            for _ in 0..256 / GSO_SEGMENTS {
                let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
                match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
                    Ok(_) => sent += GSO_SEGMENTS as u64,
                    Err(_) => failed += GSO_SEGMENTS as u64,
                }
            }
            continue;
        }
        for _ in 0..256 {
            match sock.send(&payload) {
                Ok(_) => sent += 1,
                // ICMP errors from a closed port come back as refusals.
                Err(_) => failed += 1,
            }
        }
    }
    println!(
        "{{\"sent\": {sent}, \"failed\": {failed}, \"seconds\": {}}}",
        a.seconds
    );
}
