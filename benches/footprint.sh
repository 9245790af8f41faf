#!/usr/bin/env bash
# Footprint of the release binary against a fake Triton serving a 100-model page
# (the real fixture page load-1.prom scaled to 100 models; benches/fake_triton.py), polled at 1 s.
#
# Reports:
#   - stripped size of target/release/triton-sidecar;
#   - CPU: utime+stime (/proc/<pid>/stat, clock ticks) over CPU_S seconds of steady polling
#     (default 120), from 15 s after start, scaled to seconds per hour (x 3600/CPU_S) and to % of
#     one core (cpu s / wall s);
#   - RSS: VmRSS at STEADY_S seconds after start (default 300 = 5 min), min/max of VmRSS sampled
#     every 5 s over the run, and VmHWM (peak) before and after the wrk run;
#   - /metrics under wrk: WRK_CONNS (64) connections, WRK_THREADS (2) threads, WRK_S (10) s,
#     `wrk --latency`, while polling goes on (the fake's /metrics hit count shows it did);
#   - load average with each measurement (the machine may be shared: its figures are noisy).
#
# Usage: benches/footprint.sh        Env: STEADY_S, CPU_S, WRK_S, WRK_CONNS, WRK_THREADS, MODELS
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STEADY_S="${STEADY_S:-300}"
CPU_S="${CPU_S:-120}"
WRK_S="${WRK_S:-10}"
WRK_CONNS="${WRK_CONNS:-64}"
WRK_THREADS="${WRK_THREADS:-2}"
MODELS="${MODELS:-100}"
OUT="$ROOT/target/footprint"
mkdir -p "$OUT"
log() { echo "footprint: $*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

if ! command -v wrk >/dev/null; then
  log "installing wrk"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --locked -q
cargo build --release --locked -q --example gen_pages
BIN=target/release/triton-sidecar
target/release/examples/gen_pages "$OUT/pages" >/dev/null
PAGE="$OUT/pages/counters-$MODELS.prom"
[ -f "$PAGE" ] || { log "no page for MODELS=$MODELS (1, 10, 100 or 1000)"; exit 2; }

FAKE_PID="" AGENT_PID=""
cleanup() {
  [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null || true
  [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null || true
}
trap cleanup EXIT

rm -f "$OUT/fake.port"
python3 benches/fake_triton.py "$PAGE" "$OUT/fake.port" &
FAKE_PID=$!
for _ in $(seq 100); do [ -s "$OUT/fake.port" ] && break; sleep 0.1; done
FAKE_PORT="$(cat "$OUT/fake.port")"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MPORT="$(free_port)"; APORT="$(free_port)"

"$BIN" --triton-url "http://127.0.0.1:$FAKE_PORT" --triton-metrics-url "http://127.0.0.1:$FAKE_PORT/metrics" \
  --metrics-addr "127.0.0.1:$MPORT" --admin-addr "127.0.0.1:$APORT" --poll-interval 1s --no-gpu \
  >"$OUT/agent.log" 2>&1 &
AGENT_PID=$!
START=$(date +%s.%N)
elapsed() { python3 -c "import time; print(time.time() - $START)"; }
status() { grep "^$1:" "/proc/$AGENT_PID/status" | awk '{print $2}'; }   # kB
cpu_ticks() { awk '{print $14 + $15}' "/proc/$AGENT_PID/stat"; }          # utime + stime
TCK="$(getconf CLK_TCK)"

# Ready: the page carries every model.
for _ in $(seq 100); do
  n="$(curl -fsS "http://127.0.0.1:$MPORT/metrics" 2>/dev/null | grep -c '^triton_pending_requests{' || true)"
  [ "$n" = "$MODELS" ] && break
  sleep 0.2
done
[ "$n" = "$MODELS" ] || { log "the agent never showed $MODELS models"; cat "$OUT/agent.log" >&2; exit 1; }
log "agent pid $AGENT_PID up, $MODELS models on /metrics; fake Triton on $FAKE_PORT"

RSS_MIN=999999999 RSS_MAX=0
sample_rss() {
  local r; r="$(status VmRSS)"
  [ "$r" -lt "$RSS_MIN" ] && RSS_MIN=$r
  [ "$r" -gt "$RSS_MAX" ] && RSS_MAX=$r
  return 0
}
sleep_sampling() {  # sleep until $1 seconds after start, sampling RSS every 5 s
  while python3 -c "import sys,time; sys.exit(0 if time.time() - $START < $1 else 1)"; do
    sample_rss; sleep 5
  done
}

# --- CPU over CPU_S seconds of steady polling
sleep_sampling 15
LOAD_CPU0="$(load)"; T0=$(date +%s.%N); C0=$(cpu_ticks); H0="$(curl -fsS "http://127.0.0.1:$FAKE_PORT/_fake/metrics_hits")"
log "measuring CPU for $CPU_S s (load avg $LOAD_CPU0)"
sleep_sampling "$(python3 -c "print($(elapsed) + $CPU_S)")"
T1=$(date +%s.%N); C1=$(cpu_ticks); LOAD_CPU1="$(load)"; H1="$(curl -fsS "http://127.0.0.1:$FAKE_PORT/_fake/metrics_hits")"

# --- RSS at STEADY_S
log "waiting until ${STEADY_S} s after start for the steady RSS"
sleep_sampling "$STEADY_S"
RSS_STEADY="$(status VmRSS)"; HWM_STEADY="$(status VmHWM)"; AT_STEADY="$(elapsed)"; LOAD_RSS="$(load)"

# --- wrk on /metrics while polling goes on
LOAD_WRK0="$(load)"; W0="$(curl -fsS "http://127.0.0.1:$FAKE_PORT/_fake/metrics_hits")"
wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${WRK_S}s" --latency "http://127.0.0.1:$MPORT/metrics" >"$OUT/wrk.txt" 2>&1
W1="$(curl -fsS "http://127.0.0.1:$FAKE_PORT/_fake/metrics_hits")"; LOAD_WRK1="$(load)"
HWM_AFTER="$(status VmHWM)"; RSS_AFTER="$(status VmRSS)"
UP="$(curl -fsS "http://127.0.0.1:$MPORT/metrics" | grep '^triton_up ' | awk '{print $2}')"
kill -0 "$AGENT_PID"  # still alive

python3 - <<PYEOF
import re
tck = $TCK
cpu_s = ($C1 - $C0) / tck
wall = $T1 - $T0
wrk = open("$OUT/wrk.txt").read()
def pct(p):
    m = re.search(r"^\s*%s%%\s+(\S+)" % p, wrk, re.M)
    return m.group(1) if m else "?"
rps = re.search(r"Requests/sec:\s+(\S+)", wrk)
errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", wrk)
size = __import__("os").path.getsize("$BIN")
import subprocess
ftype = subprocess.run(["file", "-b", "$BIN"], capture_output=True, text=True).stdout.strip()
print(f"binary            {size} bytes = {size/2**20:.2f} MiB ({'stripped' if 'not stripped' not in ftype else 'NOT stripped'}: {ftype[:60]}...)")
print(f"CPU               {cpu_s:.2f} s over {wall:.1f} s wall = {100*cpu_s/wall:.3f} % of one core = {cpu_s*3600/wall:.1f} CPU s/hour"
      f"  (utime+stime, {tck} ticks/s; polls {int('$H1')-int('$H0')}; load avg {'$LOAD_CPU0'} -> {'$LOAD_CPU1'})")
print(f"RSS steady        VmRSS {$RSS_STEADY/1024:.2f} MiB at {float('$AT_STEADY'):.0f} s; VmRSS over the run min {$RSS_MIN/1024:.2f} / max {$RSS_MAX/1024:.2f} MiB; VmHWM {$HWM_STEADY/1024:.2f} MiB  (load avg {'$LOAD_RSS'})")
print(f"wrk /metrics      {$WRK_CONNS} conns, {$WRK_THREADS} threads, {$WRK_S} s: p50 {pct(50)}, p90 {pct(90)}, p99 {pct(99)}, {rps.group(1) if rps else '?'} req/s"
      f"  (polls during: {int('$W1')-int('$W0')}; load avg {'$LOAD_WRK0'} -> {'$LOAD_WRK1'})")
print(f"after wrk         VmRSS {$RSS_AFTER/1024:.2f} MiB, VmHWM {$HWM_AFTER/1024:.2f} MiB; triton_up {'$UP'}")
if errs: print("wrk errors       ", errs.group(0))
PYEOF
echo "--- wrk output"; cat "$OUT/wrk.txt"
