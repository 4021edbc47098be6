//! Helpers for the plugin's conformance tests: a CNI_PATH with memif-cni
//! and Debian's reference plugins, the libcni driver (`e2e/cnidriver`,
//! built once from Debian's Go packages), network configs of every
//! version, and the checks that nothing was left behind (no link, no
//! memifd attachment, no IPAM allocation).
//!
//! Used with `common/memifd.rs` (included by the same test crate).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::memifd_common::{Memifd, Netns, TempDir};

/// The plugin under test.
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_memif-cni");
/// Where Debian's containernetworking-plugins live.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
/// Every config version the plugin accepts.
pub const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The libcni driver, built on first use (fails loudly if it cannot be).
pub fn driver() -> &'static Path {
    static DRIVER: OnceLock<PathBuf> = OnceLock::new();
    DRIVER.get_or_init(|| {
        let out = repo().join("target/cnidriver/cnidriver");
        let st = Command::new("bash")
            .arg(repo().join("e2e/cnidriver/build.sh"))
            .arg(&out)
            .stdin(Stdio::null())
            .status()
            .expect("run e2e/cnidriver/build.sh");
        assert!(st.success(), "building the libcni driver failed ({st})");
        out
    })
}

/// What a plugin run printed.
#[derive(Debug)]
pub struct Run {
    /// Process exit code.
    pub exit: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// The CNI error code (driver exit 2 or plugin exit 1 with an error
    /// object); panics on success.
    #[track_caller]
    pub fn code(&self) -> u64 {
        assert_ne!(self.exit, 0, "expected a failure: {self:?}");
        self.json()["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no error code: {self:?}"))
    }

    #[track_caller]
    pub fn ok(&self) -> &Run {
        assert_eq!(self.exit, 0, "expected success: {self:?}");
        self
    }

    /// Asserts a failure with `code` whose message contains every `needle`.
    #[track_caller]
    pub fn fails(&self, code: u64, needles: &[&str]) {
        assert_eq!(self.code(), code, "{self:?}");
        let msg = self.json()["msg"].as_str().unwrap_or("").to_string();
        for n in needles {
            assert!(msg.contains(n), "{n:?} not in error message {msg:?}");
        }
    }
}

/// A runtime's side of CNI: CNI_PATH (memif-cni and Debian's reference
/// plugins), libcni's cache, IPAM data, config files.
pub struct Runtime {
    pub dir: TempDir,
}

impl Runtime {
    /// A CNI_PATH with the plugins in a new directory named after `tag`.
    #[track_caller]
    pub fn new(tag: &str) -> Runtime {
        Runtime::in_dir(TempDir::new(tag))
    }

    #[track_caller]
    pub fn in_dir(dir: TempDir) -> Runtime {
        let bin = dir.path.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let link = |name: &str, target: &Path| {
            std::os::unix::fs::symlink(target, bin.join(name))
                .unwrap_or_else(|e| panic!("link {name}: {e}"));
        };
        link("memif-cni", Path::new(PLUGIN));
        for p in ["host-local", "static", "bridge"] {
            let t = Path::new(REFERENCE_PLUGINS).join(p);
            assert!(
                t.exists(),
                "{} missing: install Debian's containernetworking-plugins (e2e/deps.sh does)",
                t.display()
            );
            link(p, &t);
        }
        link("cni-prev-provider", driver());
        Runtime { dir }
    }

    pub fn bin(&self) -> PathBuf {
        self.dir.path.join("bin")
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path.join("ipam")
    }

    /// Writes `conf` to a file named after `tag` and returns its path.
    pub fn write_conf(&self, tag: &str, conf: &Value) -> PathBuf {
        let p = self.dir.path.join(format!("{tag}.json"));
        std::fs::write(&p, serde_json::to_vec_pretty(conf).unwrap()).unwrap();
        p
    }

    /// `cnidriver add|check|del` (libcni).
    pub fn lib(&self, verb: &str, conf: &Path, netns: &str, ifname: &str, cid: &str) -> Run {
        self.lib_with(verb, conf, netns, ifname, cid, None, None)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn lib_with(
        &self,
        verb: &str,
        conf: &Path,
        netns: &str,
        ifname: &str,
        cid: &str,
        args: Option<&str>,
        cap_args: Option<&Value>,
    ) -> Run {
        let mut c = Command::new(driver());
        c.arg(verb)
            .arg("--conf")
            .arg(conf)
            .args(["--netns", netns, "--ifname", ifname, "--containerid", cid])
            .arg("--cni-path")
            .arg(self.bin())
            .arg("--cache-dir")
            .arg(self.dir.path.join("cache"));
        if let Some(a) = args {
            c.args(["--args", a]);
        }
        if let Some(ca) = cap_args {
            c.arg("--cap-args").arg(ca.to_string());
        }
        run(c)
    }

    /// The plugin run directly with exactly `env` (plus CNI_PATH unless
    /// given) and `stdin`: for what libcni itself would refuse or cannot
    /// parse (1.1.0 results, STATUS, GC, broken input).
    pub fn exec(&self, env: &[(&str, &str)], stdin: &[u8]) -> Run {
        exec_plugin(env, stdin, Some(&self.bin()))
    }
}

/// One test's CNI world: a [`Runtime`] (its methods through `Deref`) and
/// a memifd.
pub struct Cni {
    pub rt: Runtime,
    pub memifd: Memifd,
}

impl std::ops::Deref for Cni {
    type Target = Runtime;
    fn deref(&self) -> &Runtime {
        &self.rt
    }
}

impl Cni {
    /// A memifd with config `memifd_config` and an empty world.
    #[track_caller]
    pub fn new(tag: &str, memifd_config: &str) -> Cni {
        let dir = TempDir::new(tag);
        let memifd = Memifd::start_with(&dir.path, memifd_config, &[]);
        Cni::with(dir, memifd)
    }

    /// Around a memifd started by the caller in `dir`.
    #[track_caller]
    pub fn with(dir: TempDir, memifd: Memifd) -> Cni {
        Cni {
            rt: Runtime::in_dir(dir),
            memifd,
        }
    }

    /// A single-plugin config: memif-cni with host-local IPAM on `subnet`.
    pub fn conf(&self, version: &str, name: &str, subnet: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": name,
            "type": "memif-cni",
            "memifdSocket": self.memifd.api_socket(),
            "capabilities": {"mac": true, "ips": true, "CNIDeviceInfoFile": true},
            "ipam": {
                "type": "host-local",
                "dataDir": self.ipam_dir(),
                "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": "10.200.0.0/16"}]
            }
        })
    }

    /// The memifd attachments of `network`.
    pub fn attachments(&self, network: &str) -> Vec<memif_cni::api::AttachmentInfo> {
        self.memifd
            .client()
            .list(Some(network.to_string()))
            .expect("list")
    }

    /// Files host-local keeps per allocated address in `network`.
    pub fn allocations(&self, network: &str) -> Vec<String> {
        let d = self.ipam_dir().join(network);
        let Ok(rd) = std::fs::read_dir(&d) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        v.sort();
        v
    }

    /// No link `ifname` in `ns`, no memifd attachment and no IPAM
    /// allocation in `network`.
    #[track_caller]
    pub fn assert_nothing_left(&self, ns: &Netns, ifname: &str, network: &str) {
        assert!(!link_exists(ns, ifname), "{ifname} left in {}", ns.name());
        let a = self.attachments(network);
        assert!(a.is_empty(), "memifd attachments left: {a:?}");
        let ip = self.allocations(network);
        assert!(ip.is_empty(), "IPAM allocations left: {ip:?}");
    }
}

impl Cni {
    /// As [`Cni::assert_nothing_left`] when memifd is not running.
    #[track_caller]
    pub fn assert_nothing_left_without_memifd(&self, ns: &Netns, ifname: &str, network: &str) {
        assert!(!link_exists(ns, ifname), "{ifname} left in {}", ns.name());
        let ip = self.allocations(network);
        assert!(ip.is_empty(), "IPAM allocations left: {ip:?}");
    }
}

/// Runs the plugin binary with exactly `env` and `stdin`.
pub fn exec_plugin(env: &[(&str, &str)], stdin: &[u8], cni_path: Option<&Path>) -> Run {
    let mut c = Command::new(PLUGIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    if let Some(p) = cni_path {
        if !env.iter().any(|(k, _)| *k == "CNI_PATH") {
            c.env("CNI_PATH", p);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::piped());
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn memif-cni");
    use std::io::Write;
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().expect("wait memif-cni");
    Run {
        exit: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

fn run(mut c: Command) -> Run {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {c:?}: {e}"));
    Run {
        exit: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Whether `ifname` exists in `ns`.
pub fn link_exists(ns: &Netns, ifname: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns.name(), "link", "show", "dev", ifname])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run ip link show")
        .success()
}

/// Whether this kernel can create dummy links (probed in a scratch netns).
pub fn kernel_has_dummy() -> bool {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let ns = Netns::new(&format!("dprobe{}", N.fetch_add(1, Ordering::Relaxed)));
    Command::new("ip")
        .args(["-n", ns.name(), "link", "add", "probe0", "type", "dummy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run ip link add")
        .success()
}

/// Runs the test `test` of the current test binary inside a QEMU VM
/// (`e2e/vm/run.sh`, a stock Debian kernel with dummy) with
/// `MEMIF_CNI_IN_VM=1`; fails when it fails there.
#[track_caller]
pub fn run_self_in_vm(test: &str) {
    let exe = std::env::current_exe().expect("test binary path");
    let repo = repo();
    eprintln!("{test}: running it in a VM (e2e/vm/run.sh)");
    // The guest sees the host's / read-only but fresh /tmp and /run: share
    // the repository and the build directory so a clone anywhere works.
    let mut shares = vec![repo.clone()];
    if let Some(target) = exe
        .ancestors()
        .find(|a| a.join("debug").is_dir() || a.ends_with("target"))
    {
        if !target.starts_with(&repo) {
            shares.push(target.to_path_buf());
        }
    }
    let mut cmd = Command::new("bash");
    cmd.arg(repo.join("e2e/vm/run.sh"));
    for d in &shares {
        cmd.arg("--share").arg(d);
    }
    let st = cmd
        .args(["--env", "MEMIF_CNI_IN_VM=1", "--env", "RUST_BACKTRACE=1"])
        .args(["--mem", "1536", "--timeout", "900", "--"])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .current_dir(&repo)
        .stdin(Stdio::null())
        .status()
        .expect("run e2e/vm/run.sh");
    assert!(st.success(), "{test} failed inside the VM ({st})");
}

/// Whether this process runs inside the test VM.
pub fn in_vm() -> bool {
    std::env::var_os("MEMIF_CNI_IN_VM").is_some()
}
