"""`edgeag.train.children`: real child processes started, watched and stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from edgeag.train import children
from edgeag.train.children import ChildSpec

MiB = 1 << 20


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def wait_for(path: Path, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.exists(), f"{path} never appeared"


def gone(pid: int, seconds: float = 5.0) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped yet counts) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def test_a_child_above_its_memory_limit_is_killed(tmp_path):
    grow = ("import time\nheld = []\nfor _ in range(64):\n"
            "    held.append(b'x' * (4 << 20))\n    time.sleep(0.01)\n"
            "print('grew', flush=True)\ntime.sleep(30)")
    limit = 64 * MiB
    t0 = time.monotonic()
    done = children.run(ChildSpec(python(grow), log=tmp_path / "log" / "child.log",
                                  kill_above=limit))
    assert time.monotonic() - t0 < 5
    assert done.exit_code is None  # killed for its memory
    assert limit < done.max_seen_anon_bytes < 256 * MiB
    assert "grew" not in (tmp_path / "log" / "child.log").read_text()


def test_a_child_within_its_limit_runs_to_the_end(tmp_path):
    done = children.run(ChildSpec(python("import sys; print('edgeag: error: first'); "
                                         "print('edgeag: error: last'); sys.exit(2)"),
                                  log=tmp_path / "child.log", kill_above=512 * MiB))
    assert done.exit_code == 2 and done.last_error == "last"
    assert 0 < done.max_seen_anon_bytes < 512 * MiB


def test_secrets_stay_out_of_the_environment_and_threads_go_in(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEAG_STORAGE_PASSWORD", "hunter2")
    monkeypatch.setenv("PGPASSWORD", "hunter3")
    monkeypatch.setenv("EDGEAG_TEST_KEPT", "yes")
    log = tmp_path / "env.log"
    done = children.run(ChildSpec(python("import json, os; print(json.dumps(dict(os.environ)))"),
                                  log=log, threads=3, env={"EDGEAG_TEST_ADDED": "1"}))
    assert done.exit_code == 0
    env = json.loads(log.read_text())
    assert not set(children.SECRET_ENV) & set(env)
    assert "hunter2" not in log.read_text() and "hunter3" not in log.read_text()
    assert env["EDGEAG_TEST_KEPT"] == "yes" and env["EDGEAG_TEST_ADDED"] == "1"
    assert env["OMP_NUM_THREADS"] == "3"


def test_a_graceful_stop_sends_sigint_first(tmp_path):
    marker, ready = tmp_path / "interrupted", tmp_path / "ready"
    trap = (f"import signal, sys, time, pathlib\n"
            f"def on_int(*_):\n"
            f"    pathlib.Path({str(marker)!r}).write_text('SIGINT')\n"
            f"    sys.exit(0)\n"
            f"signal.signal(signal.SIGINT, on_int)\n"
            f"pathlib.Path({str(ready)!r}).touch()\n"
            f"time.sleep(30)")
    with children.start(ChildSpec(python(trap), log=tmp_path / "child.log", grace=4)) as child:
        wait_for(ready)
        assert child.wait(0.05) is None and child.poll() is None
        assert child.stop() == 0
    assert marker.read_text() == "SIGINT"


def test_a_child_ignoring_the_stop_signal_is_killed_after_the_grace(tmp_path):
    ready = tmp_path / "ready"
    deaf = (f"import signal, time, pathlib\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            f"pathlib.Path({str(ready)!r}).touch()\ntime.sleep(30)")
    polls = []

    def stop_when_ready(child) -> bool:
        polls.append(child.pid)
        return ready.exists()

    t0 = time.monotonic()
    done = children.run(ChildSpec(python(deaf), log=tmp_path / "child.log", grace=0.3,
                                  poll_seconds=0.05), stop_when_ready)
    assert done.exit_code == -signal.SIGKILL and polls and done.seconds < 5
    assert time.monotonic() - t0 < 5


def test_an_error_while_watching_stops_the_child(tmp_path):
    pids = []

    def fail(child) -> bool:
        pids.append(child.pid)
        raise RuntimeError("watcher failed")

    with pytest.raises(RuntimeError, match="watcher failed"):
        children.run(ChildSpec(python("import time; time.sleep(30)"), grace=0), fail)
    assert pids and not psutil.pid_exists(pids[0])  # killed and reaped


def test_the_child_dies_with_its_parent(tmp_path):
    middle = ("import sys, time\nfrom edgeag.train.children import ChildSpec, start\n"
              "child = start(ChildSpec([sys.executable, '-c', 'import time; time.sleep(30)']))\n"
              "print(child.pid, flush=True)\ntime.sleep(30)")
    proc = subprocess.Popen(python(middle), stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(proc.stdout.readline())
        assert psutil.Process(grandchild).ppid() == proc.pid
    finally:
        proc.kill()
        proc.wait()
    assert gone(grandchild), "the grandchild outlived its parent"


def test_a_ctrl_c_while_a_child_is_forked_is_held_then_raised():
    """Python's at-fork handlers drop a KeyboardInterrupt raised inside them; while
    `start` forks, SIGINT is held, and raised once the child is started."""
    held = children._HeldInterrupt()
    with held:
        signal.raise_signal(signal.SIGINT)  # not raised here
    assert held.seen
    with pytest.raises(KeyboardInterrupt):
        held.deliver()
