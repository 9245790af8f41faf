"""Unit tests of harness.capacity_measures (issue 13's loop measures) on a hand-made result: no
process is started."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import harness  # noqa: E402


def result(events, decisions, pods, requests=()):
    phases = [harness.Phase("idle", 10, 2.5, 2.5), harness.Phase("spike", 20, 20.5, 20.5),
              harness.Phase("idle after", 10, 2.5, 2.5)]
    return {"config": {"capacity_rps": 10.0, "ideal_target": 0.7, "min_replicas": 1, "max_replicas": 3,
                       "phases": [p.__dict__ for p in phases], "phase_starts": harness.phase_starts(phases),
                       "settle_phases": ["spike", "idle after"],
                       "behavior": {"scale_down": {"stabilization_s": 5.0}}},
            "scale_events": events, "decisions": decisions, "pods": pods, "requests": list(requests)}


def test_ideal():
    cfg = result([], [], [])["config"]
    assert [harness.ideal_replicas(cfg, x) for x in (0, 2.5, 7.0, 7.1, 14.0, 20.5, 99)] == [1, 1, 1, 2, 2, 3, 3]


def test_measures():
    events = [{"t": 11, "from": 1, "to": 3, "created": ["b", "c"]}, {"t": 20, "from": 3, "to": 2, "created": []},
              {"t": 35, "from": 2, "to": 1, "created": []}]
    decisions = [{"t": t, "desired": d} for t, d in ((5, 1), (11, 3), (15, 3), (20, 2), (29, 2), (35, 1), (39, 1))]
    pods = [{"name": "a", "created": -5, "ready": -1, "gone": None},
            {"name": "b", "created": 11, "ready": 18, "gone": None},
            {"name": "c", "created": 11, "ready": 19, "gone": 22}]
    reqs = [(1.0, 1.0, 1.1, "ok", "a", None), (2.0, 2.0, 2.5, "ok", "a", None), (3.0, 3.0, 3.0, "http_error", None, "x")]
    m = harness.capacity_measures(result(events, decisions, pods, reqs))
    # t = 20: 20.5/s offered, 2 pods x 10/s remain: a scale-down over capacity; t = 35 is not
    assert m["scale_downs_over_capacity"] == 1 and m["scale_downs_over_capacity_list"][0]["t"] == 20
    assert m["settled"] == [{"phase": "spike", "t": 30.0, "replicas": 2, "ideal": 3},
                            {"phase": "idle after", "t": 40.0, "replicas": 1, "ideal": 1}]
    assert m["settled_max_error"] == 1
    assert m["ideal_replica_seconds"] == 10 * 1 + 20 * 3 + 10 * 1
    # pods: a 40 s, b 29 s, c 11 s
    assert m["replica_seconds_vs_ideal"] == round(80 / 80, 3)
    # held for 5 s: the spike's 3 pods until t = 35 (the ramp-free drop at t = 30 + 5 s)
    assert m["ideal_held_replica_seconds"] == 10 * 1 + 25 * 3 + 5 * 1 and m["scale_down_window_s"] == 5.0
    # the ideal rises at t = 10; first pod created after it ready at 18; peak desired 3 (ideal 3)
    assert m["cold_start"]["from_t"] == 10.0 and m["cold_start"]["ready_t"] == 18
    assert m["cold_start"]["peak_replicas"] == 3 and m["cold_start"]["ideal"] == 3
    assert m["p50_s"] in (0.1, 0.5)
