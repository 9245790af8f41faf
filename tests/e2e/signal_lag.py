#!/usr/bin/env python3
"""Signal lag: scenario A, several runs; how long the pod gauges take to follow a load step.

    TRITON_SIDECAR_BIN=target/release/triton-sidecar .venv/bin/python tests/e2e/signal_lag.py --runs 3

For each step change (idle -> medium -> heavy -> idle) and each of
`triton_pod_pending_requests` and `triton_pod_queue_wait_ms`: the seconds from the
change until the gauge (read every 0.1 s) first crosses half-way between the old
step's level and the new one (medians over each step's compare phase). Prints a
Markdown table (min / median / max over the runs) and the gauge checks' tally.
Not a test: it asserts nothing. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenarios  # noqa: E402
from benchmark import loadavg, machine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--poll", type=float, default=0.5)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--json", default=None, help="also write all results here")
    args = ap.parse_args()

    load_start = loadavg()
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    runs = []
    for i in range(args.runs):
        res = scenarios.run_scenario_a(poll=args.poll, window=args.window)
        runs.append(res)
        lags = ", ".join(f"{l['gauge'].replace('triton_pod_', '')} {l['from']}->{l['to']} {l['lag_s']}"
                         for l in res["signal_lag"])
        print(f"run {i + 1}/{args.runs}: {len(res['failed_checks'])} of {len(res['checks'])} checks off; {lags}; "
              f"load={loadavg()}", file=sys.stderr, flush=True)

    by_key: dict = {}
    for res in runs:
        for l in res["signal_lag"]:
            by_key.setdefault((l["gauge"], l["from"], l["to"]), []).append(l)

    def fmt(xs):
        xs = [x for x in xs if x is not None]
        if not xs:
            return "-"
        return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"

    print()
    print(f"poll {args.poll:g} s, window {args.window:g} s, {args.runs} runs; machine: {machine()}; "
          f"load average (1/5/15 min) {load_start} at the start, {loadavg()} at the end; {date}")
    print(f"gauge checks: {sum(len(r['checks']) for r in runs)} in all, "
          f"{sum(len(r['failed_checks']) for r in runs)} off")
    print()
    print("| gauge | step | level before -> after (median of runs) | seconds to cross half-way (min / median / max) |")
    print("|---|---|---|---|")
    for (gauge, a, b), ls in by_key.items():
        old = statistics.median(l["old"] for l in ls)
        new = statistics.median(l["new"] for l in ls)
        missing = sum(1 for l in ls if l["lag_s"] is None)
        note = f" ({missing} run(s) never crossed)" if missing else ""
        print(f"| `{gauge}` | {a} -> {b} | {old:.1f} -> {new:.1f} | {fmt([l['lag_s'] for l in ls])}{note} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
