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
bash e2e/deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
# Integration tests that start DPDK serialize themselves; two threads suit
# this project's two-core machines.
cargo test --all-targets -- --test-threads=2
echo "e2e/test.sh: every test passed in ${SECONDS}s"
