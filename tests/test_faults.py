"""Faults while writing: SIGKILL in the middle of a checkpoint write, a full disk, a
file-size limit (during training and during an export), and kills at random moments.
Each leaves the previous checkpoint loadable, stops with a clear message and a
documented exit code, and `--resume` continues the run."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
import kill_resume  # noqa: E402

from edgeag.train.rundir import load_checkpoint  # noqa: E402

EXIT_WRITE_FAILED = 5
SHORT = ["--total-steps", "3072", "--threads", "1", "--no-progress", "--set", "num_steps=32",
         "--set", "checkpoint_every=1", "--set", "eval_episodes=1"]


def edgeag(args: list[str], limit_file_bytes: int | None = None, **kw) -> subprocess.CompletedProcess:
    def limit():
        if limit_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))
    return subprocess.run([sys.executable, "-m", "edgeag.cli", *args], capture_output=True,
                          text=True, preexec_fn=limit, timeout=600, **kw)


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "edgeag.cli", "train", *kill_resume.TRAIN_ARGS,
                             "--total-steps", "4096", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = out / "checkpoints" / "latest.safetensors"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)  # the first checkpoint is on disk: kill inside a later write
    assert kill_resume._kill_at_write(proc, ckpt.parent, timeout=120)
    assert proc.wait() == -signal.SIGKILL
    assert list(ckpt.parent.glob(".*.tmp")), "the kill did not land inside a write"
    before = load_checkpoint(ckpt)["global_step"]
    assert before > 0
    done = edgeag(["train", "--resume", str(out), "--no-progress"])
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(ckpt)["global_step"] == 4096
    assert not list(ckpt.parent.glob(".*.tmp")), "a killed write's temporary file was left"


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only): a real full disk."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs",
                                            str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root and mount permission")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_full_disk_stops_with_exit_5_and_the_previous_checkpoint_resumes(small_disk, tmp_path):
    """Each checkpoint of a [512, 512] policy is ~1.6 MB and needs its temporary copy
    beside the previous one: the second or a later write runs out of space."""
    out = small_disk / "run"
    proc = edgeag(["train", *SHORT, "--set", "hidden=[512, 512]", "--out", str(out)])
    assert proc.returncode == EXIT_WRITE_FAILED, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cannot write to" in proc.stderr and "No space left on device" in proc.stderr
    assert "--resume" in proc.stderr.splitlines()[-1]
    step = load_checkpoint(out / "checkpoints" / "latest.safetensors")["global_step"]
    assert 0 < step < 3072
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)  # room again: on a bigger disk
    done = edgeag(["train", "--resume", str(moved), "--no-progress"])
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(moved / "checkpoints" / "latest.safetensors")["global_step"] == 3072


def test_file_size_limit_during_a_checkpoint_stops_with_exit_5_then_resumes(tmp_path):
    out = tmp_path / "run"
    first = edgeag(["train", *SHORT, "--total-steps", "1024", "--set", "hidden=[256, 256]",
                    "--out", str(out)])
    assert first.returncode == 0, first.stderr
    ckpt = out / "checkpoints" / "latest.safetensors"
    size, step = ckpt.stat().st_size, load_checkpoint(ckpt)["global_step"]
    proc = edgeag(["train", "--resume", str(out), "--total-steps", "3072", "--no-progress"],
                  limit_file_bytes=size // 2)  # ulimit -f: metrics and rss.csv still fit
    assert proc.returncode == EXIT_WRITE_FAILED, proc.stderr
    assert "Traceback" not in proc.stderr and "File too large" in proc.stderr
    assert load_checkpoint(ckpt)["global_step"] == step  # the previous one, intact
    done = edgeag(["train", "--resume", str(out), "--total-steps", "3072", "--no-progress"])
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(ckpt)["global_step"] == 3072


def test_file_size_limit_during_an_export_stops_with_exit_5_and_publishes_nothing(tmp_path):
    out = tmp_path / "run"
    assert edgeag(["train", *SHORT, "--total-steps", "256", "--out", str(out)]).returncode == 0
    proc = edgeag(["export", str(out), "--format", "onnx", "--no-progress"],
                  limit_file_bytes=4096)
    assert proc.returncode == EXIT_WRITE_FAILED, proc.stderr
    assert "Traceback" not in proc.stderr and "File too large" in proc.stderr
    export = out / "export"
    assert not export.exists() or not [p for p in export.iterdir()]


def test_kills_at_random_moments_leave_no_unloadable_checkpoint(tmp_path):
    """`scripts/kill_resume.py --kills 20` is the full check (with the uninterrupted
    run's policy compared bit for bit); here 6 kills, 3 of them inside a write."""
    figures = kill_resume.kill_and_resume(tmp_path / f"run-{uuid.uuid4().hex[:6]}", kills=6,
                                          seed=1, log=lambda *_: None)
    assert figures["unloadable"] == 0 and figures["finished"], figures
    assert figures["kills"] == 6 and figures["during_write"] >= 2, figures


def test_killed_api_runs_on_a_profile_end_as_the_uninterrupted_cli_run(tmp_path):
    """`scripts/kill_resume.py --api --profile rpi4 --budget 256MB`, shortened: each
    process trains through the Python API and a resumed one gets no device flags, so the
    run's own profile, budget and threads must come back for the policy to be the one an
    uninterrupted ``edgeag train --profile rpi4 --budget 256MB`` ends with, bit for bit."""
    device = ["--profile", "rpi4", "--budget", "256MB"]
    figures = kill_resume.kill_and_resume(tmp_path / "killed", kills=4, seed=2,
                                          log=lambda *_: None, device=device, api=True)
    assert figures["unloadable"] == 0 and figures["finished"] and figures["kills"] == 4, figures
    ref = kill_resume._train([*kill_resume.train_args(device), "--out", str(tmp_path / "ref")])
    assert ref.wait() == 0, ref.stderr.read()
    assert kill_resume.same_policy(tmp_path / "killed", tmp_path / "ref")
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert (summary["profile"], summary["budget_bytes"], summary["threads_allowed"]) == \
        ("rpi4", 256 * 2**20, min(4, os.cpu_count() or 1))
