"""A device's own control loop as a Gymnasium environment: hold a cooling fan at a
set speed.

The fan is driven by a PWM duty cycle. Its speed follows the duty with a lag (half
way to the steady state each step, at 10 steps a second), under a load the
controller cannot see (dust, a blocked intake: up to 30 % less speed at the same
duty), and the tachometer reading is noisy. Each step the controller nudges the
duty; the reward is minus the distance from the set point. Over an episode of 200
steps, leaving the duty alone scores about -60, a hand-written bang-bang controller
about -6, PPO after 8192 steps about -5 (see README.md, "Your own environment").

Importing this module registers two environments, which is how
``edgeag train --env fan_speed:FanSpeed-v0`` finds them (Gymnasium imports the
module named before the colon, then makes the id after it):

- ``FanSpeed-v0``: Discrete(3) actions: duty -10 %, hold, +10 % (PPO or DQN);
- ``FanSpeedContinuous-v0``: a Box(-1, 1, (1,)) action: a duty change of 10 %
  times the action (PPO or TD3).

Observation (float32): [set point - measured speed, duty, measured speed], speeds
as fractions of full speed. Only numpy and gymnasium: it runs on the device too.
"""

import gymnasium as gym
import numpy as np

DUTY_STEP = 0.1  # largest duty change per step
LAG = 0.5  # each step the speed moves this fraction of the way to its steady state
NOISE = 0.01  # tachometer noise (std, fraction of full speed)


class FanSpeed(gym.Env):
    observation_space = gym.spaces.Box(np.array([-1, 0, 0], np.float32),
                                       np.array([1, 1, 1], np.float32), dtype=np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)  # seeds self.np_random: every draw below comes from it
        self.target = self.np_random.uniform(0.3, 0.9)
        self.load = self.np_random.uniform(0.0, 0.3)
        self.duty = self.np_random.uniform(0.0, 1.0)
        self.speed = self.duty * (1 - self.load)  # spinning steadily at the start
        return self._obs(), {}

    def step(self, action):
        self.duty = float(np.clip(self.duty + self._duty_change(action), 0.0, 1.0))
        self.speed += LAG * (self.duty * (1 - self.load) - self.speed)
        reward = -abs(self.target - self.speed)
        return self._obs(), reward, False, False, {}  # only the time limit ends an episode

    def _duty_change(self, action):
        return (int(action) - 1) * DUTY_STEP

    def _obs(self):
        measured = self.speed + self.np_random.normal(0.0, NOISE)
        obs = np.array([self.target - measured, self.duty, measured], np.float32)
        return np.clip(obs, self.observation_space.low, self.observation_space.high)


class FanSpeedContinuous(FanSpeed):
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def _duty_change(self, action):
        return float(np.clip(action[0], -1.0, 1.0)) * DUTY_STEP


gym.register(id="FanSpeed-v0", entry_point=FanSpeed, max_episode_steps=200)
gym.register(id="FanSpeedContinuous-v0", entry_point=FanSpeedContinuous,
             max_episode_steps=200)
