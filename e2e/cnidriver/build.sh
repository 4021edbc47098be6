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
# shellcheck source=../lib/pkgs.sh
. "$here/../lib/pkgs.sh"
pkgs_install cnidriver "${pkgs[@]}"

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
