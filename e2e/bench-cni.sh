#!/usr/bin/env bash
# CNI ADD and DEL latency through libcni (e2e/cnidriver), memif-cni with
# host-local IPAM (dummy + memifd attach) against Debian's bridge plugin with
# host-local, side by side in one run: N attachments each, one netns each,
# run in alternating halves (memif, bridge, memif, bridge) so drift hits
# both alike. Prints p50/p99 and the ratios. Needs root.
#   sudo bash e2e/bench-cni.sh [-n 200]
# On a kernel without the dummy link type the whole benchmark runs inside a
# QEMU VM (e2e/vm/run.sh): absolute figures there are slower (software
# emulation), the ratio is the comparable figure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
n=200
inner=0
while [ $# -gt 0 ]; do
  case "$1" in
  -n) n=$2; shift 2 ;;
  --inner) inner=1; shift ;;
  *) echo "usage: $0 [-n N]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench-cni: needs root (network namespaces)" >&2; exit 1; }

if [ "$inner" = 0 ]; then
  bash e2e/deps.sh >&2
  cargo build --release --bin memifd --bin memif-cni >&2
  bash e2e/cnidriver/build.sh >&2
  if bash e2e/vm/need-vm.sh; then
    echo "bench-cni: no dummy link type here; running in a VM" >&2
    exec bash e2e/vm/run.sh --share "$repo" --mem 2048 --timeout 1800 -- "$repo/e2e/bench-cni.sh" --inner -n "$n"
  fi
fi

# In the VM, the bridge module loads through the guest's modprobe.
if [ -n "${MEMIF_VM:-}" ]; then modprobe bridge 2>/dev/null || true; fi

work=$(mktemp -d /tmp/bench-cni.XXXXXX)
tag="bc$$"
cleanup() {
  [ -n "${memifd_pid:-}" ] && kill "$memifd_pid" 2>/dev/null || true
  for i in $(seq 0 $((n - 1))); do ip netns del "$tag-$i" 2>/dev/null || true; done
  ip link del "$tag-br" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/bin"
ln -s "$repo/target/release/memif-cni" "$work/bin/memif-cni"
for p in host-local bridge; do ln -s "/usr/lib/cni/$p" "$work/bin/$p"; done
echo '{}' >"$work/memifd.json"
"$repo/target/release/memifd" --config "$work/memifd.json" --api-socket "$work/api.sock" \
  --state-dir "$work" --no-kubernetes --log warn 2>"$work/memifd.log" &
memifd_pid=$!
for _ in $(seq 100); do [ -S "$work/api.sock" ] && break; sleep 0.05; done

for i in $(seq 0 $((n - 1))); do
  ip netns add "$tag-$i"
  echo "/run/netns/$tag-$i"
done >"$work/netns.list"
half=$((n / 2))
head -n "$half" "$work/netns.list" >"$work/a.list"
tail -n +"$((half + 1))" "$work/netns.list" >"$work/b.list"

cat >"$work/memif.json" <<JSON
{"cniVersion": "1.0.0", "name": "bench-memif", "type": "memif-cni",
 "memifdSocket": "$work/api.sock",
 "ipam": {"type": "host-local", "dataDir": "$work/ipam", "ranges": [[{"subnet": "10.90.0.0/16"}]]}}
JSON
cat >"$work/bridge.json" <<JSON
{"cniVersion": "1.0.0", "name": "bench-bridge", "type": "bridge", "bridge": "$tag-br",
 "ipam": {"type": "host-local", "dataDir": "$work/ipam", "ranges": [[{"subnet": "10.91.0.0/16"}]]}}
JSON

drv="$repo/target/cnidriver/cnidriver"
run() { # conf list ifname out
  if ! "$drv" bench --conf "$1" --netns-list "$2" --ifname "$3" --cni-path "$work/bin" \
    --cache-dir "$work/cache" >"$4" 2>>"$work/bench.log"; then
    echo "bench-cni: $(basename "$1") failed:" >&2
    cat "$work/bench.log" >&2
    exit 1
  fi
}
run "$work/memif.json" "$work/a.list" memif-eth1 "$work/m1.json"
run "$work/bridge.json" "$work/a.list" eth1 "$work/b1.json"
run "$work/memif.json" "$work/b.list" memif-eth1 "$work/m2.json"
run "$work/bridge.json" "$work/b.list" eth1 "$work/b2.json"

python3 - "$work" "$n" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
def load(*names):
    add, dele = [], []
    for nm in names:
        d = json.load(open(f"{work}/{nm}"))
        add += d["add_us"]; dele += d["del_us"]
    return add, dele
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] / 1000
m = load("m1.json", "m2.json")
b = load("b1.json", "b2.json")
print(f"CNI latency through libcni, {n} attachments each (ms)")
print(f"{'plugin':28} {'ADD p50':>8} {'ADD p99':>8} {'DEL p50':>8} {'DEL p99':>8}")
for name, (a, d) in [("memif-cni + host-local", m), ("bridge + host-local", b)]:
    print(f"{name:28} {pct(a,50):8.2f} {pct(a,99):8.2f} {pct(d,50):8.2f} {pct(d,99):8.2f}")
print(f"{'ratio memif-cni / bridge':28} {pct(m[0],50)/pct(b[0],50):8.2f} {pct(m[0],99)/pct(b[0],99):8.2f} "
      f"{pct(m[1],50)/pct(b[1],50):8.2f} {pct(m[1],99)/pct(b[1],99):8.2f}")
PY
