"""End-to-end scenarios against a real Triton (pytest).

    tests/e2e/setup_venv.sh
    TRITON_SIDECAR_BIN=target/release/triton-sidecar .venv/bin/python -m pytest -v tests/e2e/test_scenarios.py

Timing-sensitive: run alone (no other load on the machine); tests run one after the
other. A missing agent binary or venv is an error, never a skip.
"""

from __future__ import annotations

import json
import os
import sys
import pathlib

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import scenarios  # noqa: E402

N = int(os.environ.get("E2E_CLIENTS", "32"))
KEEPALIVE = os.environ.get("E2E_KEEPALIVE", "0") == "1"


@pytest.fixture(scope="session", autouse=True)
def _agent_binary():
    # Fails (not skips) when the binary is missing.
    p = scenarios.agent_bin()
    print(f"agent binary: {p}")
    return p


def test_scenario_a_gauges_tell_the_truth():
    res = scenarios.run_scenario_a(
        poll=float(os.environ.get("E2E_POLL", "0.5")),
        window=float(os.environ.get("E2E_WINDOW", "5")),
    )
    print("signal lag:", json.dumps(res["signal_lag"], indent=1))
    bad = res["failed_checks"]
    assert not bad, f"{len(bad)} of {len(res['checks'])} checks off:\n" + "\n".join(map(str, bad[:20]))
    # the pod pending gauge must follow each load increase
    for lag in res["signal_lag"]:
        if lag["gauge"] == "triton_pod_pending_requests" and lag["new"] > lag["old"]:
            assert lag["lag_s"] is not None, f"pending never crossed half-way: {lag}"


@pytest.mark.parametrize(
    "strategy,propagation,hook",
    [
        ("regular", 2.0, "http"),
        ("native", 2.0, "http"),
        ("regular", 6.0, "http"),  # propagation > min-drain (5 s): late requests restart the quiet timer
        ("native", 6.0, "exec"),
    ],
)
def test_scenario_b_scale_down_loses_nothing(strategy, propagation, hook):
    r = scenarios.run_scenario_b(strategy, clients=N, propagation=propagation, min_drain=5.0, hook=hook,
                                 keep_alive=KEEPALIVE)
    print(r)
    assert r.ok > 0
    assert r.failed == 0, f"{r.failed} failed requests: {r.failure_kinds}"
    assert r.triton_exit_s is not None and r.agent_exit_s is not None
    assert r.prestop.startswith("200") or r.prestop.startswith("rc=0"), r.prestop


def test_scenario_b_without_hook_sees_failures():
    """The harness can see a failure at all: no preStop hook loses requests."""
    r = scenarios.run_scenario_b("none", clients=N, propagation=2.0, keep_alive=KEEPALIVE)
    print(r)
    assert r.failed > 0, f"no hook lost nothing: the harness would not see a failure ({r})"
