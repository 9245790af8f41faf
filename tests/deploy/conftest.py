"""pytest hooks for tests/deploy: print what test_promql_live.py measured."""
import json
import signal
import sys


def pytest_configure(config):
    # SIGTERM (e.g. from `timeout`) becomes KeyboardInterrupt, so the live test's fixture unwinds
    # and stops Triton, the agents and Prometheus (they run in their own process groups and would
    # otherwise outlive pytest).
    def _term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _term)


def pytest_terminal_summary(terminalreporter):
    mod = sys.modules.get("test_promql_live")
    report = getattr(mod, "REPORT", None)
    if not report:
        return
    tr = terminalreporter
    tr.section("PromQL on a live Prometheus: measured")
    if "prometheus" in report:
        tr.write_line(f"prometheus: {report['prometheus']}")
    for j in (report.get("scrape") or {}).get("jobs", []):
        tr.write_line(f"scrape {j['job']}: port {j['port']} ({j['container']}) every {j['interval']} "
                      f"(manifest {j['manifest_interval']}), {j['relabelings']} relabelings ({j.get('monitor', 'ServiceMonitor')})")
    for phase, vals in (report.get("keda") or {}).items():
        ok = (report.get("phase_ok") or {}).get(phase)
        tr.write_line(f"KEDA at {phase:5} (condition reached: {ok}): "
                      + ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in vals.items()))
    if report.get("control"):
        tr.write_line(f"control, series per unaggregated selector under load: {report['control']}")
    for k in ("startup_s", "first_above_s", "load_wait_s", "idle_wait_s", "drain_wait_s", "total_s"):
        if k in report:
            tr.write_line(f"{k}: {report[k]}")
    if "load_outcomes" in report:
        tr.write_line(f"load outcomes: {json.dumps(report['load_outcomes'])}")
    if "drain_status" in report:
        tr.write_line(f"drain of the second pod: {report['drain_status']}")
    if "label_vs_regex" in report:
        lv = report["label_vs_regex"]
        tr.write_line(f"idle, pending requests: pod=~\"triton-.+\" sums {[v for _, v in lv['regex']]}, the KEDA "
                      f"queries (app_kubernetes_io_instance) read {report.get('keda', {}).get('idle')}")
    if "stuck_exit" in report:
        ex = report["stuck_exit"]
        tr.write_line(f"stuck pod: exited {ex['after_sigterm_s']} s after SIGTERM (drain timeout 30 s); "
                      f"max drain-elapsed scraped: {[v for _, v in report.get('stuck_samples') or []]}")
    if "termination_wait_s" in report:
        tr.write_line(f"termination phase (SIGTERM to TritonDrainNearTimeout firing): {report['termination_wait_s']} s")
    for name, items in (report.get("alerts") or {}).items():
        tr.write_line(f"ALERTS {name}: " + (", ".join(
            f"{a.get('namespace')}/{a.get('pod') or a.get('scaledObject')} {a['alertstate']}" for a in items) or "none"))
    if "fresh" in report:
        f = report["fresh"]
        tr.write_line(f"fresh idle pods: every KEDA query one finite 0 after {f['first_zero_after_agents_s']} s "
                      f"(from the agents' start), held {f['held']}; values {f['values']}")
    # Issue 13: capacity and utilization as the agents published them.
    if "stats" in report:
        tr.write_line(f"statistics API: {json.dumps(report['stats'])}")
    for phase in ("capacity_load", "capacity_idle"):
        c = report.get(phase)
        if not c:
            continue
        fmt = lambda d: ", ".join(f"{'/'.join(str(x)[-5:] if i == 0 else str(x) for i, x in enumerate(k))}={v:.4g}"
                                  for k, v in sorted(d.items()))
        tr.write_line(f"{phase}: capacity_rps {fmt(c['triton_capacity_rps'])}")
        tr.write_line(f"{phase}: offered_load_rps {fmt(c['triton_offered_load_rps'])}; "
                      f"request_rate {fmt(c['triton_request_rate'])}")
        tr.write_line(f"{phase}: utilization {fmt(c['triton_utilization'])}; pod {fmt(c['triton_pod_utilization'])}")
        tr.write_line(f"{phase}: models_without_capacity {fmt(c['triton_sidecar_models_without_capacity'])}; "
                      f"statistics_refused {fmt(c['triton_sidecar_statistics_refused'])}; "
                      f"kv {fmt(c['triton_kv_cache_occupancy_ratio'])}; active {fmt(c['triton_trtllm_active_ratio'])}")
        if "client_rps" in c:
            tr.write_line(f"{phase}: completions counted by the clients over the agents' 10 s window: "
                          + ", ".join(f"{m}={v:.3g}/s" for m, v in c["client_rps"].items()))
    for name, items in (report.get("capacity_alerts") or {}).items():
        tr.write_line(f"ALERTS {name} (drain phase): " + (", ".join(
            f"{a.get('namespace')}/{a.get('pod')} {a['alertstate']}" for a in items) or "none"))
