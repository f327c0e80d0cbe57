"""SAC: the numpy engine's hand-written squashed Gaussian, temperature and updates against
the torch engine's autograd in float64; a run stopped, saved, loaded and continued ends
bit for bit as the run that never stopped; the memory plan (parameters, gradients,
optimizer state with log_alpha's, targets, activations) as the networks hold it; the
exported policy is the numpy engine's deterministic action; learning on a small task;
bad input."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import toy_envs
from optional_torch import needs_torch, torch

import edgeag
from edgeag.algos.base import PlanInputs
from edgeag.algos.offpolicy.loop import mlp_activation_bytes, mlp_param_count
from edgeag.algos.sac import algorithm as sac
from edgeag.algos.sac.config import SACConfig
from edgeag.algos.sac.numpy_engine import NumpySACNetworks, SquashedGaussian, temperature_loss
from edgeag.cli import main
from edgeag.engine import update_path as engine_plan
from edgeag.errors import EdgeagError
from edgeag.memory import MiB
from edgeag.train import checkpoint
from edgeag.train.config import resolve_config
from edgeag.train.envs import make_vector_env
from edgeag.train.run import RunOptions, train
from edgeag.train.rundir import RunDir

toy_envs.register()

OPTIMIZERS = ["alphagrad", "alphagrad-momentum", "adam", "adam-clip", "sgd"]


def options(optimizer: str) -> dict:
    name = optimizer.split("-")[0]
    return dict(optimizer=name, momentum=0.9 if optimizer.endswith("momentum") else 0.0,
                max_grad_norm=0.5 if optimizer.endswith("clip") else 0.0,
                lr=1e-2 if name != "sgd" else 5e-2, alpha=4.0, seed=3, ent_coef_init=0.5)


def squashing_inputs(rng, n=64, a=2):
    """Actor outputs whose tanh saturates on some rows (where the correction's 1e-6
    matters) and whose log std crosses both clip bounds, with bounds of two widths."""
    out = rng.standard_normal((n, 2 * a)) * 3.0
    out[24:, a:] = np.clip(out[24:, a:], -5.0, 1.95)
    out[:8, :a] += 9.0                       # deep in tanh's saturation
    out[8:16, a:] = rng.uniform(-23.0, -19.0, (8, a))  # around LOG_STD_MIN, with means
    out[8:16, :a] *= 1e-3  # near 0: torch's (u - mean)^2 / var loses digits to large means
    out[16:24, a:] = rng.uniform(1.0, 3.0, (8, a))     # around LOG_STD_MAX
    return out, rng.standard_normal((n, a)), np.array([2.0, 0.25]), np.array([0.0, 0.25])


@needs_torch
def test_squashed_gaussian_and_its_backward_equal_autograd():
    """Action, log pi and d loss / d the actor's outputs for any upstream gradients,
    against `torch_engine.squashed_gaussian` (torch.distributions.Normal, clamp, tanh)."""
    from edgeag.algos.sac.torch_engine import squashed_gaussian

    rng = np.random.default_rng(0)
    out, eps, scale, bias = squashing_inputs(rng)
    g_action, g_log_prob = rng.standard_normal((64, 2)), rng.standard_normal(64)
    fast = SquashedGaussian(out, eps, scale, bias)
    t_out = torch.tensor(out, requires_grad=True)
    action, log_prob = squashed_gaussian(t_out, torch.tensor(eps), torch.tensor(scale),
                                         torch.tensor(bias))
    ((action * torch.tensor(g_action)).sum() + (log_prob * torch.tensor(g_log_prob)).sum()
     ).backward()
    np.testing.assert_allclose(fast.action, action.detach().numpy(), rtol=1e-12, atol=1e-15)
    # Where tanh saturates, 1 - t^2 (either engine's) turns the last bit of t into a relative
    # error of ~1e-16 / (1 - t^2): both engines' log pi and its gradient are that far from
    # the exact value (checked with mpmath: 1e-9 on the worst row here), in either direction.
    np.testing.assert_allclose(fast.log_prob, log_prob.detach().numpy(), rtol=1e-12, atol=5e-9)
    grad, expected = fast.backward(g_action, g_log_prob), t_out.grad.numpy()
    # At std = exp(-20) torch's gradient of the mean adds and cancels two terms of size
    # eps / std ~ 1e9 (the Normal's, through u and through the mean), losing ~1e-7; the
    # hand-written gradient has them cancelled exactly.
    tiny = np.zeros(len(out), bool)
    tiny[8:16] = True
    np.testing.assert_allclose(grad[~tiny], expected[~tiny], rtol=1e-9, atol=5e-9)
    np.testing.assert_allclose(grad[tiny], expected[tiny], rtol=1e-6, atol=1e-6)
    clipped = (out[:, 2:] < -20.0) | (out[:, 2:] > 2.0)
    assert clipped[8:16].any() and clipped[16:24].any() and not clipped[24:].any()
    assert not grad[:, 2:][clipped].any() and grad[:, 2:][~clipped].all()


@needs_torch
def test_temperature_loss_and_its_gradient_equal_autograd():
    """SB3's ``-(log_alpha * (log_prob + target_entropy).detach()).mean()``."""
    log_prob = np.random.default_rng(1).standard_normal(50) * 3.0
    loss, grad = temperature_loss(0.3, log_prob, -2.0)
    log_alpha = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    expected = -(log_alpha * (torch.tensor(log_prob) - 2.0).detach()).mean()
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-14)
    assert grad == pytest.approx(log_alpha.grad.item(), rel=1e-14)


def assert_same(numpy_arrays: dict, torch_arrays: dict, skip=("action_scale", "action_bias")):
    assert set(numpy_arrays) == set(torch_arrays) - set(skip)
    for name, expected in torch_arrays.items():
        if name not in skip:
            np.testing.assert_allclose(numpy_arrays[name], expected.detach().numpy(), rtol=1e-9,
                                       atol=1e-10, err_msg=name)


BIAS_SHIFT = [0.5, -0.5, 1.0, 1.0]


def twin_engines(cfg: SACConfig, low, high):
    """The torch engine's fresh float64 networks (the actor's last biases shifted: means
    off centre, stds of about 3), and the numpy engine holding the same arrays."""
    from edgeag.algos.sac.torch_engine import TorchSACNetworks

    ref = TorchSACNetworks(cfg, 5, 2, low, high, dtype=np.float64)
    with torch.no_grad():
        last = ref.nets["actor"].net[-1]
        last.bias += torch.tensor(BIAS_SHIFT, dtype=torch.float64)
    fast = NumpySACNetworks(cfg, 5, 2, low, high, dtype=np.float64, initialise=False)
    nets = {name: net.state_dict() for name, net in ref.nets.items()}
    fast.actor.load_arrays(fast.actor.params, {"actor": {
        k: v for k, v in nets["actor"].items() if k.startswith("net.")}})
    fast.critic.load_arrays(fast.critic.params, {n: nets[n] for n in ("qf1", "qf2")})
    fast.critic.load_arrays(fast.critic.target, {n: nets[f"{n}_target"] for n in ("qf1", "qf2")})
    fast.temperature.params.load_state_dict(nets["temperature"])
    return fast, ref


@needs_torch
@pytest.mark.parametrize("path", ["flat", "fused"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_sac_numpy_updates_equal_the_torch_textbook_updates(optimizer, path, monkeypatch):
    """Four gradient steps as `sac.learn` takes them (target from the next actions'
    samples, critics, actor, temperature; soft target updates every other step), each
    engine with its own alpha: the samples, targets, losses, log pi, every parameter and
    target, log_alpha and the optimizer state's size agree; the actor's step leaves the
    critics alone."""
    if path == "fused":  # treated as a large network: AlphaGrad steps inside backward
        monkeypatch.setattr(engine_plan, "FLAT_MAX_BYTES", 0)
    cfg = SACConfig(env_id="x", hidden=(24, 20), **options(optimizer))
    low, high = np.array([-2.0, 0.0]), np.array([2.0, 0.5])
    fast, ref = twin_engines(cfg, low, high)
    assert fast.actor.path.kind == ("flat" if path == "flat" or cfg.optimizer != "alphagrad"
                                    else "fused" if cfg.momentum else "factored")
    rng = np.random.default_rng(5)
    figures = {"numpy": [], "torch": []}
    for step in range(4):
        obs, next_obs = rng.standard_normal((32, 5)) * 2.0, rng.standard_normal((32, 5)) * 2.0
        actions = low + (high - low) * rng.random((32, 2))
        eps, next_eps = rng.standard_normal((32, 2)), rng.standard_normal((32, 2))
        rewards, terminated = rng.standard_normal(32), (rng.random(32) < 0.25).astype(float)
        assert fast.alpha == pytest.approx(ref.alpha, rel=1e-10)
        samples = {}
        for engine, nets in (("numpy", fast), ("torch", ref)):
            alpha = nets.alpha
            next_actions, next_log_prob = nets.sample(next_obs, next_eps)
            next_q = nets.target_q(next_obs, next_actions) - alpha * next_log_prob
            target = rewards + 0.9 * (1.0 - terminated) * next_q
            critic_loss, q1 = nets.update_critics(obs, actions, target)
            critics = fast.critic.params.data.copy() if engine == "numpy" else None
            actor_loss, log_prob = nets.update_actor(obs, eps, alpha)
            if critics is not None:
                np.testing.assert_array_equal(fast.critic.params.data, critics)
            ent_coef_loss = nets.update_temperature(log_prob, -2.0)
            if step % 2 == 0:
                nets.update_targets(0.3)
            figures[engine] += [critic_loss, q1, actor_loss, ent_coef_loss]
            samples[engine] = (next_actions, next_log_prob, target, log_prob)
        for got, expected in zip(samples["numpy"], samples["torch"]):  # values of order 1-10
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    state = fast.state_dict()["nets"]
    assert set(state) == set(ref.nets)
    for name, net in ref.nets.items():
        assert_same(state[name], net.state_dict())
    np.testing.assert_allclose(figures["numpy"], figures["torch"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(fast.deterministic(obs), ref.deterministic(obs), rtol=1e-9,
                               atol=1e-10)
    np.testing.assert_allclose(fast.sample_action(obs, eps), ref.sample_action(obs, eps),
                               rtol=1e-9, atol=1e-10)
    assert fast.optimizer_state_bytes() == ref.optimizer_state_bytes()
    assert fast.parameter_count == ref.parameter_count


@needs_torch
def test_engines_hold_the_same_architecture_and_policy_names():
    """Checkpoints of either engine export the same way: the same ``arch``, and the policy
    is the actor with the mean rows of its last layer."""
    from edgeag.algos.sac.torch_engine import TorchSACNetworks

    cfg = SACConfig(hidden=(8, 8))
    numpy_nets = NumpySACNetworks(cfg, 3, 2, -np.ones(2), np.ones(2))
    torch_nets = TorchSACNetworks(dataclasses.replace(cfg, engine="torch"), 3, 2, -np.ones(2),
                                  np.ones(2))
    assert numpy_nets.arch == torch_nets.arch
    assert numpy_nets.arch["kind"] == "squashed_gaussian_actor"
    for nets in (numpy_nets, torch_nets):
        ckpt = nets.state_dict()
        policy, actor = ckpt["policy"], ckpt["nets"]["actor"]
        assert sorted(policy) == [f"net.{i}.{k}" for i in (0, 2, 4) for k in ("bias", "weight")]
        assert tuple(policy["net.4.weight"].shape) == (2, 8)
        np.testing.assert_array_equal(np.asarray(policy["net.4.bias"]),
                                      np.asarray(actor["net.4.bias"])[:2])


# --- a run ---------------------------------------------------------------------------

FAST = dict(learning_starts=200, buffer_size=2000, batch_size=32, hidden=[16, 16],
            iteration_steps=250, eval_episodes=1, checkpoint_every=1, seed=3)


def arrays(tree, prefix="") -> dict:
    """Every array of a checkpoint's subtree, by path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in arrays(sub, f"{prefix}/{key}").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, sub in enumerate(tree) for k, v in arrays(sub, f"{prefix}/{i}").items()}
    return {prefix: np.asarray(tree)} if hasattr(tree, "shape") else {}


def final_state(run) -> dict:
    ckpt = checkpoint.load(run / "checkpoints" / "latest.safetensors")
    return arrays({"nets": ckpt["nets"], "optimizers": ckpt["optimizers"]})


def test_saved_loaded_and_continued_run_is_bit_identical_to_an_uninterrupted_one(tmp_path):
    """Stopped by a callback at 500 steps (a clean stop with a checkpoint and the replay
    buffer), saved, loaded as `edgeag.SAC` and continued to 1000 steps: every network,
    target, log_alpha and optimizer array equals the uninterrupted run's, as do its last
    metrics."""
    edgeag.SAC("Pendulum-v1", run_dir=tmp_path / "whole", **FAST).learn(1000)
    cut = edgeag.SAC("Pendulum-v1", run_dir=tmp_path / "cut", **FAST)
    cut.learn(1000, callback=lambda row: row["time/total_timesteps"] < 500)
    assert (cut.stopped, cut.num_timesteps) == ("callback", 500)
    saved = cut.save(tmp_path / "saved")
    model = edgeag.load(saved)
    assert isinstance(model, edgeag.SAC) and model.num_timesteps == 500
    model.learn(500, reset_num_timesteps=False)
    assert model.num_timesteps == 1000
    whole, cont = final_state(tmp_path / "whole"), final_state(saved)
    assert whole.keys() == cont.keys() and "/nets/temperature/log_alpha" in whole
    assert any(k.startswith("/optimizers/temperature/") for k in whole)
    assert all(np.array_equal(whole[k], cont[k]) for k in whole), \
        [k for k in whole if not np.array_equal(whole[k], cont[k])]

    def last_row(run):
        row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        return {k: v for k, v in row.items() if k.startswith(("train/", "rollout/"))}
    assert last_row(saved) == last_row(tmp_path / "whole")
    assert last_row(saved)["train/n_updates"] == 800


def test_sac_learns_the_continuous_identity_task(tmp_path):
    """The continuous identity task (reward -(action - target)^2, 20 steps an episode):
    random play scores about -13; SAC's deterministic action gets close."""
    cfg = SACConfig(env_id="edgeag-test/IdentityBox-v0", total_steps=1500, learning_starts=500,
                    train_frequency=2, buffer_size=5000, batch_size=64, lr=1e-3, gamma=0.0,
                    hidden=(32, 32), iteration_steps=500, eval_episodes=5,
                    checkpoint_every=1).validate()
    code, summary = train(cfg, RunDir(tmp_path / "run"), RunOptions(progress=False),
                          log=lambda _: None)
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert code == 0 and first["rollout/ep_rew_mean"] < -8
    assert summary["final_eval_return"]["mean"] > -1.0
    assert summary["parameter_count"] == (mlp_param_count([1, 32, 32, 2]) +
                                          2 * mlp_param_count([2, 32, 32, 1]) + 1)


# --- the plan ------------------------------------------------------------------------

def items_of(cfg, obs_dim=3, action_dim=1) -> dict:
    plan = sac.plan(cfg, PlanInputs(1 << 30, 200 * MiB, obs_dim, action_dim, False))
    return {i.name: i.nbytes for i in plan.items}


def test_plan_counts_parameters_gradients_optimizer_state_targets_and_activations():
    """Pendulum with SB3's defaults (256-256, batch 256) and Adam: the actor's 2 x
    action_dim outputs, two critics, log_alpha; Adam's two moments of every value and a
    step count per tensor (6 actor, 12 critic, 1 log_alpha); the target critics only; the
    larger step's activations."""
    cfg = SACConfig(optimizer="adam")
    actor, critic = mlp_param_count([3, 256, 256, 2]), mlp_param_count([4, 256, 256, 1])
    count = actor + 2 * critic + 1
    items = items_of(cfg)
    assert items["parameters"] == items["gradients"] == 4 * count
    assert items["optimizer state"] == 2 * 4 * count + 4 * (6 + 12 + 1)
    assert items["target networks"] == 4 * 2 * critic
    b = 256

    def mlp(sizes, backward=True):
        return mlp_activation_bytes(b, sizes, backward, 4)
    gaussian = sac.GAUSSIAN_ARRAYS * b * 1 * 4
    critic_step = 2 * mlp([4, 256, 256, 1]) + mlp([3, 256, 256, 2], False) + gaussian + \
        2 * mlp([4, 256, 256, 1], False)
    actor_step = mlp([3, 256, 256, 2]) + gaussian + 2 * mlp([4, 256, 256, 1])
    assert items["activations"] == max(critic_step, actor_step) == critic_step
    assert items_of(dataclasses.replace(cfg, optimizer="alphagrad"))["optimizer state"] == 0
    momentum = items_of(dataclasses.replace(cfg, optimizer="alphagrad", momentum=0.9))
    assert momentum["optimizer state"] == 4 * count  # log_alpha's momentum included
    # above FLAT_MAX_BYTES, AlphaGrad updates the networks inside backward (the largest
    # gradient of the actor's and of the critics' group); log_alpha keeps its one-value
    # gradient buffer
    wide = items_of(dataclasses.replace(cfg, optimizer="alphagrad", hidden=(1024, 1024)))
    assert wide["gradients"] == 2 * 4 * 1024 * 1024 + 4


@needs_torch
def test_the_torch_engines_plan_counts_the_same_values():
    cfg = SACConfig(engine="torch", optimizer="adam")
    numpy_items, torch_items = items_of(SACConfig(optimizer="adam")), items_of(cfg)
    for name in ("parameters", "gradients", "optimizer state", "target networks", "activations"):
        assert torch_items[name] == numpy_items[name], name
    fused = items_of(dataclasses.replace(cfg, optimizer="alphagrad"))
    assert fused["gradients"] == 4 * 256 * 256 and fused["optimizer state"] == 0


@pytest.mark.parametrize("optimizer,momentum", [("adam", 0.0), ("alphagrad", 0.9)])
def test_the_planned_optimizer_state_is_what_training_holds(optimizer, momentum):
    cfg = SACConfig(optimizer=optimizer, momentum=momentum, learning_starts=64,
                    iteration_steps=100, total_steps=100, hidden=(16, 8), batch_size=32,
                    buffer_size=1000).validate()
    state = sac.build_state(cfg, make_vector_env("Pendulum-v1", 1))
    sac.ALGORITHM.make_iteration(state)()
    assert state.n_updates == 36
    planned = items_of(cfg)
    assert state.nets.optimizer_state_bytes() == planned["optimizer state"] > 0
    assert 4 * state.nets.parameter_count == planned["parameters"]


def test_dry_run_prints_the_plan_of_the_preset(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--algo", "sac", "--dry-run"]) == 0
    err = capsys.readouterr().err
    cfg, origin = resolve_config(None, None, {}, "sac")
    assert origin == "preset Pendulum-v1.adam" and cfg.total_steps == 20_000
    for name, nbytes in items_of(cfg).items():
        if name not in ("floor", "allocator slack"):
            assert re.search(rf"^  {name} +[\d.]+ MiB +{nbytes:,} B", err, re.M), name
    assert list(tmp_path.iterdir()) == []


# --- export --------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["numpy", pytest.param("torch", marks=needs_torch)])
def test_onnx_export_is_the_engines_deterministic_action(engine, tmp_path):
    """`edgeag export` of a SAC run: the file verifies, policy.json names the actor's mean
    head, and on real Pendulum observations its action is the engine's ``tanh(mean)``
    scaled to the bounds."""
    ort = pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    assert main(["train", "--algo", "sac", "--engine", engine, "--total-steps", "500",
                 "--set", "learning_starts=250", "--set", "iteration_steps=250",
                 "--set", "hidden=[16, 16]", "--set", "eval_episodes=1", "--no-progress",
                 "--out", str(run)]) == 0
    assert main(["export", str(run), "--format", "onnx", "--no-progress"]) == 0
    meta = json.loads((run / "export" / "policy.json").read_text())
    assert meta["algorithm"] == "sac" and meta["network"]["layers"] == [3, 16, 16, 1]
    assert meta["contract"]["output"]["meaning"] == \
        "tanh of the Gaussian mean, scaled to the action bounds"
    assert meta["network"]["action_scale"] == [2.0] and meta["network"]["action_bias"] == [0.0]
    env = gym.make("Pendulum-v1")
    obs = [env.reset(seed=7)[0]]
    for _ in range(99):
        obs.append(env.step(env.action_space.sample())[0])
    obs = np.asarray(obs, np.float32)
    cfg = SACConfig(hidden=(16, 16), engine=engine)
    nets = sac.ALGORITHM.networks(cfg, env.observation_space, env.action_space)
    nets.load_state_dict(checkpoint.load(run / "checkpoints" / "latest.safetensors"))
    session = ort.InferenceSession(str(run / "export" / "policy.onnx"))
    exported = session.run(["action"], {"obs": obs})[0]
    np.testing.assert_allclose(exported, nets.deterministic(obs), rtol=1e-5, atol=1e-6)
    assert np.ptp(exported) > 0


# --- import weight and bad input -----------------------------------------------------------

def test_the_numpy_engines_sac_imports_no_torch():
    code = ("import sys; import edgeag.algos.sac.algorithm as a; "
            "a.build_nets(a.SACConfig(), 3, 1, [-2.0], [2.0]); "
            "import edgeag.algos.sac.numpy_engine; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("argv,message", [
    (["--set", "target_entropy=high"],
     r"invalid target_entropy 'high': expected auto \(-action_dim\) or a number such as -0.5$"),
    (["--set", "target_entropy=nan"], r"invalid target_entropy 'nan': expected auto"),
    (["--set", "ent_coef_init=0"],
     r"invalid ent_coef_init 0.0: expected a positive number \(the initial temperature\)$"),
    (["--set", "target_update_interval=0"],
     r"invalid target_update_interval 0: expected a positive integer$"),
    (["--set", "policy_noise=0.2"], r"unknown setting 'policy_noise' \(accepted: env_id.*ent_coef_init"),
    (["--env", "CartPole-v1"], r"action space Discrete\(2\): sac accepts a bounded"),
    (["--total-steps", "100"], r"invalid total_steps 100: expected more than learning_starts \(100\)"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    code = main(["train", "--algo", "sac", "--out", str(out), "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("edgeag: error: ") and re.search(message, err[-1]), err
    assert "Traceback" not in "\n".join(err) and not out.exists()


def test_the_api_takes_target_entropy_as_sb3_does():
    """``"auto"`` (-action_dim) or a number; the config keeps it as text."""
    assert edgeag.SAC("Pendulum-v1").cfg.entropy_target(3) == -3.0
    model = edgeag.SAC("Pendulum-v1", target_entropy=-0.5)
    assert model.cfg.target_entropy == "-0.5" and model.cfg.entropy_target(1) == -0.5
    with pytest.raises(EdgeagError, match=r"^invalid target_entropy 'inf': expected auto"):
        edgeag.SAC("Pendulum-v1", target_entropy=float("inf"))


def test_predict_samples_the_squashed_gaussian_unless_deterministic(tmp_path):
    """As SB3's SAC: ``deterministic=True`` is the tanh of the mean (the same action every
    call, the export's), ``deterministic=False`` a sample inside the bounds."""
    model = edgeag.SAC("Pendulum-v1", run_dir=tmp_path / "run", **FAST).learn(300)
    obs = np.tile(np.array([1.0, 0.0, 0.0], np.float32), (64, 1))
    mean, _ = model.predict(obs)
    assert np.array_equal(mean, model.predict(obs)[0]) and np.ptp(mean) < 1e-6
    sampled, _ = model.predict(obs, deterministic=False)
    assert sampled.shape == (64, 1) and np.all(np.abs(sampled) <= 2.0)
    assert np.ptp(sampled) > 0.1  # a distribution, not the mean repeated
