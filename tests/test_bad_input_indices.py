"""Issue 9, cause 5 (core part): category indices are bound-checked even with ``validate=False``.

Numba does not bounds-check, so an out-of-range action used to read outside the logits
buffer (garbage, or a segfault for a large index). The two kernels that take indices,
``categorical_log_prob`` and ``categorical_log_prob_grad``, now check every index and the
number of actions (an ``IndexError`` from the raw kernel), and the Python API reports a
``ValueError`` naming ``actions`` and the first bad entry, whichever ``validate`` says.
The kernels that read a second array row by row alongside the logits (``logits_q``,
``v``, ``uniforms``) check its shape for the same reason.
"""

import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trustregion import distributions as dist
from trustregion import kernels

FUNCTIONS = [dist.categorical_log_prob, dist.categorical_log_prob_grad]
KERNELS = [kernels.categorical_log_prob, kernels.categorical_log_prob_grad]
INT64_MIN = np.iinfo(np.int64).min
INT64_MAX = np.iinfo(np.int64).max


def reference_log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("row", "value"), [
    (0, 4), (2, 4), (1, -1), (2, 1_000_000_000), (0, INT64_MAX), (1, INT64_MIN),
])
def test_out_of_range_index_is_a_value_error_naming_the_entry(validate, function, dtype,
                                                               row, value):
    logits = np.zeros((3, 4), dtype=dtype)
    actions = np.array([0, 1, 2], dtype=np.int64)
    actions[row] = value
    with pytest.raises(ValueError, match=rf"actions must lie in \[0, 4\).*"
                                         rf"actions\[{row}\] = {value}$"):
        function(logits, actions, validate=validate)


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("length", [0, 2, 4, 100])
def test_wrong_number_of_actions_is_a_value_error_without_validation(function, length):
    logits = np.zeros((3, 4))
    actions = np.zeros(length, dtype=np.int64)
    with pytest.raises(ValueError, match=rf"actions must have shape \(3,\), got shape "
                                         rf"\({length},\)"):
        function(logits, actions, validate=False)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("actions", [[0, 1, 5], [-3, 0, 0], [0, 1]])
def test_raw_kernels_raise_index_error(kernel, actions):
    with pytest.raises(IndexError, match="actions"):
        kernel(np.zeros((3, 5 if len(actions) == 3 else 4)), np.array(actions, dtype=np.int64))


def test_raw_kernel_check_holds_inside_user_njit_code():
    @numba.njit
    def total_log_prob(logits, actions):
        return kernels.categorical_log_prob(logits, actions).sum()

    logits = np.zeros((2, 3))
    assert total_log_prob(logits, np.array([0, 2])) == pytest.approx(2 * -np.log(3.0))
    with pytest.raises(IndexError, match="actions"):
        total_log_prob(logits, np.array([0, 3]))


@given(
    logits=hnp.arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(1, 9)),
                      elements=st.floats(-50, 50)),
    data=st.data(),
)
def test_any_bad_index_anywhere_is_reported_and_good_indices_match_numpy(logits, data):
    n, k = logits.shape
    good = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))
    expected = reference_log_softmax(logits)[np.arange(n), good]
    for validate in (True, False):
        np.testing.assert_allclose(dist.categorical_log_prob(logits, good, validate=validate),
                                   expected, rtol=1e-12, atol=1e-12)
    bad = good.copy()
    rows = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    for row in rows:
        bad[row] = data.draw(st.one_of(st.integers(INT64_MIN, -1), st.integers(k, INT64_MAX)))
    first = min(rows)
    for function in FUNCTIONS:
        for validate in (True, False):
            with pytest.raises(ValueError, match=rf"actions\[{first}\] = {bad[first]}$"):
                function(logits, bad, validate=validate)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: dist.categorical_kl(np.zeros((5, 4)), np.zeros((1, 4)), validate=False),
     "logits_q must have the shape of logits_p"),
    (lambda: dist.categorical_kl(np.zeros((5, 4)), np.zeros((5, 3)), validate=False),
     "logits_q must have the shape of logits_p"),
    (lambda: dist.categorical_kl(np.zeros((5, 4)), np.zeros((6, 4)), validate=False),
     "logits_q must have the shape of logits_p"),
    (lambda: dist.categorical_fisher_product(np.zeros((5, 4)), np.zeros((2, 4)), validate=False),
     "v must have the shape of logits"),
    (lambda: dist.categorical_fisher_product(np.zeros((5, 4)), np.zeros((5, 2)), validate=False),
     "v must have the shape of logits"),
    (lambda: kernels.categorical_sample_inverse_cdf(np.zeros((5, 4)), np.zeros(3)),
     "uniforms must have one entry per row of logits"),
])
def test_mismatched_row_arrays_are_a_value_error_without_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_the_segfault_reproductions_are_now_clean_errors():
    # Before the fix each of these calls killed the interpreter (SIGSEGV): run them apart.
    script = textwrap.dedent("""
        import numpy as np
        from trustregion import distributions as d
        big = np.zeros((10**6, 4))
        for call in (
            lambda: d.categorical_log_prob(np.zeros((4, 3)), np.full(4, 10**15), validate=False),
            lambda: d.categorical_kl(big, np.zeros((1, 4)), validate=False),
            lambda: d.categorical_fisher_product(big, np.zeros((1, 4)), validate=False),
        ):
            try:
                call()
            except ValueError as exc:
                print(exc)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "actions must lie in [0, 3) for K = 3 categories, got actions[0] = 1000000000000000",
        "logits_q must have the shape of logits_p",
        "v must have the shape of logits",
    ]
