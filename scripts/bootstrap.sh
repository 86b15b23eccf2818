#!/usr/bin/env bash
# Shared set-up for scripts/demo and scripts/test: a project virtualenv with the right extras.
# Sourced, not run. Usage: bootstrap_venv EXTRA
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SHULIAN_VENV:-$ROOT/.venv}"

log() { printf '\033[1m[shulian]\033[0m %s\n' "$*" >&2; }

bootstrap_venv() {
  local extra="$1" stamp
  if [[ ! -x "$VENV/bin/python" ]]; then
    local py="" candidate
    # The first interpreter that really runs (a version manager's shim may exist but fail).
    for candidate in python3 python3.13 python3.12 python3.11; do
      if "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
        py="$candidate"
        break
      fi
    done
    [[ -n "$py" ]] || { log "Python >= 3.11 with the venv module is required (apt-get install python3-venv)"; exit 1; }
    log "creating virtualenv $VENV"
    "$py" -m venv "$VENV"
  fi
  # Reinstall only when pyproject.toml changed since the last install of this extra.
  stamp="$VENV/.installed-$extra-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
  if [[ ! -f "$stamp" ]]; then
    log "installing shulian[$extra] into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[$extra]"
    touch "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    log "need Debian packages: $* (run as root, or: sudo apt-get install -y $*)"
    return 1
  fi
  log "installing Debian packages: $*"
  if [[ -z "${_SHULIAN_APT_UPDATED:-}" ]]; then
    apt-get update -qq >/dev/null
    _SHULIAN_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
