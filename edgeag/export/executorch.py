"""ExecuTorch artifacts: ``torch.export`` -> ``to_edge_transform_and_lower`` with the
XNNPACK partitioner -> ``.pte`` (ExecuTorch's ``examples/xnnpack/aot_compiler.py``
recipe); int8 through the PT2E flow with ExecuTorch's XNNPACK quantizer."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from edgeag.export import PTE_MAX_BATCH
from edgeag.export.runner import quiet_executorch_logs


def export_pte(module: torch.nn.Module, obs_dim: int, path: Path,
               calibration: np.ndarray | None = None) -> dict:
    """Write ``module`` as an XNNPACK-delegated ExecuTorch program to ``path``; with
    ``calibration`` observations, quantize it to int8 first (static, symmetric, per
    output channel weights; activation ranges observed on ``calibration``). Returns
    what ran where: the ops XNNPACK took and those left to ExecuTorch's portable
    kernels."""
    quiet_executorch_logs()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    example = (torch.zeros(2, obs_dim),)
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
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, \
        get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
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
