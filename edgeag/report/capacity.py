"""``edgeag compare --capacity``: per optimizer and budget, the widest MLP policy
whose training run stays inside the budget, **measured by running it**.

A probe is a short `edgeag train` run (two PPO iterations of the env's preset, one
epoch each, no evaluation) with ``hidden=[W, W]``, in a fresh process with no budget,
so the plan refuses nothing; it is judged by its own peak anonymous memory (RssAnon +
RssShmem, what a budget counts; its VmHWM is kept too). The parent reads the child's
anonymous memory every 20 ms and kills it once it is above the budget being searched
(it does not fit; waiting would only cost time and memory). The width search is a pure
function of a ``fits(width) -> bool`` callable: `widest_fitting`.

Budgets are searched from the largest down, and every probe is kept: a width measured
under 1 GiB answers 512 MiB and 256 MiB without running again.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeag.errors import EdgeagError
from edgeag.report.compare import FORMAT, progress_bar, resolve_rows
from edgeag.report.runs import Row, device_info, run_child, train_command

DEFAULT_ROWS = "alphagrad,alphagrad:fuse_backward=false,adam,alphagrad:engine=torch,torch-adam"
DEFAULT_BUDGETS = "256MB,512MB,1GB"
START_WIDTH = 64
MAX_WIDTH = 1 << 16
TOLERANCE = 1 / 32
"""Bisection stops when the bracket is narrower than this fraction of the width that
fits (parameters, which grow as width squared, to about 6%)."""
PROBE_ITERATIONS = 2
PROBE_SETTINGS = {"update_epochs": "1", "eval_episodes": "0"}
"""A probe's peak comes from its first updates (Adam's moments appear at the first
step); more epochs or an evaluation would only take longer."""


def widest_fitting(fits: Callable[[int], bool], start: int = START_WIDTH,
                   limit: int = MAX_WIDTH, tolerance: float = TOLERANCE) -> int | None:
    """The widest width in [1, ``limit``] for which ``fits`` holds, for a ``fits`` that
    is true up to some width and false beyond it: double from ``start`` while it fits,
    then bisect the bracket until it is at most ``max(1, tolerance * width)`` wide.
    None when even width 1 does not fit. ``tolerance=0`` finds the exact boundary."""
    if fits(start):
        low, high = start, None
        while high is None:
            if low >= limit:
                return limit
            nxt = min(2 * low, limit)
            if fits(nxt):
                low = nxt
            else:
                high = nxt
    elif start == 1 or not fits(1):
        return None
    else:
        low, high = 1, start
    while high - low > max(1, int(low * tolerance)):  # fits(low), not fits(high)
        mid = (low + high) // 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return low


@dataclass
class Probe:
    row: str
    width: int
    status: str
    """``measured`` (finished: ``peak_anon_bytes`` is its peak anonymous memory, what
    the budget counts) or ``exceeded`` (killed when its anonymous memory was seen above
    ``killed_above_bytes``)."""
    peak_anon_bytes: int | None = None
    killed_above_bytes: int | None = None
    max_seen_anon_bytes: int = 0
    peak_rss_bytes: int | None = None
    """Its whole RSS's high-water mark (VmHWM), anonymous and mapped files."""
    setup_peak_rss_bytes: int | None = None
    """VmHWM before the first iteration: imports, envs, network initialisation."""
    training_rss_bytes: int | None = None
    """Highest RSS sampled (every 50 ms) while training."""
    floor_anon_bytes: int | None = None
    plan_total_bytes: int | None = None
    parameter_count: int | None = None
    seconds: float = 0.0

    def fits(self, budget: int) -> bool | None:
        """Whether it fits ``budget``; None when this probe cannot tell (killed below it)."""
        if self.status == "measured":
            return self.peak_anon_bytes <= budget
        return False if budget <= self.killed_above_bytes else None


class Prober:
    """Runs and remembers probes of one row."""

    def __init__(self, env: str, row: Row, cfg, dims: tuple[int, int, bool], threads: int,
                 sets: dict, out: Path, bar):
        self.env, self.row, self.cfg, self.dims, self.threads = env, row, cfg, dims, threads
        self.sets, self.out, self.bar = sets, out, bar
        self.probes: dict[int, Probe] = {}

    def fits(self, width: int, budget: int) -> bool:
        known = self.probes.get(width)
        answer = known.fits(budget) if known else None
        if answer is None:
            known = self.probes[width] = self._run(width, kill_above=budget)
            answer = known.fits(budget)
        return answer

    def _run(self, width: int, kill_above: int) -> Probe:
        name = f"{self.row.slug}-w{width}"
        run_dir = self.out / "probes" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        hidden = ", ".join([str(width)] * len(self.cfg.hidden))
        settings = {**self.sets, **PROBE_SETTINGS, "hidden": f"[{hidden}]"}
        args = ["--threads", str(self.threads),
                "--total-steps", str(PROBE_ITERATIONS * self.cfg.batch)]
        for key, value in settings.items():
            args += ["--set", f"{key}={value}"]
        self.bar.set_postfix_str(f"width {width} ...")
        # The row's own settings come last in the command, so they win; a row may not
        # change the probe's hidden width.
        child = run_child(train_command(self.env, self.row, 1, run_dir, args),
                          self.out / "probes" / f"{name}.log", kill_above=kill_above,
                          threads=self.threads)
        probe = Probe(self.row.label, width, "exceeded", killed_above_bytes=kill_above,
                      max_seen_anon_bytes=child.max_seen_anon_bytes,
                      seconds=round(child.seconds, 2),
                      parameter_count=parameter_count(self.dims, [width] * len(self.cfg.hidden)))
        summary_path = run_dir / "summary.json"
        if child.exit_code == 0 and summary_path.exists():
            summary = json.loads(summary_path.read_text())
            probe = Probe(self.row.label, width, "measured", summary["peak_anon_bytes"], None,
                          child.max_seen_anon_bytes, summary["peak_rss_bytes"],
                          summary["setup_peak_rss_bytes"],
                          summary["max_sampled_rss_bytes"], summary["floor_anon_bytes"],
                          summary["plan_total_bytes"], summary["parameter_count"],
                          round(child.seconds, 2))
            (self.out / "probes" / f"{name}.json").write_text(json.dumps(summary, indent=1))
        elif child.exit_code is not None:
            raise EdgeagError(f"capacity probe {self.row.label} width {width} failed (exit "
                              f"{child.exit_code}: {child.last_error or 'see the log'}); log: "
                              f"{self.out / 'probes' / (name + '.log')}")
        shutil.rmtree(run_dir, ignore_errors=True)  # its checkpoint can be hundreds of MiB
        self.bar.update(1)
        shown = (f"{probe.peak_anon_bytes / 2**20:.0f} MiB anon" if probe.status == "measured" else
                 f"> {kill_above / 2**20:.0f} MiB, stopped")
        self.bar.set_postfix_str(f"width {width}: {shown}")
        return probe


def parameter_count(dims: tuple[int, int, bool], hidden: list[int]) -> int:
    """Parameters of `ActorCritic` for ``hidden`` (what a probe that was stopped before
    it could report them would have had)."""
    from edgeag.algos.ppo.algorithm import parameter_count as count

    return count(*dims, hidden)


def check_rows(rows: list[Row], sets: dict) -> None:
    if "hidden" in sets or any(k == "hidden" for row in rows for k, _ in row.options):
        raise EdgeagError("--capacity chooses the hidden widths itself: remove hidden from "
                          "--set and --optimizers")


def run_capacity(env: str, rows: list[Row], budgets: list[int], threads: int, out: Path,
                 profile=None, sets: dict | None = None, progress: bool = True) -> dict:
    """The widest width per (budget, row); returns the report. Ctrl-C stops at once:
    the report then holds the searches that finished (marked ``interrupted``)."""
    from edgeag.train.envs import env_dims

    sets = sets or {}
    check_rows(rows, sets)
    resolved = resolve_rows(env, rows, sets)
    dims = env_dims(env)
    t0 = time.monotonic()
    bar = progress_bar(None, "probe", progress)
    probers = {row: Prober(env, row, cfg, dims, threads, sets, out, bar)
               for row, cfg, _ in resolved}
    results = []
    interrupted = False
    try:
        for budget in sorted(budgets, reverse=True):
            for row, cfg, _ in resolved:
                bar.set_description_str(f"{budget / 2**20:.0f} MiB {row.label}")
                prober = probers[row]
                width = widest_fitting(
                    lambda w, prober=prober, budget=budget: prober.fits(w, budget))
                probe = probers[row].probes.get(width) if width else None
                results.append({
                    "budget_bytes": budget, "row": row.label, "width": width,
                    "hidden": [width] * len(cfg.hidden) if width else None,
                    "parameter_count": probe.parameter_count if probe else None,
                    "peak_anon_bytes": probe.peak_anon_bytes if probe else None,
                    "peak_rss_bytes": probe.peak_rss_bytes if probe else None,
                    "setup_peak_rss_bytes": probe.setup_peak_rss_bytes if probe else None,
                    "training_rss_bytes": probe.training_rss_bytes if probe else None,
                    "plan_total_bytes": probe.plan_total_bytes if probe else None,
                    "smallest_probe_anon_bytes": None if width else _smallest(probers[row]),
                })
    except KeyboardInterrupt:  # report the searches that finished and every probe
        interrupted = True
    finally:
        bar.close()
    _ratios(results, rows)
    return {
        "format": FORMAT, "kind": "capacity",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": device_info(profile),
        "settings": {"env": env, "budgets_bytes": sorted(budgets), "threads": threads,
                     "sets": sets, "probe": {"iterations": PROBE_ITERATIONS,
                                             "steps": PROBE_ITERATIONS * resolved[0][1].batch,
                                             **PROBE_SETTINGS},
                     "start_width": START_WIDTH, "tolerance": TOLERANCE},
        "seconds": round(time.monotonic() - t0, 1),
        "interrupted": interrupted,
        "rows": [{**row.as_dict(), "config_origin": origin, "depth": len(cfg.hidden)}
                 for row, cfg, origin in resolved],
        "results": results,
        "probes": [asdict(p) for prober in probers.values()
                   for p in sorted(prober.probes.values(), key=lambda p: p.width)],
    }


def _smallest(prober: Prober) -> int | None:
    """What the narrowest probe of a row that fits nothing was seen to take."""
    probe = prober.probes.get(1)
    if probe is None:
        return None
    return probe.peak_anon_bytes if probe.status == "measured" else probe.max_seen_anon_bytes


def reference_row(labels: list[str]) -> str | None:
    """Capacity ratios are against lean Adam (else torch.optim.Adam)."""
    return next((name for name in ("adam", "torch-adam") if name in labels), None)


def _ratios(results: list[dict], rows: list[Row]) -> None:
    ref = reference_row([row.label for row in rows])
    for r in results:
        base = next((x for x in results if x["budget_bytes"] == r["budget_bytes"]
                     and x["row"] == ref), None)
        ok = base and base["parameter_count"] and r["parameter_count"]
        r["reference"] = ref
        r["parameter_ratio"] = r["parameter_count"] / base["parameter_count"] if ok else None
