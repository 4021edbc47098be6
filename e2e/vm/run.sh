#!/usr/bin/env bash
# Runs a script as root inside a throwaway QEMU VM (stock Debian kernel,
# software emulation) whose root file system is the host's / seen read-only
# with a tmpfs on top: host binaries and libraries work unchanged, writes stay
# in the guest unless they go to a --share directory.
#
#   e2e/vm/run.sh [--share DIR]... [--file SRC[:DST]]... [--env NAME[=VALUE]]...
#                 [--mem MB] [--timeout SEC] [--console] -- SCRIPT [ARGS...]
#
#   --share DIR       host directory mounted read-write at the same path (9p)
#   --file SRC[:DST]  host file or directory copied into the guest at DST
#                     (default: the same path) before SCRIPT starts
#   --env NAME=VALUE  environment variable for SCRIPT (--env NAME copies the
#                     caller's value)
#   --mem MB          guest memory (default 1024)
#   --timeout SEC     kill the guest after SEC seconds (default 600); exit 124
#   --console         print the guest's kernel console on stderr afterwards
#
# SCRIPT runs by its #! line if executable, else with bash, as root, in the
# caller's working directory, with stdin from /dev/null. Its stdout and stderr
# arrive on run.sh's stdout and stderr; run.sh exits with its exit code.
# Needs root. Calls build.sh first (a no-op when the cache is current).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${MEMIF_VM_CACHE:-/var/cache/memif-cni-vm}
me="vm-run"

usage() {
  sed -n '7,22p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
die() { echo "$me: $*" >&2; exit 2; }

shares=()
files=()
envs=()
mem=1024
timeout=600
console=0
while [ $# -gt 0 ]; do
  case "$1" in
  --share) [ $# -ge 2 ] || usage; shares+=("$2"); shift 2 ;;
  --file) [ $# -ge 2 ] || usage; files+=("$2"); shift 2 ;;
  --env) [ $# -ge 2 ] || usage; envs+=("$2"); shift 2 ;;
  --mem) [ $# -ge 2 ] || usage; mem=$2; shift 2 ;;
  --timeout) [ $# -ge 2 ] || usage; timeout=$2; shift 2 ;;
  --console) console=1; shift ;;
  --) shift; break ;;
  -h | --help) usage ;;
  -*) die "unknown option $1 (the script goes after --)" ;;
  *) break ;;
  esac
done
[ $# -ge 1 ] || usage
[[ "$mem" =~ ^[0-9]+$ ]] || die "--mem wants megabytes"
[[ "$timeout" =~ ^[0-9]+$ ]] || die "--timeout wants seconds"
[ "$(id -u)" -eq 0 ] || die "run as root"

script=$(realpath -e -- "$1" 2>/dev/null) || die "no such script: $1"
shift

bash "$here/build.sh"

tmp=$(mktemp -d /tmp/memif-vm.XXXXXX)
ctl="$tmp/ctl"
mkdir -p "$ctl/files"
qemu_pid=""
cleanup() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null
  { exec 3>&- 4>&-; } 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "$me: interrupted" >&2; exit 130' INT TERM HUP

# Paths the guest mounts afresh do not show the host's files.
guest_private() {
  case "$1" in /tmp | /tmp/* | /run | /run/* | /var/run/* | /dev/* | /proc/* | /sys/*) return 0 ;; esac
  return 1
}
under() { [ "$1" = "$2" ] || [[ "$1" == "$2"/* ]]; }

# --- shares -----------------------------------------------------------------
virtfs=()
: >"$ctl/shares"
share_paths=()
for s in "${shares[@]}"; do
  p=$(realpath -e -- "$s") || die "--share $s: no such directory"
  [ -d "$p" ] || die "--share $s: not a directory"
  [ "$p" != / ] || die "--share /: not supported"
  [[ "$p" != *[$'\t\n']* ]] || die "--share $s: tabs and newlines in paths are not supported"
  share_paths+=("$p")
done
# Parents before children, so nested shares stack the right way.
i=0
while IFS= read -r p; do
  [ -n "$p" ] || continue
  virtfs+=(-virtfs "local,path=${p//,/,,},mount_tag=s$i,security_model=passthrough,multidevs=remap")
  printf 's%d\t%s\n' "$i" "$p" >>"$ctl/shares"
  i=$((i + 1))
done < <(printf '%s\n' "${share_paths[@]+"${share_paths[@]}"}" | awk '{ print length($0) "\t" $0 }' | sort -n -s | cut -f2- | uniq)

shared() {
  local p
  for p in "${share_paths[@]+"${share_paths[@]}"}"; do under "$1" "$p" && return 0; done
  return 1
}

# --- files ------------------------------------------------------------------
: >"$ctl/files.list"
n=0
add_file() { # host path, guest path
  cp -a -- "$1" "$ctl/files/$n"
  printf '%d\t%s\n' "$n" "$2" >>"$ctl/files.list"
  n=$((n + 1))
}
for f in "${files[@]+"${files[@]}"}"; do
  src=${f%%:*}
  dst=${f#*:}
  [ "$dst" != "$f" ] || dst=""
  src=$(realpath -e -- "$src") || die "--file $f: no such file"
  [ -n "$dst" ] || dst=$src
  [[ "$dst" == /* ]] || die "--file $f: the destination must be an absolute path"
  [[ "$dst" != *[$'\t\n']* ]] || die "--file $f: tabs and newlines in paths are not supported"
  add_file "$src" "$dst"
done
# A script under a path the guest mounts afresh (e.g. /tmp) is copied in at
# the same path, so that "$0" means the same in the guest.
if guest_private "$script" && ! shared "$script"; then
  add_file "$script" "$script"
fi

# --- the command ------------------------------------------------------------
{
  echo "export HOME=/root TERM=dumb LANG=C.UTF-8"
  echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/run/vm/bin"
  echo "export MEMIF_VM=1"
  for e in "${envs[@]+"${envs[@]}"}"; do
    name=${e%%=*}
    [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--env $e: bad name"
    if [ "$name" = "$e" ]; then
      [ -n "${!name+x}" ] || continue
      value=${!name}
    else
      value=${e#*=}
    fi
    printf 'export %s=%q\n' "$name" "$value"
  done
  printf 'cd %q 2>/dev/null || cd /\n' "$PWD"
  if [ -x "$script" ]; then
    printf 'exec %q' "$script"
  else
    printf 'exec /bin/bash %q' "$script"
  fi
  for a in "$@"; do printf ' %q' "$a"; done
  echo
} >"$ctl/cmd"

# --- boot -------------------------------------------------------------------
# The script's stdout and stderr come over the second and third serial ports,
# through FIFOs read by cat (so QEMU never touches our own file descriptors).
mkfifo "$tmp/out" "$tmp/err"
cat "$tmp/out" &
cat_out=$!
cat "$tmp/err" >&2 &
cat_err=$!
exec 3>"$tmp/out" 4>"$tmp/err"

kernel="$cache/vmlinux"
[ -f "$kernel" ] || kernel="$cache/vmlinuz"
append="console=ttyS0 quiet loglevel=4 panic=-1 8250.nr_uarts=4"
# The binary build.sh chose, and its data directories if not the default.
qemu=qemu-system-x86_64
qdata=()
if [ -f "$cache/qemu-cmd" ]; then
  read -r qemu dirs <"$cache/qemu-cmd" || true
  for d in ${dirs:-}; do qdata+=(-L "$d"); done
fi
timeout -k 5 "$timeout" "$qemu" "${qdata[@]+"${qdata[@]}"}" \
  -accel tcg,thread=multi -cpu max -smp 2 -m "$mem" \
  -nodefaults -no-user-config -display none -monitor none -no-reboot \
  -kernel "$kernel" -initrd "$cache/initramfs.gz" -append "$append" \
  -serial "file:$tmp/console.log" -serial "file:$tmp/out" -serial "file:$tmp/err" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap" \
  -virtfs "local,path=$ctl,mount_tag=vmctl,security_model=passthrough,multidevs=remap" \
  "${virtfs[@]+"${virtfs[@]}"}" </dev/null &
qemu_pid=$!
qrc=0
wait "$qemu_pid" || qrc=$?
qemu_pid=""
exec 3>&- 4>&-
wait "$cat_out" "$cat_err" || true

if [ "$console" -eq 1 ] && [ -f "$tmp/console.log" ]; then
  echo "$me: ---- guest console ----" >&2
  cat "$tmp/console.log" >&2
  echo "$me: ---- end of guest console ----" >&2
fi
console_tail=$(tail -n 30 "$tmp/console.log" 2>/dev/null || true)
if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
  echo "$me: guest killed after the --timeout of ${timeout}s${console_tail:+; last console lines:}" >&2
  [ -z "$console_tail" ] || echo "$console_tail" >&2
  exit 124
fi
if [ ! -f "$ctl/rc" ]; then
  echo "$me: the guest stopped without reporting an exit code (QEMU exit $qrc)${console_tail:+; last console lines:}" >&2
  [ -z "$console_tail" ] || echo "$console_tail" >&2
  exit 125
fi
rc=$(cat "$ctl/rc")
exit "$rc"
