#!/usr/bin/env python3
"""Write a plain Prometheus config that scrapes local processes the way the *rendered*
ServiceMonitor makes the Prometheus Operator scrape a pod (used by test_promql_live.py).

Usage:
  prometheus_config.py --out DIR --namespace NS --targets JSON [--interval-cap 5s]
                       [--entry-point deploy/overlays/keda] [--root DIR]

  --targets JSON  {"<pod name>": {"<ServiceMonitor endpoint port>": "127.0.0.1:<port>", ...}, ...}
                  e.g. {"triton-7c9d8f6b5-lv7qz": {"metrics": "127.0.0.1:41003",
                                                   "triton-metrics": "127.0.0.1:41002"}}

Writes DIR/prometheus.yml and DIR/rules.yml; prints a JSON summary on stdout.

What is taken from the rendered manifests (`kubectl kustomize <entry point>`), not by hand:
  * the ServiceMonitor's endpoints: port, path, interval, scrapeTimeout, relabelings;
  * the container that owns each port (from the Deployment), which becomes the `container`
    label as the operator sets it; the Service's name (the `service` and `job` labels);
  * the PrometheusRule's groups, as DIR/rules.yml (loaded by this Prometheus: a real rule
    evaluation of every recording rule and alert).

How a ServiceMonitor is emulated without Kubernetes:
  * each pod's address for a port is a `static_configs` target whose labels carry the
    `__meta_kubernetes_*` labels Kubernetes service discovery would give it (namespace, pod,
    container, service);
  * `relabel_configs` are first the relabelings the operator generates for every
    ServiceMonitor endpoint (namespace, service, pod, container, job <- service name,
    endpoint <- port name), then the endpoint's own `relabelings`, translated to Prometheus'
    snake_case keys. The `__meta_*` labels are dropped after relabeling, as in Kubernetes SD;
  * the job name follows the operator: serviceMonitor/<namespace>/<name>/<endpoint index>;
  * the scrape interval is the endpoint's, capped at --interval-cap (default 5s: the agent's
    5s is kept; Triton's 30s becomes 5s so that it is scraped within the test's first seconds.
    No extracted query reads Triton's nv_* series, so this changes no asserted value).
    scrapeTimeout is capped at the resulting interval.
"""
import argparse
import json
import os
import re
import subprocess
import sys

import yaml

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def seconds(d):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(d))
    if not m:
        raise SystemExit(f"cannot parse duration {d!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def dur(s):
    return f"{int(s * 1000)}ms" if s < 1 or s != int(s) else f"{int(s)}s"


RELABEL_KEYS = {"sourceLabels": "source_labels", "targetLabel": "target_label", "separator": "separator",
                "regex": "regex", "modulus": "modulus", "replacement": "replacement", "action": "action"}


def translate_relabel(r):
    out = {}
    for k, v in r.items():
        if k not in RELABEL_KEYS:
            raise SystemExit(f"relabeling key {k!r} has no translation here: {r}")
        out[RELABEL_KEYS[k]] = v.lower() if k == "action" else v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..")))
    ap.add_argument("--entry-point", default="deploy/overlays/keda")
    ap.add_argument("--out", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--targets", required=True)
    ap.add_argument("--interval-cap", default="5s")
    args = ap.parse_args()
    targets = json.loads(args.targets)
    cap = seconds(args.interval_cap)

    text = subprocess.run(["kubectl", "kustomize", os.path.join(args.root, args.entry_point)],
                          check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(text) if d]

    def one(kind):
        found = [d for d in docs if d["kind"] == kind]
        if len(found) != 1:
            raise SystemExit(f"expected one {kind} in {args.entry_point}, found {len(found)}")
        return found[0]

    sm, deploy, svc, rule = one("ServiceMonitor"), one("Deployment"), one("Service"), one("PrometheusRule")
    # The ServiceMonitor must select the Service, and the Service the pods (else it scrapes nothing).
    sel = sm["spec"]["selector"].get("matchLabels", {})
    if any(svc["metadata"].get("labels", {}).get(k) != v for k, v in sel.items()):
        raise SystemExit(f"ServiceMonitor selector {sel} does not select Service {svc['metadata']['name']}")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    if any(pod_labels.get(k) != v for k, v in svc["spec"]["selector"].items()):
        raise SystemExit("Service selector does not select the Deployment's pods")

    pod_spec = deploy["spec"]["template"]["spec"]
    containers = list(pod_spec.get("containers", [])) + list(pod_spec.get("initContainers", []))
    port_owner = {p["name"]: c["name"] for c in containers for p in c.get("ports", []) if "name" in p}
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    svc_name = svc["metadata"]["name"]

    jobs, summary = [], []
    for i, ep in enumerate(sm["spec"]["endpoints"]):
        port = ep["port"]
        if port not in svc_ports:
            raise SystemExit(f"ServiceMonitor endpoint port {port!r} is not a port of Service {svc_name}")
        if port not in port_owner:
            raise SystemExit(f"no container of the Deployment has a port named {port!r}")
        interval = min(seconds(ep.get("interval", "30s")), cap)
        timeout = min(seconds(ep.get("scrapeTimeout", "10s")), interval)
        static = []
        for pod, addrs in targets.items():
            if port not in addrs:
                raise SystemExit(f"--targets gives pod {pod} no address for endpoint port {port!r}")
            static.append({"targets": [addrs[port]], "labels": {
                "__meta_kubernetes_namespace": args.namespace,
                "__meta_kubernetes_service_name": svc_name,
                "__meta_kubernetes_pod_name": pod,
                "__meta_kubernetes_pod_container_name": port_owner[port],
            }})
        operator = [  # what prometheus-operator generates for every ServiceMonitor endpoint
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
            {"target_label": "endpoint", "replacement": port},
        ]
        own = [translate_relabel(r) for r in ep.get("relabelings") or []]
        job = f"serviceMonitor/{args.namespace}/{sm['metadata']['name']}/{i}"
        jobs.append({
            "job_name": job,
            "scrape_interval": dur(interval),
            "scrape_timeout": dur(timeout),
            "metrics_path": ep.get("path", "/metrics"),
            "scheme": ep.get("scheme", "http"),
            "static_configs": static,
            "relabel_configs": operator + own,
            "metric_relabel_configs": [translate_relabel(r) for r in ep.get("metricRelabelings") or []],
        })
        summary.append({"job": job, "port": port, "container": port_owner[port],
                        "interval": dur(interval), "manifest_interval": ep.get("interval", "30s"),
                        "relabelings": len(own)})

    os.makedirs(args.out, exist_ok=True)
    rules_path = os.path.join(args.out, "rules.yml")
    with open(rules_path, "w") as f:
        yaml.safe_dump({"groups": rule["spec"]["groups"]}, f, sort_keys=False)
    with open(os.path.join(args.out, "prometheus.yml"), "w") as f:
        yaml.safe_dump({
            "global": {"scrape_interval": dur(cap), "evaluation_interval": dur(cap)},
            "rule_files": [rules_path],
            "scrape_configs": jobs,
        }, f, sort_keys=False)
    n_rules = sum(len(g["rules"]) for g in rule["spec"]["groups"])
    json.dump({"jobs": summary, "rules": n_rules}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
