r"""Numba kernels for batched diagonal Gaussian distributions in (mean, log_std) coordinates.

Row ``i`` is :math:`\mathcal N(\mu_i, \operatorname{diag}(\sigma_i^2))` with
:math:`\sigma_{ij} = e^{\ell_{ij}}`. ``mean`` and ``x`` have shape ``(N, D)``; ``log_std``
has shape ``(D,)`` (shared by all rows, the state-independent TRPO default),
``(1, D)`` or ``(N, D)``.

Contract (the kernels do **not** check it; :mod:`trustregion.distributions` does):

- every input is a finite float32 or float64 array with the shapes above; with
  ``log_std`` in ``[-20, 5]`` every result is finite and accurate to rounding
  (arithmetic runs in float64 internally, results are rounded once to the dtype of
  ``mean``, or of ``log_std`` for the entropy);
- a ``log_std`` row count other than 1 or ``N`` reads out of bounds.

Any memory layout is accepted; kernels are deterministic and single-threaded, and
can be called from a user's ``numba.njit`` code:

>>> import numba
>>> import numpy as np
>>> from trustregion.kernels import diag_gaussian_entropy
>>> @numba.njit
... def total_entropy(log_std):
...     return diag_gaussian_entropy(log_std).sum()
>>> round(float(total_entropy(np.zeros(1))), 6)  # 0.5 * (1 + log(2 pi))
1.418939

This file is self-contained (no calls into other kernel files) because Numba's
on-disk cache of a caller is not invalidated when a callee elsewhere changes.
"""

import math

import numba
import numpy as np

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@numba.njit(cache=True)
def diag_gaussian_log_prob(mean, log_std, x):
    r"""Log-density :math:`-\tfrac12\sum_j z_{ij}^2 - \sum_j \ell_{ij} - \tfrac D2\log 2\pi`.

    Shape ``(N,)``, with :math:`z_{ij} = (x_{ij} - \mu_{ij})\, e^{-\ell_{ij}}`.
    """
    n, d = mean.shape
    ls = np.atleast_2d(log_std)
    shared = ls.shape[0] == 1
    out = np.empty(n, dtype=mean.dtype)
    inv_std = np.empty(d)
    constant = 0.0
    for i in range(n):
        if i == 0 or not shared:
            r = 0 if shared else i
            constant = d * _HALF_LOG_2PI
            for j in range(d):
                ell = np.float64(ls[r, j])
                inv_std[j] = math.exp(-ell)
                constant += ell
        quad = 0.0
        for j in range(d):
            z = (np.float64(x[i, j]) - np.float64(mean[i, j])) * inv_std[j]
            quad += z * z
        out[i] = -0.5 * quad - constant
    return out


@numba.njit(cache=True)
def diag_gaussian_entropy(log_std):
    r"""Entropy :math:`H = \sum_j \ell_j + \tfrac D2 (1 + \log 2\pi)` per row of ``log_std``.

    Shape ``(R,)`` where ``R`` is 1 for a ``(D,)`` input and the row count otherwise.
    """
    ls = np.atleast_2d(log_std)
    rows, d = ls.shape
    out = np.empty(rows, dtype=log_std.dtype)
    for i in range(rows):
        h = d * (0.5 + _HALF_LOG_2PI)
        for j in range(d):
            h += np.float64(ls[i, j])
        out[i] = h
    return out


@numba.njit(cache=True)
def diag_gaussian_kl(mean_p, log_std_p, mean_q, log_std_q):
    r""":math:`\mathrm{KL}(p_i\,\|\,q_i)`, shape ``(N,)``.

    Per dimension, with :math:`t = 2(\ell^p - \ell^q)` and
    :math:`\delta = (\mu^p - \mu^q) e^{-\ell^q}`,

    .. math:: \tfrac12\bigl(\sigma_p^2/\sigma_q^2 - 1 - \log(\sigma_p^2/\sigma_q^2)
              + \delta^2\bigr) = \tfrac12\bigl(\operatorname{expm1}(t) - t + \delta^2\bigr),

    the ``expm1`` form bringing the absolute error of the spread term down from about
    :math:`\varepsilon` (the textbook form) to about :math:`\varepsilon |t|` when the two
    stds are close (a relative error of about :math:`\varepsilon / |t|`).
    ``KL(p, p)`` is exactly 0.
    """
    n, d = mean_p.shape
    lsp = np.atleast_2d(log_std_p)
    lsq = np.atleast_2d(log_std_q)
    shared_p = lsp.shape[0] == 1
    shared_q = lsq.shape[0] == 1
    out = np.empty(n, dtype=mean_p.dtype)
    spread = np.empty(d)  # expm1(t) - t per dimension
    inv_std_q = np.empty(d)
    for i in range(n):
        if i == 0 or not (shared_p and shared_q):
            rp = 0 if shared_p else i
            rq = 0 if shared_q else i
            for j in range(d):
                ell_q = np.float64(lsq[rq, j])
                t = 2.0 * (np.float64(lsp[rp, j]) - ell_q)
                spread[j] = math.expm1(t) - t
                inv_std_q[j] = math.exp(-ell_q)
        acc = 0.0
        for j in range(d):
            delta = (np.float64(mean_p[i, j]) - np.float64(mean_q[i, j])) * inv_std_q[j]
            acc += spread[j] + delta * delta
        out[i] = 0.5 * acc
    return out


@numba.njit(cache=True)
def diag_gaussian_fisher_product(mean, log_std, v_mean, v_log_std):
    r"""Fisher matrix in (mean, log_std) coordinates times a tangent, row by row.

    Per dimension the Fisher is :math:`\operatorname{diag}(\sigma^{-2}, 2)`, so

    - ``fv_mean = v_mean * exp(-2 log_std)``, shape ``(N, D)`` (``mean.shape``);
    - ``fv_log_std = 2 v_log_std``, **2-D** here: shape ``(R, D)`` with ``R`` the
      larger row count of ``np.atleast_2d(log_std)`` and ``np.atleast_2d(v_log_std)``
      (:func:`trustregion.distributions.diag_gaussian_fisher_product` returns ``(D,)``
      when both are ``(D,)``).

    ``mean`` only fixes ``N`` and the output dtype: the Fisher does not depend on it.
    """
    n, d = mean.shape
    ls = np.atleast_2d(log_std)
    vls = np.atleast_2d(v_log_std)
    shared = ls.shape[0] == 1
    fv_mean = np.empty((n, d), dtype=mean.dtype)
    precision = np.empty(d)
    for i in range(n):
        if i == 0 or not shared:
            r = 0 if shared else i
            for j in range(d):
                precision[j] = math.exp(-2.0 * np.float64(ls[r, j]))
        for j in range(d):
            fv_mean[i, j] = np.float64(v_mean[i, j]) * precision[j]
    rows = max(ls.shape[0], vls.shape[0])
    v_shared = vls.shape[0] == 1
    fv_log_std = np.empty((rows, d), dtype=mean.dtype)
    for i in range(rows):
        r = 0 if v_shared else i
        for j in range(d):
            fv_log_std[i, j] = 2.0 * np.float64(vls[r, j])
    return fv_mean, fv_log_std


@numba.njit(cache=True)
def diag_gaussian_log_prob_grad(mean, log_std, x):
    r"""Score of :math:`\log p_i(x_i)` with respect to the mean and the log_std, per sample.

    Returns ``(d_mean, d_log_std)``, both ``(N, D)`` (even for a shared ``(D,)``
    log_std: sum ``d_log_std`` over rows for the gradient of the shared parameter):
    :math:`\partial/\partial\mu_{ij} = z_{ij} e^{-\ell_{ij}}` and
    :math:`\partial/\partial\ell_{ij} = z_{ij}^2 - 1` with
    :math:`z_{ij} = (x_{ij} - \mu_{ij}) e^{-\ell_{ij}}`.
    """
    n, d = mean.shape
    ls = np.atleast_2d(log_std)
    shared = ls.shape[0] == 1
    d_mean = np.empty((n, d), dtype=mean.dtype)
    d_log_std = np.empty((n, d), dtype=mean.dtype)
    inv_std = np.empty(d)
    for i in range(n):
        if i == 0 or not shared:
            r = 0 if shared else i
            for j in range(d):
                inv_std[j] = math.exp(-np.float64(ls[r, j]))
        for j in range(d):
            z = (np.float64(x[i, j]) - np.float64(mean[i, j])) * inv_std[j]
            d_mean[i, j] = z * inv_std[j]
            d_log_std[i, j] = z * z - 1.0
    return d_mean, d_log_std


@numba.njit(cache=True)
def diag_gaussian_sample_from_noise(mean, log_std, noise):
    r"""Reparameterized sample :math:`x_{ij} = \mu_{ij} + e^{\ell_{ij}} \varepsilon_{ij}`.

    Shape ``(N, D)``; ``noise`` holds standard normal draws of shape ``(N, D)``.
    """
    n, d = mean.shape
    ls = np.atleast_2d(log_std)
    shared = ls.shape[0] == 1
    out = np.empty((n, d), dtype=mean.dtype)
    std = np.empty(d)
    for i in range(n):
        if i == 0 or not shared:
            r = 0 if shared else i
            for j in range(d):
                std[j] = math.exp(np.float64(ls[r, j]))
        for j in range(d):
            out[i, j] = np.float64(mean[i, j]) + std[j] * np.float64(noise[i, j])
    return out


@numba.njit(cache=True)
def find_value_outside(values, low, high):
    """Flat index of the first entry of the 1-D ``values`` not in ``[low, high]``, else -1.

    NaN is never inside. Used by the validating layer (finiteness and range checks):
    a branch-free pass that vectorizes, then a locating pass only when one is found.
    """
    bad = False
    for i in range(values.shape[0]):
        v = values[i]
        bad |= not (v >= low and v <= high)
    if not bad:
        return -1
    for i in range(values.shape[0]):
        v = values[i]
        if not (v >= low and v <= high):
            return i
    return -1
