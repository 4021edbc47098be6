#!/usr/bin/env bash
# Builds the release tarball, as CNI projects ship their plugins:
#
#   bash e2e/release.sh [OUT_DIR]      (default: target/dist)
#
# OUT_DIR/memif-cni-VERSION-linux-ARCH.tar.gz holds
#   bin/memif-cni, bin/memifd, bin/memifctl   stripped release binaries
#   manifests/, conf/                         the Kubernetes objects, example configs
#   README.md, LICENSE (when present), SHA256SUMS (of every file above)
# and OUT_DIR/SHA256SUMS covers the tarball. The tarball is reproducible:
# sorted names, owner 0, every mtime the commit's time.
# Needs a Rust toolchain (>= 1.85) and binutils (strip); no root.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=lib/progress.sh
. e2e/lib/progress.sh

out=${1:-target/dist}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(uname -m)
name=memif-cni-$version-linux-$arch
if git rev-parse --git-dir >/dev/null 2>&1; then
  epoch=$(git log -1 --format=%ct)
  [ -z "$(git status --porcelain --untracked-files=no)" ] ||
    echo "release: warning: the work tree has uncommitted changes; the binaries say $(git rev-parse --short=12 HEAD)" >&2
else
  epoch=${SOURCE_DATE_EPOCH:-0}
fi
command -v strip >/dev/null || { echo "release: strip not found (Debian package binutils)" >&2; exit 1; }

ticking release "building the release binaries" \
  cargo build --release --locked --bin memif-cni --bin memifd --bin memifctl

stage=$(mktemp -d "${TMPDIR:-/tmp}/memif-cni-release.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/$name
mkdir -p "$root/bin"
for b in memif-cni memifd memifctl; do
  strip --strip-all -o "$root/bin/$b" "target/release/$b"
  chmod 0755 "$root/bin/$b"
done
cp -r manifests conf "$root/"
cp README.md "$root/"
[ -f LICENSE ] && cp LICENSE "$root/"
(cd "$root" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort |
  xargs sha256sum >SHA256SUMS)
# The binaries answer for themselves before they ship.
for b in memif-cni memifd memifctl; do
  "$root/bin/$b" --version >/dev/null || { echo "release: $b --version failed" >&2; exit 1; }
done

mkdir -p "$out"
tarball=$out/$name.tar.gz
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
  -C "$stage" -cf - "$name" | gzip -n -9 >"$tarball.tmp"
mv "$tarball.tmp" "$tarball"
(cd "$out" && sha256sum "$name.tar.gz" >SHA256SUMS)
echo "release: $repo/$tarball ($(du -h "$tarball" | cut -f1)), $("$root/bin/memifd" --version)"
echo "release: contents:"
tar -tzvf "$tarball" | awk '{ printf "  %8s  %s\n", $3, $6 }'
echo "release: $(cat "$out/SHA256SUMS")"
