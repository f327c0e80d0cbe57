"""Environments for training: building and checking them, running normalisation
statistics, saving and restoring their exact state, deterministic evaluation."""

from __future__ import annotations

import numpy as np
import gymnasium as gym
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers.utils import RunningMeanStd

from edgeag.errors import EdgeagError

OBS_CLIP = 10.0
NORM_EPS = 1e-8


def make_env(env_id: str) -> gym.Env:
    try:
        return gym.make(env_id, disable_env_checker=True)
    except gym.error.Error as e:
        known = sorted(k for k in gym.registry if "/" not in k)
        close = [k for k in known if env_id.split("-")[0].lower() in k.lower()]
        hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
        raise EdgeagError(f"unknown env {env_id!r}: {str(e).splitlines()[0]}{hint}") from None
    except (ImportError, gym.error.DependencyNotInstalled) as e:
        raise EdgeagError(f"env {env_id!r} needs a package that is not installed: "
                          f"{str(e).splitlines()[0]}") from None


def check_spaces(env_id: str, obs_space: gym.Space, action_space: gym.Space) -> tuple[int, int, bool]:
    """(obs_dim, action_dim, discrete) for a supported env; EdgeagError otherwise."""
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise EdgeagError(f"env {env_id!r} has observation space {obs_space}: edgeag PPO "
                          "accepts a flat Box (1-D float vector)")
    if isinstance(action_space, gym.spaces.Discrete) and action_space.start == 0:
        return obs_space.shape[0], int(action_space.n), True
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1 \
            and np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high)):
        return obs_space.shape[0], action_space.shape[0], False
    raise EdgeagError(f"env {env_id!r} has action space {action_space}: edgeag PPO accepts "
                      "Discrete(n) or a bounded 1-D Box")


def make_vector_env(env_id: str, num_envs: int) -> SyncVectorEnv:
    """Envs stepped in this process (subprocesses would each cost a Python + numpy
    floor). Same-step autoreset: a finished env's last observation arrives in
    ``info["final_obs"]`` and the returned one already starts the next episode, so a
    truncated episode can be bootstrapped from its real final state."""
    envs = SyncVectorEnv([lambda: make_env(env_id) for _ in range(num_envs)],
                         autoreset_mode=AutoresetMode.SAME_STEP)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    check_spaces(env_id, envs.single_observation_space, envs.single_action_space)
    return envs


class ObsNormalizer:
    """Running mean/std of observations (gymnasium's `RunningMeanStd`), clipped to
    +-10 after scaling: what `gymnasium.wrappers.NormalizeObservation` computes,
    kept outside the env so it can be frozen, checkpointed and exported."""

    def __init__(self, shape: tuple[int, ...], enabled: bool = True):
        self.enabled = enabled
        self.rms = RunningMeanStd(shape=shape)

    def __call__(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        if not self.enabled:
            return obs.astype(np.float32, copy=False)
        if update:
            self.rms.update(obs)
        return np.clip((obs - self.rms.mean) / np.sqrt(self.rms.var + NORM_EPS),
                       -OBS_CLIP, OBS_CLIP).astype(np.float32)

    def state(self) -> dict:
        return {"mean": self.rms.mean.copy(), "var": self.rms.var.copy(),
                "count": float(self.rms.count)}

    def load(self, state: dict) -> None:
        self.rms.mean, self.rms.var = np.asarray(state["mean"]), np.asarray(state["var"])
        self.rms.count = float(state["count"])


class RewardScaler:
    """Rewards divided by the running std of the discounted return, as
    `gymnasium.wrappers.vector.NormalizeReward` does (the return restarts when an
    episode terminates or is truncated)."""

    def __init__(self, num_envs: int, gamma: float, enabled: bool):
        self.enabled, self.gamma = enabled, gamma
        self.rms = RunningMeanStd(shape=())
        self.discounted = np.zeros(num_envs)

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return reward
        self.discounted = self.discounted * self.gamma + reward
        self.rms.update(self.discounted)
        self.discounted[done] = 0.0
        return reward / np.sqrt(self.rms.var + NORM_EPS)

    def state(self) -> dict:
        return {"var": float(self.rms.var), "mean": float(self.rms.mean),
                "count": float(self.rms.count), "discounted": self.discounted.copy()}

    def load(self, state: dict) -> None:
        self.rms.var, self.rms.mean = np.float64(state["var"]), np.float64(state["mean"])
        self.rms.count = float(state["count"])
        self.discounted = np.asarray(state["discounted"], dtype=np.float64).copy()


# --- exact env state, for resuming --------------------------------------------------

_PLAIN = (bool, int, float, str, type(None), np.ndarray, np.generic)


def env_state(env: gym.Env) -> list[dict]:
    """The plain-data state of every layer of ``env`` (wrappers and the base env):
    numbers, arrays (physics state, step counters), the random generator's state,
    and MuJoCo's qpos/qvel/warm start. Enough to continue bit for bit."""
    layers = []
    layer = env
    while True:
        state = {k: _plain(v) for k, v in vars(layer).items()
                 if isinstance(v, _PLAIN) and not k.startswith("_ezpickle")}
        state.pop("spec", None)
        if getattr(layer, "_np_random", None) is not None:
            state["__np_random__"] = layer._np_random.bit_generator.state
        data = getattr(layer, "data", None)
        if data is not None and hasattr(data, "qpos") and hasattr(layer, "model"):
            state["__mujoco__"] = {"qpos": data.qpos.copy(), "qvel": data.qvel.copy(),
                                   "act": data.act.copy(), "time": float(data.time),
                                   "qacc_warmstart": data.qacc_warmstart.copy()}
        layers.append(state)
        if not hasattr(layer, "env"):
            return layers
        layer = layer.env


def set_env_state(env: gym.Env, layers: list[dict]) -> None:
    layer = env
    for state in layers:
        for key, value in state.items():
            if key == "__np_random__":
                rng = np.random.Generator(getattr(np.random, value["bit_generator"])())
                rng.bit_generator.state = value
                layer._np_random = rng
            elif key == "__mujoco__":
                data = layer.data
                data.qpos[:], data.qvel[:], data.act[:] = value["qpos"], value["qvel"], value["act"]
                data.qacc_warmstart[:] = value["qacc_warmstart"]
                data.time = value["time"]
                import mujoco
                mujoco.mj_forward(layer.model, data)
            else:
                setattr(layer, key, value)
        layer = getattr(layer, "env", None)


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, np.generic):
        return value.item()
    return value


# --- evaluation ---------------------------------------------------------------------

EVAL_SEED_OFFSET = 10_000
"""Evaluation episodes use seeds seed + 10000, ... (never a training seed)."""


def evaluate(act, env_id: str, normalize: ObsNormalizer, episodes: int, seed: int,
             action_low=None, action_high=None) -> list[float]:
    """Returns of ``episodes`` deterministic episodes on a fresh env seeded ``seed``,
    ``seed + 1``, ...; ``act`` maps a batch of normalised observations (numpy) to
    actions (greedy / mean); normalisation statistics frozen."""
    env = make_env(env_id)
    returns = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            total, done = 0.0, False
            while not done:
                action = np.asarray(act(normalize(obs[None].astype(np.float64))))[0]
                if action_low is not None:
                    action = np.clip(action, action_low, action_high)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return returns
