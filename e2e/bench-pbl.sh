#!/usr/bin/env bash
# PBL per-packet cost: UDP request/response round trips from the host to a
# pod's address, steered by memifd's policy rules (host -> TUN -> memifd ->
# memif client in the pod, which answers) against the pod's plain primary
# path (host -> bridge -> veth -> a socket on eth0), in alternating blocks
# in one run, release build. Prints latency (mean, p50, p99) and memifd's
# CPU time per packet, and the ratio. Needs root (namespaces, rules).
#   sudo bash e2e/bench-pbl.sh [round trips per path, default 20000]
# PBL_BENCH_RX_MODE=polling|adaptive|interrupt (default) sets memifd's rx mode.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-pbl: needs root (network namespaces, ip rules)" >&2; exit 1; }
PBL_BENCH_N="${1:-20000}" exec cargo test --release --test pbl per_packet_cost_steered_vs_eth0 \
  -- --exact --nocapture --test-threads=1
