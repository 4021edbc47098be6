//! Driving `dpdk-testpmd` (DPDK 22.11) with memif ports, interactively:
//! used by `tests/dataplane.rs`, `examples/dataplane_bench/` and
//! `examples/dp_instr.rs` (under valgrind: [`Testpmd::start_wrapped`]).
//!
//! What this is built around (see also `tests/dpdk_interop.rs`):
//! - interactive mode (`-i`), commands on stdin, stdout line-buffered with
//!   `stdbuf -oL`, so a command's output sits between two prompts;
//! - `--no-flush-rx`: `start` must not throw away what waits in the rings;
//! - forwarding runs on a non-main lcore (`-l MAIN,FWD --main-lcore MAIN`);
//! - the memif PMD can SIGSEGV when the peer disconnects while a forwarding
//!   lcore polls: always `stop` before anyone disconnects;
//! - DPDK clients connect once at port start and never retry: the master
//!   must listen first.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const STARTUP: Duration = Duration::from_secs(30);
const PROMPT: &str = "testpmd> ";

/// How to start one testpmd.
pub struct TestpmdOpts<'a> {
    pub label: &'a str,
    /// `--file-prefix`, unique on the machine.
    pub prefix: String,
    /// Run inside `ip netns exec NAME`, or in our own netns.
    pub netns: Option<&'a str>,
    /// `(role, abstract socket name)` of each memif port, in port order.
    pub ports: Vec<(&'a str, String)>,
    /// Main lcore, forwarding lcore.
    pub lcores: (u32, u32),
    /// Extra testpmd application arguments (after `--`).
    pub args: Vec<String>,
    /// Where the output goes.
    pub out: PathBuf,
}

/// An interactive testpmd; killed on drop (and its runtime dir removed).
pub struct Testpmd {
    child: Child,
    stdin: Option<ChildStdin>,
    out: PathBuf,
    prefix: String,
    pub label: String,
    prompts: usize,
    /// How long a prompt (startup, a command) may take.
    timeout: Duration,
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Testpmd {
    /// Starts testpmd and waits for its first prompt.
    pub fn start(o: TestpmdOpts<'_>) -> Testpmd {
        Self::start_wrapped(o, &[], STARTUP)
    }

    /// Starts testpmd under the command `wrap` (e.g. valgrind and its
    /// options; testpmd's own command line follows it, so the wrapper must
    /// exec testpmd in the same process for [`Testpmd::pid`] to be
    /// testpmd's), allowing `timeout` for its first prompt and each command.
    pub fn start_wrapped(o: TestpmdOpts<'_>, wrap: &[String], timeout: Duration) -> Testpmd {
        let file = File::create(&o.out).expect("testpmd output file");
        let mut cmd = match o.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "stdbuf"]);
                c
            }
            None => Command::new("stdbuf"),
        };
        let (main, fwd) = o.lcores;
        cmd.arg("-oL")
            .args(wrap)
            .args(["dpdk-testpmd", "-l", &format!("{main},{fwd}")])
            .args(["--main-lcore", &main.to_string()])
            .args(["--no-huge", "-m", "1024", "--no-pci", "--file-prefix"])
            .arg(&o.prefix);
        for (i, (role, sock)) in o.ports.iter().enumerate() {
            cmd.arg(format!(
                "--vdev=net_memif{i},role={role},socket={sock},socket-abstract=yes"
            ));
        }
        cmd.args(["--", "-i", "--no-mlockall", "--total-num-mbufs=32768"])
            .args(["--no-flush-rx"])
            .args(&o.args)
            .stdin(Stdio::piped())
            .stdout(file.try_clone().expect("dup output file"))
            .stderr(file);
        let mut child = cmd.spawn().expect("spawn dpdk-testpmd");
        let stdin = child.stdin.take();
        let mut t = Testpmd {
            child,
            stdin,
            out: o.out,
            prefix: o.prefix,
            label: o.label.to_string(),
            prompts: 0,
            timeout,
        };
        t.wait_prompt(1);
        t
    }

    /// The process id (`ip netns exec`, `stdbuf` and a wrapper that
    /// execs keep it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.out).unwrap_or_default()).into_owned()
    }

    fn wait_prompt(&mut self, n: usize) {
        let deadline = Instant::now() + self.timeout;
        loop {
            let text = self.output();
            if text.matches(PROMPT).count() >= n {
                self.prompts = n;
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("testpmd {} exited ({st}) early:\n{text}", self.label);
            }
            assert!(
                Instant::now() < deadline,
                "testpmd {}: no prompt within {:?}:\n{text}",
                self.label,
                self.timeout
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("testpmd stdin open");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("testpmd {}: write {line:?}: {e}", self.label));
    }

    /// Runs a command; returns what it printed.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        let n = self.prompts + 1;
        self.wait_prompt(n);
        let text = self.output();
        text.split(PROMPT)
            .nth(n - 1)
            .unwrap_or_default()
            .to_string()
    }

    /// Polls `show port info P` until the link is up.
    pub fn wait_link_up(&mut self, port: u16) {
        let deadline = Instant::now() + self.timeout;
        loop {
            let info = self.cmd(&format!("show port info {port}"));
            if info.contains("Link status: up") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "testpmd {}: memif port {port} never came up:\n{}",
                self.label,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `show port stats P`, parsed.
    pub fn port_stats(&mut self, port: u16) -> PortCounts {
        let text = self.cmd(&format!("show port stats {port}"));
        PortCounts {
            rx_packets: number_after(&text, "RX-packets:"),
            tx_packets: number_after(&text, "TX-packets:"),
            rx_bytes: number_after(&text, "RX-bytes:"),
            tx_bytes: number_after(&text, "TX-bytes:"),
        }
    }

    /// `quit`; waits for a clean exit and returns the whole output.
    pub fn quit(&mut self) -> String {
        self.send("quit");
        self.stdin = None;
        let st = wait_timeout(&mut self.child, Duration::from_secs(20));
        let text = self.output();
        match st {
            Some(st) if st.success() => text,
            Some(st) => panic!("testpmd {} exited with {st}:\n{text}", self.label),
            None => panic!("testpmd {} did not quit:\n{text}", self.label),
        }
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

/// The number after `label` in `text` (first occurrence).
pub fn number_after(text: &str, label: &str) -> u64 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"));
    let digits: String = text[at + label.len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .parse()
        .unwrap_or_else(|e| panic!("{label:?} value {digits:?}: {e} in:\n{text}"))
}

/// A port's counters as testpmd printed them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortCounts {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}
