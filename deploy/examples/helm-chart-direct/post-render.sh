#!/usr/bin/env bash
# Helm 3 post-renderer for the direct variant (KEDA reads the agents, no Prometheus in the loop):
#   helm install example <chart> --post-renderer deploy/examples/helm-chart-direct/post-render.sh
# The Helm example's post-renderer, run on this kustomization.
set -euo pipefail
exec "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../helm-chart/post-render.sh" direct
