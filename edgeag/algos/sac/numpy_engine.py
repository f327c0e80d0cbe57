"""SAC's actor, twin critics and temperature on the numpy engine (`edgeag.engine`): what
`edgeag train --algo sac` runs by default, and what a device without torch runs.

Two `edgeag.algos.offpolicy.numpy_engine.NetGroup`\\ s and the temperature, each with its
own optimizer (the run's): the actor (a ReLU MLP whose outputs are the Gaussian's means
and log stds; no target copy), both critics (ReLU MLPs on ``[obs, action]``) in one
buffer with their target copy, and ``log_alpha``, one value in a buffer of its own
(`Temperature`). Arrays are named as torch's ``SquashedGaussianActor`` / ``QCritic``
``state_dict`` keys (``net.0.weight``, ...).

The squashed Gaussian and its backward are written here by hand (`SquashedGaussian`):

- ``log_std = clip(raw, LOG_STD_MIN, LOG_STD_MAX)``, ``std = exp(log_std)``;
- ``u = mean + std * eps``, ``t = tanh(u)``, ``action = t * scale + bias``;
- ``log pi = sum_dims(-eps^2 / 2 - log_std - log(2 pi) / 2 - log(d))`` with
  ``d = scale * (1 - t^2) + LOG_PROB_EPS``.

Its backward takes d loss / d action and d loss / d log pi, and gives d loss / d the
actor's outputs: ``g_u = g_action * scale * (1 - t^2) + g_logp * 2 t scale (1 - t^2) / d``;
d / d mean is ``g_u`` (the Normal term does not depend on the mean once ``u - mean =
std * eps``); d / d log_std is ``g_u * std * eps - g_logp``, zero where the clip was
active.

- critic update: both critics forward, the gradients ``(Q - target) / n`` of SB3's
  ``0.5 * (mse(Q1, target) + mse(Q2, target))`` by hand, `MLP.backward` of each to the
  critics' update path, one step;
- actor update: the actor forward, the squashed Gaussian, the action into both critics,
  `MLP.backward` through each for d loss / d input only (weighted by which critic is
  the smaller, half each on a tie as ``torch.min`` splits it; the critics' parameters
  get no gradient), the action columns into the Gaussian's backward, then the actor's
  `MLP.backward`, one step;
- temperature update: SB3's loss ``-(log_alpha * (log pi + target_entropy)).mean()``,
  whose gradient is ``-(mean(log pi) + target_entropy)``, one step of its optimizer.
"""

from __future__ import annotations

import math

import numpy as np

from edgeag.algos.numpy_runtime import RUNTIME, prepare
from edgeag.algos.offpolicy.numpy_engine import NetGroup, TwinCritics, group_items
from edgeag.algos.sac.algorithm import (
    LOG_PROB_EPS,
    LOG_STD_MAX,
    LOG_STD_MIN,
    SACShapes,
    activation_bytes,
)
from edgeag.algos.sac.config import SACConfig
from edgeag.engine import MLP, Layout, UpdatePath, init_linear_default
from edgeag.optim import flat, registry

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class SquashedGaussian:
    """The actor's outputs ``[n, 2 * action_dim]`` (means, then raw log stds) and the
    noise ``eps`` -> ``action`` ``[n, action_dim]`` and ``log_prob`` ``[n]``; `backward`
    gives d loss / d the outputs."""

    def __init__(self, out: np.ndarray, eps: np.ndarray, scale: np.ndarray, bias: np.ndarray):
        a = out.shape[1] // 2
        self.eps = np.asarray(eps, out.dtype)
        self.raw = out[:, a:]
        self.scale = scale
        log_std = np.clip(self.raw, LOG_STD_MIN, LOG_STD_MAX)
        self.std = np.exp(log_std)
        self.t = np.tanh(out[:, :a] + self.std * self.eps)
        self.slope = 1.0 - self.t * self.t
        self.action = self.t * scale + bias
        self.d = scale * self.slope + LOG_PROB_EPS
        self.log_prob = (-0.5 * self.eps * self.eps - log_std - HALF_LOG_2PI
                         - np.log(self.d)).sum(-1)

    def backward(self, g_action: np.ndarray, g_log_prob: np.ndarray) -> np.ndarray:
        """d loss / d the outputs, from d loss / d action ``[n, a]`` and d loss / d log
        pi ``[n]``."""
        g_logp = g_log_prob[:, None]
        g_u = g_action * self.scale * self.slope
        g_u += g_logp * (2.0 * self.t * self.scale * self.slope / self.d)
        g_log_std = g_u * self.std * self.eps - g_logp
        g_log_std *= (self.raw >= LOG_STD_MIN) & (self.raw <= LOG_STD_MAX)
        return np.concatenate([g_u, g_log_std], axis=1)


def temperature_loss(log_alpha: float, log_prob: np.ndarray,
                     target_entropy: float) -> tuple[float, float]:
    """SB3's ``-(log_alpha * (log_prob + target_entropy)).mean()`` (the log-probabilities
    held constant) and its gradient with respect to ``log_alpha``."""
    gap = float(np.mean(log_prob + target_entropy))
    return -log_alpha * gap, -gap


class Temperature:
    """``log_alpha``: one value in a buffer of its own, stepped by its own optimizer (the
    run's, as SB3 gives the entropy coefficient its own Adam) through the flat path
    (clipped at ``max_grad_norm`` by the optimizers that clip, as every other group)."""

    def __init__(self, cfg: SACConfig, dtype):
        self.layout = Layout.from_shapes([("log_alpha", (1,))], dtype)
        self.params, self.grads = self.layout.zeros(), self.layout.zeros()
        self.optimizer = flat.build(cfg.optimizer, self.params,
                                    **registry.get(cfg.optimizer).options(cfg))
        self.path = UpdatePath("flat")
        clips = self.optimizer.clips_gradients and cfg.max_grad_norm > 0
        self.max_grad_norm = cfg.max_grad_norm if clips else None
        self.params["log_alpha"][...] = math.log(cfg.ent_coef_init)

    @property
    def log_alpha(self) -> float:
        return float(self.params["log_alpha"][0])

    def step(self, grad: float) -> None:
        self.grads["log_alpha"][...] = grad
        self.path.finish(self.optimizer, self.grads, self.max_grad_norm)

    def memory(self, batch: int) -> dict[str, int]:
        """The group interface of `group_items`: its update's bytes, no target."""
        m = self.path.memory_items(self.optimizer, [], batch)
        m["target"] = 0
        return m


class NumpySACNetworks(TwinCritics, SACShapes):
    """Actor, twin critics (`TwinCritics`: SB3's critic loss ``0.5 * (mse(Q1, y) +
    mse(Q2, y))``), their targets, the temperature, optimizers and update paths.
    ``parameter_count`` counts ``log_alpha`` too (a trained value, with optimizer state)."""

    CRITIC_LOSS_WEIGHT = 0.5

    RUNTIME = RUNTIME
    prepare = staticmethod(prepare)

    def __init__(self, cfg: SACConfig, obs_dim: int, action_dim: int, low, high, *,
                 dtype=np.float32, initialise: bool = True):
        self.cfg, self.dtype, self.obs_dim = cfg, np.dtype(dtype), obs_dim
        self.describe(cfg, obs_dim, action_dim, low, high)
        self.actor_mlp = MLP(self.actor_sizes, "relu", prefix="actor.net")
        self.qf1 = MLP(self.critic_sizes, "relu", prefix="qf1.net")
        self.qf2 = MLP(self.critic_sizes, "relu", prefix="qf2.net")
        self.actor = NetGroup(cfg, {"actor": self.actor_mlp}, self.dtype, target=False)
        self.critic = NetGroup(cfg, {"qf1": self.qf1, "qf2": self.qf2}, self.dtype)
        self.temperature = Temperature(cfg, self.dtype)
        if initialise:
            rng = np.random.default_rng(cfg.seed)
            init_linear_default(self.actor.params, self.actor_mlp, rng)
            init_linear_default(self.critic.params, self.qf1, rng)
            init_linear_default(self.critic.params, self.qf2, rng)
            self.critic.sync_target()

    @property
    def parameter_count(self) -> int:
        return self.actor.layout.count + self.critic.layout.count + self.temperature.layout.count

    @property
    def alpha(self) -> float:
        """The temperature ``exp(log_alpha)``."""
        return math.exp(self.temperature.log_alpha)

    def _outputs(self, obs: np.ndarray) -> np.ndarray:
        return self.actor_mlp.forward(self.actor.params, obs)[-1]

    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        """``tanh(mean)`` scaled to the bounds."""
        mean = self._outputs(obs)[:, :self.action_dim]
        return np.tanh(mean) * self.action_scale + self.action_bias

    def sample_action(self, obs: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """``tanh(mean + std * eps)`` scaled to the bounds (no log-probability)."""
        out = self._outputs(obs)
        std = np.exp(np.clip(out[:, self.action_dim:], LOG_STD_MIN, LOG_STD_MAX))
        u = out[:, :self.action_dim] + std * np.asarray(eps, self.dtype)
        return np.tanh(u) * self.action_scale + self.action_bias

    def sample(self, obs: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(action, log pi) of the current actor for the noise ``eps``."""
        g = SquashedGaussian(self._outputs(obs), eps, self.action_scale, self.action_bias)
        return g.action, g.log_prob

    def update_actor(self, obs, eps, alpha: float) -> tuple[float, np.ndarray]:
        """One actor step on ``mean(alpha * log pi - min(Q1, Q2))`` at ``a = actor(s, eps)``;
        returns (the loss, log pi of the actor before its step)."""
        acts = self.actor_mlp.forward(self.actor.params, obs)
        g = SquashedGaussian(acts[-1], eps, self.action_scale, self.action_bias)
        x = self._critic_input(acts[0], g.action)
        n = x.shape[0]
        acts_1 = self.qf1.forward(self.critic.params, x)
        acts_2 = self.qf2.forward(self.critic.params, x)
        q1, q2 = acts_1[-1][:, 0], acts_2[-1][:, 0]
        w1 = np.where(q1 < q2, 1.0, np.where(q1 == q2, 0.5, 0.0)).astype(self.dtype)
        grad_x = self.qf1.backward(self.critic.params, acts_1, (-w1 / n)[:, None],
                                   input_grad=True)
        grad_x += self.qf2.backward(self.critic.params, acts_2, ((w1 - 1.0) / n)[:, None],
                                    input_grad=True)
        grad_out = g.backward(grad_x[:, self.obs_dim:],
                              np.full(n, alpha / n, self.dtype))
        self.actor.backward(self.actor_mlp, acts, grad_out)
        self.actor.step()
        loss = float(np.mean(alpha * g.log_prob - np.minimum(q1, q2)))
        return loss, g.log_prob

    def update_temperature(self, log_prob: np.ndarray, target_entropy: float) -> float:
        """One step of ``log_alpha``; returns the loss."""
        loss, grad = temperature_loss(self.temperature.log_alpha, log_prob, target_entropy)
        self.temperature.step(grad)
        return loss

    def update_targets(self, tau: float) -> None:
        self.critic.soft_update(tau)

    def optimizer_state_bytes(self) -> int:
        return sum(group.optimizer.state_bytes()
                   for group in (self.actor, self.critic, self.temperature))

    def state_dict(self) -> dict:
        """Online and target arrays (views) under torch's names, the exported policy (the
        actor with the mean rows of its last layer: views), and the three optimizers'
        state."""
        nets = {**self.actor.arrays(self.actor.params), **self.critic.arrays(self.critic.params)}
        nets.update({f"{name}_target": arrays
                     for name, arrays in self.critic.arrays(self.critic.target).items()})
        nets["temperature"] = self.temperature.params.state_dict(copy=False)
        return {"policy": self.policy_arrays(nets["actor"]), "nets": nets,
                "optimizers": {"actor": self.actor.optimizer.state_dict(copy=False),
                               "critic": self.critic.optimizer.state_dict(copy=False),
                               "temperature": self.temperature.optimizer.state_dict(copy=False)}}

    def load_state_dict(self, ckpt: dict) -> None:
        nets = ckpt["nets"]
        self.actor.load_arrays(self.actor.params, {"actor": nets["actor"]})
        self.critic.load_arrays(self.critic.params, {n: nets[n] for n in ("qf1", "qf2")})
        self.critic.load_arrays(self.critic.target,
                                {n: nets[f"{n}_target"] for n in ("qf1", "qf2")})
        self.temperature.params.load_state_dict(nets["temperature"])
        for name in ("actor", "critic", "temperature"):
            getattr(self, name).optimizer.load_state_dict(ckpt["optimizers"][name])

    def memory_items(self, batch: int) -> list:
        return group_items([self.actor, self.critic, self.temperature], self.cfg, batch,
                           activation_bytes(self.cfg, self.actor_sizes, self.critic_sizes,
                                            self.dtype.itemsize),
                           "the larger of the critic and the actor step")
