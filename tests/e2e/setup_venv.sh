#!/usr/bin/env bash
# Create (or verify) the end-to-end harness venv at <repo>/.venv.
#
# - Idempotent: when the venv exists, was made from /usr/bin/python3.11 and its
#   stamp matches the hash of requirements.txt (+ this script), nothing is done.
# - Otherwise the venv is (re)created from scratch and the pinned packages are
#   installed. A stale or half-built venv is removed first.
# - Any failure exits non-zero with a message starting "setup_venv: ERROR".
#   It never skips silently.
#
# Environment:
#   TRITON_E2E_VENV     venv location (default: <repo>/.venv)
#   TRITON_E2E_PYTHON   base interpreter (default: /usr/bin/python3.11; the
#                       pytriton Python-backend stub links Debian's libpython3.11,
#                       a pyenv/other build fails with
#                       "'_thread.RLock' object has no attribute '_recursion_count'")
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${TRITON_E2E_VENV:-$ROOT/.venv}"
BASE_PY="${TRITON_E2E_PYTHON:-/usr/bin/python3.11}"
REQ="$HERE/requirements.txt"
STAMP="$VENV/.e2e-requirements.sha256"

log() { echo "setup_venv: $*" >&2; }
die() { echo "setup_venv: ERROR: $*" >&2; exit 1; }

[ -f "$REQ" ] || die "missing $REQ"
[ -x "$BASE_PY" ] || die "$BASE_PY not found. Install Debian's python3.11 (apt-get install python3.11 python3.11-venv)."

# Only one setup at a time (parallel `make` targets, CI retries).
LOCK="${TMPDIR:-/tmp}/triton-sidecar-e2e-venv.$(printf '%s' "$VENV" | sha256sum | cut -c1-12).lock"
exec 9>"$LOCK"
if command -v flock >/dev/null 2>&1; then
    flock -w 900 9 || die "timed out waiting for another setup_venv.sh (lock $LOCK)"
fi

want_hash="$( { cat "$REQ"; cat "${BASH_SOURCE[0]}"; "$BASE_PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"

venv_ok() {
    [ -x "$VENV/bin/python" ] || return 1
    [ -f "$STAMP" ] || return 1
    [ "$(cat "$STAMP")" = "$want_hash" ] || return 1
    # pyvenv.cfg must point at the base interpreter's directory (not pyenv etc.)
    grep -qx "home = $(dirname "$BASE_PY")" "$VENV/pyvenv.cfg" 2>/dev/null || return 1
    "$VENV/bin/python" -c 'import pytriton, requests, numpy, prometheus_client, pytest' >/dev/null 2>&1 || return 1
    return 0
}

if venv_ok; then
    log "venv $VENV is up to date (stamp $want_hash)"
    exit 0
fi

start=$(date +%s)

# ensurepip is split out into Debian's python3.11-venv package.
if ! "$BASE_PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    log "$BASE_PY lacks ensurepip/venv; installing Debian package python3.11-venv"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "python3.11-venv is missing and not root (no sudo): apt-get install python3.11-venv"
        SUDO="sudo -n"
    fi
    $SUDO apt-get update || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends python3.11-venv \
        || die "apt-get install python3.11-venv failed"
    "$BASE_PY" -c 'import ensurepip, venv' || die "python3.11-venv installed but ensurepip still missing"
fi

if [ -e "$VENV" ]; then
    log "removing stale or incomplete venv at $VENV"
    rm -rf "$VENV" || die "cannot remove $VENV"
fi

log "creating venv $VENV from $BASE_PY"
"$BASE_PY" -m venv "$VENV" || die "'$BASE_PY -m venv $VENV' failed"

log "installing pinned packages from $REQ"
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQ" \
    || die "pip install -r $REQ failed (network? registry?). The venv is left without a stamp and will be rebuilt next run."

# Sanity checks: the packages import, tritonserver and the 3.11 stub are there.
"$VENV/bin/python" - <<'EOF' || die "post-install check failed"
import pathlib, sys
import numpy, requests, prometheus_client, pytest  # noqa: F401
import pytriton
base = pathlib.Path(pytriton.__file__).parent / "tritonserver"
ts = base / "bin" / "tritonserver"
assert ts.is_file(), f"missing {ts}"
v = f"{sys.version_info[0]}.{sys.version_info[1]}"
stubs = list((base / "python_backend_stubs").glob(f"{v}/**/triton_python_backend_stub"))
assert stubs, f"no python backend stub for Python {v} under {base}/python_backend_stubs"
print(f"setup_venv: ok: pytriton {pytriton.__version__ if hasattr(pytriton, '__version__') else '?'}, tritonserver at {ts}", file=sys.stderr)
EOF

echo "$want_hash" > "$STAMP"
log "venv ready in $(( $(date +%s) - start ))s: $VENV/bin/python"
