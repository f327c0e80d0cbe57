"""Drive CartPole-v1 with an exported policy, knowing nothing of edgeag.

The file's contract: input "obs" float32 [batch, obs_dim] (the raw observation),
output "action" int64 [batch] (discrete) or float32 [batch, act_dim] (continuous).
Normalisation is inside the file.

    pip install onnxruntime gymnasium numpy
    python onnx_cartpole.py runs/<run>/export/policy.onnx [episodes]

A policy of another env is refused before any episode, with one line and exit code 2:
the env_id in the policy.json beside the file, else the file's own input and output,
must be CartPole's (4 observation values in, a discrete action out). `edgeag run
POLICY` (or edgeag/export/runner.py) drives any exported policy in its own env.
"""

import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import onnxruntime as ort

ENV_ID = "CartPole-v1"


def fail(message: str) -> None:
    print(f"onnx_cartpole.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


if len(sys.argv) not in (2, 3):
    fail("usage: python onnx_cartpole.py POLICY.onnx [EPISODES]")
path = Path(sys.argv[1])
try:
    episodes = int(sys.argv[2]) if len(sys.argv) > 2 else 10
except ValueError:
    episodes = 0
if episodes < 1:
    fail(f"EPISODES is {sys.argv[2]!r}; accepted: a whole number of at least 1")

# policy.json (written beside the file by `edgeag export`) names the env it was trained on
meta = path.parent / "policy.json"
if meta.exists():
    try:
        env_id = json.loads(meta.read_text()).get("env_id")
    except (OSError, ValueError, AttributeError) as e:
        fail(f"cannot read {meta}: {first_line(e)}")
    if env_id != ENV_ID:
        fail(f"{path} is a policy for {env_id} (env_id in {meta}); accepted: a {ENV_ID} "
             f"policy (run this one with `edgeag run {path}`)")

try:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
except Exception as e:  # onnxruntime's own errors: no such file, not an ONNX model, ...
    fail(f"cannot load {path}: {first_line(e)}")
env = gym.make(ENV_ID)
obs_dim = env.observation_space.shape[0]
inputs = {i.name: i.shape for i in session.get_inputs()}
outputs = {o.name: o.type for o in session.get_outputs()}
if inputs.get("obs", [None, None])[-1] != obs_dim:
    fail(f"{path} takes {' and '.join(f'{n} {s}' for n, s in inputs.items())}; accepted: "
         f"obs [batch, {obs_dim}] ({ENV_ID}'s observation)")
if outputs.get("action") != "tensor(int64)":
    fail(f"{path} outputs {' and '.join(f'{n} {t}' for n, t in outputs.items())}; accepted: "
         f"action tensor(int64) ({ENV_ID}'s discrete action)")

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
