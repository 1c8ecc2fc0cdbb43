"""Issue 9, cause 2: an operator's output is checked, never silently cast.

A matvec that returns complex values for a real problem was truncated to its real part
(numpy only warns); now it is a ``TypeError`` naming the operator as the caller passed it.
Every validation message names the argument of the function the user called, never an
internal one (``natural_gradient_step(g, hvp, ...)`` says ``hvp`` and ``g``, not ``A`` and
``b``).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trustregion as tr
from trustregion import Status

G = np.array([1.0, -2.0, 0.5])
H = np.diag([2.0, 1.0, 3.0])


def complex_output(v):
    return H @ v + 1e-3j * v


def identity_complex(v):
    return v + 0j


# Each case: (call, error type, the argument name the message must start with).
COMPLEX_OUTPUT_CASES = {
    "cg A": (lambda: tr.cg(complex_output, G), "A"),
    "cg M": (lambda: tr.cg(H, G, M=identity_complex), "M"),
    "cg x0 warm start": (lambda: tr.cg(complex_output, G, x0=np.ones(3)), "A"),
    "steihaug hessp": (lambda: tr.steihaug_cg(complex_output, G, 1.0), "hessp"),
    "steihaug M": (lambda: tr.steihaug_cg(H.dot, G, 1.0, M=identity_complex), "M"),
    "natural_gradient_step hvp": (lambda: tr.natural_gradient_step(G, complex_output, 0.01), "hvp"),
    "cpo_step hvp": (lambda: tr.cpo_step(G, G[::-1].copy(), 0.1, complex_output, 0.01), "hvp"),
    "cg float32 A": (lambda: tr.cg(lambda v: v.astype(np.complex64), G.astype(np.float32)), "A"),
}


@pytest.mark.parametrize("case", sorted(COMPLEX_OUTPUT_CASES))
def test_complex_operator_output_is_rejected_naming_the_argument(case):
    call, name = COMPLEX_OUTPUT_CASES[case]
    with pytest.raises(TypeError, match=rf"^{name} returned complex values"):
        call()


# Messages that named an internal argument before (A, b, rtol, maxiter, "like b").
NAMING_CASES = {
    "natural_gradient_step hvp shape": (
        lambda: tr.natural_gradient_step(G, lambda v: np.ones(2), 0.01),
        ValueError, r"^hvp returned shape \(2,\), expected \(3,\)",
    ),
    "natural_gradient_step x0 shape": (
        lambda: tr.natural_gradient_step(G, H.dot, 0.01, x0=np.ones(2)),
        ValueError, r"^x0 must have shape \(3,\) like g",
    ),
    "natural_gradient_step cg_rtol": (
        lambda: tr.natural_gradient_step(G, H.dot, 0.01, cg_rtol=-1.0),
        ValueError, "^cg_rtol must be",
    ),
    "natural_gradient_step complex x0": (
        lambda: tr.natural_gradient_step(G, H.dot, 0.01, x0=np.ones(3) + 0j),
        TypeError, "^x0 must be a real",
    ),
    "natural_gradient_step hvp not callable": (
        lambda: tr.natural_gradient_step(G, "H", 0.01), TypeError, "^hvp must be callable",
    ),
    "cpo_step hvp shape": (
        lambda: tr.cpo_step(G, G, -1.0, lambda v: np.ones(4), 0.01),
        ValueError, r"^hvp returned shape \(4,\)",
    ),
    "cpo_step cg_rtol": (
        lambda: tr.cpo_step(G, G, -1.0, H.dot, 0.01, cg_rtol=np.nan), ValueError, "^cg_rtol",
    ),
    "steihaug M shape": (
        lambda: tr.steihaug_cg(H.dot, G, 1.0, M=np.eye(2)),
        ValueError, r"^M must have shape \(3, 3\) to match g \(3,\)",
    ),
    "steihaug complex M matrix": (
        lambda: tr.steihaug_cg(H.dot, G, 1.0, M=np.eye(3) * 1j), TypeError, "^M must be a real",
    ),
    "steihaug hessp shape": (
        lambda: tr.steihaug_cg(lambda v: np.ones((3, 3)), G, 1.0),
        ValueError, "^hessp returned shape",
    ),
    "cg A shape names b": (
        lambda: tr.cg(np.eye(2), G), ValueError, r"^A must have shape \(3, 3\) to match b \(3,\)",
    ),
    "cg non-Hermitian complex matrix": (
        lambda: tr.cg(np.array([[2.0, 1j], [1j, 2.0]]), np.ones(2)),
        ValueError, "^A must be Hermitian",
    ),
    "cg string output": (
        lambda: tr.cg(lambda v: np.array(["a"] * 3), G), TypeError, "^A returned dtype",
    ),
    "line search negative expected improvement": (
        lambda: tr.backtracking_line_search(
            lambda x: (0.0, 0.0), np.zeros(3), G, expected_improvement=-0.5, max_constraint=1.0
        ),
        ValueError, "^expected_improvement = -5.000e-01 < 0: full_step is not an ascent",
    ),
}


@pytest.mark.parametrize("case", sorted(NAMING_CASES))
def test_messages_name_the_callers_argument(case):
    call, error, match = NAMING_CASES[case]
    with pytest.raises(error, match=match):
        call()


def test_non_hermitian_callable_is_a_status_not_nan():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6))
    A = B @ B.conj().T + np.eye(6)
    A[0, 1] += 0.5  # no longer Hermitian; a callable cannot be checked up front
    res = tr.cg(lambda v: A @ v, rng.standard_normal(6) + 0j)
    assert res.status is Status.NON_REAL_CURVATURE and not res.success
    assert np.all(np.isfinite(res.x))
    assert "not Hermitian" in res.message and res.message.endswith(
        Status.NON_REAL_CURVATURE.remedy
    )


real_dtypes = st.sampled_from([np.float32, np.float64])
complex_dtypes = st.sampled_from([np.complex64, np.complex128])


def _solver_call(solver, op, g):
    """A call of ``solver`` with the operator ``op``, and the name its messages give ``op``."""
    calls = {
        "cg": (lambda: tr.cg(op, g), "A"),
        "steihaug": (lambda: tr.steihaug_cg(op, g, 1.0), "hessp"),
        "natural": (lambda: tr.natural_gradient_step(g, op, 0.01), "hvp"),
        "cpo": (lambda: tr.cpo_step(g, g[::-1].copy(), -1.0, op, 0.01), "hvp"),
    }
    return calls[solver]


@settings(max_examples=40, deadline=None)
@given(problem=st.sampled_from([np.float32, np.float64]), out=complex_dtypes,
       solver=st.sampled_from(["cg", "steihaug", "natural", "cpo"]))
def test_any_complex_output_dtype_is_rejected(problem, out, solver):
    g = G.astype(problem)

    def op(v):
        return (H @ v).astype(out)

    call, name = _solver_call(solver, op, g)
    with pytest.raises(TypeError, match=f"^{name} returned complex values"):
        call()


@settings(max_examples=40, deadline=None)
@given(problem=st.sampled_from([np.float32, np.float64]), out=real_dtypes,
       solver=st.sampled_from(["cg", "steihaug", "natural"]))
def test_real_output_of_any_precision_is_accepted_in_the_problems_dtype(problem, out, solver):
    g = G.astype(problem)

    def op(v):
        return (H @ v.astype(np.float64) * 4).astype(out)

    if solver == "cg":
        res = tr.cg(op, g, rtol=1e-6)
        assert res.success and res.x.dtype == problem
        np.testing.assert_allclose(res.x, np.linalg.solve(4 * H, G), rtol=1e-3)
    elif solver == "steihaug":
        res = tr.steihaug_cg(op, g, 10.0, rtol=1e-6)
        assert res.success and res.p.dtype == problem
    else:
        res = tr.natural_gradient_step(g, op, 0.01)
        assert res.status is Status.BOUNDARY and res.step.dtype == problem


@settings(max_examples=30, deadline=None)
@given(shape=st.sampled_from([(2,), (4,), (3, 2), (2, 3), ()]),
       solver=st.sampled_from(["cg", "steihaug", "natural", "cpo"]))
def test_wrong_output_shape_names_the_operator(shape, solver):
    def op(v):
        return np.ones(shape)

    call, name = _solver_call(solver, op, G)
    with pytest.raises(ValueError, match=f"^{name} returned shape"):
        call()


_BD = np.array([1.0, 0.0, 0.0])


@pytest.mark.parametrize(("call", "match"), [
    # numeric strings, bools and complex numbers passed float() and went on silently
    (lambda: tr.steihaug_cg(H.dot, G, "1"), r"radius must be a real number, got '1'"),
    (lambda: tr.cg(H, G, rtol="1e-5"), r"rtol must be a real number, got '1e-5'"),
    (lambda: tr.cpo_step(G, _BD, True, H.dot, 0.02), r"c must be a real number, got True"),
    (lambda: tr.cpo_step(G, _BD, "0.5", H.dot, 0.02), r"c must be a real number, got '0.5'"),
    (lambda: tr.cpo_step(G, _BD, np.complex128(-0.05 + 1j), H.dot, 0.02),
     r"c must be a real number"),
    (lambda: tr.backtracking_line_search(lambda x: (1.0, 0.0), np.zeros(3), np.ones(3),
                                         expected_improvement=1.0, max_constraint=1.0, f0="0"),
     r"f0 must be a real number, got '0'"),
    (lambda: tr.backtracking_line_search(lambda x: (np.complex128(1 + 5j), 0.0), np.zeros(3),
                                         np.ones(3), expected_improvement=1.0,
                                         max_constraint=1.0),
     r"evaluate must return two real numbers"),
    (lambda: tr.backtracking_line_search(lambda x: (1.0, "0"), np.zeros(3), np.ones(3),
                                         expected_improvement=1.0, max_constraint=1.0, f0=0.0),
     r"evaluate must return two real numbers"),
    # a callback that is not callable failed mid-solve without naming the argument
    (lambda: tr.cg(H, G, callback=3), r"callback must be callable, got int"),
])
def test_a_value_that_is_not_a_real_number_is_a_type_error_naming_it(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_real_numbers_of_every_kind_are_still_taken():
    ref = tr.steihaug_cg(H.dot, G, 1.0)
    for radius in (1, np.float32(1.0), np.int64(1), np.array(1.0)):
        assert tr.steihaug_cg(H.dot, G, radius).p.tobytes() == ref.p.tobytes()
