//! What the dataplane benchmark's measures share: namespaces and memifd
//! daemons removed on drop, attachments through memifd's API, sampling,
//! medians, pinning and the placement probe.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memif_cni::api::{AttachRequest, AttachmentKey, Client, MemifSpec, RxMode};
use memif_cni::memif::wire::Mode;

pub fn sh(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Network namespaces (each with `lo` up), deleted on drop with every
/// device in them.
pub struct Namespaces(pub Vec<String>);

impl Namespaces {
    pub fn add(&mut self, name: &str) {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(&["ip", "netns", "add", name]);
        self.0.push(name.to_string());
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// A memifd of the benchmark: its own state dir and API socket, no
/// Kubernetes, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    child: Child,
    api: PathBuf,
}

impl Daemon {
    /// memifd pinned to `cpu`, in our network namespace.
    pub fn start(memifd: &Path, dir: &Path, cpu: &str) -> Daemon {
        Self::start_in(memifd, dir, cpu, None)
    }

    /// memifd pinned to `cpu`, in network namespace `netns` if given (its
    /// uplinks, host routes and rules then live there). Its log goes to
    /// `dir/memifd.log`.
    pub fn start_in(memifd: &Path, dir: &Path, cpu: &str, netns: Option<&str>) -> Daemon {
        Self::start_wrapped(memifd, dir, cpu, netns, &[], Duration::from_secs(60))
    }

    /// [`Daemon::start_in`] under the command `wrap` (valgrind and its
    /// options: it must exec memifd in the same process), allowing `up`
    /// for memifd to answer on its API.
    pub fn start_wrapped(
        memifd: &Path,
        dir: &Path,
        cpu: &str,
        netns: Option<&str>,
        wrap: &[String],
        up: Duration,
    ) -> Daemon {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("state dir");
        std::fs::write(dir.join("memifd.json"), "{}").expect("config");
        let api = dir.join("api.sock");
        let log = File::create(dir.join("memifd.log")).expect("log file");
        // taskset and `ip netns exec` both exec: the child's pid is memifd's.
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", cpu]);
        if let Some(ns) = netns {
            cmd.args(["ip", "netns", "exec", ns]);
        }
        let mut child = cmd
            .args(wrap)
            .arg(memifd)
            .args(["--no-kubernetes", "--log", "warn", "--api-socket"])
            .arg(&api)
            .arg("--state-dir")
            .arg(dir)
            .arg("--config")
            .arg(dir.join("memifd.json"))
            .env_remove("CALICOVPP_FEATURE_GATES")
            .env_remove("MEMIFD_CONFIG")
            .env_remove("MEMIF_LOG")
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start memifd");
        let t0 = Instant::now();
        loop {
            if let Ok(mut c) = Client::connect(&api, Duration::from_secs(5)) {
                if c.status().is_ok() {
                    break;
                }
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "memifd exited ({st}): {}",
                    std::fs::read_to_string(dir.join("memifd.log")).unwrap_or_default()
                );
            }
            if t0.elapsed() > up {
                let _ = child.kill();
                let _ = child.wait();
                panic!("memifd did not come up within {up:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if wrap.is_empty() {
            let comm =
                std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap_or_default();
            assert_eq!(comm.trim(), "memifd", "the child's pid is not memifd's");
        }
        Daemon { child, api }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.api, Duration::from_secs(30)).expect("connect")
    }

    /// memifd's pid (the wrapper's, which exec'ed it).
    #[allow(dead_code)] // dp_instr's; dataplane_bench does not need it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (a clean stop deletes memifd's routes and rules; the TUN
    /// goes with its fd), then SIGKILL if it has not exited `within`.
    pub fn stop(&mut self, within: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .output();
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// (utime, stime) in clock ticks.
    pub fn cpu_split(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let rest = &s[s.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        (f[11].parse().unwrap(), f[12].parse().unwrap())
    }

    /// utime + stime in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let (u, s) = self.cpu_split();
        u + s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

pub fn attach(
    d: &Daemon,
    ns: &str,
    container: &str,
    ifname: &str,
    network: &str,
    ip: &str,
    rx: RxMode,
) -> AttachRequest {
    let req = AttachRequest {
        key: AttachmentKey {
            container_id: container.into(),
            ifname: ifname.into(),
        },
        network: network.into(),
        netns: format!("/run/netns/{ns}").into(),
        socket: None,
        spec: MemifSpec {
            mode: Mode::Ethernet,
            rx_mode: rx,
            ..MemifSpec::default()
        },
        ips: vec![ip.parse().unwrap()],
        pod: None,
        steer: None,
        vni: None,
    };
    d.client().attach(req.clone()).expect("attach");
    req
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A distribution-free confidence interval of the median of `v`, at 95% or
/// more: the k-th smallest and the k-th largest value, for the largest k
/// with P(Binomial(n, 1/2) < k) <= 2.5% (order statistics; it assumes
/// nothing about the spread). None below six values, where no k works.
pub fn median_ci(mut v: Vec<f64>) -> Option<(f64, f64)> {
    let n = v.len();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut pmf = 0.5f64.powi(n as i32);
    let mut below = 0.0;
    let mut k = 0;
    for j in 0..n {
        // P(X <= j).
        below += pmf;
        if below > 0.025 {
            break;
        }
        k = j + 1;
        pmf *= (n - j) as f64 / (j + 1) as f64;
    }
    (k >= 1).then(|| (v[k - 1], v[n - k]))
}

#[cfg(test)]
mod tests {
    use super::median_ci;

    #[test]
    fn median_ci_takes_the_binomial_order_statistics() {
        let v = |n: usize| (1..=n).map(|i| i as f64).collect::<Vec<_>>();
        // Five values: even min..max covers only 93.75%.
        assert_eq!(median_ci(v(5)), None);
        // Six: min..max covers 96.9%.
        assert_eq!(median_ci(v(6)), Some((1.0, 6.0)));
        // Seventeen: P(X <= 4) = 0.0245, P(X <= 5) = 0.0717.
        assert_eq!(median_ci(v(17)), Some((5.0, 13.0)));
        // Order does not matter.
        let mut r = v(17);
        r.reverse();
        assert_eq!(median_ci(r), Some((5.0, 13.0)));
    }
}

/// Samples `rate()`-style counters: the median over `samples` one-second
/// windows after a half-second warm-up, in packets per second.
pub fn sample(samples: usize, mut count: impl FnMut() -> u64) -> f64 {
    std::thread::sleep(Duration::from_millis(500));
    let mut v = Vec::new();
    let (mut c0, mut t0) = (count(), Instant::now());
    for _ in 0..samples {
        std::thread::sleep(Duration::from_secs(1));
        let (c1, t1) = (count(), Instant::now());
        v.push((c1 - c0) as f64 / (t1 - t0).as_secs_f64());
        (c0, t0) = (c1, t1);
    }
    median(v)
}

/// Where the host has placed the two vCPUs right now: the round trip (ns)
/// of a cache line bounced between a thread on core 0 and one on core 1
/// (median of three runs of 5000). What crossing cores costs is what
/// moves both loops' rates between bands.
pub fn probe() -> f64 {
    const N: u64 = 5000;
    let one = || {
        let line = Arc::new(AtomicU64::new(0));
        let l = line.clone();
        let echo = std::thread::spawn(move || {
            pin(1);
            for i in 0..N {
                while l.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                l.store(2 * i + 2, Ordering::Release);
            }
        });
        let ping = std::thread::spawn(move || {
            pin(0);
            // Both threads on their cores before the clock starts.
            std::thread::sleep(Duration::from_millis(1));
            let t0 = Instant::now();
            for i in 0..N {
                line.store(2 * i + 1, Ordering::Release);
                while line.load(Ordering::Acquire) != 2 * i + 2 {
                    std::hint::spin_loop();
                }
            }
            t0.elapsed().as_nanos() as f64 / N as f64
        });
        let rt = ping.join().expect("probe");
        echo.join().expect("probe");
        rt
    };
    median(vec![one(), one(), one()])
}

pub fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("cpu");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin");
}
