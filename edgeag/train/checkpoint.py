"""Checkpoint files: a state tree in one safetensors file, with no pickle and no torch.

A state tree is what ``state.checkpoint()`` returns: dicts (str or int keys), lists,
tuples, None, bools, ints, floats (nan and inf included), strings, numpy arrays and
scalars, and torch tensors. `save` writes it as a standard safetensors file (format 2)
and `load` gives it back exactly, value for value and dtype for dtype (a dict of
another kind, such as a ``state_dict``'s OrderedDict, comes back as a dict in the same
order; a big-endian array as a native one); numpy is all either needs. torch is
imported only to load a file that holds torch tensors (a run trained with the torch
engine), so that they come back as torch tensors.

The file (``checkpoints/latest.safetensors``)::

    8 bytes   header length N, little-endian
    N bytes   JSON header: {"__metadata__": {"edgeag": LAYOUT}, NAME: {"dtype": "F32",
              "shape": [64, 4], "data_offsets": [begin, end]}, ...}
    the rest  every array's bytes, little-endian, C order, one after another

- **NAME**, an array's tensor name, is its path from the root of the tree: the keys
  and list indices on the way, joined by ``/`` (``policy/actor.0.weight``,
  ``optimizer/state/0/exp_avg``, ``envs/3/2/state``). In a str key, ``~`` is written
  ``~0`` and ``/`` ``~1`` (JSON Pointer's escapes, RFC 6901), and a str key that would
  read as an int key (``"0"``) or as the header's reserved ``__metadata__`` gets a
  leading ``~2`` (``~20``). So one name stands for one place in the tree. An array
  stored twice in the tree (the same memory, as TD3's ``policy`` and ``nets/actor``) is
  written once, under its first name.
- **LAYOUT** is JSON text: ``{"format": 2, "tree": TREE}``, where TREE mirrors the
  state: null, true/false, integers (any size), finite floats and strings are
  themselves; a list is a JSON array; ``{"tuple": [...]}``; ``{"dict": [[key, value],
  ...]}`` (keys str or int, in order); ``{"float": "nan" | "inf" | "-inf"}``; and
  ``{"array": NAME}`` for a numpy array, with ``"torch": true`` when it was a torch
  tensor and ``"scalar": true`` when it was a numpy scalar (``np.float64(0.5)``: a 0-d
  array in the file).

Any safetensors reader reads the arrays (``safetensors.numpy.load_file(path)``) and
the layout (``safe_open(path, "np").metadata()["edgeag"]``).

`save` writes the header and then each array straight from its own memory into the
file it is given: no second copy of the state is made, and an OSError of a write (a
full disk, a file-size limit) reaches the caller as it is.
"""

from __future__ import annotations

import json
import math
import re
import struct
import sys
from pathlib import Path

import numpy as np

FORMAT = 2
METADATA_KEY = "edgeag"

_DTYPES = {
    np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8", np.dtype(np.uint64): "U64", np.dtype(np.uint32): "U32",
    np.dtype(np.uint16): "U16", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL",
    np.dtype(np.complex64): "C64",
}
"""numpy dtypes and their safetensors names: those a safetensors reader gives back
to numpy as the same dtype."""

_INT_NAME = re.compile(r"-?[0-9]+")


class CheckpointError(ValueError):
    """A file that is not a format-2 edgeag checkpoint, or one whose layout is damaged."""


class NeedsTorch(ImportError):
    """A checkpoint that holds torch tensors, loaded where torch cannot be imported."""


# --- writing ---------------------------------------------------------------------------

def array_bytes(tree) -> int:
    """Bytes of the arrays (numpy, or torch tensors) in a state tree: what holding it costs."""
    if isinstance(tree, dict):
        return sum(array_bytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(array_bytes(v) for v in tree)
    nbytes = getattr(tree, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if hasattr(tree, "element_size") and hasattr(tree, "numel"):  # a torch tensor
        return int(tree.element_size() * tree.numel())
    return 0


def save(f, state: dict) -> None:
    """Write ``state`` (a dict: the root of a state tree) to the binary file ``f`` as a
    format-2 checkpoint. TypeError for a value or key the format cannot hold (named by
    its path)."""
    if not isinstance(state, dict):
        raise TypeError(f"a checkpoint's state must be a dict, not {type(state).__name__}")
    arrays: list[tuple[str, np.ndarray]] = []
    tree = _encode(state, "", arrays, {})
    layout = json.dumps({"format": FORMAT, "tree": tree}, allow_nan=False,
                        separators=(",", ":"))
    # widest items first, so that every array starts at a multiple of its item size
    arrays.sort(key=lambda item: -item[1].dtype.itemsize)
    header: dict = {"__metadata__": {METADATA_KEY: layout}}
    offset = 0
    for name, array in arrays:
        header[name] = {"dtype": _DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors pads
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for _, array in arrays:
        if array.nbytes:
            f.write(memoryview(array.reshape(-1).view(np.uint8)))


def _encode(value, path: str, arrays: list, seen: dict):
    """The JSON form of ``value`` (at tree path ``path``), appending its arrays to
    ``arrays`` as (name, little-endian C-contiguous array)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        return {"array": _add_array(np.asarray(value), path, arrays, seen), "scalar": True}
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        return {"float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, np.ndarray):
        return {"array": _add_array(value, path, arrays, seen)}
    torch = sys.modules.get("torch")  # a torch tensor exists only if torch is imported
    if torch is not None and isinstance(value, torch.Tensor):
        array = _tensor_to_numpy(value, path)
        return {"array": _add_array(array, path, arrays, seen), "torch": True}
    if isinstance(value, list):
        return [_encode(v, _join(path, str(i)), arrays, seen) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, _join(path, str(i)), arrays, seen)
                          for i, v in enumerate(value)]}
    if isinstance(value, dict):
        items = []
        for key, v in value.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint: {path or '/'}: a dict key must be a str or an "
                                f"int, not {type(key).__name__} ({key!r})")
            key = key if isinstance(key, str) else int(key)
            items.append([key, _encode(v, _join(path, _component(key)), arrays, seen)])
        return {"dict": items}
    raise TypeError(f"checkpoint: {path or '/'}: cannot store a {type(value).__name__}; "
                    "accepted: dict, list, tuple, None, bool, int, float, str, numpy arrays "
                    "and scalars, torch tensors")


def _add_array(array: np.ndarray, path: str, arrays: list, seen: dict) -> str:
    if array.dtype.newbyteorder("=") not in _DTYPES:
        raise TypeError(f"checkpoint: {path}: dtype {array.dtype} is not stored; accepted: "
                        + ", ".join(str(d) for d in _DTYPES))
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    if not array.flags.c_contiguous:
        array = array.copy(order="C")  # a copy only of an array that is not C-ordered
    # one entry per block of memory: an array met again is written once
    identity = (array.__array_interface__["data"][0], array.dtype.str, array.shape)
    if array.nbytes and identity in seen:
        return seen[identity]
    if array.nbytes:
        seen[identity] = path
    arrays.append((path, array))
    return path


def _tensor_to_numpy(tensor, path: str) -> np.ndarray:
    tensor = tensor.detach().cpu().resolve_conj().resolve_neg().contiguous()
    try:
        return tensor.numpy()
    except TypeError as e:  # bfloat16 and the like: numpy has no such dtype
        raise TypeError(f"checkpoint: {path}: a {tensor.dtype} tensor is not stored ({e})") \
            from None


def _component(key) -> str:
    """A key's part of a tensor name (see the module docstring)."""
    if isinstance(key, int):
        return str(key)
    escaped = key.replace("~", "~0").replace("/", "~1")
    if _INT_NAME.fullmatch(escaped) or escaped == "__metadata__":
        escaped = "~2" + escaped
    return escaped


def _join(path: str, component: str) -> str:
    return f"{path}/{component}" if path else component


# --- reading ---------------------------------------------------------------------------

def load(path: str | Path, *, numpy_only: bool = False) -> dict:
    """The state tree in the format-2 checkpoint ``path``. Arrays come back writable,
    each in memory of its own (one copy of the state: the result); those saved as torch
    tensors come back as torch tensors, or with ``numpy_only`` as numpy arrays.

    CheckpointError for a file that is not a checkpoint (not safetensors, no
    ``edgeag`` metadata, another format, a damaged layout); the safetensors reader's
    own error for a truncated or garbled file; FileNotFoundError when there is no file;
    NeedsTorch for torch tensors where torch cannot be imported. The file is read with
    ``pread``, not mapped, so it adds no resident pages of its own to the process."""
    from safetensors import safe_open

    # pread: the file is read into the arrays, never mapped into the process's memory
    with safe_open(str(path), framework="np", backend="pread") as f:
        metadata = f.metadata() or {}
        if METADATA_KEY not in metadata:
            raise CheckpointError(f"a safetensors file without {METADATA_KEY!r} metadata")
        try:
            layout = json.loads(metadata[METADATA_KEY])
        except ValueError as e:
            raise CheckpointError(f"its {METADATA_KEY!r} metadata is not JSON ({e})") from None
        if not isinstance(layout, dict) or layout.get("format") != FORMAT:
            found = layout.get("format") if isinstance(layout, dict) else None
            raise CheckpointError(f"format {found!r}; this edgeag reads format {FORMAT}")
        names = set(f.keys())
        decoder = _Decoder(f, names, numpy_only)
        state = decoder.decode(layout.get("tree"))
    if not isinstance(state, dict):
        raise CheckpointError("its tree is not a dict")
    return state


class _Decoder:
    def __init__(self, f, names: set, numpy_only: bool) -> None:
        self.f, self.names, self.numpy_only = f, names, numpy_only
        self.arrays, self.torch = {}, None

    def decode(self, node):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if isinstance(node, dict) and "array" in node:
            array = self.array(node["array"])
            if node.get("scalar"):
                return array[()]
            return self.as_torch(array) if node.get("torch") and not self.numpy_only else array
        kind, body = next(iter(node.items())) if isinstance(node, dict) and len(node) == 1 \
            else (None, None)
        if kind == "dict" and isinstance(body, list):
            out = {}
            for item in body:
                if (not isinstance(item, list) or len(item) != 2 or isinstance(item[0], bool)
                        or not isinstance(item[0], (str, int))):
                    raise CheckpointError(f"a damaged dict item in its layout: {str(item)[:80]}")
                out[item[0]] = self.decode(item[1])
            return out
        if kind == "tuple" and isinstance(body, list):
            return tuple(self.decode(v) for v in body)
        if kind == "float" and body in ("nan", "inf", "-inf"):
            return float(body)
        raise CheckpointError(f"a damaged node in its layout: {str(node)[:80]}")

    def array(self, name) -> np.ndarray:
        if not isinstance(name, str) or name not in self.names:
            raise CheckpointError(f"its layout names an array the file lacks: {str(name)[:80]}")
        if name not in self.arrays:
            self.arrays[name] = self.f.get_tensor(name)
        return self.arrays[name]

    def as_torch(self, array: np.ndarray):
        if self.torch is None:
            try:
                import torch  # only for a checkpoint that holds torch tensors
            except ImportError as e:
                raise NeedsTorch(f"it holds torch tensors and torch cannot be imported ({e})") \
                    from None
            self.torch = torch
        return self.torch.from_numpy(array)
