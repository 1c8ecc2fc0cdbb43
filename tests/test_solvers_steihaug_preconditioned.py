"""steihaug_cg with a preconditioner M: the region is ||p||_{M^{-1}} <= radius."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trustregion as tr
from trustregion import Status


def model(g, H, p):
    return g @ p + 0.5 * p @ H @ p


def random_symmetric(n, rng, negative_fraction, low=0.1, high=10.0):
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eigs = rng.uniform(low, high, n)
    eigs[rng.random(n) < negative_fraction] *= -1
    return (Q * eigs) @ Q.T


def m_norm(p, M):
    """||p||_{M^{-1}}."""
    return float(np.sqrt(p @ np.linalg.solve(M, p)))


def preconditioned_cauchy_point(g, H, M, radius):
    """Minimizer of the model along -M g within ||p||_{M^{-1}} <= radius."""
    d = -M @ g
    d_norm = np.sqrt(g @ M @ g)  # ||M g||_{M^{-1}}
    t_max = radius / d_norm
    dHd = d @ H @ d
    t = t_max if dHd <= 0 else min((g @ M @ g) / dHd, t_max)
    return t * d


problem = dict(
    n=st.integers(1, 15),
    seed=st.integers(0, 2**32 - 1),
    log_radius=st.floats(-2, 2),
    negative_fraction=st.sampled_from([0.0, 0.3, 1.0]),
)


@settings(max_examples=40)
@given(**problem)
def test_step_in_the_ellipsoid_with_at_least_the_preconditioned_cauchy_decrease(
    n, seed, log_radius, negative_fraction
):
    rng = np.random.default_rng(seed)
    H = random_symmetric(n, rng, negative_fraction)
    M = random_symmetric(n, rng, 0.0, low=0.05, high=20.0)
    g = rng.standard_normal(n)
    radius = 10.0**log_radius
    res = tr.steihaug_cg(H.dot, g, radius, M=M)
    assert res.status in (
        Status.CONVERGED,
        Status.BOUNDARY,
        Status.NEGATIVE_CURVATURE,
        Status.MAX_ITER,
    )
    assert m_norm(res.p, M) <= radius * (1 + 1e-9)
    if res.hits_boundary:
        assert m_norm(res.p, M) == pytest.approx(radius, rel=1e-8)
    m_p = model(g, H, res.p)
    m_c = model(g, H, preconditioned_cauchy_point(g, H, M, radius))
    assert m_p <= m_c + 1e-9 * max(1.0, abs(m_c))
    assert res.predicted_reduction == pytest.approx(-m_p, rel=1e-8, abs=1e-11)
    assert res.nhev == res.nit


@settings(max_examples=40)
@given(n=st.integers(1, 12), seed=st.integers(0, 2**32 - 1), log_radius=st.floats(-2, 1.5))
def test_equals_plain_steihaug_on_the_transformed_problem(n, seed, log_radius):
    # With M = L L^T and p = L p_hat, the problem in p_hat has gradient L^T g, Hessian
    # L^T H L and a Euclidean region: preconditioned CG is plain CG on it.
    rng = np.random.default_rng(seed)
    H = random_symmetric(n, rng, 0.3)
    L = np.tril(rng.uniform(0.5, 2.0, (n, n))) * np.eye(n) + np.tril(
        0.3 * rng.standard_normal((n, n)), -1
    )
    M = L @ L.T
    g = rng.standard_normal(n)
    radius = 10.0**log_radius
    res = tr.steihaug_cg(H.dot, g, radius, M=M, rtol=1e-12, maxiter=n)
    ref = tr.steihaug_cg((L.T @ H @ L).dot, L.T @ g, radius, rtol=1e-12, maxiter=n)
    if Status.CONVERGED not in (res.status, ref.status):
        assert res.status is ref.status
        assert res.nit == ref.nit
    np.testing.assert_allclose(res.p, L @ ref.p, rtol=1e-6, atol=1e-8 * radius)


@settings(max_examples=30)
@given(**problem)
def test_identity_preconditioner_reproduces_the_plain_method(
    n, seed, log_radius, negative_fraction
):
    rng = np.random.default_rng(seed)
    H = random_symmetric(n, rng, negative_fraction)
    g = rng.standard_normal(n)
    radius = 10.0**log_radius
    plain = tr.steihaug_cg(H.dot, g, radius)
    pre = tr.steihaug_cg(H.dot, g, radius, M=np.eye(n))
    assert pre.status is plain.status
    assert pre.nit == plain.nit
    np.testing.assert_allclose(pre.p, plain.p, rtol=1e-9, atol=1e-12 * radius)


def test_exact_inverse_gives_the_newton_step_in_one_product():
    rng = np.random.default_rng(1)
    H = random_symmetric(8, rng, 0.0, low=1e-3, high=1e3)  # cond 1e6
    g = rng.standard_normal(8)
    newton = -np.linalg.solve(H, g)
    res = tr.steihaug_cg(H.dot, g, radius=2 * m_norm(newton, np.linalg.inv(H)),
                         M=np.linalg.inv(H), rtol=1e-8)  # fmt: skip
    assert res.status is Status.CONVERGED
    assert res.nhev == 1
    np.testing.assert_allclose(res.p, newton, rtol=1e-8)
    plain = tr.steihaug_cg(H.dot, g, radius=2 * np.linalg.norm(newton), rtol=1e-8)
    assert plain.nhev >= 8  # plain CG needs all n directions


def test_negative_curvature_at_once_goes_to_the_ellipsoid_boundary_along_minus_M_g():
    rng = np.random.default_rng(2)
    H = -random_symmetric(5, rng, 0.0)
    M = np.diag([1.0, 4.0, 0.25, 2.0, 0.5])
    g = rng.standard_normal(5)
    res = tr.steihaug_cg(H.dot, g, 0.7, M=M)
    assert res.status is Status.NEGATIVE_CURVATURE and res.nhev == 1
    expected = -M @ g * 0.7 / np.sqrt(g @ M @ g)
    np.testing.assert_allclose(res.p, expected, rtol=1e-12)


def test_callable_and_linear_operator_preconditioners():
    from scipy.sparse.linalg import aslinearoperator

    rng = np.random.default_rng(3)
    H = random_symmetric(6, rng, 0.0)
    d = rng.uniform(0.5, 2.0, 6)
    g = rng.standard_normal(6)
    dense = tr.steihaug_cg(H.dot, g, 1.0, M=np.diag(d))
    for M in (lambda r: d * r, aslinearoperator(np.diag(d))):
        res = tr.steihaug_cg(H.dot, g, 1.0, M=M)
        np.testing.assert_allclose(res.p, dense.p, rtol=1e-12)


def test_indefinite_preconditioner_is_a_status_not_a_nan():
    H = np.eye(3)
    res = tr.steihaug_cg(H.dot, np.ones(3), 1.0, M=-np.eye(3))
    assert res.status is Status.INDEFINITE_PRECONDITIONER
    assert res.nit == 0 and not np.any(res.p)
    # indefinite only along a later residual
    M = np.diag([1.0, -1.0])
    res = tr.steihaug_cg(np.array([[2.0, 1.0], [1.0, 2.0]]).dot, np.array([1.0, 0.0]), 10.0,
                         M=M, rtol=1e-12)  # fmt: skip
    assert res.status is Status.INDEFINITE_PRECONDITIONER
    assert res.nit == 1 and np.all(np.isfinite(res.p)) and np.any(res.p)


def test_non_finite_preconditioner_output_is_a_status():
    res = tr.steihaug_cg(np.eye(2).dot, np.ones(2), 1.0, M=lambda r: r * np.nan)
    assert res.status is Status.NON_FINITE
    assert not np.any(res.p)


@pytest.mark.parametrize(
    ("M", "error", "match"),
    [
        (np.eye(3), ValueError, "M must have shape"),
        (lambda r: np.ones(3), ValueError, "M returned shape"),
        ("jacobi", TypeError, "M must be"),
    ],
)
def test_misuse_raises(M, error, match):
    with pytest.raises(error, match=match):
        tr.steihaug_cg(np.eye(2).dot, np.ones(2), 1.0, M=M)
