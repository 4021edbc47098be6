# Progress for long steps in a log, where cargo's own progress bar (a
# terminal-only display) does not show. Sourced; then:
#
#   ticking WHO WHAT COMMAND...
#
# runs COMMAND; when stderr is not a terminal, prints "WHO: WHAT, Ns so
# far" every MEMIF_TICK seconds (default 30) until it ends, then the time
# it took. Returns COMMAND's status.
ticking() {
  local who=$1 what=$2 start=$SECONDS ticker="" rc=0
  shift 2
  if [ ! -t 2 ]; then
    (
      while sleep "${MEMIF_TICK:-30}"; do
        echo "$who: $what, $((SECONDS - start))s so far" >&2
      done
    ) &
    ticker=$!
  fi
  "$@" || rc=$?
  if [ -n "$ticker" ]; then
    kill "$ticker" 2>/dev/null
    wait "$ticker" 2>/dev/null || true
  fi
  echo "$who: $what took $((SECONDS - start))s" >&2
  return "$rc"
}
