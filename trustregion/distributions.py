r"""Validated, batched categorical and diagonal-Gaussian distributions.

Each function checks its arguments once (shapes, dtypes, finiteness), then makes
exactly one call into a Numba kernel of :mod:`trustregion.kernels`. Rows are
independent distributions: ``N`` rows of ``K`` logits, or ``N`` rows of ``D`` action
dimensions.

Dtypes
    float32 and float64 are kept (big-endian ones are converted to native byte
    order); integer and bool inputs become float64; mixing float32 with float64
    promotes to float64. The result has the common dtype.
    Arithmetic runs in float64 inside the kernels either way.

Supported ranges (the tests cover them in both dtypes)
    - logits: any finite value (tested to magnitude ``1e4``; in float64 exact to
      rounding as long as a row's spread ``max - min`` stays below ``1e300``), and
      ``-inf`` for a masked category (probability 0). Every row needs one finite
      logit. NaN and ``+inf`` are a ``ValueError``. Probabilities that underflow
      to 0 contribute exactly 0 to entropies and KLs.
    - log_std: ``[-20, 5]`` gives finite, rounding-accurate results in both
      dtypes. Values in ``[-100, 100]`` are accepted and never produce NaN, but
      quantities that scale like :math:`\sigma^{-2}` may overflow to ``inf``
      (from ``log_std < -44`` in float32), and so may float32 samples (from
      ``log_std > 88``); values outside ``[-100, 100]`` are a ``ValueError``.
    - means, samples and tangent vectors: finite (``ValueError`` otherwise).
    - ragged nested lists are a ``ValueError`` and ``numpy.ma`` arrays with masked
      entries a ``TypeError`` (the mask would be silently dropped).

Hot loops
    Every function takes ``validate=False`` to skip the checks and conversions:
    the arguments must then already be float32/float64 ndarrays of one dtype and
    the documented shapes, and actions int64; invalid input then gives garbage, NaN
    or a ``ZeroDivisionError`` instead of a clear error, never a crash: action
    indices are bound-checked even then (an index outside ``[0, K)`` or a wrong
    number of actions is a ``ValueError`` naming ``actions``, at the cost of one
    comparison per row), and so are the shapes of ``logits_q`` and ``v`` against
    the logits. The
    raw kernels in :mod:`trustregion.kernels` (same names) are the zero-overhead
    option and can be called from ``numba.njit`` code.

See ``docs/distributions.md`` for the formulas and for why the Fisher products are
the exact Hessian blocks a trust-region step needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from trustregion.kernels import categorical as _cat
from trustregion.kernels import diag_gaussian as _gauss

FloatArray = npt.NDArray[np.floating[Any]]
IntArray = npt.NDArray[np.int64]

#: Hard limits on log_std; see the module docstring for the accurate range.
LOG_STD_LIMITS = (-100.0, 100.0)

_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)
_FLOAT_MAX = float(np.finfo(np.float64).max)
_LOG_STD_RANGE = "finite and within [{:g}, {:g}]".format(*LOG_STD_LIMITS)

__all__ = [
    "LOG_STD_LIMITS",
    "categorical_entropy",
    "categorical_fisher_product",
    "categorical_kl",
    "categorical_log_prob",
    "categorical_log_prob_grad",
    "categorical_log_softmax",
    "categorical_probs",
    "categorical_sample",
    "diag_gaussian_entropy",
    "diag_gaussian_fisher_product",
    "diag_gaussian_kl",
    "diag_gaussian_log_prob",
    "diag_gaussian_log_prob_grad",
    "diag_gaussian_sample",
]


# --------------------------------------------------------------------------- checks


def _as_ndarray(name: str, value: Any) -> np.ndarray:
    """``np.asarray(value)`` with the errors naming ``name`` (only for non-ndarrays)."""
    if isinstance(value, np.ma.MaskedArray) and np.ma.is_masked(value):
        # np.asarray would silently use the values under the mask
        hint = " (mask a category with a -inf logit)" if name.startswith("logits") else ""
        raise TypeError(f"{name} has masked entries: numpy.ma masks are not "
                        f"supported{hint}")
    try:
        return np.asarray(value)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(f"{name} must be a rectangular array: {exc}") from None


def _float_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a float32/float64 ndarray (ints and bools become float64), or raise."""
    array = value if type(value) is np.ndarray else _as_ndarray(name, value)
    dtype = array.dtype
    if dtype == _FLOAT64 or dtype == _FLOAT32:
        return array
    if dtype.kind in "iub":
        return array.astype(np.float64)
    if dtype.kind == "f" and dtype.itemsize in (4, 8) and not dtype.isnative:
        return array.astype(dtype.newbyteorder("="))  # the same values, native byte order
    raise TypeError(f"{name} must be a real float32 or float64 array, got dtype {dtype}")


def _common_dtype(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cast to float64 when float32 and float64 are mixed, else return unchanged."""
    first = arrays[0].dtype
    for a in arrays:
        if a.dtype != first:
            return tuple(a.astype(np.float64, copy=False) for a in arrays)
    return arrays


def _matrix(name: str, array: np.ndarray, what: str) -> None:
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape {what}, got shape {array.shape}")


def _same_shape(name: str, array: np.ndarray, ref_name: str, ref: np.ndarray) -> None:
    if array.shape != ref.shape:
        raise ValueError(
            f"{name} must have the shape of {ref_name} {ref.shape}, got shape {array.shape}"
        )


def _check_logits(name: str, logits: np.ndarray) -> None:
    _matrix(name, logits, "(N, K)")
    row, col, code = _cat.categorical_find_invalid_logit(logits)
    if code == 0:
        return
    if code == 4:
        raise ValueError(f"{name} must have at least one category, got shape {logits.shape}")
    if code == 3:
        raise ValueError(
            f"{name}[{row}] is -inf everywhere: every row needs at least one finite logit"
        )
    raise ValueError(
        f"{name} must be finite or -inf (a masked category), got {name}[{row}, {col}] = "
        f"{logits[row, col]}"
    )


def _logits(name: str, value: Any) -> np.ndarray:
    """``value`` as checked float32/float64 logits of shape ``(N, K)``, or raise."""
    logits = _float_array(name, value)
    _check_logits(name, logits)
    return logits


def _check_range(name: str, array: np.ndarray, low: float, high: float, what: str) -> None:
    bad = _gauss.find_value_outside(array.reshape(-1), low, high)
    if bad >= 0:
        index = np.unravel_index(bad, array.shape)
        where = ", ".join(str(int(i)) for i in index)
        raise ValueError(f"{name} must be {what}, got {name}[{where}] = {array[index]}")


def _check_finite(name: str, array: np.ndarray) -> None:
    _check_range(name, array, -_FLOAT_MAX, _FLOAT_MAX, "finite")


def _check_log_std_shape(name: str, array: np.ndarray, n: int, d: int) -> None:
    if not (array.shape == (d,) or (array.ndim == 2 and array.shape in ((1, d), (n, d)))):
        raise ValueError(
            f"{name} must have shape ({d},), (1, {d}) or ({n}, {d}), got shape {array.shape}"
        )


def _unchecked_gaussian_shapes(
    matrices: dict[str, Any], log_stds: dict[str, Any], ref: str
) -> None:
    """The shape checks ``validate=False`` keeps: O(1), and what keeps the kernels inside
    their arrays (a short ``log_std`` or ``mean_q`` would be read past its end)."""
    mean = matrices[ref]
    shape = getattr(mean, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"{ref} must be an ndarray of shape (N, D), got {type(mean).__name__} "
                         f"of shape {shape}")
    for name, array in matrices.items():
        if getattr(array, "shape", None) != shape:
            raise ValueError(f"{name} must have the shape of {ref} {shape}, got shape "
                             f"{getattr(array, 'shape', None)}")
    for name, array in log_stds.items():
        if not isinstance(array, np.ndarray):
            raise ValueError(f"{name} must be an ndarray with validate=False, got "
                             f"{type(array).__name__}")
        _check_log_std_shape(name, array, *shape)


def _check_log_std(name: str, log_std: np.ndarray, n: int, d: int) -> None:
    _check_log_std_shape(name, log_std, n, d)
    _check_range(name, log_std, *LOG_STD_LIMITS, _LOG_STD_RANGE)


def _actions(actions: Any, n: int, k: int) -> IntArray:
    array = actions if type(actions) is np.ndarray else _as_ndarray("actions", actions)
    if array.dtype.kind not in "iu":
        raise TypeError(f"actions must be an integer array, got dtype {array.dtype}")
    if not array.dtype.isnative:  # the same integers in this machine's byte order, which
        array = array.astype(array.dtype.newbyteorder("="))  # the kernels compile for
    if array.shape != (n,):
        raise ValueError(f"actions must have shape ({n},), got shape {array.shape}")
    bad = _cat.categorical_find_invalid_action(array, k)
    if bad >= 0:
        raise ValueError(
            f"actions must lie in [0, {k}) for K = {k} categories, "
            f"got actions[{bad}] = {array[bad]}"
        )
    return array.astype(np.int64, copy=False)


def _with_actions(kernel: Any, logits: np.ndarray, actions: Any) -> FloatArray:
    """``kernel(logits, actions)``; the kernel's ``IndexError`` becomes a ``ValueError``.

    The kernels bound-check the indices even when ``validate=False``; on a bad index
    the validating check runs to say which entry is wrong.
    """
    try:
        return kernel(logits, actions)
    except IndexError:
        pass
    _actions(actions, *logits.shape)  # raises the ValueError naming the bad entry
    raise ValueError("actions must be category indices in [0, K), one per row of logits")


def _generator(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {rng!r}"
        )
    return rng


# ---------------------------------------------------------------------- categorical


def categorical_probs(logits: Any, *, validate: bool = True) -> FloatArray:
    r"""Row-wise softmax :math:`p_{ij} = e^{z_{ij}} / \sum_k e^{z_{ik}}`.

    Parameters
    ----------
    logits : array_like, shape (N, K)
        Finite or ``-inf`` (masked, probability 0); at least one finite per row.
    validate : bool, default True
        ``False`` skips the checks (see the module docstring).

    Returns
    -------
    ndarray, shape (N, K)

    Examples
    --------
    >>> categorical_probs([[0.0, np.log(3.0)], [0.0, -np.inf]])
    array([[0.25, 0.75],
           [1.  , 0.  ]])
    """
    if validate:
        logits = _logits("logits", logits)
    return _cat.categorical_probs(logits)


def categorical_log_softmax(logits: Any, *, validate: bool = True) -> FloatArray:
    r"""Row-wise :math:`\log p_{ij} = z_{ij} - \log\sum_k e^{z_{ik}}` (``-inf`` where masked).

    Parameters
    ----------
    logits : array_like, shape (N, K)
    validate : bool, default True

    Returns
    -------
    ndarray, shape (N, K)

    Examples
    --------
    >>> categorical_log_softmax([[1e4, 1e4]])
    array([[-0.69314718, -0.69314718]])
    """
    if validate:
        logits = _logits("logits", logits)
    return _cat.categorical_log_softmax(logits)


def categorical_log_prob(logits: Any, actions: Any, *, validate: bool = True) -> FloatArray:
    r"""Log-probability of one category per row, :math:`\log p_i(a_i)`.

    Parameters
    ----------
    logits : array_like, shape (N, K)
    actions : array_like of int, shape (N,)
        Category indices in ``[0, K)``. A masked category gives ``-inf``.
    validate : bool, default True
        With ``False``, ``actions`` must be int64; indices out of range are still a
        ``ValueError`` (never an out-of-bounds read).

    Returns
    -------
    ndarray, shape (N,)

    Examples
    --------
    >>> categorical_log_prob([[0.0, np.log(3.0)]], [1])
    array([-0.28768207])
    """
    if validate:
        logits = _logits("logits", logits)
        actions = _actions(actions, *logits.shape)
    return _with_actions(_cat.categorical_log_prob, logits, actions)


def categorical_log_prob_grad(logits: Any, actions: Any, *, validate: bool = True) -> FloatArray:
    r"""Score with respect to the logits, :math:`\nabla_{z_i}\log p_i(a_i) = e_{a_i} - p_i`.

    Parameters
    ----------
    logits : array_like, shape (N, K)
    actions : array_like of int, shape (N,)
    validate : bool, default True

    Returns
    -------
    ndarray, shape (N, K)
        Row ``i`` is ``onehot(actions[i]) - softmax(logits[i])``.

    Examples
    --------
    >>> categorical_log_prob_grad([[0.0, np.log(3.0)]], [1])
    array([[-0.25,  0.25]])
    """
    if validate:
        logits = _logits("logits", logits)
        actions = _actions(actions, *logits.shape)
    return _with_actions(_cat.categorical_log_prob_grad, logits, actions)


def categorical_entropy(logits: Any, *, validate: bool = True) -> FloatArray:
    r"""Entropy :math:`H_i = -\sum_j p_{ij}\log p_{ij}` per row, in ``[0, log K]``.

    Categories of probability 0 (masked or underflowed) contribute exactly 0.

    Parameters
    ----------
    logits : array_like, shape (N, K)
    validate : bool, default True

    Returns
    -------
    ndarray, shape (N,)

    Examples
    --------
    >>> categorical_entropy([[0.0, 0.0], [0.0, -np.inf], [0.0, -1e4]])
    array([0.69314718, 0.        , 0.        ])
    """
    if validate:
        logits = _logits("logits", logits)
    return _cat.categorical_entropy(logits)


def categorical_kl(logits_p: Any, logits_q: Any, *, validate: bool = True) -> FloatArray:
    r"""Row-wise :math:`\mathrm{KL}(p_i\,\|\,q_i) = \sum_j p_{ij}(\log p_{ij} - \log q_{ij})`.

    Terms with :math:`p_{ij} = 0` are 0. A category with :math:`p_{ij} > 0` that is
    masked (``-inf``) in ``logits_q`` makes the row ``+inf``, the exact value. Rows
    are clipped below at 0, so ``KL(p, p)`` is exactly 0.

    Parameters
    ----------
    logits_p, logits_q : array_like, shape (N, K)
    validate : bool, default True

    Returns
    -------
    ndarray, shape (N,)

    Examples
    --------
    >>> categorical_kl([[0.0, 0.0]], [[0.0, np.log(3.0)]])  # log 2 - 0.5 log 3
    array([0.14384104])
    """
    if validate:
        logits_p = _float_array("logits_p", logits_p)
        logits_q = _float_array("logits_q", logits_q)
        _check_logits("logits_p", logits_p)
        _check_logits("logits_q", logits_q)
        _same_shape("logits_q", logits_q, "logits_p", logits_p)
        logits_p, logits_q = _common_dtype(logits_p, logits_q)
    return _cat.categorical_kl(logits_p, logits_q)


def categorical_fisher_product(logits: Any, v: Any, *, validate: bool = True) -> FloatArray:
    r"""Fisher information in logit coordinates times ``v``, row by row.

    :math:`F_i = \operatorname{diag}(p_i) - p_i p_i^\top` is the Hessian of
    :math:`z \mapsto \mathrm{KL}(p_i\,\|\,\operatorname{softmax}(z))` at
    :math:`z = z_i` (``p_i`` held fixed), so

    .. math:: (F_i v_i)_j = p_{ij} v_{ij} - p_{ij} \, (p_i \cdot v_i).

    Parameters
    ----------
    logits : array_like, shape (N, K)
    v : array_like, shape (N, K)
        Finite tangent in logit space. Entries near the float64 limit (above
        ``max_float / (2K + 2)``) are handled by exact power-of-2 scaling; with
        ``validate=False`` they are not, and the products may overflow to ``inf``
        or NaN.
    validate : bool, default True

    Returns
    -------
    ndarray, shape (N, K)

    Examples
    --------
    >>> categorical_fisher_product([[0.0, 0.0]], [[1.0, 0.0]])
    array([[ 0.25, -0.25]])
    """
    if validate:
        logits = _float_array("logits", logits)
        v = _float_array("v", v)
        _check_logits("logits", logits)
        _same_shape("v", v, "logits", logits)
        # Below this bound p.v, v - p.v and the kernel's partial sums cannot overflow.
        bound = _FLOAT_MAX / (2.0 * logits.shape[1] + 2.0)
        huge = _gauss.find_value_outside(v.reshape(-1), -bound, bound) >= 0
        if huge:
            _check_finite("v", v)
        logits, v = _common_dtype(logits, v)
        if huge:  # F is linear: apply it to v / 2**c (exact) and scale back
            c = (2 * logits.shape[1] + 2).bit_length()
            out = _cat.categorical_fisher_product(logits, np.ldexp(v, -c))
            with np.errstate(over="ignore"):
                return np.ldexp(out, c)
    return _cat.categorical_fisher_product(logits, v)


def categorical_sample(logits: Any, rng: np.random.Generator, *, validate: bool = True) -> IntArray:
    r"""One category per row, drawn by inverting the row's CDF.

    Draws exactly ``N`` float64 uniforms with ``rng.random(N)``, so the same
    generator state gives the same actions. Masked categories are never drawn.

    Parameters
    ----------
    logits : array_like, shape (N, K)
    rng : numpy.random.Generator
    validate : bool, default True

    Returns
    -------
    ndarray of int64, shape (N,)

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> categorical_sample([[0.0, -np.inf, 0.0]] * 6, rng)
    array([2, 0, 0, 0, 2, 2])
    """
    if validate:
        logits = _logits("logits", logits)
        rng = _generator(rng)
    return _cat.categorical_sample_inverse_cdf(logits, rng.random(logits.shape[0]))


# -------------------------------------------------------------- diagonal Gaussian


def _gaussian_args(
    mean: Any, log_std: Any, x: Any, x_name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = _float_array("mean", mean)
    log_std = _float_array("log_std", log_std)
    x = _float_array(x_name, x)
    _matrix("mean", mean, "(N, D)")
    _same_shape(x_name, x, "mean", mean)
    _check_log_std("log_std", log_std, *mean.shape)
    _check_finite("mean", mean)
    _check_finite(x_name, x)
    return _common_dtype(mean, log_std, x)  # type: ignore[return-value]


def diag_gaussian_log_prob(mean: Any, log_std: Any, x: Any, *, validate: bool = True) -> FloatArray:
    r"""Log-density :math:`\log \mathcal N(x_i; \mu_i, \operatorname{diag}\sigma_i^2)` per row.

    .. math:: -\tfrac12 \sum_j \Bigl(\frac{x_{ij} - \mu_{ij}}{\sigma_{ij}}\Bigr)^2
              - \sum_j \log\sigma_{ij} - \tfrac D2 \log 2\pi

    Parameters
    ----------
    mean : array_like, shape (N, D)
    log_std : array_like, shape (D,), (1, D) or (N, D)
        :math:`\log\sigma`; a ``(D,)`` row is shared by every row of ``mean``.
    x : array_like, shape (N, D)
    validate : bool, default True

    Returns
    -------
    ndarray, shape (N,)

    Examples
    --------
    >>> diag_gaussian_log_prob([[0.0, 0.0]], [0.0, 0.0], [[0.0, 0.0]])  # -log(2 pi)
    array([-1.83787707])
    """
    if validate:
        mean, log_std, x = _gaussian_args(mean, log_std, x, "x")
    else:
        _unchecked_gaussian_shapes({"mean": mean, "x": x}, {"log_std": log_std}, "mean")
    return _gauss.diag_gaussian_log_prob(mean, log_std, x)


def diag_gaussian_log_prob_grad(
    mean: Any, log_std: Any, x: Any, *, validate: bool = True
) -> tuple[FloatArray, FloatArray]:
    r"""Per-sample score of :math:`\log p_i(x_i)` with respect to the mean and the log_std.

    With :math:`z_{ij} = (x_{ij} - \mu_{ij})/\sigma_{ij}`:
    :math:`\partial/\partial\mu_{ij} = z_{ij}/\sigma_{ij}` and
    :math:`\partial/\partial\log\sigma_{ij} = z_{ij}^2 - 1`.

    Parameters
    ----------
    mean : array_like, shape (N, D)
    log_std : array_like, shape (D,), (1, D) or (N, D)
    x : array_like, shape (N, D)
    validate : bool, default True

    Returns
    -------
    d_mean : ndarray, shape (N, D)
    d_log_std : ndarray, shape (N, D)
        Per sample even when ``log_std`` is a shared ``(D,)`` parameter: the
        gradient of that parameter is ``d_log_std.sum(axis=0)`` (weighted as needed).

    Examples
    --------
    >>> d_mean, d_log_std = diag_gaussian_log_prob_grad([[0.0]], [np.log(2.0)], [[4.0]])
    >>> d_mean, d_log_std
    (array([[1.]]), array([[3.]]))
    """
    if validate:
        mean, log_std, x = _gaussian_args(mean, log_std, x, "x")
    else:
        _unchecked_gaussian_shapes({"mean": mean, "x": x}, {"log_std": log_std}, "mean")
    d_mean, d_log_std = _gauss.diag_gaussian_log_prob_grad(mean, log_std, x)
    return d_mean, d_log_std


def diag_gaussian_entropy(log_std: Any, *, validate: bool = True) -> FloatArray | np.floating[Any]:
    r"""Entropy :math:`\sum_j \log\sigma_j + \tfrac D2 (1 + \log 2\pi)`.

    Parameters
    ----------
    log_std : array_like, shape (D,) or (N, D)
    validate : bool, default True

    Returns
    -------
    ndarray of shape (N,), or a NumPy scalar of the input dtype for a ``(D,)`` input
        (a state-independent std has one entropy).

    Examples
    --------
    >>> float(diag_gaussian_entropy([0.0, 0.0]))  # 1 + log(2 pi)
    2.8378770664093453
    >>> diag_gaussian_entropy([[0.0], [1.0]])
    array([1.41893853, 2.41893853])
    """
    if validate:
        log_std = _float_array("log_std", log_std)
        if log_std.ndim not in (1, 2):
            raise ValueError(f"log_std must have shape (D,) or (N, D), got shape {log_std.shape}")
        _check_range("log_std", log_std, *LOG_STD_LIMITS, _LOG_STD_RANGE)
    out = _gauss.diag_gaussian_entropy(log_std)
    return out[0] if log_std.ndim == 1 else out


def diag_gaussian_kl(
    mean_p: Any, log_std_p: Any, mean_q: Any, log_std_q: Any, *, validate: bool = True
) -> FloatArray:
    r"""Row-wise :math:`\mathrm{KL}(p_i\,\|\,q_i)` between diagonal Gaussians.

    .. math:: \sum_j \log\frac{\sigma^q_{ij}}{\sigma^p_{ij}}
              + \frac{(\sigma^p_{ij})^2 + (\mu^p_{ij} - \mu^q_{ij})^2}{2(\sigma^q_{ij})^2}
              - \frac12

    evaluated as :math:`\tfrac12\sum_j \operatorname{expm1}(t_j) - t_j + \delta_j^2`
    with :math:`t = 2(\log\sigma^p - \log\sigma^q)`, :math:`\delta = (\mu^p - \mu^q)/\sigma^q`,
    exactly 0 for ``KL(p, p)``. When the stds are close the ``expm1(t) - t`` term has an
    absolute error of about :math:`\varepsilon |t|` (the textbook form: about
    :math:`\varepsilon`), a relative error of about :math:`\varepsilon / |t|`.

    Parameters
    ----------
    mean_p, mean_q : array_like, shape (N, D)
    log_std_p, log_std_q : array_like, shape (D,), (1, D) or (N, D)
    validate : bool, default True

    Returns
    -------
    ndarray, shape (N,)

    Examples
    --------
    >>> diag_gaussian_kl([[1.0]], [0.0], [[0.0]], [0.0])  # (1 - 0)^2 / 2
    array([0.5])
    """
    if validate:
        mean_p = _float_array("mean_p", mean_p)
        log_std_p = _float_array("log_std_p", log_std_p)
        mean_q = _float_array("mean_q", mean_q)
        log_std_q = _float_array("log_std_q", log_std_q)
        _matrix("mean_p", mean_p, "(N, D)")
        _same_shape("mean_q", mean_q, "mean_p", mean_p)
        _check_log_std("log_std_p", log_std_p, *mean_p.shape)
        _check_log_std("log_std_q", log_std_q, *mean_p.shape)
        _check_finite("mean_p", mean_p)
        _check_finite("mean_q", mean_q)
        mean_p, log_std_p, mean_q, log_std_q = _common_dtype(mean_p, log_std_p, mean_q, log_std_q)
    else:
        _unchecked_gaussian_shapes(
            {"mean_p": mean_p, "mean_q": mean_q},
            {"log_std_p": log_std_p, "log_std_q": log_std_q}, "mean_p")
    return _gauss.diag_gaussian_kl(mean_p, log_std_p, mean_q, log_std_q)


def diag_gaussian_fisher_product(
    mean: Any, log_std: Any, v_mean: Any, v_log_std: Any, *, validate: bool = True
) -> tuple[FloatArray, FloatArray]:
    r"""Fisher information in (mean, log_std) coordinates times a tangent, row by row.

    For each row and dimension the Fisher is :math:`\operatorname{diag}(\sigma^{-2}, 2)`,
    the Hessian of :math:`(\mu, \ell) \mapsto \mathrm{KL}(p_i\,\|\,\mathcal N(\mu, e^{2\ell}))`
    at the row's own parameters, so

    - ``fv_mean = v_mean / sigma**2`` with shape ``mean.shape == (N, D)``;
    - ``fv_log_std = 2 * v_log_std`` with shape
      ``np.broadcast_shapes(log_std.shape, v_log_std.shape)``: ``(D,)`` when both
      are ``(D,)``, ``(N, D)`` when either is ``(N, D)``.

    For a shared ``(D,)`` log_std parameter, the Hessian of the *mean over rows* of
    the KL applied to ``v_log_std`` is ``2 * v_log_std``: exactly the ``(D,)``
    result (each row contributes the same block, and the mean averages them).
    ``mean`` fixes the shape and dtype only: the Fisher does not depend on it, so
    its values are neither read nor checked.

    Parameters
    ----------
    mean : array_like, shape (N, D)
    log_std : array_like, shape (D,), (1, D) or (N, D)
    v_mean : array_like, shape (N, D)
    v_log_std : array_like, shape (D,), (1, D) or (N, D)
    validate : bool, default True

    Returns
    -------
    fv_mean : ndarray, shape (N, D)
    fv_log_std : ndarray, shape ``np.broadcast_shapes(log_std.shape, v_log_std.shape)``

    Examples
    --------
    >>> fv_mean, fv_log_std = diag_gaussian_fisher_product(
    ...     [[0.0, 0.0]], [np.log(2.0), 0.0], [[4.0, 1.0]], [1.0, -1.0])
    >>> fv_mean, fv_log_std
    (array([[1., 1.]]), array([ 2., -2.]))
    """
    if validate:
        mean = _float_array("mean", mean)
        log_std = _float_array("log_std", log_std)
        v_mean = _float_array("v_mean", v_mean)
        v_log_std = _float_array("v_log_std", v_log_std)
        _matrix("mean", mean, "(N, D)")
        _same_shape("v_mean", v_mean, "mean", mean)
        _check_log_std("log_std", log_std, *mean.shape)
        _check_log_std_shape("v_log_std", v_log_std, *mean.shape)
        # mean's values are never read (the Fisher does not depend on them): not checked
        _check_finite("v_mean", v_mean)
        _check_finite("v_log_std", v_log_std)
        mean, log_std, v_mean, v_log_std = _common_dtype(mean, log_std, v_mean, v_log_std)
    else:
        _unchecked_gaussian_shapes(
            {"mean": mean, "v_mean": v_mean}, {"log_std": log_std, "v_log_std": v_log_std},
            "mean")
    fv_mean, fv_log_std = _gauss.diag_gaussian_fisher_product(mean, log_std, v_mean, v_log_std)
    if log_std.ndim == 1 and v_log_std.ndim == 1:
        fv_log_std = fv_log_std.reshape(-1)
    return fv_mean, fv_log_std


def diag_gaussian_sample(
    mean: Any, log_std: Any, rng: np.random.Generator, *, validate: bool = True
) -> FloatArray:
    r"""One sample per row, :math:`x_{ij} = \mu_{ij} + \sigma_{ij}\,\varepsilon_{ij}`.

    Draws ``rng.standard_normal(mean.shape, dtype=mean.dtype)`` once, so the same
    generator state gives the same samples.

    Parameters
    ----------
    mean : array_like, shape (N, D)
    log_std : array_like, shape (D,), (1, D) or (N, D)
    rng : numpy.random.Generator
    validate : bool, default True

    Returns
    -------
    ndarray, shape (N, D)

    Examples
    --------
    >>> x = diag_gaussian_sample(np.zeros((4, 2)), [0.0, -20.0], np.random.default_rng(0))
    >>> x.shape, bool(np.all(np.abs(x[:, 1]) < 1e-8))
    ((4, 2), True)
    """
    if validate:
        mean = _float_array("mean", mean)
        log_std = _float_array("log_std", log_std)
        _matrix("mean", mean, "(N, D)")
        _check_log_std("log_std", log_std, *mean.shape)
        _check_finite("mean", mean)
        mean, log_std = _common_dtype(mean, log_std)
        rng = _generator(rng)
    else:
        _unchecked_gaussian_shapes({"mean": mean}, {"log_std": log_std}, "mean")
    noise = rng.standard_normal(mean.shape, dtype=mean.dtype)
    return _gauss.diag_gaussian_sample_from_noise(mean, log_std, noise)
