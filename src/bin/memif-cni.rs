//! memif-cni: the CNI plugin. Reads the `CNI_*` environment and the network
//! config on stdin, prints a result or an error object on stdout, logs to
//! stderr (level from `MEMIF_CNI_LOG`, default info). All logic is in
//! `memif_cni::cni`.

use std::io::{Read, Write};

use memif_cni::cni::env::Env;
use memif_cni::cni::plugin;

fn main() {
    // For people, not runtimes (those never pass arguments).
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("memif-cni {}", memif_cni::VERSION);
        return;
    }
    memif_cni::logging::init(None, "MEMIF_CNI_LOG", "info", false);
    let env = Env::from_process();
    let mut stdin = Vec::new();
    // VERSION and the about line need no stdin; a closed stdin is empty.
    if !matches!(&env, Ok(e) if e.command.is_empty()) {
        let _ = std::io::stdin().read_to_end(&mut stdin);
    }
    let out = plugin::run(env, &stdin);
    if !out.stderr.is_empty() {
        eprintln!("{}", out.stderr);
    }
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(out.stdout.as_bytes());
    if !out.stdout.is_empty() {
        let _ = so.write_all(b"\n");
    }
    let _ = so.flush();
    std::process::exit(out.exit);
}
