"""Export a trained policy for inference on the device, and run it there.

``edgeag export RUN`` turns ``RUN/checkpoints/latest.safetensors`` into artifacts that
onnxruntime (Raspberry Pi, mobile onnxruntime) and ExecuTorch (Android, iOS) load
directly, each verified against the PyTorch policy before it is moved into place.
Every artifact is the whole policy, with one contract:

- input ``obs``: float32 ``[batch, obs_dim]``, the raw observation from the env
  (dynamic batch; at most `PTE_MAX_BATCH` for ``.pte``);
- output ``action``: int64 ``[batch]`` (discrete: argmax of the logits) or float32
  ``[batch, act_dim]`` (continuous: the Gaussian mean clipped to the action bounds),
  ready for ``env.step``.

Observation normalisation (running mean/std frozen at the checkpoint, clipped to
+-10) is inside the artifact.

Modules: `edgeag.export.policy` (the wrapper module, recorded observations),
`edgeag.export.onnx`, `edgeag.export.executorch`, `edgeag.export.verify`,
`edgeag.export.build` (``edgeag export``), and `edgeag.export.runner`
(``edgeag run``: onnxruntime + numpy + gymnasium, never torch, for ``.onnx``/``.ort``).
Importing this package imports nothing heavy.
"""

FORMATS = ("onnx", "ort", "pte")
"""What ``--format`` accepts (the same names as a device profile's ``export_formats``)."""
QUANTIZE = ("int8",)
"""What ``--quantize`` accepts."""
PTE_MAX_BATCH = 1024
"""Upper bound of the dynamic batch of a ``.pte`` (ExecuTorch plans memory for it)."""
METADATA = "policy.json"
