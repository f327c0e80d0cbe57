#!/usr/bin/env python
"""TD3, SAC and PPO on Pendulum-v1 at RLtools' own default settings: RLtools (C++, through
its Python wrapper), edgeag and Stable-Baselines3, in one interleaved run.

The settings are RLtools' defaults, read from the installed wrapper's source
(``rltools/src/td3.py``, ``sac.py``, ``ppo.py``) and written below as data (`RLTOOLS`);
edgeag's ``--set`` values and SB3's keyword arguments are derived from that table.
TD3 and SAC: 64-64 ReLU actor and critics, batch 100, 10k steps, 100 warm-up steps,
replay buffer of the whole run, Adam lr 1e-3 (eps 1e-7), gamma 0.99, polyak 0.995 (tau
0.005); TD3 trains the actor and updates the targets every 2nd step, with exploration
noise 0.1 and target noise 0.2 (clip 0.5); SAC's temperature starts at 0.5 and is
learned towards an entropy of -action_dim. PPO: 64 envs x 64 steps, minibatch 64, 10
epochs, gamma 0.99, lambda 0.95, clip 0.2, a learned state-independent std starting at
0.5, entropy coefficient 0.01, no observation normalisation, 100k steps. RLtools' loops
run one step more than their limit says (``td3/loop/core/operations_generic.h`` and
``ppo/loop/core/operations_generic.h``: ``step > STEP_LIMIT``): TD3 10,001 env steps and
PPO 25 rollouts = 102,400 env steps (SAC stops at 10,000); edgeag and SB3 run the same.

Systems:
- ``rltools``: ``rltools.TD3/SAC/PPO(env_factory)`` with ``gym.wrappers.RescaleAction(
  gym.make("Pendulum-v1"), -1, 1)``, as RLtools' examples wrap it, only the step limit
  changed (``--steps-scale``), evaluation off. It compiles C++ with g++ at first use; the
  first seed of each algorithm recompiles (``force_recompile``) and its construction
  time is reported as the compile time, outside the training time. It links a BLAS
  through ``-lblas`` (``RL_TOOLS_DISABLE_MKL=1`` is set, so not MKL): install
  ``libopenblas-dev``, or it falls back to generic loops, ~10x slower. The output says
  which library it mapped.
- ``edgeag``: ``edgeag train --algo td3|sac|ppo --optimizer adam --engine numpy
  --threads 1`` with the ``--set`` values of `edgeag_settings`, run in-process in the
  child (``edgeag.cli.main``).
- ``sb3``: SB3's ``TD3``/``SAC``/``PPO("MlpPolicy")`` with `sb3_settings`, device cpu,
  ``torch.set_num_threads(1)``.

Per (algorithm, system), the median (min-max) over seeds of: training time (the loop
only: RLtools' ``while not state.step()``, SB3's ``learn()``, edgeag's
``time/elapsed_seconds`` of its last iteration, which leaves out its final checkpoint),
env steps per second of it, the final deterministic return (10 episodes on env seeds
10000 + 100 * seed + episode; RLtools' policy through its RescaleAction-wrapped env,
edgeag's and SB3's on Pendulum-v1 itself), peak RSS (the child's VmHWM when training has
finished, before the evaluation), and seconds until the mean return of the recent
training episodes first reaches -200 (TD3 and SAC: the last 10 episodes; PPO: the last
100, SB3's and edgeag's ``rollout/ep_rew_mean``; edgeag checks at iteration ends, which
for TD3 and SAC are set to one episode; RLtools' wrapper logs no training return: "not
logged"). Then the speed ratio of each peer to edgeag: the peer's training time divided
by edgeag's (>1: edgeag is faster), and edgeag's peak RSS over the peer's.

Each (seed, algorithm, system) runs alone in a fresh child process of this script, seeds
outermost so that load drifts spread over every system, with one thread
(``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` = 1). RLtools and SB3
are peers, not dependencies: ``pip install rltools stable-baselines3`` (both in the
``test`` extra); a missing one is skipped with that advice. edgeag's own presets
against SB3 are measured by ``scripts/bench_train.py`` (PPO CartPole-v1) and
``scripts/bench_offpolicy.py`` (DQN CartPole-v1, TD3 Pendulum-v1, RL Zoo settings).

    python scripts/bench_rltools.py [--algos td3,sac,ppo] [--systems rltools,edgeag,sb3]
                                    [--seeds 1,2,3] [--steps-scale 1.0]
                                    [--json results/bench_rltools.json]

``--steps-scale 0.05`` is a smoke run of about a minute (most of it RLtools' compiling);
the full run should take about 15 minutes on a 2-core x86-64 machine (an estimate from
the smoke run): run it on a quiet machine (timings are wall time).

Settings that cannot match (also printed with the results):
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

ENV_ID = "Pendulum-v1"
EPISODE_STEPS = 200
"""Pendulum-v1's time limit: with one env, an iteration of this many steps ends one episode."""
TARGET = -200.0
WINDOW = {"td3": 10, "sac": 10, "ppo": 100}
"""Training episodes whose mean return must reach TARGET (PPO: SB3's and edgeag's logged
100-episode mean; 10k off-policy steps make only 50 episodes)."""
EVAL_EPISODES, EVAL_SEED_BASE = 10, 10_000
INTERFACE = "edgeag_bench"
"""RLtools' ``interface_name``: its compiled modules are cached as
``$TMPDIR/rltools/build/rltools_<algo>_edgeag_bench``."""
ALGOS, SYSTEMS = ("td3", "sac", "ppo"), ("rltools", "edgeag", "sb3")
PEERS = {"rltools": "RLtools", "sb3": "SB3"}
CHILD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "RL_TOOLS_DISABLE_MKL": "1"}
MISSING = {"rltools": "rltools is not installed: pip install rltools (and apt-get install "
                      "g++ libopenblas-dev)",
           "sb3": "stable_baselines3 is not installed: pip install stable-baselines3"}
MARK = "BENCH_RLTOOLS_RESULT "
"""Prefix of the child's result line: RLtools' C++ prints to the same stdout."""
MiB = 2**20

_ADAM = dict(OPTIMIZER_ALPHA=1e-3, OPTIMIZER_BETA_1=0.9, OPTIMIZER_BETA_2=0.999,
             OPTIMIZER_EPSILON=1e-7, OPTIMIZER_EPSILON_SQRT=1e-7)
_NETS = dict(ACTOR_HIDDEN_DIM=64, ACTOR_NUM_LAYERS=3, ACTOR_ACTIVATION_FUNCTION="RELU",
             CRITIC_HIDDEN_DIM=64, CRITIC_NUM_LAYERS=3, CRITIC_ACTIVATION_FUNCTION="RELU")
RLTOOLS = {
    # rltools/src/td3.py, TD3(...) keyword defaults ("Same set of parameters as
    # rl::algorithms::td3::DefaultParameters" and td3::loop::core::DefaultParameters);
    # None: derived there, N_WARMUP_STEPS = max(ACTOR_BATCH_SIZE, CRITIC_BATCH_SIZE),
    # REPLAY_BUFFER_CAP = STEP_LIMIT
    "td3": dict(GAMMA=0.99, ACTOR_BATCH_SIZE=100, CRITIC_BATCH_SIZE=100,
                CRITIC_TRAINING_INTERVAL=1, ACTOR_TRAINING_INTERVAL=2,
                CRITIC_TARGET_UPDATE_INTERVAL=2, ACTOR_TARGET_UPDATE_INTERVAL=2,
                ACTOR_POLYAK=1.0 - 0.005, CRITIC_POLYAK=1.0 - 0.005,
                TARGET_NEXT_ACTION_NOISE_STD=0.2, TARGET_NEXT_ACTION_NOISE_CLIP=0.5,
                N_ENVIRONMENTS=1, N_WARMUP_STEPS=None, STEP_LIMIT=10_000,
                REPLAY_BUFFER_CAP=None, EXPLORATION_NOISE=0.1, SHARED_BATCH=True,
                **_NETS, **_ADAM),
    # rltools/src/sac.py, SAC(...) keyword defaults; None: derived there as for TD3, and
    # TARGET_ENTROPY = -action_dim
    "sac": dict(GAMMA=0.99, ACTOR_BATCH_SIZE=100, CRITIC_BATCH_SIZE=100,
                CRITIC_TRAINING_INTERVAL=1, ACTOR_TRAINING_INTERVAL=1,
                CRITIC_TARGET_UPDATE_INTERVAL=1, ACTOR_POLYAK=1.0 - 0.005,
                CRITIC_POLYAK=1.0 - 0.005, N_ENVIRONMENTS=1, N_WARMUP_STEPS=None,
                STEP_LIMIT=10_000, REPLAY_BUFFER_CAP=None, SHARED_BATCH=True,
                TARGET_ENTROPY=None, ALPHA=0.5, ADAPTIVE_ALPHA=True, LOG_STD_LOWER_BOUND=-20,
                LOG_STD_UPPER_BOUND=2, **_NETS, **_ADAM),
    # rltools/src/ppo.py, PPO(...) keyword defaults; STEP_LIMIT = floor(TOTAL_STEP_LIMIT /
    # (N_ENVIRONMENTS * ON_POLICY_RUNNER_STEPS_PER_ENV)) there
    "ppo": dict(GAMMA=0.99, LAMBDA=0.95, EPSILON_CLIP=0.2, INITIAL_ACTION_STD=0.5,
                LEARN_ACTION_STD=True, ACTION_ENTROPY_COEFFICIENT=0.01, NORMALIZE_ADVANTAGE=True,
                ADAPTIVE_LEARNING_RATE=False, NORMALIZE_OBSERVATIONS=False, N_EPOCHS=10,
                STEP_LIMIT=None, TOTAL_STEP_LIMIT=100_000, N_ENVIRONMENTS=64,
                ON_POLICY_RUNNER_STEPS_PER_ENV=64, BATCH_SIZE=64, **_NETS, **_ADAM),
}

UNMATCHED = {
    "all": [
        "Adam's epsilon: RLtools divides by sqrt(max(v_hat, 1e-7)) + 1e-7 "
        "(OPTIMIZER_EPSILON_SQRT, OPTIMIZER_EPSILON); edgeag and SB3 by sqrt(v_hat) + 1e-7",
        "weight initialisation: RLtools Kaiming-uniform (dense layers' DefaultInitializer); "
        "edgeag and SB3 torch.nn.Linear's default (TD3, SAC) or orthogonal (PPO); no "
        "setting of edgeag's or SB3's gives Kaiming-uniform",
        "environment: RLtools trains on RescaleAction(Pendulum-v1, -1, 1) and resets it "
        "without a seed (the env seeds itself from the OS); edgeag and SB3 train on "
        "Pendulum-v1, scale the policy's [-1, 1] to [-2, 2] and seed the env from --seed; "
        "the noise settings are in [-1, 1] units in all three",
        "time to -200: RLtools' wrapper logs no training return (not logged)",
    ],
    "td3": [
        "update cadence: RLtools trains the actor and updates both targets on every 2nd env "
        "step (ACTOR_TRAINING_INTERVAL, CRITIC_TARGET_UPDATE_INTERVAL, "
        "ACTOR_TARGET_UPDATE_INTERVAL = 2), edgeag (policy_frequency) and SB3 (policy_delay) "
        "on every 2nd gradient step: the same rate, possibly one step out of phase",
    ],
    "sac": [
        "temperature optimizer: SB3 gives log(alpha) an Adam of its own with torch's "
        "default eps 1e-8 (no setting); RLtools and edgeag use the run's Adam (eps 1e-7)",
    ],
    "ppo": [
        "activation: RLtools and SB3 ReLU; edgeag's PPO networks are tanh MLPs (no setting)",
        "time limit: RLtools sets a truncated step's TD error to 0 and cuts the GAE trace "
        "there (rl/algorithms/ppo/operations_generic.h); edgeag and SB3 bootstrap it with "
        "the value of the final observation",
        "optimizers: RLtools steps actor and critic on separate losses; edgeag and SB3 take "
        "one Adam step on policy + value - entropy loss, the value part scaled to give "
        "RLtools' critic gradient (edgeag vf_coef 1.0 on 0.5 * MSE, SB3 vf_coef 0.5 on MSE)",
        "gradient clipping: none in RLtools and edgeag (max_grad_norm 0); SB3 always clips, "
        "so its max_grad_norm is 1e30, never reached",
        "actions: RLtools passes the unclipped Gaussian sample to RescaleAction, where "
        "Pendulum clips the torque; edgeag and SB3 clip to the bounds first (same torque)",
    ],
}


def unmatched_text(algos=ALGOS) -> str:
    groups = [("all", "every algorithm")] + [(a, a.upper()) for a in algos]
    return "\n".join(textwrap.fill(f"- {label}: {item}", 88, subsequent_indent="  ")
                     for key, label in groups for item in UNMATCHED[key])


__doc__ += unmatched_text() + "\n"


def lengths(algo: str, scale: float) -> dict:
    """RLtools' step limit for ``--steps-scale`` and what follows from it: the env steps
    its loop runs (which edgeag and SB3 then run too), warm-up and replay capacity."""
    d = RLTOOLS[algo]
    if algo == "ppo":
        total = round(d["TOTAL_STEP_LIMIT"] * scale)
        rollout = d["N_ENVIRONMENTS"] * d["ON_POLICY_RUNNER_STEPS_PER_ENV"]
        return {"rltools_kwargs": {"TOTAL_STEP_LIMIT": total},
                "steps": (total // rollout + 1) * rollout}
    limit = max(1, round(d["STEP_LIMIT"] * scale))
    return {"rltools_kwargs": {"STEP_LIMIT": limit},
            "steps": limit + 1 if algo == "td3" else limit, "buffer": limit,
            "warmup": max(d["ACTOR_BATCH_SIZE"], d["CRITIC_BATCH_SIZE"])}


def hidden(d: dict) -> list[int]:
    return [d["ACTOR_HIDDEN_DIM"]] * (d["ACTOR_NUM_LAYERS"] - 1)


def edgeag_settings(algo: str, n: dict) -> dict:
    """``edgeag train --set`` values (fields of ``edgeag/algos/<algo>/config.py``)."""
    d = RLTOOLS[algo]
    common = dict(lr=d["OPTIMIZER_ALPHA"], eps=d["OPTIMIZER_EPSILON"], gamma=d["GAMMA"],
                  hidden=hidden(d), max_grad_norm=0.0, eval_episodes=0,
                  checkpoint_every=10**6)  # no checkpoint but the final one, like the peers
    if algo == "ppo":
        return {**common, "num_envs": d["N_ENVIRONMENTS"],
                "num_steps": d["ON_POLICY_RUNNER_STEPS_PER_ENV"], "batch_size": d["BATCH_SIZE"],
                "update_epochs": d["N_EPOCHS"], "gae_lambda": d["LAMBDA"],
                "clip_coef": d["EPSILON_CLIP"], "ent_coef": d["ACTION_ENTROPY_COEFFICIENT"],
                "log_std_init": math.log(d["INITIAL_ACTION_STD"]), "vf_coef": 1.0,
                "norm_adv": d["NORMALIZE_ADVANTAGE"], "norm_obs": d["NORMALIZE_OBSERVATIONS"],
                # RLtools: a constant lr (ADAPTIVE_LEARNING_RATE False), no value clipping
                "norm_reward": False, "anneal_lr": False, "clip_vloss": False, "target_kl": 0.0}
    common.update(num_envs=d["N_ENVIRONMENTS"], batch_size=d["CRITIC_BATCH_SIZE"],
                  buffer_size=n["buffer"], learning_starts=n["warmup"],
                  tau=round(1.0 - d["CRITIC_POLYAK"], 6), train_frequency=1, gradient_steps=1,
                  iteration_steps=EPISODE_STEPS)
    if algo == "td3":
        return {**common, "policy_frequency": d["ACTOR_TRAINING_INTERVAL"],
                "policy_noise": d["TARGET_NEXT_ACTION_NOISE_STD"],
                "noise_clip": d["TARGET_NEXT_ACTION_NOISE_CLIP"],
                "exploration_noise": d["EXPLORATION_NOISE"]}
    return {**common, "target_update_interval": d["CRITIC_TARGET_UPDATE_INTERVAL"],
            "ent_coef_init": d["ALPHA"], "target_entropy": "auto"}


def sb3_settings(algo: str, n: dict) -> dict:
    """Keyword arguments of SB3's constructor (``activation_fn`` by name)."""
    d = RLTOOLS[algo]
    policy = dict(activation_fn="ReLU", optimizer_kwargs={"eps": d["OPTIMIZER_EPSILON"]})
    common = dict(learning_rate=d["OPTIMIZER_ALPHA"], gamma=d["GAMMA"])
    if algo == "ppo":
        policy.update(net_arch=dict(pi=hidden(d), vf=hidden(d)),
                      log_std_init=math.log(d["INITIAL_ACTION_STD"]))
        return {**common, "n_steps": d["ON_POLICY_RUNNER_STEPS_PER_ENV"],
                "batch_size": d["BATCH_SIZE"], "n_epochs": d["N_EPOCHS"],
                "gae_lambda": d["LAMBDA"], "clip_range": d["EPSILON_CLIP"],
                "ent_coef": d["ACTION_ENTROPY_COEFFICIENT"], "vf_coef": 0.5,
                "max_grad_norm": 1e30, "normalize_advantage": d["NORMALIZE_ADVANTAGE"],
                "policy_kwargs": policy}
    policy["net_arch"] = hidden(d)
    common.update(buffer_size=n["buffer"], learning_starts=n["warmup"],
                  batch_size=d["CRITIC_BATCH_SIZE"], tau=round(1.0 - d["CRITIC_POLYAK"], 6),
                  train_freq=1, gradient_steps=1, policy_kwargs=policy)
    if algo == "td3":
        return {**common, "policy_delay": d["ACTOR_TRAINING_INTERVAL"],
                "target_policy_noise": d["TARGET_NEXT_ACTION_NOISE_STD"],
                "target_noise_clip": d["TARGET_NEXT_ACTION_NOISE_CLIP"]}
    return {**common, "ent_coef": f"auto_{d['ALPHA']}", "target_entropy": "auto",
            "target_update_interval": d["CRITIC_TARGET_UPDATE_INTERVAL"]}


# --- the child: one (algorithm, system, seed) -------------------------------------------

def vmhwm() -> int:
    """This process's peak RSS in bytes (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mapped_libraries() -> set[str]:
    try:
        with open("/proc/self/maps") as f:
            return {line.split()[-1] for line in f if ".so" in line.split()[-1]}
    except OSError:
        return set()


def evaluate(act, env, seed: int) -> list[float]:
    returns = []
    for ep in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=EVAL_SEED_BASE + 100 * seed + ep)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return returns


def time_to_target(episodes: list[tuple[float, float]], window: int) -> float | None:
    """Seconds at the first (seconds, return) whose mean with the window - 1 episodes
    before it reaches TARGET."""
    for i, (seconds, _) in enumerate(episodes):
        recent = [r for _, r in episodes[max(0, i + 1 - window):i + 1]]
        if statistics.fmean(recent) >= TARGET:
            return seconds
    return None


def run_rltools(algo: str, seed: int, scale: float, compile_: bool) -> dict:
    import gymnasium as gym
    import numpy as np
    import rltools

    n = lengths(algo, scale)
    def factory():
        return gym.wrappers.RescaleAction(gym.make(ENV_ID), -1, 1)
    before = mapped_libraries()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):
        loop = getattr(rltools, algo.upper())(
            factory, enable_evaluation=False, interface_name=INTERFACE,
            force_recompile=compile_, **n["rltools_kwargs"])
    construct = time.monotonic() - t0
    blas = sorted(os.path.realpath(p) for p in mapped_libraries() - before
                  if any(k in os.path.basename(p).lower() for k in ("blas", "mkl")))
    state = loop.State(seed)
    calls, t0 = 0, time.monotonic()
    while True:
        calls += 1
        if state.step():
            break
    train = time.monotonic() - t0
    # the call that returns True has stepped too, except SAC's (it checks first)
    d = RLTOOLS[algo]
    steps = (calls * d["N_ENVIRONMENTS"] * d["ON_POLICY_RUNNER_STEPS_PER_ENV"] if algo == "ppo"
             else calls - 1 if algo == "sac" else calls)
    peak = vmhwm()
    returns = evaluate(lambda obs: state.action(np.asarray(obs, dtype=np.float32)),
                       factory(), seed)
    return {"steps": steps, "train_seconds": train, "peak_rss_bytes": peak,
            "eval_returns": returns, "seconds_to_target": None, "target_logged": False,
            "construct_seconds": construct, "compiled": compile_, "blas": blas}


def run_edgeag(algo: str, seed: int, scale: float) -> dict:
    import gymnasium as gym

    import edgeag
    from edgeag.cli import main

    n = lengths(algo, scale)
    sets = [a for k, v in edgeag_settings(algo, n).items()
            for a in ("--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        with contextlib.redirect_stdout(sys.stderr):
            code = main(["train", "--algo", algo, "--env", ENV_ID, "--optimizer", "adam",
                         "--engine", "numpy", "--threads", "1", "--seed", str(seed),
                         "--total-steps", str(n["steps"]), "--out", out, "--no-progress",
                         *sets])
        if code != 0:
            sys.exit(f"bench_rltools: edgeag train exited with {code}")
        peak = vmhwm()
        with open(os.path.join(out, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        model = edgeag.load(out)
        returns = evaluate(lambda obs: model.predict(obs, deterministic=True)[0],
                           gym.make(ENV_ID), seed)
    last, logged, reached = rows[-1], True, None
    if WINDOW[algo] == 100:  # the logged rollout/ep_rew_mean is that window
        reached = next((r["time/elapsed_seconds"] for r in rows
                        if r["rollout/ep_rew_mean"] is not None
                        and r["rollout/ep_rew_mean"] >= TARGET), None)
    elif (episodes := episode_returns(rows)) is not None:
        reached = time_to_target(episodes, WINDOW[algo])
    else:
        logged = False
    return {"steps": last["time/total_timesteps"], "train_seconds": last["time/elapsed_seconds"],
            "peak_rss_bytes": peak, "eval_returns": returns, "seconds_to_target": reached,
            "target_logged": logged}


def episode_returns(rows: list[dict], logged: int = 100) -> list[tuple[float, float]] | None:
    """(elapsed seconds, return) of each training episode, recovered from edgeag's
    ``rollout/ep_rew_mean`` (the mean of the last ``logged``) when no iteration finished
    more than one episode; None otherwise."""
    episodes, total = [], 0.0  # total: the sum the logged mean is taken over
    for r in rows:
        if r["rollout/episodes"] == 0:
            continue
        if r["rollout/episodes"] > 1:
            return None
        k = len(episodes) + 1
        new_total = min(k, logged) * r["rollout/ep_rew_mean"]
        dropped = episodes[k - 1 - logged][1] if k > logged else 0.0
        episodes.append((r["time/elapsed_seconds"], new_total - total + dropped))
        total = new_total
    return episodes


def run_sb3(algo: str, seed: int, scale: float) -> dict:
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import PPO, SAC, TD3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise

    torch.set_num_threads(1)
    n = lengths(algo, scale)
    kwargs = sb3_settings(algo, n)
    kwargs["policy_kwargs"]["activation_fn"] = getattr(torch.nn, kwargs["policy_kwargs"]
                                                       ["activation_fn"])
    if algo == "td3":
        sigma = RLTOOLS["td3"]["EXPLORATION_NOISE"]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(1), sigma * np.ones(1))
    env = (make_vec_env(ENV_ID, n_envs=RLTOOLS["ppo"]["N_ENVIRONMENTS"], seed=seed)
           if algo == "ppo" else ENV_ID)

    class Episodes(BaseCallback):
        """(seconds since learn() began, return) of each finished training episode."""
        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    episodes.append((time.monotonic() - t0, float(info["episode"]["r"])))
            return True

    model = {"td3": TD3, "sac": SAC, "ppo": PPO}[algo]("MlpPolicy", env, seed=seed, device="cpu",
                                                       verbose=0, **kwargs)
    episodes: list[tuple[float, float]] = []
    t0 = time.monotonic()
    model.learn(n["steps"], callback=Episodes())
    train = time.monotonic() - t0
    peak = vmhwm()
    returns = evaluate(lambda obs: model.predict(obs, deterministic=True)[0], gym.make(ENV_ID),
                       seed)
    return {"steps": model.num_timesteps, "train_seconds": train, "peak_rss_bytes": peak,
            "eval_returns": returns, "seconds_to_target": time_to_target(episodes, WINDOW[algo]),
            "target_logged": True}


def child(spec: str, scale: float, compile_: bool) -> None:
    algo, system, seed = spec.split(":")
    seed = int(seed)
    if system == "rltools":
        row = run_rltools(algo, seed, scale, compile_)
    elif system == "edgeag":
        row = run_edgeag(algo, seed, scale)
    else:
        row = run_sb3(algo, seed, scale)
    row = {"algo": algo, "system": system, "seed": seed, **row,
           "steps_per_second": row["steps"] / row["train_seconds"],
           "eval_mean": statistics.fmean(row["eval_returns"])}
    sys.stdout.flush()
    print(MARK + json.dumps(row), flush=True)


# --- the parent ---------------------------------------------------------------------------

def spawn(algo: str, system: str, seed: int, scale: float, compile_: bool) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", f"{algo}:{system}:{seed}",
           "--steps-scale", repr(scale), *(["--compile"] if compile_ else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **CHILD_ENV})
    found = [line[len(MARK):] for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not found:
        tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        sys.stderr.write(proc.stderr[-3000:])
        return {"algo": algo, "system": system, "seed": seed,
                "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(found[-1])


def stats(values: list) -> dict:
    """Median, min and max; None (never reached) counts as infinitely slow."""
    vals = [math.inf if v is None else v for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def fmt(s: dict, scale: float = 1.0, digits: int = 1) -> str:
    def show(v):
        return "never" if math.isinf(v) else f"{v / scale:,.{digits}f}"
    if s["min"] == s["max"]:
        return show(s["median"])
    return f"{show(s['median'])} ({show(s['min'])}-{show(s['max'])})"


def finite(obj):
    """JSON has no infinity: write it as null."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return None if isinstance(obj, float) and math.isinf(obj) else obj


def blas_note() -> str:
    """What BLAS RLtools' ``-lblas`` can find here, before any child runs."""
    found = sorted(glob.glob("/usr/lib/*/libopenblas*.so*") +
                   glob.glob("/usr/lib*/libopenblas*.so*"))
    if found:
        return f"OpenBLAS present ({found[0]})"
    return ("no OpenBLAS found (apt-get install libopenblas-dev): unless another -lblas "
            "links, RLtools falls back to generic loops and is ~10x slower")


def blas_linked(rows: list[dict]) -> str:
    """Which BLAS the RLtools children mapped when their module loaded."""
    rows = [r for r in rows if "blas" in r]
    if not rows:
        return "unknown (no RLtools run finished)"
    libs = sorted({lib for r in rows for lib in r["blas"]})
    if not libs:
        return ("none: RLtools fell back to its generic loops (~10x slower; apt-get install "
                "libopenblas-dev)")
    kind = ("OpenBLAS" if any("openblas" in lib for lib in libs) else
            "MKL" if any("mkl" in lib for lib in libs) else "a BLAS")
    return f"{kind} ({', '.join(libs)})"


def check_rltools_defaults() -> list[str]:
    """Where the installed wrapper's keyword defaults differ from `RLTOOLS`."""
    import inspect

    import rltools

    out = []
    for algo, table in RLTOOLS.items():
        params = inspect.signature(getattr(rltools, algo.upper())).parameters
        for key, value in table.items():
            have = params[key].default if key in params else "(absent)"
            if have != value:
                out.append(f"rltools.{algo.upper()}'s default {key} is {have!r}, this script's "
                           f"table says {value!r}")
    return out


def fail(message: str) -> None:
    print(f"bench_rltools: error: {message}", file=sys.stderr)
    sys.exit(2)


def parse(args) -> tuple[list[str], list[str], list[int]]:
    def items(text: str, accepted, name: str) -> list[str]:
        chosen = list(dict.fromkeys(t.strip() for t in text.split(",")))
        if bad := [t for t in chosen if t not in accepted]:
            fail(f"unknown {name} {bad[0]!r} (accepted: {', '.join(accepted)})")
        return chosen
    algos, systems = items(args.algos, ALGOS, "algorithm"), items(args.systems, SYSTEMS, "system")
    try:
        seeds = list(dict.fromkeys(int(s) for s in args.seeds.split(",")))
    except ValueError:
        fail(f"invalid --seeds {args.seeds!r}: expected integers such as 1,2,3")
    if any(not 0 <= s < 2**32 for s in seeds):
        fail(f"invalid --seeds {args.seeds!r}: each in [0, 2**32)")
    if not (math.isfinite(args.steps_scale) and args.steps_scale > 0):
        fail(f"invalid --steps-scale {args.steps_scale!r}: expected a positive number")
    for algo in (a for a in algos if a != "ppo"):
        n = lengths(algo, args.steps_scale)
        if n["steps"] <= n["warmup"]:
            fail(f"--steps-scale {args.steps_scale:g} gives {algo.upper()} {n['steps']} env "
                 f"steps, no more than its {n['warmup']} warm-up steps: expected at least "
                 f"{(n['warmup'] + 1) / RLTOOLS[algo]['STEP_LIMIT']:.4f}")
    return algos, systems, seeds


def available(algos: list[str], systems: list[str]) -> tuple[list[str], dict]:
    """The systems that can run here, and which (algo, system) pairs to skip, each said why."""
    keep, skip = [], {}
    for system in systems:
        module = {"rltools": "rltools", "sb3": "stable_baselines3"}.get(system)
        if module and importlib.util.find_spec(module) is None:
            print(f"bench_rltools: {MISSING[system]}; skipping {system}", file=sys.stderr)
        elif system == "rltools" and not (shutil.which("g++") or shutil.which("clang++")):
            print("bench_rltools: no C++ compiler (g++ or clang++), which RLtools needs at first "
                  "use: apt-get install g++; skipping rltools", file=sys.stderr)
        else:
            keep.append(system)
    if "edgeag" in keep and "sac" in algos:
        from edgeag.algos import ALGORITHMS
        if "sac" not in ALGORITHMS:
            print("bench_rltools: edgeag has no SAC (not in edgeag.algos.ALGORITHMS); skipping "
                  "its sac rows", file=sys.stderr)
            skip[("sac", "edgeag")] = "edgeag has no SAC"
    return keep, skip


def report(algos, systems, seeds, scale, runs, blas) -> tuple[dict, dict]:
    summary, ratios = {}, {}
    keys = ("train_seconds", "steps_per_second", "eval_mean", "peak_rss_bytes",
            "seconds_to_target")
    print(f"\nPendulum-v1 at RLtools' default settings, seeds {','.join(map(str, seeds))}, "
          f"steps scale {scale:g}, 1 thread; median (min-max) over seeds")
    if "rltools" in systems:
        print(f"RLtools' BLAS: {blas}")
    print("Evaluation: 10 deterministic episodes on env seeds 10000 + 100 * seed + episode; "
          "RLtools' through its RescaleAction(-1, 1) env, edgeag's and SB3's on Pendulum-v1.")
    print("Speed ratio = the peer's training time / edgeag's (>1: edgeag is faster); "
          "RSS ratio = edgeag's peak RSS / the peer's.")
    for algo in algos:
        summary[algo] = {}
        done = [r for r in runs if r["algo"] == algo and "error" not in r]
        steps = {s: sorted({r["steps"] for r in done if r["system"] == s}) for s in systems}
        shown = ", ".join(f"{s} {'/'.join(f'{v:,}' for v in steps[s])}" for s in systems
                          if steps[s])
        print(f"\n{algo.upper()} ({shown} env steps; time to {TARGET:g}: mean of the last "
              f"{WINDOW[algo]} training episodes)")
        print(f"{'system':8s} {'train s':>20s} {'env steps/s':>24s} {'eval return':>26s} "
              f"{'peak RSS MiB':>20s} {'s to -200':>20s}")
        for system in systems:
            rows = [r for r in runs if r["algo"] == algo and r["system"] == system]
            errors = [r for r in rows if "error" in r or "skipped" in r]
            if errors:
                why = errors[0].get("error") or errors[0]["skipped"]
                summary[algo][system] = {"error": why}
                print(f"{system:8s} {'failed: ' if 'error' in errors[0] else 'skipped: '}{why}")
                continue
            s = summary[algo][system] = {k: stats([r[k] for r in rows]) for k in keys}
            target = (fmt(s["seconds_to_target"]) if all(r["target_logged"] for r in rows)
                      else "not logged")
            print(f"{system:8s} {fmt(s['train_seconds'], digits=2):>20s} "
                  f"{fmt(s['steps_per_second'], digits=0):>24s} {fmt(s['eval_mean']):>26s} "
                  f"{fmt(s['peak_rss_bytes'], MiB):>20s} {target:>20s}")
            compiled = [r["construct_seconds"] for r in rows if r.get("compiled")]
            if compiled:
                s["compile_seconds"] = compiled[0]
                print(f"{'':8s} compile (first construction, g++, not in train s): "
                      f"{compiled[0]:.1f} s")
        base = summary[algo].get("edgeag", {})
        ratios[algo] = {}
        for peer in (p for p in PEERS if p in systems):
            other = summary[algo].get(peer, {})
            if "train_seconds" in base and "train_seconds" in other:
                median = {k: (base[k]["median"], other[k]["median"])
                          for k in ("train_seconds", "peak_rss_bytes")}
                ratios[algo][peer] = {
                    "speed": median["train_seconds"][1] / median["train_seconds"][0],
                    "peak_rss": median["peak_rss_bytes"][0] / median["peak_rss_bytes"][1]}
                print(f"edgeag vs {PEERS[peer]}: speed ratio {ratios[algo][peer]['speed']:.2f}x, "
                      f"RSS ratio {ratios[algo][peer]['peak_rss']:.2f}x")
    print("\nSettings that cannot match:")
    print(unmatched_text(algos))
    return summary, ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algos", default=",".join(ALGOS), help="from " + ",".join(ALGOS))
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="from " + ",".join(SYSTEMS))
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--steps-scale", type=float, default=1.0,
                    help="multiply RLtools' step limits (0.05: a smoke run)")
    ap.add_argument("--json", help="also write every run and the summary to this JSON file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.steps_scale, args.compile)
    algos, systems, seeds = parse(args)
    if args.json:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        except OSError as e:
            fail(f"cannot write --json {args.json}: {e.strerror}")
    systems, skip = available(algos, systems)
    if not systems:
        print("bench_rltools: none of the systems can run here", file=sys.stderr)
        return
    if "rltools" in systems:
        print(f"bench_rltools: {blas_note()}", file=sys.stderr)
        for warning in check_rltools_defaults():
            print(f"bench_rltools: warning: {warning}", file=sys.stderr)
    jobs = [(seed, algo, system) for seed in seeds for algo in algos for system in systems]
    runs, failed = [], set()
    for i, (seed, algo, system) in enumerate(jobs, 1):
        if (algo, system) in skip or (algo, system) in failed:
            runs.append({"algo": algo, "system": system, "seed": seed,
                         "skipped": skip.get((algo, system), "an earlier seed failed")})
            continue
        compile_ = system == "rltools" and seed == seeds[0]
        r = spawn(algo, system, seed, args.steps_scale, compile_)
        runs.append(r)
        if "error" in r:
            failed.add((algo, system))
            print(f"[{i}/{len(jobs)}] {algo} {system} seed {seed}: failed, {r['error']}",
                  file=sys.stderr, flush=True)
            continue
        print(f"[{i}/{len(jobs)}] {algo} {system} seed {seed}: {r['steps']:,} steps in "
              f"{r['train_seconds']:.2f} s ({r['steps_per_second']:,.0f}/s), eval "
              f"{r['eval_mean']:.1f}, peak RSS {r['peak_rss_bytes'] / MiB:.1f} MiB",
              file=sys.stderr, flush=True)
    blas = blas_linked([r for r in runs if r["system"] == "rltools"])
    summary, ratios = report(algos, systems, seeds, args.steps_scale, runs, blas)
    if args.json:
        from edgeag.io import write_json

        settings = {a: {"rltools": {**RLTOOLS[a], **lengths(a, args.steps_scale)["rltools_kwargs"]},
                        "edgeag": edgeag_settings(a, lengths(a, args.steps_scale)),
                        "sb3": sb3_settings(a, lengths(a, args.steps_scale))} for a in algos}
        write_json(args.json, finite({
            "env": ENV_ID, "seeds": seeds, "steps_scale": args.steps_scale, "systems": systems,
            "rltools_blas": blas if "rltools" in systems else None, "settings": settings,
            "unmatched": {k: UNMATCHED[k] for k in ("all", *algos)}, "runs": runs,
            "summary": summary, "speed_ratios": ratios}))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
