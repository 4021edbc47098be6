#!/usr/bin/env bash
# The project's test command (README "Testing"; .ci/run calls it):
# installs missing packages, checks formatting, lints and docs, runs every
# test.
# Run as root: the DPDK interop tests use network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "e2e/test.sh: run as root (network namespaces, dpdk-testpmd)" >&2
  exit 1
fi
# shellcheck source=lib/progress.sh
. e2e/lib/progress.sh
ticking test "installing what is missing" bash e2e/deps.sh test
cargo fmt --all -- --check
ticking test "clippy (builds the crate and its dependencies)" \
  cargo clippy --all-targets -- -D warnings
ticking test "docs" env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
ticking test "building the tests" cargo test --all-targets --no-run
# Integration tests that start DPDK serialize themselves; two threads suit
# this project's two-core machines.
cargo test --all-targets -- --test-threads=2
# Every fuzz target on its seeds for 20 s (fuzz/README.md; nightly toolchain).
ticking test "fuzzing (build, then 20 s per target)" bash e2e/fuzz.sh
echo "e2e/test.sh: every test passed in ${SECONDS}s"
