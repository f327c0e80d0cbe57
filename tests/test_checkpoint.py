"""Checkpoints as safetensors files: every kind of value back exactly, a standard file
any safetensors reader opens, no torch needed for a numpy state, written straight from
the arrays, damaged or foreign files refused with one line, and older runs'
``latest.pt`` still read with torch (and explained without it)."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_values import assert_same, every_kind_of_value
from safetensors import safe_open
from safetensors.numpy import load_file, save

from edgeag.errors import EdgeagError
from edgeag.train import checkpoint
from edgeag.train.config import resolve_config
from edgeag.train.run import RunOptions, train
from edgeag.train.rundir import RunDir, load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def roundtrip(state: dict, tmp_path: Path) -> dict:
    run = RunDir(tmp_path / "run")
    run.save_checkpoint(state)
    assert run.checkpoint.name == "latest.safetensors"
    return run.load_checkpoint()


def test_every_kind_of_value_comes_back_exactly(tmp_path):
    state = every_kind_of_value()
    back = roundtrip(state, tmp_path)
    assert_same(state, back)
    assert all(a.flags.writeable for a in (back["float64"], back["empty"], back["uint8"]))


def test_the_file_is_plain_safetensors_named_by_tree_paths(tmp_path):
    """Any safetensors reader opens it: the arrays under their paths (with ``/`` and
    ``~`` in a key escaped), the layout as JSON in the header's metadata."""
    state = every_kind_of_value()
    state["optimizer"] = {"state": {0: {"exp_avg": np.ones(3, np.float32)}}}
    path = tmp_path / "ckpt.safetensors"
    with open(path, "wb") as f:
        checkpoint.save(f, state)
    arrays = load_file(path)
    assert np.array_equal(arrays["policy/actor.0.weight"], state["policy"]["actor.0.weight"])
    assert np.array_equal(arrays["optimizer/state/0/exp_avg"], np.ones(3, np.float32))
    assert arrays["int_keys/0/step"].shape == () and arrays["int_keys/0/step"].dtype == np.float32
    odd = {name for name in arrays if name.startswith("odd_keys/")}
    assert odd == {"odd_keys/a~1b", "odd_keys/a/b", "odd_keys/~01", "odd_keys/~20", "odd_keys/",
                   "odd_keys/~2-12", "odd_keys/0"}  # the str key "0" and the int key 0
    assert "~2__metadata__" in arrays and "np_scalars/0" in arrays
    with safe_open(path, framework="np") as f:
        metadata = f.metadata()
    layout = json.loads(metadata["edgeag"])
    assert layout["format"] == 2 and set(metadata) == {"edgeag"}
    assert layout["tree"]["dict"][0] == ["policy", {"dict": [
        ["actor.0.weight", {"array": "policy/actor.0.weight"}],
        ["actor.0.bias", {"array": "policy/actor.0.bias"}]]}]
    assert ["tuple", {"tuple": [0.9, 0.999]}] in layout["tree"]["dict"]
    assert ["floats", [0.1, -0.0, 1e308, 5e-324, {"float": "nan"}, {"float": "inf"},
                       {"float": "-inf"}, 1.0]] in layout["tree"]["dict"]
    # every array starts at a multiple of its item size (the data 8-byte aligned)
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert (8 + n) % 8 == 0
    header = json.loads(raw[8:8 + n])
    width = {"F64": 8, "I64": 8, "U64": 8, "C64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2,
             "I16": 2, "U16": 2}
    assert all(entry["data_offsets"][0] % width.get(entry["dtype"], 1) == 0
               for name, entry in header.items() if name != "__metadata__")


def test_an_array_met_twice_is_stored_once_and_comes_back_shared(tmp_path):
    weight = np.arange(12.0).reshape(3, 4)
    state = {"nets": {"actor": {"w": weight}}, "policy": {"w": weight}, "view": weight[:],
             "other": weight.copy()}
    path = tmp_path / "run" / "checkpoints" / "latest.safetensors"
    back = roundtrip(state, tmp_path)
    assert sorted(load_file(path)) == ["nets/actor/w", "other"]
    assert back["policy"]["w"] is back["nets"]["actor"]["w"] is back["view"]
    assert back["other"] is not back["policy"]["w"]
    assert_same(state, back)


def test_saving_writes_each_array_from_its_own_memory():
    """No copy of the state is built: each array's bytes reach the file as a view of
    the array itself (and the file object's own OSError is what a failing write raises)."""
    state = {"a": np.ones((256, 256), np.float32), "b": np.zeros(1000), "t": torch.ones(64, 64)}

    class Recorder(io.BytesIO):
        addresses: list = []

        def write(self, data):
            view = memoryview(data)
            if view.nbytes >= 16384:
                self.addresses.append(np.frombuffer(view, np.uint8).ctypes.data)
            return super().write(data)

    f = Recorder()
    checkpoint.save(f, state)
    assert sorted(f.addresses) == sorted([state["a"].ctypes.data, state["t"].data_ptr()])

    class Full(io.BytesIO):
        def write(self, data):
            if memoryview(data).nbytes > 4096:
                raise OSError(28, "No space left on device")
            return super().write(data)

    with pytest.raises(OSError) as e:
        checkpoint.save(Full(), state)
    assert e.value.errno == 28


def test_a_numpy_state_is_saved_and_loaded_with_torch_unimportable(tmp_path):
    """The torch-free engine's case: in a process where ``import torch`` fails, a numpy
    state tree is written and read back, and torch is never imported."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from checkpoint_values import every_kind_of_value, assert_same
        from edgeag.train.rundir import RunDir
        run = RunDir({str(tmp_path / "run")!r})
        state = every_kind_of_value()
        run.save_checkpoint(state)
        assert_same(state, run.load_checkpoint())
        assert sys.modules["torch"] is None and not [m for m in sys.modules
                                                     if m.startswith("torch.")], "torch imported"
        del sys.modules["torch"]
        assert "torch" not in sys.modules
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_torch_tensors_come_back_as_torch_tensors(tmp_path):
    """A torch-trained run's state: parameters, optimizer state with int keys and a 0-d
    step, the generators' uint8 states, bool and int64 tensors, beside numpy arrays."""
    gen = torch.Generator().manual_seed(3)
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 4)).sum().backward()
    opt.step()
    state = {"policy": net.state_dict(), "optimizer": opt.state_dict(),
             "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
             "mask": torch.tensor([True, False]), "counts": torch.tensor([2**40, -1]),
             "empty": torch.zeros(0, 3), "half": torch.tensor([1.5], dtype=torch.float16),
             "transposed": torch.arange(6.0).reshape(2, 3).t(),
             "obs_norm": {"mean": np.zeros(4), "count": 1e-4}}
    back = roundtrip(state, tmp_path)
    assert_same({**state, "transposed": state["transposed"].contiguous()}, back)
    assert isinstance(back["optimizer"]["state"][0]["step"], torch.Tensor)
    assert back["optimizer"]["state"][0]["step"].shape == ()
    assert isinstance(back["obs_norm"]["mean"], np.ndarray)
    restored = torch.Generator()
    restored.set_state(back["generator"])
    assert torch.equal(torch.rand(5, generator=restored), torch.rand(5, generator=gen))
    again = torch.optim.Adam(torch.nn.Linear(4, 2).parameters())
    again.load_state_dict(back["optimizer"])
    assert torch.equal(again.state_dict()["state"][1]["exp_avg"], opt.state_dict()["state"][1]["exp_avg"])


def test_torch_tensors_where_torch_is_missing_are_explained_or_read_as_numpy(tmp_path):
    run = RunDir(tmp_path / "run")
    run.save_checkpoint({"policy": {"w": torch.arange(3.0)}, "step": 2})
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        import numpy as np
        from edgeag.errors import EdgeagError
        from edgeag.train.checkpoint import load
        from edgeag.train.rundir import RunDir
        run = RunDir({str(run.path)!r})
        state = load(run.checkpoint, numpy_only=True)
        assert type(state["policy"]["w"]) is np.ndarray and state["policy"]["w"].tolist() == [0, 1, 2]
        try:
            run.load_checkpoint("export")
        except EdgeagError as e:
            print(e)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"cannot export: {run.checkpoint} holds torch tensors (a run trained with torch), and "
        f"torch is not installed; install it (pip install torch), or read the arrays as numpy "
        f"arrays with edgeag.train.checkpoint.load(path, numpy_only=True)")


def _safetensors_file(metadata: dict | None) -> bytes:
    return save({"w": np.zeros(3, np.float32)}, metadata=metadata)


def _layout_file(layout: str) -> bytes:
    return _safetensors_file({"edgeag": layout})


def _zip_file() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return buf.getvalue()


def _good_file() -> bytes:
    f = io.BytesIO()
    checkpoint.save(f, {"w": np.arange(1000.0), "step": 3})
    return f.getvalue()


@pytest.mark.parametrize("make,detail", [
    (lambda: b"", r"SafetensorError"),
    (lambda: b"\x00" * 7, r"SafetensorError"),
    (lambda: _good_file()[:-100], r"SafetensorError"),
    (lambda: _good_file()[:40], r"SafetensorError"),
    (lambda: bytes(range(256)) * 16, r"SafetensorError"),
    (lambda: b"\xff" * 8 + b"{}", r"SafetensorError"),
    (_zip_file, r"SafetensorError"),
    (lambda: _safetensors_file(None), r"CheckpointError: a safetensors file without 'edgeag' metadata"),
    (lambda: _safetensors_file({"format": "2"}), r"without 'edgeag' metadata"),
    (lambda: _layout_file("{not json"), r"CheckpointError: its 'edgeag' metadata is not JSON"),
    (lambda: _layout_file('{"format": 1, "tree": {"dict": []}}'), r"format 1; this edgeag reads format 2"),
    (lambda: _layout_file('{"format": "2", "tree": {"dict": []}}'), r"format '2'; this edgeag reads"),
    (lambda: _layout_file('[2]'), r"format None"),
    (lambda: _layout_file('{"format": 2, "tree": {"dict": [["a", {"array": "nope"}]]}}'),
     r"names an array the file lacks: nope"),
    (lambda: _layout_file('{"format": 2, "tree": {"dict": [["a", {"set": [1]}]]}}'),
     r"a damaged node in its layout"),
    (lambda: _layout_file('{"format": 2, "tree": {"dict": [[true, 1]]}}'), r"a damaged dict item"),
    (lambda: _layout_file('{"format": 2, "tree": [1, 2]}'), r"its tree is not a dict"),
    (lambda: _layout_file('{"format": 2}'), r"its tree is not a dict"),
])
@pytest.mark.parametrize("purpose", ["resume", "export"])
def test_a_file_that_is_not_a_format_2_checkpoint_is_refused_in_one_line(tmp_path, make, detail,
                                                                          purpose):
    path = tmp_path / "checkpoints" / "latest.safetensors"
    path.parent.mkdir()
    path.write_bytes(make())
    with pytest.raises(EdgeagError) as e:
        load_checkpoint(path, purpose)
    message = str(e.value)
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(f"cannot {purpose}: {path} is not a readable edgeag checkpoint (")
    assert message.endswith("; accepted: a safetensors file whose 'edgeag' metadata has "
                            "format 2)"), message
    assert re.search(detail, message), message


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(EdgeagError, match=r"^cannot export: no checkpoint at .*latest.safetensors$"):
        load_checkpoint(tmp_path / "latest.safetensors", "export")


def test_unstorable_values_are_refused_by_their_path():
    for state, message in [({"a": {"b": {1, 2}}}, r"a/b: cannot store a set"),
                           ({"a": {(1, 2): 3}}, r"a: a dict key must be a str or an int"),
                           ({"a": [np.array(["x"])]}, r"a/0: dtype <U1 is not stored"),
                           ({"a": torch.zeros(2, dtype=torch.bfloat16)}, r"a: a torch.bfloat16"),
                           ({"a": {True: 1}}, r"a dict key must be a str or an int, not bool")]:
        with pytest.raises(TypeError, match=message):
            checkpoint.save(io.BytesIO(), state)


# --- older runs: checkpoints/latest.pt (format 1, torch.save) --------------------------

def write_format_1(path: Path, state: dict) -> None:
    """What edgeag wrote before safetensors checkpoints: ``torch.save`` of the state with
    ``"format": 1``, numpy arrays wrapped as ``{"__ndarray__": tensor}``."""
    def wrap(tree):
        if isinstance(tree, np.ndarray):
            return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(tree).copy())}
        if isinstance(tree, dict):
            return {k: wrap(v) for k, v in tree.items()}
        if isinstance(tree, (list, tuple)):
            return type(tree)(wrap(v) for v in tree)
        return tree
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": 1, **wrap(state)}, path)


def ppo_cfg(**change):
    """A short PPO run; no lr annealing, whose schedule depends on total_steps."""
    cfg, _ = resolve_config("CartPole-v1", "adam", {"total_steps": 1024, "num_steps": 32,
                                                    "eval_episodes": 1, "checkpoint_every": 1,
                                                    "anneal_lr": False})
    return dataclasses.replace(cfg, **change)


def test_an_older_runs_latest_pt_resumes_with_torch_bit_for_bit_and_is_replaced(tmp_path):
    """A run whose checkpoint is a format-1 ``latest.pt`` resumes (read with
    ``torch.load(weights_only=True)``), ends with the policy of a run never stopped, and
    its next checkpoint is ``latest.safetensors`` (``latest.pt`` is then removed)."""
    quiet = dict(log=lambda _: None)
    train(ppo_cfg(), RunDir(tmp_path / "full"), RunOptions(progress=False), **quiet)
    cut = RunDir(tmp_path / "cut")
    train(ppo_cfg(total_steps=512), cut, RunOptions(progress=False), **quiet)
    state = cut.load_checkpoint()
    old = cut.path / "checkpoints" / "latest.pt"
    write_format_1(old, state)
    cut.checkpoint.unlink()
    assert cut.checkpoint == old
    assert_same(state, load_checkpoint(old))
    code, summary = train(ppo_cfg(), cut, RunOptions(progress=False, resume=True), **quiet)
    assert code == 0 and summary["steps"] == 1024
    assert not old.exists() and cut.checkpoint.name == "latest.safetensors"
    a, b = cut.load_checkpoint()["policy"], RunDir(tmp_path / "full").load_checkpoint()["policy"]
    assert a.keys() == b.keys() and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def test_an_older_runs_latest_pt_without_torch_says_how_to_continue(tmp_path):
    old = tmp_path / "run" / "checkpoints" / "latest.pt"
    write_format_1(old, {"policy": {"w": torch.ones(2)}, "obs_norm": {"mean": np.zeros(2)}})
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        from edgeag.errors import EdgeagError
        from edgeag.train.rundir import RunDir
        run = RunDir({str(tmp_path / "run")!r})
        assert run.checkpoint.name == "latest.pt"
        try:
            run.load_checkpoint()
        except EdgeagError as e:
            print(e)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"cannot resume: {old} is a format-1 checkpoint (torch.save), which only torch can "
        f"read; install torch (pip install torch) and resume the run once (edgeag train "
        f"--resume {tmp_path / 'run'}): its next checkpoint is latest.safetensors, which "
        f"needs no torch")


def test_a_damaged_latest_pt_is_refused_in_one_line(tmp_path):
    old = tmp_path / "latest.pt"
    old.write_bytes(b"junk")
    with pytest.raises(EdgeagError, match=r"^cannot export: .*latest.pt is not a readable "
                                          r"edgeag checkpoint \(.*\)$"):
        load_checkpoint(old, "export")
    torch.save({"format": 7}, old)
    with pytest.raises(EdgeagError, match=r"is not an edgeag checkpoint \(format 1\)"):
        load_checkpoint(old)
