"""Threads follow the work: one for a small policy whatever the profile allows, the
profile's cores (an upper bound) for a large one; summary.json says which and why."""

import json
import os

import numpy as np
import pytest

from edgeag.algos.ppo.config import PPOConfig
from edgeag.algos.td3.config import TD3Config
from edgeag.cli import main
from edgeag.engine.threads import THREADS_CROSSOVER_MACS, workload_threads
from edgeag.train import checkpoint


def test_one_thread_below_the_crossover_and_the_bound_above_it():
    assert workload_threads(4, THREADS_CROSSOVER_MACS - 1)[0] == 1
    assert workload_threads(4, THREADS_CROSSOVER_MACS) == (
        4, f"largest matmul {THREADS_CROSSOVER_MACS:,} multiply-adds, at least "
           f"{THREADS_CROSSOVER_MACS:,}: 4 allowed, 4 used")
    assert workload_threads(1, 10 * THREADS_CROSSOVER_MACS) == (1, "1 thread allowed")
    threads, why = workload_threads(2, 64 * 64 * 256)
    assert threads == 1 and "below" in why and "1 of 2 allowed" in why


def test_the_work_is_a_minibatch_through_the_widest_hidden_pair():
    assert PPOConfig().update_macs == 256 * 64 * 64  # the default: far below the crossover
    assert PPOConfig(hidden=(128,)).update_macs == 256 * 128 * 128
    assert TD3Config(hidden=(400, 300), batch_size=256).update_macs == 256 * 400 * 300
    assert PPOConfig(hidden=(2048, 2048)).update_macs >= THREADS_CROSSOVER_MACS


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every run has 1 thread")
def test_a_small_policy_trains_the_same_whatever_the_profile_allows(tmp_path):
    """rpi4 allows 4 threads (this machine's cores at most); the default policy's
    matmuls are too small to split, so it trains on one, bit for bit as --threads 1."""
    common = ["train", "--total-steps", "2048", "--set", "eval_episodes=2", "--no-progress"]
    assert main([*common, "--profile", "rpi4", "--budget", "2GB",  # this process: torch too
                 "--out", str(tmp_path / "profile")]) == 0
    assert main([*common, "--threads", "1", "--out", str(tmp_path / "one")]) == 0
    summary = json.loads((tmp_path / "profile" / "summary.json").read_text())
    assert summary["threads"] == 1
    assert summary["threads_allowed"] == min(4, os.cpu_count())
    assert "below" in summary["threads_reason"]
    a, b = (checkpoint.load(tmp_path / name / "checkpoints" / "latest.safetensors")
            for name in ("profile", "one"))
    for key, value in a["policy"].items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(b["policy"][key]))
