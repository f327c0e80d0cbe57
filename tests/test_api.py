"""The Python API (`edgeag.api`): SB3's names and return conventions, one lifecycle with
the CLI (continue, load, fine-tune, evaluate), the run's device settings kept for life."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import edgeag
from edgeag.errors import EdgeagError
from edgeag.io import tomllib
from edgeag.train import checkpoint
from edgeag.train.run import BudgetRefused

ROOT = Path(__file__).resolve().parents[1]
BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"
FAST = {"num_steps": 32, "eval_episodes": 3}
"""A PPO CartPole run of 256 env steps per iteration."""


def _python(code: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, text=True, capture_output=True,
                          timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _params(run: Path) -> dict:
    return checkpoint.load(run / "checkpoints" / "latest.safetensors")["policy"]


def test_the_readme_quick_start_runs_with_torch_blocked(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 15
    probe = ("\nassert sys.modules.get('torch') is None, 'torch imported'\n"
             "print('TORCH-FREE', sorted(p.name for p in model.run_dir.path.iterdir()))\n")
    out = _python(BLOCK_TORCH + code + probe, tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TORCH-FREE" in out.stdout
    saved = tmp_path / "runs" / "quickstart"
    assert (saved / "config.toml").is_file() and (saved / "checkpoints" / "latest.safetensors").is_file()
    assert (saved / "export" / "policy.onnx").is_file() and (saved / "export" / "policy.json").is_file()
    run = tomllib.loads((saved / "config.toml").read_text())["run"]
    assert (run["profile"], run["budget_bytes"]) == ("rpi4", 256 * 2**20)


SB3_SCRIPT = """
import gymnasium as gym

env = gym.make("CartPole-v1")
model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, n_epochs=4, seed=0,
            policy_kwargs=dict(net_arch=[32, 32]), learning_rate=3e-3, verbose=0)
model.learn(total_timesteps=2048)
obs, _ = env.reset(seed=0)
action, state = model.predict(obs, deterministic=True)
assert state is None and env.action_space.contains(int(action)), action
model.save("ppo_cartpole")
del model
model = PPO.load("ppo_cartpole")
again, _ = model.predict(obs, deterministic=True)
assert int(again) == int(action)
mean_reward, std_reward = evaluate_policy(model, env, n_eval_episodes=5, deterministic=True)
print("RESULT", float(mean_reward), float(std_reward))
"""
SB3_IMPORTS = ("from stable_baselines3 import PPO\n"
               "from stable_baselines3.common.evaluation import evaluate_policy\n")
EDGEAG_IMPORTS = "from edgeag import PPO, evaluate_policy\n"


def test_an_sb3_script_runs_with_only_its_import_changed(tmp_path):
    """The same script body, with SB3's imports where SB3 is installed, and edgeag's with
    torch blocked."""
    out = _python(BLOCK_TORCH + EDGEAG_IMPORTS + SB3_SCRIPT, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    mean = float(out.stdout.split("RESULT")[1].split()[0])
    assert mean > 0
    saved = tmp_path / "ppo_cartpole"
    cfg = tomllib.loads((saved / "config.toml").read_text())["ppo"]
    assert (cfg["num_steps"], cfg["batch_size"], cfg["update_epochs"], cfg["hidden"],
            cfg["lr"], cfg["seed"]) == (64, 64, 4, [32, 32], 3e-3, 0)
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return
    sb3_dir = tmp_path / "sb3"
    sb3_dir.mkdir()
    sb3 = _python(SB3_IMPORTS + SB3_SCRIPT, sb3_dir)
    assert sb3.returncode == 0, sb3.stderr[-2000:]


def test_predict_evaluate_policy_and_the_final_evaluation_agree(tmp_path):
    model = edgeag.PPO("CartPole-v1", run_dir=tmp_path / "r", seed=2, **FAST).learn(1024)
    assert model.num_timesteps == 1024 and model.stopped == "done"
    final = model.summary["final_eval_return"]
    assert edgeag.evaluate_policy(model, n_eval_episodes=3) == pytest.approx(
        (final["mean"], final["std"]), abs=0)
    returns, lengths = edgeag.evaluate_policy(model, "CartPole-v1", n_eval_episodes=3,
                                              return_episode_rewards=True)
    assert returns == final["returns"] and all(n >= 1 for n in lengths)
    one, state = model.predict(np.zeros(4))
    batch, _ = model.predict(np.zeros((5, 4)))
    assert state is None and np.ndim(one) == 0 and batch.shape == (5,) and batch[0] == one
    with pytest.raises(EdgeagError, match=r"invalid observation of shape \(3,\): expected \(4,\)"):
        model.predict(np.zeros(3))


def test_continuous_actions_are_clipped_and_batched(tmp_path):
    model = edgeag.TD3("Pendulum-v1", run_dir=tmp_path / "t", total_steps=600, learning_starts=300,
                       buffer_size=1000, hidden=[16, 16], eval_episodes=1, iteration_steps=300)
    model.learn(600)
    actions, _ = model.predict(np.full((4, 3), 50.0))
    assert actions.shape == (4, 1) and np.all(np.abs(actions) <= 2.0)


def test_save_load_then_continue_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    """Stopped by a callback (a clean stop with a checkpoint), loaded in a new model, and
    continued with reset_num_timesteps=False: the same policy, bit for bit."""
    kw = dict(seed=3, checkpoint_every=2, **FAST)
    edgeag.PPO("CartPole-v1", run_dir=tmp_path / "whole", **kw).learn(3072)
    cut = edgeag.PPO("CartPole-v1", run_dir=tmp_path / "cut", **kw)
    cut.learn(3072, callback=lambda row: row["time/total_timesteps"] < 1536)
    assert (cut.stopped, cut.num_timesteps) == ("callback", 1536)
    saved = cut.save(tmp_path / "saved")
    model = edgeag.load(saved)
    assert isinstance(model, edgeag.PPO) and model.num_timesteps == 1536
    model.learn(3072 - model.num_timesteps, reset_num_timesteps=False)
    assert model.num_timesteps == 3072
    whole, cont = _params(tmp_path / "whole"), _params(saved)
    assert whole.keys() == cont.keys()
    assert all(np.array_equal(whole[k], cont[k]) for k in whole)


def test_extending_a_run_keeps_the_learning_rate_continuous_and_records_the_total(tmp_path):
    model = edgeag.PPO("CartPole-v1", run_dir=tmp_path / "r", lr=1e-3, **FAST).learn(1024)
    model.learn(1024, reset_num_timesteps=False)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    lrs = [row["train/learning_rate"] for row in rows]
    # 4 iterations annealed from 1e-3 towards 0; then the line from the last rate that ran
    # (2.5e-4, iteration 3) to 0 after iteration 7
    assert lrs[:4] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert lrs[4:] == pytest.approx([2e-4, 1.5e-4, 1e-4, 5e-5])
    assert max(b - a for a, b in zip(lrs, lrs[1:])) <= 0  # never jumps up
    config = tomllib.loads((tmp_path / "r" / "config.toml").read_text())
    assert config["ppo"]["total_steps"] == 2048
    assert config["changes"] == [{"step": 1024, "setting": "total_steps", "from": 1024, "to": 2048}]


def test_a_plan_over_the_budget_raises_the_clis_refusal(tmp_path):
    model = edgeag.PPO("CartPole-v1", budget="8MB", run_dir=tmp_path / "r")
    with pytest.raises(BudgetRefused, match=r"exceeds the budget 8\.0 MiB") as e:
        model.learn(1024)
    assert e.value.exit_code == 2 and not (tmp_path / "r").exists()


def test_env_objects_and_functions(tmp_path):
    import gymnasium as gym

    with pytest.raises(EdgeagError, match=r"an env object is one env, and ppo steps num_envs=8"):
        edgeag.PPO(gym.make("CartPole-v1"))
    made = []
    model = edgeag.PPO(lambda: made.append(1) or gym.make("CartPole-v1"), run_dir=tmp_path / "f",
                       num_envs=2, batch_size=64, **FAST).learn(512)
    assert model.cfg.env_id == "CartPole-v1" and len(made) >= 2
    dqn = edgeag.DQN(gym.make("CartPole-v1"), run_dir=tmp_path / "o", learning_starts=100,
                     iteration_steps=300, eval_episodes=1).learn(600)
    assert dqn.num_timesteps == 600
    info = tomllib.loads((tmp_path / "o" / "config.toml").read_text())["run"]
    assert info["env_source"] == "python"


API_ERRORS = [
    (lambda: edgeag.PPO("CnnPolicy", "CartPole-v1"), r"invalid policy 'CnnPolicy': expected MlpPolicy"),
    (lambda: edgeag.PPO("CartPole-v1", optimizer="adamw"), r"unknown optimizer 'adamw'"),
    (lambda: edgeag.PPO("CartPole-v1", budget="12XB"), r"invalid budget '12XB'"),
    (lambda: edgeag.PPO("CartPole-v1", threads=0), r"invalid --threads 0"),
    (lambda: edgeag.PPO("CartPole-v1", learning_rate=lambda f: f), r"a schedule function is not accepted"),
    (lambda: edgeag.PPO("CartPole-v1", device="cuda"), r"invalid device 'cuda'"),
    (lambda: edgeag.PPO("CartPole-v1", num_steps=0), r"invalid num_steps 0"),
    (lambda: edgeag.PPO(42), r"invalid env 42: expected an env id"),
    (lambda: edgeag.PPO("Pendulum-v1", env_kwargs={"g": [object()]}), r"invalid env_kwargs g"),
    (lambda: edgeag.PPO("CartPole-v1").learn(0), r"invalid total_timesteps 0"),
    (lambda: edgeag.PPO("CartPole-v1").predict([0, 0, 0, 0]), r"the model has no policy yet"),
    (lambda: edgeag.PPO("CartPole-v1").learn(256, callback=7), r"invalid callback 7"),
    (lambda: edgeag.EvalCallback(0), r"invalid eval_freq 0"),
    (lambda: edgeag.load("/nonexistent/run"), r"cannot load: /nonexistent/run is not a directory"),
    (lambda: edgeag.PPO("CartPole-v1", hidden="a"), r"invalid hidden 'a'"),
]


@pytest.mark.parametrize("make,message", API_ERRORS, ids=[m for _, m in API_ERRORS])
def test_api_errors_are_edgeag_errors_naming_the_value(make, message):
    with pytest.raises(EdgeagError, match=message):
        make()


def test_eval_every_keeps_the_best_checkpoint_and_eval_prints_its_return(tmp_path):
    run = tmp_path / "r"
    model = edgeag.PPO("CartPole-v1", run_dir=run, **FAST)
    model.learn(2048, callback=edgeag.EvalCallback(512))
    best = model.summary["best_eval_return"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [row["eval/mean_return"] for row in rows if "eval/mean_return" in row]
    assert len(evals) == 4 and best == max(evals)
    assert (run / "checkpoints" / "best.safetensors").is_file()
    out = subprocess.run([sys.executable, "-c", BLOCK_TORCH + "from edgeag.cli import main; "
                          f"sys.exit(main(['eval', {str(run)!r}, '--checkpoint', 'best']))"],
                         text=True, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    printed = float(re.search(r"mean return: (-?[\d.]+)", out.stdout).group(1))
    assert printed == pytest.approx(best, abs=0.05)
    assert f"recorded when it was kept: {best:.1f}" in out.stdout


def test_stop_at_return_stops_cleanly_with_a_checkpoint(tmp_path):
    model = edgeag.PPO("CartPole-v1", run_dir=tmp_path / "r", **FAST)
    model.learn(20_000, callback=edgeag.EvalCallback(
        256, callback_on_new_best=edgeag.StopTrainingOnRewardThreshold(-1.0)))
    assert model.stopped == "return_threshold" and model.num_timesteps == 256
    assert model.exit_code == 0
    assert checkpoint.load(tmp_path / "r" / "checkpoints" / "latest.safetensors")["global_step"] == 256


def test_fine_tuning_starts_from_the_weights_with_a_fresh_optimizer(tmp_path):
    """load(run, env=..., env_kwargs=...) then learn: a new run whose networks start as
    the other run's (checked after 0 updates: learning_starts covers the first iteration),
    with Adam's state fresh, its own env_kwargs and directory."""
    src = edgeag.TD3("Pendulum-v1", run_dir=tmp_path / "g10", env_kwargs={"g": 10.0},
                     learning_starts=300, buffer_size=2000, hidden=[16, 16], eval_episodes=1,
                     iteration_steps=300).learn(900)
    source = checkpoint.load(tmp_path / "g10" / "checkpoints" / "latest.safetensors")
    tuned = edgeag.TD3.load(tmp_path / "g10", env="Pendulum-v1", env_kwargs={"g": 11.0},
                            run_dir=tmp_path / "g11", learning_starts=600)
    seen = {}

    def first_iteration(row):
        if not seen:
            state = tuned._trainer.state
            seen["nets"] = {k: {n: np.array(a) for n, a in v.items()}
                            for k, v in state.nets.state_dict()["nets"].items()}
            seen["opt"] = state.nets.optimizer_state_bytes()
            seen["adam_steps"] = [int(np.asarray(o.get("step", 0))) for o in
                                  state.nets.state_dict()["optimizers"].values()]
    tuned.learn(900, callback=first_iteration)
    assert tuned.cfg.env_kwargs == {"g": 11.0} and tuned.run_dir.path == tmp_path / "g11"
    for net, arrays in source["nets"].items():
        for name, value in arrays.items():
            assert np.array_equal(seen["nets"][net][name], value), (net, name)
    assert seen["adam_steps"] == [0, 0]
    run = tomllib.loads((tmp_path / "g11" / "config.toml").read_text())
    assert run["run"]["init_from"] == str(tmp_path / "g10") and run["td3"]["env_kwargs"] == {"g": 11.0}
    assert src.cfg.env_kwargs == {"g": 10.0}


def test_a_resumed_run_keeps_its_profile_budget_and_threads_after_sigint(tmp_path):
    """The acceptance case: ``--profile rpi4 --budget 128MB``, Ctrl-C, then the command
    edgeag prints: the same budget and threads, printed, enforced and in summary.json."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgeag.cli", "train", "--profile", "rpi4", "--budget", "128MB",
           "--total-steps", "40960", "--no-progress", "--set", "eval_episodes=1", "--out", str(run)]
    proc = subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = run / "checkpoints" / "latest.safetensors"
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "continue with: edgeag train --resume" in err and ckpt.is_file()
    threads = min(4, os.cpu_count() or 1)
    resumed = subprocess.run([sys.executable, "-m", "edgeag.cli", "train", "--resume", str(run),
                              "--no-progress"], text=True, capture_output=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    header = resumed.stderr.splitlines()[0]
    assert f"{threads} thread(s); profile rpi4; budget 128.0 MiB (134,217,728 bytes)" in header
    assert re.search(r"(?m)^  budget +128\.00 MiB +134,217,728 B  fits$", resumed.stderr)
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["budget_bytes"], summary["profile"], summary["threads_allowed"]) == \
        (128 * 2**20, "rpi4", threads)
    assert summary["stopped"] == "done"
    # the run resumes at a larger budget when asked: validated, printed, recorded
    again = subprocess.run([sys.executable, "-m", "edgeag.cli", "train", "--resume", str(run),
                            "--budget", "256MB", "--total-steps", "41216", "--no-progress"],
                           text=True, capture_output=True, timeout=600)
    assert again.returncode == 0, again.stderr
    changes = tomllib.loads((run / "config.toml").read_text())["changes"]
    assert {"step": 40960, "setting": "budget_bytes", "from": 128 * 2**20,
            "to": 256 * 2**20} in changes
    assert {"step": 40960, "setting": "total_steps", "from": 40960, "to": 41216} in changes
    assert json.loads((run / "summary.json").read_text())["budget_bytes"] == 256 * 2**20


def test_eval_records_video_where_moviepy_is_installed(tmp_path):
    pytest.importorskip("moviepy")
    run = tmp_path / "r"
    edgeag.PPO("CartPole-v1", run_dir=run, **FAST).learn(512)
    video = tmp_path / "video"
    out = subprocess.run([sys.executable, "-m", "edgeag.cli", "eval", str(run), "--episodes", "2",
                          "--video", str(video)], text=True, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr
    files = sorted(video.glob("*.mp4"))
    assert len(files) == 2 and all(f.stat().st_size > 1000 for f in files)
    assert all(f"video: {f}" in out.stdout for f in files)


def test_cli_init_from_starts_a_new_run_from_the_weights(tmp_path):
    src, new = tmp_path / "src", tmp_path / "new"
    edgeag.PPO("CartPole-v1", run_dir=src, **FAST).learn(512)
    out = subprocess.run([sys.executable, "-m", "edgeag.cli", "train", "--init-from", str(src),
                          "--total-steps", "256", "--seed", "4", "--no-progress", "--out", str(new)],
                         text=True, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"initialised from {src}" in out.stderr and "the optimizer starts fresh" in out.stderr
    config = tomllib.loads((new / "config.toml").read_text())
    assert config["run"]["init_from"] == str(src)
    assert (config["ppo"]["seed"], config["ppo"]["total_steps"], config["ppo"]["num_steps"]) == \
        (4, 256, 32)
    summary = json.loads((new / "summary.json").read_text())
    assert summary["init_from"] == str(src) and summary["steps"] == 256
    assert json.loads((src / "summary.json").read_text())["steps"] == 512  # untouched


def test_device_settings_round_trip_through_save_and_load(tmp_path):
    # in this process: the floor is pytest's, so the budget is a generous one
    model = edgeag.PPO("CartPole-v1", profile="rpi4", budget="1GB", threads=1,
                       run_dir=tmp_path / "r", **FAST).learn(256)
    model.save(tmp_path / "saved")
    loaded = edgeag.PPO.load(tmp_path / "saved")
    assert loaded.device == model.device
    assert (loaded.device.profile, loaded.device.budget_bytes, loaded.device.threads) == \
        ("rpi4", 2**30, 1)
    with pytest.raises(EdgeagError, match=r"cannot load .* as DQN: it is a ppo run"):
        edgeag.DQN.load(tmp_path / "saved")
    bigger = edgeag.load(tmp_path / "saved", budget="2GB")
    assert bigger.device.budget_bytes == 2 * 2**30 and bigger.device.profile == "rpi4"


def test_the_hard_cap_comes_back_on_resume(tmp_path):
    run = tmp_path / "r"
    base = [sys.executable, "-m", "edgeag.cli", "train", "--no-progress"]
    first = subprocess.run([*base, "--hard-cap", "rlimit", "--budget", "256MB", "--total-steps",
                            "512", "--set", "num_steps=32", "--set", "eval_episodes=1",
                            "--out", str(run)], text=True, capture_output=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert tomllib.loads((run / "config.toml").read_text())["run"]["hard_cap"] == "rlimit"
    again = subprocess.run([*base, "--resume", str(run), "--total-steps", "768"], text=True,
                           capture_output=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "budget 256.0 MiB (268,435,456 bytes); hard cap rlimit" in again.stderr.splitlines()[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["hard_cap_mode"] == "rlimit" and "RLIMIT_DATA" in summary["hard_cap"]


def test_extending_a_dqn_run_keeps_epsilon_where_it_was(tmp_path):
    """Epsilon decays over exploration_fraction of the total first planned: extended, the
    run goes on at the final epsilon (the new total would put it back at 0.5)."""
    model = edgeag.DQN("CartPole-v1", run_dir=tmp_path / "d", learning_starts=100,
                       iteration_steps=250, exploration_fraction=1.0, eval_episodes=1)
    model.learn(1000)
    model.learn(1000, reset_num_timesteps=False)
    rows = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    eps = [row["train/exploration_rate"] for row in rows]
    # the last iteration's updates (every 10th step, 760 to 1000) on the line to 0.05
    assert eps[3] == pytest.approx(np.mean([1 - 0.95 * s / 1000 for s in range(760, 1001, 10)]))
    assert eps[4:] == pytest.approx([0.05] * 4)
    assert tomllib.loads((tmp_path / "d" / "config.toml").read_text())["dqn"]["total_steps"] == 2000
