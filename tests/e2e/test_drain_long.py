"""Issue 19: the drain cuts no request, however long it executes or streams (real tritonserver 2.51).

Each case deletes a "pod" in the kubelet's order (preStop, SIGTERM to the agent at T0; SIGTERM to
tritonserver when the hook returns) twice: with the agent's `GET /wait-for-drain` hook and with
`sleep 30`. Triton's `--exit-timeout-secs` is shortened to EXIT_S so that "longer than Triton's exit
timeout" stays fast; the agent is told the same value (`--triton-exit-timeout`), as deploy/ does.
The statistics API is refused throughout (pytriton's default; no `--triton-api-header`).

Cases:
- mixed: the first execution after start (nothing learned yet) on `long`, LONG_S (> EXIT_S > quiet),
  over HTTP; a decoupled stream over gRPC and one over HTTP `generate_stream`; a millisecond model
  (`fast`) under load beside them; a keep-alive client that stays connected after the pod leaves
  rotation.
- medium: executions on `long` of MEDIUM_S (longer than --drain-quiet, shorter than the exit
  timeout), two at once (two instances: pending stays 0 while both execute).
- idle: no traffic at all.
- short: `fast` under load only.

Asserted for the agent: 0 requests cut, every stream received whole; idle and short hooks return
within --min-drain + 1.5 s; where long work ran, the hook returns within --drain-quiet + 1 s of the
last of it ending. `sleep 30` is run beside it and its figures printed (what it cuts is recorded,
not asserted: it is the baseline). Results go to target/e2e-results/drain_long.jsonl.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
import threading
import time
from typing import Dict, List, Optional

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import OK, LoadGenerator, http_get, log, start_triton  # noqa: E402
from scenarios import RESULTS_DIR, Router, start_agent  # noqa: E402

EXIT_S = 8  # Triton's --exit-timeout-secs here (deploy/: 30)
LONG_S = 12.0  # > EXIT_S > quiet
MEDIUM_S = 7.0  # > quiet (2 s), < EXIT_S, and ends after --min-drain (it starts 1 s before T0)
STREAM_TOKENS, STREAM_TOKEN_MS = 30, 300  # 9 s streams, a message every 0.3 s
MIN_DRAIN, QUIET = 5.0, 2.0
SLEEP_S = 30.0


def _post_long(port: int, out: Dict[str, object], key: str, started: threading.Event) -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        c.request("POST", "/v2/models/long/infer", body, {"Content-Type": "application/json"})
        started.set()
        r = c.getresponse()
        r.read()
        out[key] = ("ok" if r.status == 200 else f"http {r.status}", time.monotonic())
    except Exception as e:  # noqa: BLE001
        started.set()
        out[key] = (f"cut: {e!r}", time.monotonic())
    finally:
        c.close()


def _http_stream(port: int, out: Dict[str, object], started: threading.Event) -> None:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        c.request("POST", "/v2/models/stream/generate_stream", json.dumps({"x": [1.0]}),
                  {"Content-Type": "application/json"})
        started.set()
        r = c.getresponse()
        events = r.read().count(b"data: ")
        ok = r.status == 200 and events == STREAM_TOKENS
        out["http_stream"] = ("ok" if ok else f"cut: status {r.status}, {events}/{STREAM_TOKENS} events",
                              time.monotonic())
    except Exception as e:  # noqa: BLE001
        started.set()
        out["http_stream"] = (f"cut: {e!r}", time.monotonic())
    finally:
        c.close()


def _grpc_stream(port: int, out: Dict[str, object], started: threading.Event) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient

    got: List[object] = []
    done = threading.Event()

    def cb(result, error):
        got.append(error if error is not None else result)
        if error is not None or len([g for g in got if not isinstance(g, Exception)]) >= STREAM_TOKENS:
            done.set()

    try:
        cl = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        cl.start_stream(callback=cb)
        x = grpcclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
        cl.async_stream_infer("stream", [x])
        started.set()
        done.wait(120)
        errors = [g for g in got if isinstance(g, Exception)]
        n = len(got) - len(errors)
        out["grpc_stream"] = ("ok" if n == STREAM_TOKENS and not errors else f"cut: {n}/{STREAM_TOKENS}, {errors[:1]!r}",
                              time.monotonic())
        cl.stop_stream()
        cl.close()
    except Exception as e:  # noqa: BLE001
        started.set()
        out["grpc_stream"] = (f"cut: {e!r}", time.monotonic())


def run_case(case: str, strategy: str) -> Dict[str, object]:
    long_ms = {"mixed": LONG_S, "medium": MEDIUM_S}.get(case, LONG_S) * 1000
    extra = ["--with-drain-models", "--long-ms", str(long_ms), "--stream-tokens", str(STREAM_TOKENS),
             "--stream-token-ms", str(STREAM_TOKEN_MS), "--exit-timeout-secs", str(EXIT_S)]
    work: Dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        t = stack.enter_context(start_triton(extra_args=extra))
        agent = None
        if strategy == "agent":
            agent = stack.enter_context(start_agent(
                t, ["--min-drain", f"{int(MIN_DRAIN * 1000)}ms", "--drain-quiet", f"{int(QUIET * 1000)}ms",
                    "--triton-grpc-port", str(t.grpc_port), "--triton-exit-timeout", f"{EXIT_S}s",
                    "--drain-timeout", "90s"],
                models=["fast", "long", "stream"]))
            readyz = f"{agent.admin_url}/readyz"
        else:
            readyz = f"{t.http_url}/v2/health/ready"
        router = Router(readyz, 2.0).start()
        stack.callback(router.stop)
        gen = None
        if case in ("mixed", "short"):
            gen = LoadGenerator(t.infer_url, ["fast"], 4, gate=router.in_rotation, keep_alive=False, timeout_s=60).start()
            stack.callback(gen.stop, 5)
        keepalive = None
        if case == "mixed":
            keepalive = http.client.HTTPConnection("127.0.0.1", t.http_port, timeout=10)
            keepalive.request("GET", "/v2/health/ready")
            keepalive.getresponse().read()
            stack.callback(keepalive.close)
        threads = []
        starts = []

        def spawn(fn, *args):
            ev = threading.Event()
            th = threading.Thread(target=fn, args=(*args, ev), daemon=True)
            th.start()
            threads.append(th)
            starts.append(ev)

        if case == "mixed":
            spawn(_post_long, t.http_port, work, "long_http")
            spawn(_grpc_stream, t.grpc_port, work)
            spawn(_http_stream, t.http_port, work)
        elif case == "medium":
            spawn(_post_long, t.http_port, work, "long_a")
            spawn(_post_long, t.http_port, work, "long_b")
        for ev in starts:
            ev.wait(10)
        time.sleep(1.0 if case != "short" else 3.0)  # all of it executing (or the load warm) at T0

        hook: Dict[str, object] = {}
        hook_done = threading.Event()

        def prestop():
            try:
                if strategy == "sleep":
                    time.sleep(SLEEP_S)
                    hook["body"] = f"slept {SLEEP_S}s"
                else:
                    code, body = http_get(f"{agent.admin_url}/wait-for-drain", timeout=120)
                    hook["body"] = f"{code} {body.strip()}"
            finally:
                hook["at"] = time.monotonic()
                hook_done.set()

        t0 = time.monotonic()
        router.pod_deleted(t0)
        threading.Thread(target=prestop, daemon=True).start()
        status_during: Optional[dict] = None
        if agent is not None:
            agent.process.send_signal(15)
            if case in ("mixed", "medium"):
                time.sleep(MIN_DRAIN - 1.0)  # the long work still executes: what holds the drain?
                code, body = http_get(f"{agent.admin_url}/drain/status", timeout=2)
                status_during = json.loads(body) if code == 200 else {"code": code}
        hook_done.wait(150)
        t.sigterm_tritonserver()
        triton_exit = time.monotonic() - t0 if t.wait_triton_exit(60) else None
        if keepalive is not None:
            keepalive.close()
        if gen is not None:
            gen.request_stop()
            outs = gen.join(30)
        else:
            outs = []
        for th in threads:
            th.join(30)
        t.process.wait(15)
    rc_line = t.exited_line
    fast_failed = sum(1 for o in outs if o.status != OK)
    cut = [k for k, v in work.items() if not str(v[0]).startswith("ok")] + (["fast"] * fast_failed)
    work_end = max((v[1] for v in work.values()), default=None)
    res = {
        "case": case,
        "strategy": strategy,
        "hook_s": round(float(hook["at"]) - t0, 2),
        "hook": hook.get("body"),
        "triton_exit_s": None if triton_exit is None else round(triton_exit, 2),
        "work_end_s": None if work_end is None else round(work_end - t0, 2),
        "work": {k: v[0] for k, v in work.items()},
        "fast_ok": sum(1 for o in outs if o.status == OK),
        "fast_failed": fast_failed,
        "cut": cut,
        "status_during": status_during,
        "triton_rc": rc_line,
    }
    log(f"drain_long: {res}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / "drain_long.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")
    return res


@pytest.mark.parametrize("case", ["mixed", "medium", "idle", "short"])
def test_drain_cuts_nothing_and_is_not_slower(case):
    agent = run_case(case, "agent")
    baseline = run_case(case, "sleep")
    print(f"\n{case}: agent hook {agent['hook_s']} s, Triton exit {agent['triton_exit_s']} s, cut {agent['cut']}"
          f" | sleep 30: hook {baseline['hook_s']} s, Triton exit {baseline['triton_exit_s']} s, cut {baseline['cut']}")
    assert agent["cut"] == [], agent
    assert agent["triton_exit_s"] is not None, agent
    if case in ("idle", "short"):
        assert agent["hook_s"] <= MIN_DRAIN + 1.5, agent
    else:
        # Held past min-drain by what executes, and let go soon after it ends.
        assert agent["work_end_s"] is not None and agent["work_end_s"] > MIN_DRAIN, agent
        assert agent["hook_s"] >= agent["work_end_s"], agent
        assert agent["hook_s"] <= agent["work_end_s"] + QUIET + 1.0, agent
        st = agent["status_during"] or {}
        assert st.get("state") == "draining" and st.get("waiting_on"), st
