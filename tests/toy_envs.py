"""Small Gymnasium environments for training tests, registered under ``edgeag-test/``."""

import gymnasium as gym
import numpy as np


class ConstantReward(gym.Env):
    """Reward 1 every step, never terminates: only its time limit ends an episode.
    Observation: the step count within the episode (so the true value is known)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([self.t], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 1.0, False, False, {}


class Leaky(gym.Env):
    """CartPole-like dynamics are irrelevant here: at global step ``leak_at`` the env
    allocates (and keeps) ``leak_bytes``, as a leaking simulator would."""

    observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, leak_at: int = 400, leak_bytes: int = 160 << 20):
        self.leak_at, self.leak_bytes = leak_at, leak_bytes
        self.total_steps = 0
        self._cache = []  # where leaks usually live: not plain data, so never checkpointed

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 4).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        self.total_steps += 1
        if self.total_steps == self.leak_at:
            self._cache.append(np.ones(self.leak_bytes, dtype=np.uint8))  # touched: resident
        obs = self.np_random.uniform(-1, 1, 4).astype(np.float32)
        return obs, float(action == 1), self.t >= 20, False, {}


class BigLeak(Leaky):
    """Leaks 512 MiB at once: more than any test budget's headroom."""

    def __init__(self):
        super().__init__(leak_bytes=512 << 20)


# Spaces edgeag refuses (checked before the first step, so these are never stepped).

class MultiBinaryAction(ConstantReward):
    action_space = gym.spaces.MultiBinary(3)


class MultiDiscreteAction(ConstantReward):
    action_space = gym.spaces.MultiDiscrete([3, 2])


class TupleAction(ConstantReward):
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))


class UnboundedAction(ConstantReward):
    action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


class ShiftedDiscreteAction(ConstantReward):
    action_space = gym.spaces.Discrete(3, start=-1)


class DictObservation(ConstantReward):
    observation_space = gym.spaces.Dict({"speed": gym.spaces.Box(0, 1, (1,), np.float32),
                                         "mode": gym.spaces.Discrete(3)})


class TupleObservation(ConstantReward):
    observation_space = gym.spaces.Tuple((gym.spaces.Box(0, 1, (2,), np.float32),
                                          gym.spaces.Discrete(3)))


class ImageObservation(ConstantReward):
    observation_space = gym.spaces.Box(0, 255, (84, 84, 3), np.uint8)


class Identity(gym.Env):
    """SB3's identity test as an env: the observation is a one-hot target out of 4,
    reward 1 for choosing it; 20 steps an episode (random play: 5, perfect: 20)."""

    observation_space = gym.spaces.Box(0, 1, (4,), np.float32)
    action_space = gym.spaces.Discrete(4)

    def _obs(self):
        self.target = int(self.np_random.integers(4))
        return np.eye(4, dtype=np.float32)[self.target]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        reward = float(action == self.target)
        return self._obs(), reward, False, False, {}


class IdentityBox(gym.Env):
    """The continuous identity test: match the observed target in [-1, 1]; reward
    -(action - target)^2; 20 steps an episode (random play: about -13, perfect: 0)."""

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def _obs(self):
        self.target = self.np_random.uniform(-1, 1, 1).astype(np.float32)
        return self.target.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        reward = -float(np.sum((np.asarray(action) - self.target) ** 2))
        return self._obs(), reward, False, False, {}


class Counting(Identity):
    """`Identity` that counts, over every instance in the process, its steps and
    resets: an env that moves hardware shows what a command made it do."""

    steps = resets = 0

    def reset(self, *, seed=None, options=None):
        Counting.resets += 1
        return super().reset(seed=seed, options=options)

    def step(self, action):
        Counting.steps += 1
        return super().step(action)


def register() -> None:
    for name, entry, steps in (("ConstantReward-v0", ConstantReward, 5),
                               ("Leaky-v0", Leaky, None), ("BigLeak-v0", BigLeak, None),
                               ("MultiBinaryAction-v0", MultiBinaryAction, 5),
                               ("MultiDiscreteAction-v0", MultiDiscreteAction, 5),
                               ("TupleAction-v0", TupleAction, 5),
                               ("UnboundedAction-v0", UnboundedAction, 5),
                               ("ShiftedDiscreteAction-v0", ShiftedDiscreteAction, 5),
                               ("DictObservation-v0", DictObservation, 5),
                               ("TupleObservation-v0", TupleObservation, 5),
                               ("ImageObservation-v0", ImageObservation, 5),
                               ("Identity-v0", Identity, 20), ("IdentityBox-v0", IdentityBox, 20),
                               ("Counting-v0", Counting, 20)):
        env_id = f"edgeag-test/{name}"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry, max_episode_steps=steps)


register()  # importing the module registers its envs (for `--env toy_envs:edgeag-test/...`)
