"""The shortened autoscaling loop of `make test` (issues 9 and 13): the whole loop of harness.py
with deploy/'s triggers as rendered (deploy/overlays/keda), on scenario `test` (harness.SCENARIOS):
the unbatched model, idle at 0.25 C, a 90 s spike at 2.05 C (C: one pod's saturation throughput,
measured by the session's calibration, conftest.py), back to idle.

    .venv/bin/python -m pytest -q tests/autoscale/test_autoscale.py

SHORTENED, stated in its output: the HPA behavior's windows and policy periods x 0.1 (deploy/'s
scale-down window 600 -> 60 s) and an HPA sync every 5 s instead of 15 s; pods start in seconds.
Queries, thresholds, min replicas and the agent's flags are the manifest's; maxReplicaCount is
capped at 3 for this 2-core machine. About 4.5 minutes.

Asserts: zero failed requests across the whole profile, which contains at least one scale-up and
one scale-down (each a kubelet-style termination: preStop /wait-for-drain, then SIGTERM); no
scale-down while the offered load exceeded what the remaining pods can serve; replicas within 1
of the ideal (ceil(load / (C x 0.7))) at the end of the spike and of the idle after it;
replica-seconds at most 1.3 x the integral of the ideal held for the scale-down window (the
ideal's own integral is printed: the window alone costs about 0.3 x it in this short profile);
every removed pod's preStop answered 200
and its tritonserver exited within the grace period; no Prometheus query failed.

Issue 21: the same loop runs twice, on deploy/'s Prometheus triggers (`new`) and on
deploy/overlays/keda-direct (`direct`: KEDA's metrics-api scaler reading every ready pod's agent,
each page parsed with Prometheus's own text parser, tests/deploy/keda_metrics_api), under the
same assertions. About 9 minutes for both.

Env: AUTOSCALE_TEST_SETS=new,direct (default) picks the trigger sets of compare.py to run
(previous|tutorial|onprem too: the assertions are deploy/'s goals, the others are not expected to
meet them). Results (JSON, plot, table) go to target/autoscale/test/<set>/.
"""

import os
import pathlib
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import report13  # noqa: E402

SETS = [x for x in os.environ.get("AUTOSCALE_TEST_SETS", os.environ.get("AUTOSCALE_TEST_SET", "new,direct")).split(",") if x]
REPORT = []  # lines printed by conftest.py


@pytest.fixture(scope="module", params=SETS)
def result(request, calibration):
    st = request.param
    out = harness.OUT_ROOT / "test" / st
    t0 = time.monotonic()
    cap = calibration["unbatched"]["saturation"]["rps"]
    res = harness.run(st, harness.SCENARIOS["test"], out_dir=out, entry_point=harness.TRIGGER_SETS[st],
                      capacity_rps=cap)
    png = out / "autoscaling.png"
    report13.plot_scenario("test", {st: res}, png)
    md = report13.markdown({"test": {st: res}}, {"unbatched": {"rps": cap}})
    (out / "summary.md").write_text(md)
    REPORT.extend(md.splitlines())
    REPORT.append(f"{st}: run took {time.monotonic() - t0:.0f} s; plot {png}; data {out / (st + '.json')}")
    return res


def test_no_pod_or_query_error(result):
    s = result["summary"]
    assert not s["pod_errors"], s["pod_errors"]
    assert s["query_errors"] == 0, result["errors"]


def test_zero_failed_requests_across_scale_up_and_down(result):
    s = result["summary"]
    assert s["scale_ups"] >= 1 and s["scale_downs"] >= 1, (s["scale_ups"], s["scale_downs"], result["scale_events"])
    assert s["requests"] > 1000, s["requests"]
    assert s["failed"] == 0, f"{s['failed']} failed: {s['failed_kinds']}; first: {s['failed_examples']}"


def test_no_scale_down_below_the_load(result):
    s = result["summary"]
    assert s["scale_downs_over_capacity"] == 0, s["scale_downs_over_capacity_list"]


def test_replicas_near_the_ideal(result):
    s = result["summary"]
    assert [x["phase"] for x in s["settled"]] == ["spike", "idle after"], s["settled"]
    assert s["settled_max_error"] <= 1, s["settled"]
    # Issue 13's goal is replica-seconds <= 1.3 x the ideal's integral; deploy/'s scale-down
    # window (>= a cold start, by design) holds the peak's pods for its length whatever the
    # signal, and in this short profile that alone costs about 0.3 x. The signal is held to the
    # goal against the ideal held for that window (docs/autoscaling.md reports both).
    assert s["replica_seconds_vs_ideal_held"] <= 1.3, (s["replica_seconds"], s["ideal_held_replica_seconds"])


def test_scale_down_was_a_graceful_drain(result):
    deleted = [p for p in result["pods"] if p["deleted"] is not None]
    assert deleted, result["pods"]
    grace = result["config"]["pod"]["grace_s"]
    for p in deleted:
        t = p["termination"]
        assert str(t.get("prestop", "")).startswith("200 drained"), (p["name"], t)
        assert t.get("triton_exit_s") is not None and t["triton_exit_s"] < grace, (p["name"], t)
        assert not t.get("agent_killed"), (p["name"], t)
