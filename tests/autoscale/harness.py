"""The whole autoscaling loop on one machine (issue 9), built from real parts:

* **pods**: each a real Triton (tests/e2e's pytriton server, model `slow` sleeping SLOW_MS per
  request, one instance: one "GPU" per pod) with its own agent (the release binary), on free
  loopback ports. Creating a pod starts the pair; the Deployment's settings come from the
  rendered manifest (Triton's --exit-timeout-secs, the agent's TRITON_SIDECAR_* env, the
  readiness probe period, terminationGracePeriodSeconds, the preStop path);
* **endpoints + router**: every pod's agent /readyz is probed each readinessProbe.periodSeconds;
  a pod enters rotation when it answers 200, and stays in rotation `propagation` seconds after a
  probe fails or after its deletion (the endpoints controller and kube-proxy lag). Requests go to
  the in-rotation pod with the fewest outstanding requests (ties: round-robin), over a new
  connection each (see tests/e2e/README.md: tritonserver's SIGTERM and open connections);
* **Prometheus** (Debian's): its scrape config is tests/deploy/prometheus_config.py's translation
  of the rendered ServiceMonitor (both endpoints: the agent's and Triton's, `namespace`, `pod`,
  ... labels), turned from static targets into file-based discovery so pods can come and go.
  A pod leaves discovery when it is deleted, as with the ServiceMonitor's `endpoints` role;
* **scaler**: every sync period the ScaledObject's trigger queries (from the rendered YAML) go
  to Prometheus's HTTP API, and hpa.py applies the HPA v2 algorithm with the manifest's
  behavior and KEDA's min/max replicas;
* **ReplicaSet + kubelet**: scale-up creates pods; scale-down picks pods the ReplicaSet way
  (not ready first, then ready for the shortest time, then newest) and terminates each the
  kubelet way: at T0 the pod leaves the endpoints and the agent container gets SIGTERM; the
  Triton container's preStop GET /wait-for-drain runs, then tritonserver gets SIGTERM; SIGKILL
  when terminationGracePeriodSeconds runs out;
* **load**: an open-loop, seeded Poisson arrival process following a fixed profile
  (idle -> ramp -> plateau -> spike -> ramp down -> idle). Latency counts from the scheduled
  arrival, so a client-side backlog is not hidden. A request fails on any non-200 answer,
  connection error, timeout, or when no pod is in rotation.

`run(signal, timing)` runs one experiment and returns a JSON-able dict; report.py plots and
tabulates it. Every process is stopped at the end, also on failure or KeyboardInterrupt.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import json
import math
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Sequence, Tuple

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT_ROOT = ROOT / "target" / "autoscale"
os.environ.setdefault("TRITON_E2E_LOG_DIR", str(OUT_ROOT / "logs"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(HERE))

import requests  # noqa: E402
import yaml  # noqa: E402

import common  # noqa: E402
import scenarios  # noqa: E402
import serve_models  # noqa: E402
from hpa import Hpa, spec_from_scaledobject  # noqa: E402

NAMESPACE = "triton"          # the namespace the rendered KEDA queries select
MODEL = "slow"                # max_batch_size 1, one instance: one request at a time per pod
SLOW_MS = 50.0                # its service time
MAX_REPLICAS_CAP = 3          # this 2-core machine; deploy/ says 8
REQUEST_TIMEOUT_S = 60.0


def log(msg: str) -> None:
    sys.stderr.write(f"[autoscale {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- timings / profile


@dataclasses.dataclass
class Phase:
    name: str
    duration_s: float
    rate_from: float  # requests per second at the start of the phase
    rate_to: float    # ... at its end (linear in between)


@dataclasses.dataclass
class Timing:
    name: str
    entry_points: Dict[str, str]  # signal -> kustomize entry point (relative to the repo root)
    sync_s: float                 # HPA sync period
    sync_offset_s: float          # first sync after the profile starts (the HPA's phase)
    phases: List[Phase]
    propagation_s: float = 2.0    # endpoints + kube-proxy lag, each way out
    scrape_cap: str = "5s"        # cap on the ServiceMonitor's intervals (Triton's 30 s -> 5 s)
    note: str = ""
    # issue 13: the model (serve_models.py; "slow" = tests/e2e's model of issue 9), a cold start
    # for every pod created after t = 0, the HPA behavior's windows and periods multiplied by
    # behavior_scale (None: as rendered), and phase rates in units of one pod's measured capacity
    model: str = "slow"
    cold_start_s: float = 0.0
    behavior_scale: Optional[float] = None
    rates_in_capacity: bool = False
    scaled: bool = True           # anything shortened (stated in every output)
    settle_phases: Tuple[str, ...] = ()  # phases at whose end replicas are compared with the ideal
    # issue 22: the HPA runs with the manifest's maxReplicaCount (no MAX_REPLICAS_CAP) and only
    # the pods are capped, at the run's peak ideal + physical_extra: the HPA's *desired*
    # replicas are recorded as asked for, the machine runs at most that many Tritons.
    physical_extra: Optional[int] = None


IDLE, PLATEAU, SPIKE = 2.0, 9.0, 40.0  # req/s. One pod serves ~19/s (1 / (SLOW_MS + overhead)):
# the plateau keeps one pod at ~45 % busy (queue wait ~20 ms, far below the 100 ms target), the
# spike needs three (two would be overloaded), so the replicas rise during the spike.

TIMINGS = {
    # Issue 9's comparison (demo.py), kept runnable: "agent" is deploy/'s triggers from before
    # issue 13 (tests/autoscale/kustomize/previous), the model `slow`.
    # Real time: that ScaledObject as it is (maxReplicaCount capped), the HPA's 15 s sync.
    "full": Timing(
        name="full",
        entry_points={"agent": "tests/autoscale/kustomize/previous", "raw": "tests/autoscale/kustomize/raw",
                      "busy": "tests/autoscale/kustomize/busy"},
        sync_s=15.0, sync_offset_s=7.5,
        phases=[Phase("idle", 60, IDLE, IDLE), Phase("ramp", 120, IDLE, PLATEAU),
                Phase("plateau", 120, PLATEAU, PLATEAU), Phase("spike", 120, SPIKE, SPIKE),
                Phase("ramp down", 60, SPIKE, IDLE), Phase("idle after", 600, IDLE, IDLE)],
        note="real time: deploy/ as rendered, HPA sync 15 s"),
    # Shortened (make test): the test overlay (tests/autoscale/kustomize/components/short) and a
    # 5 s HPA sync, for both signals alike; the profile is shorter too.
    "short": Timing(
        name="short",
        entry_points={"agent": "tests/autoscale/kustomize/previous-short",
                      "raw": "tests/autoscale/kustomize/raw-short",
                      "busy": "tests/autoscale/kustomize/busy-short"},
        sync_s=5.0, sync_offset_s=2.5,
        phases=[Phase("idle", 10, IDLE, IDLE), Phase("ramp", 20, IDLE, PLATEAU),
                Phase("plateau", 20, PLATEAU, PLATEAU), Phase("spike", 40, SPIKE, SPIKE),
                Phase("ramp down", 10, SPIKE, IDLE), Phase("idle after", 80, IDLE, IDLE)],
        note="SHORTENED: test overlay (scale-up policy periods 60->15 s, scale-down window 300->30 s, "
             "scale-down 1 pod per 120->15 s) and HPA sync 15->5 s, both signals alike"),
    # The short timing with a spike that outlasts the scale-down window (30 s there) fourfold:
    # shows what the HPA recommends while the spike's load is served by enough pods.
    "sustained": Timing(
        name="sustained",
        entry_points={"agent": "tests/autoscale/kustomize/previous-short",
                      "raw": "tests/autoscale/kustomize/raw-short",
                      "busy": "tests/autoscale/kustomize/busy-short"},
        sync_s=5.0, sync_offset_s=2.5,
        phases=[Phase("idle", 10, IDLE, IDLE), Phase("ramp", 20, IDLE, PLATEAU),
                Phase("plateau", 20, PLATEAU, PLATEAU), Phase("spike", 120, SPIKE, SPIKE),
                Phase("ramp down", 10, SPIKE, IDLE), Phase("idle after", 60, IDLE, IDLE)],
        note="SHORTENED, sustained spike: the short test overlay and HPA sync 5 s, spike 120 s "
             "(4x the 30 s scale-down window)"),
}


# Issue 13's comparison: four trigger sets, side by side, same seed.
TRIGGER_SETS = {
    "new": "deploy/overlays/keda",                               # deploy/ as rendered now
    "before-22": "tests/autoscale/kustomize/before-22",          # deploy/'s triggers before issue 22
    "direct": "deploy/overlays/keda-direct",                     # KEDA's metrics-api on the agents (issue 21)
    "previous": "tests/autoscale/kustomize/previous",            # deploy/'s triggers before issue 13
    "tutorial": "tests/autoscale/kustomize/trtllm-tutorial",     # TensorRT-LLM tutorial's Pods metric
    "onprem": "tests/autoscale/kustomize/k8s-onprem",            # Triton deploy/k8s-onprem's Pods metric
}
TRIGGER_SET_LABELS = {
    "new": "deploy/ (utilization / 0.7 + 1 pod while queue wait > 100 ms)",
    "before-22": "deploy/ before issue 22 (utilization, queue wait as its own trigger)",
    "direct": "deploy/ keda-direct (metrics-api on the agents, no Prometheus in the loop)", "previous": "deploy/ before issue 13 (pending + queue wait)",
    "tutorial": "TRT-LLM tutorial (queue/compute ratio)", "onprem": "k8s-onprem (avg queue time)",
}
# Issue 13's scenarios. Rates in units of one pod's measured capacity C: idle 0.25 C (ideal 1 pod
# at the 0.7 target), peak 2.05 C (ideal 3; two pods could not serve it: a scale-down to 2 during
# it counts as a scale-down over capacity).
LOW, PEAK, COLD_PEAK = 0.25, 2.05, 1.3
_SHORT = dict(sync_s=5.0, sync_offset_s=2.5, behavior_scale=0.1, rates_in_capacity=True, scaled=True)
_SHORT_NOTE = ("SHORTENED: HPA behavior windows and policy periods x 0.1 (deploy/'s scale-down window "
               "600 -> 60 s, before issue 13 300 -> 30 s; policies 60 -> 6 s, 120 -> 12 s), HPA sync 15 -> 5 s; "
               "pods ready in seconds (no cold start)")
SCENARIOS = {
    # (a) a spike longer than the scale-down window (130 s: 2.2 x 60 s)
    "spike": Timing(name="spike", entry_points={}, model="unbatched",
                    phases=[Phase("idle", 15, LOW, LOW), Phase("spike", 130, PEAK, PEAK),
                            Phase("ramp down", 10, PEAK, LOW), Phase("idle after", 75, LOW, LOW)],
                    settle_phases=("spike", "idle after"), note=_SHORT_NOTE, **_SHORT),
    # (b) a slow ramp to the same peak
    "ramp": Timing(name="ramp", entry_points={}, model="unbatched",
                   phases=[Phase("idle", 15, LOW, LOW), Phase("ramp", 120, LOW, PEAK), Phase("plateau", 25, PEAK, PEAK),
                           Phase("ramp down", 20, PEAK, LOW), Phase("idle after", 70, LOW, LOW)],
                   settle_phases=("plateau", "idle after"), note=_SHORT_NOTE, **_SHORT),
    # (c) the dynamically batched, two-instance model
    "batched": Timing(name="batched", entry_points={}, model="batched",
                      phases=[Phase("idle", 15, LOW, LOW), Phase("spike", 100, PEAK, PEAK),
                              Phase("ramp down", 10, PEAK, LOW), Phase("idle after", 75, LOW, LOW)],
                      settle_phases=("spike", "idle after"), note=_SHORT_NOTE, **_SHORT),
    # (d) a 60 s cold start before a new pod turns ready, UNSCALED: behavior as rendered, HPA sync
    # 15 s. Its peak is COLD_PEAK = 1.3 C (ideal 2, one pod cannot serve it), so that asking for
    # more than the ideal while the new pod starts (overshoot) shows below the cap of 3.
    # 15 s. The run ends 30 s after the spike (the scale-down windows, 300 s and 600 s, are longer:
    # replicas are compared with the ideal at the spike's end only).
    # Issue 22: with deploy/'s maxReplicaCount of 8; the pods are capped at the ideal + 2 (two
    # cores cannot run 8 Tritons), the HPA's desired replicas are not.
    "coldstart": Timing(name="coldstart", entry_points={}, model="unbatched", sync_s=15.0, sync_offset_s=7.5,
                        cold_start_s=60.0, rates_in_capacity=True, scaled=False, physical_extra=2,
                        phases=[Phase("idle", 30, LOW, LOW), Phase("spike", 210, COLD_PEAK, COLD_PEAK),
                                Phase("ramp down", 15, COLD_PEAK, LOW), Phase("idle after", 30, LOW, LOW)],
                        settle_phases=("spike",),
                        note="UNSCALED: behavior as rendered, HPA sync 15 s; every pod created after t = 0 "
                             "sleeps 60 s before tritonserver starts (a GPU pod's cold start)"),
    # make test's shortened loop: (a) in brief. The idle after the spike is long enough (110 s)
    # for the scale-down window (60 s here) and the steps down to fit, and to hold the
    # replica-seconds of the window at less than 0.3 x the ideal's integral.
    "test": Timing(name="test", entry_points={}, model="unbatched",
                   phases=[Phase("idle", 15, LOW, LOW), Phase("spike", 90, PEAK, PEAK),
                           Phase("ramp down", 5, PEAK, LOW), Phase("idle after", 110, LOW, LOW)],
                   settle_phases=("spike", "idle after"), note=_SHORT_NOTE, **_SHORT),
}


def phase_starts(phases: Sequence[Phase]) -> Dict[str, float]:
    out, t = {}, 0.0
    for p in phases:
        out[p.name] = t
        t += p.duration_s
    out["end"] = t
    return out


def rate_at(phases: Sequence[Phase], t: float) -> float:
    s = 0.0
    for p in phases:
        if t < s + p.duration_s:
            return p.rate_from + (p.rate_to - p.rate_from) * (t - s) / p.duration_s
        s += p.duration_s
    return 0.0


def arrivals(phases: Sequence[Phase], seed: int) -> List[float]:
    """Seeded non-homogeneous Poisson arrival times (thinning)."""
    rng = random.Random(seed)
    total = sum(p.duration_s for p in phases)
    lam = max(max(p.rate_from, p.rate_to) for p in phases)
    out, t = [], 0.0
    while True:
        t += rng.expovariate(lam)
        if t >= total:
            return out
        if rng.random() * lam < rate_at(phases, t):
            out.append(t)


# --------------------------------------------------------------------------- manifests


def kubectl() -> str:
    for cand in (shutil.which("kubectl"), str(ROOT / ".venv-tools" / "bin" / "kubectl"),
                 str(pathlib.Path(sys.executable).parent / "kubectl")):
        if cand and os.path.exists(cand):
            return cand
    raise RuntimeError("no kubectl: run tests/autoscale/setup.sh")


def render(entry_point: str) -> List[dict]:
    r = subprocess.run([kubectl(), "kustomize", str(ROOT / entry_point)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {entry_point} failed:\n{r.stderr}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@dataclasses.dataclass
class PodTemplate:
    """What the harness takes from the rendered Deployment."""
    exit_timeout_s: int
    agent_env: Dict[str, str]
    readiness_period_s: float
    grace_s: float
    prestop_path: str


def pod_template(docs: List[dict]) -> PodTemplate:
    dep = next(d for d in docs if d["kind"] == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    triton = next(c for c in containers if c["name"] == "triton")
    agent = next(c for c in containers if c["name"] == "triton-sidecar")
    exit_timeout = next(int(a.split("=", 1)[1]) for a in triton.get("args", []) if a.startswith("--exit-timeout-secs="))
    hook = triton["lifecycle"]["preStop"]["httpGet"]
    admin_port = next(p["containerPort"] for p in agent["ports"] if p["name"] == "admin")
    if hook["port"] != admin_port:
        raise RuntimeError(f"preStop port {hook['port']} is not the agent's admin port {admin_port}")
    env = {e["name"]: e["value"] for e in agent.get("env") or []
           if e["name"].startswith("TRITON_SIDECAR_") and "value" in e}
    return PodTemplate(exit_timeout, env, float(agent["readinessProbe"].get("periodSeconds", 10)),
                       float(spec.get("terminationGracePeriodSeconds", 30)), hook["path"])


# --------------------------------------------------------------------------- pods


class Pod:
    """A Triton + agent pair, driven by its own lifecycle thread."""

    def __init__(self, name: str, tpl: PodTemplate, t0: float, on_change: Callable[["Pod"], None],
                 model: str = "slow", cold_start_s: float = 0.0, token: str = ""):
        self.name, self.tpl, self.t0, self.on_change = name, tpl, t0, on_change
        self.model, self.cold_start_s, self.token = model, cold_start_s, token
        self.created = time.monotonic()
        self.ready_at: Optional[float] = None       # first /readyz 200 seen by the prober
        self.deleted_at: Optional[float] = None     # T0 of the termination
        self.gone_at: Optional[float] = None        # every process exited
        self.ready = False                          # latest probe
        self.unready_since: Optional[float] = None
        self.out_at: Optional[float] = None         # leaves rotation
        self.outstanding = 0
        self.served = 0
        self.triton: Optional[common.TritonHandle] = None
        self.agent: Optional[scenarios.AgentHandle] = None
        self.error: Optional[str] = None
        self.termination: Dict[str, object] = {}
        self.restarts: List[str] = []
        self._up = threading.Event()
        self._delete = threading.Event()
        self._shutdown = threading.Event()
        self._thread = threading.Thread(target=self._life, daemon=True, name=f"pod-{name}")
        self._thread.start()

    # state
    @property
    def terminating(self) -> bool:
        return self.deleted_at is not None

    @property
    def gone(self) -> bool:
        return self.gone_at is not None

    def in_rotation(self, now: float) -> bool:
        if self.ready_at is None or self.gone:
            return False
        return self.out_at is None or now < self.out_at

    def rel(self, t: Optional[float]) -> Optional[float]:
        return None if t is None else round(t - self.t0, 3)

    def delete(self) -> None:
        if self.deleted_at is None:
            self.deleted_at = time.monotonic()
            self._schedule_out(self.deleted_at)
            self._delete.set()

    def shutdown(self) -> None:
        """End of the run: stop at once, no drain (the load has stopped)."""
        self._shutdown.set()
        self._delete.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _schedule_out(self, t: float) -> None:
        at = t + PROPAGATION[0]
        if self.out_at is None or at < self.out_at:
            self.out_at = at

    def probe(self, now: float) -> None:
        if self.agent is None or self.gone:
            return
        code, _ = common.http_get(f"{self.agent.admin_url}/readyz", timeout=1.0)
        ok = code == 200
        if ok and self.ready_at is None:
            self.ready_at = now
        if not ok and self.ready and self.unready_since is None:
            self.unready_since = now
            self._schedule_out(now)
        self.ready = ok

    # lifecycle
    def _life(self) -> None:
        with contextlib.ExitStack() as stack:
            try:
                if self.model == "slow":
                    self.triton = stack.enter_context(common.start_triton(extra_args=[
                        "--slow-ms", str(SLOW_MS), "--slow-instances", "1",
                        "--exit-timeout-secs", str(self.tpl.exit_timeout_s)]))
                else:
                    args = ["--models", self.model, "--access-token", self.token,
                            "--exit-timeout-secs", str(self.tpl.exit_timeout_s)]
                    if self.cold_start_s > 0:
                        args += ["--startup-delay", f"{self.cold_start_s:g}"]
                    # A container that fails to start is restarted by the kubelet: pytriton's
                    # handshake with a model's Python stub can lose a race when pods start at
                    # the same instant (seen once in 16 runs); one restart, recorded.
                    for attempt in range(2):
                        try:
                            self.triton = stack.enter_context(common.start_triton(
                                script=SERVE_MODELS, extra_args=args, startup_timeout=180 + self.cold_start_s))
                            break
                        except RuntimeError as e:
                            if attempt == 1 or self._shutdown.is_set() or self._delete.is_set():
                                raise
                            self.restarts.append(f"{time.monotonic() - self.t0:.1f}: {str(e)[:160]}")
                            log(f"pod {self.name}: Triton did not start, restarting it once: {str(e)[:160]}")
                if self._shutdown.is_set():
                    return
                if self.model == "slow":
                    self.agent = stack.enter_context(scenarios.start_agent(self.triton, ["--no-gpu"], ready_timeout=60))
                else:
                    self.agent = stack.enter_context(scenarios.start_agent(
                        self.triton, ["--no-gpu", *header_flag(self.token)], ready_timeout=60, models=[self.model]))
                self._up.set()
                self.on_change(self)  # now scrapeable
                self._delete.wait()
                if not self._shutdown.is_set():
                    self._terminate()
            except BaseException as e:  # noqa: BLE001 - recorded, the run fails on it
                self.error = f"{type(e).__name__}: {e}"
                log(f"pod {self.name}: {self.error}")
            finally:
                self._up.set()
                self.ready = False
        self.gone_at = time.monotonic()
        self.on_change(self)

    def _terminate(self) -> None:
        """The kubelet, for a pod with Triton (preStop httpGet) and the agent (no hook)."""
        t0 = self.deleted_at or time.monotonic()
        grace_end = t0 + self.tpl.grace_s
        out: Dict[str, object] = {}
        done = threading.Event()

        def prestop():
            s = requests.Session()
            s.trust_env = False
            try:
                r = s.get(f"{self.agent.admin_url}{self.tpl.prestop_path}", timeout=self.tpl.grace_s)
                out["prestop"] = f"{r.status_code} {r.text.strip()[:200]}"
            except Exception as e:  # noqa: BLE001
                out["prestop"] = f"error: {e!r}"[:200]
            finally:
                s.close()
                done.set()

        threading.Thread(target=prestop, daemon=True, name=f"prestop-{self.name}").start()
        self.agent.process.send_signal(signal.SIGTERM)  # regular container without a hook
        done.wait(max(0.0, grace_end - time.monotonic()))
        out["prestop_s"] = round(time.monotonic() - t0, 2)
        self.triton.sigterm_tritonserver()
        if self.triton.wait_triton_exit(max(1.0, grace_end - time.monotonic())):
            out["triton_exit_s"] = round(time.monotonic() - t0, 2)
        else:
            out["triton_exit_s"] = None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.triton.triton_pid, signal.SIGKILL)  # grace period over
        if self.agent.process.wait(max(1.0, grace_end - time.monotonic())) is None:
            out["agent_killed"] = True
        self.triton.process.wait(15)
        self.termination = out


PROPAGATION = [2.0]  # set per run (a list so Pod can read the run's value)
SERVE_MODELS = HERE / "serve_models.py"
_HELP: List[str] = []


def agent_has_flag(flag: str) -> bool:
    """Whether the agent binary knows `flag` (one from before issue 13 has no --triton-api-header)."""
    if not _HELP:
        _HELP.append(subprocess.run([str(scenarios.agent_bin()), "--help"], capture_output=True, text=True).stdout)
    return flag in _HELP[0]


def header_flag(token: str) -> List[str]:
    """pytriton restricts Triton's statistics API to its access token: the agent sends it."""
    if not token:
        return []
    if not agent_has_flag("--triton-api-header"):
        log("this agent has no --triton-api-header (built before issue 13): the statistics stay refused to it")
        return []
    return ["--triton-api-header", f"{serve_models.ACCESS_HEADER}={token}"]


# --------------------------------------------------------------------------- ReplicaSet + endpoints


class Cluster:
    """ReplicaSet (pod creation and victim choice), endpoints prober, and the router."""

    def __init__(self, tpl: PodTemplate, t0: float, seed: int, model: str = MODEL, cold_start_s: float = 0.0):
        self.tpl, self.t0 = tpl, t0
        self.model, self.cold_start_s = model, cold_start_s
        self.token = "".join(random.Random(seed + 1).choice("abcdefghijkmnpqrstuvwxyz23456789") for _ in range(24))
        self.started = False  # t = 0 passed: new pods get the cold start
        self.rng = random.Random(seed)
        self.rs_hash = "".join(self.rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(9))
        self.pods: List[Pod] = []
        self.spec_replicas = 0
        self.physical_cap: Optional[int] = None  # at most this many pods run (issue 22's scenario (d))
        self.lock = threading.Lock()
        self._rr = 0
        self._stop = threading.Event()
        self._prober = threading.Thread(target=self._probe_loop, daemon=True, name="endpoints")
        self.on_change: Callable[[], None] = lambda: None

    def start(self):
        self._prober.start()
        return self

    def _new_name(self) -> str:
        return f"triton-{self.rs_hash}-" + "".join(self.rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))

    # ReplicaSet
    def active(self) -> List[Pod]:
        with self.lock:
            return [p for p in self.pods if not p.terminating and not p.gone]

    def existing(self) -> List[Pod]:
        with self.lock:
            return [p for p in self.pods if not p.gone]

    def ready_count(self) -> int:
        return sum(1 for p in self.existing() if p.ready)

    def scale(self, n: int) -> Tuple[List[str], List[str]]:
        self.spec_replicas = n  # what the HPA asked for (the Deployment's spec.replicas)
        if self.physical_cap is not None:
            n = min(n, self.physical_cap)
        act = self.active()
        created, deleted = [], []
        if n > len(act):
            for _ in range(n - len(act)):
                p = Pod(self._new_name(), self.tpl, self.t0, lambda _p: self.on_change(), model=self.model,
                        cold_start_s=self.cold_start_s if self.started else 0.0, token=self.token)
                with self.lock:
                    self.pods.append(p)
                created.append(p.name)
        elif n < len(act):
            # controller.ActivePodsWithRanks: not ready < ready; ready for less time < longer;
            # newer < older (the pods here are all scheduled, running, never restarted).
            def rank(p: Pod):
                return (1 if p.ready else 0, -(p.ready_at or 0.0), -p.created)
            for p in sorted(act, key=rank)[: len(act) - n]:
                p.delete()
                deleted.append(p.name)
        self.on_change()
        return created, deleted

    def _probe_loop(self):
        while not self._stop.is_set():
            now = time.monotonic()
            for p in self.existing():
                p.probe(now)
            self._stop.wait(self.tpl.readiness_period_s)

    # router
    def pick(self) -> Optional[Pod]:
        now = time.monotonic()
        with self.lock:
            cands = [p for p in self.pods if p.in_rotation(now)]
            if not cands:
                return None
            low = min(p.outstanding for p in cands)
            best = [p for p in cands if p.outstanding == low]
            self._rr += 1
            p = best[self._rr % len(best)]
            p.outstanding += 1
            return p

    def release(self, p: Pod) -> None:
        with self.lock:
            p.outstanding -= 1

    def stop(self) -> None:
        self._stop.set()
        self._prober.join(3)
        pods = list(self.pods)
        for p in pods:
            p.shutdown()
        for p in pods:
            p.join(60)


# --------------------------------------------------------------------------- Prometheus


class Prometheus:
    """Debian's Prometheus with the ServiceMonitor-derived scrape config, file-based discovery."""

    def __init__(self, entry_point: str, scrape_cap: str, workdir: pathlib.Path):
        self.dir = workdir
        placeholder = {"triton-placeholder-0": {"metrics": "127.0.0.1:9", "triton-metrics": "127.0.0.1:9"}}
        r = subprocess.run([sys.executable, str(ROOT / "tests" / "deploy" / "prometheus_config.py"),
                            "--root", str(ROOT), "--entry-point", entry_point, "--out", str(workdir),
                            "--namespace", NAMESPACE, "--interval-cap", scrape_cap,
                            "--targets", json.dumps(placeholder)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"prometheus_config.py failed:\n{r.stderr}")
        self.summary = json.loads(r.stdout)
        cfg_path = workdir / "prometheus.yml"
        cfg = yaml.safe_load(cfg_path.read_text())
        self.jobs = []  # (sd file, endpoint port name, label template)
        for i, job in enumerate(cfg["scrape_configs"]):
            port = next(j["port"] for j in self.summary["jobs"] if j["job"] == job["job_name"])
            labels = dict(job["static_configs"][0]["labels"])
            sd = workdir / f"sd-{i}.json"
            sd.write_text("[]")
            del job["static_configs"]
            job["file_sd_configs"] = [{"files": [str(sd)], "refresh_interval": "5s"}]
            self.jobs.append((sd, port, labels))
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        binary = shutil.which("prometheus")
        if not binary:
            raise RuntimeError("no `prometheus`: run tests/autoscale/setup.sh (Debian's package)")
        self.version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        port = common.free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.proc = common.start_process("prometheus", [
            binary, f"--config.file={cfg_path}", f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=2h", "--log.level=warn"])
        self.s = requests.Session()
        self.s.trust_env = False
        if not common.wait_until(lambda: common.http_get(f"{self.base}/-/ready", 1)[0] == 200, 30, 0.2):
            self.stop()
            raise RuntimeError(f"prometheus not ready in 30 s:\n{self.proc.log_tail()}")

    def set_pods(self, pods: Sequence[Pod]) -> None:
        """What the endpoints role sees: pods that are up and not terminating."""
        for sd, port, labels in self.jobs:
            groups = []
            for p in pods:
                if p.agent is None or p.triton is None:
                    continue
                addr = p.agent.metrics_url if port == "metrics" else p.triton.metrics_url
                hostport = addr.split("//", 1)[1].split("/", 1)[0]
                groups.append({"targets": [hostport], "labels": {**labels, "__meta_kubernetes_pod_name": p.name}})
            tmp = sd.with_suffix(".tmp")
            tmp.write_text(json.dumps(groups))
            os.replace(tmp, sd)

    def query(self, expr: str) -> List[Tuple[dict, float]]:
        r = self.s.get(f"{self.base}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    def one(self, expr: str) -> Tuple[Optional[float], Optional[str]]:
        """KEDA's Prometheus scaler: exactly one series, else an error."""
        try:
            res = self.query(expr)
        except Exception as e:  # noqa: BLE001
            return None, f"{type(e).__name__}: {e}"[:200]
        if len(res) != 1:
            return None, f"{len(res)} series"
        v = res[0][1]
        return (v, None) if math.isfinite(v) else (None, f"non-finite {v}")

    def stop(self) -> None:
        self.proc.stop(grace=10)


# --------------------------------------------------------------------------- load


class Load:
    """Open-loop arrivals at precomputed times, sent through the router."""

    def __init__(self, cluster: Cluster, times: List[float], t0: float, workers: int = 256):
        self.cluster, self.times, self.t0 = cluster, times, t0
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="req")
        self.records: List[tuple] = []  # (sched, sent, end, status, pod, error)
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._tls = threading.local()
        self._t = threading.Thread(target=self._dispatch, daemon=True, name="dispatch")

    def start(self):
        self._t.start()
        return self

    def _dispatch(self):
        for a in self.times:
            delay = self.t0 + a - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            self.pool.submit(self._one, a)

    def _session(self) -> requests.Session:
        s = getattr(self._tls, "s", None)
        if s is None:
            s = self._tls.s = requests.Session()
            s.trust_env = False
        return s

    def _one(self, sched: float):
        sent = time.monotonic() - self.t0
        pod = self.cluster.pick()
        status, err, name = "ok", None, None
        if pod is None:
            status, err = "no_endpoint", "no pod in rotation"
        else:
            name = pod.name
            try:
                r = self._session().post(pod.triton.infer_url(self.cluster.model), json=common.infer_body(1.0),
                                         headers={"Connection": "close"}, timeout=REQUEST_TIMEOUT_S)
                if r.status_code != 200:
                    status, err = "http_error", f"{r.status_code} {r.text[:120]}"
                else:
                    r.json()
                    pod.served += 1
            except requests.exceptions.RequestException as e:
                status, err = "conn_error", f"{type(e).__name__}: {str(e)[:160]}"
                self._tls.s = None
            except ValueError as e:
                status, err = "http_error", f"bad body: {e}"
            finally:
                self.cluster.release(pod)
        end = time.monotonic() - self.t0
        with self.lock:
            self.records.append((round(sched, 4), round(sent, 4), round(end, 4), status, name, err))

    def outstanding(self) -> int:
        with self.cluster.lock:
            return sum(p.outstanding for p in self.cluster.pods)

    def stop(self, wait_s: float = REQUEST_TIMEOUT_S + 5) -> None:
        self._stop.set()
        self._t.join(5)
        self.pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + wait_s
        while self.outstanding() > 0 and time.monotonic() < deadline:
            time.sleep(0.1)


# --------------------------------------------------------------------------- one run


def scale_behavior(spec, factor: Optional[float]) -> None:
    """Shortened timings: every stabilisation window and policy period times `factor`."""
    if factor is None:
        return
    for rules in (spec.scale_up, spec.scale_down):
        rules.stabilization_s *= factor
        for pol in rules.policies:
            pol.period_s *= factor


KEDA_METRICS_API: List[str] = []  # the built tests/deploy/keda_metrics_api binary (built once)


def keda_metrics_api_bin() -> str:
    if not KEDA_METRICS_API:
        out = subprocess.run(["bash", str(ROOT / "tests/deploy/keda_metrics_api/build.sh"),
                              str(ROOT / "target/keda-metrics-api")], check=True, capture_output=True, text=True)
        KEDA_METRICS_API.append(out.stdout.strip().splitlines()[-1])
    return KEDA_METRICS_API[0]


def metrics_api_value(value_location: str, aggregation: Optional[str], urls: List[str]):
    """(value, error) as KEDA's metrics-api scaler computes it from these endpoints."""
    if not urls:
        return None, "no endpoints URLs were given for the service name"
    r = subprocess.run([keda_metrics_api_bin(), "-value-location", value_location,
                        "-aggregation", aggregation or "average", *urls], capture_output=True, text=True, timeout=20)
    try:
        res = json.loads(r.stdout)
    except ValueError:
        return None, f"keda-metrics-api: {r.stderr.strip()[:200]}"
    if res.get("value") is None:
        return None, "; ".join(res.get("errors") or [])[:200]
    return float(res["value"]), None


def pods_query(q: str) -> str:
    """A prometheus-adapter metricsQuery for this Deployment's pods (the harness's one namespace;
    the pods are filtered by name afterwards, as <<.LabelMatchers>>'s pod=~ would)."""
    return q.replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}"').replace("<<.GroupBy>>", "pod")


def run(signal_name: str, timing: Timing, *, seed: int = 9, out_dir: Optional[pathlib.Path] = None,
        max_cap: int = MAX_REPLICAS_CAP, progress: bool = True, entry_point: Optional[str] = None,
        capacity_rps: Optional[float] = None, ideal_target: float = 0.7) -> dict:
    """One experiment. Returns the result dict (also written to out_dir/<signal>.json).

    entry_point: the kustomize entry point (default timing.entry_points[signal_name]);
    capacity_rps: one pod's measured saturation throughput of timing.model (required when
    timing.rates_in_capacity; also enables the ideal-replica measures, ideal(t) =
    ceil(offered(t) / (capacity x ideal_target)) within KEDA's min/max)."""
    entry = entry_point or timing.entry_points[signal_name]
    docs = render(entry)
    so = next(d for d in docs if d["kind"] == "ScaledObject")
    if timing.physical_extra is not None:
        max_cap = None  # the manifest's maxReplicaCount; the pods are capped below instead
    spec = spec_from_scaledobject(so, max_cap=max_cap)
    scale_behavior(spec, timing.behavior_scale)
    tpl = pod_template(docs)
    shadow: Dict[str, str] = {}
    if signal_name in ("agent", "raw") and entry_point is None:
        other = "agent" if signal_name == "raw" else "raw"
        shadow_so = next(d for d in render(timing.entry_points[other]) if d["kind"] == "ScaledObject")
        shadow = {t.name: t.query for t in spec_from_scaledobject(shadow_so).triggers}
    PROPAGATION[0] = timing.propagation_s
    phases = timing.phases
    if timing.rates_in_capacity:
        if not capacity_rps:
            raise ValueError(f"timing {timing.name}: rates are in units of capacity; pass capacity_rps")
        phases = [Phase(p.name, p.duration_s, p.rate_from * capacity_rps, p.rate_to * capacity_rps) for p in phases]
    times = arrivals(phases, seed)
    starts = phase_starts(phases)
    total = starts["end"]
    physical_cap = None
    if timing.physical_extra is not None:
        if not capacity_rps:
            raise ValueError(f"timing {timing.name}: a physical cap needs capacity_rps (the ideal)")
        peak = max(max(p.rate_from, p.rate_to) for p in phases)
        need = int(math.ceil(peak / (capacity_rps * ideal_target) - 1e-9))
        physical_cap = max(spec.min_replicas, min(spec.max_replicas, need)) + timing.physical_extra
    config = {
        "signal": signal_name, "timing": timing.name, "timing_note": timing.note, "entry_point": entry,
        "scaled": timing.scaled, "cold_start_s": timing.cold_start_s, "behavior_scale": timing.behavior_scale,
        "capacity_rps": capacity_rps, "ideal_target": ideal_target, "settle_phases": list(timing.settle_phases),
        "seed": seed, "requests_scheduled": len(times),
        "triggers": [dataclasses.asdict(t) for t in spec.triggers],
        "shadow_triggers": shadow,
        "min_replicas": spec.min_replicas, "max_replicas": spec.max_replicas,
        "max_replicas_manifest": int(so["spec"].get("maxReplicaCount", 100)),
        "physical_cap": physical_cap,
        "modifiers": None if spec.modifiers is None else {
            "formula": spec.modifiers.formula.text, "target": spec.modifiers.target,
            "metric_type": spec.modifiers.metric_type},
        "behavior": {"scale_up": dataclasses.asdict(spec.scale_up), "scale_down": dataclasses.asdict(spec.scale_down)},
        "sync_s": timing.sync_s, "sync_offset_s": timing.sync_offset_s, "propagation_s": timing.propagation_s,
        "pod": dataclasses.asdict(tpl), "model": timing.model, "slow_ms": SLOW_MS if timing.model == "slow" else None,
        "model_cost": None if timing.model == "slow" else {
            "unbatched": {"a_ms": serve_models.UNBATCHED_A_MS, "k_ms": serve_models.UNBATCHED_K_MS, "max_batch": 1,
                          "instances": 1},
            "batched": {"a_ms": serve_models.BATCHED_A_MS, "k_ms": serve_models.BATCHED_K_MS,
                        "max_batch": serve_models.BATCHED_MAX, "instances": serve_models.BATCHED_INSTANCES}}[timing.model],
        "phases": [dataclasses.asdict(p) for p in phases], "phase_starts": starts,
        "machine": {"nproc": os.cpu_count(), "loadavg_before": os.getloadavg()},
    }
    log(f"run {signal_name}/{timing.name}: {entry}; {timing.note}; {len(times)} requests over {total:.0f} s; "
        f"min/max replicas {spec.min_replicas}/{spec.max_replicas} (manifest max {config['max_replicas_manifest']})"
        + (f"; pods capped at {physical_cap} (desired replicas are not)" if physical_cap is not None else ""))
    if spec.modifiers is not None:
        log(f"  scalingModifiers: {spec.modifiers.formula.text} (target {spec.modifiers.target:g}, "
            f"{spec.modifiers.metric_type})")
    for t in spec.triggers:
        log(f"  trigger {t.name} ({t.metric_type}, threshold {t.threshold:g}): {t.query}")

    saved_env = {k: os.environ.get(k) for k in tpl.agent_env}
    os.environ.update(tpl.agent_env)  # the agent container's env, as the Deployment sets it
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="autoscale-prom-"))
    prom: Optional[Prometheus] = None
    cluster: Optional[Cluster] = None
    load: Optional[Load] = None
    samples: List[dict] = []
    decisions: List[dict] = []
    scale_events: List[dict] = []
    errors: List[str] = []
    t_wall0 = time.monotonic()
    try:
        prom = Prometheus(entry, timing.scrape_cap, workdir)
        config["prometheus"] = prom.version
        config["scrape"] = prom.summary["jobs"]
        t0_holder = [time.monotonic()]
        cluster = Cluster(tpl, t0_holder[0], seed, model=timing.model, cold_start_s=timing.cold_start_s)
        cluster.physical_cap = physical_cap
        cluster.on_change = lambda: prom.set_pods([p for p in cluster.existing() if not p.terminating])
        cluster.start()
        # The Deployment starts at minReplicas; the run begins once that pod is ready and scraped.
        cluster.scale(spec.min_replicas)
        ok = common.wait_until(lambda: all(p.ready for p in cluster.active()) or any(p.error for p in cluster.pods),
                               180, 0.2)
        if not ok or any(p.error for p in cluster.pods):
            raise RuntimeError(f"first pod not ready: {[p.error for p in cluster.pods]}")
        cluster.on_change()
        n_jobs = len(prom.jobs)
        if not common.wait_until(lambda: len(prom.query(f'up{{namespace="{NAMESPACE}"}} == 1')) >= n_jobs, 60, 0.5):
            raise RuntimeError(f"targets not up: {prom.query('up')}")
        def trigger_value(tr):
            if tr.source == "metrics-api":
                # KEDA's metrics-api scaler on the Service's Ready endpoints (in rotation: the
                # EndpointSlice and kube-proxy lag alike), every page read with Prometheus's own
                # text parser (tests/deploy/keda_metrics_api); failing pages are skipped.
                now_m = time.monotonic()
                urls = [p.agent.metrics_url for p in cluster.existing()
                        if p.agent is not None and p.in_rotation(now_m) and not p.terminating]
                return metrics_api_value(tr.query, tr.aggregation, urls)
            if tr.metric_type == "Pods":
                try:
                    return {m.get("pod", "?"): v for m, v in prom.query(pods_query(tr.query))}, None
                except Exception as e:  # noqa: BLE001
                    return None, f"{type(e).__name__}: {e}"[:200]
            return prom.one(tr.query)

        def answered(tr):
            v = trigger_value(tr)[0]
            return bool(v) if isinstance(v, dict) else v is not None
        # Warm-up at the profile's first rate until every trigger answers and every pod has a
        # capacity: its agent estimates one once Triton's statistics show executions (read every
        # --stats-interval); in a cluster the Deployment has been serving before. Since issue 22
        # an idle pod answers utilization 0 without a capacity, so the triggers alone would end
        # the warm-up before any execution, and the first load would find no estimate (its
        # utilization absent until the first statistics read). The warm-up's requests are not
        # part of the results.
        def capacities_known():
            want = {p.name for p in cluster.active()}
            got = {m.get("pod") for m, _ in prom.query(f'triton_capacity_rps{{namespace="{NAMESPACE}"}}')}
            return want <= got
        t_warm = time.monotonic()
        warm = Load(cluster, arrivals([Phase("warm-up", 120, phases[0].rate_from, phases[0].rate_from)], seed + 7),
                    t_warm).start()
        try:
            if not common.wait_until(lambda: all(answered(t) for t in spec.triggers) and capacities_known(), 110, 0.5):
                raise RuntimeError(f"trigger queries answer nothing, or no capacity yet: "
                                   f"{[trigger_value(t) for t in spec.triggers]}")
        finally:
            warm.stop(wait_s=15)
        config["warmup_s"] = round(time.monotonic() - t_warm, 1)
        config["startup_s"] = round(time.monotonic() - t_wall0, 1)

        # ---- t = 0
        t0 = time.monotonic()
        cluster.t0 = t0
        cluster.started = True
        for p in cluster.pods:
            p.t0 = t0
        load = Load(cluster, times, t0).start()
        hpa = Hpa(spec)
        next_sync = timing.sync_offset_s
        next_sample = 0.0
        last_print = -1e9
        while True:
            now = time.monotonic() - t0
            if now >= total:
                break
            if now >= next_sample:
                ex = cluster.existing()
                samples.append({
                    "t": round(now, 2), "offered": round(rate_at(phases, now), 3),
                    "desired": cluster.spec_replicas, "pods": len(ex),
                    "active": sum(1 for p in ex if not p.terminating),
                    "ready": sum(1 for p in ex if p.ready),
                    "in_rotation": sum(1 for p in ex if p.in_rotation(time.monotonic())),
                    "outstanding": load.outstanding(),
                })
                next_sample += 1.0
            if now >= next_sync:
                next_sync += timing.sync_s
                values, errs = {}, {}
                for tr in spec.triggers:
                    values[tr.name], e = trigger_value(tr)
                    if e:
                        errs[tr.name] = e
                shadow_vals = {n: prom.one(q)[0] for n, q in shadow.items()}
                cur = cluster.spec_replicas
                act = cluster.active()
                d = hpa.sync(time.monotonic() - t0, values, cur, len(act), cluster.ready_count(), [p.name for p in act])
                # Per pod, what each agent publishes (issue 22: how much a new pod's estimate,
                # which has never seen saturation, overstates its utilization: C / capacity)
                per_pod: Dict[str, dict] = {}
                try:
                    for fam, key in (("triton_pod_utilization", "u"), ("triton_capacity_rps", "cap"),
                                     ("triton_sidecar_models_without_capacity", "without")):
                        for m, v in prom.query(f'{fam}{{namespace="{NAMESPACE}"}}'):
                            per_pod.setdefault(m.get("pod", "?"), {})[key] = v
                except Exception as e:  # noqa: BLE001 - a record, not a decision input
                    per_pod = {"error": str(e)[:200]}
                rec = {"t": round(d.t, 2), "current": cur, "values": values, "errors": errs, "per_pod": per_pod,
                       "shadow": shadow_vals, "proposals": d.proposals, "metric_desired": d.metric_desired,
                       "stabilized": d.stabilized, "desired": d.desired, "reason": d.reason,
                       "ready": cluster.ready_count(), "active": len(cluster.active())}
                if errs:
                    errors.append(f"t={d.t:.0f}s query errors {errs}")
                if d.desired != cur:
                    created, deleted = cluster.scale(d.desired)
                    hpa.record_scale(d.t, cur, d.desired)
                    rec.update(created=created, deleted=deleted)
                    scale_events.append({"t": rec["t"], "from": cur, "to": d.desired, "created": created,
                                         "deleted": deleted, "values": values})
                    log(f"  t={d.t:6.1f}s scale {cur} -> {d.desired} ({d.reason}); values "
                        + ", ".join(f"{k}={_fmt_value(v)}" for k, v in values.items())
                        + (f"; create {created}" if created else "") + (f"; delete {deleted}" if deleted else ""))
                decisions.append(rec)
            if progress and now - last_print >= 30:
                last_print = now
                s = samples[-1] if samples else {}
                with load.lock:
                    n_done = len(load.records)
                    n_fail = sum(1 for r in load.records if r[3] != "ok")
                log(f"  t={now:6.1f}s offered {rate_at(phases, now):5.1f}/s desired {cluster.spec_replicas} "
                    f"ready {s.get('ready')} outstanding {s.get('outstanding')} done {n_done} failed {n_fail}")
            for p in cluster.pods:
                if p.error and p.name not in " ".join(errors):
                    errors.append(f"pod {p.name}: {p.error}")
            time.sleep(0.05)
        load.stop()
    finally:
        if load is not None:
            load.stop(wait_s=REQUEST_TIMEOUT_S + 5)
        t_end = time.monotonic()
        if cluster is not None:
            cluster.stop()
        if prom is not None:
            prom.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    t0 = cluster.t0
    pods = [{"name": p.name, "created": p.rel(p.created), "ready": p.rel(p.ready_at), "deleted": p.rel(p.deleted_at),
             "gone": p.rel(p.gone_at), "served": p.served, "error": p.error, "termination": p.termination,
             "restarts": p.restarts}
            for p in cluster.pods]
    result = {"config": config, "samples": samples, "decisions": decisions, "scale_events": scale_events,
              "pods": pods, "requests": load.records if load else [], "errors": errors,
              "wall_s": round(time.monotonic() - t_wall0, 1), "run_end": round(t_end - t0, 2)}
    result["config"]["machine"]["loadavg_after"] = os.getloadavg()
    result["summary"] = summarize(result)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{signal_name}.json").write_text(json.dumps(result))
    return result


# --------------------------------------------------------------------------- summary


def _fmt_value(v) -> str:
    if v is None:
        return "None"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k[-5:]}: {x:.3g}" for k, x in sorted(v.items())) + "}"
    return f"{v:.3g}"


def percentile(sorted_vals: Sequence[float], p: float) -> Optional[float]:
    if not sorted_vals:
        return None
    return sorted_vals[min(len(sorted_vals) - 1, int(p * (len(sorted_vals) - 1) + 0.5))]


def summarize(res: dict) -> dict:
    cfg = res["config"]
    st = cfg["phase_starts"]
    total = st["end"]
    spike0, spike1 = st.get("spike", total), st.get("ramp down", total)
    reqs = res["requests"]
    failed = [r for r in reqs if r[3] != "ok"]
    kinds: Dict[str, int] = {}
    for r in failed:
        kinds[r[3]] = kinds.get(r[3], 0) + 1
    spike_lat = sorted(r[2] - r[0] for r in reqs if r[3] == "ok" and spike0 <= r[0] < spike1)
    all_lat = sorted(r[2] - r[0] for r in reqs if r[3] == "ok")
    ev = res["scale_events"]
    replicas_at_spike = next((d["current"] for d in res["decisions"] if d["t"] >= spike0), None)
    first_up = next((e for e in ev if e["t"] >= spike0 and e["to"] > e["from"]), None)
    reaction = decision_to_ready = decision_to_all_ready = None
    if first_up:
        reaction = first_up["t"] - spike0
        readies = [p["ready"] for p in res["pods"] if p["name"] in first_up["created"] and p["ready"] is not None]
        if readies:
            decision_to_ready = min(readies) - first_up["t"]
            if len(readies) == len(first_up["created"]):
                decision_to_all_ready = max(readies) - first_up["t"]
    # replica-seconds: each pod from creation until every process exited (a terminating pod still
    # holds its GPU), counted over the profile [0, end].
    rs = 0.0
    for p in res["pods"]:
        a = max(0.0, p["created"] or 0.0)
        b = min(total, p["gone"] if p["gone"] is not None else total)
        rs += max(0.0, b - a)
    ups = [e for e in ev if e["to"] > e["from"]]
    downs = [e for e in ev if e["to"] < e["from"]]
    max_desired = max([d["desired"] for d in res["decisions"]] or [0])
    last = res["decisions"][-1]["desired"] if res["decisions"] else None
    idle_after = st.get("idle after", total)
    back_to_min = next((e["t"] - idle_after for e in downs
                        if e["t"] >= idle_after and e["to"] == cfg["min_replicas"]), None)
    rose_in_spike = any(e["to"] > e["from"] and spike0 <= e["t"] < spike1 for e in ev)
    terminations = [p["termination"] for p in res["pods"] if p["termination"]]
    return {
        "requests": len(reqs), "failed": len(failed), "failed_kinds": kinds,
        "failed_examples": [r for r in failed[:5]],
        "replicas_at_spike_start": replicas_at_spike,
        "reaction_s": None if reaction is None else round(reaction, 1),
        "decision_to_ready_s": None if decision_to_ready is None else round(decision_to_ready, 1),
        "decision_to_all_ready_s": None if decision_to_all_ready is None else round(decision_to_all_ready, 1),
        "spike_p50_s": percentile(spike_lat, 0.5), "spike_p99_s": percentile(spike_lat, 0.99),
        "spike_max_s": spike_lat[-1] if spike_lat else None,
        "all_p50_s": percentile(all_lat, 0.5), "all_p99_s": percentile(all_lat, 0.99),
        "replica_seconds": round(rs, 0), "scale_ups": len(ups), "scale_downs": len(downs),
        "max_desired": max_desired, "final_desired": last, "rose_during_spike": rose_in_spike,
        "back_to_min_after_idle_s": None if back_to_min is None else round(back_to_min, 1),
        "terminations": terminations, "query_errors": len([e for e in res["errors"] if "query" in e]),
        "pod_errors": [p["error"] for p in res["pods"] if p["error"]],
        **(capacity_measures(res) if cfg.get("capacity_rps") else {}),
    }


def ideal_replicas(cfg: dict, offered: float) -> int:
    """The pods the offered load needs at the target utilization, within KEDA's min/max."""
    need = int(math.ceil(offered / (cfg["capacity_rps"] * cfg["ideal_target"]) - 1e-9))
    return max(cfg["min_replicas"], min(cfg["max_replicas"], need))


def capacity_measures(res: dict) -> dict:
    """Issue 13's measures against one pod's measured capacity C and the ideal replica count."""
    cfg = res["config"]
    cap = cfg["capacity_rps"]
    phases = [Phase(**p) for p in cfg["phases"]]
    st = cfg["phase_starts"]
    total = st["end"]
    # scale-downs while the offered load exceeds what the remaining pods can serve
    bad_downs = []
    for e in res["scale_events"]:
        if e["to"] < e["from"]:
            off = rate_at(phases, e["t"])
            if off > e["to"] * cap:
                bad_downs.append({"t": e["t"], "from": e["from"], "to": e["to"], "offered": round(off, 2),
                                  "remaining_capacity": round(e["to"] * cap, 2)})
    # replicas against the ideal once settled: at the end of every phase of constant load
    settled = []
    names = cfg.get("settle_phases") or [p.name for p in phases if p.rate_from == p.rate_to]
    for p in phases:
        if p.name not in names:
            continue
        t_end = st[p.name] + p.duration_s
        cur = next((d for d in reversed(res["decisions"]) if d["t"] <= t_end), None)
        if cur is None:
            continue
        ideal = ideal_replicas(cfg, p.rate_from)
        settled.append({"phase": p.name, "t": round(t_end, 1), "replicas": cur["desired"], "ideal": ideal})
    settled_err = max((abs(x["replicas"] - x["ideal"]) for x in settled), default=None)
    # ideal's integral (1 s steps) and the replica-seconds (pods created -> gone) against it
    ideal_int = sum(ideal_replicas(cfg, rate_at(phases, t + 0.5)) for t in range(int(total)))
    # the ideal held for the run's scale-down window (the most a perfect signal under this
    # behavior keeps): max of the ideal over [t - window, t]; what is spent above it is the signal's
    win = float(((cfg.get("behavior") or {}).get("scale_down") or {}).get("stabilization_s", 0.0))
    per_s = [ideal_replicas(cfg, rate_at(phases, t + 0.5)) for t in range(int(total))]
    held_int = sum(max(per_s[max(0, i - int(win)):i + 1]) for i in range(len(per_s)))
    rs = 0.0
    for p in res["pods"]:
        a = max(0.0, p["created"] or 0.0)
        b = min(total, p["gone"] if p["gone"] is not None else total)
        rs += max(0.0, b - a)
    # cold start: from the moment the load first needs more pods than at t = 0 (the ideal rises)
    # until the first pod created after it is ready; the peak of the HPA's replicas in that
    # window against the ideal's (overshoot: replicas asked for while new pods cannot serve yet)
    cold = None
    rise = next((float(t) for t in range(int(total)) if ideal_replicas(cfg, rate_at(phases, t)) >
                 ideal_replicas(cfg, rate_at(phases, 0))), None)
    ups = [e for e in res["scale_events"] if e["to"] > e["from"] and rise is not None and e["t"] >= rise]
    if ups:
        first = ups[0]
        readies = [p["ready"] for p in res["pods"] if p["created"] is not None and p["created"] >= rise
                   and p["ready"] is not None]
        ready_t = min(readies) if readies else total
        peak = max([d["desired"] for d in res["decisions"] if rise <= d["t"] <= ready_t] or [first["to"]])
        ideal_peak = max(ideal_replicas(cfg, rate_at(phases, rise + i * 0.5))
                         for i in range(int((ready_t - rise) * 2) + 1))
        cold = {"from_t": rise, "first_up_t": first["t"], "ready_t": round(ready_t, 1),
                "decision_to_ready_s": round(ready_t - first["t"], 1), "peak_replicas": peak, "ideal": ideal_peak}
    elif rise is not None:
        # no scale-up after the rise: the replicas were already there (asked for before the load)
        at_rise = [d["desired"] for d in res["decisions"] if d["t"] <= rise]
        cold = {"from_t": rise, "first_up_t": None, "ready_t": None, "decision_to_ready_s": None,
                "peak_replicas": max(at_rise or [cfg["min_replicas"]]), "ideal": ideal_replicas(cfg, rate_at(phases, rise + 1)),
                "note": "no scale-up after the load rose: already at this count"}
    ok = sorted(r[2] - r[0] for r in res["requests"] if r[3] == "ok")
    # the HPA's desired replicas integrated over the run (1 s samples): with a physical cap the
    # pods' replica-seconds understate what the HPA asked a cluster to pay for
    samples = res.get("samples") or []
    desired_rs = sum(smp["desired"] for smp in samples) if samples else None
    # A pod's estimate against the measured capacity C: utilization reads C / estimate times the
    # truth. Per pod, the largest such factor while it had an estimate, and what the pods' excess
    # utilization added to the utilization term (sum of u - u x est / C, in pods at the target).
    overstatement: Dict[str, float] = {}
    excess_pods = 0.0
    for d in res["decisions"]:
        extra = 0.0
        for pod, v in (d.get("per_pod") or {}).items():
            if not isinstance(v, dict) or not v.get("cap"):
                continue
            f = cap / v["cap"]
            overstatement[pod] = max(overstatement.get(pod, 0.0), f)
            if v.get("u") is not None:
                extra += v["u"] * (1.0 - 1.0 / f)
        excess_pods = max(excess_pods, extra / cfg["ideal_target"])
    return {
        "estimate_overstatement_max": round(max(overstatement.values()), 3) if overstatement else None,
        "estimate_overstatement_by_pod": {k: round(v, 3) for k, v in overstatement.items()},
        "estimate_excess_pods_max": round(excess_pods, 3),
        "desired_replica_seconds": desired_rs,
        "desired_replica_seconds_vs_ideal": round(desired_rs / ideal_int, 3) if ideal_int and desired_rs is not None else None,
        "capacity_rps": cap, "scale_downs_over_capacity": len(bad_downs), "scale_downs_over_capacity_list": bad_downs,
        "settled": settled, "settled_max_error": settled_err, "ideal_replica_seconds": ideal_int,
        "replica_seconds_vs_ideal": round(rs / ideal_int, 3) if ideal_int else None,
        "ideal_held_replica_seconds": held_int, "scale_down_window_s": win,
        "replica_seconds_vs_ideal_held": round(rs / held_int, 3) if held_int else None,
        "cold_start": cold, "p50_s": percentile(ok, 0.5), "p99_s": percentile(ok, 0.99),
    }
