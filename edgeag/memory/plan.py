"""The memory plan: an itemised estimate of a run's peak anonymous memory against its
budget, and the bisection that finds the largest setting that fits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgeag.memory.readings import MiB

DYNAMO_IMPORT_BYTES = 70 * MiB
"""Peak RSS that importing `torch._dynamo` adds (measured with torch 2.13 on x86-64:
~68-72 MiB); counted by the plan for optimizers that import it (`torch.optim.*`)."""

RUNTIME_BYTES = 10 * MiB
"""RSS a training loop adds on its first iteration beyond its tensors: code pages of
the kernels it uses for the first time, per-thread buffers, allocator arenas. Measured
with torch 2.13 on x86-64: 10.6 MiB for PPO on CartPole-v1 (1 and 2 threads) after
the floor's warm-up."""


@dataclass(frozen=True)
class PlanItem:
    name: str
    nbytes: int
    note: str = ""


@dataclass(frozen=True)
class MemoryPlan:
    """An itemised estimate of a training run's peak anonymous memory (`Reading.anon`:
    RssAnon + RssShmem, what the budget counts), against its budget."""

    budget_bytes: int
    items: tuple[PlanItem, ...]

    @property
    def total_bytes(self) -> int:
        return sum(item.nbytes for item in self.items)

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.budget_bytes

    def with_item(self, item: PlanItem) -> MemoryPlan:
        """This plan with ``item`` added before its last item (the runtime's)."""
        return dataclasses.replace(self, items=self.items[:-1] + (item,) + self.items[-1:])

    def table(self) -> str:
        """The breakdown as aligned text lines (MiB and bytes)."""
        lines = [f"  {item.name:24s} {item.nbytes / MiB:9.2f} MiB {item.nbytes:>14,d} B  "
                 f"{item.note}"
                 for item in self.items]
        lines.append(f"  {'total':24s} {self.total_bytes / MiB:9.2f} MiB "
                     f"{self.total_bytes:>14,d} B")
        lines.append(f"  {'budget':24s} {self.budget_bytes / MiB:9.2f} MiB "
                     f"{self.budget_bytes:>14,d} B  {'fits' if self.fits else 'DOES NOT FIT'}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"budget_bytes": self.budget_bytes, "total_bytes": self.total_bytes,
                "fits": self.fits, "items": {i.name: i.nbytes for i in self.items}}


def largest_fitting(plan_for, low: int, high: int) -> int | None:
    """The largest integer setting in [low, high] whose plan fits (plans grow with the
    setting), by bisection; None when even ``low`` does not fit."""
    if not plan_for(low).fits:
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if plan_for(mid).fits:
            low = mid
        else:
            high = mid - 1
    return low
