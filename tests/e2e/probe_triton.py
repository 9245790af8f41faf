#!/usr/bin/env python3
"""Smoke check / probe of the harness against a real Triton (no agent needed).

    .venv/bin/python tests/e2e/probe_triton.py            # start, load, pending rises, clean stop
    .venv/bin/python tests/e2e/probe_triton.py --sigterm  # also: SIGTERM tritonserver under load

Prints what it measures; exits non-zero if the pending count never rises under
load or a request fails in the plain load phase.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import (
    CONN_ERROR,
    LoadGenerator,
    fetch_metrics,
    latency_stats,
    log,
    start_triton,
    triton_derived,
)


def sample_pending(t, seconds: float, interval: float = 0.25):
    peak = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = fetch_metrics(t.metrics_url)
        for m, v in s.by_model("nv_inference_pending_request_count").items():
            peak[m] = max(peak.get(m, 0.0), v)
        time.sleep(interval)
    return peak


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16, help="clients per model")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--sigterm", action="store_true", help="also SIGTERM tritonserver under load")
    ap.add_argument("--no-keepalive", action="store_true", help="SIGTERM phase: a new connection per request")
    ap.add_argument("--skip-load", action="store_true", help="skip the plain load phase")
    args = ap.parse_args()
    ok = True
    with start_triton() as t:
        print(f"startup: {t.startup_s:.1f}s, tritonserver pid {t.triton_pid}")
        a = fetch_metrics(t.metrics_url)
        for model in () if args.skip_load else ("slow", "fast"):
            gen = LoadGenerator(t.infer_url, model, args.clients).start()
            peak = sample_pending(t, args.seconds)
            outs = gen.stop()
            b = fetch_metrics(t.metrics_url)
            d = triton_derived(a, b).get(model, {})
            a = b
            print(f"{model}: {args.clients} clients {args.seconds}s -> {gen.summary()} latency {fmt(latency_stats(outs))}")
            print(f"  peak pending {peak.get(model)}; derived {fmt(d)}")
            if not peak.get(model):
                print(f"  FAIL: pending never rose for {model}")
                ok = False
            if gen.failures():
                print(f"  FAIL: {len(gen.failures())} failures: {gen.failures()[:3]}")
                ok = False

        if args.sigterm:
            routing = {"on": True}
            gen = LoadGenerator(t.infer_url, ["slow", "fast"], 2 * args.clients,
                                keep_alive=not args.no_keepalive, gate=lambda: routing["on"]).start()
            time.sleep(2.0)
            t0 = time.monotonic()
            t.sigterm_tritonserver()
            time.sleep(2.0)  # clients keep sending for 2 s (endpoint propagation), then stop and close
            routing["on"] = False
            t.wait_triton_exit(60)
            t_exit = time.monotonic() - t0
            outs = gen.stop()
            before = [o for o in outs if o.start < t0]
            after = [o for o in outs if o.start >= t0]
            print(f"SIGTERM to tritonserver under load: exited after {t_exit:.1f}s")
            print(f"  requests started before SIGTERM: {summ(before)}")
            print(f"  requests started after  SIGTERM: {summ(after)}")
            errs = sorted({(o.status, o.code, (o.error or '')[:90]) for o in outs if o.status != 'ok'})
            for e in errs[:8]:
                print(f"   {e}")
            t.process.wait(30)
            print(f"  serve_triton.py exited rc={t.process.proc.returncode} "
                  f"{(t.process.exited_at or 0) - t0:.1f}s after SIGTERM")
    print(f"serve_triton EXITED line: {t.exited_line}")
    # idle shutdown: start again, SIGTERM tritonserver with no connection open
    if args.sigterm:
        with start_triton() as t:
            t0 = time.monotonic()
            t.sigterm_tritonserver()
            t.wait_triton_exit(60)
            print(f"idle SIGTERM: tritonserver exited after {time.monotonic() - t0:.1f}s")
            t.process.wait(30)
            print(f"  serve_triton.py rc={t.process.proc.returncode} after {(t.process.exited_at or 0) - t0:.1f}s")
    return 0 if ok else 1


def summ(outs):
    c = {}
    for o in outs:
        c[o.status] = c.get(o.status, 0) + 1
    return c


def fmt(d):
    return "{" + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items()) + "}"


if __name__ == "__main__":
    sys.exit(main())
