"""The gallery: correct and deliberately broken numeric code for trustregion.testing's checks.

Each entry pairs a check with an implementation, a strategy of cases and, for a broken
implementation, a condition (from the oracle, not from the check) under which the bug is
observable at all: a transposed VJP is invisible on a symmetric Jacobian, a CG that
ignores its preconditioner is invisible when every eigenvalue is equal. Every check must
pass on every case of a correct implementation (no false alarm) and fail on every
observable case of a broken one.

Example counts: ``TR_GALLERY_EXAMPLES`` per entry (default 12, derandomized under CI).
``TR_GALLERY_REPORT=path.json`` writes the table of entry -> examples, caught, unobservable
(run it without xdist). benchmarks/bench_testing.py times the checks on these entries.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import scipy.special
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import trustregion as tr
from trustregion import testing as tt

DTYPES = st.sampled_from([np.float64, np.float32])
SEEDS = st.integers(0, 2**32 - 1)


@dataclass(frozen=True)
class Entry:
    check: str
    implementation: str
    broken: bool
    cases: Any
    run: Callable[[Any], Any]
    observable: Callable[[Any], bool] = lambda case: True

    @property
    def id(self) -> str:
        return f"{self.check}[{self.implementation}]"


# ------------------------------------------------------------ gradients and Hessians


@st.composite
def logistic_problems(draw):
    """Ridge-regularized logistic regression: f(x) = mean log(1 + exp(-y X x)) + lam/2 |x|^2."""
    dtype = draw(DTYPES)
    n, m = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(SEEDS))
    X = rng.standard_normal((m, n)).astype(dtype)
    y = np.where(rng.random(m) < 0.5, -1.0, 1.0).astype(dtype)
    x = draw(hnp.arrays(np.float64, n, elements=st.floats(-3, 3))).astype(dtype)
    return SimpleNamespace(X=X, y=y, x=x, lam=dtype(0.5), n=n, m=m)


def logistic_f(c):
    return lambda x: np.mean(np.logaddexp(0, -c.y * (c.X @ x))) + 0.5 * c.lam * (x @ x)


def logistic_grad(c, ridge=True, scale=1.0):
    def grad(x):
        s = scipy.special.expit(-c.y * (c.X @ x)).astype(x.dtype)
        return scale * (c.X.T @ (-c.y * s)) / c.m + (c.lam * x if ridge else 0 * x)
    return grad


def logistic_hvp(c, ridge=True, skew=0.0):
    B = np.random.default_rng(c.n).standard_normal((c.n, c.n))
    K = (B - B.T).astype(c.x.dtype)

    def hvp(x, v):
        s = scipy.special.expit(c.X @ x * c.y).astype(x.dtype)
        w = s * (1 - s)
        out = c.X.T @ (w * (c.X @ v)) / c.m + (c.lam * v if ridge else 0 * v)
        return out + skew * (K @ v)
    return hvp


def data_gradient_norm(c):
    return float(np.linalg.norm(logistic_grad(c, ridge=False)(c.x.astype(np.float64))))


# ------------------------------------------------------------ Jacobians


@st.composite
def tanh_maps(draw, square=False):
    """f(x) = tanh(W x): J = diag(1 - tanh^2) W."""
    dtype = draw(DTYPES)
    n = draw(st.integers(1, 6))
    m = n if square else draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(SEEDS))
    W = rng.standard_normal((m, n)).astype(dtype)
    x = draw(hnp.arrays(np.float64, n, elements=st.floats(-1, 1))).astype(dtype)
    return SimpleNamespace(W=W, x=x)


def tanh_f(c):
    return lambda x: np.tanh(c.W @ x)


def tanh_jvp(c, sign=1.0):
    return lambda x, t: sign * (1 - np.tanh(c.W @ x) ** 2) * (c.W @ t)


def tanh_vjp(c, transposed=False, derivative=True):
    def vjp(x, co):
        d = (1 - np.tanh(c.W @ x) ** 2) if derivative else 1.0
        return (c.W if transposed else c.W.T) @ (d * co)
    return vjp


def jacobian(c):
    x = c.x.astype(np.float64)
    return (1 - np.tanh(c.W @ x) ** 2)[:, None] * c.W


# ------------------------------------------------------------ Fisher products


@st.composite
def linear_policies(draw):
    """A categorical policy with logits X theta.reshape(d, k) on N observations."""
    N, d, k = draw(st.integers(1, 6)), draw(st.integers(1, 3)), draw(st.integers(2, 4))
    rng = np.random.default_rng(draw(SEEDS))
    X = rng.standard_normal((N, d))
    theta = draw(hnp.arrays(np.float64, d * k, elements=st.floats(-2, 2)))
    return SimpleNamespace(X=X, theta=theta, N=N, d=d, k=k)


def policy_kl(c, offset=0.0):
    def kl(theta_old, theta):
        lo = scipy.special.log_softmax(c.X @ theta_old.reshape(c.d, c.k), axis=1)
        ln = scipy.special.log_softmax(c.X @ theta.reshape(c.d, c.k), axis=1)
        return float(np.mean(np.sum(np.exp(lo) * (lo - ln), axis=1))) + offset
    return kl


def policy_kl_grad(c):
    def kl_grad(theta_old, theta):
        po = scipy.special.softmax(c.X @ theta_old.reshape(c.d, c.k), axis=1)
        pn = scipy.special.softmax(c.X @ theta.reshape(c.d, c.k), axis=1)
        return (c.X.T @ (pn - po)).ravel() / c.N
    return kl_grad


def policy_fvp(c, scale=1.0, point=None, damping_factor=1.0):
    def fvp(theta, v, damping=0.0):
        at = theta if point is None else point
        z = c.X @ at.reshape(c.d, c.k)
        fz = tr.distributions.categorical_fisher_product(z, c.X @ v.reshape(c.d, c.k))
        return scale * (c.X.T @ fz).ravel() / c.N + damping_factor * damping * v
    return fvp


def fisher_matrix(c):
    n = c.d * c.k
    return np.column_stack([policy_fvp(c)(c.theta, e) for e in np.eye(n)])


def fisher_nonzero(c):
    return float(np.max(np.abs(fisher_matrix(c)))) > 1e-3


def fisher_changes(c):
    """F(theta) differs from F(0) (the 'wrong point' bug is visible)."""
    n = c.d * c.k
    at_zero = np.column_stack([policy_fvp(c, point=np.zeros(n))(c.theta, e) for e in np.eye(n)])
    return float(np.max(np.abs(fisher_matrix(c) - at_zero))) > 1e-2


# ------------------------------------------------------------ KL divergences


def categorical_kl(p, q):
    lp = p - scipy.special.logsumexp(p, axis=1, keepdims=True)
    lq = q - scipy.special.logsumexp(q, axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        return np.sum(np.where(np.isfinite(lp), np.exp(lp) * (lp - lq), 0.0), axis=1)


def categorical_kl_unnormalized(p, q):
    """Forgets the log-normalizers: not invariant to shifting logits."""
    pp = scipy.special.softmax(p, axis=1)
    with np.errstate(invalid="ignore"):
        return np.sum(np.where(pp > 0, pp * (p - q), 0.0), axis=1)


def categorical_log_prob(p, x):
    lp = scipy.special.log_softmax(np.asarray(p, dtype=np.float64), axis=1)
    return lp[np.arange(lp.shape[0])[None, :], x]


def categorical_sample(p, rng, n):
    probs = scipy.special.softmax(np.asarray(p, dtype=np.float64), axis=1)
    u = rng.random((n, probs.shape[0], 1))
    return np.minimum((u > np.cumsum(probs, axis=1)[None]).sum(axis=2), probs.shape[1] - 1)


def gaussian_kl(p, q):
    (mp, lp), (mq, lq) = p, q
    mp, lp, mq, lq = (np.asarray(a, dtype=np.float64) for a in (mp, lp, mq, lq))
    return np.sum(lq - lp + (np.exp(2 * lp) + (mp - mq) ** 2) / (2 * np.exp(2 * lq)) - 0.5, axis=1)


def gaussian_log_prob(p, x):
    mean, log_std = (np.asarray(a, dtype=np.float64) for a in p)
    z = (x - mean) / np.exp(log_std)
    return np.sum(-0.5 * z**2 - log_std - 0.5 * np.log(2 * np.pi), axis=-1)


def gaussian_sample(p, rng, n):
    mean, log_std = (np.asarray(a, dtype=np.float64) for a in p)
    return mean + np.exp(log_std) * rng.standard_normal((n, *mean.shape))


def check_categorical_kl(kl, sampled=True):
    def run(pair):
        extra = dict(log_prob=categorical_log_prob, sample=categorical_sample) if sampled else {}
        return tt.check_kl(kl, pair.p, pair.q, shift_invariant=True, **extra)
    return run


def check_gaussian_kl(kl):
    return lambda pair: tt.check_kl(kl, pair.p, pair.q, log_prob=gaussian_log_prob, sample=gaussian_sample)


def asymmetric(pair):
    """Swapping p and q moves some row's KL by more than the Monte Carlo check can resolve.

    For categoricals the standard deviation of the log-ratio under p is exact, and a row
    counts when |KL(p||q) - KL(q||p)| exceeds twice the check's bound (z = 5.5 standard
    errors of 20000 samples); for the far Gaussian pairs the gap is >= 1.6 per dimension
    and far above that bound (tests/test_testing_strategies.py).
    """
    if isinstance(pair.p, tuple):
        backward = tt.gaussian_kl_reference(*pair.q, *pair.p)
        return bool(np.any(np.abs(pair.kl - backward) > 0.2 * np.maximum(pair.kl, backward) + 1e-3))
    backward = tt.categorical_kl_reference(pair.q, pair.p)
    lp = scipy.special.log_softmax(pair.p.astype(np.float64), axis=1)
    lq = scipy.special.log_softmax(pair.q.astype(np.float64), axis=1)
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        r = np.where(p > 0, lp - lq, 0.0)
    sigma = np.sqrt(np.maximum(np.sum(p * r**2, axis=1) - pair.kl**2, 0.0))
    return bool(np.any(np.abs(pair.kl - backward) > 2 * 5.5 * sigma / np.sqrt(20_000) + 1e-9))


def rows_differ(pair):
    return pair.kl.size > 1 and float(np.ptp(pair.kl)) > 1e-6 * (1 + float(np.max(pair.kl)))


# ------------------------------------------------------------ operators


def check_psd(case):
    return tt.check_symmetric_operator(as_matvec(case), case.matrix.shape[0], psd=True,
                                       dtype=case.matrix.dtype)


def check_symmetric(case):
    return tt.check_symmetric_operator(as_matvec(case), case.matrix.shape[0], dtype=case.matrix.dtype)


def as_matvec(case):
    op = case.operator
    return op if callable(op) and not hasattr(op, "matvec") else (lambda v: op @ v)


def operator_cases(kind):
    return tt.linear_operators(st.integers(1, 8), kind=kind, cond=(1, 1e4), dtype=DTYPES)


# ------------------------------------------------------------ CG


@st.composite
def spd_systems(draw):
    case = draw(tt.spd_matrices(st.integers(1, 12), cond=(1, 1e6)))
    b = draw(hnp.arrays(np.float64, case.n, elements=st.floats(-1, 1)))
    b[draw(st.integers(0, case.n - 1))] = 1.0
    return SimpleNamespace(A=case.matrix, b=b, cond=case.cond, n=case.n)


def core_cg(A, b, **kwargs):
    return tr.cg(A, b, **kwargs)


def textbook_pcg(A, b, *, rtol, maxiter, M=None, ignore_M=False, always_success=False):
    """Preconditioned CG as in Saad, Algorithm 9.1 (the broken variants are switches)."""
    apply_M = (lambda r: r) if (M is None or ignore_M) else (lambda r: M @ r)
    x = np.zeros_like(b)
    r = b.copy()
    z = apply_M(r)
    p = z.copy()
    rz = r @ z
    tol = rtol * np.linalg.norm(b)
    for _ in range(maxiter):
        if np.linalg.norm(r) <= tol:
            return SimpleNamespace(x=x, success=True)
        Ap = A @ p
        pAp = p @ Ap
        if not np.isfinite(pAp) or pAp <= 0:
            return SimpleNamespace(x=x, success=always_success)
        alpha = rz / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        z = apply_M(r)
        rz, rz_old = r @ z, rz
        p = z + (rz / rz_old) * p
    return SimpleNamespace(x=x, success=always_success or bool(np.linalg.norm(r) <= tol))


def one_step_does_not_solve(c):
    """One steepest-descent step leaves a residual: b is not (nearly) an eigenvector of A."""
    if c.n == 1:
        return False
    A, b = c.A.astype(np.float64), c.b
    r = b - (b @ b) / (b @ A @ b) * (A @ b)
    return float(np.linalg.norm(r)) > 1e-3 * float(np.linalg.norm(b))


def cg_run(solver):
    return lambda c: tt.check_cg_contract(solver, c.A, c.b, rtol=1e-6)


def nan_propagating_cg(A, b, **kwargs):
    """Returns whatever the iteration produced, NaN included."""
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    for _ in range(kwargs["maxiter"]):
        Ap = A @ p
        alpha = (r @ r) / (p @ Ap)
        x = x + alpha * p
        r_new = r - alpha * Ap
        if np.linalg.norm(r_new) <= kwargs["rtol"] * np.linalg.norm(b) or not np.isfinite(alpha):
            break
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
    return SimpleNamespace(x=x, success=bool(np.all(np.isfinite(x))))


# ------------------------------------------------------------ Steihaug


def tr_problems():
    return tt.trust_region_problems(st.integers(1, 8), cond=(1, 1e3))


def core_steihaug(hessp, g, radius):
    return tr.steihaug_cg(hessp, g, radius, rtol=1e-10, maxiter=20 * g.size)


def newton_ignoring_radius(hessp, g, radius):
    H = np.column_stack([hessp(e) for e in np.eye(g.size, dtype=g.dtype)])
    return SimpleNamespace(p=np.linalg.lstsq(H, -g, rcond=None)[0])


def steihaug_without_curvature_test(hessp, g, radius):
    """Stops at the current iterate on non-positive curvature instead of going to the boundary."""
    z, r = np.zeros_like(g), g.copy()
    d = -r
    for _ in range(2 * g.size):
        Hd = hessp(d)
        dHd = d @ Hd
        if dHd <= 0:
            return SimpleNamespace(p=z)
        alpha = (r @ r) / dHd
        if np.linalg.norm(z + alpha * d) >= radius:
            _, tau = tr.core.steihaug.boundary_intersections(z, d, radius)
            return SimpleNamespace(p=z + tau * d)
        z, r_new = z + alpha * d, r + alpha * Hd
        if np.linalg.norm(r_new) <= 1e-10 * np.linalg.norm(g):
            break
        d = -r_new + (r_new @ r_new) / (r @ r) * d
        r = r_new
    return SimpleNamespace(p=z)


def steihaug_run(solver, optimal=True):
    def run(problem):
        value = problem.model_value if optimal else None
        return tt.check_steihaug_contract(solver, problem.g, problem.H, problem.radius,
                                          optimal_value=value)
    return run


def newton_leaves_region(problem):
    H, g = problem.H.astype(np.float64), problem.g.astype(np.float64)
    p = np.linalg.lstsq(H, -g, rcond=None)[0]
    return float(np.linalg.norm(p)) > problem.radius * (1 + 1e-6)


def first_direction_has_negative_curvature(problem):
    g, H = problem.g.astype(np.float64), problem.H.astype(np.float64)
    return float(g @ H @ g) < -1e-6 * float(g @ g) * float(np.max(np.abs(problem.eigenvalues)))


# ------------------------------------------------------------ line search


def core_line_search(evaluate, x0, s, **kwargs):
    return tr.backtracking_line_search(evaluate, x0, s, **kwargs)


def textbook_line_search(evaluate, x0, s, *, expected_improvement, max_constraint, shrink,
                         max_backtracks, check_constraint=True, reject_nan=True, trials=None,
                         return_full_step=False):
    f0, _ = evaluate(x0)
    for k in range(max_backtracks + 1 if trials is None else trials):
        x = x0 + shrink**k * s
        f, c = evaluate(x)
        bad = reject_nan and not (np.isfinite(f) and np.isfinite(c))
        if bad or f <= f0 or (check_constraint and c > max_constraint):
            continue
        return SimpleNamespace(x=x0 + s if return_full_step else x, accepted=True)
    return SimpleNamespace(x=x0, accepted=False)


def broken_search(**switches):
    return lambda *args, **kwargs: textbook_line_search(*args, **kwargs, **switches)


def line_search_run(search):
    return lambda problem: tt.check_line_search_contract(search, problem)


def fractions(problem):
    return problem.shrink ** np.arange(problem.max_backtracks + 1)


def an_improving_trial_is_infeasible_first(problem):
    """Some trial improves, is finite and breaks the constraint before the first acceptable."""
    t = fractions(problem)
    stop = problem.first_acceptable if problem.first_acceptable is not None else len(t)
    return any(t[k] < problem.improvement_limit and t[k] > problem.constraint_limit
               and k not in problem.non_finite_trials for k in range(stop))


def a_nan_trial_comes_first(problem):
    stop = problem.first_acceptable if problem.first_acceptable is not None else problem.max_backtracks + 1
    return any(k < stop for k in problem.non_finite_trials)


def all_trials_are_needed(problem):
    return problem.first_acceptable in (None, problem.max_backtracks)


def backtracked(problem):
    return problem.first_acceptable not in (None, 0)


# ------------------------------------------------------------ the gallery

LINE_SEARCH_PROBLEMS = tt.line_search_problems(st.integers(1, 4))

GALLERY = [
    # check_grad
    Entry("check_grad", "logistic loss", False, logistic_problems(),
          lambda c: tt.check_grad(logistic_f(c), logistic_grad(c), c.x)),
    Entry("check_grad", "gradient 1% too large", True, logistic_problems(),
          lambda c: tt.check_grad(logistic_f(c), logistic_grad(c, scale=1.01), c.x),
          # in float32 a 1% error of a gradient this small hides under the rounding of f / h
          lambda c: c.x.dtype == np.float64 and data_gradient_norm(c) > 1e-3),
    Entry("check_grad", "gradient without the ridge term", True, logistic_problems(),
          lambda c: tt.check_grad(logistic_f(c), logistic_grad(c, ridge=False), c.x),
          lambda c: float(np.linalg.norm(c.x)) > 1e-2),
    # check_jvp_vjp
    Entry("check_jvp_vjp", "tanh(W x)", False, tanh_maps(),
          lambda c: tt.check_jvp_vjp(tanh_f(c), tanh_jvp(c), tanh_vjp(c), c.x)),
    Entry("check_jvp_vjp", "transposed VJP", True, tanh_maps(square=True),
          lambda c: tt.check_jvp_vjp(tanh_f(c), tanh_jvp(c), tanh_vjp(c, transposed=True), c.x),
          lambda c: float(np.max(np.abs(c.W - c.W.T))) > 1e-2),
    Entry("check_jvp_vjp", "VJP without the tanh derivative", True, tanh_maps(),
          lambda c: tt.check_jvp_vjp(tanh_f(c), tanh_jvp(c), tanh_vjp(c, derivative=False), c.x),
          lambda c: float(np.max(np.abs(np.tanh(c.W @ c.x.astype(np.float64))))) > 0.05),
    Entry("check_jvp_vjp", "JVP with the wrong sign", True, tanh_maps(),
          lambda c: tt.check_jvp_vjp(tanh_f(c), tanh_jvp(c, sign=-1.0), tanh_vjp(c), c.x),
          lambda c: float(np.max(np.abs(jacobian(c)))) > 1e-2),
    # check_hvp
    Entry("check_hvp", "logistic loss", False, logistic_problems(),
          lambda c: tt.check_hvp(logistic_grad(c), logistic_hvp(c), c.x)),
    Entry("check_hvp", "asymmetric HVP", True, logistic_problems(),
          lambda c: tt.check_hvp(logistic_grad(c), logistic_hvp(c, skew=0.05), c.x),
          lambda c: c.n > 1),
    Entry("check_hvp", "HVP without the ridge term", True, logistic_problems(),
          lambda c: tt.check_hvp(logistic_grad(c), logistic_hvp(c, ridge=False), c.x)),
    # check_fvp
    Entry("check_fvp", "linear categorical policy", False, linear_policies(),
          lambda c: tt.check_fvp(policy_fvp(c), policy_kl(c), c.theta, damping=0.1)),
    Entry("check_fvp", "linear categorical policy with kl_grad", False, linear_policies(),
          lambda c: tt.check_fvp(policy_fvp(c), policy_kl(c), c.theta, kl_grad=policy_kl_grad(c))),
    Entry("check_fvp", "Fisher product with the wrong sign", True, linear_policies(),
          lambda c: tt.check_fvp(policy_fvp(c, scale=-1.0), policy_kl(c), c.theta), fisher_nonzero),
    Entry("check_fvp", "Fisher product missing the 1/2 (2 F v)", True, linear_policies(),
          lambda c: tt.check_fvp(policy_fvp(c, scale=2.0), policy_kl(c), c.theta), fisher_nonzero),
    Entry("check_fvp", "Fisher product halved (F v / 2)", True, linear_policies(),
          lambda c: tt.check_fvp(policy_fvp(c, scale=0.5), policy_kl(c), c.theta), fisher_nonzero),
    Entry("check_fvp", "Fisher product at theta = 0", True, linear_policies(),
          lambda c: tt.check_fvp(policy_fvp(c, point=np.zeros(c.d * c.k)), policy_kl(c), c.theta,
                                 kl_grad=policy_kl_grad(c)), fisher_changes),
    Entry("check_fvp", "damping added twice", True, linear_policies(),
          lambda c: tt.check_fvp(policy_fvp(c, damping_factor=2.0), policy_kl(c), c.theta, damping=0.1)),
    Entry("check_fvp", "KL off by a constant", True, linear_policies(),
          lambda c: tt.check_fvp(policy_fvp(c), policy_kl(c, offset=1e-6), c.theta)),
    # check_symmetric_operator
    Entry("check_symmetric_operator", "SPD operator claimed PSD", False, operator_cases("spd"), check_psd),
    Entry("check_symmetric_operator", "PSD operator claimed PSD", False, operator_cases("psd"), check_psd),
    Entry("check_symmetric_operator", "indefinite operator claimed symmetric", False,
          operator_cases("indefinite"), check_symmetric),
    Entry("check_symmetric_operator", "indefinite operator claimed PSD", True,
          operator_cases("indefinite"), check_psd),
    Entry("check_symmetric_operator", "nonsymmetric operator claimed symmetric", True,
          operator_cases("nonsymmetric"), check_symmetric,
          lambda c: float(np.max(np.abs(c.matrix - c.matrix.T))) > 1e-3 * float(np.max(np.abs(c.matrix)))),
    # check_kl
    Entry("check_kl", "categorical KL", False,
          tt.categorical_pairs(st.integers(1, 4), st.integers(1, 5), dtype=DTYPES),
          check_categorical_kl(categorical_kl)),
    Entry("check_kl", "categorical KL on extreme logits (no sampling)", False,
          tt.categorical_pairs(st.integers(1, 4), st.integers(1, 5), extremes=True),
          check_categorical_kl(categorical_kl, sampled=False)),
    Entry("check_kl", "Gaussian KL", False, tt.diag_gaussian_pairs(st.integers(1, 4), st.integers(1, 3)),
          check_gaussian_kl(gaussian_kl)),
    Entry("check_kl", "categorical KL off by a constant", True,
          tt.categorical_pairs(st.integers(1, 4), st.integers(1, 5)),
          check_categorical_kl(lambda p, q: categorical_kl(p, q) + 1e-6)),
    Entry("check_kl", "categorical KL with swapped arguments", True,
          tt.categorical_pairs(st.integers(1, 4), st.integers(2, 5), relation="far"),
          check_categorical_kl(lambda p, q: categorical_kl(q, p)), asymmetric),
    Entry("check_kl", "Gaussian KL with swapped arguments", True,
          tt.diag_gaussian_pairs(st.integers(1, 4), st.integers(1, 3), relation="far"),
          check_gaussian_kl(lambda p, q: gaussian_kl(q, p)), asymmetric),
    Entry("check_kl", "categorical KL without log-normalizers", True,
          tt.categorical_pairs(st.integers(1, 4), st.integers(1, 5)),
          check_categorical_kl(categorical_kl_unnormalized)),
    Entry("check_kl", "Gaussian KL with the wrong sign", True,
          tt.diag_gaussian_pairs(st.integers(1, 4), st.integers(1, 3), relation="far"),
          check_gaussian_kl(lambda p, q: -gaussian_kl(p, q))),
    Entry("check_kl", "Gaussian KL averaged over the batch", True,
          tt.diag_gaussian_pairs(st.integers(2, 4), st.integers(1, 3), relation="far"),
          check_gaussian_kl(lambda p, q: np.full(p[0].shape[0], gaussian_kl(p, q).mean())),
          rows_differ),
    # check_cg_contract
    Entry("check_cg_contract", "trustregion.cg", False, spd_systems(), cg_run(core_cg)),
    Entry("check_cg_contract", "textbook PCG", False, spd_systems(), cg_run(textbook_pcg)),
    Entry("check_cg_contract", "CG that ignores the preconditioner", True, spd_systems(),
          cg_run(lambda A, b, **kw: textbook_pcg(A, b, **kw, ignore_M=True)),
          lambda c: c.cond > 10 and one_step_does_not_solve(c)),
    Entry("check_cg_contract", "CG that claims success when it breaks down", True, spd_systems(),
          lambda c: tt.check_cg_contract(lambda A, b, **kw: textbook_pcg(A, b, **kw, always_success=True),
                                         c.A, c.b, rtol=1e-6, preconditioner=False),
          one_step_does_not_solve),
    Entry("check_cg_contract", "CG that propagates NaN", True, spd_systems(),
          lambda c: tt.check_cg_contract(nan_propagating_cg, c.A, c.b, preconditioner=False),
          one_step_does_not_solve),
    # check_steihaug_contract
    Entry("check_steihaug_contract", "trustregion.steihaug_cg", False, tr_problems(),
          steihaug_run(core_steihaug)),
    Entry("check_steihaug_contract", "Newton step ignoring the radius", True, tr_problems(),
          steihaug_run(newton_ignoring_radius), newton_leaves_region),
    Entry("check_steihaug_contract", "stops on negative curvature inside the region", True,
          tr_problems(), steihaug_run(steihaug_without_curvature_test),
          first_direction_has_negative_curvature),
    # check_line_search_contract
    Entry("check_line_search_contract", "trustregion.backtracking_line_search", False,
          LINE_SEARCH_PROBLEMS, line_search_run(core_line_search)),
    Entry("check_line_search_contract", "textbook line search", False, LINE_SEARCH_PROBLEMS,
          line_search_run(textbook_line_search)),
    Entry("check_line_search_contract", "accepts a constraint violation", True, LINE_SEARCH_PROBLEMS,
          line_search_run(broken_search(check_constraint=False)), an_improving_trial_is_infeasible_first),
    Entry("check_line_search_contract", "accepts a non-finite trial", True, LINE_SEARCH_PROBLEMS,
          line_search_run(broken_search(reject_nan=False)), a_nan_trial_comes_first),
    Entry("check_line_search_contract", "one trial short (K instead of K + 1)", True,
          LINE_SEARCH_PROBLEMS,
          lambda p: tt.check_line_search_contract(broken_search(trials=p.max_backtracks), p),
          all_trials_are_needed),
    Entry("check_line_search_contract", "returns the full step after backtracking", True,
          LINE_SEARCH_PROBLEMS, line_search_run(broken_search(return_full_step=True)), backtracked),
]


EXAMPLES = int(os.environ.get("TR_GALLERY_EXAMPLES", "12"))
TABLE: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module", autouse=True)
def _write_table():
    yield
    path = os.environ.get("TR_GALLERY_REPORT")
    if path:
        with open(path, "w") as out:
            json.dump(TABLE, out, indent=1)


def test_gallery_ids_are_unique():
    assert len({entry.id for entry in GALLERY}) == len(GALLERY)


@pytest.mark.parametrize("entry", GALLERY, ids=[entry.id for entry in GALLERY])
def test_every_check_passes_correct_code_and_fails_broken_code(entry):
    row = TABLE.setdefault(entry.id, dict(check=entry.check, implementation=entry.implementation,
                                          broken=entry.broken, examples=0, caught=0,
                                          unobservable=0, false_alarms=0))

    @settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow,
                                                            HealthCheck.filter_too_much])
    @given(case=entry.cases)
    def run(case):
        row["examples"] += 1
        if not entry.broken:
            try:
                entry.run(case)
            except AssertionError:
                row["false_alarms"] += 1
                raise
            return
        if not entry.observable(case):
            row["unobservable"] += 1
            return
        with pytest.raises(AssertionError, match=entry.check) as caught:
            entry.run(case)
        assert str(caught.value).startswith(entry.check + ":")
        row["caught"] += 1

    run()
