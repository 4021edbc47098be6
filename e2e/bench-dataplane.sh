#!/usr/bin/env bash
# The dataplane benchmark (see examples/dataplane_bench/main.rs): an io loop
# of 64-byte frames through memifd vs through a testpmd middle box, the
# kernel path (veth + a routing netns), memifd's CPU with 100 idle connected
# interfaces in interrupt and adaptive modes, two diagnostics of (a) (both
# loop ports injecting, and that with the loop testpmd in 5tswap mode), the
# host path (memifd's uplink against a veth pair), and the round trip of
# single frames through memifd and testpmd. Prints a
# markdown table with the ratios, and a summary as its last line. Needs root
# and dpdk-testpmd (bash e2e/deps.sh).
#   sudo bash e2e/bench-dataplane.sh [--reps 10] [--both-reps 6] [--swap-reps 6] [--samples 1] [--bursts 8] [--idle 100] [--kernel-reps 3]
#        [--rtt-rounds 6] [--rtt-trips 20000] [--uplink-reps 3] [--uplink-window 2] [--uplink-only pod-host|host-pod|veth]
#        [--memifd-before PATH] [--only a,a',a'',b,c,d,e]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-dataplane: needs root (network namespaces, dpdk-testpmd)" >&2; exit 1; }
for t in dpdk-testpmd taskset stdbuf ip cargo; do
  command -v "$t" >/dev/null || { echo "bench-dataplane: $t not found (bash e2e/deps.sh installs the packages)" >&2; exit 1; }
done
cargo build --release --bin memifd --example dataplane_bench >&2
T=${CARGO_TARGET_DIR:-target}
exec "$T/release/examples/dataplane_bench" --memifd "$T/release/memifd" "$@"
