"""trustregion.testing checks: their messages, arguments, dtypes and reports."""

import numpy as np
import pytest

from trustregion import testing as tt


def test_assert_close_reports_the_largest_errors_and_where():
    tt.assert_close([1.0, np.nan, np.inf], [1.0, np.nan, np.inf])
    with pytest.raises(AssertionError) as error:
        tt.assert_close(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 2.5], [3.0, 4.1]]), rtol=1e-3)
    message = str(error.value)
    assert "differ in 2 of 4 entries" in message
    assert "largest absolute error 0.5 at index (0, 1): actual 2, desired 2.5" in message
    assert "largest relative error 0.2 at index (0, 1)" in message
    with pytest.raises(AssertionError, match="non-finite mismatch at 1 entries, first at index \\(1,\\)"):
        tt.assert_close([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(AssertionError, match="different shapes: actual \\(2,\\), desired \\(3,\\)"):
        tt.assert_close(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="rtol and atol"):
        tt.assert_close(1.0, 1.0, rtol=-1.0)


def test_a_failure_names_the_check_the_direction_the_seed_and_the_tolerance_source():
    with pytest.raises(AssertionError) as error:
        tt.check_grad(lambda x: float(x @ x), lambda x: 2.002 * x, np.array([1.0, -2.0]), seed=5)
    message = str(error.value)
    assert message.startswith("check_grad: ")
    assert "direction #0 (seed 5)" in message
    assert "error found" in message and "> tolerance" in message
    assert "Richardson truncation estimate |D(h) - D(h/2)|" in message
    assert "rounding bound" in message and "eps(float64)" in message


def test_reports_count_calls_and_every_comparison_passed():
    report = tt.check_hvp(lambda x: 3 * x**2, lambda x, v: 6 * x * v, np.array([0.5, 1.5, -1.0]))
    assert report.check == "check_hvp"
    assert report.calls == {"grad": 8, "hvp": 3}
    assert 0 <= report.worst_ratio < 1
    assert all(c.error <= c.tolerance for c in report.comparisons)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checks_run_in_the_input_dtype_and_pass_correct_float32_code(dtype):
    A = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]], dtype=dtype)
    seen = set()

    def f(x):
        seen.add(x.dtype)
        return 0.5 * x @ A @ x + np.sum(np.cos(x))

    def grad(x):
        return A @ x - np.sin(x)

    def hvp(x, v):
        seen.add(v.dtype)
        return A @ v - np.cos(x) * v

    x = np.array([0.3, -1.2, 2.0], dtype=dtype)
    tt.check_grad(f, grad, x)
    tt.check_hvp(grad, hvp, x)
    tt.check_jvp_vjp(lambda x: np.tanh(A @ x), lambda x, t: (1 - np.tanh(A @ x) ** 2) * (A @ t),
                     lambda x, c: A.T @ ((1 - np.tanh(A @ x) ** 2) * c), x)
    assert seen == {np.dtype(dtype)}
    with pytest.raises(AssertionError, match="check_hvp"):
        tt.check_hvp(grad, lambda x, v: hvp(x, v) * 1.01, x)


def test_a_wrong_shape_is_reported_not_broadcast():
    with pytest.raises(AssertionError, match=r"check_grad: grad\(x\) returned shape \(1,\), expected \(2,\)"):
        tt.check_grad(lambda x: float(x @ x), lambda x: np.array([1.0]), np.zeros(2))
    with pytest.raises(AssertionError, match=r"kl\(p, q\) returned shape \(\), expected the batch shape \(2,\)"):
        tt.check_kl(lambda p, q: 0.0, np.zeros((2, 3)), np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: tt.check_grad(len, len, np.zeros(2), n_directions=0), ValueError, "n_directions"),
        (lambda: tt.check_grad(len, len, np.array([np.nan])), ValueError, "x must be finite"),
        (lambda: tt.check_grad(len, len, np.array(["a"])), TypeError, "x must be a real"),
        (lambda: tt.check_grad(3, len, np.zeros(2)), TypeError, "f must be callable"),
        (lambda: tt.check_fvp(len, len, np.zeros((2, 2))), ValueError, "params must be 1-D"),
        (lambda: tt.check_fvp(len, len, np.zeros(2), damping=-1.0), ValueError, "damping"),
        (lambda: tt.check_kl(len, np.zeros((2, 2)), np.zeros((2, 2)), false_alarm_rate=2.0), ValueError,
         "false_alarm_rate"),
        (lambda: tt.check_kl(len, np.zeros((2, 2)), np.zeros((2, 2)), log_prob=len), ValueError,
         "both log_prob and sample"),
        (lambda: tt.check_symmetric_operator(len, 2, dtype=np.int32), TypeError, "float32 or float64"),
        (lambda: tt.check_cg_contract(len, np.eye(3), np.ones(2)), ValueError, r"A must have shape \(2, 2\)"),
        (lambda: tt.check_steihaug_contract(len, np.ones(2), np.eye(2), 0.0), ValueError, "radius"),
    ],
)
def test_misuse_of_a_check_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_check_kl_catches_a_kl_that_averages_the_batch():
    p, q = np.array([[0.0, 1.0], [2.0, -1.0]]), np.array([[1.0, 0.0], [0.0, 0.0]])
    kl = tt.categorical_kl_reference
    tt.check_kl(kl, p, q, shift_invariant=True)
    with pytest.raises(AssertionError, match="batched KL equals the row computed alone"):
        tt.check_kl(lambda a, b: np.full(len(a), kl(a, b).mean()), p, q)


def test_check_symmetric_operator_uses_probes_above_max_dense():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((40, 40))
    report = tt.check_symmetric_operator((B @ B.T).dot, 40, psd=True, max_dense=10)
    assert report.calls["matvec"] < 40 + 16 + 31
    with pytest.raises(AssertionError, match="Lanczos"):
        tt.check_symmetric_operator((B + B.T).dot, 40, psd=True, max_dense=10)
    with pytest.raises(AssertionError, match="random pair #0"):
        tt.check_symmetric_operator(B.dot, 40, max_dense=10)
