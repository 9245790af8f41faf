"""The shortened autoscaling run of `make test` (issue 9): the whole loop of harness.py with the
agent's gauges, as deploy/ ships them, under the test overlay.

    .venv/bin/python -m pytest -q tests/autoscale/test_autoscale.py

SHORTENED, stated: tests/autoscale/kustomize/agent-short = deploy/overlays/keda plus the
`short` component (scale-up policy periods 60 -> 15 s, scale-down stabilisation 300 -> 30 s,
scale-down 1 pod per 120 -> 15 s) and an HPA sync every 5 s instead of 15 s; the same overlay
exists for the raw-Triton signal (kustomize/raw-short), so the two signals are shortened alike.
Queries, thresholds, min replicas and the agent's flags are the manifest's; maxReplicaCount is
capped at 3 for this 2-core machine. About 3.5 minutes.

Asserts: zero failed requests across the whole profile, which contains at least one scale-up and
one scale-down (each scale-down a kubelet-style termination: preStop /wait-for-drain, then
SIGTERM); replicas rose during the spike and fell after it (back to minReplicaCount); every
removed pod's preStop answered 200 and its tritonserver exited within the grace period; no
Prometheus query failed. Needs: tests/autoscale/setup.sh (venv, matplotlib, Prometheus, kubectl)
and the agent binary (target/release/triton-sidecar or TRITON_SIDECAR_BIN).

Env: AUTOSCALE_TEST_SIGNAL=raw runs the raw-Triton signal instead (with rate()[2m], it is not
expected to scale down within this short profile). Results (JSON, plot, table) go to
target/autoscale/test/.
"""

import os
import pathlib
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import report  # noqa: E402

SIGNAL = os.environ.get("AUTOSCALE_TEST_SIGNAL", "agent")
OUT = harness.OUT_ROOT / "test"
REPORT = []  # lines printed by conftest.py


@pytest.fixture(scope="module")
def result():
    t0 = time.monotonic()
    res = harness.run(SIGNAL, harness.TIMINGS["short"], out_dir=OUT)
    png = OUT / "autoscaling.png"
    report.plot([res], png)
    md = report.setup_text([res]) + "\n\n" + report.table([res]) + "\n"
    (OUT / "summary.md").write_text(md)
    REPORT.extend(md.splitlines())
    REPORT.append(f"run took {time.monotonic() - t0:.0f} s; plot {png}; data {OUT / (SIGNAL + '.json')}")
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


def test_replicas_rose_during_spike_and_fell_after(result):
    s = result["summary"]
    st = result["config"]["phase_starts"]
    assert s["rose_during_spike"], result["scale_events"]
    assert s["max_desired"] > s["replicas_at_spike_start"], s
    downs_after = [e for e in result["scale_events"] if e["to"] < e["from"] and e["t"] >= st["ramp down"]]
    assert downs_after, result["scale_events"]
    assert s["final_desired"] == result["config"]["min_replicas"], s["final_desired"]
    # the pods did come up: ready replicas reached the max during the spike
    spike = [x for x in result["samples"] if st["spike"] <= x["t"] < st["ramp down"]]
    assert max(x["ready"] for x in spike) == s["max_desired"], spike[-3:]


def test_scale_down_was_a_graceful_drain(result):
    deleted = [p for p in result["pods"] if p["deleted"] is not None]
    assert deleted, result["pods"]
    grace = result["config"]["pod"]["grace_s"]
    for p in deleted:
        t = p["termination"]
        assert str(t.get("prestop", "")).startswith("200 drained"), (p["name"], t)
        assert t.get("triton_exit_s") is not None and t["triton_exit_s"] < grace, (p["name"], t)
        assert not t.get("agent_killed"), (p["name"], t)
