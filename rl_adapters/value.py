"""State-value network and its regression fit (minibatch Adam or L-BFGS).

The critic ``V_phi(s)`` is a separate :class:`~rl_adapters.mlp.MLP` with one output,
fitted after each policy update to the GAE lambda-returns ``R_t = A_t + V_old(s_t)`` by
minimizing the mean squared error

.. math:: \\ell(\\phi) = \\frac1B \\sum_i (V_\\phi(s_i) - R_i)^2 + \\lambda_2 \\|W\\|^2 .

Two optimizers, chosen by ``TRPOConfig.value_optimizer``: ``"adam"`` runs
``value_epochs`` shuffled passes of minibatch Adam (Kingma & Ba, with bias correction;
the state is saved in checkpoints), ``"lbfgs"`` runs SciPy's L-BFGS-B on the full batch.
The forward and reverse passes of either run in float64 or, with
``TRPOConfig.value_dtype = "float32"``, in float32 (the parameters, Adam's moments and
steps, L-BFGS's iterates, the residuals and the loss stay float64;
:func:`rl_adapters._kernels.adam_fit_float32`; for L-BFGS each evaluation of the loss and
its gradient is then one compiled call, :func:`rl_adapters._kernels.mse_loss_grad`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

from rl_adapters.mlp import MLP
from rl_adapters.validation import (
    StateError,
    check_keys,
    float_array,
    int_array,
    int_scalar,
    nested,
    real_scalar,
    str_scalar,
)

__all__ = ["AdamState", "ValueFunction"]

#: The precisions of the passes (``ValueFunction.fit``'s dtype).
_DTYPES = ("float64", "float32")
#: The optimizers of ``ValueFunction.fit``.
_OPTIMIZERS = ("adam", "lbfgs")

# The compiled kernels (rl_adapters._kernels) are imported where they are used: the float64
# L-BFGS fit is NumPy's, and the critic's worker process (rl_adapters.critic_process), which
# runs only that, then never loads Numba (about 50 MiB of its peak memory).


class AdamState:
    """First and second moment estimates and step count of Adam."""

    def __init__(self, n: int, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-5):
        self.m = np.zeros(n)
        self.v = np.zeros(n)
        self.t = 0
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def step(self, theta: NDArray, grad: NDArray, lr: float) -> None:
        from rl_adapters._kernels import adam_step

        self.t += 1
        adam_step(theta, grad, self.m, self.v, lr, self.beta1, self.beta2, self.eps, self.t)

    def state_dict(self) -> dict[str, Any]:
        """Moments, step count and the settings (beta1, beta2, eps)."""
        return {"m": self.m, "v": self.v, "t": self.t, "beta1": self.beta1,
                "beta2": self.beta2, "eps": self.eps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; StateError (naming the entry) if it does not fit."""
        check_keys(state, ("m", "v", "t", "beta1", "beta2", "eps"))
        m = float_array(state, "m", self.m.shape)
        v = float_array(state, "v", self.v.shape, nonnegative=True)
        t = int_scalar(state, "t", low=0)
        beta1 = real_scalar(state, "beta1", low=0.0, high=1.0)
        beta2 = real_scalar(state, "beta2", low=0.0, high=1.0)
        eps = real_scalar(state, "eps", low=0.0)
        self.m, self.v, self.t = m, v, t
        self.beta1, self.beta2, self.eps = beta1, beta2, eps


class ValueFunction:
    """MLP critic with flat parameters ``theta`` and its fitting routine."""

    def __init__(self, obs_dim: int, hidden=(64, 64), activation: str = "tanh") -> None:
        self.net = MLP((obs_dim, *hidden, 1), activation)
        self.theta = np.zeros(self.net.n_params)
        self.adam = AdamState(self.net.n_params)
        # Indices of the weight matrices (the L2 penalty skips biases).
        mask = np.zeros(self.net.n_params, dtype=bool)
        for W, _ in self.net.unflatten(np.arange(self.net.n_params, dtype=np.float64)):
            mask[W.ravel().astype(np.int64)] = True
        self._weight_mask = mask

    def init(self, rng: np.random.Generator) -> None:
        self.theta = self.net.init(rng, output_gain=1.0)

    def state_dict(self) -> dict[str, Any]:
        """Parameters, the layer sizes and activation (checked on load) and the Adam state."""
        return {"theta": self.theta, "sizes": np.asarray(self.net.sizes, dtype=np.int64),
                "activation": self.net.activation, "adam": self.adam.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; StateError (naming the entry) if it does not fit."""
        check_keys(state, ("theta", "sizes", "activation", "adam"))
        sizes = tuple(int(k) for k in int_array(state, "sizes", None, low=1).ravel())
        activation = str_scalar(state, "activation")
        if sizes != tuple(self.net.sizes) or activation != self.net.activation:
            raise StateError(
                "", f"a critic with layers {sizes} and {activation} activation does not fit "
                    f"this one ({tuple(self.net.sizes)}, {self.net.activation})")
        theta = float_array(state, "theta", self.theta.shape)
        with nested("adam"):
            self.adam.load_state_dict(state["adam"])
        self.theta = theta

    def predict(self, obs: NDArray) -> NDArray:
        """``V(s)`` for a batch ``(N, obs_dim)``, shape ``(N,)``."""
        out, _ = self.net.forward(self.theta, obs, keep_cache=False)
        return out[:, 0]

    def mse(self, obs: NDArray, targets: NDArray) -> float:
        """Mean squared error of :meth:`predict` on ``targets``."""
        err = self.predict(obs) - targets
        return float(err @ err) / err.shape[0]

    def loss_and_grad(self, theta: NDArray, obs: NDArray, targets: NDArray, l2: float = 0.0):
        """Mean squared error (plus L2 on weights) and its gradient at ``theta``."""
        out, cache = self.net.forward(theta, obs)
        err = out[:, 0] - targets
        loss = float(err @ err) / err.shape[0]
        grad = self.net.vjp(theta, cache, (2.0 / err.shape[0]) * err[:, None])
        if l2:
            w = np.where(self._weight_mask, theta, 0.0)
            loss += l2 * float(w @ w)
            grad += 2.0 * l2 * w
        return loss, grad

    def _lbfgs_objective(self, obs: NDArray, targets: NDArray, l2: float, dtype: str):
        """``theta -> (loss, grad)`` for L-BFGS: :meth:`loss_and_grad` (NumPy) in float64,
        one compiled call with float32 passes (:func:`~rl_adapters._kernels.mse_loss_grad`)
        for ``dtype="float32"``."""
        if dtype == "float64":
            # The kernel's float64 mode rounds differently from NumPy (1e-9 apart after two
            # updates), and CartPole's outcome moves with rounding: tuning seeds 0-2 went
            # from 500 / 500 / 500 to 250 / 453 / 414 (benchmarks/results/sweeps/cartpole_r5).
            # float64 keeps NumPy's objective, so its runs stay bit for bit what they were.
            return lambda theta: self.loss_and_grad(theta, obs, targets, l2)
        from rl_adapters._kernels import mse_loss_grad

        obs_w = np.ascontiguousarray(obs, dtype=np.float32)
        targets = np.ascontiguousarray(targets, dtype=np.float64)
        sizes, relu = self.net.sizes_array, self.net.activation == "relu"
        theta_w = np.empty(self.net.n_params, dtype=np.float32)
        grad_w = np.empty(self.net.n_params, dtype=np.float32)
        mask, l2 = self._weight_mask, float(l2)

        def objective(theta: NDArray) -> tuple[float, NDArray]:
            # mse_loss_grad returns a new gradient array each call: SciPy keeps the last
            # one while it evaluates the next point.
            return mse_loss_grad(theta, obs_w, targets, sizes, relu, l2, mask, theta_w,
                                 grad_w, True)

        return objective

    def fit(self, obs: NDArray, targets: NDArray, rng: np.random.Generator, *,
            optimizer: str = "adam", lr: float = 1e-3, epochs: int = 10,
            batch_size: int = 64, lbfgs_iters: int = 25, l2: float = 0.0,
            dtype: str = "float64") -> float:
        """Fit to ``targets``; return the mean squared error before the fit.

        ``dtype`` ("float64" or "float32") is the precision of the forward and reverse
        passes, for either optimizer.

        Raises
        ------
        ValueError, TypeError
            For a bad argument, naming it: an unknown ``optimizer`` or ``dtype``, ``obs``
            not of shape ``(B >= 1, obs_dim)``, ``targets`` not of shape ``(B,)``, either
            not finite, a count below 1, a learning rate not finite and > 0 or an ``l2``
            not finite and >= 0. ``ValueError`` also when an Adam fit overflows (values
            beyond the range of ``dtype``: float32's is about 3.4e38): the critic and its
            Adam state are then left as they were.
        """
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype!r}: must be one of {', '.join(_DTYPES)}")
        obs, targets = self._check_batch(obs, targets)
        _check_fit_settings(optimizer, lr, epochs, batch_size, lbfgs_iters, l2)
        n = obs.shape[0]
        loss_before = self.mse(obs, targets)
        if optimizer == "lbfgs":
            res = minimize(
                self._lbfgs_objective(obs, targets, l2, dtype), self.theta, jac=True,
                method="L-BFGS-B", options={"maxiter": lbfgs_iters},
            )
            if np.all(np.isfinite(res.x)):
                self.theta = np.array(res.x)
            return loss_before
        theta = self.theta.copy()
        orders = np.stack([rng.permutation(n) for _ in range(epochs)])
        adam = self.adam
        from rl_adapters._kernels import adam_fit, adam_fit_float32

        # The kernel writes the moments in place: kept to restore them after an overflow.
        m_before, v_before, t_before = adam.m.copy(), adam.v.copy(), adam.t
        adam.t = (adam_fit if dtype == "float64" else adam_fit_float32)(
            theta, np.ascontiguousarray(obs, dtype=np.float64),
            np.ascontiguousarray(targets, dtype=np.float64), orders, int(batch_size),
            self.net.sizes_array, self.net.activation == "relu", float(lr), adam.beta1,
            adam.beta2, adam.eps, adam.m, adam.v, adam.t, float(l2), self._weight_mask)
        if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(adam.m))
                and np.all(np.isfinite(adam.v))):
            # (NaN parameters would reach the next update's advantages and policy step)
            adam.m, adam.v, adam.t = m_before, v_before, t_before
            limit = "3.4e38" if dtype == "float32" else "1.8e308, of squares near 1.3e154"
            raise ValueError(
                f"the critic's Adam fit overflowed in {dtype} (value_dtype): its parameters "
                f"or moments are no longer finite (observations up to "
                f"{float(np.max(np.abs(obs))):.3g}, targets up to "
                f"{float(np.max(np.abs(targets))):.3g}, l2={l2!r}; {dtype}'s range ends near "
                f"{limit}); the critic is left as it was. Normalize the observations or "
                "rewards (normalize_obs, normalize_reward)"
                + (" or use value_dtype='float64'" if dtype == "float32" else ""))
        self.theta = theta
        return loss_before

    def _check_batch(self, obs: Any, targets: Any) -> tuple[NDArray, NDArray]:
        """``obs`` and ``targets`` as arrays (not copied), or an error naming the bad one."""
        obs, targets = np.asarray(obs), np.asarray(targets)
        n_in = self.net.sizes[0]
        if obs.ndim != 2 or obs.shape[0] < 1 or obs.shape[1] != n_in:
            raise ValueError(f"obs must have shape (B >= 1, {n_in}), got {obs.shape}")
        if targets.shape != (obs.shape[0],):
            raise ValueError(f"targets must have shape ({obs.shape[0]},) like obs' rows, "
                             f"got {targets.shape}")
        for name, arr in (("obs", obs), ("targets", targets)):
            if not (arr.dtype.kind in "biuf" and np.all(np.isfinite(arr))):
                raise ValueError(f"{name} must be finite numbers")
        return obs, targets


def _check_fit_settings(optimizer: Any, lr: Any, epochs: Any, batch_size: Any,
                        lbfgs_iters: Any, l2: Any) -> None:
    """TypeError or ValueError naming the first bad setting of :meth:`ValueFunction.fit`."""
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}: must be one of {', '.join(_OPTIMIZERS)}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("lbfgs_iters", lbfgs_iters)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool | np.bool_):
            raise TypeError(f"{name}={value!r}: must be an int >= 1")
        if value < 1:
            raise ValueError(f"{name}={value!r}: must be an int >= 1")
    for name, value, low_open in (("lr", lr, True), ("l2", l2, False)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool | np.bool_):
            raise TypeError(f"{name}={value!r}: must be a real number")
        try:
            number = float(value)
        except OverflowError:  # an int beyond float's range
            number = math.inf
        if not (math.isfinite(number) and (number > 0.0 if low_open else number >= 0.0)):
            raise ValueError(f"{name}={value!r}: must be a finite number "
                             f"{'>' if low_open else '>='} 0")
