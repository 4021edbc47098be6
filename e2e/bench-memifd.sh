#!/usr/bin/env bash
# memifd control-plane figures: attach latency p50/p99 (serial and with
# concurrent callers), restart recovery time, memory and idle CPU with N
# idle attachments, each in its own pod netns. Needs root.
#   sudo bash e2e/bench-memifd.sh [-n 1000] [--threads 8]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-memifd: needs root (network namespaces)" >&2; exit 1; }
cargo build --release --bin memifd --example memifd_bench >&2
exec target/release/examples/memifd_bench --memifd target/release/memifd "$@"
