"""Check 4 of issue 8: every PromQL expression deploy/ ships, on a real Prometheus.

    .venv/bin/python -m pytest -q tests/deploy/test_promql_live.py

Needs: the e2e venv (tests/e2e/setup_venv.sh; it has pytest), the agent binary
(target/release/triton-sidecar, or TRITON_SIDECAR_BIN), kubectl, Debian's `prometheus`, and a
Python with PyYAML for the two helper scripts (this interpreter if it has it, else
.venv-tools/bin/python, which tests/deploy/run.sh makes). Anything missing is an error, never a
skip.

What runs (loopback only, every port picked free, every process stopped at the end, also on
failure):
  * one real Triton (tests/e2e harness: models `fast` and `slow`);
  * two agents against it, as the sidecars of two pods POD_A and POD_B of namespace NS. Two
    pods, so that a KEDA query that is not aggregated to one series would answer two and fail;
    they share one Triton to spare the 2-core machine, so both report the same numbers;
  * Debian's `prometheus`, configured by prometheus_config.py from the *rendered* ServiceMonitor
    (its endpoints, paths, relabelings; `namespace`, `pod`, `container`, ... set as the operator
    would) and loading the rendered PrometheusRule. Scrape interval: the manifest's, capped at
    5 s (the agent's stays 5 s; Triton's 30 s becomes 5 s). Rule evaluation every 5 s; the
    recording group keeps its own 15 s.

The expressions come from extract_promql.py run on the rendered manifests (nothing is copied by
hand). Its substitution rules apply: KEDA's namespace matcher -> NS (pod regexes kept: the pod
names below match the manifests' `triton-.+`); adapter templates rendered with
namespace="NS",pod=~".+" and GroupBy pod; dashboard $namespace -> NS, $pod -> .*, $model -> .*,
$__rate_interval -> 1m, $__interval -> 15s, $__range -> 1h; dashboard variables
label_values(SEL, L) asked as /api/v1/label/L/values?match[]=SEL.

Phases, each evaluated at one instant (the API's `time=`) so all answers are consistent:
  load   16 clients on `slow` (1 instance, 350 ms/request: ~15 pending, seconds of queue wait)
         and 2 light clients on `fast`; once both KEDA queries are above their thresholds, the
         load goes on for 15 s more (the agents' 10 s window plus a scrape), and the phase is
         evaluated at an instant where both are above (or at the deadline, when the test then
         fails and shows the values). Control: the selector inside the pending query, without
         its sum(), answers two series (one per pod);
  idle   load stopped; evaluated once both KEDA queries are at or below activationThreshold;
  drain  POD_B's agent drained (POST /drain), so triton_sidecar_drains_total exists; evaluated
         once Prometheus has two samples of it.

Assertions, per expression and phase:
  keda       exactly one series, finite; load: > threshold; idle: <= activationThreshold;
             drain: one series, finite (no threshold: the load is gone);
  adapter, recording, dashboard, readme (deploy/README.md's ```promql blocks)
             at least one series, every value finite;
  variable   the label's values are not empty (namespace: NS; pod: both pods; model: fast, slow);
  alert      evaluates without error (an alert answers nothing unless it fires; the promtool
             unit tests of run.sh prove them firing and not firing);
  rules      in this Prometheus every loaded rule reports health "ok".
Thresholds are the production ones from the manifests: this machine's `slow` load exceeds them,
so no test overlay is needed. Expressions that read triton_gpu_* are skipped (no GPU here: the
agents run --no-gpu); those that need a drain are skipped in load/idle and checked in drain.

Issue 14 adds, on the same Prometheus (rule evaluation every 30 s, kube-prometheus-stack's
default; the agents scraped every 5 s, the PodMonitor's interval):
  * a third pod POD_C whose agent watches a stuck "Triton" (a loopback page with 3 requests
    pending for ever) and carries another app.kubernetes.io/instance: its name matches the old
    regex triton-.+, its label does not, and the KEDA queries must leave it out (idle phase);
  * termination: POD_C gets SIGTERM as the kubelet sends it; its drain runs to its 30 s timeout,
    the agent exits (no more than 2 s after the drain ended) and its target stops answering.
    TritonDrainNearTimeout must then fire for POD_C, from the samples scraped during the drain,
    and for no other pod;
  * a loopback kube-state-metrics page listing the three pods and a fourth, POD_GHOST, that no
    target scrapes: TritonSidecarNotScraped must be pending (its `for` is 5 minutes; promtool
    covers the timing) for POD_GHOST only;
  * a loopback KEDA operator page whose error counters grow for the ScaledObject `triton` of NS
    and for another one, scraped with KEDA's own `namespace` label as a real scrape sees it:
    TritonKedaScalerErrors must be pending for NS/triton only.

Issue 13 (capacity and utilization), on the same stack:
  * POD_A's agent has `--capacity slow=2.857,fast=400` (the models' design: `slow` sleeps 350 ms
    per request on 1 instance, `fast` 20 ms per batch of up to 8) and no statistics header;
  * POD_B's agent has no --capacity and estimates it online from GET /v2/models/stats, with the
    access header of Triton's restricted statistics API where Triton restricts it (pytriton does
    by default, with a random token: the test reads it from tritonserver's own command line,
    /proc/<pid>/cmdline, as the pod's Secret would give it);
  * POD_C's stuck "Triton" answers the statistics API 403 and publishes TensorRT-LLM gauges, so
    the KV-cache and active-ratio expressions have series and the statistics/capacity alerts a pod
    to fire for;
  * kube-state-metrics also lists pod creation and ready times (the dashboard's cold-start panel).
  Under load: utilization is present and > 0 on both pods; POD_A's configured capacity is exactly
  the flag's, its utilization is offered load / capacity, and its offered load for `slow` matches
  the completions the clients counted (+-25 %); POD_B's estimated capacity of `slow` is within
  +-25 % of 1000/350 req/s; the pod utilization is at least the largest model's and at most the
  sum; the KEDA trigger is the sum of the pods'. TritonSidecarStatisticsRefused is active for the
  pods refused (POD_C, and POD_A when Triton restricts the API) and no other;
  TritonSidecarModelsWithoutCapacity for POD_C only.

Env: DEPLOY_LIVE_LOAD_TIMEOUT / DEPLOY_LIVE_IDLE_TIMEOUT (s, default 90 / 90).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import signal
import threading
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from typing import Dict, List, Optional, Sequence

import pytest
import requests

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import common  # noqa: E402

NS = "triton-test"
POD_A, POD_B = "triton-7c9d8f6b5-lv7qz", "triton-7c9d8f6b5-x4mnp"
PODS = (POD_A, POD_B)
# Issue 14: a pod of another workload whose name still matches triton-.+ (see the docstring), and
# a pod kube-state-metrics knows but no target scrapes.
POD_C, POD_GHOST = "triton-7c9d8f6b5-zq2dr", "triton-7c9d8f6b5-gh0st"
STUCK_INSTANCE = "triton-stuck"
STUCK_DRAIN_TIMEOUT_S = 30
EVAL_INTERVAL = "30s"  # kube-prometheus-stack's default evaluationInterval
MAX_EXIT_DELAY_S = 2.0  # issue 14: pod exit may not be delayed by more than this
SCRAPE_CAP = "5s"
SLOW_CLIENTS, FAST_CLIENTS = 16, 2
STEADY_S = 15.0  # the agents' --window (10 s) plus one scrape (5 s)
LOAD_TIMEOUT = float(os.environ.get("DEPLOY_LIVE_LOAD_TIMEOUT", "90"))
IDLE_TIMEOUT = float(os.environ.get("DEPLOY_LIVE_IDLE_TIMEOUT", "90"))
PHASES = ("load", "idle", "drain")
# Issue 13: POD_A's configured capacities (requests/s per pod), from the models' design in
# tests/e2e/serve_triton.py: `slow` 1 instance x 1 request / 350 ms; `fast` 1 instance x 8 / 20 ms.
SLOW_CAPACITY, FAST_CAPACITY = 1000 / 350, 8 * 1000 / 20
CAPACITY_FLAGS = ("--capacity", f"slow={SLOW_CAPACITY:.3f}", "--capacity", f"fast={FAST_CAPACITY:g}")
TOLERANCE = 0.25  # the calibration tolerance, for the estimate and the offered load
# kube-state-metrics' creation and ready times of every pod: a cold start of COLD_START_S.
COLD_START_S = 95

# Measured values, printed by conftest.py's terminal summary.
REPORT: Dict[str, object] = {}


# --------------------------------------------------------------------------- helpers


def yaml_python() -> str:
    """An interpreter with PyYAML, for extract_promql.py and prometheus_config.py."""
    for cand in (sys.executable, str(ROOT / ".venv-tools" / "bin" / "python"), "/usr/bin/python3"):
        if cand and os.path.exists(cand) and subprocess.run(
                [cand, "-c", "import yaml"], capture_output=True).returncode == 0:
            return cand
    raise RuntimeError("no Python with PyYAML: run tests/deploy/run.sh first (it makes .venv-tools)")


def extract_items() -> List[dict]:
    r = subprocess.run([yaml_python(), str(HERE / "extract_promql.py"), "--root", str(ROOT), "--namespace", NS],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"extract_promql.py failed:\n{r.stderr}")
    return json.loads(r.stdout)


ITEMS = extract_items()  # at collection: every expression becomes a test id


def agent_bin() -> pathlib.Path:
    env = os.environ.get("TRITON_SIDECAR_BIN")
    p = pathlib.Path(env) if env else ROOT / "target" / "release" / "triton-sidecar"
    p = p if p.is_absolute() else ROOT / p
    if not p.exists():
        raise FileNotFoundError(f"{p} missing: cargo build --release (or set TRITON_SIDECAR_BIN)")
    return p


class Prom:
    def __init__(self, base: str):
        self.base = base
        self.s = requests.Session()
        self.s.trust_env = False  # loopback, never a proxy

    def api(self, path: str, **params) -> dict:
        r = self.s.get(f"{self.base}/api/v1/{path}", params=params, timeout=15)
        body = r.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, t: Optional[float] = None) -> List[tuple]:
        params = {"query": expr}
        if t is not None:
            params["time"] = f"{t:.3f}"
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise RuntimeError(f"unexpected result type {data['resultType']}")
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    def label_values(self, label: str, selector: str, t: float) -> List[str]:
        params = {"start": f"{t - 3600:.3f}", "end": f"{t:.3f}"}
        if selector:
            params["match[]"] = selector
        return self.api(f"label/{urllib.parse.quote(label)}/values", **params)


def keda_items() -> List[dict]:
    return [it for it in ITEMS if it["role"] == "keda"]


def keda_values(prom: Prom, t: Optional[float] = None) -> Dict[str, object]:
    out = {}
    for it in keda_items():
        try:
            res = prom.query(it["expr"], t)
            out[it["name"]] = res[0][1] if len(res) == 1 else [v for _, v in res]
        except Exception as e:  # noqa: BLE001
            out[it["name"]] = f"error: {e}"
    return out


def wait_for(pred, timeout: float, interval: float = 1.0):
    """(True, t) once pred() holds, else (False, t at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        t = time.time()
        try:
            if pred(t):
                return True, t
        except Exception:  # noqa: BLE001 - retried until the deadline
            pass
        if time.monotonic() > deadline:
            return False, time.time()
        time.sleep(interval)


def evaluate(prom: Prom, t: float) -> Dict[int, dict]:
    """Every item at instant t: {index: {"result": [...]} or {"error": str}}."""
    out = {}
    for i, it in enumerate(ITEMS):
        try:
            if it["role"] == "variable":
                out[i] = {"values": prom.label_values(it["label"], it["expr"], t)}
            else:
                out[i] = {"result": prom.query(it["expr"], t)}
        except Exception as e:  # noqa: BLE001 - reported by the item's own test
            out[i] = {"error": f"{type(e).__name__}: {e}"}
    return out


class FakeServer:
    """A loopback HTTP server answering GET with route(path) -> (status, body); for the stuck
    Triton, kube-state-metrics and KEDA's operator page."""

    def __init__(self, route):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                code, body = outer.route(self.path)
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet
                pass

        self.route = route
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


STUCK_PAGE = (
    "# TYPE nv_inference_request_success counter\n"
    'nv_inference_request_success{model="stuck",version="1"} 10\n'
    'nv_inference_request_failure{model="stuck",reason="BACKEND",version="1"} 0\n'
    'nv_inference_exec_count{model="stuck",version="1"} 10\n'
    'nv_inference_queue_duration_us{model="stuck",version="1"} 0\n'
    'nv_inference_compute_infer_duration_us{model="stuck",version="1"} 10000\n'
    # Three requests that never finish: a wedged backend. Its drain can only time out.
    'nv_inference_pending_request_count{model="stuck",version="1"} 3\n'
    # Issue 13: TensorRT-LLM's gauges (the backend's published format), so that the dashboard's
    # KV-cache and active-ratio panels have a series to show: 400 of 1000 blocks, 3 of 8 slots.
    "# TYPE nv_trt_llm_request_metrics gauge\n"
    'nv_trt_llm_request_metrics{model="stuck",request_type="active",version="1"} 3\n'
    'nv_trt_llm_request_metrics{model="stuck",request_type="max",version="1"} 8\n'
    'nv_trt_llm_request_metrics{model="stuck",request_type="scheduled",version="1"} 3\n'
    'nv_trt_llm_request_metrics{model="stuck",request_type="context",version="1"} 0\n'
    "# TYPE nv_trt_llm_kv_cache_block_metrics gauge\n"
    'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max",model="stuck",version="1"} 1000\n'
    'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="free",model="stuck",version="1"} 600\n'
    'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used",model="stuck",version="1"} 400\n'
    'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per",model="stuck",version="1"} 64\n')
STUCK_KV, STUCK_ACTIVE = 0.4, 3 / 8


def stuck_triton(path: str):
    if path.startswith("/metrics"):
        return 200, STUCK_PAGE
    if path.startswith("/v2/health/"):
        return 200, ""
    if path.startswith("/v2/models/stats"):
        # Issue 13: a restricted statistics API, answered without the header.
        return 403, '{"error":"This API is restricted, expecting header \'triton-access-token\'"}'
    return 404, ""


def ksm_page(path: str):
    lines = []
    for pod in (POD_A, POD_B, POD_C, POD_GHOST):
        lines.append(f'kube_pod_container_info{{namespace="{NS}",pod="{pod}",container="triton-sidecar",uid="{pod}"}} 1')
        lines.append(f'kube_pod_status_phase{{namespace="{NS}",pod="{pod}",phase="Running",uid="{pod}"}} 1')
        # Issue 13: created, then ready COLD_START_S later (the dashboard's cold-start panel).
        lines.append(f'kube_pod_created{{namespace="{NS}",pod="{pod}",uid="{pod}"}} 1764550000')
        lines.append(f'kube_pod_status_ready_time{{namespace="{NS}",pod="{pod}",uid="{pod}"}} {1764550000 + COLD_START_S}')
    return 200, "\n".join(lines) + "\n"


class KedaPage:
    """KEDA's operator page: error counters that grow at every scrape, for `triton` in NS and for
    another ScaledObject (which the alert must ignore)."""

    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def __call__(self, path: str):
        with self.lock:
            self.n += 1
            n = self.n
        return 200, (
            "# TYPE keda_scaled_object_errors_total counter\n"
            f'keda_scaled_object_errors_total{{namespace="{NS}",scaledObject="triton"}} {n}\n'
            f'keda_scaled_object_errors_total{{namespace="{NS}",scaledObject="other"}} {n}\n'
            "# TYPE keda_scaler_detail_errors_total counter\n"
            f'keda_scaler_detail_errors_total{{namespace="{NS}",scaledObject="triton",scaler="prometheusScaler",'
            f'triggerIndex="0",type="scaledobject",metric="s0-prometheus"}} {n}\n')


def restricted_api_header(triton) -> Optional[str]:
    """NAME=VALUE of Triton's --http-restricted-api covering `statistics`, from tritonserver's own
    command line (pytriton makes a random token); None when statistics is not restricted."""
    with open(f"/proc/{triton.triton_pid}/cmdline", "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0") if a]
    for i, a in enumerate(argv):
        if a.startswith("--http-restricted-api"):
            val = a.split("=", 1)[1] if "=" in a else argv[i + 1]
            apis, header = val.split(":", 1)
            if "statistics" in apis.split(","):
                return header
    return None


def stats_status(url: str, header: Optional[str]) -> int:
    s = requests.Session()
    s.trust_env = False
    h = dict([header.split("=", 1)]) if header else {}
    return s.get(f"{url}/v2/models/stats", headers=h, timeout=5).status_code


def alerts(prom: "Prom", name: str, t: Optional[float] = None) -> List[dict]:
    return [{**m, "value": v} for m, v in prom.query(f'ALERTS{{alertname="{name}"}}', t)]


def capacity_view(prom: "Prom", t: float) -> Dict[str, object]:
    """Issue 13's gauges of every pod at instant t: {gauge: {(pod, model[, source]): value}}."""
    out: Dict[str, object] = {}
    for g in ("triton_utilization", "triton_offered_load_rps", "triton_capacity_rps", "triton_request_rate",
              "triton_pod_utilization", "triton_pod_offered_load_rps", "triton_sidecar_models_without_capacity",
              "triton_sidecar_statistics_refused", "triton_kv_cache_occupancy_ratio", "triton_trtllm_active_ratio"):
        out[g] = {tuple(m.get(k) for k in ("pod", "model", "source") if m.get(k) is not None): v
                  for m, v in prom.query(f'{g}{{namespace="{NS}"}}', t)}
    out["keda"] = keda_values(prom, t)
    return out


# --------------------------------------------------------------------------- the stack


@contextlib.contextmanager
def start_agent(triton, pod: str, http_url: Optional[str] = None, metrics_url: Optional[str] = None,
                extra: Sequence[str] = ("--require-model", "fast", "--require-model", "slow",
                                        "--drain-timeout", "20s")):
    mport, aport = common.free_ports(2)
    argv = [str(agent_bin()), "--triton-url", http_url or triton.http_url,
            "--triton-metrics-url", metrics_url or triton.metrics_url,
            "--metrics-addr", f"127.0.0.1:{mport}", "--admin-addr", f"127.0.0.1:{aport}",
            "--no-gpu", "--poll-interval", "1s", "--window", "10s",
            # Short drain for the drain phase (the idle pod drains at min-drain + quiet).
            "--min-drain", "1s", "--drain-quiet", "1s", *extra]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = common.start_process(f"agent-{pod}", argv, env=env)
    try:
        def ready():
            if not proc.alive():
                raise RuntimeError(f"agent for {pod} exited rc={proc.proc.returncode}:\n{proc.log_tail()}")
            with contextlib.suppress(Exception):
                return (common.http_get(f"http://127.0.0.1:{aport}/readyz", 1)[0] == 200
                        and common.fetch_metrics(f"http://127.0.0.1:{mport}/metrics").get("triton_up") == 1)
            return False
        deadline = time.monotonic() + 30
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent for {pod} not ready in 30 s:\n{proc.log_tail()}")
            time.sleep(0.2)
        yield {"metrics": f"127.0.0.1:{mport}", "admin": f"http://127.0.0.1:{aport}", "proc": proc}
    finally:
        proc.stop(grace=10)


@pytest.fixture(scope="module")
def live():
    t_start = time.monotonic()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="promql-live-"))
    results: Dict[str, Dict[int, dict]] = {}
    info: Dict[str, object] = {"phase_ok": {}, "keda": {}}
    loads: List[common.LoadGenerator] = []
    try:
        with contextlib.ExitStack() as stack:
            triton = stack.enter_context(common.start_triton())
            # Issue 13: POD_A with configured capacities and no header; POD_B estimating online,
            # with the statistics header where Triton restricts the API.
            header = restricted_api_header(triton)
            info["stats"] = {"restricted": header is not None,
                             "status_without_header": stats_status(triton.http_url, None),
                             "status_with_header": stats_status(triton.http_url, header) if header else None}
            base_flags = ("--require-model", "fast", "--require-model", "slow", "--drain-timeout", "20s")
            agents = {
                POD_A: stack.enter_context(start_agent(triton, POD_A, extra=base_flags + CAPACITY_FLAGS)),
                POD_B: stack.enter_context(start_agent(
                    triton, POD_B, extra=base_flags + (("--triton-api-header", header) if header else ()))),
            }
            t_agents = time.monotonic()
            # POD_C: the stuck Triton, another workload's label, a 30 s drain timeout.
            fakes = {"stuck": FakeServer(stuck_triton), "ksm": FakeServer(ksm_page), "keda": FakeServer(KedaPage())}
            for f in fakes.values():
                stack.callback(f.close)
            stuck = stack.enter_context(start_agent(
                None, POD_C, http_url=f"http://{fakes['stuck'].addr}",
                metrics_url=f"http://{fakes['stuck'].addr}/metrics",
                extra=("--drain-timeout", f"{STUCK_DRAIN_TIMEOUT_S}s")))

            # Prometheus, configured from the rendered PodMonitor and PrometheusRule.
            targets = {pod: {"metrics": a["metrics"], "triton-metrics": f"127.0.0.1:{triton.metrics_port}"}
                       for pod, a in agents.items()}
            targets[POD_C] = {"metrics": stuck["metrics"], "triton-metrics": fakes["stuck"].addr,
                              "labels": {"app.kubernetes.io/instance": STUCK_INSTANCE}}
            r = subprocess.run([yaml_python(), str(HERE / "prometheus_config.py"), "--root", str(ROOT),
                                "--out", str(tmp), "--namespace", NS, "--interval-cap", SCRAPE_CAP,
                                "--eval-interval", EVAL_INTERVAL, "--targets", json.dumps(targets),
                                # kube-state-metrics, scraped as kube-prometheus-stack does
                                # (honor_labels: its namespace/pod labels are the pods'), and KEDA's
                                # operator as a plain target in namespace `keda` (its own
                                # `namespace` label becomes exported_namespace).
                                "--extra-jobs", json.dumps([
                                    {"job_name": "kube-state-metrics", "honor_labels": True, "scrape_interval": "5s",
                                     "static_configs": [{"targets": [fakes["ksm"].addr]}]},
                                    {"job_name": "keda-operator", "scrape_interval": "5s",
                                     "static_configs": [{"targets": [fakes["keda"].addr],
                                                         "labels": {"namespace": "keda"}}]}])],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"prometheus_config.py failed:\n{r.stderr}")
            info["scrape"] = json.loads(r.stdout)
            prometheus = shutil.which("prometheus")
            if not prometheus:
                raise RuntimeError("no `prometheus` binary: apt-get install -y prometheus (Debian's package)")
            pport = common.free_port()
            pproc = common.start_process("prometheus", [
                prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{pport}", "--storage.tsdb.retention.time=1h",
                "--log.level=warn"])
            stack.callback(pproc.stop, 10)
            prom = Prom(f"http://127.0.0.1:{pport}")
            if not common.wait_until(lambda: common.http_get(f"{prom.base}/-/ready", 1)[0] == 200, 30, 0.2):
                raise RuntimeError(f"prometheus not ready in 30 s:\n{pproc.log_tail()}")
            info["prometheus"] = subprocess.run([prometheus, "--version"], capture_output=True,
                                                text=True).stdout.splitlines()[0]
            # Every target up, with the labels the queries select on.
            n_targets = (len(PODS) + 1) * len(info["scrape"]["jobs"])
            ok, _ = wait_for(lambda t: len(prom.query(f'up{{namespace="{NS}",pod=~"triton-.+",container!=""}} == 1'))
                             == n_targets, 30)
            info["targets_up"] = prom.query(f'up{{namespace="{NS}",pod=~"{POD_A}|{POD_B}"}}')
            if not ok:
                raise RuntimeError(f"not all {n_targets} targets up: {info['targets_up']}")
            info["startup_s"] = round(time.monotonic() - t_start, 1)

            # ---- fresh (issue 22): fresh pods, no traffic, POD_B without --capacity. Every KEDA
            # trigger query must answer exactly one finite sample of 0 from the pods' first 45 s
            # on: an absent series is a scaler error, and KEDA's fallback would run pods no one
            # asked for. Then it must hold (checked at 5 instants over 10 s).
            def fresh_zero(t):
                v = keda_values(prom, t)
                # A float is one series (keda_values gives a list for several, a string on error).
                return all(isinstance(v[it["name"]], float) and v[it["name"]] == 0.0 for it in keda_items())
            ok, t = wait_for(fresh_zero, 45)
            info["fresh"] = {"first_zero_after_agents_s": round(time.monotonic() - t_agents, 1) if ok else None,
                             "values": keda_values(prom, t), "held": []}
            if ok:
                for _ in range(5):
                    time.sleep(2)
                    info["fresh"]["held"].append(fresh_zero(time.time()))
            info["phase_ok"]["fresh"] = ok and all(info["fresh"]["held"])

            # ---- load
            t0 = time.monotonic()
            # Registered after Triton, so on failure the clients stop first: Triton's shutdown waits
            # for open client connections (up to its --exit-timeout-secs).
            stack.callback(lambda: [lg.stop(join_timeout=15) for lg in loads])
            loads.append(common.LoadGenerator(triton.infer_url, "slow", SLOW_CLIENTS, timeout_s=30).start())
            loads.append(common.LoadGenerator(triton.infer_url, "fast", FAST_CLIENTS, think_s=0.1,
                                              timeout_s=30).start())

            def above(t):
                v = keda_values(prom, t)
                return all(isinstance(v[it["name"]], float) and v[it["name"]] > it["threshold"]
                           for it in keda_items())
            ok, t = wait_for(above, LOAD_TIMEOUT)
            info["first_above_s"] = round(time.monotonic() - t0, 1) if ok else None
            if ok:
                # Past the ramp: keep the load for the agent's window plus a scrape, then
                # evaluate at an instant where both queries are (still) above threshold.
                time.sleep(STEADY_S)
                ok, t = wait_for(above, 30)
            info["phase_ok"]["load"] = ok
            info["keda"]["load"] = keda_values(prom, t)
            info["load_wait_s"] = round(time.monotonic() - t0, 1)
            results["load"] = evaluate(prom, t)
            # Control: the selector inside the pending-requests query, without its sum(), answers one
            # series per pod, so a KEDA query that lost its aggregation would fail here.
            info["control"] = {}
            for it in keda_items():
                m = re.search(r"triton_pod_utilization\{[^}]*\}", it["expr"])
                if m:
                    info["control"][m.group(0)] = len(prom.query(m.group(0), t))
            # Issue 13: the capacity gauges of each pod at that instant, and what the clients saw.
            info["capacity_load"] = capacity_view(prom, t)
            # Issue 21: each agent's live page, for KEDA's metrics-api path (keda-direct).
            info["pages_load"] = {pod: common.fetch_text(f"http://{a['metrics']}/metrics", timeout=5)
                                  for pod, a in (*agents.items(), (POD_C, stuck))}
            t_mono = time.monotonic() - (time.time() - t)
            for lg in loads:
                done = [o for o in lg.outcomes() if o.status == common.OK and t_mono - 10 <= o.end <= t_mono]
                info["capacity_load"].setdefault("client_rps", {})[lg.models[0]] = len(done) / 10
            summ = {}
            for lg in loads:
                lg.stop(join_timeout=15)
                s = lg.summary()
                summ[lg.models[0]] = s
            loads.clear()
            info["load_outcomes"] = summ

            # ---- idle
            t0 = time.monotonic()

            def quiet(t):
                v = keda_values(prom, t)
                return all(isinstance(v[it["name"]], float) and v[it["name"]] <= it["activation_threshold"]
                           for it in keda_items())
            ok, t = wait_for(quiet, IDLE_TIMEOUT)
            info["phase_ok"]["idle"] = ok
            info["keda"]["idle"] = keda_values(prom, t)
            # POD_C's 3 stuck requests: the old pod-name regex counts them, the label does not.
            info["label_vs_regex"] = {
                "regex": prom.query(f'sum(triton_pod_pending_requests{{namespace="{NS}",pod=~"triton-.+"}})', t),
                "stuck_series": prom.query(f'triton_pod_pending_requests{{namespace="{NS}",pod="{POD_C}"}}', t),
            }
            info["idle_wait_s"] = round(time.monotonic() - t0, 1)
            info["capacity_idle"] = capacity_view(prom, t)
            results["idle"] = evaluate(prom, t)

            # ---- drain (POD_B)
            t0 = time.monotonic()
            s = requests.Session()
            s.trust_env = False
            code = s.post(f"{agents[POD_B]['admin']}/drain", timeout=5).status_code
            if code != 202:
                raise RuntimeError(f"POST /drain answered {code}")
            done = common.wait_until(
                lambda: json.loads(s.get(f"{agents[POD_B]['admin']}/drain/status", timeout=2).text).get("result"),
                30, 0.2)
            info["drain_status"] = s.get(f"{agents[POD_B]['admin']}/drain/status", timeout=2).text
            if not done:
                raise RuntimeError(f"drain of {POD_B} did not end in 30 s: {info['drain_status']}")
            ok, t = wait_for(lambda t: prom.query(
                f'count_over_time(triton_sidecar_drains_total{{namespace="{NS}",pod="{POD_B}"}}[1m]) >= 2', t), 40)
            info["phase_ok"]["drain"] = ok
            info["keda"]["drain"] = keda_values(prom, t)
            info["drain_wait_s"] = round(time.monotonic() - t0, 1)
            # Issue 13's alerts, before POD_C (whose pod they are about) is terminated: with
            # `for` of 5 and 15 minutes they are pending here; promtool tests the timing.
            ok13, _ = wait_for(lambda t: alerts(prom, "TritonSidecarStatisticsRefused", t)
                               and alerts(prom, "TritonSidecarModelsWithoutCapacity", t), 70, 2)
            info["capacity_alerts"] = {a: alerts(prom, a) for a in
                                       ("TritonSidecarStatisticsRefused", "TritonSidecarModelsWithoutCapacity",
                                        "TritonModelOverCapacity")}
            results["drain"] = evaluate(prom, t)

            # ---- termination of POD_C: its drain runs into the timeout
            t0 = time.monotonic()
            proc = stuck["proc"]
            proc.send_signal(signal.SIGTERM)
            t_term = time.monotonic()
            proc.wait(STUCK_DRAIN_TIMEOUT_S + 15)
            exited = getattr(proc, "exited_at", None) or time.monotonic()
            info["stuck_exit"] = {"alive": proc.alive(), "after_sigterm_s": round(exited - t_term, 2),
                                  "log": proc.log_tail(30)}
            ok, t = wait_for(lambda t: any(a["alertstate"] == "firing" for a in alerts(prom, "TritonDrainNearTimeout", t)),
                             90)
            info["phase_ok"]["termination"] = ok
            info["termination_wait_s"] = round(time.monotonic() - t0, 1)
            info["alerts"] = {a: alerts(prom, a, t) for a in
                              ("TritonDrainNearTimeout", "TritonSidecarNotScraped", "TritonKedaScalerErrors")}
            info["stuck_samples"] = prom.query(
                f'max_over_time(triton_sidecar_drain_elapsed_seconds{{pod="{POD_C}"}}[5m])', t)

            # ---- the loaded rules, as this Prometheus evaluated them all along
            info["rules"] = [{"group": g["name"], "name": r["name"], "type": r["type"], "health": r["health"],
                              "lastError": r.get("lastError", "")}
                             for g in prom.api("rules")["groups"] for r in g["rules"]]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        info["total_s"] = round(time.monotonic() - t_start, 1)
        REPORT.update(info)
    yield results, info


# --------------------------------------------------------------------------- tests


def _id(i: int, it: dict) -> str:
    name = it["name"] if it["role"] != "dashboard" else it["source"].split(": ", 1)[-1]
    return f"{i:02d}-{it['role']}-{name}".replace(" ", "_")


CASES = [pytest.param(phase, i, id=f"{phase}-{_id(i, it)}") for phase in PHASES for i, it in enumerate(ITEMS)]


def test_extraction_covers_every_role():
    roles = {it["role"] for it in ITEMS}
    assert roles >= {"keda", "adapter", "recording", "alert", "dashboard", "variable", "readme"}, roles
    for it in keda_items():
        assert it["threshold"] > 0 and it["activation_threshold"] >= 0, it


def test_targets_scraped_with_servicemonitor_labels(live):
    _, info = live
    ups = info["targets_up"]
    assert len(ups) == len(PODS) * 2, ups
    for labels, v in ups:
        assert v == 1, labels
        assert labels["namespace"] == NS and labels["pod"] in PODS, labels
        assert labels["container"] in ("triton", "triton-sidecar") and labels["endpoint"], labels


def test_unaggregated_selector_answers_per_pod(live):
    """Control for 'exactly one series': the two pods are both seen, so without sum() KEDA would
    get two series."""
    _, info = live
    assert info.get("control"), "no triton_pod_utilization selector found in the KEDA queries"
    for sel, n in info["control"].items():
        assert n == len(PODS), f"{sel} answered {n} series under load, expected {len(PODS)} (one per pod)"


def test_fresh_idle_pods_answer_every_keda_query_with_one_zero(live):
    """Issue 22: fresh pods, no traffic, one without --capacity: every rendered KEDA trigger
    query answers exactly one finite 0 within the pods' first 45 s and keeps answering it, so
    the fallback (which fires on an empty answer) never raises an idle fleet."""
    _, info = live
    fresh = info.get("fresh") or {}
    assert fresh.get("first_zero_after_agents_s") is not None, f"never one finite 0 in 45 s: {fresh.get('values')}"
    assert fresh["first_zero_after_agents_s"] <= 45, fresh
    assert fresh["held"] and all(fresh["held"]), fresh


@pytest.mark.parametrize("phase", ["load", "idle", "drain"])
def test_phase_reached(live, phase):
    _, info = live
    assert info["phase_ok"].get(phase), f"{phase} condition not reached; KEDA values then: {info['keda'].get(phase)}"


@pytest.mark.parametrize("phase,i", CASES)
def test_expression(live, phase, i):
    results, _ = live
    it = ITEMS[i]
    if "gpu" in it["needs"]:
        pytest.skip("reads triton_gpu_*: no GPU on this machine (the agents run --no-gpu)")
    if "drain" in it["needs"] and phase != "drain" and it["role"] != "alert":
        pytest.skip("needs a drain: checked in the drain phase")
    r = results[phase][i]
    assert "error" not in r, f"{r.get('error')}\n  expr: {it['expr']}"
    if it["role"] == "alert":
        return  # evaluated without error is all that is asked here
    if it["role"] == "variable":
        vals = r["values"]
        assert vals, f"label_values({it['expr']}, {it['label']}) is empty"
        want = {"namespace": {NS}, "pod": set(PODS), "model": {"fast", "slow"}}.get(it["label"], set())
        assert want <= set(vals), f"{it['label']} values {vals} lack {want - set(vals)}"
        return
    res = r["result"]
    values = [v for _, v in res]
    assert res, f"empty result\n  expr: {it['expr']}"
    assert all(math.isfinite(v) for v in values), f"non-finite values {res}\n  expr: {it['expr']}"
    if it["role"] == "keda":
        assert len(res) == 1, f"{len(res)} series, KEDA needs exactly one: {res}\n  expr: {it['expr']}"
        v = values[0]
        if phase == "load":
            assert v > it["threshold"], f"under load {v:g} is not above threshold {it['threshold']:g}"
        elif phase == "idle":
            assert v <= it["activation_threshold"], \
                f"at idle {v:g} is above activationThreshold {it['activation_threshold']:g}"


def test_loaded_rules_healthy(live):
    _, info = live
    rules = info["rules"]
    n_expected = sum(1 for it in ITEMS if it["role"] in ("recording", "alert"))
    assert len(rules) == n_expected, f"{len(rules)} rules loaded, {n_expected} extracted"
    bad = [r for r in rules if r["health"] != "ok"]
    assert not bad, bad


# --------------------------------------------------------------------------- issue 14, live


def test_label_selection_leaves_other_workloads_out(live):
    """POD_C's name matches the old pod=~"triton-.+" regex; its app.kubernetes.io/instance does
    not. At idle the KEDA queries read 0 while the regex still counts POD_C's stuck requests."""
    _, info = live
    lv = info["label_vs_regex"]
    assert lv["stuck_series"] and lv["stuck_series"][0][1] == 3, f"POD_C not scraped as expected: {lv}"
    assert lv["stuck_series"][0][0].get("app_kubernetes_io_instance") == STUCK_INSTANCE, lv
    assert lv["regex"] and lv["regex"][0][1] >= 3, f"control: the name regex should count POD_C: {lv}"
    for name, v in info["keda"]["idle"].items():
        assert v == 0, f"KEDA query {name} counted another workload's pod: {v}"


def test_drain_near_timeout_fires_after_the_pod_is_gone(live):
    _, info = live
    assert info["phase_ok"].get("termination"), \
        f"TritonDrainNearTimeout never fired for {POD_C}: {info.get('alerts')} samples {info.get('stuck_samples')}"
    firing = [a for a in info["alerts"]["TritonDrainNearTimeout"] if a["alertstate"] == "firing"]
    assert {a["pod"] for a in firing} == {POD_C}, f"fired for {[a['pod'] for a in firing]}, expected only {POD_C}"
    assert firing[0]["namespace"] == NS, firing
    # The value it fired on was scraped during the drain, before the agent exited.
    v = info["stuck_samples"][0][1]
    # (+1 s: the drain's timeout is checked on a 50 ms tick, the gauge may read just past it.)
    assert 0.75 * STUCK_DRAIN_TIMEOUT_S <= v <= STUCK_DRAIN_TIMEOUT_S + 1, f"max elapsed seen {v}"


def test_agent_exit_follows_the_drain_timeout(live):
    """SIGTERM -> drain to the timeout -> exit: the gauge costs the pod no extra time."""
    _, info = live
    ex = info["stuck_exit"]
    assert not ex["alive"], f"agent still running {STUCK_DRAIN_TIMEOUT_S + 15} s after SIGTERM:\n{ex['log']}"
    assert "timed out" in ex["log"], ex["log"]
    delay = ex["after_sigterm_s"] - STUCK_DRAIN_TIMEOUT_S
    assert -0.5 <= delay <= MAX_EXIT_DELAY_S, f"exit {ex['after_sigterm_s']} s after SIGTERM (drain timeout {STUCK_DRAIN_TIMEOUT_S} s)"


# These two have `for: 5m`: pending at first, firing once the run has lasted that long (promtool
# tests the timing); either way, only for the right series.
def test_not_scraped_alert_is_active_for_the_unscraped_pod_only(live):
    _, info = live
    got = info["alerts"]["TritonSidecarNotScraped"]
    assert {a["pod"] for a in got} == {POD_GHOST}, got
    assert all(a["alertstate"] in ("pending", "firing") and a["namespace"] == NS for a in got), got


def test_keda_errors_alert_is_active_for_this_scaledobject_only(live):
    _, info = live
    got = info["alerts"]["TritonKedaScalerErrors"]
    # namespace: the ScaledObject's (from exported_namespace), not KEDA's own `keda`.
    assert {(a["namespace"], a["scaledObject"]) for a in got} == {(NS, "triton")}, got
    assert all(a["alertstate"] in ("pending", "firing") for a in got), got


# --------------------------------------------------------------------------- issue 13, live


def _near(v: float, want: float, tol: float) -> bool:
    return want * (1 - tol) <= v <= want * (1 + tol)


def test_statistics_api_as_the_agents_see_it(live):
    """The premise of POD_B's online estimate: with the header (where one is needed) Triton
    answers /v2/models/stats."""
    _, info = live
    st = info["stats"]
    if st["restricted"]:
        assert st["status_without_header"] in (401, 403), st
        assert st["status_with_header"] == 200, st
    else:
        assert st["status_without_header"] == 200, st


def test_utilization_under_load_configured_capacity(live):
    """POD_A, --capacity: the capacity is the flag's, utilization = offered load / capacity, and the
    offered load is what the clients got through (closed-loop clients: arrivals = completions)."""
    _, info = live
    c = info["capacity_load"]
    cap = c["triton_capacity_rps"]
    assert cap.get((POD_A, "slow", "configured")) == pytest.approx(round(SLOW_CAPACITY, 3)), cap
    assert cap.get((POD_A, "fast", "configured")) == pytest.approx(FAST_CAPACITY), cap
    load, util = c["triton_offered_load_rps"], c["triton_utilization"]
    for model, capacity in (("slow", round(SLOW_CAPACITY, 3)), ("fast", FAST_CAPACITY)):
        assert (POD_A, model) in util and util[(POD_A, model)] > 0, f"no utilization for {model} on {POD_A}: {util}"
        assert util[(POD_A, model)] == pytest.approx(load[(POD_A, model)] / capacity, rel=1e-6), (util, load)
    got = c["client_rps"]["slow"]
    assert got > 0 and _near(load[(POD_A, "slow")], got, TOLERANCE), \
        f"offered load of slow on {POD_A} {load[(POD_A, 'slow')]:.3f} req/s vs {got:.3f} req/s completed by the clients"
    # 16 clients on a 2.857 req/s model: at its capacity (the queue holds the rest).
    assert 0.75 <= util[(POD_A, "slow")] <= 1.25, util


def test_utilization_under_load_estimated_capacity(live):
    """POD_B, no --capacity: the capacity of `slow` is estimated from Triton's batch statistics,
    within the issue's +-25 % of its design (1000/350 req/s)."""
    _, info = live
    c = info["capacity_load"]
    cap = c["triton_capacity_rps"]
    est = cap.get((POD_B, "slow", "estimated"))
    assert est is not None, f"no estimated capacity for slow on {POD_B}: {cap} (statistics: {info['stats']})"
    assert _near(est, SLOW_CAPACITY, TOLERANCE), f"estimated {est:.3f} req/s, design {SLOW_CAPACITY:.3f}"
    assert not any(k[0] == POD_B and k[2] == "configured" for k in cap), cap
    util = c["triton_utilization"]
    assert util.get((POD_B, "slow"), 0) > 0, util


def test_pod_utilization_and_the_keda_trigger(live):
    """Per pod: at least the busiest model's utilization (never averaged away), at most the sum
    (these models have no GPU placement: they share one). KEDA's trigger: the sum over the pods,
    above its 0.7 target under load, 0 at idle."""
    _, info = live
    for phase in ("capacity_load", "capacity_idle"):
        c = info[phase]
        pod_u, util = c["triton_pod_utilization"], c["triton_utilization"]
        for pod in PODS:
            per_model = [v for (p, _m), v in util.items() if p == pod]
            assert (pod,) in pod_u and per_model, f"{phase}: {pod} has no utilization: {pod_u} {util}"
            assert max(per_model) - 1e-9 <= pod_u[(pod,)] <= sum(per_model) + 1e-9, (phase, pod, pod_u, util)
        keda = c["keda"]["utilization"]
        assert keda == pytest.approx(sum(pod_u[(p,)] for p in PODS), abs=1e-9), (phase, keda, pod_u)
        if phase == "capacity_load":
            assert keda > 0.7, f"under load the utilization trigger reads {keda}"
        else:
            assert keda == 0, f"at idle the utilization trigger reads {keda}"
        assert all(c["triton_sidecar_models_without_capacity"].get((p,)) == 0 for p in PODS), \
            c["triton_sidecar_models_without_capacity"]


def test_statistics_refused_gauge_and_alert(live):
    _, info = live
    refused = info["capacity_load"]["triton_sidecar_statistics_refused"]
    want_a = 1 if info["stats"]["restricted"] else 0
    assert refused.get((POD_A,)) == want_a and refused.get((POD_B,)) == 0 and refused.get((POD_C,)) == 1, \
        f"{refused} (statistics restricted: {info['stats']['restricted']})"
    got = {a["pod"] for a in info["capacity_alerts"]["TritonSidecarStatisticsRefused"]}
    assert got == {POD_C} | ({POD_A} if want_a else set()), info["capacity_alerts"]


def test_models_without_capacity_alert_for_the_pod_without_one(live):
    _, info = live
    assert info["capacity_load"]["triton_sidecar_models_without_capacity"].get((POD_C,)) == 1, info["capacity_load"]
    got = info["capacity_alerts"]["TritonSidecarModelsWithoutCapacity"]
    assert {a["pod"] for a in got} == {POD_C}, got
    assert all(a["namespace"] == NS and a["alertstate"] in ("pending", "firing") for a in got), got


def test_trtllm_gauges_from_the_backends_page(live):
    _, info = live
    c = info["capacity_load"]
    assert c["triton_kv_cache_occupancy_ratio"].get((POD_C, "stuck")) == pytest.approx(STUCK_KV), c
    assert c["triton_trtllm_active_ratio"].get((POD_C, "stuck")) == pytest.approx(STUCK_ACTIVE), c


def test_cold_start_panel_reads_kube_state_metrics(live):
    results, _ = live
    idx = [i for i, it in enumerate(ITEMS) if it["role"] == "dashboard" and "Cold start" in it["source"]]
    assert idx, "no cold-start panel in the dashboard"
    res = results["load"][idx[0]]["result"]
    # Every pod the agent runs in (kube_pod_container_info lists the three and the ghost).
    assert {m["pod"]: v for m, v in res} == {p: COLD_START_S for p in (POD_A, POD_B, POD_C, POD_GHOST)}, res


# ---------------------------------------------------------------------------------------------
# Issue 21: KEDA straight from the pods (deploy/overlays/keda-direct), on the agents' live pages.


def _direct_triggers():
    text = subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy/overlays/keda-direct")], check=True,
                          capture_output=True, text=True).stdout
    docs = json.loads(subprocess.run(
        [yaml_python(), "-c", "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))"],
        input=text, check=True, capture_output=True, text=True).stdout)
    so = next(d for d in docs if d["kind"] == "ScaledObject")
    return so, [t for t in so["spec"]["triggers"] if t["type"] == "metrics-api"]


def _page_value(page: str, family: str):
    return common.Scrape(0.0, common.parse_metrics(page)).get(family)


@pytest.fixture(scope="module")
def keda_metrics_api(tmp_path_factory):
    out = subprocess.run(["bash", str(ROOT / "tests/deploy/keda_metrics_api/build.sh"), str(ROOT / "target/keda-metrics-api")],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def _aggregate(binary, loc, agg, files):
    r = subprocess.run([binary, "-value-location", loc, "-aggregation", agg, *map(str, files)],
                       capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout)


def test_keda_direct_reads_every_live_agent_page_with_expfmt(live, keda_metrics_api, tmp_path):
    """Prometheus's own text parser (Go expfmt, as KEDA's metrics-api scaler) reads each agent's
    live page under load, and KEDA's aggregation over the pods gives what the agents publish:
    utilization the mean over the pods that publish it, pods the sum of triton_up, queue wait the
    max. POD_C (its Triton stuck, no capacity) publishes no utilization: KEDA skips it in the mean
    (its error is counted, the others answer) and the formula's `pods` counts it only when its
    Triton is up. The direct overlay's formula multiplies the mean by the pods."""
    _, info = live
    pages = info["pages_load"]
    so, triggers = _direct_triggers()
    assert "utilization * pods" in so["spec"]["advanced"]["scalingModifiers"]["formula"]
    files = {}
    for pod, text in pages.items():
        f = tmp_path / f"{pod}.prom"
        f.write_text(text)
        files[pod] = f
    by_name = {t["name"]: t["metadata"] for t in triggers}
    assert set(by_name) == {"utilization", "pods", "queue_wait"}, by_name
    for name, md in by_name.items():
        loc, agg = md["valueLocation"], md["aggregationType"]
        res = _aggregate(keda_metrics_api, loc, agg, [files[p] for p in PODS])
        want = [_page_value(pages[p], loc) for p in PODS]
        assert all(w is not None for w in want), (name, want)
        expect = {"average": sum(want) / len(want), "sum": sum(want), "max": max(want)}[agg]
        assert res["answered"] == len(PODS) and res["value"] == pytest.approx(expect, rel=1e-12), (name, res, want)
        if name == "utilization":
            assert res["value"] > 0, res
            assert res["value"] * _aggregate(keda_metrics_api, by_name["pods"]["valueLocation"], "sum",
                                             [files[p] for p in PODS])["value"] > 0.7
            # POD_C has no utilization: skipped, the mean is the two pods' (a partial answer)
            with_c = _aggregate(keda_metrics_api, loc, agg, [files[p] for p in (*PODS, POD_C)])
            assert with_c["answered"] == len(PODS) and with_c["pages"] == 3, with_c
            assert with_c["value"] == pytest.approx(res["value"], rel=1e-12), with_c
            assert any("not found" in e for e in with_c["errors"]), with_c
    # Control: a page the parser cannot read fails (so a pass above means it parsed the pages).
    bad = tmp_path / "bad.prom"
    bad.write_text(pages[POD_A] + "triton_pod_utilization{ 1\n")
    assert _aggregate(keda_metrics_api, "triton_pod_utilization", "sum", [bad])["value"] is None

