"""ONNX artifacts: a `PolicySpec` written as an ONNX graph with the ``onnx`` package's
own graph API (no torch), int8 through ``onnxruntime.quantization``, and the ``.ort``
format for mobile onnxruntime. This module never imports torch."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgeag.export.spec import OBS_CLIP, PolicySpec

ONNX_OPSET = 18
"""The default opset of onnx 1.13, the oldest release onnxruntime 1.14 (and every later
one) loads."""
ONNX_IR_VERSION = 8
"""The IR version of onnx 1.13, which opset 18 needs at least: current onnx writes a
newer IR by default, which older onnxruntime releases refuse."""
PRODUCER = "edgeag"
FIRST_LAYER = "layer0"
"""The name of the first Gemm node (each node is named after its output)."""


def export_onnx(spec: PolicySpec, path: Path, ctx=None) -> dict:
    """Write ``spec`` to ``path`` as one self-contained ONNX model (weights inside the
    file, dynamic ``batch``): input ``obs`` float32 ``[batch, obs_dim]``, output
    ``action`` int64 ``[batch]`` or float32 ``[batch, act_dim]``; check it with
    ``onnx.checker`` and return its opset and IR version."""
    import onnx

    onnx.save(build_onnx(spec), str(path))
    return check_onnx(path)


def build_onnx(spec: PolicySpec):
    """The ``onnx.ModelProto`` of ``spec``, node for node the numpy reference
    (`PolicySpec.outputs` and `PolicySpec.apply_head`): Sub, Div and Clip for the
    normalisation, Gemm (``transB=1``: weights kept ``[out, in]``) with Tanh or Relu
    between layers, then ArgMax (``keepdims=0``), or Max/Min to the bounds (after Tanh,
    Mul and Add for TD3)."""
    from onnx import TensorProto, helper, numpy_helper

    weights, nodes = [], []

    def const(name: str, value) -> str:
        weights.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    x = "obs"
    if spec.normalize:
        x = node("Sub", [x, const("obs_mean", spec.obs_mean)], "obs_centred")
        x = node("Div", [x, const("obs_std", spec.obs_std)], "obs_scaled")
        x = node("Clip", [x, const("obs_clip_low", np.float32(-OBS_CLIP)),
                          const("obs_clip_high", np.float32(OBS_CLIP))], "obs_normalized")
    last = len(spec.layers) - 1
    for i, (weight, bias) in enumerate(spec.layers):
        x = node("Gemm", [x, const(f"layer{i}.weight", weight), const(f"layer{i}.bias", bias)],
                 f"layer{i}", transB=1)
        if i < last:
            x = node("Tanh" if spec.activation == "tanh" else "Relu", [x],
                     f"layer{i}.{spec.activation}")
    if spec.head == "argmax":
        node("ArgMax", [x], "action", axis=1, keepdims=0, select_last_index=0)
        out_type, out_shape = TensorProto.INT64, ["batch"]
    else:
        if spec.head == "tanh":
            x = node("Tanh", [x], "tanh")
            x = node("Mul", [x, const("action_scale", spec.action_scale)], "scaled")
            x = node("Add", [x, const("action_bias", spec.action_bias)], "shifted")
        x = node("Max", [x, const("action_low", spec.action_low)], "above_low")
        node("Min", [x, const("action_high", spec.action_high)], "action")
        out_type, out_shape = TensorProto.FLOAT, ["batch", int(spec.action_low.shape[0])]
    graph = helper.make_graph(
        nodes, f"edgeag_{spec.algorithm}_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", spec.obs_dim])],
        [helper.make_tensor_value_info("action", out_type, out_shape)], weights)
    from edgeag import __version__

    model = helper.make_model(graph, producer_name=PRODUCER, producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = ONNX_IR_VERSION
    model.doc_string = f"{spec.algorithm}: {spec.meaning}"
    return model


def check_onnx(path: Path) -> dict:
    """``onnx.checker`` (full check, with shape inference) passes and every weight is
    inside the file; returns the opset and IR version."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in model.graph.initializer if uses_external_data(t)]
    if external:
        raise RuntimeError(f"{path} keeps {len(external)} weights in external data")
    onnx.checker.check_model(model, full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {"opset": opset, "ir_version": model.ir_version}


def quantize_onnx(spec: PolicySpec, dst: Path, ctx) -> dict:
    """`quantize_static_onnx` of the export's ``policy.onnx`` (in ``ctx.staging``) on the
    calibration observations, with what ran and what calibrated it."""
    calibration, recorded = ctx.calibration()
    return {**quantize_static_onnx(Path(ctx.staging) / "policy.onnx", dst, calibration),
            "quantization": "onnxruntime quantize_static, QDQ: int8 weights per channel "
                            "(7-bit range), int8 activations with calibrated ranges; "
                            "the first layer float",
            "calibration": recorded}


def quantize_static_onnx(src: Path, dst: Path, calibration: np.ndarray) -> dict:
    """Static int8 quantization (``onnxruntime.quantization.quantize_static``, QDQ
    format): weights symmetric int8 per output channel, activation ranges calibrated
    on ``calibration`` observations. ``reduce_range`` keeps weights to 7 bits: x86 CPUs
    without VNNI saturate the int8 x uint8 products of full-range weights (measured on
    a CartPole policy: 52% same actions without it, 98% with it). The library's
    pre-processing (ONNX shape inference, basic graph optimisation) runs first, as it
    recommends; its symbolic shape inference is skipped: it needs sympy (not an
    onnxruntime dependency) and adds nothing to a graph whose only dynamic dimension is
    the batch.

    The first layer stays float (``nodes_to_exclude``; obs_dim x hidden weights, a few
    KB): its input is the observation, and one int8 scale per tensor for features of
    different ranges (Pendulum's cos and sin in [-1, 1], its velocity in [-8, 8]) costs
    the small ones most of their resolution (measured on a barely trained TD3 Pendulum
    policy: worst action error 3.9% of the range quantized, 1.1% float; on a CartPole
    PPO policy 98.8% and 99.4% the same actions)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(range(len(calibration)))

        def get_next(self):
            i = next(self.rows, None)
            return None if i is None else {"obs": calibration[i:i + 1]}

    with tempfile.TemporaryDirectory(dir=Path(dst).parent) as tmp, _quiet_logging():
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QInt8, nodes_to_exclude=[FIRST_LAYER])
    return check_onnx(dst)


def convert_ort(spec: PolicySpec, dst: Path, ctx) -> dict:
    """The ORT format for mobile onnxruntime builds, converted from the export's
    ``policy.onnx`` (in ``ctx.staging``) with onnxruntime's own converter (``python -m
    onnxruntime.tools.convert_onnx_models_to_ort``): fixed optimisations, ARM target (no
    x86-only layout transforms)."""
    src = Path(ctx.staging) / "policy.onnx"
    with _torch_hidden():
        from onnxruntime.tools.convert_onnx_models_to_ort import (
            OptimizationStyle,
            convert_onnx_models_to_ort,
        )

    with tempfile.TemporaryDirectory(dir=Path(dst).parent) as tmp:
        model = Path(tmp) / "model.onnx"
        model.write_bytes(Path(src).read_bytes())
        with contextlib.redirect_stdout(io.StringIO()), _quiet_logging():
            convert_onnx_models_to_ort(model, output_dir=Path(tmp) / "out",
                                       optimization_styles=[OptimizationStyle.Fixed],
                                       target_platform="arm")
        (Path(tmp) / "out" / "model.ort").replace(dst)
    return {"converted_from": "policy.onnx"}


@contextlib.contextmanager
def _torch_hidden():
    """``onnxruntime.tools/__init__.py`` imports torch whenever it is installed (for its
    PyTorch export helpers, which the converter does not use); inside this block
    ``importlib.util.find_spec("torch")`` finds nothing (``sys.modules["torch"]`` is
    None), so importing the tools leaves torch unimported. Nothing is hidden once torch
    is imported already."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None
    try:
        yield
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]


@contextlib.contextmanager
def _quiet_logging():
    """onnxruntime's tools log progress and advice (pre-processing hints, config file
    paths); keep the command's output its own."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
