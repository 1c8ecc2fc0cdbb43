"""Regression tests from a fuzzing round on trustregion.distributions (session 12).

Each test failed before its fix: a silent NaN / wrong value from the categorical Fisher
product for finite tangents near the float64 limit, a raw NumPy error for ragged lists,
numpy.ma masks silently dropped, and big-endian float arrays refused as "not float64".
"""

import numpy as np
import pytest

from trustregion import distributions as dist

BIG = 1.7e308


@pytest.mark.parametrize(
    ("logits", "v"),
    [
        ([[0.0, 0.0, -np.inf]], [[BIG, BIG, 0.0]]),  # was [[-inf, -inf, nan]]
        ([[0.0, 0.0, -1e4]], [[BIG, BIG, 0.0]]),  # underflowed category: also nan
        ([[0.0, 0.0]], [[BIG, BIG]]),  # F 1 = 0, was -inf
        ([[np.log(9.0), 0.0]], [[BIG, -BIG]]),  # second entry was -inf, is -0.18 BIG
    ],
)
def test_categorical_fisher_product_of_a_near_overflow_tangent_has_no_spurious_inf_or_nan(
    logits, v
):
    out = dist.categorical_fisher_product(logits, v)
    assert np.all(np.isfinite(out))
    # F is linear and scaling by a power of two is exact: same bits as a small tangent
    small = dist.categorical_fisher_product(logits, np.ldexp(np.array(v), -1000))
    assert out.tobytes() == np.ldexp(small, 1000).tobytes()


def test_categorical_fisher_product_near_overflow_matches_exact_scaling_on_random_rows():
    rng = np.random.default_rng(12)
    for k in (1, 2, 5, 40):
        logits = rng.standard_normal((6, k)) * 3
        if k > 1:
            logits[::2, 0] = -np.inf
        # mostly one sign, so that the row sums p.v overflow without the scaling
        sign = np.where(rng.random((6, k)) < 0.8, 1.0, -1.0)
        v = sign * 10.0 ** rng.uniform(306, 308.2, (6, k))
        v[1] = 1.5e308  # a constant row: F v = 0 exactly (F 1 = 0)
        out = dist.categorical_fisher_product(logits, v)
        ref = np.ldexp(dist.categorical_fisher_product(logits, np.ldexp(v, -1000)), 1000)
        assert out.tobytes() == ref.tobytes()
        assert not np.any(np.isnan(out))
        assert np.all(np.abs(out[1]) <= 1e-16 * 1.5e308)
        # symmetric PSD still holds at this scale (checked on the rescaled values)
        w = rng.standard_normal((6, k))
        fw = dist.categorical_fisher_product(logits, w)
        us = np.ldexp(v, -1000)
        np.testing.assert_allclose(np.sum(w * np.ldexp(out, -1000), axis=1),
                                   np.sum(us * fw, axis=1), rtol=1e-10, atol=1e-6)


def test_categorical_fisher_product_still_rejects_non_finite_huge_tangents():
    with pytest.raises(ValueError, match=r"v must be finite, got v\[0, 1\] = inf"):
        dist.categorical_fisher_product([[0.0, 0.0]], [[BIG, np.inf]])


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: dist.categorical_probs([[0.0, 1.0], [2.0]]), "logits"),
        (lambda: dist.categorical_kl([[0.0, 1.0]], [[0.0], [1.0, 2.0]]), "logits_q"),
        (lambda: dist.categorical_log_prob([[0.0, 1.0]], [[0], [1, 0]]), "actions"),
        (lambda: dist.diag_gaussian_log_prob([[0.0], [1.0, 2.0]], [0.0], [[0.0]]), "mean"),
        (lambda: dist.diag_gaussian_entropy([[0.0], [1.0, 2.0]]), "log_std"),
        (lambda: dist.diag_gaussian_fisher_product([[0.0]], [0.0], [[0.0]], [[1.0], []]),
         "v_log_std"),
    ],
)
def test_a_ragged_list_is_a_value_error_naming_the_argument(call, name):
    # was NumPy's own "setting an array element with a sequence", naming nothing
    with pytest.raises(ValueError, match=rf"^{name} must be a rectangular array"):
        call()


def test_a_masked_array_with_masked_entries_is_refused_not_silently_unmasked():
    logits = np.ma.array([[0.0, 1e308]], mask=[[False, True]])
    # was [[0., 1.]]: all the mass on the category the user masked
    with pytest.raises(TypeError, match=r"logits has masked entries.*-inf logit"):
        dist.categorical_probs(logits)
    with pytest.raises(TypeError, match="mean has masked entries"):
        dist.diag_gaussian_log_prob(np.ma.array([[0.0]], mask=[[True]]), [0.0], [[0.0]])
    with pytest.raises(TypeError, match="actions has masked entries"):
        dist.categorical_log_prob([[0.0, 1.0]], np.ma.array([1], mask=[True]))
    # a masked array without masked entries is just its data
    plain = np.ma.array([[0.0, 1.0]])
    assert dist.categorical_probs(plain).tobytes() == dist.categorical_probs([[0.0, 1.0]]).tobytes()


@pytest.mark.parametrize("dtype", [">f8", ">f4"])
def test_big_endian_float_inputs_give_the_native_results(dtype):
    # was "TypeError: logits must be a real float32 or float64 array, got dtype >f8"
    rng = np.random.default_rng(4)
    native = np.dtype(dtype).newbyteorder("=")
    z = rng.standard_normal((3, 4)).astype(native)
    zb = z.astype(dtype)
    assert dist.categorical_probs(zb).tobytes() == dist.categorical_probs(z).tobytes()
    assert dist.categorical_probs(zb).dtype == native
    assert dist.categorical_kl(zb, z[::-1]).tobytes() == dist.categorical_kl(z, z[::-1]).tobytes()
    m = rng.standard_normal((3, 2)).astype(native)
    ls = np.array([0.1, -0.2], dtype=native)
    got = dist.diag_gaussian_log_prob(m.astype(dtype), ls.astype(dtype), m[::-1].astype(dtype))
    assert got.tobytes() == dist.diag_gaussian_log_prob(m, ls, m[::-1]).tobytes()
    with pytest.raises(ValueError, match=r"logits\[0, 1\] = nan"):
        dist.categorical_entropy(np.array([[0.0, np.nan]], dtype=dtype))
