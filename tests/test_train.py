"""PPO behaviour: GAE, truncation bootstrap, determinism, resume, learning, budgets."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import toy_envs

from edgeag.algos.base import PlanInputs
from edgeag.algos.ppo.algorithm import (
    RolloutBuffer,
    build_state,
    collect_rollout,
    compute_gae,
    plan_ppo,
    what_fits,
)
from edgeag.algos.ppo.config import PPOConfig
from edgeag.memory import MiB, measure_floor
from edgeag.train.config import resolve_config, uses_fused_backward
from edgeag.train.envs import make_vector_env
from edgeag.train.run import EXIT_BUDGET, TIME_KEYS, BudgetRefused, RunOptions, train
from edgeag.train.rundir import RunDir, load_checkpoint

toy_envs.register()

REPO = Path(__file__).resolve().parents[1]


def test_gae_hand_computed_with_a_truncation():
    # One env, four steps. The episode is cut by its time limit after step 2 (so step 2's
    # reward already carries gamma * V(final_obs) = 0.9 * 5) and obs[3] starts a new
    # episode (dones[3] = 1); the rollout ends mid-episode (next_done = 0).
    g, lam = 0.9, 0.8
    r = [1.0, 1.0, 1.0 + g * 5.0, 1.0]
    v = [2.0, 3.0, 4.0, 1.5]
    v_next = 2.5
    d3 = 0.0 + 3 * 0.0  # step 3 continues to the bootstrap value
    delta3 = r[3] + g * v_next - v[3]                    # 1 + 2.25 - 1.5 = 1.75
    delta2 = r[2] + g * v[3] * (1 - 1.0) - v[2]          # cut: no V(obs[3]) of the next episode
    delta1 = r[1] + g * v[2] - v[1]
    delta0 = r[0] + g * v[1] - v[0]
    a3 = delta3 + d3
    a2 = delta2                                          # the trace stops at the cut
    a1 = delta1 + g * lam * a2
    a0 = delta0 + g * lam * a1
    def t(xs):
        return np.array(xs, dtype=np.float64).reshape(-1, 1)
    adv, ret = compute_gae(t(r), t(v), t([0.0, 0.0, 0.0, 1.0]), np.array([v_next]),
                           np.array([0.0]), g, lam)
    expected = [a0, a1, a2, a3]
    assert adv.flatten().tolist() == pytest.approx(expected, abs=1e-12)
    assert ret.flatten().tolist() == pytest.approx([a + b for a, b in zip(expected, v)], abs=1e-12)
    assert a2 == pytest.approx(1.0 + g * 5.0 - 4.0)


def constant_value_state(cfg, c):
    envs = make_vector_env(cfg.env_id, cfg.num_envs)
    state = build_state(cfg, envs)
    critic = state.nets.critic
    state.nets.params[critic.weight(critic.depth - 1)][...] = 0
    state.nets.params[critic.bias(critic.depth - 1)][...] = c
    return state


def test_time_limit_truncation_is_bootstrapped_and_termination_is_not():
    cfg = PPOConfig(env_id="edgeag-test/ConstantReward-v0", num_envs=2, num_steps=12,
                    batch_size=24, gamma=0.9, norm_obs=False)
    state = constant_value_state(cfg, c=7.0)
    buf = RolloutBuffer(cfg.num_steps, cfg.num_envs, 1, 2, True)
    finished = collect_rollout(state, buf)
    rewards = buf.rewards[:, 0].tolist()
    # The time limit is 5 steps: steps 4 and 9 end an episode by truncation.
    assert rewards == pytest.approx([1, 1, 1, 1, 1 + 0.9 * 7.0, 1, 1, 1, 1, 1 + 0.9 * 7.0, 1, 1])
    assert buf.dones[:, 0].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    assert [ret for ret, _ in finished] == [5.0] * 4 and all(n == 5 for _, n in finished)

    cfg = dataclasses.replace(cfg, env_id="CartPole-v1", num_envs=1, num_steps=64, batch_size=64)
    state = constant_value_state(cfg, c=7.0)
    buf = RolloutBuffer(cfg.num_steps, 1, 4, 2, True)
    collect_rollout(state, buf)
    assert buf.dones.sum() >= 1  # random CartPole falls within 64 steps: terminations only
    assert np.all(buf.rewards == 1.0)


def short_cfg(**change):
    cfg, _ = resolve_config("CartPole-v1", "alphagrad", {"total_steps": 2048, "eval_episodes": 2,
                                                         "checkpoint_every": 3})
    return dataclasses.replace(cfg, **change)


def run_quiet(cfg, path, **opts):
    opts.setdefault("progress", False)
    return train(cfg, RunDir(path), RunOptions(**opts), log=lambda _: None)


def deterministic_rows(path):
    rows = [json.loads(line) for line in (Path(path) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in rows]


@pytest.mark.parametrize("optimizer", ["alphagrad", "adam"])
def test_same_seed_same_metrics(tmp_path, optimizer):
    cfg = short_cfg(optimizer=optimizer)
    run_quiet(cfg, tmp_path / "a")
    run_quiet(cfg, tmp_path / "b")
    a, b = deterministic_rows(tmp_path / "a"), deterministic_rows(tmp_path / "b")
    assert len(a) == cfg.num_iterations == 8 and a == b
    run_quiet(dataclasses.replace(cfg, seed=2), tmp_path / "c")
    assert deterministic_rows(tmp_path / "c") != a


def test_checkpoint_and_summary_contents(tmp_path):
    code, summary = run_quiet(short_cfg(), tmp_path / "run", budget_bytes=2 << 30)
    assert code == 0 and summary["stopped"] == "done"
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in ("env", "algo", "optimizer", "steps", "wall_seconds", "peak_rss_bytes",
                "floor_bytes", "budget_bytes", "optimizer_state_bytes", "final_eval_return",
                "stopped"):
        assert key in on_disk
    assert on_disk["optimizer_state_bytes"] == 0 and on_disk["steps"] == 2048
    assert on_disk["final_eval_return"]["episodes"] == 2
    assert 0 < on_disk["floor_bytes"] <= on_disk["peak_rss_bytes"]
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.safetensors")
    assert ckpt["global_step"] == 2048 and ckpt["arch"]["hidden"] == [64, 64]
    assert set(ckpt["obs_norm"]) == {"mean", "var", "count"}
    assert not list((tmp_path / "run").rglob("*.tmp"))
    config = (tmp_path / "run" / "config.toml").read_text()
    assert 'env_id = "CartPole-v1"' in config and "hidden = [64, 64]" in config


def final_params(path):
    return load_checkpoint(Path(path) / "checkpoints" / "latest.safetensors")["policy"]


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    """Ctrl-C (a real SIGINT to a real `edgeag train`) saves a checkpoint at the next
    iteration boundary; --resume then finishes with exactly the uninterrupted result."""
    common = ["--total-steps", "12800", "--set", "eval_episodes=2", "--set", "checkpoint_every=1000",
              "--threads", "1", "--no-progress"]
    cmd = [sys.executable, "-m", "edgeag.cli", "train"]
    subprocess.run(cmd + common + ["--out", str(tmp_path / "full")], check=True,
                   capture_output=True)
    proc = subprocess.Popen(cmd + common + ["--out", str(tmp_path / "cut")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (metrics.exists() and
                                               len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["stopped"] == "interrupted" and 0 < summary["steps"] < 12800
    done = subprocess.run(cmd + ["--resume", str(tmp_path / "cut"), "--threads", "1",
                                 "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert deterministic_rows(tmp_path / "cut") == deterministic_rows(tmp_path / "full")
    a, b = final_params(tmp_path / "cut"), final_params(tmp_path / "full")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    a, b = (load_checkpoint(tmp_path / r / "checkpoints" / "latest.safetensors")["observations"]
            for r in ("cut", "full"))  # the sample export verifies on, as if never interrupted
    assert a["seen"] == b["seen"] > 1024 and np.array_equal(a["rows"], b["rows"])
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["final_eval_return"] == \
        json.loads((tmp_path / "full" / "summary.json").read_text())["final_eval_return"]


def test_short_cartpole_run_clearly_improves(tmp_path):
    cfg = short_cfg(total_steps=25_600, eval_episodes=5)
    code, summary = run_quiet(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = rows[1]["rollout/ep_rew_mean"]
    last = rows[-1]["rollout/ep_rew_mean"]
    assert first < 40 and last > 3 * first and summary["final_eval_return"]["mean"] > 150


def test_plan_counts_the_policy_buffer_and_optimizer():
    cfg = PPOConfig(hidden=(64, 64), num_envs=8, num_steps=32, batch_size=256)
    plan = plan_ppo(cfg, PlanInputs(1 << 30, 200 * MiB, obs_dim=4, action_dim=2, discrete=True))
    items = dict((i.name, i.nbytes) for i in plan.items)
    # critic 4-64-64-1 and actor 4-64-64-2: (320 + 4160 + 65) + (320 + 4160 + 130) values
    assert items["parameters"] == 4 * 9155
    assert items["gradients"] == 4 * 9155  # small policy: the flat update holds them all
    assert items["update temporaries"] == 0  # norms and scales: one value per tensor
    assert items["optimizer state"] == 0
    assert items["rollout buffer"] == 256 * 4 * (4 + 6) + 256 * 8
    wide = plan_ppo(dataclasses.replace(cfg, hidden=(1024, 1024)), PlanInputs(1 << 30, 200 * MiB, 4, 2, True))
    assert dict((i.name, i.nbytes) for i in wide.items)["gradients"] == 4 * 1024 * 1024  # per layer
    wider = plan_ppo(dataclasses.replace(cfg, hidden=(2048, 2048)), PlanInputs(1 << 30, 200 * MiB, 4, 2, True))
    items = dict((i.name, i.nbytes) for i in wider.items)
    assert items["gradients"] == 4 * 2048 * 4  # the 2048 x 2048 weights: from their factors
    from edgeag.optim.factored import outer_temporary_bytes
    assert items["update temporaries"] == max(outer_temporary_bytes(4), 4 * 2048 * 4)
    adam = plan_ppo(dataclasses.replace(cfg, optimizer="adam"), PlanInputs(1 << 30, 200 * MiB, 4, 2, True))
    assert dict((i.name, i.nbytes) for i in adam.items)["optimizer state"] == 2 * 4 * 9155 + 12 * 4  # 12 tensors, one step counter each


def test_refusal_names_settings_that_fit():
    floor = 240 * MiB
    budget = floor + 20 * MiB
    wide = PPOConfig(hidden=(1024, 1024))
    assert not plan_ppo(wide, PlanInputs(budget, floor, 4, 2, True)).fits
    text = what_fits(wide, PlanInputs(budget, floor, 4, 2, True))
    width = int(text.split("--set hidden=")[1].split(",")[0])
    assert plan_ppo(dataclasses.replace(wide, hidden=(width, width)), PlanInputs(budget, floor, 4, 2, True)).fits
    assert not plan_ppo(dataclasses.replace(wide, hidden=(width + 1,) * 2), PlanInputs(budget, floor, 4, 2, True)).fits

    long = PPOConfig(num_steps=65_536, batch_size=256)  # a 21 MiB rollout buffer
    assert not plan_ppo(long, PlanInputs(budget, floor, 4, 2, True)).fits
    text = what_fits(long, PlanInputs(budget, floor, 4, 2, True))
    steps = int(text.split("num_steps=")[1].split()[0])
    suggested = dataclasses.replace(long, num_steps=steps).validate()  # minibatch divides it
    assert plan_ppo(suggested, PlanInputs(budget, floor, 4, 2, True)).fits
    next_valid = dataclasses.replace(long, num_steps=steps + 256 // 8)
    assert not plan_ppo(next_valid, PlanInputs(budget, floor, 4, 2, True)).fits
    assert "--optimizer adam" in what_fits(dataclasses.replace(wide, optimizer="torch-adam", engine="torch",
                                                              hidden=(64, 64)),
                                          PlanInputs(floor + 60 * MiB, floor, 4, 2, True))


def test_plan_over_budget_is_refused_before_anything_is_written(tmp_path):
    floor = measure_floor().anon_bytes
    with pytest.raises(BudgetRefused, match="exceeds the budget .* largest settings that fit"):
        run_quiet(short_cfg(hidden=(2048, 2048)), tmp_path / "run", budget_bytes=floor + 16 * MiB)
    assert not (tmp_path / "run").exists()


def train_in_child(out, env, budget_headroom_mib, *args):
    """`edgeag train` in a fresh process whose budget is its own floor plus a headroom:
    the test process's RSS (whatever earlier tests left in its allocator) cannot blur
    a budget this tight."""
    code = ("import sys, torch, gymnasium, toy_envs; toy_envs.register(); "
            "from edgeag.memory import MiB, measure_floor; from edgeag.cli import main; "
            f"budget = measure_floor().anon_bytes + {budget_headroom_mib} * MiB; "
            f"sys.exit(main(['train', '--env', {env!r}, '--budget', str(budget), "
            "'--threads', '1', '--no-progress', '--total-steps', '4096', "
            "'--set', 'num_envs=2', '--set', 'num_steps=64', '--set', 'batch_size=128', "
            f"'--out', {str(out)!r}] + {list(args)!r}))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})


def resume_in_child_to_the_end(out):
    """`edgeag train --resume OUT --budget 4GiB` in a fresh process: it finishes."""
    code = ("import sys, toy_envs; from edgeag.cli import main; "
            f"sys.exit(main(['train', '--resume', {str(out)!r}, '--budget', '4GiB', "
            "'--no-progress']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "summary.json").read_text())["steps"] == 4096


def test_budget_crossed_while_running_stops_with_checkpoint_then_resumes(tmp_path):
    # Fits the plan, but the env leaks 2 x 160 MiB at its 400th step (global step 800).
    # The headroom is wide: on a fresh install, library pages mapped while training
    # (large page-cache folios of just-written files) can add tens of MiB of RSS.
    out = tmp_path / "run"
    proc = train_in_child(out, "edgeag-test/Leaky-v0", 150)
    assert proc.returncode == EXIT_BUDGET, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "budget"
    assert 800 <= summary["steps"] < 4096
    # stopped at the first boundary after the crossing (iterations are 128 steps)
    assert summary["steps"] <= 800 + 3 * 128
    ckpt = load_checkpoint(out / "checkpoints" / "latest.safetensors")
    assert ckpt["global_step"] == summary["steps"]
    resume_in_child_to_the_end(out)


def test_hard_cap_turns_an_allocation_past_the_budget_into_a_clean_budget_stop(tmp_path):
    """--hard-cap rlimit (RLIMIT_DATA, set in a child process: it cannot be undone) makes the
    leaking env's 512 MiB allocation fail at once; the run stops at its last checkpoint."""
    out = tmp_path / "run"
    proc = train_in_child(out, "edgeag-test/BigLeak-v0", 80, "--hard-cap", "rlimit", "--set",
                          "checkpoint_every=1")
    assert proc.returncode == EXIT_BUDGET, proc.stderr
    assert "hard cap hit" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "budget" and summary["hard_cap"].startswith("RLIMIT_DATA")
    assert summary["steps"] == load_checkpoint(out / "checkpoints" / "latest.safetensors")["global_step"]
    assert 0 < summary["steps"] < 800  # the leak happens at step 800


def test_unfused_alphagrad_updates_in_step_with_the_same_result(tmp_path):
    """``fuse_backward=false`` runs AlphaGrad's plain ``step()`` after ``backward()``
    (every gradient alive at once, as the plan counts) and trains the same policy."""
    fused, unfused = short_cfg(), short_cfg(fuse_backward=False)
    assert uses_fused_backward(fused) and not uses_fused_backward(unfused)
    assert not uses_fused_backward(short_cfg(optimizer="adam"))
    grads = {cfg.fuse_backward: dict((i.name, i.nbytes) for i in
                                     plan_ppo(cfg, PlanInputs(1 << 30, 0, 4, 2, True)).items)["gradients"]
             for cfg in (fused, unfused)}
    # a small policy keeps every gradient either way (the flat path); a large one
    # fused keeps one layer's
    assert grads[True] == grads[False] == 4 * 2 * (4 * 64 + 64 + 64 * 64 + 64) + 4 * (64 + 1 + 64 * 2 + 2)
    wide = {f: dict((i.name, i.nbytes) for i in plan_ppo(dataclasses.replace(cfg, hidden=(1024, 1024)),
                                                         PlanInputs(1 << 30, 0, 4, 2, True)).items)["gradients"]
            for f, cfg in ((True, fused), (False, unfused))}
    assert wide[True] == 4 * 1024 * 1024 < wide[False]
    run_quiet(fused, tmp_path / "fused")
    run_quiet(unfused, tmp_path / "unfused")
    a, b = final_params(tmp_path / "fused"), final_params(tmp_path / "unfused")
    # a small policy takes the flat path either way: the same arithmetic
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ra, rb = deterministic_rows(tmp_path / "fused"), deterministic_rows(tmp_path / "unfused")
    assert [r["rollout/ep_rew_mean"] for r in ra] == [r["rollout/ep_rew_mean"] for r in rb]


def test_atomic_write_gives_a_new_file_the_usual_permissions_and_keeps_the_old_on_error(tmp_path):
    from edgeag.io import atomic_write, write_json

    code = ("import os, sys; os.umask(0o027); from edgeag.io import write_json; "
            "write_json(sys.argv[1], {'x': 1})")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.json")], check=True)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0o600
    write_json(tmp_path / "b.json", {"x": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o666 & ~umask

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "b.json", fail)
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_hard_cap_cgroup_kernel_kill_is_a_budget_stop_and_the_run_resumes(tmp_path):
    """--hard-cap cgroup: training runs in a cgroup of its own whose limit is the budget;
    the env's 512 MiB allocation inside one iteration is beyond what the guard can stop
    at a boundary, so the kernel OOM-kills the child. The parent says so, writes
    summary.json (stopped: budget) and exits 3; the last checkpoint loads and resumes."""
    from edgeag.memory.hardcap import make_cgroup

    probe = make_cgroup(1 << 30, f"edgeag-test-{os.getpid()}")
    if probe is None:
        pytest.skip("no writable cgroup memory controller (v2 memory.max or v1 memory) here")
    probe.remove()
    out = tmp_path / "run"
    proc = train_in_child(out, "toy_envs:edgeag-test/BigLeak-v0", 80, "--hard-cap", "cgroup",
                          "--set", "checkpoint_every=1")
    assert proc.returncode == EXIT_BUDGET, proc.stderr
    assert "training in cgroup v" in proc.stderr and "Traceback" not in proc.stderr
    assert "the kernel stopped training at the hard cap" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "budget" and summary["stopped_by"] == "kernel"
    step = load_checkpoint(out / "checkpoints" / "latest.safetensors")["global_step"]
    assert 0 < step < 800  # the leak happens at step 800
    assert not list(Path(summary["hard_cap"].split("(")[1].split(")")[0]).parent.glob(
        "edgeag-train-*")), "the cgroup was not removed"
    resume_in_child_to_the_end(out)
