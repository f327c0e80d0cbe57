"""DQN and TD3: learning on small tasks, truncation, determinism, exact resume, the
replay buffer in the memory plan (refused or shrunk), bad input."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import toy_envs

from edgeag.algos.base import PlanInputs
from edgeag.algos.dqn import algorithm as dqn
from edgeag.algos.dqn.config import DQNConfig
from edgeag.algos.offpolicy.buffers import ReplayBuffer
from edgeag.algos.td3 import algorithm as td3
from edgeag.algos.td3.config import TD3Config
from edgeag.cli import main
from edgeag.memory import MiB, measure_floor
from edgeag.train.config import resolve_config
from edgeag.train.envs import make_vector_env
from edgeag.train.run import TIME_KEYS, RunOptions, train
from edgeag.train.rundir import RunDir, load_checkpoint

toy_envs.register()

# Small, quick settings: updates start early and often; small networks.
DQN_FAST = dict(env_id="edgeag-test/Identity-v0", total_steps=2000, learning_starts=500,
                train_frequency=2, target_update_interval=100, buffer_size=5000, batch_size=64,
                lr=1e-3, gamma=0.0, exploration_fraction=0.3, hidden=(32,), iteration_steps=500,
                eval_episodes=5, checkpoint_every=1)
TD3_FAST = dict(env_id="edgeag-test/IdentityBox-v0", total_steps=1500, learning_starts=500,
                train_frequency=2, buffer_size=5000, batch_size=64, lr=1e-3, gamma=0.0, hidden=(32, 32),
                iteration_steps=500, eval_episodes=5, checkpoint_every=1)


def run_quiet(cfg, path, **opts):
    opts.setdefault("progress", False)
    return train(cfg, RunDir(path), RunOptions(**opts), log=lambda _: None)


def rows(path):
    return [json.loads(line) for line in (Path(path) / "metrics.jsonl").read_text().splitlines()]


def deterministic_rows(path):
    return [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in rows(path)]


def final_params(path):
    return load_checkpoint(Path(path) / "checkpoints" / "latest.safetensors")["nets"]


def same_params(a, b):
    return all(np.array_equal(np.asarray(a[n][k]), np.asarray(b[n][k])) for n in a for k in a[n])


@pytest.mark.parametrize("optimizer", ["adam", "alphagrad"])
def test_dqn_learns_the_identity_task(tmp_path, optimizer):
    cfg = DQNConfig(optimizer=optimizer, alpha=4.0, lr=1e-3 if optimizer == "adam" else 1e-2,
                    **{k: v for k, v in DQN_FAST.items() if k != "lr"}).validate()
    code, summary = run_quiet(cfg, tmp_path / "run")
    first, last = rows(tmp_path / "run")[0], rows(tmp_path / "run")[-1]
    assert code == 0 and summary["steps"] == 2000
    assert first["rollout/ep_rew_mean"] < 8          # random play: 5 of 20
    assert summary["final_eval_return"]["mean"] >= 18  # greedy: nearly every step right
    assert last["train/n_updates"] == (2000 - 500) // 2
    assert summary["optimizer_state_bytes"] == (0 if optimizer == "alphagrad" else
                                                2 * 4 * summary["parameter_count"] + 4 * 4)


@pytest.mark.parametrize("optimizer", ["adam", "alphagrad"])
def test_td3_learns_the_continuous_identity_task(tmp_path, optimizer):
    cfg = TD3Config(optimizer=optimizer, alpha=4.0, **TD3_FAST).validate()
    code, summary = run_quiet(cfg, tmp_path / "run")
    first = rows(tmp_path / "run")[0]
    assert code == 0 and first["rollout/ep_rew_mean"] < -8   # random play: about -13
    assert summary["final_eval_return"]["mean"] > -1.0        # |error| ~ 0.2 or better
    assert summary["parameter_count"] == 2 * (2 * 32 + 32 + 32 * 32 + 32 + 32 + 1) + \
        (32 + 32 + 32 * 32 + 32 + 32 + 1)


def test_time_limit_cut_bootstraps_from_the_real_final_observation():
    """ConstantReward never terminates; its time limit cuts every 5th step. The buffer
    must hold terminated = 0 there and the final observation (5), not the reset one."""
    cfg = DQNConfig(env_id="edgeag-test/ConstantReward-v0", learning_starts=100,
                    iteration_steps=12, batch_size=4, buffer_size=100).validate()
    state = dqn.build_state(cfg, make_vector_env(cfg.env_id, 1))
    dqn.ALGORITHM.make_iteration(state)()
    buf = state.buffer
    assert len(buf) == 12 and not buf.terminated[:12].any()
    assert buf.obs[:12, 0].tolist() == [0, 1, 2, 3, 4] * 2 + [0, 1]
    assert buf.next_obs[:12, 0].tolist() == [1, 2, 3, 4, 5] * 2 + [1, 2]
    assert [r for r, _ in state.recent] == [5.0, 5.0]


@pytest.mark.parametrize("algo", ["dqn", "td3"])
def test_same_seed_same_run_other_seed_another(tmp_path, algo):
    cfg = (DQNConfig(**{**DQN_FAST, "total_steps": 1000}) if algo == "dqn" else
           TD3Config(**{**TD3_FAST, "total_steps": 800, "learning_starts": 400,
                         "iteration_steps": 400})).validate()
    run_quiet(cfg, tmp_path / "a")
    run_quiet(cfg, tmp_path / "b")
    assert deterministic_rows(tmp_path / "a") == deterministic_rows(tmp_path / "b")
    assert same_params(final_params(tmp_path / "a"), final_params(tmp_path / "b"))
    run_quiet(dataclasses.replace(cfg, seed=2), tmp_path / "c")
    assert deterministic_rows(tmp_path / "c") != deterministic_rows(tmp_path / "a")


@pytest.mark.parametrize("algo", ["dqn", "td3"])
def test_resumed_run_equals_the_uninterrupted_one(tmp_path, algo):
    """A run stopped at a checkpoint (here: its total_steps reached) and resumed with
    more steps continues bit for bit: replay buffer, networks, optimizers, RNGs, envs.
    (DQN's epsilon schedule depends on total_steps, so it is held constant here.)"""
    if algo == "dqn":
        cfg = DQNConfig(**{**DQN_FAST, "total_steps": 1500, "exploration_initial_eps": 0.1,
                           "exploration_final_eps": 0.1, "learning_starts": 200})
    else:
        cfg = TD3Config(**{**TD3_FAST, "total_steps": 1500, "learning_starts": 800})
    cfg = dataclasses.replace(cfg, optimizer="alphagrad", momentum=0.9).validate()
    half = dataclasses.replace(cfg, total_steps=1000)
    run_quiet(cfg, tmp_path / "full")
    run_quiet(half, tmp_path / "cut")
    replay = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").glob("replay-*"))
    assert replay == ["replay-1000.npy"]  # older replay files are removed
    code, summary = run_quiet(cfg, tmp_path / "cut", resume=True)
    assert code == 0 and summary["steps"] == cfg.total_steps
    assert deterministic_rows(tmp_path / "cut") == deterministic_rows(tmp_path / "full")
    assert same_params(final_params(tmp_path / "cut"), final_params(tmp_path / "full"))
    a, b = (load_checkpoint(tmp_path / r / "checkpoints" / "latest.safetensors")["observations"]
            for r in ("cut", "full"))  # the sample export verifies on, as if never stopped
    assert a["seen"] == b["seen"] > 1024 and np.array_equal(a["rows"], b["rows"])
    assert summary["optimizer_state_bytes"] == 4 * summary["parameter_count"]  # momentum


def test_plan_counts_the_replay_buffer_and_target_networks():
    cfg = DQNConfig(buffer_size=10_000, hidden=(120, 84))
    plan = dqn.plan(cfg, PlanInputs(1 << 30, 200 * MiB, 4, 2, True))
    items = {i.name: i.nbytes for i in plan.items}
    params = (4 * 120 + 120) + (120 * 84 + 84) + (84 * 2 + 2)
    assert items["parameters"] == items["target networks"] == 4 * params
    buf = ReplayBuffer(10_000, 4, 2, True)
    arrays = sum(getattr(buf, name).nbytes for name in ReplayBuffer.FIELDS)
    assert items["replay buffer"] == arrays == ReplayBuffer.nbytes(10_000, 4, 2, True)
    cfg = TD3Config(buffer_size=1_000_000, hidden=(256, 256))
    items = {i.name: i.nbytes for i in td3.plan(cfg, PlanInputs(1 << 30, 200 * MiB, 11, 3, False)).items}
    assert items["replay buffer"] == 1_000_000 * 4 * (2 * 11 + 2 + 3)  # Hopper: 103 MiB
    assert items["gradients"] == items["parameters"]  # Adam: every gradient at once
    def gradients(**change):
        plan = td3.plan(dataclasses.replace(cfg, **change), PlanInputs(1 << 30, 200 * MiB, 11, 3, False))
        return {i.name: i.nbytes for i in plan.items}["gradients"]

    # torch engine, AlphaGrad inside backward: one tensor's gradient at a time
    assert gradients(optimizer="alphagrad", engine="torch") == 4 * 256 * 256
    # numpy engine: small networks step through one gradient buffer per optimizer; above
    # FLAT_MAX_BYTES, AlphaGrad updates each tensor inside backward (the largest, per optimizer)
    assert gradients(optimizer="alphagrad") == items["parameters"]
    assert gradients(optimizer="alphagrad", hidden=(1024, 1024)) == 2 * 4 * 1024 * 1024


def test_over_budget_replay_buffer_is_refused_with_the_largest_that_fits(tmp_path, capsys):
    floor = measure_floor().anon_bytes
    budget = floor + 80 * MiB
    out = tmp_path / "run"
    argv = ["train", "--algo", "dqn", "--budget", str(budget), "--set", "buffer_size=10000000",
            "--total-steps", "1500", "--set", "learning_starts=500", "--set", "iteration_steps=500",
            "--set", "eval_episodes=1", "--no-progress", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "replay buffer" in "\n".join(err) and "DOES NOT FIT" in "\n".join(err)
    size = int(re.search(r"--set buffer_size=(\d+) \(or --shrink-buffer\)", err[-1]).group(1))
    assert err[-1].startswith("edgeag: error: plan ") and not out.exists()
    cfg, _ = resolve_config("CartPole-v1", None, {"buffer_size": 10_000_000}, "dqn")
    # the named size is the largest that fits the budget (the floor is re-measured in the
    # run, so check against the same plan function at the floor it reported)
    reported_floor = int(re.search(r"floor .*\(([\d,]+) bytes", "\n".join(err)).group(1).replace(",", ""))
    def fits(n):
        return dqn.plan(dataclasses.replace(cfg, buffer_size=n),
                                  PlanInputs(budget, reported_floor, 4, 2, True)).fits
    assert fits(size) and not fits(size + 1) and 1_000 < size < 10_000_000

    assert main(argv + ["--shrink-buffer"]) == 0
    captured = capsys.readouterr()
    assert re.search(r"replay buffer shrunk to fit the budget: [\d,]+ transitions "
                     r"\(requested 10,000,000\)", captured.err)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["buffer_shrunk_from"] == 10_000_000
    assert 1_000 < summary["buffer_size"] < 10_000_000 and summary["plan_total_bytes"] <= budget
    assert f"buffer_size = {summary['buffer_size']}" in (out / "config.toml").read_text()


@pytest.mark.parametrize("argv,message", [
    (["--algo", "dqn", "--env", "Pendulum-v1"], r"action space Box.*dqn accepts Discrete\(n\)"),
    (["--algo", "td3", "--env", "CartPole-v1"], r"action space Discrete\(2\): td3 accepts a bounded"),
    (["--algo", "dqn", "--set", "buffer_size=10"], r"invalid buffer_size 10: expected an integer >= batch_size \(128\)"),
    (["--algo", "td3", "--set", "num_steps=8"], r"unknown setting 'num_steps' \(accepted: env_id.*policy_frequency"),
    (["--algo", "td3", "--set", "iteration_steps=0"], r"invalid iteration_steps 0: expected a positive multiple"),
    (["--algo", "dqn", "--set", "exploration_fraction=0"], r"invalid exploration_fraction 0.0"),
    (["--algo", "ppo", "--shrink-buffer"], r"--shrink-buffer applies to algorithms with a replay buffer"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("edgeag: error: ") and re.search(message, err[-1]), err
    assert "Traceback" not in "\n".join(err) and not out.exists()


def test_damaged_replay_file_refuses_to_resume(tmp_path, capsys):
    cfg = TD3Config(**{**TD3_FAST, "total_steps": 500, "learning_starts": 400,
                       "eval_episodes": 0}).validate()
    run_quiet(cfg, tmp_path / "run")
    replay = tmp_path / "run" / "checkpoints" / "replay-500.npy"
    replay.write_bytes(replay.read_bytes()[:1000])
    assert main(["train", "--resume", str(tmp_path / "run"), "--total-steps", "1000",
                 "--no-progress"]) == 2
    assert re.search(r"edgeag: error: cannot resume: .*replay-500.npy is not a readable replay "
                     r"buffer", capsys.readouterr().err)


def test_dqn_alphagrad_is_marked_experimental(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "EXPERIMENTAL" in capsys.readouterr().out


@pytest.mark.parametrize("algo", ["dqn", "td3", "sac"])
def test_offpolicy_training_process_imports_no_torch_and_no_export_modules(tmp_path, algo):
    """A real `edgeag train --algo dqn|td3` process on the numpy engine (the default for
    their default Adam), checkpoint and replay file included: torch, onnx, executorch,
    matplotlib and optuna stay unloaded. On the torch engine, torch._dynamo and the
    export modules stay unloaded."""
    from train_child import NUMPY_ENGINE_FORBIDDEN, train_and_list_heavy_imports

    args = ["--algo", algo, "--total-steps", "600", "--no-progress",
            "--set", "learning_starts=300", "--set", "iteration_steps=300",
            "--set", "hidden=[16]", "--set", "eval_episodes=1"]
    assert train_and_list_heavy_imports([*args, "--out", str(tmp_path / "r")],
                                        forbidden=NUMPY_ENGINE_FORBIDDEN) == (0, [])
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["algo"] == algo and summary["steps"] == 600 and summary["stopped"] == "done"
    assert summary["engine"] == "numpy" and summary["runtime"].startswith("numpy engine")
    assert (tmp_path / "r" / "checkpoints" / "replay-600.npy").is_file()
    assert train_and_list_heavy_imports([*args, "--engine", "torch",
                                         "--out", str(tmp_path / "t")]) == (0, [])
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["runtime"].startswith("torch")
