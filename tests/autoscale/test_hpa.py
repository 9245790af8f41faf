"""Unit tests of hpa.py (the HPA v2 arithmetic), against hand-worked cases of the controller's
code, and against the ScaledObject that deploy/ renders. No process is started."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from hpa import COMPOSITE, Formula, FormulaError, Hpa, HpaSpec, Policy, Rules, Trigger, proposal, spec_from_scaledobject  # noqa: E402

PENDING = Trigger("pending-requests", "AverageValue", "q1", 8)
WAIT = Trigger("queue-wait", "Value", "q2", 100)


def spec(**kw):
    base = dict(
        min_replicas=1, max_replicas=8,
        scale_up=Rules(0, [Policy("Percent", 100, 60), Policy("Pods", 2, 60)], "Max"),
        scale_down=Rules(300, [Policy("Pods", 1, 120)], "Min"),
        triggers=[PENDING, WAIT])
    base.update(kw)
    return HpaSpec(**base)


def test_average_value_uses_status_replicas_and_tolerance():
    assert proposal(PENDING, 20, 1, 1, 1) == 3          # ceil(20 / 8)
    assert proposal(PENDING, 8.7, 1, 1, 1) == 1         # ratio 1.0875: within 0.1
    assert proposal(PENDING, 8.9, 1, 1, 1) == 2         # ratio 1.1125: outside
    assert proposal(PENDING, 17, 2, 2, 1) == 2          # 17 / (8 * 2) = 1.0625: keep status replicas
    assert proposal(PENDING, 0, 3, 3, 3) == 0           # the min is applied later


def test_value_uses_ready_pods():
    assert proposal(WAIT, 250, 2, 2, 1) == 3            # ceil(2.5 * 1 ready pod)
    assert proposal(WAIT, 250, 2, 2, 2) == 5
    assert proposal(WAIT, 105, 3, 3, 1) == 3            # within tolerance: spec replicas
    assert proposal(WAIT, 40, 3, 3, 3) == 2             # ceil(0.4 * 3) = ceil(1.2)
    assert proposal(WAIT, 0.0004, 3, 3, 3) == 0         # milli-quantity: 0.0004 is 0


def test_max_over_triggers_and_scale_up_policies():
    h = Hpa(spec())
    d = h.sync(0, {"pending-requests": 100, "queue-wait": 50}, 1, 1, 1)
    assert d.metric_desired == 13 and d.desired == 3 and d.reason == "ScaleUpLimit"  # max(1*2, 1+2)
    h.record_scale(0, 1, 3)
    d = h.sync(30, {"pending-requests": 100, "queue-wait": 50}, 3, 3, 1)
    assert d.desired == 3                               # period start is 1: limit 3 until 60 s pass
    d = h.sync(61, {"pending-requests": 100, "queue-wait": 50}, 3, 3, 3)
    assert d.desired == 6                               # max(3*2, 3+2)


def test_scale_down_window_and_policy():
    h = Hpa(spec())
    h.sync(0, {"pending-requests": 30, "queue-wait": 300}, 3, 3, 3)            # recommends 4
    d = h.sync(100, {"pending-requests": 0, "queue-wait": 1}, 3, 3, 3)
    assert d.metric_desired == 1 and d.desired == 3                            # 4 in the window
    d = h.sync(299, {"pending-requests": 0, "queue-wait": 1}, 3, 3, 3)
    assert d.desired == 3
    d = h.sync(301, {"pending-requests": 0, "queue-wait": 1}, 3, 3, 3)
    assert d.desired == 2 and d.reason == "ScaleDownLimit"                     # 1 pod per 120 s
    h.record_scale(301, 3, 2)
    assert h.sync(400, {"pending-requests": 0, "queue-wait": 1}, 2, 2, 2).desired == 2
    assert h.sync(422, {"pending-requests": 0, "queue-wait": 1}, 2, 2, 2).desired == 1


def test_failed_metric_blocks_scale_down_only():
    h = Hpa(spec(scale_down=Rules(0, [Policy("Pods", 1, 1)], "Min")))
    assert h.sync(0, {"pending-requests": None, "queue-wait": 1}, 3, 3, 3).desired == 3
    assert h.sync(1, {"pending-requests": None, "queue-wait": 400}, 1, 1, 1).desired == 3
    assert h.sync(2, {"pending-requests": None, "queue-wait": None}, 2, 2, 2).desired == 2


def test_min_max_clamp():
    h = Hpa(spec(max_replicas=3))
    assert h.sync(0, {"pending-requests": 0, "queue-wait": 0}, 5, 5, 5).desired == 3
    assert h.sync(1, {"pending-requests": 0, "queue-wait": 0}, 0, 0, 0).desired == 1


def test_spec_from_rendered_deploy():
    import subprocess
    import yaml
    root = pathlib.Path(__file__).resolve().parents[2]
    text = subprocess.run(["kubectl", "kustomize", str(root / "deploy/overlays/keda")], check=True,
                          capture_output=True, text=True).stdout
    so = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "ScaledObject")
    s = spec_from_scaledobject(so, max_cap=3)
    assert (s.min_replicas, s.max_replicas) == (1, 3)
    assert [(t.name, t.metric_type, t.threshold) for t in s.triggers] == [
        ("utilization", "AverageValue", 0.7), ("queue_wait", "Value", 100.0)]
    assert s.triggers[0].query == (
        'avg(triton_pod_utilization{namespace="triton",app_kubernetes_io_instance="triton"}) '
        '* count(triton_pod_utilization{namespace="triton",app_kubernetes_io_instance="triton"} '
        'or on(pod) (triton_sidecar_models_without_capacity{namespace="triton",app_kubernetes_io_instance="triton"} > 0))')
    # Issue 22: one composite metric, the pods utilization asks for plus at most one while the
    # queue wait breaches 100 ms.
    assert s.modifiers is not None and s.modifiers.target == 1.0 and s.modifiers.metric_type == "AverageValue"
    h = Hpa(s)
    for util, wait, cur, want in [(1.3, 5.0, 1, 2), (1.3, 4000.0, 1, 3), (1.3, 99.0, 2, 2), (0.0, 0.0, 1, 0),
                                  (2.0, 1e6, 2, 4), (2.0, 101.0, 3, 4)]:
        d = Hpa(s).sync(0, {"utilization": util, "queue_wait": wait}, cur, cur, cur)
        assert d.proposals == {COMPOSITE: want}, (util, wait, d)
    # A failing trigger fails the composite metric: no change.
    assert h.sync(0, {"utilization": None, "queue_wait": 4000.0}, 2, 2, 2).reason == "FailedGetExternalMetric"
    assert "triton_pod_queue_wait_ms" in s.triggers[1].query and "pending" not in " ".join(t.query for t in s.triggers)
    # Scale-down no shorter than a GPU pod's cold start (deploy/README.md: 600 s).
    assert s.scale_up.stabilization_s == 0 and s.scale_down.stabilization_s == 600
    assert [(p.type, p.value, p.period_s) for p in s.scale_down.policies] == [("Pods", 1, 120.0)]
    assert s.scale_up.select == "Max" and s.scale_down.select == "Min"


def test_formula_subset():
    names = ["a", "b"]
    cases = [("a / 0.7 + (b > 100 ? 1 : 0)", {"a": 1.4, "b": 101}, 3.0),
             ("a / 0.7 + (b > 100 ? 1 : 0)", {"a": 1.4, "b": 100}, 2.0),
             ("max(a, b) - -1", {"a": 1, "b": 2}, 3.0),
             ("a ?? b", {"a": None, "b": 2}, 2.0),
             ("2 * (a + b) / 4", {"a": 1, "b": 3}, 2.0),
             ("a + b * 2", {"a": 1, "b": 3}, 7.0),
             ("a > 1 ? a > 2 ? 3 : 2 : 1", {"a": 2.5, "b": 0}, 3.0),
             ("a + b", {"a": None, "b": 1}, None)]
    for text, vals, want in cases:
        got = Formula(text, names).evaluate(vals)
        assert (got is None and want is None) or abs(got - want) < 1e-9, (text, vals, got)
    for bad in ["a +", "c + 1", "a % 2", "queue-wait", "(a"]:
        with pytest.raises(FormulaError):
            Formula(bad, names)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
