#!/usr/bin/env bash
# Installs what the tests and the benchmark need from Debian's packages,
# only when missing. Needs root (apt-get).
set -euo pipefail

pkgs=(dpdk dpdk-dev librte-net-memif23 iproute2 util-linux procps kmod python3 iputils-ping
      containernetworking-plugins golang-1.19-go golang-github-appc-cni-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
command -v dpdk-testpmd >/dev/null || { echo "deps: dpdk-testpmd not found after install" >&2; exit 1; }
command -v cargo >/dev/null || { echo "deps: cargo not found (install a Rust toolchain)" >&2; exit 1; }
# The libcni driver for the plugin's conformance tests (built offline).
bash "$(dirname "$0")/cnidriver/build.sh" >&2
# The kernel VM, when this kernel cannot create dummy links (its packages:
# qemu-system-x86, busybox-static, cpio and a Debian kernel image).
if bash "$(dirname "$0")/vm/need-vm.sh" 2>/dev/null; then
  bash "$(dirname "$0")/vm/build.sh" >&2
fi
