"""The norm of a gradient given as factors, and the row blocks it is formed in.

A linear layer's weight gradient is ``d^T x`` (``d`` = d loss / d output ``[B, out]``,
``x`` = the layer's input ``[B, in]``). Stateless AlphaGrad needs only its norm and its
elementwise tanh, so the gradient never has to exist whole: the norm comes from the
factors, the update from one block of rows at a time. A layer larger than the rest of
the network then costs no gradient memory, only a block (`outer_temporary_bytes`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["OUTER_BLOCK_NUMEL", "outer_norm", "outer_temporary_bytes", "row_blocks",
           "uses_gram"]

OUTER_BLOCK_NUMEL = 1 << 20
"""Values of the gradient formed at a time (4 MiB in float32), and Gram entries formed at
a time (times 1/4: three float64 arrays of that size)."""


def row_blocks(n_rows: int, n_cols: int, block_numel: int = OUTER_BLOCK_NUMEL
               ) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges of at most ``block_numel`` values each (one row at least)."""
    rows = max(1, block_numel // max(n_cols, 1))
    return [(r, min(r + rows, n_rows)) for r in range(0, n_rows, rows)]


def uses_gram(batch: int, n_out: int, n_in: int, block_numel: int = OUTER_BLOCK_NUMEL) -> bool:
    """Whether `outer_norm` takes the Gram path: a batch small against the layer."""
    return batch * (n_out + n_in) <= n_out * n_in and batch * batch <= block_numel // 4


def outer_norm(d: np.ndarray, x: np.ndarray, block_numel: int = OUTER_BLOCK_NUMEL) -> float:
    """``||d^T x||_F`` without forming ``d^T x``.

    For a small batch (`uses_gram`) as ``sum((d d^T) * (x x^T))``, in float64: the Gram
    matrix of ``d`` accumulated over column chunks, then its inner product with each
    column chunk's Gram matrix of ``x`` (the off-diagonal terms cancel where per-sample
    gradients do; float64 keeps the difference). Otherwise the squares of the
    gradient's row blocks summed in float64.
    """
    batch, n_out = d.shape
    n_in = x.shape[1]
    if uses_gram(batch, n_out, n_in, block_numel):
        chunk = max(1, block_numel // 4 // max(batch, 1))
        scratch = np.empty(batch * batch)
        needs_copy = d.dtype != np.float64 or x.dtype != np.float64
        copy = np.empty(batch * min(chunk, max(n_out, n_in))) if needs_copy else None
        gram_d = np.zeros((batch, batch))
        for part in _gram_parts(d, chunk, scratch, copy):
            gram_d += part
        total = 0.0
        for part in _gram_parts(x, chunk, scratch, copy):
            total += float(np.vdot(gram_d, part))
        return math.sqrt(max(total, 0.0))
    total = 0.0
    block = np.empty(min(block_numel, n_out * n_in) or 1, dtype=np.result_type(d, x))
    for r0, r1 in row_blocks(n_out, n_in, block_numel):
        g = block[:(r1 - r0) * n_in].reshape(r1 - r0, n_in)
        np.matmul(d[:, r0:r1].T, x, out=g)
        np.square(g, out=g)
        total += float(np.sum(g, dtype=np.float64))
    return math.sqrt(total)


def _gram_parts(a: np.ndarray, chunk: int, scratch: np.ndarray, copy: np.ndarray):
    """``a[:, k:k+chunk] a[:, k:k+chunk]^T`` in float64 for each column chunk, each written
    into ``scratch`` (float64 copies of a float32 ``a`` go through ``copy``)."""
    batch, n = a.shape
    out = scratch.reshape(batch, batch)
    for k in range(0, n, chunk):
        part = a[:, k:k + chunk]
        if part.dtype != np.float64:
            tmp = copy[:part.size].reshape(part.shape)
            tmp[...] = part
            part = tmp
        np.matmul(part, part.T, out=out)
        yield out


def outer_temporary_bytes(itemsize: int = 4, block_numel: int = OUTER_BLOCK_NUMEL) -> int:
    """The most `edgeag.optim.flat.alphagrad_outer_` allocates at once, whatever the layer
    and batch: one
    gradient block, or (the Gram path) three float64 arrays of ``block_numel / 4``."""
    return max(itemsize, 6) * block_numel
