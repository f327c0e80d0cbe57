"""Child processes: the `edgeag train` runs that compare, capacity and tune start, and
the training child the cgroup hard cap runs in its group, all started, watched and
stopped here.

A child, `start`-ed from a `ChildSpec`:

- inherits this process's environment without `SECRET_ENV`, with ``OMP_NUM_THREADS``
  set to its ``threads`` and its own ``env`` added (`environment`);
- dies with the thread that started it: on Linux the kernel sends it
  `PARENT_DEATH_SIGNAL` when that thread exits (``prctl(PR_SET_PDEATHSIG)``, set before
  ``exec``: `die_with_parent`), so a parent killed outright leaves no child behind;
  elsewhere nothing is set;
- writes its output (stdout and stderr) to ``log``, or where this process writes its own;
- is killed (SIGKILL) the moment its anonymous memory (RssAnon + RssShmem, what budgets
  count, read every ``poll_seconds``) is seen above ``kill_above`` bytes;
- is stopped by `Child.stop`: ``stop_signal``, then SIGKILL if it is still running after
  ``grace`` seconds (at once with ``grace`` 0), and reaped.

`run` starts one and watches it to the end, handing it to ``on_poll`` every
``poll_seconds`` (True: stop it); whatever ends the watch, Ctrl-C or an error included,
the child is stopped and reaped before `run` returns or raises. Its `Outcome` carries
the exit code, the time, the highest anonymous memory seen and the child's last
``edgeag: error:`` line.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from edgeag.memory import read_memory

SECRET_ENV = ("EDGEAG_STORAGE_PASSWORD", "PGPASSWORD")
"""Variables no child inherits: the database passwords of ``edgeag tune``'s storage."""
THREADS_ENV = "OMP_NUM_THREADS"
"""Set to a child's ``threads``."""
PARENT_DEATH_SIGNAL = signal.SIGTERM
"""What a child receives when the thread that started it exits (Linux)."""
POLL_SECONDS = 0.02
"""How often a watched child is looked at (its memory read from /proc/PID/status)."""
GRACE_SECONDS = 5.0
"""How long a stopped child may take to exit before it is killed."""
ERROR_PREFIX = "edgeag: error: "
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildSpec:
    """A child to start: its command and how it is run, watched and stopped."""

    cmd: Sequence[str]
    log: Path | None = None
    """Its stdout and stderr (the file is created, with its directory); None: this
    process's own."""
    threads: int | None = None
    """``OMP_NUM_THREADS`` for it; None: inherited."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables added to its environment."""
    kill_above: int | None = None
    """Bytes of anonymous memory above which it is killed at once; None: not watched."""
    stop_signal: int = signal.SIGINT
    """What `Child.stop` sends first (SIGINT: `edgeag train` ends its iteration, saves
    and exits)."""
    grace: float = GRACE_SECONDS
    """Seconds `Child.stop` waits after ``stop_signal`` before SIGKILL; 0: SIGKILL at once."""
    poll_seconds: float = POLL_SECONDS
    """How often its memory is read and `run`'s ``on_poll`` called."""
    preexec: Callable[[], None] | None = None
    """Called in the child just before ``exec`` (e.g. to join a cgroup)."""


@dataclass(frozen=True)
class Outcome:
    """What a child did."""

    pid: int
    exit_code: int | None
    """Its return code (negative: the signal that ended it); None when it was killed
    for crossing ``kill_above``."""
    seconds: float
    max_seen_anon_bytes: int
    """The highest anonymous memory (RssAnon + RssShmem) read while watching it; 0 when
    it was not watched."""
    last_error: str
    """Its last ``edgeag: error:`` line (without the prefix), or ''."""


class Child:
    """A started child (`start`); ``killed_above`` once it was killed for crossing its
    ``kill_above``. Used as a context manager, it is stopped on leaving."""

    def __init__(self, spec: ChildSpec, proc: subprocess.Popen, started: float):
        self.spec, self.proc, self.started = spec, proc, started
        self.max_seen_anon_bytes = 0
        self.killed_above = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        """Its return code once it has exited, else None; a child with a ``kill_above``
        has its memory read first (and is killed above it)."""
        if self.proc.poll() is None and self.spec.kill_above is not None:
            self._check_memory()
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds (None: until it exits), reading its memory every
        ``poll_seconds`` when it has a ``kill_above``; its return code, or None when it
        is still running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self.proc.wait(self._step(deadline))
            except subprocess.TimeoutExpired:
                pass
            if self.poll() is not None:
                return self.proc.returncode
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def stop(self, grace: float | None = None) -> int:
        """Send ``stop_signal``, then SIGKILL if it is still running after ``grace``
        seconds (default: its spec's; 0: SIGKILL at once); reap it and return its code."""
        grace = self.spec.grace if grace is None else grace
        try:
            if grace > 0 and self.proc.poll() is None:
                self.proc.send_signal(self.spec.stop_signal)
                self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        finally:  # an error or Ctrl-C while waiting too: it is killed and reaped
            self.proc.kill()  # nothing when it has exited
            self.proc.wait()
        return self.proc.returncode

    def outcome(self) -> Outcome:
        """What it did (waits for it to exit)."""
        code = self.wait()
        return Outcome(self.pid, None if self.killed_above else code,
                       time.monotonic() - self.started, self.max_seen_anon_bytes,
                       last_error(self.spec.log))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _step(self, deadline: float | None) -> float | None:
        """How long the next wait lasts: until the deadline, at most ``poll_seconds``
        when the memory is watched."""
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if self.spec.kill_above is None:
            return left
        return self.spec.poll_seconds if left is None else min(self.spec.poll_seconds, left)

    def _check_memory(self) -> None:
        try:
            anon = read_memory(self.pid).anon
        except psutil.NoSuchProcess:  # exited between two looks
            return
        self.max_seen_anon_bytes = max(self.max_seen_anon_bytes, anon)
        if anon > self.spec.kill_above:
            self.killed_above = True
            self.proc.kill()
            self.proc.wait()


def start(spec: ChildSpec) -> Child:
    """Start ``spec``'s child: its environment, log and parent-death signal set. A Ctrl-C
    that arrives while it starts is raised once it has started (and has been stopped)."""
    log = _open_log(spec.log)
    held = _HeldInterrupt()
    try:
        started = time.monotonic()
        with held:
            proc = subprocess.Popen(list(spec.cmd), stdout=log,
                                    stderr=None if log is None else subprocess.STDOUT,
                                    env=environment(spec.threads, spec.env),
                                    preexec_fn=_preexec(os.getpid(), spec.preexec))  # noqa: PLW1509
    finally:
        if log is not None:
            log.close()  # the child holds its own copy
    child = Child(spec, proc, started)
    if held.seen:
        child.stop()
        held.deliver()
    return child


class _HeldInterrupt:
    """Holds SIGINT while a child is forked, to deliver it afterwards. The fork runs
    Python's at-fork handlers (logging's among them) in this process, and a
    KeyboardInterrupt raised inside one is printed and dropped: the Ctrl-C would be lost.
    Only the main thread receives Python signals, so elsewhere nothing is held."""

    def __init__(self) -> None:
        self.seen, self.old = False, None

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._hold)

    def __exit__(self, *exc) -> None:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)

    def _hold(self, signum, frame) -> None:
        self.seen = True

    def deliver(self) -> None:
        """Handle the held SIGINT as the handler in place before would have."""
        if callable(self.old):
            self.old(signal.SIGINT, None)  # Python's default raises KeyboardInterrupt
        elif self.old == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)


def run(spec: ChildSpec, on_poll: Callable[[Child], bool] | None = None) -> Outcome:
    """Start ``spec``'s child and watch it until it exits: its memory (with a
    ``kill_above``) and ``on_poll(child)`` every ``poll_seconds`` (True: `Child.stop` it).
    The child is stopped and reaped whatever ends the watch (Ctrl-C, an error)."""
    with start(spec) as child:
        every = None if on_poll is None else spec.poll_seconds
        while child.wait(every) is None:
            if on_poll(child):
                child.stop()
        return child.outcome()


def environment(threads: int | None = None, extra: Mapping[str, str] | None = None) -> dict:
    """A child's environment: this process's without `SECRET_ENV`, ``OMP_NUM_THREADS``
    set to ``threads`` (when given) and ``extra`` added."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    if threads:
        env[THREADS_ENV] = str(threads)
    env.update(extra or {})
    return env


def die_with_parent(parent: int) -> bool:
    """Have the kernel send this process `PARENT_DEATH_SIGNAL` when the thread that
    started it exits (Linux; elsewhere nothing); False when ``parent`` is no longer its
    parent (it exited first)."""
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
    return os.getppid() == parent


def last_error(log: Path | None) -> str:
    """The last ``edgeag: error:`` line of ``log``, without the prefix; '' if none."""
    if log is None:
        return ""
    lines = log.read_text(errors="replace").splitlines()
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    return errors[-1][len(ERROR_PREFIX):] if errors else ""


@functools.cache
def _prctl():
    """libc's ``prctl`` on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def _preexec(parent: int, then: Callable[[], None] | None) -> Callable[[], None]:
    """What the child runs before ``exec``: it dies with ``parent`` (at once if that has
    already exited), then ``then()``."""
    _prctl()  # resolved here: the child only calls it

    def preexec() -> None:
        if not die_with_parent(parent):
            os._exit(128 + int(PARENT_DEATH_SIGNAL))
        if then is not None:
            then()

    return preexec


def _open_log(path: Path | None):
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w")
