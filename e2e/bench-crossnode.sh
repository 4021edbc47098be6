#!/usr/bin/env bash
# Networks across nodes, 64-byte packets: memifd's own VXLAN path against
# the kernel's vxlan devices, between the same two node namespaces on this
# machine (a bridge in a hub namespace is the underlay), encapsulation and
# decapsulation measured separately:
#
#   encap  pod on node 1 -> node 1 -> VXLAN on the underlay, counted as it
#          leaves node 1's underlay interface (the wire ends at the hub's
#          port, which drops it: node 2's receive is decap's part)
#          memifd: `memifctl peer` (memif slave, tx) in pod A -> memifd on
#                  node 1 (worker: lookup, VXLAN header, sendmmsg)
#          kernel: a UDP socket in pod A' (examples/udp_blast.rs) -> its veth
#                  -> node 1 (RPS, routing, vxlan0)
#   decap  VXLAN packets from the underlay (examples/udp_blast in the hub,
#          sending 64 at a time as UDP GSO, cut into packets before the
#          bridge's port to node 2: a cheap generator) -> node 2 -> pod,
#          counted as delivered to the pod
#          memifd: memifd on node 2 (recvmmsg, checks, decap) -> pod B's memif
#                  (`memifctl peer` rx, which counts)
#          kernel: node 2 (RPS, vxlan0, routing) -> pod B''s veth
#
# Placement (2 cores): the generator runs on CPU 0; the node being measured
# on CPU 1: memifd pinned there, the kernel's receive work steered there
# with RPS on the interface the packets enter the node by (for memifd's
# socket path too: its kernel half is part of its cost). The wire (the
# bridge in decap, the hub's port in encap) is steered to CPU 0 by RPS: on
# real hosts it costs the nodes nothing. The pod's memif
# sink in memifd's decap shares CPU 0 with the generator, draining its
# ring (1024 slots) and sleeping 50 us while it is empty, so that it is
# not a third busy process (the kernel's sink is the pod's stack, which
# drops the packets at a closed port).
# The kernel's vxlan devices use port 4790 so they do not collide with
# memifd's sockets on 4789; nothing else differs.
#
#   bash e2e/bench-crossnode.sh [--no-build]     (as root)
#
# Environment: CROSSNODE_ROUNDS (default 3, medians are reported),
# CROSSNODE_SECONDS (measured window per run, default 4).
# Last line: crossnode: encap X.XX, decap Y.YY (memifd / kernel vxlan, target >= 3)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
[ "$(id -u)" -eq 0 ] || { echo "bench-crossnode: run as root (namespaces)" >&2; exit 1; }
# shellcheck source=lib/pkgs.sh
. e2e/lib/pkgs.sh
# shellcheck source=lib/progress.sh
. e2e/lib/progress.sh
pkgs_install bench-crossnode iproute2 python3 util-linux ethtool
[ "$(nproc)" -ge 2 ] || { echo "bench-crossnode: needs 2 CPUs" >&2; exit 1; }
# --no-build: use the release binaries as they are (repeated runs).
[ "${1:-}" = --no-build ] ||
  ticking bench-crossnode "building (release)" cargo build --release --bins --example udp_blast

rounds=${CROSSNODE_ROUNDS:-3}
secs=${CROSSNODE_SECONDS:-4}
bin=$repo/target/release
t=xb$$
hub=$t-hub n1=$t-n1 n2=$t-n2 pa=$t-a pb=$t-b ka=$t-ka kb=$t-kb la=$t-la lb=$t-lb
vni=4242
work=$(mktemp -d /tmp/memif-cni-bench-crossnode.XXXXXX)
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in $(cat "$work/generators" 2>/dev/null); do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  for ns in "$pa" "$pb" "$ka" "$kb" "$la" "$lb" "$n1" "$n2" "$hub"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

# --- the cluster -------------------------------------------------------------
for ns in "$hub" "$n1" "$n2" "$pa" "$pb" "$ka" "$kb" "$la" "$lb"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip -n "$hub" link add br0 type bridge
ip -n "$hub" link set br0 up
for i in 1 2; do
  n=$t-n$i
  ip link add "$t-u$i" type veth peer name "$t-h$i"
  ip link set "$t-u$i" netns "$n" name under0
  ip link set "$t-h$i" netns "$hub"
  ip -n "$hub" link set "$t-h$i" master br0 up
  ip -n "$n" addr add "198.18.200.$i/24" dev under0
  ip -n "$n" link set under0 up
  ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0
done
# The underlay interfaces as NICs are. Node 1's takes no UDP segmentation
# offload (tx-udp-segmentation off): a GSO datagram memifd sends is cut
# into its VXLAN packets by the kernel just before the device, on the
# sending CPU, as for a NIC without USO (a veth would carry it whole,
# which costs nothing and would count as one packet). Node 2's does GRO
# (a NIC's driver does it in its poll; a veth only when asked, and only
# for frames from a peer without TSO), for both paths alike. The hub,
# where decap's generator sends from, cuts its GSO datagrams on the
# bridge's port to node 2.
ip netns exec "$n1" ethtool -K under0 tx-udp-segmentation off
ip netns exec "$n2" ethtool -K under0 gro on
ip netns exec "$hub" ethtool -K "$t-h2" tso off tx-udp-segmentation off
ip -n "$hub" addr add 198.18.200.3/24 dev br0

# The kernel's pods: a veth to their node each.
veth_pod() { # pod node pod-address
  local pod=$1 node=$2 addr=$3 a=$t-v$RANDOM
  ip link add "$a" type veth peer name "${a}p"
  ip link set "$a" netns "$node" name "k-$pod"
  ip link set "${a}p" netns "$pod" name eth0
  ip -n "$pod" addr add "$addr/32" dev eth0
  ip -n "$pod" link set eth0 up
  ip -n "$pod" route add default dev eth0
  ip -n "$node" link set "k-$pod" up
  ip -n "$node" route add "$addr/32" dev "k-$pod"
}
veth_pod "$ka" "$n1" 198.19.0.1
veth_pod "$kb" "$n2" 198.19.0.2
# The kernel's vxlan devices (port 4790); node 2's carries the inner
# destination address memifd uses for ip networks, so both decapsulate the
# same frames.
ip -n "$n1" link add vxlan0 type vxlan id "$vni" local 198.18.200.1 remote 198.18.200.2 \
  dstport 4790 dev under0
ip -n "$n2" link add vxlan0 address 02:00:00:00:00:02 type vxlan id "$vni" local 198.18.200.2 \
  remote 198.18.200.1 dstport 4790 dev under0
for n in "$n1" "$n2"; do ip -n "$n" link set vxlan0 up; done
ip -n "$n1" route add 198.19.0.2/32 dev vxlan0
ip -n "$n1" neigh add 198.19.0.2 lladdr 02:00:00:00:00:02 nud permanent dev vxlan0
ip -n "$n2" route add 198.19.0.1/32 dev vxlan0
mac() { ip -n "$1" -j link show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])'; }
ip -n "$n2" neigh add 198.19.0.2 lladdr "$(mac "$kb" eth0)" nud permanent dev "k-$kb"
# Pod A' sends to its node's veth without asking ARP (the node has no
# address on that link to answer with).
ip -n "$ka" neigh add 198.19.0.2 lladdr "$(mac "$n1" "k-$ka")" nud permanent dev eth0

# memifd on each node, pinned to CPU 1, peers from a file.
for i in 1 2; do
  mkdir -p "$work/n$i"
  printf '{"nodeName": "n%s", "underlay": {"address": "198.18.200.%s"}, "peersFile": "%s", "workers": 1}\n' \
    "$i" "$i" "$work/peers.json" >"$work/n$i/memifd.json"
  taskset -c 1 ip netns exec "$t-n$i" "$bin/memifd" --config "$work/n$i/memifd.json" \
    --api-socket "$work/n$i/api.sock" --state-dir "$work/n$i" --no-kubernetes --log warn \
    2>"$work/n$i/memifd.log" &
  pids+=($!)
  eval "memifd$i=$!"
done
ctl() { local i=$1; shift; MEMIFD_SOCKET="$work/n$i/api.sock" "$bin/memifctl" "$@"; }
for i in 1 2; do
  for _ in $(seq 200); do ctl "$i" show status >/dev/null 2>&1 && break; sleep 0.05; done
  ctl "$i" show status >/dev/null || { cat "$work/n$i/memifd.log" >&2; exit 1; }
done
# memifctl peer's frames go 198.18.0.1 -> 198.18.0.2: pods A and B.
ctl 1 attach --netns "$pa" --container "$pa" --network xb-net --mode ip --ip 198.18.0.1 \
  --vni "$vni" >/dev/null
ctl 2 attach --netns "$pb" --container "$pb" --network xb-net --mode ip --ip 198.18.0.2 \
  --vni "$vni" >/dev/null
# Two pods of another network on node 1, for the same-node reference.
ctl 1 attach --netns "$la" --container "$la" --network xb-local --mode ip --ip 198.18.0.1 >/dev/null
ctl 1 attach --netns "$lb" --container "$lb" --network xb-local --mode ip --ip 198.18.0.2 >/dev/null
# The peers file: each node's own object, as an operator would publish it.
items=$(for i in 1 2; do ctl "$i" show remote --json; done | python3 -c '
import json, sys
dec = json.JSONDecoder()
s = sys.stdin.read().strip()
items = []
while s:
    o, n = dec.raw_decode(s)
    items.append(o["localObject"])
    s = s[n:].strip()
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))')
echo "$items" >"$work/peers.json.tmp" && mv "$work/peers.json.tmp" "$work/peers.json"
for _ in $(seq 100); do
  ctl 1 show remote | grep -q 198.18.0.2 && ctl 2 show remote | grep -q 198.18.0.1 && break
  sleep 0.1
done
ctl 1 show remote | grep -q 198.18.0.2 || { echo "bench-crossnode: node 1 never learned pod B" >&2; ctl 1 show remote >&2; exit 1; }

# --- frames ------------------------------------------------------------------
# The generator's UDP payloads: a VXLAN header and a 64-byte IP packet
# 198.x.0.1 -> 198.x.0.2 (UDP 9 -> 9), for memifd's network (x = 18) and
# the kernel's (x = 19).
python3 - "$work" "$vni" <<'PY'
import struct, sys
w, vni = sys.argv[1:]
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
def ipv4(src, dst, proto, payload):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                    bytes(src), bytes(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload
def udp(sport, dport, body): return struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body
def inner(net):  # 64 bytes of IP
    return ipv4([198, net, 0, 1], [198, net, 0, 2], 17, udp(9, 9, bytes(64 - 28)))
def vxlan(net):
    eth = bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]) + b"\x08\x00"
    return struct.pack("!BBHI", 0x08, 0, 0, int(vni) << 8) + eth + inner(net)
for name, net in (("vxlan-memifd", 18), ("vxlan-kernel", 19)):
    with open("%s/%s.bin" % (w, name), "wb") as f:
        f.write(vxlan(net))
PY

# --- measuring ---------------------------------------------------------------
counter() { # ns dev rx|tx
  ip -n "$1" -s -j link show "$2" |
    python3 -c "import json,sys; print(json.load(sys.stdin)[0]['stats64']['$3']['packets'])"
}
now() { date +%s.%N; }
rps() { # ns dev cpumask
  ip netns exec "$1" sh -c "echo $3 > /sys/class/net/$2/queues/rx-0/rps_cpus"
}
# The decap generator: VXLAN packets from the hub to node 2's port PORT,
# for SECONDS, on CPU 0. Prints its pid.
vxlan_gen() { # payload port seconds
  taskset -c 0 "$bin/examples/udp_blast" --netns "/run/netns/$hub" --from 198.18.200.3:49152 \
    --to "198.18.200.2:$2" --payload "$work/$1.bin" --gso --seconds "$3" \
    >"$work/gen-$1.json" 2>"$work/gen-$1.log" &
  echo $! | tee -a "$work/generators"
}
# Waits for a generator (started in a command substitution, so not this
# shell's child); fails, with its log, if it sent nothing.
gen_done() { # pid payload
  while kill -0 "$1" 2>/dev/null; do sleep 0.1; done
  grep -q '"sent": [1-9]' "$work/gen-$2.json" 2>/dev/null ||
    { echo "bench-crossnode: generator ($2) failed:" >&2; cat "$work/gen-$2.log" "$work/gen-$2.json" >&2; exit 1; }
}
# Node N's UDP datagrams taken by sockets (a GRO datagram counts once) and
# dropped for a full receive buffer; the host's backlog drops.
udp_stats() { # ns
  ip netns exec "$1" awk '/^Udp:/ { if (h) { printf "%s/%s/%s ", $2, $4, $6 } h = 1 } /^Ip:/ { if (i) printf "ip-in %s discards %s ", $4, $9; i = 1 }' /proc/net/snmp
}
softnet_drops() {
  local s=0 _a b _r
  while read -r _a b _r; do s=$((s + 0x$b)); done </proc/net/softnet_stat
  echo "$s"
}
hz=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # a process's user + system ticks
# The packets memifd on node N sent to (tx) or took from (rx) the pods of a
# network.
att_counter() { # node network tx|rx
  ctl "$1" list --json --network "$2" |
    python3 -c "import json,sys; print(sum(a['stats']['$3Packets'] for a in json.load(sys.stdin)))"
}
# The VXLAN packets memifd on node N took off its underlay socket.
underlay_rx() { # node
  ctl "$1" show remote --json | python3 -c "import json,sys; print(json.load(sys.stdin)['underlay']['rxPackets'])"
}
# The rate of a counter (a command printing a number) over the window,
# after a second of warm-up, in Mpps, then memifd's (PID's) CPU nanoseconds
# per packet over the same window (0 without a pid).
window() { # pid|- command...
  local pid=$1 c0 t0 c1 t1 p0=0 p1=0
  shift
  sleep 1
  c0=$("$@"); t0=$(now); [ "$pid" = - ] || p0=$(cpu "$pid")
  sleep "$secs"
  c1=$("$@"); t1=$(now); [ "$pid" = - ] || p1=$(cpu "$pid")
  python3 -c "d = max($c1 - $c0, 1); print('%.3f %d' % (($c1 - $c0) / ($t1 - $t0) / 1e6, ($p1 - $p0) * 1e9 / $hz / d))"
}
# A memifctl peer (memif slave) in a pod: rx counts, tx generates, on CPU 0.
# The receiver (rx) drains its ring (1024 slots, 1 ms at 1 Mpps) and
# sleeps 50 us when it is empty: not a third busy process on two cores.
peer() { # pod action seconds
  local rx=()
  [ "$2" = rx ] && rx=(--idle-sleep-us 50)
  taskset -c 0 "$bin/memifctl" peer --role slave --netns "/run/netns/$1" --socket @memif-eth1 \
    --mode ip --action "$2" --size 64 --duration "$3" "${rx[@]+"${rx[@]}"}" --json >"$work/peer-$1.json" 2>"$work/peer-$1.log" &
  echo $! | tee -a "$work/generators"
}
median() { tr ' ' '\n' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A res
add() { res[$1]="${res[$1]:-} $2"; }

rps "$n2" under0 2
echo "bench-crossnode: $rounds rounds of ${secs}s windows, 64-byte IP packets" >&2
# Decapsulation first (both memifds up).
long=$((secs + 3))
for r in $(seq "$rounds"); do
  # memifd: what it takes off the underlay and decapsulates for pod B,
  # then what pod B's sink (sharing CPU 0 with the generator) receives of it.
  sink=$(peer "$pb" rx "$((long + secs + 1))")
  sleep 0.5
  g=$(vxlan_gen vxlan-memifd 4789 $((3 * (secs + 1) + 1)))
  udp0=$(udp_stats "$n2"); sn0=$(softnet_drops)
  read -r m mc < <(window "$memifd2" underlay_rx 2)
  udp1=$(udp_stats "$n2"); sn1=$(softnet_drops)
  # Where packets are lost on node 2, if they are (expected: nowhere).
  echo "bench-crossnode: decap: node 2 snmp (Ip InReceives, InDiscards; Udp InDatagrams/InErrors/RcvbufErrors) $udp0-> $udp1; backlog drops $((sn1 - sn0)); pod B $(ctl 2 list --json --network xb-net | python3 -c 'import json,sys; print([a["stats"]["drops"] for a in json.load(sys.stdin)])')" >&2
  read -r got _ < <(window - att_counter 2 xb-net tx)
  read -r off _ < <(window - counter "$hub" "$t-h2" tx)
  gen_done "$g" vxlan-memifd
  wait "$sink" 2>/dev/null || true
  add decap-memifd "$m"; add decap-cpu "$mc"; add decap-offered "$off"; add decap-delivered "$got"
  # kernel: delivered to pod B''s veth.
  g=$(vxlan_gen vxlan-kernel 4790 $((secs + 2)))
  read -r k _ < <(window - counter "$kb" eth0 rx)
  gen_done "$g" vxlan-kernel
  add decap-kernel "$k"
  # Same node, for reference: what memifd on node 1 takes from pod LA
  # and routes to pod LB (which has no client, so it drops there: a third
  # busy process would not fit on two cores).
  gen=$(peer "$la" tx "$long")
  read -r l lc < <(window "$memifd1" att_counter 1 xb-local rx)
  wait "$gen" 2>/dev/null || true
  add local "$l"; add local-cpu "$lc"
  echo "bench-crossnode: decap round $r: memifd $m (${mc} ns/packet, $got delivered), kernel $k Mpps (offered $off); same node $l" >&2
done

# Encapsulation: what node 1 puts on its underlay. The hub's port to it
# leaves the bridge, so that frames for node 2's MAC go no further than
# the port's receive (on CPU 0), and node 1 knows node 2's MAC for good.
kill "$memifd2"; wait "$memifd2" 2>/dev/null || true
ip -n "$n2" link set vxlan0 down
ip -n "$n1" neigh replace 198.18.200.2 lladdr "$(mac "$n2" under0)" dev under0 nud permanent
ip -n "$hub" link set "$t-h1" nomaster
rps "$n1" "k-$ka" 2
rps "$hub" "$t-h1" 1
for r in $(seq "$rounds"); do
  gen=$(peer "$pa" tx "$long")
  read -r m mc < <(window "$memifd1" counter "$n1" under0 tx)
  wait "$gen" 2>/dev/null || true
  add encap-memifd "$m"; add encap-cpu "$mc"
  taskset -c 0 "$bin/examples/udp_blast" --netns "/run/netns/$ka" --to 198.19.0.2:9 \
    --ip-size 64 --seconds $((secs + 2)) >"$work/blast.json" 2>"$work/blast.log" &
  gen=$!
  read -r k _ < <(window - counter "$n1" under0 tx)
  wait "$gen" || { cat "$work/blast.log" >&2; exit 1; }
  add encap-kernel "$k"
  echo "bench-crossnode: encap round $r: memifd $m (${mc} ns/packet), kernel $k Mpps" >&2
done
errs=$(cat "$work"/n*/memifd.log | grep -c -i " error\| warn" || true)

# --- report ------------------------------------------------------------------
med() { echo "${res[$1]}" | xargs -n1 | median; }
# A path that carried next to nothing is a broken setup, not a figure.
for k in encap-memifd encap-kernel decap-memifd decap-kernel; do
  python3 -c "import sys; sys.exit(0 if $(med "$k") >= 0.01 else 1)" ||
    { echo "bench-crossnode: $k carried almost nothing (${res[$k]# } Mpps): the setup is broken" >&2; exit 1; }
done
em=$(med encap-memifd) ek=$(med encap-kernel) dm=$(med decap-memifd) dk=$(med decap-kernel)
ratio() { python3 -c "print('%.2f' % ($1 / $2 if $2 > 0 else 0))"; }
er=$(ratio "$em" "$ek") dr=$(ratio "$dm" "$dk")
echo
echo "networks across nodes, 64-byte IP packets, medians of $rounds runs"
printf '%-10s %12s %14s %7s %20s   %s\n' path "memifd Mpps" "kernel vxlan" ratio "memifd CPU ns/pkt" "runs (memifd | kernel)"
printf '%-10s %12s %14s %7s %20s   %s | %s\n' encap "$em" "$ek" "$er" "$(med encap-cpu)" "${res[encap-memifd]# }" "${res[encap-kernel]# }"
printf '%-10s %12s %14s %7s %20s   %s | %s\n' decap "$dm" "$dk" "$dr" "$(med decap-cpu)" "${res[decap-memifd]# }" "${res[decap-kernel]# }"
printf '%-10s %12s %14s %7s %20s   %s\n' same-node "$(med local)" - - "$(med local-cpu)" "${res[local]# }"
echo "encap: VXLAN packets leaving node 1's underlay interface (memifd: UDP GSO, cut in software before it)."
echo "decap: memifd's rate is what it took off the underlay and decapsulated; pod B's sink, on CPU 0"
echo "with the generator and the wire's receive work, received $(med decap-delivered) Mpps of it (the rest found its"
echo "ring full: tx-ring-full). Offered by the generator: $(med decap-offered) Mpps; node 2 does GRO on its underlay."
echo "same-node: memifd taking 64-byte packets from a pod and routing them to a local pod (no client there)."
echo "memifd warnings logged: $errs"
echo "(CPU ns/pkt: memifd's own user + system time; the kernel's receive work steered by RPS is not in it)"
echo "crossnode: encap $er, decap $dr (memifd / kernel vxlan, target >= 3)"
