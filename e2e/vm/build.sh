#!/usr/bin/env bash
# Prepares what e2e/vm/run.sh boots: a stock Debian kernel and a small
# busybox initramfs holding the kernel modules the guest needs. Idempotent and
# cached: a second run only checks that nothing changed.
#
#   bash e2e/vm/build.sh          (as root; run.sh calls it itself)
#
# Environment:
#   MEMIF_VM_CACHE    cache directory (default /var/cache/memif-cni-vm)
#   MEMIF_VM_MODULES  modules loaded at boot, besides the ones the VM itself
#                     needs (default: dummy tun veth)
#   MEMIF_VM_EXTRA_MODULES  modules only bundled; load them in the guest with
#                     /run/vm/bin/modprobe NAME (default: bridge macvlan
#                     ipvlan vxlan)
#
# Writes $MEMIF_VM_CACHE/{vmlinuz,vmlinux,initramfs.gz,kver}.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${MEMIF_VM_CACHE:-/var/cache/memif-cni-vm}
boot_modules=${MEMIF_VM_MODULES:-dummy tun veth}
extra_modules=${MEMIF_VM_EXTRA_MODULES:-bridge macvlan ipvlan vxlan}
# What the VM itself needs: virtio PCI transport, 9p file sharing, overlayfs
# (the guest's root is the host's / read-only with a tmpfs on top).
base_modules="virtio_pci 9pnet_virtio 9p overlay"

log() { echo "vm-build: $*" >&2; }
die() { echo "vm-build: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (installs packages, writes $cache)"
export DEBIAN_FRONTEND=noninteractive

# Fast path: nothing changed since the last full check (same scripts and
# modules, no package installed or removed, no apt-get update since).
quick_key() {
  {
    cat "$here/build.sh" "$here/guest-init.sh" "$here/guest-run.sh"
    echo "$cache / $boot_modules / $extra_modules"
    stat -c '%n %Y %s' /var/lib/dpkg/status /var/lib/apt/lists 2>/dev/null || true
  } | sha256sum | cut -d' ' -f1
}
if [ -f "$cache/initramfs.gz" ] && [ -f "$cache/vmlinuz" ] && [ -f "$cache/qemu-cmd" ] && [ -f "$cache/quick" ] && [ "$(cat "$cache/quick")" = "$(quick_key)" ]; then
  exit 0
fi

# --- packages ---------------------------------------------------------------
# shellcheck source=../lib/pkgs.sh
. "$here/../lib/pkgs.sh"
pkgs_install vm-build busybox-static cpio xz-utils containernetworking-plugins \
  iproute2 coreutils util-linux
apt_updated=0
apt_update() {
  [ "$apt_updated" -eq 1 ] && return 0
  log "apt-get update"
  apt-get update -q >&2
  apt_updated=1
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# --- QEMU -------------------------------------------------------------------
# Debian's qemu-system-x86 when it installs. When it cannot (seen: a newer
# qemu-utils from backports Breaks bookworm's qemu-system-common), the same
# three packages are unpacked into the cache instead, their libraries and
# firmware installed as packages. $cache/qemu-cmd names the binary and,
# for the unpacked one, its data directories (run.sh passes each as -L).
qroot="$cache/qemu"
if command -v qemu-system-x86_64 >/dev/null || pkgs_install vm-build qemu-system-x86; then
  echo "$(command -v qemu-system-x86_64)" >"$cache/qemu-cmd"
  rm -rf "$qroot"
else
  qpkgs=(qemu-system-x86 qemu-system-common qemu-system-data)
  qver=$(apt-cache policy qemu-system-x86 | awk '$1 == "Candidate:" { print $2; exit }')
  [ -n "$qver" ] && [ "$qver" != "(none)" ] || die "apt knows no qemu-system-x86"
  if [ "$(cat "$qroot/.complete" 2>/dev/null)" != "$qver" ]; then
    log "unpacking qemu-system-x86 $qver into $qroot (it cannot be installed beside this host's packages)"
    dl="$cache/download"
    rm -rf "$dl" "$qroot"
    mkdir -p "$dl" "$qroot"
    (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "${qpkgs[@]}" >&2) ||
      die "cannot download ${qpkgs[*]}"
    for deb in "$dl"/*.deb; do dpkg-deb -x "$deb" "$qroot"; done
    mapfile -t qdeps < <(for deb in "$dl"/*.deb; do dpkg-deb -f "$deb" Depends; done |
      tr ',' '\n' | sed 's/(.*)//; s/|.*//; s/[[:space:]]//g' | grep -v '^qemu-system-' | grep . | sort -u)
    rm -rf "$dl"
    pkgs_install vm-build "${qdeps[@]}" || die "cannot install QEMU's libraries"
    echo "$qver" >"$qroot/.complete"
  fi
  missing=$(ldd "$qroot/usr/bin/qemu-system-x86_64" | awk '/not found/ { print $1 }')
  [ -z "$missing" ] || die "unpacked QEMU lacks libraries: $missing"
  # Its firmware search path, which -L replaces: its own data, then what
  # seabios and ipxe-qemu installed.
  echo "$qroot/usr/bin/qemu-system-x86_64 $qroot/usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu" >"$cache/qemu-cmd"
fi

# --- kernel -----------------------------------------------------------------
# The package linux-image-amd64 points at, else the newest 6.1 one known.
pick_kernel() {
  local p
  p=$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }')
  if [ -z "$p" ]; then
    p=$(apt-cache pkgnames linux-image-6.1.0- 2>/dev/null |
      grep -E '^linux-image-6\.1\.0-[0-9]+-amd64$' | sort -V | tail -n 1 || true)
  fi
  [ -n "$p" ] || return 1
  local v
  v=$(apt-cache policy "$p" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }')
  [ -n "$v" ] && [ "$v" != "(none)" ] || return 1
  echo "$p=$v"
}

# Newest already unpacked kernel, for when apt cannot give us one.
cached_kernel() {
  local d
  for d in $(ls -1d "$cache"/kernel/*/ 2>/dev/null | sort -V -r); do
    [ -f "$d/.complete" ] && { basename "$d"; return 0; }
  done
  return 1
}

kpkg=$(pick_kernel || { apt_update && pick_kernel; } || true)
kdir=""
if [ -n "$kpkg" ]; then
  kid=${kpkg//[:=]/_}
  kdir="$cache/kernel/$kid"
  if [ ! -f "$kdir/.complete" ]; then
    log "fetching $kpkg"
    dl="$cache/download"
    rm -rf "$dl" "$kdir"
    mkdir -p "$dl"
    fetch() { (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >&2); }
    if ! fetch; then
      apt_updated=0
      apt_update && kpkg=$(pick_kernel) && kid=${kpkg//[:=]/_} && kdir="$cache/kernel/$kid" && fetch || kdir=""
    fi
    if [ -n "$kdir" ]; then
      deb=$(ls -1 "$dl"/*.deb | head -n 1)
      rm -rf "$kdir.tmp"
      mkdir -p "$kdir.tmp"
      dpkg-deb -x "$deb" "$kdir.tmp"
      rm -rf "$kdir.tmp/usr"
      touch "$kdir.tmp/.complete"
      mv "$kdir.tmp" "$kdir"
      rm -rf "$dl"
      # Older kernels are no longer needed.
      for d in "$cache"/kernel/*; do
        [ "$d" = "$kdir" ] || rm -rf "$d"
      done
    fi
  fi
fi
if [ -z "$kdir" ] || [ ! -f "$kdir/.complete" ]; then
  old=$(cached_kernel) || die "no Debian kernel package available (apt-cache knows no linux-image-amd64) and none cached in $cache"
  log "warning: could not fetch a kernel; using cached $old"
  kdir="$cache/kernel/$old"
fi
kver=$(ls -1 "$kdir/lib/modules" | head -n 1)
vmlinuz="$kdir/boot/vmlinuz-$kver"
[ -f "$vmlinuz" ] || die "no $vmlinuz"
mroot="$kdir/lib/modules/$kver"

# --- is the initramfs up to date? -------------------------------------------
stamp=$(
  {
    echo "$kdir $kver"
    echo "$base_modules / $boot_modules / $extra_modules"
    dpkg-query -W -f='${Version}\n' busybox-static
    cat "$here/build.sh" "$here/guest-init.sh" "$here/guest-run.sh"
  } | sha256sum | cut -d' ' -f1
)
if [ -f "$cache/initramfs.gz" ] && [ -f "$cache/vmlinuz" ] && [ "$(cat "$cache/stamp" 2>/dev/null)" = "$stamp" ]; then
  quick_key >"$cache/quick"
  exit 0
fi
log "building initramfs for $kver"

# --- modules ----------------------------------------------------------------
# Module name -> file (relative to $mroot). Names use '_', files may use '-'.
declare -A modfile=()
while IFS= read -r f; do
  b=${f##*/}
  b=${b%%.ko*}
  modfile[${b//-/_}]=$f
done < <(cd "$mroot" && find kernel -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')
declare -A builtin=()
if [ -f "$mroot/modules.builtin" ]; then
  while IFS= read -r f; do
    b=${f##*/}
    b=${b%.ko}
    builtin[${b//-/_}]=1
  done <"$mroot/modules.builtin"
fi

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,etc/vm,proc,sys,dev,lower,upper,newroot} "$root/lib/modules/$kver"

# Decompresses a module into the initramfs (busybox insmod reads plain .ko).
unpack_module() {
  local src="$mroot/$1" dst
  dst="$root/lib/modules/$kver/${1%%.ko*}.ko"
  mkdir -p "$(dirname "$dst")"
  case "$1" in
  *.ko.xz) xz -dc "$src" >"$dst" ;;
  *.ko.zst) zstd -q -dc "$src" >"$dst" ;;
  *.ko.gz) gzip -dc "$src" >"$dst" ;;
  *) cp "$src" "$dst" ;;
  esac
}

declare -A seen=() ko_of=() deps_of=()
order=()
add_module() { # depth-first: dependencies first
  local m=${1//-/_} f d ko
  [ -n "${seen[$m]:-}" ] && return 0
  seen[$m]=1
  if [ -n "${builtin[$m]:-}" ]; then return 0; fi
  f=${modfile[$m]:-}
  [ -n "$f" ] || die "kernel $kver has no module $m"
  unpack_module "$f"
  ko="${f%%.ko*}.ko"
  ko_of[$m]=$ko
  deps_of[$m]=$(tr '\0' '\n' <"$root/lib/modules/$kver/$ko" | sed -n 's/^depends=//p' | head -n 1 | tr ',-' ' _')
  for d in ${deps_of[$m]}; do add_module "$d"; done
  order+=("$ko")
}
for m in $base_modules $boot_modules; do add_module "$m"; done
printf '%s\n' "${order[@]}" >"$root/etc/vm/modules.load"
boot_order=("${order[@]}")
for m in $extra_modules; do add_module "$m"; done

# modules.dep in the text format busybox modprobe reads, for in-guest use: each
# module with all its dependencies, the one to load first last.
closure() { # post-order: dependencies of $1 before $1
  local d
  for d in ${deps_of[$1]:-}; do
    [ -n "${ko_of[$d]:-}" ] || continue
    [ -n "${cl_seen[$d]:-}" ] && continue
    cl_seen[$d]=1
    closure "$d"
    cl+=("${ko_of[$d]}")
  done
}
for m in "${!ko_of[@]}"; do
  declare -A cl_seen=()
  cl=()
  closure "$m"
  line="${ko_of[$m]}:"
  for ((i = ${#cl[@]} - 1; i >= 0; i--)); do line="$line ${cl[i]}"; done
  echo "$line"
  unset cl_seen
done | sort >"$root/lib/modules/$kver/modules.dep"
echo "$kver" >"$root/etc/vm/kver"

# --- the rest ---------------------------------------------------------------
cp /bin/busybox "$root/bin/busybox"
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }
file_is_static "$root/bin/busybox" || die "/bin/busybox is not static (install busybox-static)"
install -m 0755 "$here/guest-init.sh" "$root/init"
install -m 0644 "$here/guest-run.sh" "$root/etc/vm/guest-run.sh"

(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$work/initramfs.gz"

# The kernel. Decompressing a bzImage under TCG takes seconds; QEMU can boot
# the uncompressed ELF directly through its PVH entry point instead, so keep
# that too when the kernel has one.
cp "$vmlinuz" "$work/vmlinuz"
extract_vmlinux() { # bzImage -> ELF on stdout, for xz, zstd or gzip payloads
  local magic off
  for magic in $'\xfd7zXZ\x00' $'\x28\xb5\x2f\xfd' $'\x1f\x8b\x08\x00'; do
    off=$(LC_ALL=C grep -abo -m 1 "$magic" "$1" 2>/dev/null | head -n 1 | cut -d: -f1)
    [ -n "$off" ] || continue
    case "$magic" in
    $'\xfd'*) tail -c +$((off + 1)) "$1" | xz -dc --single-stream 2>/dev/null ;;
    $'\x28'*) tail -c +$((off + 1)) "$1" | zstd -dcq 2>/dev/null ;;
    *) tail -c +$((off + 1)) "$1" | gzip -dc 2>/dev/null ;;
    esac
    return 0
  done
  return 1
}
rm -f "$cache/vmlinux"
if grep -q '^CONFIG_PVH=y' "$kdir/boot/config-$kver" 2>/dev/null; then
  extract_vmlinux "$vmlinuz" >"$work/vmlinux" || true
  if [ "$(head -c 4 "$work/vmlinux" 2>/dev/null)" = $'\x7fELF' ]; then
    mv "$work/vmlinux" "$cache/vmlinux"
  else
    log "note: could not unpack an ELF kernel from $vmlinuz; booting the bzImage (slower)"
  fi
fi
mv "$work/initramfs.gz" "$cache/initramfs.gz"
mv "$work/vmlinuz" "$cache/vmlinuz"
echo "$kver" >"$cache/kver"
echo "$stamp" >"$cache/stamp"
quick_key >"$cache/quick"
bundled=("${order[@]:${#boot_order[@]}}")
log "ready: kernel $kver; loaded at boot: ${boot_order[*]##*/}; also bundled: ${bundled[*]##*/}"
