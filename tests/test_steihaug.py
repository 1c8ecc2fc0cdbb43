"""Steihaug-Toint truncated CG: region, Cauchy decrease, curvature handling."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trustregion as tr
from trustregion import Status
from trustregion.core.steihaug import boundary_intersections


def model(g, H, p):
    return g @ p + 0.5 * p @ H @ p


def cauchy_point(g, H, radius):
    """Nocedal & Wright eq. (4.12)."""
    gHg = g @ H @ g
    gn = np.linalg.norm(g)
    tau = 1.0 if gHg <= 0 else min(gn**3 / (radius * gHg), 1.0)
    return -tau * radius / gn * g


def random_symmetric(n, rng, negative_fraction):
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eigs = rng.uniform(0.1, 10.0, n)
    eigs[rng.random(n) < negative_fraction] *= -1
    return (Q * eigs) @ Q.T


@given(
    n=st.integers(1, 30),
    seed=st.integers(0, 2**32 - 1),
    log_radius=st.floats(-3, 2),
    negative_fraction=st.sampled_from([0.0, 0.3, 1.0]),
    rtol=st.sampled_from([None, 1e-8]),
)
def test_step_in_region_with_at_least_cauchy_decrease(n, seed, log_radius, negative_fraction, rtol):
    rng = np.random.default_rng(seed)
    H = random_symmetric(n, rng, negative_fraction)
    g = rng.standard_normal(n)
    radius = 10.0**log_radius
    res = tr.steihaug_cg(H.dot, g, radius, rtol=rtol)
    assert np.linalg.norm(res.p) <= radius * (1 + 1e-12)
    m_p = model(g, H, res.p)
    m_c = model(g, H, cauchy_point(g, H, radius))
    assert m_p <= m_c + 1e-10 * max(1.0, abs(m_c))
    assert res.predicted_reduction == pytest.approx(-m_p, rel=1e-9, abs=1e-12)
    assert res.residual_norm == pytest.approx(np.linalg.norm(g + H @ res.p), rel=1e-6, abs=1e-9)
    if res.hits_boundary:
        assert np.linalg.norm(res.p) == pytest.approx(radius, rel=1e-10)
    assert res.nhev == res.nit


@given(n=st.integers(1, 20), seed=st.integers(0, 2**32 - 1), log_radius=st.floats(-2, 2))
def test_negative_definite_goes_to_the_boundary(n, seed, log_radius):
    rng = np.random.default_rng(seed)
    H = -random_symmetric(n, rng, 0.0)
    g = rng.standard_normal(n)
    radius = 10.0**log_radius
    res = tr.steihaug_cg(H.dot, g, radius)
    assert res.status is Status.NEGATIVE_CURVATURE
    assert res.hits_boundary
    assert np.linalg.norm(res.p) == pytest.approx(radius, rel=1e-12)
    # at the first iteration the direction is -g, and the better root is along -g
    assert res.nit == 1 and res.nhev == 1
    assert np.allclose(res.p, -radius * g / np.linalg.norm(g))


def test_negative_curvature_later_picks_the_lower_model_boundary_point():
    H = np.diag([2.0, -1.0])
    g = np.array([1.0, 0.1])
    radius = 5.0
    res = tr.steihaug_cg(H.dot, g, radius, rtol=1e-12)
    assert res.status is Status.NEGATIVE_CURVATURE and res.nit == 2
    # One CG step by hand, then both boundary points along the second direction.
    d0 = -g
    alpha = (g @ g) / (d0 @ H @ d0)
    z1 = alpha * d0
    r1 = g + alpha * (H @ d0)
    d1 = -r1 + (r1 @ r1) / (g @ g) * d0
    assert d1 @ H @ d1 <= 0
    a, b, c = d1 @ d1, 2 * z1 @ d1, z1 @ z1 - radius**2
    roots = [(-b - np.sqrt(b * b - 4 * a * c)) / (2 * a), (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)]
    candidates = [z1 + t * d1 for t in roots]
    best = min(candidates, key=lambda p: model(g, H, p))
    worst = max(candidates, key=lambda p: model(g, H, p))
    assert model(g, H, best) < model(g, H, worst)
    assert np.allclose(res.p, best, rtol=1e-12)


@given(n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_interior_solution_is_the_newton_step(n, seed):
    rng = np.random.default_rng(seed)
    H = random_symmetric(n, rng, 0.0)
    g = rng.standard_normal(n)
    newton = -np.linalg.solve(H, g)
    res = tr.steihaug_cg(H.dot, g, 10 * np.linalg.norm(newton), rtol=1e-12, maxiter=10 * n)
    assert res.status is Status.CONVERGED
    assert np.allclose(res.p, newton, rtol=1e-7, atol=1e-9)


def test_default_forcing_tolerance_is_scipys():
    """rtol=None stops once ||r|| <= min(0.5, sqrt(||g||)) ||g||, as scipy's trust-ncg."""
    H = np.diag(np.logspace(0, 3, 20))
    g = np.full(20, 0.01)
    res = tr.steihaug_cg(H.dot, g, 100.0)
    gn = np.linalg.norm(g)
    assert res.status is Status.CONVERGED
    assert res.residual_norm <= min(0.5, np.sqrt(gn)) * gn * (1 + 1e-9)


def test_boundary_step_when_newton_step_is_outside():
    H = np.eye(3)
    g = np.array([3.0, 0.0, 4.0])
    res = tr.steihaug_cg(H.dot, g, 1.0)
    assert res.status is Status.BOUNDARY
    assert np.allclose(res.p, -g / 5.0)


def test_iteration_cap():
    H = np.diag(np.arange(1.0, 51.0))
    g = np.ones(50)
    res = tr.steihaug_cg(H.dot, g, 1e3, rtol=1e-14, maxiter=3)
    assert res.status is Status.MAX_ITER and res.nit == 3 and res.nhev == 3
    assert res.predicted_reduction > 0


def test_zero_gradient_returns_zero_step_without_hessp():
    res = tr.steihaug_cg(lambda v: pytest.fail("hessp called"), np.zeros(3), 1.0)
    assert res.status is Status.CONVERGED and res.nhev == 0
    assert np.array_equal(res.p, np.zeros(3))


def test_non_finite_hessp_is_a_status():
    res = tr.steihaug_cg(lambda v: np.full_like(v, np.nan), np.ones(2), 1.0)
    assert res.status is Status.NON_FINITE
    assert np.all(np.isfinite(res.p))


def test_float32_kept():
    H = np.diag([1.0, 3.0]).astype(np.float32)
    res = tr.steihaug_cg(H.dot, np.ones(2, dtype=np.float32), 10.0)
    assert res.p.dtype == np.float32


def test_boundary_roots_are_accurate_when_b_squared_dominates():
    """The textbook formula loses every digit of the small root here; ours keeps them."""
    z = np.array([1.0 - 1e-9, 0.0])
    d = np.array([1e4, 0.0])
    ta, tb = boundary_intersections(z, d, 1.0)
    # exact roots: t = (±1 - z0) / d0
    assert tb == pytest.approx(1e-9 / 1e4, rel=1e-6)
    assert ta == pytest.approx((-1.0 - z[0]) / 1e4, rel=1e-12)


@given(
    z=st.lists(st.floats(-1, 1), min_size=3, max_size=3),
    d=st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3),
)
def test_boundary_roots_land_on_the_sphere(z, d):
    z = np.array(z) * 0.5
    d = np.array(d)
    if np.linalg.norm(d) < 1e-6:
        return
    ta, tb = boundary_intersections(z, d, 1.0)
    assert ta <= 0 <= tb
    for t in (ta, tb):
        assert np.linalg.norm(z + t * d) == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(radius=0.0), ValueError, "radius must be > 0, got 0.0"),
        (dict(radius=-1.0), ValueError, "radius must be finite and >= 0, got -1.0"),
        (dict(radius=np.inf), ValueError, "radius"),
        (dict(g=np.array([1.0, np.inf])), ValueError, "g must be finite"),
        (dict(g=np.ones((2, 1))), ValueError, "g must be 1-D"),
        (dict(rtol=-1e-3), ValueError, "rtol"),
        (dict(maxiter=0), ValueError, "maxiter must be >= 1, got 0"),
        (dict(hessp=np.eye(2)), TypeError, "hessp must be callable"),
        (dict(hessp=lambda v: np.ones(5)), ValueError, r"hessp returned shape \(5,\)"),
    ],
)
def test_bad_input_raises(kwargs, error, match):
    args = dict(hessp=np.eye(2).dot, g=np.ones(2), radius=1.0)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        tr.steihaug_cg(args.pop("hessp"), args.pop("g"), args.pop("radius"), **args)


# -- extreme scales: the rescaled problem's answer, or a status; never an OverflowError -------


def test_subnormal_gradient_is_solved_not_overflow_error():
    """2^-e with e = -1029 in _safe_norm raised a raw OverflowError from math.ldexp."""
    g = np.full(2, 1e-310)
    res = tr.steihaug_cg(lambda v: v, g, 1.0, rtol=1e-10)
    assert res.status is Status.CONVERGED and res.success, res.message
    np.testing.assert_array_equal(res.p, -g)  # H = I: the Newton step, well inside


def test_scale_factors_stay_consistent_when_far_apart():
    """g = 1e-300, H = I, radius = 1e300 gave CONVERGED with p = -0.08 instead of -g (the
    factors for g and H were clamped separately), and radius 1.7e308 raised OverflowError."""
    g = np.full(2, 1e-300)
    res = tr.steihaug_cg(lambda v: v, g, 1e300, rtol=1e-10)
    assert res.status is Status.CONVERGED, res.message
    np.testing.assert_allclose(res.p, -g, rtol=1e-15)
    res = tr.steihaug_cg(lambda v: v, np.ones(2), 1.7e308, rtol=1e-10)
    assert res.status is Status.CONVERGED, res.message
    np.testing.assert_allclose(res.p, -np.ones(2), rtol=1e-15)


def test_boundary_beyond_the_capped_region_is_out_of_range():
    """A subnormal g with a huge radius, on an indefinite H: the boundary point cannot be
    formed in the rescaled units; a status, not a wrong step."""
    res = tr.steihaug_cg(lambda v: -v, np.full(2, 1e-310), 1e200, rtol=1e-10)
    assert res.status is Status.OUT_OF_RANGE and not res.success, res.message
    assert np.array_equal(res.p, np.zeros(2))
    assert "too far apart" in res.message


@settings(max_examples=150, deadline=None)
@given(
    h_diag=st.lists(st.sampled_from([-4.0, -1.0, 0.5, 1.0, 2.0, 8.0]), min_size=1, max_size=4),
    g_ints=st.lists(st.integers(-15, 15), min_size=4, max_size=4),
    radius=st.sampled_from([0.25, 1.0, 3.0, 40.0]),
    e_g=st.integers(-1060, 1012),
    e_r=st.integers(-1060, 1012),
)
def test_steihaug_at_any_binary_scale(h_diag, g_ints, radius, e_g, e_r):
    """g -> 2^e_g g, H -> 2^(e_g - e_r) H, radius -> 2^e_r radius scales p by 2^e_r exactly
    (substitute p = 2^e_r q and multiply the model by 2^-(e_g + e_r))."""
    n = len(h_diag)
    H0 = np.diag(h_diag)
    g0 = np.array(g_ints[:n], dtype=float)
    e_h = e_g - e_r
    if not np.any(g0) or not -1060 <= e_h <= 1012:
        return
    ref = tr.steihaug_cg(H0.dot, g0, radius, rtol=1e-10)
    res = tr.steihaug_cg(
        lambda u: np.ldexp(H0 @ u, e_h), np.ldexp(g0, e_g), np.ldexp(radius, e_r), rtol=1e-10
    )
    assert np.all(np.isfinite(res.p))
    if res.success:
        assert ref.success
        # an H' that underflows internally has zero curvature: BOUNDARY may read NEGATIVE_CURVATURE
        assert res.hits_boundary == ref.hits_boundary, res.message
        atol = np.ldexp(8.0, -1074 - e_r)  # subnormal steps keep only the bits above 2^-1074
        np.testing.assert_allclose(np.ldexp(res.p, -e_r), ref.p, rtol=1e-9, atol=atol)
    else:
        assert res.status in (Status.OUT_OF_RANGE, Status.NON_FINITE, ref.status), res.message
        assert not np.any(res.p) or res.status is ref.status
