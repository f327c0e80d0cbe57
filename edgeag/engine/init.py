"""Parameter initialisation from numpy's seeded generator (`np.random.Generator`).

`orthogonal_` is torch's ``nn.init.orthogonal_`` algorithm (a standard normal draw, QR,
the sign correction ``Q diag(sign(diag R))``, the transpose when rows < cols, times the
gain), drawing from a numpy generator instead of torch's stream. Square weights of more
than `LEAN_ORTHOGONAL_NUMEL` values are factorised in their own memory by LAPACK
(``?geqrf`` then ``?orgqr`` through `scipy.linalg.lapack`, imported only for them), so
an 8192 x 8192 weight needs no extra copies of itself.
"""

from __future__ import annotations

import math

import numpy as np

from edgeag.engine.layout import FlatBuffer
from edgeag.engine.mlp import MLP

__all__ = ["LEAN_ORTHOGONAL_NUMEL", "init_bytes", "init_linear_default", "init_orthogonal",
           "lean_orthogonal_", "orthogonal_"]

LEAN_ORTHOGONAL_NUMEL = 1 << 19
"""Square weights above this many values are initialised by `lean_orthogonal_`. Where
the two cost the same: numpy's QR holds ~10 weight-sized arrays while it runs (`init_bytes`),
the lean path ~3 MiB and ~800 bytes per row of LAPACK workspace once
``scipy.linalg.lapack`` (~22 MiB of anonymous memory, for good) is imported."""

PLAIN_INIT_COPIES = 10
"""Weight-sized arrays numpy's QR path holds at its peak (measured 9.6 at 256-1024)."""
LEAN_INIT_BYTES = 3 << 20
LEAN_INIT_ROW_BYTES = 800
SCIPY_LAPACK_IMPORT_BYTES = 22 << 20
"""Anonymous memory that importing ``scipy.linalg.lapack`` adds (measured, x86-64)."""


def init_bytes(shape: tuple[int, int], itemsize: int,
               lean_numel: int = LEAN_ORTHOGONAL_NUMEL) -> tuple[int, bool]:
    """(the extra memory `orthogonal_` needs at its peak for a weight of ``shape``,
    whether it takes the lean path, which also needs ``scipy.linalg.lapack`` imported)."""
    rows, cols = shape
    if rows == cols and rows * cols > lean_numel:
        return LEAN_INIT_BYTES + LEAN_INIT_ROW_BYTES * rows, True
    return PLAIN_INIT_COPIES * rows * cols * itemsize, False

TRANSPOSE_BLOCK = 512


def orthogonal_(weight: np.ndarray, gain: float, rng: np.random.Generator, *,
                lean_numel: int = LEAN_ORTHOGONAL_NUMEL) -> np.ndarray:
    """Fill the 2-d ``weight`` with an orthogonal matrix times ``gain`` (``W W^T = gain^2 I``
    for rows <= cols, ``W^T W = gain^2 I`` otherwise) and return it. A square weight of
    more than ``lean_numel`` values goes through `lean_orthogonal_`: the same values."""
    rows, cols = weight.shape
    if rows == cols and weight.size > lean_numel:
        return lean_orthogonal_(weight, gain, rng)
    if weight.size == 0:
        return weight
    flat = _standard_normal(rng, (rows, cols), weight.dtype)
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diagonal(r))
    if rows < cols:
        q = q.T
    np.multiply(q, gain, out=weight)
    return weight


def lean_orthogonal_(weight: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    """`orthogonal_` for a square C-contiguous ``weight``, in the weight's own memory: the
    same draw (row-major), transposed in place so LAPACK sees it column-major, ``?geqrf``
    and ``?orgqr`` overwriting it, the sign correction of Q's columns, the transpose
    back. Extra memory: LAPACK's workspace and two transpose blocks."""
    n = weight.shape[0]
    if weight.ndim != 2 or weight.shape != (n, n) or not weight.flags.c_contiguous \
            or weight.dtype not in (np.float32, np.float64):
        raise ValueError(f"lean_orthogonal_: needs a C-contiguous square float32 or float64 "
                         f"matrix, got shape {weight.shape}, dtype {weight.dtype}")
    from scipy.linalg import lapack  # only for large weights: the import costs memory

    rng.standard_normal(out=weight, dtype=weight.dtype)  # G, row-major: the same draw
    _transpose_square_(weight)                             # storage holds G column-major
    a = weight.T                                           # G, Fortran-contiguous
    geqrf, orgqr = lapack.get_lapack_funcs(("geqrf", "orgqr"), (a,))
    qr, tau, _, info = geqrf(a, overwrite_a=True)
    _check(info, "geqrf", qr, a)
    sign = np.sign(np.diagonal(qr)).astype(weight.dtype)
    q, _, info = orgqr(qr, tau, overwrite_a=True)
    _check(info, "orgqr", q, a)
    q *= sign                                              # Q diag(sign(diag R)): columns
    _transpose_square_(weight)                             # back to row-major
    weight *= gain
    return weight


def _check(info: int, name: str, result: np.ndarray, a: np.ndarray) -> None:
    if info != 0:
        raise RuntimeError(f"lean_orthogonal_: LAPACK {name} failed (info={info})")
    if not np.shares_memory(result, a):
        raise RuntimeError(f"lean_orthogonal_: LAPACK {name} did not work in place")


def _transpose_square_(m: np.ndarray, block: int = TRANSPOSE_BLOCK) -> None:
    """Transpose a square matrix in place, one block pair at a time."""
    n = m.shape[0]
    for i in range(0, n, block):
        diag = m[i:i + block, i:i + block]
        diag[...] = diag.T.copy()
        for j in range(i + block, n, block):
            upper, lower = m[i:i + block, j:j + block], m[j:j + block, i:i + block]
            tmp = upper.copy()
            upper[...] = lower.T
            lower[...] = tmp.T


def _standard_normal(rng: np.random.Generator, shape: tuple[int, int], dtype) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.dtype(dtype))


def init_orthogonal(params: FlatBuffer, mlp: MLP, rng: np.random.Generator, *,
                    last_gain: float, hidden_gain: float = math.sqrt(2),
                    lean_numel: int = LEAN_ORTHOGONAL_NUMEL) -> None:
    """CleanRL's and SB3's PPO initialisation: orthogonal weights (``hidden_gain`` for the
    hidden layers, ``last_gain`` for the output layer), zero biases, layers in order."""
    for i in range(mlp.depth):
        gain = last_gain if i == mlp.depth - 1 else hidden_gain
        orthogonal_(params[mlp.weight(i)], gain, rng, lean_numel=lean_numel)
        params[mlp.bias(i)][...] = 0


def init_linear_default(params: FlatBuffer, mlp: MLP, rng: np.random.Generator) -> None:
    """``nn.Linear``'s default initialisation (DQN's and TD3's networks): weight and bias
    uniform in ``[-1/sqrt(in), 1/sqrt(in))``."""
    for i in range(mlp.depth):
        weight, bias = params[mlp.weight(i)], params[mlp.bias(i)]
        bound = 1.0 / math.sqrt(weight.shape[1])
        weight[...] = rng.uniform(-bound, bound, weight.shape)
        bias[...] = rng.uniform(-bound, bound, bias.shape)
