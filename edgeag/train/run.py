"""A training run from start to summary: threads, floor, plan, guard, loop,
checkpoints, evaluation, ``summary.json``. The same driver runs every algorithm
(`edgeag.train.Algorithm`: PPO, DQN, TD3); an iteration is the algorithm's block of
env steps and updates.

Order of events (each is reported):

1. set the engine's threads and warm it up (one small forward/backward), build the
   envs, then measure the **floor**: this process's anonymous memory with everything
   training imports;
2. **plan** the run against the budget; refuse (exit 2, nothing trained, nothing
   written) when it does not fit, naming the largest settings that would (with
   ``shrink_buffer``, a replay buffer is shrunk to the largest that fits instead);
3. train under the **budget guard**; at every iteration boundary, stop if the guard
   saw RSS above the budget (``stopped: budget``, exit 3) or the user pressed Ctrl-C
   (``stopped: interrupted``, exit 130), after writing a checkpoint;
4. evaluate the final policy deterministically and write ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np

from edgeag.errors import WRITE_ERRNOS, EdgeagError, WriteFailed, describe_write_error
from edgeag.hardcap import apply_rlimit, cgroup_memory_limit, inherited_cgroup
from edgeag.memory import (BUDGET_COUNTS, MiB, BudgetGuard, measure_floor, peak_rss_bytes,
                           proc_status, read_memory)
from edgeag.train import get_algorithm
from edgeag.train.config import TrainConfig, toml_dumps
from edgeag.train.envs import EVAL_SEED_OFFSET, check_spaces, evaluate, make_vector_env
from edgeag.train.rundir import RunDir, write_json, write_text

EXIT_OK, EXIT_BUDGET, EXIT_INTERRUPTED = 0, 3, 130
TIME_KEYS = ("time/fps", "time/elapsed_seconds", "memory/rss_bytes", "memory/anon_bytes",
             "memory/peak_rss_bytes")
"""Metrics that depend on the machine's speed and memory, not on the seed."""


class BudgetRefused(EdgeagError):
    """The plan does not fit the budget: nothing was trained (exit 2)."""


@dataclass
class RunOptions:
    budget_bytes: int | None = None
    """Budget on the process's anonymous memory (RssAnon + RssShmem, see
    `edgeag.memory.Reading`); None plans and samples without enforcing."""
    threads: int = 1
    profile: str | None = None
    resume: bool = False
    progress: bool = True
    tensorboard: bool = False
    hard_cap: bool = False
    dry_run: bool = False
    shrink_buffer: bool = False
    """When the replay buffer does not fit, shrink it to the largest that does (and say
    so) instead of refusing."""


def train(cfg: TrainConfig, run: RunDir, opts: RunOptions, log=print) -> tuple[int, dict]:
    """Run (or resume) ``cfg`` in ``run``; returns (exit code, summary)."""
    algo = get_algorithm(cfg.algo)
    engine = algo.prepare(cfg, opts.threads)
    envs = make_vector_env(cfg.env_id, cfg.num_envs, algo)  # spaces checked for algo
    obs_dim, action_dim, discrete = check_spaces(cfg.env_id, envs.single_observation_space,
                                                 envs.single_action_space, algo)
    if opts.shrink_buffer and algo.largest_buffer is None:
        envs.close()
        raise EdgeagError(f"--shrink-buffer applies to algorithms with a replay buffer "
                          f"(dqn, td3), not {algo.name}")
    floor = measure_floor()
    budget = opts.budget_bytes
    dims = (obs_dim, action_dim, discrete)
    plan = algo.plan(cfg, budget if budget is not None else 2**62, floor.anon_bytes, *dims)
    shrunk_from = None
    if budget is not None and not plan.fits and opts.shrink_buffer:
        size = algo.largest_buffer(cfg, budget, floor.anon_bytes, *dims)
        if size is not None:
            shrunk_from = cfg.buffer_size
            cfg = dataclasses.replace(cfg, buffer_size=size)
            plan = algo.plan(cfg, budget, floor.anon_bytes, *dims)
    log(f"engine: {engine}")
    log(f"floor {floor.anon_bytes / MiB:.1f} MiB anonymous ({floor.anon_bytes:,} bytes, "
        f"{BUDGET_COUNTS}: what the budget counts); RSS {floor.rss_bytes / MiB:.1f} MiB with "
        f"{floor.file_bytes / MiB:.1f} MiB of mapped files")
    table = plan.table().splitlines()
    log("memory plan:\n" + "\n".join(table if budget is not None else
                                      table[:-1] + ["  (no budget: planned, not enforced)"]))
    if budget is not None and not plan.fits:
        envs.close()
        raise BudgetRefused(
            f"plan {plan.total_bytes / MiB:.1f} MiB exceeds the budget {budget / MiB:.1f} MiB "
            f"({budget:,} bytes); {algo.what_fits(cfg, budget, floor.anon_bytes, *dims)}")
    if shrunk_from is not None:
        log(f"replay buffer shrunk to fit the budget: {cfg.buffer_size:,} transitions "
            f"(requested {shrunk_from:,})")
    if opts.dry_run:
        envs.close()
        return EXIT_OK, {"plan": plan.as_dict(), "floor_bytes": floor.rss_bytes,
                         "floor_anon_bytes": floor.anon_bytes}

    previous = {"wall_seconds": 0.0, "peak_rss_bytes": 0, "peak_anon_bytes": 0}
    if opts.resume and run.checkpoint.exists():
        ckpt = run.load_checkpoint()
        previous = {key: ckpt.get(key, 0) for key in previous}
    else:
        ckpt = None
        if opts.resume:  # stopped before its first checkpoint: start it again
            log(f"no checkpoint in {run.path} yet: training from step 0 with its config")
            run.truncate_metrics(0)
            run.truncate_rss(-1.0)
        run.path.mkdir(parents=True, exist_ok=True)
        write_text(run.config, toml_dumps({cfg.algo: cfg.as_dict(),
                                           "run": _run_info(cfg, opts, shrunk_from)}))
    # sampled from here on: building the policy can be the peak
    guard = BudgetGuard(budget if budget is not None else 2**62).start()
    try:
        if ckpt is None:
            guard.stream_to(run.rss)
        state = algo.build_state(cfg, envs)
        if ckpt is not None:
            ckpt["checkpoint_dir"] = run.checkpoint.parent
            restore(state, ckpt, run)
            del ckpt
            # the run directory changes only once the checkpoint has been accepted
            run.truncate_metrics(state.iteration)
            run.truncate_rss(previous["wall_seconds"])
            guard.stream_to(run.rss, previous["wall_seconds"])
            log(f"resumed at step {state.global_step:,} (iteration {state.iteration})")
    except BaseException:
        guard.stop()
        raise
    cap = None
    if opts.hard_cap and budget is not None:
        cap = inherited_cgroup()
        if cap is None:
            cap = apply_rlimit(budget, read_memory().anon)
        log(f"hard cap: {cap}")
    limit = cgroup_memory_limit()

    iteration = algo.make_iteration(state)
    writer = _tensorboard(run) if opts.tensorboard else None
    bar = _progress(cfg, state, opts)

    interrupted = []
    def on_sigint(signum, frame):
        if interrupted:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        interrupted.append(True)
        log("\ninterrupt: stopping at the end of this iteration (Ctrl-C again to abort)")
    old_handler = signal.signal(signal.SIGINT, on_sigint)

    setup_peak = peak_rss_bytes()  # imports, envs, network initialisation, optimizer
    guard.sample()
    setup_peak_anon = guard.peak_anon_bytes
    t_start = time.monotonic()
    stopped = "done"
    write_error: OSError | None = None
    saved = {"step": state.global_step, "iteration": state.iteration}  # on disk (or start)
    try:
        while state.iteration < cfg.num_iterations:
            try:
                step_start, steps_before = time.monotonic(), state.global_step
                finished, stats = iteration()
            except (MemoryError, RuntimeError) as e:
                if cap and (isinstance(e, MemoryError) or "alloc" in str(e)):
                    stopped = "budget"
                    log(f"hard cap hit ({type(e).__name__}: {str(e).splitlines()[0][:80]}); "
                        f"the last checkpoint is at step {saved['step']:,}")
                    state.global_step, state.iteration = saved["step"], saved["iteration"]
                    break
                raise
            state.iteration += 1
            row = _metrics_row(state, finished, stats, state.global_step - steps_before,
                               time.monotonic() - step_start,
                               time.monotonic() - t_start + previous["wall_seconds"])
            try:
                run.append_metrics(row)
            except OSError as e:
                if e.errno not in WRITE_ERRNOS:
                    raise
                write_error = e
            write_error = write_error or guard.write_error  # rss.csv, streamed by the guard
            if write_error is not None:
                stopped = "write_failed"
                state.global_step, state.iteration = saved["step"], saved["iteration"]
                break
            if writer is not None:
                for key, value in row.items():
                    if value is not None and key != "time/total_timesteps":
                        writer.add_scalar(key, value, state.global_step)
            if bar is not None:
                bar.update(state.global_step - steps_before)
                ret = row["rollout/ep_rew_mean"]
                bar.set_postfix_str(f"return {'-' if ret is None else f'{ret:.1f}'}  anon "
                                    f"{row['memory/anon_bytes'] / MiB:.0f}"
                                    f"{f'/{budget / MiB:.0f}' if budget else ''} MiB", refresh=False)
            if guard.exceeded:
                stopped = "budget"
            elif interrupted:
                stopped = "interrupted"
            last = state.iteration == cfg.num_iterations
            if stopped != "done" or last or state.iteration % cfg.checkpoint_every == 0:
                try:
                    _save(run, state, previous, t_start, guard)
                except MemoryError as e:  # the hard cap; the previous checkpoint is intact
                    if not cap:
                        raise
                    stopped = "budget"
                    log(f"hard cap hit while checkpointing ({str(e)[:80]}); the last "
                        f"checkpoint is at step {saved['step']:,}")
                    state.global_step, state.iteration = saved["step"], saved["iteration"]
                    break
                except OSError as e:  # disk full, file-size limit: the previous one is intact
                    if e.errno not in WRITE_ERRNOS:
                        raise
                    write_error, stopped = e, "write_failed"
                    state.global_step, state.iteration = saved["step"], saved["iteration"]
                    break
                saved = {"step": state.global_step, "iteration": state.iteration}
            if stopped != "done":
                break
    finally:
        guard.stop()
        signal.signal(signal.SIGINT, old_handler)
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()

    wall = time.monotonic() - t_start + previous["wall_seconds"]
    eval_returns = None
    if stopped == "done" and cfg.eval_episodes:
        space = envs.single_action_space
        eval_returns = evaluate(algo.act(state), cfg.env_id, state.obs_norm, cfg.eval_episodes,
                                cfg.seed + EVAL_SEED_OFFSET,
                                None if discrete else space.low, None if discrete else space.high)
    envs.close()
    end = read_memory()
    summary = {
        "env": cfg.env_id, "algo": cfg.algo, "optimizer": cfg.optimizer, "seed": cfg.seed,
        "steps": state.global_step, "iterations": state.iteration,
        "wall_seconds": round(wall, 3),
        "steps_per_second": round(state.global_step / wall, 1) if wall > 0 else None,
        "budget_bytes": budget, "budget_counts": BUDGET_COUNTS,
        "peak_anon_bytes": max(guard.peak_anon_bytes, previous["peak_anon_bytes"]),
        "peak_rss_bytes": max(guard.peak_rss_bytes(), previous["peak_rss_bytes"]),
        "rss_anon_bytes": end.anon, "rss_file_bytes": end.file,
        "max_sampled_rss_bytes": guard.max_sampled_rss_bytes, "rss_samples": guard.samples,
        "setup_peak_rss_bytes": setup_peak, "setup_peak_anon_bytes": setup_peak_anon,
        "floor_bytes": floor.rss_bytes, "floor_anon_bytes": floor.anon_bytes,
        "floor_file_bytes": floor.file_bytes,
        "profile": opts.profile, "threads": opts.threads,
        "plan_total_bytes": plan.total_bytes, "plan": plan.as_dict()["items"],
        "engine": engine,
        "optimizer_state_bytes": algo.optimizer_state_bytes(state),
        "parameter_count": algo.parameter_count(state),
        "buffer_size": getattr(cfg, "buffer_size", None), "buffer_shrunk_from": shrunk_from,
        "final_eval_return": None if eval_returns is None else {
            "mean": float(np.mean(eval_returns)), "std": float(np.std(eval_returns)),
            "episodes": len(eval_returns), "returns": eval_returns},
        "hard_cap": cap, "cgroup_memory_limit": limit and {"bytes": limit[0], "where": limit[1]},
        "stopped": stopped,
        "write_error": None if write_error is None else describe_write_error(write_error),
        "checkpoint": str(run.checkpoint.relative_to(run.path)),
    }
    try:
        write_json(run.summary, summary)
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        log(f"cannot write {run.summary}: {describe_write_error(e)}")
        write_error = write_error or e
    code = {"done": EXIT_OK, "budget": EXIT_BUDGET, "interrupted": EXIT_INTERRUPTED,
            "write_failed": WriteFailed.exit_code}[stopped]
    if write_error is not None and code == EXIT_OK:
        code = WriteFailed.exit_code
    return code, summary


def restore(state, ckpt: dict, run: RunDir) -> None:
    """``state.restore(ckpt)``, with a checkpoint that does not fit the run's own
    config.toml (edited by hand, or from another run) refused as bad input."""
    try:
        state.restore(ckpt)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
        detail = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise EdgeagError(f"cannot resume: {run.checkpoint} does not match {run.config} "
                          f"({type(e).__name__}: {detail})") from None


def _save(run: RunDir, state, previous: dict, t_start: float, guard: BudgetGuard) -> None:
    ckpt = state.checkpoint()
    ckpt["wall_seconds"] = time.monotonic() - t_start + previous["wall_seconds"]
    ckpt["peak_rss_bytes"] = max(guard.peak_rss_bytes(), previous["peak_rss_bytes"])
    ckpt["peak_anon_bytes"] = max(guard.peak_anon_bytes, previous["peak_anon_bytes"])
    files = state.checkpoint_files() if hasattr(state, "checkpoint_files") else None
    run.save_checkpoint(ckpt, files)


def _metrics_row(state, finished, stats: dict, steps: int, seconds: float,
                 elapsed: float) -> dict:
    recent = list(state.recent)
    status = proc_status()
    now = read_memory()
    return {
        "time/iterations": state.iteration,
        "time/total_timesteps": state.global_step,
        "time/fps": round(steps / seconds, 1) if seconds > 0 else None,
        "time/elapsed_seconds": round(elapsed, 3),
        "rollout/ep_rew_mean": float(np.mean([r for r, _ in recent])) if recent else None,
        "rollout/ep_len_mean": float(np.mean([n for _, n in recent])) if recent else None,
        "rollout/episodes": len(finished),
        **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in stats.items()},
        "memory/rss_bytes": now.rss,
        "memory/anon_bytes": now.anon,
        "memory/peak_rss_bytes": status.get("VmHWM"),
    }


def _run_info(cfg: TrainConfig, opts: RunOptions, shrunk_from: int | None) -> dict:
    from edgeag import __version__
    info = {"algo": cfg.algo, "profile": opts.profile or "", "threads": opts.threads,
            "budget_bytes": opts.budget_bytes or 0, "edgeag": __version__,
            "numpy": np.__version__}
    torch = sys.modules.get("torch")  # only where the run imports it (its engine)
    if torch is not None:
        info["torch"] = torch.__version__
    if shrunk_from is not None:
        info["buffer_size_requested"] = shrunk_from
    return info


def _progress(cfg: TrainConfig, state, opts: RunOptions):
    if not opts.progress:
        return None
    from tqdm import tqdm
    return tqdm(total=cfg.planned_steps, initial=state.global_step,
                unit="step", unit_scale=True, dynamic_ncols=True,
                desc=f"{cfg.algo} {cfg.env_id}", disable=None)


def _tensorboard(run: RunDir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise EdgeagError("--tensorboard needs the tensorboard package "
                          "(pip install tensorboard)") from None
    return SummaryWriter(str(run.path / "tensorboard"))
