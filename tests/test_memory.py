"""Memory floor, plan arithmetic and the budget guard, on real RSS of this process."""

import time

import pytest
import torch

from edgeag.memory import (
    BudgetGuard,
    MiB,
    largest_fitting,
    measure_floor,
    peak_rss_bytes,
    read_memory,
)
from edgeag.optim import OPTIMIZERS


def test_floor_is_positive_and_at_most_the_peak():
    floor = measure_floor()
    assert 0 < floor.rss_bytes <= peak_rss_bytes()
    assert floor.anon_bytes > 0 and floor.file_bytes > 0
    assert floor.rss_bytes == floor.anon_bytes + floor.file_bytes


def test_reading_splits_rss_as_the_kernel_does():
    """anon = RssAnon + RssShmem, file = RssFile, as /proc/self/status gives them; a
    block of anonymous memory shows in anon, not in file."""
    before = read_memory()
    block = bytearray(64 * MiB)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    after = read_memory()
    assert 60 * MiB <= after.anon - before.anon <= 68 * MiB
    assert abs(after.file - before.file) < 8 * MiB
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    def kib(key):
        return int(fields[key].split()[0]) * 1024
    assert abs(read_memory().anon - (kib("RssAnon") + kib("RssShmem"))) < 4 * MiB
    del block


SHAPES_4_64_2 = [(64, 4), (64,), (2, 64), (2,)]  # 450 floats = 1800 B; largest 1024 B


@pytest.mark.parametrize("name,momentum,state,temporaries,dynamo", [
    ("alphagrad", 0.0, 0, 1, False),
    ("alphagrad", 0.9, 1800, 1, False),
    ("adam", 0.0, 3600 + 4 * 4, 2, False),
    ("torch-adam", 0.0, 3600 + 4 * 4, 2, True),
    ("sgd", 0.9, 1800, 1, False),
    ("sgd", 0.0, 0, 1, False),
    ("torch-adafactor", 0.0, (64 + 4) * 4 + 4 + 64 * 4 + 4 + (2 + 64) * 4 + 4 + 2 * 4 + 4, 1, True),
    ("lion", 0.0, 1800, 2, True),
])
def test_registry_state_rules_on_known_shapes(name, momentum, state, temporaries, dynamo):
    info = OPTIMIZERS[name]
    assert info.state_bytes(SHAPES_4_64_2, 4, momentum) == state
    assert info.temporaries == temporaries and info.imports_dynamo == dynamo


def test_largest_fitting_finds_the_boundary():
    class Plan:
        def __init__(self, n):
            self.fits = 3 * n + 7 <= 1000  # boundary at n = 331

    assert largest_fitting(Plan, 1, 10_000) == 331
    assert largest_fitting(Plan, 400, 10_000) is None
    assert largest_fitting(Plan, 1, 100) == 100


def test_guard_stops_allocation_loop_within_one_interval_and_checkpoints():
    budget = read_memory().anon + 96 * MiB
    guard = BudgetGuard(budget, interval=0.05)
    held, checkpoints, crossed_at = [], [], None
    with guard:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            held.append(torch.ones(2 * MiB // 4))  # 2 MiB, pages touched
            time.sleep(0.005)
            if crossed_at is None and read_memory().anon > budget:
                crossed_at = time.monotonic()
            if guard.exceeded:  # the update boundary
                checkpoints.append(len(held))
                break
    stopped_at = time.monotonic()
    assert checkpoints, "the guard never asked the loop to stop"
    assert crossed_at is not None and guard.exceeded_at is not None
    assert guard.exceeded_at - crossed_at <= guard.interval + 0.05  # seen within one interval
    assert stopped_at - guard.exceeded_at < guard.interval
    assert guard.peak_anon_bytes > budget
    assert guard.peak_rss_bytes() >= guard.max_sampled_rss_bytes > guard.peak_anon_bytes
    del held


def test_guard_is_quiet_under_budget():
    with BudgetGuard(read_memory().anon + 512 * MiB, interval=0.01) as guard:
        time.sleep(0.1)
    assert not guard.exceeded and guard.samples >= 3


SOAK = """
import sys, time, tracemalloc
from edgeag.memory import BudgetGuard, read_memory
csv = sys.argv[1]
guard = BudgetGuard(1 << 62, interval=1e-6, csv=csv).start()
def wait_for(n):
    while guard.samples < n:
        time.sleep(0.01)
wait_for(2_000)
tracemalloc.start()
before, traced_before = read_memory().anon, tracemalloc.get_traced_memory()[0]
wait_for(42_000)
after, traced_after = read_memory().anon, tracemalloc.get_traced_memory()[0]
guard.stop()
print(guard.samples, after - before, traced_after - traced_before)
"""


def test_guard_memory_does_not_grow_over_40000_samples_and_every_sample_is_on_disk(tmp_path):
    """The soak test: 40,000 samples at the shortest interval in a fresh process. Its
    anonymous memory grows by at most 256 KiB, and rss.csv holds every sample as it
    was taken (the header, then one line per sample)."""
    import subprocess
    import sys

    csv = tmp_path / "rss.csv"
    out = subprocess.run([sys.executable, "-c", SOAK, str(csv)], capture_output=True,
                         text=True, check=True, timeout=600)
    samples, grown, traced = map(int, out.stdout.split())
    assert samples >= 42_000
    assert grown <= 256 * 1024, f"anonymous memory grew {grown:,} bytes"
    assert traced <= 64 * 1024, f"Python allocations grew {traced:,} bytes"
    lines = csv.read_text().splitlines()
    assert lines[0] == "seconds,rss_bytes,anon_bytes" and len(lines) == samples + 1
    assert all(len(line.split(",")) == 3 for line in lines[1:])


def test_guard_streams_each_sample_before_the_next_one(tmp_path):
    """A sample is on disk as soon as it is taken: a process killed with SIGKILL keeps
    its series."""
    csv = tmp_path / "rss.csv"
    guard = BudgetGuard(1 << 62, interval=10.0, csv=csv).start()
    try:
        for n in range(2, 5):
            guard.sample()
            assert len(csv.read_text().splitlines()) == n + 1  # header + n samples
    finally:
        guard.stop()
