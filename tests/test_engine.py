"""The numpy engine's layout, MLPs, initialisation and BLAS threads, against torch in float64.
The comparisons with torch are skipped where torch is not installed; the rest runs."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from optional_torch import needs_torch, torch
from tracing import traced_peak

import edgeag.engine
from edgeag.engine import (
    MLP,
    Layout,
    UpdatePath,
    activation_bytes,
    blas_threads,
    init_linear_default,
    init_orthogonal,
    lean_orthogonal_,
    orthogonal_,
    set_blas_threads,
)
from edgeag.engine import threads as threads_module
from edgeag.optim.flat import AlphaGrad


def torch_mlp(mlp: MLP, seed: int) -> torch.nn.Sequential:
    """The torch module `mlp` describes, float64, torch's default initialisation."""
    torch.manual_seed(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(mlp.sizes[:-1], mlp.sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out, dtype=torch.float64))
        if i < mlp.depth - 1:
            layers.append(torch.nn.Tanh() if mlp.activation == "tanh" else torch.nn.ReLU())
    if mlp.output == "tanh":
        layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def engine_copy(mlp: MLP, net: torch.nn.Sequential):
    """A float64 `FlatBuffer` holding ``net``'s parameters, loaded by name."""
    layout = Layout.from_shapes(mlp.shapes(), np.float64)
    params = layout.zeros()
    prefix = f"{mlp.prefix}." if mlp.prefix else ""
    params.load_state_dict({prefix + k: v.detach().numpy() for k, v in net.state_dict().items()})
    return layout, params


MLPS = [
    MLP((5, 16, 12, 3), "tanh", prefix="actor"),
    MLP((6, 32, 1), "relu", prefix="critic"),
    MLP((3, 8, 9, 7, 2), "relu", "tanh", prefix="net"),
    MLP((4, 3), "tanh", "tanh"),
    MLP((7, 20, 20, 20, 4), "tanh", "tanh", prefix="deep"),
]


def _id(m: MLP) -> str:
    return f"{m.activation}-{m.output}-{'x'.join(map(str, m.sizes))}"


def torch_reference(mlp: MLP, seed: int = 0, batch: int = 33):
    net = torch_mlp(mlp, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, mlp.sizes[0], generator=g, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(batch, mlp.sizes[-1], generator=g, dtype=torch.float64)
    out = net(x)
    out.backward(grad_out)
    prefix = f"{mlp.prefix}." if mlp.prefix else ""
    grads = {prefix + n: p.grad.numpy() for n, p in net.named_parameters()}
    return net, x.detach().numpy(), grad_out.numpy(), out.detach().numpy(), grads, x.grad.numpy()


@needs_torch
@pytest.mark.parametrize("mlp", MLPS, ids=_id)
def test_forward_and_flat_backward_equal_autograd(mlp):
    net, x, grad_out, out, expected, expected_input = torch_reference(mlp)
    layout, params = engine_copy(mlp, net)
    acts = mlp.forward(params, x)
    np.testing.assert_allclose(acts[-1], out, rtol=0, atol=1e-12)
    grads = layout.zeros()
    grads.data[:] = np.nan  # every value must be written
    d_input = mlp.backward(params, acts, grad_out, grads=grads, input_grad=True)
    for name, grad in expected.items():
        np.testing.assert_allclose(grads[name], grad, rtol=0, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(d_input, expected_input, rtol=0, atol=1e-12)
    assert mlp.backward(params, acts, grad_out, grads=grads) is None


@needs_torch
@pytest.mark.parametrize("mlp", MLPS, ids=_id)
def test_sink_gets_each_gradient_once_even_when_it_updates_in_place(mlp):
    net, x, grad_out, _, expected, expected_input = torch_reference(mlp, seed=3)
    _, params = engine_copy(mlp, net)
    acts = mlp.forward(params, x)
    seen = []

    def sink(name, grad):  # zero the parameter as soon as its gradient is handed over
        seen.append((name, grad.copy()))
        params[name][...] = 0.0

    d_input = mlp.backward(params, acts, grad_out, sink=sink, input_grad=True)
    assert [n for n, _ in seen] == [n for i in reversed(range(mlp.depth))
                                    for n in (mlp.weight(i), mlp.bias(i))]
    for name, grad in seen:
        np.testing.assert_allclose(grad, expected[name], rtol=0, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(d_input, expected_input, rtol=0, atol=1e-12)


@needs_torch
def test_outer_receives_the_factors_of_large_weights_only():
    mlp = MLPS[0]  # weights 16x5, 12x16, 3x12
    net, x, grad_out, _, expected, _ = torch_reference(mlp, seed=4)
    _, params = engine_copy(mlp, net)
    acts = mlp.forward(params, x)
    formed, factored = {}, {}
    mlp.backward(params, acts, grad_out, sink=lambda n, g: formed.__setitem__(n, g.copy()),
                 outer=lambda n, d, xx: factored.__setitem__(n, d.T @ xx), outer_numel=79)
    assert set(factored) == {"actor.0.weight", "actor.2.weight"}  # 80 and 192 values
    assert set(formed) == set(expected) - set(factored)
    for name, grad in {**formed, **factored}.items():
        np.testing.assert_allclose(grad, expected[name], rtol=0, atol=1e-12, err_msg=name)


def test_backward_arguments_are_checked():
    mlp = MLP((2, 3))
    layout = Layout.from_shapes(mlp.shapes())
    params = layout.zeros()
    acts = mlp.forward(params, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="pass grads= or sink=, or ask for input_grad"):
        mlp.backward(params, acts, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at most one of grads= or sink="):
        mlp.backward(params, acts, np.zeros((4, 3)), grads=layout.zeros(), sink=print)
    with pytest.raises(ValueError, match="outer= needs sink="):
        mlp.backward(params, acts, np.zeros((4, 3)), grads=layout.zeros(), outer=print)
    for kwargs, message in ((dict(sizes=(3,)), "Invalid sizes value"),
                            (dict(sizes=(3, 0, 2)), "Invalid sizes value"),
                            (dict(sizes=(3, 2), activation="gelu"), "Invalid activation value"),
                            (dict(sizes=(3, 2), output="softmax"), "Invalid output value")):
        with pytest.raises(ValueError, match=message):
            MLP(**kwargs)


# --- layout -------------------------------------------------------------------------

@needs_torch
def test_layout_views_share_one_buffer_and_round_trip_a_torch_state_dict():
    mlp = MLPS[2]
    net = torch_mlp(mlp, 0)
    layout, params = engine_copy(mlp, net)
    assert layout.names == ["net." + k for k in net.state_dict()]
    assert layout.size == sum(p.numel() for p in net.parameters())
    assert layout.nbytes == 8 * layout.size
    for name, view in params.views.items():
        assert np.shares_memory(view, params.data)
        assert view.shape == layout[name].shape
    state = params.state_dict()
    net2 = torch_mlp(mlp, 9)
    net2.load_state_dict({k.removeprefix("net."): torch.from_numpy(v) for k, v in state.items()})
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="missing"):
        params.load_state_dict({})
    with pytest.raises(ValueError, match="Invalid dtype value: float16"):
        Layout.from_shapes([("w", (2,))], np.float16)
    with pytest.raises(ValueError, match="already in the layout"):
        Layout.from_shapes([("w", (2,)), ("w", (3,))])


def test_zero_size_and_scalar_segments():
    layout = Layout.from_shapes([("a", (3, 2)), ("empty", (0, 5)), ("s", ()), ("b", (4,))])
    buf = layout.zeros()
    assert layout.size == 11 and buf["empty"].shape == (0, 5) and buf["s"].shape == ()
    buf["s"][...] = 2.5
    assert buf.data[6] == 2.5
    assert [v.size for v in buf.flat_views] == [6, 0, 1, 4]


# --- initialisation -----------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("shape", [(64, 4), (4, 64), (40, 40), (1, 7), (7, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_orthogonal_is_orthogonal_and_follows_torchs_algorithm(shape, dtype):
    gain = 1.7
    w = orthogonal_(np.empty(shape, dtype), gain, np.random.default_rng(5))
    rows, cols = shape
    gram = w @ w.T if rows <= cols else w.T @ w
    atol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(min(shape)), rtol=0, atol=atol)
    # torch's steps on the same draw: QR of G (G^T when rows < cols), Q diag(sign(diag R))
    g = torch.from_numpy(np.random.default_rng(5).standard_normal(shape, dtype=dtype))
    if rows < cols:
        g = g.t()
    q, r = torch.linalg.qr(g)
    q = q * torch.diag(r).sign()
    if rows < cols:
        q = q.t()
    np.testing.assert_allclose(w, (q * gain).numpy(), rtol=0, atol=10 * atol)


def test_orthogonal_is_deterministic_under_a_seed():
    a = orthogonal_(np.empty((30, 20)), 1.0, np.random.default_rng(11))
    b = orthogonal_(np.empty((30, 20)), 1.0, np.random.default_rng(11))
    c = orthogonal_(np.empty((30, 20)), 1.0, np.random.default_rng(12))
    assert np.array_equal(a, b) and not np.allclose(a, c)


@pytest.mark.parametrize("n", [300, 700])  # one transpose block; blocks of 512 and a remainder
@pytest.mark.parametrize("dtype,atol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_lean_orthogonal_equals_the_plain_path_for_the_same_draw(n, dtype, atol):
    plain = orthogonal_(np.empty((n, n), dtype), 1.3, np.random.default_rng(2),
                        lean_numel=n * n)
    lean = orthogonal_(np.empty((n, n), dtype), 1.3, np.random.default_rng(2),
                       lean_numel=n * n - 1)
    np.testing.assert_allclose(lean, plain, rtol=0, atol=atol)
    np.testing.assert_allclose(lean @ lean.T, 1.69 * np.eye(n), rtol=0, atol=100 * atol)
    with pytest.raises(ValueError, match="square"):
        lean_orthogonal_(np.empty((3, 4)), 1.0, np.random.default_rng(0))


def test_lean_orthogonal_works_in_the_weights_memory():
    n = 2048  # 16 MiB in float32
    weight = np.empty((n, n), np.float32)
    lean_orthogonal_(np.empty((8, 8), np.float32), 1.0, np.random.default_rng(0))  # scipy loaded
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        lean_orthogonal_(weight, 1.0, np.random.default_rng(0))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * weight.nbytes
    np.testing.assert_allclose(weight[:64] @ weight[:64].T, np.eye(64), rtol=0, atol=1e-4)


def test_init_orthogonal_and_default_linear_init():
    mlp = MLP((4, 64, 64, 2), prefix="actor")
    params = Layout.from_shapes(mlp.shapes(), np.float64).zeros()
    params.data[:] = 1.0
    init_orthogonal(params, mlp, np.random.default_rng(0), last_gain=0.01)
    w0, w2, w4 = (params[mlp.weight(i)] for i in range(3))
    np.testing.assert_allclose(w0.T @ w0, 2 * np.eye(4), atol=1e-12)
    np.testing.assert_allclose(w2 @ w2.T, 2 * np.eye(64), atol=1e-12)
    np.testing.assert_allclose(w4 @ w4.T, 1e-4 * np.eye(2), atol=1e-12)
    assert all(not params[mlp.bias(i)].any() for i in range(3))
    init_linear_default(params, mlp, np.random.default_rng(0))
    for i, fan_in in enumerate((4, 64, 64)):
        for name in (mlp.weight(i), mlp.bias(i)):
            assert np.abs(params[name]).max() <= fan_in ** -0.5
            assert np.abs(params[name]).max() > 0.5 * fan_in ** -0.5


# --- memory accounting --------------------------------------------------------------

UFUNC_BUFFER_BYTES = 8192 * 8 + 4096
"""numpy's ufunc iteration buffer (8192 elements), which a broadcast in-place add
allocates for the duration of the call, and a few objects."""


_peak = traced_peak


def test_activation_bytes_are_what_forward_keeps():
    actor, critic = MLP((8, 64, 64, 3), prefix="a"), MLP((8, 64, 64, 1), "relu", prefix="c")
    params = Layout.from_shapes(actor.shapes() + critic.shapes()).zeros()
    x = np.ones((256, 8), np.float32)
    kept = [a for m in (actor, critic) for a in m.forward(params, x)[1:]]
    assert sum(a.nbytes for a in kept) == activation_bytes([actor, critic], 256, 4)
    x = np.ones((4096, 8), np.float32)
    peak = _peak(lambda: actor.forward(params, x))
    expected = actor.activation_bytes(4096, 4)
    assert expected <= peak <= expected + UFUNC_BUFFER_BYTES


@pytest.mark.parametrize("kind", ["fused", "factored"])
def test_gradient_bytes_are_the_largest_gradient_the_sink_gets(kind):
    mlp = MLP((8, 40, 30, 2), prefix="net")  # weights of 320, 1200 and 60 values
    layout = Layout.from_shapes(mlp.shapes())
    params = layout.zeros()
    opt = AlphaGrad(params, lr=0.01)
    path = UpdatePath(kind, outer_numel=300)
    sizes = []
    opt_update, opt_outer = opt.update, opt.update_outer
    opt.update = lambda n, g: (sizes.append(g.nbytes), opt_update(n, g))
    opt.update_outer = lambda n, d, x: (sizes.append(0), opt_outer(n, d, x))
    x = np.ones((16, 8), np.float32)
    path.backward(mlp, params, mlp.forward(params, x), np.ones((16, 2), np.float32), opt)
    assert max(sizes) == path.gradient_bytes(layout, [mlp])
    assert path.gradient_bytes(layout, [mlp]) == (1200 * 4 if kind == "fused" else 60 * 4)
    assert UpdatePath("flat").gradient_bytes(layout, [mlp]) == layout.nbytes
    items = path.memory_items(opt, [mlp], batch=16)
    assert items["params"] == layout.nbytes and items["optimizer_state"] == 0
    assert items["activations"] == 16 * (40 + 30 + 2) * 4


# --- BLAS threads and the torch-free import -----------------------------------------

def test_set_blas_threads_limits_and_reports():
    before = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
    while threads_module._LIMITS:  # a run earlier in this process may have set a limit
        threads_module._LIMITS.pop().restore_original_limits()
    original = blas_threads().threads
    try:
        info = set_blas_threads(1)
        assert info.threads == 1 and blas_threads().threads == 1
        assert info.libraries[0][0] in ("openblas", "mkl", "blis", "flexiblas")
        assert "1 thread" in info.describe()
        with pytest.raises(ValueError,
                           match=r"Invalid threads value: 0 \(accepted: an integer >= 1\)"):
            set_blas_threads(0)
    finally:
        while threads_module._LIMITS:
            threads_module._LIMITS.pop().restore_original_limits()
    assert blas_threads().threads == original
    assert {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")} == before


def test_engine_never_imports_torch():
    modules = ["edgeag.optim", "edgeag.optim.registry", "edgeag.optim.rules",
               "edgeag.optim.flat", "edgeag.optim.factored", "edgeag.optim.reference"] + [
        m.name for m in pkgutil.walk_packages(edgeag.engine.__path__, "edgeag.engine.")]
    assert {"edgeag.engine.update_path", "edgeag.engine.mlp", "edgeag.engine.init"} <= set(modules)
    code = textwrap.dedent(f"""
        import importlib, sys
        import numpy as np
        for name in {modules!r}:
            importlib.import_module(name)
        from edgeag.engine import MLP, Layout, UpdatePath, init_orthogonal, set_blas_threads
        from edgeag.optim import flat, registry
        set_blas_threads(1)
        mlp = MLP((4, 1100, 1100, 2), prefix="a")   # a hidden weight above 1M values
        params = Layout.from_shapes(mlp.shapes()).zeros()
        init_orthogonal(params, mlp, np.random.default_rng(0), last_gain=0.01)
        x = np.ones((8, 4), np.float32)
        for name in registry.numpy_names():
            opt = flat.build(name, params, lr=1e-3, momentum=0.9)
            for whole in (True, False):
                path = UpdatePath.for_optimizer(opt, flat=whole)
                grads = params.layout.zeros()
                path.backward(mlp, params, mlp.forward(params, x), np.ones((8, 2), np.float32),
                              opt, grads)
                path.finish(opt, grads, max_grad_norm=0.5)
            opt.load_state_dict(opt.state_dict())
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_docstring_example_runs():
    import doctest

    result = doctest.testmod(edgeag.engine)
    assert result.attempted > 10 and result.failed == 0
