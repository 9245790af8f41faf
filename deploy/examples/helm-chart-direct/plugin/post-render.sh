#!/usr/bin/env bash
# The Helm 4 plugin's command: the direct variant's post-renderer, found through the plugin
# directory (a local `helm plugin install` links it, so resolve the link back to this repository).
set -euo pipefail
dir="$(readlink -f "${HELM_PLUGIN_DIR:-$(dirname "${BASH_SOURCE[0]}")}")"
exec "$dir/../post-render.sh"
