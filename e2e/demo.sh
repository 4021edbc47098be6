#!/usr/bin/env bash
# The main job on one machine, end to end (README quick start), as root:
#   bash e2e/demo.sh
# builds what is needed, installs what is missing (Debian packages), starts
# memifd, creates two pod namespaces, runs the plugin's ADD for each through
# libcni (the reference runtime library), connects a memif client in each,
# pings pod to pod and host to pod through memifd's dataplane, shows
# `memifctl show memif` and `show int addr`, then runs DEL and cleans up,
# leaving the machine as it was (the build outputs and installed packages
# stay). On a kernel without the `dummy` link type the steps after the build
# run inside a QEMU VM booting a stock Debian kernel (e2e/vm/).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# Bold headers only on a terminal, and never with NO_COLOR set (the VM's
# console is a terminal: the outer run passes --plain when it is not on one).
[ "${2:-}" = "--plain" ] && export NO_COLOR=1
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
  say() { printf '\n\033[1m== %s\033[0m (%ss)\n' "$*" "$SECONDS"; }
else
  say() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
fi
[ "$(id -u)" = 0 ] || { echo "demo: run as root (network namespaces, memifd): bash e2e/demo.sh in a root shell, or with sudo" >&2; exit 1; }

if [ "${1:-}" != "--inner" ]; then
  say "installing missing packages (Debian) and building (release)"
  # shellcheck source=lib/progress.sh
  . e2e/lib/progress.sh
  ticking demo "installing what is missing" bash e2e/deps.sh demo
  ticking demo "building memif-cni, memifd and memifctl (release)" cargo build --release --bins
  if bash e2e/vm/need-vm.sh; then
    say "this kernel cannot create dummy interfaces: running the demo in a VM (stock Debian kernel under QEMU)"
    plain=""
    { [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; } || plain=--plain
    rc=0
    bash e2e/vm/run.sh --share "$repo" --mem 1536 --timeout 900 -- "$repo/e2e/demo.sh" --inner $plain || rc=$?
    [ "$rc" -eq 0 ] && echo "demo: done in ${SECONDS}s (build and VM included)" || echo "demo: failed (exit $rc) after ${SECONDS}s" >&2
    exit "$rc"
  fi
fi

bin=$repo/target/release
drv=$repo/target/cnidriver/cnidriver
work=$(mktemp -d /tmp/memif-cni-demo.XXXXXX)
api=$work/memifd.sock
pods=(demo-pod-a demo-pod-b)
cleanup() {
  set +e
  for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null; done
  [ -n "${memifd:-}" ] && kill "$memifd" 2>/dev/null && wait "$memifd" 2>/dev/null
  for p in "${pods[@]}"; do ip netns del "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
pids=()
export MEMIFD_SOCKET=$api

say "starting memifd (API $api)"
echo '{"workers": 1}' >"$work/memifd.json"
"$bin/memifd" --config "$work/memifd.json" --api-socket "$api" --state-dir "$work" \
  --no-kubernetes --log info 2>"$work/memifd.log" &
memifd=$!
for _ in $(seq 200); do "$bin/memifctl" show status >/dev/null 2>&1 && break; sleep 0.05; done
"$bin/memifctl" show status

say "pod namespaces: ${pods[*]}"
for p in "${pods[@]}"; do ip netns add "$p"; done

mkdir -p "$work/cni"
ln -s "$bin/memif-cni" "$work/cni/memif-cni"
ln -s /usr/lib/cni/host-local "$work/cni/host-local"
cat >"$work/net.conf" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "demo-net",
  "type": "memif-cni",
  "memifdSocket": "$api",
  "interfaceSpec": {"isl3": true},
  "ipam": {"type": "host-local", "dataDir": "$work/ipam",
           "ranges": [[{"subnet": "10.99.0.0/24"}]]}
}
JSON
say "network config (a NetworkAttachmentDefinition's config)"
cat "$work/net.conf"

ips=()
for p in "${pods[@]}"; do
  say "CNI ADD for $p, interface memif-eth1 (libcni)"
  "$drv" add --conf "$work/net.conf" --netns "/run/netns/$p" --ifname memif-eth1 \
    --containerid "$p" --cni-path "$work/cni" --cache-dir "$work/cache" | tee "$work/$p.result"
  ip=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ips"][0]["address"].split("/")[0])' "$work/$p.result")
  ips+=("$ip")
  echo "inside $p:"
  ip -n "$p" -br addr show dev memif-eth1
  ip -n "$p" route
done

say "memif client in ${pods[1]} (${ips[1]}) answers pings"
"$bin/memifctl" client --netns "/run/netns/${pods[1]}" --socket @memif-eth1 --mode ip \
  --ip "${ips[1]}" --duration 30 >"$work/client-b.log" 2>&1 &
pids+=($!)
sleep 1

say "memif client in ${pods[0]} (${ips[0]}) pings ${ips[1]} through memifd"
"$bin/memifctl" client --netns "/run/netns/${pods[0]}" --socket @memif-eth1 --mode ip \
  --ip "${ips[0]}" --ping "${ips[1]}" --count 3 --interval 0.2

say "the host pings ${ips[1]} through memifd's uplink"
if [ -n "${MEMIF_VM:-}" ] && ! ip -4 addr show scope global | grep -q inet; then
  # The VM has no network card: give its host side an address to ping from.
  ip addr add 192.168.253.1/32 dev lo
fi
ip route get "${ips[1]}"
ping -c 3 -i 0.2 -W 2 "${ips[1]}"

say "memifctl show memif"
echo "(${pods[0]}'s client exited after its 3 pings, so its memif shows (dn)/down;"
echo " ${pods[1]}'s client is still connected and shows up)"
"$bin/memifctl" show memif
say "memifctl show int addr"
"$bin/memifctl" show int addr
say "memifctl show stats"
"$bin/memifctl" show stats

for p in "${pods[@]}"; do
  say "CNI DEL for $p"
  "$drv" del --conf "$work/net.conf" --netns "/run/netns/$p" --ifname memif-eth1 \
    --containerid "$p" --cni-path "$work/cni" --cache-dir "$work/cache"
  ip -n "$p" link show memif-eth1 >/dev/null 2>&1 && { echo "memif-eth1 still in $p" >&2; exit 1; }
  echo "memif-eth1 removed from $p"
done
"$bin/memifctl" show memif
say "done: stopping memifd, deleting the namespaces"
[ "${1:-}" = --inner ] || echo "demo: done in ${SECONDS}s"
