#!/usr/bin/env python3
"""Issue 21: the Helm post-renderer changes Triton's Deployment and nothing else.

    helm_post_render.py OUT_YAML [--variant direct]

--variant direct: deploy/examples/helm-chart-direct (its post-render.sh and Helm 4 plugin), where
KEDA's metrics-api scaler reads the agents: also checks that every trigger's URL host is
`triton-sidecar-metrics.<the Deployment's namespace>` and that the added metrics Service selects
Triton's pods (never Traefik's).

Feeds deploy/examples/helm-chart/post-render.sh what Helm would pipe into it with the chart's
tags on: the vendored chart output (rendered/triton-inference-server.yaml) plus
fixtures/helm-chart-extra.yaml (a Traefik Deployment, the chart's v2beta2 HPA, its Service).
Checks, then writes the output to OUT_YAML (run.sh validates it strictly with every render):
  - Triton's Deployment gets the agent, the preStop hook to 8004 and no `replicas`, and keeps
    its namespace;
  - the chart's HPA is dropped;
  - every other input object comes out exactly as it went in;
  - what the example adds (ScaledObject, PodMonitor, NetworkPolicy) carries no namespace: Helm's
    --namespace decides;
  - the ScaledObject targets the chart's Deployment by name.
  - a second namespace: the same input as `helm template -n team-b` renders it (every
    `namespace: inference` -> team-b) gives queries (or URL hosts) in team-b, and still no
    namespace on what the example adds;
  - a chart output whose Deployment has no namespace makes the post-renderer fail (Helm then
    installs nothing), rather than print queries or a URL host for some other namespace.
Prints the Deployment's diff and the added objects. A self-test makes the contract reject an
output that injected the Traefik Deployment too, or forced a namespace (direct: or read another
namespace's Service).
"""
import copy
import difflib
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy/examples/helm-chart"
EXTRA = pathlib.Path(__file__).resolve().parent / "fixtures/helm-chart-extra.yaml"
TRITON = ("Deployment", "example-triton-inference-server")
AGENT = "triton-sidecar"


def key(o):
    return (o["kind"], o["metadata"]["name"])


def containers(o):
    return [c["name"] for c in o["spec"]["template"]["spec"].get("containers") or []]


def pod_labels(o):
    return ((o["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}


def namespaces_read(so) -> set:
    """The namespaces a ScaledObject's triggers read: the queries' namespace matchers, or the
    metrics-api URL hosts' second label."""
    out = set()
    for t in so["spec"].get("triggers") or []:
        md = t.get("metadata") or {}
        if t.get("type") == "metrics-api":
            m = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:\d+/\S*", md.get("url", ""))
            out.add(m.group(2) if m else f"<bad url {md.get('url')!r}>")
        else:
            out |= set(re.findall(r'namespace="([^"]*)"', md.get("query", "")))
    return out


def contract(inp: list, out: list, direct: bool = False) -> list:
    errs = []
    by_in = {key(o): o for o in inp}
    by_out = {key(o): o for o in out}
    for k, o in by_in.items():
        got = by_out.get(k)
        if k == TRITON:
            if got is None:
                errs.append("Triton's Deployment is gone")
                continue
            if AGENT not in containers(got):
                errs.append("Triton's Deployment has no agent container")
            pre = ((got["spec"]["template"]["spec"]["containers"][0].get("lifecycle") or {}).get("preStop") or {})
            if (pre.get("httpGet") or {}).get("port") != 8004:
                errs.append(f"Triton's preStop is not httpGet to 8004: {pre}")
            if "replicas" in got["spec"]:
                errs.append("Triton's Deployment keeps `replicas` (a helm upgrade resets the scaled count)")
            if got["metadata"].get("namespace") != o["metadata"].get("namespace"):
                errs.append(f"Triton's namespace changed: {o['metadata'].get('namespace')!r} -> "
                            f"{got['metadata'].get('namespace')!r}")
        elif o["kind"] == "HorizontalPodAutoscaler" and (o["metadata"].get("labels") or {}).get("app") == "triton-inference-server":
            if got is not None:
                errs.append("the chart's HPA is still there: two autoscalers on one Deployment")
        elif got != o:
            errs.append(f"{k[0]}/{k[1]} changed, though it is not Triton's Deployment")
    for k, o in by_out.items():
        if k in by_in:
            continue
        if o["metadata"].get("namespace"):
            errs.append(f"added {k[0]}/{k[1]} forces namespace {o['metadata']['namespace']!r} (Helm's --namespace decides)")
        if o["kind"] == "ScaledObject" and o["spec"]["scaleTargetRef"]["name"] != TRITON[1]:
            errs.append(f"the ScaledObject targets {o['spec']['scaleTargetRef']['name']!r}, not {TRITON[1]!r}")
    if not any(o["kind"] == "ScaledObject" for o in out):
        errs.append("the example ships no ScaledObject")
    triton = by_in.get(TRITON)
    ns = (triton or {}).get("metadata", {}).get("namespace")
    for so in (o for o in out if o["kind"] == "ScaledObject"):
        if so["metadata"]["name"] != TRITON[1]:
            errs.append(f"the ScaledObject is {so['metadata']['name']!r}, not named after the Deployment")
        types = {t.get("type") for t in so["spec"].get("triggers") or []}
        if types != ({"metrics-api"} if direct else {"prometheus"}):
            errs.append(f"the ScaledObject's triggers are {sorted(types)}")
        if namespaces_read(so) != {ns}:
            errs.append(f"the ScaledObject reads namespace(s) {sorted(namespaces_read(so))}, not the Deployment's {ns!r}")
    if direct:
        svc = [o for o in out if o["kind"] == "Service" and o["metadata"]["name"] == "triton-sidecar-metrics"]
        if not svc:
            errs.append("no Service triton-sidecar-metrics for the metrics-api triggers")
        else:
            sel = svc[0]["spec"].get("selector") or {}
            hits = [key(o)[1] for o in out if o["kind"] == "Deployment"
                    and sel and all(pod_labels(o).get(k) == v for k, v in sel.items())]
            if hits != [TRITON[1]]:
                errs.append(f"the metrics Service's selector {sel} selects the pods of {hits}, not Triton's alone")
    return errs


def dump(o) -> list:
    return yaml.safe_dump(o, sort_keys=True).splitlines(keepends=True)


def post_render(script: pathlib.Path, stdin: str):
    return subprocess.run([str(script)], input=stdin, capture_output=True, text=True)


def main() -> int:
    direct = sys.argv[2:] == ["--variant", "direct"]
    if sys.argv[2:] and not direct:
        sys.exit("usage: helm_post_render.py OUT_YAML [--variant direct]")
    variant = EXAMPLE.parent / "helm-chart-direct" if direct else EXAMPLE
    print(f"variant: deploy/examples/{variant.name}")
    vendored = (EXAMPLE / "rendered/triton-inference-server.yaml").read_text()
    stdin = vendored + "\n---\n" + EXTRA.read_text()
    inp = [d for d in yaml.safe_load_all(stdin) if d]
    r = post_render(variant / "post-render.sh", stdin)
    if r.returncode != 0:
        print(r.stderr)
        return 1
    out = [d for d in yaml.safe_load_all(r.stdout) if d]
    pathlib.Path(sys.argv[1]).write_text(r.stdout)
    errs = contract(inp, out, direct)
    # A second namespace, as `helm template -n team-b` renders the chart (its templates write
    # `namespace: {{ .Release.Namespace }}`): the queries or URL hosts follow.
    stdin_b = re.sub(r"(?m)^(\s*)namespace: inference$", r"\1namespace: team-b", stdin)
    inp_b = [d for d in yaml.safe_load_all(stdin_b) if d]
    rb = post_render(variant / "post-render.sh", stdin_b)
    if rb.returncode != 0:
        errs.append(f"second namespace: the post-renderer failed: {rb.stderr[:300]}")
    else:
        out_b = [d for d in yaml.safe_load_all(rb.stdout) if d]
        errs += [f"second namespace (team-b): {e}" for e in contract(inp_b, out_b, direct)]
        so_b = next((o for o in out_b if o["kind"] == "ScaledObject"), None)
        print(f"second namespace (helm -n team-b): the ScaledObject reads {sorted(namespaces_read(so_b)) if so_b else None}")
    # A chart output without a namespace on the Deployment: the post-renderer must fail.
    stdin_none = re.sub(r"(?m)^  namespace: inference\n", "", vendored, count=1) + "\n---\n" + EXTRA.read_text()
    rn = post_render(variant / "post-render.sh", stdin_none)
    if rn.returncode == 0 or "metadata.namespace" not in rn.stderr:
        errs.append(f"a Deployment without a namespace did not fail the post-renderer (rc {rn.returncode}): "
                    f"it would print queries or URL hosts for no namespace")
    else:
        print("a Deployment without a namespace: the post-renderer fails (" +
              rn.stderr.strip().splitlines()[-1][-120:] + ")")
    # Self-test: the contract must see the old example's mistakes.
    worse = copy.deepcopy(out)
    traefik = next(o for o in worse if key(o) == ("Deployment", "example-traefik"))
    traefik["spec"]["template"]["spec"]["containers"].append({"name": AGENT, "image": "x"})
    forced = copy.deepcopy(out)
    for o in forced:
        o["metadata"]["namespace"] = "inference"
    cases = [("an injected Traefik", worse, "example-traefik changed"),
             ("a forced namespace", forced, "forces namespace")]
    if direct:
        other = copy.deepcopy(out)
        so = next(o for o in other if o["kind"] == "ScaledObject")
        so["spec"]["triggers"][0]["metadata"]["url"] = so["spec"]["triggers"][0]["metadata"]["url"].replace(
            ".inference.", ".triton.")
        traefik_svc = copy.deepcopy(out)
        svc = next(o for o in traefik_svc if o["kind"] == "Service" and o["metadata"]["name"] == "triton-sidecar-metrics")
        svc["spec"]["selector"] = {"app.kubernetes.io/name": "traefik"}
        cases += [("a URL host in another namespace", other, "reads namespace"),
                  ("a metrics Service on Traefik's pods", traefik_svc, "not Triton's alone")]
    for what, bad, needle in cases:
        if not any(needle in e for e in contract(inp, bad, direct)):
            errs.append(f"self-test: the contract does not reject {what}")
        else:
            print(f"self-test: {what} is rejected")
    # Helm 4: the plugin, installed (a link to the plugin directory, as a local install makes),
    # run with HELM_PLUGIN_DIR as Helm sets it, gives the same output.
    plugin = yaml.safe_load((variant / "plugin/plugin.yaml").read_text())
    want = {"apiVersion": "v1", "type": "postrenderer/v1", "runtime": "subprocess"}
    if any(plugin.get(k) != v for k, v in want.items()) or not plugin.get("name") or not plugin.get("version"):
        errs.append(f"plugin.yaml is not a v1 postrenderer/v1 subprocess plugin with a name and version: {plugin}")
    with tempfile.TemporaryDirectory() as td:
        link = pathlib.Path(td) / plugin.get("name", "plugin")
        link.symlink_to(variant / "plugin")
        cmd = plugin["runtimeConfig"]["platformCommand"][0]["command"].replace("${HELM_PLUGIN_DIR}", str(link))
        rp = subprocess.run([cmd], input=stdin, capture_output=True, text=True,
                            env={**os.environ, "HELM_PLUGIN_DIR": str(link)})
        if rp.returncode != 0 or rp.stdout != r.stdout:
            errs.append(f"the installed Helm 4 plugin does not give the post-renderer's output: rc {rp.returncode} {rp.stderr[:300]}")
        else:
            print(f"Helm 4 plugin {plugin['name']} (installed as a link, HELM_PLUGIN_DIR set): same output")
    t_in = next(o for o in inp if key(o) == TRITON)
    t_out = next((o for o in out if key(o) == TRITON), None)
    if t_out is not None:
        print("".join(difflib.unified_diff(dump(t_in), dump(t_out), "chart: Deployment", "post-render: Deployment", n=1)))
    print("input:  " + ", ".join(f"{k}/{n}" for k, n in map(key, inp)))
    print("output: " + ", ".join(f"{k}/{n}" for k, n in map(key, out)))
    print("added:  " + ", ".join(f"{k}/{n}" for k, n in map(key, out) if (k, n) not in set(map(key, inp))))
    for e in errs:
        print("FAIL:", e)
    print("ok: only Triton's Deployment changed (and the chart's HPA dropped), no namespace forced" if not errs
          else f"{len(errs)} problem(s)")
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
