#!/usr/bin/env python3
"""Issue 21: the KServe example in KServe >= 0.16's `Standard` mode is the same install.

    kserve_standard.py RENDERED_EXAMPLE_KSERVE_YAML RENDERED_FIXTURE_KSERVE_STANDARD_YAML

The example keeps `serving.kserve.io/deploymentMode: RawDeployment`, which KServe 0.14 to 0.16
all read. From the rename (kserve/kserve#4608; pkg/constants/constants.go at commit 92899a1f:
`LegacyRawDeployment DeploymentModeType = "RawDeployment" // deprecated: use Standard`,
`Standard DeploymentModeType = "Standard"`, and GetDeploymentMode maps the legacy value to
Standard) the same mode is called `Standard`. The predictor Deployment's name does not depend on
the mode: PredictorServiceName(name) = name + "-" + "predictor" (same file), which the
ScaledObject's scaleTargetRef must name.

tests/deploy/fixtures/kserve-standard patches the annotation (its JSON patch first tests that it
was RawDeployment). Checks, object by object:
  - the two renders hold the same objects (kind, name, namespace);
  - the only difference is that annotation, RawDeployment -> Standard;
  - in both: the ScaledObject targets `<InferenceService>-predictor`, the predictor Service's
    ports (derived as KServe's createDefaultSvc does, kserve_service.py) are the same, and so
    is the NetworkPolicy.
Self-test: a Standard render with anything else changed (the ScaledObject's target) must fail.
run.sh validates the fixture's render strictly (kubernetes-validate, validate_crds.py) and
check_manifests.py checks it like the example.
"""
import copy
import pathlib
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from kserve_service import default_service_ports  # noqa: E402

MODE = "serving.kserve.io/deploymentMode"


def key(o):
    return (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))


def diffs(a, b, path=""):
    """Paths where two YAML trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += diffs(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diffs(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} -> {b!r}"]


def summary(objs):
    isvc = next(o for o in objs if o["kind"] == "InferenceService")
    so = next(o for o in objs if o["kind"] == "ScaledObject")
    rt = next(o for o in objs if o["kind"] == "ServingRuntime")
    np_ = next(o for o in objs if o["kind"] == "NetworkPolicy")
    return {
        "mode": isvc["metadata"]["annotations"][MODE],
        "target": so["spec"]["scaleTargetRef"]["name"],
        "predictor": f"{isvc['metadata']['name']}-predictor",
        "ports": [default_service_ports(rt["spec"]["containers"], later) for later in (False, True)],
        "policy": np_["spec"],
    }


def errors(raw, std):
    errs = []
    by_raw, by_std = {key(o): o for o in raw}, {key(o): o for o in std}
    if set(by_raw) != set(by_std):
        errs.append(f"different objects: {sorted(set(by_raw) ^ set(by_std))}")
    want = [f".metadata.annotations.{MODE}: 'RawDeployment' -> 'Standard'"]
    for k in sorted(set(by_raw) & set(by_std), key=str):
        d = diffs(by_raw[k], by_std[k])
        if k[0] == "InferenceService":
            if d != want:
                errs.append(f"InferenceService/{k[1]}: {d} (want only {want})")
        elif d:
            errs.append(f"{k[0]}/{k[1]} differs: {d[:3]}")
    s_raw, s_std = summary(raw), summary(std)
    for label, s in (("RawDeployment", s_raw), ("Standard", s_std)):
        if s["target"] != s["predictor"]:
            errs.append(f"{label}: the ScaledObject targets {s['target']!r}, not {s['predictor']!r}")
    if s_raw["ports"] != s_std["ports"]:
        errs.append(f"the predictor Service's ports differ: {s_raw['ports']} vs {s_std['ports']}")
    if s_raw["policy"] != s_std["policy"]:
        errs.append("the NetworkPolicy differs")
    if (s_raw["mode"], s_std["mode"]) != ("RawDeployment", "Standard"):
        errs.append(f"modes {s_raw['mode']!r}, {s_std['mode']!r}: want 'RawDeployment', 'Standard'")
    return errs, s_std


def main() -> int:
    raw = [d for d in yaml.safe_load_all(pathlib.Path(sys.argv[1]).read_text()) if d]
    std = [d for d in yaml.safe_load_all(pathlib.Path(sys.argv[2]).read_text()) if d]
    errs, s = errors(raw, std)
    print(f"Standard render: {len(std)} objects, mode {s['mode']}, ScaledObject -> {s['target']}, "
          f"predictor Service ports " + ", ".join(f"{p['port']}->{p['targetPort']}" for p in s["ports"][1]))
    worse = copy.deepcopy(std)
    next(o for o in worse if o["kind"] == "ScaledObject")["spec"]["scaleTargetRef"]["name"] = "resnet-predictor-default"
    bad = errors(raw, worse)[0]
    if not any("ScaledObject" in e for e in bad):
        errs.append("self-test: a Standard render with another scale target passes")
    else:
        print(f"self-test: a Standard render with another scale target is rejected ({len(bad)} problems)")
    for e in errs:
        print("FAIL:", e)
    print("ok: the Standard render differs from the example in the mode annotation alone" if not errs
          else f"{len(errs)} problem(s)")
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
