#!/usr/bin/env python3
"""Write a plain Prometheus config that scrapes local processes the way the *rendered*
PodMonitor (or ServiceMonitor) makes the Prometheus Operator scrape a pod (used by
test_promql_live.py and tests/autoscale).

Usage:
  prometheus_config.py --out DIR --namespace NS --targets JSON [--interval-cap 5s]
                       [--entry-point deploy/overlays/keda] [--root DIR]

  --targets JSON  {"<pod name>": {"<monitor endpoint port>": "127.0.0.1:<port>", ...}, ...}
                  e.g. {"triton-7c9d8f6b5-lv7qz": {"metrics": "127.0.0.1:41003",
                                                   "triton-metrics": "127.0.0.1:41002"}}
                  An optional "labels" key per pod overrides pod labels of the Deployment's
                  template for that pod (e.g. {"app.kubernetes.io/instance": "other"}).
  --eval-interval D  rule evaluation interval (default: the interval cap). kube-prometheus-stack
                  evaluates every 30s.
  --extra-jobs JSON  scrape configs appended unchanged (the live test's kube-state-metrics and
                  KEDA stand-ins).

Writes DIR/prometheus.yml and DIR/rules.yml; prints a JSON summary on stdout.

What is taken from the rendered manifests (`kubectl kustomize <entry point>`), not by hand:
  * the ServiceMonitor's endpoints: port, path, interval, scrapeTimeout, relabelings;
  * the container that owns each port (from the Deployment), which becomes the `container`
    label as the operator sets it; the Service's name (the `service` and `job` labels);
  * the PrometheusRule's groups, as DIR/rules.yml (loaded by this Prometheus: a real rule
    evaluation of every recording rule and alert).

The rendered entry point has exactly one monitor, a PodMonitor (base) or a ServiceMonitor
(components/servicemonitor); `podTargetLabels` are emulated for both.

How a monitor is emulated without Kubernetes:
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
    ap.add_argument("--eval-interval")
    ap.add_argument("--extra-jobs", default="[]", help="JSON list of scrape configs appended as they are")
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

    monitors = [d for d in docs if d["kind"] in ("ServiceMonitor", "PodMonitor")]
    if len(monitors) != 1:
        raise SystemExit(f"expected one ServiceMonitor or PodMonitor in {args.entry_point}, found {len(monitors)}")
    mon, deploy, rule = monitors[0], one("Deployment"), one("PrometheusRule")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    mname = mon["metadata"]["name"]
    if mon["kind"] == "ServiceMonitor":
        svc = one("Service")
        # The ServiceMonitor must select the Service, and the Service the pods (else it scrapes nothing).
        sel = mon["spec"]["selector"].get("matchLabels", {})
        if any(svc["metadata"].get("labels", {}).get(k) != v for k, v in sel.items()):
            raise SystemExit(f"ServiceMonitor selector {sel} does not select Service {svc['metadata']['name']}")
        if any(pod_labels.get(k) != v for k, v in svc["spec"]["selector"].items()):
            raise SystemExit("Service selector does not select the Deployment's pods")
        endpoints = mon["spec"]["endpoints"]
        svc_ports = {p["name"] for p in svc["spec"]["ports"]}
        svc_name = svc["metadata"]["name"]
    else:
        sel = mon["spec"]["selector"].get("matchLabels", {})
        if any(pod_labels.get(k) != v for k, v in sel.items()):
            raise SystemExit(f"PodMonitor selector {sel} does not select the Deployment's pods")
        endpoints = mon["spec"]["podMetricsEndpoints"]
        svc_ports, svc_name = None, None

    pod_spec = deploy["spec"]["template"]["spec"]
    containers = list(pod_spec.get("containers", [])) + list(pod_spec.get("initContainers", []))
    port_owner = {p["name"]: c["name"] for c in containers for p in c.get("ports", []) if "name" in p}

    def sanitize(label):
        return re.sub(r"[^a-zA-Z0-9_]", "_", label)

    # podTargetLabels: the operator copies each named pod label onto the target, sanitized.
    ptl = [{"source_labels": [f"__meta_kubernetes_pod_label_{sanitize(lb)}"], "target_label": sanitize(lb),
            "regex": "(.+)", "replacement": "${1}"} for lb in mon["spec"].get("podTargetLabels") or []]

    jobs, summary = [], []
    for i, ep in enumerate(endpoints):
        port = ep["port"]
        if svc_ports is not None and port not in svc_ports:
            raise SystemExit(f"ServiceMonitor endpoint port {port!r} is not a port of Service {svc_name}")
        if port not in port_owner:
            raise SystemExit(f"no container of the Deployment has a port named {port!r}")
        interval = min(seconds(ep.get("interval", "30s")), cap)
        timeout = min(seconds(ep.get("scrapeTimeout", "10s")), interval)
        static = []
        for pod, addrs in targets.items():
            if port not in addrs:
                raise SystemExit(f"--targets gives pod {pod} no address for endpoint port {port!r}")
            labels = {**pod_labels, **(addrs.get("labels") or {})}
            meta = {
                "__meta_kubernetes_namespace": args.namespace,
                "__meta_kubernetes_pod_name": pod,
                "__meta_kubernetes_pod_container_name": port_owner[port],
                **{f"__meta_kubernetes_pod_label_{sanitize(k)}": v for k, v in labels.items()},
            }
            if svc_name:
                meta["__meta_kubernetes_service_name"] = svc_name
            static.append({"targets": [addrs[port]], "labels": meta})
        if mon["kind"] == "ServiceMonitor":
            # What prometheus-operator generates for every ServiceMonitor endpoint.
            operator = [
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
                {"target_label": "endpoint", "replacement": port},
            ]
            job = f"serviceMonitor/{args.namespace}/{mname}/{i}"
        else:
            # ... and for every PodMonitor endpoint (job: <namespace>/<name>).
            operator = [
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"target_label": "job", "replacement": f"{args.namespace}/{mname}"},
                {"target_label": "endpoint", "replacement": port},
            ]
            job = f"podMonitor/{args.namespace}/{mname}/{i}"
        own = [translate_relabel(r) for r in ep.get("relabelings") or []]
        jobs.append({
            "job_name": job,
            "scrape_interval": dur(interval),
            "scrape_timeout": dur(timeout),
            "metrics_path": ep.get("path", "/metrics"),
            "scheme": ep.get("scheme", "http"),
            "static_configs": static,
            "relabel_configs": operator + [dict(r) for r in ptl] + own,
            "metric_relabel_configs": [translate_relabel(r) for r in ep.get("metricRelabelings") or []],
        })
        summary.append({"job": job, "monitor": mon["kind"], "port": port, "container": port_owner[port],
                        "interval": dur(interval), "manifest_interval": ep.get("interval", "30s"),
                        "relabelings": len(own), "pod_target_labels": mon["spec"].get("podTargetLabels") or []})

    os.makedirs(args.out, exist_ok=True)
    rules_path = os.path.join(args.out, "rules.yml")
    with open(rules_path, "w") as f:
        yaml.safe_dump({"groups": rule["spec"]["groups"]}, f, sort_keys=False)
    with open(os.path.join(args.out, "prometheus.yml"), "w") as f:
        yaml.safe_dump({
            "global": {"scrape_interval": dur(cap),
                       "evaluation_interval": dur(seconds(args.eval_interval) if args.eval_interval else cap)},
            "rule_files": [rules_path],
            "scrape_configs": jobs + json.loads(args.extra_jobs),
        }, f, sort_keys=False)
    n_rules = sum(len(g["rules"]) for g in rule["spec"]["groups"])
    json.dump({"jobs": summary, "rules": n_rules}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
