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
    # NVML through the NVIDIA runtime is opt-in (components/nvidia-runtime): the RuntimeClass and
    # the two variables come together or not at all.
    nvml_env = env.get("NVIDIA_VISIBLE_DEVICES") == "all" and env.get("NVIDIA_DRIVER_CAPABILITIES") == "utility"
    if (spec.get("runtimeClassName") == "nvidia") != nvml_env or \
            spec.get("runtimeClassName") not in (None, "nvidia"):
        errs.append("runtimeClassName nvidia and NVIDIA_VISIBLE_DEVICES=all + NVIDIA_DRIVER_CAPABILITIES=utility "
                    "go together (components/nvidia-runtime), or neither")
    sc = agent.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") is True and sc.get("readOnlyRootFilesystem") is True
            and sc.get("allowPrivilegeEscalation") is False
            and (sc.get("capabilities") or {}).get("drop") == ["ALL"]
            and (sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"):
        errs.append("agent securityContext must be non-root, read-only root, no escalation, "
                    "drop ALL, seccomp RuntimeDefault")

    # Pod.
    drain = duration_s(env.get("TRITON_SIDECAR_DRAIN_TIMEOUT", "90s"))
    exit_s = int(exit_timeout[0].split("=", 1)[1]) if exit_timeout else 0
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < drain + exit_s + 5:
        errs.append(f"terminationGracePeriodSeconds {grace} < drain {drain:g} + exit {exit_s} + margin")
    errs += exit_timeout_agreement(env, exit_timeout)
    return errs


def exit_timeout_agreement(env, exit_args):
    """The agent's --triton-exit-timeout (TRITON_SIDECAR_TRITON_EXIT_TIMEOUT, default 30s) must
    equal Triton's --exit-timeout-secs where the pod states it: the drain hands work it cannot
    confirm to Triton's shutdown only when it fits in that timeout (issue 19)."""
    if not exit_args:
        return []
    triton_s = int(exit_args[0].split("=", 1)[1])
    agent_s = duration_s(env.get("TRITON_SIDECAR_TRITON_EXIT_TIMEOUT", "30s"))
    if agent_s != triton_s:
        return [f"agent TRITON_SIDECAR_TRITON_EXIT_TIMEOUT {agent_s:g} s != Triton --exit-timeout-secs {triton_s}"]
    return []


def check_deployment(ep, dep):
    errs = deployment_errors(dep)
    check(not errs, f"{ep}: Deployment/{dep['metadata']['name']} follows the drain and agent rules",
          "; ".join(errs))


def self_test(dep):
    """The Deployment check must reject the mistakes it exists for."""
    bad = copy.deepcopy(dep)
    a, _ = find_container(pod_spec(bad), AGENT)
    for e in a.get("env") or []:
        if e["name"] == "TRITON_SIDECAR_TRITON_EXIT_TIMEOUT":
            e["value"] = "10s"
    check(any("TRITON_EXIT_TIMEOUT" in e for e in deployment_errors(bad)),
          "self-test: an agent exit timeout that differs from Triton's --exit-timeout-secs is rejected")
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
    pod_spec(bad)["runtimeClassName"] = "nvidia"
    check(any("runtimeClassName" in e for e in deployment_errors(bad)),
          "self-test: runtimeClassName nvidia without the NVIDIA variables is rejected")
    bad = copy.deepcopy(dep)
    pod_spec(bad)["terminationGracePeriodSeconds"] = 60
    check(any("terminationGracePeriodSeconds" in e for e in deployment_errors(bad)),
          "self-test: a grace period shorter than drain + exit timeout is rejected")


# --------------------------------------------------------------------------------------------
# CRD kinds
# --------------------------------------------------------------------------------------------
PROMQL_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")


def numeric_strings(md, keys):
    """KEDA's trigger metadata values are strings: each of `keys` is one that parses as a number."""
    for k in keys:
        v = md.get(k)
        if not isinstance(v, str):
            return False
        try:
            float(v)
        except ValueError:
            return False
    return True


def check_scaledobject(ep, so, objs):
    name = f"{ep}: ScaledObject/{so['metadata'].get('name')}"
    spec = so.get("spec") or {}
    target = (spec.get("scaleTargetRef") or {}).get("name")
    # No namespace (the Helm example: Helm's --namespace decides): it lands in the release's
    # namespace, which is the chart's Deployment's.
    ns = so["metadata"].get("namespace") or next(
        (o["metadata"].get("namespace") for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == target), None)
    # KServe (RawDeployment) creates `<InferenceService>-predictor` itself: the pod labels are
    # then the predictor's.
    isvc = [o for o in objs if o["kind"] == "InferenceService" and f"{o['metadata']['name']}-predictor" == target]
    check(target and (isvc or any(o["kind"] == (spec["scaleTargetRef"].get("kind") or "Deployment")
                                  and o["metadata"]["name"] == target for o in objs)),
          f"{name}: scaleTargetRef names a rendered Deployment (or an InferenceService's predictor)")
    check(spec.get("minReplicaCount", 0) >= 1, f"{name}: minReplicaCount >= 1")
    check(spec.get("maxReplicaCount", 100) >= spec.get("minReplicaCount", 0),
          f"{name}: maxReplicaCount >= minReplicaCount")
    fb = spec.get("fallback") or {}
    check(isinstance(fb.get("failureThreshold"), int) and isinstance(fb.get("replicas"), int),
          f"{name}: fallback has failureThreshold and replicas")
    # Issue 21: an outage holds the count, it never raises an idle fleet: currentReplicasIfHigher
    # with replicas = minReplicaCount is max(current, min) = current.
    check(fb.get("behavior") == "currentReplicasIfHigher" and fb.get("replicas") == spec.get("minReplicaCount"),
          f"{name}: fallback holds the current count (currentReplicasIfHigher, replicas = minReplicaCount)",
          f"fallback {fb}, minReplicaCount {spec.get('minReplicaCount')}")
    triggers = spec.get("triggers") or []
    check(triggers, f"{name}: has triggers")
    for t in triggers:
        if t.get("type") == "metrics-api":
            check_metrics_api_trigger(f"{name} trigger {t.get('name')}", t, ns, objs,
                                      target_pod_labels(spec["scaleTargetRef"], objs), so["metadata"].get("namespace"))
            continue
        tn = f"{name} trigger {t.get('name')}"
        md = t.get("metadata") or {}
        check(t.get("type") == "prometheus", f"{tn}: type prometheus")
        check(t.get("metricType") in ("AverageValue", "Value"), f"{tn}: metricType AverageValue or Value")
        check(md.get("serverAddress", "").startswith("http"), f"{tn}: serverAddress")
        # KEDA's metadata values are strings; numbers must parse.
        check(numeric_strings(md, ("threshold", "activationThreshold")),
              f"{tn}: threshold and activationThreshold are numeric strings")
        check(md.get("ignoreNullValues") == "false", f"{tn}: ignoreNullValues \"false\"")
        q = md.get("query", "")
        # One series: every aggregation has no by/without, and the query starts with one, so the
        # outermost value is a single series. avg() only as the stale-pod rule's mean over the
        # pods that know their utilization (times the pods that carry load); anywhere else it
        # is a mean of means.
        stale_rule = q.startswith("avg(triton_pod_utilization{") and "or on(pod)" in q
        check(q.startswith(("sum(", "avg(")) and not re.search(r"\b(by|without)\s*\(", q)
              and ("avg(" not in q or stale_rule),
              f"{tn}: query aggregates to one series (KEDA needs exactly one)", q)
        sels = PROMQL_SELECTOR.findall(q)
        nss = [re.search(r'namespace="([^"]*)"', s[1]) for s in sels]
        check(sels and all(m and m.group(1) == ns for m in nss),
              f"{tn}: every selector has namespace=\"{ns}\" (the Deployment's namespace)", q)
        # The series of the scale target's pods, by the pod label the monitors copy onto them;
        # never by a pod-name regex, which also matches other triton-* workloads.
        tgt = [o for o in objs if o["kind"] == (spec["scaleTargetRef"].get("kind") or "Deployment")
               and o["metadata"]["name"] == target]
        labels = ((tgt[0]["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {} if tgt \
            else (isvc[0]["spec"]["predictor"].get("labels") or {}) if isvc else {}
        inst = labels.get("app.kubernetes.io/instance")
        insts = [re.search(r'app_kubernetes_io_instance="([^"]*)"', s[1]) for s in sels]
        check(sels and inst and all(m and m.group(1) == inst for m in insts),
              f"{tn}: every selector has app_kubernetes_io_instance=\"{inst}\" (the target's pod label)", q)
        check(not re.search(r"\bpod=~", q), f"{tn}: no pod-name regex", q)
        check(not re.search(r"model_name|_bucket|_sum\b|_count\b", q),
              f"{tn}: no model_name, _bucket, _sum or _count (the common recipe's mistakes)")
    errs = modifiers_errors(so)
    check(not errs, f"{name}: scalingModifiers: utilization / target + at most one pod while the queue wait "
          "breaches, target \"1\", AverageValue", "; ".join(errs))
    check_scaling_contract(name, keda_as_triggers(so), (((spec.get("advanced") or {})
          .get("horizontalPodAutoscalerConfig") or {}).get("behavior") or {}),
          [o for o in objs if o["kind"] == (spec["scaleTargetRef"].get("kind") or "Deployment")
           and o["metadata"]["name"] == target])


def restricted_api_errors(dep):
    """Where Triton restricts its statistics API with a header from a Secret, the agent must get
    the same NAME=VALUE from the same Secret key (else: statistics refused, no estimate). Returns
    (restricted: bool, errors)."""
    ps = pod_spec(dep)
    t, _ = find_container(ps, TRITON)
    a, _ = find_container(ps, AGENT)
    if not t:
        return False, []
    args = [x for x in (t.get("args") or []) if str(x).startswith("--http-restricted-api=")]
    if not args:
        return False, []
    errs = []
    env_t = {e["name"]: e for e in t.get("env") or []}
    env_a = {e["name"]: e for e in (a or {}).get("env") or []}
    for arg in args:
        m = re.fullmatch(r"--http-restricted-api=([a-z,-]+):\$\((\w+)\)", arg)
        if not m:
            errs.append(f"{arg!r}: expected --http-restricted-api=<apis>:$(VAR) with VAR from a Secret")
            continue
        if "statistics" not in m.group(1).split(","):
            continue
        ref_t = ((env_t.get(m.group(2)) or {}).get("valueFrom") or {}).get("secretKeyRef")
        ref_a = ((env_a.get("TRITON_SIDECAR_TRITON_API_HEADER") or {}).get("valueFrom") or {}).get("secretKeyRef")
        if not ref_t:
            errs.append(f"Triton's {m.group(2)} is not from a secretKeyRef")
        if not ref_a or not ref_t or (ref_a.get("name"), ref_a.get("key")) != (ref_t.get("name"), ref_t.get("key")):
            errs.append(f"the agent's TRITON_SIDECAR_TRITON_API_HEADER ({ref_a}) is not Triton's Secret key ({ref_t})")
    return True, errs


# Issue 13: what the scaler reads and how slowly it gives pods up.
UTILIZATION_TARGET = (0.5, 0.9)   # a target outside this is a mistake, not a choice
MIN_SCALE_DOWN_WINDOW = 600       # deploy/README.md: no shorter than a GPU pod's cold start


def startup_allowance(dep):
    """Seconds Triton's startupProbe allows a pod to load (failureThreshold x periodSeconds)."""
    try:
        t, _ = find_container(pod_spec(dep), TRITON)
        sp = t.get("startupProbe") or {}
        return int(sp.get("failureThreshold", 3)) * int(sp.get("periodSeconds", 10))
    except Exception:  # noqa: BLE001 - no Triton container: no allowance to compare with
        return None


def scaling_errors(triggers, behavior, targets):
    """Issue 13's contract for a ScaledObject (triggers: KEDA's, or an HPA's metrics turned into
    the same shape by hpa_as_triggers): the first trigger is the pods' utilization, AverageValue,
    at a target in UTILIZATION_TARGET; queue wait stays as the SLO guard; no trigger on a pending
    count; scale-down stabilization no shorter than a cold start (MIN_SCALE_DOWN_WINDOW, and the
    startupProbe's allowance of the target Deployment). Empty when right."""
    errs = []
    util = [t for t in triggers if t["metric"] == "triton_pod_utilization"]
    if not util or triggers[0] is not util[0]:
        errs.append("the first trigger must be the pods' utilization (triton_pod_utilization)")
    elif not (util[0]["type"] == "AverageValue" and UTILIZATION_TARGET[0] <= util[0]["target"] <= UTILIZATION_TARGET[1]):
        errs.append(f"utilization must be AverageValue with a target in {UTILIZATION_TARGET}: {util[0]}")
    if not any(t["metric"] == "triton_pod_queue_wait_ms" for t in triggers):
        errs.append("queue wait must stay as the SLO guard")
    if any("pending" in t["metric"] for t in triggers):
        errs.append("no trigger on a pending count (a request means a different amount of work per model)")
    down = (behavior.get("scaleDown") or {}).get("stabilizationWindowSeconds")
    allowance = startup_allowance(targets[0]) if targets else None
    if not (isinstance(down, int) and down >= MIN_SCALE_DOWN_WINDOW and (allowance is None or down >= allowance)):
        errs.append(f"scaleDown.stabilizationWindowSeconds {down!r} is shorter than a cold start "
                    f"({MIN_SCALE_DOWN_WINDOW} s; the startupProbe allows {allowance} s)")
    return errs


# Issue 21: KEDA's metrics-api scaler on the agents' endpoints (components/keda-direct).
AGENT_METRICS_PORT = 8003
DIRECT_AGGREGATION = {"triton_pod_utilization": "average", "triton_up": "sum", "triton_pod_queue_wait_ms": "max"}


def predictor_pod_labels(isvc, objs):
    """The labels KServe (RawDeployment) puts on an InferenceService's predictor pods: its own
    serving.kserve.io/inferenceservice and component, the ServingRuntime's spec.labels, the
    predictor's labels."""
    runtime = ((isvc["spec"].get("predictor") or {}).get("model") or {}).get("runtime")
    rt = next((o for o in objs if o["kind"] == "ServingRuntime" and o["metadata"]["name"] == runtime), None)
    return {**((rt or {}).get("spec", {}).get("labels") or {}),
            **((isvc["spec"].get("predictor") or {}).get("labels") or {}),
            "serving.kserve.io/inferenceservice": isvc["metadata"]["name"], "component": "predictor"}


def target_pod_labels(ref, objs):
    """The pod labels of a scale target: a rendered Deployment's pod template, or the predictor
    pods KServe creates for `<InferenceService>-predictor`."""
    for o in objs:
        if o["kind"] == (ref.get("kind") or "Deployment") and o["metadata"]["name"] == ref.get("name"):
            return ((o["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        if o["kind"] == "InferenceService" and f"{o['metadata']['name']}-predictor" == ref.get("name"):
            return predictor_pod_labels(o, objs)
    return {}


def check_metrics_api_trigger(tn, t, ns, objs, target_labels=None, so_ns=None):
    md = t.get("metadata") or {}
    url = md.get("url", "")
    m = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)(/[^\s]*)", url)
    check(m is not None, f"{tn}: url is http://<service>.<namespace>.svc:<port>/<path> (KEDA takes the "
          "Service and namespace from the host, the endpoint port from the URL's port)", url)
    if m:
        svc, uns, port, path = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        check(uns == ns, f"{tn}: the URL's namespace is the ScaledObject's ({ns})", url)
        check(port == AGENT_METRICS_PORT and path == "/metrics", f"{tn}: reads the agent's :8003/metrics", url)
        services = [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == svc]
        check(services and any(p.get("port") == port and p.get("targetPort") in (port, "agent-metrics", "metrics")
                               for p in services[0]["spec"].get("ports") or []),
              f"{tn}: Service {svc} exists and serves port {port} from the agent")
        if services:
            sel = services[0]["spec"].get("selector") or {}
            # The scale target's own pods (the Deployment's template, or KServe's predictor pods),
            # and only pods that carry the agent: another workload's pods would be averaged in.
            check(bool(sel) and bool(target_labels) and all(target_labels.get(k) == v for k, v in sel.items()),
                  f"{tn}: Service {svc}'s selector matches the scale target's pods", f"{sel} vs {target_labels}")
            others = [o["metadata"]["name"] for o in objs if o["kind"] in ("Deployment", "StatefulSet")
                      and find_container(pod_spec(o), AGENT)[0] is None
                      and sel and all(((o["spec"].get("template") or {}).get("metadata") or {}).get("labels", {}).get(k) == v
                                      for k, v in sel.items())]
            check(not others, f"{tn}: Service {svc}'s selector matches no pods without the agent", str(others))
            check(services[0]["metadata"].get("namespace") == so_ns,
                  f"{tn}: Service {svc} is in the ScaledObject's namespace ({so_ns or 'none: the release namespace'})",
                  str(services[0]["metadata"].get("namespace")))
            check(not services[0]["spec"].get("publishNotReadyAddresses"),
                  f"{tn}: Service {svc} publishes only Ready endpoints (a loading or draining pod is not read)")
    check(md.get("format") == "prometheus" and md.get("aggregateFromKubeServiceEndpoints") == "true",
          f"{tn}: format prometheus, aggregateFromKubeServiceEndpoints \"true\"")
    loc = md.get("valueLocation", "")
    want = DIRECT_AGGREGATION.get(loc.split("{")[0])
    check(want is not None and md.get("aggregationType") == want,
          f"{tn}: valueLocation {loc!r} with aggregationType {want} (a sum over endpoints skips a pod that "
          "fails, so utilization is a mean times the pods)", md.get("aggregationType"))
    check(numeric_strings(md, ("targetValue", "activationTargetValue")),
          f"{tn}: targetValue and activationTargetValue are numeric strings")


# Issue 22: the two triggers are combined by KEDA's scalingModifiers into the pods utilization
# asks for at its target, plus at most one while the queue wait breaches its threshold. The SLO
# guard can then never ask for more than one pod over the need (a cold start's backlog asked for
# 5 to 175 as its own trigger). target "1": KEDA's fallback with a formula needs an integer
# target (pkg/fallback HasValidFallback).
# keda-direct: utilization (a mean over the pods that publish it) * pods (the ready pods) / T.
FORMULA = re.compile(r"\s*utilization\s*(\*\s*pods\s*)?/\s*([0-9]*\.?[0-9]+)\s*\+\s*\(\s*queue_wait\s*>\s*([0-9]*\.?[0-9]+)"
                     r"\s*\?\s*1\s*:\s*0\s*\)\s*")


def modifiers_errors(so):
    """The scalingModifiers contract; empty when right."""
    sm = ((so["spec"].get("advanced") or {}).get("scalingModifiers")) or {}
    if not sm:
        return ["no advanced.scalingModifiers: the queue-wait guard would be its own trigger and "
                "ask for ceil(ready x wait / threshold) pods"]
    errs = []
    if not FORMULA.fullmatch(sm.get("formula", "")):
        errs.append(f"formula {sm.get('formula')!r} is not `utilization / T + (queue_wait > W ? 1 : 0)` "
                    "(the guard adds at most one pod)")
    if sm.get("target") != "1":
        errs.append(f"scalingModifiers.target {sm.get('target')!r} must be \"1\" (the formula counts pods; "
                    "KEDA's fallback needs an integer target)")
    if sm.get("metricType", "AverageValue") != "AverageValue":
        errs.append(f"scalingModifiers.metricType {sm.get('metricType')!r} must be AverageValue")
    names = {t.get("name") for t in so["spec"].get("triggers") or []}
    m = FORMULA.fullmatch(sm.get("formula", ""))
    need = {"utilization", "queue_wait"} | ({"pods"} if m and m.group(1) else set())
    if not need <= names:
        errs.append(f"the formula's identifiers must be trigger names: {sorted(n or '' for n in names)}")
    direct = any(t.get("type") == "metrics-api" for t in so["spec"].get("triggers") or [])
    if m and direct and not m.group(1):
        errs.append("metrics-api utilization is a mean over the pods that publish it: the formula must multiply "
                    "it by `pods` (the stale-pod rule)")
    return errs


def keda_as_triggers(so):
    out = []
    m_f = FORMULA.fullmatch(((so["spec"].get("advanced") or {}).get("scalingModifiers") or {}).get("formula", ""))
    for t in so["spec"].get("triggers") or []:
        q = (t.get("metadata") or {}).get("query", "")
        m = re.match(r"\s*(?:sum|avg)\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", q)
        target = float((t.get("metadata") or {}).get("threshold", "nan"))
        metric = m.group(1) if m else q
        if t.get("type") == "metrics-api":
            metric = (t.get("metadata") or {}).get("valueLocation", "").split("{")[0]
            target = float((t.get("metadata") or {}).get("targetValue", "nan"))
        if m_f:  # with a formula the triggers' thresholds are not used: the formula's are
            target = float(m_f.group(2) if t.get("name") == "utilization" else m_f.group(3)
                           if t.get("name") == "queue_wait" else target)
        out.append({"metric": metric, "type": t.get("metricType"), "target": target})
    return out


def quantity(q):
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def hpa_as_triggers(hpa):
    out = []
    for m in hpa["spec"].get("metrics") or []:
        body = m.get(m.get("type", "").lower() if m.get("type") != "Pods" else "pods") or {}
        tgt = body.get("target") or {}
        out.append({"metric": (body.get("metric") or {}).get("name", ""), "type": tgt.get("type"),
                    "target": quantity(tgt.get("averageValue", tgt.get("value", "nan")))})
    return out


def check_scaling_contract(name, triggers, behavior, targets):
    errs = scaling_errors(triggers, behavior, targets)
    check(not errs, f"{name}: scales on utilization (AverageValue, target {UTILIZATION_TARGET}), queue wait as "
          f"the SLO guard, no pending trigger, scale-down window >= a cold start", "; ".join(errs))


def self_test_scaling(so, dep):
    """scaling_errors must reject the mistakes it exists for."""
    beh = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    good = keda_as_triggers(so)
    check(not scaling_errors(good, beh, [dep]), "self-test: the keda overlay's ScaledObject passes the scaling contract")
    pending = [{"metric": "triton_pod_pending_requests", "type": "AverageValue", "target": 8.0}]
    cases = [
        ("the old pending trigger first", pending + good, beh, "first trigger"),
        ("a pending trigger beside utilization", good + pending, beh, "pending"),
        ("utilization as Value", [{**good[0], "type": "Value"}] + good[1:], beh, "AverageValue"),
        ("utilization target 1.0 (no headroom)", [{**good[0], "target": 1.0}] + good[1:], beh, "target in"),
        ("no queue-wait guard", good[:1], beh, "queue wait"),
        ("scale-down window 300 s", good, {**beh, "scaleDown": {**beh["scaleDown"], "stabilizationWindowSeconds": 300}},
         "shorter than a cold start"),
    ]
    for what, trig, b, needle in cases:
        errs = scaling_errors(trig, b, [dep])
        check(any(needle in e for e in errs), f"self-test: {what} is rejected", "; ".join(errs))
    check(not modifiers_errors(so), "self-test: the keda overlay's scalingModifiers pass")
    sm = so["spec"]["advanced"]["scalingModifiers"]
    for what, change, needle in [
        ("a guard that adds 5 pods", {"formula": sm["formula"].replace("? 1", "? 5")}, "at most one"),
        ("the guard as max() over the triggers", {"formula": "max(utilization / 0.7, queue_wait / 100)"}, "at most one"),
        ("a fractional target", {"target": "0.7"}, "integer target"),
        ("metricType Value", {"metricType": "Value"}, "AverageValue"),
    ]:
        bad = copy.deepcopy(so)
        bad["spec"]["advanced"]["scalingModifiers"].update(change)
        errs = modifiers_errors(bad)
        check(any(needle in e for e in errs), f"self-test: {what} is rejected", "; ".join(errs))
    bad = copy.deepcopy(so)
    del bad["spec"]["advanced"]["scalingModifiers"]
    check(any("no advanced.scalingModifiers" in e for e in modifiers_errors(bad)),
          "self-test: a ScaledObject without scalingModifiers is rejected")
    longer = copy.deepcopy(dep)
    t, _ = find_container(pod_spec(longer), TRITON)
    t["startupProbe"]["failureThreshold"] = 240   # 20 minutes to load
    check(any("startupProbe allows 1200" in e for e in scaling_errors(good, beh, [longer])),
          "self-test: a window shorter than a longer startupProbe allowance is rejected")


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
    check("app.kubernetes.io/instance" in (spec.get("podTargetLabels") or []),
          f"{name}: podTargetLabels copies app.kubernetes.io/instance (what the KEDA queries select on)")
    # kubernetes#127976: before 1.32 a Service's named targetPort never reaches a native
    # sidecar's port, and this monitor would scrape nothing.
    native = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")
              and find_container(pod_spec(o), AGENT)[1] == "initContainers"]
    check(not native, f"{name}: no native-sidecar agent behind a ServiceMonitor (kubernetes#127976)",
          ", ".join(o["metadata"]["name"] for o in native))


def pod_templates(objs):
    """(name, labels, pod spec) of every pod template: workloads, and KServe ServingRuntimes
    (whose spec.labels and containers become the predictor pod's)."""
    out = []
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            out.append((o["metadata"]["name"], o["spec"]["template"]["metadata"].get("labels") or {}, pod_spec(o)))
        elif o["kind"] == "ServingRuntime":
            out.append((o["metadata"]["name"], o["spec"].get("labels") or {}, o["spec"]))
    return out


def check_podmonitor(ep, pm, objs):
    name = f"{ep}: PodMonitor/{pm['metadata'].get('name')}"
    spec = pm.get("spec") or {}
    pods = [p for p in pod_templates(objs) if labels_match(spec.get("selector") or {}, p[1])]
    check(spec.get("selector", {}).get("matchLabels") and pods, f"{name}: selector matches a pod template")
    eps = spec.get("podMetricsEndpoints") or []
    check(eps, f"{name}: has podMetricsEndpoints")
    for _, _, ps in pods:
        ports = {p.get("name") for where in ("containers", "initContainers")
                 for c in ps.get(where) or [] for p in c.get("ports") or []}
        for e in eps:
            check(e.get("port") in ports, f"{name}: endpoint port {e.get('port')!r} is a named container port")
    for e in eps:
        check(relabels_ns_pod(e), f"{name}: endpoint {e.get('port')} sets namespace and pod labels")
    agent = [e for e in eps if e.get("port") in ("metrics", "agent-metrics")]
    check(agent and agent[0].get("interval") == "5s", f"{name}: the agent's /metrics is scraped every 5s")
    # The agent's port name must belong to the agent alone: NVIDIA's chart names Triton's own
    # 8002 `metrics`, and a PodMonitor scrapes every container port of the name it selects.
    for pname, _, ps in pods:
        owners = [c["name"] for where in ("containers", "initContainers") for c in ps.get(where) or []
                  for p in c.get("ports") or [] if agent and p.get("name") == agent[0].get("port")]
        check(owners == [AGENT], f"{name}: in {pname}, port {agent[0].get('port') if agent else None!r} "
              f"belongs to the agent alone", repr(owners))
    check("app.kubernetes.io/instance" in (spec.get("podTargetLabels") or []),
          f"{name}: podTargetLabels copies app.kubernetes.io/instance (what the KEDA queries select on)")


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
                   "TritonNotReady", "TritonDrainNearTimeout", "TritonSidecarNotScraped",
                   "TritonKedaScalerErrors", "TritonModelOverCapacity", "TritonSidecarModelsWithoutCapacity",
                   "TritonSidecarStatisticsRefused"):
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
    if svc["metadata"]["name"].endswith("triton"):  # deploy/base's Service (any prefix)
        check({"http", "grpc", "metrics"} <= names, f"{name}: has http, grpc and metrics ports")
    check(all(p.get("port") != ADMIN_PORT and p.get("targetPort") not in (ADMIN_PORT, "admin") for p in ports),
          f"{name}: does not expose the admin port")


def policy_selects_triton(np_, objs):
    """Does the policy's podSelector select the pods that carry the agent (a workload's pod
    template with the triton-sidecar container, or a KServe InferenceService's predictor pods)?"""
    sel = (np_["spec"].get("podSelector") or {}).get("matchLabels") or {}
    for o in objs:
        if o["kind"] == "InferenceService":
            labels = {"serving.kserve.io/inferenceservice": o["metadata"]["name"],
                      **((o["spec"].get("predictor") or {}).get("labels") or {})}
        elif o["kind"] in ("Deployment", "StatefulSet"):
            try:
                ps = pod_spec(o)
            except Exception:  # noqa: BLE001
                continue
            names = [c.get("name") for c in (ps.get("containers") or []) + (ps.get("initContainers") or [])]
            if AGENT not in names:
                continue
            labels = ((o["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        else:
            continue
        if sel and all(labels.get(k) == v for k, v in sel.items()):
            return True
    return False


def check_networkpolicy(ep, np_, objs=()):
    name = f"{ep}: NetworkPolicy/{np_['metadata']['name']}"
    kserve = any(o["kind"] == "ServingRuntime" for o in objs)
    client_ports = {8080, 9000} if kserve else {8000, 8001}
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
    check(client_ports | {8002, 8003} <= allowed,
          f"{name}: allows {sorted(client_ports)} (clients), 8002, 8003 (monitoring)")
    if objs:
        check(policy_selects_triton(np_, objs), f"{name}: selects the pods that carry the agent",
              str((np_["spec"].get("podSelector") or {})))


# --------------------------------------------------------------------------------------------
# Issue 14: manifests that work as applied, and the injection into existing workloads
# --------------------------------------------------------------------------------------------
def autoscaled(objs):
    """Names of the Deployments/StatefulSets a ScaledObject or an HPA in this render targets."""
    out = set()
    for o in objs:
        if o["kind"] == "ScaledObject":
            out.add(((o["spec"]["scaleTargetRef"].get("kind") or "Deployment"), o["spec"]["scaleTargetRef"]["name"]))
        elif o["kind"] == "HorizontalPodAutoscaler":
            out.add((o["spec"]["scaleTargetRef"]["kind"], o["spec"]["scaleTargetRef"]["name"]))
    return out


def check_replicas(ep, objs):
    for kind, name in autoscaled(objs):
        for o in objs:
            if o["kind"] == kind and o["metadata"]["name"] == name:
                check("replicas" not in o["spec"],
                      f"{ep}: {kind}/{name} has no spec.replicas (its autoscaler owns the count; an apply "
                      f"would reset it)", f"replicas: {o['spec'].get('replicas')}")


def check_agent_images(ep, objs):
    """Entry points a user applies must name the agent image in a registry, never the bare
    local name of base (which ends in ImagePullBackOff)."""
    for pname, _, ps in pod_templates(objs):
        for where in ("containers", "initContainers"):
            for c in ps.get(where) or []:
                img = c.get("image", "")
                if "triton-sidecar" not in img.rsplit("/", 1)[-1].split(":")[0]:
                    continue
                host = img.split("/", 1)[0] if "/" in img else ""
                check(("." in host or ":" in host) and host != "",
                      f"{ep}: {pname}/{c['name']} pulls the agent from a registry", img)


def injection_errors(ps, labels, exit_default=30):
    """What an injected pod template (a Deployment's or StatefulSet's) must have; empty when right."""
    errs = []
    containers = ps.get("containers") or []
    agent, where = find_container(ps, AGENT)
    if agent is None:
        return ["no triton-sidecar container"]
    if not containers or containers[0].get("name") == AGENT:
        return ["the first container must be Triton's, not the agent"]
    triton = containers[0]
    hg = ((triton.get("lifecycle") or {}).get("preStop") or {}).get("httpGet") or {}
    if not (type(hg.get("port")) is int and hg.get("port") == ADMIN_PORT and hg.get("path") == "/wait-for-drain"):
        errs.append(f"first container ({triton.get('name')}) needs preStop httpGet port {ADMIN_PORT} (a number) "
                    f"path /wait-for-drain, got {hg!r}")
    rp = agent.get("readinessProbe") or {}
    if (rp.get("httpGet") or {}).get("path") != "/readyz" or rp.get("periodSeconds") != 1 \
            or rp.get("failureThreshold") != 1:
        errs.append("agent readinessProbe must be /readyz with periodSeconds 1, failureThreshold 1")
    if ((agent.get("livenessProbe") or {}).get("httpGet") or {}).get("path") != "/livez":
        errs.append("agent livenessProbe must be /livez")
    if where == "initContainers":
        if agent.get("restartPolicy") != "Always":
            errs.append("agent as an init container needs restartPolicy: Always")
        if ((agent.get("startupProbe") or {}).get("httpGet") or {}).get("path") != "/livez":
            errs.append("native-sidecar agent needs a startupProbe on /livez (never /readyz)")
    ports = {p.get("name"): p.get("containerPort") for p in agent.get("ports") or []}
    if ports.get("agent-metrics") != 8003 or ports.get("agent-admin") != 8004:
        errs.append(f"agent ports must be agent-metrics 8003 and agent-admin 8004, got {ports}")
    tritons_ports = {p.get("name") for c in containers[1:] + [triton] if c is not agent for p in c.get("ports") or []}
    if tritons_ports & {"agent-metrics", "agent-admin"}:
        errs.append("another container uses the agent's port names")
    env = {e["name"]: e.get("value") for e in agent.get("env") or []}
    drain = duration_s(env.get("TRITON_SIDECAR_DRAIN_TIMEOUT", "90s"))
    ex = [a for a in (triton.get("args") or []) if a.startswith("--exit-timeout-secs=")]
    exit_s = int(ex[0].split("=", 1)[1]) if ex else exit_default
    grace = ps.get("terminationGracePeriodSeconds", 30)
    if grace < drain + exit_s + 5:
        errs.append(f"terminationGracePeriodSeconds {grace} < drain {drain:g} + exit {exit_s} + margin")
    errs += exit_timeout_agreement(env, ex)
    if labels is not None and labels.get("triton-sidecar.io/agent") != "true":
        errs.append("pod label triton-sidecar.io/agent=true missing (the PodMonitor selects it)")
    return errs


def check_injected(ep, objs):
    """Every workload that carries the agent but is not the base's `triton` Deployment was
    injected (components/inject*, examples): check what the injection must add."""
    for o in objs:
        # the base's Deployment, also under a namePrefix (issue 21's second instance)
        if o["kind"] not in ("Deployment", "StatefulSet") or (
                o["kind"] == "Deployment" and o["metadata"]["name"].endswith(TRITON)
                and (o["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "inference"):
            continue
        labelled = (o["metadata"].get("labels") or {}).get("triton-sidecar.io/inject") == "true"
        has_agent = find_container(pod_spec(o), AGENT)[0] is not None
        n = f"{ep}: {o['kind']}/{o['metadata']['name']}"
        if not labelled:
            check(not has_agent, f"{n}: not labelled for injection, left alone")
            continue
        errs = injection_errors(pod_spec(o), o["spec"]["template"]["metadata"].get("labels") or {})
        check(not errs, f"{n}: injected (hook on Triton, agent, probes, ports, grace period, label)", "; ".join(errs))
        check(any(m["kind"] == "PodMonitor" and labels_match(m["spec"].get("selector") or {},
                                                              o["spec"]["template"]["metadata"].get("labels") or {})
                  for m in objs), f"{n}: a PodMonitor in the render scrapes it")
    # KServe: the agent inside a ServingRuntime; the grace period on the InferenceService.
    for o in objs:
        if o["kind"] != "ServingRuntime" or find_container(o["spec"], AGENT)[0] is None:
            continue
        isvcs = [i for i in objs if i["kind"] == "InferenceService"
                 and ((i["spec"].get("predictor") or {}).get("model") or {}).get("runtime") == o["metadata"]["name"]]
        for i in isvcs:
            pred = i["spec"]["predictor"]
            ps = dict(o["spec"], terminationGracePeriodSeconds=pred.get("terminationGracePeriodSeconds", 30))
            errs = injection_errors(ps, o["spec"].get("labels") or {})
            check(not errs, f"{ep}: ServingRuntime/{o['metadata']['name']} with InferenceService/"
                  f"{i['metadata']['name']} carries the agent like an injected pod", "; ".join(errs))
            ann = i["metadata"].get("annotations") or {}
            # RawDeployment, or its name from KServe 0.16 on, Standard (fixtures/kserve-standard).
            check(ann.get("serving.kserve.io/deploymentMode") in ("RawDeployment", "Standard"),
                  f"{ep}: InferenceService/{i['metadata']['name']} is in RawDeployment (Standard) mode "
                  "(Serverless: Knative owns scaling)")
            if any(s["kind"] == "ScaledObject" for s in objs):
                check(ann.get("serving.kserve.io/autoscalerClass") == "external",
                      f"{ep}: InferenceService/{i['metadata']['name']} leaves scaling to KEDA (autoscalerClass external)")
        check(isvcs, f"{ep}: ServingRuntime/{o['metadata']['name']} is used by an InferenceService")


def check_model_cache(ep, objs):
    for o in objs:
        if o["kind"] != "PersistentVolumeClaim":
            continue
        modes = o["spec"].get("accessModes") or []
        if "ReadWriteMany" in modes or "ReadOnlyMany" in modes:
            # The default classes of EKS, GKE and AKS are block storage (ReadWriteOnce): a shared
            # claim on the default class stays Pending with every pod that mounts it.
            check(o["spec"].get("storageClassName"),
                  f"{ep}: PersistentVolumeClaim/{o['metadata']['name']} ({'/'.join(modes)}) names its class")
        for pname, _, ps in pod_templates(objs):
            if pname == TRITON:
                for v in ps.get("volumes") or []:
                    if (v.get("persistentVolumeClaim") or {}).get("claimName") == o["metadata"]["name"]:
                        check(v["persistentVolumeClaim"].get("readOnly") is True,
                              f"{ep}: Triton mounts {o['metadata']['name']} read-only")


def check_prepull(ep, objs):
    for o in objs:
        if o["kind"] != "DaemonSet":
            continue
        ps = pod_spec(o)
        ns = ps.get("nodeSelector") or {}
        terms = ((((ps.get("affinity") or {}).get("nodeAffinity") or {})
                  .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or [])
        keys = [{e["key"] for e in t.get("matchExpressions") or []} for t in terms]
        gfd_only = "nvidia.com/gpu.present" in ns or (keys and all(k == {"nvidia.com/gpu.present"} for k in keys))
        check(not gfd_only and any(k - {"nvidia.com/gpu.present"} for k in keys),
              f"{ep}: DaemonSet/{o['metadata']['name']} reaches GPU nodes without GPU Feature Discovery's label "
              f"(GKE, EKS and AKS labels too)")


def check_inject_components(root):
    """The two inject components must add the same agent, but for where it sits."""
    with open(os.path.join(root, "deploy/components/inject/inject.yaml")) as f:
        ops = yaml.safe_load(f)
    regular = [op["value"] for op in ops if op["path"] == "/spec/template/spec/containers/-"][0]
    with open(os.path.join(root, "deploy/components/inject-native-sidecar/kustomization.yaml")) as f:
        patches = yaml.safe_load(f)["patches"]
    native = [yaml.safe_load(p["patch"]) for p in patches if "patch" in p][0]["spec"]["template"]["spec"]["initContainers"][0]
    strip = lambda c: {k: v for k, v in c.items() if k not in ("restartPolicy", "startupProbe")}
    check(strip(regular) == strip(native),
          "components inject and inject-native-sidecar add the same agent container (but restartPolicy, startupProbe)")
    with open(os.path.join(root, "deploy/components/inject-native-sidecar/hook.yaml")) as f:
        hook = yaml.safe_load(f)
    check([op for op in ops if op["path"] != "/spec/template/spec/containers/-"] == hook,
          "components inject and inject-native-sidecar patch Triton's hook, grace period and label alike")


def self_test_injection(objs):
    """The injection check must reject the mistakes it exists for."""
    inj = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")
           and (o["metadata"].get("labels") or {}).get("triton-sidecar.io/inject") == "true"]
    if not check(inj, "self-test: an injected workload to break"):
        return
    o = inj[0]
    bad = copy.deepcopy(o)
    pod_spec(bad)["containers"][0]["lifecycle"]["preStop"]["httpGet"]["port"] = "agent-admin"
    check(any("preStop" in e for e in injection_errors(pod_spec(bad), {"triton-sidecar.io/agent": "true"})),
          "self-test: an injected hook on a named port is rejected")
    bad = copy.deepcopy(o)
    pod_spec(bad)["terminationGracePeriodSeconds"] = 30
    check(any("terminationGracePeriodSeconds" in e for e in injection_errors(pod_spec(bad), None)),
          "self-test: an injected pod keeping the default 30 s grace period is rejected")
    bad = copy.deepcopy(o)
    ps = pod_spec(bad)
    a, where = find_container(ps, AGENT)
    ps[where].remove(a)
    ps["containers"].insert(0, a)
    check(any("first container" in e for e in injection_errors(ps, None)),
          "self-test: the agent placed before Triton (the hook would land on it) is rejected")


def captured(fn, *args):
    """Run a check function and take back what it recorded: the names of its failures."""
    n = len(results)
    fn(*args)
    got = results[n:]
    del results[n:]
    return [name for ok, name, _ in got if not ok]


def keda_ingress_errors(objs):
    """A render whose ScaledObject reads the agents (metrics-api) must let KEDA's operator reach
    8003: a policy on Triton's pods with a rule from a namespace, by name, to 8003 alone."""
    pols = [o for o in objs if o["kind"] == "NetworkPolicy" and policy_selects_triton(o, objs)]
    for np_ in pols:
        for rule in np_["spec"].get("ingress") or []:
            ports = [p.get("port") for p in rule.get("ports") or []]
            names = [((f.get("namespaceSelector") or {}).get("matchLabels") or {}).get("kubernetes.io/metadata.name")
                     for f in rule.get("from") or []]
            if ports == [AGENT_METRICS_PORT] and names and all(names):
                return []
    return [f"no policy on Triton's pods admits a namespace (KEDA's) to {AGENT_METRICS_PORT} alone: "
            f"{[p['metadata']['name'] for p in pols]}"]


def check_direct(ep, objs):
    """Issue 21: every keda-direct render (overlay, Helm and KServe examples): KEDA reads the
    agents, and KEDA's namespace may."""
    sos = [o for o in objs if o["kind"] == "ScaledObject"]
    direct = [o for o in sos if any(t.get("type") == "metrics-api" for t in o["spec"].get("triggers") or [])]
    if "direct" in ep and not ep.startswith("component-"):  # the component alone on base has no ScaledObject
        # components/keda-direct patches by label: a patch that matched nothing would leave the
        # Prometheus triggers in place without a word.
        check(sos and direct == sos and all(t.get("type") == "metrics-api" for o in sos for t in o["spec"]["triggers"]),
              f"{ep}: every ScaledObject reads the agents directly (metrics-api triggers only)")
    if direct:
        errs = keda_ingress_errors(objs)
        check(not errs, f"{ep}: a NetworkPolicy on Triton's pods admits KEDA's namespace to 8003", "; ".join(errs))


def self_test_direct(ep, objs):
    """The metrics-api checks must reject the mistakes they exist for, on a real direct render."""
    so = next(o for o in objs if o["kind"] == "ScaledObject")
    t = so["spec"]["triggers"][0]
    svc_name = re.match(r"http://([a-z0-9-]+)\.", t["metadata"]["url"]).group(1)

    def run(mutate):
        bad = copy.deepcopy(objs)
        mutate(bad)
        b_so = next(o for o in bad if o["kind"] == "ScaledObject")
        return captured(check_scaledobject, f"self-test {ep}", b_so, bad)

    def svc(bad):
        return next(o for o in bad if o["kind"] == "Service" and o["metadata"]["name"] == svc_name)

    def other_pods(bad):
        sel = svc(bad)["spec"]["selector"]
        k = "serving.kserve.io/inferenceservice" if "serving.kserve.io/inferenceservice" in sel else "app.kubernetes.io/instance"
        sel[k] = "someone-else"

    def first_url(bad):
        return next(o for o in bad if o["kind"] == "ScaledObject")["spec"]["triggers"][0]["metadata"]

    cases = [
        ("a URL host in another namespace", lambda b: first_url(b).update(
            url=re.sub(r"^(http://[a-z0-9-]+)\.[a-z0-9-]+\.", r"\1.elsewhere.", first_url(b)["url"])), "URL's namespace"),
        ("a Service on another instance's pods", other_pods, "selector matches the scale target's pods"),
        ("a Service in another namespace", lambda b: svc(b)["metadata"].update(namespace="elsewhere"), "in the ScaledObject's namespace"),
        ("a Service that publishes not-ready pods", lambda b: svc(b)["spec"].update(publishNotReadyAddresses=True), "only Ready endpoints"),
        ("utilization summed over the endpoints", lambda b: first_url(b).update(aggregationType="sum"), "aggregationType"),
        ("the agent's admin port", lambda b: first_url(b).update(url=first_url(b)["url"].replace(":8003/", ":8004/")), "8003/metrics"),
    ]
    for what, mutate, needle in cases:
        fails = run(mutate)
        check(any(needle in f for f in fails), f"self-test ({ep}): {what} is rejected", "; ".join(fails) or "no failure")
    bad = copy.deepcopy(objs)
    for np_ in (o for o in bad if o["kind"] == "NetworkPolicy"):
        np_["spec"]["ingress"] = [r for r in np_["spec"]["ingress"]
                                  if [p.get("port") for p in r.get("ports") or []] != [AGENT_METRICS_PORT]]
    check(keda_ingress_errors(bad), f"self-test ({ep}): a policy without KEDA's rule is rejected")
    bad = copy.deepcopy(objs)
    for o in bad:
        if o["kind"] == "ScaledObject":
            o["spec"]["triggers"][0]["type"] = "prometheus"
    check(any("metrics-api triggers only" in f for f in captured(check_direct, ep, bad)),
          f"self-test ({ep}): a direct render left with a Prometheus trigger is rejected")


def main():
    render_dir, root = sys.argv[1], sys.argv[2]
    files = sorted(f for f in os.listdir(render_dir) if f.endswith(".yaml"))
    check(files, "rendered entry points found", render_dir)
    base_dep = None
    inject_render = None
    keda_render = None
    direct_self_tested = set()
    direct_triggers = {}
    for fn in files:
        ep = fn[:-5]
        objs = load(os.path.join(render_dir, fn))
        for o in objs:
            check(o.get("apiVersion") and o.get("kind") and (o.get("metadata") or {}).get("name"),
                  f"{ep}: {o.get('kind')}/{(o.get('metadata') or {}).get('name')} has apiVersion, kind, metadata.name")
            k = o.get("kind")
            if k == "Deployment" and o["metadata"]["name"] == "triton":
                check_deployment(ep, o)
                restricted, errs = restricted_api_errors(o)
                if restricted or ep.startswith("component-restricted-api"):
                    check(restricted and not errs, f"{ep}: Triton's restricted statistics API and the agent's header "
                          "come from the same Secret key", "; ".join(errs) or "no --http-restricted-api")
                    if ep == "component-restricted-api":
                        bad = copy.deepcopy(o)
                        a, _ = find_container(pod_spec(bad), AGENT)
                        a["env"] = [e for e in a["env"] if e["name"] != "TRITON_SIDECAR_TRITON_API_HEADER"]
                        check(restricted_api_errors(bad)[1], "self-test: a restricted API without the agent's header is rejected")
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
            elif k == "HorizontalPodAutoscaler":
                ref = o["spec"].get("scaleTargetRef") or {}
                check_scaling_contract(f"{ep}: HorizontalPodAutoscaler/{o['metadata']['name']}", hpa_as_triggers(o),
                                       o["spec"].get("behavior") or {},
                                       [d for d in objs if d["kind"] == ref.get("kind") and d["metadata"]["name"] == ref.get("name")])
            elif k == "NetworkPolicy" and (o["metadata"]["name"] == "triton" or policy_selects_triton(o, objs)):
                # Triton's pods' policies (others, e.g. the model-cache fill Job's, are not)
                check_networkpolicy(ep, o, objs if not ep.startswith("component-") else ())
        # Monitors: never both a ServiceMonitor and a PodMonitor for the same pods.
        kinds = [o["kind"] for o in objs]
        check(not ("ServiceMonitor" in kinds and "PodMonitor" in kinds),
              f"{ep}: not both a ServiceMonitor and a PodMonitor (every series would count twice)")
        check(not ("ScaledObject" in kinds and "HorizontalPodAutoscaler" in kinds),
              f"{ep}: not both KEDA and a plain HPA for the same Deployment")
        if ep.startswith("example-"):
            # Issue 21: every example ships its policy (the admin port 8004 must not be open).
            check(any(o["kind"] == "NetworkPolicy" and policy_selects_triton(o, objs) for o in objs),
                  f"{ep}: ships a NetworkPolicy for its Triton pods")
        check_replicas(ep, objs)
        check_direct(ep, objs)
        if ep in ("keda-direct", "example-helm-chart-direct", "example-kserve-direct"):
            self_test_direct(ep, objs)
            direct_self_tested.add(ep)
            direct_triggers[ep] = next(o for o in objs if o["kind"] == "ScaledObject")["spec"]
        check_injected(ep, objs)
        check_model_cache(ep, objs)
        check_prepull(ep, objs)
        if not (ep == "base" or ep.startswith("component-")):
            # What a user applies (overlays, examples) pulls the agent from a registry.
            check_agent_images(ep, objs)
        if ep == "component-inject":
            inject_render = objs
        if ep == "keda":
            keda_render = objs
    # The base's preStop must be the httpGet form, and the self-test must reject the mistakes.
    if check(base_dep is not None, "base renders the Triton Deployment"):
        t, _ = find_container(pod_spec(base_dep), TRITON)
        hg = t["lifecycle"]["preStop"].get("httpGet") or {}
        check(type(hg.get("port")) is int and hg.get("port") == ADMIN_PORT and hg.get("path") == "/wait-for-drain",
              "base: Triton preStop is httpGet to port 8004 (a number) path /wait-for-drain",
              repr(hg))
        self_test(base_dep)
        check("replicas" not in base_dep["spec"], "base: the Deployment has no spec.replicas")
        check("runtimeClassName" not in pod_spec(base_dep),
              "base: no runtimeClassName (opt-in: components/nvidia-runtime)")
    if check(keda_render is not None, "the keda overlay was rendered"):
        so = next(o for o in keda_render if o["kind"] == "ScaledObject")
        dep = next(o for o in keda_render if o["kind"] == "Deployment" and o["metadata"]["name"] == "triton")
        self_test_scaling(so, dep)
    check(direct_self_tested == {"keda-direct", "example-helm-chart-direct", "example-kserve-direct"},
          "the metrics-api self-tests ran on every keda-direct path (own Deployment, Helm, KServe)",
          str(sorted(direct_self_tested)))
    # The Helm and KServe direct triggers and formula are the overlay's (one component), but for
    # the URL's namespace: what test_promql_live.py checks live on keda-direct holds for them.
    def strip_ns(spec):
        out = copy.deepcopy({"triggers": spec.get("triggers"), "formula": spec["advanced"]["scalingModifiers"]})
        for t in out["triggers"] or []:
            t["metadata"]["url"] = re.sub(r"^(http://[a-z0-9-]+)\.[a-z0-9-]+\.", r"\1.<ns>.", t["metadata"]["url"])
        return out
    if "keda-direct" in direct_triggers:
        for ep, spec in sorted(direct_triggers.items()):
            if ep != "keda-direct":
                check(strip_ns(spec) == strip_ns(direct_triggers["keda-direct"]),
                      f"{ep}: triggers and formula equal overlays/keda-direct's but for the URL's namespace")
    check_inject_components(root)
    if check(inject_render is not None, "the inject component was rendered on the fixture"):
        self_test_injection(inject_render)

    failed = [r for r in results if not r[0]]
    for ok, name, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok or not detail else f"\n       {detail}"))
    print(f"manifests: {len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
