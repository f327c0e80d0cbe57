"""The report's PNG figures (matplotlib, imported only here). Sizes in MiB (2^20 bytes);
the budget is drawn as a line wherever RSS is."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

from edgeag.io import atomic_write

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


SEED_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v")]
"""Line style and marker of the n-th seed of a row, in the figures with one panel per
row (seeds of one row often coincide: a style and a marker each tell them apart)."""


def _grid(n: int, max_columns: int = 5) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n`` panels, at most ``max_columns`` wide, as
    square as that allows: 8 panels 2 x 4, 10 panels 2 x 5."""
    rows = -(-n // max_columns)
    return rows, -(-n // rows)


def _row_panels(n: int):
    """One panel per report row on a shared grid (the same x and y axes in every
    panel); unused cells hidden. Returns the figure and the ``n`` axes."""
    plt = _pyplot()
    rows, columns = _grid(max(n, 1))
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns + 0.6, 2.5 * rows + 1.5),
                             sharex=True, sharey=True, squeeze=False)
    flat = [ax for line in axes for ax in line]
    for ax in flat[n:]:
        ax.set_visible(False)
    for ax in flat[max(n - columns, 0):n]:  # the lowest panel of each column shows its x ticks
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig, flat[:n]


def _no_runs(ax, row: dict) -> None:
    """A panel's note for a row none of whose runs trained."""
    plans = [r["plan_total_bytes"] for r in row["runs"]
             if r["status"] == "refused" and r.get("plan_total_bytes")]
    text = (f"never started:\nplan {min(plans) / MiB:.0f} MiB, over the budget" if plans
            else "no run trained")
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8,
            color="0.3")


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
    fig, (whole, zoom) = plt.subplots(1, 2, figsize=(max(10, 1.2 * len(rows) + 4), 5.6))
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
        # whole labels on a slant: two-word labels side by side would run into each other
        ax.set_xticks(range(len(rows)), [r["label"] for r in rows], fontsize=7, rotation=30,
                      ha="right", rotation_mode="anchor")
        ax.margins(x=0.08)
        ax.grid(axis="y", alpha=0.3)
    for i, (row, color) in enumerate(zip(rows, colors)):
        plans = [r["plan_total_bytes"] for r in row["runs"]
                 if r["status"] == "refused" and r.get("plan_total_bytes")]
        if plans:
            y = min(plans) / MiB
            whole.scatter([i], [y], marker="^", s=60, facecolors="none", edgecolors=color, zorder=3)
            whole.annotate(f"refused:\nplan {y:.0f} MiB", (i, y), textcoords="offset points",
                           xytext=(0, 7), ha="center", va="bottom", fontsize=7)
    floors = [r["floor_anon_bytes"]["median"] for r in rows if r.get("floor_anon_bytes")]
    if floors:
        whole.axhline(min(floors) / MiB, color="gray", ls=":", lw=1,
                      label="measured floor (lowest median)")
    _budget_line(whole, budget)
    if any(r["status"] == "refused" for row in rows for r in row["runs"]):
        whole.scatter([], [], marker="^", facecolors="none", edgecolors="gray",
                      label="plan of a refused run (never started)")
    whole.scatter([], [], color="gray", s=22, label="one run (seed)")
    whole.errorbar([], [], fmt="_", color="black", label="median, min-max over seeds")
    whole.set_ylabel("peak anonymous memory, RssAnon + RssShmem (MiB)")
    whole.set_title("what the budget counts, against the budget (axis from 0)", fontsize=9)
    # from 0, with room above the highest point for a refused run's label
    highest = max([budget] + [r.get("plan_total_bytes" if r["status"] == "refused"
                                    else "peak_anon_bytes") or 0
                              for row in rows for r in row["runs"]])
    whole.set_ylim(0, 1.18 * highest / MiB)
    measured = [r["peak_rss_bytes"] for r in rows if r["peak_rss_bytes"]]
    if measured:
        low = min(p["min"] for p in measured) / MiB
        high = max(p["max"] for p in measured) / MiB
        pad = max(0.25, 0.1 * (high - low))
        zoom.set_ylim(low - pad, high + pad)
    zoom.set_ylabel("peak RSS of the whole process, VmHWM (MiB)")
    zoom.set_title("whole RSS (with mapped files); axis not from 0, zoomed on the runs",
                   fontsize=9)
    handles, names = whole.get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="outside lower center", ncol=len(names))
    fig.suptitle(f"Peak memory per optimizer\n{_title(report)}", fontsize=10)
    fig.set_layout_engine("constrained")
    _save(fig, path)
    plt.close(fig)


def _read_rss(run_dir: Path) -> tuple[list[float], list[float]]:
    """(seconds, anonymous MiB) of a run's rss.csv."""
    with open(run_dir / "rss.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("anon_bytes")]
    return [float(r["seconds"]) for r in rows], [int(r["anon_bytes"]) / MiB for r in rows]


def _trained(row: dict, out: Path, name: str) -> list[tuple[int, Path]]:
    """(seed, file) of the row's runs that trained and wrote ``name``."""
    return [(r["seed"], out / r["run_dir"] / name) for r in row["runs"]
            if r["status"] in ("done", "budget") and (out / r["run_dir"] / name).exists()]


def _seed_legend(fig, seeds: list, extra: list) -> None:
    """The figure's legend: a line style per seed, then ``extra`` (handle, name) pairs."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="black", ls=SEED_STYLES[k % len(SEED_STYLES)][0],
                      marker=SEED_STYLES[k % len(SEED_STYLES)][1], ms=4, lw=1.2)
               for k in range(len(seeds))]
    names = [f"seed {s}" for s in seeds]
    for handle, name in extra:
        handles.append(handle)
        names.append(name)
    fig.legend(handles, names, fontsize=8, loc="outside right upper")


def rss_over_time(report: dict, out: Path, path: Path) -> None:
    """Anonymous memory (what the budget counts) sampled by each run's guard: one panel
    per row, all on the same axes, each seed its own line style and marker, the other
    rows faint behind it, the budget as a line."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    rows = report["rows"]
    budget = report["settings"]["budget_bytes"]
    seeds = report["settings"]["seeds"]
    series = [[(seed, *_read_rss(f.parent)) for seed, f in _trained(row, out, "rss.csv")]
              for row in rows]
    fig, axes = _row_panels(len(rows))
    top = max([budget / MiB] + [max(y) for runs in series for _, _, y in runs if y])
    for i, (ax, row, runs, color) in enumerate(zip(axes, rows, series, _colors(len(rows)))):
        for j, others in enumerate(series):
            for _, t, y in others if j != i else ():
                ax.plot(t, y, color="0.85", lw=0.8, zorder=1)
        for seed, t, y in runs:
            k = seeds.index(seed) if seed in seeds else 0
            ls, marker = SEED_STYLES[k % len(SEED_STYLES)]
            every = max(1, len(t) // 6)  # markers of different seeds at different samples
            ax.plot(t, y, color=color, ls=ls, lw=1.3, marker=marker, ms=3.5, zorder=3,
                    markevery=(every * k // len(seeds), every))
        ax.axhline(budget / MiB, color="crimson", ls="--", lw=1, zorder=2)
        peak = row.get("peak_anon_bytes")
        ax.set_title(row["label"] + (f" (peak {peak['median'] / MiB:.0f} MiB)" if peak else ""),
                     fontsize=9, color=color)
        if not runs:
            _no_runs(ax, row)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    if axes:
        axes[0].set_ylim(0, top * 1.08)
        axes[0].set_xlim(left=0)
    _seed_legend(fig, seeds, [(Line2D([], [], color="0.85", lw=0.8), "the other rows"),
                              (Line2D([], [], color="crimson", ls="--", lw=1),
                               f"budget {budget / MiB:.0f} MiB")])
    fig.supxlabel("seconds since the run started building its policy (the budget guard's "
                  "samples)", fontsize=9)
    fig.supylabel("anonymous memory, RssAnon + RssShmem (MiB)", fontsize=9)
    fig.suptitle(f"Memory the budget counts, while training: one panel per row, the same "
                 f"axes in each (peak: median over the seeds)\n{_title(report)}", fontsize=10)
    fig.set_layout_engine("constrained")
    _save(fig, path)
    plt.close(fig)


def _read_returns(path: Path) -> dict[int, float]:
    """{env steps: mean return of the last 100 episodes} of a run's metrics.jsonl."""
    curve = {}
    for line in path.read_text().splitlines():
        m = json.loads(line)
        if m.get("rollout/ep_rew_mean") is not None:
            curve[m["time/total_timesteps"]] = m["rollout/ep_rew_mean"]
    return curve


def returns(report: dict, out: Path, path: Path) -> None:
    """Mean return of the last 100 episodes against env steps, one panel per row (all
    on the same axes): the median over seeds and the min-max band, the other rows'
    medians faint behind it."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt = _pyplot()
    rows = report["rows"]
    medians = []
    for row in rows:
        curves = {}
        for _, metrics in _trained(row, out, "metrics.jsonl"):
            for step, value in _read_returns(metrics).items():
                curves.setdefault(step, []).append(value)
        steps = sorted(curves)
        medians.append((steps, [statistics.median(curves[s]) for s in steps],
                        [min(curves[s]) for s in steps], [max(curves[s]) for s in steps]))
    fig, axes = _row_panels(len(rows))
    for i, (ax, row, (steps, med, low, high), color) in enumerate(
            zip(axes, rows, medians, _colors(len(rows)))):
        for j, (other_steps, other_med, _, _) in enumerate(medians):
            if j != i:
                ax.plot(other_steps, other_med, color="0.85", lw=0.8, zorder=1)
        if steps:
            ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0, zorder=2)
            ax.plot(steps, med, color=color, lw=1.5, zorder=3)
        else:
            _no_runs(ax, row)
        final = row.get("final_eval_return")
        ax.set_title(row["label"] + (f" (final eval {final['median']:.0f})"
                                     if isinstance(final, dict) and final.get("median") is not None
                                     else ""), fontsize=9, color=color)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    n = len(report["settings"]["seeds"])
    fig.legend([Line2D([], [], color="black", lw=1.5), Patch(color="black", alpha=0.2, lw=0),
                Line2D([], [], color="0.85", lw=0.8)],
               [f"median of {n} seed(s)", "min-max over the seeds", "the other rows' medians"],
               fontsize=8, loc="outside right upper")
    fig.supxlabel("environment steps", fontsize=9)
    fig.supylabel("mean episode return (last 100 episodes)", fontsize=9)
    fig.suptitle(f"Return while training: one panel per row, the same axes in each "
                 f"(final eval: the median return of the final evaluation)\n{_title(report)}",
                 fontsize=10)
    fig.set_layout_engine("constrained")
    _save(fig, path)
    plt.close(fig)


def _measure(report: dict) -> tuple[str, str, str]:
    """What a capacity report's probes measured: (key of a finished probe's peak, key of
    what a stopped probe was seen at, its name on an axis). Reports written before the
    budget counted anonymous memory measured the whole RSS."""
    if any("peak_rss_bytes" in p and "peak_anon_bytes" not in p for p in report["probes"]):
        return "peak_rss_bytes", "max_seen_rss_bytes", "peak RSS, VmHWM"
    return "peak_anon_bytes", "max_seen_anon_bytes", "peak anonymous memory"


def capacity(report: dict, path: Path) -> None:
    """Parameters of the widest policy that trains inside each budget: one panel per
    budget (its own scale), one bar per row, labelled with the width and the ratio."""
    plt = _pyplot()
    labels = [r["label"] for r in report["rows"]]
    budgets = report["settings"]["budgets_bytes"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(max(8.0, 3.6 * len(budgets) + 1.0), 5.4),
                             squeeze=False)
    colors = _colors(len(labels))
    for ax, budget in zip(axes[0], budgets):
        results = [next((x for x in report["results"] if x["budget_bytes"] == budget
                         and x["row"] == label), None) for label in labels]
        ys = [(x["parameter_count"] or 0) / 1e6 if x else 0 for x in results]
        bars = ax.bar(range(len(labels)), ys, color=colors)
        for bar, x in zip(bars, results):
            ratio = f"\n{x['parameter_ratio']:.2f}x" if x and x["parameter_ratio"] else ""
            text = ("not searched" if x is None else "none fits" if not x["width"] else
                    f"W={x['width']}{ratio}")
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        textcoords="offset points", xytext=(0, 2), ha="center", va="bottom",
                        fontsize=7)
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30, ha="right",
                      rotation_mode="anchor")
        ax.set_title(f"budget {budget / MiB:.0f} MiB", fontsize=9)
        ax.set_ylim(0, 1.2 * max(ys) if max(ys, default=0) > 0 else 1)  # room for the labels
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("parameters of the widest policy that fits (millions)")
    ref = next((x["reference"] for x in report["results"] if x.get("reference")), None)
    measure = _measure(report)[2]
    fig.suptitle(f"Largest policy that trains inside the budget (measured {measure})"
                 + (f"\nW: hidden width; ratio: parameters / {ref}'s" if ref else
                    "\nW: hidden width")
                 + ("; each panel has its own scale" if len(budgets) > 1 else "")
                 + f"\n{_title(report)}", fontsize=10)
    fig.set_layout_engine("constrained")
    _save(fig, path)
    plt.close(fig)


def probe_points(report: dict) -> dict[str, list[tuple[float, float, bool]]]:
    """Per row, every probe that has a parameter count as (millions of parameters, MiB,
    finished): a finished probe at its peak, a stopped one at what it was seen at when
    it was stopped (its peak would have been higher)."""
    peak, seen, _ = _measure(report)
    points = {r["label"]: [] for r in report["rows"]}
    for p in report["probes"]:
        if not p.get("parameter_count"):
            continue
        if p["status"] == "measured":
            y = p[peak]
        else:
            y = p.get(seen) or p.get("killed_above_bytes")
        if y:
            points.setdefault(p["row"], []).append((p["parameter_count"] / 1e6, y / MiB,
                                                    p["status"] == "measured"))
    return {row: sorted(pts) for row, pts in points.items()}


def probe_limits(report: dict) -> tuple[tuple[float, float, float, float],
                                        tuple[float, float, float, float] | None]:
    """Axis limits (x0, x1, y0, y1) of the "every probe" panel (parameters on a log
    scale), which hold every probe and every budget, and of the panel zoomed in on the
    smallest budget (linear, from 0 parameters), which hold each row's widest probe
    inside it and the next, narrowest one above it (None when no probe has parameters).
    The zoomed limits lie inside the whole ones, but for the zoomed panel's 0."""
    budgets = [b / MiB for b in report["settings"]["budgets_bytes"]]
    points = probe_points(report)
    flat = [pt for pts in points.values() for pt in pts]
    if not flat:
        return (0.01, 1.0, 0.0, max(budgets) * 1.1), None
    x1 = max(x for x, _, _ in flat) * 1.6
    y1 = max([y for _, y, _ in flat] + budgets) * 1.07
    whole = (min(x for x, _, _ in flat) / 1.6, x1, 0.0, y1)
    lowest = min(budgets)
    near = []
    for pts in points.values():
        inside = [pt for pt in pts if pt[2] and pt[1] <= lowest]
        widest = max(inside, default=None)
        above = [pt for pt in pts if not (pt[2] and pt[1] <= lowest)
                 and (widest is None or pt[0] > widest[0])]
        near += ([widest] if widest else []) + ([min(above)] if above else [])
    xs, ys = [x for x, _, _ in near], [y for _, y, _ in near] + [lowest]
    pad = max(2.0, 0.1 * (max(ys) - min(ys)))
    zoom = (0.0, min(max(xs) * 1.1, x1), max(min(ys) - pad, 0.0), min(max(ys) + pad, y1))
    return whole, zoom


def capacity_probes(report: dict, path: Path) -> None:
    """Every probe: its peak (what the budget counts) against the policy's parameters,
    the budgets as lines. The left panel holds every probe, its parameters on a log
    scale (the widths double: the probes span several decades); the right panel, on
    linear axes (where a row is close to a line whose slope is its bytes per parameter),
    zooms in on the smallest budget, where each row's widest fitting probe meets its
    first one above (its area is the dotted box on the left)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    labels = [r["label"] for r in report["rows"]]
    budgets = report["settings"]["budgets_bytes"]
    measure = _measure(report)[2]
    points = probe_points(report)
    (wx0, wx1, wy0, wy1), zoomed = probe_limits(report)
    fig, (whole, small) = plt.subplots(1, 2, figsize=(12, 5.6))
    lowest = min(budgets)
    for ax in (whole, small):
        for label, color in zip(labels, _colors(len(labels))):
            pts = points.get(label, [])
            done = [(x, y) for x, y, finished in pts if finished]
            ax.plot(*(zip(*done) if done else ([], [])), "o-", color=color, ms=4, lw=1.2,
                    label=label)
            over = [(x, y) for x, y, finished in pts if not finished]
            if over:
                ax.scatter(*zip(*over), marker="^", color=color, s=30, zorder=3)
        for budget in budgets if ax is whole else [lowest]:
            ax.axhline(budget / MiB, color="crimson", ls="--", lw=1)
            ax.annotate(f"{budget / MiB:.0f} MiB\nbudget", (1, budget / MiB),
                        xycoords=("axes fraction", "data"), textcoords="offset points",
                        xytext=(3, 0), ha="left", va="center", fontsize=7, color="crimson",
                        annotation_clip=False)
        ax.set_ylabel(f"{measure} of the training process (MiB)")
        ax.grid(alpha=0.3)
    whole.set_xscale("log")
    whole.set_xlim(wx0, wx1)
    whole.set_ylim(wy0, wy1)
    whole.set_xlabel("parameters of the policy, actor + critic (millions, log scale)")
    small.set_xlabel("parameters of the policy, actor + critic (millions)")
    whole.set_title("every probe (parameters on a log scale)", fontsize=9)
    if zoomed is not None:
        zx0, zx1, zy0, zy1 = zoomed
        small.set_xlim(zx0, zx1)
        small.set_ylim(zy0, zy1)
        whole.add_patch(Rectangle((wx0, zy0), zx1 - wx0, zy1 - zy0, fill=False, ec="0.35",
                                  ls=":", lw=1.2, zorder=5))
    small.set_title(f"zoomed in on the {lowest / MiB:.0f} MiB budget (the dotted box at "
                    f"left):\neach row's widest probe inside it and the next one above",
                    fontsize=9)
    handles, names = whole.get_legend_handles_labels()
    handles.append(Line2D([], [], ls="", marker="^", color="gray"))
    names.append("stopped above the budget: where it was seen (its peak is higher)")
    fig.legend(handles, names, fontsize=8, loc="outside lower center", ncol=3)
    fig.suptitle(f"Capacity probes: measured {measure} by policy size "
                 f"(hidden=[W, W] for actor and critic)\n{_title(report)}", fontsize=10)
    fig.set_layout_engine("constrained")
    _save(fig, path)
    plt.close(fig)


def profiles(title: str, taus, bands: dict, path: Path) -> None:
    """Performance profiles: for each name, the fraction of runs whose normalised score
    is above each threshold ``taus`` (``bands[name]``: an `edgeag.report.stats.
    IntervalEstimate` of arrays, the line and its 95% band)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for (name, band), color in zip(bands.items(), _colors(len(bands))):
        ax.plot(taus, band.point, color=color, lw=1.8, label=name)
        ax.fill_between(taus, band.low, band.high, color=color, alpha=0.2, lw=0)
    ax.axvline(0.0, color="grey", lw=0.8, ls=":")
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("normalised score τ (0: random policy, 1: reference)")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
