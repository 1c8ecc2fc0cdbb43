"""Trust-region step scaling and the composed natural-gradient step."""

import numpy as np
import pytest
from hypothesis import given
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
