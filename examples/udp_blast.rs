//! A UDP generator for benchmarks of kernel paths (`e2e/bench-crossnode.sh`):
//! sends datagrams of one size from inside a network namespace as fast as a
//! blocking socket takes them, for a number of seconds, and prints how many.
//! A blocking socket waits when its send buffer is full, so a slower path
//! behind it slows the generator down instead of making it fail (trafgen's
//! packet ring gives up with EAGAIN when receive steering holds its frames).
//!
//!   udp_blast --netns /run/netns/POD --to 198.19.0.2:9 --ip-size 64 --seconds 6
//!
//! `--ip-size` is the IPv4 packet's size (20 + 8 + payload bytes).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Args {
    netns: Option<PathBuf>,
    to: SocketAddr,
    ip_size: usize,
    seconds: f64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        netns: None,
        to: "127.0.0.1:9".parse().unwrap(),
        ip_size: 64,
        seconds: 5.0,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).ok_or(format!("{} needs a value", v[i]))?;
        match v[i].as_str() {
            "--netns" => a.netns = Some(val.into()),
            "--to" => a.to = val.parse().map_err(|e| format!("--to {val}: {e}"))?,
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
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.connect(a.to).expect("connect");
    let payload = vec![0u8; a.ip_size - 28];
    let end = Instant::now() + Duration::from_secs_f64(a.seconds);
    let (mut sent, mut failed) = (0u64, 0u64);
    while Instant::now() < end {
        // Check the clock every 256 datagrams.
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
