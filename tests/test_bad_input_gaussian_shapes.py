"""validate=False skips value checks, never the shape checks that keep kernels inside arrays.

Before, a short ``log_std`` or ``mean_q`` with ``validate=False`` read past the end of the
array (garbage, or a segfault of the interpreter for large N).
"""

import subprocess
import sys

import numpy as np
import pytest

from trustregion import distributions as dist

N, D = 64, 3
Z = np.zeros((N, D))


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize(
    "call, name",
    [
        (lambda v: dist.diag_gaussian_log_prob(Z, np.zeros((2, D)), Z, validate=v), "log_std"),
        (lambda v: dist.diag_gaussian_log_prob(Z, np.zeros(D + 1), Z, validate=v), "log_std"),
        (lambda v: dist.diag_gaussian_log_prob(Z, np.zeros(D), Z[:3], validate=v), "x"),
        (lambda v: dist.diag_gaussian_log_prob_grad(Z, np.zeros((2, D)), Z, validate=v), "log_std"),
        (lambda v: dist.diag_gaussian_kl(Z, np.zeros(D), Z[:1], np.zeros(D), validate=v), "mean_q"),
        (lambda v: dist.diag_gaussian_kl(Z, np.zeros(D), Z, np.zeros((2, D)), validate=v), "log_std_q"),
        (lambda v: dist.diag_gaussian_kl(Z, np.zeros((5, D)), Z, np.zeros(D), validate=v), "log_std_p"),
        (lambda v: dist.diag_gaussian_fisher_product(Z, np.zeros(D), Z[:2], np.zeros(D), validate=v), "v_mean"),
        (lambda v: dist.diag_gaussian_fisher_product(Z, np.zeros(D), Z, np.zeros((3, D)), validate=v), "v_log_std"),
        (lambda v: dist.diag_gaussian_sample(Z, np.zeros((7, D)), np.random.default_rng(0), validate=v), "log_std"),
        (lambda v: dist.diag_gaussian_log_prob(np.zeros(D), np.zeros(D), np.zeros(D), validate=v), "mean"),
    ],
)
def test_mismatched_shapes_raise_naming_the_argument(call, name, validate):
    with pytest.raises(ValueError, match=rf"^{name} "):
        call(validate)


@pytest.mark.parametrize("log_std", [np.zeros(D), np.zeros((1, D)), np.full((N, D), -0.5)])
def test_valid_shapes_agree_with_the_validated_path(log_std):
    rng = np.random.default_rng(1)
    mean, x = rng.standard_normal((N, D)), rng.standard_normal((N, D))
    np.testing.assert_array_equal(dist.diag_gaussian_log_prob(mean, log_std, x, validate=False),
                                  dist.diag_gaussian_log_prob(mean, log_std, x))
    np.testing.assert_array_equal(dist.diag_gaussian_kl(mean, log_std, x, log_std, validate=False),
                                  dist.diag_gaussian_kl(mean, log_std, x, log_std))


def test_the_former_segfault_is_a_clean_error_in_a_fresh_interpreter():
    code = (
        "import numpy as np\n"
        "from trustregion import distributions as d\n"
        "try:\n"
        "    d.diag_gaussian_log_prob(np.zeros((10**6, 4)), np.zeros((2, 4)), np.zeros((10**6, 4)),"
        " validate=False)\n"
        "except ValueError as e:\n"
        "    print('ValueError', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ValueError log_std must have shape")
