#!/usr/bin/env bash
# Exit 0 if the running kernel cannot create a `dummy` link (run the e2e
# steps in the VM: e2e/vm/run.sh), exit 1 if it can (run them natively).
# Run as root (creating a link needs CAP_NET_ADMIN). Prints one line on
# stderr saying which.
set -u
name="vmprobe$$"
name="${name:0:15}"
if err=$(ip link add "$name" type dummy 2>&1); then
  ip link del "$name" 2>/dev/null || true
  echo "need-vm: kernel $(uname -r) can create dummy links: run natively" >&2
  exit 1
fi
echo "need-vm: kernel $(uname -r) cannot create a dummy link (${err:-no reason given}): use the VM" >&2
exit 0
