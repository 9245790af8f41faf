"""Unit tests of hpa.py's Pods metrics (the comparison's prometheus-adapter signals), against
hand-worked cases of replica_calculator.go's calcPlainMetricReplicas. No process is started."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from hpa import Hpa, HpaSpec, Policy, Rules, Trigger, pods_proposal, quantity  # noqa: E402

RATIO = Trigger("queue-compute-ratio", "Pods", "q", 1.0)


def test_quantity():
    assert quantity("1000m") == 1.0 and quantity("50") == 50.0 and quantity(0.7) == 0.7 and quantity("8") == 8


def test_every_pod_has_a_value():
    assert pods_proposal(RATIO, {"a": 3.0, "b": 1.0}, ["a", "b"], 2) == 4      # mean 2 x 2 pods
    assert pods_proposal(RATIO, {"a": 1.05, "b": 1.0}, ["a", "b"], 2) == 2     # within tolerance
    assert pods_proposal(RATIO, {"a": 0.2, "b": 0.1}, ["a", "b"], 2) == 1      # ceil(0.15 x 2)


def test_values_of_other_pods_are_ignored():
    assert pods_proposal(RATIO, {"gone": 9.0, "a": 2.0}, ["a"], 1) == 2
    assert pods_proposal(RATIO, {"gone": 9.0}, ["a"], 1) is None               # no metrics: error


def test_missing_pods_dampen_scale_up_and_down():
    # a at 4, b starting (no value): ratio 4 > 1, b counts as 0: new ratio 2 -> ceil(2 x 2) = 4
    assert pods_proposal(RATIO, {"a": 4.0}, ["a", "b"], 2) == 4
    # a at 1.5, b and c starting: new ratio 0.5 < 1 flips the direction: keep 3
    assert pods_proposal(RATIO, {"a": 1.5}, ["a", "b", "c"], 3) == 3
    # a at 0.2, b starting counts as the target: new ratio 0.6 -> ceil(0.6 x 2) = 2: keep
    assert pods_proposal(RATIO, {"a": 0.2}, ["a", "b"], 2) == 2
    # three pods, one starting: 0.1, 0.1 and 1 -> 0.4 -> ceil(1.2) = 2
    assert pods_proposal(RATIO, {"a": 0.1, "b": 0.1}, ["a", "b", "c"], 3) == 2


def test_sync_with_a_pods_trigger():
    spec = HpaSpec(1, 3, Rules(0, [Policy("Pods", 4, 15)]), Rules(0, [Policy("Pods", 1, 1)], "Min"), [RATIO])
    h = Hpa(spec)
    d = h.sync(0, {"queue-compute-ratio": {"a": 2.5}}, 1, 1, 1, ["a"])
    assert d.metric_desired == 3 and d.desired == 3
    d = h.sync(1, {"queue-compute-ratio": None}, 3, 3, 3, ["a", "b", "c"])
    assert d.desired == 3 and d.reason == "FailedGetExternalMetric"
