#!/usr/bin/env python3
"""`make autoscale-compare`: issue 13's comparison. Four trigger sets, side by side, same seed,
one run each, on each scenario of harness.SCENARIOS:

    new       deploy/ as rendered (deploy/overlays/keda)
    previous  deploy/'s triggers before issue 13 (tests/autoscale/kustomize/previous)
    tutorial  Triton's TensorRT-LLM tutorial (tests/autoscale/kustomize/trtllm-tutorial)
    onprem    Triton's deploy/k8s-onprem (tests/autoscale/kustomize/k8s-onprem)

    .venv/bin/python tests/autoscale/compare.py [--scenarios spike,ramp,batched,coldstart]
        [--sets new,previous,tutorial,onprem] [--out DIR] [--seed 9] [--docs] [--max-load 3]
    .venv/bin/python tests/autoscale/compare.py --report-only [--out DIR] [--docs]

First one pod per model is calibrated (closed loop, capacity.py): its saturation throughput C
sets the scenario's load (in units of C) and the ideal replica count,
ideal(t) = ceil(offered(t) / (C x 0.7)) within min/max replicas (0.7: deploy/'s documented
utilization target). Then every run (harness.run). Per scenario and trigger set: scale-downs
while the offered load exceeded what the remaining pods can serve (goal 0), replicas against the
ideal at the end of the settled phases (goal +-1), peak replicas between the first scale-up and
its first pod turning ready against the ideal (overshoot), replica-seconds / ideal's integral
(goal <= 1.3), client p50/p99, failed requests (goal 0). Which runs were shortened is stated.

Outputs in DIR (default target/autoscale/compare/): capacity.json, <scenario>/<set>.json,
<scenario>.png (every panel), compare.png (replicas of every run), summary.md, lane<i>.log. --docs
writes docs/autoscaling.png and the results block of docs/autoscaling.md. About 1 min calibration
+ 16 runs of 4-5.5 min, in two lanes (--lanes) 41 min measured.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import capacity  # noqa: E402
import harness  # noqa: E402
import report13  # noqa: E402

DOCS_MD = harness.ROOT / "docs" / "autoscaling.md"
DOCS_PNG = harness.ROOT / "docs" / "autoscaling.png"
BEGIN, END = "<!-- autoscale-results:begin -->", "<!-- autoscale-results:end -->"


def wait_load(max_load: float) -> None:
    if max_load <= 0:
        return
    deadline = time.monotonic() + 600
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        harness.log(f"load average {os.getloadavg()[0]:.2f} > {max_load:g}: waiting")
        time.sleep(20)


def calibrate(models, out: pathlib.Path) -> dict:
    """One pod per model, closed loop: the saturation throughput (requests/s)."""
    import secrets
    caps = {}
    for m in models:
        tok = secrets.token_urlsafe(16)
        with capacity.pod(m, tok) as t:
            sat = capacity.closed_loop(t, m, capacity.CONCURRENCY[m], capacity.SAT_S, capacity.SAT_WARM_S)
        caps[m] = {"rps": round(sat["rps"], 3), **sat, "loadavg": os.getloadavg()}
        harness.log(f"calibration: {m} saturates at {sat['rps']:.2f} requests/s ({sat['clients']} clients)")
    (out / "capacity.json").write_text(json.dumps(caps, indent=1))
    return caps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="spike,ramp,batched,coldstart")
    ap.add_argument("--sets", default="new,previous,tutorial,onprem")
    ap.add_argument("--out", type=pathlib.Path, default=harness.OUT_ROOT / "compare")
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--docs", action="store_true")
    ap.add_argument("--max-load", type=float, default=3.0)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--calibration", type=pathlib.Path,
                    help="reuse this capacity.json (another compare.py's) instead of calibrating again")
    ap.add_argument("--calibrate-only", action="store_true")
    ap.add_argument("--lanes", type=int, default=2,
                    help="run the scenarios in this many lanes at once (scenario i in lane i mod N; each lane "
                         "runs its trigger sets one after the other), default 2: about 41 min instead of 75")
    a = ap.parse_args(argv)
    scens = [s for s in a.scenarios.split(",") if s]
    sets = [s for s in a.sets.split(",") if s]
    out = a.out
    out.mkdir(parents=True, exist_ok=True)

    def _term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _term)

    rc = 0
    t_all = time.monotonic()
    if not a.report_only:
        try:
            if a.calibration:
                caps = json.loads(a.calibration.read_text())
                if a.calibration.resolve() != (out / "capacity.json").resolve():
                    (out / "capacity.json").write_text(json.dumps(caps, indent=1))
            else:
                caps = calibrate(sorted({harness.SCENARIOS[s].model for s in scens}), out)
            if a.calibrate_only:
                return 0
            if a.lanes > 1 and len(scens) > 1:
                import subprocess
                procs = []
                for i in range(min(a.lanes, len(scens))):
                    mine = scens[i::a.lanes]
                    argv_l = [sys.executable, str(HERE / "compare.py"), "--scenarios", ",".join(mine), "--sets", ",".join(sets),
                              "--out", str(out), "--seed", str(a.seed), "--calibration", str(out / "capacity.json"),
                              "--max-load", "0", "--lanes", "1"]
                    harness.log(f"lane {i}: {','.join(mine)}")
                    with open(out / f"lane{i}.log", "w") as lf:
                        procs.append(subprocess.Popen(argv_l, stdout=subprocess.DEVNULL, stderr=lf))
                    time.sleep(20)
                try:
                    for pr in procs:
                        rc = pr.wait() or rc
                except KeyboardInterrupt:
                    for pr in procs:
                        pr.send_signal(signal.SIGTERM)
                    for pr in procs:
                        pr.wait(120)
                    raise
                scens_run = []
            else:
                scens_run = scens
            for sc in scens_run:
                timing = harness.SCENARIOS[sc]
                for st in sets:
                    wait_load(a.max_load)
                    try:
                        res = harness.run(st, timing, seed=a.seed, out_dir=out / sc,
                                          entry_point=harness.TRIGGER_SETS[st], capacity_rps=caps[timing.model]["rps"])
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # noqa: BLE001
                        harness.log(f"run {sc}/{st} failed: {type(e).__name__}: {e}")
                        rc = 1
                        continue
                    sm = res["summary"]
                    harness.log(f"run {sc}/{st} done in {res['wall_s']:.0f} s: failed {sm['failed']} of {sm['requests']}, "
                                f"replica-seconds/ideal {sm.get('replica_seconds_vs_ideal')}, "
                                f"scale-downs over capacity {sm.get('scale_downs_over_capacity')}")
                    time.sleep(5)
        except KeyboardInterrupt:
            harness.log("interrupted: every process stopped")
            return 130
        harness.log(f"all runs took {time.monotonic() - t_all:.0f} s")
    results = {}
    for sc in scens:
        for st in sets:
            f = out / sc / f"{st}.json"
            if f.exists() and a.report_only:
                # measures re-derived from the recorded run (the summary code may be newer)
                r = json.loads(f.read_text())
                r["summary"] = harness.summarize(r)
                f.write_text(json.dumps(r))
    for sc in scens:
        for st in sets:
            f = out / sc / f"{st}.json"
            if f.exists():
                results.setdefault(sc, {})[st] = json.loads(f.read_text())
    if not results:
        return 1
    for sc, by_set in results.items():
        report13.plot_scenario(sc, by_set, out / f"{sc}.png")
    report13.plot_grid(results, out / "compare.png")
    md = report13.markdown(results, json.loads((out / "capacity.json").read_text()) if (out / "capacity.json").exists() else {})
    (out / "summary.md").write_text(md)
    print(md)
    print(f"plots: {out}/compare.png, {out}/<scenario>.png; data: {out}/<scenario>/<set>.json")
    if a.docs:
        DOCS_PNG.write_bytes((out / "compare.png").read_bytes())
        text = DOCS_MD.read_text()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"{DOCS_MD} lacks the {BEGIN} ... {END} markers")
        pre, rest = text.split(BEGIN, 1)
        _, post = rest.split(END, 1)
        DOCS_MD.write_text(pre + BEGIN + "\n\n" + md + "\n" + END + post)
        harness.log(f"wrote {DOCS_PNG} and the results block of {DOCS_MD}")
    if any(r["summary"]["failed"] or r["summary"]["pod_errors"] for by in results.values() for r in by.values()):
        rc = rc or 1
    # Issue 22's bound, scenario (d) on deploy/ as rendered: the HPA's desired replicas (with the
    # manifest's maxReplicaCount, the pods capped) peak at no more than the ideal + 1, 0 failed.
    cold = (results.get("coldstart") or {}).get("new")
    if cold is not None:
        sm, cfg = cold["summary"], cold["config"]
        ideal_peak = max(harness.ideal_replicas(cfg, max(p["rate_from"], p["rate_to"])) for p in cfg["phases"])
        ok = sm["max_desired"] <= ideal_peak + 1 and sm["failed"] == 0
        print(f"{'ok' if ok else 'FAIL'}: coldstart/new: peak desired {sm['max_desired']} (ideal {ideal_peak}, "
              f"bound {ideal_peak + 1}, maxReplicaCount {cfg['max_replicas']}, pods capped at {cfg.get('physical_cap')}), "
              f"failed {sm['failed']} of {sm['requests']}, desired replica-seconds / ideal "
              f"{sm.get('desired_replica_seconds_vs_ideal')}, p99 {sm.get('p99_s')}, estimate overstatement max "
              f"{sm.get('estimate_overstatement_max')} (excess {sm.get('estimate_excess_pods_max')} pods)")
        if not ok:
            rc = rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
