"""``edgeag compare`` and ``edgeag report``: validate every input before anything
runs or is written, then hand over to `run_compare` / `run_capacity` / `merge_markdown`."""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeag.errors import EdgeagError, torch_available

MATPLOTLIB_MISSING = ("edgeag compare draws its figures with matplotlib, which is not "
                      "installed: pip install 'edgeag[report]'")


@dataclass(frozen=True)
class CompareRequest:
    """What ``edgeag compare`` was asked: its flags, as one object (`launch_compare`)."""

    env: str = "CartPole-v1"
    optimizers: str | None = None
    seeds: str | None = None
    profile: str | None = None
    budget: str | None = None
    capacity: bool = False
    budgets: str | None = None
    total_steps: int | None = None
    sets: list[str] = field(default_factory=list)
    threads: int | None = None
    out: str | None = None
    progress: bool = True


def launch_compare(r: CompareRequest) -> int:
    """Run the comparison (or the capacity sweep), write the report, print where."""
    from edgeag.report import capacity as cap
    from edgeag.report import compare as cmp
    from edgeag.report.render import write_report
    from edgeag.report.runs import parse_rows
    from edgeag.train.config import parse_seeds, parse_set
    from edgeag.train.device import resolve_device
    from edgeag.train.envs import env_dims

    prof, device = resolve_device(r.profile, r.budget, r.threads)
    sizes = _capacity_sizes(r, prof) if r.capacity else _check_compare(r, device.budget_bytes)
    rows = parse_rows(r.optimizers or (cap.DEFAULT_ROWS if r.capacity else cmp.DEFAULT_ROWS))
    seed_list = parse_seeds(r.seeds or "3")
    overrides = parse_set(r.sets)
    if r.capacity:
        cap.check_rows(rows, overrides)
    resolved = cmp.resolve_rows(r.env, rows, overrides)  # every row's settings, before any run
    torch_rows = [row.label for row, cfg, _ in resolved if cfg.engine == "torch"]
    if torch_rows and not torch_available():
        raise EdgeagError(torch_rows_message(torch_rows))
    if importlib.util.find_spec("matplotlib") is None:
        raise EdgeagError(MATPLOTLIB_MISSING)
    env_dims(r.env)
    out_dir = Path(r.out) if r.out else default_out(prof, r.capacity)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise EdgeagError(f"{out_dir} is not empty: choose another --out (a report is never "
                          "written over another)")
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    threads = device.threads
    if r.capacity:
        log(f"edgeag compare --capacity: {len(rows)} rows ({', '.join(x.label for x in rows)}) "
            f"on {r.env}, budgets {', '.join(f'{b / 2**20:.0f} MiB' for b in sizes)}, "
            f"{threads} thread(s); probes run one at a time; writing to {out_dir}")
        report = cap.run_capacity(r.env, rows, sizes, threads, out_dir, profile=prof,
                                  sets=overrides, progress=r.progress)
    else:
        budget_bytes = device.budget_bytes
        log(f"edgeag compare: {len(rows)} rows × {len(seed_list)} seed(s) on {r.env}, budget "
            f"{budget_bytes / 2**20:.1f} MiB ({budget_bytes:,} bytes), {threads} thread(s); "
            f"each run in its own process; writing to {out_dir}")
        report = cmp.run_compare(cmp.CompareSettings(
            env=r.env, rows=rows, seeds=seed_list, budget_bytes=budget_bytes, threads=threads,
            out=out_dir, profile=prof, profile_arg=r.profile, total_steps=r.total_steps,
            sets=overrides, progress=r.progress))
    print("report: " + ", ".join(str(p) for p in write_report(report, out_dir)))
    return _outcome(report, r.capacity)


def _capacity_sizes(r: CompareRequest, prof) -> list[int]:
    """``--capacity``'s budgets, each one the RAM here (and the profile's) can reach."""
    import psutil

    from edgeag.profiles import format_size, parse_size
    from edgeag.report import capacity as cap
    from edgeag.report.runs import split_top_level

    if r.budget is not None:
        raise EdgeagError("--capacity searches every size in --budgets (default "
                          f"{cap.DEFAULT_BUDGETS}); --budget is for the comparison runs")
    if r.seeds is not None or r.total_steps is not None:
        raise EdgeagError("--capacity runs short probes of its own (seed 1, "
                          f"{cap.PROBE_ITERATIONS} iterations): --seeds and --total-steps "
                          "are for the comparison runs")
    ram = psutil.virtual_memory().total
    limit = min(ram, prof.ram_bytes) if prof else ram
    sizes = []
    for text in split_top_level(r.budgets or cap.DEFAULT_BUDGETS):
        nbytes = parse_size(text.strip())
        if nbytes > limit:
            raise EdgeagError(f"invalid budget {text.strip()!r} in --budgets: "
                              f"{format_size(nbytes)} is more than the RAM here "
                              f"({format_size(limit)}); a probe must be able to reach it")
        sizes.append(nbytes)
    if len(set(sizes)) != len(sizes):
        raise EdgeagError(f"invalid --budgets {r.budgets!r}: a size is listed twice")
    return sizes


def _check_compare(r: CompareRequest, budget_bytes: int | None) -> list[int]:
    """A comparison's own flags (one budget, a positive length); no capacity sizes."""
    if r.budgets is not None:
        raise EdgeagError("--budgets is for --capacity; a comparison runs under one --budget")
    if budget_bytes is None:
        raise EdgeagError("edgeag compare needs a budget: --budget SIZE (e.g. 256MB) or "
                          "--profile NAME (its default budget)")
    if r.total_steps is not None and r.total_steps < 1:
        raise EdgeagError(f"invalid --total-steps {r.total_steps}: expected a positive integer")
    return []


def _outcome(report: dict, capacity: bool) -> int:
    """Print the headline figures; the exit code (130 interrupted, 1 a run failed)."""
    from edgeag.report.render import headline

    if report["interrupted"]:
        print("edgeag: interrupted: the report holds what finished before Ctrl-C",
              file=sys.stderr)
        return 130
    if capacity:
        for x in report["results"]:
            ratio = (f", {x['parameter_ratio']:.2f}x {x['reference']}"
                     if x["parameter_ratio"] else "")
            print(f"{x['budget_bytes'] / 2**20:6.0f} MiB  {x['row']:32s} "
                  + (f"W={x['width']} ({x['parameter_count']:,} parameters{ratio})"
                     if x["width"] else "none fits"))
        return 0
    for d in report["differences"]:
        if d["row"] in ("adam", "torch-adam"):
            print(headline(d).replace("**", ""))
    failed = [f"{row['label']}: {m}" for row in report["rows"] for m in row["failures"]]
    if failed:
        print("some runs failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


def torch_rows_message(labels: list[str]) -> str:
    """The one-line refusal of rows that train on the torch engine where torch is not
    installed."""
    named = ", ".join(repr(label) for label in labels)
    rows = f"rows {named} train" if len(labels) > 1 else f"row {named} trains"
    return (f"edgeag compare: {rows} on the torch engine, which needs torch, not installed: "
            "pip install 'edgeag[report]' (torch, matplotlib, lion-pytorch), or compare "
            "numpy-engine rows only, e.g. --optimizers alphagrad,adam,sgd")


def default_out(prof, capacity: bool) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kind = "capacity" if capacity else "compare"
    return Path("results") / f"{kind}-{prof.name if prof else 'noprofile'}-{stamp}"


def launch_report(paths: list[str], out: str | None) -> int:
    """Merge report.json files into one Markdown comparison (stdout, or ``out``)."""
    from edgeag.io import write_text
    from edgeag.report.merge import merge_markdown

    if out and Path(out).is_dir():
        raise EdgeagError(f"invalid --out {out!r}: a directory (expected a file such as "
                          "merged.md)")
    text = merge_markdown(paths)
    if out:
        write_text(Path(out), text)
        print(f"report: {out}")
    else:
        sys.stdout.write(text)
    return 0
