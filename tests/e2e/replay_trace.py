#!/usr/bin/env python3
"""Replay an oracle request trace against a real Triton 2.51 and record its counters.

    .venv/bin/python tests/e2e/replay_trace.py --trace trace.json --out real.json

The trace and real.json formats are fixed in /work/spec/oracle-trace.md (a copy of the
essentials is in tests/e2e/README.md, "Oracle replay").

What it does:

1. Starts a real tritonserver (``common.start_triton`` with ``serve_triton.py
   --replay-models``) serving exactly the trace's models: sleep-based, max_batch_size
   from the trace (1 in the replay profile, dynamic batcher with 0 queue delay, so one
   request per execution), ``instances`` instances, sleeping ``cost_a_ms + cost_k_ms *
   batch`` per execution; an execution whose input ``x`` is negative raises (Triton
   counts it as a failure with reason BACKEND).
2. Warm-up: ``--warmup`` requests per model (default 2, one of them failing), one at a
   time. Calibration (``calibrate``; off with ``--no-calibrate``): the Python backend
   path keeps an instance busy a few ms longer than the model's sleep (measured here:
   ~4-9 ms for a good request, ~8-17 ms for a failing one, more under CPU contention);
   the models then sleep that much less, so that an execution lasts the trace's cost.
   Then a baseline scrape of /metrics. Every counter in real.json is the page's value
   minus this baseline, so the counters start at 0 at the origin as the renderer
   assumes. ``pending`` is a gauge and is reported as read.
3. Time origin t=0: ``--lead`` seconds (0.5) after the baseline. Each request gets its
   own thread, started ~0.25 s before its ``arrival_s``; the thread opens its own
   loopback connection, sleeps until ``arrival_s`` and sends (so no request waits for
   an earlier one still in flight). Failing requests send ``x = -1``, others ``x = 1``.
4. A poller thread GETs /metrics at each ``polls_s`` (keep-alive connection to the
   metrics port, which is not the inference port) and records the midpoint of the GET.
   Between the polls it also reads the pending gauge every ``--sample-every`` s (0.1),
   kept under ``replay.pending_samples``.
5. After the last poll (and every request's answer) writes real.json:
   ``{"polls": [{"t_s", "models": {m: {success, failure, exec_count, queue_us,
   compute_infer_us, pending}}}]}`` plus diagnostics the spec does not need under
   ``"replay"`` (per-request send lag and outcome, the baseline, the measured per-poll
   GET duration, extra counters: inference_count, request_duration_us,
   compute_input_us, compute_output_us).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from common import by_model, fetch_text, log, parse_metrics, start_triton  # noqa: E402

import requests  # noqa: E402

# real.json field -> Triton 2.51 family (summed over version, and over reason for failures)
FIELDS = {
    "success": "nv_inference_request_success",
    "failure": "nv_inference_request_failure",
    "exec_count": "nv_inference_exec_count",
    "queue_us": "nv_inference_queue_duration_us",
    "compute_infer_us": "nv_inference_compute_infer_duration_us",
    "pending": "nv_inference_pending_request_count",
}
EXTRA_FIELDS = {
    "inference_count": "nv_inference_count",
    "request_duration_us": "nv_inference_request_duration_us",
    "compute_input_us": "nv_inference_compute_input_duration_us",
    "compute_output_us": "nv_inference_compute_output_duration_us",
}
GAUGES = {"pending"}


def counters(text: str, models: List[str]) -> Dict[str, Dict[str, float]]:
    samples = parse_metrics(text)
    out: Dict[str, Dict[str, float]] = {m: {} for m in models}
    for field, fam in {**FIELDS, **EXTRA_FIELDS}.items():
        per = by_model(samples, fam)
        for m in models:
            out[m][field] = per.get(m, 0.0)
    return out


def _body(fail: bool) -> bytes:
    v = -1.0 if fail else 1.0
    return json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [v]}]}).encode()


def _post(port: int, model: str, fail: bool, timeout: float = 120.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", f"/v2/models/{model}/infer", body=_body(fail), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


class _Request(threading.Thread):
    """One trace request: connect early, send at the origin + arrival_s, record the answer."""

    def __init__(self, req: dict, port: int, origin: float, connect_ahead: float = 0.25):
        super().__init__(daemon=True, name=f"req-{req['id']}")
        self.req, self.port, self.origin, self.connect_ahead = req, port, origin, connect_ahead
        self.sent: Optional[float] = None
        self.done: Optional[float] = None
        self.status: Optional[int] = None
        self.error: Optional[str] = None

    def run(self):
        due = self.origin + float(self.req["arrival_s"])
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        try:
            conn.connect()
            with contextlib.suppress(Exception):
                import socket

                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            body = _body(bool(self.req.get("fail")))
            while True:  # sleep until due; the last ms spinning on short sleeps
                left = due - time.monotonic()
                if left <= 0:
                    break
                time.sleep(left - 0.002 if left > 0.004 else left / 2)
            self.sent = time.monotonic()
            conn.request("POST", f"/v2/models/{self.req['model']}/infer", body=body,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            self.status = r.status
        except Exception as e:  # noqa: BLE001 - recorded, checked by the caller
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.done = time.monotonic()
            conn.close()


def _cost_ms(m: dict, batch: int = 1) -> float:
    return float(m["cost_a_ms"]) + float(m.get("cost_k_ms", 0.0)) * batch


def _burst(port: int, name: str, fail: bool, k: int) -> List[float]:
    """k requests sent together (connections opened first, released by one event); returns
    their answer times, sorted."""
    go = threading.Event()
    done: List[float] = []
    errors: List[str] = []

    def one():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            conn.connect()
            go.wait(10)
            conn.request("POST", f"/v2/models/{name}/infer", body=_body(fail), headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != (500 if fail else 200):
                errors.append(f"HTTP {r.status}")
            done.append(time.monotonic())
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            conn.close()

    ths = [threading.Thread(target=one, daemon=True) for _ in range(k)]
    for t in ths:
        t.start()
    time.sleep(0.05)  # let every thread connect
    go.set()
    for t in ths:
        t.join(120)
    if errors:
        raise RuntimeError(f"calibration burst {name} fail={fail}: {errors[:3]}")
    return sorted(done)


def calibrate(trace: dict, handle, offsets_path: Optional[str], k: int = 8, rounds: int = 2) -> dict:
    """Measure, per model and path (ok / fail), how long one execution keeps the instance
    busy beyond its sleep when requests queue back to back -- the Python backend's path:
    stub, shared memory, ZeroMQ, pytriton, the next request's hand-over, and for a failure
    the exception's traceback and logs. Write those offsets to `offsets_path` (the models
    then sleep that much less), then measure again what is left.

    Per model (all models at once, as in a replay) and path: k requests sent together; they
    run back to back, so busy = (last answer - first answer) / (k - 1) (the client's own
    jitter on each answer time is divided by k - 1); the mean of `rounds` rounds. An offset is capped at the cost (a sleep
    cannot be negative); the rest is reported as uncompensated.
    """
    port = handle.http_port

    def measure(fail: bool) -> Dict[str, float]:
        res: Dict[str, List[float]] = {}

        def run_one(n):
            res[n] = _burst(port, n, fail, k)

        ths = [threading.Thread(target=run_one, args=(m["name"],), daemon=True) for m in trace["models"]]
        for t in ths:
            t.start()
        for t in ths:
            t.join(180)
        return {m["name"]: (res[m["name"]][-1] - res[m["name"]][0]) * 1000 / (k - 1) - _cost_ms(m)
                for m in trace["models"]}

    if offsets_path is not None:  # measure the bare overhead: no offsets while measuring
        with contextlib.suppress(FileNotFoundError):
            os.remove(offsets_path)
    out: dict = {"k": k, "rounds": rounds, "before_busy_minus_cost_ms": {}, "offsets_ms": {},
                 "after_busy_minus_cost_ms": {}}
    oks, fls = [], []
    for _ in range(rounds):
        oks.append(measure(False))
        fls.append(measure(True))
    ok = {n: statistics.mean(r[n] for r in oks) for n in oks[0]}
    fl = {n: statistics.mean(r[n] for r in fls) for n in fls[0]}
    for m in trace["models"]:
        n, cost = m["name"], _cost_ms(m)
        out["before_busy_minus_cost_ms"][n] = {"ok": round(ok[n], 3), "fail": round(fl[n], 3)}
        out["offsets_ms"][n] = {
            "ok": round(min(cost, max(0.0, ok[n])), 3),
            "fail": round(min(cost, max(0.0, fl[n])), 3),
            "uncompensated_ok": round(max(0.0, ok[n] - cost), 3),
            "uncompensated_fail": round(max(0.0, fl[n] - cost), 3),
        }
    if offsets_path is None:
        return out
    tmp = offsets_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({n: {"ok": o["ok"], "fail": o["fail"]} for n, o in out["offsets_ms"].items()}, f)
    os.replace(tmp, offsets_path)
    ok, fl = measure(False), measure(True)
    for m in trace["models"]:
        out["after_busy_minus_cost_ms"][m["name"]] = {"ok": round(ok[m["name"]], 3), "fail": round(fl[m["name"]], 3)}
    return out


def prepare(trace: dict, handle, offsets_path: Optional[str], *, warmup: int = 2, calibrate_k: int = 8,
            calibrate_rounds: int = 2, tries: int = 3, max_residual_ms: float = 4.0) -> Optional[dict]:
    """Warm-up (the first executions of a pytriton model are slower), then calibration.
    With offsets_path None the overhead is measured (and reported) but not compensated."""
    port = handle.http_port
    for m in [m["name"] for m in trace["models"]]:
        for i in range(warmup):
            fail = i == warmup - 1 and warmup > 1
            st = _post(port, m, fail)
            if st != (500 if fail else 200):
                # a failing request must answer an error, a good one 200
                raise RuntimeError(f"warm-up {m} fail={fail}: HTTP {st}")
    if calibrate_k <= 0:
        return None
    # A calibration taken during a CPU stall of the machine is wrong by tens of ms; its own
    # check (the residual after the offsets) shows it: up to `tries` calibrations, keep the
    # one with the smallest good-path residual.
    best = None
    for attempt in range(1, tries + 1):
        cal = calibrate(trace, handle, offsets_path, k=calibrate_k, rounds=calibrate_rounds)
        after = cal["after_busy_minus_cost_ms"]
        worst = max((abs(v["ok"]) for v in after.values()), default=0.0)
        cal["worst_ok_residual_ms"] = round(worst, 3)
        cal["try"] = attempt
        log(f"calibration {attempt}: busy-cost before {cal['before_busy_minus_cost_ms']}, offsets {cal['offsets_ms']}, "
            f"after {after}")
        if best is None or worst < best["worst_ok_residual_ms"]:
            best = cal
        if offsets_path is None or worst <= max_residual_ms:
            break
    if offsets_path is not None and best is not cal:  # put the best offsets back
        tmp = offsets_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({n: {"ok": o["ok"], "fail": o["fail"]} for n, o in best["offsets_ms"].items()}, f)
        os.replace(tmp, offsets_path)
    return best


def _autogroup_nice(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/autogroup") as f:  # "/autogroup-13 nice 0"
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _set_autogroup_nice(pid: int, nice: int) -> None:
    if _autogroup_nice(pid) is None:
        return  # no sched_autogroup here: setpriority was enough
    with open(f"/proc/{pid}/autogroup", "w") as f:
        f.write(str(nice))


@contextlib.contextmanager
def serve(models: List[dict], *, nice: Optional[int] = None, extra_args: Sequence[str] = ()):
    """A real Triton serving `models` (a trace's "models"); yields (TritonHandle, offsets path).
    `nice` (e.g. -10): the Triton process group and this thread (and the threads it starts)
    run at that priority while it lasts, so other work on a shared machine delays the replay
    less; ignored where not permitted."""
    with tempfile.TemporaryDirectory(prefix="replay-models-") as d:
        spec = os.path.join(d, "models.json")
        offsets = os.path.join(d, "offsets.json")
        with open(spec, "w") as f:
            json.dump(models, f)
        with start_triton(extra_args=["--replay-models", spec, "--replay-offsets", offsets, *extra_args]) as t:
            old = os.getpriority(os.PRIO_PROCESS, 0)
            old_ag = _autogroup_nice(os.getpid())
            if nice is not None:
                try:
                    os.setpriority(os.PRIO_PGRP, t.process.pgid, nice)
                    os.setpriority(os.PRIO_PROCESS, 0, nice)
                    # With sched_autogroup, nice only ranks threads inside one session; the
                    # CPU is shared between sessions by the session's own nice. serve_triton.py
                    # runs in a session of its own (start_new_session), this process in the
                    # caller's.
                    _set_autogroup_nice(t.process.pid, nice)
                    _set_autogroup_nice(os.getpid(), nice)
                except OSError as e:
                    log(f"replay: cannot set priority {nice} ({e}); running at the default priority")
            try:
                yield t, offsets
            finally:
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, 0, old)
                if old_ag is not None:
                    with contextlib.suppress(OSError):
                        _set_autogroup_nice(os.getpid(), old_ag)


def replay(trace: dict, handle, *, lead: float = 0.5, cal: Optional[dict] = None, sample_every: float = 0.1) -> dict:
    """Baseline scrape, then the trace in real time; returns real.json's dict."""
    models = [m["name"] for m in trace["models"]]
    port = handle.http_port
    sess = requests.Session()
    sess.trust_env = False

    def scrape() -> tuple:
        a = time.monotonic()
        r = sess.get(handle.metrics_url, timeout=5)
        r.raise_for_status()
        b = time.monotonic()
        return a, b, r.text

    # The warm-up and calibration must have settled before the baseline: nothing pending, and
    # the counters unchanged over 0.2 s. (Triton updates a request's counters when it releases
    # the request, which can come a moment after the client has its answer; on a loaded
    # machine a failure from the calibration once landed after an immediate baseline.)
    t_settle = time.monotonic()
    deadline = t_settle + 10
    prev = None
    while True:
        _, _, text = scrape()
        base = counters(text, models)
        key = [(base[m]["success"], base[m]["failure"], base[m]["exec_count"], base[m]["pending"]) for m in models]
        if (prev == key and all(base[m]["pending"] == 0 for m in models)) or time.monotonic() > deadline:
            break
        prev = key
        time.sleep(0.2)
    settle_s = time.monotonic() - t_settle

    origin = time.monotonic() + lead
    reqs = sorted(trace["requests"], key=lambda r: r["arrival_s"])
    threads = [_Request(r, port, origin) for r in reqs]
    polls_s = list(trace["polls_s"])
    polled: List[dict] = []

    # Extra pending samples between the polls (not part of the spec's real.json polls): the
    # pending gauge is instantaneous, and 12 polls rarely land inside an execution; these
    # let the comparison check "pending excludes the executing request" many times a trace.
    sched = [(p, True) for p in polls_s]
    if sample_every > 0:
        k = 1
        while k * sample_every < max(polls_s):
            ts = round(k * sample_every, 6)
            if min(abs(ts - p) for p in polls_s) > 0.05:
                sched.append((ts, False))
            k += 1
    sched.sort()
    samples: List[dict] = []

    def poller():
        for p, is_poll in sched:
            delay = origin + p - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif not is_poll and delay < -0.05:
                continue  # late: a sample is only worth its exact time; never delay a poll
            a, b, text = scrape()
            c = counters(text, models)
            if not is_poll:
                samples.append({"t_s": round((a + b) / 2 - origin, 6),
                                "get": [round(a - origin, 6), round(b - origin, 6)],
                                "pending": {m: int(c[m]["pending"]) for m in models},
                                "completed": {m: int(round(c[m]["success"] - base[m]["success"]
                                                           + c[m]["failure"] - base[m]["failure"]))
                                              for m in models}})
                continue
            rec = {"t_s": round((a + b) / 2 - origin, 6), "models": {}, "_extra": {}}
            for m in models:
                rec["models"][m] = {
                    f: (c[m][f] if f in GAUGES else c[m][f] - base[m][f]) for f in FIELDS
                }
                for f in ("success", "failure", "exec_count", "pending"):
                    rec["models"][m][f] = int(round(rec["models"][m][f]))
                rec["_extra"][m] = {f: c[m][f] - base[m][f] for f in EXTRA_FIELDS}
            rec["_get"] = {"start_s": round(a - origin, 6), "end_s": round(b - origin, 6)}
            polled.append(rec)

    stall = {"max_ms": 0.0, "stop": False}

    def stall_watch():
        # How late a 20 ms sleep wakes up in this process: the CPU stalls the machine gave
        # the replay (the machine is shared; tritonserver and the models run beside us).
        while not stall["stop"]:
            a = time.monotonic()
            time.sleep(0.02)
            stall["max_ms"] = max(stall["max_ms"], (time.monotonic() - a - 0.02) * 1000)

    sw = threading.Thread(target=stall_watch, daemon=True, name="stall-watch")
    sw.start()
    pt = threading.Thread(target=poller, daemon=True, name="poller")
    pt.start()
    # Start each request's thread connect_ahead before it is due: a few live threads at a
    # time, never one request waiting for another.
    for t in threads:
        delay = origin + float(t.req["arrival_s"]) - t.connect_ahead - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t.start()
    last = max([float(r["arrival_s"]) for r in reqs] + polls_s + [0.0])
    pt.join(timeout=max(0.0, origin + last - time.monotonic()) + 30)
    for t in threads:
        t.join(timeout=max(1.0, origin + last + 60 - time.monotonic()))
    sess.close()
    stall["stop"] = True
    sw.join(1)

    lags = [(t.sent - origin - float(t.req["arrival_s"])) * 1000 for t in threads if t.sent is not None]
    bad = [
        {"id": t.req["id"], "model": t.req["model"], "fail": bool(t.req.get("fail")), "status": t.status, "error": t.error}
        for t in threads
        if t.error or t.status != (500 if t.req.get("fail") else 200)
    ]
    out = {
        "polls": [{"t_s": p["t_s"], "models": p["models"]} for p in polled],
        "replay": {
            "seed": trace.get("seed"),
            "tritonserver": "2.51 (nvidia-pytriton 0.7.0)",
            "calibration": cal,
            "baseline_settle_s": round(settle_s, 3),
            "nice": os.getpriority(os.PRIO_PROCESS, 0),
            "baseline": base,
            "send_lag_ms": {
                "n": len(lags),
                "p50": round(statistics.median(lags), 3) if lags else None,
                "p99": round(sorted(lags)[int(0.99 * (len(lags) - 1))], 3) if lags else None,
                "max": round(max(lags), 3) if lags else None,
            },
            "unexpected_outcomes": bad,
            "max_oversleep_ms": round(stall["max_ms"], 3),
            "loadavg_1m_after": os.getloadavg()[0],
            "poll_get": [p["_get"] for p in polled],
            "pending_samples": samples,
            "extra": [{"t_s": p["t_s"], "models": p["_extra"]} for p in polled],
            "requests": [
                {
                    "id": t.req["id"],
                    "model": t.req["model"],
                    "fail": bool(t.req.get("fail")),
                    "arrival_s": t.req["arrival_s"],
                    "sent_s": None if t.sent is None else round(t.sent - origin, 6),
                    "done_s": None if t.done is None else round(t.done - origin, 6),
                    "status": t.status,
                }
                for t in threads
            ],
        },
    }
    if len(polled) != len(polls_s):
        raise RuntimeError(f"only {len(polled)} of {len(polls_s)} polls done")
    return out


def run(trace: dict, *, warmup: int = 2, lead: float = 0.5, calibrate: bool = True, calibrate_k: int = 8,
        nice: Optional[int] = None, sample_every: float = 0.1) -> dict:
    """Start Triton with the trace's models, warm up, calibrate, replay, stop Triton."""
    with serve(trace["models"], nice=nice) as (t, offsets):
        log(f"replaying seed {trace.get('seed')}: {len(trace['requests'])} requests, "
            f"{len(trace['polls_s'])} polls, models {[m['name'] for m in trace['models']]}")
        cal = prepare(trace, t, offsets if calibrate else None, warmup=warmup, calibrate_k=calibrate_k)
        return replay(trace, t, lead=lead, cal=cal, sample_every=sample_every)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--warmup", type=int, default=2, help="requests per model before the baseline (last one fails)")
    ap.add_argument("--lead", type=float, default=0.5, help="seconds from the baseline scrape to the origin")
    ap.add_argument("--no-calibrate", action="store_true",
                    help="models sleep exactly the trace's cost (the Python backend's overhead comes on top)")
    ap.add_argument("--calibrate-k", type=int, default=8, help="burst size per model and path for the calibration")
    ap.add_argument("--nice", type=int, default=None, help="run Triton and the replay at this priority (e.g. -10)")
    ap.add_argument("--sample-every", type=float, default=0.1, help="extra pending samples between polls (0: none)")
    a = ap.parse_args(argv)
    with open(a.trace) as f:
        trace = json.load(f)
    res = run(trace, warmup=a.warmup, lead=a.lead, calibrate=not a.no_calibrate, calibrate_k=a.calibrate_k,
              nice=a.nice, sample_every=a.sample_every)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    r = res["replay"]
    log(f"wrote {a.out}: {len(res['polls'])} polls; send lag p50 {r['send_lag_ms']['p50']} ms, "
        f"max {r['send_lag_ms']['max']} ms; unexpected outcomes {len(r['unexpected_outcomes'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
