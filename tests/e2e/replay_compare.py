#!/usr/bin/env python3
"""Compare a rendered.json (the oracle's prediction) with a real.json (replay_trace.py).

    .venv/bin/python tests/e2e/replay_compare.py --rendered rendered.json --real real.json [--json]
    .venv/bin/python tests/e2e/replay_compare.py --stub-render trace.json > rendered.json

Formats: /work/spec/oracle-trace.md (summary in tests/e2e/README.md, "Oracle replay").

Checks, for every poll and model (tolerances: see TOL and README.md):
* success, failure, exec_count: |rendered - real| <= COUNT_TOL;
* pending: |rendered - real| <= PENDING_TOL;
* queue_us, compute_infer_us: |rendered - real| <= max(REL_TOL * max(rendered, real),
  ABS_FLOOR_US) -- the floor covers the early polls, where one request's jitter is a large
  fraction of a small sum.

``--stub-render`` is a development stand-in for the Rust renderer (used before the
`oracle` example existed, and to show that the comparison can fail): one FIFO queue per
instance pool, each execution one request lasting the model's cost; it implements the
spec's semantics and is *not* the oracle.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import sys
from typing import Dict, List, Optional

COUNT_FIELDS = ("success", "failure", "exec_count")
TIME_FIELDS = ("queue_us", "compute_infer_us")


@dataclasses.dataclass
class Tol:
    count: int = 2
    pending: int = 2
    rel: float = 0.25
    abs_floor_us: float = 50_000.0


TOL = Tol()


def stub_render(trace: dict) -> dict:
    """The spec's semantics for the replay profile (max_batch 1): see the module doc."""
    per_model: Dict[str, List[dict]] = {m["name"]: [] for m in trace["models"]}
    for r in sorted(trace["requests"], key=lambda r: (r["arrival_s"], r["id"])):
        per_model[r["model"]].append(r)
    events: Dict[str, List[tuple]] = {}
    for m in trace["models"]:
        cost = (float(m["cost_a_ms"]) + float(m.get("cost_k_ms", 0.0))) / 1000.0
        free = [0.0] * int(m.get("instances", 1))
        heapq.heapify(free)
        ev = []
        for r in per_model[m["name"]]:
            f = heapq.heappop(free)
            start = max(float(r["arrival_s"]), f)
            end = start + cost
            heapq.heappush(free, end)
            ev.append((float(r["arrival_s"]), start, end, bool(r.get("fail")), cost))
        events[m["name"]] = ev
    polls = []
    for t in trace["polls_s"]:
        models = {}
        for name, ev in events.items():
            done = [e for e in ev if e[2] <= t]
            ok = [e for e in done if not e[3]]
            models[name] = {
                "success": len(ok),
                "failure": len(done) - len(ok),
                "exec_count": len(done),
                "queue_us": sum((e[1] - e[0]) * 1e6 for e in ok),
                "compute_infer_us": sum(e[4] * 1e6 for e in ok),
                "pending": sum(1 for e in ev if e[0] <= t < e[1]),
            }
        polls.append({"t_s": t, "models": models})
    return {"polls": polls}


def compare(rendered: dict, real: dict, tol: Tol = TOL) -> dict:
    """Per-poll, per-model differences; `violations` lists every check outside tolerance,
    `summary` the per-model maxima (the table of the report)."""
    rp, qp = rendered["polls"], real["polls"]
    if len(rp) != len(qp):
        raise ValueError(f"rendered has {len(rp)} polls, real {len(qp)}")
    violations: List[dict] = []
    summary: Dict[str, dict] = {}
    for i, (r, q) in enumerate(zip(rp, qp)):
        for model in sorted(set(r["models"]) | set(q["models"])):
            rm, qm = r["models"].get(model), q["models"].get(model)
            if rm is None or qm is None:
                violations.append({"poll": i, "t_s": q["t_s"], "model": model, "field": "*",
                                   "why": "model missing in " + ("rendered" if rm is None else "real")})
                continue
            s = summary.setdefault(model, {"max_abs_count": 0, "max_abs_count_at": None, "max_abs_pending": 0,
                                           "max_rel_queue": 0.0, "max_rel_compute": 0.0,
                                           "max_abs_queue_ms": 0.0, "max_abs_compute_ms": 0.0,
                                           "final": None})
            for f in COUNT_FIELDS + ("pending",):
                d = abs(int(rm[f]) - int(qm[f]))
                lim = tol.pending if f == "pending" else tol.count
                if f == "pending":
                    s["max_abs_pending"] = max(s["max_abs_pending"], d)
                elif d > s["max_abs_count"]:
                    s["max_abs_count"], s["max_abs_count_at"] = d, f"{f}@{q['t_s']:.2f}s"
                if d > lim:
                    violations.append({"poll": i, "t_s": q["t_s"], "model": model, "field": f,
                                       "rendered": rm[f], "real": qm[f], "diff": d, "tol": lim})
            for f in TIME_FIELDS:
                a, b = float(rm[f]), float(qm[f])
                d = abs(a - b)
                scale = max(abs(a), abs(b))
                rel = d / scale if scale > 0 else 0.0
                key = "queue" if f == "queue_us" else "compute"
                s[f"max_abs_{key}_ms"] = max(s[f"max_abs_{key}_ms"], d / 1000)
                if scale >= tol.abs_floor_us:  # the relative figure means something only above the floor
                    s[f"max_rel_{key}"] = max(s[f"max_rel_{key}"], rel)
                lim = max(tol.rel * scale, tol.abs_floor_us)
                if d > lim:
                    violations.append({"poll": i, "t_s": q["t_s"], "model": model, "field": f,
                                       "rendered": round(a), "real": round(b), "rel": round(rel, 4),
                                       "tol_us": round(lim)})
            s["final"] = {f: (rm[f], qm[f]) for f in COUNT_FIELDS + TIME_FIELDS}
    return {"violations": violations, "summary": summary, "tol": dataclasses.asdict(tol)}


def table(summary: Dict[str, dict], seed=None) -> str:
    lines = [
        "| seed | model | max abs count diff (at) | max abs pending diff | max rel queue diff (abs ms) | max rel compute diff (abs ms) |",
        "|---|---|---|---|---|---|",
    ]
    for m, s in summary.items():
        lines.append(
            f"| {seed} | {m} | {s['max_abs_count']} ({s['max_abs_count_at'] or '-'}) | {s['max_abs_pending']} | "
            f"{s['max_rel_queue']:.1%} ({s['max_abs_queue_ms']:.1f}) | {s['max_rel_compute']:.1%} ({s['max_abs_compute_ms']:.1f}) |"
        )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rendered")
    ap.add_argument("--real")
    ap.add_argument("--stub-render", metavar="TRACE")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.stub_render:
        with open(a.stub_render) as f:
            json.dump(stub_render(json.load(f)), sys.stdout, indent=1)
        return 0
    with open(a.rendered) as f:
        rendered = json.load(f)
    with open(a.real) as f:
        real = json.load(f)
    res = compare(rendered, real)
    if a.json:
        json.dump(res, sys.stdout, indent=1)
    else:
        print(table(res["summary"], real.get("replay", {}).get("seed")))
        for v in res["violations"]:
            print("VIOLATION", v)
    return 1 if res["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
