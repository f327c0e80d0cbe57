"""``edgeag compare``: every (row, seed) trains alone in a fresh `edgeag train`
process under the budget; the report gathers each run's ``summary.json`` beside the
analytic memory plan of its row.

A run the plan refuses (exit 2 before training) or the guard stops (exit 3) is a
result, reported as such; only a child that fails otherwise makes compare exit 1
(after writing the report).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeag.errors import EdgeagError
from edgeag.report.runs import Row, device_info, run_child, spread, train_command

FORMAT = "edgeag-report/1"
DEFAULT_ROWS = ("alphagrad,adam,alphagrad:engine=torch,adam:engine=torch,torch-adam,sgd,"
                "sgd:momentum=0.9,alphagrad:momentum=0.9,torch-adafactor,lion")
"""Every optimizer on its default engine (numpy where it runs there), and AlphaGrad and
Adam on the torch engine too: what the framework costs beside what the optimizer saves."""
"""Every optimizer of the registry; momentum 0.9 is the paper's AlphaGrad mode."""
_FLOOR = re.compile(r"^floor [\d.]+ MiB anonymous \(([\d,]+) bytes", re.M)
_REFUSED = re.compile(r"^plan ([\d.]+) MiB exceeds the budget")


@dataclass
class CompareSettings:
    env: str
    rows: list[Row]
    seeds: list[int]
    budget_bytes: int
    threads: int
    out: Path
    profile: object = None
    """The `DeviceProfile`, or None."""
    profile_arg: str | None = None
    """``--profile`` as given (a name or a TOML path), passed on to the children."""
    total_steps: int | None = None
    sets: dict = field(default_factory=dict)
    """``--set`` for every row (a row's own settings win)."""
    progress: bool = True


def resolve_rows(env: str, rows: list[Row], sets: dict) -> list[tuple[Row, object, str]]:
    """(row, resolved PPOConfig, where it came from) per row, as its child will resolve
    it; EdgeagError naming the row for a bad setting."""
    from edgeag.train.config import resolve_config

    out = []
    for row in rows:
        try:
            cfg, origin = resolve_config(env, row.optimizer, {**sets, **dict(row.options)})
        except EdgeagError as e:
            raise EdgeagError(f"row {row.label!r}: {e}") from None
        out.append((row, cfg, origin))
    return out


def analytic_plan(cfg, budget_bytes: int, dims: tuple[int, int, bool]) -> dict:
    """The memory plan's items for ``cfg`` without the floor (which only a run measures):
    exactly what `edgeag train` plans above its measured floor."""
    from edgeag.algos import get_algorithm
    from edgeag.algos.base import PlanInputs

    plan = get_algorithm(cfg.algo).plan(cfg, PlanInputs(budget_bytes, 0, *dims))
    return {item.name: item.nbytes for item in plan.items if item.name != "floor"}


def run_compare(s: CompareSettings) -> dict:
    """Train every (row, seed); returns the report (the caller writes it). Ctrl-C
    stops at once and returns the report of the runs that finished, marked
    ``interrupted``."""
    from edgeag.train.envs import env_dims

    steps = {"total_steps": s.total_steps} if s.total_steps else {}
    resolved = resolve_rows(s.env, s.rows, {**s.sets, **steps})
    dims = env_dims(s.env)
    args = ["--budget", str(s.budget_bytes), "--threads", str(s.threads)]
    if s.profile_arg:
        args += ["--profile", s.profile_arg]
    if s.total_steps:
        args += ["--total-steps", str(s.total_steps)]
    for key, value in s.sets.items():
        args += ["--set", f"{key}={value}"]

    jobs = [(row, seed) for row, _, _ in resolved for seed in s.seeds]
    bar = progress_bar(len(jobs), "run", s.progress)
    runs: dict[Row, list[dict]] = {row: [] for row in s.rows}
    t0 = time.monotonic()
    interrupted = False
    try:
        for row, seed in jobs:
            bar.set_description_str(f"{row.label} seed {seed}")
            rel = Path("runs") / f"{row.slug}-s{seed}"
            child = run_child(train_command(s.env, row, seed, s.out / rel, args),
                              s.out / rel / "train.log", threads=s.threads)
            result = _result(child, s.out / rel, rel, seed)
            runs[row].append(result)
            bar.update(1)
            bar.set_postfix_str(_postfix(row, result))
    except KeyboardInterrupt:  # report what finished; the run in progress is dropped
        interrupted = True
    finally:
        bar.close()

    rows = [_row_summary(row, cfg, origin, runs[row], analytic_plan(cfg, s.budget_bytes, dims))
            for row, cfg, origin in resolved]
    return {
        "format": FORMAT, "kind": "compare",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": device_info(s.profile),
        "settings": {"env": s.env, "budget_bytes": s.budget_bytes, "seeds": s.seeds,
                     "threads": s.threads, "total_steps": resolved[0][1].total_steps,
                     "sets": s.sets},
        "seconds": round(time.monotonic() - t0, 1),
        "interrupted": interrupted,
        "rows": rows,
        "differences": differences(rows),
    }


def progress_bar(total: int | None, unit: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, dynamic_ncols=True, disable=not enabled or None)


def _postfix(row: Row, r: dict) -> str:
    if r["status"] in ("done", "budget"):
        return (f"{row.label}: {r['status']}, peak {r['peak_anon_bytes'] / 2**20:.1f} MiB anon, "
                f"{r['peak_rss_bytes'] / 2**20:.1f} MiB RSS")
    return f"{row.label}: {r['status']}"


SUMMARY_KEYS = ("peak_anon_bytes", "peak_rss_bytes", "rss_anon_bytes", "rss_file_bytes",
                "max_sampled_rss_bytes",
                "setup_peak_rss_bytes",
                "floor_bytes", "floor_anon_bytes", "floor_file_bytes", "plan_total_bytes",
                "optimizer_state_bytes", "parameter_count", "steps", "wall_seconds",
                "steps_per_second")


def _result(child, run_dir: Path, rel: Path, seed: int) -> dict:
    """One run as the report keeps it: from its summary.json, or from its refusal."""
    out = {"seed": seed, "exit_code": child.exit_code, "run_dir": str(rel),
           "process_seconds": round(child.seconds, 2)}
    summary_path = run_dir / "summary.json"
    if child.exit_code in (0, 3) and summary_path.exists():
        summary = json.loads(summary_path.read_text())
        ev = summary.get("final_eval_return")
        out.update(status=summary["stopped"], **{k: summary.get(k) for k in SUMMARY_KEYS},
                   final_eval_return=ev["mean"] if ev else None)
        return out
    log = (run_dir / "train.log").read_text(errors="replace")
    floor = _FLOOR.search(log)
    refused = _REFUSED.match(child.last_error)
    out.update(status="refused" if child.exit_code == 2 and refused else "failed",
               message=child.last_error or f"exit code {child.exit_code}",
               floor_anon_bytes=int(floor.group(1).replace(",", "")) if floor else None,
               plan_total_bytes=round(float(refused.group(1)) * 2**20) if refused else None)
    return out


def _row_summary(row: Row, cfg, origin: str, runs: list[dict], plan: dict) -> dict:
    measured = [r for r in runs if r["status"] in ("done", "budget")]
    def get(key):
        return [r[key] for r in measured if r.get(key) is not None]
    above = [r["peak_rss_bytes"] - r["floor_bytes"] for r in measured]
    statuses = {}
    for r in runs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {
        **row.as_dict(),
        "config_origin": origin,
        "config": {k: v for k, v in cfg.as_dict().items()
                   if k in ("lr", "alpha", "momentum", "hidden", "total_steps", "fuse_backward")},
        "plan": plan,
        "plan_above_floor_bytes": sum(plan.values()),
        "statuses": statuses,
        "peak_anon_bytes": spread(get("peak_anon_bytes")),
        "peak_rss_bytes": spread(get("peak_rss_bytes")),
        "floor_anon_bytes": spread([r["floor_anon_bytes"] for r in runs
                                    if r.get("floor_anon_bytes")]),
        "floor_bytes": spread([r["floor_bytes"] for r in runs if r.get("floor_bytes")]),
        "above_floor_bytes": spread(above),
        "rss_anon_bytes": spread(get("rss_anon_bytes")),
        "rss_file_bytes": spread(get("rss_file_bytes")),
        "optimizer_state_bytes": {"analytic": plan["optimizer state"],
                                  "measured": sorted(set(get("optimizer_state_bytes")))},
        "parameter_count": (get("parameter_count") or [None])[0],
        "final_eval_return": spread(get("final_eval_return")),
        "steps_per_second": spread(get("steps_per_second")),
        "refusals": sorted({r["message"] for r in runs if r["status"] == "refused"}),
        "failures": sorted({r["message"] for r in runs if r["status"] == "failed"}),
        "runs": runs,
    }


def _median_delta(row: dict, base: dict, key: str) -> float | None:
    a, b = row.get(key), base.get(key)
    return a["median"] - b["median"] if a and b else None


def baseline(rows: list[dict]) -> dict | None:
    """The row the others are measured against: plain AlphaGrad, else the first row."""
    plain = [r for r in rows if r["optimizer"] == "alphagrad" and not r["options"]]
    return (plain or rows or [None])[0]


def differences(rows: list[dict]) -> list[dict]:
    """Each row's peak RSS against the baseline's: median difference, the range the
    difference spans over the runs, the analytic difference, and whether the measured
    difference is larger than the run-to-run spread."""
    base = baseline(rows)
    if base is None or base["peak_rss_bytes"] is None:
        return []
    b = base["peak_rss_bytes"]
    out = []
    for row in rows:
        p = row["peak_rss_bytes"]
        if row is base or p is None:
            continue
        delta = p["median"] - b["median"]
        noise = max(p["range"], b["range"])
        out.append({
            "row": row["label"], "baseline": base["label"],
            "peak_median_delta_bytes": delta,
            "peak_delta_low_bytes": p["min"] - b["max"],
            "peak_delta_high_bytes": p["max"] - b["min"],
            "spread_bytes": noise,
            "plan_delta_bytes": row["plan_above_floor_bytes"] - base["plan_above_floor_bytes"],
            "optimizer_state_delta_bytes": (row["optimizer_state_bytes"]["analytic"]
                                            - base["optimizer_state_bytes"]["analytic"]),
            "beyond_spread": abs(delta) > noise,
            # RSS at the end of the runs, split: anonymous memory (tensors, allocator) and
            # file-backed pages (mostly the code of the kernels a row uses)
            "anon_at_end_delta_bytes": _median_delta(row, base, "rss_anon_bytes"),
            "file_at_end_delta_bytes": _median_delta(row, base, "rss_file_bytes"),
        })
    return out
