"""A state tree with every kind of value a checkpoint holds, and the strict equality
the round-trip tests assert; imports no torch (a test runs it with torch blocked)."""

import math
import sys

import numpy as np


def every_kind_of_value() -> dict:
    """A numpy-only state tree with every kind of value the format holds."""
    rng = np.random.default_rng(0)
    return {
        "policy": {"actor.0.weight": rng.standard_normal((8, 4)).astype(np.float32),
                   "actor.0.bias": np.zeros(8, np.float32)},
        "float64": rng.standard_normal(5), "float16": np.array([1.5, -0.0, np.inf], np.float16),
        "int64": np.array([2**63 - 1, -2**63, 0], np.int64),
        "int32": np.arange(-3, 3, dtype=np.int32), "int16": np.array([-7], np.int16),
        "int8": np.array([-128, 127], np.int8), "uint64": np.array([2**64 - 1], np.uint64),
        "uint32": np.array([7], np.uint32), "uint16": np.array([65535], np.uint16),
        "uint8": rng.integers(0, 256, 5056, dtype=np.uint8), "complex64": np.array([1 + 2j], np.complex64),
        "bool": np.array([[True, False], [False, True]]),
        "empty": np.zeros((0, 3), np.float32), "empty_int": np.array([], np.int64),
        "zero_d": np.array(-0.0), "zero_d_int": np.array(7, np.int64),
        "special": np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324, np.finfo(np.float64).max]),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4))),
        "strided": np.arange(20.0)[::3], "big_endian": np.arange(4, dtype=">f8"),
        "np_scalars": [np.float64(0.1), np.float32(2.5), np.int64(-3), np.bool_(True)],
        "ints": [0, -1, 2**200, 340282366920938463463374607431768211455],
        "floats": [0.1, -0.0, 1e308, 5e-324, math.nan, math.inf, -math.inf, 1.0],
        "bools": [True, False], "none": None, "str": "CartPole-v1 \u00e9 \"quoted\" /slash ~tilde",
        "empty_str": "", "empty_list": [], "empty_dict": {}, "tuple": (0.9, 0.999),
        "empty_tuple": (), "nested": {"list": [[1, (2, [3.5, None])], {"k": "v"}]},
        "int_keys": {0: {"step": np.array(3.0, np.float32)}, 1: {}, -2: "minus"},
        "odd_keys": {"a/b": np.ones(2), "a": {"b": np.zeros(2)}, "~1": np.full(1, 2.0),
                     "~": 1, "0": np.full(1, 3.0), "": np.full(1, 4.0), "__metadata__": 5,
                     "-12": np.full(1, 6.0), 0: np.full(1, 8.0)},
        "__metadata__": np.full(1, 7.0),
    }


def assert_same(a, b, path: str = "") -> None:
    """Equal as values and as types: the same containers (a dict of any kind, such as a
    state_dict's OrderedDict, as a dict), key types and order, the same dtype, shape and
    bytes of every array, nan where nan was."""
    expected = dict if isinstance(a, dict) else type(a)
    assert type(b) is expected, f"{path}: {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} became {list(b)}"
        assert [type(k) for k in a] == [type(k) for k in b], f"{path}: key types"
        for k in a:
            assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}/{i}")
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and a.dtype.newbyteorder("=") == b.dtype, \
            f"{path}: {a.dtype}{a.shape} became {b.dtype}{b.shape}"
        assert np.ascontiguousarray(a, a.dtype.newbyteorder("=")).tobytes() == b.tobytes(), path
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif sys.modules.get("torch") is not None and isinstance(a, sys.modules["torch"].Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype} {b.dtype}"
        assert a.detach().contiguous().numpy().tobytes() == b.numpy().tobytes(), path
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b and repr(a) == repr(b), f"{path}: {a!r} became {b!r}"
