"""The sample of training observations a run keeps (`edgeag.train.observations`), and
``edgeag export`` verifying on it without stepping the env."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import toy_envs

from edgeag.cli import main
from edgeag.train.checkpoint import load as load_checkpoint
from edgeag.train.observations import CAPACITY, ObservationSample

COUNTING = "toy_envs:edgeag-test/Counting-v0"


def _numbers(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32)[:, None]


def test_a_short_stream_is_kept_whole_and_in_order():
    sample = ObservationSample(1, seed=0, capacity=8)
    sample.add(_numbers(3))
    sample.add(_numbers(8)[3:5])
    assert sample.seen == 5 and sample.observations[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_each_observation_is_equally_likely_to_be_kept():
    """Over many seeds, every one of 64 observations offered in blocks of 4 is held
    with probability 8/64: the counts stay within 5 standard deviations of it."""
    k, n, trials = 8, 64, 3000
    counts = np.zeros(n)
    for seed in range(trials):
        sample = ObservationSample(1, seed, capacity=k)
        for start in range(0, n, 4):
            sample.add(_numbers(n)[start:start + 4])
        kept = sample.observations[:, 0].astype(int)
        assert len(set(kept.tolist())) == k  # each kept once
        counts[kept] += 1
    p = k / n
    sd = math.sqrt(trials * p * (1 - p))
    assert np.abs(counts - trials * p).max() < 5 * sd
    # a sample that kept only the first or last observations would be far outside it
    assert counts[:k].mean() < trials * p + 5 * sd and counts[-k:].mean() > trials * p - 5 * sd


def test_blocks_or_single_rows_keep_the_same_sample():
    a, b = ObservationSample(3, seed=5, capacity=16), ObservationSample(3, seed=5, capacity=16)
    obs = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    for start in range(0, 500, 10):
        a.add(obs[start:start + 10])
    for row in obs:
        b.add(row[None])
    assert a.seen == b.seen == 500 and np.array_equal(a.observations, b.observations)


def test_state_and_load_continue_bit_for_bit():
    obs = np.random.default_rng(1).normal(size=(3000, 2)).astype(np.float32)
    whole = ObservationSample(2, seed=3)
    whole.add(obs)
    first = ObservationSample(2, seed=3)
    first.add(obs[:1700])
    resumed = ObservationSample(2, seed=3)
    resumed.load(first.state())
    resumed.add(obs[1700:])
    assert resumed.seen == whole.seen == 3000
    assert np.array_equal(resumed.observations, whole.observations)
    with pytest.raises(ValueError, match=r"observation sample is \(2,\) x 1024, not \(3,\) x 1024"):
        ObservationSample(3, seed=3).load(first.state())


def test_the_seed_picks_the_sample():
    obs = _numbers(5000)
    a, b = ObservationSample(1, seed=1), ObservationSample(1, seed=2)
    a.add(obs)
    b.add(obs)
    assert len(a.observations) == len(b.observations) == CAPACITY
    assert not np.array_equal(np.sort(a.observations[:, 0]), np.sort(b.observations[:, 0]))


@pytest.fixture(scope="module")
def counting_run(tmp_path_factory):
    """A PPO run on the counting env (20-step episodes of one-hot observations)."""
    run = tmp_path_factory.mktemp("counting") / "run"
    assert main(["train", "--env", COUNTING, "--total-steps", "2048", "--out", str(run),
                 "--no-progress", "--set", "eval_episodes=0"]) == 0
    return run


def test_the_checkpoint_holds_real_training_observations(counting_run):
    ckpt = load_checkpoint(counting_run / "checkpoints" / "latest.safetensors", numpy_only=True)
    sample = ckpt["observations"]
    num_envs = ckpt["config"]["num_envs"]
    assert sample["seen"] == 2048 + num_envs and sample["rows"].shape == (CAPACITY, 4)
    # Counting-v0 observes one-hot targets: every kept row is one of them
    assert set(map(tuple, sample["rows"].tolist())) <= set(map(tuple, np.eye(4).tolist()))
    assert len(set(map(tuple, sample["rows"].tolist()))) == 4


def test_export_steps_the_env_zero_times_unless_asked(counting_run, tmp_path, capsys):
    toy_envs.Counting.steps = toy_envs.Counting.resets = 0
    assert main(["export", str(counting_run), "--format", "onnx,c", "--quantize", "int8",
                 "--out", str(tmp_path / "default"), "--no-progress"]) == 0
    assert (toy_envs.Counting.steps, toy_envs.Counting.resets) == (0, 0)
    meta = json.loads((tmp_path / "default" / "policy.json").read_text())
    assert meta["verification"]["observations"]["source"] == "training"
    assert meta["artifacts"]["policy.int8.onnx"]["verification"]["observations"] == CAPACITY
    assert "the env is not stepped" in capsys.readouterr().err

    assert main(["export", str(counting_run), "--format", "onnx", "--record-observations",
                 "--out", str(tmp_path / "recorded"), "--no-progress"]) == 0
    assert toy_envs.Counting.steps > 900 and toy_envs.Counting.resets > 10
    recorded = json.loads((tmp_path / "recorded" / "policy.json").read_text())
    assert recorded["verification"]["observations"]["source"] == "env"
    assert recorded["verification"]["observations"]["count"] == CAPACITY


def test_a_checkpoint_without_a_sample_is_refused_unless_the_env_may_be_stepped(
        counting_run, tmp_path, capsys):
    """A run trained before runs kept observations: export says how to go on, and
    writes nothing."""
    import shutil

    from edgeag.train import checkpoint

    old = tmp_path / "old"
    shutil.copytree(counting_run, old, ignore=shutil.ignore_patterns("export"))
    path = old / "checkpoints" / "latest.safetensors"
    state = checkpoint.load(path, numpy_only=True)
    del state["observations"]
    with open(path, "wb") as f:
        checkpoint.save(f, state)
    capsys.readouterr()
    assert main(["export", str(old), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"edgeag: error: cannot export: {old} has no training observations to "
                   "verify on (its checkpoint was written before runs kept them); pass "
                   "--record-observations to record 1024 by stepping the env "
                   f"'{COUNTING}' (record=True from Python)")
    assert not (old / "export").exists()
    assert main(["export", str(old), "--record-observations", "--no-progress"]) == 0
    assert (old / "export" / "policy.onnx").is_file()
