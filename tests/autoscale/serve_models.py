#!/usr/bin/env python3
"""The models of issue 13's proof: a real Triton (pytriton's tritonserver) serving models that
*sleep* ``a + k * batch`` per execution, so that on this 2-core machine a replica adds capacity
(a sleeping model instance holds no CPU), like a GPU would.

Models (input ``x`` FP32 [1], output ``y`` = x, batch dim first):

* ``unbatched`` - max_batch_size 1, one instance, sleeps UNBATCHED_A + UNBATCHED_K per request
  (50 ms: about 20 requests/s per pod).
* ``batched``   - max_batch_size 8, two instances (two *distinct* callables: pytriton refuses the
  same function object twice), dynamic batching (no queue delay), sleeps
  BATCHED_A + BATCHED_K * batch per execution (160 + 30 b ms: 2 x 8 / 0.4 s = 40 requests/s per
  pod at full batches; at batch 1 the same two instances serve only 2 / 0.19 s = 10.5/s).

``--models unbatched,batched`` chooses which are served (default both).

Statistics access: pytriton restricts Triton's statistics API by default
(``TritonSecurityConfig``: ``--http-restricted-api=...statistics...:triton-access-token=<token>``
with a random token). ``--access-token T`` keeps the restriction with a known token, which the
agent then sends with ``--triton-api-header triton-access-token=T``; ``--open-statistics``
removes it from the restricted list instead; neither: pytriton's default (refused to all).

``--startup-delay S`` sleeps S seconds before tritonserver starts (a GPU pod's cold start: image
pull and model load; the pod is not ready meanwhile).

Protocol and process tree: as tests/e2e/serve_triton.py (READY / EXITED lines on stdout; this
module reuses its signal handling and helpers), so tests/e2e/common.start_triton(script=...)
starts it.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import signal
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "e2e"))
import serve_triton as st  # noqa: E402  (redirects stdout to stderr, keeps the protocol fd)

UNBATCHED_A_MS, UNBATCHED_K_MS = 40.0, 10.0
BATCHED_A_MS, BATCHED_K_MS, BATCHED_MAX, BATCHED_INSTANCES = 160.0, 30.0, 8, 2
ACCESS_HEADER = "triton-access-token"


def nominal_capacity(model: str) -> float:
    """Requests per second per pod from the sleep parameters alone (no overhead)."""
    if model == "unbatched":
        return 1000.0 / (UNBATCHED_A_MS + UNBATCHED_K_MS)
    if model == "batched":
        return BATCHED_INSTANCES * BATCHED_MAX * 1000.0 / (BATCHED_A_MS + BATCHED_K_MS * BATCHED_MAX)
    raise KeyError(model)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--models", default="unbatched,batched")
    p.add_argument("--access-token", default=None)
    p.add_argument("--open-statistics", action="store_true")
    p.add_argument("--startup-delay", type=float, default=0.0)
    p.add_argument("--exit-timeout-secs", type=int, default=30)
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--workspace", default=None)
    p.add_argument("--switch-interval-ms", type=float, default=0.5)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, st._on_signal)
    signal.signal(signal.SIGINT, st._on_signal)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Every callable and pytriton's proxy share this process's GIL: short hand-overs keep the
    # wake-up from a sleep from showing up as compute time (tests/e2e/README.md).
    sys.setswitchinterval(args.switch_interval_ms / 1000.0)

    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig, DEFAULT_PROTECTED_ENDPOINTS

    def make(a_ms: float, k_ms: float):
        a_s, k_s = a_ms / 1000.0, k_ms / 1000.0

        @batch
        def infer(x):
            time.sleep(a_s + k_s * x.shape[0])
            return {"y": x}

        return infer

    if args.open_statistics:
        security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    elif args.access_token:
        security = TritonSecurityConfig(access_token=args.access_token)
    else:
        security = None  # pytriton's default: restricted, random token
    config = TritonConfig(
        http_address=args.address, http_port=args.http_port, grpc_address=args.address, grpc_port=args.grpc_port,
        metrics_address=args.address, metrics_port=args.metrics_port, allow_gpu_metrics=False,
        exit_timeout_secs=args.exit_timeout_secs)
    models = [m for m in args.models.split(",") if m]
    triton = None
    reason, rc = "error", 1
    try:
        if args.startup_delay > 0:
            st.log(f"cold start: sleeping {args.startup_delay:g} s before tritonserver starts")
            if st._STOP.wait(args.startup_delay):
                raise st._StopDuringStartup()
        triton = Triton(config=config, workspace=args.workspace, security_config=security)
        io = dict(inputs=[Tensor(name="x", dtype=np.float32, shape=(1,))],
                  outputs=[Tensor(name="y", dtype=np.float32, shape=(1,))])
        for m in models:
            if m == "unbatched":
                triton.bind(model_name=m, infer_func=[make(UNBATCHED_A_MS, UNBATCHED_K_MS)],
                            config=ModelConfig(max_batch_size=1, batcher=DynamicBatcher(max_queue_delay_microseconds=0)),
                            **io)
            elif m == "batched":
                triton.bind(model_name=m,
                            infer_func=[make(BATCHED_A_MS, BATCHED_K_MS) for _ in range(BATCHED_INSTANCES)],
                            config=ModelConfig(max_batch_size=BATCHED_MAX,
                                               batcher=DynamicBatcher(max_queue_delay_microseconds=0)),
                            **io)
            else:
                raise ValueError(f"unknown model {m!r}")
        t0 = time.monotonic()
        triton.run()
        base = f"http://{args.address}:{args.http_port}"
        deadline = time.monotonic() + args.startup_timeout
        while not (st.http_ok(f"{base}/v2/health/ready") and all(st.http_ok(f"{base}/v2/models/{m}/ready") for m in models)):
            if not triton.is_alive():
                raise RuntimeError("tritonserver exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError(f"models {models} not ready after {args.startup_timeout}s")
            time.sleep(0.1)
        tpid = st.find_tritonserver_pid(triton)
        st._STARTED.set()
        if st._STOP.is_set():
            raise st._StopDuringStartup()
        st.log(f"ready after {time.monotonic() - t0:.1f}s; tritonserver pid={tpid}; models {models}")
        st.proto(f"READY http={args.http_port} grpc={args.grpc_port} metrics={args.metrics_port} "
                 f"triton_pid={tpid} pid={os.getpid()}")
        while not st._STOP.is_set():
            if not triton.is_alive():
                break
            st._STOP.wait(0.2)
        if st._STOP.is_set():
            reason = f"signal-{signal.Signals(st._STOP_SIGNAL['sig']).name}"
            triton.stop()
            rc = 0
        else:
            reason = "tritonserver-exited"
            code = st.tritonserver_exit_code(triton, wait_s=5.0)
            triton.stop()
            rc = 0 if code == 0 else (128 - code if isinstance(code, int) and code < 0 else 1)
    except st._StopDuringStartup:
        reason = "signal-during-startup"
        rc = 0
        if triton is not None:
            triton.stop()
    except BaseException as e:  # noqa: BLE001
        st.log(f"error: {e!r}")
        if triton is not None:
            try:
                triton.stop()
            except BaseException as e2:  # noqa: BLE001
                st.log(f"error while stopping: {e2!r}")
    finally:
        code = st.tritonserver_exit_code(triton, wait_s=1.0) if triton is not None else None
        st.proto(f"EXITED triton_rc={code} reason={reason}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
