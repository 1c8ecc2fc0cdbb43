"""Running observation and reward normalization (statistics saved with the agent).

Observations are whitened with running moments and clipped,

.. math::

    \\tilde o = \\operatorname{clip}\\bigl((o - \\mu) / \\sqrt{\\sigma^2 + \\epsilon},
    -c, c\\bigr),

where ``(mu, sigma^2)`` are updated batch by batch with the parallel formula of Chan,
Golub and LeVeque (1979), exact for any split of the data.  Rewards are divided by the
running standard deviation of the discounted return ``R_t = gamma R_{t-1} + r_t`` (reset at
episode ends), the scheme of OpenAI Baselines' ``VecNormalize``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rl_adapters._kernels import rms_normalize, rms_update, scale_rewards
from rl_adapters.validation import StateError, check_keys, float_array, nested, real_scalar

__all__ = ["RewardScaler", "RunningMeanStd"]


class RunningMeanStd:
    """Running mean and (population) variance of vectors of shape ``shape``.

    Examples
    --------
    >>> rms = RunningMeanStd((2,))
    >>> x = np.arange(12.0).reshape(6, 2)
    >>> rms.update(x[:2]); rms.update(x[2:])
    >>> # equal up to the 1e-4 pseudo-count of the prior (mean 0, var 1)
    >>> np.allclose(rms.mean, x.mean(0), rtol=1e-4), np.allclose(rms.var, x.var(0), rtol=1e-4)
    (True, True)
    """

    def __init__(self, shape: tuple[int, ...], epsilon: float = 1e-8) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        # A pseudo-count so the first batch does not divide by zero (as in Baselines).
        self.count = 1e-4
        self.epsilon = epsilon

    def update(self, batch: NDArray) -> None:
        """Merge the moments of ``batch`` (rows are samples) into the running moments."""
        n = batch.shape[0]
        if n == 0:
            return
        # Fused loop (called once per environment step): mean and var updated in place.
        self.count = rms_update(self.mean.reshape(-1), self.var.reshape(-1), self.count,
                                np.ascontiguousarray(batch, dtype=np.float64).reshape(n, -1))

    def normalize(self, x: NDArray, clip: float, out: NDArray | None = None) -> NDArray:
        """Whiten ``x`` with the current moments and clip to ``[-clip, clip]``."""
        if x.ndim == 2 and x.shape[0] <= 8 and out is None:
            return rms_normalize(np.ascontiguousarray(x, dtype=np.float64), self.mean,
                                 self.var, self.epsilon, float(clip))
        y = np.subtract(x, self.mean, out=out)
        y /= np.sqrt(self.var + self.epsilon)
        np.clip(y, -clip, clip, out=y)
        return y

    def state_dict(self) -> dict[str, Any]:
        """Moments, pseudo-count and ``epsilon`` (everything :meth:`load_state_dict` needs)."""
        return {"mean": self.mean, "var": self.var, "count": self.count,
                "epsilon": self.epsilon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; StateError (naming the entry) if it does not fit."""
        check_keys(state, ("mean", "var", "count", "epsilon"))
        mean = float_array(state, "mean", self.mean.shape)
        var = float_array(state, "var", self.var.shape, nonnegative=True)
        count = real_scalar(state, "count", low=0.0)
        epsilon = real_scalar(state, "epsilon", low=0.0)
        if epsilon == 0.0 and not var.all():  # (o - mean) / 0 at the first observation
            raise StateError("epsilon", "0 with a zero variance: observations cannot be "
                                        "normalized")
        self.mean, self.var, self.count, self.epsilon = mean, var, count, epsilon


class RewardScaler:
    """Scale rewards by the running std of the discounted return, per environment.

    Parameters
    ----------
    n_envs : int
        Number of parallel environments (one running return each).
    gamma : float
        Discount of the running return.
    clip : float
        Scaled rewards are clipped to ``[-clip, clip]``.
    """

    def __init__(self, n_envs: int, gamma: float, clip: float, epsilon: float = 1e-8) -> None:
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(n_envs, dtype=np.float64)
        self.gamma = gamma
        self.clip = clip
        self.epsilon = epsilon

    def __call__(self, rewards: NDArray, dones: NDArray) -> NDArray:
        """Update with this step's ``rewards`` and return them scaled; ``dones`` reset returns."""
        out = np.empty(rewards.shape[0])
        rms = self.rms
        rms.count = scale_rewards(
            np.ascontiguousarray(rewards, dtype=np.float64), np.asarray(dones, dtype=np.bool_),
            self.returns, rms.mean.reshape(-1), rms.var.reshape(-1), rms.count, self.gamma,
            self.clip, self.epsilon, out)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Running returns, their moments and the settings (gamma, clip, epsilon)."""
        return {"rms": self.rms.state_dict(), "returns": self.returns, "gamma": self.gamma,
                "clip": self.clip, "epsilon": self.epsilon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; StateError (naming the entry) if it does not fit."""
        check_keys(state, ("rms", "returns", "gamma", "clip", "epsilon"))
        returns = float_array(state, "returns", self.returns.shape)
        gamma = real_scalar(state, "gamma", low=0.0, high=1.0)
        clip = real_scalar(state, "clip", low=0.0)
        epsilon = real_scalar(state, "epsilon", low=0.0)
        with nested("rms"):
            rms = copy.deepcopy(self.rms)
            rms.load_state_dict(state["rms"])
        if epsilon == 0.0 and not rms.var.all():  # reward / 0
            raise StateError("epsilon", "0 with a zero return variance: rewards cannot be "
                                        "scaled")
        self.rms = rms
        self.returns, self.gamma, self.clip, self.epsilon = returns, gamma, clip, epsilon
