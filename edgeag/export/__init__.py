"""Export a trained policy for inference on the device, and run it there.

``edgeag export RUN`` turns ``RUN/checkpoints/latest.safetensors`` of a PPO, DQN, TD3
or SAC run into artifacts that onnxruntime (Raspberry Pi, mobile onnxruntime) and
ExecuTorch (Android, iOS) load directly, or a C99 header for boards with neither
(`edgeag.export.c_source`), each verified against a numpy reference of the policy
before it is moved into place. Every artifact is the whole policy, with one contract:

- input ``obs``: float32 ``[batch, obs_dim]``, the raw observation from the env
  (dynamic batch; at most `PTE_MAX_BATCH` for ``.pte``);
- output ``action``, ready for ``env.step``: int64 ``[batch]`` (PPO: argmax of the
  logits; DQN: argmax of Q) or float32 ``[batch, act_dim]`` (PPO: the Gaussian mean
  clipped to the action bounds; TD3: the actor's tanh scaled to the action bounds;
  SAC: the tanh of its Gaussian mean, scaled the same way).

PPO's observation normalisation (running mean/std frozen at the checkpoint, clipped to
+-10) is inside the artifact; DQN and TD3 take the raw observation, as they train.

The policy is read once, as data: `edgeag.export.spec.PolicySpec` (layers, activation,
head, normalisation; numpy arrays from the checkpoint, whichever engine trained it),
whose numpy forward is the reference. ``.onnx`` (and ``.ort``, int8) are written from
it with the ``onnx`` package's graph API and verified with onnxruntime: no torch
(``pip install 'edgeag[onnx]'``). ``.pte`` needs torch and ExecuTorch (``pip install
'edgeag[export]'``): a torch module is built from the same spec and lowered.

Modules: `edgeag.export.formats` (the registry of formats: what each writes, builds,
quantizes, runs and needs), `edgeag.export.spec` (the spec and its numpy forward),
`edgeag.export.policy`
(reading a run, recorded observations), `edgeag.export.onnx`,
`edgeag.export.executorch`, `edgeag.export.c_source`, `edgeag.export.verify`,
`edgeag.export.build` (``edgeag export``), `edgeag.export.runner` (``edgeag run``:
onnxruntime + numpy + gymnasium, never torch, for ``.onnx``/``.ort``) and
`edgeag.export.native` (ExecuTorch's C++ runtime: ``make native``, ``edgeag run
--native``). Importing this package imports nothing heavy.
"""

PTE_MAX_BATCH = 1024
"""Upper bound of the dynamic batch of a ``.pte`` (ExecuTorch plans memory for it)."""
METADATA = "policy.json"
