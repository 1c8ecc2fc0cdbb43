"""One vocabulary of outcomes shared by every solver, and the one place messages are written.

Following lineax/optimistix: a meaning has one name and one code wherever it occurs
(``NON_FINITE`` means the same in :func:`~trustregion.cg` as in
:func:`~trustregion.divergence_ascent`), and each solver documents which members it can
return. Expected outcomes are statuses; misuse raises an exception.

A result's ``message`` is ``"<what happened>; <what to try>"``: the solver states the facts
it measured, :func:`render` appends the remedy that belongs to the status, written once here.

>>> import numpy as np, trustregion as tr
>>> res = tr.cg(np.diag([1.0, -1.0]), np.ones(2))
>>> res.status is tr.Status.NEGATIVE_CURVATURE
True
>>> tr.Status.NEGATIVE_CURVATURE.remedy
'add damping (a multiple of the identity) or use steihaug_cg, which handles indefinite operators'
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """Why a solver stopped, or which case it solved.

    Codes are grouped: 0-9 are shared by several solvers, the tens belong to one family.
    ``success`` on a result says whether the status is a success *for that solver*
    (``NEGATIVE_CURVATURE`` is a normal outcome of Steihaug CG but a failure of plain CG).
    """

    # -- shared ---------------------------------------------------------------------------
    CONVERGED = 0
    """The solver met its tolerance."""
    MAX_ITER = 1
    """The iteration limit was reached first."""
    NON_FINITE = 2
    """A user function (operator, preconditioner, objective, gradient) returned NaN or inf;
    the last finite iterate is returned."""
    NEGATIVE_CURVATURE = 3
    """A direction ``d`` with ``d^T H d <= 0`` was found: the operator is not positive
    definite (indefinite, or singular with the right-hand side outside its range)."""
    INDEFINITE_PRECONDITIONER = 4
    """``r^T M r <= 0``: the preconditioner is not positive definite."""
    CALLBACK_STOP = 5
    """The user's ``callback`` raised ``StopIteration``."""
    NON_REAL_CURVATURE = 6
    """``p^H A p`` has an imaginary part well above rounding: a complex operator that is not
    Hermitian (CG needs a Hermitian positive definite operator)."""
    OUT_OF_RANGE = 7
    """The answer's magnitude does not fit the floating-point type (it would overflow):
    the problem is too badly scaled to represent its solution."""
    STAGNATED = 8
    """The tolerance is below the accuracy rounding allows: the iteration's own estimate
    met it, but restarting from the true value (recomputed from the definition) no longer
    reduces the error (:func:`~trustregion.cg`: the true residual ``b - A x``)."""
    # -- trust-region steps (steihaug_cg, scale_step, natural_gradient_step) ---------------
    BOUNDARY = 10
    """The step lies on the trust-region boundary."""
    ZERO_DIRECTION = 11
    """The direction is zero (a zero gradient): there is no step to take."""
    NOT_ASCENT = 12
    """``g^T d <= 0``: the direction does not increase the linear objective."""
    # -- line search ----------------------------------------------------------------------
    ACCEPTED = 20
    """A trial point was accepted."""
    NO_IMPROVEMENT = 21
    """No trial improved the objective enough."""
    CONSTRAINT_VIOLATED = 22
    """The last trial broke the constraint bound."""
    # -- iterative solvers (divergence_ascent, minimize) -----------------------------------
    LINE_SEARCH_FAILED = 30
    """The line search rejected every trial, repeatedly."""
    STEP_FAILED = 31
    """No step could be computed (see the inner status in the message)."""
    NO_PREDICTED_DECREASE = 32
    """The subproblem step predicts no decrease of the model."""
    STEP_TOO_SMALL = 33
    """The step no longer changes ``x`` in floating point."""
    # -- constrained policy optimization (cpo_step) ----------------------------------------
    INACTIVE = 40
    """The linear constraint is inactive at the solution: the TRPO step."""
    ACTIVE = 41
    """Both constraints are active at the solution."""
    RECOVERY = 42
    """Infeasible: the step decreases the constraint as much as the trust region allows."""
    INFEASIBLE_NO_DIRECTION = 43
    """The constraint is violated and its gradient is zero: no step can reduce it."""

    @property
    def remedy(self) -> str:
        """What to try when this status is not what you wanted ("" when nothing is to fix)."""
        return _REMEDIES[self]


_REMEDIES: dict[Status, str] = {
    Status.CONVERGED: "",
    Status.MAX_ITER: (
        "raise the iteration limit, or precondition or damp the problem so it needs fewer "
        "iterations"
    ),
    Status.NON_FINITE: (
        "evaluate the named function at the returned point to find where it breaks; lower "
        "the step size or trust region if it leaves the function's domain"
    ),
    Status.NEGATIVE_CURVATURE: (
        "add damping (a multiple of the identity) or use steihaug_cg, which handles "
        "indefinite operators"
    ),
    Status.INDEFINITE_PRECONDITIONER: (
        "the preconditioner must be symmetric positive definite: check M (an inverse "
        "diagonal needs positive entries)"
    ),
    Status.CALLBACK_STOP: "",
    Status.NON_REAL_CURVATURE: (
        "the operator must be Hermitian (A^H = A): check the callable, or pass the matrix "
        "itself so it can be checked"
    ),
    Status.OUT_OF_RANGE: (
        "rescale the problem (change the units of the right-hand side or of the operator) "
        "or solve in float64"
    ),
    Status.STAGNATED: (
        "loosen the tolerance to above the true residual reached (the rounding of the "
        "operator and of x sets a floor that grows with the condition number and with the "
        "size of a warm start x0), or precondition, or compute the operator in float64"
    ),
    Status.BOUNDARY: "",
    Status.ZERO_DIRECTION: "the gradient is zero: the point is stationary, nothing to do",
    Status.NOT_ASCENT: (
        "check the inner CG result (a failed solve gives a poor direction) and the sign of "
        "the gradient"
    ),
    Status.ACCEPTED: "",
    Status.NO_IMPROVEMENT: (
        "the gradient may be noise-dominated or the step too long: lower the trust region "
        "or raise max_backtracks"
    ),
    Status.CONSTRAINT_VIOLATED: (
        "raise max_backtracks or lower the trust region, and check the constraint's "
        "Hessian-vector product against the constraint itself"
    ),
    Status.LINE_SEARCH_FAILED: (
        "check that the gradient and the metric product agree with the objective and the "
        "divergence (finite differences), or lower the divergence bound"
    ),
    Status.STEP_FAILED: "see the inner status in the message",
    Status.NO_PREDICTED_DECREASE: (
        "the Hessian product may be inconsistent with the gradient: check hessp/hess "
        "against finite differences of jac"
    ),
    Status.STEP_TOO_SMALL: (
        "jac may be inconsistent with fun, or gtol too tight for the precision of fun"
    ),
    Status.INACTIVE: "",
    Status.ACTIVE: "",
    Status.RECOVERY: "",
    Status.INFEASIBLE_NO_DIRECTION: "check the constraint gradient b",
}


def render(status: Status, what_happened: str) -> str:
    """The message of a result: the facts a solver measured, then the status's remedy."""
    remedy = _REMEDIES[status]
    return f"{what_happened}; {remedy}" if remedy else what_happened
