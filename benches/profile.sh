#!/usr/bin/env bash
# Instruction counts (valgrind --tool=callgrind) of each stage of one poll cycle, and of the
# /metrics encoding: stable on a shared machine where wall time is not. Builds
# examples/profile_cycle with symbols in target/profile (the release profile strips), then runs
# it once per stage with --toggle-collect on that stage's function and prints Ir per call.
#
# Usage: benches/profile.sh [MODELS (100)] [ITERS (20)]     Env: PAGE=summary for that page.
# The callgrind files stay in target/profile/callgrind.<stage>.out for callgrind_annotate, e.g.
#   callgrind_annotate --inclusive=yes target/profile/callgrind.update.out | head -40
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODELS="${1:-100}"
ITERS="${2:-20}"
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
CARGO_TARGET_DIR=target/profile CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  cargo build --release --locked -q --example profile_cycle
BIN=target/profile/release/examples/profile_cycle
BYTES="$("$BIN" "$MODELS" 1 | sed -n 's/.*page, \([0-9]*\) bytes.*/\1/p')"
echo "callgrind, ${PAGE:-counters} page at $MODELS models ($BYTES bytes), $ITERS calls per stage"
printf "%-10s %14s %10s\n" stage "Ir per call" "Ir/byte"
CYCLE=0
for st in full filter snapshot push derive update encode; do
  out="target/profile/callgrind.$st.out"
  ir="$(valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect="profile_cycle::stage_$st" \
        "$BIN" "$MODELS" "$ITERS" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')"
  per=$((ir / ITERS))
  case $st in snapshot|push|derive|update) CYCLE=$((CYCLE + per));; esac
  printf "%-10s %14d %10s\n" "$st" "$per" "$(python3 -c "print(f'{$per/$BYTES:.1f}')")"
done
printf "%-10s %14d   (snapshot + push + derive + update)\n" cycle "$CYCLE"
