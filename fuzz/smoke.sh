#!/usr/bin/env bash
# fuzz/smoke.sh: run each cargo-fuzz target for FUZZ_SECONDS (default 60) and fail on any
# crash, panic, sanitizer report, timeout or out-of-memory.
#
#   bash fuzz/smoke.sh                       # both targets, 60 s each
#   FUZZ_SECONDS=600 bash fuzz/smoke.sh      # the 10-minute runs of docs/reliability.md
#   FUZZ_TARGETS=parse bash fuzz/smoke.sh    # one target
#
# The toolchain is stable: cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address,
# -Cpasses=sancov-module, ...), which stable accepts with RUSTC_BOOTSTRAP=1. A nightly
# toolchain works too: FUZZ_TOOLCHAIN=nightly runs `cargo +nightly fuzz ...` without the
# bootstrap switch. cargo-fuzz is installed from crates.io if missing.
#
# The seed corpus: the real Triton pages in tests/fixtures/*.prom plus fuzz/seeds/parse/ (hand
# written: escapes, NaN/±Inf, TRT-LLM, vLLM, summaries, tabs, CRLF). The derive target embeds
# the fixture pages and starts its sequences from them. libFuzzer grows fuzz/corpus/<target>/
# (git-ignored); a crash input lands in fuzz/artifacts/<target>/ and is printed with the
# command that replays it. Each run ends with one line: target, seconds, executions, corpus.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGETS="${FUZZ_TARGETS:-parse derive}"
# Per-input limits: a slow input (10 s) or a 2 GiB heap is a finding, not a stall.
TIMEOUT="${FUZZ_TIMEOUT:-10}"
RSS_MB="${FUZZ_RSS_MB:-2048}"
SANITIZER="${FUZZ_SANITIZER:-address}"

if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
  CARGO=(cargo "+$FUZZ_TOOLCHAIN")
else
  CARGO=(cargo)
  export RUSTC_BOOTSTRAP=1
fi

if ! "${CARGO[@]}" fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz from crates.io"
  cargo install cargo-fuzz --locked
fi
echo "$("${CARGO[@]}" fuzz --version) on $(rustc --version)"

mkdir -p corpus/parse corpus/derive artifacts logs
# Seed the working corpus; libFuzzer dedups by content, so copying again is harmless.
cp -n ../tests/fixtures/*.prom seeds/parse/* corpus/parse/ 2>/dev/null || true

"${CARGO[@]}" fuzz build -s "$SANITIZER"

status=0
for t in $TARGETS; do
  extra=()
  [[ "$t" == parse ]] && extra+=(-dict=parse.dict)
  log="logs/$t.log"
  echo "=== fuzz $t for ${SECONDS_EACH}s (log: fuzz/$log)"
  set +e
  "${CARGO[@]}" fuzz run -s "$SANITIZER" "$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
    -print_final_stats=1 "${extra[@]}" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
  units=$(find "corpus/$t" -type f | wc -l)
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+' || true)
  if [[ $rc -ne 0 ]] || grep -qE '^(==[0-9]+== ?ERROR|SUMMARY: |thread .* panicked)' "$log"; then
    echo "FAIL fuzz $t: exit $rc after ${execs:-?} executions"
    grep -E 'panicked|ERROR|SUMMARY|Test unit written|artifact_prefix|Reproduce' "$log" | head -20 || true
    tail -30 "$log"
    status=1
  else
    echo "ok   fuzz $t: ${SECONDS_EACH}s, ${execs:-?} executions, corpus ${units} inputs, coverage ${cov:-?} edges, no crash"
  fi
done
exit $status
