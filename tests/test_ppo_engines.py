"""PPO's two engines against each other in float64: the numpy engine's hand-written
loss gradient and backward (`edgeag.algos.ppo.algorithm.output_grads`, `edgeag.engine`) against
the torch engine's textbook update (`ppo_torch.ppo_loss`, ``loss.backward()``,
`edgeag.optim`, AlphaGrad fused into backward by its hooks)."""

import numpy as np
import pytest
import torch

from edgeag.algos import torch_runtime as networks
from edgeag.algos.ppo import numpy_engine as ppo_numpy
from edgeag.algos.ppo.algorithm import Minibatch, RolloutBuffer, output_grads, sample
from edgeag.algos.ppo.config import PPOConfig
from edgeag.algos.ppo.numpy_engine import NumpyActorCritic
from edgeag.algos.ppo.torch_engine import ActorCritic, TorchActorCritic, ppo_loss
from edgeag.engine import update_path as engine_plan


def make_minibatch(out: np.ndarray, value: np.ndarray, log_std, rng) -> Minibatch:
    """Transitions sampled from the policy's outputs, whose old log-probabilities are
    the policy's plus noise, so ratios fall inside and outside the clip range, with
    advantages of both signs."""
    n = out.shape[0]
    actions, logp = sample(out, log_std, rng)
    return Minibatch(None, actions, logp + 0.4 * rng.standard_normal(n), rng.standard_normal(n),
                     value + rng.standard_normal(n), value + 0.3 * rng.standard_normal(n))


CASES = [
    dict(discrete=True, clip_vloss=False, ent_coef=0.0),
    dict(discrete=True, clip_vloss=True, ent_coef=0.01),
    dict(discrete=False, clip_vloss=False, ent_coef=0.0),
    dict(discrete=False, clip_vloss=True, ent_coef=0.02),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_output_grads_equal_autograd(case):
    """d loss / d outputs by hand equals autograd's through `ppo_loss` (ties included)."""
    rng = np.random.default_rng(2)
    n, a = 64, 3
    out = rng.standard_normal((n, a))
    value = rng.standard_normal(n)
    log_std = None if case["discrete"] else np.array([-0.3, 0.1, 0.2])
    cfg = PPOConfig(env_id="x", clip_vloss=case["clip_vloss"], ent_coef=case["ent_coef"])
    mb = make_minibatch(out, value, log_std, rng)
    grads = output_grads(cfg, out, value, log_std, mb)
    ratio = grads.losses["ratio"]
    assert (ratio > 1.2).any() and (ratio < 0.8).any() and (np.abs(ratio - 1) < 0.2).any()

    policy = ActorCritic(5, a, case["discrete"], hidden=(4,)).double()
    out_leaf = torch.tensor(out, requires_grad=True)
    value_leaf = torch.tensor(value, requires_grad=True)
    policy.forward_layers = lambda linears, x: out_leaf if linears is policy.actor_layers else value_leaf[:, None]
    if not case["discrete"]:
        policy.log_std.data = torch.tensor(log_std)
    t = Minibatch(torch.zeros(n, 5, dtype=torch.float64),
                  *(torch.as_tensor(x) for x in mb[1:]))
    loss, losses = ppo_loss(policy, cfg, t)
    inputs = [out_leaf, value_leaf] + ([] if case["discrete"] else [policy.log_std])
    expected = [g.numpy() for g in torch.autograd.grad(loss, inputs)]
    np.testing.assert_allclose(grads.out, expected[0], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(grads.value, expected[1], rtol=1e-10, atol=1e-13)
    if not case["discrete"]:
        np.testing.assert_allclose(grads.log_std, expected[2], rtol=1e-10, atol=1e-13)
    for key in ("pg_loss", "v_loss", "entropy"):
        assert grads.losses[key] == pytest.approx(losses[key].item(), rel=1e-12, abs=1e-14)


OPTIMIZERS = ["alphagrad", "alphagrad-momentum", "alphagrad-sqrt_numel", "adam", "sgd-momentum"]


@pytest.mark.parametrize("layout", ["flat", "factored"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("discrete", [True, False])
def test_numpy_update_equals_the_torch_textbook_update(optimizer, discrete, layout, monkeypatch):
    """Three epochs of four minibatches from the same rollout, twice (an annealed lr):
    the parameters and the logged losses agree to float64 precision. ``factored``: the
    policy is treated as large, so stateless AlphaGrad updates each layer inside the
    backward pass and its weights above 256 values from their gradient's factors."""
    if layout == "factored":
        monkeypatch.setattr(engine_plan, "FLAT_MAX_BYTES", 0)
        monkeypatch.setattr(ppo_numpy, "OUTER_NUMEL", 256)
    momentum = 0.9 if optimizer.endswith("-momentum") else 0.0
    alpha_scale = "sqrt_numel" if optimizer.endswith("-sqrt_numel") else "none"
    name = optimizer.split("-")[0]
    cfg = PPOConfig(env_id="x", optimizer=name, num_envs=4, num_steps=16, batch_size=16,
                    update_epochs=3, clip_vloss=True, ent_coef=0.01, lr=1e-2, alpha=4.0,
                    momentum=momentum, alpha_scale=alpha_scale, hidden=(24, 20), seed=4)
    ref = TorchActorCritic(cfg, 5, 2, discrete, dtype=np.float64)
    fast = NumpyActorCritic(cfg, 5, 2, discrete, dtype=np.float64, initialise=False)
    fast.params.load_state_dict({k: v.numpy() for k, v in ref.net.state_dict().items()})
    expected_path = ("flat" if layout == "flat" or name != "alphagrad" else
                     "fused" if momentum else "factored")  # momentum: each layer inside backward
    assert fast.path.kind == expected_path
    if expected_path == "factored":
        assert fast.path.factored_segments([fast.critic, fast.actor]) == {
            "critic.2.weight", "actor.2.weight"}  # the 20 x 24 weights; 24 x 5 is formed
    start = fast.params.data.copy()

    rng = np.random.default_rng(5)
    buf = RolloutBuffer(cfg.num_steps, cfg.num_envs, 5, 2, discrete, np.float64)
    n = cfg.batch
    buf.obs[...] = rng.standard_normal(buf.obs.shape)
    out, value = fast.forward(buf.obs.reshape(n, 5))
    mb = make_minibatch(out, value, fast.log_std, rng)
    for field, array in zip(("actions", "logprobs", "advantages", "returns", "values"), mb[1:]):
        getattr(buf, field)[...] = array.reshape(getattr(buf, field).shape)

    stats = {}
    for engine, policy in (("torch", ref), ("numpy", fast)):
        order = np.random.default_rng(6)
        stats[engine] = []
        for _iteration, lr in enumerate((cfg.lr, 0.5 * cfg.lr)):
            policy.set_lr(lr)
            for _ in range(cfg.update_epochs):
                for batch in buf.minibatches(cfg.batch_size, order):
                    losses = policy.update(batch, record=True)
                    stats[engine].append((losses["pg_loss"], losses["v_loss"], losses["entropy"]))
    final = {k: v.detach().numpy() for k, v in ref.net.state_dict().items()}
    assert not np.array_equal(fast.params.data, start)
    for key, expected in final.items():
        np.testing.assert_allclose(fast.params[key], expected, rtol=1e-9, atol=1e-11, err_msg=key)
    np.testing.assert_allclose(stats["numpy"], stats["torch"], rtol=1e-8, atol=1e-11)
    assert fast.optimizer_state_bytes() == ref.optimizer_state_bytes()


@pytest.mark.parametrize("n", [300, 700])  # one block; blocks of 512 and a remainder
def test_lean_orthogonal_init_equals_torch(n):
    torch.manual_seed(3)
    expected = torch.nn.init.orthogonal_(torch.empty(n, n), 1.7)
    torch.manual_seed(3)
    weight = networks.lean_orthogonal_(torch.empty(n, n), 1.7)
    torch.testing.assert_close(weight, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(weight @ weight.t(), 1.7 ** 2 * torch.eye(n), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="square"):
        networks.lean_orthogonal_(torch.empty(3, 4), 1.0)


def test_large_square_weights_use_the_lean_init(monkeypatch):
    monkeypatch.setattr(networks, "LEAN_ORTHOGONAL_NUMEL", 1000)
    calls = []
    lean = networks.lean_orthogonal_

    def recording(weight, gain):
        calls.append(tuple(weight.shape))
        return lean(weight, gain)
    monkeypatch.setattr(networks, "lean_orthogonal_", recording)
    ActorCritic(4, 2, True, hidden=(40, 40))
    assert calls == [(40, 40), (40, 40)]  # the hidden-to-hidden weight of each network
