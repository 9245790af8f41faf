#!/usr/bin/env python3
"""Issue 13's calibration and proportionality checks, on one real pod (Triton + agents).

    .venv/bin/python tests/autoscale/capacity.py [--models unbatched,batched] [--json OUT]

One pod serving both models of serve_models.py (statistics restricted by pytriton's access
token; the agents send it with --triton-api-header):

1. **Calibration.** A closed loop (CONCURRENCY[model] clients sending back to back, keep-alive)
   for SAT_S seconds; the saturation throughput is the completions of the last SAT_S - SAT_WARM_S
   seconds per second. Compared with the agent's `triton_capacity_rps{source="estimated"}`
   (online, from /v2/models/stats) read right after it, and with the same fit done here in Python
   from the same statistics (the contract's formula, as a cross-check). Goal: the agent's
   estimate within +-25 % of the measured throughput.
2. **Proportionality.** A second agent starts with `--capacity MODEL=<measured throughput>`
   (what a user who ran perf_analyzer would configure). Then open-loop loads at 25 %, 50 % and
   75 % of the measured throughput, both models at once, LEVEL_S seconds each, arrivals evenly spaced (a paced open
   loop: the check is whether the gauge tracks the load, so Poisson noise in a 10 s window is
   kept out of it). `triton_utilization{model}` of both agents (configured and estimated
   capacity) is averaged over the last LEVEL_S - SETTLE_S seconds of each level (the agent's
   window is 10 s). Goal: each ratio of utilizations (50/25, 75/25, 75/50) within +-15 % of the
   ratio of offered loads.

3. **Light load after saturation** (issue 22), for each batched model: a paced load of
   LIGHT_FRACTION of the measured throughput (no batch forms) for longer than the estimating
   agent's `--capacity-horizon` (HORIZON_S, short here; 300 s by default), well over one horizon
   after the saturation run. The estimate must still rest on the batch curve the saturation
   measured (`basis="fitted"`), within +-25 % of the measured throughput; an estimator that
   forgot it would fall back to the no-batching rule (about half of it for `batched`).

Prints the tables; `--json` writes every number. test_capacity.py asserts the goals.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import pathlib
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(HERE))
os.environ.setdefault("TRITON_E2E_LOG_DIR", str(ROOT / "target" / "autoscale" / "logs"))

import requests  # noqa: E402

import common  # noqa: E402
import scenarios  # noqa: E402
import serve_models  # noqa: E402
from harness import agent_has_flag, header_flag  # noqa: E402

SERVE_MODELS = HERE / "serve_models.py"
CONCURRENCY = {"unbatched": 4, "batched": 32}
SAT_S, SAT_WARM_S = 16.0, 4.0
STATS_WAIT_S = 11.0
LEVELS = (0.25, 0.50, 0.75)
LEVEL_S, SETTLE_S = 21.0, 12.0
CAL_TOL, PROP_TOL = 0.25, 0.15
LIGHT_FRACTION, HORIZON_S = 0.05, 20.0
LIGHT_S = HORIZON_S + 12.0


def log(msg: str) -> None:
    sys.stderr.write(f"[capacity {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- one pod


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


@contextlib.contextmanager
def pod(model: str, token: str, startup_delay: float = 0.0, exit_timeout: int = 30):
    """Triton serving `model` with its statistics API behind pytriton's access token."""
    args = ["--models", model, "--access-token", token, "--exit-timeout-secs", str(exit_timeout)]
    if startup_delay:
        args += ["--startup-delay", str(startup_delay)]
    with common.start_triton(script=SERVE_MODELS, extra_args=args, startup_timeout=180 + startup_delay) as t:
        yield t


@contextlib.contextmanager
def agent(triton, models: Sequence[str], token: str, extra: Sequence[str] = ()):
    with scenarios.start_agent(triton, ["--no-gpu", *header_flag(token), *extra], ready_timeout=60,
                               models=list(models)) as a:
        yield a


def gauge(ag, name: str, **labels) -> Optional[float]:
    try:
        return ag.metrics().get(name, **labels)
    except Exception:  # noqa: BLE001
        return None


def stats_fit(triton, model: str, token: str) -> Dict[str, object]:
    """The contract's estimate, computed here from /v2/models/<m>/stats: fit cost(b) = a + k b
    (least squares weighted by execution count) over the batch sizes seen; capacity =
    instances x B / cost(B) at B = min(the config's limit: the largest preferred_batch_size, else
    max_batch_size, 1 when 0; the largest batch seen); one size seen: B x cost(b) / b."""
    s = _session()
    h = {serve_models.ACCESS_HEADER: token}
    st = s.get(f"{triton.http_url}/v2/models/{model}/stats", headers=h, timeout=5).json()
    cfg = s.get(f"{triton.http_url}/v2/models/{model}/config", timeout=5).json()
    inst = sum(int(g.get("count", 1)) for g in cfg.get("instance_group") or [{"count": 1}])
    big_b = int(cfg.get("max_batch_size") or 0) or 1
    preferred = [int(b) for b in (cfg.get("dynamic_batching") or {}).get("preferred_batch_size") or [] if int(b) > 0]
    if preferred:
        big_b = min(big_b, max(preferred))
    pts = []  # (b, count, mean cost s)
    for bs in st["model_stats"][0].get("batch_stats") or []:
        n = int(bs["compute_infer"]["count"])
        if n <= 0:
            continue
        ns = sum(int(bs[k]["ns"]) for k in ("compute_input", "compute_infer", "compute_output"))
        pts.append((int(bs["batch_size"]), n, ns / n / 1e9))
    if not pts:
        return {"capacity": None, "points": []}
    big_b = min(big_b, max(b for b, _, _ in pts))
    if len(pts) == 1:
        b, _, c = pts[0]
        cost_big = big_b * c / b
        a = k = None
    else:
        w = sum(n for _, n, _ in pts)
        mb = sum(n * b for b, n, _ in pts) / w
        mc = sum(n * c for _, n, c in pts) / w
        var = sum(n * (b - mb) ** 2 for b, n, _ in pts)
        k = sum(n * (b - mb) * (c - mc) for b, n, c in pts) / var
        a = mc - k * mb
        cost_big = a + k * big_b
    return {"capacity": inst * big_b / cost_big if cost_big > 0 else None, "instances": inst, "max_batch": big_b,
            "a_ms": None if a is None else a * 1e3, "k_ms": None if k is None else k * 1e3,
            "points": [(b, n, round(c * 1e3, 2)) for b, n, c in pts]}


# --------------------------------------------------------------------------- loads


def closed_loop(triton, model: str, clients: int, duration_s: float, warm_s: float) -> Dict[str, float]:
    stop = threading.Event()
    done: List[float] = []
    fails = [0]
    lock = threading.Lock()
    url = triton.infer_url(model)
    body = common.infer_body(1.0)
    t0 = time.monotonic()

    def client():
        s = _session()
        while not stop.is_set():
            try:
                r = s.post(url, json=body, timeout=30)
                ok = r.status_code == 200
            except requests.RequestException:
                ok = False
                s = _session()
            with lock:
                if ok:
                    done.append(time.monotonic() - t0)
                else:
                    fails[0] += 1

    ths = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in ths:
        t.start()
    time.sleep(duration_s)
    stop.set()
    for t in ths:
        t.join(35)
    n = sum(1 for x in done if warm_s <= x < duration_s)
    return {"rps": n / (duration_s - warm_s), "completed": len(done), "failed": fails[0], "clients": clients}


class PacedLoad:
    """Open loop, evenly spaced arrivals at `rate` per second until stopped."""

    def __init__(self, triton, model: str, rate: float, workers: int = 64):
        self.url, self.rate = triton.infer_url(model), rate
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="paced")
        self.stop_evt = threading.Event()
        self.sent = self.ok = self.failed = 0
        self.lock = threading.Lock()
        self.tls = threading.local()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _one(self):
        s = getattr(self.tls, "s", None) or _session()
        self.tls.s = s
        try:
            r = s.post(self.url, json=common.infer_body(1.0), timeout=30)
            ok = r.status_code == 200
        except requests.RequestException:
            ok = False
            self.tls.s = None
        with self.lock:
            if ok:
                self.ok += 1
            else:
                self.failed += 1

    def _run(self):
        t0 = time.monotonic()
        i = 0
        while not self.stop_evt.is_set():
            due = t0 + i / self.rate
            d = due - time.monotonic()
            if d > 0 and self.stop_evt.wait(d):
                break
            self.pool.submit(self._one)
            self.sent += 1
            i += 1

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *_):
        self.stop_evt.set()
        self.t.join(5)
        self.pool.shutdown(wait=True)


# --------------------------------------------------------------------------- one model


def run_all(models: Sequence[str]) -> List[dict]:
    """One pod serving every model: calibrate each in turn (closed loop), then run the levels for
    all models at once (each its own paced load; utilization is per model)."""
    token = secrets.token_urlsafe(16)
    outs = {m: {"model": m, "nominal_rps": round(serve_models.nominal_capacity(m), 2),
                "loadavg_before": os.getloadavg()} for m in models}
    horizon = ["--capacity-horizon", f"{HORIZON_S:g}s"] if agent_has_flag("--capacity-horizon") else []
    with pod(",".join(models), token) as t, agent(t, models, token, horizon) as ag_est:
        for m in models:
            out = outs[m]
            out["statistics_refused"] = gauge(ag_est, "triton_sidecar_statistics_refused")
            log(f"{m}: closed loop, {CONCURRENCY[m]} clients, {SAT_S:g} s")
            out["saturation"] = closed_loop(t, m, CONCURRENCY[m], SAT_S, SAT_WARM_S)
            out["saturation_end"] = time.monotonic()
        # the agent reads the statistics every --stats-interval (10 s by default): wait for a read
        # that saw the last saturation run
        time.sleep(STATS_WAIT_S)
        for m in models:
            out = outs[m]
            out["estimated_rps"] = gauge(ag_est, "triton_capacity_rps", model=m, source="estimated")
            out["python_fit"] = stats_fit(t, m, token)
            log(f"{m}: measured {out['saturation']['rps']:.2f}/s, agent estimate {out['estimated_rps']}, "
                f"python fit {out['python_fit'].get('capacity')}")
        cap_flag = [a for m in models for a in ("--capacity", f"{m}={outs[m]['saturation']['rps']:.3f}")] \
            if agent_has_flag("--capacity") else []
        with agent(t, models, token, cap_flag) as ag_cfg:
            for m in models:
                outs[m]["configured_rps"] = gauge(ag_cfg, "triton_capacity_rps", model=m, source="configured")
                outs[m]["levels"] = []
            for frac in LEVELS:
                samples = {m: {"configured": [], "estimated": [], "offered": [], "capacity_est": []} for m in models}
                with contextlib.ExitStack() as stack:
                    loads = {m: stack.enter_context(PacedLoad(t, m, frac * outs[m]["saturation"]["rps"])) for m in models}
                    t0 = time.monotonic()
                    while time.monotonic() - t0 < LEVEL_S:
                        if time.monotonic() - t0 >= SETTLE_S:
                            for m in models:
                                sm = samples[m]
                                for key, ag in (("configured", ag_cfg), ("estimated", ag_est)):
                                    v = gauge(ag, "triton_utilization", model=m)
                                    if v is not None:
                                        sm[key].append(v)
                                v = gauge(ag_cfg, "triton_offered_load_rps", model=m)
                                if v is not None:
                                    sm["offered"].append(v)
                                v = gauge(ag_est, "triton_capacity_rps", model=m, source="estimated")
                                if v is not None:
                                    sm["capacity_est"].append(v)
                        time.sleep(1.0)
                for m in models:
                    load = loads[m]
                    lv = {"fraction": frac, "rate": load.rate, "sent": load.sent, "ok": load.ok, "failed": load.failed}
                    for key, vals in samples[m].items():
                        lv[key] = sum(vals) / len(vals) if vals else None
                        lv[key + "_n"] = len(vals)
                    outs[m]["levels"].append(lv)
                    log(f"{m}: {frac:.0%} ({load.rate:.2f}/s): utilization configured {lv['configured']}, "
                        f"estimated {lv['estimated']}, offered {lv['offered']}")
        # 3. Light load, more than one horizon after saturation, on the batched models.
        for m in models:
            if m != "batched":  # the one model of serve_models.py that batches
                continue
            rate = LIGHT_FRACTION * outs[m]["saturation"]["rps"]
            log(f"{m}: light load {rate:.2f}/s for {LIGHT_S:g} s (horizon {HORIZON_S:g} s)")
            caps, bases = [], set()
            with PacedLoad(t, m, rate) as load:
                t0 = time.monotonic()
                while time.monotonic() - t0 < LIGHT_S:
                    if time.monotonic() - t0 >= LIGHT_S - 6:
                        v = gauge(ag_est, "triton_capacity_rps", model=m, source="estimated")
                        if v is not None:
                            caps.append(v)
                        for b in ("fitted", "proportional"):
                            if gauge(ag_est, "triton_capacity_rps", model=m, source="estimated", basis=b) is not None:
                                bases.add(b)
                    time.sleep(1.0)
            since = time.monotonic() - outs[m]["saturation_end"]
            est = sum(caps) / len(caps) if caps else None
            outs[m]["light"] = {"rate": rate, "sent": load.sent, "ok": load.ok, "failed": load.failed,
                                "estimated_rps": est, "basis": sorted(bases), "horizon_s": HORIZON_S,
                                "horizon_flag": bool(horizon), "since_saturation_s": round(since, 1),
                                "ratio": None if est is None else est / outs[m]["saturation"]["rps"]}
            log(f"{m}: light load: estimate {est} ({sorted(bases)}), {since:.0f} s after saturation")
    for m in models:
        outs[m]["loadavg_after"] = os.getloadavg()
    return [outs[m] for m in models]


def ratios(levels: Sequence[dict], key: str) -> List[dict]:
    out = []
    for i in range(len(levels)):
        for j in range(i + 1, len(levels)):
            lo, hi = levels[i], levels[j]
            want = hi["rate"] / lo["rate"]
            got = hi[key] / lo[key] if hi.get(key) and lo.get(key) else None
            out.append({"pair": f"{hi['fraction']:.0%}/{lo['fraction']:.0%}", "load_ratio": want, "util_ratio": got,
                        "error": None if got is None else got / want - 1.0})
    return out


def _f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


def calibration_table(results: Sequence[dict]) -> str:
    lines = ["| model | nominal (sleep only) | measured saturation (closed loop) | agent estimate | error | python fit of the same statistics |",
             "|---|---|---|---|---|---|"]
    for r in results:
        m = r["saturation"]["rps"]
        e = r.get("estimated_rps")
        err = None if e is None else e / m - 1.0
        pf = r["python_fit"]
        lines.append(f"| {r['model']} | {r['nominal_rps']:.2f}/s | {m:.2f}/s ({r['saturation']['clients']} clients, "
                     f"{r['saturation']['failed']} failed) | {_f(e, '{:.2f}/s')} | {_f(err, '{:+.1%}')} | "
                     f"{_f(pf.get('capacity'), '{:.2f}/s')} (a {_f(pf.get('a_ms'), '{:.1f}')} ms, k {_f(pf.get('k_ms'), '{:.1f}')} ms, "
                     f"{len(pf.get('points') or [])} batch sizes) |")
    return "\n".join(lines)


def proportionality_table(results: Sequence[dict]) -> str:
    lines = ["| model | capacity | load (of measured) | offered (agent) | utilization | ratio pair | load ratio | utilization ratio | error |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for key in ("configured", "estimated"):
            rs = ratios(r["levels"], key)
            for i, lv in enumerate(r["levels"]):
                rt = rs[i] if i < len(rs) else None
                cap = r.get("configured_rps") if key == "configured" else lv.get("capacity_est")
                lines.append(
                    f"| {r['model']} | {key} {_f(cap, '{:.2f}/s')} | {lv['fraction']:.0%} ({lv['rate']:.2f}/s) | "
                    f"{_f(lv.get('offered'), '{:.2f}/s')} | {_f(lv.get(key), '{:.3f}')} | "
                    + (f"{rt['pair']} | {rt['load_ratio']:.2f} | {_f(rt['util_ratio'])} | {_f(rt['error'], '{:+.1%}')} |"
                       if rt else "| | | |"))
    return "\n".join(lines)


def light_table(results: Sequence[dict]) -> str:
    lines = ["| model | light load | horizon | since saturation | agent estimate | basis | ratio to measured saturation |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lt = r.get("light")
        if not lt:
            continue
        lines.append(f"| {r['model']} | {lt['rate']:.2f}/s ({LIGHT_FRACTION:.0%}, {lt['failed']} failed) | "
                     f"{lt['horizon_s']:g} s | {lt['since_saturation_s']:g} s | {_f(lt['estimated_rps'], '{:.2f}/s')} | "
                     f"{', '.join(lt['basis']) or '-'} | {_f(lt['ratio'], '{:.3f}')} |")
    return "\n".join(lines)


def markdown(results: Sequence[dict]) -> str:
    loads = ", ".join(f"{r['model']} {r['loadavg_before'][0]:.1f}" for r in results)
    return ("Calibration (goal: the agent's estimate within +-25 % of the measured saturation throughput):\n\n"
            + calibration_table(results)
            + "\n\nProportionality (one pod, both models at once, paced open loop; goal: each utilization ratio "
              "within +-15 % of the load ratio):\n\n" + proportionality_table(results)
            + "\n\nLight load more than one horizon after saturation (goal: within +-25 % of the measured "
              "throughput, on the fitted batch curve):\n\n" + light_table(results)
            + f"\n\n1-minute load average before: {loads} (2 CPUs, shared with other builds)\n")


def write_docs(md: str) -> None:
    path = ROOT / "docs" / "autoscaling.md"
    begin, end = "<!-- capacity-results:begin -->", "<!-- capacity-results:end -->"
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path} lacks the {begin} ... {end} markers")
    pre, rest = text.split(begin, 1)
    _, post = rest.split(end, 1)
    path.write_text(pre + begin + "\n\n" + md + "\n" + end + post)
    log(f"wrote the capacity-results block of {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="unbatched,batched")
    ap.add_argument("--json", type=pathlib.Path)
    ap.add_argument("--docs", action="store_true", help="write both tables into docs/autoscaling.md (capacity-results block)")
    ap.add_argument("--report-only", type=pathlib.Path, metavar="JSON", help="print (and --docs) from a saved --json")
    a = ap.parse_args(argv)
    if a.report_only:
        results = json.loads(a.report_only.read_text())
        md = markdown(results)
        print(md)
        if a.docs:
            write_docs(md)
        return 0
    t0 = time.monotonic()
    results = run_all([m for m in a.models.split(",") if m])
    print(f"load average before/after: " + "; ".join(
        f"{r['model']} {r['loadavg_before'][0]:.2f}/{r['loadavg_after'][0]:.2f}" for r in results))
    print("\nCalibration (goal: agent estimate within +-25 % of the measured saturation throughput)\n")
    print(calibration_table(results))
    print("\nProportionality (one pod, paced open loop; goal: each utilization ratio within +-15 % of the load ratio)\n")
    print(proportionality_table(results))
    print("\nLight load more than one horizon after saturation (goal: within +-25 % of the measured throughput)\n")
    print(light_table(results))
    print(f"\ntook {time.monotonic() - t0:.0f} s")
    if a.docs:
        write_docs(markdown(results))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
