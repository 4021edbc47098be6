#!/usr/bin/env bash
# Self-test of the VM runner: boots it a few times and checks that a dummy
# link with a /32 address can be made in a netns in the guest, that exit codes
# and stdout/stderr come back, that --share, --file and --env work, that host
# binaries (ip, /usr/lib/cni/host-local) run, and that --timeout kills a hung
# guest. Run as root:  bash e2e/vm/selftest.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
run="$here/run.sh"

[ "$(id -u)" -eq 0 ] || { echo "selftest: run as root" >&2; exit 1; }
tmp=$(mktemp -d /tmp/memif-vm-selftest.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failed=0
ok() { echo "selftest: ok   - $*"; }
bad() { echo "selftest: FAIL - $*"; failed=1; }

bash "$here/build.sh"

# --- 1: the main checks -----------------------------------------------------
share="$tmp/share"
mkdir -p "$share"
echo "from the host" >"$share/in.txt"
echo "copied in" >"$tmp/file.txt"
cat >"$tmp/guest.sh" <<'EOF'
set -euo pipefail
step() { echo "guest: $*"; }
[ "$1" = "one" ] && [ "$2" = "two words" ] && [ "$3" = '$x "y"' ]
step "args ok"
[ "$SELFTEST_VAR" = "a b" ]
step "env ok"

ip netns add t1
ip -n t1 link add memif0 type dummy
ip -n t1 addr add 192.0.2.10/32 dev memif0
ip -n t1 link set memif0 up
ip -n t1 -o -4 addr show dev memif0 | grep -q 'inet 192.0.2.10/32'
ip netns exec t1 ip -o link show memif0 | grep -q 'memif0: <BROADCAST,NOARP,UP'
step "dummy /32 in a netns ok"
ip link add vt0 type veth peer name vt1
ip link del vt0
step "veth ok"
[ -c /dev/net/tun ]
ip tuntap add dev tap0 mode tap && ip link del tap0
step "tun ok"

[ "$(cat "$SHARE/in.txt")" = "from the host" ]
echo "from the guest" >"$SHARE/out.txt"
mkdir -p "$SHARE/sub" && echo x >"$SHARE/sub/y"
step "share ok"
[ "$(cat /opt/selftest/file.txt)" = "copied in" ]
step "file ok"
echo "guest only" >/etc/memif-vm-selftest
step "overlay write ok"

out=$(CNI_COMMAND=VERSION /usr/lib/cni/host-local </dev/null)
echo "$out" | grep -q cniVersion
step "host-local VERSION ok: $out"
echo "to stderr" >&2
EOF

set +e
"$run" --share "$share" --file "$tmp/file.txt:/opt/selftest/file.txt" \
  --env SELFTEST_VAR="a b" --env SHARE="$share" --timeout 300 \
  -- "$tmp/guest.sh" one "two words" '$x "y"' >"$tmp/out1" 2>"$tmp/err1"
rc=$?
set -e
sed 's/^/  | /' "$tmp/out1"
[ "$rc" -eq 0 ] && ok "guest script exit 0" || { bad "guest script exit $rc"; sed 's/^/  ! /' "$tmp/err1"; }
for s in "args ok" "env ok" "dummy /32 in a netns ok" "veth ok" "tun ok" "share ok" "file ok" "overlay write ok" "host-local VERSION ok"; do
  grep -q "guest: $s" "$tmp/out1" && ok "$s" || bad "$s"
done
grep -qx "to stderr" "$tmp/err1" && ok "stderr comes back on stderr" || bad "stderr"
grep -q "to stderr" "$tmp/out1" && bad "stderr leaked into stdout" || true
[ "$(cat "$share/out.txt" 2>/dev/null)" = "from the guest" ] && [ -f "$share/sub/y" ] &&
  ok "the guest's writes to the share are on the host" || bad "share write-back"
[ ! -e /etc/memif-vm-selftest ] && ok "writes outside shares stay in the guest" || bad "overlay leaked to the host"

# --- 2: exit codes ----------------------------------------------------------
printf 'echo about to exit 3\nexit 3\n' >"$tmp/exit3.sh"
set +e
"$run" -- "$tmp/exit3.sh" >"$tmp/out2" 2>&1
rc=$?
set -e
[ "$rc" -eq 3 ] && grep -q "about to exit 3" "$tmp/out2" && ok "exit code 3 propagates" ||
  { bad "exit code: got $rc"; cat "$tmp/out2"; }

# --- 3: a hung guest is killed ----------------------------------------------
printf 'sleep 1000\n' >"$tmp/hang.sh"
start=$(date +%s)
set +e
"$run" --timeout 5 -- "$tmp/hang.sh" >"$tmp/out3" 2>&1
rc=$?
set -e
took=$(($(date +%s) - start))
[ "$rc" -eq 124 ] && [ "$took" -lt 30 ] && grep -q "timeout" "$tmp/out3" && ok "--timeout 5 kills a hung guest (exit 124 after ${took}s)" ||
  { bad "timeout: exit $rc after ${took}s"; cat "$tmp/out3"; }

if [ "$failed" -ne 0 ]; then
  echo "selftest: FAILED"
  exit 1
fi
echo "selftest: all passed"
