"""Matrix-free (preconditioned) conjugate gradient.

The loop follows Hestenes & Stiefel in the same arithmetic order as
``scipy.sparse.linalg.cg`` so that, on symmetric positive definite problems,
the iterates agree with scipy's to rounding. What it adds is what an optimizer
needs from CG: a status instead of a bare ``info`` integer, detection of
non-positive curvature (``p^T A p <= 0``) with the direction that showed it,
non-finite matvec output reported instead of propagated, Tikhonov damping
without wrapping the operator, the residual history, scale safety (a problem
far from unit scale is rescaled by a power of two, which is exact, instead of
overflowing or underflowing), complex Hermitian systems, and the spectral
information that CG's coefficients carry (the Lanczos tridiagonal matrix).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from trustregion.core import _validation as v
from trustregion.core.status import Status, render
from trustregion.kernels import cg as _kc
from trustregion.kernels import linalg as _k

# What cg measured, per status; render() appends the remedy (trustregion.core.status).
_WHAT_HAPPENED = {
    Status.CONVERGED: "converged: residual norm {res:.3e} <= tolerance {tol:.3e}",
    Status.MAX_ITER: (
        "iteration limit {nit} reached with residual norm {res:.3e} > tolerance {tol:.3e}"
    ),
    Status.NEGATIVE_CURVATURE: (
        "non-positive curvature p^T {A} p = {curv:.3e} at iteration {nit}: {A} is not positive "
        "definite (indefinite, or singular with {b} outside its range); the last good iterate "
        "is returned and `direction` holds p"
    ),
    Status.NON_FINITE: (
        "the {where} returned a non-finite value at iteration {nit}; the last good iterate "
        "is returned"
    ),
    Status.INDEFINITE_PRECONDITIONER: (
        "r^T {M} r = {curv:.3e} <= 0 at iteration {nit}: the preconditioner {M} is not positive "
        "definite; the last good iterate is returned"
    ),
    Status.NON_REAL_CURVATURE: (
        "the curvature p^H {A} p = {curv_c} at iteration {nit} is not real: {A} is not "
        "Hermitian; the last good iterate is returned"
    ),
    Status.OUT_OF_RANGE: (
        "the solution overflows {dtype} (its entries exceed {big:.3e}); the iteration itself "
        "ran rescaled and its residual norm is {res:.3e}"
    ),
    Status.STAGNATED: (
        "the recurrence residual {res:.3e} met the tolerance {tol:.3e} but the true residual "
        "||{b} - {A} x|| is {true:.3e}, more than half of its {prev:.3e} at the start of this "
        "cycle: restarting no longer reduces it, the tolerance is below what rounding allows"
    ),
}
# When the recurrence residual met the tolerance and the true one did not (see cg's Notes)
_WHAT_HAPPENED_CHECKED = {
    Status.MAX_ITER: (
        "iteration limit reached after {nit} iterations and the true-residual checks, which "
        "count against it: the recurrence residual {res:.3e} met the tolerance "
        "{tol:.3e} but the true residual ||{b} - {A} x|| is {true:.3e}"
    ),
}


class _Restart(NamedTuple):
    """What the cycles before a restart of :func:`cg` leave to the result (see its Notes)."""

    nit: int  # iterations done before this cycle
    history: np.ndarray  # their residual norms (iterations 0 .. nit - 1), caller's units
    alphas: Any  # the first cycle's Lanczos coefficients, which the spectrum comes from
    rhos: Any
    scale: float
    eps: float
    spectrum: CGSpectrum | None  # the first cycle's, when asked for at once
    restarts: int


class _SpectrumFields(NamedTuple):
    eig_min: float | None
    eig_max: float | None
    condition: float | None
    # every alpha_j and at least as many rho_j, of which the first lanczos_kept (those above
    # the rounding floor) define T_k (cut on first use of ritz_values, not when the extremes
    # are found: two slices cost a spectrum=True solve about a microsecond)
    lanczos_alphas: np.ndarray
    lanczos_rhos: np.ndarray
    scale: float = 1.0
    lanczos_kept: int | None = None  # None: all


class CGSpectrum(_SpectrumFields):
    r"""What CG learned about the spectrum of the operator it solved with.

    CG's step lengths :math:`\alpha_j` and ratios :math:`\beta_j = \rho_{j+1}/\rho_j` are the
    entries of the Lanczos tridiagonal matrix :math:`T_k` of the operator on the Krylov space
    (Golub & Van Loan, section 10.2; Saad, *Iterative Methods*, section 6.7.3):

    .. math::

        T_{jj} = \frac{1}{\alpha_j} + \frac{\beta_{j-1}}{\alpha_{j-1}},\qquad
        T_{j,j+1} = \frac{\sqrt{\beta_j}}{\alpha_j}.

    Its eigenvalues, the Ritz values, lie inside the operator's spectrum; the extreme ones
    converge to the extreme eigenvalues from inside. The operator is the one CG iterates
    with: :math:`M (A + \lambda I)` with a preconditioner ``M`` and damping :math:`\lambda`.

    Attributes
    ----------
    eig_min, eig_max : float or None
        The extreme Ritz values: an upper bound on the smallest eigenvalue and a lower bound
        on the largest (None without any iteration). Found by Laguerre's iteration on the
        characteristic polynomial of :math:`T_k`, O(k) per step.
    condition : float or None
        ``eig_max / eig_min``, a lower bound on the condition number (inf if ``eig_min <= 0``).
    ritz_values : ndarray
        Every eigenvalue of :math:`T_k`, ascending (empty without any iteration), where
        iterations whose residual reached the rounding floor are left out (their coefficients
        describe rounding noise, not the operator); computed on
        first access (implicit QL, O(k^2)).
    lanczos_alphas, lanczos_rhos : ndarray
        CG's step lengths and at least as many :math:`\rho_j`; the first ``lanczos_kept``
        (all if None) define :math:`T_k`.
    scale : float
        The power of two the operator was rescaled by (the values above are in the caller's
        units).

    Notes
    -----
    An immutable named tuple of these fields (building a frozen dataclass cost a
    ``spectrum=True`` solve about a microsecond more); ``ritz_values`` is cached on the
    instance.
    """

    def __repr__(self) -> str:
        return (f"CGSpectrum(eig_min={self.eig_min!r}, eig_max={self.eig_max!r}, "
                f"condition={self.condition!r})")

    @cached_property
    def ritz_values(self) -> np.ndarray:
        """Eigenvalues of the Lanczos matrix, ascending, in the caller's units."""
        kept = self.lanczos_kept
        if kept is None:
            kept = self.lanczos_alphas.shape[0]
        if kept == 0:
            return np.empty(0)
        ritz = _k.cg_ritz_values(self.lanczos_alphas[:kept], self.lanczos_rhos[:kept])
        if self.scale != 1.0:
            ritz /= self.scale  # back from the power-of-two rescaled operator (exact)
        return ritz


@dataclass(frozen=True, eq=False)
class CGResult:
    """Outcome of :func:`cg`.

    Attributes
    ----------
    x : ndarray
        The last good iterate (never contains NaN).
    nit : int
        Number of completed iterations (updates of ``x``).
    n_matvec : int
        Number of calls to the matvec ``A``.
    residual_norm : float
        ``||r||`` of the recurrence residual at ``x`` (``b - (A + damping I) x`` in exact
        arithmetic; in floating point it can drift from it, see ``true_residual_norm``).
    residual_history : ndarray
        ``||r||`` before the first iteration and after each iteration, length ``nit + 1``
        (computed on first access). After a restart (see :func:`cg`'s Notes) the entry of
        the iteration it started from is the true residual's norm.
    success : bool
        True exactly when ``status`` is ``CONVERGED``.
    status : Status
        Why the iteration stopped: ``CONVERGED``, ``MAX_ITER``, ``NEGATIVE_CURVATURE``,
        ``NON_FINITE``, ``INDEFINITE_PRECONDITIONER``, ``NON_REAL_CURVATURE`` (complex,
        non-Hermitian operator), ``OUT_OF_RANGE`` (the solution overflows the dtype) or
        ``STAGNATED`` (the true residual cannot reach the tolerance in this precision).
    message : str
        What happened and what to try (written on first access).
    direction : ndarray or None
        With ``NEGATIVE_CURVATURE``: the search direction ``p`` with ``p^T A p <= 0``.
    curvature : float or None
        With ``NEGATIVE_CURVATURE`` or ``INDEFINITE_PRECONDITIONER``: the offending value.
    true_residual_norm : float or None
        ``||b - (A + damping I) x||`` computed from its definition (one operator call) when
        the recurrence residual met the tolerance after at least one iteration: with
        ``CONVERGED`` it met the tolerance too; with ``MAX_ITER``, ``STAGNATED`` or
        ``NON_FINITE`` after such a check it did not. None when it was not computed. In the
        caller's units; far from unit scale it is computed on the rescaled problem CG
        iterated on (see :func:`cg`'s Notes), then divided by its scale.
    spectrum : CGSpectrum
        Ritz values and extreme-eigenvalue and condition estimates of the (preconditioned,
        damped) operator, from the CG coefficients at no extra matvec; computed on first
        access (or at once with ``cg(..., spectrum=True)``). After a restart, those of the
        first cycle (a restart begins a new Krylov space, whose coefficients do not extend
        the first cycle's Lanczos matrix).
    """

    x: np.ndarray
    nit: int
    n_matvec: int
    residual_norm: float
    residual_history: np.ndarray
    success: bool
    status: Status
    message: str
    direction: np.ndarray | None = None
    curvature: float | None = None
    true_residual_norm: float | None = None
    # CG's coefficients, kept to build the Lanczos matrix on demand: the step lengths, the
    # values rho_j = r_j^T z_j, and the power of two the operator was scaled by.
    lanczos_alphas: Sequence[float] | np.ndarray = field(default=(), repr=False)
    lanczos_rhos: Sequence[float] | np.ndarray = field(default=(), repr=False)
    lanczos_scale: float = field(default=1.0, repr=False)
    lanczos_eps: float = field(default=float(np.finfo(np.float64).eps), repr=False)

    @cached_property
    def spectrum(self) -> CGSpectrum:
        """Ritz values and spectral estimates (see :class:`CGSpectrum`)."""
        return _spectrum(
            self.lanczos_alphas, self.lanczos_rhos, self.lanczos_scale, self.lanczos_eps
        )

    @property
    def ritz_values(self) -> np.ndarray:
        """Eigenvalues of the Lanczos matrix, ascending (``spectrum.ritz_values``)."""
        return self.spectrum.ritz_values

    if not TYPE_CHECKING:  # (so that mypy still flags unknown attributes)

        def __getattr__(self, name: str) -> Any:
            # cg leaves ``message`` out of __dict__ and keeps the facts it measured: the
            # message is written on first access (formatting the numbers costs a few
            # microseconds, a tenth of a short solve, and most callers read only `status`)
            if name == "message":
                facts = self.__dict__.get("_message_facts")
                if facts is not None:
                    message = _render_message(*facts)
                    self.__dict__["message"] = message
                    return message
            elif name == "residual_history":
                # likewise the residual norms: cg keeps their squares (the square roots of
                # an array are a NumPy call, microseconds after a large operator)
                facts = self.__dict__.get("_residual_facts")
                if facts is not None:
                    squares, c_b = facts
                    history = np.sqrt(squares)
                    if c_b != 1.0:
                        history /= c_b  # back from the rescaled right-hand side (exact)
                    self.__dict__["residual_history"] = history
                    return history
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _render_message(
    status: Status, res: float, tol: float, nit: int, curvature: float | None, curv_c: str,
    where: str | None, name_A: str, name_b: str, name_M: str, info: _DtypeInfo,
    true_res: float | None = None, prev: float = 0.0, restarts: int = 0,
) -> str:
    """The message of a :class:`CGResult` from the facts :func:`cg` measured."""
    fmt = dict(
        res=res, tol=tol, nit=nit, curv=curvature or 0.0, A=name_A, b=name_b, M=name_M,
        dtype=info.name, big=info.big, curv_c=curv_c, where=where or "matvec " + name_A,
        true=true_res or 0.0, prev=prev,
    )
    template = _WHAT_HAPPENED[status]
    if true_res is not None:
        template = _WHAT_HAPPENED_CHECKED.get(status, template)
    what = template.format_map(fmt)
    if restarts:
        what += (f" (after {restarts} restart{'s' if restarts > 1 else ''} from the true "
                 f"residual, whose recurrence had drifted from it)")
    return render(status, what)


def _new_result(fields: dict[str, Any]) -> CGResult:
    """A :class:`CGResult` whose instance dictionary is ``fields`` (every field), without the
    frozen dataclass's ``__init__``.

    That ``__init__`` sets each of the 13 fields through ``object.__setattr__``, about 5 us
    per call: a quarter of the fixed cost of a short solve. Giving the object its dictionary
    at once gives the same object (still frozen against later assignment).
    """
    result = _object_new(CGResult)
    _object_setattr(result, "__dict__", fields)
    return result


_object_new: Any = object.__new__
_object_setattr: Any = object.__setattr__


def lanczos_tridiagonal(alphas: Any, rhos: Any) -> tuple[np.ndarray, np.ndarray]:
    r"""Diagonal and off-diagonal of the Lanczos matrix :math:`T_k` from CG's coefficients.

    ``alphas`` holds :math:`\alpha_0..\alpha_{k-1}`, ``rhos`` at least
    :math:`\rho_0..\rho_{k-1}` (:math:`\rho_j = r_j^T z_j`, so that
    :math:`\beta_j = \rho_{j+1}/\rho_j`).

    Examples
    --------
    On a diagonal matrix, n iterations recover its eigenvalues:

    >>> import numpy as np, trustregion as tr
    >>> res = tr.cg(np.diag([1.0, 2.0, 5.0]), np.ones(3), rtol=0.0, maxiter=3)
    >>> d, e = lanczos_tridiagonal(res.lanczos_alphas, res.lanczos_rhos)
    >>> bool(np.allclose(np.linalg.eigvalsh(np.diag(d) + np.diag(e, 1) + np.diag(e, -1)),
    ...                  [1.0, 2.0, 5.0]))
    True
    """
    alpha = np.asarray(alphas, dtype=np.float64)
    k = alpha.shape[0]
    rho = np.asarray(rhos, dtype=np.float64)[:k]
    beta = rho[1:] / rho[:-1]
    inv_alpha = 1.0 / alpha
    diag = inv_alpha.copy()
    diag[1:] += beta * inv_alpha[:-1]
    off = np.sqrt(beta) * inv_alpha[:-1]
    return diag, off


# Iterations whose residual has fallen to this fraction of the first (in the M-norm, squared,
# in units of the dtype's eps squared) are at the rounding floor: their coefficients describe
# rounding noise, not the operator, and put Ritz values outside its spectrum. Cut there (the
# fused kernels, which find the spectrum in their last call, cut at the same place).
_ROUNDING_FLOOR = _kc.ROUNDING_FLOOR
# where finish reads the fused loops' state (module constants: no attribute lookups; the
# spectrum's four entries are read by literal index there)
_DONE, _RR = _kc.DONE, _kc.RR
if (_kc.EIG_MIN, _kc.EIG_MAX, _kc.CONDITION, _kc.KEPT) != (16, 17, 18, 19):  # pragma: no cover
    raise ImportError("trustregion.core.cg reads the spectrum at state[16:20]")


def _spectrum(alphas: Any, rhos: Any, scale: float, eps: float) -> CGSpectrum:
    # cg's alpha_j and squared residual norms are already arrays (see finish); a
    # preconditioned run's rho_j are a list
    alpha = alphas if type(alphas) is np.ndarray else np.array(alphas, dtype=np.float64)
    rho = rhos if type(rhos) is np.ndarray else np.array(rhos, dtype=np.float64)
    if alpha.shape[0] == 0:
        return _new_spectrum(None, None, None, alpha, rho, scale, 0)
    # one kernel call: the cut at the rounding floor and both extreme Ritz values
    kept, lo, hi = _k.cg_spectrum_extremes(alpha, rho, _ROUNDING_FLOOR * eps * eps)
    if scale != 1.0:
        lo, hi = lo / scale, hi / scale  # back from the rescaled operator (exact)
    return _new_spectrum(lo, hi, hi / lo if lo > 0.0 else math.inf, alpha, rho, scale, kept)


def _new_spectrum(
    lo: float | None, hi: float | None, condition: float | None, alpha: np.ndarray,
    rho: np.ndarray, scale: float, kept: int,
) -> CGSpectrum:
    """A :class:`CGSpectrum` by ``tuple.__new__`` (the named tuple's ``__new__`` is a Python
    function: a call more)."""
    return _tuple_new(CGSpectrum, (lo, hi, condition, alpha, rho, scale, kept))


_tuple_new: Any = tuple.__new__
_floor = math.floor


# Safe windows, as powers of two, for the squared residual norm and the Rayleigh quotients of
# the operator and the preconditioner. Inside them no quantity of the iteration can overflow or
# underflow (float64: ||r|| in (2^-200, 2^200), and rtol >= eps leaves >100 binades of room);
# outside, the problem is rescaled by a power of two, which is exact.
_SAFE_EXP = {np.dtype(np.float64): 200, np.dtype(np.float32): 25}


class _DtypeInfo:
    """Constants of a working dtype, computed once (np.finfo is slow on the hot call path)."""

    def __init__(self, dtype: np.dtype) -> None:
        self.is_complex = dtype.kind == "c"
        self.real_dtype = np.dtype(dtype.char.lower()) if self.is_complex else dtype
        finfo = np.finfo(self.real_dtype)
        self.real = self.real_dtype.type
        self.eps = float(finfo.eps)
        self.big = float(finfo.max)
        self.window = _SAFE_EXP[self.real_dtype]
        self.limit = int(finfo.maxexp) - 8  # largest power of two used as a scale factor
        # binary exponents of an operator output that leave room for the iteration (twice
        # the mantissa's bits from either end of the range)
        self.q_lo = int(finfo.minexp) + 2 * int(finfo.nmant)
        self.q_hi = int(finfo.maxexp) - 2 * int(finfo.nmant)
        self.lo_sq = math.ldexp(1.0, -2 * self.window)
        self.hi_sq = math.ldexp(1.0, 2 * self.window)
        self.lo_rq = math.ldexp(1.0, -self.window)
        self.hi_rq = math.ldexp(1.0, self.window)
        self.name = dtype.name


_FLOAT64 = np.dtype(np.float64)
_COMPLEX128 = np.dtype(np.complex128)
_UNIT_STRIDE = (8,)  # of a C-contiguous float64 vector
_UNIT_STRIDE_C = (16,)  # of a C-contiguous complex128 vector
_DTYPES = {
    np.dtype(t): _DtypeInfo(np.dtype(t))
    for t in (np.float64, np.float32, np.complex128, np.complex64)
}
_CG_NAMES = {
    "A": "A", "b": "b", "x0": "x0", "rtol": "rtol", "atol": "atol", "maxiter": "maxiter",
    "M": "M", "damping": "damping",
}


def _checked(out: Any, name: str, n: int, dtype: np.dtype, shape: tuple[int]) -> np.ndarray:
    """The operator's output as a contiguous vector of ``dtype``; a fast path when it already is."""
    if type(out) is np.ndarray and out.dtype == dtype and out.shape == shape:
        if out.flags.c_contiguous:
            return out
    return np.ascontiguousarray(v.matvec_output(name, out, n, dtype))


def _exponent(u: np.ndarray) -> int | None:
    """The binary exponent ``e`` of ``max |u|`` (``2^(e-1) <= max|u| < 2^e``), None if 0/inf."""
    m = float(np.max(np.abs(u)))
    if m == 0.0 or not math.isfinite(m):
        return None
    return math.frexp(m)[1]


def _pow2(e: int, limit: int) -> float:
    return math.ldexp(1.0, max(-limit, min(limit, e)))


def cg(
    A: Any,
    b: Any,
    *,
    x0: Any = None,
    rtol: float = 1e-5,
    atol: float = 0.0,
    maxiter: int | None = None,
    M: Any = None,
    damping: float = 0.0,
    callback: Callable[[np.ndarray], Any] | None = None,
    spectrum: bool = False,
) -> CGResult:
    r"""Solve :math:`(A + \lambda I)\,x = b` by (preconditioned) conjugate gradient.

    With :math:`r_0 = b - (A+\lambda I) x_0`, :math:`z_0 = M r_0`, :math:`p_0 = z_0`, each
    iteration computes

    .. math::

        \alpha_k = \frac{r_k^H z_k}{p_k^H (A+\lambda I) p_k},\quad
        x_{k+1} = x_k + \alpha_k p_k,\quad
        r_{k+1} = r_k - \alpha_k (A+\lambda I) p_k,\\
        z_{k+1} = M r_{k+1},\quad
        p_{k+1} = z_{k+1} + \frac{r_{k+1}^H z_{k+1}}{r_k^H z_k} p_k,

    and stops as soon as :math:`\|r_k\| \le \tau = \max(\mathrm{rtol}\,\|b\|, \mathrm{atol})`
    (including on the last allowed iteration, which scipy reports as a failure) *and* the
    true residual :math:`\|b - (A+\lambda I) x_k\| \le \tau` too (see Notes): ``CONVERGED``
    never rests on the recurrence alone.

    For real input the inner products are transposes (``np.dot``, as scipy); for complex
    Hermitian systems they are conjugate (``np.vdot``).

    Parameters
    ----------
    A : callable, ndarray, scipy.sparse matrix or LinearOperator
        The symmetric (Hermitian) operator. A callable receives a vector of ``b``'s dtype and
        must return a vector of the same length; a complex output for a real input is an
        error, never truncated. An explicit complex matrix is checked to be Hermitian.
    b : array_like, shape (n,)
        Right-hand side; float32, float64, complex64 and complex128 keep their dtype.
        ``b = 0`` returns ``x = 0`` at once.
    x0 : array_like, shape (n,), optional
        Starting point, zero by default.
    rtol, atol : float
        Relative and absolute residual tolerances (>= 0; ``inf`` means "converged at once",
        as in scipy).
    maxiter : int, optional
        Iteration limit, ``10 * n`` by default (as scipy).
    M : callable, ndarray, scipy.sparse matrix or LinearOperator, optional
        Preconditioner approximating :math:`(A+\lambda I)^{-1}`; must be symmetric positive
        definite.
    damping : float
        :math:`\lambda \ge 0`, added to ``A`` without wrapping it.
    callback : callable, optional
        Called as ``callback(xk)`` after each iteration (on a view: copy it to keep it).
    spectrum : bool
        Compute ``result.spectrum`` (Ritz values, extreme-eigenvalue and condition estimates)
        at once; otherwise it is computed on first access. Either way no matvec is added.

    Returns
    -------
    CGResult
        ``x``, ``nit``, ``residual_norm``, ``true_residual_norm``, ``status``, ``message``,
        ``spectrum`` and more. Expected outcomes (iteration limit, non-positive or non-real
        curvature, non-finite matvec output, a tolerance below what rounding allows) are
        statuses; misuse raises.

    Raises
    ------
    ValueError, TypeError
        Non-finite or wrongly shaped ``b`` or ``x0``, negative tolerances or damping, an
        operator of the wrong shape, a non-Hermitian complex matrix, or a matvec that returns
        the wrong shape or complex values for a real problem.

    Notes
    -----
    True residual. In floating point the recurrence :math:`r_{k+1} = r_k - \alpha_k
    (A+\lambda I) p_k` drifts from the true residual :math:`b - (A+\lambda I) x_{k+1}` by the
    rounding of the updates of :math:`x` and :math:`r` (the *residual gap*, Greenbaum 1997;
    Sleijpen & van der Vorst 1996), roughly

    .. math::

        \|b - (A+\lambda I) x_k - r_k\| \lesssim
        \varepsilon \sum_{j \le k} \big(\|A+\lambda I\|\,\|x_j\| + \|r_j\|\big),

    which exceeds :math:`\tau` when :math:`\|x_j\|` is far larger than the solution (a warm
    start :math:`x_0 = s x_*`, :math:`s \gg 1`: :math:`x_0 + \sum_j \alpha_j p_j` cancels
    about :math:`\log_{10} s` digits) or when :math:`\tau` is near
    :math:`\varepsilon \kappa(A) \|b\|`. ``scipy.sparse.linalg.cg`` then reports success with
    a wrong ``x``. Here, when :math:`\|r_k\| \le \tau` after at least one iteration, the true
    residual is computed from its definition, on the problem CG iterated on (the caller's, or
    far from unit scale its rescaled copy: see Scale safety) and reported in the caller's
    units (one more operator call, counted in ``n_matvec``, reported as
    ``true_residual_norm``):

    - :math:`\le \tau`: ``CONVERGED``;
    - otherwise CG restarts from :math:`x_k` with :math:`r = b - (A+\lambda I) x_k` (residual
      replacement, one cycle of iterative refinement: each cycle regains the digits the
      previous lost), within the same ``maxiter`` budget, where each check that leads to a
      restart counts as one iteration (so the operator is applied at most ``maxiter + 1``
      times, one more with ``x0``, as without the check): ``nit``, ``n_matvec``, the callback
      and ``residual_history`` continue across cycles (the history's entry at a restart is the
      true residual's norm), and the ``spectrum`` is the first cycle's (a restart begins a new
      Krylov space, whose coefficients do not extend the first Lanczos matrix);
    - if the true residual is still above half of what it was where the cycle started (at
      :math:`x_0`, or at the last restart), restarting no longer helps: the tolerance is below
      the accuracy the rounding of the operator and of :math:`x` allow, ``STAGNATED``;
    - if no iteration is left, ``MAX_ITER``, whose message gives both residuals.

    A solve that meets the tolerance without a restart runs exactly the iterations it ran
    before (the same bits as scipy's in float64) and pays one operator call more.

    Scale safety: if :math:`\|r_0\|` or the first Rayleigh quotients of the operator or of the
    preconditioner lie outside a safe window (about :math:`10^{\pm 60}` in float64), the
    problem is rescaled by powers of two, which is exact, and the answer scaled back. A
    problem of ordinary scale runs unchanged (bit for bit). The true residual of a rescaled
    problem is checked on it, in its units, at the iterate before it is scaled back (with a
    warm start, at ``x0`` plus the correction the iteration solved for, both in those units):
    in the caller's dtype that ``x`` may be subnormal, which rounds away digits no answer in
    it can hold, or so large that the caller's own product ``A x`` overflows, and neither
    says the iteration did not converge. A warm start whose residual is smaller than ``x0``
    and ``b`` by more than the dtype's range (they overflow in those units) is checked in
    the caller's units instead (still one call). A restart begins from the ``x`` returned;
    if that ``x`` lost digits (subnormal), from its own residual, computed in the rescaled
    units (one more operator call), so that the next cycle corrects them there.

    Examples
    --------
    >>> import numpy as np
    >>> import trustregion as tr
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> res = tr.cg(A, np.array([1.0, 2.0]), rtol=1e-12)
    >>> res.status.name, res.nit
    ('CONVERGED', 2)
    >>> np.allclose(A @ res.x, [1.0, 2.0])
    True

    A warm start far larger than the solution cancels digits in ``x``; the recurrence
    residual still meets the tolerance, the true one did not, and one restart from it fixes
    ``x`` (scipy's cg returns ``info=0`` with a residual over 20 times the tolerance here):

    >>> rng = np.random.default_rng(0)
    >>> Q = rng.standard_normal((5, 5))
    >>> A, b = Q @ Q.T + 5 * np.eye(5), rng.standard_normal(5)
    >>> res = tr.cg(A, b, x0=1e12 * np.linalg.solve(A, b))
    >>> res.status.name, bool(res.true_residual_norm <= 1e-5 * np.linalg.norm(b))
    ('CONVERGED', True)
    >>> res.message.split(" (")[1]
    'after 1 restart from the true residual, whose recurrence had drifted from it)'

    An indefinite operator is reported, not silently "solved":

    >>> tr.cg(np.diag([1.0, -1.0]), np.ones(2)).status.name
    'NEGATIVE_CURVATURE'

    The Ritz values bound the spectrum from inside:

    >>> res = tr.cg(np.diag([1.0, 10.0, 100.0]), np.ones(3), rtol=1e-12)
    >>> bool(np.allclose(res.spectrum.ritz_values, [1.0, 10.0, 100.0]))
    True
    """
    return _solve(
        A, b, x0=x0, rtol=rtol, atol=atol, maxiter=maxiter, M=M, damping=damping,
        callback=callback, spectrum=spectrum, names=_CG_NAMES, allow_complex=True,
    )


def _solve(
    A: Any,
    b: Any,
    *,
    x0: Any,
    rtol: float,
    atol: float,
    maxiter: int | None,
    M: Any,
    damping: float,
    callback: Callable[[np.ndarray], Any] | None,
    spectrum: bool,
    names: dict[str, str],
    allow_complex: bool = False,
    normalize: bool = False,
    matvecs_before: int = 0,
    residual: np.ndarray | None = None,
    prior: _Restart | None = None,
) -> CGResult:
    """:func:`cg`, with the names of the caller's arguments for its error messages.

    ``normalize`` rescales the right-hand side to unit scale even inside the safe window: the
    retry when the operator overflowed on a vector of ``b``'s scale. A restart (see
    :func:`cg`'s Notes) passes ``x0``, its true ``residual`` ``b - (A + damping I) x0``
    (computed already) and what the cycles before it leave to the result (``prior``).
    """
    b_arg, rtol_arg, atol_arg, maxiter_arg = b, rtol, atol, maxiter
    name_A, name_b, name_M = names["A"], names["b"], names["M"]
    complex_ok = allow_complex
    # Fast paths for arguments that are already what the checks would return (a call of a
    # short solve costs about as much as ten iterations, and these checks were a fifth of
    # it); anything else goes through the full validation and its error messages.
    b_info = _DTYPES.get(b.dtype) if type(b) is np.ndarray else None
    bb_probed = False  # b^T b was found finite (and in range): b is a valid vector
    bb_fused = -1.0  # b^T b by NumPy's ddot, when that was the probe (float64)
    if b_info is not None and b.ndim == 1 and b.shape[0]:
        if b.dtype is _FLOAT64 and b.strides == _UNIT_STRIDE and (
            _kc._FOUND or _kc.numpy_blas_found()
        ):
            bb_fused = _kc.numpy_ddot(b, b)  # b.dot(b) without NumPy's FP checks
            bb_probed = b_info.lo_sq < bb_fused < b_info.hi_sq
        elif (
            b.dtype is _COMPLEX128 and complex_ok and b.strides == _UNIT_STRIDE_C
            and (_kc._FOUND or _kc.numpy_blas_found())
        ):
            bb_fused = _kc.numpy_zdotc(b, b).real  # np.vdot(b, b).real, the same
            bb_probed = b_info.lo_sq < bb_fused < b_info.hi_sq
        elif not b_info.is_complex:
            bb_probed = b_info.lo_sq < _k.dot(b, b) < b_info.hi_sq
    bb_dtype = b.dtype if bb_probed else None  # (b may be a list or a scalar here)
    if not bb_probed:
        b = v.float_vector(name_b, b, allow_complex=complex_ok)
    n = b.shape[0]
    if type(rtol) is not float or not rtol >= 0.0:
        rtol = v.nonnegative(names["rtol"], rtol, allow_inf=True)
    if type(atol) is not float or not atol >= 0.0:
        atol = v.nonnegative(names["atol"], atol, allow_inf=True)
    if type(damping) is not float or not 0.0 <= damping < math.inf:
        damping = v.nonnegative(names["damping"], damping)
    if maxiter is None:
        maxiter = 10 * n
    elif type(maxiter) is not int or maxiter < 0:
        maxiter = v.count(names["maxiter"], maxiter)
    if callback is not None:
        v.function(names.get("callback", "callback"), callback)
    matvec = v.as_matvec(name_A, A, n, allow_complex=complex_ok, vector=name_b)
    matvec_caller = matvec  # (`matvec` becomes c_A times it when the operator is rescaled)
    psolve = None if M is None else v.as_matvec(name_M, M, n, allow_complex=complex_ok,
                                                vector=name_b)
    x0_arr = None if x0 is None else v.float_vector(names["x0"], x0, allow_complex=complex_ok)
    dtype = b.dtype
    if complex_ok:
        # an explicit complex matrix or a complex x0 makes the problem complex, as in scipy
        for op in (A, M):
            if op is not None and v.is_complex_operator(op):
                dtype = np.result_type(dtype, op.dtype)
        if x0_arr is not None:
            dtype = np.result_type(dtype, x0_arr.dtype)
        if dtype != b.dtype:
            b = b.astype(dtype)
    info = _DTYPES[dtype]
    is_complex, real_dtype, eps, real = info.is_complex, info.real_dtype, info.eps, info.real
    lo_sq, hi_sq, limit = info.lo_sq, info.hi_sq, info.limit
    shape = b.shape
    dot: Callable[[np.ndarray, np.ndarray], Any] = _vdot if is_complex else _dot
    rdot: Callable[[np.ndarray, np.ndarray], Any] = _real_vdot if is_complex else _dot

    if x0_arr is not None and x0_arr.shape != b.shape:
        raise ValueError(
            f"{names['x0']} must have shape {b.shape} like {name_b}, got {x0_arr.shape}"
        )
    if bb_probed and bb_fused >= 0.0 and dtype is bb_dtype:
        bb = bb_fused
    elif not is_complex and (bb_probed or lo_sq < _k.dot(b, b) < hi_sq):  # the common case
        bb = float(_dot(b, b))
    else:
        bb = _sqnorm_quiet(b, rdot, is_complex, lo_sq, hi_sq)
    b_is_zero = bb == 0.0 and not b.any()
    plain = psolve is None
    # float64 and complex128: NumPy's own BLAS dot products called from Numba kernels, which
    # without a preconditioner do all of an iteration after the operator (see below)
    blas = (dtype is _FLOAT64 or dtype is _COMPLEX128) and (
        _kc._FOUND or _kc.numpy_blas_found()  # (the flag, once probed: a call fewer)
    )
    fused = plain and blas
    # the fused loops keep x, r and p (and the damped product) as the rows of one array:
    # made here, so that they need not be copied there (a copy costs microseconds after a
    # large operator); kept if rescaling does not replace x or r
    work: np.ndarray | None = None
    x_row = r_row = None  # (the rows of `work`, to tell whether x and r still are)
    if x0_arr is None or b_is_zero:
        # b = 0: the solution is exactly 0, whatever x0 (as scipy)
        if fused:
            work = np.zeros((4 if damping else 3, n), dtype=dtype)
            x = x_row = work[0]
            r = r_row = work[1]
            r[:] = b
        else:
            x = np.zeros(n, dtype=dtype)
            r = b.copy()
        n_matvec = matvecs_before
    elif residual is not None:  # a restart: b - (A + damping I) x0 is known
        x = x0_arr.astype(dtype, copy=True)
        r = residual
        n_matvec = matvecs_before
    else:
        x = x0_arr.astype(dtype, copy=True)
        Ax = v.matvec_output(name_A, matvec(x), n, dtype)
        n_matvec = 1 + matvecs_before
        if damping:
            Ax = Ax + damping * x
        if not np.all(np.isfinite(Ax)):
            raise ValueError(f"{name_A} @ {names['x0']} is not finite: check {name_A} and "
                             f"{names['x0']}")
        r = b - Ax

    rr = bb if x0_arr is None or b_is_zero else _sqnorm_quiet(r, rdot, is_complex, lo_sq, hi_sq)
    # Power-of-two scalings, exact: the iteration solves (c_A A) y = c_b r0 for the correction
    # to x_base, so x = x_base + y c_A / c_b. Without rescaling, x_base is None and x
    # accumulates from x0, operation for operation as scipy.
    c_b = 1.0
    x_base: np.ndarray | None = None
    if not b_is_zero and (normalize or not (lo_sq < rr < hi_sq)) and r.any():
        c_b = _pow2(-(_exponent(r) or 0), limit)
        if x.any():
            x_base, x = x, np.zeros(n, dtype=dtype)
        b_caller = b  # (for a true residual the rescaled units cannot hold: see finish)
        with np.errstate(over="ignore", under="ignore"):
            r = r * real_dtype.type(c_b)
            b = b * real_dtype.type(c_b)
        rr = float(rdot(r, r))
        bb = float(rdot(b, b))
    if b_is_zero:
        tol = 0.0
    elif rtol == math.inf or atol == math.inf:
        tol = math.inf
    else:
        b_norm = math.sqrt(bb) if lo_sq < bb < hi_sq else _norm(b, rdot, lo_sq, hi_sq)
        tol = max(rtol * b_norm if rtol else 0.0, atol * c_b)
    history = [rr]  # squared residual norms and step lengths in turn (see append_alpha)
    fused_record: np.ndarray | None = None  # the fused loops' record instead (see there)
    rhos: list[float] = []  # rho_j with a preconditioner (without one, rho_j = history[j])
    c_A = c_M = 1.0

    def unscaled(y: np.ndarray) -> np.ndarray:
        """The iterate in the caller's units (only called on rescaled problems)."""
        e = math.frexp(c_A)[1] - math.frexp(c_b)[1]  # c_A / c_b = 2^e, exactly
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            if abs(e) < 900:
                out = y * real(c_A / c_b)
            else:
                # as two powers of two, each in range, as is the product between (not the
                # square root of 2^e twice, which rounds for an odd e: x_base + out then
                # cancels the rounding up to a relative error in x above the tolerance)
                out = y * real(math.ldexp(1.0, e // 2)) * real(math.ldexp(1.0, e - e // 2))
            return out if x_base is None else x_base + out

    def finish(
        status: Status, nit: int, after_matvec: bool = False, *, curv_c: str = "",
        where: str | None = None, direction: np.ndarray | None = None,
        curvature: float | None = None,
    ) -> CGResult:
        nonlocal x
        # (Everything here runs once per solve, after the last operator call, which leaves
        # NumPy and the interpreter cold when the operator is large: every NumPy operation
        # then costs microseconds, so there are as few as can be.)
        if fused_record is None:
            record = np.array(history)  # rr_0, alpha_0, rr_1, alpha_1, ..., rr_nit
            squares = record[::2]
            alphas = record[1::2]
            rr_last = history[-1]
        else:
            # the fused loops record rr_0, alpha_0, rr_1, ... in an array of their own (no
            # copy needed); their state (one read) says how far, and its r^T r is the last
            fused_state = state.tolist()
            end = 2 * int(fused_state[_DONE]) + 1
            squares = fused_record[0:end:2]
            alphas = fused_record[1:end:2]
            rr_last = fused_state[_RR]
        res = math.sqrt(rr_last) / c_b
        y = x  # the iterate of the system the iteration solved (see true_residual)
        if c_b != 1.0 or c_A != 1.0:
            x = unscaled(x)
            if not np.all(np.isfinite(x)):
                # the true solution does not fit the dtype: say so, with finite entries
                status = Status.OUT_OF_RANGE
                big = info.big
                if is_complex:
                    x = (np.clip(x.real, -big, big) + 1j * np.clip(x.imag, -big, big)).astype(
                        dtype)
                else:
                    x = np.clip(x, -big, big)
        if x.base is not None:
            x = x.copy()  # a row of the fused loops' work array: the caller's own array
        lanczos_rhos = squares if psolve is None else rhos
        calls = n_matvec + nit + after_matvec
        checks = 0  # operator calls for the true residual (see below)
        true_res: float | None = None
        prev = 0.0
        if status is Status.CONVERGED and nit:
            # The recurrence residual met the tolerance; the true one, from its definition
            # (one more operator call), may not have: r drifts from it by the rounding of
            # the updates of the iterate and of r, most when the iterate is far larger than
            # the solution (cancellation). Check it, on the system the iteration solved and
            # in its units (see true_residual); restart from it if it is too large.
            checks = 1
            r_caller: np.ndarray | None = None  # the true residual in the caller's units
            if c_b == 1.0 and c_A == 1.0:
                x_int = y
                r_true, true_int = true_residual(y)
            else:
                with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                    x_int = y if x_base is None else internal(x_base) + y
                    if x_base is None or (
                        np.all(np.isfinite(x_int)) and np.all(np.isfinite(b))
                    ) or not np.all(np.isfinite(x)):
                        r_true, true_int = true_residual(x_int)
                    else:
                        # A warm start whose residual is far smaller than x0 and b (by more
                        # than the dtype's range): in these units x0 and b overflow, and
                        # b - A x would be inf - inf. In the caller's units x is finite:
                        # its residual is computed there (the same one operator call).
                        r_true = r_caller = residual_of(matvec_caller, b_caller,
                                                        real(damping), x)
                        true_res = _norm(r_caller, rdot, lo_sq, hi_sq)
                        true_int = true_res * c_b
            if r_caller is None:
                true_res = true_int / c_b  # (reported in the caller's units, as tol / c_b)
            if not true_int <= tol:
                # where this cycle started: ||r0||, or after a restart the true residual it
                # restarted from (in this cycle's units, where neither under- nor overflows)
                prev_int = math.sqrt(squares[0])
                prev = prev_int / c_b
                if not np.all(np.isfinite(r_true)):
                    status, where = Status.NON_FINITE, (
                        f"matvec {name_A} (at the returned x, computing the true residual)"
                    )
                elif true_int > 0.5 * prev_int:
                    status = Status.STAGNATED  # restarting gains nothing any more
                elif nit + 1 >= maxiter:  # the check took the budget's last product
                    status = Status.MAX_ITER
                else:
                    # Residual replacement: a new cycle from x and its true residual (one
                    # cycle of iterative refinement, which regains the digits lost). Rescaled,
                    # it refines the x returned: if that x lost digits of x_int (subnormal:
                    # see true_residual), from the residual of x itself, in the safe units
                    # (one more operator call), so that the next cycle corrects them there;
                    # if that is no better than where this cycle started, rounding to the
                    # caller's dtype undoes what a cycle gains (an answer below its smallest
                    # subnormal): restarting gains nothing, and that is x's true residual.
                    if (c_b != 1.0 or c_A != 1.0) and r_caller is None:
                        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                            x_back = internal(x)
                            if not np.array_equal(x_back, x_int):
                                checks += 1
                                r_back, back_int = true_residual(x_back)
                                if np.all(np.isfinite(r_back)):
                                    r_true, true_int = r_back, back_int
                                    true_res = back_int / c_b
                    # Each check that leads to a restart counts against maxiter like an
                    # iteration, so that maxiter bounds the operator calls (see Notes).
                    budget = maxiter - nit - checks
                    if true_int > 0.5 * prev_int:
                        status = Status.STAGNATED
                    elif budget < 1:
                        status = Status.MAX_ITER
                    else:
                        restart_from = r_true
                        if r_caller is not None:
                            restart_from = r_caller  # (x's own, in the caller's units)
                        elif c_b != 1.0:
                            # in the caller's units: exact but for digits lost to underflow,
                            # which a residual computed in those units would lose too (the
                            # next cycle rescales it and iterates on a correction to x)
                            with np.errstate(under="ignore"):
                                restart_from = r_true * real(1.0 / c_b)
                        history_done = np.sqrt(squares[:-1]) / c_b
                        if prior is None:
                            restart = _Restart(
                                nit, history_done, alphas, lanczos_rhos, c_A * c_M, eps,
                                # (the same bits as the fused loop's last kernel call finds)
                                _spectrum(alphas, lanczos_rhos, c_A * c_M, eps) if spectrum
                                else None,
                                1,
                            )
                        else:
                            restart = prior._replace(
                                nit=prior.nit + nit,
                                history=np.concatenate((prior.history, history_done)),
                                restarts=prior.restarts + 1,
                            )
                        return _solve(
                            A, b_arg, x0=x, rtol=rtol_arg, atol=atol_arg,
                            maxiter=budget, M=M, damping=damping, callback=callback,
                            spectrum=spectrum, names=names, allow_complex=allow_complex,
                            normalize=normalize, matvecs_before=calls + checks,
                            residual=restart_from, prior=restart,
                        )
        if prior is not None:
            nit += prior.nit
        # the fields as one dict display (a presized dict, where keyword arguments to a
        # constructor would build and copy two)
        fields = {
            "x": x,
            "nit": nit,
            "n_matvec": calls + checks,
            "residual_norm": float(res),
            "_residual_facts": (squares, c_b),  # residual_history, on first access
            "success": status is Status.CONVERGED,
            "status": status,
            "direction": direction,
            "curvature": curvature,
            "true_residual_norm": true_res,
            "_message_facts": (
                status, res, tol / c_b, nit, curvature, curv_c, where, name_A, name_b, name_M,
                info, true_res, prev, 0 if prior is None else prior.restarts,
            ),
            "lanczos_alphas": alphas,
            "lanczos_rhos": lanczos_rhos,
            "lanczos_scale": c_A * c_M,
            "lanczos_eps": eps,
        }
        if prior is not None:
            # after a restart: the history of every cycle, the spectrum of the first
            fields["residual_history"] = np.concatenate((prior.history, np.sqrt(squares) / c_b))
            fields["lanczos_alphas"] = prior.alphas
            fields["lanczos_rhos"] = prior.rhos
            fields["lanczos_scale"] = prior.scale
            if spectrum:
                fields["spectrum"] = prior.spectrum
        elif spectrum:
            # computed now, as asked (stored where the cached property keeps it): when the
            # fused loop ended the solve, by its last kernel call (the same kernel on the same
            # record as _spectrum, the same arithmetic after it), which saves a call
            # (the state's entries by literal index, checked against the kernels' layout at
            # import: a slice and its unpacking cost a tenth of what the spectrum adds)
            if fused_record is not None and fused_state[19]:  # (KEPT: found)
                fields["spectrum"] = _tuple_new(CGSpectrum, (
                    fused_state[16], fused_state[17], fused_state[18], alphas, squares, c_A,
                    _floor(fused_state[19]),  # (an int, a third of int()'s time)
                ))
            else:
                fields["spectrum"] = _spectrum(alphas, lanczos_rhos, c_A * c_M, eps)
        return _new_result(fields)

    def internal(u: np.ndarray) -> np.ndarray:
        """``u c_b / c_A``: a vector in the caller's units in those the iteration ran in."""
        # (c_b / c_A as two powers of two, each in range, as is the product between)
        e = math.frexp(c_b)[1] - math.frexp(c_A)[1]
        return u * real(math.ldexp(1.0, e // 2)) * real(math.ldexp(1.0, e - e // 2))

    def residual_of(op: Callable[..., Any], rhs: np.ndarray, lam: Any,
                    u: np.ndarray) -> np.ndarray:
        """``rhs - (op + lam I) u``: one operator call, its output checked."""
        Au = _checked(op(u), name_A, n, dtype, shape)
        if damping:
            Au = Au + lam * u
        return rhs - Au

    def true_residual(x_int: np.ndarray) -> tuple[np.ndarray, float]:
        """The true residual of the system the iteration solved, at ``x_int``, and its
        norm, in that system's units (those of ``tol``).

        Without rescaling that system is the caller's, ``(A + damping I) x = b``, and
        ``x_int`` is ``x`` (accumulated from ``x0``): ``b - (A + damping I) x``, as for
        ``x0``.

        Rescaled (see "Scale safety" in :func:`cg`'s Notes), by powers of two, which is
        exact: with ``r0 = b - (A + damping I) x0`` the iteration starts from ``y = 0`` on

            c_A (A + damping I) y = c_b r0,    x = x_base + y c_A / c_b,

        ``x_base`` the caller's ``x0`` (None without one or when it is zero, and then
        ``r0 = b``); its operator is ``matvec`` (``c_A A`` once rescaled) plus
        ``damping_typed`` (``c_A damping``), and ``b`` is ``c_b b`` here. In the units of
        ``y`` the answer is ``x_int = internal(x) = internal(x_base) + y``, and

            c_b b - c_A (A + damping I) x_int = c_b (b - (A + damping I) x)
                                              = c_b r0 - c_A (A + damping I) y,

        the caller's true residual times ``c_b``, compared with ``tol``, which is in these
        units (the caller's tolerance times ``c_b``). It is evaluated in the first form,
        which rounds at the scale of ``x`` and ``b`` as the caller's residual would; the
        last (the correction's system) rounds at the scale of ``r0``, which a warm start
        far from the solution makes larger than the tolerance, so that its value says
        nothing about ``x`` (it can even come out 0). ``x_int`` is the returned ``x`` scaled
        exactly (``unscaled`` divides it by ``c_b / c_A``, a power of two, and rounds
        ``x_base + ...`` once, to the sum's own precision) unless that ``x`` is subnormal
        or overflows: digits the caller's dtype cannot hold, which no answer in it avoids
        and a residual computed in the caller's units would count, failing solves that
        converged on the system iterated on.
        """
        r_true = residual_of(matvec, b, damping_typed, x_int)
        if blas:  # (NumPy's own dot products, without its floating-point checks)
            uu = _kc.numpy_zdotc(r_true, r_true).real if is_complex else _kc.numpy_ddot(
                r_true, r_true)
        else:
            uu = _sqnorm_quiet(r_true, rdot, is_complex, lo_sq, hi_sq)
        if lo_sq < uu < hi_sq:
            return r_true, math.sqrt(uu)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            return r_true, _norm(r_true, rdot, lo_sq, hi_sq)

    if b_is_zero or math.sqrt(rr) <= tol:
        return finish(Status.CONVERGED, 0)

    # A direction whose Rayleigh quotient p^T A p / p^T p is below eps times the largest one
    # seen so far is numerically in the null space: treat it as zero curvature (singular A).
    null_threshold = 0.0
    tol_sq = tol * tol
    p = np.empty(n, dtype=dtype) if work is None else work[2]
    pp = rho_prev = 1.0
    lo_rq, hi_rq = info.lo_rq, info.hi_rq
    # The loop is the hot path for cheap operators: locals instead of attribute lookups,
    # and the operator output is checked with a fast path before the full validation.
    update_direction, update_iterate = _k.update_direction, _k.update_iterate
    add_scaled = _k.add_scaled
    # one list for the squared residual norms and the step lengths, in turn (rr_0, alpha_0,
    # rr_1, ...): a single conversion to an array at the end serves the residual history
    # and the spectrum
    append_alpha = append_rr = history.append
    q_damped = np.empty(n, dtype=dtype) if damping else p
    damping_typed = real(damping)  # so float32 arithmetic stays float32, as in NumPy
    sqnorm = _k.dot if not is_complex else (lambda u, _u=None: float(_vdot(u, u).real))
    sqrt_eps = math.sqrt(eps)
    explicit = isinstance(A, np.ndarray) or type(A).__module__.startswith("scipy.")
    inf = math.inf  # a local: the loop tests against it every iteration
    ndarray = np.ndarray
    p_strides = p.strides
    for k in range(maxiter):
        if psolve is None:
            z, rho = r, rr
        else:
            z = _checked(psolve(r), name_M, n, dtype, shape)
            rho = float(rdot(r, z))
            if k == 0 and math.isfinite(rho) and rho > 0.0 and not (
                lo_rq < rho / rr < hi_rq
            ):
                # a preconditioner far from unit scale: rescale it (exactly)
                e_z, e_r = _exponent(z), _exponent(r)
                if e_z is not None and e_r is not None:
                    c_M = _pow2(e_r - e_z, limit)
                    psolve = _scaled_operator(psolve, real(c_M), name_M, n, dtype, shape)
                    z = z * real(c_M)
                    rho = float(rdot(r, z))
            if not math.isfinite(rho):
                return finish(Status.NON_FINITE, k, where=f"preconditioner {name_M}")
            if rho <= 0.0:
                return finish(Status.INDEFINITE_PRECONDITIONER, k, curvature=rho / c_M / c_b
                              / c_b)
            rhos.append(rho)
        if k:
            beta = rho / rho_prev
            update_direction(p, z, beta)
            # ||p||^2 only sets the null-space threshold, so a cheap estimate will do:
            # without preconditioning r_{k+1} is orthogonal to p_k, so
            # ||p_{k+1}||^2 = ||r_{k+1}||^2 + beta^2 ||p_k||^2.
            pp = rr + beta * beta * pp if psolve is None else sqnorm(p, p)
            q = matvec(p)
            if type(q) is not np.ndarray or q.shape != shape or q.dtype != dtype:
                q = _checked(q, name_A, n, dtype, shape)
            if damping:
                # into our own buffer, not in place: q may be the caller's own array
                add_scaled(q_damped, q, p, damping_typed)
                q = q_damped
            pq_raw = dot(p, q)
        else:
            p[:] = z
            pp = rr if psolve is None else sqnorm(p, p)  # ||p||^2 = ||r||^2, known already
            if explicit:
                # our own product with the caller's matrix: its overflow is handled below
                with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                    q = _checked(matvec(p), name_A, n, dtype, shape)
            else:
                q = matvec(p)
                if type(q) is not np.ndarray or q.shape != shape or q.dtype != dtype:
                    q = _checked(q, name_A, n, dtype, shape)
            if fused and pp > 0.0 and q.strides == p_strides:
                # The whole iteration by the fused loop's step kernel (below), with the scale
                # check of p^T q added (state[CHECK_RANGE]): if it fails (or the curvature
                # test does, or the operator may not be Hermitian), the kernel changes
                # nothing but the damped product and the general code below takes over. One
                # kernel for every iteration, and the loop's state, record and work array
                # made once, here: each distinct call and NumPy operation costs microseconds
                # after an operator that leaves the caches cold.
                if work is None or x is not x_row or r is not r_row:
                    # (a warm start or a rescaled b: the same values, as rows of one array)
                    work = np.empty((4 if damping else 3, n), dtype=dtype)
                    work[0], work[1], work[2] = x, r, p
                    x, r, p = work[0], work[1], work[2]
                state = np.array([
                    rr, pp, null_threshold, eps, tol_sq, damping_typed,
                    1.0 if damping else 0.0, 0.0, min(maxiter, 2**53), sqrt_eps, 0.0, 0.0,
                    1.0, lo_rq, hi_rq, 1.0 if spectrum else 0.0, 0.0, 0.0, 0.0, 0.0,
                ])
                record = np.empty(2 * min(maxiter, 128) + 1)
                record[0] = rr
                step = _kc.strict_step_kernel(is_complex)
                try:
                    done = step(work, q, state, record)
                except TypeError:  # (a read-only or unaligned q: the general code below)
                    done = _kc.WRONG_LENGTH
                if done <= _kc.CONVERGED:  # ITERATED or CONVERGED
                    fused_record = record
                    if callback is not None:
                        callback(x if c_b == 1.0 else unscaled(x))
                    if done:
                        return finish(Status.CONVERGED, 1)
                    break  # on to the fused loop (p, state and record are ready)
            if damping:
                add_scaled(q_damped, q, p, damping_typed)
                q = q_damped
            # The operator's scale is not known yet: p^T A p may overflow, which is handled
            # below (rescaled) and so is not a warning. A Numba probe (which raises no
            # floating-point warnings) spares the cost of np.errstate on ordinary problems.
            pq_fused: Any = None
            if blas and pp > 0.0 and q.strides == p_strides:
                # dot(p, q), the same BLAS calls, without NumPy's FP checks
                pq_fused = _kc.numpy_zdotc(p, q) if is_complex else _kc.numpy_ddot(p, q)
            if pq_fused is not None and lo_rq < abs(pq_fused.real) / pp < hi_rq:
                pq_raw = pq_fused
            elif not is_complex and pp > 0.0 and lo_rq < abs(_k.dot(p, q)) / pp < hi_rq:
                pq_raw = dot(p, q)
            else:
                with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                    pq_raw = dot(p, q)
                pq = float(pq_raw.real)
                if pp > 0.0 and not (lo_rq < abs(pq) / pp < hi_rq) and pq == pq:
                    # an operator far from unit scale (or a p^T q that overflows): rescale
                    # it by a power of two, once, so no later curvature under/overflows
                    e_q, e_p = _exponent(q), _exponent(p)
                    if (
                        c_b == 1.0 and not normalize and np.all(np.isfinite(q))
                        and (e_q is None or not info.q_lo < e_q < info.q_hi)
                    ):
                        # Its product with a vector of b's scale is near the end of the
                        # range, where later products (of smaller residuals) lose digits to
                        # underflow or overflow: solve again with b brought to unit scale
                        # (a power of two: the same iterates, scaled exactly), at the cost
                        # of this one matvec.
                        return _solve(
                            A, b_arg, x0=x0, rtol=rtol_arg, atol=atol_arg,
                            maxiter=maxiter_arg, M=M, damping=damping, callback=callback,
                            spectrum=spectrum, names=names, allow_complex=allow_complex,
                            normalize=True, matvecs_before=n_matvec + 1, residual=residual,
                            prior=prior,
                        )
                    if e_q is not None and e_p is not None and np.all(np.isfinite(q)):
                        c_A = _pow2(e_p - e_q, limit)
                        if x.any():  # a warm start: iterate on the correction from here
                            x_base, x = x.copy(), np.zeros(n, dtype=dtype)
                        matvec = _scaled_operator(matvec, real(c_A), name_A, n, dtype, shape)
                        damping_typed = real(damping * c_A)
                        q = q * real(c_A)
                        pq_raw = dot(p, q)
        if is_complex:
            if abs(pq_raw.imag) > sqrt_eps * abs(pq_raw.real) and np.all(np.isfinite(q)):
                # Rounding leaves |Im p^H q| around eps ||p|| ||q||; far above that, the
                # operator is not Hermitian and CG's answer would be meaningless.
                if abs(pq_raw.imag) > sqrt_eps * math.sqrt(pp) * float(np.linalg.norm(q)):
                    return finish(
                        Status.NON_REAL_CURVATURE, k, True, curv_c=f"{complex(pq_raw):.3e}"
                    )
            pq = float(pq_raw.real)
        else:
            pq = float(pq_raw)
        if not (null_threshold * pp < pq < inf):  # also false for NaN
            if math.isnan(pq) or pq == math.inf:
                if k == 0 and not normalize and c_b == 1.0 and np.all(np.isfinite(p)):
                    # The operator overflowed on a vector of b's scale: solve again with b
                    # brought to unit scale (a power of two), at the cost of this one matvec.
                    return _solve(
                        A, b_arg, x0=x0, rtol=rtol_arg, atol=atol_arg, maxiter=maxiter_arg,
                        M=M, damping=damping, callback=callback, spectrum=spectrum,
                        names=names, allow_complex=allow_complex, normalize=True,
                        matvecs_before=n_matvec + 1, residual=residual, prior=prior,
                    )
                return finish(Status.NON_FINITE, k, True)
            return finish(
                Status.NEGATIVE_CURVATURE, k, True, direction=p.copy(), curvature=pq / c_A
            )
        if pq * eps > null_threshold * pp and pp > 0.0:
            # (pp = ||p||^2 underflows to 0 for a tiny complex64 p, whose curvature can still
            # be positive: then there is no threshold to raise)
            null_threshold = eps * pq / pp
        alpha = rho / pq
        append_alpha(alpha)
        if fused:
            # the rest of this iteration and the next direction in one kernel (the
            # operations of the lines below and of the plain loop's first lines)
            state = np.array([
                rho, pp, null_threshold, eps, tol_sq, damping_typed, 1.0 if damping else 0.0,
                0.0, min(maxiter, 2**53), sqrt_eps, 0.0, 0.0, 0.0, lo_rq, hi_rq,
                c_A if spectrum else 0.0, 0.0, 0.0, 0.0, 0.0,
            ])
            update = _kc.cg_update_complex if is_complex else _kc.cg_update_real
            rr = update(x, r, p, q, alpha, state)
        else:
            update_iterate(x, r, p, q, alpha)
            rr = float(rdot(r, r))
        rho_prev = rho
        append_rr(rr)
        if callback is not None:
            callback(x if c_b == 1.0 and c_A == 1.0 else unscaled(x))
        if rr <= tol_sq:
            return finish(Status.CONVERGED, k + 1)
        if plain:
            break  # the first iteration (all scale checks) is done: on to the plain loop
    else:
        return finish(Status.MAX_ITER, maxiter)

    # The plain loops, without a preconditioner, which is what a cheap operator runs most:
    # the same arithmetic as above with what cannot happen after the first iteration taken
    # out (rescaling, the preconditioner branches), one loop for complex and one for real
    # systems, so that nothing but the operator and four calls remain per iteration; for
    # float64 and complex128 (the `fused` loops), the operator and one kernel call.
    k_start = 1
    pending: np.ndarray | None = None  # an operator output the fused loop hands over
    if fused:
        # float64 and complex128: after the operator, one kernel call does the rest of the
        # iteration (the same operations in the same order, its inner products NumPy's own
        # BLAS calls: see trustregion.kernels.cg), so that a large operator, which leaves the
        # vectors and the interpreter cold, is followed by one call instead of four. x, r, p
        # (and the damped product) are the rows of one array and the kernel writes the step
        # lengths and residual norms to `record`: fewer arguments, nothing returned but what
        # happened, which is what such a call costs. The first iteration's kernel has
        # prepared p and the state.
        if fused_record is None:  # (the first iteration ran the general code)
            if work is None or x is not x_row or r is not r_row:
                work = np.empty((4 if damping else 3, n), dtype=dtype)
                work[0], work[1], work[2] = x, r, p
                x, r, p = work[0], work[1], work[2]
            record = np.empty(2 * min(maxiter, 128) + 1)
            record[: len(history)] = history  # rr_0, alpha_0, rr_1
            fused_record = record
            step = _kc.strict_step_kernel(is_complex)
        # The kernel takes only a writable C-contiguous vector of the dtype as q and refuses
        # any other type with a TypeError before it runs, and a vector of the wrong length
        # with WRONG_LENGTH (trustregion.kernels.cg.strict_step_kernel): so q is passed
        # unchecked, which spares an iteration the checks below (about 4 us after a large
        # operator, which leaves the interpreter cold); after a refusal every output is
        # checked first.
        if TYPE_CHECKING:
            assert work is not None and record is not None
        unchecked = True
        wrong_length = _kc.WRONG_LENGTH
        for k in range(1, maxiter):
            q = matvec(p)
            # (what an ordinary iteration runs is the call and two tests: every bytecode
            # costs after a large operator; anything else is handled under `if done`)
            if unchecked:
                try:
                    done = step(work, q, state, record)
                except TypeError:
                    unchecked = False
                    done = wrong_length
            else:
                done = wrong_length
            if done:
                if done == wrong_length:
                    if type(q) is not ndarray or q.dtype is not dtype or q.shape != shape:
                        q = _checked(q, name_A, n, dtype, shape)  # (contiguous)
                    elif q.strides != p_strides:
                        if is_complex:
                            q = _checked(q, name_A, n, dtype, shape)  # as the unfused loop
                        else:
                            # ndarray.dot reads a strided vector with its strides, which sums
                            # in another order: the unfused loop takes over, from this
                            # iteration
                            history[:] = record[: 2 * k + 1].tolist()
                            fused_record = None
                            rr, pp = float(state[_kc.RR]), float(state[_kc.PP])
                            null_threshold = float(state[_kc.NULL_THRESHOLD])
                            pending, k_start = q, k
                            break
                    if not q.flags.writeable or not q.flags.aligned:
                        q = q.copy()  # (the same values, of the one type the kernel takes)
                    done = step(work, q, state, record)
                if done == _kc.RECORD_FULL:
                    record = fused_record = np.concatenate(
                        (record, np.empty(record.shape[0] - 1))
                    )
                    done = step(work, q, state, record)
                if done > _kc.CONVERGED:
                    if done == _kc.CHECK_HERMITIAN:
                        # not Hermitian? (see the unfused loop)
                        q = work[3] if damping else q
                        pq_c = complex(state[_kc.PQ_REAL], state[_kc.PQ_IMAG])
                        if np.all(np.isfinite(q)) and abs(pq_c.imag) > (
                            sqrt_eps * math.sqrt(state[_kc.PP]) * float(np.linalg.norm(q))
                        ):
                            return finish(
                                Status.NON_REAL_CURVATURE, k, True, curv_c=f"{pq_c:.3e}"
                            )
                        done = _kc.cg_resume_step_complex(work, q, state, record)
                    if done == _kc.CURVATURE:
                        pq = float(state[_kc.PQ_REAL])  # p^T q, which failed the curvature test
                        if pq != pq or pq == inf:
                            return finish(Status.NON_FINITE, k, True)
                        return finish(
                            Status.NEGATIVE_CURVATURE, k, True, direction=p.copy(),
                            curvature=pq / c_A,
                        )
                if callback is not None:
                    callback(x if c_b == 1.0 and c_A == 1.0 else unscaled(x))
                if done:  # (CONVERGED)
                    return finish(Status.CONVERGED, k + 1)
            elif callback is not None:
                callback(x if c_b == 1.0 and c_A == 1.0 else unscaled(x))
        else:
            return finish(Status.MAX_ITER, maxiter)
    if is_complex:
        vdot = _vdot
        if dtype == np.complex128:  # kernels on the real and imaginary parts
            update_direction = _k.update_direction_z
            update_iterate_sqnorm = _k.update_iterate_sqnorm_z
        else:
            update_iterate_sqnorm = _k.update_iterate_sqnorm
        strides = p.strides  # the kernels read q as contiguous
        for k in range(1, maxiter):
            beta = rr / rho_prev
            update_direction(p, r, beta)
            pp = rr + beta * beta * pp
            q = matvec(p)
            if (
                type(q) is not ndarray or q.dtype is not dtype or q.shape != shape
                or q.strides != strides
            ):
                q = _checked(q, name_A, n, dtype, shape)
            if damping:
                add_scaled(q_damped, q, p, damping_typed)
                q = q_damped
            pq_c = complex(vdot(p, q))  # a Python complex: its parts are plain floats
            pq = pq_c.real
            if abs(pq_c.imag) > sqrt_eps * abs(pq) and np.all(np.isfinite(q)):
                # not Hermitian (see above)
                if abs(pq_c.imag) > sqrt_eps * math.sqrt(pp) * float(np.linalg.norm(q)):
                    return finish(Status.NON_REAL_CURVATURE, k, True, curv_c=f"{pq_c:.3e}")
            if not (null_threshold * pp < pq < inf):  # also false for NaN
                if pq != pq or pq == inf:
                    return finish(Status.NON_FINITE, k, True)
                return finish(
                    Status.NEGATIVE_CURVATURE, k, True, direction=p.copy(), curvature=pq / c_A
                )
            if pq * eps > null_threshold * pp:
                null_threshold = eps * pq / pp
            alpha = rr / pq
            append_alpha(alpha)
            rho_prev = rr
            rr = update_iterate_sqnorm(x, r, p, q, alpha)
            append_rr(rr)
            if callback is not None:
                callback(x if c_b == 1.0 and c_A == 1.0 else unscaled(x))
            if rr <= tol_sq:
                return finish(Status.CONVERGED, k + 1)
        return finish(Status.MAX_ITER, maxiter)
    p_dot, r_dot = p.dot, r.dot  # bound once: p and r are updated in place from here on
    for k in range(k_start, maxiter):
        if pending is None:
            beta = rr / rho_prev
            update_direction(p, r, beta)
            pp = rr + beta * beta * pp
            q = matvec(p)
            if type(q) is not ndarray or q.dtype is not dtype or q.shape != shape:
                q = _checked(q, name_A, n, dtype, shape)
        else:
            q, pending = pending, None
        if damping:
            add_scaled(q_damped, q, p, damping_typed)
            q = q_damped
        pq = float(p_dot(q))
        if not (null_threshold * pp < pq < inf):  # also false for NaN
            if pq != pq or pq == inf:
                return finish(Status.NON_FINITE, k, True)
            return finish(
                Status.NEGATIVE_CURVATURE, k, True, direction=p.copy(), curvature=pq / c_A
            )
        if pq * eps > null_threshold * pp:
            null_threshold = eps * pq / pp
        alpha = rr / pq
        append_alpha(alpha)
        update_iterate(x, r, p, q, alpha)
        rho_prev = rr
        rr = float(r_dot(r))
        append_rr(rr)
        if callback is not None:
            callback(x if c_b == 1.0 and c_A == 1.0 else unscaled(x))
        if rr <= tol_sq:
            return finish(Status.CONVERGED, k + 1)
    return finish(Status.MAX_ITER, maxiter)


def _sqnorm_quiet(
    u: np.ndarray, rdot: Callable[..., Any], is_complex: bool, lo_sq: float, hi_sq: float
) -> float:
    """``u^H u`` as the solver computes it, without an overflow warning when it is out of range.

    A Numba probe (no floating-point warnings, float64 accumulation) decides whether the
    BLAS product is safe; only out-of-range vectors pay for ``np.errstate``.
    """
    if not is_complex and lo_sq < _k.dot(u, u) < hi_sq:
        return float(rdot(u, u))
    with np.errstate(over="ignore", under="ignore"):
        return float(rdot(u, u))


# np.dot and np.vdot without the __array_function__ dispatch (about 0.3 us a call, twice per
# iteration): the same C routine (PyArray_MatrixProduct2, BLAS dot), so the same bits.
_dot: Callable[[np.ndarray, np.ndarray], Any] = np.ndarray.dot
_vdot: Callable[[np.ndarray, np.ndarray], Any] = getattr(np.vdot, "_implementation", np.vdot)


def _real_vdot(a: np.ndarray, b: np.ndarray) -> float:
    """``Re(a^H b)``: the real inner product of complex vectors."""
    return float(_vdot(a, b).real)


def _norm(u: np.ndarray, dot: Callable[..., Any], lo_sq: float, hi_sq: float) -> float:
    """``||u||`` without overflow or underflow (``sqrt(u^H u)`` when that is safe)."""
    uu = float(dot(u, u))
    if lo_sq < uu < hi_sq or (uu == 0.0 and not u.any()):
        return math.sqrt(uu)
    e = _exponent(u)
    if e is None:
        return math.inf
    # in double precision, where a float32 vector's exponents all fit
    wide = u.astype(np.complex128 if u.dtype.kind == "c" else np.float64)
    half = -e // 2
    scaled = wide * math.ldexp(1.0, half) * math.ldexp(1.0, -e - half)
    try:
        return math.ldexp(math.sqrt(float(dot(scaled, scaled))), e)
    except OverflowError:
        return math.inf


def _scaled_operator(
    op: Callable[[np.ndarray], Any], c: Any, name: str, n: int, dtype: np.dtype,
    shape: tuple[int],
) -> Callable[[np.ndarray], np.ndarray]:
    """``u -> c * op(u)`` with the output checked (only used on badly scaled problems)."""

    def scaled(u: np.ndarray) -> np.ndarray:
        return _checked(op(u), name, n, dtype, shape) * c

    return scaled
