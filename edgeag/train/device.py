"""A run's device settings: the profile, the budget, the BLAS threads and the hard cap.

They belong to the run. A new run resolves them from the flags (or the Python API's
keywords); they are written to ``config.toml``'s ``[run]`` table; a resumed run (``edgeag
train --resume``, ``edgeag.load``) gets them back from there. What a user changes on resume
is validated, applied and recorded with the step it applied from (`Change`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from edgeag.errors import EdgeagError

HARD_CAPS = ("auto", "cgroup", "rlimit")
"""``--hard-cap`` values: auto is a cgroup where one can be made, else RLIMIT_DATA."""


@dataclass(frozen=True)
class Device:
    """Where and inside what a run trains."""

    profile: str | None = None
    """The device profile's name (a shipped profile) or the path of the user's TOML file."""
    budget_bytes: int | None = None
    """Budget on the process's anonymous memory; None: planned and sampled, not enforced."""
    threads: int = 1
    """BLAS threads of the numpy engine, torch's on the torch engine."""
    hard_cap: str | None = None
    """``auto``, ``cgroup`` or ``rlimit`` (`HARD_CAPS`): the kernel enforces the budget too."""

    def describe(self) -> str:
        """``2 thread(s); profile rpi4; budget 128.0 MiB (134,217,728 bytes)``."""
        text = f"{self.threads} thread(s)"
        if self.profile:
            text += f"; profile {self.profile}"
        text += (f"; budget {self.budget_bytes / 2**20:.1f} MiB ({self.budget_bytes:,} bytes)"
                 if self.budget_bytes else "; no budget")
        if self.hard_cap:
            text += f"; hard cap {self.hard_cap}"
        return text

    def as_run_table(self) -> dict:
        """What config.toml's ``[run]`` table records (TOML has no null: 0 and "" for none)."""
        return {"profile": self.profile or "", "threads": self.threads,
                "budget_bytes": self.budget_bytes or 0, "hard_cap": self.hard_cap or ""}

    @classmethod
    def from_run_table(cls, table: dict) -> Device:
        """The settings config.toml recorded (a run written before they were all recorded
        gets the defaults for the missing ones: 1 thread, no budget, no hard cap)."""
        threads = table.get("threads", 1)
        budget = table.get("budget_bytes") or None
        return cls(profile=table.get("profile") or None, budget_bytes=budget,
                   threads=threads if isinstance(threads, int) and threads >= 1 else 1,
                   hard_cap=table.get("hard_cap") or None)


def resolve_device(profile: str | None, budget: str | int | None, threads: int | None,
                   hard_cap: str | bool | None = None, base: Device | None = None):
    """(profile or None, `Device`) from the flags. A new run (``base`` None): the budget is
    ``budget``, else the profile's default, else none; threads are ``threads``, else the
    profile's (at most this machine's cores), else 1. A resumed run (``base``, its recorded
    settings): each one not given keeps its recorded value, except that a new profile
    brings its own budget and threads unless those are given too."""
    from edgeag.profiles import load_profile, parse_size, resolve_budget

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise EdgeagError(f"invalid --threads {threads}: expected a positive integer")
    if hard_cap is True:
        hard_cap = "auto"
    if hard_cap not in (None, False, *HARD_CAPS):
        raise EdgeagError(f"invalid --hard-cap {hard_cap!r}: expected one of "
                          f"{', '.join(HARD_CAPS)}")
    hard_cap = hard_cap or None
    prof = load_profile(profile) if profile else None
    if isinstance(budget, int) and not isinstance(budget, bool):
        budget = str(budget)
    if base is not None and prof is None:
        device = replace(base, budget_bytes=parse_size(budget) if budget is not None
                         else base.budget_bytes,
                         threads=threads if threads is not None else base.threads,
                         hard_cap=hard_cap or base.hard_cap)
        if base.profile and device.profile:  # the recorded profile, for export's formats
            try:
                prof = load_profile(base.profile)
            except EdgeagError:
                prof = None
    else:
        budget_bytes = (resolve_budget(prof, budget) if prof else
                        parse_size(budget) if budget is not None else None)
        if threads is None:
            threads = min(prof.threads, os.cpu_count() or 1) if prof else 1
        device = Device(profile=prof.name if prof else None, budget_bytes=budget_bytes,
                        threads=threads, hard_cap=hard_cap or (base.hard_cap if base else None))
    if device.hard_cap and device.budget_bytes is None:
        raise EdgeagError("--hard-cap needs a budget (--budget or --profile)")
    return prof, device


@dataclass(frozen=True)
class Change:
    """A setting changed when a run resumed: recorded in config.toml's ``[[changes]]``."""

    step: int
    """The env step from which the new value applies."""
    setting: str
    old: object
    new: object

    def as_table(self) -> dict:
        return {"step": self.step, "setting": self.setting, "from": _plain(self.old),
                "to": _plain(self.new)}

    def describe(self) -> str:
        old, new = _shown(self.setting, self.old), _shown(self.setting, self.new)
        return f"{self.setting} {old} -> {new}"


def device_changes(old: Device, new: Device, step: int) -> list[Change]:
    return [Change(step, name, getattr(old, name), getattr(new, name))
            for name in ("profile", "budget_bytes", "threads", "hard_cap")
            if getattr(old, name) != getattr(new, name)]


def _plain(value):
    return "" if value is None else value


def _shown(setting: str, value) -> str:
    if value is None:
        return "none"
    if setting == "budget_bytes":
        return f"{value / 2**20:.1f} MiB ({value:,} bytes)"
    return f"{value:,}" if isinstance(value, int) else str(value)
