#!/usr/bin/env python3
"""Extract every PromQL expression that deploy/ ships, from the *rendered* manifests.

The live test (check 4) evaluates what this prints, so the manifests cannot drift away from what
is tested: nothing is copied into the test by hand.

Usage:
  extract_promql.py [--root DIR] [--rendered DIR] [--namespace NS] [--pod-regex RE]

  --rendered DIR  a directory of rendered entry points (<name>.yaml, as tests/deploy/run.sh
                  writes them); without it, the entry points below are rendered with
                  `kubectl kustomize`.
  --namespace NS  the namespace the test Prometheus gives the agent's series (default triton-test).
  --pod-regex RE  the pod matcher used where a query is rendered for "all pods" (default .+).

Sources and the substitution rule applied to each (stated here, and repeated in every item's
`substitution` field):

  keda       ScaledObject triggers' `query` (overlay `keda`). The namespace matcher value, which the
             overlay's replacements set to the Deployment's namespace, becomes NS. Pod regexes are
             kept: the test must label its pods so they match (e.g. pod="triton-test-0").
  adapter    prometheus-adapter `metricsQuery` templates (overlay `hpa-prometheus-adapter`,
             ConfigMap triton-prometheus-adapter-rules), rendered the way the adapter does for a
             Pods metric: <<.Series>> -> the series name of `seriesQuery`,
             <<.LabelMatchers>> -> namespace="NS",pod=~"RE", <<.GroupBy>> -> pod.
  recording  PrometheusRule recording rules, unchanged.
  alert      PrometheusRule alert expressions, unchanged (they return nothing unless firing:
             evaluate for errors only; promtool unit tests prove them).
  dashboard  Grafana targets (entry point `grafana`, ConfigMap triton-sidecar-dashboard):
             $namespace / ${namespace} -> NS, $pod -> .*, $model -> .*,
             $__rate_interval -> 1m, $__interval -> 15s, $__range -> 1h.
  readme     the ```promql blocks of deploy/README.md (what a user is told to run): the
             namespace matcher value "triton" becomes NS.
  variable   the dashboard's query variables, `label_values(SELECTOR, LABEL)`: `expr` is
             SELECTOR (same substitution as dashboard), `label` is LABEL. Grafana answers them
             with /api/v1/label/LABEL/values?match[]=SELECTOR; the live test does the same.

Each item also has `needs`: [] when the series exist on any running agent beside a Triton with a
loaded model; ["gpu"] when it reads triton_gpu_* (present only with a GPU); ["drain"] when it reads
triton_sidecar_drains_total (present only after a drain); ["trtllm"] when it reads the TensorRT-LLM
gauges (triton_kv_cache_occupancy_ratio, triton_trtllm_*: present only beside a TensorRT-LLM model). The live test may skip an item whose
needs it cannot meet, and must say so.

Prints a JSON list of {role, source, name, expr, substitution, needs, ...}; KEDA items add
metric_type, threshold and activation_threshold (numbers).
"""
import argparse
import json
import os
import re
import subprocess
import sys

import yaml

ENTRY_POINTS = {
    "keda": "deploy/overlays/keda",
    "hpa-prometheus-adapter": "deploy/overlays/hpa-prometheus-adapter",
    "grafana": "deploy/grafana",
}


def rendered_docs(args):
    out = {}
    for name, path in ENTRY_POINTS.items():
        if args.rendered:
            fn = os.path.join(args.rendered, f"{name}.yaml")
            with open(fn) as f:
                text = f.read()
        else:
            text = subprocess.run(["kubectl", "kustomize", os.path.join(args.root, path)],
                                  check=True, capture_output=True, text=True).stdout
        out[name] = [d for d in yaml.safe_load_all(text) if d]
    return out


def needs(expr):
    n = []
    if "triton_gpu_" in expr:
        n.append("gpu")
    if "triton_sidecar_drains_total" in expr:
        n.append("drain")
    if re.search(r"triton_kv_cache_occupancy_ratio|triton_trtllm_", expr):
        n.append("trtllm")
    return n


def one_line(expr):
    return " ".join(expr.split())


def extract(args):
    docs = rendered_docs(args)
    ns, pod_re = args.namespace, args.pod_regex
    items = []

    # KEDA
    for o in docs["keda"]:
        if o["kind"] != "ScaledObject":
            continue
        so_ns = o["metadata"].get("namespace")
        for t in o["spec"].get("triggers") or []:
            md = t.get("metadata") or {}
            if t.get("type") != "prometheus":
                continue
            q = md["query"].replace(f'namespace="{so_ns}"', f'namespace="{ns}"')
            items.append({
                "role": "keda", "source": f"ScaledObject/{o['metadata']['name']}",
                "name": t.get("name"), "expr": one_line(q),
                "substitution": f'namespace="{so_ns}" -> namespace="{ns}"',
                "metric_type": t.get("metricType"),
                "threshold": float(md["threshold"]),
                "activation_threshold": float(md.get("activationThreshold", "0")),
                "needs": needs(q),
            })

    # prometheus-adapter
    for o in docs["hpa-prometheus-adapter"]:
        if o["kind"] != "ConfigMap" or o["metadata"]["name"] != "triton-prometheus-adapter-rules":
            continue
        cfg = yaml.safe_load(o["data"]["config.yaml"])
        for r in cfg.get("rules") or []:
            series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", r["seriesQuery"]).group(1)
            matchers = f'namespace="{ns}",pod=~"{pod_re}"'
            q = (r["metricsQuery"].replace("<<.Series>>", series)
                 .replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod"))
            items.append({
                "role": "adapter", "source": "ConfigMap/triton-prometheus-adapter-rules",
                "name": (r.get("name") or {}).get("as", series), "expr": one_line(q),
                "substitution": f"<<.Series>> -> {series}, <<.LabelMatchers>> -> {matchers}, <<.GroupBy>> -> pod",
                "needs": needs(q),
            })

    # PrometheusRule (taken from the keda overlay; every overlay renders the same component)
    for o in docs["keda"]:
        if o["kind"] != "PrometheusRule":
            continue
        for g in o["spec"]["groups"]:
            for r in g["rules"]:
                role = "recording" if "record" in r else "alert"
                items.append({
                    "role": role, "source": f"PrometheusRule/{o['metadata']['name']}/{g['name']}",
                    "name": r.get("record") or r.get("alert"), "expr": one_line(r["expr"]),
                    "substitution": "none", "needs": needs(r["expr"]),
                })

    # deploy/README.md's PromQL blocks
    with open(os.path.join(args.root, "deploy", "README.md")) as f:
        readme = f.read()
    for k, block in enumerate(re.findall(r"```promql\n(.*?)```", readme, re.S)):
        q = block.strip().replace('namespace="triton"', f'namespace="{ns}"')
        items.append({
            "role": "readme", "source": "deploy/README.md", "name": f"promql-block-{k}", "expr": one_line(q),
            "substitution": f'namespace="triton" -> namespace="{ns}"', "needs": needs(q),
        })

    # Grafana
    subs = [(r"\$\{namespace\}|\$namespace\b", ns), (r"\$\{pod\}|\$pod\b", ".*"),
            (r"\$\{model\}|\$model\b", ".*"), (r"\$__rate_interval\b", "1m"),
            (r"\$__interval\b", "15s"), (r"\$__range\b", "1h")]
    for o in docs["grafana"]:
        if o["kind"] != "ConfigMap":
            continue
        for key, text in (o.get("data") or {}).items():
            if not key.endswith(".json"):
                continue
            dash = json.loads(text)
            panels = []
            for p in dash.get("panels") or []:
                panels.append(p)
                panels.extend(p.get("panels") or [])
            for v in (dash.get("templating") or {}).get("list") or []:
                if v.get("type") != "query":
                    continue
                vq = v.get("query")
                vq = vq.get("query") if isinstance(vq, dict) else vq
                m = re.fullmatch(r"\s*label_values\(\s*(?:(.+?)\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", vq or "")
                if not m:
                    raise SystemExit(f"dashboard variable {v.get('name')}: not label_values(...): {vq!r}")
                sel = m.group(1) or ""
                for pat, rep in subs:
                    sel = re.sub(pat, rep, sel)
                if "$" in sel:
                    raise SystemExit(f"unsubstituted variable in dashboard variable: {vq}")
                items.append({
                    "role": "variable", "source": f"{key}: variable ${v.get('name')}",
                    "name": v.get("name"), "expr": one_line(sel), "label": m.group(2),
                    "substitution": f"$namespace -> {ns}, $pod -> .*, $model -> .*",
                    "needs": needs(sel),
                })
            for p in panels:
                for t in p.get("targets") or []:
                    expr = t.get("expr")
                    if not expr:
                        continue
                    q = expr
                    for pat, rep in subs:
                        q = re.sub(pat, rep, q)
                    if "$" in q:
                        raise SystemExit(f"unsubstituted variable in dashboard target: {expr}")
                    items.append({
                        "role": "dashboard", "source": f"{key}: {p.get('title')}",
                        "name": t.get("refId"), "expr": one_line(q),
                        "substitution": f"$namespace -> {ns}, $pod -> .*, $model -> .*, "
                                        "$__rate_interval -> 1m, $__interval -> 15s, $__range -> 1h",
                        "needs": needs(q),
                    })
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..")))
    ap.add_argument("--rendered")
    ap.add_argument("--namespace", default="triton-test")
    ap.add_argument("--pod-regex", default=".+")
    args = ap.parse_args()
    items = extract(args)
    roles = {r: sum(1 for i in items if i["role"] == r)
             for r in ("keda", "adapter", "recording", "alert", "dashboard", "variable", "readme")}
    missing = [r for r, n in roles.items() if n == 0]
    if missing:
        raise SystemExit(f"no expressions found for: {', '.join(missing)}")
    json.dump(items, sys.stdout, indent=2)
    sys.stdout.write("\n")
    print("extracted " + ", ".join(f"{n} {r}" for r, n in roles.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
