"""The numpy engine's optimizers against edgeag.optim (torch) in float64: the flat path,
the in-backward path, the factored path, state, checkpoints, validation and memory. The
comparisons with torch are skipped where torch is not installed; the rest runs."""

import inspect
import json
import math

import numpy as np
import pytest
from optional_torch import needs_torch, torch
from tracing import traced_peak

from edgeag.engine import MLP, Layout, UpdatePath, clip_grad_norm_, segment_norms
from edgeag.optim import flat, registry
from edgeag.optim.factored import outer_norm, outer_temporary_bytes, uses_gram
from edgeag.optim.flat import SGD, Adam, AlphaGrad, alphagrad_, layout_state_bytes
from edgeag.optim.reference import alphagrad_step

if torch is not None:
    import edgeag.optim as torch_optim

SHAPES = [("0.weight", (40, 3)), ("0.bias", (40,)), ("2.weight", (40, 40)), ("2.bias", (40,)),
          ("empty", (0, 5)), ("4.weight", (2, 40)), ("4.bias", (2,)), ("scalar", ())]
"""A small MLP's tensors, a zero-size one and a scalar (one above torch's
TANH_MAX_NUMEL, so its sigmoid path is compared too)."""

CONFIGS = {
    "alphagrad": dict(lr=0.01, alpha=1.0),
    "alphagrad-large-alpha": dict(lr=0.01, alpha=30.0),
    "alphagrad-momentum": dict(lr=0.01, alpha=2.0, momentum=0.9),
    "alphagrad-dampening": dict(lr=0.01, alpha=2.0, momentum=0.5, dampening=0.3),
    "alphagrad-nesterov": dict(lr=0.01, alpha=2.0, momentum=0.9, nesterov=True),
    "alphagrad-weight-decay": dict(lr=0.01, alpha=1.0, weight_decay=0.1),
    "alphagrad-momentum-weight-decay": dict(lr=0.01, alpha=1.0, momentum=0.9, weight_decay=0.1),
    "alphagrad-maximize": dict(lr=0.01, alpha=1.0, maximize=True, momentum=0.9),
    "alphagrad-maximize-stateless": dict(lr=0.01, alpha=1.0, maximize=True),
    "alphagrad-sqrt-numel": dict(lr=0.01, alpha=0.5, alpha_scale="sqrt_numel"),
    "alphagrad-sqrt-numel-momentum-maximize": dict(lr=0.01, alpha=0.5, alpha_scale="sqrt_numel",
                                                   momentum=0.9, maximize=True),
    "adam": dict(lr=0.01),
    "adam-betas-eps": dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    "adam-weight-decay": dict(lr=0.01, weight_decay=0.1),
    "adam-maximize": dict(lr=0.01, maximize=True),
    "sgd": dict(lr=0.01),
    "sgd-momentum": dict(lr=0.01, momentum=0.9),
    "sgd-nesterov": dict(lr=0.01, momentum=0.9, nesterov=True),
    "sgd-dampening-weight-decay": dict(lr=0.01, momentum=0.5, dampening=0.3, weight_decay=0.1),
    "sgd-maximize": dict(lr=0.01, momentum=0.9, maximize=True),
}
TORCH_CLASSES = {"alphagrad": torch_optim.AlphaGrad, "adam": torch_optim.Adam,
                 "sgd": torch_optim.SGD} if torch is not None else {}
ENGINE_CLASSES = {"alphagrad": AlphaGrad, "adam": Adam, "sgd": SGD}


def kind(config_name: str) -> str:
    return config_name.split("-")[0]


def start_values(layout: Layout) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(layout.size)


def gradients(layout: Layout, steps: int) -> list[np.ndarray]:
    """Seeded gradients per step; step 2 gives the first segment an all-zero gradient."""
    rng = np.random.default_rng(1)
    out = []
    for k in range(steps):
        g = rng.standard_normal(layout.size) * rng.uniform(0.1, 10.0)
        if k == 2:
            g[:120] = 0.0
        out.append(g)
    return out


def run_torch(name: str, steps: int = 7):
    layout = Layout.from_shapes(SHAPES, np.float64)
    flat = torch.from_numpy(start_values(layout))
    params = [torch.nn.Parameter(flat[s.offset:s.stop].reshape(s.shape).clone())
              for s in layout]
    opt = TORCH_CLASSES[kind(name)](params, **CONFIGS[name])
    for g in gradients(layout, steps):
        for p, s in zip(params, layout):
            p.grad = torch.from_numpy(g[s.offset:s.stop].reshape(s.shape).copy())
        opt.step()
    return layout, params, opt


def run_engine(name: str, mode: str = "flat", steps: int = 7, **extra):
    layout = Layout.from_shapes(SHAPES, np.float64)
    params = layout.wrap(start_values(layout))
    opt = ENGINE_CLASSES[kind(name)](params, **CONFIGS[name], **extra)
    grads = layout.zeros()
    for g in gradients(layout, steps):
        grads.data[:] = g
        if mode == "flat":
            opt.step(grads)
        else:  # one segment at a time, last first, as a backward pass hands them over
            for seg in reversed(layout.segments):
                opt.update(seg.name, grads[seg.name].copy())
    return layout, params, opt


def torch_state(opt, params, key: str) -> np.ndarray:
    return np.concatenate([opt.state[p][key].detach().numpy().reshape(-1) for p in params])


@needs_torch
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_flat_step_equals_edgeag_optim(name):
    layout, expected, torch_opt = run_torch(name)
    _, params, opt = run_engine(name)
    start = start_values(layout)
    for seg, p in zip(layout, expected):
        np.testing.assert_allclose(params[seg.name], p.detach().numpy(), rtol=0, atol=1e-12,
                                   err_msg=seg.name)
        if seg.size:
            assert not np.array_equal(params[seg.name].reshape(-1), start[seg.offset:seg.stop])
    for key, value in opt.state.items():
        if key == "step":
            want = np.array([torch_opt.state[p]["step"].item() for p in expected], np.float32)
            np.testing.assert_array_equal(value, want)
        else:
            np.testing.assert_allclose(value, torch_state(torch_opt, expected, key), rtol=0,
                                       atol=1e-12)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_in_backward_updates_equal_the_flat_step(name):
    _, flat, flat_opt = run_engine(name, "flat")
    _, fused, fused_opt = run_engine(name, "update")
    np.testing.assert_allclose(fused.data, flat.data, rtol=0, atol=1e-14)
    assert fused_opt.state.keys() == flat_opt.state.keys()
    for key in flat_opt.state:
        np.testing.assert_allclose(fused_opt.state[key], flat_opt.state[key], rtol=0, atol=1e-14)


@needs_torch
@pytest.mark.parametrize("name", ["alphagrad-dampening", "alphagrad-nesterov", "adam",
                                  "sgd-momentum"])
def test_segments_updated_on_their_own_first_then_stepped_together(name):
    """Some segments get a first update alone (their momentum or step count runs ahead),
    then every step covers all: as torch, where parameters without a gradient skip a step."""
    first = {"0.weight", "2.bias", "scalar"}
    layout = Layout.from_shapes(SHAPES, np.float64)
    flat = torch.from_numpy(start_values(layout))
    tparams = [torch.nn.Parameter(flat[s.offset:s.stop].reshape(s.shape).clone()) for s in layout]
    topt = TORCH_CLASSES[kind(name)](tparams, **CONFIGS[name])
    params = layout.wrap(start_values(layout))
    opt = ENGINE_CLASSES[kind(name)](params, **CONFIGS[name])
    grads = layout.zeros()
    for k, g in enumerate(gradients(layout, 5)):
        for p, s in zip(tparams, layout):
            use = k > 0 or s.name in first
            p.grad = torch.from_numpy(g[s.offset:s.stop].reshape(s.shape).copy()) if use else None
        topt.step()
        grads.data[:] = g
        if k == 0:
            for s in layout:
                if s.name in first:
                    opt.update(s.name, grads[s.name])
        else:
            opt.step(grads)
    np.testing.assert_allclose(params.data, torch.cat([p.detach().reshape(-1) for p in tparams]),
                               rtol=0, atol=1e-12)


ALPHAGRAD_CONFIGS = sorted(n for n in CONFIGS if kind(n) == "alphagrad")


def reference_run(name: str, steps: int = 7) -> np.ndarray:
    """`edgeag.optim.reference.alphagrad_step` (the plain loop) on the same start values
    and gradients as `run_engine`, as one flat array."""
    layout = Layout.from_shapes(SHAPES, np.float64)
    start = start_values(layout)
    params = {s.name: start[s.offset:s.stop].reshape(s.shape).copy() for s in layout}
    buffers: dict = {}
    for g in gradients(layout, steps):
        alphagrad_step(params, {s.name: g[s.offset:s.stop].reshape(s.shape) for s in layout},
                       buffers, **CONFIGS[name])
    out = layout.zeros()
    for s in layout:
        out[s.name][...] = params[s.name]
    return out.data


@pytest.mark.parametrize("name", ALPHAGRAD_CONFIGS)
@pytest.mark.parametrize("mode", ["flat", "update"])
def test_alphagrad_equals_the_reference_loop(name, mode):
    _, params, _ = run_engine(name, mode)
    np.testing.assert_allclose(params.data, reference_run(name), rtol=0, atol=1e-13)


@pytest.mark.parametrize("mode", ["flat", "update", "outer"])
def test_every_path_goes_through_the_one_rule(mode, monkeypatch):
    """`alphagrad_` is the engine's only copy of the rule: changing it changes the flat
    step, the per-segment update and the factored update, so the reference parity
    tests fail when the rule does."""
    def run():
        if mode == "outer":
            w = Layout.from_shapes([("w", (37, 29))], np.float64)
            rng = np.random.default_rng(2)
            p = w.wrap(start_values(w))
            AlphaGrad(p, lr=0.01, block_numel=64).update_outer(
                "w", rng.standard_normal((3, 37)), rng.standard_normal((3, 29)))
            return p.data
        return run_engine("alphagrad", mode, steps=2)[1].data

    want = run()
    rule = flat.alphagrad_
    monkeypatch.setattr(flat, "alphagrad_", lambda g, norm, alpha, eps, maximize=False:
                        rule(g, norm, 2 * alpha, eps, maximize))
    assert not np.allclose(run(), want)


def test_segment_norms_handle_empty_segments():
    layout = Layout.from_shapes([("e0", (0,))] + SHAPES + [("e1", (0, 2))], np.float64)
    buf = layout.wrap(np.random.default_rng(3).standard_normal(layout.size))
    want = [np.linalg.norm(v) for v in buf.flat_views]
    np.testing.assert_allclose(segment_norms(buf), want, rtol=1e-14, atol=0)


def test_direction_is_tanh_of_the_per_tensor_normalised_gradient():
    g = np.array([3.0, -4.0, 0.0])
    u = alphagrad_(g.copy(), 5.0, 2.0, 1e-5)
    np.testing.assert_allclose(u, np.tanh(2.0 * g / (5.0 + 1e-5)), rtol=0, atol=1e-15)


def test_sqrt_numel_scales_each_tensors_alpha_by_the_root_of_its_size():
    """The readable rule: with ``alpha_scale="sqrt_numel"`` each tensor moves by
    ``lr * tanh(alpha * sqrt(numel) * g / (||g|| + eps))``, on every path."""
    layout = Layout.from_shapes(SHAPES, np.float64)
    g = gradients(layout, 1)[0]
    start = start_values(layout)
    want = start.copy()
    for seg in layout:
        gs = g[seg.offset:seg.stop]
        a = 0.5 * math.sqrt(seg.size)
        want[seg.offset:seg.stop] -= 0.01 * np.tanh(a * gs / (np.linalg.norm(gs) + 1e-5))
    for mode in ("flat", "update"):
        _, params, _ = run_engine("alphagrad-sqrt-numel", mode, steps=1)
        np.testing.assert_allclose(params.data, want, rtol=0, atol=1e-15, err_msg=mode)
    # and the factored update of a weight
    w = Layout.from_shapes([("w", (37, 29))], np.float64)
    rng = np.random.default_rng(2)
    d, x = rng.standard_normal((3, 37)), rng.standard_normal((3, 29))
    p = w.wrap(start[:w.size].copy())
    AlphaGrad(p, lr=0.01, alpha=0.5, alpha_scale="sqrt_numel", block_numel=64).update_outer(
        "w", d, x)
    gw = (d.T @ x).reshape(-1)
    expected = start[:w.size] - 0.01 * np.tanh(0.5 * math.sqrt(w.size) * gw
                                               / (np.linalg.norm(gw) + 1e-5))
    np.testing.assert_allclose(p.data, expected, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="Invalid alpha_scale value: 'rms'"):
        AlphaGrad(layout.zeros(), alpha_scale="rms")


@needs_torch
def test_direction_equals_edgeag_optims():
    g = np.array([3.0, -4.0, 0.0])
    u = alphagrad_(g.copy(), 5.0, 2.0, 1e-5)
    t = torch.tensor(g)
    np.testing.assert_allclose(u, torch_optim.alphagrad_direction(t, 2.0, 1e-5).numpy(),
                               rtol=0, atol=1e-15)


@pytest.mark.parametrize("mode", ["flat", "update", "outer"])
def test_all_zero_gradient_gives_exactly_no_update(mode):
    for maximize in (False, True):
        layout = Layout.from_shapes(SHAPES, np.float32)
        params = layout.wrap(start_values(layout).astype(np.float32))
        before = params.data.copy()
        opt = AlphaGrad(params, lr=0.1, alpha=5.0, maximize=maximize)
        for _ in range(3):
            grads = layout.zeros()
            if mode == "flat":
                opt.step(grads)
            elif mode == "update":
                for seg in layout:
                    opt.update(seg.name, grads[seg.name])
            else:
                opt.update_outer("2.weight", np.zeros((4, 40), np.float32),
                                 np.zeros((4, 40), np.float32))
        assert np.array_equal(params.data, before)
        assert opt.state_bytes() == 0 and opt.state == {}


# --- the factored update ------------------------------------------------------------

@pytest.mark.parametrize("batch", [3, 40])  # the norm from Gram matrices / from row blocks
@pytest.mark.parametrize("options", [dict(), dict(maximize=True), dict(weight_decay=0.1),
                                     dict(momentum=0.9), dict(alpha_scale="sqrt_numel")])
def test_factored_update_equals_the_formed_gradient_update(batch, options):
    g = np.random.default_rng(batch)
    layout = Layout.from_shapes([("w", (37, 29)), ("small", (5, 3))], np.float64)
    start = g.standard_normal(layout.size)
    p_formed, p_factored = layout.wrap(start.copy()), layout.wrap(start.copy())
    formed = AlphaGrad(p_formed, lr=0.01, alpha=3.0, **options)
    factored = AlphaGrad(p_factored, lr=0.01, alpha=3.0, block_numel=64, **options)
    for _ in range(3):
        for name, (n_out, n_in) in (("w", (37, 29)), ("small", (5, 3))):
            d, x = g.standard_normal((batch, n_out)), g.standard_normal((batch, n_in))
            assert uses_gram(batch, n_out, n_in, 64) == (batch == 3 and name == "w")
            np.testing.assert_allclose(outer_norm(d, x, 64), np.linalg.norm(d.T @ x),
                                       rtol=1e-13)
            formed.update(name, d.T @ x)
            factored.update_outer(name, d, x)
    np.testing.assert_allclose(p_factored.data, p_formed.data, rtol=0, atol=1e-14)
    assert factored.state_bytes() == formed.state_bytes()


def test_factored_norm_survives_cancelling_samples():
    g = np.random.default_rng(0)
    d, x = g.standard_normal((64, 600)).astype(np.float32), g.standard_normal((64, 400)).astype(
        np.float32)
    d = np.concatenate([d, -d * np.float32(1 + 1e-3)])  # each sample's gradient nearly undone
    x = np.concatenate([x, x])
    exact = np.linalg.norm(d.astype(np.float64).T @ x.astype(np.float64))
    assert uses_gram(128, 600, 400)
    assert outer_norm(d, x) == pytest.approx(exact, rel=1e-5)


def test_factored_path_through_backward_equals_fused_and_flat():
    actor = MLP((5, 30, 20, 3), prefix="actor")  # weights 150, 600, 60
    layout = Layout.from_shapes(actor.shapes(), np.float64)
    start = np.random.default_rng(0).standard_normal(layout.size)
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((16, 5)), rng.standard_normal((16, 3))) for _ in range(4)]
    results, calls = {}, []
    for path in (UpdatePath("flat"), UpdatePath("fused"), UpdatePath("factored", outer_numel=100)):
        params = layout.wrap(start.copy())
        opt = AlphaGrad(params, lr=0.02, alpha=2.0, block_numel=50)
        if path.kind == "factored":
            outer = opt.update_outer
            opt.update_outer = lambda n, d, x, outer=outer: (calls.append(n), outer(n, d, x))
        grads = layout.zeros()
        for x, grad_out in batches:
            path.backward(actor, params, actor.forward(params, x), grad_out, opt, grads)
            path.finish(opt, grads)
        results[path.kind] = params.data
    assert set(calls) == {"actor.0.weight", "actor.2.weight"} and len(calls) == 8
    np.testing.assert_allclose(results["fused"], results["flat"], rtol=0, atol=1e-13)
    np.testing.assert_allclose(results["factored"], results["fused"], rtol=0, atol=1e-13)
    assert not np.allclose(results["flat"], start)


_peak = traced_peak


SLACK = 8192 * 8 + 8192
"""numpy's ufunc iteration buffer and a few small objects."""


@pytest.mark.parametrize("shape", [(4096, 1024), (1536, 3000)])  # 16 and 18 MiB weights
def test_factored_update_temporaries_stay_within_the_block_bound(shape):
    n_out, n_in = shape
    layout = Layout.from_shapes([("w", shape)])
    opt = AlphaGrad(layout.zeros(), lr=0.01)
    g = np.random.default_rng(0)
    for batch in (256, 1024):  # Gram path / row blocks
        d = g.standard_normal((batch, n_out), dtype=np.float32)
        x = g.standard_normal((batch, n_in), dtype=np.float32)
        assert uses_gram(batch, n_out, n_in) == (batch == 256)
        peak = _peak(lambda d=d, x=x: opt.update_outer("w", d, x))
        assert 0 < peak <= opt.outer_temporary_bytes(n_out * n_in) + SLACK
    assert opt.outer_temporary_bytes(n_out * n_in) == outer_temporary_bytes(4) < layout.nbytes / 2


@pytest.mark.parametrize("name", ["alphagrad", "alphagrad-nesterov", "alphagrad-dampening",
                                  "adam-weight-decay", "sgd", "sgd-momentum",
                                  "sgd-dampening-weight-decay"])
@pytest.mark.parametrize("method", ["step", "update"])
def test_update_temporaries_are_what_the_optimizer_declares(name, method):
    layout = Layout.from_shapes([("a", (300, 200)), ("b", (7,)), ("c", (100_000,))])
    params = layout.wrap(np.ones(layout.size, np.float32))
    opt = ENGINE_CLASSES[kind(name)](params, **CONFIGS[name])
    grads = layout.wrap(np.random.default_rng(0).standard_normal(layout.size, np.float32))
    opt.step(grads.copy())  # state created
    if method == "step":
        peak, declared = _peak(lambda: opt.step(grads.copy())), opt.temporary_bytes(layout.size)
        peak -= layout.nbytes  # the copy of the gradients
    else:
        g = grads["c"].copy()
        peak, declared = _peak(lambda: opt.update("c", g)), opt.temporary_bytes(100_000)
    assert declared <= peak <= declared + SLACK
    if name == "alphagrad":
        assert declared == 0


# --- state, checkpoints, registry ---------------------------------------------------

@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_bytes_are_exact(name):
    layout, _, opt = run_engine(name, steps=2)
    momentum = CONFIGS[name].get("momentum", 0.0)
    assert opt.state_bytes() == sum(v.nbytes for v in opt.state.values())
    assert opt.state_bytes() == layout_state_bytes(kind(name), layout, momentum)
    assert opt.state_bytes() == opt.planned_state_bytes()
    assert (opt.state_bytes() == 0) == (kind(name) != "adam" and momentum == 0)


@needs_torch
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_bytes_equal_the_torch_rule(name):
    _, torch_params, torch_opt = run_torch(name, steps=2)
    _, _, opt = run_engine(name, steps=2)
    momentum = CONFIGS[name].get("momentum", 0.0)
    assert opt.state_bytes() == torch_optim.OPTIMIZERS[kind(name)].state_bytes(
        [p.shape for p in torch_params], torch_params[0].element_size(), momentum)
    assert opt.state_bytes() == torch_optim.state_bytes(torch_opt)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_round_trip_continues_identically(name):
    _, straight, _ = run_engine(name, steps=6)
    _, params, opt = run_engine(name, steps=3)
    saved = opt.state_dict()
    json.dumps({"hparams": saved["hparams"], "extra": saved["extra"]})
    assert all(isinstance(v, np.ndarray) for v in saved["state"].values())
    fresh = ENGINE_CLASSES[kind(name)](params)
    fresh.load_state_dict(saved)
    assert fresh.hparams == opt.hparams
    grads = params.layout.zeros()
    for g in gradients(params.layout, 6)[3:]:
        grads.data[:] = g
        fresh.step(grads)
    np.testing.assert_array_equal(params.data, straight.data)


def test_load_state_dict_rejects_a_wrong_state():
    _, params, opt = run_engine("adam", steps=1)
    saved = opt.state_dict()
    saved["state"]["exp_avg"] = saved["state"]["exp_avg"][:-1]
    with pytest.raises(ValueError, match="Invalid state array 'exp_avg'"):
        Adam(params).load_state_dict(saved)
    with pytest.raises(ValueError, match="Invalid hyperparameters"):
        Adam(params).load_state_dict({"state": {}, "hparams": {"alpha": 1.0}})


@needs_torch
def test_defaults_and_options_are_edgeag_optims():
    for name, engine_cls in ENGINE_CLASSES.items():
        torch_sig = inspect.signature(TORCH_CLASSES[name]).parameters
        engine_sig = inspect.signature(engine_cls).parameters
        torch_defaults = {k: v.default for k, v in torch_sig.items()
                          if k != "params"}
        engine_defaults = {k: engine_sig[k].default for k in torch_defaults}
        assert engine_defaults == torch_defaults == engine_cls.defaults


def test_registry_capabilities_and_unknown_names():
    assert registry.numpy_names() == ["alphagrad", "adam", "sgd"]
    layout = Layout.from_shapes(SHAPES)
    built = {n: flat.build(n, layout.zeros()) for n in registry.numpy_names()}
    assert [n for n, o in built.items() if o.clips_gradients] == ["adam", "sgd"]
    assert [n for n, o in built.items() if o.fusable_into_backward] == ["alphagrad"]
    adam = flat.build("adam", layout.zeros(), lr=0.1, alpha=3.0, momentum=0.9)
    assert adam.hparams["lr"] == 0.1 and "alpha" not in adam.hparams
    assert UpdatePath.for_optimizer(adam, flat=False).kind == "flat"
    ag = flat.build("alphagrad", layout.zeros(), lr=0.1)
    assert UpdatePath.for_optimizer(ag, flat=False).kind == "factored"
    ag_momentum = flat.build("alphagrad", layout.zeros(), lr=0.1, momentum=0.9)
    assert UpdatePath.for_optimizer(ag_momentum, flat=False).kind == "fused"
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamw' \(accepted: alphagrad, "
                                         r"adam, sgd\)"):
        flat.build("adamw", layout.zeros())
    with pytest.raises(ValueError, match="not a segment"):
        ag.update("nope", np.zeros(3, np.float32))


@needs_torch
@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clipped / left alone
def test_clip_grad_norm_equals_torch(max_norm):
    layout = Layout.from_shapes(SHAPES, np.float64)
    grads = layout.wrap(np.random.default_rng(4).standard_normal(layout.size))
    tensors = [torch.nn.Parameter(torch.zeros(s.shape, dtype=torch.float64)) for s in layout]
    for t, s in zip(tensors, layout):
        t.grad = torch.from_numpy(grads[s.name].copy())
    want = torch.nn.utils.clip_grad_norm_(tensors, max_norm).item()
    before = grads.data.copy()
    assert clip_grad_norm_(grads, max_norm) == pytest.approx(want, rel=1e-14)
    for t, s in zip(tensors, layout):
        np.testing.assert_allclose(grads[s.name], t.grad.numpy(), rtol=0, atol=1e-15)
    assert np.array_equal(grads.data, before) == (max_norm > want)


# --- validation ---------------------------------------------------------------------

BAD = [
    ("alphagrad", dict(lr=-1e-3), r"Invalid lr value: -0\.001"),
    ("alphagrad", dict(lr=float("nan")), r"Invalid lr value: nan"),
    ("alphagrad", dict(alpha=0.0), r"Invalid alpha value: 0\.0"),
    ("alphagrad", dict(alpha=float("inf")), r"Invalid alpha value: inf"),
    ("alphagrad", dict(eps=0.0),
     r"Invalid eps value: 0\.0 \(accepted: a finite number in \(0, inf\)\)"),
    ("alphagrad", dict(momentum=1.0),
     r"Invalid momentum value: 1\.0 \(accepted: a finite number in \[0, 1\)\)"),
    ("alphagrad", dict(dampening=1.5), r"Invalid dampening value: 1\.5"),
    ("alphagrad", dict(weight_decay=-1.0), r"Invalid weight_decay value: -1\.0"),
    ("alphagrad", dict(nesterov=True), r"Invalid nesterov value: True \(nesterov requires"),
    ("alphagrad", dict(nesterov=True, momentum=0.9, dampening=0.1), r"Invalid nesterov value"),
    ("alphagrad", dict(lr=True), r"Invalid lr value: True"),
    ("adam", dict(lr=-1.0), r"Invalid lr value: -1\.0"),
    ("adam", dict(eps=-1e-8), r"Invalid eps value: -1e-08"),
    ("adam", dict(betas=(1.0, 0.999)), r"Invalid beta1 value: 1\.0"),
    ("adam", dict(betas=(0.9, -0.1)), r"Invalid beta2 value: -0\.1"),
    ("adam", dict(weight_decay=-0.5), r"Invalid weight_decay value: -0\.5"),
    ("sgd", dict(lr=float("inf")), r"Invalid lr value: inf"),
    ("sgd", dict(momentum=-0.1), r"Invalid momentum value: -0\.1"),
    ("sgd", dict(dampening=2.0), r"Invalid dampening value: 2\.0"),
    ("sgd", dict(weight_decay=-1.0), r"Invalid weight_decay value: -1\.0"),
    ("sgd", dict(nesterov=True), r"Invalid nesterov value: True"),
]


@pytest.mark.parametrize("name,kwargs,message", BAD)
def test_bad_hyperparameters_raise_the_messages(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ENGINE_CLASSES[name](Layout.from_shapes(SHAPES).zeros(), **kwargs)


@needs_torch
@pytest.mark.parametrize("name,kwargs,message", BAD)
def test_bad_hyperparameters_raise_edgeag_optims_messages(name, kwargs, message):
    with pytest.raises(ValueError, match=message) as engine_error:
        ENGINE_CLASSES[name](Layout.from_shapes(SHAPES).zeros(), **kwargs)
    with pytest.raises(ValueError, match=message) as torch_error:
        TORCH_CLASSES[name]([torch.nn.Parameter(torch.zeros(2))], **kwargs)
    assert str(engine_error.value) == str(torch_error.value)


def test_set_lr_is_validated_and_used():
    _, params, opt = run_engine("alphagrad", steps=0)
    with pytest.raises(ValueError, match=r"Invalid lr value: -1"):
        opt.set_lr(-1)
    opt.set_lr(0.0)
    before = params.data.copy()
    grads = params.layout.wrap(np.ones(params.layout.size))
    opt.step(grads)
    assert np.array_equal(params.data, before)
    with pytest.raises(ValueError, match="Invalid block_numel value: 0"):
        AlphaGrad(params, block_numel=0)

