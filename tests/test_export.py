"""`edgeag export` and `edgeag run`: verified artifacts from real trained PPO, DQN and TD3
policies, the numpy reference equal to the training-side policy and to evaluation, an
ONNX export that never imports torch, failures that publish nothing, a torch-free
runner."""

import dataclasses
import hashlib
import json
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


def _train(out: Path, env: str, steps: int, *args: str, eval_episodes: int = 0) -> Path:
    code = main(["train", "--env", env, "--total-steps", str(steps), "--out", str(out),
                 "--no-progress", "--set", f"eval_episodes={eval_episodes}", *args])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def cartpole(tmp_path_factory) -> Path:
    """A CartPole PPO policy trained for 4096 steps, exported to every format with int8."""
    run = _train(tmp_path_factory.mktemp("cartpole") / "run", "CartPole-v1", 4096)
    assert main(["export", str(run), "--format", "onnx,ort,pte", "--quantize", "int8",
                 "--no-progress"]) == 0
    return run


@pytest.fixture(scope="session")
def pendulum(tmp_path_factory) -> Path:
    """A barely trained Pendulum PPO policy (continuous actions, 3 final evaluation
    episodes), exported to onnx and pte with int8."""
    run = _train(tmp_path_factory.mktemp("pendulum") / "run", "Pendulum-v1", 2048,
                 eval_episodes=3)
    assert main(["export", str(run), "--format", "onnx,pte", "--quantize", "int8",
                 "--no-progress"]) == 0
    return run


@pytest.fixture(scope="session")
def dqn(tmp_path_factory) -> Path:
    """A short DQN CartPole run (torch engine: its checkpoint holds torch tensors, 3 final
    evaluation episodes), exported to onnx and pte with int8."""
    run = _train(tmp_path_factory.mktemp("dqn") / "run", "CartPole-v1", 2000, "--algo", "dqn",
                 "--set", "learning_starts=500", eval_episodes=3)
    assert main(["export", str(run), "--format", "onnx,pte", "--quantize", "int8",
                 "--no-progress"]) == 0
    return run


@pytest.fixture(scope="session")
def td3(tmp_path_factory) -> Path:
    """A short TD3 Pendulum run (3 final evaluation episodes), exported to onnx and pte
    with int8."""
    run = _train(tmp_path_factory.mktemp("td3") / "run", "Pendulum-v1", 1200, "--algo", "td3",
                 "--set", "learning_starts=500", eval_episodes=3)
    assert main(["export", str(run), "--format", "onnx,pte", "--quantize", "int8",
                 "--no-progress"]) == 0
    return run


RUNS = ["cartpole", "pendulum", "dqn", "td3"]
EXPECTED = {
    "cartpole": ["policy.onnx", "policy.int8.onnx", "policy.ort", "policy.pte", "policy.int8.pte"],
    "pendulum": ["policy.onnx", "policy.int8.onnx", "policy.pte", "policy.int8.pte"],
    "dqn": ["policy.onnx", "policy.int8.onnx", "policy.pte", "policy.int8.pte"],
    "td3": ["policy.onnx", "policy.int8.onnx", "policy.pte", "policy.int8.pte"],
}
ALGORITHM = {"cartpole": "ppo", "pendulum": "ppo", "dqn": "dqn", "td3": "td3"}
DISCRETE = {"cartpole": True, "pendulum": False, "dqn": True, "td3": False}
NETWORK = {  # layers, activation, head
    "cartpole": ([4, 64, 64, 2], "tanh", "argmax of logits"),
    "pendulum": ([3, 64, 64, 1], "tanh", "Gaussian mean clipped to the action bounds"),
    "dqn": ([4, 120, 84, 2], "relu", "argmax of Q"),
    "td3": ([3, 256, 256, 1], "relu", "tanh scaled to the action bounds"),
}


@pytest.mark.parametrize("name", RUNS)
def test_export_writes_verified_artifacts_and_metadata(request, name):
    run = request.getfixturevalue(name)
    out = run / "export"
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED[name] + ["policy.json"])
    meta = json.loads((out / "policy.json").read_text())
    assert list(meta["artifacts"]) == EXPECTED[name]
    discrete, algo = DISCRETE[name], ALGORITHM[name]
    layers, activation, head = NETWORK[name]
    assert meta["format_version"] == 2
    assert meta["env_id"] == ("CartPole-v1" if discrete else "Pendulum-v1")
    assert meta["algorithm"] == algo
    assert meta["network"] == {"layers": layers, "activation": activation, "head": head,
                               "hidden": layers[1:-1],
                               **({"action_scale": [2.0], "action_bias": [0.0]} if algo == "td3"
                                  else {})}
    output = meta["contract"]["output"]
    assert output["dtype"] == ("int64" if discrete else "float32") and output["meaning"] == head
    assert output["shape"] == (["batch"] if discrete else ["batch", 1])
    assert meta["optimizer"]["optimizer"] == ("alphagrad" if algo == "ppo" else "adam")
    assert meta["training"]["checkpoint_step"] == meta["training"]["steps"] > 0
    assert meta["training"]["final_eval_seed"] == meta["training"]["seed"] + 10_000
    if algo == "ppo":
        norm = meta["normalization"]
        assert norm["enabled"] and len(norm["mean"]) == len(norm["var"]) == (4 if discrete else 3)
        assert meta["contract"]["inside"].startswith("observation normalisation")
    else:
        assert meta["normalization"]["enabled"] is False
        assert not {"mean", "var", "count"} & set(meta["normalization"])
        assert "normalisation" not in meta["contract"]["inside"]
    assert meta["versions"]["torch"].startswith("2.13.0") and meta["versions"]["onnxruntime"]
    assert "onnxscript" not in meta["versions"]
    recorded = meta["verification"]["observations"]
    # the run's own training observations, read from the checkpoint: the env is not stepped
    num_envs = load_run(run).config["num_envs"]
    assert recorded == {"source": "training", "count": 1024, "checkpoint_step": meta["training"]["steps"],
                        "seen": meta["training"]["steps"] + num_envs}
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
        if art["precision"] == "fp32" and not discrete:
            assert figures["batch_1"]["max_error_fraction_of_range"] <= 1e-6
    assert meta["artifacts"]["policy.onnx"]["opset"] == 18
    assert meta["artifacts"]["policy.onnx"]["ir_version"] == 8


ONNX_OPS = {"Sub", "Div", "Clip", "Gemm", "Tanh", "Relu", "ArgMax", "Max", "Min", "Mul", "Add"}


@pytest.mark.parametrize("name", RUNS)
def test_onnx_is_one_self_contained_file_that_passes_the_checker(request, name):
    import onnx
    from onnx.external_data_helper import uses_external_data

    run = request.getfixturevalue(name)
    model = onnx.load(str(run / "export" / "policy.onnx"), load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    assert not any(uses_external_data(t) for t in model.graph.initializer)
    assert [i.name for i in model.graph.input] == ["obs"]
    assert [o.name for o in model.graph.output] == ["action"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == NETWORK[name][0][0]
    ops = [n.op_type for n in model.graph.node]
    assert set(ops) <= ONNX_OPS and ops.count("Gemm") == 3
    assert ("Clip" in ops) == (ALGORITHM[name] == "ppo")  # normalisation: PPO only
    assert ("ArgMax" in ops) == DISCRETE[name]


def _recorded(run: Path, count: int = 256):
    trained = load_run(run)
    obs, _ = record_observations(trained.spec, trained.config["env_id"], count=count, seed=123)
    return trained, trained.spec, obs


@pytest.mark.parametrize("name", RUNS)
def test_artifacts_match_the_numpy_reference_through_the_plain_runtime_apis(request, name):
    """Checked here without edgeag's runner or verifier: onnxruntime's and ExecuTorch's
    own Python APIs on fresh env observations, several batch sizes."""
    import onnxruntime as ort
    from executorch.runtime import Runtime

    run = request.getfixturevalue(name)
    _, spec, obs = _recorded(run)
    expected = spec.forward(obs)
    onnx = ort.InferenceSession(str(run / "export" / "policy.onnx"), providers=["CPUExecutionProvider"])
    pte = Runtime.get().load_program(run / "export" / "policy.pte").load_method("forward")
    for batch in (1, 7, 256):
        got_onnx = np.concatenate([onnx.run(None, {"obs": obs[i:i + batch]})[0]
                                   for i in range(0, len(obs), batch)])
        got_pte = np.concatenate([pte.execute((torch.from_numpy(obs[i:i + batch]),))[0].numpy()
                                  for i in range(0, len(obs), batch)])
        for got in (got_onnx, got_pte):
            assert got.dtype == expected.dtype and got.shape == expected.shape
            if DISCRETE[name]:
                assert (got == expected).mean() >= 0.999
            else:
                np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", RUNS)
def test_onnx_graph_equals_the_numpy_reference_in_fp32(request, name):
    """Per head: the graph's last-layer output (an extra graph output on the same nodes)
    within fp32 rounding of `PolicySpec.outputs`, and its actions equal to
    `PolicySpec.forward` (discrete: wherever the top two outputs are apart by more than
    rounding)."""
    import onnx
    import onnxruntime as ort

    from edgeag.export.onnx import build_onnx

    _, spec, obs = _recorded(request.getfixturevalue(name), count=1024)
    model = build_onnx(spec)
    last = f"layer{len(spec.layers) - 1}"
    model.graph.output.append(onnx.helper.make_tensor_value_info(last, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    actions, outputs = session.run(["action", last], {"obs": obs})
    ref = spec.outputs(obs)
    np.testing.assert_allclose(outputs, ref, rtol=1e-5, atol=1e-5)
    expected = spec.apply_head(ref)
    assert actions.dtype == expected.dtype and actions.shape == expected.shape
    if spec.discrete:
        top2 = np.sort(ref, axis=-1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-4
        assert clear.mean() > 0.9 and np.array_equal(actions[clear], expected[clear])
    else:
        np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-6)
        assert (actions >= spec.action_low).all() and (actions <= spec.action_high).all()


def _training_policy(trained, name):
    """The training side's own policy on the checkpoint's arrays: ``act(normalised obs)``
    -> the action `evaluate` clips, and for PPO the numpy engine's too."""
    from edgeag.algos.dqn.torch_engine import QNetwork
    from edgeag.algos.ppo.torch_engine import ActorCritic
    from edgeag.algos.td3.torch_engine import DeterministicActor
    from edgeag.train import checkpoint

    ckpt = checkpoint.load(trained.path / "checkpoints" / "latest.safetensors")
    arch = ckpt["arch"]
    cls = {"ppo": ActorCritic, "dqn": QNetwork, "td3": DeterministicActor}[ALGORITHM[name]]
    net = cls.from_arch(arch)
    # a numpy-engine TD3 checkpoint holds the actor's weights; its bounds are in arch
    loaded = net.load_state_dict({k: torch.as_tensor(v) for k, v in ckpt["policy"].items()},
                                 strict=False)
    assert not loaded.unexpected_keys
    assert set(loaded.missing_keys) <= {"action_scale", "action_bias"}
    net.eval()

    def torch_act(x):
        with torch.no_grad():
            return net.deterministic(torch.as_tensor(x, dtype=torch.float32)).numpy()
    acts = {"torch": torch_act}
    if ALGORITHM[name] == "ppo":
        from edgeag.algos.ppo.numpy_engine import NumpyActorCritic
        from edgeag.train.config import config_from_dict

        cfg = config_from_dict(ckpt["config"], "checkpoint", "ppo")
        numpy_policy = NumpyActorCritic(cfg, arch["obs_dim"], arch["action_dim"], arch["discrete"],
                                        initialise=False)
        numpy_policy.params.load_state_dict(ckpt["policy"])
        acts["numpy engine"] = lambda x: numpy_policy.deterministic(np.asarray(x, np.float32))
    elif ckpt.get("engine") == "numpy":
        from edgeag.algos.dqn.numpy_engine import NumpyQNetworks
        from edgeag.algos.td3.numpy_engine import NumpyTD3Networks
        from edgeag.train.config import config_from_dict

        algo = ALGORITHM[name]
        cfg = config_from_dict(ckpt["config"], "checkpoint", algo)
        if algo == "dqn":
            nets = NumpyQNetworks(cfg, arch["obs_dim"], arch["action_dim"], initialise=False)
            nets.group.load_arrays(nets.group.params, {"q": ckpt["policy"]})
        else:
            nets = NumpyTD3Networks(cfg, arch["obs_dim"], arch["action_dim"], arch["low"],
                                    arch["high"], initialise=False)
            nets.actor.load_arrays(nets.actor.params, {"actor": ckpt["policy"]})
        acts["numpy engine"] = lambda x: nets.deterministic(np.asarray(x, np.float32))
    return acts


@pytest.mark.parametrize("name", RUNS)
def test_numpy_reference_equals_the_training_policy_and_evaluate(request, name):
    """`PolicySpec.forward` takes the action the training side's policy takes (torch
    `ActorCritic` / `QNetwork` / `DeterministicActor`, and PPO's numpy engine) on the
    same arrays: on recorded observations, and over whole episodes of `evaluate` (same
    returns). The torch module built for .pte (`ExportPolicy`) equals it too."""
    from edgeag.export.executorch import ExportPolicy

    trained, spec, obs = _recorded(request.getfixturevalue(name))
    norm = ObsNormalizer(obs.shape[1:], enabled=spec.normalize)
    if spec.normalize:
        norm.load(trained.obs_norm)
    low = None if spec.discrete else trained.action_space.low
    high = None if spec.discrete else trained.action_space.high
    ours = spec.forward(obs)
    with torch.no_grad():
        module = ExportPolicy(spec).eval()(torch.from_numpy(obs)).numpy()
    for engine, act in _training_policy(trained, name).items():
        theirs = np.asarray(act(norm(obs.astype(np.float64))))
        if spec.discrete:
            assert np.array_equal(ours, theirs), engine
        else:
            np.testing.assert_allclose(ours, np.clip(theirs, low, high), rtol=0, atol=2e-6,
                                       err_msg=engine)
    if spec.discrete:
        assert np.array_equal(module, ours)
    else:
        np.testing.assert_allclose(module, ours, rtol=0, atol=1e-6)

    returns = evaluate(_training_policy(trained, name)["torch"], trained.config["env_id"], norm,
                       2, 77, low, high)
    import gymnasium as gym
    env = gym.make(trained.config["env_id"])
    mine = []
    for episode in range(2):
        o, _ = env.reset(seed=77 + episode)
        total, done = 0.0, False
        while not done:
            o, r, terminated, truncated, _ = env.step(spec.forward(np.asarray(o, np.float32)[None])[0])
            total += float(r)
            done = terminated or truncated
        mine.append(total)
    # float32 against float64 actions (2e-6 apart above) through 200 closed-loop steps
    assert mine == pytest.approx(returns, rel=1e-4)


REPLAY = r"""
# Replays a run's final evaluation through policy.onnx, knowing only the documented
# contract: onnxruntime, gymnasium and policy.json.
import json, sys
import gymnasium as gym
import numpy as np
import onnxruntime as ort

folder = sys.argv[1]
meta = json.load(open(f"{folder}/policy.json"))
session = ort.InferenceSession(f"{folder}/policy.onnx", providers=["CPUExecutionProvider"])
env = gym.make(meta["env_id"])
seed, episodes = meta["training"]["final_eval_seed"], meta["training"]["final_eval_return"]["episodes"]
returns = []
for episode in range(episodes):
    obs, _ = env.reset(seed=seed + episode)
    total, done = 0.0, False
    while not done:
        action = session.run(["action"], {"obs": np.asarray(obs, np.float32)[None]})[0][0]
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        done = terminated or truncated
    returns.append(total)
print(json.dumps({"returns": returns, "torch": "torch" in sys.modules}))
"""


@pytest.mark.parametrize("name", ["pendulum", "dqn", "td3"])
def test_a_contract_only_program_replays_the_runs_final_evaluation(request, name, tmp_path):
    """A program that knows only policy.json's contract (no edgeag, no torch) gets from
    policy.onnx the returns of the run's own final evaluation episodes (summary.json)."""
    run = request.getfixturevalue(name)
    script = tmp_path / "replay.py"
    script.write_text(REPLAY)
    out = subprocess.run([sys.executable, str(script), str(run / "export")], capture_output=True,
                         text=True, check=True, cwd=tmp_path)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())["final_eval_return"]
    assert not got["torch"] and len(summary["returns"]) == 3
    assert got["returns"] == pytest.approx(summary["returns"], rel=1e-4)


NO_TORCH_EXPORT = ("import sys; from edgeag.cli import main; rc = main(sys.argv[1:]); "
                   "print(rc, sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])")


@pytest.fixture(scope="session")
def torch_engine_ppo(tmp_path_factory) -> Path:
    """A short PPO run on the torch engine (its checkpoint holds torch tensors)."""
    return _train(tmp_path_factory.mktemp("ppo-torch") / "run", "CartPole-v1", 1024,
                  "--engine", "torch")


@pytest.mark.parametrize("name", ["cartpole", "pendulum", "dqn", "td3", "torch_engine_ppo"])
def test_onnx_and_ort_export_process_never_imports_torch(request, name, tmp_path):
    """A real `edgeag export --format onnx,ort --quantize int8` process, on runs of
    either engine: torch is never in sys.modules, and the files verify."""
    run = request.getfixturevalue(name)
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_EXPORT, "export", str(run), "--format",
                           "onnx,ort", "--quantize", "int8", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True)
    assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stdout + proc.stderr
    meta = json.loads((out / "policy.json").read_text())
    assert list(meta["artifacts"]) == ["policy.onnx", "policy.int8.onnx", "policy.ort"]
    assert "torch" not in meta["versions"] and "executorch" not in meta["versions"]


@pytest.mark.parametrize("name", ["dqn", "td3"])
def test_edgeag_run_runs_off_policy_exports(request, name, capsys):
    """`edgeag run RUN/export/policy.onnx` (env from policy.json) for DQN and TD3."""
    run = request.getfixturevalue(name)
    for file in ("policy.onnx", "policy.int8.onnx"):
        assert main(["run", str(run / "export" / file), "--episodes", "2"]) == 0
        out = capsys.readouterr().out
        assert f"env: {'CartPole-v1' if name == 'dqn' else 'Pendulum-v1'}, 2 episode(s)" in out
        assert "mean return: " in out


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

    def corrupted(spec, path, ctx=None):
        info = real(spec, path, ctx)
        _corrupt_onnx(path)
        return info

    monkeypatch.setattr(onnx_export, "export_onnx", corrupted)
    code = main(["export", str(cartpole), "--format", "onnx", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4
    assert re.match(r"edgeag: error: policy.onnx failed verification \(batch_1\): same action on "
                    r"\d+\.\d+% of 1024 observations, needs 99.9%; worst mismatch: observation #\d+ "
                    r"\[.*\] gave action 0, the reference 1 \(logit margin .*\)", err[-1]), err
    assert "Traceback" not in "\n".join(err)
    assert not (out / "policy.onnx").exists() and not (out / "policy.json").exists()
    assert not list(out.glob(".export-*"))
    # the previous export's other files are no longer claimed by any policy.json
    assert (out / "policy.pte").exists()


def test_corrupted_pte_fails_with_exit_4_naming_the_worst_action(pendulum, tmp_path, monkeypatch,
                                                                 capsys):
    import edgeag.export.executorch as et_export

    real = et_export.export_pte

    def corrupted(spec, path, ctx=None):
        weight, bias = spec.layers[-1]
        bad = dataclasses.replace(spec, layers=(*spec.layers[:-1], (weight, bias + 0.5)))
        return real(bad, path, ctx)

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

    def garbage(spec, path, ctx=None):
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
    (lambda t: ["RUN", "--format", "onnx,tflite"], r"unknown format 'tflite' \(accepted: a comma-separated list of onnx, ort, pte, c\)"),
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


def _damaged(run: Path, where: Path, damage) -> Path:
    """A copy of ``run`` whose checkpoint state went through ``damage(state)``."""
    from edgeag.train import checkpoint
    from edgeag.train.rundir import RunDir

    shutil.copytree(run, where, ignore=shutil.ignore_patterns("export"))
    state = checkpoint.load(where / "checkpoints" / "latest.safetensors")
    damage(state)
    RunDir(where).save_checkpoint(state)
    return where


def _drop_actor(state):
    for key in [k for k in state["policy"] if k.startswith("actor.")]:
        del state["policy"][key]


DAMAGE = [
    ("no-actor", _drop_actor, r"cannot export: .*latest.safetensors lacks the policy \(no "
     r"actor\.\*\.weight arrays\)$"),
    ("unknown-kind", lambda s: s["arch"].update(kind="rnn"),
     r"lacks the policy \(unknown arch kind 'rnn' \(accepted: none for ppo, 'q', "
     r"'deterministic_actor', 'squashed_gaussian_actor'\)\)$"),
    ("missing-layer", lambda s: s["policy"].pop("actor.2.weight"),
     r"lacks the policy \(layers actor\.0, actor\.4; the arch \[4, 64, 64, 2\] needs "
     r"actor\.0, actor\.2, actor\.4\)$"),
    ("wrong-shape", lambda s: s["policy"].update({"actor.4.bias": np.zeros(3, np.float32)}),
     r"lacks the policy \(actor\.4 has weight \[2, 64\] and bias \[3\]; the arch .* needs "
     r"\[2, 64\] and \[2\]\)$"),
    ("no-obs-norm", lambda s: s.pop("obs_norm"),
     r"lacks the policy \(norm_obs is on but there are no obs_norm mean and var\)$"),
    ("kind-of-another-algo", lambda s: s["arch"].update(kind="q"),
     r"is a ppo run whose arch is dqn's \(arch kind 'q'\)$"),
]


@pytest.mark.parametrize("case,damage,message", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_checkpoint_without_a_policy_exits_2_with_one_line(cartpole, tmp_path, capsys, case,
                                                             damage, message):
    run = _damaged(cartpole, tmp_path / case, damage)
    code = main(["export", str(run), "--format", "onnx", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("edgeag: error: ") and re.search(message, err[0]), err
    assert not (run / "export").exists()


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


@pytest.mark.parametrize("name", RUNS)
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
            if DISCRETE[name]:
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
