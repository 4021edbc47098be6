#!/usr/bin/env bash
# Fuzzes the targets of fuzz/ (cargo-fuzz, libFuzzer) from their committed
# seed corpora (fuzz/README.md says what each covers).
#
#   bash e2e/fuzz.sh                 every target for 20 s (CI), 2.5 min
#   bash e2e/fuzz.sh --long N        every target until N executions, with
#                                    the executions and time of each
#   bash e2e/fuzz.sh [...] TARGET..  only these targets
#
# FUZZ_SECONDS overrides the 20 s. Builds with the installed nightly
# toolchain (libFuzzer needs it), with debug assertions and overflow checks
# and without a sanitizer (the only unsafe code reads and writes mmap'ed
# memory, which AddressSanitizer does not track; it would halve the rate
# for nothing); installs cargo-fuzz from crates.io if it is missing. Each
# target runs in one process (one core) on a copy of its corpus in a
# temporary directory, removed at the end: the committed corpus never
# changes. A crash fails the script; its input is kept in
# fuzz/artifacts/TARGET/ (ignored by git) and printed in base64, and it
# becomes a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(handshake rings plugin_input api_request pod_parsers packets)
seconds=${FUZZ_SECONDS:-20}
runs=
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --long)
      runs=${2:?--long needs an execution count}
      shift 2
      ;;
    -h | --help)
      sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    -*)
      echo "e2e/fuzz.sh: unknown option $1" >&2
      exit 2
      ;;
    *)
      targets+=("$1")
      shift
      ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")
for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || {
    echo "e2e/fuzz.sh: no target $t (targets: ${ALL[*]})" >&2
    exit 2
  }
done

rustup run nightly rustc --version >/dev/null 2>&1 || {
  echo "e2e/fuzz.sh: no nightly Rust toolchain (libFuzzer needs it): rustup toolchain install nightly" >&2
  exit 1
}
# cargo-fuzz from crates.io when missing, into the project's target/ (not
# the user's ~/.cargo/bin: the host is not ours).
export PATH="$PWD/target/tools/bin:$PATH"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz into target/tools"
  cargo install cargo-fuzz --locked --root target/tools
fi

echo "== building ${targets[*]}"
if [ ${#targets[@]} -eq ${#ALL[@]} ]; then
  (cd fuzz && cargo +nightly fuzz build --debug-assertions --sanitizer none)
else
  for t in "${targets[@]}"; do
    (cd fuzz && cargo +nightly fuzz build --debug-assertions --sanitizer none "$t")
  done
fi
bin=fuzz/target/x86_64-unknown-linux-gnu/release

work=$(mktemp -d "${TMPDIR:-/tmp}/memif-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=()
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  cp fuzz/corpus/"$t"/* "$work/corpus/$t/"
  if [ -n "$runs" ]; then
    limit=(-runs="$runs")
    echo "== $t: $runs executions"
  else
    # A fixed seed: CI replays the same inputs each run (as far as the
    # machine gets in the time), so it fails only on a regression; new
    # finds are the long runs' job.
    limit=(-max_total_time="$seconds" -seed=1)
    echo "== $t: ${seconds}s"
  fi
  log="$work/$t.log"
  start=$(date +%s%N)
  rc=0
  "$bin/$t" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/$t/" "$work/corpus/$t" >"$log" 2>&1 || rc=$?
  end=$(date +%s%N)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  printf '%s: %s executions in %ss (%s/s), %s, corpus %s -> %s inputs\n' \
    "$t" "${execs:-?}" "$(awk "BEGIN { printf \"%.1f\", ($end - $start) / 1e9 }")" \
    "${rate:-?}" "${cov:-cov: ?}" \
    "$(ls "fuzz/corpus/$t" | wc -l)" "$(ls "$work/corpus/$t" | wc -l)"
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    echo "!! $t FAILED (exit $rc); the end of its log:"
    grep -v '^#[0-9]' "$log" | tail -40
    mkdir -p "fuzz/artifacts/$t"
    for a in "$work/artifacts/$t"/*; do
      [ -e "$a" ] || continue
      cp "$a" "fuzz/artifacts/$t/"
      echo "!! input kept: fuzz/artifacts/$t/$(basename "$a") (base64 below)"
      base64 -w 76 "$a"
    done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "e2e/fuzz.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "e2e/fuzz.sh: ${#targets[@]} targets, no crash, in ${SECONDS}s"
