"""Writing a report: ``report.json`` (the data), the PNG figures, and ``report.md``
(tables, the figures, and how to read them). Every file is written atomically."""

from __future__ import annotations

from pathlib import Path

from edgeag.io import write_json, write_text
from edgeag.report.capacity import reference_row
from edgeag.report.compare import baseline

MiB = 2**20
PLAN_COLUMNS = ("parameters", "gradients", "optimizer state", "update temporaries",
                "rollout buffer", "activations", "torch._dynamo import", "allocator slack",
                "torch runtime")
COMPARE_FIGURES = {"peak_rss.png": "Peak RSS per optimizer",
                   "rss_over_time.png": "RSS over time",
                   "returns.png": "Return curves"}
CAPACITY_FIGURES = {"capacity.png": "Largest policy per budget",
                    "capacity_probes.png": "Peak memory by width (every probe)"}


def write_report(report: dict, out: Path) -> list[Path]:
    """Write report.json, the figures and report.md into ``out``; returns the paths."""
    from edgeag.report import plots

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    if report["kind"] == "compare":
        plots.peak_rss(report, out / "peak_rss.png")
        plots.rss_over_time(report, out, out / "rss_over_time.png")
        plots.returns(report, out, out / "returns.png")
        figures, text = COMPARE_FIGURES, compare_markdown(report)
    else:
        plots.capacity(report, out / "capacity.png")
        plots.capacity_probes(report, out / "capacity_probes.png")
        figures, text = CAPACITY_FIGURES, capacity_markdown(report)
    write_text(out / "report.md", text)
    return [out / "report.md", out / "report.json", *(out / name for name in figures)]


# --- formatting ---------------------------------------------------------------------

def mib(nbytes, digits: int = 1) -> str:
    return "—" if nbytes is None else f"{nbytes / MiB:.{digits}f}"


def signed_mib(nbytes, digits: int = 2) -> str:
    return "—" if nbytes is None else f"{nbytes / MiB:+.{digits}f}"


def stat_mib(s: dict | None, digits: int = 1) -> str:
    """``median [min–max]`` in MiB."""
    if s is None:
        return "—"
    if s["n"] == 1:
        return mib(s["median"], digits)
    return f"{mib(s['median'], digits)} [{mib(s['min'], digits)}–{mib(s['max'], digits)}]"


def stat_plain(s: dict | None, digits: int = 1) -> str:
    if s is None:
        return "—"
    if s["n"] == 1:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def device_line(device: dict) -> str:
    planned = ""
    if device.get("profile"):
        facts = [device.get("profile_arch")] + ([f"{device['profile_ram_bytes'] / 2**30:g} GiB"]
                                                if device.get("profile_ram_bytes") else [])
        facts = [f for f in facts if f]
        planned = f" for the **{device['profile']}** profile" + (
            f" ({', '.join(facts)})" if facts else "")
    return (f"Measured on `{device['hostname']}` ({device['machine']}, {device['cores']} cores, "
            f"{device['ram_bytes'] / 2**30:.1f} GiB RAM; {device['system']}, Python "
            f"{device['python']}, torch {device['torch'] or 'not installed'}, "
            f"gymnasium {device['gymnasium']}, "
            f"edgeag {device['edgeag']}){planned}.")


def _status(row: dict) -> str:
    parts = [f"{n} {status}" for status, n in row["statuses"].items()]
    return ", ".join(parts)


# --- compare ------------------------------------------------------------------------

def headline(diff: dict) -> str:
    """One sentence: the measured difference with its spread, and the analytic one."""
    verdict = ("larger than the run-to-run spread" if diff["beyond_spread"] else
               "within the run-to-run spread: not a measurable difference")
    return (f"**{diff['row']} − {diff['baseline']}: {signed_mib(diff['peak_median_delta_bytes'])} "
            f"MiB** peak RSS (difference of medians; over the runs it spans "
            f"{signed_mib(diff['peak_delta_low_bytes'])} to "
            f"{signed_mib(diff['peak_delta_high_bytes'])} MiB; run-to-run spread "
            f"{mib(diff['spread_bytes'], 2)} MiB), against an analytic "
            f"{signed_mib(diff['plan_delta_bytes'])} MiB in the plan "
            f"({diff['optimizer_state_delta_bytes']:+,d} bytes of optimizer state): {verdict}."
            + (f" At the end of the runs the difference was "
               f"{signed_mib(diff['anon_at_end_delta_bytes'])} "
               f"MiB of anonymous memory and {signed_mib(diff['file_at_end_delta_bytes'])} MiB of "
               f"file-backed pages (mapped library code)."
               if diff.get("anon_at_end_delta_bytes") is not None else ""))


def compare_markdown(r: dict) -> str:
    """The comparison report: its settings, the headline, peak memory, the plan beside
    the measurement, the curves, how to read it, and every run."""
    lines = _compare_intro(r)
    lines += _compare_peaks(r)
    lines += _compare_plan(r)
    lines += _compare_curves(r)
    lines += HOW_TO_READ_COMPARE
    lines += _compare_runs(r)
    return "\n".join(lines) + "\n"


def _compare_intro(r: dict) -> list[str]:
    s, rows = r["settings"], r["rows"]
    budget = s["budget_bytes"]
    seeds = ", ".join(map(str, s["seeds"]))
    sets = ", ".join(f"`{k}={v}`" for k, v in s["sets"].items())
    lines = [f"# Memory comparison: {s['env']} inside {mib(budget)} MiB", "",
             device_line(r["device"]), "",
             f"Budget: {mib(budget)} MiB ({budget:,} bytes), on the process's anonymous memory "
             f"(RssAnon + RssShmem), what a cgroup limit cannot reclaim. "
             f"Each of {len(rows)} rows × {len(s['seeds'])} seed(s) ({seeds}) "
             f"trained alone in a fresh `edgeag train` process with {s['threads']} thread(s), "
             f"{s['total_steps']:,} environment steps each"
             + (f", with {sets}" if s["sets"] else "")
             + f". Wall time of the comparison: {r['seconds']:.0f} s.", ""]
    if r.get("interrupted"):
        lines += ["**Interrupted** with Ctrl-C: this report holds the runs that finished.", ""]
    heads = [d for d in r["differences"] if d["row"] in ("adam", "torch-adam")]
    if heads:
        lines += [f"- {headline(d)}" for d in heads] + [""]
    return lines


def _compare_peaks(r: dict) -> list[str]:
    """Peak memory per row, and each row against the baseline."""
    lines = ["## Peak RSS", ""]
    body = []
    for row in r["rows"]:
        refused = row["refusals"][0] if row["refusals"] else None
        body.append([f"`{row['label']}`", _status(row), stat_mib(row.get("peak_anon_bytes")),
                     stat_mib(row["peak_rss_bytes"]),
                     mib(row["peak_rss_bytes"]["range"], 2) if row["peak_rss_bytes"] else "—",
                     stat_mib(row["floor_bytes"]), stat_mib(row["above_floor_bytes"]),
                     stat_plain(row["final_eval_return"]),
                     f"cannot start: {refused}" if refused else
                     "; ".join(row["failures"]) or ""])
    lines += table(["row", "runs", "peak anonymous (budgeted), MiB",
                    "peak RSS, MiB: median [min–max]", "spread, MiB",
                    "floor, MiB", "peak − floor, MiB", "final eval return", "note"], body)
    lines += ["", "![Peak RSS per optimizer](peak_rss.png)", ""]
    if not r["differences"]:
        return lines
    lines += [f"### Against `{baseline(r['rows'])['label']}`", ""]
    lines += table(["row", "Δ peak RSS (medians), MiB", "Δ over the runs, MiB",
                    "run-to-run spread, MiB", "reading", "Δ plan, MiB",
                    "Δ optimizer state, bytes", "Δ anon at end, MiB", "Δ file at end, MiB"],
                   [_difference_cells(d) for d in r["differences"]])
    return lines + ["", "Δ anon / Δ file: the difference of the runs' RSS at their end, split "
                    "into anonymous memory (tensors, allocator) and file-backed pages (mostly "
                    "the code of the torch kernels a row uses, which the kernel can drop under "
                    "pressure).", ""]


def _difference_cells(d: dict) -> list:
    return [f"`{d['row']}`", signed_mib(d["peak_median_delta_bytes"]),
            f"{signed_mib(d['peak_delta_low_bytes'])} to "
            f"{signed_mib(d['peak_delta_high_bytes'])}", mib(d["spread_bytes"], 2),
            "beyond the spread" if d["beyond_spread"] else "within the spread",
            signed_mib(d["plan_delta_bytes"]), f"{d['optimizer_state_delta_bytes']:+,d}",
            signed_mib(d.get("anon_at_end_delta_bytes")),
            signed_mib(d.get("file_at_end_delta_bytes"))]


def _compare_plan(r: dict) -> list[str]:
    """The plan's items beside the measured floor and peak; optimizer state, exactly."""
    lines = ["## Where the memory goes: the plan beside the measurement", "",
             "Analytic bytes are the memory plan's items (the algorithm's `plan`, what "
             "`edgeag train` checks before it starts); the floor and the peak are measured in "
             "each run (medians over its runs). Only their sum shows in RSS: gradients, "
             "buffers and activations are not separately visible to the kernel.", ""]
    body = []
    for row in r["rows"]:
        plan, floor, peak = row["plan"], row.get("floor_anon_bytes"), row.get("peak_anon_bytes")
        total = floor["median"] + row["plan_above_floor_bytes"] if floor else None
        body.append([f"`{row['label']}`", mib(floor and floor["median"]),
                     *(mib(plan.get(c, 0), 2) for c in PLAN_COLUMNS), mib(total),
                     mib(peak and peak["median"]),
                     signed_mib(peak["median"] - total, 1) if peak and total else "—"])
    lines += table(["row", "floor, anonymous (measured)", *PLAN_COLUMNS, "plan total",
                    "peak anonymous (measured)", "measured − plan"], body)
    lines += ["", "Optimizer state, exact bytes: the plan's rule against the bytes held in the "
              "real `optimizer.state` after training.", ""]
    return lines + table(["row", "parameters", "analytic, bytes", "measured, bytes", "equal"],
                         [_state_cells(row) for row in r["rows"]])


def _state_cells(row: dict) -> list:
    state = row["optimizer_state_bytes"]
    measured = state["measured"]
    equal = ("yes" if measured == [state["analytic"]] else "NO") if measured else "—"
    return [f"`{row['label']}`",
            f"{row['parameter_count']:,}" if row["parameter_count"] else "—",
            f"{state['analytic']:,}",
            ", ".join(f"{m:,}" for m in measured) or "— (no run trained)", equal]


def _compare_curves(r: dict) -> list[str]:
    settings = "; ".join(f"`{row['label']}`: lr {row['config']['lr']:g}, "
                         f"{row['config_origin']}" for row in r["rows"])
    return ["", "## RSS over time", "", "![RSS over time](rss_over_time.png)", "",
            "## Return curves", "", "![Return curves](returns.png)", "",
            "Each row ran with its preset where one exists (`edgeag/algos/ppo/presets.toml`), "
            f"else the PPO defaults: {settings}.", ""]


HOW_TO_READ_COMPARE = [
    "## How to read this report", "",
    "- **Peak anonymous** memory (RssAnon + RssShmem) is what a budget counts: "
    "the memory the kernel cannot take back, on which a cgroup's `memory.max` "
    "OOM-kills; the plan estimates it. **Peak RSS** is each child's own kernel "
    "high-water mark (VmHWM) of the whole process, mapped library files included: "
    "the comparison users read. The spread is max − min over the seeds: two rows whose "
    "difference lies within it are not told apart by this measurement.",
    "- **Floor**: RSS after Python, torch and gymnasium are loaded and warmed up, "
    "measured in each run before training. For a small policy it is almost all of "
    "the peak, and an optimizer's state (see the exact table) is tiny beside it; "
    "rows then differ mostly by the library code their kernels map (the Δ file "
    "column), not by their state. Where the optimizer decides what fits is the "
    "capacity sweep: `edgeag compare --capacity`.",
    "- **Refused** runs never trained: the plan (floor + the items above) was over "
    "the budget, as for optimizers built on `torch.optim.Optimizer`, whose first "
    "use imports `torch._dynamo` (~70 MiB).",
    "- **Budget** runs trained until the guard saw anonymous memory above the budget, "
    "then stopped with a checkpoint (their peak is just above the budget).", ""]


def _compare_runs(r: dict) -> list[str]:
    def cells(row, run):
        at_end = (f"{mib(run.get('rss_anon_bytes'))} / {mib(run.get('rss_file_bytes'))}"
                  if run.get("rss_anon_bytes") else "—")
        ret = run.get("final_eval_return")
        return [f"`{row['label']}`", run["seed"], run["status"], mib(run.get("peak_rss_bytes")),
                mib(run.get("floor_bytes")), at_end,
                f"{run['wall_seconds']:.1f}" if run.get("wall_seconds") else "—",
                f"{ret:.1f}" if ret is not None else "—", f"`{run['run_dir']}`"]

    return ["## Runs", ""] + table(
        ["row", "seed", "status", "peak RSS, MiB", "floor, MiB", "anon / file at end, MiB",
         "train s", "eval return", "run directory"],
        [cells(row, run) for row in r["rows"] for run in row["runs"]])


# --- capacity -----------------------------------------------------------------------

def _phase(x: dict) -> str:
    setup, training = x.get("setup_peak_rss_bytes"), x.get("training_rss_bytes")
    if setup is None or training is None:
        return "—"
    return "setup (network init)" if setup >= training else "training"


def capacity_markdown(r: dict) -> str:
    s = r["settings"]
    labels = [row["label"] for row in r["rows"]]
    ref = reference_row(labels)
    probe = s["probe"]
    lines = ["# Capacity: the widest policy that trains inside each budget", "",
             device_line(r["device"]), "",
             f"Rows: {', '.join(f'`{x}`' for x in labels)} on {s['env']}, "
             f"{s['threads']} thread(s). "
             f"For each budget and row, the widest hidden width W (`hidden=[W, W]`, for the actor "
             f"and for the critic) whose training run peaked inside the budget, **measured by "
             f"running it**: a probe is an `edgeag train` run of {probe['iterations']} PPO "
             f"iterations ({probe['steps']:,} env steps, `update_epochs={probe['update_epochs']}`, "
             f"no evaluation) in a fresh process with no budget, so the plan refuses nothing; "
             f"it is judged by its own peak anonymous memory (RssAnon + RssShmem, what the budget "
             f"counts). A probe seen above the budget is stopped. Widths "
             f"double from {s['start_width']}, then bisect to within {s['tolerance']:.1%}. "
             f"{len(r['probes'])} probes, {r['seconds']:.0f} s.", ""]
    if r.get("interrupted"):
        lines += ["**Interrupted** with Ctrl-C: this report holds the searches that finished "
                  "and every probe.", ""]
    lines += table(["budget", "row", "widest W", "parameters", f"parameters × `{ref}`"
                    if ref else "ratio", "peak RSS at W, MiB", "before training, MiB",
                    "while training, MiB", "peak set by", "plan at W, MiB"],
                   [[f"{mib(x['budget_bytes'], 0)} MiB", f"`{x['row']}`", x["width"] or "none",
                     f"{x['parameter_count']:,}" if x["parameter_count"] else
                     (f"— (width 1 went above the budget: stopped at "
                      f"{mib(x['smallest_probe_anon_bytes'])} MiB)"
                      if x["smallest_probe_anon_bytes"] else "—"),
                     f"{x['parameter_ratio']:.2f}x" if x["parameter_ratio"] else "—",
                     mib(x["peak_rss_bytes"]), mib(x.get("setup_peak_rss_bytes")),
                     mib(x.get("training_rss_bytes")), _phase(x), mib(x["plan_total_bytes"])]
                    for x in r["results"]])
    lines += ["", "![Largest policy per budget](capacity.png)", "",
              "![Peak memory by width](capacity_probes.png)", "",
              "## How to read this report", "",
              "- The floor (Python, torch, gymnasium) is paid by every row; what remains of "
              "the budget above it holds parameters, gradients, optimizer state, update "
              "temporaries and activations, and whatever initialising the network needs.",
              "- `alphagrad` updates each parameter inside the backward pass as soon as its "
              "gradient is complete, so one gradient is alive at a time, and a weight above "
              "1M values never has a gradient of its size (it is updated from the gradient's "
              "factors, 4 MiB at a time); `alphagrad fuse_backward=false` keeps every gradient "
              "until "
              "`step()`; `adam` keeps gradients and two moment buffers; `torch-adam` adds "
              "the `torch._dynamo` import (~70 MiB) to that.",
              "- **before training** is the child's VmHWM just before its first iteration "
              "(imports, envs, building and initialising the network, the optimizer); **while "
              "training** the highest RSS its guard sampled (every 50 ms) after that. "
              "**peak set by** names the larger: where the memory goes at that width.",
              "- **plan at W** is what `edgeag train` would have planned for that width; where "
              "it differs from the measured peak, the measurement decides.",
              "- One probe per width: near a boundary, run-to-run noise (a few MiB) can move "
              "the answer by a step of the bisection.", "",
              "## Probes", ""]
    lines += table(["row", "width", "parameters", "result", "peak anonymous, MiB",
                    "peak RSS, MiB", "RSS before training, MiB", "RSS while training, MiB",
                    "floor (anonymous), MiB", "plan, MiB", "seconds"],
                   [[f"`{p['row']}`", p["width"],
                     f"{p['parameter_count']:,}" if p["parameter_count"] else "—",
                     "measured" if p["status"] == "measured" else
                     f"stopped above {mib(p['killed_above_bytes'], 0)} MiB",
                     mib(p["peak_anon_bytes"]) if p["status"] == "measured" else
                     f"> {mib(p['max_seen_anon_bytes'])} (seen)", mib(p.get("peak_rss_bytes")),
                     mib(p.get("setup_peak_rss_bytes")), mib(p.get("training_rss_bytes")),
                     mib(p.get("floor_anon_bytes")), mib(p["plan_total_bytes"]),
                     f"{p['seconds']:.1f}"]
                    for p in r["probes"]])
    return "\n".join(lines) + "\n"
