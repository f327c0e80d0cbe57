"""A uniform sample of the observations a run saw in training, kept in its checkpoint.

``edgeag export`` verifies every artifact (and calibrates int8 ones) on observations,
and a run's own training observations are the states its policy will meet on the
device. Taking them from the checkpoint means an export never steps the env: for an
env that drives a fan or a motor, stepping it moves real hardware.

`ObservationSample` is a reservoir (Li's Algorithm L, ACM TOMS 1994): after ``n``
observations it holds ``min(n, capacity)`` of them, each of the ``n`` equally likely
to be held, at a cost of one comparison per env step apart from the rare
replacements. It draws from a generator of its own, so keeping it changes nothing
else in the run, and its state is in the checkpoint (``observations`` in the state
tree, rows under ``observations/rows``), so a resumed run holds the same sample as an
uninterrupted one.
"""

from __future__ import annotations

import math

import numpy as np

CAPACITY = 1024
"""Observations a run keeps (the verification set's size, `edgeag.export.policy`)."""
STREAM = 0x0B5
"""The sample's generator is ``default_rng([seed, STREAM])``: apart from the run's."""
KEY = "observations"
"""The sample's place in the checkpoint's state tree."""


class ObservationSample:
    """Up to ``capacity`` raw observations (float32 rows) drawn uniformly from every
    observation passed to `add`."""

    def __init__(self, obs_dim: int, seed: int | None, capacity: int = CAPACITY):
        self.capacity = int(capacity)
        self.rows = np.zeros((self.capacity, int(obs_dim)), np.float32)
        self.seen = 0
        self.rng = np.random.default_rng([0 if seed is None else int(seed), STREAM])
        self._w = self._shrink(1.0)
        self._next = self.capacity + self._skip()

    @staticmethod
    def nbytes(obs_dim: int, capacity: int = CAPACITY) -> int:
        """The bytes the sample holds (the memory plan's item)."""
        return capacity * int(obs_dim) * 4

    @property
    def observations(self) -> np.ndarray:
        """The sample so far: ``[min(seen, capacity), obs_dim]`` float32 (a view)."""
        return self.rows[:min(self.seen, self.capacity)]

    def add(self, obs: np.ndarray) -> None:
        """Offer a block of observations (``[n, obs_dim]``, one per env) to the sample."""
        obs = np.asarray(obs)
        start, end = self.seen, self.seen + len(obs)
        if start < self.capacity:
            take = min(end, self.capacity) - start
            self.rows[start:start + take] = obs[:take]
        while self._next < end:  # Algorithm L: the next observation to keep
            self.rows[self.rng.integers(self.capacity)] = obs[self._next - start]
            self._w = self._shrink(self._w)
            self._next += self._skip() + 1
        self.seen = end

    def _shrink(self, w: float) -> float:
        return min(w * math.exp(math.log(1.0 - self.rng.random()) / self.capacity),
                   math.nextafter(1.0, 0.0))

    def _skip(self) -> int:
        """Observations passed over before the next one kept."""
        return int(math.floor(math.log(1.0 - self.rng.random()) / math.log1p(-self._w)))

    def state(self) -> dict:
        return {"rows": self.observations.copy(), "seen": self.seen, "capacity": self.capacity,
                "w": self._w, "next": self._next, "rng": self.rng.bit_generator.state}

    def load(self, state: dict) -> None:
        rows = np.asarray(state["rows"], np.float32)
        if int(state["capacity"]) != self.capacity or rows.shape[1:] != self.rows.shape[1:]:
            raise ValueError(f"the checkpoint's observation sample is {rows.shape[1:]} x "
                             f"{state['capacity']}, not {self.rows.shape[1:]} x {self.capacity}")
        self.rows[:len(rows)] = rows
        self.seen, self._w, self._next = int(state["seen"]), float(state["w"]), int(state["next"])
        self.rng.bit_generator.state = state["rng"]


def sample_item(obs_dim: int):
    """The sample's line in a memory plan (`edgeag.memory.PlanItem`)."""
    from edgeag.memory import PlanItem

    return PlanItem("observation sample", ObservationSample.nbytes(obs_dim),
                    f"{CAPACITY} training observations, what export verifies on")


def observed(obs_dim: int, seed: int | None, first: np.ndarray) -> ObservationSample:
    """A run's fresh sample, holding the envs' first observations (``first``)."""
    sample = ObservationSample(obs_dim, seed)
    sample.add(first)
    return sample


def from_checkpoint(ckpt: dict) -> tuple[np.ndarray, dict] | None:
    """The sample a checkpoint holds, ``(rows, {"source", "count", "seen"})``, or None
    for a checkpoint written before runs kept one (or a run that saw no observation)."""
    state = ckpt.get(KEY)
    if not isinstance(state, dict) or "rows" not in state:
        return None
    rows = np.asarray(state["rows"], np.float32)
    if len(rows) == 0:
        return None
    return rows, {"source": "training", "count": int(len(rows)), "seen": int(state["seen"])}
