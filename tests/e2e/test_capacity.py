"""The online capacity estimate against the real tritonserver 2.51 (pytriton).

One model, ``lin``: two distinct callables as instances, max_batch_size 8, each execution
sleeps a + k*batch (serve_triton.py --replay-models). The agent reads /v2/models/stats through
pytriton's default restrictions with --triton-api-header; a second agent without the header
must report the refusal. The estimate is printed against instances*B/(a + k*B).

The estimate is expected a little *below* the formula: the Python backend's own overhead per
execution (the ZeroMQ hop to the callables) is part of the compute time Triton records.
The calibration against measured saturation throughput is tests/autoscale's.

    TRITON_SIDECAR_BIN=target/release/triton-sidecar .venv/bin/python -m pytest -q tests/e2e/test_capacity.py
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import (  # noqa: E402
    LoadGenerator,
    fetch_metrics,
    fetch_text,
    free_ports,
    log,
    start_process,
    start_triton,
    wait_until,
)
import scenarios  # noqa: E402

A_MS, K_MS, INSTANCES, MAX_BATCH = 20.0, 10.0, 2, 8
TOKEN = "e2e-capacity-token"


def formula_rps() -> float:
    return INSTANCES * MAX_BATCH / ((A_MS + K_MS * MAX_BATCH) / 1000.0)


def agent(name, triton, extra):
    mport, aport = free_ports(2)
    argv = [
        str(scenarios.agent_bin()),
        "--triton-url", triton.http_url,
        "--triton-metrics-url", triton.metrics_url,
        "--metrics-addr", f"127.0.0.1:{mport}",
        "--admin-addr", f"127.0.0.1:{aport}",
        "--poll-interval", "500ms",
        "--window", "5s",
        "--stats-interval", "1s",
        "--no-gpu",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.setdefault("RUST_LOG", "info")
    return start_process(name, argv, env=env), f"http://127.0.0.1:{mport}/metrics"


def gauge(url, name, **labels):
    return fetch_metrics(url).get(name, **labels)


def test_estimated_capacity_against_the_formula():
    models = [{"name": "lin", "instances": INSTANCES, "max_batch": MAX_BATCH, "cost_a_ms": A_MS, "cost_k_ms": K_MS}]
    with tempfile.TemporaryDirectory() as d:
        spec = pathlib.Path(d) / "models.json"
        spec.write_text(json.dumps(models))
        with start_triton(extra_args=["--replay-models", str(spec), "--access-token", TOKEN]) as t:
            with_header, url = agent("agent-header", t, ["--triton-api-header", f"triton-access-token={TOKEN}"])
            without, url_refused = agent("agent-no-header", t, [])
            try:
                # Light load (batches of 1), then heavy (the batcher fills batches up to 8).
                throughput = {}
                for concurrency, secs in ((1, 3.0), (24, 8.0)):
                    lg = LoadGenerator(t.infer_url, "lin", concurrency).start()
                    time.sleep(secs)
                    outs = lg.stop()
                    bad = [o for o in outs if o.status != "ok"]
                    assert not bad, bad[:3]
                    ok = [o for o in outs if o.status == "ok"]
                    span = max(o.end for o in ok) - min(o.start for o in ok)
                    throughput[concurrency] = len(ok) / span
                    log(f"concurrency {concurrency}: {len(ok)} requests in {span:.1f} s")
                assert wait_until(
                    lambda: gauge(url, "triton_capacity_rps", model="lin", source="estimated") is not None,
                    timeout=5,
                ), "\n".join(l for l in fetch_text(url).splitlines() if not l.startswith("#"))
                time.sleep(1.5)  # one more statistics read after the load ended
                est = gauge(url, "triton_capacity_rps", model="lin", source="estimated")
                f = formula_rps()
                print(
                    f"\nlin: estimated capacity {est:.1f} rps; formula {INSTANCES}*{MAX_BATCH}/"
                    f"({A_MS:g} ms + {K_MS:g} ms*{MAX_BATCH}) = {f:.1f} rps; ratio {est / f:.3f}; "
                    f"throughput measured at concurrency 24: {throughput[24]:.1f} rps"
                )
                assert gauge(url, "triton_sidecar_statistics_refused") == 0
                assert gauge(url_refused, "triton_sidecar_statistics_refused") == 1, without.log_tail()
                assert gauge(url_refused, "triton_capacity_rps", model="lin", source="estimated") is None
                # Never above the formula by more than noise, and the Python backend's overhead
                # must not halve it.
                assert 0.6 * f <= est <= 1.1 * f, (est, f)
            finally:
                with_header.stop()
                without.stop()
            assert TOKEN not in with_header.log_tail(400), "the header value is never logged"
            refusals = [l for l in without.log_tail(400).splitlines() if "refuses /v2/models/stats" in l]
            assert len(refusals) == 1, f"one log line per change, not per read: {refusals}"
