"""PPO's actor-critic on the numpy engine (`edgeag.engine`): what `edgeag train` runs by
default, and what a device without torch runs.

Actor and critic are tanh MLPs whose parameters (and the Gaussian log-std) lie end to
end in one float32 buffer, named as torch names `ActorCritic`'s ``state_dict`` keys, so
a checkpoint exports the same way whichever engine trained it. One minibatch update:
forward both networks, the loss's gradient with respect to their outputs by hand
(`edgeag.algos.ppo.algorithm.output_grads`), then `MLP.backward` to the destination of the one
`edgeag.engine.UpdatePath` chosen when the policy is built (`edgeag.engine.choose_path`):

- ``flat``: every gradient into one buffer, then the optimizer's flat step over all
  segments (a few vectorised ops), clipped first for optimizers that clip; small
  policies, optimizers that need every gradient (Adam, SGD), ``fuse_backward=false``;
- ``factored``: AlphaGrad on a policy above `edgeag.engine.FLAT_MAX_BYTES`: each layer
  updated as soon
  as its gradient is complete, weights above 1M values straight from their gradient's
  factors (no gradient of their size ever exists).

The memory plan prices that same path (`memory_items`).
"""

from __future__ import annotations

import numpy as np

from edgeag.algos.numpy_runtime import RUNTIME, prepare
from edgeag.algos.ppo.algorithm import deterministic, output_grads
from edgeag.algos.ppo.config import PPOConfig
from edgeag.engine import MLP, Layout, choose_path, init_orthogonal
from edgeag.engine.init import SCIPY_LAPACK_IMPORT_BYTES, init_bytes
from edgeag.memory import PlanItem
from edgeag.optim import flat, registry

ALIGN = 16
"""In a policy with a weight initialised in place (`edgeag.engine.lean_orthogonal_`),
every segment starts at a multiple of 16 values (64 bytes): LAPACK factorises in place
only in 8-byte aligned memory. Other policies lie end to end, without gaps."""

OUTER_NUMEL = 1 << 20
"""On the factored path, weights above this many values are updated from factors."""


class NumpyActorCritic:
    """Separate actor and critic MLPs on (normalised) observations, their optimizer and
    update path. Discrete actions: categorical over ``action_dim`` logits. Continuous:
    diagonal Gaussian with a state-independent log-std."""

    RUNTIME = RUNTIME

    def __init__(self, cfg: PPOConfig, obs_dim: int, action_dim: int, discrete: bool, *,
                 dtype=np.float32, initialise: bool = True):
        self.cfg, self.discrete, self.dtype = cfg, discrete, np.dtype(dtype)
        self.arch = {"obs_dim": obs_dim, "action_dim": action_dim, "discrete": discrete,
                     "hidden": list(cfg.hidden), "log_std_init": cfg.log_std_init}
        self.critic = MLP((obs_dim, *cfg.hidden, 1), prefix="critic")
        self.actor = MLP((obs_dim, *cfg.hidden, action_dim), prefix="actor")
        shapes = self.critic.shapes() + self.actor.shapes()
        if not discrete:
            shapes.append(("log_std", (action_dim,)))
        lean = any(init_bytes(shape, self.dtype.itemsize)[1] for name, shape in shapes
                   if name.endswith("weight"))
        self.layout = Layout.from_shapes(shapes, self.dtype, align=ALIGN if lean else 1)
        self.params = self.layout.zeros()  # pages untouched until initialised
        self.optimizer = flat.build(cfg.optimizer, self.params,
                                    **registry.get(cfg.optimizer).options(cfg))
        self.path = choose_path(self.optimizer, cfg.fuse_backward, OUTER_NUMEL)
        self.grads = self.layout.zeros() if self.path.kind == "flat" else None
        self.clips = self.optimizer.clips_gradients
        if initialise:
            rng = np.random.default_rng(cfg.seed)
            init_orthogonal(self.params, self.critic, rng, last_gain=1.0)
            init_orthogonal(self.params, self.actor, rng, last_gain=0.01)
            if not discrete:
                self.params["log_std"][...] = cfg.log_std_init

    prepare = staticmethod(prepare)

    @property
    def log_std(self) -> np.ndarray | None:
        return None if self.discrete else self.params["log_std"]

    @property
    def parameter_count(self) -> int:
        return self.layout.count

    def forward(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The actor's output (logits or Gaussian mean) and the value, for a batch."""
        out = self.actor.forward(self.params, obs)[-1]
        return out, self.critic.forward(self.params, obs)[-1][:, 0]

    def value(self, obs: np.ndarray) -> np.ndarray:
        return self.critic.forward(self.params, obs)[-1][:, 0]

    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        return deterministic(self.actor.forward(self.params, obs)[-1], self.discrete)

    def set_lr(self, lr: float) -> None:
        self.optimizer.set_lr(lr)

    def update(self, mb, record: bool) -> dict:
        """One minibatch step through the run's update path; the loss terms with
        ``record``."""
        acts_critic = self.critic.forward(self.params, mb.obs)
        acts_actor = self.actor.forward(self.params, mb.obs)
        g = output_grads(self.cfg, acts_actor[-1], acts_critic[-1][:, 0], self.log_std, mb,
                         losses=record)
        path, opt = self.path, self.optimizer
        path.backward(self.critic, self.params, acts_critic, g.value[:, None], opt, self.grads)
        del acts_critic
        path.backward(self.actor, self.params, acts_actor, g.out, opt, self.grads)
        if g.log_std is not None:
            if self.grads is not None:
                self.grads["log_std"][...] = g.log_std
            else:
                opt.update("log_std", g.log_std.astype(self.dtype))
        path.finish(opt, self.grads, max_grad_norm=self.cfg.max_grad_norm if self.clips else None)
        return g.losses

    def optimizer_state_bytes(self) -> int:
        return self.optimizer.state_bytes()

    def state_dict(self) -> dict:
        """The parameters and the optimizer's state as views of their own memory (the
        checkpoint is written from them at once: no second copy of a large policy)."""
        return {"policy": self.params.state_dict(copy=False),
                "optimizer": self.optimizer.state_dict(copy=False)}

    def load_state_dict(self, ckpt: dict) -> None:
        self.params.load_state_dict(ckpt["policy"])
        self.optimizer.load_state_dict(ckpt["optimizer"])

    def memory_items(self, batch: int) -> list[PlanItem]:
        """What one run of this policy holds above the floor, from its update path."""
        m = self.path.memory_items(self.optimizer, [self.critic, self.actor], batch,
                                   momentum=self.cfg.momentum)
        width = max(self.arch["hidden"], default=0)
        a = self.arch["action_dim"]
        item = self.dtype.itemsize
        # the minibatch's rows, the loss gradients, and backward's deltas (three at once)
        scratch = batch * item * (self.arch["obs_dim"] + a + 5 + 6 * a + 3 * width)
        grads_note = {"flat": "one buffer, every gradient",
                      "fused": "the largest, one at a time (inside backward)",
                      "factored": "the largest formed (large weights: from factors)"}
        return [
            PlanItem("parameters", m["params"], f"{self.layout.count:,} values"),
            PlanItem("gradients", m["grads"], grads_note[self.path.kind]),
            PlanItem("optimizer state", m["optimizer_state"], self.cfg.optimizer +
                     (f", momentum {self.cfg.momentum}" if self.cfg.momentum else "")),
            PlanItem("update temporaries", m["update_temporaries"], f"{self.path.kind} path"),
            PlanItem("activations", m["activations"], "one minibatch, both networks"),
            PlanItem("backward scratch", scratch, "minibatch rows, loss gradients, deltas"),
            self._init_item(),
        ]

    def _init_item(self) -> PlanItem:
        """Orthogonal initialisation: the largest weight's temporaries (one weight at a
        time), and the scipy import the lean path of large square weights needs."""
        costs = [init_bytes(self.layout[m.weight(i)].shape, self.dtype.itemsize)
                 for m in (self.critic, self.actor) for i in range(m.depth)]
        lean = any(is_lean for _, is_lean in costs)
        nbytes = max(c for c, _ in costs) + (SCIPY_LAPACK_IMPORT_BYTES if lean else 0)
        return PlanItem("initialisation", nbytes, "largest weight's QR" +
                        (" in place, + scipy.linalg.lapack" if lean else ""))
