"""A safe-RL step with ``trustregion.cpo_step``: its three cases on a three-armed bandit.

A softmax policy over three arms (logits ``theta = (z_1, z_2)``, the third logit fixed at 0)
earns reward ``r_a`` and pays cost ``k_a`` per pull.  The fast arm pays most and costs most:
safe RL asks to maximize the expected reward ``J_R = p . r`` subject to the expected cost
``J_C = p . k`` staying under a limit ``d``.  Constrained Policy Optimization (Achiam et al.,
2017) linearizes both at the current policy and solves

    max_x  g^T x   s.t.  b^T x + c <= 0,   (1/2) x^T F x <= delta

with ``g = grad J_R``, ``b = grad J_C``, ``c = J_C - d`` and ``F`` the Fisher matrix of the
policy (a KL trust region).  ``cpo_step`` solves it in closed form from two CG solves.
Three cost limits give its three cases:

- a loose limit: the constraint is ``INACTIVE``, the step is TRPO's;
- a limit just under reach of the TRPO step: ``ACTIVE``, the step slides along the
  linearized constraint ``b^T x + c = 0``;
- a limit the current policy already violates by more than one step can repair: ``RECOVERY``,
  the step that decreases the cost most within the trust region.

The figure draws each case in parameter space: the trust-region ellipse, the feasible side of
the linearized constraint, the TRPO step and the CPO step.

Run:  python examples/cpo_cases.py [--short] [--out DIR]   (the short mode is the full mode:
it takes well under a second.)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import trustregion as tr

REWARD = np.array([1.0, 0.6, 0.1])
COST = np.array([1.0, 0.3, 0.0])
DELTA = 0.02


def probs(theta: np.ndarray) -> np.ndarray:
    z = np.append(theta, 0.0)
    e = np.exp(z - z.max())
    return e / e.sum()


def gradient_of_expectation(theta: np.ndarray, values: np.ndarray) -> np.ndarray:
    """d(p . values)/d theta for the two free logits."""
    p = probs(theta)
    return (p * (values - p @ values))[:2]


def fisher(theta: np.ndarray) -> np.ndarray:
    """The Fisher matrix of the softmax in the two free logits: (diag(p) - p p^T)[:2, :2]."""
    p = probs(theta)
    return (np.diag(p) - np.outer(p, p))[:2, :2]


def kl(theta_old: np.ndarray, theta_new: np.ndarray) -> float:
    p, q = probs(theta_old), probs(theta_new)
    return float(p @ np.log(p / q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true",
                        default=os.environ.get("TR_EXAMPLES_SHORT") == "1")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the figure")
    args = parser.parse_args()

    theta = np.array([0.0, 0.5])          # the current policy
    p = probs(theta)
    g = gradient_of_expectation(theta, REWARD)
    b = gradient_of_expectation(theta, COST)
    F = fisher(theta)
    trpo = tr.natural_gradient_step(g, F.dot, DELTA, cg_iters=10, damping=0.0)
    cost_after_trpo = float(probs(theta + trpo.step) @ COST)
    print(f"policy p = {np.round(p, 3)}: reward {p @ REWARD:.4f}, cost {p @ COST:.4f}; "
          f"after the TRPO step the cost would be {cost_after_trpo:.4f}")

    limits = {
        "loose limit": cost_after_trpo + 0.05,
        "limit within reach": float(p @ COST) + 0.3 * (cost_after_trpo - p @ COST),
        "limit violated": float(p @ COST) - 0.25,
    }
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    for ax, (label, limit) in zip(axes, limits.items(), strict=True):
        c = float(p @ COST) - limit
        res = tr.cpo_step(g, b, c, F.dot, DELTA)
        x = res.step
        new = theta + x
        q = probs(new)
        print(f"{label:18s} d = {limit:.4f}: {res.status.name:8s} "
              f"reward {p @ REWARD:.4f} -> {q @ REWARD:.4f}, "
              f"cost {p @ COST:.4f} -> {q @ COST:.4f} "
              f"(linearized {res.predicted_constraint + limit:.4f}), "
              f"KL {kl(theta, new):.4f} (model {res.predicted_divergence:.4f}, delta {DELTA})")

        # The trust region 1/2 x^T F x <= delta around theta, as an ellipse.
        angles = np.linspace(0, 2 * np.pi, 200)
        circle = np.stack([np.cos(angles), np.sin(angles)])
        ellipse = np.linalg.cholesky(np.linalg.inv(F / (2 * DELTA))) @ circle
        ax.plot(*(theta[:, None] + ellipse), color="0.3", lw=1, label="KL trust region")
        # The linearized constraint b^T x + c <= 0, its feasible side shaded.
        span = 1.6 * np.abs(ellipse).max()
        grid = np.linspace(-span, span, 200)
        X, Y = np.meshgrid(theta[0] + grid, theta[1] + grid)
        lin = b[0] * (X - theta[0]) + b[1] * (Y - theta[1]) + c
        ax.contourf(X, Y, lin, levels=[-np.inf, 0], colors=["C2"], alpha=0.15)
        ax.contour(X, Y, lin, levels=[0], colors=["C2"], linewidths=1)
        ax.plot([], [], color="C2", lw=6, alpha=0.3, label=r"feasible: $b^Tx + c \leq 0$")
        ax.annotate("", theta + trpo.step, theta,
                    arrowprops={"arrowstyle": "->", "color": "C0", "lw": 1.5, "ls": "--"})
        ax.annotate("", new, theta, arrowprops={"arrowstyle": "->", "color": "C3", "lw": 2.5})
        ax.plot([], [], "--", color="C0", label="TRPO step")
        ax.plot([], [], color="C3", lw=2.5, label="CPO step")
        ax.plot(*theta, "ko", ms=4)
        ax.set(xlim=(theta[0] - span, theta[0] + span), ylim=(theta[1] - span, theta[1] + span),
               xlabel=r"$z_1$ (logit of the fast arm)", ylabel=r"$z_2$",
               title=f"{label}: {res.status.name}\ncost {p @ COST:.3f} -> {q @ COST:.3f}, "
                     f"limit {limit:.3f}")
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "cpo_cases.png", dpi=110)
    print(f"figure: {args.out / 'cpo_cases.png'}")


if __name__ == "__main__":
    main()
