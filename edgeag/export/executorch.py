"""ExecuTorch artifacts: a `PolicySpec` as a plain torch module (`ExportPolicy`), then
``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner ->
``.pte`` (ExecuTorch's ``examples/xnnpack/aot_compiler.py`` recipe); int8 through the
PT2E flow with ExecuTorch's XNNPACK quantizer. The one export format that needs torch."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from edgeag.export import PTE_MAX_BATCH
from edgeag.export.runner import quiet_executorch_logs
from edgeag.export.spec import OBS_CLIP, PolicySpec

FIRST_LAYER = "mlp.0"
"""The first Linear, kept float by int8 quantization (as in
`edgeag.export.onnx.quantize_onnx`: its input is the raw or normalised observation,
whose features one int8 scale serves badly)."""


class ExportPolicy(nn.Module):
    """`PolicySpec` as a torch module, op for op its numpy forward: the normalisation
    (buffers ``obs_mean``, ``obs_std``), an ``nn.Sequential`` of Linear and Tanh/ReLU
    (``mlp``), then the head (argmax; clip to the bounds; tanh, scale, shift and clip).
    Built from plain modules and buffers so `torch.export` sees ordinary ops."""

    def __init__(self, spec: PolicySpec):
        super().__init__()
        self.discrete = spec.discrete
        self.normalize = spec.normalize
        modules: list[nn.Module] = []
        for i, (weight, bias) in enumerate(spec.layers):
            linear = nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(weight))
                linear.bias.copy_(torch.from_numpy(bias))
            modules.append(linear)
            if i < len(spec.layers) - 1:
                modules.append(nn.Tanh() if spec.activation == "tanh" else nn.ReLU())
        self.mlp = nn.Sequential(*modules).eval()
        if self.normalize:
            self.register_buffer("obs_mean", torch.from_numpy(spec.obs_mean.copy()))
            self.register_buffer("obs_std", torch.from_numpy(spec.obs_std.copy()))
        self.tanh = spec.head == "tanh"
        if not self.discrete:
            self.register_buffer("action_low", torch.from_numpy(spec.action_low.copy()))
            self.register_buffer("action_high", torch.from_numpy(spec.action_high.copy()))
        if self.tanh:
            self.register_buffer("action_scale", torch.from_numpy(spec.action_scale))
            self.register_buffer("action_bias", torch.from_numpy(spec.action_bias))

    def outputs(self, obs: Tensor) -> Tensor:
        """The last layer's output (before the head)."""
        x = obs
        if self.normalize:
            x = torch.clamp((x - self.obs_mean) / self.obs_std, -OBS_CLIP, OBS_CLIP)
        return self.mlp(x)

    def forward(self, obs: Tensor) -> Tensor:
        out = self.outputs(obs)
        if self.discrete:
            return out.argmax(-1)
        if self.tanh:
            out = torch.tanh(out) * self.action_scale + self.action_bias
        return torch.minimum(torch.maximum(out, self.action_low), self.action_high)


def quantize_pte(spec: PolicySpec, path: Path, ctx) -> dict:
    """`export_pte` quantized to int8 on the calibration observations, with what
    quantized it and what calibrated it."""
    calibration, recorded = ctx.calibration()
    return {**export_pte(spec, path, calibration=calibration),
            "quantization": "PT2E with ExecuTorch's XNNPACKQuantizer: symmetric int8, weights "
                            "per channel, static activation ranges; the first layer float",
            "calibration": recorded}


def export_pte(spec: PolicySpec, path: Path, ctx=None, *,
               calibration: np.ndarray | None = None) -> dict:
    """Write ``spec`` (as `ExportPolicy`) as an XNNPACK-delegated ExecuTorch program to
    ``path``; with ``calibration`` observations, quantize it to int8 first (static,
    symmetric, per output channel weights; activation ranges observed on
    ``calibration``; the first layer, `FIRST_LAYER`, stays float). Returns
    what ran where: the ops XNNPACK took and those left to ExecuTorch's portable
    kernels."""
    torch.set_num_threads(1)
    quiet_executorch_logs()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    module = ExportPolicy(spec).eval()
    example = (torch.zeros(2, spec.obs_dim),)
    dynamic = {"obs": {0: torch.export.Dim("batch", min=1, max=PTE_MAX_BATCH)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, example, dynamic_shapes=dynamic)
        if calibration is not None:
            program = _quantize(program, calibration, example, dynamic)
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        graph = edge.exported_program().graph
        delegated = sum(1 for n in graph.nodes if n.op == "call_function"
                        and "call_delegate" in str(n.target))
        portable = sorted({_op_name(n.target) for n in graph.nodes if n.op == "call_function"
                           and "call_delegate" not in str(n.target)
                           and "getitem" not in str(n.target)})
        buffer = edge.to_executorch().buffer
    Path(path).write_bytes(buffer)
    return {"xnnpack_delegates": delegated, "portable_ops": portable,
            "max_batch": PTE_MAX_BATCH}


def _quantize(program, calibration: np.ndarray, example, dynamic):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

    first = get_module_name_filter(FIRST_LAYER)
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True))
    quantizer.set_filter_function(lambda node: not first(node))
    prepared = prepare_pt2e(program.module(), quantizer)
    with torch.no_grad():
        for chunk in np.array_split(calibration, max(1, len(calibration) // 256)):
            prepared(torch.from_numpy(np.ascontiguousarray(chunk)))
    converted = convert_pt2e(prepared)
    return torch.export.export(converted, example, dynamic_shapes=dynamic)


def _op_name(target) -> str:
    """``aten.argmax.default`` for an edge-dialect op."""
    name = getattr(target, "__name__", None) or str(target)
    return name if "(" not in name else str(target).split("(")[0]
