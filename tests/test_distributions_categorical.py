"""Categorical distributions against scipy, closed forms, finite differences and sampling."""

import numba
import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trustregion import distributions as dist
from trustregion import kernels

DTYPES = [np.float32, np.float64]
# float32 results are float64 arithmetic rounded once at the output
RTOL = {np.float32: 2e-6, np.float64: 1e-13}
ATOL = {np.float32: 2e-6, np.float64: 1e-13}


def random_logits(rng, n, k, dtype=np.float64, scale=3.0, masked=0.0):
    """Logits with a fraction ``masked`` of -inf entries, keeping one finite entry per row."""
    logits = (scale * rng.standard_normal((n, k))).astype(dtype)
    mask = rng.random((n, k)) < masked
    mask[np.arange(n), rng.integers(0, k, n)] = False
    logits[mask] = -np.inf
    return logits


def reference_log_softmax(logits):
    return scipy.special.log_softmax(logits.astype(np.float64), axis=1)


def close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [0.0, 0.4])
def test_softmax_family_matches_scipy(dtype, masked):
    rng = np.random.default_rng(1)
    logits = random_logits(rng, 50, 7, dtype, masked=masked)
    ref_log_p = reference_log_softmax(logits)
    ref_p = scipy.special.softmax(logits.astype(np.float64), axis=1)
    actions = np.array([rng.choice(np.flatnonzero(np.isfinite(row))) for row in logits])

    log_p = dist.categorical_log_softmax(logits)
    p = dist.categorical_probs(logits)
    assert log_p.dtype == dtype and p.dtype == dtype
    finite = np.isfinite(ref_log_p)
    assert np.array_equal(np.isfinite(log_p), finite)
    close(log_p[finite], ref_log_p[finite], dtype)
    close(p, ref_p, dtype)
    assert np.all(p[~finite] == 0.0)

    lp = dist.categorical_log_prob(logits, actions)
    assert lp.dtype == dtype and lp.shape == (50,)
    close(lp, ref_log_p[np.arange(50), actions], dtype)
    close(
        dist.categorical_log_prob(logits, actions),
        logits[np.arange(50), actions] - scipy.special.logsumexp(logits.astype(float), axis=1),
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [0.0, 0.4])
def test_entropy_and_kl_match_scipy_stats(dtype, masked):
    rng = np.random.default_rng(2)
    logits_p = random_logits(rng, 40, 5, dtype, masked=masked)
    logits_q = random_logits(rng, 40, 5, dtype, masked=0.0)
    p = scipy.special.softmax(logits_p.astype(np.float64), axis=1)
    q = scipy.special.softmax(logits_q.astype(np.float64), axis=1)

    entropy = dist.categorical_entropy(logits_p)
    assert entropy.dtype == dtype
    close(entropy, scipy.stats.entropy(p, axis=1), dtype)

    kl = dist.categorical_kl(logits_p, logits_q)
    assert kl.dtype == dtype
    close(kl, scipy.stats.entropy(p, q, axis=1), dtype)
    close(kl, scipy.special.rel_entr(p, q).sum(axis=1), dtype)


def test_kl_against_a_masked_category_of_positive_probability_is_inf():
    logits_p = np.array([[0.0, 0.0, -np.inf], [0.0, 1.0, 2.0]])
    logits_q = np.array([[0.0, -np.inf, 0.0], [0.0, 1.0, 2.0]])
    kl = dist.categorical_kl(logits_p, logits_q)
    assert kl[0] == np.inf
    assert kl[1] == 0.0
    # the other way round only a probability-0 category is masked: finite
    # KL([1/2, 0, 1/2] || uniform) = log 3 - log 2
    np.testing.assert_allclose(
        dist.categorical_kl(logits_q[:1], np.zeros((1, 3))), [np.log(1.5)], rtol=1e-14
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_magnitude_logits_stay_finite_and_exact(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [1e4, 1e4, 1e4], [-1e4, -1e4 + 1.0, -np.inf]], dtype=dtype)
    log_p = dist.categorical_log_softmax(logits)
    np.testing.assert_array_equal(log_p[0], [0.0, -2e4, -1e4])
    np.testing.assert_allclose(log_p[1], -np.log(3.0), rtol=RTOL[dtype])
    expected_row2 = [-1.0 - np.log1p(np.exp(-1.0)), -np.log1p(np.exp(-1.0)), -np.inf]
    np.testing.assert_allclose(log_p[2], expected_row2, rtol=RTOL[dtype])
    entropy = dist.categorical_entropy(logits)
    assert np.all(np.isfinite(entropy))
    np.testing.assert_allclose(entropy[:2], [0.0, np.log(3.0)], rtol=RTOL[dtype], atol=1e-300)
    # KL(p || q) for p concentrated on category 0 and q on category 1: log p0 - log q0 = 2e4
    kl = dist.categorical_kl(logits[:1], logits[:1, [1, 0, 2]])
    np.testing.assert_allclose(kl, [2e4], rtol=RTOL[dtype])


def test_underflowing_probabilities_give_no_nan():
    logits = np.array([[0.0, -800.0, -2000.0], [0.0, -700.0, -745.0]])
    p = dist.categorical_probs(logits)
    assert p[0, 0] == 1.0 and p[0, 1] == 0.0 and p[0, 2] == 0.0
    for values in (
        dist.categorical_entropy(logits),
        dist.categorical_kl(logits, logits[:, ::-1].copy()),
        dist.categorical_kl(logits[:, ::-1].copy(), logits),
        dist.categorical_fisher_product(logits, np.ones_like(logits)),
        dist.categorical_log_softmax(logits),
    ):
        assert not np.any(np.isnan(values))
    np.testing.assert_allclose(dist.categorical_log_softmax(logits)[0], [0.0, -800.0, -2000.0])
    # KL(p || reversed p) = sum p (log p - log q) = 1 * (0 - (-2000)) on row 0
    np.testing.assert_allclose(dist.categorical_kl(logits, logits[:, ::-1].copy())[0], 2000.0)


def kl_gradient_in_q_logits(logits_p, logits_q):
    """d/dz KL(p || softmax(z)) = softmax(z) - p, the closed form."""
    p = scipy.special.softmax(logits_p, axis=1)
    return scipy.special.softmax(logits_q, axis=1) - p


def test_closed_form_kl_gradient_matches_finite_differences_of_the_kernel():
    rng = np.random.default_rng(3)
    logits_p = random_logits(rng, 4, 5)
    logits_q = random_logits(rng, 4, 5)
    h = 1e-6
    numeric = np.empty_like(logits_q)
    for j in range(5):
        step = np.zeros_like(logits_q)
        step[:, j] = h
        numeric[:, j] = (
            dist.categorical_kl(logits_p, logits_q + step)
            - dist.categorical_kl(logits_p, logits_q - step)
        ) / (2 * h)
    np.testing.assert_allclose(numeric, kl_gradient_in_q_logits(logits_p, logits_q), atol=1e-8)


@pytest.mark.parametrize("masked", [0.0, 0.3])
def test_fisher_product_is_the_finite_difference_of_the_kl_gradient(masked):
    rng = np.random.default_rng(4)
    logits = random_logits(rng, 6, 5, masked=masked)
    v = rng.standard_normal(logits.shape)
    h = 1e-5
    # masked entries stay -inf under the perturbation: probability 0, gradient 0
    numeric = (
        kl_gradient_in_q_logits(logits, logits + h * v)
        - kl_gradient_in_q_logits(logits, logits - h * v)
    ) / (2 * h)
    assert np.all(np.isfinite(numeric))
    np.testing.assert_allclose(dist.categorical_fisher_product(logits, v), numeric, atol=1e-9)


def test_fisher_product_equals_dense_fisher_from_per_sample_scores():
    rng = np.random.default_rng(5)
    k = 4
    for logits_row in random_logits(rng, 3, k, masked=0.3):
        p = scipy.special.softmax(logits_row)
        # F = E_a[s(a) s(a)^T] with the score s(a) = d log p(a) / d logits, enumerated exactly
        scores = dist.categorical_log_prob_grad(np.tile(logits_row, (k, 1)), np.arange(k))
        dense = (scores.T * p) @ scores
        columns = dist.categorical_fisher_product(np.tile(logits_row, (k, 1)), np.eye(k))
        np.testing.assert_allclose(columns.T, dense, atol=1e-14)
        np.testing.assert_allclose(dense, np.diag(p) - np.outer(p, p), atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_prob_grad_matches_finite_differences(dtype):
    rng = np.random.default_rng(6)
    logits = random_logits(rng, 5, 4)
    actions = rng.integers(0, 4, 5)
    grad = dist.categorical_log_prob_grad(logits.astype(dtype), actions)
    assert grad.dtype == dtype
    h = 1e-6
    numeric = np.empty_like(logits)
    for j in range(4):
        step = np.zeros_like(logits)
        step[:, j] = h
        numeric[:, j] = (
            dist.categorical_log_prob(logits + step, actions)
            - dist.categorical_log_prob(logits - step, actions)
        ) / (2 * h)
    np.testing.assert_allclose(grad, numeric, atol=1e-8 if dtype == np.float64 else 1e-6)


def test_sampling_is_reproducible_and_follows_the_probabilities():
    logits = np.array([[np.log(0.1), -np.inf, np.log(0.2), np.log(0.7)]])  # category 1 masked
    many = np.repeat(logits, 40_000, axis=0)
    a = dist.categorical_sample(many, np.random.default_rng(11))
    b = dist.categorical_sample(many, np.random.default_rng(11))
    assert a.dtype == np.int64 and a.shape == (40_000,)
    np.testing.assert_array_equal(a, b)
    counts = np.bincount(a, minlength=4)
    assert counts[1] == 0
    expected = 40_000 * np.array([0.1, 0.2, 0.7])
    chi2 = scipy.stats.chisquare(counts[[0, 2, 3]], expected)
    assert chi2.pvalue > 1e-4


def test_sampling_consumes_one_uniform_per_row():
    logits = np.zeros((5, 3))
    rng = np.random.default_rng(0)
    dist.categorical_sample(logits, rng)
    reference = np.random.default_rng(0)
    reference.random(5)
    assert rng.random() == reference.random()


def test_sample_at_the_top_of_the_cdf_never_returns_a_masked_category():
    logits = np.array([[0.0, 0.0, -np.inf]])
    almost_one = np.array([np.nextafter(1.0, 0.0)])
    assert kernels.categorical_sample_inverse_cdf(logits, almost_one)[0] == 1
    assert kernels.categorical_sample_inverse_cdf(logits, np.zeros(1))[0] == 0


def test_monte_carlo_kl_agrees_with_the_kernel():
    rng = np.random.default_rng(12)
    logits_p = random_logits(rng, 1, 6, scale=1.0)
    logits_q = random_logits(rng, 1, 6, scale=1.0)
    samples = 200_000
    actions = dist.categorical_sample(np.repeat(logits_p, samples, axis=0), rng)
    log_ratio = reference_log_softmax(logits_p)[0, actions] - reference_log_softmax(logits_q)[0, actions]
    estimate = log_ratio.mean()
    standard_error = log_ratio.std() / np.sqrt(samples)
    kl = dist.categorical_kl(logits_p, logits_q)[0]
    assert abs(estimate - kl) < 5 * standard_error


def test_kernels_are_callable_from_user_njit_code():
    @numba.njit
    def surrogate_pieces(logits_old, logits_new, actions, v):
        ratio = np.exp(
            kernels.categorical_log_prob(logits_new, actions)
            - kernels.categorical_log_prob(logits_old, actions)
        )
        return (
            ratio.mean(),
            kernels.categorical_kl(logits_old, logits_new).mean(),
            kernels.categorical_entropy(logits_new).mean(),
            kernels.categorical_fisher_product(logits_old, v),
        )

    rng = np.random.default_rng(13)
    old, new = random_logits(rng, 8, 3), random_logits(rng, 8, 3)
    actions = rng.integers(0, 3, 8)
    v = rng.standard_normal((8, 3))
    ratio, kl, entropy, fv = surrogate_pieces(old, new, actions, v)
    expected_ratio = np.exp(dist.categorical_log_prob(new, actions) - dist.categorical_log_prob(old, actions))
    np.testing.assert_allclose(ratio, expected_ratio.mean(), rtol=1e-14)
    np.testing.assert_allclose(kl, dist.categorical_kl(old, new).mean(), rtol=1e-14)
    np.testing.assert_allclose(entropy, dist.categorical_entropy(new).mean(), rtol=1e-14)
    np.testing.assert_allclose(fv, dist.categorical_fisher_product(old, v), rtol=1e-14)


def test_mixed_dtypes_promote_and_integers_become_float64():
    z32 = np.zeros((2, 3), dtype=np.float32)
    assert dist.categorical_kl(z32, np.zeros((2, 3))).dtype == np.float64
    assert dist.categorical_kl(z32, z32).dtype == np.float32
    assert dist.categorical_entropy([[0, 1, 2]]).dtype == np.float64
    assert dist.categorical_fisher_product(z32, np.ones((2, 3), np.float32)).dtype == np.float32


def test_empty_batch_and_validate_false_give_the_same_results():
    assert dist.categorical_entropy(np.zeros((0, 4))).shape == (0,)
    rng = np.random.default_rng(14)
    logits, other = random_logits(rng, 5, 4), random_logits(rng, 5, 4)
    actions = rng.integers(0, 4, 5)
    for name, args in [
        ("categorical_kl", (logits, other)),
        ("categorical_entropy", (logits,)),
        ("categorical_log_prob", (logits, actions)),
        ("categorical_log_prob_grad", (logits, actions)),
        ("categorical_fisher_product", (logits, other)),
        ("categorical_probs", (logits,)),
        ("categorical_log_softmax", (logits,)),
    ]:
        function = getattr(dist, name)
        np.testing.assert_array_equal(function(*args), function(*args, validate=False), name)
        np.testing.assert_array_equal(function(*args), getattr(kernels, name)(*args), name)


# ------------------------------------------------------------------ properties


ROWS = st.integers(1, 4)
COLUMNS = st.integers(1, 6)


@st.composite
def logit_batches(draw, same_shape_as=None):
    """float32 or float64 logits in [-30, 30] with random -inf masks (one finite per row)."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = same_shape_as if same_shape_as is not None else (draw(ROWS), draw(COLUMNS))
    logits = draw(hnp.arrays(dtype, shape, elements=st.floats(-30, 30, width=32)))
    mask = draw(hnp.arrays(np.bool_, shape))
    mask[:, 0] &= ~mask.all(axis=1)  # keep one finite entry per row
    logits[mask] = -np.inf
    return logits


def tolerance(dtype, scale=1.0):
    return (1e-5 if dtype == np.float32 else 1e-12) * scale


@given(data=st.data())
def test_kl_is_nonnegative_and_zero_on_the_diagonal(data):
    logits_p = data.draw(logit_batches())
    logits_q = data.draw(logit_batches(same_shape_as=logits_p.shape)).astype(logits_p.dtype)
    kl = dist.categorical_kl(logits_p, logits_q)
    assert np.all(kl >= 0.0)
    assert np.all(dist.categorical_kl(logits_p, logits_p) == 0.0)
    assert np.all(dist.categorical_kl(logits_q, logits_q) == 0.0)


@given(logits=logit_batches())
def test_entropy_lies_between_zero_and_log_k(logits):
    entropy = dist.categorical_entropy(logits)
    support = np.isfinite(logits).sum(axis=1)
    assert np.all(entropy >= 0.0)
    assert np.all(entropy <= np.log(support) + tolerance(logits.dtype))


@given(data=st.data())
def test_fisher_product_is_symmetric_and_positive_semidefinite(data):
    logits = data.draw(logit_batches())
    vectors = st.floats(-10, 10, width=32)
    u = data.draw(hnp.arrays(logits.dtype, logits.shape, elements=vectors))
    v = data.draw(hnp.arrays(logits.dtype, logits.shape, elements=vectors))
    fu = dist.categorical_fisher_product(logits, u).astype(np.float64)
    fv = dist.categorical_fisher_product(logits, v).astype(np.float64)
    scale = 1.0 + np.abs(u).max() * np.abs(v).max()
    np.testing.assert_allclose(
        np.sum(u * fv, axis=1), np.sum(v * fu, axis=1), atol=tolerance(logits.dtype, 10 * scale)
    )
    assert np.all(np.sum(v * fv, axis=1) >= -tolerance(logits.dtype, 10 * (1 + np.abs(v).max() ** 2)))


@given(data=st.data())
def test_results_are_invariant_to_adding_a_constant_to_a_row(data):
    logits = data.draw(logit_batches())
    shift = data.draw(hnp.arrays(logits.dtype, (logits.shape[0], 1), elements=st.floats(-20, 20, width=32)))
    other = data.draw(logit_batches(same_shape_as=logits.shape)).astype(logits.dtype)
    shifted = logits + shift
    tol = tolerance(logits.dtype, 100.0)
    np.testing.assert_allclose(
        dist.categorical_probs(shifted), dist.categorical_probs(logits), atol=tol
    )
    np.testing.assert_allclose(
        dist.categorical_entropy(shifted), dist.categorical_entropy(logits), atol=tol
    )
    np.testing.assert_allclose(
        dist.categorical_kl(shifted, other), dist.categorical_kl(logits, other), atol=tol, rtol=tol
    )
    np.testing.assert_allclose(
        dist.categorical_kl(other, shifted), dist.categorical_kl(other, logits), atol=tol, rtol=tol
    )
