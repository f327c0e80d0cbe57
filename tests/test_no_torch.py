"""edgeag without torch, as ``pip install edgeag`` (no extras) leaves it: every process
here runs with torch blocked (``sys.modules['torch'] = None`` before edgeag is imported,
so any ``import torch`` fails), which makes these tests as meaningful in a venv with
torch as in one without. The numpy engine trains, checkpoints and resumes, and its
policy exports to ONNX; everything that needs torch says so in one line naming what
to install, exits 2 and writes nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BLOCKED = ("import sys; sys.modules['torch'] = None; from edgeag.cli import main; "
           "sys.exit(main(sys.argv[1:]))")
"""``edgeag`` with torch blocked: ``python -c BLOCKED ARGS...``."""


def edgeag(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED, *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


TRAIN = ["train", "--env", "CartPole-v1", "--total-steps", "4096", "--set", "eval_episodes=2",
         "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A short CartPole run trained with torch blocked."""
    work = tmp_path_factory.mktemp("no-torch")
    proc = edgeag([*TRAIN, "--out", str(work / "run")], work)
    assert proc.returncode == 0, proc.stderr
    return work / "run"


def test_numpy_engine_trains_without_torch(run):
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "done" and summary["steps"] == 4096
    assert summary["final_eval_return"]["episodes"] == 2
    assert (run / "checkpoints" / "latest.safetensors").stat().st_size > 0
    assert 'engine = "numpy"' in (run / "config.toml").read_text()


def test_resume_without_torch_trains_on(run, tmp_path):
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    proc = edgeag(["train", "--resume", str(resumed), "--total-steps", "6144", "--no-progress"],
                  tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["stopped"] == "done" and summary["steps"] == 6144
    assert "resumed from" in proc.stderr


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["export", "--help"],
                                  ["compare", "--help"], ["profiles"], ["profiles", "rpi4"]],
                         ids=" ".join)
def test_help_and_profiles_work_without_torch(args, tmp_path):
    proc = edgeag(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout and not proc.stderr


@pytest.mark.parametrize("algo,env", [("dqn", "CartPole-v1"), ("td3", "Pendulum-v1"),
                                      ("sac", "Pendulum-v1")])
def test_dqn_and_td3_train_and_resume_without_torch(algo, env, tmp_path):
    """Off-policy runs on the numpy engine: trained, checkpointed with their replay
    buffer, resumed, with torch blocked."""
    run = tmp_path / "run"
    args = ["train", "--algo", algo, "--env", env, "--no-progress", "--set", "eval_episodes=1",
            "--set", "learning_starts=300", "--set", "iteration_steps=300",
            "--set", "hidden=[32, 32]"]
    proc = edgeag([*args, "--total-steps", "600", "--out", str(run)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (run / "checkpoints" / "replay-600.npy").is_file()
    assert 'engine = "numpy"' in (run / "config.toml").read_text()
    proc = edgeag(["train", "--resume", str(run), "--total-steps", "900", "--no-progress"],
                  tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["algo"] == algo and summary["steps"] == 900 and summary["stopped"] == "done"
    # Adam: two moments of every value and a step count per tensor (as torch's Adam):
    # 3 layers of 2 tensors per network, DQN's one network, TD3's actor and two critics,
    # SAC's too and its log_alpha
    tensors = {"dqn": 6, "td3": 18, "sac": 19}[algo]
    assert summary["optimizer_state_bytes"] == 2 * 4 * summary["parameter_count"] + 4 * tensors


TORCH = re.escape("pip install 'edgeag[torch]'")
REFUSALS = [
    ("train-engine-torch", ["train", "--engine", "torch"],
     rf"^--engine torch needs torch, which is not installed: {TORCH} "),
    ("train-set-engine-torch", ["train", "--set", "engine=torch"],
     rf"^--engine torch needs torch, which is not installed: {TORCH} "),
    ("train-torch-adam", ["train", "--optimizer", "torch-adam"],
     rf"^--optimizer torch-adam runs on the torch engine only and needs torch, which is not "
     rf"installed: {TORCH} \(alphagrad, adam and sgd train without it"),
    ("train-torch-adafactor", ["train", "--optimizer", "torch-adafactor"],
     rf"^--optimizer torch-adafactor runs on the torch engine only and needs torch.*{TORCH}"),
    ("train-lion", ["train", "--optimizer", "lion"],
     rf"^--optimizer lion runs on the torch engine only and needs torch and the lion-pytorch "
     rf"package, which are not installed: {TORCH} lion-pytorch"),
    ("train-dqn-engine-torch", ["train", "--algo", "dqn", "--engine", "torch"],
     rf"^--engine torch needs torch, which is not installed: {TORCH} "),
    ("train-dry-run-engine-torch", ["train", "--engine", "torch", "--dry-run"],
     r"^--engine torch needs torch"),
    ("compare-default-rows", ["compare", "--budget", "256MB"],
     r"^edgeag compare: rows 'alphagrad engine=torch', 'adam engine=torch', 'torch-adam', "
     r"'torch-adafactor', 'lion' train on the torch engine, which needs torch, not installed: "
     r"pip install 'edgeag\[report\]'"),
    ("compare-torch-row", ["compare", "--budget", "256MB", "--optimizers", "alphagrad,torch-adam"],
     r"^edgeag compare: row 'torch-adam' trains on the torch engine, which needs torch"),
    ("compare-capacity", ["compare", "--capacity"],
     r"^edgeag compare: rows 'alphagrad engine=torch', 'torch-adam' train on the torch engine"),
]


@pytest.mark.parametrize("name,args,pattern", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_what_needs_torch_says_so_in_one_line(name, args, pattern, tmp_path):
    out = tmp_path / "out"
    proc = edgeag([*args, "--out", str(out), "--no-progress"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeag: error: "), proc.stderr
    assert re.search(pattern, lines[0].removeprefix("edgeag: error: ")), lines[0]
    assert not out.exists() and not (tmp_path / "runs").exists() \
        and not (tmp_path / "results").exists()


def test_onnx_export_runs_without_torch(run, tmp_path):
    """``edgeag export`` (default format onnx), and ort and int8, with torch blocked: the
    policy is read, written, quantized, converted and verified without it."""
    out = tmp_path / "export"
    proc = edgeag(["export", str(run), "--out", str(out), "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["policy.json", "policy.onnx"]
    proc = edgeag(["export", str(run), "--format", "onnx,ort", "--quantize", "int8", "--out",
                   str(out), "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "policy.json").read_text())
    assert list(meta["artifacts"]) == ["policy.onnx", "policy.int8.onnx", "policy.ort"]
    assert meta["artifacts"]["policy.int8.onnx"]["verification"]["batch_1"]["agreement"] >= 0.95
    assert "torch" not in meta["versions"]
    ran = edgeag(["run", str(out / "policy.onnx"), "--episodes", "1"], tmp_path)
    assert ran.returncode == 0 and "env: CartPole-v1" in ran.stdout, ran.stderr


def test_pte_export_says_it_needs_torch_and_writes_nothing(run, tmp_path):
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    proc = edgeag(["export", str(run), "--format", "onnx,pte", "--no-progress"], tmp_path)
    assert proc.returncode == 2
    assert re.fullmatch(  # executorch too where it is not installed either
        r"edgeag: error: edgeag export --format pte needs torch( and executorch)?, which (is|are) "
        r"not installed here: phones get their \.pte from a machine with torch \(pip install "
        r"'edgeag\[export\]'\); onnx, ort and c export without torch\n", proc.stderr), proc.stderr
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_resuming_a_torch_engine_run_says_it_needs_torch(run, tmp_path):
    """A run whose config says it trains on the torch engine (made from the numpy run by
    editing its config) is refused before anything is read or written."""
    torch_run = tmp_path / "run"
    shutil.copytree(run, torch_run)
    config = torch_run / "config.toml"
    config.write_text(config.read_text().replace('engine = "numpy"', 'engine = "torch"'))
    before = {p: p.stat().st_mtime_ns for p in torch_run.rglob("*")}
    proc = edgeag(["train", "--resume", str(torch_run), "--total-steps", "8192",
                   "--no-progress"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (f"edgeag: error: cannot resume {torch_run}: it trains on the torch "
                           "engine (ppo with alphagrad), which needs torch, not installed here: "
                           "pip install 'edgeag[torch]'\n")
    assert {p: p.stat().st_mtime_ns for p in torch_run.rglob("*")} == before


def test_the_optimizer_registry_imports_no_torch_and_builds_where_it_runs():
    """`edgeag.optim` and its registry load without torch; each numpy implementation the
    registry names is the class that builds under that name."""
    code = ("import sys; from edgeag.optim import OPTIMIZERS, registry; "
            "from edgeag.optim import flat; "
            "from edgeag.engine import Layout; "
            "b = Layout.from_shapes([('w', (3, 2))]).zeros(); "
            "print([type(flat.build(n, b)).__name__ for n in registry.numpy_names()], "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["['AlphaGrad',", "'Adam',", "'SGD']", "False"]
