#!/usr/bin/env python3
"""`make demo`: a real Triton, the agent and a load; live gauges; then a graceful scale-down.

    make demo
    # or, with the venv and a release build already there:
    TRITON_SIDECAR_BIN=target/release/triton-sidecar .venv/bin/python tests/e2e/demo.py [--seconds 20]

1. Starts a real Triton (models `fast`: batched, 20 ms per batch; `slow`: 350 ms per
   request), the agent next to it (poll 0.5 s, window 5 s), and a router with clients
   (a light load first, a heavier one from the middle of the live phase on).
2. For `--seconds` (20), prints the agent's per-model gauges once a second, read from
   its /metrics: a table redrawn in place on a terminal, plain lines otherwise.
3. Deletes the "pod" as the kubelet does with a regular sidecar: at T0 the preStop hook
   (GET /wait-for-drain on the agent's admin port) and SIGTERM to the agent at once;
   the router sees /readyz turn 503 and keeps routing for `--propagation` seconds
   (endpoint propagation) before it stops; when the preStop returns, SIGTERM to
   tritonserver.
4. Prints the drain summary: reason, seconds, failed requests.

Every process it starts (Triton, its backend stubs, the agent) is stopped at the end,
also on an error or Ctrl-C. Logs: target/e2e-logs/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import OK, LoadGenerator, Scrape, fetch_metrics, http_get, pid_alive  # noqa: E402
from scenarios import MODELS, Router, start_agent, start_triton  # noqa: E402

TTY = sys.stdout.isatty()
CLEAR = "\x1b[H\x1b[2J"

# (column title, agent series, format)
COLUMNS = [
    ("pending", "triton_pending_requests", "{:7.0f}"),
    ("queue wait ms", "triton_queue_wait_ms", "{:13.1f}"),
    ("req/s", "triton_request_rate", "{:7.1f}"),
    ("failed/s", "triton_failure_rate", "{:8.2f}"),
    ("compute ms", "triton_compute_ms", "{:10.1f}"),
]
POD_SERIES = {
    "triton_pending_requests": "triton_pod_pending_requests",
    "triton_queue_wait_ms": "triton_pod_queue_wait_ms",
    "triton_request_rate": "triton_pod_request_rate",
}


def say(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- Ctrl-C


class Interrupted(Exception):
    pass


_signalled = threading.Event()


def _on_signal(signum, _frame):
    # The first Ctrl-C / SIGTERM unwinds into the cleanup; later ones must not cut it short.
    if _signalled.is_set():
        sys.stderr.write("demo: stopping every process, please wait...\n")
        return
    _signalled.set()
    raise Interrupted(signal.Signals(signum).name)


# --------------------------------------------------------------------------- table


def _fmt(v: Optional[float], spec: str) -> str:
    width = int(re.search(r"(\d+)", spec).group(1))
    if v is None:
        return "-".rjust(width)
    return spec.format(v)


def render(s: Optional[Scrape], elapsed: float, phase: str, load: str, extra: str = "") -> List[str]:
    """The table as lines: one row per model, then the pod."""
    lines = [f"t={elapsed:4.0f}s  {phase}  |  {load}"]
    if s is None:
        lines.append("  (agent /metrics not answering)" + (f"  {extra}" if extra else ""))
        return lines
    lines.append(f"{'model':<6} " + " ".join(title.rjust(len(_fmt(0.0, spec))) for title, _, spec in COLUMNS))
    for m in MODELS:
        lines.append(f"{m:<6} " + " ".join(_fmt(s.get(series, model=m), spec) for _, series, spec in COLUMNS))
    pod = [_fmt(s.get(POD_SERIES[series]) if series in POD_SERIES else None, spec) for _, series, spec in COLUMNS]
    lines.append(f"{'pod':<6} " + " ".join(pod))

    def flag(name: str) -> str:
        v = s.get(name)
        return "-" if v is None else f"{v:.0f}"

    lines.append(f"triton_ready={flag('triton_ready')}  triton_draining={flag('triton_draining')}"
                 + (f"  {extra}" if extra else ""))
    return lines


class Screen:
    """Redraws in place on a terminal; on a pipe, prints each refresh as plain lines."""

    def __init__(self, title: str):
        self.title = title
        self.n = 0

    def show(self, lines: List[str]) -> None:
        if TTY:
            sys.stdout.write(CLEAR + self.title + "\n\n" + "\n".join(lines) + "\n")
            sys.stdout.flush()
        else:
            if self.n == 0:
                say(self.title)
            say("")
            for l in lines:
                say(l)
        self.n += 1


def scrape(url: str) -> Optional[Scrape]:
    try:
        return fetch_metrics(url, timeout=0.8)
    except Exception:
        return None


def drain_status(admin_url: str) -> Optional[dict]:
    code, body = http_get(f"{admin_url}/drain/status", timeout=0.8)
    if code != 200:
        return None
    with contextlib.suppress(ValueError):
        return json.loads(body)
    return None


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="live phase before the pod is deleted")
    ap.add_argument("--light", type=int, default=8, help="clients in the first half (1 in 4 on `slow`)")
    ap.add_argument("--heavy", type=int, default=24, help="clients from the middle of the live phase on")
    ap.add_argument("--propagation", type=float, default=2.0, help="routing goes on this long after /readyz turns 503")
    ap.add_argument("--min-drain", type=float, default=5.0)
    args = ap.parse_args()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    started: Dict[str, int] = {}
    rc = 0
    try:
        with contextlib.ExitStack() as stack:
            say("starting Triton (models fast, slow) ...")
            t = stack.enter_context(start_triton())
            started.update(serve_triton=t.process.pid, tritonserver=t.triton_pid)
            say(f"  Triton ready in {t.startup_s:.1f} s: {t.http_url}, metrics {t.metrics_url}")
            say("starting the agent ...")
            agent = stack.enter_context(start_agent(
                t, ["--poll-interval", "500ms", "--window", "5s", "--min-drain", f"{int(args.min_drain * 1000)}ms"]))
            started["agent"] = agent.process.pid
            say(f"  agent ready: gauges {agent.metrics_url}, admin {agent.admin_url}")

            router = Router(f"{agent.admin_url}/readyz", args.propagation).start()
            stack.callback(router.stop)
            gens: List[LoadGenerator] = []

            def stop_load():
                for g in gens:
                    g.request_stop()
                for g in gens:
                    g.join(5)
            stack.callback(stop_load)

            def add_load(n: int) -> None:
                # a new connection per request, as short-lived clients behind a Service
                gens.append(LoadGenerator(t.infer_url, ["slow", "fast", "fast", "fast"], n, gate=router.in_rotation,
                                          keep_alive=False, timeout_s=120).start())

            def load_desc() -> str:
                n = sum(g.concurrency for g in gens)
                slow = sum(len(range(0, g.concurrency, 4)) for g in gens)
                routing = "routing" if router.in_rotation() else "out of rotation"
                ok = sum(1 for g in gens for o in g.outcomes() if o.status == OK)
                bad = sum(1 for g in gens for o in g.outcomes() if o.status != OK)
                return f"{n} clients ({slow} slow, {n - slow} fast), {routing}, {ok} ok / {bad} failed"

            add_load(args.light)
            screen = Screen(f"triton-sidecar demo: the agent's gauges ({agent.metrics_url}), once a second")
            t_start = time.monotonic()
            heavy_at = args.seconds / 2
            next_tick = t_start
            while True:
                now = time.monotonic()
                if now - t_start >= args.seconds:
                    break
                if len(gens) == 1 and now - t_start >= heavy_at and args.heavy > args.light:
                    add_load(args.heavy - args.light)
                screen.show(render(scrape(agent.metrics_url), now - t_start, "serving", load_desc()))
                next_tick += 1.0
                time.sleep(max(0.0, next_tick - time.monotonic()))

            # ---- T0: the pod is deleted (regular sidecar: preStop and SIGTERM to the agent at once)
            say("")
            say(f"deleting the pod: preStop GET {agent.admin_url}/wait-for-drain + SIGTERM to the agent "
                f"(regular sidecar); the router keeps routing {args.propagation:g} s after /readyz turns 503")
            prestop: Dict[str, object] = {}
            done = threading.Event()

            def run_prestop():
                import requests

                s = requests.Session()
                s.trust_env = False
                try:
                    r = s.get(f"{agent.admin_url}/wait-for-drain", timeout=150)
                    prestop["body"] = f"{r.status_code} {r.text.strip()}"
                except Exception as e:  # noqa: BLE001
                    prestop["body"] = f"error: {e!r}"
                finally:
                    prestop["at"] = time.monotonic()
                    s.close()
                    done.set()

            t0 = time.monotonic()
            router.pod_deleted(t0)
            threading.Thread(target=run_prestop, daemon=True, name="prestop").start()
            agent.process.send_signal(signal.SIGTERM)
            last: Dict[str, object] = {}
            next_tick = t0
            while not done.is_set():
                st = drain_status(agent.admin_url)
                if st:
                    last = st
                extra = ""
                if st:
                    extra = (f"drain: {st.get('state')} {st.get('elapsed_ms', 0) / 1000:.1f} s, "
                             f"pending {st.get('pending')}, quiet {st.get('quiet_ms', 0) / 1000:.1f} s")
                screen.show(render(scrape(agent.metrics_url), time.monotonic() - t_start, "draining", load_desc(), extra))
                next_tick += 1.0
                done.wait(max(0.0, next_tick - time.monotonic()))
            t_prestop = float(prestop["at"]) - t0
            say("")
            say(f"preStop returned after {t_prestop:.1f} s: {prestop.get('body')}")
            say("SIGTERM to tritonserver ...")
            t.sigterm_tritonserver()
            t_triton = (time.monotonic() - t0) if t.wait_triton_exit(60) else None
            t_agent = None
            if agent.process.wait(30) is not None:
                t_agent = (agent.process.exited_at or time.monotonic()) - t0
            for g in gens:
                g.request_stop()
            outs = [o for g in gens for o in g.join(30)]
            t.process.wait(15)

        # ExitStack closed: every process has been stopped (SIGKILL to any group left over).
        body = str(prestop.get("body", ""))
        m = dict(re.findall(r"(\w+)=([^\s]+)", body))
        failed = [o for o in outs if o.status != OK]
        kinds: Dict[str, int] = {}
        for o in failed:
            k = f"{o.status} {o.code or ''} {(o.error or '').split(':')[0][:40]}".strip()
            kinds[k] = kinds.get(k, 0) + 1
        during = [o for o in outs if o.end >= t0]
        say("")
        say("drain summary")
        say(f"  reason:           {m.get('result', '?')} (trigger {m.get('trigger', '?')})"
            + ("" if body.startswith("200") else f"   [preStop answered: {body}]"))
        out_s = "?" if router.out_at is None else f"{router.out_at - t0:.1f}"
        say(f"  drain seconds:    {m.get('seconds', '?')}  (min-drain {args.min_drain:g} s; the router stopped "
            f"routing {out_s} s after the deletion; {m.get('requests_during_drain', '?')} requests completed "
            f"during the drain)")
        say(f"  failed requests:  {len(failed)}" + (f"  {kinds}" if kinds else "")
            + f"   (ok: {len(outs) - len(failed)} in all, {sum(1 for o in during if o.status == OK)} "
              f"answered after the deletion)")
        exited_line = t.exited_line  # set by start_triton() once it has stopped serve_triton.py
        trc = (exited_line or "").split("triton_rc=")[-1].split()[0] if exited_line else "?"
        say(f"  pod exit:         tritonserver {t_triton:.1f} s after the deletion (exit code {trc}), "
            f"agent {t_agent:.1f} s" if t_triton is not None and t_agent is not None
            else f"  pod exit:         tritonserver {t_triton}, agent {t_agent} (did not exit in time)")
        rc = 0 if not failed and body.startswith("200") else 1
    except Interrupted as e:
        say("")
        say(f"interrupted ({e}): stopped every process")
        rc = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        left = {name: pid for name, pid in started.items() if pid_alive(pid)}
        if left:
            for pid in left.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            say(f"warning: had to SIGKILL {left}")
        elif started:
            say(f"all processes stopped ({', '.join(f'{k} {v}' for k, v in started.items())})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
