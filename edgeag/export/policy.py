"""The policy as exported: a trained run's checkpoint rebuilt as one plain ``nn.Module``
(raw observation in, action out), and the observations it is verified on."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from edgeag.errors import EdgeagError
from edgeag.train.envs import NORM_EPS, OBS_CLIP, check_spaces, make_env
from edgeag.train.networks import ActorCritic
from edgeag.train.rundir import RunDir

VERIFY_OBSERVATIONS = 1024
"""Observations recorded from the env that every artifact is checked on."""
VERIFY_SEED = 20_000
"""Seeds of the recording episodes: VERIFY_SEED, VERIFY_SEED + 1, ... (apart from the
training seeds and from `edgeag.train.envs.EVAL_SEED_OFFSET`'s evaluation seeds)."""


class ExportPolicy(nn.Module):
    """Raw observation -> normalised and clipped observation -> actor -> deterministic
    action, exactly what `edgeag.train.envs.evaluate` does with the trained policy:

    - normalisation: ``clip((obs - mean) / sqrt(var + 1e-8), -10, 10)`` with the running
      statistics frozen at the checkpoint (skipped when the run had ``norm_obs = false``);
      computed in float32 here, in float64 then rounded in `ObsNormalizer` (a difference
      of about 1e-7, tested);
    - discrete actions: argmax of the actor's logits, int64 ``[batch]``;
    - continuous actions: the Gaussian mean clipped to the action space's bounds, float32
      ``[batch, act_dim]`` (the policy acts in the env's own units, so clipping is the
      whole mapping to the bounds).

    Built from plain modules (the actor ``nn.Sequential`` of Linear/Tanh and buffers) so
    `torch.export` and `torch.onnx.export` see ordinary ops.
    """

    def __init__(self, actor: nn.Sequential, discrete: bool, obs_mean: np.ndarray | None,
                 obs_var: np.ndarray | None, action_low: np.ndarray | None = None,
                 action_high: np.ndarray | None = None):
        super().__init__()
        self.actor = copy.deepcopy(actor).float().eval()
        self.discrete = discrete
        self.normalize = obs_mean is not None
        if self.normalize:
            self.register_buffer("obs_mean", torch.as_tensor(obs_mean, dtype=torch.float32))
            self.register_buffer("obs_std", torch.as_tensor(
                np.sqrt(np.asarray(obs_var, np.float64) + NORM_EPS), dtype=torch.float32))
        if not discrete:
            self.register_buffer("action_low", torch.as_tensor(action_low, dtype=torch.float32))
            self.register_buffer("action_high", torch.as_tensor(action_high, dtype=torch.float32))

    def forward(self, obs: Tensor) -> Tensor:
        x = obs
        if self.normalize:
            x = torch.clamp((x - self.obs_mean) / self.obs_std, -OBS_CLIP, OBS_CLIP)
        out = self.actor(x)
        if self.discrete:
            return out.argmax(-1)
        return torch.minimum(torch.maximum(out, self.action_low), self.action_high)

    def logits(self, obs: Tensor) -> Tensor:
        """The actor's output before the action head (for naming the worst mismatch)."""
        x = obs
        if self.normalize:
            x = torch.clamp((x - self.obs_mean) / self.obs_std, -OBS_CLIP, OBS_CLIP)
        return self.actor(x)


@dataclass
class TrainedRun:
    """What export needs from a run directory."""

    path: Path
    config: dict
    """The run's resolved `PPOConfig` (as saved in the checkpoint)."""
    policy: ActorCritic
    obs_norm: dict
    """`ObsNormalizer.state()`: mean, var, count."""
    observation_space: object
    action_space: object
    summary: dict | None
    """``summary.json`` when the run finished or stopped with one."""
    checkpoint_step: int

    @property
    def discrete(self) -> bool:
        return self.policy.discrete

    def export_policy(self) -> ExportPolicy:
        norm = self.config.get("norm_obs", True)
        low = None if self.discrete else self.action_space.low
        high = None if self.discrete else self.action_space.high
        return ExportPolicy(self.policy.actor, self.discrete,
                            self.obs_norm["mean"] if norm else None,
                            self.obs_norm["var"] if norm else None, low, high).eval()


EXPORTABLE = ("ppo",)
"""Algorithms whose policies `load_run` can rebuild."""


def _algo(run: RunDir) -> str:
    """The algorithm a run was trained with, from its config.toml (ppo if unreadable:
    the checkpoint then decides)."""
    import tomllib

    try:
        with open(run.config, "rb") as f:
            return str(tomllib.load(f).get("run", {}).get("algo", "ppo"))
    except (OSError, tomllib.TOMLDecodeError):
        return "ppo"


def load_run(path: str | Path) -> TrainedRun:
    """The policy, normaliser and spaces of the run in ``path``; EdgeagError (exit 2)
    for a missing directory, a run without a checkpoint or an unreadable one."""
    import json

    run = RunDir(path)
    if not run.path.is_dir():
        raise EdgeagError(f"cannot export: no run directory at {run.path}")
    if not run.checkpoint.is_file():
        raise EdgeagError(f"cannot export: {run.path} has no checkpoint "
                          f"({run.checkpoint.relative_to(run.path)}); train it first with "
                          f"edgeag train --out {run.path}")
    algo = _algo(run)
    if algo not in EXPORTABLE:
        raise EdgeagError(f"cannot export: {run.path} is a {algo} run; edgeag export accepts "
                          f"runs of {', '.join(EXPORTABLE)}")
    ckpt = run.load_checkpoint(purpose="export")
    try:
        cfg, arch = ckpt["config"], ckpt["arch"]
        policy = ActorCritic.from_arch(arch)  # whichever engine trained it: the same names
        policy.load_state_dict({k: torch.as_tensor(v) for k, v in ckpt["policy"].items()})
        obs_norm = ckpt["obs_norm"]
        step = int(ckpt["global_step"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise EdgeagError(f"cannot export: {run.checkpoint} lacks the policy "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    policy.eval()
    env = make_env(cfg["env_id"])
    try:
        check_spaces(cfg["env_id"], env.observation_space, env.action_space)
        obs_space, action_space = env.observation_space, env.action_space
    finally:
        env.close()
    summary = None
    if run.summary.is_file():
        try:
            summary = json.loads(run.summary.read_text())
        except (OSError, ValueError):
            summary = None
    return TrainedRun(run.path, cfg, policy, obs_norm, obs_space, action_space, summary, step)


def record_observations(policy: ExportPolicy, env_id: str, count: int = VERIFY_OBSERVATIONS,
                        seed: int = VERIFY_SEED, explore: float = 0.25) -> tuple[np.ndarray, dict]:
    """``count`` raw observations (float32 ``[count, obs_dim]``) from real episodes of
    ``env_id``, each at most ``count // 4`` steps: alternately the policy's own
    deterministic episodes (the states it meets on the device) and episodes where a
    uniformly random action replaces the policy's with probability ``explore`` (states
    off its path, where a wrong action would show)."""
    env = make_env(env_id)
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
                    with torch.no_grad():
                        action = policy(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
                obs, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
            episode += 1
    finally:
        env.close()
    return np.stack(rows), {"count": len(rows), "episodes": episode, "seed": seed,
                            "explore": explore, **kinds}
