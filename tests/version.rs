//! All three binaries print one version: the crate's and the git commit.

use std::process::Command;

#[test]
fn the_three_binaries_print_the_same_version_and_commit() {
    let want = memif_cni::VERSION;
    assert!(want.starts_with(env!("CARGO_PKG_VERSION")), "{want}");
    for (bin, name) in [
        (env!("CARGO_BIN_EXE_memif-cni"), "memif-cni"),
        (env!("CARGO_BIN_EXE_memifd"), "memifd"),
        (env!("CARGO_BIN_EXE_memifctl"), "memifctl"),
    ] {
        let out = Command::new(bin)
            .arg("--version")
            .output()
            .expect("run --version");
        assert!(out.status.success(), "{name} --version failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.trim(), format!("{name} {want}"), "{name}");
    }
    // In a git checkout (CI's clean clone is one) the commit is known.
    if std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.git")).exists() {
        assert!(!want.contains("unknown"), "{want}");
    }
}
