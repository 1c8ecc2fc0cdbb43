"""Numba ``njit(cache=True)`` kernels: every compiled kernel of the core lives in this package.

:mod:`.categorical` and :mod:`.diag_gaussian` hold the distribution kernels exported here;
:mod:`.linalg` holds the fused vector updates of the CG loop and :mod:`.cg` the kernels that
do a whole float64 or complex128 CG iteration after the operator, calling NumPy's own BLAS
dot products (both private to :func:`trustregion.cg`).

These are the raw kernels: no validation, no dtype conversion, one compiled
specialization per argument type (cached on disk, so a second process loads rather
than compiles). Use them from your own ``numba.njit`` code or in hot loops where the
inputs are known to be valid; everywhere else use :mod:`trustregion.distributions`,
which checks shapes, dtypes and finiteness and then calls exactly one of these.

Each kernel file documents its input contract.
"""

from trustregion.kernels.categorical import (
    categorical_entropy,
    categorical_find_invalid_action,
    categorical_find_invalid_logit,
    categorical_fisher_product,
    categorical_kl,
    categorical_log_prob,
    categorical_log_prob_grad,
    categorical_log_softmax,
    categorical_probs,
    categorical_sample_inverse_cdf,
)
from trustregion.kernels.diag_gaussian import (
    diag_gaussian_entropy,
    diag_gaussian_fisher_product,
    diag_gaussian_kl,
    diag_gaussian_log_prob,
    diag_gaussian_log_prob_grad,
    diag_gaussian_sample_from_noise,
    find_value_outside,
)

__all__ = [
    "categorical_entropy",
    "categorical_find_invalid_action",
    "categorical_find_invalid_logit",
    "categorical_fisher_product",
    "categorical_kl",
    "categorical_log_prob",
    "categorical_log_prob_grad",
    "categorical_log_softmax",
    "categorical_probs",
    "categorical_sample_inverse_cdf",
    "diag_gaussian_entropy",
    "diag_gaussian_fisher_product",
    "diag_gaussian_kl",
    "diag_gaussian_log_prob",
    "diag_gaussian_log_prob_grad",
    "diag_gaussian_sample_from_noise",
    "find_value_outside",
]
