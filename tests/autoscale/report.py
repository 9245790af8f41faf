"""Plot and table for tests/autoscale results (the JSON that harness.run() writes).

    .venv/bin/python tests/autoscale/report.py target/autoscale/full/agent.json target/autoscale/full/raw.json \
        --png out.png --md out.md

The plot is rendered headless (matplotlib's Agg backend) and quantised to a small palette PNG.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import pathlib
import sys
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"agent": "agent gauges (deploy/ before issue 13)", "raw": "raw Triton PromQL",
          "busy": "agent gauges + busy-fraction trigger (experiment)"}
BIN_S = 5.0


def _bins(res: dict, bin_s: float = BIN_S):
    total = res["config"]["phase_starts"]["end"]
    n = int(math.ceil(total / bin_s))
    lat: List[List[float]] = [[] for _ in range(n)]
    done = [0] * n
    failed = [0] * n
    for sched, _sent, end, status, _pod, _err in res["requests"]:
        i = int(sched // bin_s)
        if not 0 <= i < n:
            continue
        if status == "ok":
            lat[i].append(end - sched)
            j = int(end // bin_s)
            if 0 <= j < n:
                done[j] += 1
        else:
            failed[i] += 1
    xs = [(i + 0.5) * bin_s for i in range(n)]

    def q(v, p):
        if not v:
            return float("nan")
        v = sorted(v)
        return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]
    return xs, [q(v, 0.5) for v in lat], [q(v, 0.99) for v in lat], [d / bin_s for d in done], failed


def _phases(ax, res, label=False):
    st = res["config"]["phase_starts"]
    names = [p["name"] for p in res["config"]["phases"]]
    ax.axvspan(st["spike"], st["ramp down"], color="#f4c7c3", alpha=0.5, lw=0)
    for nm in names[1:]:
        ax.axvline(st[nm], color="#999999", lw=0.6, ls=":")
    if label:
        for nm in names:
            ax.text(st[nm] + 2, 1.02, nm, transform=ax.get_xaxis_transform(), fontsize=7, color="#555555")


def plot(results: Sequence[dict], png: pathlib.Path, title: str = "", palette: int = 64) -> None:
    rows = 5
    fig, axes = plt.subplots(rows, len(results), figsize=(6.4 * len(results), 11.5), sharex="col", squeeze=False,
                             gridspec_kw={"height_ratios": [1.1, 0.9, 1.2, 1.1, 0.6]})
    for c, res in enumerate(results):
        cfg = res["config"]
        xs, p50, p99, thr, failed = _bins(res)
        smp = res["samples"]
        t = [s["t"] for s in smp]
        ax = axes[0][c]
        ax.set_title(f"{LABELS.get(cfg['signal'], cfg['signal'])}", fontsize=10, pad=14)
        ax.plot(t, [s["offered"] for s in smp], color="black", lw=1.2, label="offered load")
        ax.plot(xs, thr, color="#1f77b4", lw=1, label=f"served ({BIN_S:g} s bins)")
        ax.set_ylabel("requests/s")
        ax.legend(fontsize=7, loc="upper right")
        _phases(ax, res, label=True)

        ax = axes[1][c]
        dec = res["decisions"]
        ax.step([0] + [d["t"] for d in dec] + [t[-1] if t else 0],
                [dec[0]["current"] if dec else 1] + [d["desired"] for d in dec] + [dec[-1]["desired"] if dec else 1],
                where="post", color="#d62728", lw=1.4, label="desired (HPA)")
        ax.plot(t, [s["ready"] for s in smp], color="#2ca02c", lw=1.2, label="ready")
        ax.plot(t, [s["pods"] for s in smp], color="#7f7f7f", lw=0.8, ls="--", label="pods (incl. terminating)")
        ax.set_ylim(0, cfg["max_replicas"] + 0.8)
        ax.set_yticks(range(0, cfg["max_replicas"] + 1))
        ax.set_ylabel("replicas")
        ax.legend(fontsize=7, loc="upper right")
        _phases(ax, res)

        ax = axes[2][c]
        trig = {tr["name"]: tr for tr in cfg["triggers"]}
        colors = {"pending-requests": "#9467bd", "queue-wait": "#ff7f0e", "busy": "#2ca02c"}
        for name, tr in trig.items():
            xs_d, ys = [], []
            for d in dec:
                v = d["values"].get(name)
                if v is None:
                    continue
                if tr["metric_type"] == "AverageValue":
                    v = v / (tr["threshold"] * max(1, d["active"]))
                else:
                    v = v / tr["threshold"]
                xs_d.append(d["t"])
                ys.append(max(v, 0.01))
            unit = "sum / replicas / " if tr["metric_type"] == "AverageValue" else "/ "
            ax.plot(xs_d, ys, marker=".", ms=3, lw=1.1, color=colors.get(name),
                    label=f"{name} {unit}{tr['threshold']:g}")
        # the other signal's queue wait, evaluated at the same instants (not used for scaling)
        other = "agent" if cfg["signal"] == "raw" else "raw"
        xs_s, ys_s = [], []
        for d in dec:
            v = (d.get("shadow") or {}).get("queue-wait")
            if v is not None:
                xs_s.append(d["t"])
                ys_s.append(max(v / trig["queue-wait"]["threshold"], 0.01))
        if xs_s:
            ax.plot(xs_s, ys_s, lw=0.8, ls="--", color="#8c564b", label=f"({other} queue-wait, not used)")
        ax.axhline(1.0, color="black", lw=0.6)
        ax.axhspan(0.9, 1.1, color="#dddddd", lw=0)
        ax.set_yscale("log")
        ax.set_ylim(0.01, 100)
        ax.set_ylabel("trigger / target")
        ax.legend(fontsize=7, loc="upper right")
        _phases(ax, res)

        ax = axes[3][c]
        ax.plot(xs, p50, color="#17becf", lw=1.1, label="p50")
        ax.plot(xs, p99, color="#e377c2", lw=1.1, label="p99")
        ax.set_yscale("log")
        ax.set_ylim(0.03, 60)
        ax.set_ylabel("client latency (s)")
        ax.legend(fontsize=7, loc="upper right")
        _phases(ax, res)

        ax = axes[4][c]
        ax.bar(xs, failed, width=BIN_S * 0.9, color="#d62728")
        nfail = sum(failed)
        ax.text(0.01, 0.8, f"failed requests: {nfail} of {len(res['requests'])}", transform=ax.transAxes, fontsize=8)
        ax.set_ylim(0, max(1, max(failed or [0])) * 1.2)
        ax.set_ylabel("failed")
        ax.set_xlabel("seconds since the start of the profile")
        _phases(ax, res)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    buf.seek(0)
    from PIL import Image
    img = Image.open(buf).convert("RGB")
    if palette:
        # A palette image is a fraction of the size; octree keeps the thin coloured lines' hues.
        img = img.quantize(colors=palette, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    png.parent.mkdir(parents=True, exist_ok=True)
    img.save(png, optimize=True)


def replay(res: dict, max_replicas: Optional[int] = None) -> dict:
    """Counterfactual: the recorded trigger values fed through hpa.py with another maxReplicas
    (default: the manifest's), pods assumed ready by the next sync (they were ready in ~6 s).
    Valid only as far as the values would not have changed with more pods: true of the backlog
    that a rate()[2m] still holds, not of a live queue."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from hpa import Hpa, HpaSpec, Policy, Rules, Trigger

    c = res["config"]

    def rules(d):
        return Rules(d["stabilization_s"], [Policy(**p) for p in d["policies"]], d["select"])
    spec = HpaSpec(c["min_replicas"], max_replicas or c["max_replicas_manifest"], rules(c["behavior"]["scale_up"]),
                   rules(c["behavior"]["scale_down"]), [Trigger(**t) for t in c["triggers"]])
    h, cur, prev, rs, path = Hpa(spec), c["min_replicas"], 0.0, 0.0, []
    for d in res["decisions"]:
        rs += cur * (d["t"] - prev)
        prev = d["t"]
        dec = h.sync(d["t"], d["values"], cur, cur, cur)
        if dec.desired != cur:
            h.record_scale(d["t"], cur, dec.desired)
            path.append((round(d["t"]), cur, dec.desired))
            cur = dec.desired
    rs += cur * (c["phase_starts"]["end"] - prev)
    return {"max_replicas": spec.max_replicas, "path": path, "replica_seconds": round(rs), "final": cur}


def _f(v: Optional[float], fmt: str = "{:.1f} s") -> str:
    return "-" if v is None else fmt.format(v)


def table(results: Sequence[dict]) -> str:
    cols = [LABELS.get(r["config"]["signal"], r["config"]["signal"]) for r in results]
    S = [r["summary"] for r in results]
    rows = [
        ("reaction: spike start -> scale-up decision", [_f(s["reaction_s"]) for s in S]),
        ("decision -> new pod ready (first / all)",
         [f"{_f(s['decision_to_ready_s'])} / {_f(s['decision_to_all_ready_s'])}" for s in S]),
        ("replicas at spike start -> max", [f"{s['replicas_at_spike_start']} -> {s['max_desired']}" for s in S]),
        ("client latency during the spike: p50 / p99 / max",
         [f"{_f(s['spike_p50_s'], '{:.2f}')} / {_f(s['spike_p99_s'], '{:.2f}')} / {_f(s['spike_max_s'], '{:.2f}')} s"
          for s in S]),
        ("client latency, whole run: p50 / p99",
         [f"{_f(s['all_p50_s'], '{:.2f}')} / {_f(s['all_p99_s'], '{:.2f}')} s" for s in S]),
        ("failed requests (requirement: 0)", [f"**{s['failed']}** of {s['requests']}" for s in S]),
        ("replica-seconds (pod created -> last process exited)", [f"{s['replica_seconds']:.0f}" for s in S]),
        ("scale-ups / scale-downs", [f"{s['scale_ups']} / {s['scale_downs']}" for s in S]),
        ("load back to idle -> min replicas", [_f(s["back_to_min_after_idle_s"]) for s in S]),
        ("drains (preStop returned / Triton exited, s after deletion)",
         [", ".join(f"{t.get('prestop_s')}/{t.get('triton_exit_s')}" for t in s["terminations"]) or "-" for s in S]),
        ("failed Prometheus queries", [str(s["query_errors"]) for s in S]),
    ]
    if any(r["config"]["max_replicas_manifest"] > r["config"]["max_replicas"] for r in results):
        reps = [replay(r) for r in results]
        rows.append((f"replay at the manifest's maxReplicaCount {reps[0]['max_replicas']} (counterfactual, see text): "
                     "scale steps (t s: from -> to)",
                     [", ".join(f"{t}: {a} -> {b}" for t, a, b in x["path"]) for x in reps]))
        rows.append(("replay: replica-seconds (spec replicas over the profile) / replicas at the end",
                     [f"{x['replica_seconds']} / {x['final']}" for x in reps]))
    out = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    out += [f"| {name} | " + " | ".join(vals) + " |" for name, vals in rows]
    return "\n".join(out)


def setup_text(results: Sequence[dict]) -> str:
    c = results[0]["config"]
    lines = [
        f"- timing: **{c['timing']}** ({c['timing_note']})",
        f"- HPA sync every {c['sync_s']:g} s (first {c['sync_offset_s']:g} s after the start); tolerance 0.1; "
        f"min/max replicas {c['min_replicas']}/{c['max_replicas']} (manifest max {c['max_replicas_manifest']}, "
        f"capped for this machine)",
        f"- behavior: scaleUp window {c['behavior']['scale_up']['stabilization_s']:g} s, policies "
        + ", ".join(f"{p['type']} {p['value']}/{p['period_s']:g} s" for p in c["behavior"]["scale_up"]["policies"])
        + f" ({c['behavior']['scale_up']['select']}); scaleDown window {c['behavior']['scale_down']['stabilization_s']:g} s, "
        + ", ".join(f"{p['type']} {p['value']}/{p['period_s']:g} s" for p in c["behavior"]["scale_down"]["policies"])
        + f" ({c['behavior']['scale_down']['select']})",
        "- scrape: " + "; ".join(f"{j['port']} every {j['interval']} (manifest {j['manifest_interval']})"
                                 for j in c.get("scrape", [])),
        f"- pods: Triton (pytriton) model `{c['model']}` sleeping {c['slow_ms']:g} ms per request, one instance; "
        f"agent with the Deployment's env {c['pod']['agent_env']}; readiness probe every "
        f"{c['pod']['readiness_period_s']:g} s; router keeps a pod {c['propagation_s']:g} s after it fails or is deleted; "
        f"preStop {c['pod']['prestop_path']}, grace {c['pod']['grace_s']:g} s, Triton --exit-timeout-secs "
        f"{c['pod']['exit_timeout_s']}",
        "- load (open loop, Poisson, seed " + str(c["seed"]) + "): "
        + ", ".join(f"{p['name']} {p['duration_s']:g} s "
                    + (f"{p['rate_from']:g}/s" if p['rate_from'] == p['rate_to'] else f"{p['rate_from']:g}->{p['rate_to']:g}/s")
                    for p in c["phases"]),
        f"- {c.get('prometheus', '')}; machine: {c['machine']['nproc']} CPUs, load average before each run "
        + ", ".join(f"{r['config']['signal']} {r['config']['machine']['loadavg_before'][0]:.2f}" for r in results),
    ]
    for r in results:
        lines.append(f"- {LABELS.get(r['config']['signal'])} triggers: "
                     + "; ".join(f"`{t['name']}` {t['metric_type']} {t['threshold']:g}: `{t['query']}`"
                                 for t in r["config"]["triggers"]))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", type=pathlib.Path)
    ap.add_argument("--png", type=pathlib.Path)
    ap.add_argument("--md", type=pathlib.Path)
    a = ap.parse_args(argv)
    results = [json.loads(p.read_text()) for p in a.results]
    if a.png:
        plot(results, a.png)
    text = setup_text(results) + "\n\n" + table(results) + "\n"
    if a.md:
        a.md.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
