"""Categorical distributions against scipy, closed forms, finite differences and sampling.

Derivatives, Fisher products and KLs go through trustregion.testing's checks; the property
tests draw from its strategies.
"""

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
from trustregion import testing as tt

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
    tt.check_grad(
        lambda z: float(dist.categorical_kl(logits_p, z.reshape(4, 5)).sum()),
        lambda z: kl_gradient_in_q_logits(logits_p, z.reshape(4, 5)).ravel(),
        logits_q.ravel(),
        n_directions=5,
    )


def mean_kl_problem(logits):
    """The mean KL over rows as a function of the finite logits, with its gradient and Fisher.

    Masked (-inf) entries stay -inf: they are not parameters.
    """
    finite = np.isfinite(logits)
    n = logits.shape[0]

    def full(theta, fill=-np.inf):
        out = np.full(logits.shape, fill)
        out[finite] = theta
        return out

    def kl(theta_old, theta):
        return float(dist.categorical_kl(full(theta_old), full(theta)).mean())

    def kl_grad(theta_old, theta):
        return (kl_gradient_in_q_logits(full(theta_old), full(theta)) / n)[finite]

    def fvp(theta, v, damping=0.0):
        fv = dist.categorical_fisher_product(full(theta), full(v, 0.0)) / n
        return fv[finite] + damping * v

    return logits[finite], kl, kl_grad, fvp


@pytest.mark.parametrize("masked", [0.0, 0.3])
def test_fisher_product_is_the_hessian_of_the_mean_kl(masked):
    rng = np.random.default_rng(4)
    theta, kl, kl_grad, fvp = mean_kl_problem(random_logits(rng, 6, 5, masked=masked))
    tt.check_fvp(fvp, kl, theta, kl_grad=kl_grad, damping=0.1, n_directions=3)
    tt.check_fvp(fvp, kl, theta, n_directions=3, seed=1)  # against the KL's values alone


@given(case=tt.logits(st.integers(1, 4), st.integers(2, 5), extremes=False))
def test_fisher_product_passes_check_fvp_on_drawn_logits(case):
    theta, kl, kl_grad, fvp = mean_kl_problem(case.logits)
    tt.check_fvp(fvp, kl, theta, kl_grad=kl_grad)


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
    logits = random_logits(rng, 5, 4, dtype)
    actions = rng.integers(0, 4, 5)
    assert dist.categorical_log_prob_grad(logits, actions).dtype == dtype
    tt.check_grad(
        lambda z: dist.categorical_log_prob(z.reshape(5, 4), actions).sum(),
        lambda z: dist.categorical_log_prob_grad(z.reshape(5, 4), actions).ravel(),
        logits.ravel(),
        n_directions=4,
    )


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


def sample_actions(logits, rng, n_samples):
    """n_samples actions for every row, shape (n_samples, N), by the core's sampler."""
    return dist.categorical_sample(np.tile(logits, (n_samples, 1)), rng).reshape(n_samples, -1)


def log_prob_of_actions(logits, actions):
    return np.stack([dist.categorical_log_prob(logits, row) for row in actions])


def test_kl_passes_check_kl_with_the_monte_carlo_estimate():
    rng = np.random.default_rng(12)
    logits_p = random_logits(rng, 3, 6, scale=1.0, masked=0.2)
    logits_q = random_logits(rng, 3, 6, scale=1.0)
    tt.check_kl(dist.categorical_kl, logits_p, logits_q, log_prob=log_prob_of_actions,
                sample=sample_actions, n_samples=50_000, shift_invariant=True)


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
ANY_DTYPE = st.sampled_from(DTYPES)


@st.composite
def logit_batches(draw, same_shape_as=None):
    """float32 or float64 logits from tt.logits: spreads, ties, shifts and -inf masks."""
    rows, columns = same_shape_as if same_shape_as is not None else (ROWS, COLUMNS)
    return draw(tt.logits(rows, columns, dtype=ANY_DTYPE)).logits


def tolerance(dtype, scale=1.0):
    return (1e-5 if dtype == np.float32 else 1e-12) * scale


@given(pair=tt.categorical_pairs(ROWS, COLUMNS, extremes=True, dtype=ANY_DTYPE))
def test_kl_passes_check_kl_and_matches_the_oracle(pair):
    tt.check_kl(dist.categorical_kl, pair.p, pair.q, shift_invariant=True)
    assert np.all(dist.categorical_kl(pair.p, pair.p) == 0.0)  # exactly, by the clip at 0
    rtol = tolerance(pair.p.dtype)
    scale = 1 + np.max(np.abs(np.where(np.isfinite(pair.p), pair.p, 0.0)))
    tt.assert_close(dist.categorical_kl(pair.p, pair.q), pair.kl, rtol=rtol, atol=rtol * scale)


@given(logits=logit_batches())
def test_entropy_lies_between_zero_and_log_k(logits):
    entropy = dist.categorical_entropy(logits)
    support = np.isfinite(logits).sum(axis=1)
    assert np.all(entropy >= 0.0)
    assert np.all(entropy <= np.log(support) + tolerance(logits.dtype))


@given(case=tt.logits(ROWS, COLUMNS, dtype=ANY_DTYPE))
def test_fisher_product_is_symmetric_and_positive_semidefinite(case):
    logits = case.logits
    # p_j v_j - p_j (p . v) rounds like eps |v| (p_j <= 1), not like eps |F v|: on a nearly
    # deterministic row the tiny eigenvalue is only accurate in absolute terms
    atol = 16 * logits.shape[1] * np.finfo(logits.dtype).eps
    for row in logits:
        tt.check_symmetric_operator(
            lambda v, row=row: dist.categorical_fisher_product(row[None], v[None])[0],
            row.size, psd=True, dtype=logits.dtype, atol=atol,
        )


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
