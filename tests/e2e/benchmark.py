#!/usr/bin/env python3
"""The termination benchmark: scenario B for each strategy, same load, several runs.

    TRITON_SIDECAR_BIN=target/release/triton-sidecar .venv/bin/python tests/e2e/benchmark.py --runs 3

Prints a Markdown table: failed requests and seconds to pod exit (min/median/max).
Not a test: it asserts nothing. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenarios  # noqa: E402

LABELS = {
    "none": "no preStop hook",
    "sleep": "`sleep {sleep}`",
    "regular": "agent, regular sidecar",
    "native": "agent, native sidecar",
}


def mmm(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{min(xs):g} / {statistics.median(xs):g} / {max(xs):g}"


def machine() -> str:
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        model = next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), "?")
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{os.cpu_count()} CPUs, {model}"


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--propagation", type=float, default=2.0)
    ap.add_argument("--sleep", type=float, default=30.0, help="the sleep strategy's preStop")
    ap.add_argument("--min-drain", type=float, default=5.0)
    ap.add_argument("--keep-alive", action="store_true", help="clients reuse connections (default: one per request)")
    ap.add_argument("--strategies", default="none,sleep,regular,native")
    ap.add_argument("--json", default=None, help="also write all results here")
    args = ap.parse_args()

    strategies = args.strategies.split(",")
    results = {s: [] for s in strategies}
    load_start = loadavg()
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    t_start = time.monotonic()
    for run in range(args.runs):
        for s in strategies:
            r = scenarios.run_scenario_b(
                s, clients=args.clients, propagation=args.propagation, min_drain=args.min_drain,
                sleep_s=args.sleep, keep_alive=args.keep_alive,
            )
            results[s].append(r)
            print(f"run {run + 1}/{args.runs} {s}: failed={r.failed} ok={r.ok} pod_exit={r.pod_exit_s}s "
                  f"triton_exit={r.triton_exit_s}s agent_exit={r.agent_exit_s}s {r.triton_rc} load={loadavg()}",
                  file=sys.stderr, flush=True)

    print()
    print(f"N = {args.clients} clients (slow:fast = 1:3), propagation {args.propagation:g} s, "
          f"min-drain {args.min_drain:g} s, {args.runs} runs each, "
          f"{'keep-alive' if args.keep_alive else 'a new connection per request'}; "
          f"total {time.monotonic() - t_start:.0f} s")
    print(f"machine: {machine()}; load average (1/5/15 min) {load_start} at the start, {loadavg()} at the end; {date}")
    print()
    print("| strategy | failed requests (min / median / max) | seconds to pod exit (min / median / max) "
          "| ok requests (median) | tritonserver exit codes |")
    print("|---|---|---|---|---|")
    for s in strategies:
        rs = results[s]
        label = LABELS.get(s, s).format(sleep=f"{args.sleep:g}")
        codes = sorted({(r.triton_rc or "?").split("triton_rc=")[-1].split()[0] for r in rs})
        print(f"| {label} | {mmm([r.failed for r in rs])} | {mmm([r.pod_exit_s for r in rs])} "
              f"| {statistics.median([r.ok for r in rs]):g} | {', '.join(codes)} |")
    if args.json:
        import dataclasses

        with open(args.json, "w") as f:
            json.dump({s: [dataclasses.asdict(r) for r in rs] for s, rs in results.items()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
