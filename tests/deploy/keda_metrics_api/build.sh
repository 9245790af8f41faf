#!/usr/bin/env bash
# Builds keda-metrics-api offline against Debian's Go packages (golang-go,
# golang-github-prometheus-common-dev: Prometheus's real expfmt text parser, the one KEDA's
# metrics-api scaler uses), installing them when missing. Prints the binary's path.
#   build.sh OUT_DIR
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(mkdir -p "${1:?usage: build.sh OUT_DIR}" && cd "$1" && pwd)"
mkdir -p "$out"
if ! command -v go >/dev/null 2>&1 || [[ ! -d /usr/share/gocode/src/github.com/prometheus/common/expfmt ]]; then
  echo "keda_metrics_api: installing golang-go and golang-github-prometheus-common-dev" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-github-prometheus-common-dev >/dev/null
fi
bin="$out/keda-metrics-api"
if [[ ! -x "$bin" || "$here/main.go" -nt "$bin" ]]; then
  GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$out/go-cache" GOFLAGS= \
    go build -o "$bin" "$here/main.go" >&2
fi
echo "$bin"
