"""Misuse of trustregion.distributions raises a ValueError/TypeError naming the argument;
every valid input (drawn by trustregion.testing's strategies, extremes included) is accepted."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustregion import distributions as dist
from trustregion import testing as tt

LOGITS = np.zeros((3, 4))
MEAN = np.zeros((3, 2))
LOG_STD = np.zeros(2)
RNG = np.random.default_rng(0)


def with_value(array, index, value):
    out = np.array(array, dtype=float)
    out[index] = value
    return out


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        # logits: NaN, +inf, all -inf rows, wrong rank, no categories
        (lambda: dist.categorical_entropy(with_value(LOGITS, (1, 2), np.nan)), ValueError,
         r"logits\[1, 2\] = nan"),
        (lambda: dist.categorical_probs(with_value(LOGITS, (2, 0), np.inf)), ValueError,
         r"logits\[2, 0\] = inf"),
        (lambda: dist.categorical_log_softmax(with_value(LOGITS, (0,), -np.inf)), ValueError,
         r"logits\[0\] is -inf everywhere"),
        (lambda: dist.categorical_entropy(np.zeros(4)), ValueError, r"logits must have shape \(N, K\)"),
        (lambda: dist.categorical_entropy(np.zeros((2, 0))), ValueError, "at least one category"),
        (lambda: dist.categorical_kl(LOGITS, with_value(LOGITS, (0, 1), np.nan)), ValueError,
         r"logits_q\[0, 1\] = nan"),
        (lambda: dist.categorical_kl(LOGITS, np.zeros((3, 5))), ValueError,
         r"logits_q must have the shape of logits_p \(3, 4\), got shape \(3, 5\)"),
        (lambda: dist.categorical_entropy(LOGITS.astype(np.complex128)), TypeError,
         "logits must be a real float32 or float64 array, got dtype complex128"),
        (lambda: dist.categorical_entropy(LOGITS.astype(np.float16)), TypeError, "float16"),
        # actions
        (lambda: dist.categorical_log_prob(LOGITS, [0, 4, 1]), ValueError,
         r"actions must lie in \[0, 4\).*actions\[1\] = 4"),
        (lambda: dist.categorical_log_prob(LOGITS, [0, 1, -1]), ValueError, r"actions\[2\] = -1"),
        (lambda: dist.categorical_log_prob_grad(LOGITS, [0.0, 1.0, 2.0]), TypeError,
         "actions must be an integer array, got dtype float64"),
        (lambda: dist.categorical_log_prob(LOGITS, [0, 1]), ValueError,
         r"actions must have shape \(3,\), got shape \(2,\)"),
        # tangent vectors and generators
        (lambda: dist.categorical_fisher_product(LOGITS, with_value(LOGITS, (1, 1), np.inf)),
         ValueError, r"v must be finite, got v\[1, 1\] = inf"),
        (lambda: dist.categorical_fisher_product(LOGITS, np.zeros((4, 3))), ValueError,
         r"v must have the shape of logits"),
        (lambda: dist.categorical_sample(LOGITS, 0), TypeError, "rng must be a numpy.random.Generator"),
        (lambda: dist.categorical_sample(LOGITS, np.random.RandomState(0)), TypeError, "rng"),
        # Gaussians
        (lambda: dist.diag_gaussian_log_prob(np.zeros(2), LOG_STD, np.zeros(2)), ValueError,
         r"mean must have shape \(N, D\), got shape \(2,\)"),
        (lambda: dist.diag_gaussian_log_prob(MEAN, np.zeros(3), MEAN), ValueError,
         r"log_std must have shape \(2,\), \(1, 2\) or \(3, 2\), got shape \(3,\)"),
        (lambda: dist.diag_gaussian_log_prob(MEAN, np.zeros((2, 2)), MEAN), ValueError,
         r"log_std must have shape"),
        (lambda: dist.diag_gaussian_log_prob(MEAN, LOG_STD, np.zeros((3, 3))), ValueError,
         r"x must have the shape of mean \(3, 2\), got shape \(3, 3\)"),
        (lambda: dist.diag_gaussian_log_prob(MEAN, LOG_STD, with_value(MEAN, (2, 1), np.nan)),
         ValueError, r"x must be finite, got x\[2, 1\] = nan"),
        (lambda: dist.diag_gaussian_log_prob(with_value(MEAN, (0, 0), -np.inf), LOG_STD, MEAN),
         ValueError, r"mean must be finite, got mean\[0, 0\] = -inf"),
        (lambda: dist.diag_gaussian_log_prob(MEAN, [0.0, 101.0], MEAN), ValueError,
         r"log_std must be finite and within \[-100, 100\], got log_std\[1\] = 101"),
        (lambda: dist.diag_gaussian_entropy([np.nan]), ValueError, r"log_std\[0\] = nan"),
        (lambda: dist.diag_gaussian_entropy(np.zeros((1, 1, 1))), ValueError, "log_std must have shape"),
        (lambda: dist.diag_gaussian_kl(MEAN, LOG_STD, MEAN, [0.0, np.inf]), ValueError,
         r"log_std_q must be finite.*log_std_q\[1\] = inf"),
        (lambda: dist.diag_gaussian_kl(MEAN, LOG_STD, np.zeros((3, 1)), LOG_STD), ValueError,
         "mean_q must have the shape of mean_p"),
        (lambda: dist.diag_gaussian_fisher_product(MEAN, LOG_STD, MEAN, np.zeros(3)), ValueError,
         r"v_log_std must have shape \(2,\), \(1, 2\) or \(3, 2\), got shape \(3,\)"),
        (lambda: dist.diag_gaussian_fisher_product(MEAN, LOG_STD, MEAN, [np.nan, 0.0]), ValueError,
         r"v_log_std must be finite, got v_log_std\[0\] = nan"),
        (lambda: dist.diag_gaussian_fisher_product(MEAN, LOG_STD, MEAN.T, LOG_STD), ValueError,
         "v_mean must have the shape of mean"),
        (lambda: dist.diag_gaussian_sample(MEAN, LOG_STD, 42), TypeError, "rng"),
        (lambda: dist.diag_gaussian_log_prob_grad(MEAN, LOG_STD, MEAN.astype(object)), TypeError,
         "x must be a real float32 or float64 array, got dtype object"),
    ],
)
def test_misuse_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_masked_entries_and_the_limits_themselves_are_accepted():
    logits = with_value(LOGITS, (0, slice(0, 3)), -np.inf)
    assert dist.categorical_entropy(logits)[0] == 0.0
    assert dist.categorical_log_prob(logits, [0, 0, 0])[0] == -np.inf
    assert np.isfinite(dist.diag_gaussian_log_prob(MEAN, [-100.0, 100.0], MEAN)).all()


def test_non_contiguous_inputs_are_handled():
    rng = np.random.default_rng(1)
    wide = rng.standard_normal((4, 8))
    view = wide[:, ::2]
    np.testing.assert_array_equal(dist.categorical_entropy(view), dist.categorical_entropy(view.copy()))
    view_t = rng.standard_normal((2, 3)).T
    np.testing.assert_array_equal(
        dist.diag_gaussian_log_prob(view_t, LOG_STD, view_t),
        dist.diag_gaussian_log_prob(view_t.copy(), LOG_STD, view_t.copy()),
    )
    with pytest.raises(ValueError, match=r"logits\[1, 2\] = nan"):
        dist.categorical_entropy(with_value(wide, (1, 4), np.nan)[:, ::2])


DTYPES = st.sampled_from([np.float32, np.float64])


@given(case=tt.logits(st.integers(1, 4), st.integers(1, 6), extremes=True, dtype=DTYPES))
def test_every_valid_logits_batch_is_accepted_and_gives_no_nan(case):
    logits = case.logits
    for values in (dist.categorical_probs(logits), dist.categorical_log_softmax(logits),
                   dist.categorical_entropy(logits), dist.categorical_kl(logits, logits),
                   dist.categorical_fisher_product(logits, np.ones_like(logits))):
        assert not np.any(np.isnan(values))
    actions = np.argmax(logits, axis=1)  # always an unmasked category
    assert np.all(np.isfinite(dist.categorical_log_prob(logits, actions)))


@given(case=tt.diag_gaussians(st.integers(1, 4), st.integers(1, 3), log_std=dist.LOG_STD_LIMITS,
                              dtype=DTYPES))
def test_log_std_within_the_hard_limits_is_accepted_and_gives_no_nan(case):
    x = case.mean
    for values in (dist.diag_gaussian_log_prob(case.mean, case.log_std, x),
                   dist.diag_gaussian_entropy(case.log_std),
                   dist.diag_gaussian_kl(case.mean, case.log_std, case.mean, case.log_std),
                   *dist.diag_gaussian_fisher_product(case.mean, case.log_std, x, case.log_std)):
        assert not np.any(np.isnan(values))


@pytest.mark.parametrize("dtype", [">i8", "<i8", ">i4", ">u2"])
def test_actions_in_either_byte_order_give_the_native_results(dtype):
    # a big-endian integer array passed the dtype check and then failed to compile
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((4, 3))
    native = np.array([0, 2, 1, 2])
    actions = native.astype(dtype)
    for f in (dist.categorical_log_prob, dist.categorical_log_prob_grad):
        assert f(logits, actions).tobytes() == f(logits, native).tobytes()
    with pytest.raises(ValueError, match=r"actions\[1\] = 3"):
        dist.categorical_log_prob(logits, np.array([0, 3, 1, 2], dtype=">i8"))
