"""The native runner (native/pte_runner: ExecuTorch's C++ runtime, as a phone runs a
.pte), built once for this module by the code `make native` runs: actions equal to the
numpy reference for PPO (discrete and continuous), DQN and TD3 policies, fp32 and int8,
at batch 1 and in batches, through both of its modes; `edgeag run --native`; `edgeag
export` recording its verification in policy.json; bad input as one line and exit 2.
Where CMake >= 3.28, a C++ compiler or the executorch wheel's SDK is missing, the tests
that need the runner are skipped with the reason."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeag.cli import main
from edgeag.errors import EdgeagError
from edgeag.export import native
from edgeag.export.policy import load_run, record_observations
from edgeag.export.verify import TOLERANCES


@pytest.fixture(scope="module")
def runner() -> Path:
    """The runner in its default place (native/build/), built or brought up to date."""
    try:
        native.toolchain()
    except EdgeagError as e:
        pytest.skip(f"the native runner cannot be built here: {e}")
    return native.build(log=lambda _: None)


def _trained(tmp_path_factory, name: str, env: str, steps: int, *args: str) -> Path:
    """A short run exported to policy.pte and policy.int8.pte (verified, natively too)."""
    pytest.importorskip("torch", reason="exporting a .pte needs torch: pip install "
                        "'edgeag[export]'")
    run = tmp_path_factory.mktemp(name) / "run"
    assert main(["train", "--env", env, "--total-steps", str(steps), "--out", str(run),
                 "--no-progress", "--set", "eval_episodes=0", *args]) == 0
    assert main(["export", str(run), "--format", "pte", "--quantize", "int8",
                 "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def cartpole(runner, tmp_path_factory) -> Path:
    return _trained(tmp_path_factory, "cartpole", "CartPole-v1", 4096)


@pytest.fixture(scope="module")
def pendulum(runner, tmp_path_factory) -> Path:
    return _trained(tmp_path_factory, "pendulum", "Pendulum-v1", 2048)


@pytest.fixture(scope="module")
def dqn(runner, tmp_path_factory) -> Path:
    return _trained(tmp_path_factory, "dqn", "CartPole-v1", 2000, "--algo", "dqn",
                    "--set", "learning_starts=500")


@pytest.fixture(scope="module")
def td3(runner, tmp_path_factory) -> Path:
    return _trained(tmp_path_factory, "td3", "Pendulum-v1", 1200, "--algo", "td3",
                    "--set", "learning_starts=500")


RUNS = ["cartpole", "pendulum", "dqn", "td3"]
FILES = ["policy.pte", "policy.int8.pte"]


def _precision(file: str) -> str:
    return "int8" if ".int8." in file else "fp32"


def _within_tolerance(actions, expected, spec, precision) -> bool:
    if spec.discrete:
        tolerance = TOLERANCES[("discrete", precision)]["min_agreement"]
        return (actions == expected).mean() >= tolerance
    span = spec.action_high.astype(np.float64) - spec.action_low
    tolerance = TOLERANCES[("continuous", precision)]["max_error_fraction_of_range"]
    return (np.abs(actions.astype(np.float64) - expected) / span).max() <= tolerance


def test_the_runner_finds_the_wheels_libraries_without_ld_library_path(runner, cartpole):
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    proc = subprocess.run([str(runner), str(cartpole / "export" / "policy.pte"), "--stdio"],
                          input="0 0 0 0\n", capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    header, action, figures = proc.stdout.splitlines()
    assert json.loads(header)["obs_dim"] == 4 and action in ("0", "1")
    assert json.loads(figures)["observations"] == 1
    assert proc.stderr == ""  # cpuinfo's and ExecuTorch's logs held back


@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("name", RUNS)
def test_native_actions_match_the_reference_and_the_python_runtime(request, name, file):
    """Fresh env observations at batch 1, 7 and 256: within the export's tolerance of
    `PolicySpec.forward`, and the very actions ExecuTorch's Python runtime gives (the
    same kernels); dtype and shape as the contract says."""
    from edgeag.export.runner import PtePolicy

    run = request.getfixturevalue(name)
    trained = load_run(run)
    spec = trained.spec
    obs, _ = record_observations(spec, trained.config["env_id"], count=256, seed=123)
    expected = spec.forward(obs)
    pte = run / "export" / file
    python = PtePolicy(pte)(obs)
    for batch in (1, 7, 256):
        actions, figures = native.run_batch(pte, obs, batch)
        assert actions.dtype == expected.dtype and actions.shape == expected.shape, batch
        assert _within_tolerance(actions, expected, spec, _precision(file)), batch
        if batch == 256:
            assert np.array_equal(actions, python)
        assert figures["batch"] == batch and figures["calls"] == -(-256 // batch)
        assert figures["runtime"].startswith("executorch 1.5.1") and "C++" in figures["runtime"]
        assert figures["median_latency_us"] > 0 and figures["obs_dim"] == obs.shape[1]
        # a process of ExecuTorch's C++ libraries alone: no Python, no torch
        assert 0 < figures["peak_rss_bytes"] < 32 * 2**20


@pytest.mark.parametrize("name,file", [("cartpole", "policy.pte"), ("td3", "policy.int8.pte"),
                                       ("pendulum", "policy.pte")])
def test_line_mode_gives_the_actions_of_file_mode(request, name, file):
    """`NativePolicy.act` (one observation per line) against the .npy mode at batch 1:
    the same actions, continuous ones to the bit (printed with 9 significant digits)."""
    run = request.getfixturevalue(name)
    trained = load_run(run)
    obs, _ = record_observations(trained.spec, trained.config["env_id"], count=64, seed=7)
    pte = run / "export" / file
    actions, _ = native.run_batch(pte, obs, 1)
    policy = native.NativePolicy(pte)
    assert policy.obs_dim == obs.shape[1] and policy.discrete == trained.spec.discrete
    got = [policy.act(o) for o in obs]
    figures = policy.close()
    if trained.spec.discrete:
        assert all(type(a) is int for a in got) and got == actions.tolist()
    else:
        assert np.array_equal(np.stack(got), actions) and np.stack(got).dtype == np.float32
    assert figures["observations"] == 64 and figures["calls"] == 64


@pytest.mark.parametrize("name", RUNS)
def test_export_records_the_native_verification(request, name):
    run = request.getfixturevalue(name)
    meta = json.loads((run / "export" / "policy.json").read_text())
    discrete = meta["action_space"]["type"] == "Discrete"
    for file in FILES:
        figures = meta["artifacts"][file]["verification"]
        ours = figures["native"]
        assert ours["verified"] is True and "C++" in ours["runtime"]
        assert ours["observations"] == figures["observations"] >= 1000
        assert ours["tolerance"] == figures["tolerance"]
        for mode in ("batch_1", "batched"):
            if discrete:
                assert ours[mode]["agreement"] >= ours["tolerance"]["min_agreement"]
            else:
                assert ours[mode]["max_error_fraction_of_range"] <= \
                    ours["tolerance"]["max_error_fraction_of_range"]
        if not discrete:
            assert ours["max_abs_error"] == max(ours[m]["max_abs_error"]
                                                for m in ("batch_1", "batched"))
            if _precision(file) == "fp32":
                assert ours["max_abs_error"] <= 1e-5
        assert ours["latency_us"] > 0 and ours["load_ms"] > 0
        assert 0 < ours["peak_rss_bytes"] < 32 * 2**20


@pytest.mark.parametrize("name", ["cartpole", "pendulum"])
def test_edgeag_run_native_gives_the_returns_of_edgeag_run(request, name, tmp_path, capsys):
    """The same episodes as `edgeag run` on ExecuTorch's Python runtime (the same
    actions), with the runner's own latency and peak RSS in the report."""
    pte = str(request.getfixturevalue(name) / "export" / "policy.pte")
    assert main(["run", pte, "--native", "--episodes", "2", "--json",
                 str(tmp_path / "native.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.match(r"policy: .*policy.pte \(executorch 1\.5\.1\S* C\+\+ \(pte_runner\), 1 "
                    r"thread\(s\)\)$", lines[0]), lines
    assert re.match(r"per-action latency: median \d+\.\d us \(p90 \d+\.\d us\)", lines[3])
    assert re.match(r"peak RSS: \d+\.\d MiB \([\d,]+ bytes, VmHWM of the runner\)$", lines[4])
    assert re.match(r"through the pipe from Python: median \d+\.\d us per action; Python's "
                    r"peak RSS \d+\.\d MiB$", lines[5])
    ours = json.loads((tmp_path / "native.json").read_text())
    assert main(["run", pte, "--episodes", "2", "--json", str(tmp_path / "python.json")]) == 0
    theirs = json.loads((tmp_path / "python.json").read_text())
    assert ours["returns"] == theirs["returns"] and ours["actions"] == theirs["actions"]
    assert ours["native"]["observations"] == ours["actions"]
    assert ours["median_latency_us"] == ours["native"]["median_latency_us"] > 0
    assert ours["round_trip_median_latency_us"] > ours["median_latency_us"]
    assert ours["peak_rss_bytes"] < 32 * 2**20 < theirs["peak_rss_bytes"]


def test_export_without_the_runner_records_that_it_is_not_built(cartpole, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.setenv(native.BUILD_ENV, str(tmp_path / "empty"))
    out = tmp_path / "export"
    assert main(["export", str(cartpole), "--format", "pte", "--out", str(out),
                 "--no-progress"]) == 0
    meta = json.loads((out / "policy.json").read_text())
    assert meta["artifacts"]["policy.pte"]["verification"]["native"] == {
        "verified": False, "reason": "not built: make native"}
    assert "native: NOT verified: not built: make native" in capsys.readouterr().err


# --- bad input: one line, exit 2 ------------------------------------------------------------

def _one_line_error(capsys, code: int, message: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("edgeag: error: ") and re.search(message, err[0]), err


def test_run_native_without_the_runner_says_make_native(cartpole, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(native.BUILD_ENV, str(tmp_path / "empty"))
    code = main(["run", str(cartpole / "export" / "policy.pte"), "--native"])
    _one_line_error(capsys, code, r"the native runner is not built \(.*empty/pte_runner\): run "
                                  r"make native")


@pytest.mark.parametrize("argv,message", [
    (lambda r, t: [str(t / "junk.pte"), "--env", "CartPole-v1"],
     r"cannot load .*junk.pte: Error::InvalidProgram \(Program identifier '.*' != expected "
     r"'ET12'\)$"),
    (lambda r, t: [str(r / "export" / "policy.pte"), "--env", "Pendulum-v1"],
     r"the policy takes observations of 4 values, env 'Pendulum-v1' gives shape \(3,\)"),
    (lambda r, t: [str(t / "policy.onnx"), "--env", "CartPole-v1"],
     r"--native runs .pte files on ExecuTorch's C\+\+ runtime, not .onnx"),
    (lambda r, t: [str(t / "missing.pte"), "--env", "CartPole-v1"], r"no policy file at .*missing.pte"),
])
def test_run_native_bad_input_exits_2_with_one_line(cartpole, tmp_path, capsys, argv, message):
    (tmp_path / "junk.pte").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "policy.onnx").write_bytes(b"not used")
    code = main(["run", *argv(cartpole, tmp_path), "--native", "--episodes", "1"])
    _one_line_error(capsys, code, message)


def test_a_garbage_pte_fails_the_file_mode_with_one_line(runner, tmp_path):
    junk = tmp_path / "junk.pte"
    junk.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(EdgeagError, match=r"^cannot load .*junk.pte: Error::InvalidProgram"):
        native.run_batch(junk, np.zeros((3, 4), np.float32))
    proc = subprocess.run([str(runner), str(junk), "--obs", "x.npy", "--out", "y.npy"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: cannot load ")


BUILD = [sys.executable, "-m", "edgeag.export.native"]


def _build_fails(argv: list[str], env_update: dict, message: str, tmp_path: Path) -> None:
    env = {**os.environ, **env_update}
    proc = subprocess.run([*BUILD, "--build-dir", str(tmp_path / "build"), *argv],
                          capture_output=True, text=True, env=env)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(err) == 1 and re.search(message, err[0]), err
    assert "Traceback" not in proc.stderr and not (tmp_path / "build" / "pte_runner").exists()


@pytest.mark.parametrize("argv,env", [(["--sdk", "/nonexistent/sdk"], {}),
                                      ([], {native.SDK_ENV: "/nonexistent/sdk"})],
                         ids=["option", "env"])
def test_build_without_an_sdk_exits_2_with_one_line(argv, env, tmp_path):
    _build_fails(argv, env, r"^error: no ExecuTorch C\+\+ SDK at /nonexistent/sdk: it has no "
                 r"lib/cmake/executorch/executorch-config.cmake", tmp_path)


def test_build_without_a_compiler_exits_2_with_one_line(tmp_path):
    try:
        native.find_sdk()
    except EdgeagError as e:
        pytest.skip(f"the SDK is checked first: {e}")
    _build_fails([], {"CXX": "/nonexistent/c++"},
                 r"^error: no C\+\+ compiler: CXX=/nonexistent/c\+\+ is not an executable$",
                 tmp_path)


def test_build_against_an_sdk_without_libraries_exits_2_with_cmakes_error(runner, tmp_path):
    """An SDK directory whose package config defines nothing: CMake's own error, as one
    line, and where its whole output went."""
    config = tmp_path / "sdk" / "lib" / "cmake" / "executorch" / "executorch-config.cmake"
    config.parent.mkdir(parents=True)
    config.write_text('set(executorch_FOUND FALSE)\nset(executorch_NOT_FOUND_MESSAGE '
                      '"no libraries here")\n')
    _build_fails(["--sdk", str(tmp_path / "sdk")], {},
                 r"^error: cannot build the native runner: configure failed: .*no libraries here"
                 r".* \(the whole output: .*build.log\)$", tmp_path)
