#!/usr/bin/env python3
"""Issue 21: the KServe example, as KServe would serve it.

    kserve_service.py RENDERED_KSERVE_YAML

1. The predictor's default Service, derived from the rendered ServingRuntime the way KServe's
   createDefaultSvc does (pkg/controller/v1beta1/inferenceservice/reconcilers/service/
   service_reconciler.go). Two stored versions of kserve/kserve were read: commit 00217d18
   and commit f3e8891b (the later one names an unnamed first port `http` and sets appProtocol
   h2c on gRPC ports); the port rule is the same in both: the first container (or the
   transformer), its FIRST port becomes Service port 80 (CommonDefaultHttpPort) targeting that
   containerPort; every further port keeps its number; no ports: 80 -> 8080
   (InferenceServiceDefaultHttpPort). Port 80 must reach Triton's REST port (--http-port) and
   gRPC (--grpc-port) must be exposed. A self-test feeds the old runtime (only h2c 9000
   declared) and expects the check to fail.
2. A second namespace and name: a copy of the example with only `namespace:` and the
   InferenceService's name and instance label changed renders a ScaledObject on
   `<name>-predictor`, every query matcher in the new namespace and instance, the KEDA-errors
   alert on the new ScaledObject and the NetworkPolicy on the new pods.
3. The same for the direct variant (deploy/examples/kserve-direct, KEDA's metrics-api scaler
   on the agents), on that copy, with KEDA's namespace changed in its params.yaml: the metrics
   Service in the new namespace on the new InferenceService's pods, every trigger's URL host
   `triton-sidecar-metrics.<new namespace>.svc`, the ScaledObject and alert as in 2, and the
   policy admitting the new KEDA namespace to 8003. Self-test: the unchanged example's render
   must fail these checks.
"""
import copy
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy/examples/kserve"


def default_service_ports(containers: list, later: bool) -> list:
    c = next((x for x in containers if x.get("name") == "transformer-container"), containers[0])
    ports = c.get("ports") or []
    if not ports:
        return [{"name": "<component>", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
    first = ports[0]
    out = [{"name": first.get("name") or ("http" if later else ""), "port": 80,
            "targetPort": first["containerPort"], "protocol": first.get("protocol", "TCP")}]
    for p in ports[1:]:
        out.append({"name": p.get("name", ""), "port": p["containerPort"], "targetPort": p["containerPort"],
                    "protocol": p.get("protocol") or "TCP"})
    return out


def arg(container: dict, flag: str):
    for a in container.get("args") or []:
        m = re.fullmatch(re.escape(flag) + r"=(\d+)", str(a))
        if m:
            return int(m.group(1))
    return None


def port_errors(runtime: dict) -> tuple:
    cs = runtime["spec"]["containers"]
    triton = cs[0]
    http, grpc = arg(triton, "--http-port") or 8000, arg(triton, "--grpc-port") or 8001
    errs, tables = [], {}
    for label, later in (("kserve@00217d18", False), ("kserve@f3e8891b", True)):
        ports = default_service_ports(cs, later)
        tables[label] = ports
        p80 = next(p for p in ports if p["port"] == 80)
        if p80["targetPort"] != http:
            errs.append(f"{label}: Service port 80 targets {p80['targetPort']}, not Triton's REST --http-port {http}")
        if not any(p["targetPort"] == grpc for p in ports):
            errs.append(f"{label}: Triton's gRPC --grpc-port {grpc} is not in the Service")
    return errs, tables


def kustomize(path):
    r = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr)
        return None
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def direct_errors(out: list, ns: str, name: str, keda_ns: str) -> list:
    """What the direct variant's render must say for InferenceService `name` in `ns`."""
    errs = []
    so = next(d for d in out if d["kind"] == "ScaledObject")
    svc = next((d for d in out if d["kind"] == "Service" and d["metadata"]["name"] == "triton-sidecar-metrics"), None)
    hosts = {re.sub(r"^http://([^/:]+).*$", r"\1", t["metadata"].get("url", "")) for t in so["spec"]["triggers"]}
    rule = next(d for d in out if d["kind"] == "PrometheusRule")
    alert = next(r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == "TritonKedaScalerErrors")
    np_ = next(d for d in out if d["kind"] == "NetworkPolicy")
    keda_rules = [r for r in np_["spec"]["ingress"] if [p.get("port") for p in r.get("ports") or []] == [8003]]
    for ok, what in [
        ({t["type"] for t in so["spec"]["triggers"]} == {"metrics-api"}, "metrics-api triggers only"),
        (hosts == {f"triton-sidecar-metrics.{ns}.svc"}, f"URL hosts {sorted(hosts)}"),
        (svc is not None and svc["metadata"].get("namespace") == ns, f"the metrics Service's namespace {svc and svc['metadata'].get('namespace')}"),
        (svc is not None and svc["spec"]["selector"] == {"triton-sidecar.io/agent": "true", "serving.kserve.io/inferenceservice": name},
         f"the metrics Service's selector {svc and svc['spec']['selector']}"),
        (so["spec"]["scaleTargetRef"]["name"] == f"{name}-predictor", f"scaleTargetRef {so['spec']['scaleTargetRef']['name']}"),
        (so["metadata"]["name"] == name and so["metadata"].get("namespace") == ns, f"ScaledObject {so['metadata'].get('namespace')}/{so['metadata']['name']}"),
        (set(re.findall(r'scaledObject="([^"]*)"', alert["expr"])) == {name}, "the KEDA-errors alert's scaledObject"),
        (np_["spec"]["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": name}, "the NetworkPolicy's pods"),
        ([r["from"][0]["namespaceSelector"]["matchLabels"].get("kubernetes.io/metadata.name") for r in keda_rules] == [keda_ns],
         f"KEDA's rule (8003) admits {[r['from'] for r in keda_rules]}"),
    ]:
        if not ok:
            errs.append(what)
    return errs


def main() -> int:
    docs = [d for d in yaml.safe_load_all(pathlib.Path(sys.argv[1]).read_text()) if d]
    rt = next(d for d in docs if d["kind"] == "ServingRuntime")
    errs, tables = port_errors(rt)
    for label, ports in tables.items():
        print(f"default Service of <isvc>-predictor ({label}): " +
              ", ".join(f"{p['name'] or '-'} {p['port']}->{p['targetPort']}/{p['protocol']}" for p in ports))
    old = copy.deepcopy(rt)
    old["spec"]["containers"][0]["ports"] = [{"containerPort": 9000, "name": "h2c", "protocol": "TCP"}]
    if not port_errors(old)[0]:
        errs.append("self-test: the old runtime (only h2c 9000) passes the port check")
    else:
        print(f"self-test: the old runtime is rejected: {port_errors(old)[0][0]}")

    with tempfile.TemporaryDirectory() as td:
        copy_dir = pathlib.Path(td) / "deploy/examples/kserve-team-b"
        shutil.copytree(EXAMPLE, copy_dir)
        shutil.copytree(ROOT / "deploy/components", pathlib.Path(td) / "deploy/components")
        k = copy_dir / "kustomization.yaml"
        k.write_text(re.sub(r"(?m)^namespace: ml-serving$", "namespace: team-b", k.read_text()))
        i = copy_dir / "inferenceservice.yaml"
        t = i.read_text()
        t = re.sub(r"(?m)^  name: resnet$", "  name: llama-3", t)
        t = t.replace("app.kubernetes.io/instance: resnet", "app.kubernetes.io/instance: llama-3")
        i.write_text(t)
        r = subprocess.run(["kubectl", "kustomize", str(copy_dir)], capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr)
            return 1
        out = [d for d in yaml.safe_load_all(r.stdout) if d]
    so = next(d for d in out if d["kind"] == "ScaledObject")
    queries = " ".join(t["metadata"]["query"] for t in so["spec"]["triggers"])
    ns = set(re.findall(r'namespace="([^"]*)"', queries))
    inst = set(re.findall(r'app_kubernetes_io_instance="([^"]*)"', queries))
    rule = next(d for d in out if d["kind"] == "PrometheusRule")
    alert = next(r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == "TritonKedaScalerErrors")
    np_ = next(d for d in out if d["kind"] == "NetworkPolicy")
    checks = [
        (so["spec"]["scaleTargetRef"]["name"] == "llama-3-predictor", f"scaleTargetRef {so['spec']['scaleTargetRef']['name']}"),
        (so["metadata"]["name"] == "llama-3" and so["metadata"]["namespace"] == "team-b", f"ScaledObject {so['metadata']}"),
        (ns == {"team-b"}, f"namespace matchers {ns}"),
        (inst == {"llama-3"}, f"instance matchers {inst}"),
        (set(re.findall(r'scaledObject="([^"]*)"', alert["expr"])) == {"llama-3"}, "the KEDA-errors alert's scaledObject"),
        (np_["spec"]["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": "llama-3"}, "the NetworkPolicy's pods"),
    ]
    for ok, what in checks:
        if not ok:
            errs.append(f"second namespace: {what}")
    print("second namespace (team-b, InferenceService llama-3): " + ("every name and matcher follows" if all(c[0] for c in checks) else "FAILED"))

    # 3. The direct variant on the team-b copy, KEDA in keda-system.
    with tempfile.TemporaryDirectory() as td:
        base = pathlib.Path(td) / "deploy"
        shutil.copytree(ROOT / "deploy/components", base / "components")
        shutil.copytree(EXAMPLE, base / "examples/kserve")
        shutil.copytree(ROOT / "deploy/examples/kserve-direct", base / "examples/kserve-direct")
        original = kustomize(base / "examples/kserve-direct")
        if original is None:
            return 1
        k = base / "examples/kserve/kustomization.yaml"
        k.write_text(re.sub(r"(?m)^namespace: ml-serving$", "namespace: team-b", k.read_text()))
        i = base / "examples/kserve/inferenceservice.yaml"
        t = re.sub(r"(?m)^  name: resnet$", "  name: llama-3", i.read_text())
        i.write_text(t.replace("app.kubernetes.io/instance: resnet", "app.kubernetes.io/instance: llama-3"))
        prm = base / "examples/kserve-direct/params.yaml"
        prm.write_text(re.sub(r"(?m)^  kedaNamespace: keda$", "  kedaNamespace: keda-system", prm.read_text()))
        moved = kustomize(base / "examples/kserve-direct")
        if moved is None:
            return 1
    failed = direct_errors(moved, "team-b", "llama-3", "keda-system")
    errs += [f"direct, second namespace: {e}" for e in failed]
    print("direct variant, second namespace (team-b, llama-3, KEDA in keda-system): " +
          ("every name, URL host and matcher follows" if not failed else "FAILED"))
    if not direct_errors(original, "team-b", "llama-3", "keda-system"):
        errs.append("self-test: the unchanged direct example passes the second-namespace checks")
    else:
        print("self-test: the unchanged direct example (ml-serving, resnet, keda) fails them")
    for e in errs:
        print("FAIL:", e)
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
