"""The policy as exported: a trained run's checkpoint read as a `PolicySpec` (numpy
arrays, no torch), and the observations every artifact is verified on: the
checkpoint's sample of training observations, or, when asked, observations recorded
from the env (`record_observations`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeag.algos import export_specs, supported_algos
from edgeag.errors import EdgeagError
from edgeag.export.spec import PolicySpec, SpecError, spec_from_checkpoint
from edgeag.train.envs import check_spaces, make_env
from edgeag.train.rundir import RunDir

VERIFY_OBSERVATIONS = 1024
"""Observations every artifact is checked on: the run's sample of its training
observations (`edgeag.train.observations`, as many), or, when asked
(``--record-observations``), as many recorded by stepping the env."""
VERIFY_SEED = 20_000
"""Seeds of the recording episodes: VERIFY_SEED, VERIFY_SEED + 1, ... (apart from the
training seeds and from `edgeag.train.envs.EVAL_SEED_OFFSET`'s evaluation seeds)."""

EXPORTABLE = tuple(supported_algos())
"""Algorithms whose policies `load_run` can rebuild: every registered one."""


@dataclass
class TrainedRun:
    """What export needs from a run directory."""

    path: Path
    config: dict
    """The run's resolved configuration (as saved in the checkpoint)."""
    spec: PolicySpec
    obs_norm: dict | None
    """`ObsNormalizer.state()` (mean, var, count) of a PPO run; None for off-policy runs,
    whose observations are used raw."""
    observation_space: object
    action_space: object
    summary: dict | None
    """``summary.json`` when the run finished or stopped with one."""
    checkpoint_step: int
    observations: tuple[np.ndarray, dict] | None = None
    """The checkpoint's sample of training observations and what it is
    (`edgeag.train.observations.from_checkpoint`); None for a run trained before runs
    kept one."""

    @property
    def algorithm(self) -> str:
        return self.spec.algorithm

    @property
    def discrete(self) -> bool:
        return self.spec.discrete

    def export_policy(self):
        """The spec as a torch module (`edgeag.export.executorch.ExportPolicy`; imports
        torch)."""
        from edgeag.export.executorch import ExportPolicy

        return ExportPolicy(self.spec).eval()


def _algo(run: RunDir) -> str | None:
    """The algorithm in the run's config.toml (None if unreadable: the checkpoint then
    decides)."""
    from edgeag.io import tomllib

    try:
        with open(run.config, "rb") as f:
            return tomllib.load(f).get("run", {}).get("algo")
    except (OSError, tomllib.TOMLDecodeError):
        return None


def read_checkpoint(run: RunDir) -> dict:
    """The run's checkpoint with every array as a numpy array, also those a torch-engine
    run saved as torch tensors, so that reading it never imports torch. An unreadable
    file is read once more by `RunDir.load_checkpoint`, for its one-line refusal (an
    older run's ``latest.pt`` is read that way too: only torch reads it)."""
    from edgeag.train import checkpoint

    if run.checkpoint.suffix == ".safetensors":
        try:
            return checkpoint.load(run.checkpoint, numpy_only=True)
        except Exception:  # noqa: BLE001 (the message comes from load_checkpoint)
            pass
    return run.load_checkpoint(purpose="export")


def load_run(path: str | Path) -> TrainedRun:
    """The policy, normaliser and spaces of the run in ``path``; EdgeagError (exit 2)
    for a missing directory, a run without a checkpoint, an unreadable one or one
    whose arrays do not make a policy."""
    import json

    run = RunDir(path)
    if not run.path.is_dir():
        raise EdgeagError(f"cannot export: no run directory at {run.path}")
    if not run.checkpoint.is_file():
        raise EdgeagError(f"cannot export: {run.path} has no checkpoint "
                          f"({run.checkpoint.relative_to(run.path)}); train it first with "
                          f"edgeag train --out {run.path}")
    algo = _algo(run)
    if algo is not None and algo not in EXPORTABLE:
        raise EdgeagError(f"cannot export: {run.path} is a {algo} run; edgeag export accepts "
                          f"runs of {', '.join(EXPORTABLE)}")
    ckpt = read_checkpoint(run)
    try:
        cfg = ckpt["config"]
        env_id, step = cfg["env_id"], int(ckpt["global_step"])
    except (KeyError, TypeError, ValueError) as e:
        raise EdgeagError(f"cannot export: {run.checkpoint} lacks the policy "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    env = make_env(env_id, cfg.get("env_kwargs"))
    try:
        check_spaces(env_id, env.observation_space, env.action_space)
        obs_space, action_space = env.observation_space, env.action_space
    finally:
        env.close()
    low, high = (None, None) if not hasattr(action_space, "low") else \
        (action_space.low, action_space.high)
    kind = ckpt["arch"].get("kind") if isinstance(ckpt.get("arch"), dict) else None
    saved = ckpt.get("algo") or cfg.get("algo") or algo
    kinds = {e.arch_kind: name for name, e in export_specs().items()}
    if kind in kinds and saved is not None and saved != kinds[kind]:
        raise EdgeagError(f"cannot export: {run.checkpoint} is a {saved} run whose arch is "
                          f"{kinds[kind]}'s (arch kind {kind!r})")
    try:
        spec = spec_from_checkpoint(ckpt, low, high)
    except SpecError as e:
        raise EdgeagError(f"cannot export: {run.checkpoint} lacks the policy ({e})") from None
    if spec.obs_dim != obs_space.shape[0]:
        raise EdgeagError(f"cannot export: {run.checkpoint}'s policy takes {spec.obs_dim} "
                          f"values, env {env_id!r} gives shape {obs_space.shape}")
    summary = None
    if run.summary.is_file():
        try:
            summary = json.loads(run.summary.read_text())
        except (OSError, ValueError):
            summary = None
    obs_norm = ckpt.get("obs_norm") if spec.export.normalises_obs else None
    from edgeag.train.observations import from_checkpoint

    return TrainedRun(run.path, cfg, spec, obs_norm, obs_space, action_space, summary, step,
                      from_checkpoint(ckpt))


def record_observations(policy: PolicySpec, env_id: str, count: int = VERIFY_OBSERVATIONS,
                        seed: int = VERIFY_SEED, explore: float = 0.25,
                        env_kwargs: dict | None = None) -> tuple[np.ndarray, dict]:
    """``count`` raw observations (float32 ``[count, obs_dim]``) from real episodes of
    ``env_id``, each at most ``count // 4`` steps: alternately the policy's own
    deterministic episodes (the states it meets on the device; actions from the numpy
    reference, `PolicySpec.forward`) and episodes where a uniformly random action
    replaces the policy's with probability ``explore`` (states off its path, where a
    wrong action would show)."""
    env = make_env(env_id, env_kwargs)
    env.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = []
    kinds = {"policy_steps": 0, "explore_steps": 0}
    episode = 0
    try:
        while len(rows) < count:
            kind = "policy_steps" if episode % 2 == 0 else "explore_steps"
            obs, _ = env.reset(seed=seed + episode)
            for _ in range(max(1, count // 4)):
                rows.append(np.asarray(obs, np.float32))
                kinds[kind] += 1
                if len(rows) == count:
                    break
                if kind == "explore_steps" and rng.random() < explore:
                    action = env.action_space.sample()
                else:
                    action = policy.forward(rows[-1][None])[0]
                obs, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
            episode += 1
    finally:
        env.close()
    return np.stack(rows), {"count": len(rows), "episodes": episode, "seed": seed,
                            "explore": explore, **kinds}
