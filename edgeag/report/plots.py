"""The report's PNG figures (matplotlib, imported only here). Sizes in MiB (2^20 bytes);
the budget is drawn as a line wherever RSS is."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

from edgeag.train.rundir import atomic_write

MiB = 2**20


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    fig.clf()
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _colors(n: int):
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def _budget_line(ax, budget: int, horizontal: bool = True) -> None:
    label = f"budget {budget / MiB:.0f} MiB"
    (ax.axhline if horizontal else ax.axvline)(budget / MiB, color="crimson", ls="--", lw=1.2,
                                               label=label)


def _title(report: dict) -> str:
    d, s = report["device"], report["settings"]
    where = f"{d['profile']} profile on {d['machine']}" if d.get("profile") else d["machine"]
    return f"{s['env']}, {where}, {s['threads']} thread(s)"


def peak_rss(report: dict, path: Path) -> None:
    """Per row, twice: the peak anonymous memory (RssAnon + RssShmem, what the budget
    counts) against the budget and the floor (with the plans of refused rows), and the
    peak RSS of the whole process (VmHWM), zoomed in on the measured runs, where the
    run-to-run spread shows."""
    plt = _pyplot()
    rows = report["rows"]
    budget = report["settings"]["budget_bytes"]
    colors = _colors(len(rows))
    fig, (whole, zoom) = plt.subplots(1, 2, figsize=(max(10, 1.5 * len(rows) + 4), 5.2))
    ticks = [r["label"].replace(" ", "\n") for r in rows]
    for ax, key in ((whole, "peak_anon_bytes"), (zoom, "peak_rss_bytes")):
        for i, (row, color) in enumerate(zip(rows, colors)):
            ys = [r[key] / MiB for r in row["runs"]
                  if r["status"] in ("done", "budget") and r.get(key)]
            ax.scatter([i - 0.15] * len(ys), ys, color=color, s=22, alpha=0.8, zorder=3)
            p = row.get(key)
            if p:
                ax.errorbar([i], [p["median"] / MiB], yerr=[[(p["median"] - p["min"]) / MiB],
                                                           [(p["max"] - p["median"]) / MiB]],
                            fmt="_", ms=16, mew=2, color="black", capsize=5, zorder=4)
        ax.set_xticks(range(len(rows)), ticks, fontsize=7)
        ax.margins(x=0.08)
        ax.grid(axis="y", alpha=0.3)
    for i, (row, color) in enumerate(zip(rows, colors)):
        plans = [r["plan_total_bytes"] for r in row["runs"]
                 if r["status"] == "refused" and r.get("plan_total_bytes")]
        if plans:
            y = min(plans) / MiB
            whole.scatter([i], [y], marker="^", s=60, facecolors="none", edgecolors=color, zorder=3)
            whole.annotate(f"refused:\nplan {y:.0f}", (i, y), textcoords="offset points",
                           xytext=(0, 7), ha="center", va="bottom", fontsize=7)
    floors = [r["floor_anon_bytes"]["median"] for r in rows if r.get("floor_anon_bytes")]
    if floors:
        whole.axhline(min(floors) / MiB, color="gray", ls=":", lw=1,
                      label="measured floor (lowest median)")
    _budget_line(whole, budget)
    if any(r["status"] == "refused" for row in rows for r in row["runs"]):
        whole.scatter([], [], marker="^", facecolors="none", edgecolors="gray",
                      label="plan of a refused run (never started)")
    whole.errorbar([], [], fmt="_", color="black", label="median, min-max over seeds")
    whole.set_ylabel("peak anonymous memory, RssAnon + RssShmem (MiB)")
    whole.set_title("what the budget counts, against the budget", fontsize=9)
    whole.set_ylim(bottom=0)
    whole.margins(y=0.15)
    whole.legend(fontsize=7, loc="best")
    measured = [r["peak_rss_bytes"] for r in rows if r["peak_rss_bytes"]]
    if measured:
        low = min(p["min"] for p in measured) / MiB
        high = max(p["max"] for p in measured) / MiB
        pad = max(0.25, 0.1 * (high - low))
        zoom.set_ylim(low - pad, high + pad)
    zoom.set_ylabel("peak RSS of the whole process, VmHWM (MiB)")
    zoom.set_title("whole RSS (with mapped files), zoomed: dots are seeds", fontsize=9)
    fig.suptitle(f"Peak memory per optimizer\n{_title(report)}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _read_rss(run_dir: Path) -> tuple[list[float], list[float]]:
    """(seconds, anonymous MiB) of a run's rss.csv."""
    with open(run_dir / "rss.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("anon_bytes")]
    return [float(r["seconds"]) for r in rows], [int(r["anon_bytes"]) / MiB for r in rows]


def rss_over_time(report: dict, out: Path, path: Path) -> None:
    """Anonymous memory (what the budget counts) sampled by each run's guard (every
    seed), against the budget."""
    plt = _pyplot()
    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for row, color in zip(rows, _colors(len(rows))):
        labelled = False
        for r in row["runs"]:
            rss = out / r["run_dir"] / "rss.csv"
            if r["status"] not in ("done", "budget") or not rss.exists():
                continue
            t, y = _read_rss(out / r["run_dir"])
            ax.plot(t, y, color=color, lw=1, alpha=0.8, label=None if labelled else row["label"])
            labelled = True
    _budget_line(ax, report["settings"]["budget_bytes"])
    ax.set_xlabel("seconds since training started")
    ax.set_ylabel("anonymous memory, RssAnon + RssShmem (MiB)")
    ax.set_title(f"Memory the budget counts, while training (one line per seed)\n"
                 f"{_title(report)}", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best", ncol=2)
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def returns(report: dict, out: Path, path: Path) -> None:
    """Mean return of the last 100 episodes against env steps: median over seeds and
    the min-max band."""
    plt = _pyplot()
    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for row, color in zip(rows, _colors(len(rows))):
        curves = {}
        for r in row["runs"]:
            metrics = out / r["run_dir"] / "metrics.jsonl"
            if r["status"] not in ("done", "budget") or not metrics.exists():
                continue
            for line in metrics.read_text().splitlines():
                m = json.loads(line)
                if m["rollout/ep_rew_mean"] is not None:
                    curves.setdefault(m["time/total_timesteps"], []).append(m["rollout/ep_rew_mean"])
        if not curves:
            continue
        steps = sorted(curves)
        med = [statistics.median(curves[s]) for s in steps]
        ax.plot(steps, med, color=color, lw=1.5, label=row["label"])
        ax.fill_between(steps, [min(curves[s]) for s in steps], [max(curves[s]) for s in steps],
                        color=color, alpha=0.15, lw=0)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean episode return (last 100 episodes)")
    n = len(report["settings"]["seeds"])
    ax.set_title(f"Return while training (median of {n} seed(s), band: min-max)\n{_title(report)}",
                 fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best", ncol=2)
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def capacity(report: dict, path: Path) -> None:
    """Parameters of the widest policy that trains inside each budget: one panel per
    budget (its own scale), one bar per row, labelled with the width and the ratio."""
    plt = _pyplot()
    labels = [r["label"] for r in report["rows"]]
    budgets = report["settings"]["budgets_bytes"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(3.3 * len(budgets) + 1.5, 4.8),
                             squeeze=False)
    colors = _colors(len(labels))
    for ax, budget in zip(axes[0], budgets):
        results = [next((x for x in report["results"] if x["budget_bytes"] == budget
                         and x["row"] == label), None) for label in labels]
        ys = [(x["parameter_count"] or 0) / 1e6 if x else 0 for x in results]
        bars = ax.bar(range(len(labels)), ys, color=colors, label=labels)
        for bar, x in zip(bars, results):
            text = "not searched" if x is None else "none fits" if not x["width"] else \
                f"W={x['width']}" + (f"\n{x['parameter_ratio']:.2f}x" if x["parameter_ratio"] else "")
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        textcoords="offset points", xytext=(0, 2), ha="center", va="bottom",
                        fontsize=7)
        ax.set_xticks([])
        ax.set_title(f"budget {budget / MiB:.0f} MiB", fontsize=9)
        ax.margins(y=0.22)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("parameters of the widest policy that fits (millions)")
    ref = next((x["reference"] for x in report["results"] if x.get("reference")), None)
    fig.legend(bars, labels, fontsize=8, loc="lower center", ncol=min(4, len(labels)),
               bbox_to_anchor=(0.5, -0.06))
    fig.suptitle("Largest policy that trains inside the budget (measured peak anonymous memory)"
                 + (f"; ratio: parameters / {ref}'s" if ref else "") + f"\n{_title(report)}",
                 fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def capacity_probes(report: dict, path: Path) -> None:
    """Every probe: peak anonymous memory (what the budget counts) against the policy's parameters (so a row is close to a
    line whose slope is its bytes per parameter), the budgets as lines; the right
    panel zooms in on the smallest budget."""
    plt = _pyplot()
    labels = [r["label"] for r in report["rows"]]
    budgets = report["settings"]["budgets_bytes"]
    fig, (whole, small) = plt.subplots(1, 2, figsize=(12, 5.2))
    for ax in (whole, small):
        for label, color in zip(labels, _colors(len(labels))):
            probes = [p for p in report["probes"] if p["row"] == label and p.get("parameter_count")]
            done = sorted((p["parameter_count"] / 1e6, p["peak_anon_bytes"] / MiB) for p in probes
                          if p["status"] == "measured")
            ax.plot(*(zip(*done) if done else ([], [])), "o-", color=color, ms=4, lw=1.2,
                    label=label)
            over = [(p["parameter_count"] / 1e6, p["max_seen_anon_bytes"] / MiB) for p in probes
                    if p["status"] == "exceeded"]
            if over:
                ax.scatter(*zip(*over), marker="^", color=color, s=30, zorder=3)
        for budget in budgets if ax is whole else [min(budgets)]:
            ax.axhline(budget / MiB, color="crimson", ls="--", lw=1)
            ax.annotate(f"{budget / MiB:.0f} MiB budget", (1, budget / MiB),
                        xycoords=("axes fraction", "data"), textcoords="offset points",
                        xytext=(-4, 3), ha="right", fontsize=8, color="crimson")
        ax.set_xlabel("parameters of the policy, actor + critic (millions)")
        ax.grid(alpha=0.3)
    lowest = min(budgets)
    fits = [x["parameter_count"] for x in report["results"]
            if x["budget_bytes"] == lowest and x["parameter_count"]]
    small.set_xlim(0, 2.0 * max(fits, default=1e6) / 1e6)
    floors = [p["floor_anon_bytes"] for p in report["probes"] if p.get("floor_anon_bytes")]
    small.set_ylim((min(floors) / MiB - 3) if floors else None, lowest / MiB + 12)
    small.set_title(f"zoomed in on {lowest / MiB:.0f} MiB", fontsize=9)
    whole.set_ylim(top=max(budgets) / MiB * 1.06)
    measured = [p["parameter_count"] for p in report["probes"]
                if p["status"] == "measured" and p.get("parameter_count")]
    if measured:  # probes stopped far beyond every budget would squeeze the rest
        whole.set_xlim(0, 1.25 * max(measured) / 1e6)
    whole.set_title("every probe", fontsize=9)
    whole.set_ylabel("peak anonymous memory of the training process (MiB)")
    whole.scatter([], [], marker="^", color="gray", label="stopped above the budget (seen)")
    handles, names = whole.get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower center", ncol=3,
               bbox_to_anchor=(0.5, -0.09))
    fig.suptitle(f"Capacity probes: measured peak anonymous memory by policy size "
                 f"(hidden=[W, W] for actor and critic)\n{_title(report)}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
