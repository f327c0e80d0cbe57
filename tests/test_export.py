"""`edgeag export` and `edgeag run`: verified artifacts from real trained policies, the
export wrapper equal to evaluation, failures that publish nothing, a torch-free runner."""

import json
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeag.cli import main
from edgeag.export.build import default_formats
from edgeag.export.policy import load_run, record_observations
from edgeag.train.envs import ObsNormalizer, evaluate

REPO = Path(__file__).resolve().parents[1]


def _train(out: Path, env: str, steps: int) -> Path:
    code = main(["train", "--env", env, "--total-steps", str(steps), "--out", str(out),
                 "--no-progress", "--set", "eval_episodes=0"])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def cartpole(tmp_path_factory) -> Path:
    """A CartPole policy trained for 4096 steps, exported to every format with int8."""
    run = _train(tmp_path_factory.mktemp("cartpole") / "run", "CartPole-v1", 4096)
    assert main(["export", str(run), "--format", "onnx,ort,pte", "--quantize", "int8",
                 "--no-progress"]) == 0
    return run


@pytest.fixture(scope="session")
def pendulum(tmp_path_factory) -> Path:
    """A barely trained Pendulum policy (continuous actions), exported to onnx and pte
    with int8."""
    run = _train(tmp_path_factory.mktemp("pendulum") / "run", "Pendulum-v1", 2048)
    assert main(["export", str(run), "--format", "onnx,pte", "--quantize", "int8",
                 "--no-progress"]) == 0
    return run


EXPECTED = {
    "cartpole": ["policy.onnx", "policy.int8.onnx", "policy.ort", "policy.pte", "policy.int8.pte"],
    "pendulum": ["policy.onnx", "policy.int8.onnx", "policy.pte", "policy.int8.pte"],
}


@pytest.mark.parametrize("name", ["cartpole", "pendulum"])
def test_export_writes_verified_artifacts_and_metadata(request, name):
    run = request.getfixturevalue(name)
    out = run / "export"
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED[name] + ["policy.json"])
    meta = json.loads((out / "policy.json").read_text())
    assert list(meta["artifacts"]) == EXPECTED[name]
    discrete = name == "cartpole"
    assert meta["env_id"] == ("CartPole-v1" if discrete else "Pendulum-v1")
    assert meta["contract"]["output"]["dtype"] == ("int64" if discrete else "float32")
    assert meta["algorithm"] == "ppo" and meta["optimizer"]["optimizer"] == "alphagrad"
    assert meta["training"]["checkpoint_step"] == meta["training"]["steps"] > 0
    assert meta["normalization"]["enabled"] and len(meta["normalization"]["mean"]) == (4 if discrete else 3)
    assert meta["versions"]["torch"].startswith("2.13.0") and meta["versions"]["onnxruntime"]
    recorded = meta["verification"]["observations"]
    assert recorded["count"] >= 1000 and recorded["policy_steps"] > 0 and recorded["explore_steps"] > 0
    for file, art in meta["artifacts"].items():
        assert art["sha256"] == hashlib.sha256((out / file).read_bytes()).hexdigest()
        assert art["bytes"] == (out / file).stat().st_size
        figures = art["verification"]
        assert figures["observations"] == recorded["count"]
        for mode in ("batch_1", "batched"):
            if discrete:
                assert figures[mode]["agreement"] >= figures["tolerance"]["min_agreement"]
            else:
                assert figures[mode]["max_error_fraction_of_range"] <= \
                    figures["tolerance"]["max_error_fraction_of_range"]
        if art["precision"] == "fp32" and discrete:
            assert figures["batch_1"]["agreement"] >= 0.999
    assert meta["artifacts"]["policy.onnx"]["opset"] == 18


def test_onnx_is_one_self_contained_file_that_passes_the_checker(cartpole):
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(cartpole / "export" / "policy.onnx"), load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    assert not any(uses_external_data(t) for t in model.graph.initializer)
    assert [i.name for i in model.graph.input] == ["obs"]
    assert [o.name for o in model.graph.output] == ["action"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 4  # dynamic batch, obs_dim 4


def _recorded(run: Path):
    trained = load_run(run)
    policy = trained.export_policy()
    obs, _ = record_observations(policy, trained.config["env_id"], count=256, seed=123)
    return trained, policy, obs


@pytest.mark.parametrize("name", ["cartpole", "pendulum"])
def test_artifacts_match_pytorch_through_the_plain_runtime_apis(request, name):
    """Checked here without edgeag's runner or verifier: onnxruntime's and ExecuTorch's
    own Python APIs on fresh env observations, several batch sizes."""
    import onnxruntime as ort
    from executorch.runtime import Runtime

    run = request.getfixturevalue(name)
    _, policy, obs = _recorded(run)
    with torch.no_grad():
        expected = policy(torch.from_numpy(obs)).numpy()
    onnx = ort.InferenceSession(str(run / "export" / "policy.onnx"), providers=["CPUExecutionProvider"])
    pte = Runtime.get().load_program(run / "export" / "policy.pte").load_method("forward")
    for batch in (1, 7, 256):
        got_onnx = np.concatenate([onnx.run(None, {"obs": obs[i:i + batch]})[0]
                                   for i in range(0, len(obs), batch)])
        got_pte = np.concatenate([pte.execute((torch.from_numpy(obs[i:i + batch]),))[0].numpy()
                                  for i in range(0, len(obs), batch)])
        for got in (got_onnx, got_pte):
            assert got.dtype == expected.dtype and got.shape == expected.shape
            if name == "cartpole":
                assert (got == expected).mean() >= 0.999
            else:
                np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["cartpole", "pendulum"])
def test_export_wrapper_in_eager_mode_equals_evaluate(request, name):
    """The wrapper's action is the action `evaluate` takes: on recorded observations,
    and over whole episodes (same returns)."""
    trained, policy, obs = _recorded(request.getfixturevalue(name))
    norm = ObsNormalizer(obs.shape[1:], enabled=trained.config["norm_obs"])
    norm.load(trained.obs_norm)
    discrete = trained.discrete
    low = None if discrete else trained.action_space.low
    high = None if discrete else trained.action_space.high
    with torch.no_grad():
        theirs = trained.policy.deterministic(torch.as_tensor(norm(obs.astype(np.float64)))).numpy()
        ours = policy(torch.from_numpy(obs)).numpy()
    if discrete:
        assert np.array_equal(ours, theirs)
    else:
        np.testing.assert_allclose(ours, np.clip(theirs, low, high), rtol=0, atol=1e-6)

    def act(x):
        with torch.no_grad():
            return trained.policy.deterministic(torch.as_tensor(x, dtype=torch.float32)).numpy()
    returns = evaluate(act, trained.config["env_id"], norm, 3, 77, low, high)
    import gymnasium as gym
    env = gym.make(trained.config["env_id"])
    mine = []
    for episode in range(3):
        o, _ = env.reset(seed=77 + episode)
        total, done = 0.0, False
        while not done:
            with torch.no_grad():
                a = policy(torch.as_tensor(o, dtype=torch.float32)[None])[0].numpy()
            o, r, terminated, truncated, _ = env.step(a)
            total += float(r)
            done = terminated or truncated
        mine.append(total)
    assert mine == pytest.approx(returns, rel=1e-6)


# --- failures publish nothing -----------------------------------------------------------

def _corrupt_onnx(path: Path) -> None:
    """Push the last layer's bias far apart: the policy always picks action 0."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    bias = [t for t in model.graph.initializer if numpy_helper.to_array(t).shape == (2,)][-1]
    bias.CopyFrom(numpy_helper.from_array(np.array([100.0, -100.0], np.float32), bias.name))
    onnx.save(model, str(path))


def test_corrupted_onnx_fails_with_exit_4_and_removes_the_previous_export(cartpole, tmp_path,
                                                                          monkeypatch, capsys):
    import edgeag.export.onnx as onnx_export

    out = tmp_path / "export"
    shutil.copytree(cartpole / "export", out)  # a previous, valid export in the same place
    real = onnx_export.export_onnx

    def corrupted(module, obs_dim, path):
        info = real(module, obs_dim, path)
        _corrupt_onnx(path)
        return info

    monkeypatch.setattr(onnx_export, "export_onnx", corrupted)
    code = main(["export", str(cartpole), "--format", "onnx", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4
    assert re.match(r"edgeag: error: policy.onnx failed verification \(batch_1\): same action on "
                    r"\d+\.\d+% of 1024 observations, needs 99.9%; worst mismatch: observation #\d+ "
                    r"\[.*\] gave action 0, PyTorch 1 \(logit margin .*\)", err[-1]), err
    assert "Traceback" not in "\n".join(err)
    assert not (out / "policy.onnx").exists() and not (out / "policy.json").exists()
    assert not list(out.glob(".export-*"))
    # the previous export's other files are no longer claimed by any policy.json
    assert (out / "policy.pte").exists()


def test_corrupted_pte_fails_with_exit_4_naming_the_worst_action(pendulum, tmp_path, monkeypatch,
                                                                 capsys):
    import edgeag.export.executorch as et_export

    real = et_export.export_pte

    def corrupted(module, obs_dim, path, calibration=None):
        bad = type(module)(module.actor, module.discrete, module.obs_mean.numpy(),
                           (module.obs_std.numpy() ** 2), module.action_low.numpy(),
                           module.action_high.numpy())
        with torch.no_grad():
            bad.actor[-1].bias += 0.5
        return real(bad, obs_dim, path, calibration)

    monkeypatch.setattr(et_export, "export_pte", corrupted)
    out = tmp_path / "export"
    code = main(["export", str(pendulum), "--format", "pte", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4
    assert re.search(r"policy.pte failed verification \(batch_1\): action error up to .* of the "
                     r"action range, tolerance 0.0001; worst mismatch: observation #\d+", err[-1]), err
    assert sorted(p.name for p in out.iterdir()) == []


def test_unloadable_artifact_fails_with_exit_4(cartpole, tmp_path, monkeypatch, capsys):
    import edgeag.export.onnx as onnx_export

    def garbage(module, obs_dim, path):
        path.write_bytes(b"\x00not an onnx model" * 10)
        return {"opset": 18}

    monkeypatch.setattr(onnx_export, "export_onnx", garbage)
    out = tmp_path / "export"
    assert main(["export", str(cartpole), "--format", "onnx", "--out", str(out), "--no-progress"]) == 4
    assert "policy.onnx failed verification: its runtime cannot load it" in capsys.readouterr().err
    assert list(out.iterdir()) == []


# --- bad input: exit 2, one line, nothing written --------------------------------------

def _no_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("[ppo]\n")
    return [str(run)]


@pytest.mark.parametrize("make_argv,message", [
    (lambda t: [str(t / "nope")], r"cannot export: no run directory at .*nope"),
    (_no_checkpoint, r"cannot export: .*run has no checkpoint \(checkpoints/latest.safetensors\); train it first"),
    (lambda t: ["RUN", "--format", "onnx,tflite"], r"unknown format 'tflite' \(accepted: a comma-separated list of onnx, ort, pte\)"),
    (lambda t: ["RUN", "--quantize", "int4"], r"argument --quantize: invalid choice: 'int4'"),
    (lambda t: ["RUN", "--out", str(t / "file" / "export")], r"cannot write to the output directory .*file/export"),
])
def test_export_bad_input_exits_2_with_one_line(cartpole, tmp_path, capsys, make_argv, message):
    (tmp_path / "file").write_text("a file, not a directory")
    argv = [str(cartpole) if a == "RUN" else a for a in make_argv(tmp_path)]
    before = sorted(p.name for p in (cartpole / "export").iterdir())
    code = main(["export", *argv, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("edgeag: error: ") and re.search(message, err[0]), err
    assert sorted(p.name for p in (cartpole / "export").iterdir()) == before
    assert (tmp_path / "file").read_text() == "a file, not a directory"


def test_export_help_states_the_verification_tolerances():
    from edgeag.cli import EXPORT_EPILOG
    from edgeag.export.verify import TOLERANCES

    text = " ".join(EXPORT_EPILOG.split())
    d32, d8 = TOLERANCES[("discrete", "fp32")], TOLERANCES[("discrete", "int8")]
    c32, c8 = TOLERANCES[("continuous", "fp32")], TOLERANCES[("continuous", "int8")]
    assert (f"discrete actions equal on >= {d32['min_agreement']:.1%} (int8: >= "
            f"{d8['min_agreement']:.0%}), continuous actions within "
            f"{c32['max_error_fraction_of_range']:.0e}".replace("e-04", "e-4") +
            f" (int8: {c8['max_error_fraction_of_range']:.0%}) of the action range") in text


def test_default_formats_come_from_the_runs_device_profile(tmp_path):
    (tmp_path / "config.toml").write_text('[ppo]\n[run]\nprofile = "iphone"\n')
    assert default_formats(tmp_path, print)[0] == ["pte", "ort"]
    (tmp_path / "config.toml").write_text('[ppo]\n[run]\nprofile = ""\n')
    assert default_formats(tmp_path, print)[0] == ["onnx"]


# --- the runner ---------------------------------------------------------------------------

def test_edgeag_run_process_never_imports_torch(cartpole, tmp_path):
    """A real `edgeag run` process on an .onnx: torch is never in sys.modules."""
    result = tmp_path / "result.json"
    code = ("import sys; from edgeag.cli import main; "
            f"rc = main(['run', {str(cartpole / 'export' / 'policy.onnx')!r}, '--episodes', '2', "
            f"'--json', {str(result)!r}]); "
            "print(rc, sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "0 []", out.stdout + out.stderr
    assert re.match(r"mean return: \d+\.\d \+- \d+\.\d", lines[2])
    assert re.match(r"per-action latency: median \d+\.\d us", lines[3])
    assert re.match(r"peak RSS: \d+\.\d MiB", lines[4])
    data = json.loads(result.read_text())
    assert data["env"] == "CartPole-v1"  # from policy.json beside the file
    assert len(data["returns"]) == 2 and data["actions"] == sum(data["returns"])
    assert data["mean_return"] == pytest.approx(np.mean(data["returns"]))
    assert data["std_return"] == pytest.approx(np.std(data["returns"]))
    assert data["peak_rss_bytes"] > 0 and data["median_latency_us"] > 0


def test_runner_file_runs_alone_without_edgeag(cartpole, tmp_path):
    """edgeag/export/runner.py copied to a device: no edgeag, no torch; same returns as
    `edgeag run` and as the standalone example that knows nothing of edgeag."""
    runner = tmp_path / "runner.py"
    shutil.copy(REPO / "edgeag" / "export" / "runner.py", runner)
    policy = str(cartpole / "export" / "policy.onnx")
    code = ("import runpy, sys; sys.modules['edgeag'] = None; "
            f"sys.argv = ['runner.py', {policy!r}, '--env', 'CartPole-v1', '--episodes', '3', "
            f"'--json', {str(tmp_path / 'r.json')!r}]; "
            "rc = 0\n"
            "try:\n"
            f"    runpy.run_path({str(runner)!r}, run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    rc = e.code\n"
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == "0 False", out.stdout + out.stderr
    alone = json.loads((tmp_path / "r.json").read_text())["returns"]
    example = subprocess.run([sys.executable, str(REPO / "examples" / "onnx_cartpole.py"), policy, "3"],
                             capture_output=True, text=True, check=True).stdout
    assert f"mean return over 3 episodes: {np.mean(alone):.1f}" in example


@pytest.mark.parametrize("name", ["cartpole", "pendulum"])
def test_per_action_path_equals_the_runtimes_plain_call(request, name):
    """`act` (I/O binding, preallocated buffers) against `__call__` (`session.run` /
    `Method.execute`), one observation at a time, for every file of the export."""
    from edgeag.export.runner import load_policy

    run = request.getfixturevalue(name)
    _, _, obs = _recorded(run)
    for file in EXPECTED[name]:
        policy = load_policy(run / "export" / file)
        for o in obs:
            fast, ref = policy.act(o), policy(o[None])[0]
            if name == "cartpole":
                assert type(fast) is int and fast == ref, file
            else:
                assert fast.dtype == ref.dtype and np.array_equal(fast, ref), file


def test_runner_quantile_matches_numpy():
    from edgeag.export.runner import _quantile

    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 1000):
        values = sorted(rng.integers(0, 10**6, n).tolist())
        for q in (0.0, 0.5, 0.9, 1.0):
            assert _quantile(values, q) == pytest.approx(np.percentile(values, 100 * q))


def test_runner_runs_a_pte_and_the_int8_files(cartpole, capsys):
    for name in ("policy.pte", "policy.int8.onnx", "policy.ort"):
        assert main(["run", str(cartpole / "export" / name), "--episodes", "1"]) == 0
        out = capsys.readouterr().out
        assert "mean return: " in out and ("executorch" in out) == (name == "policy.pte")


@pytest.mark.parametrize("argv,message", [
    (lambda r, t: [str(t / "policy.tflite")], r"unknown policy file type '.tflite' \(accepted: .onnx, .ort, .pte\)"),
    (lambda r, t: [str(t / "missing.onnx"), "--env", "CartPole-v1"], r"no policy file at .*missing.onnx"),
    (lambda r, t: [str(t / "junk.onnx"), "--env", "CartPole-v1"], r"cannot load .*junk.onnx: "),
    (lambda r, t: [str(t / "junk.onnx")], r"--env is needed: no readable policy.json beside"),
    (lambda r, t: [str(r / "export" / "policy.onnx"), "--env", "Pendulum-v1"],
     r"the policy takes observations of 4 values, env 'Pendulum-v1' gives shape \(3,\)"),
    (lambda r, t: [str(r / "export" / "policy.onnx"), "--env", "Nope-v0"], r"unknown env 'Nope-v0'"),
    (lambda r, t: [str(r / "export" / "policy.onnx"), "--episodes", "0"], r"invalid --episodes 0"),
])
def test_run_bad_input_exits_2_with_one_line(cartpole, tmp_path, capsys, argv, message):
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    code = main(["run", *argv(cartpole, tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("edgeag: error: ") and re.search(message, err[0]), err
