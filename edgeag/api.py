"""edgeag from Python, with Stable-Baselines3's names and return conventions.

::

    import edgeag

    model = edgeag.PPO("CartPole-v1", profile="rpi4", budget="256MB", seed=1)
    model.learn(total_timesteps=50_000)        # planned, guarded, checkpointed in model.run_dir
    action, _ = model.predict(obs, deterministic=True)
    model.save("runs/cartpole")                # a run directory: config.toml + checkpoints/
    model = edgeag.load("runs/cartpole")       # device settings included
    mean, std = edgeag.evaluate_policy(model, "CartPole-v1", n_eval_episodes=10)
    model.export("onnx")                       # verified files, their paths returned

A model is a run (`edgeag.train.run.Trainer`): its config, its device settings (profile,
budget, threads, hard cap), its networks, optimizer state, normalisers, RNG and env
state, and its run directory. ``edgeag train`` is a thin layer over this module: the
same objects, the same code path.

The lifecycle, in SB3's terms:

- ``learn(n)`` on a new model trains a new run of ``n`` steps;
- ``learn(n, reset_num_timesteps=False)`` continues the same run for ``n`` more steps (its
  annealed learning rate goes on from where it is, to 0 at the new end);
- ``learn(n)`` (``reset_num_timesteps=True``) on a model that has trained, or was loaded,
  starts a **new run** from its weights (and PPO's observation normaliser): step 0, a
  fresh optimizer and schedule, a new run directory. With ``load(run, env=...)`` this is
  fine-tuning on a changed env.

Nothing here imports torch on the numpy engine.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgeag.errors import EdgeagError
from edgeag.train.device import Change, Device, device_changes, resolve_device
from edgeag.train.envs import EnvMaker
from edgeag.train.rundir import RunDir

SB3_NAMES = {"learning_rate": "lr", "n_steps": "num_steps", "n_epochs": "update_epochs",
             "clip_range": "clip_coef", "train_freq": "train_frequency",
             "policy_delay": "policy_frequency", "target_policy_noise": "policy_noise",
             "target_noise_clip": "noise_clip", "n_envs": "num_envs"}
"""Stable-Baselines3's constructor keywords and the edgeag config field each one sets."""
POLICIES = ("MlpPolicy",)
"""SB3's policy names that edgeag accepts (its networks are MLPs)."""
RESUME_OPTIONS = ("total_steps",)
"""Config settings a continued run may change; everything else would change what is
trained (env, algorithm, optimizer, network, seed, ...)."""


class BaseAlgorithm:
    """A run of one algorithm. Construct with an env and settings, then `learn`.

    :param policy: ``"MlpPolicy"`` (SB3's first argument; may be left out: ``PPO(env)``).
    :param env: a Gymnasium id (``"CartPole-v1"``), ``"module:EnvId"`` (the module is
        imported and registers it), a function that returns a new env, or an env object
        (one env: only where the algorithm's ``num_envs`` is 1).
    :param env_kwargs: keyword arguments of ``gymnasium.make`` (e.g. ``{"g": 11.0}``).
    :param optimizer: a registered optimizer (default: the algorithm's; ``alphagrad`` for PPO).
    :param seed: the run's seed (default 1).
    :param profile: a device profile name (``rpi4``) or TOML path: threads, default budget.
    :param budget: budget on anonymous memory, ``"256MB"`` or bytes (default: the profile's).
    :param threads: BLAS threads (default: the profile's, at most this machine's cores; else 1).
    :param hard_cap: ``"rlimit"`` (or ``True``): the kernel enforces the budget too.
    :param run_dir: the run directory (default ``runs/<env>-<algo>-<optimizer>-s<seed>-<time>``).
    :param preset: a preset file (``edgeag tune``'s ``best.toml``) instead of the shipped presets.
    :param verbose: 0 quiet, 1 the plan and progress lines on stderr.
    :param tensorboard: also write TensorBoard event files to ``<run>/tensorboard`` (SB3's
        ``tensorboard_log`` is accepted as a switch: the files go to the run directory).
    :param policy_kwargs: SB3's ``dict(net_arch=[64, 64])`` sets ``hidden``.
    :param config: any config field, by the names of ``edgeag train --set`` (``lr``,
        ``num_steps``, ``hidden``, ...) or by SB3's (``learning_rate``, ``n_steps``, ...).
    """

    algo: ClassVar[str] = ""

    def __init__(self, policy="MlpPolicy", env=None, *, env_kwargs: dict | None = None,
                 optimizer: str | None = None, seed: int | None = None,
                 profile: str | None = None, budget: str | int | None = None,
                 threads: int | None = None, hard_cap: str | bool | None = None,
                 run_dir: str | Path | None = None, preset: str | Path | None = None,
                 verbose: int = 0, tensorboard: bool = False, tensorboard_log=None,
                 policy_kwargs: dict | None = None, device: str = "auto",
                 shrink_buffer: bool = False, **config):
        if env is None and not (isinstance(policy, str) and policy in POLICIES):
            policy, env = "MlpPolicy", policy
        if not (isinstance(policy, str) and policy in POLICIES):
            raise EdgeagError(f"invalid policy {policy!r}: expected {' or '.join(POLICIES)} "
                              "(edgeag's networks are MLPs; set their widths with hidden=[64, 64])")
        if device not in ("auto", "cpu"):
            raise EdgeagError(f"invalid device {device!r}: expected 'auto' or 'cpu' (edgeag "
                              "trains on the CPU; a device's memory is set with profile= and "
                              "budget=)")
        overrides = _overrides(config, policy_kwargs, seed)
        self._log = _logger(verbose)
        self.verbose = verbose
        self.tensorboard = bool(tensorboard or tensorboard_log)
        self.shrink_buffer = shrink_buffer
        if env_kwargs:
            overrides["env_kwargs"] = env_kwargs
        if env is None or isinstance(env, (str, Path)):  # None: the algorithm's (or preset's)
            self.cfg, self.origin = _new_config(self.algo, None if env is None else str(env),
                                                optimizer, overrides, preset)
            self.env_maker, _ = _env_maker(self.cfg.env_id, self.cfg.env_kwargs, self.algo, None)
        else:
            self.env_maker, env_id = _env_maker(env, env_kwargs, self.algo, None)
            self.cfg, self.origin = _new_config(self.algo, env_id, optimizer, overrides, preset)
        _check_env_object(self.env_maker, self.cfg)
        _, self.device = resolve_device(profile, budget, threads, hard_cap)
        self.run_dir = RunDir(run_dir) if run_dir is not None else None
        self.summary: dict | None = None
        """``summary.json`` of the last `learn`."""
        self._trainer = None
        self._ckpt = None       # a loaded run's checkpoint, until a trainer takes it
        self._source = None     # the loaded run's directory
        self._changes: list[Change] = []
        self._new_run_dir = None
        self._overrides: dict = {}
        self._purpose = "load"

    # --- properties, SB3's names ------------------------------------------------------
    @property
    def num_timesteps(self) -> int:
        """Env steps the run has taken."""
        if self._trainer is not None and self._trainer.state is not None:
            return self._trainer.state.global_step
        return int(self._ckpt["global_step"]) if self._ckpt is not None else 0

    @property
    def stopped(self) -> str | None:
        """How the last `learn` ended (``summary.json``'s ``stopped``): done, budget,
        interrupted, return_threshold, callback, write_failed."""
        return None if self.summary is None else self.summary["stopped"]

    def get_env(self):
        """The training envs (a `gymnasium.vector.SyncVectorEnv`), once `learn` built them."""
        return None if self._trainer is None else self._trainer.envs

    # --- learn ---------------------------------------------------------------------------
    def learn(self, total_timesteps: int, callback=None, reset_num_timesteps: bool = True,
              progress_bar: bool = False, log_interval=None, tb_log_name=None):
        """Train: plan against the budget (`edgeag.train.run.BudgetRefused`, the CLI's exit
        2, when it does not fit), guard it, checkpoint into `run_dir`. Returns the model;
        ``model.stopped`` says how it ended (a budget stop leaves a checkpoint to continue
        from with ``reset_num_timesteps=False``, perhaps with a larger budget).

        :param callback: a callable (the metrics row of every iteration in; False out
            stops the run cleanly, with a checkpoint), an `EvalCallback`, a
            `StopTrainingOnRewardThreshold` (with an `EvalCallback`), or a list of them.
        :param reset_num_timesteps: False continues the same run for ``total_timesteps``
            more steps; True (SB3's default) trains a new run: on a model that has trained
            or was loaded, from its weights (fine-tuning).
        """
        if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, (int, np.integer)) \
                or total_timesteps < 1:
            raise EdgeagError(f"invalid total_timesteps {total_timesteps!r}: expected a "
                              "positive integer")
        total_timesteps = int(total_timesteps)
        hooks = _callbacks(callback)
        trained = self._trainer is not None or self._ckpt is not None or self._source is not None
        if not reset_num_timesteps and trained:
            return self._continue(self.num_timesteps + total_timesteps, hooks, progress_bar)
        init = []  # the weights of a new run from this model: held by _train alone
        if trained:  # a new run from this model's weights
            init.append(self._weights())
            self._close()
            self._source, self._ckpt, self.run_dir = None, None, self._new_run_dir
            self._changes = []  # the old run's; the new one starts with its own settings
        cfg = dataclasses.replace(self.cfg, total_steps=total_timesteps).validate()
        self.cfg = cfg
        run = self.run_dir or RunDir(default_run_dir(cfg))
        if run.config.exists() or run.checkpoint.exists():
            raise EdgeagError(f"{run.path} already holds a run: continue it with "
                              f"edgeag.load({str(run.path)!r})"
                              ".learn(n, reset_num_timesteps=False), "
                              "or choose another run_dir")
        self.run_dir = run
        return self._train(run, ckpt=None, init=init.pop() if init else None, resume=False,
                           hooks=hooks, progress=progress_bar)

    def _continue(self, total_steps: int, hooks=(), progress: bool = False):
        """The same run, on to ``total_steps`` env steps in all."""
        if self._trainer is not None:  # trained in this process: on from memory
            trainer = self._trainer
            old = trainer.cfg.total_steps
            if total_steps != old:
                cfg = dataclasses.replace(trainer.cfg, total_steps=total_steps).validate()
                trainer.cfg = trainer.state.cfg = self.cfg = cfg
                if trainer.algo.extend is not None:
                    trainer.algo.extend(trainer.state, old)
                trainer.opts.changes = [Change(self.num_timesteps, "total_steps", old,
                                               total_steps)]
                trainer.write_config()
            trainer.opts.callbacks, eval_opts = _split_hooks(hooks)
            trainer.opts.__dict__.update(eval_opts)
            trainer.opts.progress = progress
            return self._run_loop(trainer)
        check_resume_overrides(self.cfg, self._overrides, f"cannot continue {self._source.path}")
        if self._ckpt is not None and total_steps <= self.num_timesteps:
            raise EdgeagError(f"invalid total_steps {total_steps:,}: the run is at step "
                              f"{self.num_timesteps:,} already (expected more)")
        if self.env_maker.needs_env:
            raise EdgeagError(f"cannot continue {self._source.path} here: it trains on an env "
                              "object passed from Python; continue it with "
                              f"edgeag.load({str(self._source.path)!r}, env=<that env>)")
        old = self.cfg.total_steps
        if total_steps != old:
            self._changes.append(Change(self.num_timesteps, "total_steps", old, total_steps))
            self.cfg = dataclasses.replace(self.cfg, total_steps=total_steps).validate()
        return self._train(self._source, ckpt=self._take_checkpoint(), init=None, resume=True,
                           hooks=hooks, progress=progress)

    def _take_checkpoint(self):
        """The loaded checkpoint, handed over (the model keeps no reference: once the run
        has taken it, its memory is free)."""
        ckpt, self._ckpt = self._ckpt, None
        self._cached_policy = None
        return ckpt

    def _train(self, run: RunDir, ckpt, init, resume: bool, hooks, progress: bool):
        from edgeag.train.checkpoint import array_bytes
        from edgeag.train.run import RunOptions, Trainer

        callbacks, eval_opts = _split_hooks(hooks)
        d = self.device
        opts = RunOptions(budget_bytes=d.budget_bytes, threads=d.threads, profile=d.profile,
                          resume=resume, progress=progress, tensorboard=self.tensorboard,
                          hard_cap=bool(d.hard_cap), hard_cap_mode=d.hard_cap,
                          shrink_buffer=self.shrink_buffer, callbacks=callbacks,
                          init_from=None if init is None else init["__source__"],
                          init_bytes=0 if init is None else array_bytes(init),
                          changes=self._changes, run_info=self.env_maker.run_info,
                          **eval_opts)
        self._changes = []
        trainer = Trainer(self.cfg, run, opts, self._log, self.env_maker)
        try:
            trainer.setup()
            self.cfg = trainer.cfg  # a replay buffer shrunk to fit
            trainer.start(ckpt, init)
        except BaseException:
            trainer.close()
            raise
        del ckpt, init  # taken: their arrays are free before the first iteration
        self._trainer, self.run_dir, self._source = trainer, run, run
        return self._run_loop(trainer)

    def _run_loop(self, trainer):
        try:
            stopped = trainer.loop()
            self.exit_code, self.summary = trainer.finish(stopped)
        except BaseException:
            self._close()
            raise
        if stopped in ("budget", "write_failed"):
            self._log(f"stopped: {stopped} at step {self.num_timesteps:,}; the checkpoint in "
                      f"{trainer.run.path} continues with learn(n, reset_num_timesteps=False)")
        return self

    def plan(self):
        """The memory plan of `learn` (`edgeag.memory.MemoryPlan`), without training:
        the floor measured now, this model's config and budget (``--dry-run``)."""
        from edgeag.train.run import RunOptions, Trainer

        d = self.device
        opts = RunOptions(budget_bytes=d.budget_bytes, threads=d.threads, profile=d.profile,
                          tensorboard=self.tensorboard, shrink_buffer=self.shrink_buffer,
                          dry_run=True)
        trainer = Trainer(self.cfg, self.run_dir or RunDir("."), opts, self._log, self.env_maker)
        try:
            return trainer.setup()
        finally:
            trainer.close()

    # --- use the policy --------------------------------------------------------------------
    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True):
        """``(action, None)`` for one observation (``[obs_dim]``) or a batch
        (``[n, obs_dim]``), as SB3 returns it: the policy's deterministic action (argmax,
        or the Gaussian mean / actor output clipped to the action bounds); with
        ``deterministic=False``, PPO and SAC sample their distributions and DQN is
        epsilon-greedy at its final epsilon (TD3's action is deterministic either way, as in
        SB3). numpy only."""
        policy = self._policy()
        obs = np.asarray(observation, dtype=np.float64)
        single = obs.ndim == 1
        if obs.ndim not in (1, 2) or obs.shape[-1] != policy.obs_dim:
            raise EdgeagError(f"invalid observation of shape {obs.shape}: expected "
                              f"({policy.obs_dim},) or (n, {policy.obs_dim})")
        batch = obs[None] if single else obs
        action = policy.act(batch, deterministic)
        return (action[0] if single else action), None

    def _policy(self):
        if getattr(self, "_cached_policy", None) is not None and self._trainer is None:
            return self._cached_policy
        if self._trainer is not None and self._trainer.state is not None:
            return _Policy.of_state(self._trainer, self.cfg)
        if self._ckpt is None:
            raise EdgeagError("the model has no policy yet: call learn() first, or load a "
                              "trained run with edgeag.load(path)")
        self._cached_policy = _Policy.of_checkpoint(self._ckpt, self.cfg, self.env_maker,
                                                    f"cannot {self._purpose}: "
                                                    f"{self._source.checkpoint} does not match "
                                                    f"{self._source.config}")
        return self._cached_policy

    # --- save, load, export -------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the whole model to the run directory ``path`` (config.toml with the device
        settings; checkpoints/latest.safetensors: networks, optimizer, normalisers, RNG,
        env state; the replay buffer beside it). `load` gives it back; training continued
        after it ends bit for bit as a run that never stopped. Returns the path."""
        from edgeag.io import atomic_write

        target = RunDir(path)
        if self._trainer is not None and self._trainer.state is not None:
            same = target.path.resolve() == self._trainer.run.path.resolve()
            self._trainer.save(None if same else target)
            return target.path
        if self._source is not None and self._ckpt is not None:
            if target.path.resolve() == self._source.path.resolve():
                return target.path
            target.path.mkdir(parents=True, exist_ok=True)
            for src in self._source.checkpoint.parent.iterdir():
                if not src.name.startswith("."):
                    dst = target.checkpoint.parent / src.name
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write(dst, lambda f, src=src: f.write(src.read_bytes()))
            atomic_write(target.config, lambda f: f.write(self._source.config.read_bytes()))
            return target.path
        raise EdgeagError("the model has nothing to save yet: call learn() first")

    @classmethod
    def load(cls, path, env=None, *, env_kwargs: dict | None = None,
             profile: str | None = None, budget: str | int | None = None,
             threads: int | None = None, hard_cap: str | bool | None = None,
             run_dir=None, verbose: int = 0, tensorboard: bool = False, tensorboard_log=None,
             shrink_buffer: bool = False, device: str = "auto", **config):
        """The run saved in (or trained into) ``path``, with its config and its device
        settings; the keywords change them (a larger ``budget`` after a budget stop, say:
        validated, printed, and recorded in config.toml with the step it applies from).

        ``env`` (and ``env_kwargs``) set the env of what follows: ``learn(n)`` then trains a
        **new run** from these weights on it (fine-tuning; into ``run_dir``), while
        ``learn(n, reset_num_timesteps=False)`` continues this run (only on the env it
        trains on). Other keywords (``lr``, ``seed``, ...) apply to that new run; a
        continued run refuses them."""
        model = _load(path, config.pop("_purpose", "load"))
        if cls.algo and model.algo != cls.algo:
            raise EdgeagError(f"cannot load {path} as {cls.__name__}: it is a "
                              f"{model.algo} run (use edgeag.load, or {model.algo.upper()}.load)")
        model._log = _logger(verbose)
        model.verbose = verbose
        model.tensorboard = bool(tensorboard or tensorboard_log)
        model.shrink_buffer = shrink_buffer
        if device not in ("auto", "cpu"):
            raise EdgeagError(f"invalid device {device!r}: expected 'auto' or 'cpu'")
        _, new_device = resolve_device(profile, budget, threads, hard_cap, base=model.device)
        model._changes = device_changes(model.device, new_device, model.num_timesteps)
        model.device = new_device
        overrides = _overrides(config, None, None)
        if env is not None or env_kwargs:
            maker, env_id = _env_maker(env if env is not None else model.cfg.env_id,
                                       env_kwargs, model.algo, model.cfg.num_envs)
            model.env_maker = maker
            overrides.update(env_id=env_id, env_kwargs=env_kwargs or {})
        model._overrides = overrides
        if overrides:
            model._fine_tune_cfg(overrides)
        model.run_dir = RunDir(run_dir) if run_dir is not None else model._source
        model._new_run_dir = RunDir(run_dir) if run_dir is not None else None
        return model

    def _fine_tune_cfg(self, overrides: dict) -> None:
        """Check ``overrides`` now (a new run's settings), keep the continued run's own."""
        from edgeag.train.config import coerce_setting, config_class

        cls = config_class(self.algo)
        values = {k: coerce_setting(k, v, "override", cls) for k, v in overrides.items()}
        self._fine_tune = dataclasses.replace(self.cfg, **values).validate()

    def _weights(self) -> dict:
        """This model's checkpoint (weights, normaliser), as a new run's starting point."""
        if self._trainer is not None and self._trainer.state is not None:
            ckpt = self._trainer.state.checkpoint()
        elif self._ckpt is not None:
            ckpt = self._ckpt
        else:
            raise EdgeagError(f"cannot start a new run from {self._source.path}: it has no "
                              "checkpoint yet")
        ckpt = dict(ckpt)
        ckpt["__source__"] = str(self._source.path if self._source else self.run_dir.path)
        fine = getattr(self, "_fine_tune", None)
        self.cfg = fine if fine is not None else self.cfg
        return ckpt

    def export(self, formats="onnx", quantize: str | None = None, out=None,
               progress: bool = False, record_observations: bool = False) -> list[Path]:
        """Export the run's latest checkpoint (`save` first if it changed since) to
        verified files: ``formats`` is ``"onnx"``, ``"onnx,pte"`` or a list; ``quantize``
        ``"int8"`` adds int8 variants; ``out`` defaults to ``<run_dir>/export``. Files are
        verified on the run's training observations (the env is not stepped);
        ``record_observations`` records 1024 by stepping the env instead. Returns the
        paths of the verified files and of policy.json. Raises
        `edgeag.export.verify.VerificationFailed` (the CLI's exit 4) when one fails."""
        from edgeag.export.build import export_run, parse_formats

        if self._trainer is None and self._source is None:
            raise EdgeagError("the model has nothing to export yet: call learn() first")
        run = self._trainer.run if self._trainer is not None else self._source
        names = parse_formats(formats if isinstance(formats, str) else ",".join(formats))
        meta = export_run(run.path, names, out, quantize, progress=progress, log=self._log,
                          record=record_observations)
        folder = Path(out) if out is not None else run.path / "export"
        return [folder / name for name in meta["artifacts"]] + [folder / "policy.json"]

    def _close(self) -> None:
        if self._trainer is not None:
            self._trainer.close()
            self._trainer = None

    def __del__(self):
        try:
            self._close()
        except Exception:  # noqa: BLE001 (interpreter shutdown)
            pass

    def __repr__(self) -> str:
        where = self.run_dir.path if self.run_dir is not None else "no run directory yet"
        return (f"{type(self).__name__}({self.cfg.env_id!r}, optimizer={self.cfg.optimizer!r}, "
                f"seed={self.cfg.seed}, {self.device.describe()}; {where})")


class PPO(BaseAlgorithm):
    """Proximal Policy Optimization (discrete and continuous actions)."""
    algo = "ppo"


class DQN(BaseAlgorithm):
    """Deep Q-Network (discrete actions)."""
    algo = "dqn"


class TD3(BaseAlgorithm):
    """Twin Delayed DDPG (continuous actions)."""
    algo = "td3"


class SAC(BaseAlgorithm):
    """Soft Actor-Critic (continuous actions; learned temperature). ``target_entropy`` is
    ``"auto"`` or a number, as in SB3 (the config keeps it as text: ``--set
    target_entropy=-0.5``)."""
    algo = "sac"

    def __init__(self, policy="MlpPolicy", env=None, **kwargs):
        super().__init__(policy, env, **_entropy_as_text(kwargs))

    @classmethod
    def load(cls, path, env=None, **kwargs):
        return super().load(path, env, **_entropy_as_text(kwargs))


def _entropy_as_text(kwargs: dict) -> dict:
    """SAC's ``target_entropy`` given as a number, as the config's text."""
    value = kwargs.get("target_entropy")
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        kwargs = {**kwargs, "target_entropy": repr(float(value))}
    return kwargs


class _Models(dict):
    """``{algo: model class}``: the classes above, and for any other registered algorithm
    (`edgeag.algos.ALGORITHMS`) a `BaseAlgorithm` subclass named after it, made on first
    use, so a new algorithm's folder is all the API needs."""

    def __missing__(self, algo: str) -> type[BaseAlgorithm]:
        from edgeag.algos import ALGORITHMS

        if algo not in ALGORITHMS:
            raise KeyError(algo)
        cls = type(algo.upper(), (BaseAlgorithm,), {"algo": algo, "__doc__": ALGORITHMS[algo],
                                                    "__module__": __name__})
        self[algo] = cls
        return cls

    def __contains__(self, algo) -> bool:
        from edgeag.algos import ALGORITHMS

        return algo in ALGORITHMS


MODELS = _Models({cls.algo: cls for cls in (PPO, DQN, TD3, SAC)})


def load(path, env=None, **kwargs) -> BaseAlgorithm:
    """The run in ``path`` as its algorithm's model (`BaseAlgorithm.load`)."""
    _, _, algo = _read_config(path, kwargs.get("_purpose", "load"))
    return MODELS[algo].load(path, env, **kwargs)


def _read_config(path, purpose: str) -> tuple[RunDir, dict, str]:
    """(the run directory, its config.toml's tables, its algorithm), or a one-line
    refusal naming what is wrong, read "cannot <purpose>: ..."."""
    from edgeag.io import tomllib

    run = RunDir(path)
    if not run.path.is_dir():
        raise EdgeagError(f"cannot {purpose}: {run.path} is not a directory (expected a run "
                          "directory written by learn, save or edgeag train)")
    try:
        with open(run.config, "rb") as f:
            tables = tomllib.load(f)
        algo = tables.get("run", {}).get("algo", "ppo")
        if not isinstance(tables[algo], dict):
            raise TypeError(algo)
    except (OSError, KeyError, AttributeError, TypeError, tomllib.TOMLDecodeError) as e:
        raise EdgeagError(f"cannot {purpose}: {run.config} is not a readable edgeag config "
                          f"({type(e).__name__})") from None
    if algo not in MODELS:
        raise EdgeagError(f"cannot {purpose}: unknown algo {algo!r} in {run.config}")
    return run, tables, algo


def check_resume_overrides(cfg, overrides: dict, what: str) -> None:
    """Refuse, in one line naming it, a setting that would change what a continued run
    trains (env, algorithm, optimizer, network, seed, ...); the same value is accepted."""
    from edgeag.train.config import coerce_setting, config_class

    for key, value in overrides.items():
        if key in RESUME_OPTIONS:
            continue
        if key == "algo":
            same = value == cfg.algo
        else:
            given = coerce_setting(key, value, "override", config_class(cfg.algo))
            same = given == getattr(cfg, key)
        if not same:
            flag = {"env_id": "--env", "env_kwargs": "--env-kwargs", "algo": "--algo",
                    "optimizer": "--optimizer", "lr": "--lr", "alpha": "--alpha",
                    "momentum": "--momentum", "seed": "--seed", "engine": "--engine"
                    }.get(key, f"--set {key}")
            old = cfg.algo if key == "algo" else getattr(cfg, key)
            raise EdgeagError(f"{what}: {flag} {value!r} would change what the run trains "
                              f"(it has {key} {old!r}); a continued run keeps its settings "
                              "(it accepts --total-steps, --profile, --budget, --threads, "
                              "--hard-cap): start a new run, or one from its weights with "
                              "--init-from")


def _load(path, purpose: str = "load") -> BaseAlgorithm:
    from edgeag.train.config import config_from_dict

    run, tables, algo = _read_config(path, purpose)
    info, data = tables.get("run", {}), dict(tables[algo])
    cfg = config_from_dict(data, str(run.config), algo)
    if cfg.engine == "torch":
        from edgeag.errors import TORCH_INSTALL, require_torch
        require_torch(f"cannot {purpose} {run.path}: it trains on the torch engine ({cfg.algo} "
                      f"with {cfg.optimizer}), which needs torch, not installed here: "
                      f"{TORCH_INSTALL}")
    model = MODELS[algo].__new__(MODELS[algo])
    model.cfg, model.device = cfg, Device.from_run_table(info)
    model.env_maker = EnvMaker(cfg.env_id, cfg.env_kwargs)
    model._purpose = purpose
    if info.get("env_source") == "python":
        model.env_maker.needs_env = True
    model.run_dir = model._source = run
    model.summary, model._trainer, model._changes = None, None, []
    model._new_run_dir = None
    model._log, model.verbose, model.tensorboard, model.shrink_buffer = _logger(0), 0, False, False
    model._ckpt = run.load_checkpoint(purpose) if run.checkpoint.exists() else None
    model.origin = f"resumed from {run.checkpoint}" if model._ckpt is not None else str(run.config)
    model._overrides = {}
    return model


# --- callbacks --------------------------------------------------------------------------

class EvalCallback:
    """Evaluate every ``eval_freq`` env steps (the final evaluation's episodes and seeds:
    ``n_eval_episodes`` deterministic episodes, default the run's ``eval_episodes``) and
    keep the best policy in ``checkpoints/best.safetensors``; ``edgeag train --eval-every``.

    :param callback_on_new_best: a `StopTrainingOnRewardThreshold`: stop once an
        evaluation reaches its threshold (``--stop-at-return``)."""

    def __init__(self, eval_freq: int, n_eval_episodes: int | None = None,
                 callback_on_new_best=None):
        if isinstance(eval_freq, bool) or not isinstance(eval_freq, int) or eval_freq < 1:
            raise EdgeagError(f"invalid eval_freq {eval_freq!r}: expected a positive integer "
                              "(env steps)")
        if n_eval_episodes is not None and (not isinstance(n_eval_episodes, int)
                                            or n_eval_episodes < 1):
            raise EdgeagError(f"invalid n_eval_episodes {n_eval_episodes!r}: expected a "
                              "positive integer")
        self.eval_freq, self.n_eval_episodes = eval_freq, n_eval_episodes
        self.callback_on_new_best = callback_on_new_best


class StopTrainingOnRewardThreshold:
    """Stop training (cleanly, with a checkpoint) once a periodic evaluation's mean return
    reaches ``reward_threshold``; give it to `EvalCallback` as ``callback_on_new_best``."""

    def __init__(self, reward_threshold: float, verbose: int = 0):
        if not isinstance(reward_threshold, (int, float)) or not np.isfinite(reward_threshold):
            raise EdgeagError(f"invalid reward_threshold {reward_threshold!r}: expected a number")
        self.reward_threshold = float(reward_threshold)


def _callbacks(callback) -> list:
    if callback is None:
        return []
    hooks = list(callback) if isinstance(callback, (list, tuple)) else [callback]
    for hook in hooks:
        if isinstance(hook, StopTrainingOnRewardThreshold):
            raise EdgeagError("StopTrainingOnRewardThreshold acts on evaluations: give it to "
                              "EvalCallback(eval_freq, callback_on_new_best=...)")
        if not isinstance(hook, EvalCallback) and not callable(hook):
            raise EdgeagError(f"invalid callback {hook!r}: expected a callable (the metrics row "
                              "in; False stops), an EvalCallback, or a list of them")
    return hooks


def _split_hooks(hooks) -> tuple[list, dict]:
    """(plain callables, the `RunOptions` of the `EvalCallback`)."""
    evals = [h for h in hooks if isinstance(h, EvalCallback)]
    if len(evals) > 1:
        raise EdgeagError("one EvalCallback per run (it keeps checkpoints/best.safetensors)")
    opts = {"eval_every": None, "stop_at_return": None, "eval_episodes": None}
    if evals:
        ev = evals[0]
        opts["eval_every"] = ev.eval_freq
        if ev.callback_on_new_best is not None:
            opts["stop_at_return"] = ev.callback_on_new_best.reward_threshold
        if ev.n_eval_episodes is not None:
            opts["eval_episodes"] = ev.n_eval_episodes
    callables = [h for h in hooks if not isinstance(h, EvalCallback)]
    return callables, opts


# --- evaluation -----------------------------------------------------------------------------

def evaluate_policy(model: BaseAlgorithm, env=None, n_eval_episodes: int = 10,
                    deterministic: bool = True, return_episode_rewards: bool = False,
                    seed: int | None = None):
    """``(mean, std)`` of the return over ``n_eval_episodes`` episodes of ``model`` on
    ``env`` (an id, ``module:EnvId``, a function returning an env, or an env object;
    default the model's own env), as SB3's ``evaluate_policy`` returns them; with
    ``return_episode_rewards``, the lists of returns and lengths. Episode i is seeded
    ``seed + i``; by default ``seed`` is the run's evaluation seed (seed + 10000), so with
    ``n_eval_episodes`` = the run's ``eval_episodes`` this is exactly training's final
    evaluation. numpy only."""
    import gymnasium as gym

    from edgeag.train.envs import EVAL_SEED_OFFSET, evaluate

    if not isinstance(n_eval_episodes, int) or n_eval_episodes < 1:
        raise EdgeagError(f"invalid n_eval_episodes {n_eval_episodes!r}: expected a positive "
                          "integer")
    if not isinstance(model, BaseAlgorithm):
        raise EdgeagError(f"invalid model {type(model).__name__}: expected an edgeag model "
                          "(edgeag.PPO, DQN, TD3, SAC or edgeag.load(path))")
    policy = model._policy()
    if env is None:
        env = model.env_maker
    elif not isinstance(env, gym.Env):
        env, _ = _env_maker(env, None, model.algo, 1)
    act = policy._act if deterministic or policy._sample is None else policy._sample
    seed = model.cfg.seed + EVAL_SEED_OFFSET if seed is None else seed
    returns, lengths = evaluate(act, env, policy.obs_norm, n_eval_episodes, seed,
                                None if policy.discrete else policy.low,
                                None if policy.discrete else policy.high, lengths=True)
    if return_episode_rewards:
        return returns, lengths
    return float(np.mean(returns)), float(np.std(returns))


CHECKPOINTS = ("latest", "best")
"""What ``edgeag eval --checkpoint`` accepts."""


def evaluate_run(path, checkpoint: str = "latest", episodes: int | None = None,
                 render: bool = False, video=None) -> dict:
    """Evaluate a run's checkpoint without exporting it (``edgeag eval``): exactly training's
    final evaluation (`edgeag.train.envs.evaluate`: ``episodes``, default the run's
    ``eval_episodes``, deterministic episodes seeded ``seed + 10000``, ``+ 1``, ...,
    normalisation frozen, actions clipped to the bounds), on the numpy engine without
    torch. ``render`` shows the episodes (``render_mode="human"``); ``video`` records them
    to that folder with gymnasium's ``RecordVideo`` (needs moviepy: ``pip install
    'edgeag[video]'``). Returns the figures."""
    import gymnasium as gym

    from edgeag.train.envs import EVAL_SEED_OFFSET, evaluate

    if checkpoint not in CHECKPOINTS:
        raise EdgeagError(f"invalid --checkpoint {checkpoint!r}: expected "
                          f"{' or '.join(CHECKPOINTS)}")
    if episodes is not None and (isinstance(episodes, bool) or not isinstance(episodes, int)
                                 or episodes < 1):
        raise EdgeagError(f"invalid --episodes {episodes!r}: expected a positive integer")
    if render and video is not None:
        raise EdgeagError("--render shows the episodes on screen and --video records them: "
                          "give one of them")
    if video is not None:
        import importlib.util
        if importlib.util.find_spec("moviepy") is None:
            raise EdgeagError("--video records through gymnasium's RecordVideo, which needs the "
                              "moviepy package: pip install 'edgeag[video]'")
    model = _load(path, "evaluate")
    if model.env_maker.needs_env:
        raise EdgeagError(f"cannot evaluate {path} here: it trains on an env object passed "
                          "from Python; use edgeag.evaluate_policy(edgeag.load(path), env)")
    run = model._source
    if checkpoint == "best":
        if not run.best_checkpoint.is_file():
            raise EdgeagError(f"cannot evaluate: {run.path} has no best checkpoint "
                              f"({run.best_checkpoint.relative_to(run.path)}): train it with "
                              "--eval-every N (EvalCallback) to keep one")
        from edgeag.train.rundir import load_checkpoint

        ckpt = load_checkpoint(run.best_checkpoint, "evaluate")
    else:
        if model._ckpt is None:
            raise EdgeagError(f"cannot evaluate: {run.path} has no checkpoint yet")
        ckpt = model._ckpt
    cfg = model.cfg
    checkpoint_file = run.best_checkpoint if checkpoint == "best" else run.checkpoint
    policy = _Policy.of_checkpoint(ckpt, cfg, model.env_maker, f"cannot evaluate: "
                                   f"{checkpoint_file} does not match {run.config}")
    episodes = episodes or cfg.eval_episodes or 10
    maker = model.env_maker
    if render or video is not None:
        base = maker
        mode = "human" if render else "rgb_array"

        def make():
            from edgeag.train.envs import make_env
            env = make_env(cfg.env_id, {**cfg.env_kwargs, "render_mode": mode})
            if video is not None:
                env = gym.wrappers.RecordVideo(env, str(video), episode_trigger=lambda e: True,
                                               name_prefix=f"{checkpoint}", disable_logger=True)
            return env
        maker = EnvMaker(base.env_id, base.env_kwargs, fn=make)
    try:
        returns = evaluate(policy._act, maker, policy.obs_norm, episodes,
                           cfg.seed + EVAL_SEED_OFFSET, None if policy.discrete else policy.low,
                           None if policy.discrete else policy.high)
    except gym.error.DependencyNotInstalled as e:  # rendering: pygame, mujoco's renderer
        raise EdgeagError(f"{'--render' if render else '--video'} needs a package that is not "
                          f"installed: {str(e).splitlines()[0]}") from None
    out = {"run": str(run.path), "checkpoint": checkpoint, "step": int(ckpt["global_step"]),
           "env": cfg.env_id, "env_kwargs": dict(cfg.env_kwargs), "episodes": episodes,
           "seed": cfg.seed + EVAL_SEED_OFFSET, "returns": returns,
           "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns))}
    if checkpoint == "best":
        out["recorded_eval_return"] = ckpt.get("eval_return")
    if video is not None:
        out["video"] = sorted(str(p) for p in Path(video).glob("*.mp4"))
    return out


class _Policy:
    """Raw observations to env actions: normalisation, the deterministic head, clipping to
    the action bounds; the numbers of `edgeag.train.envs.evaluate`."""

    def __init__(self, act, obs_norm, obs_dim: int, discrete: bool, low, high, sample=None):
        self._act, self.obs_norm, self.obs_dim = act, obs_norm, obs_dim
        self.discrete, self.low, self.high, self._sample = discrete, low, high, sample

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        x = self.obs_norm(obs)
        action = self._act(x) if deterministic or self._sample is None else self._sample(x)
        action = np.asarray(action)
        if not self.discrete:
            action = np.clip(action, self.low, self.high)
        return action

    @classmethod
    def of_state(cls, trainer, cfg) -> _Policy:
        state, envs = trainer.state, trainer.envs
        space = envs.single_action_space
        discrete = hasattr(space, "n")
        act = trainer.algo.act(state)
        nets = state.nets
        return cls(act, state.obs_norm, envs.single_observation_space.shape[0], discrete,
                   getattr(space, "low", None), getattr(space, "high", None),
                   _sampler(cfg, nets, discrete))

    @classmethod
    def of_checkpoint(cls, ckpt: dict, cfg, maker, mismatch: str) -> _Policy:
        from edgeag.algos import get_algorithm
        from edgeag.train.envs import ObsNormalizer

        algo = get_algorithm(cfg.algo)
        algo.prepare(cfg, 1)
        probe = maker.for_evaluation()
        try:
            obs_space, space = probe.observation_space, probe.action_space
        finally:
            probe.close()
        nets = algo.networks(cfg, obs_space, space)
        try:
            nets.load_state_dict(ckpt)
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
            raise EdgeagError(f"{mismatch} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120]})") from None
        norm = ObsNormalizer(obs_space.shape, enabled=bool(getattr(cfg, "norm_obs", False)))
        if norm.enabled and ckpt.get("obs_norm") is not None:
            norm.load(ckpt["obs_norm"])
        discrete = hasattr(space, "n")
        return cls(nets.deterministic, norm, obs_space.shape[0], discrete,
                   getattr(space, "low", None), getattr(space, "high", None),
                   _sampler(cfg, nets, discrete))


def _sampler(cfg, nets, discrete: bool):
    """``deterministic=False``: PPO and SAC sample their distributions, DQN is
    epsilon-greedy at its final epsilon; each from a generator of its own (the run's is
    not touched). TD3's policy is deterministic (as SB3's)."""
    rng = np.random.default_rng()
    if cfg.algo == "ppo":
        from edgeag.algos.ppo.algorithm import sample

        return lambda x: sample(nets.forward(x)[0], nets.log_std, rng)[0]
    if cfg.algo == "dqn":
        def epsilon_greedy(x):
            greedy = nets.deterministic(x)
            explore = rng.random(len(greedy)) < cfg.exploration_final_eps
            return np.where(explore, rng.integers(nets.arch["action_dim"], size=len(greedy)),
                            greedy)
        return epsilon_greedy
    if cfg.algo == "sac":
        return lambda x: nets.sample_action(
            x, rng.standard_normal((len(x), nets.action_dim), dtype=np.float32))
    return None


# --- helpers ------------------------------------------------------------------------------

def _logger(verbose: int):
    if verbose:
        return lambda text: print(text, file=sys.stderr, flush=True)
    return lambda text: None


def _overrides(config: dict, policy_kwargs: dict | None, seed) -> dict:
    out = {}
    for key, value in config.items():
        name = SB3_NAMES.get(key, key)
        if name == "lr" and callable(value):
            raise EdgeagError("invalid learning_rate: a schedule function is not accepted; "
                              "give a number (PPO anneals it linearly to 0: anneal_lr=True)")
        out[name] = list(value) if isinstance(value, tuple) else value
    if policy_kwargs:
        extra = set(policy_kwargs) - {"net_arch"}
        if extra:
            raise EdgeagError(f"invalid policy_kwargs {sorted(extra)}: edgeag accepts "
                              "net_arch (the hidden widths, e.g. [64, 64])")
        arch = policy_kwargs["net_arch"]
        if isinstance(arch, dict):  # SB3's dict(pi=[...], vf=[...]): one width list for both
            if arch.get("pi") != arch.get("vf", arch.get("qf", arch.get("pi"))):
                raise EdgeagError(f"invalid net_arch {arch!r}: edgeag's actor and critic "
                                  "share one list of widths")
            arch = arch.get("pi")
        out["hidden"] = list(arch)
    if seed is not None:
        out["seed"] = seed
    return out


def _new_config(algo: str, env_id: str, optimizer, overrides: dict, preset):
    from edgeag.optim.registry import OPTIMIZERS as OPTIMIZER_NAMES
    from edgeag.train.config import load_preset_file, optimizer_family, resolve_config

    if optimizer is not None and optimizer not in OPTIMIZER_NAMES:
        raise EdgeagError(f"unknown optimizer {optimizer!r} (accepted: "
                          f"{', '.join(OPTIMIZER_NAMES)})")
    presets = None
    if preset is not None:
        families = sorted({optimizer_family(name) for name in OPTIMIZER_NAMES})
        presets = load_preset_file(preset, algo, families)
    cfg, origin = resolve_config(env_id, optimizer, overrides, algo, presets,
                                 None if preset is None else str(preset))
    _require_engine(cfg, overrides)
    return cfg, origin


def _require_engine(cfg, overrides: dict) -> None:
    from edgeag.errors import require_torch

    if cfg.engine == "torch":
        from edgeag.optim.registry import check_available
        from edgeag.train.config import torch_missing_message

        require_torch(torch_missing_message(cfg, overrides))
        check_available(cfg.optimizer)


def _env_maker(env, env_kwargs, algo: str, num_envs: int | None) -> tuple[EnvMaker, str]:
    """(`EnvMaker`, the env id config.toml records) for what the API accepts as an env."""
    import gymnasium as gym

    from edgeag.train.config import coerce_env_kwargs

    kwargs = coerce_env_kwargs(env_kwargs or {}, "env_kwargs")
    if isinstance(env, (str, Path)):
        maker = EnvMaker(str(env), kwargs)
        maker.run_info = {"env_source": "id"}
        return maker, str(env)
    if isinstance(env, getattr(gym.vector, "VectorEnv", ())) or hasattr(env, "num_envs"):
        raise EdgeagError(f"invalid env {type(env).__name__}: a vector env; edgeag builds its "
                          "own from one env: pass an env id, or a function that returns one env")
    if kwargs:
        raise EdgeagError("env_kwargs apply to an env id; an env object or function is made "
                          "already: give its arguments there")
    if isinstance(env, gym.Env):
        first = [env]

        def once():
            if not first:
                raise EdgeagError(f"an env object is one env, and {algo} asks for more "
                                  "(num_envs > 1): pass an env id, or a function that returns "
                                  "a new env (env=lambda: gymnasium.make(...))")
            return first.pop()

        def copy_for_evaluation():
            import copy
            try:
                return copy.deepcopy(env)
            except Exception:  # noqa: BLE001 (an env that cannot be copied)
                if env.spec is not None:
                    return gym.make(env.spec)
                raise EdgeagError("cannot evaluate on a copy of this env object (it cannot "
                                  "be copied and has no spec): pass a function that returns "
                                  "a new env instead") from None

        maker = EnvMaker(_env_name(env), {}, fn=once, eval_fn=copy_for_evaluation)
        maker.run_info = {"env_source": "python"}
        maker.single = True
        return maker, maker.env_id
    if callable(env):
        probe = env()
        if not isinstance(probe, gym.Env):
            raise EdgeagError(f"invalid env function {env!r}: it returned "
                              f"{type(probe).__name__}, not a gymnasium.Env")
        made = [probe]
        maker = EnvMaker(_env_name(probe), {}, fn=lambda: made.pop() if made else env())
        maker.run_info = {"env_source": "python"}
        return maker, maker.env_id
    raise EdgeagError(f"invalid env {env!r}: expected an env id such as 'CartPole-v1', "
                      "'module:EnvId', a function that returns a gymnasium.Env, or a "
                      "gymnasium.Env")


def _env_name(env) -> str:
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None and spec.id else type(env.unwrapped).__name__


def _check_env_object(maker: EnvMaker, cfg) -> None:
    if maker.single and cfg.num_envs != 1:
        raise EdgeagError(f"an env object is one env, and {cfg.algo} steps num_envs="
                          f"{cfg.num_envs}: pass an env id, or a function that returns a new "
                          "env (env=lambda: gymnasium.make(...)), or num_envs=1")


def default_run_dir(cfg) -> Path:
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    env = cfg.env_id.replace("/", "_").replace(":", "_")  # namespace/Id, module:Id
    return Path("runs") / f"{env}-{cfg.algo}-{cfg.optimizer}-s{cfg.seed}-{stamp}"
