"""Plots and tables of issue 13's comparison (compare.py): one column per trigger set.

plot_scenario: every panel of one scenario (load, replicas against the ideal, each trigger
against its target, client p50/p99, failed requests); plot_grid: replicas of every run, one row
per scenario; markdown: the setup and one table per scenario.
"""

from __future__ import annotations

import io
import math
import pathlib
from typing import Dict, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness import TRIGGER_SET_LABELS, Phase, ideal_replicas, rate_at  # noqa: E402
from report import _bins  # noqa: E402


def _phases(ax, res, label=False):
    """Phase boundaries, and the peak phases shaded (report._phases wants a phase named spike)."""
    st = res["config"]["phase_starts"]
    phases = res["config"]["phases"]
    top = max(p["rate_to"] for p in phases)
    for p in phases:
        if p["rate_from"] == p["rate_to"] == top:
            ax.axvspan(st[p["name"]], st[p["name"]] + p["duration_s"], color="#f4c7c3", alpha=0.5, lw=0)
    for p in phases[1:]:
        ax.axvline(st[p["name"]], color="#999999", lw=0.6, ls=":")
    if label:
        for p in phases:
            ax.text(st[p["name"]] + 2, 1.02, p["name"], transform=ax.get_xaxis_transform(), fontsize=7, color="#555555")

SCENARIO_TITLES = {
    "spike": "(a) spike longer than the scale-down window",
    "ramp": "(b) slow ramp",
    "batched": "(c) batched model (max batch 8, 2 instances)",
    "coldstart": "(d) 60 s cold start",
    "test": "make test's shortened loop",
}


def _save(fig, png: pathlib.Path, palette: int = 64) -> None:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    buf.seek(0)
    from PIL import Image
    img = Image.open(buf).convert("RGB")
    img = img.quantize(colors=palette, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    png.parent.mkdir(parents=True, exist_ok=True)
    img.save(png, optimize=True)


def _ideal_series(res: dict):
    cfg = res["config"]
    phases = [Phase(**p) for p in cfg["phases"]]
    ts = [i * 1.0 for i in range(int(cfg["phase_starts"]["end"]) + 1)]
    return ts, [ideal_replicas(cfg, rate_at(phases, t)) for t in ts]


def _replicas(ax, res: dict, legend: bool = True) -> None:
    cfg = res["config"]
    dec = res["decisions"]
    smp = res["samples"]
    t = [s["t"] for s in smp]
    ts, ideal = _ideal_series(res)
    ax.step(ts, ideal, where="post", color="black", lw=1.0, ls="--", label="ideal (load / (C x 0.7))")
    ax.step([0] + [d["t"] for d in dec] + [t[-1] if t else 0],
            [dec[0]["current"] if dec else 1] + [d["desired"] for d in dec] + [dec[-1]["desired"] if dec else 1],
            where="post", color="#d62728", lw=1.4, label="desired (HPA)")
    ax.plot(t, [s["ready"] for s in smp], color="#2ca02c", lw=1.2, label="ready")
    ax.set_ylim(0, cfg["max_replicas"] + 0.8)
    ax.set_yticks(range(0, cfg["max_replicas"] + 1))
    ax.set_ylabel("replicas")
    if legend:
        ax.legend(fontsize=7, loc="upper right")
    _phases(ax, res)


def plot_scenario(name: str, by_set: Dict[str, dict], png: pathlib.Path) -> None:
    sets = list(by_set)
    fig, axes = plt.subplots(5, len(sets), figsize=(5.2 * len(sets), 11.5), sharex="col", squeeze=False,
                             gridspec_kw={"height_ratios": [1.0, 1.0, 1.1, 1.0, 0.5]})
    for c, st in enumerate(sets):
        res = by_set[st]
        cfg = res["config"]
        xs, p50, p99, thr, failed = _bins(res)
        smp = res["samples"]
        t = [s["t"] for s in smp]
        ax = axes[0][c]
        ax.set_title(TRIGGER_SET_LABELS.get(st, st), fontsize=10, pad=14)
        ax.plot(t, [s["offered"] for s in smp], color="black", lw=1.2, label="offered load")
        ax.plot(xs, thr, color="#1f77b4", lw=1, label="served (5 s bins)")
        cap = cfg["capacity_rps"]
        ax.plot(t, [s["ready"] * cap for s in smp], color="#2ca02c", lw=0.8, ls=":", label="ready pods x C")
        ax.set_ylabel("requests/s")
        ax.legend(fontsize=7, loc="upper right")
        _phases(ax, res, label=True)
        _replicas(axes[1][c], res)
        ax = axes[2][c]
        dec = res["decisions"]
        for tr in cfg["triggers"]:
            xs_d, ys = [], []
            for d in dec:
                v = d["values"].get(tr["name"])
                if v is None:
                    continue
                if isinstance(v, dict):  # Pods metric: the mean over pods / target
                    if not v:
                        continue
                    v = sum(v.values()) / len(v) / tr["threshold"]
                elif tr["metric_type"] == "AverageValue":
                    v = v / (tr["threshold"] * max(1, d["active"]))
                else:
                    v = v / tr["threshold"]
                xs_d.append(d["t"])
                ys.append(max(v, 0.01))
            unit = {"AverageValue": "sum / replicas / ", "Pods": "mean over pods / "}.get(tr["metric_type"], "/ ")
            ax.plot(xs_d, ys, marker=".", ms=3, lw=1.1, label=f"{tr['name']} {unit}{tr['threshold']:g}")
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
        ax.bar(xs, failed, width=4.5, color="#d62728")
        ax.text(0.01, 0.8, f"failed requests: {sum(failed)} of {len(res['requests'])}", transform=ax.transAxes, fontsize=8)
        ax.set_ylim(0, max(1, max(failed or [0])) * 1.2)
        ax.set_ylabel("failed")
        ax.set_xlabel("seconds since the start of the profile")
        _phases(ax, res)
    fig.suptitle(f"{SCENARIO_TITLES.get(name, name)}: {next(iter(by_set.values()))['config']['timing_note']}", fontsize=8)
    _save(fig, png)


def plot_grid(results: Dict[str, Dict[str, dict]], png: pathlib.Path) -> None:
    scens = list(results)
    sets = []
    for by in results.values():
        sets += [s for s in by if s not in sets]
    fig, axes = plt.subplots(len(scens), len(sets), figsize=(4.6 * len(sets), 2.6 * len(scens)), squeeze=False)
    for r, sc in enumerate(scens):
        for c, st in enumerate(sets):
            ax = axes[r][c]
            res = results[sc].get(st)
            if res is None:
                ax.axis("off")
                continue
            _replicas(ax, res, legend=(r == 0 and c == 0))
            s = res["summary"]
            ax.text(0.01, 0.97, f"p99 {s['p99_s']:.2f} s, failed {s['failed']}, RS/ideal {s['replica_seconds_vs_ideal']:.2f}",
                    transform=ax.transAxes, fontsize=7, va="top")
            if r == 0:
                ax.set_title(TRIGGER_SET_LABELS.get(st, st), fontsize=9, pad=12)
            if c == 0:
                ax.set_ylabel(f"{SCENARIO_TITLES.get(sc, sc)}\nreplicas", fontsize=8)
            if r == len(scens) - 1:
                ax.set_xlabel("seconds")
    _save(fig, png)


def _f(v, fmt="{:.2f}"):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def scenario_table(name: str, by_set: Dict[str, dict]) -> str:
    sets = list(by_set)
    S = [by_set[s]["summary"] for s in sets]
    rows = [
        ("lag from the spike's start to the first scale-up", [_f(s.get("reaction_s"), "{:.1f} s") for s in S]),
        ("scale-downs while load > remaining pods' capacity (goal 0)",
         [str(s["scale_downs_over_capacity"]) + (" (" + ", ".join(f"t={x['t']:.0f}s {x['from']}->{x['to']}"
                                                                   for x in s["scale_downs_over_capacity_list"]) + ")"
                                                   if s["scale_downs_over_capacity_list"] else "") for s in S]),
        ("replicas / ideal once settled (goal +-1)",
         ["; ".join(f"{x['phase']} {x['replicas']}/{x['ideal']}" for x in s["settled"]) or "-" for s in S]),
        ("peak replicas from the load's rise until a new pod is ready / ideal (decision -> ready)",
         [("-" if not s.get("cold_start") else
           f"{s['cold_start']['peak_replicas']} / {s['cold_start']['ideal']} ({s['cold_start']['decision_to_ready_s']:.0f} s)"
           if s["cold_start"].get("decision_to_ready_s") is not None else
           f"{s['cold_start']['peak_replicas']} / {s['cold_start']['ideal']} (already before the rise)") for s in S]),
        ("replica-seconds / ideal's integral (goal <= 1.3)",
         [f"{s['replica_seconds']:.0f} / {s['ideal_replica_seconds']} = **{s['replica_seconds_vs_ideal']:.2f}**" for s in S]),
        ("replica-seconds / the ideal held for the scale-down window",
         [f"{s['replica_seconds']:.0f} / {s['ideal_held_replica_seconds']} = {s['replica_seconds_vs_ideal_held']:.2f} "
          f"({s['scale_down_window_s']:g} s)" for s in S]),
        ("peak desired replicas (HPA) / maxReplicaCount", [f"{s['max_desired']} / {by_set[st]['config']['max_replicas']}"
                                                           + (f" (pods capped at {by_set[st]['config']['physical_cap']})"
                                                              if by_set[st]['config'].get('physical_cap') else "")
                                                           for st, s in zip(sets, S)]),
        ("desired replica-seconds / ideal's integral",
         [_f(s.get("desired_replica_seconds_vs_ideal")) for s in S]),
        ("a pod's capacity estimate: C / estimate, max over pods (utilization overstated by it)",
         [_f(s.get("estimate_overstatement_max"), "{:.3f}") + f" (adds {_f(s.get('estimate_excess_pods_max'))} pods)"
          for s in S]),
        ("client p50 / p99", [f"{_f(s['p50_s'])} / {_f(s['p99_s'])} s" for s in S]),
        ("failed requests (goal 0)", [f"**{s['failed']}** of {s['requests']}" for s in S]),
        ("scale-ups / scale-downs", [f"{s['scale_ups']} / {s['scale_downs']}" for s in S]),
        ("failed Prometheus queries", [str(s["query_errors"]) for s in S]),
    ]
    cfg = next(iter(by_set.values()))["config"]
    head = (f"**{SCENARIO_TITLES.get(name, name)}**, model `{cfg['model']}`, C = {cfg['capacity_rps']:.2f} requests/s per pod, "
            f"peak {max(p['rate_to'] for p in cfg['phases']) / cfg['capacity_rps']:.2f} C; {cfg['timing_note']}\n\n")
    lines = ["| | " + " | ".join(TRIGGER_SET_LABELS.get(s, s) for s in sets) + " |", "|---" * (len(sets) + 1) + "|"]
    for label, vals in rows:
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    return head + "\n".join(lines)


def markdown(results: Dict[str, Dict[str, dict]], caps: dict) -> str:
    any_res = next(iter(next(iter(results.values())).values()))
    cfg = any_res["config"]
    trig_lines = []
    seen = set()
    for by in results.values():
        for st, res in by.items():
            if st in seen:
                continue
            seen.add(st)
            c = res["config"]
            trig_lines.append(f"- **{TRIGGER_SET_LABELS.get(st, st)}** (`{c['entry_point']}`): " + "; ".join(
                f"`{t['name']}` {t['metric_type']} {t['threshold']:g}: `{t['query']}`" for t in c["triggers"])
                + (f"; combined by scalingModifiers `{c['modifiers']['formula']}` (target {c['modifiers']['target']:g}, "
                   f"{c['modifiers']['metric_type']}; the triggers' own thresholds unused)" if c.get("modifiers") else "")
                + f"; scale-down window {c['behavior']['scale_down']['stabilization_s']:g} s (as run)")
    loads = "; ".join(sc + " " + ", ".join(f"{st} {r['config']['machine']['loadavg_before'][0]:.1f}" for st, r in by.items())
                      for sc, by in results.items())
    out = [
        f"- calibration (closed loop, one pod): " + ", ".join(f"`{m}` {v['rps']:.2f} requests/s" for m, v in caps.items()),
        f"- ideal replicas: ceil(offered / (C x {cfg['ideal_target']})) within min/max {cfg['min_replicas']}/{cfg['max_replicas']} "
        f"(manifest max {cfg['max_replicas_manifest']}, "
        + (f"the HPA's; the pods capped at {cfg['physical_cap']} for this machine" if cfg.get("physical_cap")
           else "capped for this machine") + f"); load: open loop, Poisson, seed {cfg['seed']}",
        f"- {cfg['prometheus']}; machine: {cfg['machine']['nproc']} CPUs, 1-minute load average before each run: {loads}",
        *trig_lines,
        "",
    ]
    for sc, by in results.items():
        out.append(scenario_table(sc, by))
        out.append("")
    return "\n".join(out)
