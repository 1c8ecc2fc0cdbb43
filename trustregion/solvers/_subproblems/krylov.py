r"""``trust-krylov``: GLTR, the subproblem solved in a Lanczos basis (Gould, Lucidi, Roma &
Toint, "Solving the trust-region subproblem using the Lanczos method", SIAM J. Optim. 9, 1999).

CG on :math:`Hs = -g` started at :math:`s = 0` builds, one Hessian product per step, the
Lanczos basis :math:`Q_k` of the Krylov space :math:`\mathcal K_k(H, g)` (the normalized
residuals, :math:`q_j = \pm r_j / \|r_j\|`) and the tridiagonal :math:`T_k = Q_k^T H Q_k`
from its step lengths (Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed.,
section 6.7.3): :math:`\delta_j = 1/\alpha_j + \beta_{j-1}/\alpha_{j-1}` on the diagonal,
:math:`\sqrt{\beta_j}/|\alpha_j|` beside it. This is the scheme of trlib, which scipy's
``trust-krylov`` wraps. Restricted to that space the subproblem is

.. math::  \min_{\|h\| \le \Delta}\; \|g\|\, h_1 + \tfrac12 h^T T_k h, \qquad p = Q_k h .

While :math:`T_k` is positive definite and the CG iterate is inside the region, the CG
iterate is its solution; once the region is left or negative curvature appears, the
tridiagonal subproblem is solved by Moré-Sorensen
(:func:`~trustregion.solvers._subproblems.tridiagonal.tridiagonal_subproblem`). The gradient
of the Lagrangian at :math:`p` has norm :math:`\gamma_{k+1} |e_k^T h|` (the next
off-diagonal), which gives the stopping tests without forming it. With scipy's default
(``inexact=True``, trlib's ``tol_rel_i = -2``, ``tol_rel_b = -3``):

.. math::  \text{inside: } \le \min(\tfrac12, \|g\|)\,\|g\|, \qquad
    \text{on the boundary: } \le \max(10^{-6}, \min(\tfrac12, \|g\|^{1/2}))\,\|g\|;

with ``inexact=False``, :math:`10^{-8}\|g\|` and :math:`10^{-6}\|g\|`. A step with
:math:`p^T H p \approx 0` (where CG breaks down) continues as a Lanczos step.

What differs from trlib:

- the residuals are reorthogonalized against the basis (classical Gram-Schmidt, a compiled
  kernel): on an ill-conditioned Hessian plain CG loses orthogonality and needs far more
  products (on a quadratic of condition 1e6 in 30 dimensions: 232 products against 529);
- the predicted reduction comes from :math:`T_k` (no product to evaluate the model);
- the basis is kept between solves at the same point: after a rejected step, a smaller
  radius re-solves the tridiagonal subproblem and extends the basis only if that is not
  accurate enough (trlib's hot start, which scipy uses too);
- the hard case. When the Krylov space of :math:`g` is invariant up to rounding (the
  process breaks down, or its last coupling falls below :math:`\sqrt{\varepsilon}` of
  :math:`\|T\|`) before it spans the whole space, the eigenvector of the smallest eigenvalue
  may lie outside it; the solution in that space can then be wrong (inside the region while
  :math:`H` is indefinite, or on the boundary with a multiplier below
  :math:`-\lambda_{\min}(H)`). A *probe* block is then added: Lanczos from a pseudo-random
  vector (fixed seed) orthogonal to the basis; :math:`T` becomes block diagonal, and the
  tridiagonal solver completes the step along the eigenvector when the gradient has no
  component there. The probe is continued while it shows the hard case or its smallest
  Ritz value still moves. It costs a product or two per invariant subspace met (on
  separable problems; a generic :math:`g` spans the whole space). When the subproblem
  converges in the Krylov space before that space becomes invariant, the answer is the
  minimizer in that space, as for every Krylov method.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from trustregion.core.status import Status
from trustregion.kernels.gltr import (
    cg_direction,
    cg_step_update,
    lanczos_update,
    smallest_eigenvalue,
)
from trustregion.solvers._subproblems import Step, failed
from trustregion.solvers._subproblems.tridiagonal import (
    TridiagonalSolution,
    tridiagonal_subproblem,
)

_EPS = float(np.finfo(float).eps)
_SQRT_EPS = math.sqrt(_EPS)
# k n above which the reorthogonalization is left to BLAS (measured crossover)
_KERNEL_REORTHOGONALIZATION = 4096


@functools.lru_cache(maxsize=64)
def _probe_vector(n: int, index: int) -> np.ndarray:
    """The ``index``-th start vector of a probe block in dimension ``n``: pseudo-random with a
    fixed seed, so a run does not depend on what ran before it."""
    vector: np.ndarray = np.random.default_rng([n, index]).standard_normal(size=(n,))
    vector.flags.writeable = False
    return vector


class KrylovModel:
    """The model at one point, matrix-free: ``hessp(v) -> H v`` (already checked for shape
    and dtype by the caller; non-finite output is a status)."""

    def __init__(
        self,
        hessp: Callable[[np.ndarray], np.ndarray],
        g: np.ndarray,
        *,
        inexact: bool = True,
    ) -> None:
        n = g.shape[0]
        self.hessp, self.g, self.n = hessp, g, n
        gamma = self.gamma = math.sqrt(float(g @ g))
        if inexact:
            self.tol_interior = min(0.5, gamma) * gamma
            self.tol_boundary = max(1e-6, min(0.5, math.sqrt(gamma))) * gamma
        else:
            self.tol_interior = 1e-8 * gamma
            self.tol_boundary = 1e-6 * gamma
        self.maxdim = 2 * n  # as trlib in scipy: CG without reorthogonalization may need > n
        # rows: the Lanczos vectors; grown by doubling (a subproblem rarely needs many, and
        # 2 n rows up front would be 16 n^2 bytes)
        self.Q = np.empty((min(self.maxdim, 16) + 1, n))
        np.multiply(g, 1.0 / gamma, out=self.Q[0])
        self.k = 0  # T is k x k
        self.diag: list[float] = []
        self.off: list[float] = []  # off[j] couples q_j and q_{j+1}; 0 between blocks
        self._probes = 0  # random blocks started
        self._scale = 0.0  # max |entry| of T so far
        # CG on H s = -g, from which T is read off while CG is defined (trlib's scheme)
        self.cg_active = True
        self.positive_definite = True
        self.s = np.zeros(n)
        self.s_norm = 0.0
        self._r = g.copy()
        self._rr = gamma * gamma
        self._p = -self._r
        self._sigma = 1.0
        self._alpha_prev = 1.0
        self._beta_prev = 0.0
        self.residual = gamma  # ||g + H s|| of the CG iterate
        self.invariant = False  # the last block spans an invariant subspace
        self.nonfinite = False
        self.probed = False  # a block from a random start was added (the hard case)
        self._probe_start = 0
        self._probe_theta = np.inf
        self._lam = 0.0  # the last multiplier, to start the next tridiagonal solve

    def _product(self, v: np.ndarray) -> np.ndarray | None:
        w = self.hessp(v)
        # one dot product screens for NaN/inf (it is finite when every entry is, barring
        # overflow); the element-wise test runs only when it is not
        if not math.isfinite(float(v @ w)) and not np.all(np.isfinite(w)):
            self.nonfinite = True
            return None
        return w

    def _extend(self) -> bool:
        """One more row of T (one Hessian product). False if no step is possible."""
        if self.k >= self.maxdim or self.invariant:
            return False
        if self.cg_active:
            return self._cg_step()
        return self._lanczos_step()

    def _cg_step(self) -> bool:
        r"""A CG step; T gains :math:`\delta_j = 1/\alpha_j + \beta_{j-1}/\alpha_{j-1}` and
        :math:`\sqrt{\beta_j}/|\alpha_j|`, with :math:`q_j = \pm r_j/\|r_j\|` (Saad,
        section 6.7.3; the signs follow the curvature, as in trlib)."""
        p = self._p
        Hp = self._product(p)
        if Hp is None:
            return False
        curvature = float(p @ Hp)
        if abs(curvature) <= _EPS * float(p @ p) * max(self._scale, 1.0):
            # p^T H p ~ 0: CG breaks down; continue with Lanczos from q_k (trlib's switch)
            self.cg_active = False
            return self._lanczos_step()
        j = self.k
        alpha = self._rr / curvature
        delta = 1.0 / alpha + (self._beta_prev / self._alpha_prev if j > 0 else 0.0)
        self.diag.append(delta)
        self._scale = max(self._scale, abs(delta))
        self.k = j + 1
        if alpha <= 0.0:
            self.positive_definite = False
        # s += alpha p (while T is positive definite), r += alpha Hp, r kept orthogonal to
        # the Lanczos vectors: without it CG loses orthogonality on an ill-conditioned H
        # and needs many more products
        # (in the kernel for small bases; by BLAS, two matrix-vector products, for large)
        small = self.k * self.n <= _KERNEL_REORTHOGONALIZATION
        rr, ss = cg_step_update(
            self.s, self._r, p, Hp, self.Q, self.k if small else 0, alpha, self.positive_definite
        )
        if not small:
            basis = self.Q[: self.k]
            self._r -= basis.T @ (basis @ self._r)
            rr = float(self._r @ self._r)
        if self.positive_definite:
            self.s_norm = math.sqrt(ss)
        r_norm = math.sqrt(rr)
        if self.positive_definite:
            self.residual = r_norm
        if r_norm <= 10.0 * self.n * _EPS * max(self.gamma, math.sqrt(self._rr)):
            self.invariant = True
            self.off.append(0.0)
            return True
        beta = rr / self._rr
        coupling = math.sqrt(beta) / abs(alpha)
        self.off.append(coupling)
        self._scale = max(self._scale, coupling)
        self._sigma = -math.copysign(1.0, alpha) * self._sigma
        cg_direction(self._r, p, beta, self._row(self.k), self._sigma / r_norm)
        self._rr = rr
        self._alpha_prev, self._beta_prev = alpha, beta
        return True

    def _lanczos_step(self) -> bool:
        """A Lanczos step from q_k, reorthogonalized against the basis."""
        k = self.k
        w = self._product(self.Q[k])
        if w is None:
            return False
        w = np.array(w, dtype=np.float64)  # the user's array is not ours to modify
        delta, beta = lanczos_update(w, self.Q, k, self.off[k - 1] if k > 0 else 0.0)
        self.diag.append(delta)
        self.k = k + 1
        self._scale = max(self._scale, abs(delta), beta)
        if beta <= 10.0 * self.n * _EPS * self._scale:
            self.invariant = True
            self.off.append(0.0)
            return True
        self.invariant = False
        self.off.append(beta)
        np.multiply(w, 1.0 / beta, out=self._row(self.k))
        return True

    def _restart(self) -> bool:
        """Continue the basis from a random vector orthogonal to it (a new block of T)."""
        k = self.k
        if k >= min(self.n, self.maxdim):
            return False
        v = _probe_vector(self.n, self._probes).copy()
        self._probes += 1
        basis = self.Q[:k]
        for _ in range(2):
            v -= basis.T @ (basis @ v)
        norm = math.sqrt(float(v @ v))
        if norm <= _SQRT_EPS:
            return False
        np.multiply(v, 1.0 / norm, out=self._row(k))
        self.off[k - 1] = 0.0  # a new block: T is reducible here
        self._probe_start = k
        self._probe_theta = np.inf
        self.cg_active = False  # the CG iterate stays the solution of the first block
        self.invariant = False
        return True

    def _row(self, k: int) -> np.ndarray:
        """Row ``k`` of the basis storage, growing it if needed."""
        if k >= self.Q.shape[0]:
            grown = np.empty((min(2 * self.Q.shape[0], self.maxdim + 1), self.n))
            grown[: self.Q.shape[0]] = self.Q
            self.Q = grown
        return self.Q[k]

    def _tridiagonal(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.diag), np.array(self.off[: self.k - 1])

    def _solve_tridiagonal(self, radius: float) -> TridiagonalSolution:
        diag, off = self._tridiagonal()
        sol = tridiagonal_subproblem(diag, off, self.gamma, radius, lam_start=self._lam)
        self._lam = sol.lam
        return sol

    def _step_from(self, h: np.ndarray, hits_boundary: bool) -> Step:
        diag, off = self._tridiagonal()
        model = self.gamma * h[0] + 0.5 * float(diag @ (h * h) + 2.0 * (off @ (h[:-1] * h[1:])))
        return Step(self.Q[: self.k].T @ h, hits_boundary, -model)

    def _probe_settled(self, hard_case: bool) -> bool:
        """Whether the probe block (if any) has shown what it can: the hard case (then the
        Lagrangian test decides), or a smallest Ritz value that no longer moves (Lanczos
        finds the extreme eigenvalues of the rest of the space first)."""
        if not self.probed or hard_case:
            return True
        start = self._probe_start
        theta = smallest_eigenvalue(
            np.array(self.diag[start:]), np.array(self.off[start : self.k - 1])
        )
        previous, self._probe_theta = self._probe_theta, theta
        return abs(theta - previous) <= 1e-3 * max(1.0, abs(theta))

    def _reducible(self) -> bool:
        """Whether the space built so far is invariant up to rounding: T's last coupling is
        below sqrt(eps) of its scale (an exact breakdown, or one that rounding hides)."""
        return self.invariant or self.off[self.k - 1] <= _SQRT_EPS * self._scale

    def solve(self, radius: float) -> Step:
        while True:
            if self.k > 0:
                reducible = self._reducible()
                if self.cg_active and self.positive_definite and self.s_norm < radius:
                    # An invariant space of g could miss a negative eigenvalue elsewhere (the
                    # hard case, where the solution is on the boundary): probe once.
                    converged = self.residual <= self.tol_interior and not reducible
                    if converged or (reducible and (self.probed or not self._restart())):
                        # the CG iterate: m(s) = g^T s / 2 when T h = -gamma e_1
                        return Step(self.s.copy(), False, -0.5 * float(self.g @ self.s))
                    self.probed = self.probed or not self.cg_active  # restarted just now
                else:
                    sol = self._solve_tridiagonal(radius)
                    if reducible:
                        # exact in an invariant space; on the boundary the rest of the space
                        # may hold the eigenvector of the hard case: probe it with a new block,
                        # continued only while it shows the hard case
                        if (
                            sol.interior
                            or (self.probed and not sol.hard_case)
                            or not self._restart()
                        ):
                            return self._step_from(sol.h, not sol.interior)
                        self.probed = True
                    else:
                        lagrangian = self.off[self.k - 1] * abs(sol.h[-1])
                        tol = self.tol_interior if sol.interior else self.tol_boundary
                        if lagrangian <= tol and self._probe_settled(sol.hard_case):
                            return self._step_from(sol.h, not sol.interior)
            if not self._extend():
                if self.nonfinite:
                    return failed(self.n, Status.NON_FINITE, "hessp/hess")
                sol = self._solve_tridiagonal(radius)
                return self._step_from(sol.h, not sol.interior)
