//! memifd control-plane figures: attach latency (serial and concurrent),
//! restart recovery time, and memory and CPU with N idle attachments.
//! Run as root through `e2e/bench-memifd.sh` (it builds memifd in release).
//!
//! Each attachment gets its own pod netns, as on a real node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use memif_cni::api::{AttachRequest, AttachmentKey, Client, MemifSpec};

struct Args {
    memifd: PathBuf,
    n: usize,
    threads: usize,
}

fn args() -> Args {
    let mut a = Args {
        memifd: "target/release/memifd".into(),
        n: 1000,
        threads: 8,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--memifd" => a.memifd = val.into(),
            "-n" => a.n = val.parse().expect("-n N"),
            "--threads" => a.threads = val.parse().expect("--threads N"),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn sh(cmd: &[&str]) {
    let st = Command::new(cmd[0])
        .args(&cmd[1..])
        .status()
        .expect("spawn");
    assert!(st.success(), "{cmd:?} failed");
}

struct Netns(Vec<String>);
impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

struct Daemon {
    child: Child,
    api: PathBuf,
}

impl Daemon {
    fn start(memifd: &Path, dir: &Path) -> (Daemon, Duration) {
        let api = dir.join("api.sock");
        let t0 = Instant::now();
        let mut child = Command::new(memifd)
            .args(["--no-kubernetes", "--log", "warn", "--api-socket"])
            .arg(&api)
            .arg("--state-dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("start memifd");
        loop {
            if let Ok(mut c) = Client::connect(&api, Duration::from_secs(5)) {
                if c.status().is_ok() {
                    break;
                }
            }
            if t0.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                panic!("memifd did not come up");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (Daemon { child, api }, t0.elapsed())
    }

    fn client(&self) -> Client {
        Client::connect(&self.api, Duration::from_secs(30)).expect("connect")
    }

    fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn cpu_ticks(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let rest = &s[s.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn req(i: usize, ns: &str) -> AttachRequest {
    AttachRequest {
        key: AttachmentKey {
            container_id: format!("bench-{i:05}"),
            ifname: "memif-eth1".into(),
        },
        network: "bench".into(),
        netns: format!("/run/netns/{ns}").into(),
        socket: None,
        spec: MemifSpec::default(),
        ips: vec![format!("10.200.{}.{}", i / 250, i % 250 + 1)
            .parse()
            .unwrap()],
        pod: None,
        steer: None,
        vni: None,
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

fn main() {
    let a = args();
    let tag = std::process::id();
    let dir = std::env::temp_dir().join(format!("memifd-bench-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = (0..a.n).map(|i| format!("mb{tag}-{i}")).collect();
    let t = Instant::now();
    let ns = Netns(names.clone());
    for n in &ns.0 {
        sh(&["ip", "netns", "add", n]);
    }
    eprintln!(
        "created {} netns in {:.1} s",
        a.n,
        t.elapsed().as_secs_f64()
    );

    let (d, _) = Daemon::start(&a.memifd, &dir);
    let rss0 = d.rss_kib();
    let threads0 = d.threads();

    // Serial attaches: the latency a CNI ADD sees on a quiet node.
    let half = a.n / 2;
    let mut c = d.client();
    let mut lat = Vec::with_capacity(half);
    let t = Instant::now();
    for (i, n) in names.iter().enumerate().take(half) {
        let t0 = Instant::now();
        c.attach(req(i, n)).expect("attach");
        lat.push(t0.elapsed());
    }
    let serial_rate = half as f64 / t.elapsed().as_secs_f64();
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));

    // Concurrent attaches: a burst of pods on one node.
    let t = Instant::now();
    let per = (a.n - half).div_ceil(a.threads);
    let lats: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..a.threads)
            .map(|k| {
                let names = &names;
                let d = &d;
                s.spawn(move || {
                    let mut c = d.client();
                    let mut v = Vec::new();
                    let end = (half + (k + 1) * per).min(names.len());
                    for (i, n) in names.iter().enumerate().take(end).skip(half + k * per) {
                        let t0 = Instant::now();
                        c.attach(req(i, n)).expect("attach");
                        v.push(t0.elapsed());
                    }
                    v
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let conc_rate = (a.n - half) as f64 / t.elapsed().as_secs_f64();
    let mut lats = lats;
    let (cp50, cp99) = (pct(&mut lats, 0.5), pct(&mut lats, 0.99));

    assert_eq!(c.list(None).unwrap().len(), a.n);
    std::thread::sleep(Duration::from_millis(500));
    let rss_n = d.rss_kib();
    let threads_n = d.threads();
    let hz = 100.0;
    let cpu0 = d.cpu_ticks();
    std::thread::sleep(Duration::from_secs(5));
    let idle_cpu = (d.cpu_ticks() - cpu0) as f64 / hz / 5.0 * 100.0;

    // Restart: kill -9, start again, time until every listener is back.
    d.kill9();
    let (d, up) = Daemon::start(&a.memifd, &dir);
    let restored = d.client().list(None).unwrap().len();
    assert_eq!(restored, a.n, "every attachment restored");
    let rss_r = d.rss_kib();
    drop(c);

    // Detach everything (also the cleanup).
    let mut c = d.client();
    let t = Instant::now();
    for (i, n) in names.iter().enumerate() {
        let r = req(i, n);
        assert!(c.detach(r.key).unwrap());
    }
    let detach_rate = a.n as f64 / t.elapsed().as_secs_f64();

    println!();
    println!(
        "memifd control plane, {} attachments (one netns each), release build",
        a.n
    );
    println!();
    println!("| figure                                   | value      |");
    println!("|------------------------------------------|------------|");
    println!("| attach latency p50, serial (µs)          | {p50:>10.0} |");
    println!("| attach latency p99, serial (µs)          | {p99:>10.0} |");
    println!("| attach rate, serial (/s)                 | {serial_rate:>10.0} |");
    println!(
        "| attach latency p50, {} callers (µs)       | {cp50:>10.0} |",
        a.threads
    );
    println!(
        "| attach latency p99, {} callers (µs)       | {cp99:>10.0} |",
        a.threads
    );
    println!(
        "| attach rate, {} callers (/s)              | {conc_rate:>10.0} |",
        a.threads
    );
    println!("| detach rate, serial (/s)                 | {detach_rate:>10.0} |");
    println!(
        "| restart to all {:>5} listeners back (ms) | {:>10.0} |",
        a.n,
        up.as_secs_f64() * 1e3
    );
    println!(
        "| RSS, no attachments (MiB)                | {:>10.1} |",
        rss0 as f64 / 1024.0
    );
    println!(
        "| RSS, {:>5} idle attachments (MiB)        | {:>10.1} |",
        a.n,
        rss_n as f64 / 1024.0
    );
    println!(
        "| RSS per attachment (KiB)                 | {:>10.1} |",
        (rss_n as f64 - rss0 as f64) / a.n as f64
    );
    println!(
        "| RSS after restart with {:>5} (MiB)       | {:>10.1} |",
        a.n,
        rss_r as f64 / 1024.0
    );
    println!(
        "| threads, empty / with {:>5}              | {:>4} / {:<3} |",
        a.n, threads0, threads_n
    );
    println!(
        "| idle CPU with {:>5} listeners (% of core) | {idle_cpu:>10.2} |",
        a.n
    );
    let _ = std::fs::remove_dir_all(&dir);
}
