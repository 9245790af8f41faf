"""Shared helpers for the end-to-end harness.

Run with the harness venv: ``.venv/bin/python`` (see setup_venv.sh).

* :func:`free_port` / :func:`free_ports` - loopback ports chosen by the kernel.
* :func:`start_triton` - context manager: serve_triton.py in its own process
  group, waits for READY, kills the whole group on exit (also on failure).
* :class:`LoadGenerator` - N client threads sending KServe v2 HTTP requests,
  each outcome recorded (ok / http_error / conn_error) with its latency.
* :func:`fetch_metrics` / :func:`parse_metrics` / :func:`by_model` - raw
  Prometheus text via prometheus_client's parser.
* :func:`start_process` - generic process-group launcher (for the agent).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import shutil
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import requests
from prometheus_client.parser import text_string_to_metric_families

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV_PYTHON = pathlib.Path(os.environ.get("TRITON_E2E_VENV", ROOT / ".venv")) / "bin" / "python"
SERVE_TRITON = HERE / "serve_triton.py"
DEFAULT_LOG_DIR = pathlib.Path(os.environ.get("TRITON_E2E_LOG_DIR", ROOT / "target" / "e2e-logs"))


def log(msg: str) -> None:
    sys.stderr.write(f"[e2e {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- ports


def free_ports(n: int) -> List[int]:
    """n distinct free TCP ports on 127.0.0.1 (all sockets held open until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def wait_port_closed(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- processes


def pid_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")  # zombie = exited, not yet reaped
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return not pid_alive(pid)


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ManagedProcess:
    """A child started in its own session/process group, stdout+stderr to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: pathlib.Path, env=None, stdout_pipe=False):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_f = open(log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log_f,
            stderr=self._log_f,
            env=env,
            start_new_session=True,  # own process group: killpg reaches every descendant
            close_fds=True,
        )
        self.pgid = self.proc.pid
        self.started_at = time.monotonic()
        self.exited_at: Optional[float] = None
        self._reaper = threading.Thread(target=self._reap, daemon=True, name=f"reap-{name}")
        self._reaper.start()

    def _reap(self):
        self.proc.wait()
        self.exited_at = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "<no log>"

    def stop(self, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Signal the leader, wait `grace`, then SIGKILL the whole process group."""
        if self.alive():
            self.send_signal(sig)
            self.wait(grace)
        # Descendants may outlive the leader (or ignore the signal): kill the group.
        _kill_group(self.pgid, signal.SIGKILL)
        if self.alive():
            self.wait(5)
        with contextlib.suppress(Exception):
            self._log_f.close()


def start_process(name: str, argv: Sequence[str], log_dir: pathlib.Path = DEFAULT_LOG_DIR, env=None) -> ManagedProcess:
    ts = time.strftime("%Y%m%d-%H%M%S")
    return ManagedProcess(name, argv, log_dir / f"{ts}-{name}-{os.getpid()}.log", env=env)


# --------------------------------------------------------------------------- triton


@dataclasses.dataclass
class TritonHandle:
    process: ManagedProcess
    http_port: int
    grpc_port: int
    metrics_port: int
    triton_pid: int  # the tritonserver process (child of serve_triton.py)
    startup_s: float
    exited_line: Optional[str] = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def infer_url(self, model: str) -> str:
        return f"{self.http_url}/v2/models/{model}/infer"

    def triton_alive(self) -> bool:
        return pid_alive(self.triton_pid)

    def sigterm_tritonserver(self) -> None:
        """What the kubelet does to the Triton container: SIGTERM to tritonserver itself."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.triton_pid, signal.SIGTERM)

    def wait_triton_exit(self, timeout: float) -> bool:
        return wait_pid_gone(self.triton_pid, timeout)


def _leftover_snapshot() -> set:
    """Files a crashed tritonserver/pytriton leaves behind: pytriton's shared memory
    (/dev/shm/psm_*, /dev/shm/pytrtion<pid>-*) and tritonserver's temporary model dirs
    (/tmp/folderXXXXXX, hard-coded by Triton for models loaded with file overrides,
    which is how pytriton loads them)."""
    return set(glob.glob("/dev/shm/psm_*")) | set(glob.glob("/dev/shm/pytrtion*")) | set(glob.glob("/tmp/folder??????"))


def _shm_in_use() -> set:
    """/dev/shm paths some live process still maps or holds open."""
    used = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{d}/maps") as f:
                for line in f:
                    i = line.find("/dev/shm/")
                    if i >= 0:
                        used.add(line[i:].strip().replace(" (deleted)", ""))
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{d}/fd"):
                with contextlib.suppress(OSError):
                    t = os.readlink(f"/proc/{d}/fd/{fd}")
                    if t.startswith("/dev/shm/"):
                        used.add(t)
    return used


def _cleanup_leftovers(before: set, workspace: str) -> None:
    """Remove what our Triton left behind, never what another live Triton uses (other
    harness runs may be running at the same time): a /tmp/folderXXXXXX only when its
    config.pbtxt names our workspace, a /dev/shm segment only when no live process maps
    or holds it."""
    new = _leftover_snapshot() - before
    if not new:
        return
    in_use = _shm_in_use() if any(p.startswith("/dev/shm/") for p in new) else set()
    for p in new:
        with contextlib.suppress(OSError):
            if p.startswith("/tmp/folder"):
                cfg = os.path.join(p, "config.pbtxt")
                with open(cfg, errors="replace") as f:
                    if workspace in f.read():
                        shutil.rmtree(p, ignore_errors=True)
            elif p not in in_use:
                os.unlink(p)


@contextlib.contextmanager
def start_triton(
    *,
    startup_timeout: float = 180.0,
    extra_args: Sequence[str] = (),
    log_dir: pathlib.Path = DEFAULT_LOG_DIR,
    python: os.PathLike = VENV_PYTHON,
    stop_grace: float = 40.0,
    script: os.PathLike = SERVE_TRITON,
) -> Iterator[TritonHandle]:
    """Start serve_triton.py (or `script`, which speaks the same READY/EXITED protocol, e.g.
    tests/autoscale/serve_models.py) on free ports; yield a TritonHandle once READY.

    On exit (normal or exception) SIGTERM serve_triton.py, wait `stop_grace`, then
    SIGKILL its whole process group (tritonserver and the backend stubs are in it).
    """
    python = pathlib.Path(python)
    if not python.exists():
        raise RuntimeError(f"{python} missing: run tests/e2e/setup_venv.sh first")
    http_p, grpc_p, metrics_p = free_ports(3)
    argv = [
        str(python),
        "-u",
        str(script),
        "--http-port", str(http_p),
        "--grpc-port", str(grpc_p),
        "--metrics-port", str(metrics_p),
        *extra_args,
    ]
    for attempt in (1, 2):
        try:
            with _start_triton_once(argv, startup_timeout, log_dir, stop_grace) as handle:
                yield handle
            return
        except HandshakeLost as e:
            if attempt == 2:
                raise RuntimeError(f"Triton lost pytriton's stub handshake twice: {e}") from e
            log(f"RETRY: a model's Python stub lost pytriton's start-up handshake "
                f"(ConnectionRefusedError in get_config_from_handshake_server); starting Triton once more")


class HandshakeLost(RuntimeError):
    """Triton never became ready because a model's Python stub lost pytriton's start-up handshake
    (`ConnectionRefusedError` in `get_config_from_handshake_server`): a known start-up race of
    pytriton 0.7.0, the one failure start_triton() retries (once)."""


def handshake_lost(log_text: str) -> bool:
    return "get_config_from_handshake_server" in log_text and "ConnectionRefusedError" in log_text


@contextlib.contextmanager
def _start_triton_once(argv, startup_timeout, log_dir, stop_grace) -> Iterator[TritonHandle]:
    leftovers_before = _leftover_snapshot()
    env = dict(os.environ)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(k, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    # pytriton copies tritonserver (~22 MB) into its workspace; keep it in a temp dir we remove.
    ws_parent = tempfile.mkdtemp(prefix="triton-e2e-ws-")
    argv += ["--workspace", os.path.join(ws_parent, "ws")]
    ts = time.strftime("%Y%m%d-%H%M%S")
    mp = ManagedProcess("triton", argv, log_dir / f"{ts}-triton-{os.getpid()}.log", env=env, stdout_pipe=True)
    t0 = time.monotonic()
    handle: Optional[TritonHandle] = None
    lines: List[str] = []
    ready_evt = threading.Event()

    def read_stdout():
        assert mp.proc.stdout is not None
        for raw in mp.proc.stdout:
            line = raw.decode(errors="replace").strip()
            lines.append(line)
            if line.startswith("READY "):
                ready_evt.set()
        ready_evt.set()  # EOF: the process is gone

    reader = threading.Thread(target=read_stdout, daemon=True, name="triton-stdout")
    reader.start()
    try:
        if not ready_evt.wait(startup_timeout) or not any(l.startswith("READY ") for l in lines):
            err = HandshakeLost if handshake_lost(mp.log_tail(100000)) else RuntimeError
            raise err(
                f"serve_triton.py did not become READY within {startup_timeout}s "
                f"(alive={mp.alive()}, rc={mp.proc.poll()}); stdout={lines!r}\n--- log {mp.log_path} ---\n{mp.log_tail()}"
            )
        ready = next(l for l in lines if l.startswith("READY "))
        kv = dict(part.split("=", 1) for part in ready.split()[1:])
        handle = TritonHandle(
            process=mp,
            http_port=int(kv["http"]),
            grpc_port=int(kv["grpc"]),
            metrics_port=int(kv["metrics"]),
            triton_pid=int(kv["triton_pid"]),
            startup_s=time.monotonic() - t0,
        )
        log(f"triton ready in {handle.startup_s:.1f}s: http={handle.http_port} metrics={handle.metrics_port} "
            f"tritonserver pid={handle.triton_pid} (log {mp.log_path})")
        yield handle
    finally:
        mp.stop(grace=stop_grace)
        reader.join(timeout=2)
        if handle is not None:
            handle.exited_line = next((l for l in lines if l.startswith("EXITED ")), None)
            if pid_alive(handle.triton_pid):  # should be impossible: same process group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(handle.triton_pid, signal.SIGKILL)
        _cleanup_leftovers(leftovers_before, ws_parent)
        shutil.rmtree(ws_parent, ignore_errors=True)


# --------------------------------------------------------------------------- load

OK, HTTP_ERROR, CONN_ERROR = "ok", "http_error", "conn_error"


def infer_body(value: float = 1.0) -> dict:
    """KServe v2 JSON body for the example models: input x, FP32, shape [1, 1] (batch dim first)."""
    return {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [float(value)]}]}


@dataclasses.dataclass
class Outcome:
    client: int
    model: str
    start: float  # time.monotonic()
    end: float
    status: str  # ok / http_error / conn_error
    code: Optional[int] = None
    error: Optional[str] = None

    @property
    def latency(self) -> float:
        return self.end - self.start


class LoadGenerator:
    """Closed-loop load: `concurrency` client threads, each sends one request, waits for
    the answer, optionally sleeps `think_s`, repeats.

    * ``models``: one model name or a list; client i uses models[i % len(models)].
    * ``url_for``: model -> infer URL (e.g. TritonHandle.infer_url). A callable so a
      router can switch the target.
    * ``gate``: optional callable -> bool, checked before each request; when it
      returns False the client does not send (it idles 10 ms and checks again).
      Scenario B's router uses it to take the pod out of rotation.
    * Each client thread owns a requests.Session (HTTP keep-alive, like real
      clients), with trust_env=False (loopback only, never a proxy).
    * ``value``: input value or callable(client, seq) -> value (flaky model fails on < 0).
    * ``keep_alive``: reuse one connection per client (default). False sends
      ``Connection: close`` so every request opens a new connection.
    * ``close_on_gate``: when the gate closes, drop the client's pooled connection
      (a router that stops routing to a pod stops using its connections). This
      matters: tritonserver 2.51 on SIGTERM keeps serving requests on already-open
      HTTP connections and waits for every open connection to close, up to
      --exit-timeout-secs, before it exits (see README.md).
    """

    def __init__(
        self,
        url_for: Callable[[str], str],
        models: "str | Sequence[str]",
        concurrency: int,
        *,
        think_s: float = 0.0,
        timeout_s: float = 60.0,
        gate: Optional[Callable[[], bool]] = None,
        value: "float | Callable[[int, int], float]" = 1.0,
        keep_alive: bool = True,
        close_on_gate: bool = True,
    ):
        self.url_for = url_for
        self.models = [models] if isinstance(models, str) else list(models)
        self.concurrency = concurrency
        self.think_s = think_s
        self.timeout_s = timeout_s
        self.gate = gate
        self.value = value
        self.keep_alive = keep_alive
        self.close_on_gate = close_on_gate
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._outcomes: List[Outcome] = []
        self._threads: List[threading.Thread] = []
        self._inflight = 0

    # -- lifecycle
    def start(self) -> "LoadGenerator":
        for i in range(self.concurrency):
            t = threading.Thread(target=self._client, args=(i,), daemon=True, name=f"load-{i}")
            self._threads.append(t)
            t.start()
        return self

    def request_stop(self) -> None:
        """Stop sending new requests; do not wait (in-flight ones still get recorded)."""
        self._stop.set()

    def join(self, timeout: Optional[float] = None) -> List[Outcome]:
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout_s + 5)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return self.outcomes()

    def stop(self, join_timeout: Optional[float] = None) -> List[Outcome]:
        """Stop sending; wait for in-flight requests to finish (up to timeout_s + 5 by default)."""
        self._stop.set()
        deadline = time.monotonic() + (join_timeout if join_timeout is not None else self.timeout_s + 5)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return self.outcomes()

    def __enter__(self):
        return self.start()

    def __exit__(self, *_):
        self.stop()

    # -- results
    def outcomes(self) -> List[Outcome]:
        with self._lock:
            return list(self._outcomes)

    @property
    def inflight(self) -> int:
        with self._lock:
            return self._inflight

    def summary(self, since: float = float("-inf")) -> Dict[str, int]:
        c = Counter(o.status for o in self.outcomes() if o.start >= since)
        return {OK: c.get(OK, 0), HTTP_ERROR: c.get(HTTP_ERROR, 0), CONN_ERROR: c.get(CONN_ERROR, 0)}

    def failures(self) -> List[Outcome]:
        return [o for o in self.outcomes() if o.status != OK]

    # -- worker
    def _client(self, i: int) -> None:
        model = self.models[i % len(self.models)]
        sess = requests.Session()
        sess.trust_env = False
        headers = {"Content-Type": "application/json"}
        if not self.keep_alive:
            headers["Connection"] = "close"
        seq = 0
        used = False
        try:
            while not self._stop.is_set():
                if self.gate is not None and not self.gate():
                    if self.close_on_gate and used:
                        sess.close()
                        sess = requests.Session()
                        sess.trust_env = False
                        used = False
                    self._stop.wait(0.01)
                    continue
                used = True
                v = self.value(i, seq) if callable(self.value) else self.value
                seq += 1
                with self._lock:
                    self._inflight += 1
                start = time.monotonic()
                status, code, err = OK, None, None
                try:
                    r = sess.post(self.url_for(model), json=infer_body(v), headers=headers, timeout=self.timeout_s)
                    code = r.status_code
                    if r.status_code != 200:
                        status, err = HTTP_ERROR, r.text[:200]
                    else:
                        r.json()  # a truncated body counts as a failure too
                except requests.exceptions.RequestException as e:
                    status, err = CONN_ERROR, f"{type(e).__name__}: {str(e)[:200]}"
                    sess.close()  # drop the broken pooled connection
                    sess = requests.Session()
                    sess.trust_env = False
                except ValueError as e:
                    status, err = HTTP_ERROR, f"bad body: {e}"
                end = time.monotonic()
                with self._lock:
                    self._inflight -= 1
                    self._outcomes.append(Outcome(i, model, start, end, status, code, err))
                if self.think_s > 0:
                    self._stop.wait(self.think_s)
        finally:
            sess.close()


def latency_stats(outcomes: Iterable[Outcome]) -> Dict[str, float]:
    lat = sorted(o.latency for o in outcomes if o.status == OK)
    if not lat:
        return {"n": 0}

    def q(p):
        return lat[min(len(lat) - 1, int(p * (len(lat) - 1) + 0.5))]

    return {"n": len(lat), "min": lat[0], "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": lat[-1]}


# --------------------------------------------------------------------------- metrics

Sample = Tuple[str, Dict[str, str], float]


def fetch_text(url: str, timeout: float = 2.0) -> str:
    s = requests.Session()
    s.trust_env = False
    try:
        r = s.get(url, timeout=timeout)
        r.raise_for_status()
        return r.text
    finally:
        s.close()


def parse_metrics(text: str) -> List[Sample]:
    """Flat list of (sample name, labels, value).

    Caveat: prometheus_client's text parser renames the samples of a `counter`
    family to end in `_total` (Triton's `nv_inference_request_success` comes back
    as `nv_inference_request_success_total`). Look samples up with
    :func:`_name_matches` (Scrape.get / by_model), which accepts both spellings."""
    out: List[Sample] = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.append((s.name, dict(s.labels), float(s.value)))
    return out


@dataclasses.dataclass
class Scrape:
    t: float  # time.monotonic() when the response arrived
    samples: List[Sample]

    def get(self, name: str, **labels) -> Optional[float]:
        """Sum of the samples named `name` whose labels include `labels` (None if none)."""
        vals = [v for n, l, v in self.samples if _name_matches(n, name) and all(l.get(k) == want for k, want in labels.items())]
        return sum(vals) if vals else None

    def by_model(self, name: str) -> Dict[str, float]:
        return by_model(self.samples, name)


def fetch_metrics(url: str, timeout: float = 2.0) -> Scrape:
    text = fetch_text(url, timeout)
    return Scrape(time.monotonic(), parse_metrics(text))


def _name_matches(sample_name: str, wanted: str) -> bool:
    """`wanted` as written on the page; tolerate the parser's added `_total` on counters."""
    return sample_name == wanted or sample_name == wanted + "_total"


def by_model(samples: List[Sample], name: str, label: str = "model") -> Dict[str, float]:
    """Sum a family per model over every other label (version, reason, ...)."""
    acc: Dict[str, float] = defaultdict(float)
    for n, l, v in samples:
        if _name_matches(n, name) and label in l:
            acc[l[label]] += v
    return dict(acc)


def triton_derived(a: Scrape, b: Scrape) -> Dict[str, Dict[str, float]]:
    """What the harness computes itself from two raw Triton scrapes (a earlier than b),
    per model: pending (at b), queue_wait_ms, request_rate, failure_rate, compute_ms."""
    out: Dict[str, Dict[str, float]] = {}
    dt = b.t - a.t
    succ_a, succ_b = a.by_model("nv_inference_request_success"), b.by_model("nv_inference_request_success")
    fail_a, fail_b = a.by_model("nv_inference_request_failure"), b.by_model("nv_inference_request_failure")
    q_a, q_b = a.by_model("nv_inference_queue_duration_us"), b.by_model("nv_inference_queue_duration_us")
    c_a, c_b = a.by_model("nv_inference_compute_infer_duration_us"), b.by_model("nv_inference_compute_infer_duration_us")
    pend = b.by_model("nv_inference_pending_request_count")
    for m in set(succ_b) | set(pend):
        ds = succ_b.get(m, 0.0) - succ_a.get(m, 0.0)
        df = fail_b.get(m, 0.0) - fail_a.get(m, 0.0)
        dq = q_b.get(m, 0.0) - q_a.get(m, 0.0)
        dc = c_b.get(m, 0.0) - c_a.get(m, 0.0)
        out[m] = {
            "pending": pend.get(m, 0.0),
            "request_rate": ds / dt if dt > 0 else 0.0,
            "failure_rate": df / dt if dt > 0 else 0.0,
            "queue_wait_ms": dq / ds / 1000.0 if ds > 0 else 0.0,
            "compute_ms": dc / ds / 1000.0 if ds > 0 else 0.0,
        }
    return out


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(interval)
    return False


def http_get(url: str, timeout: float = 2.0) -> Tuple[int, str]:
    """(status, body); status 0 on connection error."""
    s = requests.Session()
    s.trust_env = False
    try:
        r = s.get(url, timeout=timeout)
        return r.status_code, r.text
    except requests.exceptions.RequestException as e:
        return 0, f"{type(e).__name__}: {e}"
    finally:
        s.close()
