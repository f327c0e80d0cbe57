"""PPO's hand-written backward pass against autograd, and its update against the
textbook one (``loss.backward(); optimizer.step()``), in float64."""

import collections
import copy
import importlib

import pytest
import torch

from edgeag.optim import build_optimizer
from edgeag.train import networks
from edgeag.train.config import PPOConfig
from edgeag.train.networks import ActorCritic, FlatActorCritic, mlp_activations, mlp_backward
from edgeag.train.ppo import Minibatch, PPOState, RolloutBuffer, output_grads, ppo_loss, update

alphagrad_module = importlib.import_module("edgeag.optim.alphagrad")  # the module, not the function


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_fast_forward_paths_equal_the_modules():
    torch.manual_seed(0)
    policy = ActorCritic(5, 3, True, hidden=(80, 70))
    for n in (7, 256):  # below and above the tanh-by-sigmoid threshold
        x = torch.randn(n, 5)
        with torch.no_grad():
            expected = policy.actor(x)
            assert torch.equal(policy._forward(policy._actor, x), expected)
            acts = mlp_activations(policy._actor, x)
            torch.testing.assert_close(acts[-1], expected, atol=2e-6, rtol=0)
            torch.testing.assert_close(policy.value(x), policy.critic(x).squeeze(-1))


def test_mlp_backward_equals_autograd_even_when_the_sink_updates_in_place(float64):
    torch.manual_seed(1)
    net = ActorCritic(6, 4, True, hidden=(70, 90, 30)).actor  # 90 * 70 > tanh threshold
    linears = tuple(m for m in net if isinstance(m, torch.nn.Linear))
    x, grad_out = torch.randn(50, 6), torch.randn(50, 4)
    net(x).backward(grad_out)
    expected = {p: p.grad.clone() for p in net.parameters()}

    seen = []
    def sink(param, grad):  # zero each parameter as soon as its gradient is handed over
        seen.append((param, grad.clone()))
        param.zero_()
    with torch.no_grad():
        mlp_backward(linears, mlp_activations(linears, x), grad_out, sink)
    assert [p for p, _ in seen] == [p for layer in reversed(linears) for p in (layer.weight, layer.bias)]
    for param, grad in seen:
        torch.testing.assert_close(grad, expected[param], rtol=1e-12, atol=1e-12)


def _recording(fn, calls: list):
    def wrapper(param, *args, **kwargs):
        calls.append(tuple(param.shape))
        return fn(param, *args, **kwargs)
    return wrapper


def make_minibatch(policy: ActorCritic, n: int, generator: torch.Generator) -> Minibatch:
    """Random transitions whose old log-probabilities are the policy's plus noise, so
    ratios fall inside and outside the clip range, with advantages of both signs."""
    obs = torch.randn(n, policy.arch["obs_dim"], generator=generator)
    with torch.no_grad():
        actions, logp, values = policy.act(obs, generator)
    noise = 0.4 * torch.randn(n, generator=generator)
    return Minibatch(obs, actions, logp + noise, torch.randn(n, generator=generator),
                     values + torch.randn(n, generator=generator),
                     values + 0.3 * torch.randn(n, generator=generator))


CASES = [
    dict(discrete=True, clip_vloss=False, ent_coef=0.0),
    dict(discrete=True, clip_vloss=True, ent_coef=0.01),
    dict(discrete=False, clip_vloss=False, ent_coef=0.0),
    dict(discrete=False, clip_vloss=True, ent_coef=0.02),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_output_grads_equal_autograd(float64, case):
    torch.manual_seed(2)
    policy = ActorCritic(5, 3, case["discrete"], hidden=(16, 16), log_std_init=-0.3)
    cfg = PPOConfig(env_id="x", clip_vloss=case["clip_vloss"], ent_coef=case["ent_coef"])
    mb = make_minibatch(policy, 64, torch.Generator().manual_seed(3))
    ratio = (policy.evaluate(mb.obs, mb.actions)[0] - mb.logprobs).exp()
    assert (ratio > 1.2).any() and (ratio < 0.8).any() and ((ratio - 1).abs() < 0.2).any()

    with torch.no_grad():
        out = policy._forward(policy._actor, mb.obs)
        grads = output_grads(policy, cfg, out, policy.value(mb.obs), mb)
    # autograd through ppo_loss, with the outputs as the leaves
    out_leaf = out.clone().requires_grad_()
    value_leaf = policy.value(mb.obs).detach().requires_grad_()
    policy._forward = lambda linears, x: out_leaf if linears is policy._actor else value_leaf.unsqueeze(-1)
    loss, losses = ppo_loss(policy, cfg, mb)
    inputs = [out_leaf, value_leaf] + ([] if case["discrete"] else [policy.log_std])
    expected = torch.autograd.grad(loss, inputs)
    torch.testing.assert_close(grads.out, expected[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads.value, expected[1], rtol=1e-10, atol=1e-12)
    if not case["discrete"]:
        torch.testing.assert_close(grads.log_std, expected[2], rtol=1e-10, atol=1e-12)
    for key in ("pg_loss", "v_loss", "entropy"):
        torch.testing.assert_close(grads.losses[key], losses[key].detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("hidden", [(16, 12), (8,), ()])
@pytest.mark.parametrize("discrete", [True, False])
def test_flat_layout_equals_the_per_network_passes(float64, discrete, hidden):
    torch.manual_seed(0)
    policy = ActorCritic(5, 3, discrete, hidden)
    x, grad_out, grad_value = torch.randn(40, 5), torch.randn(40, 3), torch.randn(40)
    grad_log_std = None if discrete else torch.randn(3)
    with torch.no_grad():
        actor, critic = mlp_activations(policy._actor, x), mlp_activations(policy._critic, x)
        expected = {}
        sink = lambda p, g: expected.__setitem__(p, g.clone())
        mlp_backward(policy._actor, actor, grad_out, sink)
        mlp_backward(policy._critic, critic, grad_value.unsqueeze(-1), sink)
        if grad_log_std is not None:
            expected[policy.log_std] = grad_log_std
        before = {name: p.clone() for name, p in policy.named_parameters()}

        flat = FlatActorCritic(policy)
        for name, p in policy.named_parameters():
            assert torch.equal(p, before[name])
            assert p.untyped_storage().data_ptr() == flat.param.untyped_storage().data_ptr()
        acts, out, value = flat.forward(x)
        torch.testing.assert_close(out, actor[-1], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(value, critic[-1].squeeze(-1), rtol=1e-12, atol=1e-12)
        flat.backward(acts, grad_out, grad_value, grad_log_std)
    assert set(flat.grads) == set(policy.parameters()) == set(expected)
    for p, grad in expected.items():
        torch.testing.assert_close(flat.grads[p], grad, rtol=1e-12, atol=1e-12)
    assert flat.grad.numel() == sum(p.numel() for p in policy.parameters())
    assert [s.data_ptr() for s in flat.segments] == [flat.grads[p].data_ptr() for p in flat.params]
    assert [s.numel() for s in flat.segments] == [p.numel() for p in flat.params]


@pytest.mark.parametrize("optimizer,layout", [
    (optimizer, layout) for optimizer in ("alphagrad", "alphagrad-momentum", "adam", "sgd")
    for layout in ("layers", "flat")] + [("alphagrad", "factored")])
@pytest.mark.parametrize("discrete", [True, False])
def test_update_equals_the_textbook_update(float64, optimizer, discrete, layout, monkeypatch):
    if layout == "factored":  # stateless AlphaGrad, weights above 256 values updated from factors
        monkeypatch.setattr(networks, "OUTER_BLOCK_NUMEL", 256)
        monkeypatch.setattr(alphagrad_module, "OUTER_BLOCK_NUMEL", 256)
        factored = []
        monkeypatch.setattr(alphagrad_module, "alphagrad_outer_",
                            _recording(alphagrad_module.alphagrad_outer_, factored))
    momentum = 0.9 if optimizer in ("alphagrad-momentum", "sgd") else 0.0
    optimizer = optimizer.removesuffix("-momentum")
    cfg = PPOConfig(env_id="x", optimizer=optimizer, num_envs=4, num_steps=16, batch_size=16,
                    update_epochs=3, clip_vloss=True, ent_coef=0.01, lr=1e-2, alpha=4.0,
                    momentum=momentum)
    torch.manual_seed(4)
    policy = ActorCritic(5, 2, discrete, hidden=(64, 64))
    buf = RolloutBuffer(cfg.num_steps, cfg.num_envs, 5, 2, discrete)
    mb = make_minibatch(policy, cfg.batch, torch.Generator().manual_seed(5))
    for name in ("obs", "actions", "logprobs", "advantages", "returns", "values"):
        getattr(buf, name).copy_(getattr(mb, name).reshape(getattr(buf, name).shape))

    results = []
    for reference in (True, False):
        net = copy.deepcopy(policy)
        opt = build_optimizer(optimizer, net.parameters(), lr=cfg.lr, alpha=cfg.alpha,
                              momentum=cfg.momentum, eps=cfg.eps)
        state = PPOState(cfg, net, opt, None, None, torch.Generator().manual_seed(6), None,
                         None, None, None, None, collections.deque(),
                         flat=FlatActorCritic(net) if layout == "flat" else None)
        stats = [update(state, buf, cfg.lr, reference=reference) for _ in range(2)]
        results.append((net, stats))
    (ref, ref_stats), (fast, fast_stats) = results
    if layout == "factored":  # both networks' 64x5 and 64x64 weights, each minibatch, 2 updates
        assert set(factored) == {(64, 5), (64, 64)}
        assert len(factored) == 2 * 2 * cfg.update_epochs * (cfg.batch // cfg.batch_size) * 2
    changed = [not torch.equal(p, q) for p, q in zip(ref.parameters(), policy.parameters())]
    assert all(changed)
    for p, q in zip(fast.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-10)
    for f, r in zip(fast_stats, ref_stats):
        assert f == pytest.approx(r, rel=1e-7)


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
    monkeypatch.setattr(networks, "lean_orthogonal_", _recording(networks.lean_orthogonal_, calls))
    ActorCritic(4, 2, True, hidden=(40, 40))
    assert calls == [(40, 40), (40, 40)]  # the hidden-to-hidden weight of each network
