#!/usr/bin/env python3
"""Compare a rendered.json (the oracle's prediction) with a real.json (replay_trace.py).

    .venv/bin/python tests/e2e/replay_compare.py --rendered rendered.json --real real.json [--json]
    .venv/bin/python tests/e2e/replay_compare.py --stub-render trace.json > rendered.json

Formats: /work/spec/oracle-trace.md (summary in tests/e2e/README.md, "Oracle replay").

    .venv/bin/python tests/e2e/replay_compare.py --actual-trace trace.json real.json > actual.json
    .venv/bin/python tests/e2e/replay_compare.py --rendered rendered.json --real real.json --dense dense.json

The checks (compare()'s docstring; the numbers in Tol): the renderer is run a second time
on the trace as really replayed (measured send times, a 5 ms poll grid: "dense"), and each
real poll must match the renderer's counters within a time window around the GET's
midpoint, with per-request allowances for the time counters.

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
    """README.md "Oracle replay" gives the measurements behind each number."""

    window_s: float = 0.03  # counts and pending may match the renderer's anywhere in [t - w, t + w]
    drift: float = 0.15  # ... w = window_s + drift * (how long the model has been busy without a
    # break, in the render or in the replay, whichever is longer)
    count: int = 0  # ... then +- this many requests
    pending_rel: float = 0.2  # pending: +- floor(this * the window's largest rendered pending)
    pending_over: int = 1  # ... and real may read this many more (never fewer)
    compute_ms_per_success: float = 6.0  # compute_infer_us: +- this much per completed request
    compute_ms: float = 50.0  # ... plus this much (one stalled execution)
    queue_rel: float = 0.35  # queue_us: +- this fraction of the rendered sum
    queue_ms_per_success: float = 1.0  # ... plus this much per completed request
    queue_ms: float = 30.0  # ... plus this much
    # near saturation (peak offered load nc_lo..nc_hi of capacity over nc_span_s), see
    # near_critical_since: from then on queue_us is not compared, nor are counts and pending
    # while that model is busy (they must agree again once its queue has drained)
    nc_lo: float = 0.65
    nc_hi: float = 1.25
    nc_span_s: float = 4.0


TOL = Tol()


def stub_trace(seed: int, duration_s: float = 12.0) -> dict:
    """A hand-made replay-profile trace (development stand-in for `oracle trace --profile
    replay`): fast 20 ms / slow 150 ms / broken 40 ms, max_batch 1, 1 instance; Poisson
    arrivals at ~40-50 % utilization, a burst per model (8 slow at 2.5 s, 15 fast at 4 s,
    6 failing then 4 good broken requests at 7-8 s), half of broken's requests fail; polls
    every 0.5 s."""
    import random

    rnd = random.Random(seed)
    models = [
        {"name": "fast", "instances": 1, "max_batch": 1, "cost_a_ms": 20.0, "cost_k_ms": 0.0},
        {"name": "slow", "instances": 1, "max_batch": 1, "cost_a_ms": 150.0, "cost_k_ms": 0.0},
        {"name": "broken", "instances": 1, "max_batch": 1, "cost_a_ms": 40.0, "cost_k_ms": 0.0},
    ]
    reqs = []

    def poisson(m, rate, t0, t1, pfail):
        t = t0
        while True:
            t += rnd.expovariate(rate)
            if t >= t1:
                return
            reqs.append((round(t, 4), m, rnd.random() < pfail))

    end = duration_s - 1.0
    poisson("fast", 10, 0.1, end, 0.0)
    reqs += [(round(4.0 + 0.003 * i, 4), "fast", False) for i in range(15)]
    poisson("slow", 2.5, 0.1, end, 0.0)
    reqs += [(round(2.5 + 0.01 * i, 4), "slow", False) for i in range(8)]
    poisson("broken", 5, 0.1, end, 0.5)
    reqs += [(round(7.0 + 0.005 * i, 4), "broken", True) for i in range(6)]
    reqs += [(round(8.0 + 0.005 * i, 4), "broken", False) for i in range(4)]
    reqs.sort()
    return {
        "seed": seed,
        "duration_s": duration_s,
        "models": models,
        "requests": [{"id": i, "model": m, "arrival_s": a, "fail": f} for i, (a, m, f) in enumerate(reqs)],
        "polls_s": [round(0.5 * k, 3) for k in range(1, int(duration_s * 2) + 1)],
    }


def stub_render(trace: dict, pending_includes_executing: bool = False) -> dict:
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
                "pending": sum(1 for e in ev if e[0] <= t < (e[2] if pending_includes_executing else e[1])),
            }
        polls.append({"t_s": t, "models": models})
    return {"polls": polls}


def realized_costs(real: dict, min_success: int = 5) -> Dict[str, float]:
    """Per model, how long a good execution really kept the instance busy during the replay
    (ms): Triton's own request_duration - queue per success (compute input + infer + output),
    from the last poll. Models with fewer than `min_success` successes are left out."""
    last = real["polls"][-1]["models"]
    extra = real["replay"]["extra"][-1]["models"]
    out = {}
    for m, c in last.items():
        n = c["success"]
        if n >= min_success:
            out[m] = (extra[m]["request_duration_us"] - c["queue_us"]) / n / 1000.0
    return out


def actual_trace(trace: dict, real: dict, step: float = 0.005, margin: float = 0.5,
                 realized: bool = True) -> dict:
    """The trace as it was really replayed:
    * every arrival_s replaced by the measured send time (the client's send lag drops out);
    * with `realized`, each model's cost_a_ms replaced by the execution time Triton really
      measured (realized_costs; cost_k_ms 0: the replay profile is unbatched). The replay's
      models are calibrated to last cost_a_ms, but the Python backend's overhead moves with
      the machine's load by a few ms, and near saturation a few ms per execution decide
      whether a queue builds: the renderer is checked on what happened, not on the testbed's
      accuracy (the nominal comparison is reported beside it);
    * polls_s a dense grid (every `step` s up to the last real poll + `margin`), so the
      renderer's counters can be read at any instant (each real GET's midpoint +- window)."""
    sent = {r["id"]: r["sent_s"] for r in real["replay"]["requests"]}
    reqs = []
    for r in trace["requests"]:
        if sent.get(r["id"]) is None:
            raise ValueError(f"request {r['id']} was never sent")
        reqs.append(dict(r, arrival_s=round(float(sent[r["id"]]), 6)))
    reqs.sort(key=lambda r: (r["arrival_s"], r["id"]))
    models = trace["models"]
    if realized:
        rc_ = realized_costs(real)
        models = [dict(m, cost_a_ms=round(rc_[m["name"]], 3), cost_k_ms=0.0) if m["name"] in rc_ else m
                  for m in models]
    end = max(p["t_s"] for p in real["polls"]) + margin
    n = int(end / step) + 1
    return dict(trace, models=models, requests=reqs, polls_s=[round(i * step, 6) for i in range(1, n + 1)])


class Dense:
    """Rendered counters on the dense grid of actual_trace(): R(t) = the value at the last
    grid point <= t (counters change at events; the grid is finer than any poll jitter)."""

    def __init__(self, dense: dict, actual: Optional[dict] = None):
        import bisect

        self.t = [float(p["t_s"]) for p in dense["polls"]]
        self.polls = dense["polls"]
        # busy periods: a model is idle at a grid point when every request that has arrived
        # has completed (success + failure); last_idle[m][i] = the last idle grid time <= t[i]
        self.last_idle: Dict[str, List[float]] = {}
        if actual is not None:
            for name in dense["polls"][0]["models"]:
                arr = sorted(float(r["arrival_s"]) for r in actual["requests"] if r["model"] == name)
                li, last = [], 0.0
                for tt, p in zip(self.t, self.polls):
                    c = p["models"][name]
                    if bisect.bisect_right(arr, tt) == c["success"] + c["failure"]:
                        last = tt
                    li.append(last)
                self.last_idle[name] = li

    def _idx(self, t: float) -> int:
        import bisect

        return max(0, bisect.bisect_right(self.t, t + 1e-9) - 1)

    def at(self, t: float, model: str, field: str) -> float:
        return float(self.polls[self._idx(t)]["models"][model][field])

    def busy_age(self, t: float, model: str) -> float:
        """How long the model has been busy without a break at t in the render (0 if idle)."""
        if model not in self.last_idle:
            return 0.0
        return max(0.0, t - self.last_idle[model][self._idx(t)])

    def span(self, t0: float, t1: float, model: str, field: str) -> tuple:
        i0, i1 = self._idx(t0), self._idx(t1)
        vals = [float(self.polls[i]["models"][model][field]) for i in range(i0, i1 + 1)]
        return min(vals), max(vals)


def real_busy_age(real: dict, model: str, t: float) -> float:
    """How long the model had been busy without a break at t in the replay, as the client saw
    it: t minus the last instant <= t at which every request sent to it had been answered."""
    reqs = [(r["sent_s"], r["done_s"]) for r in real.get("replay", {}).get("requests", [])
            if r["model"] == model and r["sent_s"] is not None and r["sent_s"] <= t]
    if not reqs:
        return 0.0

    def idle(tau):
        return all(d is not None and d <= tau for s_, d in reqs if s_ <= tau)

    if idle(t):
        return 0.0
    cands = sorted({d for _, d in reqs if d is not None and d <= t}, reverse=True)
    for tau in cands:
        if idle(tau):
            return t - tau
    return t - min(s_ for s_, _ in reqs)  # busy since its first request


def near_critical_since(actual: Optional[dict], model: str, tol: "Tol") -> Optional[float]:
    """When the model's offered load came near its capacity, if its peak stayed near it.
    rho(t) = arrivals in (t - nc_span_s, t] times the (realized) execution time / nc_span_s.
    If the peak of rho is in [nc_lo, nc_hi], the model is near-critical from the first t
    with rho >= nc_lo (minus the span). Below, its queues are short; well above, its queue
    grows at a steady, predictable rate; near 1 the queue's length is a random walk driven
    by the execution-time jitter (a few ms per 20 ms execution here), which no
    deterministic render reproduces."""
    if actual is None:
        return None
    spec = next((m for m in actual["models"] if m["name"] == model), None)
    if spec is None:
        return None
    cost = (float(spec["cost_a_ms"]) + float(spec.get("cost_k_ms", 0.0))) / 1000.0 / int(spec.get("instances", 1))
    arr = sorted(float(r["arrival_s"]) for r in actual["requests"] if r["model"] == model)
    if not arr:
        return None
    import bisect

    rhos = []
    t = 0.0
    while t <= arr[-1] + tol.nc_span_s:
        n = bisect.bisect_right(arr, t) - bisect.bisect_right(arr, t - tol.nc_span_s)
        rhos.append((t, n * cost / tol.nc_span_s))
        t += 0.05
    peak = max(r for _, r in rhos)
    if not (tol.nc_lo <= peak <= tol.nc_hi):
        return None
    first = next(t for t, r in rhos if r >= tol.nc_lo)
    return round(max(0.0, first - tol.nc_span_s), 3)


def conservation(real: dict, violations: List[dict], summary: Dict[str, dict], lead_s: float = 0.05) -> None:
    """Triton's own bookkeeping, without the renderer: every request sent has either
    completed (success + failure), or is pending, or is executing (at most `instances`, 1 in
    the replay profile). At each GET (polls and samples): a_lo = requests sent more than
    `lead_s` before the GET started (surely arrived), a_hi = sent before it ended; then
    a_lo - 1 <= completed + pending <= a_hi. Where a_lo == a_hi and the model is busy
    (a_lo > completed), gap = a_lo - completed - pending is exactly the number executing:
    1 if pending excludes the executing request, 0 if it counted it; `executing_gap` in the
    summary counts both."""
    reqs = real.get("replay", {}).get("requests", [])
    if not reqs:
        return
    sent: Dict[str, List[float]] = {}
    for r in reqs:
        if r["sent_s"] is not None:
            sent.setdefault(r["model"], []).append(float(r["sent_s"]))
    for v in sent.values():
        v.sort()
    import bisect

    reads = []
    gets = real["replay"].get("poll_get", [])
    for p, g in zip(real["polls"], gets):
        reads.append(((g["start_s"], g["end_s"]),
                      {m: (c["success"] + c["failure"], c["pending"]) for m, c in p["models"].items()}))
    for smp in real["replay"].get("pending_samples", []):
        if "completed" in smp:
            reads.append((tuple(smp["get"]), {m: (smp["completed"][m], smp["pending"][m]) for m in smp["pending"]}))
    for (a, b), per in reads:
        for m, (done, pend) in per.items():
            if m not in summary:
                continue
            arr = sent.get(m, [])
            a_lo, a_hi = bisect.bisect_right(arr, a - lead_s), bisect.bisect_right(arr, b)
            s = summary[m]
            gaps = s.setdefault("executing_gap", {})
            if not (a_lo - 1 <= done + pend <= a_hi):
                violations.append({"get_s": [a, b], "model": m, "field": "conservation", "completed": done,
                                   "pending": pend, "sent_range": [a_lo, a_hi]})
            if a_lo == a_hi and a_lo > done:
                g = str(a_lo - done - pend)
                gaps[g] = gaps.get(g, 0) + 1
    # A busy read with nothing executing happens in the hand-over between two executions (the
    # next request is still pending for a moment); if pending counted the executing request,
    # every busy read would show 0.
    for m, s in summary.items():
        g = s.get("executing_gap", {})
        if g.get("0", 0) > g.get("1", 0):
            violations.append({"model": m, "field": "conservation (executing counted as pending)", "gaps": g})


def rendered_executing(D: "Dense", actual: dict, violations: List[dict], summary: Dict[str, dict],
                       step_s: float = 0.05) -> None:
    """The renderer's pending, held to what real Triton shows (conservation()'s
    `executing_gap`: a busy model always has exactly one request executing, not pending):
    on the dense render every `step_s`, executing = arrived - completed - pending must be 0
    when the model is idle and between 1 and `instances` when it is busy."""
    import bisect

    inst = {m["name"]: int(m.get("instances", 1)) for m in actual["models"]}
    arr = {m: sorted(float(r["arrival_s"]) for r in actual["requests"] if r["model"] == m) for m in inst}
    k = max(1, int(round(step_s / max(1e-9, (D.t[1] - D.t[0]) if len(D.t) > 1 else step_s))))
    for i in range(0, len(D.t), k):
        t = D.t[i]
        for m, c in D.polls[i]["models"].items():
            if m not in summary or m not in arr:
                continue
            busy = bisect.bisect_right(arr[m], t) - c["success"] - c["failure"]
            exe = busy - c["pending"]
            s = summary[m]
            s["rendered_reads"] = s.get("rendered_reads", 0) + 1
            if not (0 <= exe <= inst[m]) or (busy > 0 and exe < 1):
                s["rendered_executing_off"] = s.get("rendered_executing_off", 0) + 1
                if s["rendered_executing_off"] <= 5:
                    violations.append({"render_t_s": t, "model": m, "field": "pending (rendered executing)",
                                       "arrived_not_completed": busy, "pending": c["pending"]})


def compare(rendered: dict, real: dict, tol: Tol = TOL, dense: Optional[dict] = None,
            actual: Optional[dict] = None, trace: Optional[dict] = None) -> dict:
    """
    * `summary` (the report's table): rendered.json (the trace's nominal arrivals, read at
      polls_s) against real.json, poll by poll: max |count diff|, max relative queue /
      compute difference. Measured figures, not checks.
    * With `dense` (the renderer's output for actual_trace()): the checks. For each poll at
      its measured midpoint t and each model:
        - success, failure, exec_count in [R(t - window), R(t + window)] +- tol.count;
        - pending in [min - k, max + k + pending_over] of R over [t - window, t + window],
          k = floor(pending_rel * max) (0 while the rendered queue is under 5): one more
          request may read pending than rendered (an execution that started late), never
          one fewer -- that is what "pending counts the executing request" would look like;
        - compute_infer_us in [R(t - window), R(t + window)] +- (compute_ms_per_success * n
          + compute_ms);
        - queue_us in [R(t - window) * (1 - queue_rel), R(t + window) * (1 + queue_rel)]
          +- (queue_ms_per_success * n + queue_ms),
      n = the real success count at that poll; and, per model, what the run needed: the
      smallest window holding every count and pending (`shift_needed_ms`), the compute
      excess per success beyond compute_ms, the queue's relative excess beyond the absolute
      parts;
      and the replay's extra pending samples between the polls, with the pending rule.
      A model whose offered load comes near its capacity (near_critical_since) is not
      compared on queue_us from then on, nor on counts and pending while it is busy.
    * conservation(): Triton's bookkeeping on the real reads alone (no renderer), and
      rendered_executing(): the renderer's pending held to what those reads show.
    * Without `dense`: the same checks with window 0 on rendered.json itself.
    """
    rp, qp = rendered["polls"], real["polls"]
    if len(rp) != len(qp):
        raise ValueError(f"rendered has {len(rp)} polls, real {len(qp)}")
    violations: List[dict] = []
    summary: Dict[str, dict] = {}
    D = Dense(dense, actual) if dense is not None else None
    nc_since: Dict[str, Optional[float]] = {}
    for i, (r, q) in enumerate(zip(rp, qp)):
        t = float(q["t_s"])
        for model in sorted(set(r["models"]) | set(q["models"])):
            rm, qm = r["models"].get(model), q["models"].get(model)
            if rm is None or qm is None:
                violations.append({"poll": i, "t_s": t, "model": model, "field": "*",
                                   "why": "model missing in " + ("rendered" if rm is None else "real")})
                continue
            s = summary.setdefault(model, {"max_abs_count": 0, "max_abs_count_at": None, "max_abs_pending": 0,
                                           "max_rel_queue": 0.0, "max_rel_compute": 0.0,
                                           "max_abs_queue_ms": 0.0, "max_abs_compute_ms": 0.0,
                                           "shift_needed_ms": 0.0, "queue_rel_needed": 0.0,
                                           "compute_ms_per_success_needed": 0.0, "polls_off_nominal": 0,
                                           "max_busy_age_s": 0.0, "max_window_ms": 0.0, "drift_needed": 0.0})
            # -- nominal figures (rendered.json vs real.json)
            off = False
            for f in COUNT_FIELDS + ("pending",):
                d = abs(int(rm[f]) - int(qm[f]))
                off |= d > 0
                if f == "pending":
                    s["max_abs_pending"] = max(s["max_abs_pending"], d)
                elif d > s["max_abs_count"]:
                    s["max_abs_count"], s["max_abs_count_at"] = d, f"{f}@{t:.2f}s"
            s["polls_off_nominal"] += off
            for f in TIME_FIELDS:
                a, b = float(rm[f]), float(qm[f])
                d, scale = abs(a - b), max(abs(a), abs(b))
                key = "queue" if f == "queue_us" else "compute"
                s[f"max_abs_{key}_ms"] = max(s[f"max_abs_{key}_ms"], d / 1000)
                if scale >= 20_000:  # a relative figure means something only above one request's jitter
                    s[f"max_rel_{key}"] = max(s[f"max_rel_{key}"], d / scale)

            # -- checks: the window grows with the time the model has been busy without a
            # break (a queue's completions drift by the accumulated execution-time error)
            age = max(D.busy_age(t, model), real_busy_age(real, model, t)) if D is not None else 0.0
            w = tol.window_s + tol.drift * age if D is not None else 0.0
            s["max_busy_age_s"] = max(s["max_busy_age_s"], age)
            s["max_window_ms"] = max(s["max_window_ms"], w * 1000)
            if model not in nc_since:
                # from the trace as generated (nominal costs): the same models are skipped
                # in every run of a seed, whatever the machine's load did to the execution times
                nc_since[model] = near_critical_since(trace if trace is not None else actual, model, tol)
                s["near_critical_from_s"] = nc_since[model]
            nc = nc_since[model]
            skip_counts = nc is not None and t >= nc and age > 0
            skip_queue = nc is not None and t >= nc
            s["checks_skipped"] = s.get("checks_skipped", 0) + 4 * skip_counts + skip_queue

            def R(tt, f):
                return D.at(tt, model, f) if D is not None else float(rm[f])

            def Rspan(f):
                return D.span(t - w, t + w, model, f) if D is not None else (float(rm[f]), float(rm[f]))

            for f in COUNT_FIELDS + ("pending",):
                if skip_counts:
                    break
                v = float(qm[f])
                if f == "pending":
                    lo, hi = Rspan(f)
                    c = int(tol.pending_rel * hi)  # 0 while the rendered queue is short
                else:
                    lo, hi = R(t - w, f), R(t + w, f)
                    c = tol.count
                over = tol.pending_over if f == "pending" else 0
                if not (lo - c <= v <= hi + c + over):
                    violations.append({"poll": i, "t_s": t, "model": model, "field": f, "real": v,
                                       "allowed": [lo - c, hi + c + over], "rendered_nominal": rm[f]})
                if D is not None:  # the smallest window that holds the real value (tol 0)
                    for sh in [k * 0.005 for k in range(0, 201)]:
                        lo0, hi0 = (D.span(t - sh, t + sh, model, f) if f == "pending"
                                    else (D.at(t - sh, model, f), D.at(t + sh, model, f)))
                        if lo0 <= v <= hi0:
                            break
                    else:
                        sh = float("inf")
                    s["shift_needed_ms"] = max(s["shift_needed_ms"], sh * 1000)
                    if sh > tol.window_s:
                        s["drift_needed"] = max(s["drift_needed"],
                                                (sh - tol.window_s) / age if age > 0 else float("inf"))
            n = max(1.0, float(qm["success"]))
            for f in TIME_FIELDS:
                if f == "queue_us" and skip_queue:
                    continue
                v = float(qm[f])
                lo, hi = R(t - w, f), R(t + w, f)
                if f == "queue_us":
                    slack = (tol.queue_ms_per_success * n + tol.queue_ms) * 1000
                    lo_t, hi_t = lo * (1 - tol.queue_rel) - slack, hi * (1 + tol.queue_rel) + slack
                else:
                    slack = (tol.compute_ms_per_success * n + tol.compute_ms) * 1000
                    lo_t, hi_t = lo - slack, hi + slack
                if not (lo_t <= v <= hi_t):
                    violations.append({"poll": i, "t_s": t, "model": model, "field": f, "real": round(v),
                                       "allowed": [round(lo_t), round(hi_t)], "rendered_nominal": round(float(rm[f])),
                                       "real_success": qm["success"]})
                # what this poll needed: compute -> ms per success; queue -> the relative part,
                # given the per-success part
                excess = max(0.0, v - hi, lo - v)
                if f == "compute_infer_us":
                    per = max(0.0, excess / 1000 - tol.compute_ms) / n
                    s["compute_ms_per_success_needed"] = max(s["compute_ms_per_success_needed"], per)
                else:
                    rest = max(0.0, excess - (tol.queue_ms_per_success * n + tol.queue_ms) * 1000)
                    base = hi if v > hi else lo
                    need = 0.0 if rest == 0 else (rest / base if base > 0 else float("inf"))
                    s["queue_rel_needed"] = max(s["queue_rel_needed"], need)
    # -- the extra pending samples between the polls (replay_trace.py), same rule as at a poll
    samples = real.get("replay", {}).get("pending_samples", []) if D is not None else []
    for smp in samples:
        t = float(smp["t_s"])
        for model, v in smp["pending"].items():
            if model not in summary:
                continue
            age = max(D.busy_age(t, model), real_busy_age(real, model, t))
            nc = nc_since.get(model)
            if nc is not None and t >= nc and age > 0:
                continue
            w = tol.window_s + tol.drift * age
            lo, hi = D.span(t - w, t + w, model, "pending")
            c = int(tol.pending_rel * hi)
            s = summary[model]
            s["pending_samples"] = s.get("pending_samples", 0) + 1
            if not (lo - c <= v <= hi + c + tol.pending_over):
                s["pending_samples_off"] = s.get("pending_samples_off", 0) + 1
                violations.append({"sample_t_s": t, "model": model, "field": "pending (sample)", "real": v,
                                   "allowed": [lo - c, hi + c + tol.pending_over]})
    conservation(real, violations, summary)
    if D is not None and actual is not None:
        rendered_executing(D, actual, violations, summary)
    return {"violations": violations, "summary": summary, "tol": dataclasses.asdict(tol), "dense": D is not None}


def table(summary: Dict[str, dict], seed=None) -> str:
    lines = [
        "| seed | model | max abs count diff (at) | max abs pending diff | polls off | max rel queue diff (abs ms) "
        "| max rel compute diff (abs ms) | window needed (ms) | drift needed | compute needed (ms/success) "
        "| queue rel needed | longest busy (s) | pending samples off | busy reads: executing = 1 / 0 "
        "| near-critical from (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, s in summary.items():
        lines.append(
            f"| {seed} | {m} | {s['max_abs_count']} ({s['max_abs_count_at'] or '-'}) | {s['max_abs_pending']} | "
            f"{s['polls_off_nominal']} | {s['max_rel_queue']:.1%} ({s['max_abs_queue_ms']:.1f}) | "
            f"{s['max_rel_compute']:.1%} ({s['max_abs_compute_ms']:.1f}) | {s['shift_needed_ms']:.0f} | "
            f"{s['drift_needed']:.2f} | {s['compute_ms_per_success_needed']:.1f} | {s['queue_rel_needed']:.1%} | "
            f"{s['max_busy_age_s']:.1f} | {s.get('pending_samples_off', 0)}/{s.get('pending_samples', 0)} | "
            f"{s.get('executing_gap', {}).get('1', 0)} / {s.get('executing_gap', {}).get('0', 0)} | "
            f"{s.get('near_critical_from_s') if s.get('near_critical_from_s') is not None else '-'} |"
        )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rendered")
    ap.add_argument("--real")
    ap.add_argument("--dense", help="the renderer's output for --actual-trace's trace")
    ap.add_argument("--actual", help="--actual-trace's trace (busy periods widen the window)")
    ap.add_argument("--trace", help="the trace as generated (near-critical models, by their nominal costs)")
    ap.add_argument("--stub-render", metavar="TRACE")
    ap.add_argument("--actual-trace", nargs=2, metavar=("TRACE", "REAL"),
                    help="print the trace with the measured send times and a dense poll grid")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.stub_render:
        with open(a.stub_render) as f:
            json.dump(stub_render(json.load(f)), sys.stdout, indent=1)
        return 0
    if a.actual_trace:
        with open(a.actual_trace[0]) as f, open(a.actual_trace[1]) as g:
            json.dump(actual_trace(json.load(f), json.load(g)), sys.stdout)
        return 0
    with open(a.rendered) as f:
        rendered = json.load(f)
    with open(a.real) as f:
        real = json.load(f)
    dense = actual = trace = None
    if a.trace:
        with open(a.trace) as f:
            trace = json.load(f)
    if a.actual:
        with open(a.actual) as f:
            actual = json.load(f)
    if a.dense:
        with open(a.dense) as f:
            dense = json.load(f)
    res = compare(rendered, real, dense=dense, actual=actual, trace=trace)
    if a.json:
        json.dump(res, sys.stdout, indent=1)
    else:
        print(table(res["summary"], real.get("replay", {}).get("seed")))
        for v in res["violations"]:
            print("VIOLATION", v)
    return 1 if res["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
