//! Embeds the git commit the binaries are built from (`--version`), or
//! "unknown" outside a git checkout (e.g. a source tarball). The
//! environment variable MEMIF_CNI_COMMIT, when set, wins (the Dockerfile's
//! build context has no .git: `--build-arg COMMIT=...`).
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MEMIF_CNI_COMMIT");
    let given = std::env::var("MEMIF_CNI_COMMIT")
        .ok()
        .filter(|s| !s.is_empty());
    let commit = given.or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    });
    let commit = commit.unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MEMIF_CNI_COMMIT={commit}");
    for p in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
