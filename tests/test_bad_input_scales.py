"""Issue 9, cause 1: no solver claims success with a wrong answer far from unit scale.

Every family below solves a problem and its copy scaled by factors between 1e-300 and 1e300
and checks that the copy gives the scaled answer, or a status that says why not (the answer
itself does not fit the dtype). The examples are the ones the issue reported.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import norm as safe_norm  # BLAS nrm2: scaled, never overflows
from scipy.sparse.linalg import cg as scipy_cg

import trustregion as tr
from trustregion import Status

TINY = np.finfo(np.float64).tiny
BIG = np.finfo(np.float64).max


def spd(n: int, seed: int, cond: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.logspace(0, np.log10(cond), n)) @ Q.T


# -- the reported examples ------------------------------------------------------------------


def test_cg_huge_rhs_is_solved_not_zero():
    res = tr.cg(np.eye(2), np.array([1e300, 1e300]))
    assert res.status is Status.CONVERGED
    np.testing.assert_allclose(res.x, [1e300, 1e300], rtol=1e-12)
    assert np.isclose(res.residual_norm, 0.0, atol=1e290)


def test_cg_tiny_system_is_solved_not_zero():
    A = np.array([[4.0, 1.0], [1.0, 3.0]])
    b = np.array([1.0, 2.0])
    res = tr.cg(A * 1e-300, b * 1e-300, rtol=1e-12)
    assert res.status is Status.CONVERGED
    np.testing.assert_allclose(res.x, np.linalg.solve(A, b), rtol=1e-10)


def test_steihaug_huge_gradient_steps_to_the_boundary():
    res = tr.steihaug_cg(np.eye(2).dot, np.array([1e200, 1e200]), radius=1.0)
    assert res.status is Status.BOUNDARY
    np.testing.assert_allclose(res.p, -np.ones(2) / np.sqrt(2), rtol=1e-12)


def test_cpo_huge_gradient_gives_the_trpo_step():
    H = np.diag([1.0, 4.0])
    g = np.array([1.0, 1.0])
    b = np.array([1.0, 0.0])
    ref = tr.cpo_step(g, b, -10.0, H.dot, delta=0.02)
    res = tr.cpo_step(g * 1e200, b, -10.0, H.dot, delta=0.02)
    assert ref.status is res.status is Status.INACTIVE
    np.testing.assert_allclose(res.step, ref.step, rtol=1e-12)
    assert np.isclose(res.lam, ref.lam * 1e200, rtol=1e-12)


def test_scale_step_tiny_positive_definite_h():
    H = np.diag([2.0, 8.0]) * 1e-200
    g = np.array([1.0, 1.0])
    d = np.array([0.5, 0.125])
    res = tr.scale_step(g, d, H @ d, delta=0.01)
    assert res.status is Status.BOUNDARY
    step = res.step
    assert np.isclose(0.5 * step @ (H * 1e200) @ step * 1e-200, 0.01, rtol=1e-12)


def test_cg_solution_that_overflows_is_reported():
    res = tr.cg(np.eye(2) * 1e-300, np.array([1e300, 1.0]))
    assert res.status is Status.OUT_OF_RANGE and not res.success
    assert np.all(np.isfinite(res.x))
    assert "overflows float64" in res.message


def test_ordinary_scale_is_bitwise_scipy():
    """Rescaling is decided once, outside the loop: ordinary problems run scipy's arithmetic."""
    A = spd(40, 3, cond=1e3)
    b = np.random.default_rng(3).standard_normal(40)
    ours: list[np.ndarray] = []
    theirs: list[np.ndarray] = []
    tr.cg(A, b, rtol=1e-10, maxiter=25, callback=lambda x: ours.append(x.copy()))
    scipy_cg(A, b, rtol=1e-10, maxiter=25, callback=lambda x: theirs.append(x.copy()))
    assert len(ours) == len(theirs) == 25
    for x_ours, x_theirs in zip(ours, theirs, strict=True):
        assert np.array_equal(x_ours, x_theirs)


# -- families over scales -----------------------------------------------------------------

exponents = st.integers(-300, 300)


@settings(max_examples=60, deadline=None)
@given(e_A=exponents, e_b=exponents, seed=st.integers(0, 2**16), n=st.integers(1, 12))
def test_cg_scaled_copy_gives_scaled_answer_or_says_why(e_A, e_b, seed, n):
    A = spd(n, seed)
    b = np.random.default_rng(seed + 1).standard_normal(n)
    x_ref = np.linalg.solve(A, b)
    s_A, s_b = 10.0**e_A, 10.0**e_b
    res = tr.cg(A * s_A, b * s_b, rtol=1e-10, maxiter=50 * n)
    assert np.all(np.isfinite(res.x))
    log_magnitude = np.log10(np.max(np.abs(x_ref))) + e_b - e_A
    if log_magnitude > np.log10(BIG):
        assert res.status is Status.OUT_OF_RANGE, res.message
    elif log_magnitude > np.log10(BIG) - 2:  # near the edge: either, never a wrong success
        assert res.status in (Status.OUT_OF_RANGE, Status.CONVERGED), res.message
    else:
        assert res.status is Status.CONVERGED, res.message
        # the answer is x_ref scaled, to the accuracy of the unscaled solve
        if log_magnitude > -280:
            np.testing.assert_allclose(
                res.x / s_b * s_A, x_ref, rtol=1e-6, atol=1e-8 * np.abs(x_ref).max()
            )
        assert res.residual_norm <= 1e-10 * safe_norm(b * s_b) * 1.0001


@settings(max_examples=30, deadline=None)
@given(e_A=st.integers(-30, 30), e_b=st.integers(-30, 30), seed=st.integers(0, 2**16))
def test_cg_float32_scaled_copy(e_A, e_b, seed):
    A = spd(6, seed, cond=10.0)
    b = np.random.default_rng(seed + 1).standard_normal(6)
    x_ref = np.linalg.solve(A, b)
    res = tr.cg((A * 10.0**e_A).astype(np.float32), (b * 10.0**e_b).astype(np.float32), rtol=1e-5)
    assert res.x.dtype == np.float32 and np.all(np.isfinite(res.x))
    magnitude = np.abs(x_ref).max() * 10.0 ** (e_b - e_A)  # |e| <= 60: no overflow
    if magnitude > 3.4e38:
        assert res.status is Status.OUT_OF_RANGE, res.message
    elif magnitude > 1e36:
        assert res.status in (Status.OUT_OF_RANGE, Status.CONVERGED), res.message
    elif magnitude > 1e-30:
        assert res.status is Status.CONVERGED, res.message
        np.testing.assert_allclose(
            res.x / 10.0 ** (e_b - e_A), x_ref, rtol=1e-3, atol=1e-3 * np.abs(x_ref).max()
        )


@settings(max_examples=50, deadline=None)
@given(e_g=exponents, e_H=exponents, seed=st.integers(0, 2**16), radius=st.floats(0.05, 20.0))
def test_steihaug_scaled_copy(e_g, e_H, seed, radius):
    """p(c_g g, c_H H, radius c_g / c_H) = p(g, H, radius) c_g / c_H."""
    H = spd(5, seed, cond=50.0)
    g = np.random.default_rng(seed + 2).standard_normal(5)
    c_g, c_H = 10.0**e_g, 10.0**e_H
    scaled_radius = radius * c_g / c_H
    if not TINY * 1e10 < scaled_radius < BIG / 1e10:
        return  # the radius itself would not be representable
    ref = tr.steihaug_cg(H.dot, g, radius, rtol=1e-10)
    res = tr.steihaug_cg((H * c_H).dot, g * c_g, scaled_radius, rtol=1e-10)
    assert res.status is ref.status, res.message
    np.testing.assert_allclose(res.p * (c_H / c_g), ref.p, rtol=1e-8, atol=1e-12 * radius)


@settings(max_examples=50, deadline=None)
@given(e_g=exponents, e_d=exponents, e_H=exponents, seed=st.integers(0, 2**16))
def test_scale_step_scaled_copy(e_g, e_d, e_H, seed):
    """The step does not depend on the scale of g or d, and scales as c_H^(-1/2) with H."""
    H = spd(4, seed, cond=20.0)
    g = np.random.default_rng(seed + 3).standard_normal(4)
    d = np.linalg.solve(H, g)
    if not -290 < e_d + e_H < 290:
        return  # H d itself would not be representable
    ref = tr.scale_step(g, d, H @ d, delta=0.01)
    c_d, c_H = 10.0**e_d, 10.0**e_H
    res = tr.scale_step(g * 10.0**e_g, d * c_d, (H * c_H) @ d * c_d, delta=0.01)
    assert res.status is Status.BOUNDARY, res.message
    np.testing.assert_allclose(res.step * np.sqrt(c_H), ref.step, rtol=1e-10)


@settings(max_examples=40, deadline=None)
@given(e_g=exponents, e_b=exponents, c=st.floats(-0.3, 0.3), seed=st.integers(0, 2**16))
def test_cpo_scaled_copy(e_g, e_b, c, seed):
    """The CPO step is invariant under g -> c_g g and (b, c) -> c_b (b, c)."""
    H = spd(4, seed, cond=20.0)
    rng = np.random.default_rng(seed + 4)
    g, b = rng.standard_normal(4), rng.standard_normal(4)
    ref = tr.cpo_step(g, b, c, H.dot, delta=0.02)
    c_b = 10.0**e_b
    res = tr.cpo_step(g * 10.0**e_g, b * c_b, c * c_b, H.dot, delta=0.02)
    assert res.status is ref.status, res.message
    np.testing.assert_allclose(res.step, ref.step, rtol=1e-7, atol=1e-9 * np.abs(ref.step).max())


@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e150, 1e300])
def test_natural_gradient_step_scaled_gradient(scale):
    """The TRPO step does not depend on the scale of g."""
    H = spd(6, 1, cond=30.0)
    g = np.random.default_rng(1).standard_normal(6)
    ref = tr.natural_gradient_step(g, H.dot, delta=0.01)
    res = tr.natural_gradient_step(g * scale, H.dot, delta=0.01)
    assert res.status is ref.status is Status.BOUNDARY, res.message
    np.testing.assert_allclose(res.step, ref.step, rtol=1e-9)
