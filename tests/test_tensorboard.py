"""``edgeag train --tensorboard``: event files written through tensorboardX without torch,
inside the budget, with the logger's memory in the plan; refused in one line where
tensorboardX is missing. Every run is a fresh process; most have torch blocked
(``sys.modules['torch'] = None`` before edgeag is imported, as in test_no_torch.py), so
any ``import torch`` fails."""

from __future__ import annotations

import json
import math
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from train_child import HEAVY_MODULES

from edgeag.errors import torch_available
from edgeag.memory import MiB

pytest.importorskip("tensorboardX", reason="--tensorboard needs tensorboardX "
                    "(pip install 'edgeag[logging]')")

from tensorboardX.proto.event_pb2 import Event  # noqa: E402

from edgeag.train import tblog  # noqa: E402

CHILD = ("import json, sys; sys.modules['torch'] = None; {setup}from edgeag.cli import main; "
         "rc = main(sys.argv[1:]); "
         "print(json.dumps({{'rc': rc, 'modules': sorted(m for m, v in sys.modules.items() "
         "if v is not None)}})); sys.exit(rc)")
"""``edgeag ARGS`` with torch blocked (and ``setup`` run first); its last stdout line is
its exit code and the modules it had loaded."""


def edgeag(args: list[str], cwd: Path, setup: str = "", env: dict | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD.format(setup=setup), *args], cwd=cwd,
                          text=True, capture_output=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})


def loaded_modules(proc: subprocess.CompletedProcess) -> list[str]:
    return json.loads(proc.stdout.strip().splitlines()[-1])["modules"]


BUDGET = 64 * MiB
TRAIN = ["train", "--env", "CartPole-v1", "--total-steps", "2048", "--no-progress",
         "--set", "eval_episodes=1", "--budget", "64MB"]


# --- reading the event file back: TFRecord framing, CRC32C, Event protos ---------------

def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C (Castagnoli), rotated and offset (written here from
    the format's definition, not taken from the writer)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path: Path) -> list[bytes]:
    """The records of a TFRecord file: each ``uint64 length, uint32 masked crc of the
    length, data, uint32 masked crc of the data`` (little-endian), checksums checked."""
    data, records, pos = path.read_bytes(), [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert header_crc == masked_crc32c(header), f"bad length checksum at byte {pos}"
        body = data[pos + 12:pos + 12 + length]
        assert len(body) == length, f"truncated record at byte {pos}"
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert body_crc == masked_crc32c(body), f"bad data checksum at byte {pos}"
        records.append(body)
        pos += 16 + length
    return records


def read_scalars(logdir: Path) -> tuple[list[Event], dict[str, dict[int, float]]]:
    """Every event of the one event file in ``logdir``, and its scalars by tag and step."""
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    events = [Event.FromString(record) for record in read_records(files[0])]
    scalars: dict[str, dict[int, float]] = {}
    for event in events:
        for value in event.summary.value:
            assert value.WhichOneof("value") == "simple_value", value
            scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return events, scalars


# --- the tests -----------------------------------------------------------------------

def test_tensorboard_run_without_torch_fits_the_budget_and_writes_readable_events(tmp_path):
    run = tmp_path / "run"
    proc = edgeag([*TRAIN, "--tensorboard", "--out", str(run)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    modules = loaded_modules(proc)
    assert "tensorboardX" in modules
    assert "torch" not in modules and not [m for m in HEAVY_MODULES if m in modules]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "done" and summary["steps"] == 2048
    assert summary["budget_bytes"] == BUDGET and summary["peak_anon_bytes"] <= BUDGET
    assert summary["plan"]["tensorboard logger"] == tblog.plan_item().nbytes
    assert summary["plan_total_bytes"] == sum(summary["plan"].values()) <= BUDGET

    events, scalars = read_scalars(run / "tensorboard")
    assert events[0].file_version == "brain.Event:2"  # what TensorBoard's loader expects
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected: dict[str, dict[int, float]] = {}
    for row in rows:
        for key, value in row.items():
            if value is not None and key != "time/total_timesteps":
                expected.setdefault(key, {})[row["time/total_timesteps"]] = value
    assert {"rollout/ep_rew_mean", "memory/anon_bytes", "time/iterations"} <= set(expected)
    assert set(scalars) == set(expected)
    for tag, by_step in expected.items():
        assert set(scalars[tag]) == set(by_step), tag
        for step, value in by_step.items():  # float32 in the file
            assert math.isclose(scalars[tag][step], value, rel_tol=1e-6, abs_tol=1e-30), \
                (tag, step, scalars[tag][step], value)


PLAN_LINE = re.compile(r"^  (\S(?:.*?\S)?) +-?[\d.]+ MiB +([\d,]+) B", re.M)


def dry_run_plan(args: list[str], cwd: Path) -> dict[str, int]:
    """The plan a dry run prints (its table on stderr): item -> bytes, in order."""
    proc = edgeag(args, cwd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("dry run: plan fits"), proc.stdout
    table = proc.stderr[proc.stderr.index("memory plan:"):]
    plan = {name: int(nbytes.replace(",", "")) for name, nbytes in PLAN_LINE.findall(table)}
    assert plan.pop("budget") == BUDGET
    return plan


def test_dry_run_plan_grows_by_exactly_the_logger(tmp_path):
    """The same plan, plus the logger's item; the floor grows by tensorboardX's import
    (measured in it: `tblog.prepare` runs before the floor), nothing else changes."""
    args = [*TRAIN, "--dry-run", "--out", str(tmp_path / "run")]
    without = dry_run_plan(args, tmp_path)
    with_tb = dry_run_plan([*args, "--tensorboard"], tmp_path)
    item = tblog.plan_item()
    assert with_tb.pop(item.name) == item.nbytes == tblog.WRITER_BYTES
    assert list(with_tb) == list(without)  # the same items in the same order
    assert {k: v for k, v in with_tb.items() if k not in ("floor", "total")} == \
        {k: v for k, v in without.items() if k not in ("floor", "total")}
    floor_growth = with_tb["floor"] - without["floor"]
    assert 1 * MiB < floor_growth < 8 * MiB  # tensorboardX's import, ~2.5 MiB
    assert with_tb["total"] - without["total"] == floor_growth + item.nbytes
    assert with_tb["total"] == sum(v for k, v in with_tb.items() if k != "total") + item.nbytes
    assert not (tmp_path / "run").exists()


def test_shrunk_replay_buffer_leaves_room_for_the_logger(tmp_path):
    """``--shrink-buffer`` sizes the replay buffer with the logger in the plan: the
    shrunk plan fits (it used to be sized without it, then refused)."""
    args = ["train", "--algo", "dqn", "--set", "buffer_size=2000000", "--budget", "64MB",
            "--shrink-buffer", "--dry-run", "--no-progress", "--tensorboard",
            "--out", str(tmp_path / "run")]
    proc = edgeag(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "tensorboard logger" in proc.stderr and "  fits" in proc.stderr
    assert re.search(r"replay buffer shrunk to fit the budget: [\d,]+ transitions", proc.stderr)


NOT_INSTALLED = ("edgeag: error: --tensorboard writes its event files through the tensorboardX "
                 "package, which is not installed: pip install 'edgeag[logging]'\n")


@pytest.mark.parametrize("how", ["not-installed", "import-fails"])
def test_missing_tensorboardx_is_refused_in_one_line(how, tmp_path):
    out = tmp_path / "out"
    if how == "not-installed":
        proc = edgeag([*TRAIN, "--tensorboard", "--out", str(out)], tmp_path,
                      setup="sys.modules['tensorboardX'] = None; ")
        assert proc.stderr == NOT_INSTALLED
    else:  # a tensorboardX that cannot be imported (a broken install)
        stub = tmp_path / "stub"
        stub.mkdir()
        (stub / "tensorboardX.py").write_text("raise ImportError('broken for the test')\n")
        proc = edgeag([*TRAIN, "--tensorboard", "--out", str(out)], tmp_path,
                      env={"PYTHONPATH": str(stub)})
        assert proc.stderr == ("edgeag: error: --tensorboard writes its event files through the "
                               "tensorboardX package, which cannot be imported here (ImportError: "
                               "broken for the test): pip install 'edgeag[logging]'\n")
    assert proc.returncode == 2
    assert not out.exists() and not (tmp_path / "runs").exists()


@pytest.mark.skipif(not torch_available(), reason="only meaningful where torch is installed")
def test_writer_does_not_import_torch_where_torch_is_installed(tmp_path):
    """tensorboardX's writer imports torch when it can (+129 MiB measured); `tblog`
    keeps it out of a numpy-engine run even where torch is installed (not blocked)."""
    code = ("import sys; from edgeag.train import tblog; tblog.prepare(); "
            f"w = tblog.open_writer({str(tmp_path)!r}); w.add_scalar('a/b', 1.5, 7); w.close(); "
            "import importlib.util; "
            "print('torch' in sys.modules, importlib.util.find_spec('torch') is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]  # not imported, and still importable
    _, scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars == {"a/b": {7: 1.5}}
