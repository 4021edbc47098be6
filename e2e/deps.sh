#!/usr/bin/env bash
# Installs what a script of this project needs from Debian's packages, only
# what is missing, and changes nothing else on the host (e2e/lib/pkgs.sh:
# no recommends, no upgrades, no services enabled, listed before install).
#
#   bash e2e/deps.sh [test|demo]   (default: test)
#
#   demo: the plugin's runtime (libcni's driver, built from Debian's Go
#         packages), the reference IPAM plugins, iproute2; the VM's packages
#         when this kernel has no dummy link type.
#   test: the demo's, plus DPDK's testpmd and memif driver (the real memif
#         peer), ping and the tools the tests call.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/pkgs.sh
. "$here/lib/pkgs.sh"

what=${1:-test}
demo=(iproute2 util-linux procps python3 iputils-ping containernetworking-plugins)
case "$what" in
  demo) pkgs=("${demo[@]}") ;;
  test) pkgs=("${demo[@]}" dpdk dpdk-dev librte-net-memif23 kmod coreutils) ;;
  *) echo "usage: bash e2e/deps.sh [test|demo]" >&2; exit 2 ;;
esac
pkgs_install deps "${pkgs[@]}"
if [ "$what" = test ]; then
  command -v dpdk-testpmd >/dev/null || { echo "deps: dpdk-testpmd not found after install" >&2; exit 1; }
fi
command -v cargo >/dev/null || { echo "deps: cargo not found: install Rust >= 1.85 (README, Quick start)" >&2; exit 1; }
# The libcni driver for the plugin's conformance tests and the demo (built
# offline from Debian's Go packages, which it installs the same way).
bash "$here/cnidriver/build.sh" >&2
# The kernel VM, when this kernel cannot create dummy links (its packages:
# qemu-system-x86, busybox-static, cpio and a Debian kernel image).
if bash "$here/vm/need-vm.sh" 2>/dev/null; then
  bash "$here/vm/build.sh" >&2
fi
