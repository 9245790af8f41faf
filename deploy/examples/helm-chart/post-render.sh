#!/usr/bin/env bash
# Helm post-renderer: Helm pipes the rendered chart on stdin and applies what this prints.
#   helm install example <chart> --post-renderer deploy/examples/helm-chart/post-render.sh
# It runs this example's kustomization on the chart's real output (in place of the committed
# rendered/triton-inference-server.yaml), in a temporary copy. Needs kubectl (kustomize built in).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The example references ../../components: keep that layout in the copy.
mkdir -p "$work/deploy/examples"
cp -r "$here/../../components" "$work/deploy/"
cp -r "$here" "$work/deploy/examples/helm-chart"
cat >"$work/deploy/examples/helm-chart/rendered/triton-inference-server.yaml"
kubectl kustomize "$work/deploy/examples/helm-chart"
