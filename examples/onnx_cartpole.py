"""Drive CartPole-v1 with an exported policy, knowing nothing of edgeag.

The file's contract: input "obs" float32 [batch, obs_dim] (the raw observation),
output "action" int64 [batch] (discrete) or float32 [batch, act_dim] (continuous).
Normalisation is inside the file.

    pip install onnxruntime gymnasium numpy
    python onnx_cartpole.py runs/<run>/export/policy.onnx [episodes]
"""

import sys

import gymnasium as gym
import numpy as np
import onnxruntime as ort

path = sys.argv[1]
episodes = int(sys.argv[2]) if len(sys.argv) > 2 else 10

session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
env = gym.make("CartPole-v1")
returns = []
for episode in range(episodes):
    obs, _ = env.reset(seed=episode)
    total, done = 0.0, False
    while not done:
        action = session.run(["action"], {"obs": obs[None].astype(np.float32)})[0][0]
        obs, reward, terminated, truncated, _ = env.step(int(action))
        total += reward
        done = terminated or truncated
    returns.append(total)
print(f"mean return over {episodes} episodes: {np.mean(returns):.1f} (min {min(returns):.0f})")
