"""DQN's and TD3's two engines against each other in float64: the numpy engine's
hand-written TD-loss gradients, backward through the critic to the action and flat
buffers (`edgeag.algos.dqn.numpy_engine`, `edgeag.algos.td3.numpy_engine`) against the torch
engine's textbook autograd updates (`dqn_torch`, `td3_torch`, `edgeag.optim`,
AlphaGrad fused into backward by its hooks), for every optimizer both engines run."""

import dataclasses

import numpy as np
import pytest
import torch

from edgeag.algos.dqn.algorithm import td_loss
from edgeag.algos.dqn.config import DQNConfig
from edgeag.algos.dqn.numpy_engine import NumpyQNetworks
from edgeag.algos.dqn.torch_engine import TorchQNetworks
from edgeag.algos.offpolicy.numpy_engine import soft_update_
from edgeag.algos.td3.config import TD3Config
from edgeag.algos.td3.numpy_engine import NumpyTD3Networks
from edgeag.algos.td3.torch_engine import TorchTD3Networks
from edgeag.engine import update_path as engine_plan

OPTIMIZERS = ["alphagrad", "alphagrad-momentum", "alphagrad-sqrt_numel", "adam", "adam-clip",
              "sgd", "sgd-momentum"]


def options(optimizer: str) -> dict:
    name = optimizer.split("-")[0]
    return dict(optimizer=name, momentum=0.9 if optimizer.endswith("momentum") else 0.0,
                max_grad_norm=0.5 if optimizer.endswith("clip") else 0.0,
                alpha_scale="sqrt_numel" if optimizer.endswith("sqrt_numel") else "none",
                lr=1e-2 if name != "sgd" else 5e-2, alpha=4.0, seed=3)


def assert_same(numpy_arrays: dict, torch_arrays: dict, skip=()) -> None:
    for name, expected in torch_arrays.items():
        if name in skip:
            continue
        np.testing.assert_allclose(numpy_arrays[name], expected.detach().numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=name)


@pytest.mark.parametrize("path", ["flat", "fused"])
@pytest.mark.parametrize("loss", ["mse", "huber"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_dqn_numpy_update_equals_the_torch_textbook_update(optimizer, loss, path, monkeypatch):
    """Six TD steps on minibatches with errors inside and outside Huber's [-1, 1], soft
    and hard target updates: parameters, targets, losses and Q-values agree."""
    if path == "fused":  # treated as a large network: AlphaGrad steps inside backward
        monkeypatch.setattr(engine_plan, "FLAT_MAX_BYTES", 0)
    cfg = DQNConfig(env_id="x", hidden=(24, 20), td_loss=loss, **options(optimizer))
    ref = TorchQNetworks(cfg, 5, 3, dtype=np.float64)
    fast = NumpyQNetworks(cfg, 5, 3, dtype=np.float64, initialise=False)
    fast.group.load_arrays(fast.group.params, {"q": ref.q.state_dict()})
    fast.group.load_arrays(fast.group.target, {"q": ref.q_target.state_dict()})
    expected_kind = "flat" if path == "flat" or cfg.optimizer != "alphagrad" else \
        "fused" if cfg.momentum else "factored"
    assert fast.group.path.kind == expected_kind
    rng = np.random.default_rng(4)
    figures = {"numpy": [], "torch": []}
    for _step, tau in enumerate((0.3, 0.7, 1.0, 0.3, 0.7, 1.0)):
        obs = rng.standard_normal((32, 5))
        actions = rng.integers(3, size=32)
        target = fast.target_q_values(obs).max(-1) + 2.0 * rng.standard_normal(32)
        np.testing.assert_allclose(fast.target_q_values(obs), ref.target_q_values(obs),
                                   rtol=1e-10)
        for engine, nets in (("numpy", fast), ("torch", ref)):
            figures[engine].append(nets.update(obs, actions, target))
            nets.update_target(tau)
    assert_same(fast.state_dict()["nets"]["q"], ref.q.state_dict())
    assert_same(fast.state_dict()["nets"]["q_target"], ref.q_target.state_dict())
    np.testing.assert_allclose(figures["numpy"], figures["torch"], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(fast.deterministic(obs), ref.deterministic(obs))
    assert fast.optimizer_state_bytes() == ref.optimizer_state_bytes()


@pytest.mark.parametrize("path", ["flat", "fused"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_td3_numpy_updates_equal_the_torch_textbook_updates(optimizer, path, monkeypatch):
    """Critic steps every time, actor steps and soft target updates every other time, on
    actions with bounds of two widths: parameters of all six networks, the target
    action and Q, the losses agree. The actor's gradient goes through critic 1 to the
    action; the critics' parameters must not move in the actor's step."""
    if path == "fused":
        monkeypatch.setattr(engine_plan, "FLAT_MAX_BYTES", 0)
    cfg = TD3Config(env_id="x", hidden=(24, 20), **options(optimizer))
    low, high = np.array([-2.0, 0.0]), np.array([2.0, 0.5])
    ref = TorchTD3Networks(cfg, 5, 2, low, high, dtype=np.float64)
    fast = NumpyTD3Networks(cfg, 5, 2, low, high, dtype=np.float64, initialise=False)
    torch_nets = {name: net.state_dict() for name, net in ref.nets.items()}
    drop = ("action_scale", "action_bias")
    for group, names in ((fast.actor, ("actor",)), (fast.critic, ("qf1", "qf2"))):
        for buffer, suffix in ((group.params, ""), (group.target, "_target")):
            group.load_arrays(buffer, {n: {k: v for k, v in torch_nets[n + suffix].items()
                                           if k not in drop} for n in names})
    rng = np.random.default_rng(5)
    figures = {"numpy": [], "torch": []}
    for step in range(6):
        obs = rng.standard_normal((32, 5))
        actions = low + (high - low) * rng.random((32, 2))
        np.testing.assert_allclose(fast.target_action(obs), ref.target_action(obs), rtol=1e-10)
        np.testing.assert_allclose(fast.target_q(obs, actions), ref.target_q(obs, actions),
                                   rtol=1e-10)
        target = fast.target_q(obs, actions) + rng.standard_normal(32)
        for engine, nets in (("numpy", fast), ("torch", ref)):
            figures[engine].append(nets.update_critics(obs, actions, target))
            if step % 2 == 1:
                critic_before = {k: v.copy() for k, v in
                                 nets.state_dict()["nets"]["qf1"].items()} \
                    if engine == "numpy" else None
                figures[engine].append((nets.update_actor(obs), 0.0))
                if critic_before is not None:
                    for k, v in fast.state_dict()["nets"]["qf1"].items():
                        np.testing.assert_array_equal(v, critic_before[k])
                nets.update_targets(0.3 if step < 3 else 0.7)
    state = fast.state_dict()["nets"]
    for name, net in ref.nets.items():
        assert_same(state[name], net.state_dict(), skip=drop)
    np.testing.assert_allclose(figures["numpy"], figures["torch"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast.deterministic(obs), ref.deterministic(obs), rtol=1e-10)
    assert fast.optimizer_state_bytes() == ref.optimizer_state_bytes()


@pytest.mark.parametrize("kind", ["mse", "huber"])
def test_td_loss_and_its_gradient_equal_autograd(kind):
    diff = np.array([-3.0, -1.0, -0.4, 0.0, 0.5, 1.0, 2.5])
    loss, grad = td_loss(kind, diff)
    q = torch.tensor(diff, requires_grad=True)
    fn = torch.nn.functional.mse_loss if kind == "mse" else torch.nn.functional.smooth_l1_loss
    expected = fn(q, torch.zeros_like(q))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-15)
    np.testing.assert_allclose(grad, q.grad.numpy(), rtol=1e-15)


@pytest.mark.parametrize("tau", [0.0, 0.005, 0.3, 0.5, 0.7, 1.0])
def test_soft_update_equals_torch_lerp(tau):
    """torch's lerp, to the rounding of a fused multiply-add (its vector kernel fuses)."""
    rng = np.random.default_rng(0)
    target, online = rng.standard_normal(1000), rng.standard_normal(1000)
    expected = torch.tensor(target).lerp_(torch.tensor(online), tau).numpy()
    soft_update_(target, online, tau)
    np.testing.assert_allclose(target, expected, rtol=4e-16, atol=4e-16)


def test_engines_hold_the_same_architecture_and_names():
    """Checkpoints of either engine export the same way: the same ``arch`` and policy
    array names."""
    for cfg, make in ((DQNConfig(env_id="x", hidden=(8,)), lambda c, e: e(c, 4, 2)),
                      (TD3Config(env_id="x", hidden=(8, 8)),
                       lambda c, e: e(c, 3, 1, np.array([-2.0]), np.array([2.0])))):
        numpy_nets = make(cfg, NumpyQNetworks if isinstance(cfg, DQNConfig) else NumpyTD3Networks)
        torch_nets = make(dataclasses.replace(cfg, engine="torch"),
                          TorchQNetworks if isinstance(cfg, DQNConfig) else TorchTD3Networks)
        assert numpy_nets.arch == torch_nets.arch
        torch_names = set(torch_nets.state_dict()["policy"]) - {"action_scale", "action_bias"}
        assert set(numpy_nets.state_dict()["policy"]) == torch_names
        assert numpy_nets.parameter_count == torch_nets.parameter_count
