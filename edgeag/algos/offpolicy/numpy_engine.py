"""What DQN and TD3 share on the numpy engine (`edgeag.engine`): networks trained by one
optimizer, held in one flat buffer with their target copy.

A `NetGroup` is DQN's Q-network, TD3's actor, or TD3's twin critics: their MLPs' segments
end to end in one buffer (named ``{net}.net.{2i}.weight``, so ``{net}``'s arrays are
torch's ``nn.Sequential`` keys once the prefix is cut), the optimizer over that buffer,
the one update path chosen for it (`edgeag.engine.choose_path`), the gradient buffer
of the flat path, and the target networks as a second buffer of the same layout, moved
towards the online one by `soft_update_` (torch's ``lerp_``, value for value).
"""

from __future__ import annotations

import numpy as np

from edgeag.engine import MLP, Layout, choose_path
from edgeag.memory import PlanItem
from edgeag.optim import flat, registry


class NetGroup:
    """MLPs trained together by one optimizer, and their target copy."""

    def __init__(self, cfg, mlps: dict[str, MLP], dtype, target: bool = True):
        self.mlps = mlps
        shapes = [s for m in mlps.values() for s in m.shapes()]
        self.layout = Layout.from_shapes(shapes, dtype)
        self.params = self.layout.zeros()
        self.optimizer = flat.build(cfg.optimizer, self.params,
                                    **registry.get(cfg.optimizer).options(cfg))
        self.path = choose_path(self.optimizer, cfg.fuse_backward)
        self.grads = self.layout.zeros() if self.path.kind == "flat" else None
        self.target = self.layout.zeros() if target else None
        clips = self.optimizer.clips_gradients and cfg.max_grad_norm > 0
        self.max_grad_norm = cfg.max_grad_norm if clips else None

    def backward(self, mlp: MLP, acts: list[np.ndarray], grad_out: np.ndarray) -> None:
        """``mlp``'s gradients to this group's update path (the flat buffer, or the
        optimizer inside the backward pass)."""
        self.path.backward(mlp, self.params, acts, grad_out, self.optimizer, self.grads)

    def step(self) -> None:
        """After every backward of the minibatch: the flat path clips (optimizers that
        clip, with ``max_grad_norm``) and steps; the fused paths are done already."""
        self.path.finish(self.optimizer, self.grads, self.max_grad_norm)

    def sync_target(self) -> None:
        self.target.data[...] = self.params.data

    def soft_update(self, tau: float) -> None:
        soft_update_(self.target.data, self.params.data, tau)

    def arrays(self, buffer) -> dict[str, dict[str, np.ndarray]]:
        """``{net: {torch state_dict key: view}}`` of ``buffer`` (params or target)."""
        out = {}
        for name, mlp in self.mlps.items():
            cut = len(name) + 1
            out[name] = {key[cut:]: buffer[key] for key, _ in mlp.shapes()}
        return out

    def load_arrays(self, buffer, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        buffer.load_state_dict({f"{name}.{key}": value for name in self.mlps
                                for key, value in arrays[name].items()})

    def memory(self, batch: int) -> dict[str, int]:
        """The analytic bytes of this group's update (`UpdatePath.memory_items`), the
        target buffer, and the target update's temporary (one buffer-sized difference)."""
        m = self.path.memory_items(self.optimizer, list(self.mlps.values()), batch)
        m["target"] = self.layout.nbytes if self.target is not None else 0
        m["update_temporaries"] = max(m["update_temporaries"], m["target"])
        return m


class TwinCritics:
    """What TD3's and SAC's numpy networks share: twin critics ``qf1``, ``qf2`` (MLPs on
    ``[obs, action]``) in one `NetGroup` ``critic`` with its target copy, the clipped
    double-Q target and the critics' regression step. A subclass sets ``qf1``, ``qf2``,
    ``critic``, ``dtype`` and `CRITIC_LOSS_WEIGHT`."""

    CRITIC_LOSS_WEIGHT = 1.0
    """The critic loss is this times ``mse(Q1, y) + mse(Q2, y)`` (TD3: 1, SAC: SB3's 0.5)."""

    def _critic_input(self, obs, actions) -> np.ndarray:
        return np.concatenate([np.asarray(obs, self.dtype), np.asarray(actions, self.dtype)], -1)

    def target_q(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``min(Q1'(s, a), Q2'(s, a))`` of the target critics."""
        x = self._critic_input(obs, actions)
        return np.minimum(self.qf1.forward(self.critic.target, x)[-1][:, 0],
                          self.qf2.forward(self.critic.target, x)[-1][:, 0])

    def update_critics(self, obs, actions, target) -> tuple[float, float]:
        """One step of both critics on ``w * (mse(Q1, target) + mse(Q2, target))``, its
        gradients ``2 w (Q - target) / n`` by hand (``w`` = `CRITIC_LOSS_WEIGHT`);
        returns (loss, mean Q1)."""
        x = self._critic_input(obs, actions)
        target = np.asarray(target, self.dtype)
        n = x.shape[0]
        w = self.CRITIC_LOSS_WEIGHT
        loss = 0.0
        q1_mean = None
        for mlp in (self.qf1, self.qf2):
            acts = mlp.forward(self.critic.params, x)
            diff = acts[-1][:, 0] - target
            loss += w * float(np.mean(diff * diff))
            if q1_mean is None:
                q1_mean = float(acts[-1].mean())
            self.critic.backward(mlp, acts, (diff * (2.0 * w / n))[:, None])
        self.critic.step()
        return loss, q1_mean


def soft_update_(target: np.ndarray, online: np.ndarray, tau: float) -> None:
    """``target <- tau * online + (1 - tau) * target`` in place, computed as torch's
    ``target.lerp_(online, tau)`` computes it (tau = 1: a copy)."""
    if tau == 1.0:
        target[...] = online
        return
    diff = np.subtract(online, target)
    if tau < 0.5:
        diff *= tau
        target += diff
    else:
        diff *= 1.0 - tau
        np.subtract(online, diff, out=target)


def group_items(groups: list[NetGroup], cfg, batch: int, activations: int,
                note: str) -> list[PlanItem]:
    """The plan items of an off-policy network set on the numpy engine, from its groups:
    their parameters, gradients, optimizer state and targets summed; the largest update
    temporary; the activations of the algorithm's largest step (``activations``)."""
    ms = [g.memory(batch) for g in groups]
    count = sum(g.layout.count for g in groups)
    kinds = sorted({g.path.kind for g in groups})
    return [
        PlanItem("parameters", sum(m["params"] for m in ms), f"{count:,} values"),
        PlanItem("gradients", sum(m["grads"] for m in ms),
                 "one buffer per optimizer" if kinds == ["flat"] else
                 f"{'/'.join(kinds)} path"),
        PlanItem("optimizer state", sum(m["optimizer_state"] for m in ms), cfg.optimizer +
                 (f", momentum {cfg.momentum}" if cfg.momentum else "")),
        PlanItem("update temporaries", max(m["update_temporaries"] for m in ms),
                 "largest of the updates and target updates"),
        PlanItem("activations", activations, note),
        PlanItem("target networks", sum(m["target"] for m in ms), "copies, no gradients"),
    ]
