//! Helpers for tests that run the real `memifd` binary against real
//! network namespaces (`tests/memifd.rs`).
//!
//! Everything a test creates is owned by a guard that removes it on drop,
//! panics included: [`Memifd`] kills its process, [`Netns`] deletes its
//! namespace, [`TempDir`] removes its directory (kept, and named on stderr,
//! when the test failed). Names carry the process id and the test's tag,
//! so tests running in parallel, and concurrent `cargo test` runs, never
//! share a namespace, a state directory or an API socket.
//!
//! Every wait is bounded; the bounds are only reached when a test fails.
//! These tests need root and `ip netns`: without them they FAIL with the
//! reason (see [`preflight`]), they never skip.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use memif_cni::api::{
    AttachRequest, AttachmentInfo, AttachmentKey, Client, ClientError, ErrorCode, IfStats,
    MemifSpec, StatusInfo,
};
use memif_cni::memif::shm::Desc;
use memif_cni::memif::socket::{Channel, SocketError};
use memif_cni::memif::{SlaveConfig, SlaveConnection, SlaveError, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

/// The memifd binary under test.
pub const MEMIFD: &str = env!("CARGO_BIN_EXE_memifd");
/// How long memifd may take to answer `status` after it was started.
pub const START: Duration = Duration::from_secs(20);
/// Upper bound for anything else a test waits for.
pub const WAIT: Duration = Duration::from_secs(10);
/// Read/write timeout of every API client.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails (never skips) when this machine cannot run memifd tests.
#[track_caller]
pub fn preflight() {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push(
            "root privileges (memifd enters network namespaces): run the tests as root, \
             e.g. `sudo bash e2e/test.sh`"
                .to_string(),
        );
    }
    if !in_path("ip") {
        missing.push("`ip` in PATH (iproute2)".into());
    } else {
        match Command::new("ip").args(["netns", "list"]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => missing.push(format!(
                "`ip netns` support: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => missing.push(format!("`ip netns`: {e}")),
        }
    }
    assert!(
        missing.is_empty(),
        "memifd tests cannot run here; missing:\n  - {}",
        missing.join("\n  - ")
    );
}

pub fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// A name unique to this process and test tag.
pub fn unique(tag: &str) -> String {
    format!("mfd{}-{tag}", std::process::id())
}

/// Polls `f` until it returns `Some`, at most `timeout`; panics with
/// `what` (and the last value seen, through `f`'s own message) otherwise.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An error with its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s = format!("{s}: {c}");
        src = c.source();
    }
    s
}

/// A temporary directory; removed on drop unless the test failed.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("memifd-test-{}", unique(tag)));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create the test's temp directory");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct Netns {
    name: String,
    deleted: bool,
}

impl Netns {
    #[track_caller]
    pub fn new(tag: &str) -> Netns {
        let name = unique(tag);
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns {
            name,
            deleted: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, what CNI calls the netns path.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Deletes the namespace now (e.g. while memifd is down).
    #[track_caller]
    pub fn delete(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
            .expect("run ip netns del");
        assert!(
            out.status.success(),
            "ip netns del {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        self.deleted = true;
    }

    /// Abstract names with a listening socket in this namespace (`@name`),
    /// each as many times as it is bound.
    pub fn listeners(&self) -> Vec<String> {
        let path = self.path();
        memif_cni::netns::run_in(Some(&path), || {
            // /proc/thread-self: the table of this thread's namespace.
            fs::read_to_string("/proc/thread-self/net/unix")
        })
        .unwrap_or_else(|e| panic!("enter {}: {e}", self.name))
        .unwrap_or_else(|e| panic!("read /proc/net/unix in {}: {e}", self.name))
        .lines()
        .skip(1)
        .filter_map(|l| {
            // Num RefCount Protocol Flags Type St Inode Path; a listener
            // has __SO_ACCEPTCON (0x10000) in Flags. Accepted sockets
            // show the same path, connected (St 03), without that flag.
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 8 && f[3] == "00010000" && f[7].starts_with('@')).then(|| f[7].to_string())
        })
        .collect()
    }

    /// [`Self::listeners`] as a set; panics if a name is bound twice.
    #[track_caller]
    pub fn listener_set(&self) -> BTreeSet<String> {
        let v = self.listeners();
        let s: BTreeSet<String> = v.iter().cloned().collect();
        assert_eq!(
            s.len(),
            v.len(),
            "a name is bound twice in {}: {v:?}",
            self.name
        );
        s
    }

    /// Waits until the listeners in the namespace are exactly `want`
    /// (closing a listener is asynchronous in memifd).
    #[track_caller]
    pub fn wait_listeners(&self, want: &BTreeSet<String>) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.listener_set();
            if &got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "listeners in {}: got {got:?}, want {want:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Connects a control channel from inside the namespace (with a
    /// receive timeout, so a silent master cannot hang a test).
    pub fn connect(&self, addr: &SocketAddr) -> Result<Channel, SocketError> {
        let addr = addr.clone();
        memif_cni::netns::run_in(Some(&self.path()), move || {
            let chan = Channel::connect(&addr)?;
            set_recv_timeout(&chan);
            Ok(chan)
        })
        .unwrap_or_else(|e| panic!("enter {}: {e}", self.name))
    }

    /// A memif slave connected from inside the namespace; its queues work
    /// from any thread afterwards.
    pub fn slave(
        &self,
        addr: &SocketAddr,
        cfg: &SlaveConfig,
    ) -> Result<SlaveConnection, SlaveError> {
        let chan = self.connect(addr)?;
        let cfg = cfg.clone();
        SlaveConnection::handshake(chan, &cfg)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "cleanup: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("cleanup: ip netns del {}: {e}", self.name),
        }
    }
}

/// `SO_RCVTIMEO` of [`WAIT`] on a control channel.
pub fn set_recv_timeout(chan: &Channel) {
    setsockopt(
        chan,
        sockopt::ReceiveTimeout,
        &TimeVal::new(WAIT.as_secs() as _, 0),
    )
    .expect("SO_RCVTIMEO");
}

/// How to stop memifd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: a clean shutdown.
    Term,
    /// SIGKILL: a crash.
    Kill,
}

/// A running memifd with its own state directory and API socket; killed
/// (SIGKILL) on drop. Each start logs to its own file in the directory.
pub struct Memifd {
    /// In a mutex so liveness checks need only `&self`.
    child: Mutex<Option<Child>>,
    dir: PathBuf,
    env: Vec<(String, String)>,
    /// Whether memifd may use the Kubernetes API (its config then names a
    /// kubeconfig); otherwise it runs with `--no-kubernetes`.
    kube: bool,
    /// The network namespace memifd runs in (`ip netns exec`); `None`: the
    /// test's own.
    netns: Option<String>,
    starts: usize,
}

impl Memifd {
    /// Starts memifd with state and socket in `dir`, an empty config file
    /// (so the host's /etc/memif-cni/memifd.json cannot interfere) and no
    /// feature gates from the environment; waits until it answers.
    #[track_caller]
    pub fn start(dir: &Path) -> Memifd {
        Memifd::start_with(dir, "{}", &[])
    }

    /// As [`Memifd::start`] with a config file body and extra environment.
    #[track_caller]
    pub fn start_with(dir: &Path, config: &str, env: &[(&str, &str)]) -> Memifd {
        fs::write(dir.join("memifd.json"), config).expect("write memifd config");
        let mut m = Memifd {
            child: Mutex::new(None),
            dir: dir.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            kube: false,
            netns: None,
            starts: 0,
        };
        m.spawn();
        m
    }

    /// Starts memifd with Kubernetes API access through `kubeconfig` only.
    #[track_caller]
    pub fn start_kube(dir: &Path, kubeconfig: &Path) -> Memifd {
        Memifd::start_kube_with(dir, kubeconfig, serde_json::json!({}))
    }

    /// As [`Memifd::start_kube`], with more config keys (e.g. feature gates).
    #[track_caller]
    pub fn start_kube_with(dir: &Path, kubeconfig: &Path, extra: serde_json::Value) -> Memifd {
        let mut config = extra;
        config["kubeconfig"] = serde_json::json!(kubeconfig);
        let config = config.to_string();
        fs::write(dir.join("memifd.json"), config).expect("write memifd config");
        let mut m = Memifd {
            child: Mutex::new(None),
            dir: dir.to_path_buf(),
            env: Vec::new(),
            kube: true,
            netns: None,
            starts: 0,
        };
        m.spawn();
        m
    }

    /// memifd as one node of a cluster: inside network namespace `netns`
    /// (`ip netns exec`), with `config` and, when given, Kubernetes access
    /// through `kubeconfig`.
    #[track_caller]
    pub fn start_node(
        dir: &Path,
        netns: &str,
        config: serde_json::Value,
        kubeconfig: Option<&Path>,
    ) -> Memifd {
        let mut config = config;
        if let Some(k) = kubeconfig {
            config["kubeconfig"] = serde_json::json!(k);
        }
        fs::write(dir.join("memifd.json"), config.to_string()).expect("write memifd config");
        let mut m = Memifd {
            child: Mutex::new(None),
            dir: dir.to_path_buf(),
            env: Vec::new(),
            kube: kubeconfig.is_some(),
            netns: Some(netns.to_string()),
            starts: 0,
        };
        m.spawn();
        m
    }

    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn log_file(&self, n: usize) -> PathBuf {
        self.dir.join(format!("memifd-{n}.log"))
    }

    /// The log of the current (last) start.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_file(self.starts)).unwrap_or_default()
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pid(&self) -> u32 {
        self.child().as_ref().expect("memifd running").id()
    }

    #[track_caller]
    fn spawn(&mut self) {
        assert!(self.child().is_none(), "memifd is already running");
        self.starts += 1;
        let log = File::create(self.log_file(self.starts)).expect("memifd log file");
        // MEMIFD_UNDER_TEST runs the suite against another build (e.g. to
        // measure the one before a change); default: this build's.
        let bin = std::env::var("MEMIFD_UNDER_TEST").unwrap_or_else(|_| MEMIFD.to_string());
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("--api-socket")
            .arg(self.api_socket())
            .arg("--state-dir")
            .arg(&self.dir)
            .arg("--config")
            .arg(self.dir.join("memifd.json"))
            .args(["--log", "info"])
            .env_remove("CALICOVPP_FEATURE_GATES")
            .env_remove("MEMIFD_CONFIG")
            .env_remove("MEMIF_LOG")
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log file"))
            .stderr(log);
        if !self.kube {
            cmd.arg("--no-kubernetes");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        *self.child() = Some(cmd.spawn().expect("spawn memifd"));
        let deadline = Instant::now() + START;
        loop {
            let last = match self.try_status() {
                Ok(_) => return,
                Err(e) => e,
            };
            let exited = self.child().as_mut().unwrap().try_wait().expect("try_wait");
            if let Some(st) = exited {
                panic!("memifd exited ({st}) before answering:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "memifd did not answer status within {START:?} (last: {last}):\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts memifd again with the same directory, config and environment.
    #[track_caller]
    pub fn restart(&mut self) {
        self.spawn()
    }

    /// A new API connection.
    #[track_caller]
    pub fn client(&self) -> Client {
        Client::connect(&self.api_socket(), API_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to memifd: {e}\n{}", self.log()))
    }

    /// Stops memifd with `sig` and waits (bounded) for the exit.
    #[track_caller]
    pub fn stop(&mut self, sig: Stop) -> ExitStatus {
        let mut child = self.child().take().expect("memifd running");
        match sig {
            Stop::Kill => child.kill().expect("SIGKILL memifd"),
            Stop::Term => {
                let st = Command::new("kill")
                    .args(["-s", "TERM", &child.id().to_string()])
                    .status()
                    .expect("run kill");
                assert!(st.success(), "kill -s TERM memifd: {st}");
            }
        }
        exit_within(&mut child, WAIT).unwrap_or_else(|| {
            panic!(
                "memifd did not exit on {sig:?} within {WAIT:?}:\n{}",
                self.log()
            )
        })
    }

    /// Panics (with the log) unless memifd still runs and answers.
    #[track_caller]
    pub fn assert_alive(&self) {
        let exited = self
            .child()
            .as_mut()
            .expect("memifd started")
            .try_wait()
            .expect("try_wait");
        if let Some(st) = exited {
            panic!("memifd died ({st}):\n{}", self.log());
        }
        if let Err(e) = self.try_status() {
            panic!("memifd does not answer status: {e}\n{}", self.log());
        }
    }

    /// `status` through the library's client.
    pub fn try_status(&self) -> Result<StatusInfo, String> {
        Client::connect(&self.api_socket(), API_TIMEOUT)
            .and_then(|mut c| c.status())
            .map_err(|e| e.to_string())
    }

    #[track_caller]
    pub fn status(&self) -> StatusInfo {
        self.try_status()
            .unwrap_or_else(|e| panic!("status: {e}\n{}", self.log()))
    }

    /// Sends one raw line (without its newline) on `stream` and reads one
    /// reply line as JSON; `None` when memifd closed the connection.
    #[track_caller]
    pub fn raw_line(stream: &mut UnixStream, line: &[u8]) -> Option<serde_json::Value> {
        stream.write_all(line).expect("write request");
        stream.write_all(b"\n").expect("write newline");
        let buf = read_line(stream)
            .unwrap_or_else(|e| panic!("read reply to {:?}: {e}", String::from_utf8_lossy(line)));
        if buf.is_empty() {
            return None;
        }
        Some(serde_json::from_slice(&buf).unwrap_or_else(|e| {
            panic!("reply {:?} is not JSON: {e}", String::from_utf8_lossy(&buf))
        }))
    }

    /// A raw API connection with timeouts.
    #[track_caller]
    pub fn raw(&self) -> UnixStream {
        let s = UnixStream::connect(self.api_socket()).expect("connect the API socket");
        s.set_read_timeout(Some(API_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(API_TIMEOUT)).unwrap();
        s
    }

    /// The state file as JSON (`None` when absent); panics when it does not
    /// parse or has not the expected shape.
    #[track_caller]
    pub fn state(&self) -> Option<Vec<(AttachRequest, u32)>> {
        read_state(&self.state_file())
    }
}

/// One line without its newline (empty at end of stream).
pub fn read_line(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while s.read(&mut byte)? == 1 && byte[0] != b'\n' {
        buf.push(byte[0]);
    }
    Ok(buf)
}

/// Reads a state file: `(request, socketId)` of each attachment.
#[track_caller]
pub fn read_state(path: &Path) -> Option<Vec<(AttachRequest, u32)>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("state file {} does not parse: {e}\n{text}", path.display()));
    assert_eq!(v["version"], 1, "state file version: {text}");
    let items = v["attachments"]
        .as_array()
        .unwrap_or_else(|| panic!("no attachments array in {text}"));
    Some(
        items
            .iter()
            .map(|a| {
                let req: AttachRequest = serde_json::from_value(a["request"].clone())
                    .unwrap_or_else(|e| panic!("state entry {a}: {e}"));
                let sid = a["socketId"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("state entry without socketId: {a}"));
                (req, sid as u32)
            })
            .collect(),
    )
}

impl Drop for Memifd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child().take() {
            // SIGTERM first: memifd deletes its policy rules on the way
            // out (a SIGKILL would leave them for the next start to clean).
            let _ = Command::new("kill")
                .args(["-s", "TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- memifd log (last lines of start {}) ---\n{}",
                self.starts,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// An attach request for `container`/`ifname` in `ns` on `network`, the
/// default spec, listener `@<ifname>`.
pub fn request(ns: &Netns, container: &str, ifname: &str, network: &str) -> AttachRequest {
    AttachRequest {
        key: key(container, ifname),
        network: network.into(),
        netns: ns.path(),
        socket: None,
        spec: MemifSpec::default(),
        ips: vec!["10.1.0.2".parse().unwrap()],
        pod: None,
        steer: None,
        vni: None,
    }
}

pub fn key(container: &str, ifname: &str) -> AttachmentKey {
    AttachmentKey {
        container_id: container.into(),
        ifname: ifname.into(),
    }
}

/// The API error code of a failed call; panics on success or on a
/// transport failure.
#[track_caller]
pub fn api_code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (ErrorCode, String) {
    match r {
        Err(ClientError::Api(e)) => (e.code, e.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// `(key, socketId, request)` of each attachment: what must survive a
/// restart unchanged.
pub fn identity(list: &[AttachmentInfo]) -> Vec<(AttachmentKey, u32, AttachRequest)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|a| (a.request.key.clone(), a.socket_id.0, a.request.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A small slave (64-slot rings) named `name`.
pub fn slave_cfg(name: &str) -> SlaveConfig {
    SlaveConfig {
        name: name.into(),
        log2_ring_size: 6,
        ..SlaveConfig::default()
    }
}

/// Sends `n` frames of `len` bytes on the slave's tx queue `q`, as fast as
/// memifd frees the ring (bounded).
#[track_caller]
pub fn send_frames(slave: &mut SlaveConnection, q: usize, n: usize, len: usize) {
    let frame = vec![0x5au8; len];
    let burst: Vec<&[u8]> = (0..32).map(|_| frame.as_slice()).collect();
    let deadline = Instant::now() + WAIT;
    let mut sent = 0;
    while sent < n {
        let k = (n - sent).min(burst.len());
        let got = slave.tx[q].tx_burst(&burst[..k]).expect("slave tx_burst");
        sent += got;
        if got == 0 {
            assert!(
                Instant::now() < deadline,
                "memifd stopped consuming: {sent} of {n} frames sent"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Waits until memifd's counters for `key` show exactly `packets`
/// received; panics if they stop short or overshoot.
#[track_caller]
pub fn wait_rx(m: &Memifd, key: &AttachmentKey, packets: u64) -> AttachmentInfo {
    let mut c = m.client();
    let deadline = Instant::now() + WAIT;
    loop {
        let a = c.get(key.clone()).expect("get");
        assert!(
            a.stats.rx_packets <= packets,
            "{key}: memifd counted {} packets, {packets} were sent",
            a.stats.rx_packets
        );
        if a.stats.rx_packets == packets {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "{key}: memifd counted {:?}, want {packets} rx packets",
            a.stats
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until memifd's counters for `key` satisfy `ok` and returns
/// them; panics with the last counters seen otherwise. The dataplane
/// publishes its counters after each burst, so a counter read right
/// after the traffic it counts may not have caught up yet.
#[track_caller]
pub fn wait_stats(
    m: &Memifd,
    key: &AttachmentKey,
    what: &str,
    mut ok: impl FnMut(&IfStats) -> bool,
) -> IfStats {
    let mut c = m.client();
    let mut last = None;
    let found = {
        let deadline = Instant::now() + WAIT;
        loop {
            let st = c.get(key.clone()).expect("get").stats;
            if ok(&st) {
                break Some(st);
            }
            last = Some(st);
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    found.unwrap_or_else(|| panic!("{key}: {what} not within {WAIT:?}; last {last:?}"))
}

/// `memifctl client` in the netns at `netns` on the memif of `req` (its
/// socket and mode), with `args`; stdout and stderr piped.
pub fn spawn_memifctl_client(req: &AttachRequest, netns: &Path, args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_memifctl"))
        .arg("client")
        .arg("--socket")
        .arg(req.socket_name())
        .arg("--netns")
        .arg(netns)
        .args(["--mode", &req.spec.mode.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn memifctl client")
}

/// Waits up to `timeout` for `child` to exit; kills and reaps it and
/// returns `None` when it runs on (a test never hangs on a process).
pub fn exit_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A hostile client's move: publishes on `s`'s first S2M ring a descriptor
/// naming a region that does not exist, and kicks memifd.
pub fn post_bad_descriptor(s: &SlaveConnection) {
    let ring = s.tx[0].ring().clone();
    let head = ring.head();
    ring.set_desc(
        head,
        Desc {
            flags: 0,
            region: 7,
            length: 64,
            offset: 0,
        },
    );
    ring.set_head(head.wrapping_add(1));
    nix::unistd::write(s.tx[0].event_fd(), &1u64.to_ne_bytes()).expect("kick");
}

/// Waits until `key` has (`true`) or has not a connected client.
#[track_caller]
pub fn wait_connected(m: &Memifd, key: &AttachmentKey, connected: bool) -> AttachmentInfo {
    let mut c = m.client();
    wait_for(&format!("{key} connected={connected}"), WAIT, || {
        let a = c.get(key.clone()).expect("get");
        (a.connection.is_some() == connected).then_some(a)
    })
}
