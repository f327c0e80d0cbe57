"""Flat parameter layouts: every tensor of a model end to end in one contiguous buffer."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["FlatBuffer", "Layout", "Segment"]

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class Segment:
    """One named tensor of a `Layout`: ``size`` values from ``offset`` on, viewed as ``shape``."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def stop(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Layout:
    """Named segments laid end to end in one buffer of ``dtype`` (float32 or float64).

    Names follow torch's ``state_dict`` keys (``actor.0.weight``), weights are stored
    ``[out, in]`` like ``nn.Linear``, so a checkpoint or an export maps 1:1.
    """

    segments: tuple[Segment, ...]
    dtype: np.dtype = np.dtype(np.float32)

    def __post_init__(self) -> None:
        dtype = np.dtype(self.dtype)
        if dtype not in DTYPES:
            raise ValueError(f"Invalid dtype value: {dtype} (accepted: float32, float64)")
        object.__setattr__(self, "dtype", dtype)
        offset, seen = 0, set()
        for seg in self.segments:
            if seg.name in seen:
                raise ValueError(f"Invalid segment name: {seg.name!r} (accepted: a name not "
                                 f"already in the layout)")
            if seg.offset < offset or any(n < 0 for n in seg.shape):
                raise ValueError(f"Invalid segment {seg.name!r}: offset {seg.offset}, shape "
                                 f"{seg.shape} (accepted: offset >= {offset}, sizes >= 0)")
            seen.add(seg.name)
            offset = seg.stop

    @classmethod
    def from_shapes(cls, shapes: Iterable[tuple[str, tuple[int, ...]]],
                    dtype=np.float32, align: int = 1) -> Layout:
        """A layout of ``(name, shape)`` pairs in the order given, each segment starting
        at a multiple of ``align`` values (the values between segments belong to none and
        stay 0: LAPACK works in place only on 8-byte aligned memory, SIMD likes 64)."""
        if align < 1:
            raise ValueError(f"Invalid align value: {align} (accepted: an integer >= 1)")
        segments, offset = [], 0
        for name, shape in shapes:
            offset = -(-offset // align) * align
            seg = Segment(name, tuple(int(n) for n in shape), offset)
            segments.append(seg)
            offset = seg.stop
        return cls(tuple(segments), np.dtype(dtype))

    @property
    def count(self) -> int:
        """Values in the segments (``size`` less the alignment gaps)."""
        return sum(seg.size for seg in self.segments)

    @property
    def size(self) -> int:
        """Values in the buffer."""
        return self.segments[-1].stop if self.segments else 0

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def names(self) -> list[str]:
        return [seg.name for seg in self.segments]

    def __getitem__(self, name: str) -> Segment:
        return self._by_name()[name]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name()

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __len__(self) -> int:
        return len(self.segments)

    def _by_name(self) -> dict[str, Segment]:
        cached = self.__dict__.get("_index")
        if cached is None:
            cached = {seg.name: seg for seg in self.segments}
            object.__setattr__(self, "_index", cached)
        return cached

    def zeros(self) -> FlatBuffer:
        """A new buffer of this layout, all zeros."""
        return FlatBuffer(self, np.zeros(self.size, self.dtype))

    def wrap(self, data: np.ndarray) -> FlatBuffer:
        """``data`` (1-d, this layout's size and dtype) viewed through this layout."""
        return FlatBuffer(self, data)


class FlatBuffer:
    """One contiguous 1-d array and a view of it per segment (``buf["actor.0.weight"]``).

    The views share the array's memory: writing through a view writes the buffer, and
    an optimizer can update every segment with a few operations on ``data``.
    """

    def __init__(self, layout: Layout, data: np.ndarray) -> None:
        if data.ndim != 1 or data.shape[0] != layout.size or data.dtype != layout.dtype \
                or not data.flags.c_contiguous:
            raise ValueError(f"Invalid buffer: shape {data.shape}, dtype {data.dtype} "
                             f"(accepted: a contiguous 1-d {layout.dtype} array of "
                             f"{layout.size} values)")
        self.layout, self.data = layout, data
        self.views: dict[str, np.ndarray] = {
            seg.name: data[seg.offset:seg.stop].reshape(seg.shape) for seg in layout}
        self.flat_views: list[np.ndarray] = [data[seg.offset:seg.stop] for seg in layout]
        """Each segment as a 1-d view, in layout order."""

    def __getitem__(self, name: str) -> np.ndarray:
        return self.views[name]

    def copy(self) -> FlatBuffer:
        return FlatBuffer(self.layout, self.data.copy())

    def state_dict(self, copy: bool = True) -> dict[str, np.ndarray]:
        """Each segment as its own array, keyed by name: what a checkpoint or torch's
        ``load_state_dict`` takes. ``copy=False`` gives the views themselves (a
        checkpoint written at once needs no second copy of a large policy)."""
        if not copy:
            return dict(self.views)
        return {name: view.copy() for name, view in self.views.items()}

    def load_state_dict(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy ``arrays`` (every segment by name, of its shape) into the buffer."""
        missing = set(self.views) - set(arrays)
        unexpected = set(arrays) - set(self.views)
        if missing or unexpected:
            raise ValueError(f"Invalid state: missing {sorted(missing)}, unexpected "
                             f"{sorted(unexpected)} (accepted: exactly the layout's names)")
        for name, view in self.views.items():
            value = np.asarray(arrays[name])
            if value.shape != view.shape:
                raise ValueError(f"Invalid state for {name!r}: shape {value.shape} (accepted: "
                                 f"{view.shape})")
            view[...] = value


def segment_norms(buf: FlatBuffer) -> np.ndarray:
    """The 2-norm of every segment of ``buf`` (float64, one per segment, 0 for an empty
    one): a dot product per segment view, no temporary."""
    return np.sqrt(np.array([np.dot(v, v) for v in buf.flat_views], dtype=np.float64))


def clip_grad_norm_(grads: FlatBuffer, max_norm: float) -> float:
    """``torch.nn.utils.clip_grad_norm_`` on a gradient buffer: the total norm (the 2-norm
    of the per-segment norms), and every gradient scaled by
    ``max_norm / (total_norm + 1e-6)`` when that factor is below 1. Returns the total norm."""
    total = float(np.sqrt(np.sum(np.square(segment_norms(grads)))))
    factor = max_norm / (total + 1e-6)
    if factor < 1.0:
        grads.data *= factor
    return total
