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
  adapter, recording, dashboard
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
    'nv_inference_pending_request_count{model="stuck",version="1"} 3\n')


def stuck_triton(path: str):
    if path.startswith("/metrics"):
        return 200, STUCK_PAGE
    if path.startswith("/v2/health/"):
        return 200, ""
    return 404, ""


def ksm_page(path: str):
    lines = []
    for pod in (POD_A, POD_B, POD_C, POD_GHOST):
        lines.append(f'kube_pod_container_info{{namespace="{NS}",pod="{pod}",container="triton-sidecar",uid="{pod}"}} 1')
        lines.append(f'kube_pod_status_phase{{namespace="{NS}",pod="{pod}",phase="Running",uid="{pod}"}} 1')
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


def alerts(prom: "Prom", name: str, t: Optional[float] = None) -> List[dict]:
    return [{**m, "value": v} for m, v in prom.query(f'ALERTS{{alertname="{name}"}}', t)]


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
            agents = {pod: stack.enter_context(start_agent(triton, pod)) for pod in PODS}
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
                m = re.search(r"triton_pod_pending_requests\{[^}]*\}", it["expr"])
                if m:
                    info["control"][m.group(0)] = len(prom.query(m.group(0), t))
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
    assert roles >= {"keda", "adapter", "recording", "alert", "dashboard", "variable"}, roles
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
    assert info.get("control"), "no triton_pod_pending_requests selector found in the KEDA queries"
    for sel, n in info["control"].items():
        assert n == len(PODS), f"{sel} answered {n} series under load, expected {len(PODS)} (one per pod)"


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
