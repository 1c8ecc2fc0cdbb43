"""State-value network and its regression fit (minibatch Adam or L-BFGS).

The critic ``V_phi(s)`` is a separate :class:`~rl_adapters.mlp.MLP` with one output,
fitted after each policy update to the GAE lambda-returns ``R_t = A_t + V_old(s_t)`` by
minimizing the mean squared error

.. math:: \\ell(\\phi) = \\frac1B \\sum_i (V_\\phi(s_i) - R_i)^2 + \\lambda_2 \\|W\\|^2 .

Two optimizers, chosen by ``TRPOConfig.value_optimizer``: ``"adam"`` runs
``value_epochs`` shuffled passes of minibatch Adam (Kingma & Ba, with bias correction;
the state is saved in checkpoints), ``"lbfgs"`` runs SciPy's L-BFGS-B on the full batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

from rl_adapters._kernels import adam_fit, adam_step
from rl_adapters.mlp import MLP

__all__ = ["AdamState", "ValueFunction"]


class AdamState:
    """First and second moment estimates and step count of Adam."""

    def __init__(self, n: int, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-5):
        self.m = np.zeros(n)
        self.v = np.zeros(n)
        self.t = 0
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def step(self, theta: NDArray, grad: NDArray, lr: float) -> None:
        self.t += 1
        adam_step(theta, grad, self.m, self.v, lr, self.beta1, self.beta2, self.eps, self.t)

    def state_dict(self) -> dict[str, Any]:
        """Moments, step count and the settings (beta1, beta2, eps)."""
        return {"m": self.m, "v": self.v, "t": self.t, "beta1": self.beta1,
                "beta2": self.beta2, "eps": self.eps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        m = np.array(state["m"], dtype=np.float64)
        if m.shape != self.m.shape:
            raise ValueError(f"state: Adam moments of shape {m.shape}, expected {self.m.shape}")
        self.m = m
        self.v = np.array(state["v"], dtype=np.float64)
        self.t = int(state["t"])
        self.beta1, self.beta2 = float(state["beta1"]), float(state["beta2"])
        self.eps = float(state["eps"])


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
        sizes = tuple(int(k) for k in np.atleast_1d(state["sizes"]))
        if sizes != tuple(self.net.sizes) or str(state["activation"]) != self.net.activation:
            raise ValueError(
                f"state: a critic with layers {sizes} and {state['activation']!s} activation "
                f"does not fit this one ({tuple(self.net.sizes)}, {self.net.activation})")
        self.theta = np.array(state["theta"], dtype=np.float64)
        self.adam.load_state_dict(state["adam"])

    def predict(self, obs: NDArray) -> NDArray:
        """``V(s)`` for a batch ``(N, obs_dim)``, shape ``(N,)``."""
        out, _ = self.net.forward(self.theta, obs, keep_cache=False)
        return out[:, 0]

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

    def fit(self, obs: NDArray, targets: NDArray, rng: np.random.Generator, *,
            optimizer: str = "adam", lr: float = 1e-3, epochs: int = 10,
            batch_size: int = 64, lbfgs_iters: int = 25, l2: float = 0.0) -> float:
        """Fit to ``targets``; return the mean squared error before the fit."""
        n = obs.shape[0]
        err0 = self.predict(obs) - targets
        loss_before = float(err0 @ err0) / n
        if optimizer == "lbfgs":
            res = minimize(
                self.loss_and_grad, self.theta, args=(obs, targets, l2), jac=True,
                method="L-BFGS-B", options={"maxiter": lbfgs_iters},
            )
            if np.all(np.isfinite(res.x)):
                self.theta = np.array(res.x)
            return loss_before
        theta = self.theta.copy()
        orders = np.stack([rng.permutation(n) for _ in range(epochs)])
        adam = self.adam
        adam.t = adam_fit(theta, np.ascontiguousarray(obs, dtype=np.float64),
                           np.ascontiguousarray(targets, dtype=np.float64), orders,
                           int(batch_size), self.net.sizes_array, self.net.activation == "relu",
                           float(lr), adam.beta1, adam.beta2, adam.eps, adam.m, adam.v, adam.t,
                           float(l2), self._weight_mask)
        self.theta = theta
        return loss_before
