#!/usr/bin/env python3
"""`make autoscale-demo`: the whole autoscaling loop on this machine, once with the agent's gauges
(deploy/ as it is) and once with the raw-Triton PromQL, one run after the other; then the plot
and the summary table.

    .venv/bin/python tests/autoscale/demo.py [--timing full|short|sustained] [--signals agent,raw]
                                            [--out DIR] [--seed N] [--docs] [--max-load 3]
    .venv/bin/python tests/autoscale/demo.py --report-only [--out DIR] [--docs]

--timing full   real time (default): deploy/'s ScaledObject from before issue 13 (kustomize/previous), the
                HPA's 15 s sync; about 18 minutes per run.
--timing short  the test overlay of `make test` (tests/autoscale/kustomize/components/short) and a
                5 s sync, about 3.5 minutes per run. Stated in the output.
--timing sustained  the short timing with a 120 s spike (4x its scale-down window), for
                the experiment in docs/autoscaling.md: `--signals agent,busy`.
--signals       agent (deploy/'s triggers), raw (raw-Triton PromQL), busy (deploy/'s triggers plus
                a busy-fraction trigger, an experiment not in deploy/); run in the order given.
--docs          also write docs/autoscaling.png and the results block of docs/autoscaling.md
                (between the `autoscale-results` markers).
--max-load L    before each run, wait (up to 20 minutes) until the 1-minute load average is at
                most L, so that a busy machine does not skew the comparison; 0 disables.

Outputs in DIR (default target/autoscale/<timing>/): <signal>.json (everything measured),
autoscaling.png, summary.md. Exit status 1 when any request failed, or a run failed.
Ctrl-C / SIGTERM stop every process (pods, agents, Prometheus) before exiting.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import signal
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import report  # noqa: E402

DOCS_MD = harness.ROOT / "docs" / "autoscaling.md"
DOCS_PNG = harness.ROOT / "docs" / "autoscaling-issue9.png"
BEGIN, END = "<!-- autoscale9-results:begin -->", "<!-- autoscale9-results:end -->"


def wait_load(max_load: float) -> None:
    if max_load <= 0:
        return
    deadline = time.monotonic() + 1200
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        harness.log(f"load average {os.getloadavg()[0]:.2f} > {max_load:g}: waiting")
        time.sleep(20)


def write_docs(results, png: pathlib.Path, md_block: str) -> None:
    DOCS_PNG.write_bytes(png.read_bytes())
    text = DOCS_MD.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOCS_MD} lacks the {BEGIN} ... {END} markers")
    pre, rest = text.split(BEGIN, 1)
    _, post = rest.split(END, 1)
    DOCS_MD.write_text(pre + BEGIN + "\n" + md_block + END + post)
    harness.log(f"wrote {DOCS_PNG} ({DOCS_PNG.stat().st_size // 1024} KiB) and the results block of {DOCS_MD}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timing", choices=sorted(harness.TIMINGS), default="full")
    ap.add_argument("--signals", default="agent,raw")
    ap.add_argument("--out", type=pathlib.Path)
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--docs", action="store_true")
    ap.add_argument("--max-load", type=float, default=3.0)
    ap.add_argument("--report-only", action="store_true", help="re-render from the JSON files in --out")
    a = ap.parse_args(argv)
    signals = [s for s in a.signals.split(",") if s]
    out = a.out or harness.OUT_ROOT / a.timing

    def _term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _term)

    results = []
    rc = 0
    if a.report_only:
        results = [json.loads((out / f"{s}.json").read_text()) for s in signals]
    else:
        t_all = time.monotonic()
        for i, s in enumerate(signals):
            wait_load(a.max_load)
            try:
                results.append(harness.run(s, harness.TIMINGS[a.timing], seed=a.seed, out_dir=out))
            except KeyboardInterrupt:
                harness.log("interrupted: every process stopped")
                return 130
            except Exception as e:  # noqa: BLE001
                harness.log(f"run {s} failed: {type(e).__name__}: {e}")
                rc = 1
                continue
            sm = results[-1]["summary"]
            harness.log(f"run {s} done in {results[-1]['wall_s']:.0f} s: failed {sm['failed']} of {sm['requests']}, "
                        f"reaction {sm['reaction_s']} s, replica-seconds {sm['replica_seconds']:.0f}")
            if i + 1 < len(signals):
                time.sleep(10)  # let the last pod's processes go before the next run
        harness.log(f"all runs took {time.monotonic() - t_all:.0f} s")
    if not results:
        return 1
    png = out / "autoscaling.png"
    report.plot(results, png)
    md = ("*" + results[0]["config"]["timing_note"] + "*\n\n" if a.timing != "full" else "") \
        + report.setup_text(results) + "\n\n" + report.table(results) + "\n"
    (out / "summary.md").write_text(md)
    print(md)
    print(f"plot: {png} ({png.stat().st_size // 1024} KiB); data: {out}/<signal>.json")
    if a.docs:
        write_docs(results, png, "\n" + md + "\n")
    if any(r["summary"]["failed"] or r["summary"]["pod_errors"] for r in results):
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
