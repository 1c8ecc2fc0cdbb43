"""Trust-region step scaling and the composed natural-gradient step."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trustregion as tr
from trustregion import Status


def spd(n, rng, cond=100.0):
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.logspace(0, np.log10(cond), n)) @ Q.T


@given(
    n=st.integers(1, 50),
    seed=st.integers(0, 2**32 - 1),
    log_delta=st.floats(-6, 1),
    log_cond=st.floats(0, 4),
)
def test_scaled_step_lies_on_the_constraint(n, seed, log_delta, log_cond):
    rng = np.random.default_rng(seed)
    H = spd(n, rng, 10.0**log_cond)
    g = rng.standard_normal(n)
    d = np.linalg.solve(H, g) + 1e-3 * rng.standard_normal(n)  # an inexact direction
    if g @ d <= 0:
        return
    delta = 10.0**log_delta
    s = tr.scale_step(g, d, H @ d, delta)
    assert s.status is Status.BOUNDARY
    assert 0.5 * s.step @ H @ s.step == pytest.approx(delta, rel=1e-12)
    assert s.predicted_constraint == pytest.approx(delta, rel=1e-14)
    assert s.expected_improvement == pytest.approx(g @ s.step, rel=1e-12)


@given(n=st.integers(1, 30), seed=st.integers(0, 2**32 - 1), log_delta=st.floats(-5, 0))
def test_natural_step_matches_closed_form(n, seed, log_delta):
    """max g^T x s.t. 1/2 x^T H x <= delta  =>  x* = sqrt(2 delta / g^T H^-1 g) H^-1 g."""
    rng = np.random.default_rng(seed)
    H = spd(n, rng, 50.0)
    g = rng.standard_normal(n)
    delta = 10.0**log_delta
    Hinv_g = np.linalg.solve(H, g)
    exact = np.sqrt(2 * delta / (g @ Hinv_g)) * Hinv_g
    res = tr.natural_gradient_step(g, H.dot, delta, cg_iters=4 * n + 10, cg_rtol=1e-13)
    assert res.status is Status.BOUNDARY, res.message
    assert np.allclose(res.step, exact, rtol=1e-8, atol=1e-12 * np.linalg.norm(exact))
    assert res.expected_improvement == pytest.approx(np.sqrt(2 * delta * (g @ Hinv_g)), rel=1e-8)
    # the optimum of a linear objective over an ellipsoid beats any other boundary point
    other = rng.standard_normal(n)
    other *= np.sqrt(2 * delta / (other @ H @ other))
    assert g @ res.step >= g @ other - 1e-12


def test_natural_step_with_damping_scales_with_the_damped_matrix():
    rng = np.random.default_rng(0)
    H = spd(8, rng)
    g = rng.standard_normal(8)
    lam = 0.3
    res = tr.natural_gradient_step(g, H.dot, 0.01, cg_iters=50, damping=lam)
    Hd = H + lam * np.eye(8)
    assert np.allclose(res.direction, np.linalg.solve(Hd, g), rtol=1e-8)
    assert 0.5 * res.step @ Hd @ res.step == pytest.approx(0.01, rel=1e-12)


def test_natural_step_calls_hvp_at_most_cg_iters_plus_one():
    rng = np.random.default_rng(1)
    H = spd(40, rng, 1e4)
    calls = []

    def hvp(v):
        calls.append(1)
        return H @ v

    res = tr.natural_gradient_step(rng.standard_normal(40), hvp, 0.01, cg_iters=10)
    assert len(calls) == 11
    assert res.cg.status is Status.MAX_ITER and res.status is Status.BOUNDARY


def test_negative_curvature_after_progress_still_gives_an_ascent_step():
    H = np.diag([1.0, 2.0, -5.0])
    g = np.array([1.0, 1.0, 0.2])
    res = tr.natural_gradient_step(g, H.dot, 0.1, cg_iters=10)
    assert res.cg.status is Status.NEGATIVE_CURVATURE
    if res.status is Status.BOUNDARY:
        assert g @ res.step > 0
        assert 0.5 * res.step @ H @ res.step == pytest.approx(0.1, rel=1e-12)
    else:
        assert not np.any(res.step)


def test_negative_curvature_at_once_gives_zero_step_with_status():
    res = tr.natural_gradient_step(np.ones(2), lambda v: -v, 0.1)
    assert res.status is Status.NEGATIVE_CURVATURE
    assert np.array_equal(res.step, np.zeros(2))
    assert "not positive definite" in res.message


def test_zero_gradient_gives_zero_direction_status():
    res = tr.natural_gradient_step(np.zeros(3), np.eye(3).dot, 0.1)
    assert res.status is Status.ZERO_DIRECTION
    assert np.array_equal(res.step, np.zeros(3))


def test_non_finite_hvp_gives_status_not_nan():
    res = tr.natural_gradient_step(np.ones(3), lambda v: np.full(3, np.inf), 0.1)
    assert res.status is Status.NON_FINITE
    assert np.all(np.isfinite(res.step)) and not np.any(res.step)


@pytest.mark.parametrize(
    ("d", "Hd", "status"),
    [
        (np.array([1.0, 0.0]), np.array([-1.0, 0.0]), Status.NEGATIVE_CURVATURE),
        (np.array([1.0, 0.0]), np.array([0.0, 0.0]), Status.NEGATIVE_CURVATURE),
        (np.array([np.nan, 0.0]), np.array([1.0, 0.0]), Status.NON_FINITE),
        (np.array([1.0, 0.0]), np.array([np.inf, 0.0]), Status.NON_FINITE),
        (np.zeros(2), np.zeros(2), Status.ZERO_DIRECTION),
        (np.array([-1.0, 0.0]), np.array([-1.0, 0.0]), Status.NOT_ASCENT),
    ],
)
def test_scale_step_statuses_never_nan(d, Hd, status):
    s = tr.scale_step(np.array([1.0, 1.0]), d, Hd, 0.01)
    assert s.status is status
    assert np.array_equal(s.step, np.zeros(2))
    assert s.beta == 0.0 and s.expected_improvement == 0.0


def test_float32_kept():
    H = np.diag([2.0, 3.0]).astype(np.float32)
    res = tr.natural_gradient_step(np.ones(2, dtype=np.float32), H.dot, 0.01)
    assert res.step.dtype == np.float32 and res.direction.dtype == np.float32


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: tr.scale_step(np.ones(2), np.ones(2), np.ones(2), 0.0), ValueError, "delta must be > 0"),
        (lambda: tr.scale_step(np.ones(2), np.ones(2), np.ones(2), -1), ValueError, "delta"),
        (lambda: tr.scale_step(np.ones(2), np.ones(3), np.ones(2), 1.0), ValueError, "same shape"),
        (lambda: tr.scale_step([np.nan, 1.0], np.ones(2), np.ones(2), 1.0), ValueError, "g must be finite"),
        (lambda: tr.natural_gradient_step(np.ones(2), np.eye(2).dot, np.nan), ValueError, "delta"),
        (lambda: tr.natural_gradient_step(np.ones(2), np.eye(2).dot, 0.1, cg_iters=0), ValueError, "cg_iters"),
        (lambda: tr.natural_gradient_step(np.ones(2), np.eye(2).dot, 0.1, damping=-1), ValueError, "damping"),
        (lambda: tr.natural_gradient_step(np.ones(2), "hvp", 0.1), TypeError, "hvp must be callable"),
        (lambda: tr.natural_gradient_step([1.0, np.inf], np.eye(2).dot, 0.1), ValueError, "g must be finite"),
    ],
)
def test_bad_input_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -- extreme scales: a finite step equal to the rescaled problem's, or OUT_OF_RANGE ------------

H0 = np.diag([2.0, 8.0])
G0 = np.array([1.0, 1.0])
D0 = np.array([0.5, 0.125])  # H0^-1 g0, exactly
HD0 = H0 @ D0  # [1, 1]


def test_scale_step_huge_delta_over_small_curvature_is_finite():
    """2 delta / d^T H d overflowed: BOUNDARY with step = [inf, inf] and beta = inf."""
    ref = tr.scale_step(G0, D0, HD0, delta=1.0)
    res = tr.scale_step(G0, D0, HD0 * 1e-100, delta=1e300)  # step = ref.step * 1e200
    assert res.status is Status.BOUNDARY and res.success, res.message
    np.testing.assert_allclose(res.step, ref.step * 1e200, rtol=1e-14)
    assert res.beta == pytest.approx(ref.beta * 1e200, rel=1e-14)
    # with powers of two the rescaling is exact: delta 2^996, H 2^-332 -> step 2^664 ref
    res = tr.scale_step(G0, D0, np.ldexp(HD0, -332), delta=2.0**996)
    assert res.status is Status.BOUNDARY
    np.testing.assert_allclose(np.ldexp(res.step, -664), ref.step, rtol=1e-15)
    assert res.predicted_constraint == 2.0**996


def test_natural_step_huge_delta_over_small_curvature_is_finite():
    res = tr.natural_gradient_step(np.ones(2), lambda v: 1e100 * v, 1e300)
    assert res.status is Status.BOUNDARY and res.success, res.message
    np.testing.assert_allclose(res.step, [1e100, 1e100], rtol=1e-12)  # the exact step
    assert np.isfinite(res.beta)


def test_scale_step_subnormal_hd_is_rescaled_not_overflow_error():
    """2^-e_h with e_h = -1046 raised a raw OverflowError from math.ldexp."""
    ref = tr.scale_step(G0, D0, HD0, delta=0.01)
    res = tr.scale_step(G0, D0, np.ldexp(HD0, -1050), delta=0.01)  # exact subnormal Hd
    assert res.status is Status.BOUNDARY, res.message
    np.testing.assert_allclose(np.ldexp(res.step, -525), ref.step, rtol=1e-15)
    res = tr.scale_step([1, 1], [0.5, 0.125], [1e-315, 1e-315], 0.01)  # the reported call
    assert res.status is Status.BOUNDARY and np.all(np.isfinite(res.step))


def test_natural_step_subnormal_gradient_is_rescaled_not_overflow_error():
    res = tr.natural_gradient_step(np.full(2, 1e-310), lambda v: 1e-146 * v, 1e-300)
    assert res.status is Status.BOUNDARY, res.message
    # x* = sqrt(2 delta / g^T H^-1 g) H^-1 g = sqrt(2e-300 / 2e-474) 1e-164 = 1e-77
    np.testing.assert_allclose(res.step, [1e-77, 1e-77], rtol=1e-12)


@pytest.mark.parametrize(
    ("g", "d", "Hd", "delta"),
    [
        # d^T H d and g^T d in the safe window, beta = 1e10 finite, beta d = 1e310
        ([1e-300, 1e-300], [1e300, 1e300], [1e-300, 1e-300], 1e20),
        # rescaled path: sqrt(2 delta / d^T H d) d ~ 1e310
        ([1.0, 1.0], [0.5, 0.125], [1e-320, 1e-320], 1e300),
        # the step (~1e-5) fits, beta ~ 1e315 does not
        ([1.0, 1.0], [1e-320, 1e-320], [1e-10, 1e-10], 1e300),
    ],
)
def test_scale_step_overflowing_step_or_beta_is_out_of_range(g, d, Hd, delta):
    res = tr.scale_step(g, d, Hd, delta)
    assert res.status is Status.OUT_OF_RANGE and not res.success, res.message
    assert np.array_equal(res.step, np.zeros(2)) and res.beta == 0.0
    assert "overflows" in res.message and "rescale" in res.message


def _pow2_vectors(size):
    # small integers times small powers of two: exact at any binary scale down to 2^-1065
    return st.lists(
        st.tuples(st.integers(1, 15), st.integers(-3, 3)), min_size=size, max_size=size
    ).map(lambda pairs: np.array([np.ldexp(float(m), e) for m, e in pairs]))


@settings(max_examples=150, deadline=None)
@given(
    base=st.integers(1, 4).flatmap(lambda n: st.tuples(*(_pow2_vectors(n),) * 3)),
    e_g=st.integers(-1062, 1012),
    e_d=st.integers(-1062, 1012),
    e_hd=st.integers(-1062, 1012),
    e_delta=st.integers(-1072, 1020),
)
def test_scale_step_at_any_binary_scale(base, e_g, e_d, e_hd, e_delta):
    """Finite, success and the rescaled answer, or OUT_OF_RANGE when the answer overflows.

    Scaling g by 2^e_g, d by 2^e_d, H d by 2^e_hd (H by 2^(e_hd - e_d)) and delta by
    2^e_delta scales the step by sqrt(2^(e_delta - e_hd + e_d)), beta by that over 2^e_d.
    """
    g0, d0, hd0 = base  # all positive: g^T d > 0 and d^T H d > 0
    k = e_delta - e_hd + e_d
    half, odd = k // 2, k % 2
    ref = tr.scale_step(g0, d0, hd0, delta=3.0 * 2.0**odd)  # the unit-scale copy
    assert ref.status is Status.BOUNDARY
    res = tr.scale_step(
        np.ldexp(g0, e_g), np.ldexp(d0, e_d), np.ldexp(hd0, e_hd), np.ldexp(3.0, e_delta)
    )
    log2_step = np.log2(np.abs(ref.step).max()) + half
    log2_beta = np.log2(ref.beta) + half - e_d
    if res.success:
        assert res.status is Status.BOUNDARY
        assert np.all(np.isfinite(res.step)) and np.isfinite(res.beta)
        # subnormal steps keep only the bits above 2^-1074
        atol = np.ldexp(4.0, -1074 - half)
        np.testing.assert_allclose(np.ldexp(res.step, -half), ref.step, rtol=1e-14, atol=atol)
        if log2_beta > -1020:
            assert np.ldexp(res.beta, -(half - e_d)) == pytest.approx(ref.beta, rel=1e-14)
    else:
        assert res.status is Status.OUT_OF_RANGE, res.message
        assert max(log2_step, log2_beta) > 1023  # the answer really does not fit float64
        assert not np.any(res.step) and res.beta == 0.0
