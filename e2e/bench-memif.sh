#!/usr/bin/env bash
# memif throughput, ours vs DPDK, side by side in one run (as root):
#
#   bash e2e/bench-memif.sh
#
# For 64- and 1500-byte frames:
#   A  our master receiving   from a testpmd txonly client
#   B  a testpmd server (rxonly) receiving from the same kind of client
#   C  our master transmitting (action tx) to a testpmd rxonly client
#   D  a testpmd txonly server transmitting to a testpmd rxonly client
# Each pair is measured with the same instrument, the testpmd client:
# A/B its Tx-pps (txonly counts only what the receiver's ring took; drops
# are not Tx), C/D its Rx-pps. Every process polls on its own core: the
# client forwards on core 1, our peer is pinned to core 0 (taskset), the
# testpmd server forwards on core 0. A run samples `show port stats all`
# once a second; the first second is skipped and the median of the next
# SAMPLES is the run's figure. Runs are interleaved (A B C D, three times)
# and the table shows the median of the three. The machines are shared
# and noisy: compare the ratio, not absolute figures across runs.
#
# testpmd runs interactively (commands on stdin) so that forwarding can be
# stopped on both sides before anyone disconnects: DPDK 22.11's memif PMD
# can crash when the link drops while its lcore polls.
set -euo pipefail
cd "$(dirname "$0")/.."

SAMPLES=${SAMPLES:-3}
REPS=${REPS:-3}
SIZES=${SIZES:-"64 1500"}

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-memif: run as root (dpdk-testpmd)" >&2
  exit 1
fi
for t in dpdk-testpmd taskset stdbuf cargo; do
  command -v "$t" >/dev/null || { echo "bench-memif: $t not found (bash e2e/deps.sh installs the packages)" >&2; exit 1; }
done

# MEMIFCTL=path measures another build (e.g. the one before a change).
if [ -z "${MEMIFCTL:-}" ]; then
  cargo build --release --bin memifctl
fi
BIN=${MEMIFCTL:-$PWD/target/release/memifctl}

TAG=bench-memif-$$
WORK=$(mktemp -d "/tmp/$TAG.XXXXXX")
declare -A TP_PID TP_FD TP_N
# Processes we started and have not reaped yet (only these are killed).
declare -A LIVE
SEQ=0

cleanup() {
  local p
  for p in "${!LIVE[@]}"; do
    kill -KILL "$p" 2>/dev/null || true
  done
  for p in "${!LIVE[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$WORK" /var/run/dpdk/"$TAG"-*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
  echo "bench-memif: $*" >&2
  exit 1
}

prompts() { grep -o 'testpmd> ' "$WORK/$1.out" | wc -l; }

# tp_wait NAME N: waits until testpmd NAME has shown N prompts.
tp_wait() {
  local name=$1 n=$2 i
  for ((i = 0; i < 1000; i++)); do
    [ "$(prompts "$name")" -ge "$n" ] && { TP_N[$name]=$n; return 0; }
    kill -0 "${TP_PID[$name]}" 2>/dev/null || { tail -30 "$WORK/$name.out" >&2; die "testpmd $name exited"; }
    sleep 0.02
  done
  tail -30 "$WORK/$name.out" >&2
  die "testpmd $name: no prompt"
}

# tp_launch NAME FWD_CORE ROLE MODE [testpmd args...]: interactive testpmd
# with one memif port on $SOCK, forwarding on FWD_CORE; waits for its prompt.
tp_launch() {
  local name=$1 core=$2 role=$3 mode=$4 fd
  shift 4
  local main=$((1 - core))
  mkfifo "$WORK/$name.in"
  : >"$WORK/$name.out"
  stdbuf -oL dpdk-testpmd -l "$main,$core" --main-lcore "$main" --no-huge -m 1024 --no-pci \
    --file-prefix "$TAG-$name" \
    --vdev="net_memif0,role=$role,socket=$SOCK,socket-abstract=yes" \
    -- -i --forward-mode="$mode" --no-mlockall --total-num-mbufs=32768 --no-flush-rx "$@" \
    <"$WORK/$name.in" >"$WORK/$name.out" 2>&1 &
  TP_PID[$name]=$!
  LIVE[$!]=1
  exec {fd}>"$WORK/$name.in"
  TP_FD[$name]=$fd
  TP_N[$name]=0
  tp_wait "$name" 1
}

# tp_cmd NAME COMMAND: runs a command and waits for it to finish.
tp_cmd() {
  local name=$1
  echo "$2" >&"${TP_FD[$name]}"
  tp_wait "$name" $((TP_N[$name] + 1))
}

tp_link_up() {
  local name=$1 i
  for ((i = 0; i < 100; i++)); do
    tp_cmd "$name" "show port info 0"
    [ "$(grep -c 'Link status: up' "$WORK/$name.out")" -gt 0 ] && return 0
    sleep 0.1
  done
  tail -30 "$WORK/$name.out" >&2
  die "testpmd $name: memif link did not come up"
}

tp_quit() {
  local name=$1 fd=${TP_FD[$1]} i
  echo quit >&"$fd"
  exec {fd}>&-
  for ((i = 0; i < 500; i++)); do
    kill -0 "${TP_PID[$name]}" 2>/dev/null || break
    sleep 0.02
  done
  kill -0 "${TP_PID[$name]}" 2>/dev/null && die "testpmd $name did not quit"
  wait "${TP_PID[$name]}" 2>/dev/null || true
  unset "LIVE[${TP_PID[$name]}]"
  rm -f "$WORK/$name.in"
}

# sample NAME: a baseline `show port stats all`, then one a second.
sample() {
  local name=$1 i
  tp_cmd "$name" "show port stats all"
  for ((i = 0; i <= SAMPLES; i++)); do
    sleep 1
    tp_cmd "$name" "show port stats all"
  done
}

# rate NAME Rx|Tx: sets RESULT to the median Mpps of the samples, skipping
# the baseline and the first second (and the final, stopped, read).
rate() {
  local n
  n=$(grep -c "$2-pps:" "$WORK/$1.out" || true)
  [ "$n" -eq $((SAMPLES + 3)) ] || die "testpmd $1: expected $((SAMPLES + 3)) $2-pps lines, found $n"
  RESULT=$(grep -o "$2-pps: *[0-9]*" "$WORK/$1.out" | awk '{print $2}' |
    sed -n "3,$((SAMPLES + 2))p" | median_mpps)
}

# check_size NAME RX|TX SIZE: the client's port counters, read once
# forwarding has stopped (packets and bytes are read separately), show
# SIZE-byte frames: the run measured what the table says.
check_size() {
  local line p b
  line=$(grep "$2-packets:.*$2-bytes:" "$WORK/$1.out" | tail -1)
  p=$(grep -o "$2-packets: *[0-9]*" <<<"$line" | awk '{print $2}')
  b=$(grep -o "$2-bytes: *[0-9]*" <<<"$line" | awk '{print $2}')
  [ -n "$p" ] && [ "$p" -gt 0 ] && [ "$b" -eq $((p * $3)) ] ||
    die "testpmd $1: $2 $p packets, $b bytes: not $3-byte frames"
}

median_mpps() {
  sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) { print "nan"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.3f\n", m / 1e6 }'
}

median() {
  sort -g | awk '{v[NR] = $1} END { printf "%.3f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

new_socket() {
  SEQ=$((SEQ + 1))
  SOCK=$TAG-$SEQ
  rm -f "$WORK"/*.out
}

# our_master ACTION SIZE: our master on core 0; waits until it listens.
our_master() {
  taskset -c 0 "$BIN" peer --role master --socket "@$SOCK" --action "$1" --size "$2" \
    --duration 300 --connect-timeout 30 --json >"$WORK/peer.json" 2>"$WORK/peer.log" &
  PEER=$!
  LIVE[$PEER]=1
  local i
  for ((i = 0; i < 500; i++)); do
    awk -v s="@$SOCK" '$NF == s {f = 1} END {exit !f}' /proc/net/unix && return 0
    kill -0 "$PEER" 2>/dev/null || { cat "$WORK/peer.log" >&2; die "memifctl peer exited"; }
    sleep 0.02
  done
  die "memifctl peer never listened on @$SOCK"
}

our_master_done() {
  local i
  for ((i = 0; i < 500; i++)); do
    kill -0 "$PEER" 2>/dev/null || break
    sleep 0.02
  done
  kill -0 "$PEER" 2>/dev/null && die "memifctl peer did not end with the link"
  local st=0
  wait "$PEER" || st=$?
  unset "LIVE[$PEER]"
  [ "$st" -eq 0 ] || { cat "$WORK/peer.log" >&2; die "memifctl peer failed ($st)"; }
}

# A: our master rx <- testpmd txonly client (instrument: client Tx-pps).
run_a() {
  new_socket
  our_master rx "$1"
  tp_launch client 1 client txonly --txpkts="$1"
  tp_link_up client
  tp_cmd client start
  sample client
  tp_cmd client stop
  tp_cmd client "show port stats all"
  tp_quit client
  our_master_done
  check_size client TX "$1"
  rate client Tx
}

# B: testpmd server rxonly <- testpmd txonly client (client Tx-pps).
run_b() {
  new_socket
  tp_launch server 0 server rxonly
  tp_launch client 1 client txonly --txpkts="$1"
  tp_link_up client
  tp_cmd server start
  tp_cmd client start
  sample client
  tp_cmd client stop
  tp_cmd server stop
  tp_cmd client "show port stats all"
  tp_quit client
  tp_quit server
  check_size client TX "$1"
  rate client Tx
}

# C: our master tx -> testpmd rxonly client (client Rx-pps).
run_c() {
  new_socket
  our_master tx "$1"
  tp_launch client 1 client rxonly
  tp_link_up client
  tp_cmd client start
  sample client
  tp_cmd client stop
  tp_cmd client "show port stats all"
  tp_quit client
  our_master_done
  check_size client RX "$1"
  rate client Rx
}

# D: testpmd txonly server -> testpmd rxonly client (client Rx-pps).
run_d() {
  new_socket
  tp_launch server 0 server txonly --txpkts="$1"
  tp_launch client 1 client rxonly
  tp_link_up client
  tp_cmd client start
  tp_cmd server start
  sample client
  tp_cmd server stop
  tp_cmd client stop
  tp_cmd client "show port stats all"
  tp_quit client
  tp_quit server
  check_size client RX "$1"
  rate client Rx
}

declare -A R
start=$SECONDS
for size in $SIZES; do
  for ((rep = 1; rep <= REPS; rep++)); do
    for m in a b c d; do
      "run_$m" "$size"
      R[$size,$m]+="$RESULT "
      echo "size $size rep $rep ${m^^}: $RESULT Mpps" >&2
    done
  done
done

gbps() { awk -v m="$1" -v s="$2" 'BEGIN {printf "%.2f", m * s * 8 / 1000}'; }
# spread "V1 V2 ...": max/min of a configuration's runs.
spread() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.1f", (lo > 0) ? hi / lo : 99}'; }

echo
echo "memif throughput, median of $REPS interleaved runs (each the median of $SAMPLES one-second samples), $((SECONDS - start)) s"
printf '%-10s | %-22s | %9s | %11s | %9s | %11s | %15s\n' \
  "frame size" direction "ours Mpps" "ours Gbit/s" "DPDK Mpps" "DPDK Gbit/s" "ratio ours/DPDK"
printf -- '-----------+------------------------+-----------+-------------+-----------+-------------+----------------\n'
notes=()
for size in $SIZES; do
  for dir in rx tx; do
    if [ "$dir" = rx ]; then ours=a dpdk=b label="rx from testpmd (A/B)"; else ours=c dpdk=d label="tx to testpmd (C/D)"; fi
    o=$(tr ' ' '\n' <<<"${R[$size,$ours]}" | grep . | median)
    d=$(tr ' ' '\n' <<<"${R[$size,$dpdk]}" | grep . | median)
    ratio=$(awk -v o="$o" -v d="$d" 'BEGIN {if (d > 0) printf "%.2f", o / d; else print "n/a"}')
    so=$(spread "${R[$size,$ours]}")
    sd=$(spread "${R[$size,$dpdk]}")
    if awk -v a="$so" -v b="$sd" 'BEGIN {exit !(a > 1.5 || b > 1.5)}'; then
      ratio="$ratio (!)"
      notes+=("$size $dir: runs disagree (ours: ${R[$size,$ours]}| DPDK: ${R[$size,$dpdk]}Mpps)")
    fi
    printf '%-10s | %-22s | %9s | %11s | %9s | %11s | %15s\n' \
      "$size" "$label" "$o" "$(gbps "$o" "$size")" "$d" "$(gbps "$d" "$size")" "$ratio"
  done
done
if [ "${#notes[@]}" -gt 0 ]; then
  echo
  echo "(!) runs of a configuration differ by more than 1.5x: the machine was noisy"
  echo "    (shared host: throughput sometimes drops ~10x for seconds). Rerun to compare."
  printf '    %s\n' "${notes[@]}"
fi
