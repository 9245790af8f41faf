"""Run the built image the ways a cluster runs it (tests/image/run.sh calls this).

    python3 check_image.py --image REF --oldglibc REF --nvml-lib PATH --work DIR

Every container runs with a read-only root filesystem, no capabilities and no-new-privileges
(what deploy/ asks of the pod), on host networking with every server on 127.0.0.1 and free
ports. Triton is tests/image/fake_triton.py serving the fixture page tests/fixtures/load-1.prom.

  install   `install /hook` copies the binary into a mounted directory (an emptyDir): same bytes,
            mode 0755; its highest GLIBC symbol version is at most 2.35 (objdump); it runs in an
            Ubuntu 22.04 rootfs (glibc 2.35), the base of the oldest Triton images, where the
            exec preStop hook runs it.
  uid 65532 the image's own user: /readyz 200, /metrics carries the fake's pending requests and
            the fake NVML library's GPU (dlopen of a glibc library from a read-only mount);
            /proc shows uid 65532 and empty capability sets; writing the root filesystem fails.
            SIGTERM while Triton is busy: readiness 503 at once, the agent stays past --min-drain
            while the page shows pending requests, exits 0 once Triton is idle, logging
            drain completed (signal, idle).
  uid 1000680000:0  an arbitrary uid with group 0, as OpenShift's restricted SCC assigns: the
            same serving checks; then the installed copy, run inside Ubuntu 22.04 as an exec preStop
            hook, drains the agent (`drain`, trigger cli); SIGTERM then stops it with exit 0.

Prints `ok` / `FAIL` lines, then `N passed, N failed`; exits 1 on any failure.
"""
import argparse
import hashlib
import json
import os
import re
import shlex
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
PODMAN_FLAGS = shlex.split(os.environ.get("PODMAN_FLAGS_STR", "--runtime runc --network host"))
# What deploy/ sets in the agent's securityContext.
HARDENED = ["--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges"]
MIN_DRAIN_S = 2.0
DRAIN_QUIET_S = 1.0
OPENSHIFT_UID = 1000680000

PASSED, FAILED = [], []


def check(name, cond, detail=""):
    if cond:
        PASSED.append(name)
        print(f"ok   {name}", flush=True)
    else:
        FAILED.append(name)
        print(f"FAIL {name}", flush=True)
        for line in str(detail).strip().splitlines()[-25:]:
            print(f"     | {line}", flush=True)
    return bool(cond)


def podman(*args, timeout=120):
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Never through a proxy: every request goes to 127.0.0.1.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url, timeout=2.0):
    try:
        with OPENER.open(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)


def wait_for(pred, timeout, interval=0.1):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= end:
            return v
        time.sleep(interval)


def sample(page, name):
    """Sum of a series' values on a Prometheus text page."""
    total, found = 0.0, False
    for line in page.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


class FakeTriton:
    def __init__(self, work, fixture):
        self.page = os.path.join(work, "page.prom")
        self.set_page(fixture)
        port_file = os.path.join(work, "fake.port")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "image", "fake_triton.py"), self.page, port_file])
        if not wait_for(lambda: os.path.exists(port_file), 10):
            raise RuntimeError("fake Triton did not start")
        with open(port_file) as f:
            self.port = int(f.read())

    def set_page(self, text):
        tmp = self.page + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.page)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class Agent:
    """One agent container, detached, with its own ports."""

    def __init__(self, image, name, triton_port, run_args=(), agent_args=()):
        self.name, self.metrics_port, self.admin_port = name, free_port(), free_port()
        argv = ["run", "-d", "--name", name, *PODMAN_FLAGS, *HARDENED, *run_args, image,
                "--triton-url", f"http://127.0.0.1:{triton_port}",
                "--triton-metrics-url", f"http://127.0.0.1:{triton_port}/metrics",
                "--metrics-addr", f"127.0.0.1:{self.metrics_port}",
                "--admin-addr", f"127.0.0.1:{self.admin_port}",
                "--poll-interval", "500ms", "--drain-poll-interval", "200ms",
                "--min-drain", f"{MIN_DRAIN_S}s", "--drain-quiet", f"{DRAIN_QUIET_S}s",
                "--drain-timeout", "60s", "--log-format", "json", *agent_args]
        r = podman(*argv)
        self.started = r.returncode == 0
        self.start_error = r.stderr

    def url(self, path, admin=True):
        return f"http://127.0.0.1:{self.admin_port if admin else self.metrics_port}{path}"

    def state(self):
        r = podman("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.State.Pid}}", self.name)
        parts = r.stdout.split()
        return (parts[0], int(parts[1]), int(parts[2])) if len(parts) == 3 else ("gone", -1, 0)

    def logs(self):
        r = podman("logs", self.name)
        return r.stdout + r.stderr

    def log_events(self):
        events = []
        for line in self.logs().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
        return events

    def proc_status(self):
        _, _, pid = self.state()
        try:
            with open(f"/proc/{pid}/status") as f:
                return dict(l.split(":\t", 1) for l in f.read().splitlines() if ":\t" in l)
        except OSError:
            return {}

    def remove(self, keep_log_in=None):
        if keep_log_in:
            with open(os.path.join(keep_log_in, f"{self.name}.log"), "w") as f:
                f.write(self.logs())
        podman("rm", "-f", "-t", "0", self.name)


def wait_exit(name, timeout):
    """(exit code, monotonic time of exit) via `podman wait`, or (None, None) on timeout."""
    out = {}

    def run():
        r = podman("wait", "--interval", "100ms", name, timeout=timeout + 5)
        out["rc"], out["t"] = r.stdout.strip(), time.monotonic()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout)
    if "t" not in out or not out["rc"].isdigit():
        return None, None
    return int(out["rc"]), out["t"]


def serving_checks(agent, label, expected_uid, expected_gid, pending_expected, gpu=None):
    ready = wait_for(lambda: http_get(agent.url("/readyz"))[0] == 200, 20)
    status, body = http_get(agent.url("/readyz"))
    check(f"{label}: /readyz answers 200 ready", ready and status == 200 and "ready" in body,
          f"{status} {body}\n{agent.logs()}")
    # The first scrape has happened once readiness is 200; one more poll for the averages.
    status, page = http_get(agent.url("/metrics", admin=False))
    pending = sample(page, "triton_pod_pending_requests") if status == 200 else None
    check(f"{label}: /metrics answers 200 with Triton's pending requests "
          f"(triton_pod_pending_requests {pending}, page sum {pending_expected:g})",
          status == 200 and pending == pending_expected and sample(page, "triton_ready") == 1,
          f"{status}\n{page[:2000]}")
    if gpu:
        # One series per GPU, {gpu_uuid, source}: count the GPUs whose values come from NVML.
        src = sum(float(l.rsplit(" ", 1)[1]) for l in page.splitlines()
                  if l.startswith("triton_sidecar_gpu_source{") and 'source="nvml"' in l) or None
        util = sample(page, "triton_gpu_utilization_ratio")
        check(f"{label}: the fake NVML library loads from a read-only mount "
              f"(gpu source nvml {src}, utilization {util})",
              src == 1 and util is not None and abs(util - gpu["utilization"] / 100) < 1e-9,
              page[:3000] + "\n" + agent.logs())
    st = agent.proc_status()
    uids = st.get("Uid", "").split()
    gids = st.get("Gid", "").split()
    caps = {k: st.get(k, "").strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    check(f"{label}: the process runs as uid {expected_uid} gid {expected_gid} (/proc: Uid {uids}, Gid {gids})",
          uids == [str(expected_uid)] * 4 and gids == [str(expected_gid)] * 4, st)
    check(f"{label}: no capabilities and no-new-privileges (/proc: {caps['CapEff']}, NoNewPrivs {st.get('NoNewPrivs')})",
          caps and all(v and int(v, 16) == 0 for v in caps.values()) and st.get("NoNewPrivs") == "1", st)
    # No shell in the image; the agent's own `install` is the write probe.
    r = podman("exec", agent.name, "/usr/local/bin/triton-sidecar", "install", "/usr/local/bin")
    check(f"{label}: the root filesystem is read-only (install into /usr/local/bin fails: "
          f"{r.stderr.strip()[:80]})", r.returncode != 0 and "Read-only file system" in r.stderr,
          r.stdout + r.stderr)


def max_glibc(path):
    r = subprocess.run(["objdump", "-T", path], capture_output=True, text=True)
    versions = {tuple(int(x) for x in m.split(".")) for m in re.findall(r"GLIBC_([0-9.]+)", r.stdout)}
    return max(versions) if versions else None, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    ap.add_argument("--oldglibc", required=True,
                    help="Ubuntu 22.04 rootfs image; empty: skip the runs in it (reported as SKIP)")
    ap.add_argument("--nvml-lib", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    work = tempfile.mkdtemp(prefix="check-", dir=a.work)
    tag = f"tsc-img-{os.getpid()}"
    t_start = time.monotonic()

    # -- the image's configuration
    r = podman("image", "inspect", a.image)
    cfg = json.loads(r.stdout)[0]["Config"] if r.returncode == 0 else {}
    check(f"image config: user {cfg.get('User')}, entrypoint {cfg.get('Entrypoint')}, "
          f"ports {sorted(cfg.get('ExposedPorts') or {})}",
          cfg.get("User") == "65532:65532"
          and cfg.get("Entrypoint") == ["/usr/local/bin/triton-sidecar"]
          and sorted(cfg.get("ExposedPorts") or {}) == ["8003/tcp", "8004/tcp"], r.stdout[:2000] + r.stderr)

    with open(os.path.join(FIXTURES, "load-1.prom")) as f:
        busy = f.read()
    pending_busy = sample(busy, "nv_inference_pending_request_count")
    # The same page with nothing pending: Triton idle, counters unchanged.
    idle = re.sub(r"^(nv_inference_pending_request_count\{[^}]*\}) .*$", r"\1 0", busy, flags=re.M)
    check(f"fixture: load-1.prom has pending requests ({pending_busy:g}); the idle copy has none",
          pending_busy and pending_busy > 0 and sample(idle, "nv_inference_pending_request_count") == 0)

    fake = FakeTriton(work, busy)
    agents = []
    hook = os.path.join(work, "hook")
    try:
        # -- install: into a mounted directory, then run the copy on Ubuntu 22.04's glibc
        os.mkdir(hook)
        os.chmod(hook, 0o777)  # an emptyDir is world-writable
        r = podman("run", "--rm", *PODMAN_FLAGS, *HARDENED, "-v", f"{hook}:/hook", a.image, "install", "/hook")
        copy = os.path.join(hook, "triton-sidecar")
        check(f"install: `install /hook` exits 0 ({r.stdout.strip()})",
              r.returncode == 0 and "installed /hook/triton-sidecar" in r.stdout and os.path.isfile(copy),
              r.stdout + r.stderr)
        ref = os.path.join(work, "image-binary")
        c = podman("create", *PODMAN_FLAGS, a.image)
        cid = c.stdout.strip()
        cp = podman("cp", f"{cid}:/usr/local/bin/triton-sidecar", ref)
        podman("rm", cid)
        same = (os.path.isfile(copy) and cp.returncode == 0
                and hashlib.sha256(open(copy, "rb").read()).digest() == hashlib.sha256(open(ref, "rb").read()).digest())
        mode = stat.S_IMODE(os.stat(copy).st_mode) if os.path.isfile(copy) else None
        check(f"install: the copy is the image's binary, mode {oct(mode) if mode else None}",
              same and mode == 0o755, cp.stderr)
        top, od = max_glibc(copy) if os.path.isfile(copy) else (None, None)
        check(f"install: highest GLIBC symbol version the binary needs is {'.'.join(map(str, top)) if top else None}"
              " (objdump -T; at most 2.35, Ubuntu 22.04)",
              top is not None and top <= (2, 35), od.stdout[-2000:] if od else "")
        if not a.oldglibc:
            print("SKIP install: the copy runs in Ubuntu 22.04 (no rootfs; the symbol check above stands)")
        r = podman("run", "--rm", *PODMAN_FLAGS, "-v", f"{hook}:/hook:ro", a.oldglibc or a.image, "sh", "-c",
                   "ldd --version | head -n1; /hook/triton-sidecar --version") if a.oldglibc else None
        m = re.search(r"(\d+)\.(\d+)\s*$", r.stdout.splitlines()[0]) if r and r.stdout.strip() else None
        old = (int(m.group(1)), int(m.group(2))) if m else None
        if r is not None:
            check(f"install: the copy runs in Ubuntu 22.04, glibc {'.'.join(map(str, old)) if old else None} "
                  f"({r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip()[:100]})",
                  r.returncode == 0 and old is not None and old <= (2, 35)
                  and re.search(r"^triton-sidecar \d", r.stdout, re.M), r.stdout + r.stderr)

        # -- uid 65532 (the image's USER), fake NVML, SIGTERM drain while Triton is busy
        nvml_dir = os.path.join(work, "nvml")
        os.mkdir(nvml_dir)
        with open(a.nvml_lib, "rb") as src, open(os.path.join(nvml_dir, "libnvidia_ml.so"), "wb") as dst:
            dst.write(src.read())
        gpu = {"uuid": "GPU-IMAGE-TEST-0", "name": "NVIDIA H100 80GB HBM3", "utilization": 37,
               "memory_used": 1073741824, "memory_total": 85899345920, "power_mw": 250000,
               "temperature": 45}
        with open(os.path.join(nvml_dir, "fake-nvml.json"), "w") as f:
            json.dump({"driver_version": "550.54.15", "devices": [gpu]}, f)
        os.chmod(nvml_dir, 0o755)
        a1 = Agent(a.image, f"{tag}-65532", fake.port, ["-v", f"{nvml_dir}:/nvml:ro"],
                   ["--nvml-lib", "/nvml/libnvidia_ml.so", "--gpu", "all"])
        agents.append(a1)
        if check("uid 65532: the container starts", a1.started, a1.start_error):
            serving_checks(a1, "uid 65532", 65532, 65532, pending_busy, gpu)
            t0 = time.monotonic()
            podman("kill", "--signal", "TERM", a1.name)
            flipped = wait_for(lambda: http_get(a1.url("/readyz"))[0] == 503, 1.5, 0.05)
            status, body = http_get(a1.url("/readyz"))
            check(f"SIGTERM: /readyz answers 503 within 1.5 s ({status} {body.strip()[:40]}, "
                  f"{time.monotonic() - t0:.2f} s)", flipped and "draining" in body, f"{status} {body}")
            # Triton still has pending requests: the drain must hold the agent past --min-drain.
            time.sleep(max(0.0, t0 + MIN_DRAIN_S + 1.5 - time.monotonic()))
            st, _, _ = a1.state()
            status, _ = http_get(a1.url("/readyz"))
            check(f"SIGTERM: while Triton has pending requests the agent is still draining at "
                  f"{time.monotonic() - t0:.1f} s (> --min-drain {MIN_DRAIN_S:g} s): {st}, readyz {status}",
                  st == "running" and status == 503, a1.logs())
            t_idle = time.monotonic()
            fake.set_page(idle)
            rc, t_exit = wait_exit(a1.name, 15)
            after = (t_exit - t_idle) if t_exit else None
            total = (t_exit - t0) if t_exit else None
            check(f"SIGTERM: exits {rc} once Triton is idle, {after if after is None else round(after, 1)} s "
                  f"after (--drain-quiet {DRAIN_QUIET_S:g} s), {total if total is None else round(total, 1)} s after SIGTERM",
                  rc == 0 and after is not None and after < DRAIN_QUIET_S + 4, a1.logs())
            done = [e for e in a1.log_events() if e.get("fields", {}).get("message") == "drain completed"]
            f = done[-1]["fields"] if done else {}
            check(f"SIGTERM: logs `drain completed` trigger={f.get('trigger')} result={f.get('result')} "
                  f"seconds={f.get('seconds')}",
                  f.get("trigger") == "signal" and f.get("result") == "idle"
                  and total is not None and (t_idle - t0) - 0.5 <= float(f.get("seconds", 0)) <= total + 0.5,
                  a1.logs())
            stopped = any(e.get("fields", {}).get("message") == "triton-sidecar stopped" for e in a1.log_events())
            check("SIGTERM: logs `triton-sidecar stopped`", stopped, a1.logs())

        # -- an arbitrary uid in group 0 (OpenShift), then the installed copy as exec preStop hook
        fake.set_page(busy)
        a2 = Agent(a.image, f"{tag}-openshift", fake.port, ["--user", f"{OPENSHIFT_UID}:0"])
        agents.append(a2)
        if check(f"uid {OPENSHIFT_UID}: the container starts", a2.started, a2.start_error):
            serving_checks(a2, f"uid {OPENSHIFT_UID}", OPENSHIFT_UID, 0, pending_busy)
            fake.set_page(idle)
            t0 = time.monotonic()
            # Without the Ubuntu rootfs the copy runs in the image itself (distroless: no shell).
            base = [a.oldglibc, "/hook/triton-sidecar"] if a.oldglibc else \
                ["--entrypoint", "/hook/triton-sidecar", a.image]
            r = podman("run", "--rm", *PODMAN_FLAGS, "-v", f"{hook}:/hook:ro", *base,
                       "drain", "--admin-url", a2.url(""), "--timeout", "30s", timeout=60)
            took = time.monotonic() - t0
            where = "Ubuntu 22.04" if a.oldglibc else "the image (no Ubuntu rootfs)"
            check(f"exec hook: the installed copy in {where} drains the agent, exit {r.returncode} after "
                  f"{took:.1f} s ({r.stdout.strip()[:90]})",
                  r.returncode == 0 and "result=idle" in r.stdout and "trigger=cli" in r.stdout
                  and took >= MIN_DRAIN_S - 0.2, r.stdout + r.stderr + a2.logs())
            status, body = http_get(a2.url("/readyz"))
            check(f"exec hook: the agent stays up, not ready, until its SIGTERM ({status} {body.strip()[:30]})",
                  status == 503 and a2.state()[0] == "running", body)
            t0 = time.monotonic()
            podman("kill", "--signal", "TERM", a2.name)
            rc, t_exit = wait_exit(a2.name, 10)
            check(f"SIGTERM after the hook's drain: exits {rc} in "
                  f"{(t_exit - t0) if t_exit else float('nan'):.1f} s (the drain is already done)",
                  rc == 0 and t_exit is not None and t_exit - t0 < 2.5, a2.logs())
    finally:
        for ag in agents:
            ag.remove(keep_log_in=a.work)
        fake.stop()
        subprocess.run(["rm", "-rf", work])

    print(f"image run checks took {time.monotonic() - t_start:.0f} s")
    print(f"{len(PASSED)} passed, {len(FAILED)} failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
