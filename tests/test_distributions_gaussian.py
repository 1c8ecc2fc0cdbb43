"""Diagonal Gaussians against scipy.stats, closed forms, quadrature and finite differences.

Derivatives, Fisher products and KLs go through trustregion.testing's checks; the property
tests draw from its strategies.
"""

import numba
import numpy as np
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trustregion import distributions as dist
from trustregion import kernels
from trustregion import testing as tt

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-6, np.float64: 1e-12}


def gaussian_batch(rng, n, d, dtype=np.float64, shared=True, low=-2.0, high=1.0):
    mean = rng.standard_normal((n, d)).astype(dtype)
    log_std = rng.uniform(low, high, d if shared else (n, d)).astype(dtype)
    return mean, log_std


def textbook_kl(mean_p, log_std_p, mean_q, log_std_q):
    """sum_j log(sq/sp) + (sp^2 + (mp - mq)^2) / (2 sq^2) - 1/2, in extended precision."""
    mp, lp, mq, lq = (np.asarray(a, dtype=np.longdouble) for a in (mean_p, log_std_p, mean_q, log_std_q))
    sp2, sq2 = np.exp(2 * lp), np.exp(2 * lq)
    terms = (lq - lp) + (sp2 + (mp - mq) ** 2) / (2 * sq2) - 0.5
    return np.asarray(np.broadcast_to(terms, np.broadcast_shapes(terms.shape, mp.shape)).sum(axis=1),
                      dtype=np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ["shared", "row", "per_row"])
def test_log_prob_and_entropy_match_scipy_stats(dtype, shape):
    rng = np.random.default_rng(1)
    n, d = 30, 4
    mean, log_std = gaussian_batch(rng, n, d, dtype, shared=shape != "per_row")
    if shape == "row":
        log_std = log_std[None, :]
    x = (mean + rng.standard_normal((n, d))).astype(dtype)
    std = np.exp(log_std.astype(np.float64))
    expected = scipy.stats.norm.logpdf(x.astype(np.float64), mean.astype(np.float64), std).sum(axis=1)
    log_prob = dist.diag_gaussian_log_prob(mean, log_std, x)
    assert log_prob.dtype == dtype and log_prob.shape == (n,)
    np.testing.assert_allclose(log_prob, expected, rtol=RTOL[dtype])

    entropy = dist.diag_gaussian_entropy(log_std)
    expected_entropy = np.broadcast_to(scipy.stats.norm.entropy(scale=std), log_std.shape).sum(axis=-1)
    assert entropy.dtype == dtype
    np.testing.assert_allclose(entropy, expected_entropy, rtol=RTOL[dtype])


def test_entropy_of_a_shared_log_std_is_a_scalar():
    entropy = dist.diag_gaussian_entropy(np.array([0.0, 1.0], dtype=np.float32))
    assert np.ndim(entropy) == 0 and entropy.dtype == np.float32
    np.testing.assert_allclose(entropy, 1.0 + np.log(2 * np.pi) + 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_matches_the_closed_form_across_the_supported_log_std_range(dtype):
    rng = np.random.default_rng(2)
    grid = np.linspace(-20.0, 5.0, 11)
    log_std_p, log_std_q = (a.reshape(-1, 1).astype(dtype) for a in np.meshgrid(grid, grid))
    n = log_std_p.shape[0]
    mean_p = rng.standard_normal((n, 1)).astype(dtype)
    mean_q = rng.standard_normal((n, 1)).astype(dtype)
    kl = dist.diag_gaussian_kl(mean_p, log_std_p, mean_q, log_std_q)
    assert kl.dtype == dtype and np.all(np.isfinite(kl))
    np.testing.assert_allclose(kl, textbook_kl(mean_p, log_std_p, mean_q, log_std_q), rtol=RTOL[dtype])


def test_kl_keeps_relative_accuracy_for_nearly_equal_stds():
    # t = 2 (lp - lq) = 2e-9: the textbook form cancels to ~1e-9 relative, expm1 does not
    kl = dist.diag_gaussian_kl([[0.0]], [1e-9], [[0.0]], [0.0])
    np.testing.assert_allclose(kl, [1e-18], rtol=1e-6)  # (expm1(t) - t) / 2 ~ t^2 / 4


def gaussian_kl(p, q):
    return dist.diag_gaussian_kl(*p, *q)


def sample_gaussians(p, rng, n_samples):
    """n_samples draws of every row by the core's sampler, shape (n_samples, N, D)."""
    mean, log_std = p
    n, d = mean.shape
    tiled_log_std = log_std if log_std.ndim == 1 else np.tile(log_std, (n_samples, 1))
    x = dist.diag_gaussian_sample(np.tile(mean, (n_samples, 1)), tiled_log_std, rng)
    return x.reshape(n_samples, n, d)


def scipy_log_prob(p, x):
    mean, log_std = p
    return scipy.stats.norm.logpdf(x, mean, np.exp(log_std)).sum(axis=-1)


@pytest.mark.parametrize("shared", [True, False])
def test_kl_passes_check_kl_with_a_monte_carlo_estimate(shared):
    rng = np.random.default_rng(3)
    p = gaussian_batch(rng, 3, 3, shared=False, low=-0.5, high=0.5)
    q = gaussian_batch(rng, 3, 3, shared=shared, low=-0.5, high=0.5)
    tt.check_kl(gaussian_kl, p, q, log_prob=scipy_log_prob, sample=sample_gaussians,
                n_samples=50_000)


def kl_gradient(mean_p, log_std_p, mean, log_std):
    """Closed-form gradient of KL(p || N(mean, exp(log_std)^2)) in (mean, log_std)."""
    precision = np.exp(-2 * log_std)
    d_mean = (mean - mean_p) * precision
    d_log_std = 1.0 - (np.exp(2 * log_std_p) + (mean_p - mean) ** 2) * precision
    return d_mean, np.broadcast_to(d_log_std, mean.shape)


def test_closed_form_kl_gradient_matches_finite_differences_of_the_kernel():
    rng = np.random.default_rng(4)
    mean_p, log_std_p = gaussian_batch(rng, 3, 2, shared=False)
    mean_q, log_std_q = gaussian_batch(rng, 3, 2, shared=False)

    def split(theta):
        return theta[:6].reshape(3, 2), theta[6:].reshape(3, 2)

    tt.check_grad(
        lambda theta: dist.diag_gaussian_kl(mean_p, log_std_p, *split(theta)).sum(),
        lambda theta: np.concatenate([g.ravel() for g in kl_gradient(mean_p, log_std_p, *split(theta))]),
        np.concatenate([mean_q.ravel(), log_std_q.ravel()]),
        n_directions=4,
    )


def mean_kl_problem(mean, log_std):
    """The mean KL over rows as a function of theta = (mean, log_std) flattened."""
    n = mean.shape[0]
    k = mean.size

    def split(theta):
        return theta[:k].reshape(mean.shape), theta[k:].reshape(log_std.shape)

    def kl(theta_old, theta):
        return float(dist.diag_gaussian_kl(*split(theta_old), *split(theta)).mean())

    def kl_grad(theta_old, theta):
        d_mean, d_log_std = kl_gradient(*split(theta_old), *split(theta))
        if log_std.ndim == 1:  # a shared log_std collects every row's gradient
            d_log_std = d_log_std.sum(axis=0)
        return np.concatenate([d_mean.ravel(), d_log_std.ravel()]) / n

    def fvp(theta, v, damping=0.0):
        fv_mean, fv_log_std = dist.diag_gaussian_fisher_product(*split(theta), *split(v))
        # the mean over rows of the KL: per-row blocks are averaged, a shared block is itself
        fv_log_std = fv_log_std if log_std.ndim == 1 else fv_log_std / n
        return np.concatenate([fv_mean.ravel() / n, fv_log_std.ravel()]) + damping * v

    return np.concatenate([mean.ravel(), log_std.ravel()]), kl, kl_grad, fvp


@pytest.mark.parametrize("shared", [True, False])
def test_fisher_product_is_the_hessian_of_the_mean_kl(shared):
    rng = np.random.default_rng(5)
    theta, kl, kl_grad, fvp = mean_kl_problem(*gaussian_batch(rng, 4, 3, shared=shared))
    tt.check_fvp(fvp, kl, theta, kl_grad=kl_grad, damping=0.1, n_directions=3)
    tt.check_fvp(fvp, kl, theta, n_directions=3, seed=1)  # against the KL's values alone


def test_fisher_product_equals_dense_fisher_from_per_sample_scores():
    """F = E[s s^T] with s the score in (mean, log_std), by exact Gauss-Hermite quadrature."""
    mean = np.array([0.3, -1.2])
    log_std = np.array([0.4, -0.7])
    nodes, weights = np.polynomial.hermite_e.hermegauss(8)  # exact for degree <= 15
    weights = weights / np.sqrt(2 * np.pi)
    z = np.stack(np.meshgrid(nodes, nodes, indexing="ij"), axis=-1).reshape(-1, 2)
    w = np.outer(weights, weights).reshape(-1)
    x = mean + np.exp(log_std) * z
    d_mean, d_log_std = dist.diag_gaussian_log_prob_grad(np.tile(mean, (len(w), 1)), log_std, x)
    scores = np.hstack([d_mean, d_log_std])
    dense = (scores.T * w) @ scores
    columns = []
    for basis in np.eye(4):
        fv_mean, fv_log_std = dist.diag_gaussian_fisher_product(
            mean[None, :], log_std, basis[None, :2], basis[2:]
        )
        columns.append(np.concatenate([fv_mean[0], fv_log_std]))
    np.testing.assert_allclose(np.array(columns).T, dense, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_prob_grad_matches_finite_differences(dtype):
    rng = np.random.default_rng(6)
    mean, log_std = gaussian_batch(rng, 5, 3, dtype)
    x = (mean + rng.standard_normal(mean.shape)).astype(dtype)
    d_mean, d_log_std = dist.diag_gaussian_log_prob_grad(mean, log_std, x)
    assert d_mean.dtype == dtype and d_log_std.dtype == dtype and d_log_std.shape == (5, 3)

    def split(theta):  # per-row log_std, so that every row's score is its own parameter
        return theta[:15].reshape(5, 3), theta[15:].reshape(5, 3)

    tt.check_grad(
        lambda theta: dist.diag_gaussian_log_prob(*split(theta), x).sum(),
        lambda theta: np.concatenate([g.ravel() for g in dist.diag_gaussian_log_prob_grad(*split(theta), x)]),
        np.concatenate([mean.ravel(), np.tile(log_std, (5, 1)).ravel()]),
        n_directions=4,
    )


def test_fisher_product_output_shapes():
    mean = np.zeros((5, 3))
    shared, per_row = np.zeros(3), np.zeros((5, 3))
    one_row = np.zeros((1, 3))
    cases = [
        (shared, shared, (3,)),
        (shared, per_row, (5, 3)),
        (per_row, shared, (5, 3)),
        (per_row, per_row, (5, 3)),
        (one_row, shared, (1, 3)),
        (shared, one_row, (1, 3)),
    ]
    for log_std, v_log_std, expected in cases:
        fv_mean, fv_log_std = dist.diag_gaussian_fisher_product(mean, log_std, mean + 1, v_log_std + 1)
        assert fv_mean.shape == (5, 3)
        assert fv_log_std.shape == expected == np.broadcast_shapes(log_std.shape, v_log_std.shape)
        np.testing.assert_array_equal(fv_log_std, 2.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_log_std_stays_finite(dtype):
    mean = np.zeros((2, 2), dtype=dtype)
    log_std = np.array([[-20.0, 5.0], [5.0, -20.0]], dtype=dtype)
    x = np.ones((2, 2), dtype=dtype)
    log_prob = dist.diag_gaussian_log_prob(mean, log_std, x)
    d_mean, d_log_std = dist.diag_gaussian_log_prob_grad(mean, log_std, x)
    fv_mean, _ = dist.diag_gaussian_fisher_product(mean, log_std, x, log_std)
    for values in (log_prob, d_mean, d_log_std, fv_mean, dist.diag_gaussian_entropy(log_std)):
        assert np.all(np.isfinite(values))
    expected = scipy.stats.norm.logpdf(1.0, 0.0, np.exp(log_std.astype(float))).sum(axis=1)
    np.testing.assert_allclose(log_prob, expected, rtol=RTOL[dtype])


def test_sampling_is_reproducible_and_has_the_right_moments():
    mean = np.tile([1.0, -2.0], (100_000, 1))
    log_std = np.array([0.0, np.log(0.5)])
    a = dist.diag_gaussian_sample(mean, log_std, np.random.default_rng(7))
    b = dist.diag_gaussian_sample(mean, log_std, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a.mean(axis=0), [1.0, -2.0], atol=0.02)
    np.testing.assert_allclose(a.std(axis=0), [1.0, 0.5], rtol=0.02)
    small = dist.diag_gaussian_sample(mean[:3].astype(np.float32), log_std, np.random.default_rng(0))
    assert small.dtype == np.float64  # float32 mean with float64 log_std promotes
    small32 = dist.diag_gaussian_sample(
        mean[:3].astype(np.float32), log_std.astype(np.float32), np.random.default_rng(0)
    )
    assert small32.dtype == np.float32


def test_kernels_are_callable_from_user_njit_code():
    @numba.njit
    def pieces(mean_old, mean_new, log_std, x, v):
        log_ratio = kernels.diag_gaussian_log_prob(mean_new, log_std, x) - kernels.diag_gaussian_log_prob(
            mean_old, log_std, x
        )
        fv_mean, fv_log_std = kernels.diag_gaussian_fisher_product(mean_old, log_std, v, log_std)
        return (
            log_ratio,
            kernels.diag_gaussian_kl(mean_old, log_std, mean_new, log_std),
            kernels.diag_gaussian_entropy(log_std)[0],
            fv_mean,
            fv_log_std,
        )

    rng = np.random.default_rng(8)
    mean_old, log_std = gaussian_batch(rng, 6, 2)
    mean_new = mean_old + 0.1
    x = mean_old + rng.standard_normal(mean_old.shape)
    v = rng.standard_normal(mean_old.shape)
    log_ratio, kl, entropy, fv_mean, fv_log_std = pieces(mean_old, mean_new, log_std, x, v)
    np.testing.assert_allclose(
        log_ratio,
        dist.diag_gaussian_log_prob(mean_new, log_std, x) - dist.diag_gaussian_log_prob(mean_old, log_std, x),
        rtol=1e-14,
    )
    np.testing.assert_allclose(kl, dist.diag_gaussian_kl(mean_old, log_std, mean_new, log_std), rtol=1e-14)
    np.testing.assert_allclose(entropy, dist.diag_gaussian_entropy(log_std), rtol=1e-14)
    np.testing.assert_allclose(fv_mean, v * np.exp(-2 * log_std), rtol=1e-14)
    np.testing.assert_allclose(fv_log_std, 2 * log_std[None, :], rtol=1e-14)  # 2-D from the kernel


def test_validate_false_and_the_kernels_give_the_same_results():
    rng = np.random.default_rng(9)
    mean, log_std = gaussian_batch(rng, 5, 3)
    x = rng.standard_normal(mean.shape)
    for name, args in [
        ("diag_gaussian_log_prob", (mean, log_std, x)),
        ("diag_gaussian_kl", (mean, log_std, x, log_std + 0.1)),
    ]:
        function = getattr(dist, name)
        np.testing.assert_array_equal(function(*args), function(*args, validate=False), name)
        np.testing.assert_array_equal(function(*args), getattr(kernels, name)(*args), name)
    for name, args in [
        ("diag_gaussian_log_prob_grad", (mean, log_std, x)),
        ("diag_gaussian_fisher_product", (mean, log_std, x, log_std)),
    ]:
        function = getattr(dist, name)
        for checked, fast in zip(function(*args), function(*args, validate=False), strict=True):
            np.testing.assert_array_equal(checked, fast, name)


# ------------------------------------------------------------------ properties

SIZES = st.tuples(st.integers(1, 4), st.integers(1, 5))
MEANS = st.floats(-100, 100, width=32)
LOG_STDS = st.floats(-20, 5, width=32)


@st.composite
def gaussians(draw, n, d, dtype):
    mean = draw(hnp.arrays(dtype, (n, d), elements=MEANS))
    shape = draw(st.sampled_from([(d,), (1, d), (n, d)]))
    log_std = draw(hnp.arrays(dtype, shape, elements=LOG_STDS))
    return mean, log_std


@given(pair=tt.diag_gaussian_pairs(st.integers(1, 4), st.integers(1, 5), log_std=(-20, 5),
                                   dtype=st.sampled_from(DTYPES)))
def test_kl_passes_check_kl_and_matches_the_oracle(pair):
    tt.check_kl(gaussian_kl, pair.p, pair.q)
    assert np.all(gaussian_kl(pair.p, pair.p) == 0.0)  # exactly, by the expm1 form
    dtype = pair.p[0].dtype
    rtol = RTOL[dtype.type] * 10
    # Relative accuracy down to the smallest normal number; below it (a subnormal KL, e.g.
    # 5.7e-43 in float32, whose spacing 1.4e-45 is already 2.4e-4 of it) the same accuracy
    # in absolute terms: rtol * tiny.
    tt.assert_close(gaussian_kl(pair.p, pair.q), pair.kl, rtol=rtol,
                    atol=rtol * float(np.finfo(dtype).tiny))


@given(data=st.data(), size=SIZES, dtype=st.sampled_from(DTYPES))
def test_kl_is_nonnegative_zero_on_the_diagonal_and_broadcasts_exactly(data, size, dtype):
    mean_p, log_std_p = data.draw(gaussians(*size, dtype))
    mean_q, log_std_q = data.draw(gaussians(*size, dtype))
    kl = dist.diag_gaussian_kl(mean_p, log_std_p, mean_q, log_std_q)
    assert np.all(kl >= 0.0)
    assert np.all(dist.diag_gaussian_kl(mean_p, log_std_p, mean_p, log_std_p) == 0.0)
    # a shared log_std is the same as that row repeated
    repeated_p = np.broadcast_to(log_std_p, mean_p.shape).copy()
    repeated_q = np.broadcast_to(log_std_q, mean_q.shape).copy()
    np.testing.assert_array_equal(kl, dist.diag_gaussian_kl(mean_p, repeated_p, mean_q, repeated_q))


@given(case=tt.diag_gaussians(st.integers(1, 4), st.integers(1, 5), log_std=(-20, 5),
                               dtype=st.sampled_from(DTYPES)))
def test_fisher_product_is_symmetric_and_positive_semidefinite(case):
    theta, _, _, fvp = mean_kl_problem(case.mean, case.log_std)
    tt.check_symmetric_operator(lambda v: fvp(theta, v), theta.size, psd=True,
                                dtype=case.mean.dtype)


@given(case=tt.diag_gaussians(st.integers(1, 3), st.integers(1, 3), log_std=(-3, 2)))
def test_fisher_product_passes_check_fvp_on_drawn_gaussians(case):
    theta, kl, kl_grad, fvp = mean_kl_problem(case.mean, case.log_std)
    tt.check_fvp(fvp, kl, theta, kl_grad=kl_grad)
