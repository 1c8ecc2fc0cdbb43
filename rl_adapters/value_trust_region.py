r"""The trust-region value fit of GAE (Schulman et al., 2016, section 5), on this project's core.

After each policy update the critic :math:`V_\phi` is regressed on the lambda-returns
:math:`\hat V_i` of the batch, but only as far as a trust region allows, so that one noisy
batch cannot throw away what earlier batches taught it:

.. math::

    \min_\phi\; \frac1B \sum_i \bigl(V_\phi(s_i) - \hat V_i\bigr)^2
    \quad\text{s.t.}\quad
    \frac{1}{2\sigma^2}\,\frac1B \sum_i \bigl(V_\phi(s_i) - V_{\phi_0}(s_i)\bigr)^2 \le \epsilon,
    \qquad \sigma^2 = \frac1B \sum_i \bigl(V_{\phi_0}(s_i) - \hat V_i\bigr)^2 .

The constraint is the mean KL divergence between the Gaussians
:math:`\mathcal N(V_{\phi_0}(s), \sigma^2)` and :math:`\mathcal N(V_\phi(s), \sigma^2)`: the
same kind of bound TRPO puts on the policy. With :math:`J` the ``(B, n)`` Jacobian of the
outputs :math:`V_\phi(s_i)` at :math:`\phi_0` and :math:`r = V_{\phi_0} - \hat V` the
residuals, the constraint's Hessian at :math:`\phi_0` is the Gauss-Newton matrix
:math:`J^T J / (B \sigma^2)` (exact there, since the constraint's residuals vanish at
:math:`\phi_0`), and the negative gradient of half the MSE is :math:`g = -J^T r / B`. One step:

1. :func:`trustregion.natural_gradient_step` solves :math:`(G + \lambda I) d = g` with
   :math:`G = J^T J / B` by a few CG iterations, each one forward-mode (:meth:`MLP.jvp`) and
   one reverse-mode (:meth:`MLP.vjp`) pass over the cached forward pass, and scales
   :math:`d` onto :math:`\tfrac12 s^T (G + \lambda I) s = \epsilon \sigma^2`, which is the
   constraint :math:`\tfrac12 s^T \tfrac{J^T J}{B\sigma^2} s \le \epsilon` with the damping
   :math:`\lambda` measured on :math:`J^T J / B` (so its scale does not depend on the size of
   the returns);
2. because the objective is a least-squares fit in the same metric, its Gauss-Newton model
   :math:`\tfrac12\sigma^2 - g^T s + \tfrac12 s^T (G + \lambda I) s` is minimized along
   :math:`d` at :math:`s = d` itself (the Levenberg-Marquardt step): when that point lies
   inside the trust region (:math:`\beta > 1`) the step stops there instead of overshooting to
   the boundary. On a linear-in-parameters model with exact CG and no damping, a large
   :math:`\epsilon` therefore gives the least-squares solution in one step;
3. :func:`trustregion.backtracking_line_search` (float64) accepts the first trial
   :math:`\phi_0 + \rho^k s` that lowers the MSE and keeps the true constraint
   :math:`\le \epsilon`; if none does, the parameters do not move.

``outer_iters > 1`` repeats the step, each time re-centred at the current parameters (a new
:math:`V_{\phi_0}` and :math:`\sigma^2`): each step keeps its own constraint, so the total
change obeys :math:`\sqrt{\mathrm{mean}((V_k - V_0)^2)} \le \sum_j \sqrt{2\epsilon\sigma_j^2}`.

References: J. Schulman, P. Moritz, S. Levine, M. Jordan, P. Abbeel, "High-dimensional
continuous control using generalized advantage estimation", ICLR 2016, section 5.

Examples
--------
>>> import numpy as np
>>> from rl_adapters.mlp import MLP
>>> net = MLP((3, 16, 1))
>>> rng = np.random.default_rng(0)
>>> theta = net.init(rng)
>>> obs = rng.standard_normal((256, 3)); targets = np.sin(obs[:, 0]) + obs[:, 1]
>>> fit = TrustRegionValueFit(net, epsilon=0.05)
>>> new_theta, info = fit.fit(theta, obs, targets)
>>> info["status"].name, info["mse_after"] < info["mse_before"], info["constraint"] <= 0.05
('ACCEPTED', True, True)
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rl_adapters.mlp import MLP, ForwardCache
from trustregion import Status, backtracking_line_search, natural_gradient_step

__all__ = ["GaussNewtonOperator", "TrustRegionValueFit"]

_DTYPES = ("float32", "float64")
# The step is scaled onto (1 - margin) * epsilon: where the constraint is exactly quadratic
# (a linear model, a near-linear network) a step aimed at epsilon itself lands a rounding
# error above it half the time, and the line search would throw away 20% of it.
_BOUNDARY_MARGIN = 1e-6
# The radius epsilon * sigma^2 handed to the step, kept inside float64's positive range.
_MIN_RADIUS, _MAX_RADIUS = sys.float_info.min, sys.float_info.max


class GaussNewtonOperator:
    r"""``v -> J^T J v / B`` for a one-output :class:`MLP` at fixed parameters.

    :math:`J` is the ``(B, n)`` Jacobian of the outputs on the ``B`` cached rows. This is the
    Hessian at :math:`\theta_0` of :math:`\tfrac12\,\mathrm{mean}((V_\theta - V_{\theta_0})^2)`
    (the GAE constraint times :math:`\sigma^2`). One call costs one JVP and one VJP over the
    cache, no forward pass. With ``dtype=np.float32`` the products run in single precision
    on float32 copies of the cache and come back as float64.

    Parameters
    ----------
    net : MLP
        A network with one output.
    theta : ndarray, shape (net.n_params,)
        The parameters the products are taken at.
    cache : ForwardCache
        ``net.forward(theta, obs)[1]`` on the rows the products average over.
    dtype : {np.float64, np.float32}
        Precision of the products.
    """

    def __init__(self, net: MLP, theta: NDArray, cache: ForwardCache,
                 dtype: Any = np.float64) -> None:
        self.net = net
        self.dtype = np.dtype(dtype)
        self.n_rows = int(cache.inputs[0].shape[0])
        self.n_calls = 0
        if self.dtype == np.float64:
            self.theta, self.cache = theta, cache
        else:
            self.theta = theta.astype(self.dtype)
            self.cache = ForwardCache(
                inputs=[np.ascontiguousarray(h, dtype=self.dtype) for h in cache.inputs],
                derivs=[np.ascontiguousarray(d, dtype=self.dtype) for d in cache.derivs],
            )

    @classmethod
    def at(cls, net: MLP, theta: NDArray, obs: NDArray,
           dtype: Any = np.float64) -> GaussNewtonOperator:
        """The operator at ``theta`` on the rows ``obs`` (runs the one forward pass)."""
        _, cache = net.forward(theta, obs)
        return cls(net, theta, cache, dtype)

    def __call__(self, v: NDArray) -> NDArray:
        self.n_calls += 1
        jv = self.net.jvp(self.theta, self.cache, np.asarray(v, dtype=self.dtype))
        jv /= self.n_rows
        out = self.net.vjp(self.theta, self.cache, jv)
        return out if out.dtype == np.float64 else out.astype(np.float64)


class TrustRegionValueFit:
    r"""Fit a critic by GAE's trust-region method (see the module docstring for the math).

    Parameters
    ----------
    net : MLP
        The value network (one output). Its parameters live outside, as a flat vector.
    epsilon : float
        Trust region :math:`\epsilon > 0`: the bound on
        :math:`\mathrm{mean}((V_{new} - V_{old})^2) / (2\sigma^2)`, the mean KL between the
        Gaussians of variance :math:`\sigma^2` around the old and new values. 1.0 (the
        default) lets one step move the values by up to :math:`\sqrt 2` times the current
        RMS error; rllab/garage's trust-region regressors use 0.01, which on CartPole and
        Pendulum batches of 1024 leaves 80% of the error after one step
        (docs/value_trust_region.md).
    cg_iters : int
        CG iterations per step (>= 1).
    damping : float
        :math:`\lambda \ge 0` added to :math:`J^T J / B` in the CG solve and in the step's
        length (Levenberg-Marquardt damping).
    outer_iters : int
        Trust-region steps per fit (>= 1), each re-centred at the current parameters.
    gn_subsample : float
        Fraction of the batch, in (0, 1], on which the Gauss-Newton products are averaged
        (the gradient and the line search always use the whole batch); below 1 ``fit``
        needs an ``rng``.
    gn_dtype : {"float64", "float32"}
        Precision of the Gauss-Newton products (the line search is always float64).
    cg_rtol : float
        CG relative residual tolerance (> 0).
    ls_shrink : float
        Line-search shrink factor, in (0, 1).
    ls_max_backtracks : int
        Line-search backtracks after the full step (>= 0).

    Raises
    ------
    ValueError, TypeError
        For a bad setting, naming it (e.g. ``epsilon=0.0: must be a finite number > 0``).

    Examples
    --------
    >>> fit = TrustRegionValueFit(MLP((4, 8, 1)), epsilon=0.1, cg_iters=5)
    >>> fit.state_dict()["epsilon"]
    0.1
    >>> TrustRegionValueFit(MLP((4, 1)), epsilon=0.0)
    Traceback (most recent call last):
    ...
    ValueError: epsilon=0.0: must be a finite number > 0 (the value trust region)
    """

    #: The settings, in the order of ``state_dict()``.
    SETTINGS = ("epsilon", "cg_iters", "damping", "outer_iters", "gn_subsample", "gn_dtype",
                "cg_rtol", "ls_shrink", "ls_max_backtracks")

    def __init__(self, net: MLP, *, epsilon: float = 1.0, cg_iters: int = 10,
                 damping: float = 0.1, outer_iters: int = 1, gn_subsample: float = 1.0,
                 gn_dtype: str = "float32", cg_rtol: float = 1e-10, ls_shrink: float = 0.8,
                 ls_max_backtracks: int = 10) -> None:
        if not isinstance(net, MLP):
            raise TypeError(f"net must be an rl_adapters.mlp.MLP, got {type(net).__name__}")
        if net.sizes[-1] != 1:
            raise ValueError(f"net must have one output (a value network), got sizes {net.sizes}")
        self.net = net
        self.load_state_dict(dict(
            epsilon=epsilon, cg_iters=cg_iters, damping=damping, outer_iters=outer_iters,
            gn_subsample=gn_subsample, gn_dtype=gn_dtype, cg_rtol=cg_rtol, ls_shrink=ls_shrink,
            ls_max_backtracks=ls_max_backtracks))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The settings as a dict of Python scalars and strings (``np.savez``-able).

        The fit keeps no state between calls beyond its settings; this is what a checkpoint
        needs to rebuild the same fitter.
        """
        return {name: getattr(self, name) for name in self.SETTINGS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set every setting from ``state`` (as written by :meth:`state_dict`), validated.

        Values may be 0-d arrays (as read back from an ``.npz``). Missing or unknown keys
        raise a ``KeyError``.
        """
        missing = sorted(set(self.SETTINGS) - set(state))
        unknown = sorted(set(state) - set(self.SETTINGS))
        if missing or unknown:
            raise KeyError(f"state: missing keys {missing}, unknown keys {unknown}")
        values = {k: _scalar(v) for k, v in state.items()}
        checked = {
            "epsilon": _positive("epsilon", values["epsilon"], "the value trust region"),
            "cg_iters": _count("cg_iters", values["cg_iters"], 1),
            "damping": _nonnegative("damping", values["damping"]),
            "outer_iters": _count("outer_iters", values["outer_iters"], 1),
            "gn_subsample": _fraction("gn_subsample", values["gn_subsample"], closed=True),
            "gn_dtype": _dtype_name("gn_dtype", values["gn_dtype"]),
            "cg_rtol": _positive("cg_rtol", values["cg_rtol"], "CG relative tolerance"),
            "ls_shrink": _fraction("ls_shrink", values["ls_shrink"], closed=False),
            "ls_max_backtracks": _count("ls_max_backtracks", values["ls_max_backtracks"], 0),
        }
        # Assign only once every value passed: a bad state leaves the fitter unchanged.
        for name, value in checked.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.SETTINGS)
        return f"TrustRegionValueFit(net=MLP({self.net.sizes}), {settings})"

    # ------------------------------------------------------------------- fit
    def gauss_newton_operator(self, theta: NDArray, obs: NDArray) -> GaussNewtonOperator:
        """``v -> J^T J v / B`` at ``theta`` on ``obs``, in this fitter's ``gn_dtype``."""
        theta, obs, _ = self._check(theta, obs, None)
        return GaussNewtonOperator.at(self.net, theta, obs, np.dtype(self.gn_dtype))

    def fit(self, theta: Any, obs: Any, targets: Any, *,
            rng: np.random.Generator | None = None) -> tuple[NDArray, dict[str, Any]]:
        r"""Run ``outer_iters`` trust-region steps of the MSE to ``targets`` from ``theta``.

        Parameters
        ----------
        theta : array_like, shape (net.n_params,)
            Current value-network parameters (not modified).
        obs : array_like, shape (B, n_in)
            Observations.
        targets : array_like, shape (B,)
            Regression targets (the lambda-returns).
        rng : numpy.random.Generator, optional
            Draws the Gauss-Newton subsample; required when ``gn_subsample < 1``.

        Returns
        -------
        new_theta : ndarray, shape (net.n_params,), float64
            The fitted parameters: a new array, equal to ``theta`` if no step was accepted.
        info : dict
            ``mse_before``, ``mse_after`` (float): the MSE on the batch before and after;
            ``constraint`` (float): :math:`\mathrm{mean}((V_{new}-V_{old})^2)/(2\sigma^2)` of
            the whole fit (:math:`\le \epsilon` when ``outer_iters`` is 1);
            ``steps`` (int): accepted steps; ``outer_iters`` (int): steps tried;
            ``cg_iters`` (int): CG iterations in all; ``cg_residual`` (float): the last CG
            residual norm; ``gn_products`` (int): Gauss-Newton products in all;
            ``backtracks`` (int): line-search backtracks in all; ``step_fraction`` (float):
            of the last accepted step (0.0 if none); ``newton_steps`` (int): steps that
            stopped at the Gauss-Newton minimizer inside the trust region;
            ``status`` (:class:`trustregion.Status`): ``ACCEPTED`` if any step was accepted,
            else why the first step failed (``ZERO_DIRECTION``, ``NEGATIVE_CURVATURE``,
            ``NOT_ASCENT``, ``NON_FINITE`` from the step; ``NO_IMPROVEMENT``,
            ``CONSTRAINT_VIOLATED``, ``NON_FINITE`` from the line search);
            ``success`` (bool): ``status is ACCEPTED``; ``message`` (str): the last solver
            message.

        Raises
        ------
        ValueError
            Wrong shapes, non-finite input, or ``gn_subsample < 1`` without ``rng``.
        """
        theta, obs, targets = self._check(theta, obs, targets)
        if self.gn_subsample < 1.0 and not isinstance(rng, np.random.Generator):
            raise ValueError(
                f"rng: gn_subsample={self.gn_subsample} < 1 draws a random subsample; pass "
                f"a numpy.random.Generator, got {rng!r}")
        net, n = self.net, obs.shape[0]
        gn_dtype = np.dtype(self.gn_dtype)
        eps = self.epsilon
        v_start = _predict(net, theta, obs)
        mse_before = _mse(v_start, targets)
        status: Status | None = None
        message = ""
        steps = cg_total = products = backtracks = newton_steps = outer = 0
        cg_residual = step_fraction = 0.0
        for _ in range(self.outer_iters):
            outer += 1
            out, cache = net.forward(theta, obs)
            v_old = out[:, 0]
            resid = v_old - targets
            with np.errstate(over="ignore", invalid="ignore"):
                sigma2 = float(resid @ resid) / n
                g = net.vjp(theta, cache, resid[:, None] * (-1.0 / n))
            if not (math.isfinite(sigma2) and np.all(np.isfinite(g))):
                # Returns beyond about 1e154 (or values that overflow the network): their
                # squares leave float64, and with them the trust region and the gradient.
                status = Status.NON_FINITE if steps == 0 else status
                message = (f"the mean squared error sigma^2 = {sigma2!r} or its gradient is "
                           "not finite (returns or values beyond about 1e154 overflow "
                           "float64): no step; scale the rewards down (normalize_reward)")
                break
            if not sigma2 > 0.0 or not np.any(g):
                status = Status.ZERO_DIRECTION if steps == 0 else status
                message = "the residuals or their gradient are zero: the fit is exact already"
                break
            if self.gn_subsample < 1.0:
                assert rng is not None
                k = max(1, round(self.gn_subsample * n))
                idx = np.sort(rng.choice(n, size=k, replace=False))
                gn = GaussNewtonOperator.at(net, theta, obs[idx], gn_dtype)
            else:
                gn = GaussNewtonOperator(net, theta, cache, gn_dtype)
            # epsilon * sigma^2 can leave float64's range though both are finite (epsilon
            # 1e300, or sigma^2 1e-300): the radius is kept within it, the line search still
            # checks the true constraint.
            radius = min(max((1.0 - _BOUNDARY_MARGIN) * eps * sigma2, _MIN_RADIUS),
                         _MAX_RADIUS)
            nat = natural_gradient_step(g, gn, radius,
                                        cg_iters=self.cg_iters, damping=self.damping,
                                        cg_rtol=self.cg_rtol)
            cg_total += int(nat.cg.nit)
            cg_residual = float(nat.cg.residual_norm)
            products += gn.n_calls
            if not nat.success:
                status = nat.status if steps == 0 else status
                message = nat.message
                break
            if nat.beta > 1.0:
                # The Gauss-Newton minimizer d lies inside the trust region: stop there.
                step, expected = nat.direction, float(g @ nat.direction)
                newton_steps += 1
            else:
                step, expected = nat.step, nat.expected_improvement
            ls = backtracking_line_search(
                _HalfMSEAndConstraint(net, obs, targets, v_old, sigma2), theta, step,
                expected_improvement=max(expected, 0.0), max_constraint=eps,
                shrink=self.ls_shrink, max_backtracks=self.ls_max_backtracks,
                f0=-0.5 * sigma2)
            message = ls.message
            if not ls.accepted:
                status = ls.status if steps == 0 else status
                backtracks += ls.n_backtracks
                break
            backtracks += ls.n_backtracks
            step_fraction = ls.step_fraction
            steps += 1
            status = Status.ACCEPTED
            theta = ls.x
        v_new = _predict(net, theta, obs) if steps else v_start
        change = v_new - v_start
        final_status = Status.ACCEPTED if steps else status
        assert final_status is not None
        info: dict[str, Any] = {
            "mse_before": mse_before,
            "mse_after": _mse(v_new, targets),
            "constraint": float(change @ change) / n / (2.0 * mse_before) if mse_before else 0.0,
            "steps": steps,
            "outer_iters": outer,
            "cg_iters": cg_total,
            "cg_residual": cg_residual,
            "gn_products": products,
            "backtracks": backtracks,
            "step_fraction": step_fraction,
            "newton_steps": newton_steps,
            "status": final_status,
            "success": final_status is Status.ACCEPTED,
            "message": message,
        }
        return theta, info

    def _check(self, theta: Any, obs: Any, targets: Any):
        net = self.net
        theta = np.array(theta, dtype=np.float64)  # a copy: fit never writes the caller's
        if theta.shape != (net.n_params,):
            raise ValueError(f"theta must have shape ({net.n_params},) for this network, "
                             f"got {theta.shape}")
        if not np.all(np.isfinite(theta)):
            raise ValueError("theta must be finite")
        obs = np.asarray(obs, dtype=np.float64)
        if obs.ndim != 2 or obs.shape[1] != net.sizes[0] or obs.shape[0] < 1:
            raise ValueError(f"obs must have shape (B >= 1, {net.sizes[0]}), got {obs.shape}")
        if not np.all(np.isfinite(obs)):
            raise ValueError("obs must be finite")
        if targets is not None:
            targets = np.asarray(targets, dtype=np.float64)
            if targets.shape != (obs.shape[0],):
                raise ValueError(f"targets must have shape ({obs.shape[0]},) like obs' rows, "
                                 f"got {targets.shape}")
            if not np.all(np.isfinite(targets)):
                raise ValueError("targets must be finite")
        return theta, obs, targets


class _HalfMSEAndConstraint:
    """``theta -> (-mse/2, mean((V - V_old)^2) / (2 sigma^2))``, the line search's pair."""

    def __init__(self, net: MLP, obs: NDArray, targets: NDArray, v_old: NDArray,
                 sigma2: float) -> None:
        self.net, self.obs, self.targets = net, obs, targets
        self.v_old, self.sigma2 = v_old, sigma2

    def __call__(self, theta: NDArray) -> tuple[float, float]:
        v = _predict(self.net, theta, self.obs)
        if not np.all(np.isfinite(v)):
            return float("nan"), float("nan")
        change = v - self.v_old
        return (-0.5 * _mse(v, self.targets),
                float(change @ change) / v.shape[0] / (2.0 * self.sigma2))


def _predict(net: MLP, theta: NDArray, obs: NDArray) -> NDArray:
    out, _ = net.forward(theta, obs, keep_cache=False)
    return out[:, 0]


def _mse(values: NDArray, targets: NDArray) -> float:
    err = values - targets
    with np.errstate(over="ignore"):  # inf for returns beyond ~1e154: the fit says NON_FINITE
        return float(err @ err) / err.shape[0]


# ------------------------------------------------------------------ validation
def _scalar(value: Any) -> Any:
    """A 0-d array (as read back from an ``.npz``) as its Python scalar; anything else as is."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}={value!r}: must be a real number")
    return float(value)


def _positive(name: str, value: Any, what: str) -> float:
    out = _real(name, value)
    if not (math.isfinite(out) and out > 0.0):
        raise ValueError(f"{name}={value!r}: must be a finite number > 0 ({what})")
    return out


def _nonnegative(name: str, value: Any) -> float:
    out = _real(name, value)
    if not (math.isfinite(out) and out >= 0.0):
        raise ValueError(f"{name}={value!r}: must be a finite number >= 0")
    return out


def _fraction(name: str, value: Any, *, closed: bool) -> float:
    out = _real(name, value)
    ok = 0.0 < out <= 1.0 if closed else 0.0 < out < 1.0
    if not ok:
        raise ValueError(f"{name}={value!r}: must lie in (0, 1{']' if closed else ')'}")
    return out


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r}: must be an int >= {minimum}")
    if value < minimum:
        raise ValueError(f"{name}={value!r}: must be an int >= {minimum}")
    return int(value)


def _dtype_name(name: str, value: Any) -> str:
    if value not in _DTYPES:
        raise ValueError(f"{name}={value!r}: must be one of {_DTYPES}")
    return str(value)
