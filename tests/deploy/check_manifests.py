#!/usr/bin/env python3
"""Structural checks on the rendered manifests (check 2, CRD half, and the deployment rules).

Usage: check_manifests.py RENDER_DIR REPO_ROOT

RENDER_DIR holds one `<entry-point>.yaml` per rendered kustomize entry point (tests/deploy/run.sh
writes them). Built-in kinds are schema-validated by kubernetes-validate in run.sh; this script
covers what no schema here can:

  * CRD kinds, for the fields their controllers require:
      ScaledObject (KEDA), ServiceMonitor, PodMonitor, PrometheusRule (Prometheus Operator),
      NodePool (Karpenter v1);
  * the rules of issue 8 that a schema cannot express: the preStop port is the *number* 8004,
    probes, securityContext, the grace-period arithmetic, the NetworkPolicy's closed admin port,
    the native-sidecar startupProbe on /livez, KEDA's single-series queries and namespace
    matchers, runbook anchors.

Prints one line per check and ends with 'N passed, N failed'. Exit status 1 on any failure.
"""
import copy
import os
import re
import sys

import yaml

AGENT = "triton-sidecar"
TRITON = "triton"
ADMIN_PORT = 8004

results = []  # (ok, name, detail)


def check(ok, name, detail=""):
    results.append((bool(ok), name, detail))
    return bool(ok)


def duration_s(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text).strip())
    if not m:
        raise ValueError(f"bad duration {text!r}")
    n, unit = float(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def find_container(spec, name):
    """Returns (container, where) with where 'containers' or 'initContainers'."""
    for where in ("containers", "initContainers"):
        for c in spec.get(where) or []:
            if c.get("name") == name:
                return c, where
    return None, None


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


# --------------------------------------------------------------------------------------------
# Deployment rules (issue 8, base and components)
# --------------------------------------------------------------------------------------------
def deployment_errors(dep):
    """Returns a list of problems with the Triton Deployment; empty when it is right.

    Kept as a function so the self-test below can feed it broken copies."""
    errs = []
    spec = pod_spec(dep)
    triton, _ = find_container(spec, TRITON)
    agent, where = find_container(spec, AGENT)
    if triton is None or agent is None:
        return [f"containers {TRITON!r} and {AGENT!r} must both exist"]

    # preStop: httpGet to the number 8004 /wait-for-drain, or exec of the installed binary.
    pre = (triton.get("lifecycle") or {}).get("preStop") or {}
    if "httpGet" in pre:
        port = pre["httpGet"].get("port")
        # A named port would be looked up among Triton's own ports, where it does not exist.
        if not (isinstance(port, int) and not isinstance(port, bool) and port == ADMIN_PORT):
            errs.append(f"preStop httpGet port must be the number {ADMIN_PORT}, got {port!r}")
        if pre["httpGet"].get("path") != "/wait-for-drain":
            errs.append(f"preStop httpGet path must be /wait-for-drain, got {pre['httpGet'].get('path')!r}")
    elif "exec" in pre:
        cmd = pre["exec"].get("command") or []
        if len(cmd) < 2 or not cmd[0].endswith("/triton-sidecar") or cmd[1] != "drain":
            errs.append(f"preStop exec must run '<dir>/triton-sidecar drain', got {cmd!r}")
        hook_dir = os.path.dirname(cmd[0]) if cmd else ""
        installer = [c for c in spec.get("initContainers") or []
                     if (c.get("args") or [])[:1] == ["install"]]
        if not installer or (installer[0].get("args") or [None, None])[1] != hook_dir:
            errs.append(f"an init container must run 'install {hook_dir}'")
        mounts = {m["mountPath"]: m["name"] for m in triton.get("volumeMounts") or []}
        vols = {v["name"]: v for v in spec.get("volumes") or []}
        if hook_dir not in mounts or "emptyDir" not in vols.get(mounts.get(hook_dir), {}):
            errs.append(f"Triton must mount an emptyDir at {hook_dir}")
    else:
        errs.append("Triton has no preStop hook")

    args = triton.get("args") or []
    exit_timeout = [a for a in args if a.startswith("--exit-timeout-secs=")]
    if not exit_timeout:
        errs.append("Triton args must state --exit-timeout-secs")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe not in triton:
            errs.append(f"Triton has no {probe}")

    # Agent probes.
    rp = agent.get("readinessProbe") or {}
    if (rp.get("httpGet") or {}).get("path") != "/readyz" or rp.get("periodSeconds") != 1 \
            or rp.get("failureThreshold") != 1:
        errs.append("agent readinessProbe must be /readyz with periodSeconds 1, failureThreshold 1")
    if ((agent.get("livenessProbe") or {}).get("httpGet") or {}).get("path") != "/livez":
        errs.append("agent livenessProbe must be /livez")
    sp = agent.get("startupProbe")
    if sp is not None and (sp.get("httpGet") or {}).get("path") != "/livez":
        errs.append("agent startupProbe must use /livez, never /readyz (native-sidecar deadlock)")
    if where == "initContainers":
        if agent.get("restartPolicy") != "Always":
            errs.append("agent as an init container needs restartPolicy: Always (native sidecar)")
    res = agent.get("resources") or {}
    if not (res.get("requests") and res.get("limits")):
        errs.append("agent needs resource requests and limits")
    env = {e["name"]: e.get("value") for e in agent.get("env") or []}
    if env.get("NVIDIA_VISIBLE_DEVICES") != "all" or env.get("NVIDIA_DRIVER_CAPABILITIES") != "utility":
        errs.append("agent needs NVIDIA_VISIBLE_DEVICES=all and NVIDIA_DRIVER_CAPABILITIES=utility")
    sc = agent.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") is True and sc.get("readOnlyRootFilesystem") is True
            and sc.get("allowPrivilegeEscalation") is False
            and (sc.get("capabilities") or {}).get("drop") == ["ALL"]
            and (sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"):
        errs.append("agent securityContext must be non-root, read-only root, no escalation, "
                    "drop ALL, seccomp RuntimeDefault")

    # Pod.
    if spec.get("runtimeClassName") != "nvidia":
        errs.append("runtimeClassName must be nvidia")
    drain = duration_s(env.get("TRITON_SIDECAR_DRAIN_TIMEOUT", "90s"))
    exit_s = int(exit_timeout[0].split("=", 1)[1]) if exit_timeout else 0
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < drain + exit_s + 5:
        errs.append(f"terminationGracePeriodSeconds {grace} < drain {drain:g} + exit {exit_s} + margin")
    return errs


def check_deployment(ep, dep):
    errs = deployment_errors(dep)
    check(not errs, f"{ep}: Deployment/{dep['metadata']['name']} follows the drain and agent rules",
          "; ".join(errs))


def self_test(dep):
    """The Deployment check must reject the mistakes it exists for."""
    bad = copy.deepcopy(dep)
    t, _ = find_container(pod_spec(bad), TRITON)
    t["lifecycle"]["preStop"]["httpGet"]["port"] = "admin"
    check(any("number 8004" in e for e in deployment_errors(bad)),
          "self-test: a named preStop port ('admin') is rejected")
    bad = copy.deepcopy(dep)
    t, _ = find_container(pod_spec(bad), TRITON)
    t["lifecycle"]["preStop"]["httpGet"]["port"] = "8004"
    check(any("number 8004" in e for e in deployment_errors(bad)),
          "self-test: the string '8004' is rejected as a preStop port")
    bad = copy.deepcopy(dep)
    a, _ = find_container(pod_spec(bad), AGENT)
    a["startupProbe"] = {"httpGet": {"path": "/readyz", "port": "admin"}}
    check(any("startupProbe" in e for e in deployment_errors(bad)),
          "self-test: an agent startupProbe on /readyz is rejected")
    bad = copy.deepcopy(dep)
    pod_spec(bad)["terminationGracePeriodSeconds"] = 60
    check(any("terminationGracePeriodSeconds" in e for e in deployment_errors(bad)),
          "self-test: a grace period shorter than drain + exit timeout is rejected")


# --------------------------------------------------------------------------------------------
# CRD kinds
# --------------------------------------------------------------------------------------------
PROMQL_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")


def check_scaledobject(ep, so, objs):
    name = f"{ep}: ScaledObject/{so['metadata'].get('name')}"
    spec = so.get("spec") or {}
    ns = so["metadata"].get("namespace")
    target = (spec.get("scaleTargetRef") or {}).get("name")
    check(target and any(o["kind"] == (spec["scaleTargetRef"].get("kind") or "Deployment")
                         and o["metadata"]["name"] == target for o in objs),
          f"{name}: scaleTargetRef names a rendered Deployment")
    check(spec.get("minReplicaCount", 0) >= 1, f"{name}: minReplicaCount >= 1")
    check(spec.get("maxReplicaCount", 100) >= spec.get("minReplicaCount", 0),
          f"{name}: maxReplicaCount >= minReplicaCount")
    fb = spec.get("fallback") or {}
    check(isinstance(fb.get("failureThreshold"), int) and isinstance(fb.get("replicas"), int),
          f"{name}: fallback has failureThreshold and replicas")
    triggers = spec.get("triggers") or []
    check(triggers, f"{name}: has triggers")
    for t in triggers:
        tn = f"{name} trigger {t.get('name')}"
        md = t.get("metadata") or {}
        check(t.get("type") == "prometheus", f"{tn}: type prometheus")
        check(t.get("metricType") in ("AverageValue", "Value"), f"{tn}: metricType AverageValue or Value")
        check(md.get("serverAddress", "").startswith("http"), f"{tn}: serverAddress")
        # KEDA's metadata values are strings; numbers must parse.
        ok = True
        for k in ("threshold", "activationThreshold"):
            try:
                float(md[k])
                ok = ok and isinstance(md[k], str)
            except (KeyError, ValueError):
                ok = False
        check(ok, f"{tn}: threshold and activationThreshold are numeric strings")
        check(md.get("ignoreNullValues") == "false", f"{tn}: ignoreNullValues \"false\"")
        q = md.get("query", "")
        # One series: every aggregation is a bare sum() with no by/without, and the query starts
        # with sum( so the outermost value is a single series.
        check(q.startswith("sum(") and not re.search(r"\b(by|without)\s*\(", q)
              and "avg(" not in q,
              f"{tn}: query is a bare sum() (KEDA needs exactly one series)", q)
        sels = PROMQL_SELECTOR.findall(q)
        nss = [re.search(r'namespace="([^"]*)"', s[1]) for s in sels]
        check(sels and all(m and m.group(1) == ns for m in nss),
              f"{tn}: every selector has namespace=\"{ns}\" (the Deployment's namespace)", q)
        check(sels and all(re.search(r'pod=~"[^"]+"', s[1]) for s in sels),
              f"{tn}: every selector has a pod=~ matcher", q)
        check(not re.search(r"model_name|_bucket|_sum\b|_count\b", q),
              f"{tn}: no model_name, _bucket, _sum or _count (the common recipe's mistakes)")


def relabels_ns_pod(endpoint):
    targets = {(tuple(r.get("sourceLabels") or []), r.get("targetLabel"))
               for r in endpoint.get("relabelings") or []}
    return (("__meta_kubernetes_namespace",), "namespace") in targets and \
        (("__meta_kubernetes_pod_name",), "pod") in targets


def check_servicemonitor(ep, sm, objs):
    name = f"{ep}: ServiceMonitor/{sm['metadata'].get('name')}"
    spec = sm.get("spec") or {}
    svcs = [o for o in objs if o["kind"] == "Service"
            and labels_match(spec.get("selector") or {}, o["metadata"].get("labels") or {})]
    check(spec.get("selector", {}).get("matchLabels") and svcs, f"{name}: selector matches a Service")
    eps = spec.get("endpoints") or []
    check(eps, f"{name}: has endpoints")
    ports = {p.get("name") for s in svcs for p in s["spec"].get("ports") or []}
    for e in eps:
        check(e.get("port") in ports, f"{name}: endpoint port {e.get('port')!r} is a named Service port")
        check(relabels_ns_pod(e), f"{name}: endpoint {e.get('port')} sets namespace and pod labels")
    agent = [e for e in eps if e.get("port") == "metrics"]
    check(agent and agent[0].get("interval") == "5s" and agent[0].get("path") == "/metrics",
          f"{name}: the agent's /metrics is scraped every 5s")


def check_podmonitor(ep, pm, objs):
    name = f"{ep}: PodMonitor/{pm['metadata'].get('name')}"
    spec = pm.get("spec") or {}
    deps = [o for o in objs if o["kind"] == "Deployment"
            and labels_match(spec.get("selector") or {}, o["spec"]["template"]["metadata"].get("labels") or {})]
    check(spec.get("selector", {}).get("matchLabels") and deps, f"{name}: selector matches the pod template")
    eps = spec.get("podMetricsEndpoints") or []
    check(eps, f"{name}: has podMetricsEndpoints")
    ports = {p.get("name") for d in deps for where in ("containers", "initContainers")
             for c in pod_spec(d).get(where) or [] for p in c.get("ports") or []}
    for e in eps:
        check(e.get("port") in ports, f"{name}: endpoint port {e.get('port')!r} is a named container port")
        check(relabels_ns_pod(e), f"{name}: endpoint {e.get('port')} sets namespace and pod labels")
    agent = [e for e in eps if e.get("port") == "metrics"]
    check(agent and agent[0].get("interval") == "5s", f"{name}: the agent's /metrics is scraped every 5s")


def check_prometheusrule(ep, pr, root):
    name = f"{ep}: PrometheusRule/{pr['metadata'].get('name')}"
    groups = (pr.get("spec") or {}).get("groups") or []
    check(groups and len({g.get("name") for g in groups}) == len(groups), f"{name}: named, unique groups")
    with open(os.path.join(root, "docs", "runbooks.md")) as f:
        anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                   for h in re.findall(r"^#{1,6} (.+)$", f.read(), re.M)}
    alerts = []
    for g in groups:
        for r in g.get("rules") or []:
            ok = bool(r.get("expr")) and (("record" in r) != ("alert" in r))
            check(ok, f"{name}: rule {r.get('record') or r.get('alert')} has expr and one of record/alert")
            if "alert" in r:
                alerts.append(r["alert"])
                url = (r.get("annotations") or {}).get("runbook_url", "")
                m = re.search(r"docs/runbooks\.md#([a-z0-9-]+)$", url)
                check(m and m.group(1) == r["alert"].lower() and m.group(1) in anchors,
                      f"{name}: {r['alert']} runbook_url points to docs/runbooks.md#{r['alert'].lower()}, which exists", url)
                check((r.get("labels") or {}).get("severity"), f"{name}: {r['alert']} has a severity")
    for wanted in ("TritonQueueWaitAboveSLO", "TritonSidecarScrapeFailing", "TritonDrainTimedOut",
                   "TritonNotReady"):
        check(wanted in alerts, f"{name}: has alert {wanted}")


def check_nodepool(ep, np_):
    name = f"{ep}: NodePool/{np_['metadata'].get('name')}"
    check(np_.get("apiVersion") == "karpenter.sh/v1", f"{name}: karpenter.sh/v1 (v1beta1 is retired)")
    tspec = ((np_.get("spec") or {}).get("template") or {}).get("spec") or {}
    ref = tspec.get("nodeClassRef") or {}
    check(all(ref.get(k) for k in ("group", "kind", "name")), f"{name}: nodeClassRef has group, kind, name (v1)")
    check(tspec.get("requirements"), f"{name}: has requirements")
    d = np_["spec"].get("disruption") or {}
    check(d.get("consolidationPolicy") in ("WhenEmpty", "WhenEmptyOrUnderutilized")
          and "consolidateAfter" in d, f"{name}: v1 disruption (consolidationPolicy + consolidateAfter)")
    check("expireAfter" not in d, f"{name}: expireAfter lives in the template in v1")


# --------------------------------------------------------------------------------------------
# Other built-in rules a schema cannot express
# --------------------------------------------------------------------------------------------
def check_service(ep, svc):
    name = f"{ep}: Service/{svc['metadata']['name']}"
    ports = svc["spec"].get("ports") or []
    check(all(p.get("name") for p in ports), f"{name}: every port is named")
    names = {p.get("name") for p in ports}
    check({"http", "grpc", "metrics"} <= names, f"{name}: has http, grpc and metrics ports")
    check(all(p.get("port") != ADMIN_PORT and p.get("targetPort") not in (ADMIN_PORT, "admin") for p in ports),
          f"{name}: does not expose the admin port")


def check_networkpolicy(ep, np_):
    name = f"{ep}: NetworkPolicy/{np_['metadata']['name']}"
    allowed = set()
    any_all_ports = False
    for rule in np_["spec"].get("ingress") or []:
        if not rule.get("ports"):
            any_all_ports = True
        for p in rule.get("ports") or []:
            allowed.add(p.get("port"))
    check("Ingress" in np_["spec"].get("policyTypes", []), f"{name}: restricts ingress")
    check(not any_all_ports and ADMIN_PORT not in allowed and "admin" not in allowed,
          f"{name}: nothing may reach the admin port {ADMIN_PORT}")
    check({8000, 8001, 8002, 8003} <= allowed, f"{name}: allows 8000, 8001 (clients), 8002, 8003 (monitoring)")


def main():
    render_dir, root = sys.argv[1], sys.argv[2]
    files = sorted(f for f in os.listdir(render_dir) if f.endswith(".yaml"))
    check(files, "rendered entry points found", render_dir)
    base_dep = None
    for fn in files:
        ep = fn[:-5]
        objs = load(os.path.join(render_dir, fn))
        for o in objs:
            check(o.get("apiVersion") and o.get("kind") and (o.get("metadata") or {}).get("name"),
                  f"{ep}: {o.get('kind')}/{(o.get('metadata') or {}).get('name')} has apiVersion, kind, metadata.name")
            k = o.get("kind")
            if k == "Deployment" and o["metadata"]["name"] == "triton":
                check_deployment(ep, o)
                if ep == "base":
                    base_dep = o
            elif k == "ScaledObject":
                check_scaledobject(ep, o, objs)
            elif k == "ServiceMonitor":
                check_servicemonitor(ep, o, objs)
            elif k == "PodMonitor":
                check_podmonitor(ep, o, objs)
            elif k == "PrometheusRule":
                check_prometheusrule(ep, o, root)
            elif k == "NodePool":
                check_nodepool(ep, o)
            elif k == "Service":
                check_service(ep, o)
            elif k == "NetworkPolicy" and o["metadata"]["name"] == "triton":
                check_networkpolicy(ep, o)
        # Monitors: never both a ServiceMonitor and a PodMonitor for the same pods.
        kinds = [o["kind"] for o in objs]
        check(not ("ServiceMonitor" in kinds and "PodMonitor" in kinds),
              f"{ep}: not both a ServiceMonitor and a PodMonitor (every series would count twice)")
        check(not ("ScaledObject" in kinds and "HorizontalPodAutoscaler" in kinds),
              f"{ep}: not both KEDA and a plain HPA for the same Deployment")
    # The base's preStop must be the httpGet form, and the self-test must reject the mistakes.
    if check(base_dep is not None, "base renders the Triton Deployment"):
        t, _ = find_container(pod_spec(base_dep), TRITON)
        hg = t["lifecycle"]["preStop"].get("httpGet") or {}
        check(type(hg.get("port")) is int and hg.get("port") == ADMIN_PORT and hg.get("path") == "/wait-for-drain",
              "base: Triton preStop is httpGet to port 8004 (a number) path /wait-for-drain",
              repr(hg))
        self_test(base_dep)

    failed = [r for r in results if not r[0]]
    for ok, name, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok or not detail else f"\n       {detail}"))
    print(f"manifests: {len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
