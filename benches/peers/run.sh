#!/usr/bin/env bash
# Peer comparison: the same page files, parsed in the same run by
#   - ours:   triton_sidecar::triton::text::parse (examples/parse_files.rs, release build),
#   - Go:     Prometheus's expfmt.TextParser (github.com/prometheus/common, Debian package),
#   - Python: prometheus_client.parser.text_string_to_metric_families.
# Pages: the real Triton fixture pages scaled to 1, 10, 100 and 1000 models
# (examples/gen_pages.rs). Prints each parser's MiB/s and ns per sample line, and our speed-up
# over each peer (their time / our time), with the load average before and after.
#
# Usage: benches/peers/run.sh [PAGE.prom...]   (default: every generated page)
# Env:   ROUNDS (5), MIN_ROUND_S (0.2): each parser keeps its best round of >= MIN_ROUND_S.
#        PEERS_VENV: a venv with prometheus_client (default .venv if it has it, else
#        target/peers/venv with prometheus_client==0.26.0).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="$ROOT/target/peers"
mkdir -p "$OUT"
log() { echo "peers: $*" >&2; }

# --- Go and expfmt (Debian: golang-go, golang-github-prometheus-common-dev)
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/prometheus/common/expfmt ]; then
  log "installing golang-go and golang-github-prometheus-common-dev"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-github-prometheus-common-dev >/dev/null
fi
(cd benches/peers/go && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOCACHE="$OUT/gocache" \
  go build -o "$OUT/expfmt-peer" .)

# --- Python and prometheus_client
PY=""
if [ -n "${PEERS_VENV:-}" ]; then PY="$PEERS_VENV/bin/python"
elif [ -x .venv/bin/python ] && .venv/bin/python -c 'import prometheus_client' 2>/dev/null; then PY=.venv/bin/python
else
  if ! "$OUT/venv/bin/python" -c 'import prometheus_client' 2>/dev/null; then
    log "creating $OUT/venv with prometheus_client==0.26.0"
    python3 -m venv "$OUT/venv"
    "$OUT/venv/bin/pip" install -q prometheus_client==0.26.0
  fi
  PY="$OUT/venv/bin/python"
fi

# --- ours, and the pages
cargo build --release --locked --example gen_pages --example parse_files -q
target/release/examples/gen_pages "$OUT/pages" >/dev/null
if [ $# -eq 0 ]; then
  set -- "$OUT"/pages/counters-{1,10,100,1000}.prom "$OUT"/pages/summary-{1,10,100,1000}.prom
fi

RESULTS="$OUT/results.tsv"
: >"$RESULTS"
LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"
# One file at a time, the three parsers back to back, so they see the same load.
for f in "$@"; do
  target/release/examples/parse_files "$f" >>"$RESULTS"
  "$OUT/expfmt-peer" "$f" >>"$RESULTS"
  "$PY" benches/peers/python_peer.py "$f" >>"$RESULTS"
  log "done $(basename "$f")"
done
LOAD1="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RESULTS" "$LOAD0" "$LOAD1" "$("$PY" -c 'import prometheus_client,importlib.metadata as m;print(m.version("prometheus_client"))')" \
  "$(go version | cut -d' ' -f3)" "$(dpkg-query -W -f='${Version}' golang-github-prometheus-common-dev 2>/dev/null || echo '?')" <<'PYEOF'
import os, sys, collections, datetime, platform, subprocess
path, load0, load1, pyver, gover, expver = sys.argv[1:7]
rows = collections.OrderedDict()
for line in open(path):
    parser, f, nbytes, samples, ns = line.rstrip("\n").split("\t")
    rows.setdefault(f, {})[parser] = (int(nbytes), int(samples), float(ns))
model = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")), "?")
print(f"# peers: {datetime.date.today()}  cpu: {model} x{os.cpu_count()}  load avg before: {load0}  after: {load1}")
print(f"# go {gover}, expfmt from golang-github-prometheus-common-dev {expver}; prometheus_client {pyver}")
print("# MiB/s = page bytes / best time per parse; ns/sample = best time / sample lines; speed-up = their time / our time (rust: text::parse; rust+labels: and every label sliced out)")
hdr = f"{'page':<18} {'bytes':>9} {'samples':>7} | {'parser':<25} {'time/parse':>11} {'MiB/s':>8} {'ns/sample':>9} | {'speed-up of rust':>16} {'of rust+labels':>14}"
print(hdr)
print("-" * len(hdr))
for f, ps in rows.items():
    ours, ours_l = ps["rust"][2], ps["rust+labels"][2]
    for parser in ["rust", "rust+labels", "rust-skip", "go-expfmt", "python-prometheus_client"]:
        if parser not in ps:
            continue
        b, s, ns = ps[parser]
        t = f"{ns/1e6:.2f} ms" if ns >= 1e6 else f"{ns/1e3:.1f} µs"
        r1 = "" if parser.startswith("rust") else f"{ns/ours:.1f}x"
        r2 = "" if parser.startswith("rust") else f"{ns/ours_l:.1f}x"
        print(f"{os.path.basename(f):<18} {b:>9} {s:>7} | {parser:<25} {t:>11} {b/ns*1e9/2**20:>8.1f} {ns/s:>9.1f} | {r1:>16} {r2:>14}")
    print()
PYEOF
