#!/usr/bin/env bash
# Helm post-renderer: Helm pipes the rendered chart on stdin and applies what this prints.
#   helm install example <chart> --post-renderer deploy/examples/helm-chart/post-render.sh
# It runs this example's kustomization on the chart's real output (in place of the committed
# rendered/triton-inference-server.yaml), in a temporary copy. Needs kubectl (kustomize built in).
# `post-render.sh direct` runs ../helm-chart-direct instead (KEDA reads the agents directly);
# ../helm-chart-direct/post-render.sh and its Helm 4 plugin call it so.
set -euo pipefail
case "${1:-}" in
  "") example=helm-chart ;;
  direct) example=helm-chart-direct ;;
  *) echo "post-render.sh: unknown variant '$1' (none, or direct)" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The examples reference ../../components and ../helm-chart: keep that layout in the copy.
mkdir -p "$work/deploy/examples"
cp -r "$here/../../components" "$work/deploy/"
cp -r "$here" "$work/deploy/examples/helm-chart"
if [[ "$example" != helm-chart ]]; then cp -r "$here/../$example" "$work/deploy/examples/$example"; fi
cat >"$work/deploy/examples/helm-chart/rendered/triton-inference-server.yaml"
kubectl kustomize "$work/deploy/examples/$example"
