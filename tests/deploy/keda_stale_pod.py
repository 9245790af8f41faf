#!/usr/bin/env python3
"""Issue 22: a pod whose utilization is unknown must not scale the fleet down.

    keda_stale_pod.py PROMQL_JSON OUT_DIR

Takes the `utilization` KEDA trigger query as rendered from deploy/ (extract_promql.py's JSON,
so nothing is copied by hand) and evaluates it with `promtool test rules` (promql_expr_test)
over synthetic per-pod series carrying the labels its selector asks for:

  steady      three ready pods at 1.0 each                            -> 3.0
  stale       the third pod's statistics stopped: it publishes no
              utilization and models_without_capacity 1, while it
              still carries its share of the load                      -> 3.0 (the mean of the pods
                                                                          that know stands in)
  cold        a fourth pod whose Triton is still starting publishes
              nothing at all (it gets no traffic)                      -> 3.0 (not extrapolated)
  idle        three idle pods at 0                                    -> 0.0
  half-idle   one pod at 1.5, one at 0, one stale                      -> 2.25
  all stale   no pod knows its utilization                            -> no sample (KEDA's fallback)

Then the control: the same cases against the plain sum() of the selector must fail (the stale
pod's load would leave the sum and read 2.0), so the test can tell the two apart. Exit 0 when
the rendered query passes and the control fails.
"""
import json
import pathlib
import re
import subprocess
import sys

import yaml


def selector_labels(expr: str, family: str) -> dict:
    m = re.search(family + r"\{([^}]*)\}", expr)
    if not m:
        raise SystemExit(f"no {family}{{...}} selector in the query: {expr}")
    labels = {}
    for k, op, v in re.findall(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"', m.group(1)):
        if op != "=":
            raise SystemExit(f"only equality matchers are supported here, got {k}{op}{v!r}")
        labels[k] = v
    return labels


def series(family: str, labels: dict, pod: str, value) -> dict:
    ls = ",".join(f'{k}="{v}"' for k, v in sorted({**labels, "pod": pod, "container": "triton-sidecar"}.items()))
    return {"series": f"{family}{{{ls}}}", "values": f"{value}x10"}


CASES = {
    # name: per pod (utilization or None for absent, models_without_capacity or None), expected
    "steady": ([(1.0, 0), (1.0, 0), (1.0, 0)], 3.0),
    "stale": ([(1.0, 0), (1.0, 0), (None, 1)], 3.0),
    "cold": ([(1.0, 0), (1.0, 0), (None, 1), (None, None)], 3.0),
    "idle": ([(0.0, 0), (0.0, 0), (0.0, 0)], 0.0),
    "half-idle": ([(1.5, 0), (0.0, 0), (None, 1)], 2.25),
    "all stale": ([(None, 1), (None, 1)], None),
}


def test_file(expr: str, labels: dict) -> dict:
    tests = []
    for name, (pods, want) in CASES.items():
        ss = []
        for i, (u, w) in enumerate(pods):
            pod = f"triton-{name.replace(' ', '-')}-{i}"
            if u is not None:
                ss.append(series("triton_pod_utilization", labels, pod, u))
            if w is not None:
                ss.append(series("triton_sidecar_models_without_capacity", labels, pod, w))
        tests.append({
            "interval": "15s",
            "input_series": ss,
            "promql_expr_test": [{
                "expr": expr, "eval_time": "1m",
                "exp_samples": [] if want is None else [{"labels": "{}", "value": want}],
            }],
            "name": name,
        })
    return {"rule_files": [], "evaluation_interval": "15s", "tests": tests}


def run(path: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True)


def check(expr: str, out: pathlib.Path, tag: str) -> int:
    labels = selector_labels(expr, "triton_pod_utilization")
    rendered = out / f"stale-pod-{tag}.test.yaml"
    rendered.write_text(yaml.safe_dump(test_file(expr, labels), sort_keys=False))
    r = run(rendered)
    print(f"rendered utilization query: {expr}")
    if r.returncode != 0:
        print(r.stdout + r.stderr)
        print("FAIL: the rendered query reads a stale pod's load as gone (or misreads another case)")
        return 1
    sel = "triton_pod_utilization{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    control = out / f"stale-pod-{tag}-control.test.yaml"
    control.write_text(yaml.safe_dump(test_file(f"sum({sel})", labels), sort_keys=False))
    c = run(control)
    if c.returncode == 0:
        print("FAIL: the control (a plain sum) passed too: the cases do not tell the rules apart")
        return 1
    got = re.findall(r"exp: (.*)\n\s*got: (.*)", c.stdout + c.stderr)
    print(f"  ok: {len(CASES)} cases; the control sum({sel}) fails as it must, "
          f"{len(got)} case(s) wrong: " + "; ".join(f"expected {e.strip()}, got {g.strip()}" for e, g in got))
    return 0


def main() -> int:
    items = json.loads(pathlib.Path(sys.argv[1]).read_text())
    out = pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    exprs = sorted({it["expr"] for it in items if it["role"] == "keda" and it["name"] == "utilization"})
    if not exprs:
        raise SystemExit("no KEDA trigger named utilization in the extracted queries")
    rc = 0
    for i, expr in enumerate(exprs):
        rc |= check(expr, out, str(i))
    print(f"{len(exprs)} distinct rendered utilization queries, {'all pass' if rc == 0 else 'FAILED'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
