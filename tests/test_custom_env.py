"""A user's own environment end to end, as docs/custom-env.md tells it:
examples/custom_env/fan_speed.py on PYTHONPATH (nothing installed), trained with
``edgeag train --env fan_speed:FanSpeed-v0``, exported, and run by the torch-free
runner, which imports the module itself to find the env named in policy.json."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "custom_env"

BLOCKED = ("import sys; sys.modules['torch'] = None; from edgeag.cli import main; "
           "code = main(sys.argv[1:]); assert 'fan_speed' in sys.modules, 'not imported'; "
           "sys.exit(code)")
"""``edgeag`` with torch blocked (any ``import torch`` fails, as in test_no_torch.py),
checking afterwards that the user's module was imported."""

DO_NOTHING = -60.0
"""About what leaving the duty alone scores (fan_speed.py's docstring); a controller
that tracks the set point scores about -5."""


def _env(*paths: Path) -> dict:
    path = os.pathsep.join([*map(str, paths), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}


def edgeag(args: list[str], cwd: Path, *paths: Path, code: str | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """``edgeag ARGS`` in a fresh process whose PYTHONPATH starts with ``paths``."""
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "edgeag.cli", *args]
    return subprocess.run(cmd, cwd=cwd, text=True, capture_output=True, timeout=timeout,
                          env=_env(*paths))


@pytest.fixture(scope="module", params=["FanSpeed-v0", "FanSpeedContinuous-v0"])
def exported(request, tmp_path_factory) -> tuple[str, Path]:
    """(env id, run directory): 4096 steps of PPO on the example env, exported to ONNX;
    the working directory does not hold fan_speed.py, PYTHONPATH finds it."""
    env_id = f"fan_speed:{request.param}"
    work = tmp_path_factory.mktemp("custom-env")
    run = work / "run"
    train = edgeag(["train", "--env", env_id, "--lr", "3e-3", "--alpha", "4", "--total-steps",
                    "4096", "--out", str(run), "--no-progress"], work, EXAMPLE)
    assert train.returncode == 0, train.stderr
    export = edgeag(["export", str(run), "--format", "onnx", "--no-progress"], work, EXAMPLE)
    assert export.returncode == 0, export.stderr
    return env_id, run


def test_training_stores_the_module_in_the_env_id_and_learns(exported):
    env_id, run = exported
    with open(run / "config.toml", "rb") as f:
        assert tomllib.load(f)["ppo"]["env_id"] == env_id
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env"] == env_id and summary["stopped"] == "done" and summary["steps"] == 4096
    ev = summary["final_eval_return"]
    # seeds 1-4 reached -2.5 to -12.6 at 4096 steps; doing nothing scores about -60
    assert ev["episodes"] == 10 and ev["mean"] > DO_NOTHING / 3, ev


def test_export_keeps_the_module_in_policy_json(exported):
    env_id, run = exported
    meta = json.loads((run / "export" / "policy.json").read_text())
    assert meta["env_id"] == env_id
    assert list(meta["artifacts"]) == ["policy.onnx"]
    assert meta["contract"]["output"]["dtype"] == ("float32" if "Continuous" in env_id else "int64")


def test_runner_imports_the_module_without_torch(exported, tmp_path):
    """``edgeag run`` takes the env from policy.json, imports fan_speed itself (checked in
    the child) and never imports torch (blocked): every episode is the custom env's 200
    steps."""
    env_id, run = exported
    out = tmp_path / "result.json"
    proc = edgeag(["run", str(run / "export" / "policy.onnx"), "--episodes", "5", "--json",
                   str(out)], tmp_path, EXAMPLE, code=BLOCKED)
    assert proc.returncode == 0, proc.stderr
    assert f"env: {env_id}, 5 episode(s)" in proc.stdout
    result = json.loads(out.read_text())
    assert result["env"] == env_id and result["runtime"].startswith("onnxruntime")
    assert len(result["returns"]) == 5 and result["actions"] == 5 * 200
    assert result["mean_return"] > DO_NOTHING / 3, result["returns"]


def test_runner_alone_on_a_device_needs_only_the_module_beside_it(exported, tmp_path):
    """The device's whole stack: runner.py and fan_speed.py copied into one directory,
    without edgeag and without torch (both blocked), given the policy and its
    policy.json."""
    env_id, run = exported
    device = tmp_path / "device"
    device.mkdir()
    for src in (REPO / "edgeag" / "export" / "runner.py", EXAMPLE / "fan_speed.py"):
        (device / src.name).write_text(src.read_text())
    for name in ("policy.onnx", "policy.json"):
        (device / name).write_bytes((run / "export" / name).read_bytes())
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['edgeag'] = None; "
            "sys.path.insert(0, '.'); sys.argv = ['runner.py', *sys.argv[1:]]; "
            "runpy.run_path('runner.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, "policy.onnx", "--episodes", "2"],
                          cwd=device, text=True, capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": "", "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    assert f"env: {env_id}, 2 episode(s)" in proc.stdout and "mean return: " in proc.stdout


def test_runner_without_the_module_says_what_is_missing(exported, tmp_path):
    """The device forgot fan_speed.py: one line naming the module and what is accepted."""
    env_id, run = exported
    proc = edgeag(["run", str(run / "export" / "policy.onnx")], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"edgeag: error: unknown env {env_id!r}: no module 'fan_speed' on PYTHONPATH (accepted: "
        "a registered Gymnasium id such as CartPole-v1, or module:EnvId with the module on "
        "PYTHONPATH)"]


# --- the example env itself and the two ways of making an env by id -----------------

@pytest.fixture
def example_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))


@pytest.mark.parametrize("env_id", ["fan_speed:FanSpeed-v0", "fan_speed:FanSpeedContinuous-v0"])
def test_example_env_passes_gymnasiums_checker_and_repeats_under_its_seed(example_on_path, env_id):
    from gymnasium.utils.env_checker import check_env

    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.spec.max_episode_steps == 200
    assert env.observation_space.dtype == np.float32 and env.observation_space.shape == (3,)

    def episode(seed: int) -> list[float]:
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        rows, done = [*obs], False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            rows += [*obs, reward]
            done = terminated or truncated
        return rows

    assert episode(3) == episode(3) and episode(3) != episode(4)


def _write_module(directory: Path, name: str, text: str) -> None:
    (directory / f"{name}.py").write_text(text)


BAD_IDS = ["no_such_module:Thing-v0", "a:b:c", ":CartPole-v1", "CartPole-v1:", "Nope-v0",
           "needs_missing:Thing-v0", "json:Thing-v0"]


@pytest.mark.parametrize("env_id", BAD_IDS)
def test_training_and_the_runner_refuse_an_env_id_alike(env_id, tmp_path, monkeypatch):
    """`edgeag.train.envs.make_env` and the runner's own copy (it runs without edgeag)
    give the same message, except that training also lists what a module registers."""
    from edgeag.errors import EdgeagError
    from edgeag.export import runner
    from edgeag.train import envs

    _write_module(tmp_path, "needs_missing", "import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    messages = []
    for make in (envs.make_env, runner.make_env):
        with pytest.raises(EdgeagError) as e:
            make(env_id)
        messages.append(str(e.value))
    train, run = messages
    assert "\n" not in train and env_id in train
    if env_id == "json:Thing-v0":
        assert train.startswith("unknown env 'json:Thing-v0': module json registers no env Thing-v0")
        assert run.startswith("unknown env 'json:Thing-v0': ")
        assert train.endswith(envs.ENV_IDS + ")") and run.endswith(envs.ENV_IDS + ")")
    else:
        assert train == run
    if env_id == "needs_missing:Thing-v0":
        assert train == ("env 'needs_missing:Thing-v0' needs a package that is not installed: "
                         "module 'needs_missing' imports 'no_such_dependency_xyz'")
    assert envs.ENV_IDS == runner.ENV_IDS


def test_a_bug_in_the_users_module_keeps_its_traceback(tmp_path, monkeypatch):
    """An exception raised by the module's own code is not an unknown env: it reaches
    the user with its traceback (exit 1), pointing at the line to fix."""
    from edgeag.train.envs import make_env

    _write_module(tmp_path, "broken_env", "raise RuntimeError('sensor not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="sensor not found"):
        make_env("broken_env:Thing-v0")
    proc = edgeag(["train", "--env", "broken_env:Thing-v0", "--out", str(tmp_path / "run")],
                  tmp_path, tmp_path)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert re.search(r"broken_env\.py\", line 1", proc.stderr) and not (tmp_path / "run").exists()
