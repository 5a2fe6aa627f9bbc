# Shared setup for scripts/test.sh and scripts/dev.sh; meant to be sourced, not run.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { echo "$*" >&2; }
die() { echo "error: $*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# apt_install PKG...: quiet, non-interactive; waits for another apt run to finish
# instead of failing on the dpkg lock.
apt_install() {
  local out
  out=$(mktemp)
  if ! { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@"; } >"$out" 2>&1; then
    tail -n 30 "$out" >&2
    rm -f "$out"
    die "apt-get install $* failed"
  fi
  rm -f "$out"
}

# ensure_venv: create .venv and install the project with its test extras. The stamp
# names the hash of pyproject.toml, so editing dependencies triggers a reinstall and
# an unchanged checkout skips pip entirely. dev.sh installs the test extras too, so a
# single stamp serves both scripts.
ensure_venv() {
  cd "$ROOT" || exit 1
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv…"
    if ! python3 -m venv .venv 2>/dev/null; then
      is_root || die "python3 -m venv failed; install Debian's python3-venv"
      rm -rf .venv
      apt_install python3-venv
      python3 -m venv .venv
    fi
  fi
  local stamp
  stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [ ! -f "$stamp" ]; then
    log "installing Python dependencies…"
    # Build-backend warnings get through -q; keep the output for when it fails.
    if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' >.venv/pip-install.log 2>&1; then
      tail -n 40 .venv/pip-install.log >&2
      die "pip install failed (full output in .venv/pip-install.log)"
    fi
    rm -f .venv/.installed-*
    touch "$stamp"
  fi
  export VIRTUAL_ENV="$ROOT/.venv"
  export PATH="$VIRTUAL_ENV/bin:$PATH"
}
