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
    for e in errs:
        print("FAIL:", e)
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
