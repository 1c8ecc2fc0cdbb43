"""The derivative checks at tiny and huge |x|: steps that follow the scale of x.

The default step ``~ eps^(1/3) max(1, |x|_inf)`` assumes a function varies on the scale 1
near a tiny ``x``. One that varies on the scale of ``x`` itself (``f(x) = phi(x / S)`` at
``x ~ S = 1e-8``) was sampled hundreds of its own lengths apart: a correct gradient failed
(``sin``: a spurious "error found", a float32 quadratic: "cannot resolve"), and at a huge
``x`` a function of the scale 1 fared the same. Far from unit scale the checks now also
start at the step for ``min(1, |x|_inf)`` and keep the estimate that can be trusted, and
``x_scale=`` names the scale where neither is right (``x = 0``).

Each family below is ``phi(x / S)`` at ``x = z S`` with ``z`` of order 1 and ``S = 10^k``
for ``k`` in -12..12, in float64 and float32: a correct derivative passes, and doubled,
halved, negated or one-coordinate-wrong ones fail, wherever the oracle says the derivative
stands out of f's rounding (not a near-stationary point, see ``resolvable``) and the bug
shows along the check's directions (``visible``), as the gallery decides observability.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax, softmax

from trustregion import testing as tt
from trustregion.testing import _differences as fd

DTYPES = st.sampled_from([np.float64, np.float32])
EXPONENTS = st.integers(-12, 12)
# the profile decides the number of examples; a check far from unit scale takes twice the calls
SLOW_OK = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


# ------------------------------------------------------------ functions of x / S


def _layer(n):
    """A fixed small MLP layer for n inputs (W: 5 x n, b: 5, output weights c > 0)."""
    rng = np.random.default_rng(100 + n)
    return rng.standard_normal((5, n)), 0.5 * rng.standard_normal(5), rng.uniform(0.5, 1.5, 5)


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


class Family:
    """``f(x) = phi(x / S)`` with its gradient and Hessian-vector product, in x's dtype.

    Every ``phi`` is a sum of positive terms at the points drawn (z > 0): a value that
    cancels to far below its terms (sin(-1) + sin(1)) breaks the checks' assumption that f
    is accurate to 64 eps of its own magnitude, at any scale, and is not what this tests.
    The checks' first steps overshoot a tiny S, where exp overflows (to inf, which the
    checks handle): no warning worth printing.
    """

    def __init__(self, name, S):
        self.name, self.S = name, S

    def z(self, x):
        return x / x.dtype.type(self.S)

    def f(self, x):
        z = self.z(x)
        if self.name == "quadratic":
            a = np.arange(1, z.size + 1, dtype=z.dtype)
            return float(0.5 * np.sum(a * z * z))
        if self.name == "sum of sin":
            return float(np.sum(np.sin(z)))
        if self.name == "exp":
            with np.errstate(over="ignore"):
                return float(np.sum(np.exp(z)))
        W, b, c = (a.astype(x.dtype) for a in _layer(z.size))  # "mlp": softplus layer
        with np.errstate(over="ignore"):
            return float(c @ np.logaddexp(0, W @ z + b))

    def grad(self, x):
        z, S = self.z(x), x.dtype.type(self.S)
        if self.name == "quadratic":
            return np.arange(1, z.size + 1, dtype=z.dtype) * z / S
        if self.name == "sum of sin":
            return np.cos(z) / S
        if self.name == "exp":
            with np.errstate(over="ignore"):
                return np.exp(z) / S
        W, b, c = (a.astype(x.dtype) for a in _layer(z.size))
        with np.errstate(over="ignore"):
            return W.T @ (c * _sigmoid(W @ z + b)) / S

    def hvp(self, x, v):
        z, S = self.z(x), x.dtype.type(self.S)
        if self.name == "quadratic":
            return np.arange(1, z.size + 1, dtype=z.dtype) * v / S / S
        if self.name == "sum of sin":
            return -np.sin(z) * v / S / S
        if self.name == "exp":
            with np.errstate(over="ignore"):
                return np.exp(z) * v / S / S
        W, b, c = (a.astype(x.dtype) for a in _layer(z.size))
        with np.errstate(over="ignore"):
            s = _sigmoid(W @ z + b)
        return W.T @ (c * s * (1 - s) * (W @ v)) / S / S


FAMILIES = st.sampled_from(["quadratic", "sum of sin", "exp", "mlp"])
BUGS = st.sampled_from(["doubled", "halved", "negated", "one coordinate"])
SIZES = st.integers(1, 6)


@st.composite
def points(draw):
    """z of order 1 (entries in [0.2, 1.4]), the exponent k, the dtype."""
    z = np.array([draw(st.floats(0.2, 1.4)) for _ in range(draw(SIZES))])
    return z, draw(EXPONENTS), draw(DTYPES)


def at_scale(z, k, dtype):
    S = 10.0**k
    return (z * S).astype(dtype), S


def broken(grad, bug, j):
    def wrong(x):
        g = np.array(grad(x), dtype=np.float64)
        if bug == "doubled":
            return 2 * g
        if bug == "halved":
            return g / 2
        if bug == "negated":
            return -g
        g[j % g.size] += np.max(np.abs(g))  # one entry off by the gradient's largest
        return g
    return wrong


def resolvable(size, value, S):
    """A derivative of ``size`` stands out of the rounding of ``value`` at a step of order
    eps^(1/3) S: ``size S >= |value| / 20``, so the checks' rounding bound 64 eps |value| / h
    is below 3% of it in float32 (near-stationary points pass unresolved, by design)."""
    return size * S >= 0.05 * abs(value)


def visible(defect, good, dtype, n_directions=3, seed=0):
    """The defect shows along one of the check's directions above 1e-1 (float32) or 1e-6
    (float64) of |good| |v|: the oracle's call, not the check's."""
    rng = np.random.default_rng(seed)
    floor = 1e-1 if dtype == np.float32 else 1e-6
    for _ in range(n_directions):
        v = fd.direction(rng, defect.shape, dtype).astype(np.float64)
        if abs(defect.ravel() @ v.ravel()) > floor * np.linalg.norm(good) * np.linalg.norm(v):
            return True
    return False


# ------------------------------------------------------------ the case that failed


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_correct_gradient_at_x_of_order_1e_8_passes(dtype):
    # failed before with a spurious "error found 7.580e+07 > tolerance 3.618e+04" (float64:
    # sin sampled 380 of its periods apart, h = 2^-18) or "7.575e+07 > 3.007e+03" (float32);
    # the float32 quadratic failed with "cannot resolve"
    family = Family("sum of sin", 1e-8)
    x = (np.array([0.3, -1.2, 0.7, 0.5, -0.9, 1.1]) * 1e-8).astype(dtype)
    report = tt.check_grad(family.f, family.grad, x)
    assert report.worst_ratio < 1
    family = Family("quadratic", 1e-8)
    tt.check_grad(family.f, family.grad, x)


@pytest.mark.parametrize("bug", ["doubled", "halved", "negated", "one coordinate"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_wrong_gradient_at_x_of_order_1e_8_still_fails(dtype, bug):
    family = Family("sum of sin", 1e-8)
    x = (np.array([0.3, -1.2, 0.7, 0.5, -0.9, 1.1]) * 1e-8).astype(dtype)
    with pytest.raises(AssertionError, match="check_grad"):
        tt.check_grad(family.f, broken(family.grad, bug, 2), x)


# ------------------------------------------------------------ every scale, drawn


@SLOW_OK
@given(case=points(), name=FAMILIES)
def test_a_correct_gradient_passes_at_every_scale(case, name):
    x, S = at_scale(*case)
    family = Family(name, S)
    # near-stationary points (|grad| S << |f|) are resolved by neither scale's step: far
    # from unit scale the check says "cannot resolve" there, as it must
    assume(resolvable(np.linalg.norm(family.grad(x).astype(np.float64)), family.f(x), S))
    tt.check_grad(family.f, family.grad, x)


@SLOW_OK
@given(case=points(), name=FAMILIES, bug=BUGS, j=st.integers(0, 5))
def test_a_wrong_gradient_fails_at_every_scale(case, name, bug, j):
    x, S = at_scale(*case)
    family = Family(name, S)
    wrong = broken(family.grad, bug, j)
    good = np.asarray(family.grad(x), dtype=np.float64)
    assume(resolvable(np.linalg.norm(good), family.f(x), S))
    assume(visible(wrong(x) - good, good, x.dtype))
    with pytest.raises(AssertionError, match="check_grad"):
        tt.check_grad(family.f, wrong, x)


@SLOW_OK
@given(case=points(), name=FAMILIES)
def test_a_correct_hvp_passes_at_every_scale(case, name):
    x, S = at_scale(*case)
    family = Family(name, S)
    hv = np.asarray(family.hvp(x, np.ones_like(x)), dtype=np.float64)
    grad = np.asarray(family.grad(x), dtype=np.float64)
    assume(resolvable(np.linalg.norm(hv) / np.sqrt(x.size), np.linalg.norm(grad), S))
    tt.check_hvp(family.grad, family.hvp, x)


@SLOW_OK
@given(case=points(), name=FAMILIES, factor=st.sampled_from([2.0, 0.5, -1.0]))
def test_a_scaled_hvp_fails_at_every_scale(case, name, factor):
    x, S = at_scale(*case)
    family = Family(name, S)
    # |Hv| well above the rounding of the gradient's differences (not a near-zero Hessian)
    v = np.ones_like(x)
    hv = np.asarray(family.hvp(x, v), dtype=np.float64)
    grad = np.asarray(family.grad(x), dtype=np.float64)
    assume(resolvable(np.linalg.norm(hv) / np.sqrt(x.size), np.linalg.norm(grad), S))
    with pytest.raises(AssertionError, match="check_hvp"):
        tt.check_hvp(family.grad, lambda x, v: factor * family.hvp(x, v), x)


@SLOW_OK
@given(case=points(), factor=st.sampled_from([1.0, 2.0, 0.5, -1.0]))
def test_jvp_vjp_at_every_scale(case, factor):
    # J scaled in both products: the dot test passes, the differences of f must catch it
    x, S = at_scale(*case)
    W = np.random.default_rng(200 + x.size).standard_normal((4, x.size)).astype(x.dtype)
    s = x.dtype.type(S)

    def f(x):
        return np.tanh(W @ (x / s))

    def jac(x):
        return (1 - np.tanh(W @ (x / s)) ** 2)[:, None] * W / s

    def jvp(x, t):
        return factor * jac(x) @ t

    def vjp(x, c):
        return factor * jac(x).T @ c

    # not a saturated tanh, whose Jacobian vanishes below the rounding of f (|f| <= 1)
    assume(resolvable(np.max(np.abs(jac(x).astype(np.float64))), 1.0, S))
    if factor == 1.0:
        tt.check_jvp_vjp(f, jvp, vjp, x)
    else:
        with pytest.raises(AssertionError, match="check_jvp_vjp"):
            tt.check_jvp_vjp(f, jvp, vjp, x)


# ------------------------------------------------------------ functions of the scale 1


@SLOW_OK
@given(case=points(), bug=st.sampled_from([None, "doubled", "halved", "negated"]))
def test_a_function_of_the_scale_1_at_a_tiny_point(case, bug):
    # sin(x) + x/2 near 1e-12..1: the default step (scale 1) is the right one
    z, k, dtype = case
    x = (z * 10.0 ** min(k, 0)).astype(dtype)

    def f(x):
        return float(np.sum(np.sin(x) + x / 2))

    def grad(x):
        return np.cos(x) + dtype(0.5)

    if bug is None:
        tt.check_grad(f, grad, x)
    else:
        with pytest.raises(AssertionError, match="check_grad"):
            tt.check_grad(f, broken(grad, bug, 0), x)


@pytest.mark.parametrize("k", [4, 6, 8])
def test_sin_of_a_huge_float64_x_passes_and_catches_a_wrong_sign(k):
    x = np.array([0.3, -1.2, 0.7, 0.5, -0.9, 1.1]) * 10.0**k

    def f(x):
        return float(np.sum(np.sin(x)))

    tt.check_grad(f, np.cos, x)
    with pytest.raises(AssertionError, match="check_grad"):
        tt.check_grad(f, lambda x: -np.cos(x), x)


@pytest.mark.parametrize(("k", "dtype"), [(12, np.float64), (4, np.float32)])
def test_sin_where_x_spacing_is_near_its_period_cannot_be_resolved(k, dtype):
    # at 1e12 (float64) or 1e4 (float32) the smallest step that perturbs x exactly is about
    # 1 or 8: no difference resolves sin there, and saying so beats a spurious "error found"
    x = (np.array([0.3, -1.2, 0.7, 0.5, -0.9, 1.1]) * 10.0**k).astype(dtype)
    with pytest.raises(AssertionError, match="cannot resolve"):
        tt.check_grad(lambda x: float(np.sum(np.sin(x))), np.cos, x)


def test_a_function_of_a_far_smaller_scale_at_a_huge_point_passes():
    # sin(x / 100) at x ~ 1e6: x / 100 rounds by eps 1e4, which the scale-1 step divides by
    # a small h; the tolerance allows x's own rounding there
    x = np.array([0.3, -1.2, 0.7, 0.5, -0.9, 1.1]) * 1e6
    report = tt.check_grad(lambda x: float(np.sum(np.sin(x / 100))),
                           lambda x: np.cos(x / 100) / 100, x)
    assert "x's own rounding" in report.comparisons[0].source
    with pytest.raises(AssertionError, match="check_grad"):
        tt.check_grad(lambda x: float(np.sum(np.sin(x / 100))),
                      lambda x: np.cos(x / 100) / 50, x)


# ------------------------------------------------------------ x_scale


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_x_scale_checks_a_function_of_a_tiny_scale_at_x_0(dtype):
    # at x = 0 nothing tells the scale: sin(x / 1e-8) needs x_scale
    family = Family("sum of sin", 1e-8)
    x = np.zeros(4, dtype)
    report = tt.check_grad(family.f, family.grad, x, x_scale=1e-8)
    assert report.calls == {"f": 12, "grad": 1}
    for bug in ("doubled", "halved", "negated", "one coordinate"):
        with pytest.raises(AssertionError, match="check_grad"):
            tt.check_grad(family.f, broken(family.grad, bug, 1), x, x_scale=1e-8)


def test_x_scale_of_the_default_length_changes_nothing():
    f = lambda x: float(np.sum(np.sin(x)))  # noqa: E731
    x = np.array([0.1, 2.0, -3.0])
    default = tt.check_grad(f, np.cos, x)
    given_scale = tt.check_grad(f, np.cos, x, x_scale=3.0)
    assert default.comparisons == given_scale.comparisons
    assert default.calls == given_scale.calls == {"f": 12, "grad": 1}


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0.0, ValueError, "x_scale must be finite and > 0, got 0.0"),
        (-1.0, ValueError, "x_scale must be finite and > 0, got -1.0"),
        (math.nan, ValueError, "x_scale must be finite and > 0"),
        (math.inf, ValueError, "x_scale must be finite and > 0"),
        ("1e-8", TypeError, "x_scale must be a real number, got str"),
        (True, TypeError, "x_scale must be a real number, got bool"),
    ],
)
@pytest.mark.parametrize("check", ["check_grad", "check_jvp_vjp", "check_hvp", "check_fvp"])
def test_x_scale_is_validated_by_name(check, value, error, match):
    x = np.ones(2)
    calls = {
        "check_grad": lambda: tt.check_grad(len, len, x, x_scale=value),
        "check_jvp_vjp": lambda: tt.check_jvp_vjp(len, len, len, x, x_scale=value),
        "check_hvp": lambda: tt.check_hvp(len, len, x, x_scale=value),
        "check_fvp": lambda: tt.check_fvp(len, len, x, x_scale=value),
    }
    with pytest.raises(error, match=match):
        calls[check]()


# ------------------------------------------------------------ costs and messages


def test_ordinary_scales_cost_what_they_did_and_far_ones_more():
    x = np.array([0.3, -1.2, 0.7, 0.5, -0.9, 1.1])
    family = Family("sum of sin", 1.0)
    assert tt.check_grad(family.f, family.grad, x).calls == {"f": 12, "grad": 1}
    # far from unit scale: a Richardson estimate at each of two steps, 8 calls a direction
    # at least (the first may shrink twice, and the second as the function needs)
    family = Family("quadratic", 1e-8)
    assert tt.check_grad(family.f, family.grad, x * 1e-8).calls == {"f": 24, "grad": 1}
    family = Family("sum of sin", 1e8)
    assert tt.check_grad(family.f, family.grad, x * 1e8).calls == {"f": 24, "grad": 1}
    family = Family("sum of sin", 1e-8)
    assert 24 <= tt.check_grad(family.f, family.grad, x * 1e-8).calls["f"] <= 3 * 8 * 4


def test_the_message_says_which_step_was_kept_and_why():
    family = Family("sum of sin", 1e-8)
    x = (np.array([0.3, -1.2, 0.7]) * 1e-8).astype(np.float32)
    report = tt.check_grad(family.f, family.grad, x)
    source = report.comparisons[0].source
    assert "differs from this one" in source and "min(1, |x|_inf) = 1.2e-08" in source
    with pytest.raises(AssertionError, match=r"(?s)error found.*smaller step's estimate"):
        tt.check_grad(family.f, broken(family.grad, "doubled", 0), x)


def _offset_sin(offset):
    """float32 offset + sum sin(x / 1e-8): the offset's rounding swamps what a step of the
    scale 1e-8 changes once it is large enough."""
    S = np.float32(1e-8)
    return (lambda x: float(np.float32(offset) + np.sum(np.sin(x / S))),
            lambda x: np.cos(x / S) / S)


@pytest.mark.parametrize("offset", [1e3, 1e4])
def test_cannot_resolve_names_the_remedies(offset):
    f, grad = _offset_sin(offset)
    x = (np.array([0.3, -1.2, 0.7]) * 1e-8).astype(np.float32)
    for wrong in (grad, broken(grad, "doubled", 0)):
        with pytest.raises(AssertionError, match=r"(?s)cannot resolve.*accuracy=.*x_scale="):
            tt.check_grad(f, wrong, x)
    f, grad = _offset_sin(100.0)  # resolved, barely, at the step of the scale 1e-8
    tt.check_grad(f, grad, x)


def test_x_scale_does_not_waive_resolution_at_a_tiny_point():
    # the point's regime decides: given the scale, an unresolvable doubled gradient at
    # x ~ 1e-8 still fails rather than passing under a tolerance that allows anything
    f, grad = _offset_sin(1e4)
    x = (np.array([0.3, -1.2, 0.7]) * 1e-8).astype(np.float32)
    with pytest.raises(AssertionError, match="cannot resolve"):
        tt.check_grad(f, broken(grad, "doubled", 0), x, x_scale=1e-8)


def _exp_sum(x):
    with np.errstate(over="ignore"):
        return float(np.sum(np.exp(x)))


@pytest.mark.parametrize("factor", [1.0, 2.0, -1.0])
def test_values_beyond_1e154_are_compared_not_passed(factor):
    # |D|^2 overflowed in the norms: an infinite tolerance passed any gradient
    def grad(x):
        return factor * 2e200 * x

    x = np.array([0.3, -1.2, 0.7])
    if factor == 1.0:
        tt.check_grad(lambda x: float(1e200 * (x @ x)), grad, x)
    else:
        with pytest.raises(AssertionError, match="error found"):
            tt.check_grad(lambda x: float(1e200 * (x @ x)), grad, x)


def test_values_that_overflow_at_the_first_step_are_retaken_at_smaller_ones():
    # exp(709.78 + 2^-8) overflows; exp(709.78 + 2^-12) does not
    x = np.array([709.78, 1.0])
    tt.check_grad(_exp_sum, np.exp, x)
    with pytest.raises(AssertionError, match="error found"):
        tt.check_grad(_exp_sum, lambda x: np.exp(x) / 2, x)


def test_values_that_overflow_at_every_step_cannot_resolve():
    # exp overflows just above 709.782712893: the estimate was inf, and passed everything
    x = np.array([709.78271, -1.0, 0.5])
    for grad in (np.exp, lambda x: np.exp(x) / 2):
        with pytest.raises(AssertionError, match=r"(?s)cannot resolve.*the tolerance inf"):
            tt.check_grad(_exp_sum, grad, x)


# ------------------------------------------------------------ check_fvp


def _policy(feature_scale, theta_scale, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((8, 3)) * feature_scale
    d, k = 3, 4

    def kl(theta_old, theta):
        lo = log_softmax(X @ theta_old.reshape(d, k), axis=1)
        ln = log_softmax(X @ theta.reshape(d, k), axis=1)
        return float(np.mean(np.sum(np.exp(lo) * (lo - ln), axis=1)))

    def fvp(theta, v):
        p = softmax(X @ theta.reshape(d, k), axis=1)
        dz = X @ v.reshape(d, k)
        return (X.T @ (p * dz - p * np.sum(p * dz, axis=1, keepdims=True))).ravel() / len(X)

    return fvp, kl, rng.standard_normal(d * k) * theta_scale


@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_x_scale_resolves_a_small_fisher(factor):
    # features of order 1e-4 give |F| ~ 1e-8: the default steps pass 2F (docs/testing.md's
    # known limit); the KL varies on the scale 1e4 in theta, and x_scale=1e4 says so
    fvp, kl, theta = _policy(1e-4, 1.0)
    tt.check_fvp(fvp, kl, theta, x_scale=1e4)
    with pytest.raises(AssertionError, match="check_fvp"):
        tt.check_fvp(lambda t, v: factor * fvp(t, v), kl, theta, x_scale=1e4)


@pytest.mark.parametrize("factor", [1.0, 2.0, 0.5, -1.0])
def test_check_fvp_at_a_tiny_theta_on_its_own_scale(factor):
    # features of order 1e4 at theta ~ 1e-8: the KL varies on the scale of theta
    fvp, kl, theta = _policy(1e4, 1e-8)
    if factor == 1.0:
        tt.check_fvp(fvp, kl, theta)
    else:
        with pytest.raises(AssertionError, match="check_fvp"):
            tt.check_fvp(lambda t, v: factor * fvp(t, v), kl, theta)
