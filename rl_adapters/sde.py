"""Generalized state-dependent exploration (gSDE) for Gaussian policies.

Raffin, Kober and Stulp (2021), "Smooth exploration for robotic reinforcement learning",
with the conventions of Stable-Baselines3's ``StateDependentNoiseDistribution``
(``learn_features=False``, no squashing).  The action is

.. math::

    a = \\mu_\\theta(s) + \\varepsilon(s), \\qquad
    \\varepsilon(s) = \\Theta_\\varepsilon^\\top \\phi(s), \\qquad
    (\\Theta_\\varepsilon)_{ij} \\sim \\mathcal N(0, \\sigma_{ij}^2),

where :math:`\\phi(s)` (``latent_dim``) is the input of the mean network's output layer
(its last hidden features) and :math:`\\Theta_\\varepsilon` (``latent_dim x act_dim``) is
an exploration matrix held fixed for ``sde_sample_freq`` steps, so that the same state
gives the same noise between two draws.  :math:`\\sigma = \\exp(\\ell)` with a learned
``log_std`` matrix :math:`\\ell` (``full_std=True``), or a ``(latent_dim, 1)`` column
shared by the actions (``full_std=False``); with ``use_expln`` :math:`\\sigma = e^\\ell` for
:math:`\\ell \\le 0` and :math:`\\log(1 + \\ell + \\epsilon) + 1` above, which grows slowly.

For a given state, :math:`\\varepsilon(s)` is Gaussian with the diagonal covariance
:math:`v_j(s) = \\sum_i \\phi_i(s)^2 \\sigma_{ij}^2`.  As in SB3 the policy's distribution
(for log-probabilities, entropy, KL and the Fisher) is the marginal

.. math::

    \\pi_\\theta(\\cdot \\mid s) = \\mathcal N\\bigl(\\mu_\\theta(s),
    \\operatorname{diag}(v(s) + \\epsilon)\\bigr),

with ``epsilon`` (``1e-6``) keeping the variance positive where the features vanish.
The features are *detached* from the std (SB3's ``learn_features=False``): the gradient and
the Fisher treat :math:`\\phi` as a constant in :math:`v`, so only the output layer and the
hidden layers through :math:`\\mu` see the mean's gradient, and ``log_std`` sees the
variance's.  The Fisher-vector product is the Gauss-Newton form
:math:`F u = \\frac1N \\sum_n J_n^\\top M_n J_n u`, with :math:`J_n` the Jacobian of
:math:`(\\mu(s_n), v(s_n))` in all parameters and the Gaussian's Fisher metric
:math:`M_n = \\operatorname{diag}(1/\\tilde v,\\; 1/(2\\tilde v^2))`,
:math:`\\tilde v = v + \\epsilon`: one JVP and one VJP through the network for the mean,
two ``(N, latent_dim) x (latent_dim, act_dim)`` products for the variance.  It is the
Hessian at :math:`\\theta' = \\theta` of the mean
:math:`\\mathrm{KL}(\\pi_\\theta \\| \\pi_{\\theta'})`
with the features frozen at :math:`\\phi_\\theta` (the line search evaluates the true KL).

The exploration state lives apart from the parameters, in :class:`StateDependentNoise`: one
matrix per environment, drawn from that environment's own ``numpy.random.Generator``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from rl_adapters._kernels import mlp_forward_rows, sde_act_rows
from rl_adapters.mlp import MLP
from rl_adapters.policies import Policy
from rl_adapters.validation import StateError, check_keys, float_array, int_scalar
from trustregion import distributions as dist

__all__ = ["StateDependentGaussianPolicy", "StateDependentNoise", "make_sde_policy"]

_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)
_EMPTY = np.zeros(0)
_INT64_MAX = int(np.iinfo(np.int64).max)


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def _finite_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class StateDependentGaussianPolicy(Policy):
    """Gaussian policy with gSDE exploration: ``N(mu(s), diag(phi(s)^2 @ sigma^2 + eps))``.

    ``theta`` is the mean network's flat parameters (as :class:`~rl_adapters.policies.
    DiagGaussianPolicy`) followed by the ``log_std`` matrix, row-major, shape
    ``(latent_dim, act_dim)`` (``full_std=True``) or ``(latent_dim, 1)``.  The network
    outputs returned by :meth:`outputs` are ``[mu(s) | v(s) + eps | phi(s)^2]``, shape
    ``(N, 2 act_dim + latent_dim)``: the marginal's parameters and the squared features
    that the variance's derivatives need.

    Parameters
    ----------
    obs_dim, act_dim : int
    hidden : tuple of int
        Hidden layer widths; ``latent_dim = hidden[-1]`` (the observation size if empty).
    activation : {"tanh", "relu"}
    log_std_init : float
        Initial value of every ``log_std`` entry (SB3's ``log_std_init``).
    full_std : bool
        One std per (feature, action) pair; else one per feature shared by the actions.
    use_expln : bool
        ``sigma = expln(log_std)`` instead of ``exp(log_std)``.
    epsilon : float
        Added to the per-state variance (> 0, SB3 uses ``1e-6``); also inside ``expln``.
    low, high : array_like or None
        Action bounds: actions sent to the environment are clipped, stored ones are not.

    Notes
    -----
    Only SB3's default ``learn_features=False`` is provided: with learned features the
    hidden layers would get a gradient from the variance too.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64),
                 activation: str = "tanh", log_std_init: float = 0.0, full_std: bool = True,
                 use_expln: bool = False, epsilon: float = 1e-6, low=None, high=None) -> None:
        self.act_dim = int(act_dim)
        self.net = MLP((obs_dim, *hidden, self.act_dim), activation)
        self.full_std = _flag("full_std", full_std)
        self.use_expln = _flag("use_expln", use_expln)
        self.log_std_init = _finite_number("log_std_init", log_std_init)
        self.epsilon = _finite_number("epsilon", epsilon)
        if self.epsilon <= 0:
            raise ValueError(f"epsilon must be > 0 (it keeps the variance positive where the "
                             f"features vanish), got {epsilon!r}")
        self.latent_dim = self.net.sizes[-2]
        self.std_shape = (self.latent_dim, self.act_dim if self.full_std else 1)
        self.n_params = self.net.n_params + self.latent_dim * self.std_shape[1]
        self.low = None if low is None else np.asarray(low, dtype=np.float64)
        self.high = None if high is None else np.asarray(high, dtype=np.float64)
        # The hidden part as its own network (the same flat prefix of theta, its last layer
        # left linear: the activation is applied after) for forward passes without a cache.
        self._hidden_sizes = self.net.sizes_array[:-1]
        self._hidden_net = MLP(self.net.sizes[:-1], activation) if self.net.n_layers > 1 else None

    def state_dict(self) -> dict:
        """Network layout, action dimension and bounds, and the gSDE settings.

        ``kind`` is ``"gaussian"``: acting deterministically is the mean network's output
        clipped to the bounds, as for :class:`~rl_adapters.policies.DiagGaussianPolicy`
        (:class:`rl_adapters.checkpoint.NumpyPolicy` reads ``theta[:net.n_params]``).
        """
        state: dict = {"kind": "gaussian", "exploration": "gsde",
                       "sizes": self.net.sizes_array, "activation": self.net.activation,
                       "act_dim": self.act_dim, "log_std_init": self.log_std_init,
                       "full_std": self.full_std, "use_expln": self.use_expln,
                       "epsilon": self.epsilon}
        if self.low is not None:
            state.update(low=self.low, high=self.high)
        return state

    # ------------------------------------------------------------------ parameters
    def init_params(self, rng: np.random.Generator) -> NDArray:
        theta = np.empty(self.n_params)
        theta[: self.net.n_params] = self.net.init(rng, output_gain=0.01)
        theta[self.net.n_params :] = self.log_std_init
        return theta

    def log_std(self, theta: NDArray) -> NDArray:
        """The ``log_std`` parameters as a ``std_shape`` view into ``theta``."""
        return theta[self.net.n_params :].reshape(self.std_shape)

    def _std_and_slope(self, theta: NDArray) -> tuple[NDArray, NDArray]:
        """``sigma(log_std)`` and ``d sigma / d log_std``, both of ``std_shape``."""
        log_std = self.log_std(theta)
        if not self.use_expln:
            std = np.exp(log_std)
            return std, std
        above = log_std > 0
        # Both branches on safe arguments, so neither warns nor makes a NaN.
        shifted = np.where(above, log_std, 0.0) + self.epsilon
        std = np.where(above, np.log1p(shifted) + 1.0, np.exp(np.minimum(log_std, 0.0)))
        slope = np.where(above, 1.0 / (1.0 + shifted), std)
        return std, slope

    def std(self, theta: NDArray) -> NDArray:
        """The std of the exploration matrix's entries, ``(latent_dim, act_dim)``."""
        std, _ = self._std_and_slope(theta)
        return np.broadcast_to(std, (self.latent_dim, self.act_dim))

    # ------------------------------------------------------------------ forward
    def outputs(self, theta: NDArray, obs: NDArray, keep_cache: bool = False):
        """``[mu(s) | v(s) + eps | phi(s)^2]``, shape ``(N, 2 act_dim + latent_dim)``, and
        the network's forward cache (``None`` unless ``keep_cache``).

        The marginal's mean and variance at ``theta``, and the squared features that the
        variance's derivatives in ``log_std`` need (the features enter only squared).
        """
        net = self.net
        d = self.act_dim
        n = obs.shape[0]
        out = np.empty((n, 2 * d + self.latent_dim), dtype=theta.dtype)
        if not keep_cache and net.n_layers > 1:
            phi = self._mean_into(theta, obs, out)
            cache = None
        else:
            mean, cache = net.forward(theta[: net.n_params], obs, keep_cache=True)
            out[:, :d] = mean
            phi = cache.inputs[-1]
        phi_sq = out[:, 2 * d :]
        np.square(phi, out=phi_sq)
        self._variance(theta, phi_sq, out=out[:, d : 2 * d])
        return out, cache if keep_cache else None

    def _mean_into(self, theta: NDArray, obs: NDArray, out: NDArray) -> NDArray:
        """``mu(s)`` into ``out[:, :act_dim]`` without a forward cache; returns ``phi(s)``.

        The hidden layers run as their own network (fused loops for a few rows), then the
        output layer.  :meth:`outputs` and the deterministic :meth:`act` share it, so the
        mean is the same bits in both.
        """
        net = self.net
        if obs.shape[0] <= 8:
            phi = mlp_forward_rows(np.ascontiguousarray(obs, dtype=np.float64), theta,
                                   self._hidden_sizes, net.activation == "relu")
        else:
            phi, _ = self._hidden_net.forward(theta[: self._hidden_net.n_params], obs,
                                              keep_cache=False)
        if net.activation == "relu":
            np.maximum(phi, 0.0, out=phi)
        else:
            np.tanh(phi, out=phi)
        # The output layer's (W, b), sliced directly: net.unflatten would view every layer.
        start, w_end, b_end = net._slices[-1]
        mean = out[:, : self.act_dim]
        np.matmul(phi, theta[start:w_end].reshape(self.latent_dim, self.act_dim), out=mean)
        mean += theta[w_end:b_end]
        return phi

    def split(self, outputs: NDArray) -> tuple[NDArray, NDArray, NDArray]:
        """``(mean, variance, phi^2)`` views of :meth:`outputs`."""
        d = self.act_dim
        return outputs[:, :d], outputs[:, d : 2 * d], outputs[:, 2 * d :]

    def _variance(self, theta: NDArray, phi_sq: NDArray, out: NDArray) -> NDArray:
        """``phi^2 @ sigma^2 + epsilon`` into ``out``."""
        std, _ = self._std_and_slope(theta)
        np.matmul(phi_sq, np.broadcast_to(np.square(std), (self.latent_dim, self.act_dim)),
                  out=out)
        out += self.epsilon
        return out

    def variance(self, theta: NDArray, outputs: NDArray) -> NDArray:
        """Per-state variance of the marginal, ``phi^2 @ sigma^2 + epsilon``, ``(N, act_dim)``."""
        return self.split(outputs)[1]

    # ------------------------------------------------------------------ sampling
    def draw_matrices(self, theta: NDArray, rng: np.random.Generator, n: int) -> NDArray:
        """``n`` exploration matrices ``sigma * standard_normal``: ``(n, latent_dim, act_dim)``."""
        z = rng.standard_normal((n, self.latent_dim, self.act_dim))
        z *= self.std(theta)
        return z

    def act_with_matrices(self, theta: NDArray, obs: NDArray, matrices: NDArray,
                          actions_out: NDArray) -> tuple[NDArray, NDArray]:
        """``a_n = mu(s_n) + matrices[n]^T phi(s_n)`` for every row ``n``.

        Writes the unclipped actions into ``actions_out`` (``(N, act_dim)``) and returns
        ``(env_actions, log_probs)``: the actions clipped to the bounds and their
        log-probabilities under the marginal Gaussian.  For a few rows, one fused Numba
        loop (forward pass, variance, noise, log-probability).
        """
        n = obs.shape[0]
        net = self.net
        has_bounds = self.low is not None
        if n <= 8 and net.n_layers > 1:
            env_actions = np.empty((n, self.act_dim))
            logp = np.empty(n)
            sde_act_rows(np.ascontiguousarray(obs, dtype=np.float64), theta,
                          self._hidden_sizes, net.activation == "relu", net.n_params,
                          self.full_std, self.use_expln, self.epsilon,
                          np.ascontiguousarray(matrices, dtype=np.float64),
                          self.low if has_bounds else _EMPTY,
                          self.high if has_bounds else _EMPTY, has_bounds,
                          actions_out, env_actions, logp)
            return env_actions, logp
        mean, cache = net.forward(theta[: net.n_params], obs, keep_cache=True)
        np.add(mean, np.einsum("nh,nhd->nd", cache.inputs[-1], matrices), out=actions_out)
        var = self._variance(theta, np.square(cache.inputs[-1]), out=np.empty_like(mean))
        return self._clip(actions_out), _log_prob(mean, var, actions_out)

    def act(self, theta, obs, rng, deterministic=False):
        """``(env_actions, actions, log_probs)``; a fresh exploration matrix per row.

        This is the per-call path (evaluation, ``predict``): drawing a new matrix for every
        row samples :math:`\\mu(s) + \\Theta^\\top\\phi(s)` with the same law as the
        collector's, without the temporal correlation.  ``deterministic`` gives ``mu(s)``.
        """
        self._check_act_inputs(theta, obs)
        if deterministic:
            if self.net.n_layers > 1:
                # The mean alone (evaluation): outputs() would also form the variance.
                out = np.empty((obs.shape[0], 2 * self.act_dim + self.latent_dim))
                self._mean_into(theta, obs, out)
            else:
                out, _ = self.outputs(theta, obs)
            mean = out[:, : self.act_dim].copy()
            return self._clip(mean), mean, None
        actions = np.empty((obs.shape[0], self.act_dim))
        matrices = self.draw_matrices(theta, rng, obs.shape[0])
        env_actions, logp = self.act_with_matrices(theta, obs, matrices, actions)
        return env_actions, actions, logp

    def _clip(self, a: NDArray) -> NDArray:
        if self.low is None:
            return a
        return np.clip(a, self.low, self.high)

    # ------------------------------------------------------------------ distribution
    def log_prob(self, theta, outputs, actions):
        mean, var, _ = self.split(outputs)
        return _log_prob(mean, var, actions)

    def entropy(self, theta, outputs):
        _, var, _ = self.split(outputs)
        return dist.diag_gaussian_entropy(0.5 * np.log(var), validate=False)

    def kl(self, theta_old, outputs_old, theta_new, outputs_new):
        """``KL(pi_old(.|s) || pi_new(.|s))`` per row, each side with its own features."""
        mean_old, var_old, _ = self.split(outputs_old)
        mean_new, var_new, _ = self.split(outputs_new)
        return dist.diag_gaussian_kl(mean_old, 0.5 * np.log(var_old),
                                     mean_new, 0.5 * np.log(var_new), validate=False)

    def _log_std_cotangent(self, theta: NDArray, phi_sq: NDArray, g_var: NDArray) -> NDArray:
        """VJP of ``log_std -> phi^2 @ sigma^2``: ``d/d log_std`` of ``sum(g_var * var)``."""
        std, slope = self._std_and_slope(theta)
        g_sq = phi_sq.T @ g_var  # d / d sigma^2, (latent_dim, act_dim)
        g = 2.0 * g_sq * std if self.full_std else 2.0 * std * g_sq.sum(axis=1, keepdims=True)
        g *= slope
        return g.reshape(-1)

    def _score_cotangent(self, theta, outputs, actions, weights, entropy_coef):
        mean, var, phi_sq = self.split(outputs)
        d_mean, d_state_log_std = dist.diag_gaussian_log_prob_grad(
            mean, 0.5 * np.log(var), actions, validate=False)
        d_mean *= weights[:, None]
        # log std = log(var) / 2, so d/d var = (d/d log std) / (2 var); the entropy
        # sum_j log(var_j) / 2 + const adds 1 / (2 var) per row, averaged over rows.
        g_var = d_state_log_std * weights[:, None]
        if entropy_coef:
            g_var += entropy_coef / outputs.shape[0]
        g_var /= 2.0 * var
        return d_mean, self._log_std_cotangent(theta, phi_sq, g_var)

    def _fvp(self, theta, cache, outputs, v):
        n = outputs.shape[0]
        k = self.net.n_params
        _, var, phi_sq = self.split(outputs)
        std, slope = self._std_and_slope(theta)
        # JVP: the mean through the network, the variance through sigma^2 (phi frozen).
        jv_mean = self.net.jvp(theta[:k], cache, v[:k])
        d_sq = np.broadcast_to(2.0 * std * slope * v[k:].reshape(self.std_shape),
                               (self.latent_dim, self.act_dim))
        jv_var = phi_sq @ d_sq
        # The Gaussian's Fisher metric in (mean, variance): 1 / var and 1 / (2 var^2),
        # and the 1/N of the mean over rows.
        jv_mean /= var
        jv_mean *= 1.0 / n
        jv_var /= var
        jv_var /= var
        jv_var *= 0.5 / n
        out = np.empty(self.n_params, dtype=jv_mean.dtype)
        self.net.vjp(theta[:k], cache, jv_mean, out=out[:k])
        out[k:] = self._log_std_cotangent(theta, phi_sq, jv_var)
        return out


def _log_prob(mean: NDArray, var: NDArray, actions: NDArray) -> NDArray:
    """``log N(a; mean, diag(var))`` per row."""
    z2 = np.square(actions - mean)
    z2 /= var
    return -0.5 * (z2.sum(axis=1) + np.log(var).sum(axis=1)) - mean.shape[1] * _HALF_LOG_2PI


class StateDependentNoise:
    """The gSDE exploration state of a batch of environments: one matrix per environment.

    A new matrix is drawn for every environment at the first step of each rollout
    (:meth:`begin_rollout`) and, if ``sample_freq > 0``, every ``sample_freq`` steps
    within the rollout (SB3's ``sde_sample_freq``; ``-1`` or ``0``: only at the start of
    the rollout).  Environment ``e``'s matrix is drawn from ``rngs[e]``, the generator
    the caller passes for that environment, so each environment's exploration is
    reproducible on its own.

    Parameters
    ----------
    policy : StateDependentGaussianPolicy
    n_envs : int
    sample_freq : int
        ``-1``, ``0`` or a positive number of steps (stored as at most ``2**63 - 1``,
        more steps than any run takes, so that it is saved as an int64).

    Examples
    --------
    >>> policy = StateDependentGaussianPolicy(3, 2, (8,), log_std_init=-1.0)
    >>> theta = policy.init_params(np.random.default_rng(0))
    >>> noise = StateDependentNoise(policy, n_envs=2, sample_freq=4)
    >>> rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(0).spawn(2)]
    >>> noise.begin_rollout()
    >>> actions = np.empty((2, 2))
    >>> env_actions, logp = noise.act(theta, np.zeros((2, 3)), rngs, actions)
    >>> noise.matrices.shape, noise.n_steps
    ((2, 8, 2), 1)
    """

    def __init__(self, policy: StateDependentGaussianPolicy, n_envs: int,
                 sample_freq: int = -1) -> None:
        if not isinstance(policy, StateDependentGaussianPolicy):
            raise TypeError(f"policy must be a StateDependentGaussianPolicy, got "
                            f"{type(policy).__name__}")
        if isinstance(n_envs, bool) or not isinstance(n_envs, numbers.Integral) or n_envs < 1:
            raise ValueError(f"n_envs must be a positive int, got {n_envs!r}")
        if (isinstance(sample_freq, bool) or not isinstance(sample_freq, numbers.Integral)
                or sample_freq < -1):
            raise ValueError(f"sample_freq must be -1, 0 (draw only at the start of each "
                             f"rollout) or a positive int, got {sample_freq!r}")
        self.policy = policy
        self.n_envs = int(n_envs)
        # Beyond any step count (an int64, as saved): the same draws as the value given.
        self.sample_freq = min(int(sample_freq), _INT64_MAX)
        self.matrices = np.zeros((self.n_envs, policy.latent_dim, policy.act_dim))
        self.n_steps = 0  # steps taken in the current rollout
        self.n_draws = 0  # draws since construction (for diagnostics and tests)

    def begin_rollout(self) -> None:
        """Start a rollout: the next :meth:`act` draws fresh matrices."""
        self.n_steps = 0

    def due(self) -> bool:
        """Whether the next :meth:`act` draws new matrices."""
        return self.n_steps == 0 or (self.sample_freq > 0 and self.n_steps % self.sample_freq == 0)

    def resample(self, theta: NDArray, rngs: Sequence[np.random.Generator]) -> None:
        """Draw every environment's matrix now, environment ``e`` from ``rngs[e]``."""
        self._check_rngs(rngs)
        for e, rng in enumerate(rngs):
            self.matrices[e] = self.policy.draw_matrices(theta, rng, 1)[0]
        self.n_draws += 1

    def act(self, theta: NDArray, obs: NDArray, rngs: Sequence[np.random.Generator],
            actions_out: NDArray, chunk: int | None = None) -> tuple[NDArray, NDArray]:
        """One step of every environment: draw matrices if due, then act.

        ``obs`` is ``(n_envs, obs_dim)``.  Writes the unclipped actions into
        ``actions_out`` and returns ``(env_actions, log_probs)``, like
        :meth:`~rl_adapters.policies.DiagGaussianPolicy.act_from_noise`.  With ``chunk``,
        the policy acts on at most ``chunk`` rows per call (its fused per-row kernel for
        ``chunk <= 8``): each row then gets the same bits in any batch, which is what lets
        a slice of the environments on a worker reproduce the rows of the whole batch
        (:func:`rl_adapters.rollout.act_rowwise`).
        """
        if obs.shape[0] != self.n_envs:
            raise ValueError(f"obs must have one row per environment ({self.n_envs}), "
                             f"got shape {obs.shape}")
        if self.due():
            self.resample(theta, rngs)
        n = obs.shape[0]
        if chunk is None or n <= chunk:
            result = self.policy.act_with_matrices(theta, obs, self.matrices, actions_out)
        else:
            parts = [self.policy.act_with_matrices(theta, obs[a : a + chunk],
                                                   self.matrices[a : a + chunk],
                                                   actions_out[a : a + chunk])
                     for a in range(0, n, chunk)]
            result = (np.concatenate([p[0] for p in parts]),
                      np.concatenate([p[1] for p in parts]))
        self.n_steps += 1
        return result

    def _check_rngs(self, rngs: Sequence[np.random.Generator]) -> None:
        if (isinstance(rngs, np.random.Generator) or not isinstance(rngs, Sequence)
                or len(rngs) != self.n_envs
                or not all(isinstance(r, np.random.Generator) for r in rngs)):
            raise TypeError(f"rngs must be a sequence of {self.n_envs} numpy.random.Generator "
                            f"(one per environment), got {rngs!r}")

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, NDArray]:
        """Arrays only (no pickle): the matrices and the counters, copied."""
        return {
            "matrices": self.matrices.copy(),
            "n_steps": np.asarray(self.n_steps, dtype=np.int64),
            "n_draws": np.asarray(self.n_draws, dtype=np.int64),
            "sample_freq": np.asarray(self.sample_freq, dtype=np.int64),
        }

    def load_state_dict(self, state: Mapping[str, NDArray]) -> None:
        """Restore :meth:`state_dict`'s output; the shapes and ``sample_freq`` must match.

        Raises
        ------
        StateError
            Naming the entry (``matrices``, ``n_steps``, ``n_draws``, ``sample_freq``) that
            is missing, of another dtype or shape, non-finite, negative, or (``sample_freq``)
            not this noise's; nothing is changed then.
        """
        check_keys(state, ("matrices", "n_steps", "n_draws", "sample_freq"))
        matrices = float_array(state, "matrices", self.matrices.shape)
        sample_freq = _saved_int(state, "sample_freq", low=-1)
        if sample_freq != self.sample_freq:
            raise StateError("sample_freq", f"{sample_freq}, but this noise has sample_freq="
                                            f"{self.sample_freq} (another sde_sample_freq?)")
        n_steps = _saved_int(state, "n_steps", low=0)
        n_draws = _saved_int(state, "n_draws", low=0)
        self.matrices[...] = matrices
        self.n_steps, self.n_draws = n_steps, n_draws


def _saved_int(state: Mapping[str, object], key: str, low: int) -> int:
    """``state[key]`` as an int >= ``low``: an int, a NumPy integer or a 0-d int64 array
    (what :meth:`StateDependentNoise.state_dict` writes)."""
    value = state[key]
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype == np.int64:
        value = value[()]
    return int_scalar({key: value}, key, low=low)


def make_sde_policy(observation_space, action_space, *, hidden=(64, 64), activation="tanh",
                    log_std_init=0.0, full_std=True, use_expln=False,
                    epsilon=1e-6) -> StateDependentGaussianPolicy:
    """Build the gSDE policy for a Gymnasium ``(observation_space, action_space)`` pair.

    Raises
    ------
    TypeError
        If the action space is not a 1-D ``Box`` (gSDE explores continuous actions only)
        or the observation space not a 1-D ``Box``.
    """
    if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
        raise TypeError(f"use_sde=True needs a 1-D Box action space, got action_space="
                        f"{action_space!r} (gSDE perturbs continuous actions; set use_sde=False)")
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise TypeError(
            f"observation_space={observation_space!r} is not supported: the MLP policy needs a "
            "flat Box (wrap the env, e.g. with gymnasium.wrappers.FlattenObservation)")
    low = action_space.low if np.all(np.isfinite(action_space.low)) else None
    high = action_space.high if np.all(np.isfinite(action_space.high)) else None
    if (low is None) != (high is None):
        low = high = None
    return StateDependentGaussianPolicy(
        int(observation_space.shape[0]), int(action_space.shape[0]), hidden, activation,
        log_std_init, full_std, use_expln, epsilon, low, high)
