"""Environments for training: building and checking them, running normalisation
statistics, saving and restoring their exact state, deterministic evaluation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers.utils import RunningMeanStd

from edgeag.algos.base import NORM_EPS, OBS_CLIP
from edgeag.errors import EdgeagError

ENV_IDS = ("a registered Gymnasium id such as CartPole-v1, or module:EnvId with the module "
           "on PYTHONPATH")
"""What ``--env`` accepts, for messages."""


def make_env(env_id: str, env_kwargs: dict | None = None) -> gym.Env:
    """``gymnasium.make(env_id, **env_kwargs)``. For ``module:EnvId`` Gymnasium imports
    ``module`` first, which registers ``EnvId``: how a user's own env is found. EdgeagError
    (exit 2) naming the id and what is accepted when the id is malformed, its module
    is not on PYTHONPATH, nothing registers it, or it does not take ``env_kwargs``; an
    exception raised by the module's or the env's own code keeps its traceback (the bug
    is there)."""
    module = import_env_module(env_id)
    env_kwargs = env_kwargs or {}
    try:
        return gym.make(env_id, disable_env_checker=True, **env_kwargs)
    except gym.error.Error as e:
        raise EdgeagError(f"unknown env {env_id!r}: {_not_found(env_id, module, e)} "
                          f"(accepted: {ENV_IDS})") from None
    except (ImportError, gym.error.DependencyNotInstalled) as e:
        raise EdgeagError(f"env {env_id!r} needs a package that is not installed: "
                          f"{str(e).splitlines()[0]}") from None
    except TypeError as e:
        if not env_kwargs or "argument" not in str(e):
            raise
        raise EdgeagError(f"invalid env_kwargs {env_kwargs}: env {env_id!r} does not take "
                          f"them ({str(e).splitlines()[0]})") from None


class EnvMaker:
    """Makes the run's env: ``make_env(env_id, env_kwargs)``, or, from the Python API, a
    function that returns a new env (``fn``). ``eval_fn``: what makes the evaluation's
    env when it cannot be ``fn`` (an env object passed in: it trains, a copy evaluates)."""

    def __init__(self, env_id: str, env_kwargs: dict | None = None, fn=None, eval_fn=None):
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})
        self.fn, self.eval_fn = fn, eval_fn
        self.single = False
        """An env object passed in: one env, not a maker of more."""
        self.needs_env = False
        """A loaded run that trained on an env object: only that object can continue it."""
        self.run_info: dict = {"env_source": "id" if fn is None else "python"}
        """What config.toml's ``[run]`` table records of where the env came from."""

    def __call__(self) -> gym.Env:
        return self.fn() if self.fn is not None else make_env(self.env_id, self.env_kwargs)

    def for_evaluation(self) -> gym.Env:
        return self.eval_fn() if self.eval_fn is not None else self()


def as_maker(env) -> EnvMaker:
    return env if isinstance(env, EnvMaker) else EnvMaker(env)


def import_env_module(env_id: str) -> str | None:
    """Import the ``module`` of a ``module:EnvId`` id (None for a plain id), with the
    errors of `make_env`."""
    import importlib

    module, sep, name = env_id.partition(":")
    if not sep:
        return None
    if not module or not name or ":" in name:
        raise EdgeagError(f"invalid env {env_id!r}: expected {ENV_IDS}")
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise EdgeagError(f"unknown env {env_id!r}: no module {e.name!r} on PYTHONPATH "
                              f"(accepted: {ENV_IDS})") from None
        raise EdgeagError(f"env {env_id!r} needs a package that is not installed: module "
                          f"{module!r} imports {e.name!r}") from None
    return module


def _not_found(env_id: str, module: str | None, error: Exception) -> str:
    """Why ``env_id`` was not found: for ``module:EnvId``, the ids the module
    registers; else Gymnasium's reason, with similar ids."""
    name = env_id.partition(":")[2]
    if module is not None and name not in gym.registry:
        ids = [k for k, spec in gym.registry.items() if _entry_module(spec.entry_point) == module]
        return f"module {module} registers no env {name}" + (
            f" (it registers {', '.join(ids)})" if ids else
            " (a module registers its envs by calling gymnasium.register when imported)")
    reason = str(error).splitlines()[0]
    close = [k for k in sorted(gym.registry) if "/" not in k
             and env_id.split("-")[0].lower() in k.lower()]
    return reason + (f" (did you mean {', '.join(close[:3])}?)"
                     if close and "Did you mean" not in reason else "")


def _entry_module(entry_point) -> str | None:
    if isinstance(entry_point, str):
        return entry_point.partition(":")[0]
    return getattr(entry_point, "__module__", None)


OBSERVATIONS_ACCEPTED = "a flat 1-D Box (a vector of numbers)"
ACTIONS_ACCEPTED = {None: "Discrete(n) starting at 0, or a bounded 1-D Box (finite low and high)",
                    True: "Discrete(n) starting at 0",
                    False: "a bounded 1-D Box (finite low and high)"}
"""By ``Algorithm.discrete_actions``: what each kind of algorithm accepts."""


def check_spaces(env_id: str, obs_space: gym.Space, action_space: gym.Space,
                 algo=None) -> tuple[int, int, bool]:
    """(obs_dim, action_dim, discrete) for spaces that ``algo`` (an `Algorithm`; None:
    any edgeag algorithm) trains on; otherwise EdgeagError naming the space, what is
    accepted and, where there is one, the way to get there."""
    who = algo.name if algo is not None else "edgeag"
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise EdgeagError(f"env {env_id!r} has observation space {obs_space}: {who} accepts "
                          f"{OBSERVATIONS_ACCEPTED}{_observation_hint(obs_space)}")
    discrete = isinstance(action_space, gym.spaces.Discrete) and int(action_space.start) == 0
    bounded = (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1
               and bool(np.all(np.isfinite(action_space.low)))
               and bool(np.all(np.isfinite(action_space.high))))
    wanted = getattr(algo, "discrete_actions", None)
    if (discrete and wanted is not False) or (bounded and wanted is not True):
        action_dim = int(action_space.n) if discrete else action_space.shape[0]
        return obs_space.shape[0], action_dim, discrete
    hint = (f" (try --algo {'dqn' if discrete else 'td3'} or ppo)" if discrete or bounded
            else _action_hint(action_space, wanted))
    raise EdgeagError(f"env {env_id!r} has action space {action_space}: {who} accepts "
                      f"{ACTIONS_ACCEPTED[wanted]}{hint}")


def _observation_hint(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Box):
        if not space.shape:
            return "; this one is a scalar: give it shape (1,)"
        return (f"; this one is {len(space.shape)}-D (edgeag's policies are MLPs, with no "
                "convolutional network for images): give the policy a vector of features, "
                "or flatten it with gymnasium.wrappers.FlattenObservation")
    if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple, gym.spaces.Discrete,
                          gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
        return "; gymnasium.wrappers.FlattenObservation turns it into one"
    return ""


def _action_hint(space: gym.Space, wanted: bool | None) -> str:
    """How ``space`` could become an action space of the kind ``wanted`` (True:
    Discrete, False: Box, None: either), where there is a short answer."""
    if wanted is not False and isinstance(space, gym.spaces.Discrete):
        return f"; this one starts at {space.start}"
    multi = isinstance(space, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary))
    if wanted is not False and multi:
        combos = (int(np.prod(space.nvec)) if isinstance(space, gym.spaces.MultiDiscrete)
                  else 2 ** int(np.prod(space.shape)))
        return f"; one action per combination would be Discrete({combos})"
    if wanted is not True and isinstance(space, gym.spaces.Box):
        if len(space.shape) != 1:
            return f"; this one is {len(space.shape)}-D"
        return "; this one is unbounded: give it finite low and high (actions are clipped to them)"
    return ""


def make_vector_env(env, num_envs: int, algo=None) -> SyncVectorEnv:
    """Envs stepped in this process (subprocesses would each cost a Python + numpy
    floor). Same-step autoreset: a finished env's last observation arrives in
    ``info["final_obs"]`` and the returned one already starts the next episode, so a
    truncated episode can be bootstrapped from its real final state. The first env's
    spaces are checked (for ``algo``) before the vector env batches them."""
    maker = as_maker(env)
    first = maker()
    try:
        check_spaces(maker.env_id, first.observation_space, first.action_space, algo)
    except EdgeagError:
        first.close()
        raise
    envs = SyncVectorEnv([lambda: first] + [maker] * (num_envs - 1),
                         autoreset_mode=AutoresetMode.SAME_STEP)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
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


def evaluate(act, env, normalize: ObsNormalizer, episodes: int, seed: int,
             action_low=None, action_high=None, lengths: bool = False):
    """Returns of ``episodes`` deterministic episodes on a fresh env (``env``: an id or an
    `EnvMaker`; or an env object, used as it is) seeded ``seed``, ``seed + 1``, ...;
    ``act`` maps a batch of normalised observations (numpy) to actions (greedy / mean);
    normalisation statistics frozen. With ``lengths``: (returns, episode lengths)."""
    owned = not isinstance(env, gym.Env)
    if owned:
        env = as_maker(env).for_evaluation()
    returns, steps = [], []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            total, done = 0.0, False
            steps.append(0)
            while not done:
                action = np.asarray(act(normalize(obs[None].astype(np.float64))))[0]
                if action_low is not None:
                    action = np.clip(action, action_low, action_high)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                steps[-1] += 1
                done = terminated or truncated
            returns.append(total)
    finally:
        if owned:
            env.close()
    return (returns, steps) if lengths else returns


def env_dims(env: str, env_kwargs: dict | None = None) -> tuple[int, int, bool]:
    """(obs_dim, action_dim, discrete) of ``env``, or the env's EdgeagError."""
    e = make_env(env, env_kwargs)
    try:
        return check_spaces(env, e.observation_space, e.action_space)
    finally:
        e.close()
