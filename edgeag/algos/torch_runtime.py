"""What every algorithm's torch engine shares: the runtime it adds to a plan, its threads
and warm-up, dtypes, and the MLPs and orthogonal initialisation its networks are built
from. Each algorithm's own torch networks live in its folder (``torch_engine.py``)."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from edgeag.engine.init import LEAN_ORTHOGONAL_NUMEL
from edgeag.memory import RUNTIME_BYTES, PlanItem

DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
"""The networks' numpy dtype -> torch's."""

RUNTIME = PlanItem("torch runtime", RUNTIME_BYTES,
                   "autograd, kernels' buffers first used by training (measured)")
"""What a torch training loop adds beyond its tensors (`edgeag.memory.RUNTIME_BYTES`)."""


def orthogonal_(weight: Tensor, gain: float) -> Tensor:
    """``nn.init.orthogonal_``, with the same values; a square weight above
    `edgeag.engine.init.LEAN_ORTHOGONAL_NUMEL` values (the numpy engine's threshold too) goes
    through
    `lean_orthogonal_`, which needs ~0.3x the matrix of extra memory where torch's QR
    takes ~3x (8192 x 8192: +67 MiB against +818 MiB) and would set a large policy's
    peak RSS."""
    rows, cols = weight.shape
    if rows == cols and weight.numel() > LEAN_ORTHOGONAL_NUMEL:
        return lean_orthogonal_(weight, gain)
    return nn.init.orthogonal_(weight, gain)


@torch.no_grad()
def lean_orthogonal_(weight: Tensor, gain: float) -> Tensor:
    """``nn.init.orthogonal_(weight, gain)`` for a square ``weight``, computed in the
    weight's own memory: the same normal draw, the QR factorisation in place (LAPACK
    geqrf then orgqr on the weight viewed column-major, with in-place square
    transposes around it), the same sign correction ``Q diag(sign(diag R))``. Tested
    equal to ``nn.init.orthogonal_`` under the same seed."""
    n = weight.shape[0]
    if weight.shape != (n, n) or not weight.is_contiguous():
        raise ValueError(f"lean_orthogonal_: needs a contiguous square matrix, got "
                         f"{tuple(weight.shape)}")
    weight.normal_(0, 1)             # G, row-major: torch's draw
    _transpose_square_(weight)       # storage holds G column-major
    a = weight.t()                   # G, Fortran-contiguous: LAPACK works on it in place
    tau = weight.new_empty(n)
    torch.geqrf(a, out=(a, tau))     # R above the diagonal, reflectors below
    sign = a.diagonal().sign()
    torch.linalg.householder_product(a, tau, out=a)  # Q
    a.mul_(sign)                     # Q diag(sign(diag R)): columns
    _transpose_square_(weight)       # back to row-major
    return weight.mul_(gain)


def _transpose_square_(m: Tensor, block: int = 512) -> None:
    """Transpose a square matrix in place, one block pair at a time."""
    n = m.shape[0]
    for i in range(0, n, block):
        diag = m[i:i + block, i:i + block]
        diag.copy_(diag.t().clone())
        for j in range(i + block, n, block):
            upper, lower = m[i:i + block, j:j + block], m[j:j + block, i:i + block]
            tmp = upper.clone()
            upper.copy_(lower.t())
            lower.copy_(tmp.t())


def prepare(threads: int) -> str:
    """torch's threads for the run, then one forward/backward big enough to start its
    thread pool and its matmul kernels: the first autograd call maps code and allocates
    pools and per-thread buffers that belong in the floor, not in the plan."""
    torch.set_num_threads(threads)
    layer = nn.Linear(256, 256)
    torch.tanh(layer(torch.zeros(256, 256))).sum().backward()
    return f"torch engine ({threads} thread{'s' if threads != 1 else ''})"


def mlp(sizes: list[int], last_std: float) -> nn.Sequential:
    """Tanh MLP with orthogonal initialisation (gain sqrt(2) for hidden layers,
    ``last_std`` for the output), zero biases: CleanRL's and SB3's PPO initialisation."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        linear = nn.Linear(n_in, n_out)
        orthogonal_(linear.weight, last_std if last else math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def relu_mlp(sizes: list[int]) -> nn.Sequential:
    """ReLU MLP with torch's default initialisation: the Q-network of CleanRL's and
    SB3's DQN and the actor and critics of their TD3."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def peak_allocated_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes of tensor storage newly allocated (and still alive at the peak) while
    ``fn()`` runs, counted exactly from every op's outputs.

    Imports torch's dispatch machinery (and with it `torch._dynamo`): for benchmarks and
    tests, never for the training path.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class _Tracker(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live: dict[int, int] = {}
            self.current = 0
            self.peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                      if isinstance(t, torch.Tensor)}
            for t in tree_flatten(out)[0]:
                if not isinstance(t, torch.Tensor):
                    continue
                storage = t.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes == 0 or key in self.live or key in inputs:  # in place or a view
                    continue
                self.live[key] = nbytes
                self.current += nbytes
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._free, key)
            return out

        def _free(self, key: int) -> None:
            self.current -= self.live.pop(key, 0)

    import gc
    gc.collect()
    tracker = _Tracker()
    with tracker:
        fn()
    return tracker.peak
