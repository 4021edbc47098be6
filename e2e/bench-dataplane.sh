#!/usr/bin/env bash
# The dataplane benchmark (see examples/dataplane_bench/main.rs): an io loop
# of 64-byte frames through memifd vs through a testpmd middle box, the
# kernel path (veth + a routing netns), memifd's CPU with 100 idle connected
# interfaces in interrupt and adaptive modes, two diagnostics of (a) (both
# loop ports injecting, and that with the loop testpmd in 5tswap mode), the
# host path (memifd's uplink against a veth pair), the round trip of single
# frames through memifd and testpmd, and (first, examples/dp_instr.rs)
# instructions per forwarded frame under callgrind. Prints a markdown table
# with the ratios, and as its last line:
#   dataplane: a X.XX, instr memifd/testpmd Y.YY, rtt p50 memifd/testpmd Z.ZZ, uplink/veth W.WW
# Needs root and dpdk-testpmd (bash e2e/deps.sh); installs valgrind when
# missing (only that, as e2e/lib/pkgs.sh does: nothing upgraded).
#   sudo bash e2e/bench-dataplane.sh [--reps 10] [--both-reps 6] [--swap-reps 6] [--samples 1] [--bursts 8] [--idle 100] [--kernel-reps 3]
#        [--rtt-rounds 16] [--rtt-trips 20000] [--uplink-reps 5] [--uplink-window 2] [--uplink-only pod-host|host-pod|veth]
#        [--memifd-before PATH] [--only a,a',a'',b,c,d,e,f]
#   DP_INSTR_ARGS="--packets 1200000 --pairs 3 --top 8 --keep" passes options to dp_instr.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-dataplane: needs root (network namespaces, dpdk-testpmd)" >&2; exit 1; }
# (f) runs unless --only leaves it out.
instr=1
prev=
for arg in "$@"; do
  if [ "$prev" = --only ]; then
    case ",$arg," in *,f,*) ;; *) instr= ;; esac
  fi
  prev=$arg
done
if [ -n "$instr" ]; then
  # shellcheck source=lib/pkgs.sh
  . e2e/lib/pkgs.sh
  pkgs_install bench-dataplane valgrind perl
fi
for t in dpdk-testpmd taskset stdbuf ip cargo ${instr:+valgrind vgdb callgrind_annotate chrt}; do
  command -v "$t" >/dev/null || { echo "bench-dataplane: $t not found (bash e2e/deps.sh installs the packages)" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "bench-dataplane: needs 2 CPUs" >&2; exit 1; }
# [profile.release] keeps line tables: callgrind names memifd's functions.
cargo build --release --bin memifd --example dataplane_bench --example dp_instr >&2
T=${CARGO_TARGET_DIR:-target}
table=()
if [ -n "$instr" ]; then
  out=$(mktemp /tmp/dp-instr-table.XXXXXX)
  trap 'rm -f "$out"' EXIT
  # shellcheck disable=SC2086
  "$T/release/examples/dp_instr" --memifd "$T/release/memifd" ${DP_INSTR_ARGS:-} > "$out"
  table=(--instr-table "$out")
fi
"$T/release/examples/dataplane_bench" --memifd "$T/release/memifd" "${table[@]}" "$@"
