#!/usr/bin/env python3
"""Start a real Triton Inference Server (the tritonserver bundled in nvidia-pytriton)
with example models that *sleep* instead of computing.

Models (all take input ``x`` FP32 [1] and return ``y`` = x, batch dim first):

* ``fast``  - max_batch_size 8, dynamic batching (small max queue delay),
              sleeps ``--fast-ms`` (default 20 ms) once per *batch*.
* ``slow``  - max_batch_size 1, sleeps ``--slow-ms`` (default 350 ms) per request.
* ``flaky`` - only with ``--with-flaky``: max_batch_size 1, sleeps ``--flaky-ms``,
              and fails (Triton counts nv_inference_request_failure) for every
              request whose first value of ``x`` is negative. The client chooses.

``--replay-models FILE`` (replay_trace.py) serves *only* the models listed in FILE
instead: a JSON list of ``{"name", "instances", "max_batch", "cost_a_ms", "cost_k_ms"}``
(the ``models`` of an oracle trace, see tests/e2e/README.md "Oracle replay"). Each
sleeps ``cost_a_ms + cost_k_ms * batch`` per execution, less the calibration offset
read from ``--replay-offsets FILE`` (JSON ``{model: {"ok": ms, "fail": ms}}``, re-read
when the file changes; 0 when absent; the sleep never goes below 0), then fails the
whole execution (the callable raises) when any ``x`` in the batch is negative.

Protocol with the harness (stdout carries *only* these lines; everything else,
including tritonserver's own log, goes to stderr):

    READY http=<port> grpc=<port> metrics=<port> triton_pid=<pid> pid=<this pid>
    EXITED triton_rc=<rc or None> reason=<signal|tritonserver-exited|error>

READY is printed once tritonserver answers /v2/health/ready *and* every model
answers /v2/models/<m>/ready (pytriton loads models in explicit mode, so
/v2/health/ready alone is 200 before any model is loaded).

Process tree (see README.md):  this python process (holds the inference
callables; pytriton proxies requests to it over ZeroMQ)
    -> tritonserver (child, same process group, PR_SET_PDEATHSIG=SIGTERM)
        -> triton_python_backend_stub (one per model instance)

SIGTERM/SIGINT to *this* process: pytriton's stop() sends SIGINT to
tritonserver, waits (up to 30 s, then SIGKILL), cleans its workspace, exit 0.
If tritonserver exits on its own (e.g. the harness sends it SIGTERM directly),
this process notices within ~0.2 s, cleans up and exits with tritonserver's
exit code (0 when it was a clean shutdown).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import urllib.request

# ---------------------------------------------------------------------------
# Keep stdout for the READY/EXITED protocol only. pytriton prints every line of
# tritonserver's log with print(); send fd 1 to stderr before importing it.
# ---------------------------------------------------------------------------
_PROTO = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)


def proto(line: str) -> None:
    _PROTO.write(line + "\n")
    _PROTO.flush()


def log(msg: str) -> None:
    sys.stderr.write(f"[serve_triton {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


_STOP = threading.Event()
_STOP_SIGNAL = {"sig": None}


class _StopDuringStartup(BaseException):
    pass


_STARTED = threading.Event()


def _on_signal(signum, _frame):
    _STOP_SIGNAL["sig"] = signum
    _STOP.set()
    if not _STARTED.is_set():
        # Interrupt triton.run() (it blocks while tritonserver starts).
        raise _StopDuringStartup()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--address", default="127.0.0.1", help="bind address for all three endpoints")
    p.add_argument("--fast-ms", type=float, default=20.0, help="sleep per batch of the fast model")
    p.add_argument("--fast-max-batch", type=int, default=8)
    p.add_argument("--fast-queue-delay-us", type=int, default=2000, help="dynamic batcher max queue delay")
    p.add_argument("--fast-instances", type=int, default=1)
    p.add_argument("--slow-ms", type=float, default=350.0, help="sleep per request of the slow model")
    p.add_argument("--slow-instances", type=int, default=1)
    p.add_argument("--with-flaky", action="store_true", help="also serve the `flaky` model")
    p.add_argument("--with-drain-models", action="store_true",
                   help="also serve `long` (--long-ms per request, --long-instances instances) and the decoupled "
                        "`stream` (--stream-tokens responses, one every --stream-token-ms)")
    p.add_argument("--long-ms", type=float, default=12000.0)
    p.add_argument("--long-instances", type=int, default=2)
    p.add_argument("--stream-tokens", type=int, default=40)
    p.add_argument("--stream-token-ms", type=float, default=200.0)
    p.add_argument("--flaky-ms", type=float, default=20.0)
    p.add_argument("--replay-models", default=None,
                   help="JSON file: serve only these sleep-based models (oracle trace replay)")
    p.add_argument("--replay-switch-interval-ms", type=float, default=0.5,
                   help="sys.setswitchinterval for the replay models' process (default 0.5 ms; Python's is 5 ms)")
    p.add_argument("--replay-offsets", default=None,
                   help="JSON file {model: {ok: ms, fail: ms}}: replay models sleep that much less than their "
                        "cost (the measured per-execution overhead of the Python backend path); re-read on change")
    p.add_argument(
        "--exit-timeout-secs",
        type=int,
        default=30,
        help="tritonserver --exit-timeout-secs: how long it waits for in-flight requests on SIGTERM/SIGINT",
    )
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--workspace", default=None, help="pytriton workspace dir (default: a fresh temp dir)")
    p.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose")
    p.add_argument("--access-token", default=None,
                   help="pytriton's access token for its restricted APIs (statistics among them), sent as the "
                        "triton-access-token header; default: pytriton's own random token")
    return p.parse_args(argv)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    # Loopback only: never use a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status == 200
    except Exception:
        return False


def find_tritonserver_pid(triton) -> int | None:
    """PID of the tritonserver child. Uses pytriton's private handle, then /proc."""
    try:
        pid = int(triton._triton_server._tritonserver_running_cmd.pid)  # noqa: SLF001 - pytriton 0.7.0 internals
        if _comm(pid) == "tritonserver":
            return pid
    except Exception:
        pass
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except Exception:
            continue
        if ppid == me and _comm(int(d)) == "tritonserver":
            return int(d)
    return None


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except Exception:
        return None


def tritonserver_exit_code(triton, wait_s: float = 0.0):
    """Exit code as sh reports it (negative = killed by that signal), None if unknown."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            code = triton._triton_server._tritonserver_running_cmd.exit_code  # noqa: SLF001
        except Exception:
            code = None
        if code is not None or time.monotonic() >= deadline:
            return code
        time.sleep(0.05)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    fast_s = args.fast_ms / 1000.0
    slow_s = args.slow_ms / 1000.0
    flaky_s = args.flaky_ms / 1000.0

    def make_fast():
        @batch
        def fast_infer(x):
            time.sleep(fast_s)  # once per batch
            return {"y": x}

        return fast_infer

    def make_slow():
        @batch
        def slow_infer(x):
            time.sleep(slow_s * x.shape[0])  # per request (max batch 1 anyway)
            return {"y": x}

        return slow_infer

    offsets = {"mtime": None, "ms": {}}

    def replay_offset_s(name: str, path: str) -> float:
        f = args.replay_offsets
        if not f:
            return 0.0
        try:
            mt = os.stat(f).st_mtime_ns
            if mt != offsets["mtime"]:
                import json

                with open(f) as fh:
                    offsets["ms"] = json.load(fh)
                offsets["mtime"] = mt
        except (OSError, ValueError):
            offsets["mtime"], offsets["ms"] = None, {}
            return 0.0
        return float(offsets["ms"].get(name, {}).get(path, 0.0)) / 1000.0

    def make_replay(cost_a_s: float, cost_k_s: float, name: str):
        @batch
        def replay_infer(x):
            n = x.shape[0]
            fail = bool(np.any(x[:, 0] < 0))
            time.sleep(max(0.0, cost_a_s + cost_k_s * n - replay_offset_s(name, "fail" if fail else "ok")))
            if fail:
                raise ValueError(f"{name}: negative input requested a failure")
            return {"y": x}

        return replay_infer

    @batch
    def flaky_infer(x):
        time.sleep(flaky_s)
        if np.any(x[:, 0] < 0):
            raise ValueError("flaky: negative input requested a failure")
        return {"y": x}

    config = TritonConfig(
        http_address=args.address,
        http_port=args.http_port,
        grpc_address=args.address,
        grpc_port=args.grpc_port,
        metrics_address=args.address,
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
        exit_timeout_secs=args.exit_timeout_secs,
        log_verbose=args.log_verbose,
    )

    triton = None
    reason = "error"
    rc = 1
    try:
        security = TritonSecurityConfig(access_token=args.access_token) if args.access_token else None
        triton = Triton(config=config, workspace=args.workspace, security_config=security)
        io = dict(
            inputs=[Tensor(name="x", dtype=np.float32, shape=(1,))],
            outputs=[Tensor(name="y", dtype=np.float32, shape=(1,))],
        )
        if args.replay_models:
            import json

            # Every model's callable, pytriton's loops and its ZeroMQ traffic share this
            # process's GIL. With the default 5 ms switch interval a model thread waking from
            # its sleep can wait several intervals for the GIL under load, which shows up as
            # compute time. A shorter interval keeps the hand-overs short (see README).
            sys.setswitchinterval(args.replay_switch_interval_ms / 1000.0)

            with open(args.replay_models) as f:
                replay = json.load(f)
            models = []
            for m in replay:
                mb = int(m.get("max_batch", 1))
                inst = int(m.get("instances", 1))
                a_s, k_s = float(m["cost_a_ms"]) / 1000.0, float(m.get("cost_k_ms", 0.0)) / 1000.0
                triton.bind(
                    model_name=m["name"],
                    infer_func=[make_replay(a_s, k_s, m["name"]) for _ in range(inst)],
                    config=ModelConfig(max_batch_size=mb, batcher=DynamicBatcher(max_queue_delay_microseconds=0)),
                    **io,
                )
                models.append(m["name"])
        else:
            triton.bind(
                model_name="fast",
                infer_func=[make_fast() for _ in range(args.fast_instances)],
                config=ModelConfig(
                    max_batch_size=args.fast_max_batch,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=args.fast_queue_delay_us),
                ),
                **io,
            )
            triton.bind(
                model_name="slow",
                infer_func=[make_slow() for _ in range(args.slow_instances)],
                config=ModelConfig(max_batch_size=1, batcher=DynamicBatcher(max_queue_delay_microseconds=0)),
                **io,
            )
            models = ["fast", "slow"]
            if args.with_flaky:
                triton.bind(
                    model_name="flaky",
                    infer_func=flaky_infer,
                    config=ModelConfig(max_batch_size=1, batcher=DynamicBatcher(max_queue_delay_microseconds=0)),
                    **io,
                )
                models.append("flaky")
            if args.with_drain_models:
                long_s = args.long_ms / 1000.0

                def make_long():
                    @batch
                    def long_infer(x):
                        time.sleep(long_s)  # one request per execution (max batch 1)
                        return {"y": x}

                    return long_infer

                def stream_infer(requests):
                    # Decoupled: one response per token, the last one ends the stream.
                    for _ in range(args.stream_tokens):
                        time.sleep(args.stream_token_ms / 1000.0)
                        yield [{"y": np.asarray(r["x"], dtype=np.float32)} for r in requests]

                triton.bind(
                    model_name="long",
                    infer_func=[make_long() for _ in range(args.long_instances)],
                    config=ModelConfig(max_batch_size=1, batcher=DynamicBatcher(max_queue_delay_microseconds=0)),
                    **io,
                )
                triton.bind(
                    model_name="stream",
                    infer_func=stream_infer,
                    config=ModelConfig(max_batch_size=1, decoupled=True),
                    **io,
                )
                models += ["long", "stream"]

        t0 = time.monotonic()
        triton.run()  # starts tritonserver, loads the models (explicit mode), waits for them

        base = f"http://{args.address}:{args.http_port}"
        deadline = time.monotonic() + args.startup_timeout
        while True:
            ready = http_ok(f"{base}/v2/health/ready") and all(
                http_ok(f"{base}/v2/models/{m}/ready") for m in models
            )
            if ready:
                break
            if not triton.is_alive():
                raise RuntimeError("tritonserver exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError(f"models {models} not ready after {args.startup_timeout}s")
            time.sleep(0.1)

        tpid = find_tritonserver_pid(triton)
        _STARTED.set()
        if _STOP.is_set():
            raise _StopDuringStartup()
        log(f"ready after {time.monotonic() - t0:.1f}s; tritonserver pid={tpid}")
        proto(
            f"READY http={args.http_port} grpc={args.grpc_port} metrics={args.metrics_port} "
            f"triton_pid={tpid} pid={os.getpid()}"
        )

        while not _STOP.is_set():
            if not triton.is_alive():
                break
            _STOP.wait(0.2)

        if _STOP.is_set():
            reason = f"signal-{signal.Signals(_STOP_SIGNAL['sig']).name}"
            log(f"{reason}: stopping tritonserver (pytriton sends it SIGINT)")
            triton.stop()
            rc = 0
        else:
            reason = "tritonserver-exited"
            code = tritonserver_exit_code(triton, wait_s=5.0)
            log(f"tritonserver exited on its own, exit code {code}; cleaning up")
            triton.stop()  # idempotent: pytriton usually already stopped from its exit callback
            if code == 0:
                rc = 0
            elif isinstance(code, int) and code < 0:
                rc = 128 - code  # killed by signal -code, shell convention
            elif isinstance(code, int) and 0 < code < 256:
                rc = code
            else:
                rc = 1
    except _StopDuringStartup:
        reason = f"signal-during-startup-{signal.Signals(_STOP_SIGNAL['sig']).name}"
        log(reason)
        rc = 0
        if triton is not None:
            triton.stop()
    except BaseException as e:  # noqa: BLE001
        log(f"error: {e!r}")
        rc = 1
        if triton is not None:
            try:
                triton.stop()
            except BaseException as e2:  # noqa: BLE001
                log(f"error while stopping: {e2!r}")
    finally:
        code = tritonserver_exit_code(triton, wait_s=1.0) if triton is not None else None
        proto(f"EXITED triton_rc={code} reason={reason}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
