#!/usr/bin/env bash
# Builds the cnidriver (a small libcni-based CNI runtime) as a static binary.
# Usage: e2e/cnidriver/build.sh [OUT]   (default OUT: target/cnidriver/cnidriver)
# Offline build from Debian packages; installs them if missing (needs root).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/target/cnidriver/cnidriver}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

GO=/usr/lib/go-1.19/bin/go
pkgs=(golang-1.19-go golang-github-appc-cni-dev containernetworking-plugins)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "cnidriver: missing packages ${missing[*]} (run as root to install)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "cnidriver: installing ${missing[*]}" >&2
  # Refresh the package lists only when a package has no install candidate.
  need_update=0
  for p in "${missing[@]}"; do
    cand="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then need_update=1; fi
  done
  if [ "$need_update" -eq 1 ]; then apt-get update -q; fi
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ -x "$out" ] && [ "$out" -nt "$here/main.go" ] && [ "$out" -nt "$here/build.sh" ]; then
  echo "cnidriver: $out is up to date" >&2
  exit 0
fi

# GOPATH layout of our own: <gopath>/src/cnidriver -> e2e/cnidriver
gopath="$root/target/cnidriver/gopath"
mkdir -p "$gopath/src" "$(dirname "$out")"
ln -sfn "$here" "$gopath/src/cnidriver"

export GO111MODULE=off CGO_ENABLED=0
export GOPATH="$gopath:/usr/share/gocode"
export GOCACHE="$root/target/cnidriver/gocache"
export GOFLAGS=
cd "$gopath/src/cnidriver"
"$GO" build -trimpath -ldflags='-s -w' -o "$out" .
echo "cnidriver: built $out" >&2
