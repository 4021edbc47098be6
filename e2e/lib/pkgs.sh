# Installs Debian packages for this project's scripts without changing
# anything else on the host. Sourced; then:
#
#   pkgs_install WHO PACKAGE...
#
# - installs only the packages that are missing, without recommends;
# - never upgrades or removes an installed package: a plan that would is
#   retried with the installed versions pinned, and refused (naming the
#   packages) if it still needs them; MEMIF_DEPS_ALLOW_UPGRADE=1 allows it;
# - lists what it will install (with the download size) before it does;
# - starts no service while installing (a temporary policy-rc.d when the
#   host has none) and disables the services the new packages enabled;
# - puts back the alternatives (iptables & co.) the new packages switched;
# - refreshes the package lists only when a package has no candidate;
# - with MEMIF_DEPS_DRY_RUN=1, only says what it would install.
# Needs root when something is missing. WHO prefixes its messages.

pkgs_missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

# The plan's lines "Inst NAME [OLD] (NEW ...)": an [OLD] is an upgrade.
_pkgs_plan() { apt-get -s install -q "${_pkgs_opts[@]}" "$@" 2>&1; }
_pkgs_changes() { awk '($1 == "Inst" && $3 ~ /^\[/) || $1 == "Remv" { print $2 }'; }

# What the plan downloads (packages not in apt's cache yet).
_pkgs_download() {
  apt-get install --print-uris -qq -y "${_pkgs_opts[@]}" "$@" 2>/dev/null |
    awk '{ s += $3 } END { printf "%.1f MB to download", s / 1e6 }'
}

# Symlinks that enable units (systemd wants/requires, sysv rc links).
_pkgs_enabled() {
  find /etc/systemd/system /etc/rc[0-6S].d -type l 2>/dev/null | sort
}

pkgs_install() {
  local who=$1
  shift
  local missing
  mapfile -t missing < <(pkgs_missing "$@")
  [ "${#missing[@]}" -gt 0 ] || return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "$who: missing packages ${missing[*]} (run as root to install them)" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local p cand update=0
  for p in "${missing[@]}"; do
    cand=$(apt-cache policy "$p" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')
    { [ -n "$cand" ] && [ "$cand" != "(none)" ]; } || update=1
  done
  if [ "$update" -eq 1 ]; then
    echo "$who: apt-get update (a package has no install candidate)" >&2
    apt-get update -q >&2
  fi

  # Our own preferences file: the host's, plus pins added below.
  local prefs
  prefs=$(mktemp /tmp/memif-cni-apt-prefs.XXXXXX)
  [ -f /etc/apt/preferences ] && cat /etc/apt/preferences >"$prefs"
  _pkgs_opts=(-o "Dir::Etc::Preferences=$prefs" -o APT::Install-Recommends=false
    -o APT::Install-Suggests=false)
  local plan changes
  plan=$(_pkgs_plan "${missing[@]}") || {
    rm -f "$prefs"
    echo "$who: apt cannot install ${missing[*]}:" >&2
    echo "$plan" >&2
    return 1
  }
  changes=$(_pkgs_changes <<<"$plan")
  if [ -n "$changes" ] && [ "${MEMIF_DEPS_ALLOW_UPGRADE:-0}" != 1 ]; then
    # Keep what is installed: pin those packages at their installed version.
    for p in $changes; do
      printf '\nPackage: %s\nPin: version %s\nPin-Priority: 1001\n' \
        "$p" "$(dpkg-query -W -f='${Version}' "$p")" >>"$prefs"
    done
    # A new package built from the same source as a pinned one (udev beside
    # libudev1) must come at the pinned version too, or apt cannot solve:
    # pin each new package that is available at one of those versions.
    local kept v
    kept=$(for p in $changes; do dpkg-query -W -f='${Version}\n' "$p"; done | sort -u)
    for p in $(awk '$1 == "Inst" && $3 !~ /^\[/ { print $2 }' <<<"$plan"); do
      for v in $(apt-cache madison "$p" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $2); print $2 }'); do
        if grep -qxF -- "$v" <<<"$kept"; then
          printf '\nPackage: %s\nPin: version %s\nPin-Priority: 1001\n' "$p" "$v" >>"$prefs"
          break
        fi
      done
    done
    local pinned
    if pinned=$(_pkgs_plan "${missing[@]}") && [ -z "$(_pkgs_changes <<<"$pinned")" ]; then
      plan=$pinned
    else
      rm -f "$prefs"
      echo "$who: installing ${missing[*]} would upgrade or remove installed packages:" \
        "$(echo $changes)." >&2
      echo "$who: this script never does that; upgrade them yourself (apt-get install" \
        "$(echo $changes)) or set MEMIF_DEPS_ALLOW_UPGRADE=1, then run it again" >&2
      return 1
    fi
  fi
  local new
  new=$(awk '$1 == "Inst" { print $2 }' <<<"$plan")
  echo "$who: installing $(wc -w <<<"$new") packages, $(_pkgs_download "${missing[@]}") (no recommends, nothing upgraded):" \
    "$(echo $new)" >&2
  if [ "${MEMIF_DEPS_DRY_RUN:-0}" = 1 ]; then
    rm -f "$prefs"
    echo "$who: dry run (MEMIF_DEPS_DRY_RUN=1): nothing installed" >&2
    return 0
  fi

  # No service starts during the install; note what is enabled and which
  # alternatives are chosen, to undo the packages' changes after.
  local policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# memif-cni: no service starts while packages install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
  fi
  local enabled_before alts_before
  enabled_before=$(_pkgs_enabled)
  alts_before=$(update-alternatives --get-selections 2>/dev/null || true)
  local rc=0
  apt-get install -y -q "${_pkgs_opts[@]}" "${missing[@]}" >&2 || rc=$?
  [ -n "$policy" ] && rm -f "$policy"
  rm -f "$prefs"

  local link unit
  for link in $(comm -13 <(echo "$enabled_before") <(_pkgs_enabled)); do
    unit=$(basename "$link")
    case "$link" in
      /etc/systemd/system/*)
        if command -v deb-systemd-helper >/dev/null; then
          deb-systemd-helper disable "$unit" >/dev/null 2>&1 || true
        fi
        rm -f "$link"
        ;;
      *) rm -f "$link" ;;
    esac
    echo "$who: disabled $unit (its package enabled it at boot)" >&2
  done
  local name mode path now
  while read -r name mode path; do
    [ -n "$name" ] || continue
    now=$(update-alternatives --query "$name" 2>/dev/null | awk '$1 == "Value:" { print $2 }')
    if [ -n "$now" ] && [ "$now" != "$path" ] && [ -e "$path" ]; then
      update-alternatives --set "$name" "$path" >/dev/null
      echo "$who: kept alternative $name at $path (a new package chose $now)" >&2
    fi
  done <<<"$alts_before"
  return "$rc"
}
