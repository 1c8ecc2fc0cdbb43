"""NumPy policies over a flat parameter vector: categorical and diagonal Gaussian.

A policy maps observations to the parameters of an action distribution through an
:class:`~rl_adapters.mlp.MLP`, and provides what TRPO needs from it, all as functions of a
flat ``theta``:

- sampling (one batched call per environment step) and log-probabilities;
- the gradient of a weighted sum of log-probabilities (the policy gradient) by one VJP;
- the mean KL and entropy;
- the Fisher-vector product :math:`F v = \\frac1N J^\\top M J v` (Gauss-Newton form):
  a JVP through the network, the distribution's Fisher metric ``M`` in its natural
  coordinates (logits, or mean and log std) from :mod:`trustregion.distributions`, then a
  VJP.  It equals the Hessian of the mean ``KL(pi_old || pi_theta)`` at ``theta_old``
  because the KL's Hessian in distribution coordinates is ``M`` and its gradient there is
  zero at the old parameters, so the second-order term of the chain rule vanishes.

The distribution functions come from :mod:`trustregion.distributions`, called with
``validate=False``: their inputs are the network's own outputs (the line search checks
them for finiteness before any distribution call);
the per-step sampling path calls the raw Numba kernels (``trustregion.kernels``) to keep
the single-observation overhead low.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from rl_adapters._kernels import gaussian_act_rows, mlp_forward_rows
from rl_adapters.mlp import MLP, ForwardCache
from trustregion import distributions as dist
from trustregion.kernels.categorical import categorical_sample_inverse_cdf

__all__ = [
    "CategoricalPolicy",
    "DiagGaussianPolicy",
    "FisherOperator",
    "Policy",
    "make_policy",
]

_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)
_EMPTY = np.zeros(0)


class FisherOperator:
    """``v -> (1/N) J^T M J v`` at fixed parameters, with the forward pass cached once.

    Create it with :meth:`Policy.fisher_operator`; calling it costs one JVP, one
    Fisher-metric product and one VJP over the (possibly subsampled) batch.  With
    ``dtype=np.float32`` the products run in single precision (about twice the BLAS
    throughput) on float32 copies of the cache, and the result is returned in float64:
    a relative error ~1e-6 per product, far below what the 10-25 CG iterations of TRPO
    resolve.
    """

    def __init__(self, policy: Policy, theta: NDArray, cache: ForwardCache, outputs: NDArray,
                 dtype: type = np.float64) -> None:
        self.policy = policy
        self.dtype = np.dtype(dtype)
        self.n_calls = 0
        if self.dtype == np.float64:
            self.theta, self.cache, self.outputs = theta, cache, outputs
        else:
            self.theta = theta.astype(self.dtype)
            self.cache = ForwardCache(
                inputs=[np.ascontiguousarray(h, dtype=self.dtype) for h in cache.inputs],
                derivs=[np.ascontiguousarray(d, dtype=self.dtype) for d in cache.derivs],
            )
            self.outputs = outputs.astype(self.dtype)

    def __call__(self, v: NDArray) -> NDArray:
        self.n_calls += 1
        fv = self.policy._fvp(self.theta, self.cache, self.outputs,
                              np.asarray(v, dtype=self.dtype))
        return fv if fv.dtype == np.float64 else fv.astype(np.float64)


class Policy:
    """Common interface; see :class:`CategoricalPolicy` and :class:`DiagGaussianPolicy`."""

    net: MLP
    n_params: int

    # -- abstract pieces --------------------------------------------------------
    def init_params(self, rng: np.random.Generator) -> NDArray:
        raise NotImplementedError

    def outputs(self, theta: NDArray, obs: NDArray, keep_cache: bool = False):
        """Network outputs (distribution parameters) and the forward cache."""
        if not keep_cache and obs.shape[0] <= 8:
            # Per-step path (a few rows): one fused loop instead of ~10 NumPy calls.
            net = self.net
            out = mlp_forward_rows(np.ascontiguousarray(obs, dtype=np.float64), theta,
                                   net.sizes_array, net.activation == "relu")
            return out, None
        return self.net.forward(theta[: self.net.n_params], obs, keep_cache=keep_cache)

    def act(self, theta, obs, rng, deterministic=False):  # pragma: no cover - abstract
        raise NotImplementedError

    def log_prob(self, theta, outputs, actions) -> NDArray:  # pragma: no cover
        raise NotImplementedError

    def entropy(self, theta, outputs) -> NDArray:  # pragma: no cover
        raise NotImplementedError

    def kl(self, theta_old, outputs_old, theta_new, outputs_new) -> NDArray:  # pragma: no cover
        raise NotImplementedError

    def _score_cotangent(self, theta, outputs, actions, weights, entropy_coef):
        raise NotImplementedError  # pragma: no cover

    def _fvp(self, theta, cache, outputs, v):  # pragma: no cover
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Check that a saved policy description matches this policy.

        A policy holds no mutable state (its parameters ``theta`` belong to the agent): its
        state dict describes the network and the action space, which is what acting with
        NumPy alone needs (:class:`rl_adapters.checkpoint.NumpyPolicy`), and what a policy
        rebuilt from the saved configuration and environment must agree with.
        """
        mine = self.state_dict()
        same = set(state) == set(mine) and all(
            np.array_equal(np.asarray(state[k]), np.asarray(v)) for k, v in mine.items())
        if not same:
            raise ValueError(
                f"state: the saved policy {_describe(state)} does not fit this environment's "
                f"policy {_describe(mine)} (a different env or config?)")

    def surrogate_gradient(
        self,
        theta: NDArray,
        cache: ForwardCache,
        outputs: NDArray,
        actions: NDArray,
        advantages: NDArray,
        entropy_coef: float = 0.0,
    ) -> NDArray:
        """Gradient at ``theta`` of ``mean(ratio * A) + c * mean(entropy)``.

        At ``theta = theta_old`` the ratio's gradient is ``ratio * grad log pi = grad log pi``,
        so this is ``(1/N) sum_i A_i grad log pi(a_i|s_i)`` plus the entropy term.
        """
        n = advantages.shape[0]
        g_net, g_extra = self._score_cotangent(
            theta, outputs, actions, advantages / n, entropy_coef
        )
        grad = np.empty(self.n_params)
        self.net.vjp(theta[: self.net.n_params], cache, g_net, out=grad[: self.net.n_params])
        grad[self.net.n_params :] = g_extra
        return grad

    def fisher_operator(self, theta: NDArray, obs: NDArray,
                        dtype: type = np.float64) -> FisherOperator:
        """Fisher-vector product operator at ``theta`` on the observations ``obs``."""
        out, cache = self.outputs(theta, obs, keep_cache=True)
        return FisherOperator(self, theta, cache, out, dtype)


class CategoricalPolicy(Policy):
    """Softmax policy for ``Discrete(n)`` or ``MultiDiscrete(nvec)`` action spaces.

    For ``MultiDiscrete`` the components are independent: the network outputs the
    concatenated logits, log-probs, entropies and KLs add up and the Fisher is block
    diagonal over the components.
    """

    def __init__(self, obs_dim: int, nvec: tuple[int, ...], hidden, activation="tanh",
                 start: tuple[int, ...] | None = None):
        self.nvec = tuple(int(k) for k in nvec)
        # Gymnasium spaces may start at an offset: env action = index + start.
        self.start = np.zeros(len(self.nvec), dtype=np.int64) if start is None else np.asarray(
            start, dtype=np.int64)
        self.multi = len(self.nvec) > 1
        self.net = MLP((obs_dim, *hidden, sum(self.nvec)), activation)
        self.n_params = self.net.n_params
        bounds = np.cumsum((0, *self.nvec))
        self._blocks = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]

    def init_params(self, rng: np.random.Generator) -> NDArray:
        return self.net.init(rng, output_gain=0.01)

    def state_dict(self) -> dict[str, Any]:
        """Network layout and the action components (sizes ``nvec``, offsets ``start``)."""
        return {"kind": "categorical", "sizes": self.net.sizes_array,
                "activation": self.net.activation, "nvec": np.asarray(self.nvec, np.int64),
                "start": self.start, "multi": self.multi}

    def _columns(self, actions: NDArray) -> list[NDArray]:
        a = np.asarray(actions, dtype=np.int64)
        if a.ndim == 1:
            a = a[:, None]
        return [np.ascontiguousarray(a[:, j]) for j in range(len(self.nvec))]

    def act(self, theta, obs, rng, deterministic=False):
        """Actions for a batch of observations: ``(env_actions, actions, log_probs)``."""
        logits, _ = self.outputs(theta, obs)
        n = logits.shape[0]
        picks = np.empty((n, len(self.nvec)), dtype=np.int64)
        if deterministic:
            for j, blk in enumerate(self._blocks):
                picks[:, j] = np.argmax(logits[:, blk], axis=1)
            logp = None
        else:
            logp = self._sample(theta, logits, self.draw_noise(rng, (n,)), picks)
        return self._env_actions(picks), picks, logp

    def draw_noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray:
        """Uniforms for :meth:`act_from_noise`, one per component: ``shape + (n_comp,)``."""
        return rng.random((*shape, len(self.nvec)))

    def act_from_noise(self, theta, obs, noise, actions_out):
        """Sample with pre-drawn uniforms (inverse CDF); write the action indices into
        ``actions_out`` and return ``(env_actions, log_probs)``."""
        logits, _ = self.outputs(theta, obs)
        logp = self._sample(theta, logits, noise, actions_out)
        return self._env_actions(actions_out), logp

    def _sample(self, theta, logits, uniforms, actions_out):
        """Inverse-CDF picks per component into ``actions_out``; return their log-probs."""
        for j, blk in enumerate(self._blocks):
            actions_out[:, j] = categorical_sample_inverse_cdf(
                np.ascontiguousarray(logits[:, blk]), np.ascontiguousarray(uniforms[:, j]))
        return self.log_prob(theta, logits, actions_out)

    def _env_actions(self, actions):
        """Action indices -> the space's values (a new array: ``+ start``, 1-D for Discrete)."""
        env = actions + self.start
        return env if self.multi else env[:, 0]

    def log_prob(self, theta, outputs, actions):
        cols = self._columns(actions)
        total = np.zeros(outputs.shape[0])
        for blk, a in zip(self._blocks, cols, strict=True):
            total += dist.categorical_log_prob(outputs[:, blk], a, validate=False)
        return total

    def entropy(self, theta, outputs):
        total = np.zeros(outputs.shape[0])
        for blk in self._blocks:
            total += dist.categorical_entropy(outputs[:, blk], validate=False)
        return total

    def kl(self, theta_old, outputs_old, theta_new, outputs_new):
        total = np.zeros(outputs_old.shape[0])
        for blk in self._blocks:
            total += dist.categorical_kl(outputs_old[:, blk], outputs_new[:, blk], validate=False)
        return total

    def _score_cotangent(self, theta, outputs, actions, weights, entropy_coef):
        g = np.empty_like(outputs)
        n = outputs.shape[0]
        for blk, a in zip(self._blocks, self._columns(actions), strict=True):
            z = outputs[:, blk]
            g[:, blk] = dist.categorical_log_prob_grad(z, a, validate=False) * weights[:, None]
            if entropy_coef:
                # dH/dz_k = -p_k (log p_k + H): gradient of the entropy in logits.
                logp = dist.categorical_log_softmax(z, validate=False)
                p = np.exp(logp)
                logp = np.where(p > 0, logp, 0.0)  # p log p -> 0 where p underflows to 0
                h = -(p * logp).sum(axis=1, keepdims=True)
                g[:, blk] -= (entropy_coef / n) * p * (logp + h)
        return g, np.empty(0)

    def _fvp(self, theta, cache, outputs, v):
        n = outputs.shape[0]
        jv = self.net.jvp(theta, cache, v)
        mjv = np.empty_like(jv)
        for blk in self._blocks:
            mjv[:, blk] = dist.categorical_fisher_product(outputs[:, blk], jv[:, blk],
                                                          validate=False)
        mjv /= n
        return self.net.vjp(theta, cache, mjv)


class DiagGaussianPolicy(Policy):
    """Gaussian policy ``N(mu_theta(s), diag(exp(2 log_std)))`` for ``Box`` actions.

    ``log_std`` is a state-independent vector stored after the network weights in
    ``theta``.  Actions sent to the environment are clipped to the bounds; the stored
    action and its log-probability are those of the unclipped sample.
    """

    def __init__(self, obs_dim, act_dim, hidden, activation="tanh", log_std_init=0.0,
                 low=None, high=None):
        self.act_dim = int(act_dim)
        self.net = MLP((obs_dim, *hidden, self.act_dim), activation)
        self.n_params = self.net.n_params + self.act_dim
        self.log_std_init = float(log_std_init)
        self.low = None if low is None else np.asarray(low, dtype=np.float64)
        self.high = None if high is None else np.asarray(high, dtype=np.float64)

    def init_params(self, rng: np.random.Generator) -> NDArray:
        theta = np.empty(self.n_params)
        theta[: self.net.n_params] = self.net.init(rng, output_gain=0.01)
        theta[self.net.n_params :] = self.log_std_init
        return theta

    def state_dict(self) -> dict[str, Any]:
        """Network layout, action dimension and the action bounds (if finite)."""
        state: dict[str, Any] = {"kind": "gaussian", "sizes": self.net.sizes_array,
                                 "activation": self.net.activation, "act_dim": self.act_dim,
                                 "log_std_init": self.log_std_init}
        if self.low is not None:
            state.update(low=self.low, high=self.high)
        return state

    def log_std(self, theta: NDArray) -> NDArray:
        return theta[self.net.n_params :]

    def _clip(self, a: NDArray) -> NDArray:
        if self.low is None:
            return a
        return np.clip(a, self.low, self.high)

    def act(self, theta, obs, rng, deterministic=False):
        mean, _ = self.outputs(theta, obs)
        if deterministic:
            return self._clip(mean), mean, None
        actions = np.empty_like(mean)
        logp = self._sample(theta, mean, self.draw_noise(rng, (mean.shape[0],)), actions)
        return self._clip(actions), actions, logp

    def draw_noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray:
        """Standard normal draws for :meth:`act_from_noise`: ``shape + (act_dim,)``."""
        return rng.standard_normal((*shape, self.act_dim))

    def act_from_noise(self, theta, obs, noise, actions_out):
        """``a = mu(s) + exp(log_std) * noise``; writes ``a`` into ``actions_out`` and
        returns ``(clipped env actions, log_probs)``.  One fused call for a few rows."""
        n = obs.shape[0]
        if n <= 8:
            env_actions = np.empty((n, self.act_dim))
            logp = np.empty(n)
            has_bounds = self.low is not None
            gaussian_act_rows(
                np.ascontiguousarray(obs, dtype=np.float64), theta, self.net.sizes_array,
                self.net.activation == "relu", self.net.n_params, noise,
                self.low if has_bounds else _EMPTY, self.high if has_bounds else _EMPTY,
                has_bounds, actions_out, env_actions, logp)
            return env_actions, logp
        mean, _ = self.outputs(theta, obs)
        logp = self._sample(theta, mean, noise, actions_out)
        return self._clip(actions_out), logp

    def _sample(self, theta, mean, noise, actions_out):
        """``a = mean + exp(log_std) * noise`` into ``actions_out``; return ``log N(a)``."""
        log_std = self.log_std(theta)
        actions_out[...] = mean + np.exp(log_std) * noise
        # From the noise directly: the standardized action is the noise exactly.
        return -0.5 * np.einsum("ij,ij->i", noise, noise) - (
            log_std.sum() + self.act_dim * _HALF_LOG_2PI)

    def log_prob(self, theta, outputs, actions):
        return dist.diag_gaussian_log_prob(outputs, self.log_std(theta), actions, validate=False)

    def entropy(self, theta, outputs):
        h = dist.diag_gaussian_entropy(self.log_std(theta), validate=False)
        return np.broadcast_to(np.asarray(h, dtype=np.float64), (outputs.shape[0],))

    def kl(self, theta_old, outputs_old, theta_new, outputs_new):
        return dist.diag_gaussian_kl(outputs_old, self.log_std(theta_old), outputs_new,
                                     self.log_std(theta_new), validate=False)

    def _score_cotangent(self, theta, outputs, actions, weights, entropy_coef):
        d_mean, d_log_std = dist.diag_gaussian_log_prob_grad(
            outputs, self.log_std(theta), actions, validate=False)
        d_mean *= weights[:, None]
        g_log_std = weights @ d_log_std
        # H = sum(log_std) + const: d mean(H) / d log_std = 1.
        g_log_std = g_log_std + entropy_coef
        return d_mean, g_log_std

    def _fvp(self, theta, cache, outputs, v):
        n = outputs.shape[0]
        k = self.net.n_params
        log_std = self.log_std(theta)
        jv = self.net.jvp(theta[:k], cache, v[:k])
        fv_mean, fv_log_std = dist.diag_gaussian_fisher_product(
            outputs, log_std, jv, v[k:], validate=False)
        fv_mean /= n
        out = np.empty(self.n_params, dtype=jv.dtype)
        self.net.vjp(theta[:k], cache, fv_mean, out=out[:k])
        # A shared (D,) log_std and tangent give a (D,) product: the Hessian of the mean
        # over rows of the KL in log_std, each row contributing the same block.
        out[k:] = fv_log_std
        return out


def _describe(state: dict[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={np.asarray(v).tolist()!r}" for k, v in state.items()) + ")"


def make_policy(observation_space, action_space, *, hidden=(64, 64), activation="tanh",
                log_std_init=0.0) -> Policy:
    """Build the policy for a Gymnasium ``(observation_space, action_space)`` pair.

    Raises
    ------
    TypeError
        For observation spaces other than a 1-D ``Box`` or action spaces other than
        ``Discrete``, ``MultiDiscrete`` and ``Box``.
    """
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise TypeError(
            f"observation_space={observation_space!r} is not supported: the MLP policy needs a "
            "flat Box (wrap the env, e.g. with gymnasium.wrappers.FlattenObservation)"
        )
    obs_dim = int(observation_space.shape[0])
    if isinstance(action_space, spaces.Discrete):
        return CategoricalPolicy(obs_dim, (int(action_space.n),), hidden, activation,
                                 (int(action_space.start),))
    if isinstance(action_space, spaces.MultiDiscrete):
        if action_space.nvec.ndim != 1:
            raise TypeError(f"action_space={action_space!r}: only 1-D MultiDiscrete is supported")
        return CategoricalPolicy(obs_dim, tuple(action_space.nvec.tolist()), hidden, activation,
                                 tuple(action_space.start.tolist()))
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        low = action_space.low if np.all(np.isfinite(action_space.low)) else None
        high = action_space.high if np.all(np.isfinite(action_space.high)) else None
        if (low is None) != (high is None):
            low = high = None
        return DiagGaussianPolicy(obs_dim, action_space.shape[0], hidden, activation,
                                  log_std_init, low, high)
    raise TypeError(
        f"action_space={action_space!r} is not supported: use Discrete, MultiDiscrete or a 1-D Box"
    )
