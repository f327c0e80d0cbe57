"""`edgeag train` at the command line: bad input exits 2 with one line, writes nothing."""

import json
import re

import pytest
import toy_envs
from train_child import NUMPY_ENGINE_FORBIDDEN, train_and_list_heavy_imports

from edgeag.cli import OPTIMIZER_HELP, main
from edgeag.optim import supported_optimizers

toy_envs.register()


@pytest.mark.parametrize("argv,message", [
    (["--env", "Nope-v0"], r"unknown env 'Nope-v0'"),
    (["--optimizer", "rmsprop"], r"unknown optimizer 'rmsprop' \(accepted: alphagrad, adam, "
                                 r"torch-adam, sgd, torch-adafactor, lion\)"),
    (["--algo", "a2c"], r"unknown algo 'a2c' \(accepted: ppo, dqn, td3, sac\)"),
    (["--env", "FrozenLake-v1"], r"observation space Discrete\(16\): ppo accepts a flat 1-D Box.*FlattenObservation"),
    (["--env", "edgeag-test/MultiBinaryAction-v0"], r"action space MultiBinary\(3\).*accepts Discrete"),
    (["--total-steps", "0"], r"invalid total_steps 0: expected a positive integer"),
    (["--set", "num_steps=-4"], r"invalid num_steps -4"),
    (["--set", "batch_size=100"], r"invalid batch_size 100: expected a divisor of num_envs \* num_steps = 256"),
    (["--set", "learning_rate=1"], r"unknown setting 'learning_rate' \(accepted: env_id"),
    (["--set", "hidden=64x"], r"invalid hidden '64x': expected a list of integers such as 64,64"),
    (["--lr", "-1"], r"invalid lr -1.0: expected a positive number"),
    (["--budget", "256XB"], r"invalid budget '256XB'"),
    (["--profile", "rpi4", "--budget", "8GB"], r"invalid budget '8GB': .* is more than rpi4's RAM"),
    (["--profile", "nope"], r"unknown profile 'nope'"),
    (["--threads", "0"], r"invalid --threads 0"),
    (["--hard-cap"], r"--hard-cap needs a budget"),
    (["--total-steps", "ten"], r"argument --total-steps: invalid int value: 'ten'"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("edgeag: error: ") and re.search(message, err[-1]), err
    assert "Traceback" not in "\n".join(err)
    assert not out.exists()


def _checkpoint_file(run, name: str, data: bytes) -> None:
    run.mkdir()
    (run / "config.toml").write_text("[ppo]\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / name).write_bytes(data)


def _safetensors(metadata: dict) -> bytes:
    import numpy as np
    from safetensors.numpy import save

    return save({"w": np.zeros(3, np.float32)}, metadata=metadata)


@pytest.mark.parametrize("make,message", [
    (lambda d: None, r"cannot resume: .* is not a directory"),
    (lambda d: d.mkdir(), r"cannot resume: .*config.toml is not a readable edgeag config"),
    (lambda d: _checkpoint_file(d, "latest.safetensors", b"junk"),
     r"latest.safetensors is not a readable edgeag checkpoint"),
    (lambda d: _checkpoint_file(d, "latest.safetensors", _safetensors({"format": "2"})),
     r"latest.safetensors is not a readable edgeag checkpoint \(CheckpointError: a safetensors "
     r"file without 'edgeag' metadata; accepted: a safetensors file whose 'edgeag' metadata "
     r"has format 2\)"),
    (lambda d: _checkpoint_file(d, "latest.pt", b"junk"),
     r"latest.pt is not a readable edgeag checkpoint"),
])
def test_unreadable_resume_exits_2(tmp_path, capsys, make, message):
    run = tmp_path / "run"
    make(run)
    before = sorted(p.name for p in run.rglob("*")) if run.exists() else None
    code = main(["train", "--resume", str(run), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and re.search(message, err[-1]), err
    assert (sorted(p.name for p in run.rglob("*")) if run.exists() else None) == before


def test_resume_refuses_what_would_change_the_training(tmp_path, capsys):
    """A continued run keeps what it trains: a different learning rate, env, algorithm,
    optimizer, network or seed is refused in one line naming it; the same value passes."""
    run = tmp_path / "run"
    assert main(["train", "--total-steps", "256", "--set", "eval_episodes=0", "--no-progress",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    for argv, named in ((["--lr", "0.1"], "--lr 0.1"), (["--seed", "5"], "--seed 5"),
                        (["--env", "Acrobot-v1"], "--env 'Acrobot-v1'"),
                        (["--algo", "dqn"], "--algo 'dqn'"),
                        (["--optimizer", "sgd"], "--optimizer 'sgd'"),
                        (["--set", "hidden=8"], "--set hidden '8'")):
        before = (run / "config.toml").read_text()
        assert main(["train", "--resume", str(run), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0] and "would change what the run trains" in err[0]
        assert (run / "config.toml").read_text() == before
    assert main(["train", "--resume", str(run), "--env", "CartPole-v1", "--seed", "1"]) == 0
    assert "is finished" in capsys.readouterr().out


def test_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "config.toml").write_text("[ppo]\n")
    assert main(["train", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_plan_over_budget_exits_2_with_the_breakdown(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--budget", "64MB", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "floor" in err and "rollout buffer" in err and "DOES NOT FIT" in err
    assert err.strip().splitlines()[-1].startswith("edgeag: error: plan ")


def test_optimizer_help_names_exactly_the_registry():
    named = re.findall(r"([a-z][a-z-]+) \(", OPTIMIZER_HELP)
    assert named == supported_optimizers()


def test_the_default_training_process_imports_no_torch_and_no_export_modules(tmp_path):
    """A real `edgeag train` process on the numpy engine (the default), checkpoint
    included: torch, onnx, executorch, matplotlib and optuna stay unloaded. On the torch
    engine, torch._dynamo and the export modules stay unloaded."""
    assert train_and_list_heavy_imports([
        "--total-steps", "512", "--out", str(tmp_path / "r"), "--no-progress",
        "--set", "eval_episodes=1"], forbidden=NUMPY_ENGINE_FORBIDDEN) == (0, [])
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["stopped"] == "done" and summary["steps"] == 512
    assert summary["engine"] == "numpy" and summary["runtime"].startswith("numpy engine")
    assert train_and_list_heavy_imports([
        "--total-steps", "512", "--out", str(tmp_path / "t"), "--no-progress", "--engine", "torch",
        "--set", "eval_episodes=1"]) == (0, [])
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["runtime"].startswith("torch")


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_step_0(tmp_path, capsys):
    """Killed before it wrote a checkpoint: --resume starts it again with its own config
    (neither a new run nor a resume would take the directory otherwise)."""
    run = tmp_path / "run"
    args = ["--total-steps", "512", "--set", "num_steps=32", "--set", "eval_episodes=1",
            "--no-progress"]
    assert main(["train", *args, "--out", str(run)]) == 0
    import shutil
    shutil.rmtree(run / "checkpoints")
    (run / "summary.json").unlink()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert "no checkpoint in" in capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text())["steps"] == 512
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["time/iterations"] for r in rows] == [1, 2]


@pytest.mark.parametrize("text,message", [
    (None, r"invalid --preset '.*': no such file"),
    ("not = [toml", r"invalid --preset '.*': not readable TOML"),
    ('["CartPole-v1"]\nnum_stepz = 3\n', r"preset .* \[CartPole-v1\]: unknown setting 'num_stepz'"),
    ('["CartPole-v1"]\nnum_steps = "many"\n', r"invalid num_steps 'many': expected an integer"),
    ('["CartPole-v1".rmsprop]\nalpha = 2.0\n', r"table \[CartPole-v1.rmsprop\]: unknown optimizer "
                                                r"family 'rmsprop' \(accepted: adam, alphagrad"),
    ('["CartPole-v1"]\nnum_steps = 16\n', r"invalid batch_size 256: expected a divisor"),
    ('["Pendulum-v1"]\nnum_steps = 16\n["Acrobot-v1"]\n', r"has tables for several envs "
                                                           r"\(Pendulum-v1, Acrobot-v1\): choose one with --env"),
    ("", r"no environment table"),
])
def test_bad_preset_file_exits_2_with_one_line(tmp_path, capsys, text, message):
    preset = tmp_path / "preset.toml"
    if text is not None:
        preset.write_text(text)
    out = tmp_path / "run"
    code = main(["train", "--preset", str(preset), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and re.search(message, err[-1]), err
    assert not out.exists()


def test_preset_file_replaces_the_shipped_preset(tmp_path, capsys):
    """The file's env table and optimizer sub-table, then the flags; --env defaults to
    the file's only env; a file without the requested env is refused."""
    preset = tmp_path / "mine.toml"
    preset.write_text('["CartPole-v1"]\nnum_steps = 16\nbatch_size = 64\neval_episodes = 1\n'
                      '["CartPole-v1".alphagrad]\nalpha = 2.5\nlr = 0.002\n')
    assert main(["train", "--preset", str(preset), "--total-steps", "256", "--lr", "0.004",
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    cfg = (tmp_path / "r" / "config.toml").read_text()
    for line in ("num_steps = 16", "batch_size = 64", "alpha = 2.5", "lr = 0.004",
                 "update_epochs = 20", "gamma = 0.98"):  # the last two: PPOConfig defaults
        assert f"\n{line}\n" in cfg, line
    capsys.readouterr()
    assert main(["train", "--preset", str(preset), "--env", "Acrobot-v1",
                 "--out", str(tmp_path / "a")]) == 2
    assert "no table for env 'Acrobot-v1' (it has: CartPole-v1)" in capsys.readouterr().err
    assert main(["train", "--preset", str(preset), "--resume", str(tmp_path / "r")]) == 2


def test_a_preset_file_is_used_instead_of_the_shipped_one():
    from edgeag.train.config import resolve_config

    shipped, _ = resolve_config("Acrobot-v1", None, {})
    mine, origin = resolve_config("Acrobot-v1", None, {}, "ppo",
                                  {"Acrobot-v1": {"eval_episodes": 1}}, "mine.toml")
    assert (shipped.num_envs, shipped.num_steps) == (16, 256)
    assert (mine.num_envs, mine.num_steps, mine.eval_episodes) == (8, 32, 1)  # PPOConfig's
    assert origin == "preset mine.toml Acrobot-v1 (no alphagrad table)"
