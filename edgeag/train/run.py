"""A training run from start to summary: threads, floor, plan, guard, loop,
checkpoints, evaluation, ``summary.json``. The same driver runs every algorithm
(`edgeag.train.Algorithm`: PPO, DQN, TD3), for ``edgeag train`` and for the Python API
(`edgeag.api`) alike; an iteration is the algorithm's block of env steps and updates.

Order of events (each is reported):

1. `Trainer.setup`: set the engine's threads and warm it up (one small forward/backward),
   build the envs, then measure the **floor**: this process's anonymous memory with
   everything training imports; **plan** the run against the budget; refuse
   (`BudgetRefused`, exit 2, nothing trained, nothing written) when it does not fit,
   naming the largest settings that would (with ``shrink_buffer``, a replay buffer is
   shrunk to the largest that fits instead);
2. `Trainer.start`: build the networks and optimizers, fresh, from a checkpoint (resume)
   or from another run's weights (fine-tuning, ``init_from``);
3. `Trainer.loop`: train under the **budget guard**; at every iteration boundary,
   evaluate when due (``eval_every``: the best checkpoint is kept), call the callbacks,
   and stop if the guard saw memory above the budget (``stopped: budget``, exit 3), the
   user pressed Ctrl-C (``stopped: interrupted``, exit 130), the evaluation reached
   ``stop_at_return`` or a callback returned False, after writing a checkpoint;
4. `Trainer.finish`: evaluate the final policy deterministically and write ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from edgeag.algos import get_algorithm
from edgeag.algos.base import PlanInputs
from edgeag.algos.loop_state import due
from edgeag.engine.threads import workload_threads
from edgeag.errors import WRITE_ERRNOS, EdgeagError, WriteFailed, describe_write_error
from edgeag.io import atomic_write, toml_dumps, write_json, write_text
from edgeag.memory import (
    BUDGET_COUNTS,
    BudgetGuard,
    MiB,
    measure_floor,
    peak_rss_bytes,
    proc_status,
    read_memory,
)
from edgeag.memory.hardcap import apply_rlimit, cgroup_memory_limit, inherited_cgroup
from edgeag.train.config import TrainConfig
from edgeag.train.device import Change, Device
from edgeag.train.envs import EVAL_SEED_OFFSET, EnvMaker, check_spaces, evaluate, make_vector_env
from edgeag.train.rundir import RunDir

EXIT_OK, EXIT_BUDGET, EXIT_INTERRUPTED = 0, 3, 130
TIME_KEYS = ("time/fps", "time/elapsed_seconds", "memory/rss_bytes", "memory/anon_bytes",
             "memory/peak_rss_bytes")
"""Metrics that depend on the machine's speed and memory, not on the seed."""
STOPS = {"done": EXIT_OK, "return_threshold": EXIT_OK, "callback": EXIT_OK,
         "budget": EXIT_BUDGET, "interrupted": EXIT_INTERRUPTED,
         "write_failed": WriteFailed.exit_code}
"""``summary.json``'s ``stopped`` values and the exit code of each."""


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
    eval_every: int | None = None
    """Evaluate (``cfg.eval_episodes`` deterministic episodes, as the final evaluation)
    every this many env steps, at the first iteration boundary past each multiple, and
    keep the best policy in ``checkpoints/best.safetensors``."""
    stop_at_return: float | None = None
    """Stop (with a checkpoint) once a periodic evaluation's mean return reaches it."""
    eval_episodes: int | None = None
    """Episodes of each periodic evaluation (None: ``cfg.eval_episodes``)."""
    callbacks: list = field(default_factory=list)
    """Called after every iteration with its metrics row; returning False stops the run
    cleanly (with a checkpoint)."""
    hard_cap_mode: str | None = None
    """The ``--hard-cap`` value recorded with the run (auto, cgroup, rlimit)."""
    init_from: str | None = None
    """A run directory whose weights (and PPO's observation normaliser) start this run."""
    init_bytes: int = 0
    """The arrays of ``init_from``'s checkpoint: in memory while the networks take them
    (a plan item)."""
    changes: list = field(default_factory=list)
    """`edgeag.train.device.Change` s made on resume, recorded in config.toml."""
    run_info: dict = field(default_factory=dict)
    """Extra entries of config.toml's ``[run]`` table (where the env came from, ...)."""

    @property
    def device(self) -> Device:
        return Device(self.profile, self.budget_bytes, self.threads,
                      self.hard_cap_mode or ("auto" if self.hard_cap else None))


def train(cfg: TrainConfig, run: RunDir, opts: RunOptions, log=print,
          env: EnvMaker | None = None) -> tuple[int, dict]:
    """Run (or resume) ``cfg`` in ``run``; returns (exit code, summary)."""
    trainer = Trainer(cfg, run, opts, log, env)
    try:
        plan = trainer.setup()
        if opts.dry_run:
            return EXIT_OK, {"plan": plan.as_dict(), "floor_bytes": trainer.floor.rss_bytes,
                             "floor_anon_bytes": trainer.floor.anon_bytes}
        # passed on, not kept here: the checkpoint's arrays are freed once restored
        trainer.start(run.load_checkpoint() if opts.resume and run.checkpoint.exists() else None)
        stopped = trainer.loop()
        return trainer.finish(stopped)
    finally:
        trainer.close()


class Trainer:
    """One run held in memory: its config, device settings, envs, networks, optimizers,
    normalisers, RNG and run directory. `edgeag.train.run.train` (the CLI) and the Python
    API's models (`edgeag.api`) drive it through the same four steps."""

    def __init__(self, cfg: TrainConfig, run: RunDir, opts: RunOptions, log=print,
                 env: EnvMaker | None = None):
        self.cfg, self.run, self.opts, self.log = cfg, run, opts, log
        self.env = env or EnvMaker(cfg.env_id, cfg.env_kwargs)
        self.algo = get_algorithm(cfg.algo)
        self.envs = self.state = self.plan = self.floor = self.runtime = None
        self.shrunk_from = None
        self.previous = {"wall_seconds": 0.0, "peak_rss_bytes": 0, "peak_anon_bytes": 0}
        self.best_return: float | None = None
        self.guard = None
        self._guard_fresh = True
        self.cap = self.limit = None
        self.wall, self.t_start = 0.0, None

    # --- 1. threads, envs, floor, plan ----------------------------------------------
    def setup(self):
        cfg, opts, algo, log = self.cfg, self.opts, self.algo, self.log
        self.threads, self.threads_reason = workload_threads(opts.threads, cfg.update_macs)
        self.runtime = algo.prepare(cfg, self.threads)
        if opts.tensorboard:
            from edgeag.train import tblog
            tblog.prepare()  # its imports belong to the floor
        self.envs = envs = make_vector_env(self.env, cfg.num_envs, algo)  # spaces checked
        obs_dim, action_dim, discrete = check_spaces(cfg.env_id, envs.single_observation_space,
                                                     envs.single_action_space, algo)
        if opts.shrink_buffer and algo.largest_buffer is None:
            from edgeag.algos import ALGORITHMS, get_algorithm
            buffered = [n for n in ALGORITHMS if get_algorithm(n).largest_buffer is not None]
            raise EdgeagError(f"--shrink-buffer applies to algorithms with a replay buffer "
                              f"({', '.join(buffered)}), not {algo.name}")
        self.floor = floor = measure_floor()
        budget = opts.budget_bytes
        self.dims = (obs_dim, action_dim, discrete)
        plan = self._plan(budget if budget is not None else 2**62)
        if budget is not None and not plan.fits and opts.shrink_buffer:
            size = algo.largest_buffer(cfg, self._room(budget))
            if size is not None:
                self.shrunk_from = cfg.buffer_size
                self.cfg = cfg = dataclasses.replace(cfg, buffer_size=size)
                plan = self._plan(budget)
        log(f"runtime: {self.runtime} ({self.threads_reason})")
        log(f"floor {floor.anon_bytes / MiB:.1f} MiB anonymous ({floor.anon_bytes:,} bytes, "
            f"{BUDGET_COUNTS}: what the budget counts); RSS {floor.rss_bytes / MiB:.1f} MiB with "
            f"{floor.file_bytes / MiB:.1f} MiB of mapped files")
        table = plan.table().splitlines()
        log("memory plan:\n" + "\n".join(table if budget is not None else
                                          table[:-1] + ["  (no budget: planned, not enforced)"]))
        if budget is not None and not plan.fits:
            raise BudgetRefused(
                f"plan {plan.total_bytes / MiB:.1f} MiB exceeds the budget {budget / MiB:.1f} MiB "
                f"({budget:,} bytes); "
                f"{algo.what_fits(cfg, self._room(budget))}")
        if self.shrunk_from is not None:
            log(f"replay buffer shrunk to fit the budget: {cfg.buffer_size:,} transitions "
                f"(requested {self.shrunk_from:,})")
        self.plan = plan
        return plan

    def _plan(self, budget: int):
        plan = self.algo.plan(self.cfg, self._inputs(budget))
        if self.opts.init_bytes:
            from edgeag.memory import PlanItem
            plan = plan.with_item(PlanItem("initial weights", self.opts.init_bytes,
                                           f"{self.opts.init_from}'s checkpoint, read while "
                                           "the networks take it"))
        if self.opts.tensorboard:
            from edgeag.train import tblog
            plan = plan.with_item(tblog.plan_item())
        return plan

    def _inputs(self, budget: int) -> PlanInputs:
        return PlanInputs(budget, self.floor.anon_bytes, *self.dims)

    def _room(self, budget: int) -> PlanInputs:
        """``budget`` less what `_plan` adds to the algorithm's plan (the logger): what the
        algorithm's own searches (``largest_buffer``, ``what_fits``) may fill."""
        algo_plan = self.algo.plan(self.cfg, self._inputs(budget))
        return self._inputs(budget - (self._plan(budget).total_bytes - algo_plan.total_bytes))

    # --- 2. the networks: fresh, resumed or initialised from another run ----------------
    def start(self, ckpt: dict | None = None, init: dict | None = None) -> None:
        """Build the state; restore ``ckpt`` (a resume), or take ``init``'s weights (a
        checkpoint of another run: fine-tuning). A new run's config.toml is written now;
        a resumed run's once its checkpoint has been accepted."""
        cfg, run, opts = self.cfg, self.run, self.opts
        if ckpt is not None:
            self.previous = {key: ckpt.get(key, 0) for key in self.previous}
            self.best_return = ckpt.get("best_eval_return")
        # sampled from here on: building the policy can be the peak
        self.guard = guard = BudgetGuard(opts.budget_bytes if opts.budget_bytes is not None
                                         else 2**62).start()
        try:
            self.state = state = self.algo.build_state(cfg, self.envs)
            if ckpt is not None:
                ckpt["checkpoint_dir"] = run.checkpoint.parent
                restore(state, ckpt, run)
                old_total = ckpt.get("config", {}).get("total_steps", cfg.total_steps)
                ckpt.clear()  # the caller's reference too: its arrays are free from here
                if old_total != cfg.total_steps and self.algo.extend is not None:
                    self.algo.extend(state, old_total)
                # the run directory changes only once the checkpoint has been accepted
                run.truncate_metrics(state.iteration)
                run.truncate_rss(self.previous["wall_seconds"])
                guard.stream_to(run.rss, self.previous["wall_seconds"])
                for change in opts.changes:  # applied from here, recorded in config.toml
                    self.log(f"{change.describe()} from step {change.step:,}")
                self.write_config()
                self.log(f"resumed at step {state.global_step:,} (iteration {state.iteration})")
                return
            if init is not None:  # before anything is written: a refusal leaves no trace
                take_weights(state, init, opts.init_from)
                normaliser = " and observation normaliser" if "obs_norm" in init else ""
                self.log(f"initialised from {opts.init_from} (step "
                         f"{init.get('global_step', 0):,}): its weights{normaliser}; the "
                         "optimizer starts fresh")
                init.clear()  # the caller's reference too: its arrays are free from here
            if opts.resume:  # stopped before its first checkpoint: start it again
                self.log(f"no checkpoint in {run.path} yet: training from step 0 with its config")
                run.truncate_metrics(0)
                run.truncate_rss(-1.0)
            run.path.mkdir(parents=True, exist_ok=True)
            self.write_config()
            guard.stream_to(run.rss)
        except BaseException:
            guard.stop()
            raise

    def write_config(self, target: RunDir | None = None) -> None:
        """config.toml: the config, the device settings and the changes made on resume
        (those recorded before, then this resume's), into the run's directory or
        ``target``."""
        cfg, opts = self.cfg, self.opts
        tables = {cfg.algo: cfg.as_dict(), "run": _run_info(cfg, opts, self.shrunk_from)}
        text = toml_dumps(tables)
        changes = list(_recorded_changes(self.run)) + [c.as_table() for c in opts.changes]
        opts.changes = []  # recorded once
        for change in changes:
            text += "[[changes]]\n" + toml_dumps({"_": change}).split("\n", 1)[1]
        write_text((target or self.run).config, text)

    # --- 3. the loop ---------------------------------------------------------------------
    def loop(self) -> str:
        """Train to ``cfg.num_iterations`` (or a stop); returns how it stopped."""
        cfg, state = self.cfg, self.state
        self._restart_guard()
        self._apply_hard_cap()
        iteration = self.algo.make_iteration(state)
        writer = _tensorboard(self.run) if self.opts.tensorboard else None
        bar = _progress(cfg, state, self.opts)
        self.setup_peak = peak_rss_bytes()  # imports, envs, network initialisation, optimizer
        self.guard.sample()
        self.setup_peak_anon = self.guard.peak_anon_bytes
        self.t_start = time.monotonic()
        self.write_error = None
        self._saved = (state.global_step, state.iteration)  # on disk (or the start)
        stopped = "done"
        try:
            with _Interrupts(self.log) as interrupted:
                while state.iteration < cfg.num_iterations and stopped == "done":
                    row, steps = self._iterate(iteration)
                    self._record(row, steps, writer, bar)
                    stopped = self._stop_reason(row, interrupted)
                    if stopped != "done" or state.iteration == cfg.num_iterations or \
                            state.iteration % cfg.checkpoint_every == 0:
                        self._checkpoint()
        except _RolledBack as e:
            stopped = e.reason
            state.global_step, state.iteration = self._saved
        finally:
            self.guard.stop()
            for closing in (bar, writer):
                if closing is not None:
                    closing.close()
        self.wall = time.monotonic() - self.t_start + self.previous["wall_seconds"]
        self.t_start = None  # out of the loop: the run's clock stands at self.wall
        return stopped

    def _restart_guard(self) -> None:
        """A fresh guard when this process trained before (the API's next ``learn``),
        carrying the peaks and the clock of what ran before."""
        if not self._guard_fresh:
            old, previous = self.guard, self.previous
            previous["peak_anon_bytes"] = max(previous["peak_anon_bytes"], old.peak_anon_bytes)
            previous["peak_rss_bytes"] = max(previous["peak_rss_bytes"], old.peak_rss_bytes())
            previous["wall_seconds"] = self.wall
            budget = self.opts.budget_bytes
            self.guard = BudgetGuard(budget if budget is not None else 2**62).start()
            self.guard.stream_to(self.run.rss, previous["wall_seconds"])
        self._guard_fresh = False

    def _apply_hard_cap(self) -> None:
        """``hard_cap``: the kernel holds the run to its budget (a cgroup this process was
        started in, else RLIMIT_DATA)."""
        self.cap = None
        budget = self.opts.budget_bytes
        if self.opts.hard_cap and budget is not None:
            self.cap = inherited_cgroup() or apply_rlimit(budget, read_memory().anon)
            self.log(f"hard cap: {self.cap}")
        self.limit = cgroup_memory_limit()

    def _iterate(self, iteration) -> tuple[dict, int]:
        """One iteration and its metrics row; a hard-cap allocation failure rolls back."""
        state = self.state
        step_start, steps_before = time.monotonic(), state.global_step
        try:
            finished, stats = iteration()
        except (MemoryError, RuntimeError) as e:
            if self.cap and (isinstance(e, MemoryError) or "alloc" in str(e)):
                raise self._rollback("budget", f"hard cap hit ({type(e).__name__}: "
                                               f"{str(e).splitlines()[0][:80]})") from None
            raise
        state.iteration += 1
        row = _metrics_row(state, finished, stats, state.global_step - steps_before,
                           time.monotonic() - step_start,
                           time.monotonic() - self.t_start + self.previous["wall_seconds"])
        if self.opts.eval_every and due(steps_before, state.global_step, 0,
                                        self.opts.eval_every):
            self._periodic_evaluation(row)
        return row, state.global_step - steps_before

    def _record(self, row: dict, steps: int, writer, bar) -> None:
        """The row to metrics.jsonl (a write error, or the guard's on rss.csv, stops the
        run at its last checkpoint), TensorBoard and the progress bar."""
        try:
            self.run.append_metrics(row)
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            self.write_error = e
        self.write_error = self.write_error or self.guard.write_error
        if self.write_error is not None:
            raise self._rollback("write_failed")
        if writer is not None:
            for key, value in row.items():
                if value is not None and key != "time/total_timesteps":
                    writer.add_scalar(key, value, self.state.global_step)
        if bar is not None:
            budget = self.opts.budget_bytes
            bar.update(steps)
            ret = row["rollout/ep_rew_mean"]
            bar.set_postfix_str(f"return {'-' if ret is None else f'{ret:.1f}'}  anon "
                                f"{row['memory/anon_bytes'] / MiB:.0f}"
                                f"{f'/{budget / MiB:.0f}' if budget else ''} MiB", refresh=False)

    def _stop_reason(self, row: dict, interrupted: list) -> str:
        """Why the run stops after this iteration (`STOPS`), or ``done`` to go on."""
        target = self.opts.stop_at_return
        if self.guard.exceeded:
            return "budget"
        if interrupted:
            return "interrupted"
        if target is not None and row.get("eval/mean_return", -math.inf) >= target:
            self.log(f"evaluation return {row['eval/mean_return']:.1f} reached {target:g} at "
                     f"step {self.state.global_step:,}: stopping")
            return "return_threshold"
        if any(callback(row) is False for callback in self.opts.callbacks):
            return "callback"
        return "done"

    def _checkpoint(self) -> None:
        """Save; a failed save (the hard cap, a full disk) leaves the previous checkpoint
        intact and rolls the run back to it."""
        try:
            self.save()
        except MemoryError as e:
            if not self.cap:
                raise
            raise self._rollback("budget", f"hard cap hit while checkpointing "
                                           f"({str(e)[:80]})") from None
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            self.write_error = e
            raise self._rollback("write_failed") from None
        self._saved = (self.state.global_step, self.state.iteration)

    def _rollback(self, reason: str, message: str | None = None) -> _RolledBack:
        if message:
            self.log(f"{message}; the last checkpoint is at step {self._saved[0]:,}")
        return _RolledBack(reason)

    def _periodic_evaluation(self, row: dict) -> None:
        """Training's final evaluation, now: its mean return into the metrics row, and
        the state into ``checkpoints/best.safetensors`` when it is the best so far."""
        returns = self.evaluate(self.opts.eval_episodes or self.cfg.eval_episodes or 10)
        mean = float(np.mean(returns))
        row["eval/mean_return"], row["eval/std_return"] = mean, float(np.std(returns))
        if self.best_return is None or mean > self.best_return:
            self.best_return = mean
            ckpt = self.state.checkpoint()
            ckpt.update(eval_return=mean, eval_returns=[float(r) for r in returns])
            ckpt.pop("replay", None)  # the policy is what counts; the buffer stays with latest
            from edgeag.train import checkpoint

            atomic_write(self.run.best_checkpoint, lambda f: checkpoint.save(f, ckpt))
            self.log(f"step {self.state.global_step:,}: evaluation return {mean:.1f}, the best "
                     f"so far: {self.run.best_checkpoint}")
        row["eval/best_return"] = self.best_return

    def evaluate(self, episodes: int | None = None) -> list[float]:
        """The final evaluation: ``cfg.eval_episodes`` deterministic episodes on a fresh
        env seeded ``seed + 10000``, ``+ 1``, ..., normalisation frozen."""
        cfg, space = self.cfg, self.envs.single_action_space
        discrete = self.dims[2]
        return evaluate(self.algo.act(self.state), self.env, self.state.obs_norm,
                        cfg.eval_episodes if episodes is None else episodes,
                        cfg.seed + EVAL_SEED_OFFSET,
                        None if discrete else space.low, None if discrete else space.high)

    def save(self, target: RunDir | None = None) -> None:
        """The checkpoint of the state as it is (in the loop: at an iteration boundary),
        into the run's directory, or into ``target`` with a config.toml of its own (the
        API's ``save``)."""
        state, previous, guard = self.state, self.previous, self.guard
        ckpt = state.checkpoint()
        ckpt["wall_seconds"] = (self.wall if self.t_start is None else
                                time.monotonic() - self.t_start + previous["wall_seconds"])
        ckpt["peak_rss_bytes"] = max(guard.peak_rss_bytes(), previous["peak_rss_bytes"])
        ckpt["peak_anon_bytes"] = max(guard.peak_anon_bytes, previous["peak_anon_bytes"])
        if self.best_return is not None:
            ckpt["best_eval_return"] = self.best_return
        files = state.checkpoint_files() if hasattr(state, "checkpoint_files") else None
        (target or self.run).save_checkpoint(ckpt, files)
        if target is not None:
            self.write_config(target)

    # --- 4. evaluation and summary ----------------------------------------------------------
    def finish(self, stopped: str) -> tuple[int, dict]:
        cfg, run, opts, state, algo, guard = (self.cfg, self.run, self.opts, self.state,
                                              self.algo, self.guard)
        write_error = self.write_error
        eval_returns = None
        if stopped in ("done", "return_threshold", "callback") and cfg.eval_episodes:
            eval_returns = self.evaluate()
        end = read_memory()
        budget, plan, floor = opts.budget_bytes, self.plan, self.floor
        summary = {
            "env": cfg.env_id, "env_kwargs": dict(cfg.env_kwargs), "algo": cfg.algo,
            "optimizer": cfg.optimizer, "seed": cfg.seed,
            "steps": state.global_step, "iterations": state.iteration,
            "total_steps": cfg.total_steps,
            "wall_seconds": round(self.wall, 3),
            "steps_per_second": round(state.global_step / self.wall, 1) if self.wall > 0 else None,
            "budget_bytes": budget, "budget_counts": BUDGET_COUNTS,
            "peak_anon_bytes": max(guard.peak_anon_bytes, self.previous["peak_anon_bytes"]),
            "peak_rss_bytes": max(guard.peak_rss_bytes(), self.previous["peak_rss_bytes"]),
            "rss_anon_bytes": end.anon, "rss_file_bytes": end.file,
            "max_sampled_rss_bytes": guard.max_sampled_rss_bytes, "rss_samples": guard.samples,
            "setup_peak_rss_bytes": self.setup_peak, "setup_peak_anon_bytes": self.setup_peak_anon,
            "floor_bytes": floor.rss_bytes, "floor_anon_bytes": floor.anon_bytes,
            "floor_file_bytes": floor.file_bytes,
            "profile": opts.profile, "threads": self.threads, "threads_allowed": opts.threads,
            "threads_reason": self.threads_reason, "hard_cap_mode": opts.device.hard_cap,
            "plan_total_bytes": plan.total_bytes, "plan": plan.as_dict()["items"],
            "engine": self.cfg.engine, "runtime": self.runtime,
            "optimizer_state_bytes": algo.optimizer_state_bytes(state),
            "parameter_count": algo.parameter_count(state),
            "buffer_size": getattr(cfg, "buffer_size", None),
            "buffer_shrunk_from": self.shrunk_from,
            "final_eval_return": None if eval_returns is None else {
                "mean": float(np.mean(eval_returns)), "std": float(np.std(eval_returns)),
                "episodes": len(eval_returns), "returns": eval_returns},
            "best_eval_return": self.best_return,
            "best_checkpoint": (str(run.best_checkpoint.relative_to(run.path))
                                if self.best_return is not None else None),
            "init_from": opts.init_from,
            "hard_cap": self.cap,
            "cgroup_memory_limit": self.limit and {"bytes": self.limit[0], "where": self.limit[1]},
            "stopped": stopped,
            "write_error": None if write_error is None else describe_write_error(write_error),
            "checkpoint": str(run.checkpoint.relative_to(run.path)),
        }
        try:
            write_json(run.summary, summary)
        except OSError as e:
            if e.errno not in WRITE_ERRNOS:
                raise
            self.log(f"cannot write {run.summary}: {describe_write_error(e)}")
            write_error = write_error or e
        code = STOPS[stopped]
        if write_error is not None and code == EXIT_OK:
            code = WriteFailed.exit_code
        return code, summary

    def close(self) -> None:
        if self.guard is not None:
            self.guard.stop()
        if self.envs is not None:
            self.envs.close()
            self.envs = None


def restore(state, ckpt: dict, run: RunDir) -> None:
    """``state.restore(ckpt)``, with a checkpoint that does not fit the run's own
    config.toml (edited by hand, or from another run) refused as bad input."""
    try:
        state.restore(ckpt)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
        detail = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise EdgeagError(f"cannot resume: {run.checkpoint} does not match {run.config} "
                          f"({type(e).__name__}: {detail})") from None


OPTIMIZER_KEYS = ("optimizer", "optimizers")
"""Where an engine's ``state_dict`` keeps its optimizers' state (PPO; DQN and TD3)."""


def take_weights(state, ckpt: dict, source) -> None:
    """Fine-tuning: the networks (and target networks) and PPO's observation normaliser
    of another run's checkpoint ``ckpt``, into a freshly built ``state`` whose optimizer
    state stays fresh. Why fresh: the new run has its own learning-rate schedule from
    step 0, and Adam's moments and step count describe the old task's gradients (its bias
    correction would treat them as already warmed up); stateless AlphaGrad has none. The
    replay buffer, episode statistics, RNG and envs are the new run's own."""
    nets = state.nets
    mine, theirs = nets.arch, ckpt.get("arch") or {}
    for key in ("kind", "obs_dim", "action_dim", "discrete", "hidden", "actor", "critic"):
        if key in mine and key in theirs and _plain(mine[key]) != _plain(theirs[key]):
            raise EdgeagError(f"cannot initialise from {source}: its network has {key} "
                              f"{_plain(theirs[key])}, this run's has {_plain(mine[key])} "
                              "(the network must be the same; fine-tuning changes the env, "
                              "not the network)")
    fresh = nets.state_dict()
    try:
        nets.load_state_dict({**ckpt, **{k: fresh[k] for k in OPTIMIZER_KEYS if k in fresh}})
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
        detail = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise EdgeagError(f"cannot initialise from {source}: its checkpoint does not fit this "
                          f"run's networks ({type(e).__name__}: {detail})") from None
    if ckpt.get("obs_norm") is not None and getattr(state.obs_norm, "enabled", False):
        state.obs_norm.load(ckpt["obs_norm"])


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _recorded_changes(run: RunDir) -> list[dict]:
    from edgeag.io import tomllib

    try:
        with open(run.config, "rb") as f:
            return tomllib.load(f).get("changes", [])
    except (OSError, tomllib.TOMLDecodeError):
        return []


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
    info = {"algo": cfg.algo, **opts.device.as_run_table(), "edgeag": __version__,
            "numpy": np.__version__}
    torch = sys.modules.get("torch")  # only where the run imports it (its engine)
    if torch is not None:
        info["torch"] = torch.__version__
    if shrunk_from is not None:
        info["buffer_size_requested"] = shrunk_from
    if opts.init_from:
        info["init_from"] = str(opts.init_from)
    info.update(opts.run_info)
    return info


def _progress(cfg: TrainConfig, state, opts: RunOptions):
    if not opts.progress:
        return None
    from tqdm import tqdm
    return tqdm(total=cfg.planned_steps, initial=state.global_step,
                unit="step", unit_scale=True, dynamic_ncols=True,
                desc=f"{cfg.algo} {cfg.env_id}", disable=None)


def _tensorboard(run: RunDir):
    from edgeag.train import tblog

    return tblog.open_writer(run.path)

__all__ = ["BudgetRefused", "Change", "RunOptions", "Trainer", "train", "take_weights"]


class _RolledBack(Exception):
    """The run stops at its last checkpoint (``reason``: a `STOPS` key)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Interrupts:
    """Ctrl-C while training: the first stops the run at the end of the iteration (the
    list it yields becomes non-empty), a second aborts at once. Not on the main thread
    (the API from a thread), Ctrl-C stays the caller's."""

    def __init__(self, log):
        self.log, self.seen, self.old = log, [], None

    def _handle(self, signum, frame) -> None:
        if self.seen:
            raise KeyboardInterrupt
        self.seen.append(True)
        self.log("\ninterrupt: stopping at the end of this iteration (Ctrl-C again to abort)")

    def __enter__(self) -> list:
        try:
            self.old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:
            self.old = None
        return self.seen

    def __exit__(self, *exc) -> None:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)

