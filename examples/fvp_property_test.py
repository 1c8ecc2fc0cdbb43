"""Property-testing your own Fisher-vector product with ``trustregion.testing``.

You wrote a Gaussian policy by hand -- mean ``X W`` for observations ``X``, a learned log
standard deviation per action dimension, parameters ``theta = (vec W, log_std)`` -- and its
Fisher-vector product for TRPO:

    F v = (1/N) sum_i J_i^T M_i J_i v,   M = diag(1/sigma^2) for the mean, 2 for the log std.

Before CG runs on it, check it against the KL divergence it is the Hessian of:
``trustregion.testing.check_fvp`` compares ``v^T F v`` and ``u^T F v`` with finite
differences of the KL (tolerances computed from Richardson pairs and rounding bounds, not
guessed), checks symmetry, semi-definiteness and ``KL(theta || theta) = 0``.  hypothesis
draws the parameters, the observations and the sizes.  Then four classic bugs, each caught
with a message that says what was compared and where its tolerance came from.

Run:  python examples/fvp_property_test.py [--short] [--out DIR]
(``--short`` or ``TR_EXAMPLES_SHORT=1``: 20 hypothesis cases instead of 200.)
"""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trustregion.testing import check_fvp


class LinearGaussianPolicy:
    """Mean ``X W``, state-independent log standard deviations: the policy under test."""

    def __init__(self, X: np.ndarray, act_dim: int) -> None:
        self.X, self.obs_dim, self.act_dim = X, X.shape[1], act_dim

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_w = self.obs_dim * self.act_dim
        return theta[:n_w].reshape(self.obs_dim, self.act_dim), theta[n_w:]

    def kl(self, theta_old: np.ndarray, theta: np.ndarray) -> float:
        """Mean over observations of KL(pi_old(.|x) || pi(.|x)), closed form."""
        (W0, s0), (W1, s1) = self.split(theta_old), self.split(theta)
        dmean = self.X @ (W1 - W0)
        per_dim = s1 - s0 + (np.exp(2 * s0) + dmean**2) / (2 * np.exp(2 * s1)) - 0.5
        return float(np.mean(np.sum(per_dim, axis=1)))

    def fvp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """F v: the Gauss-Newton form J^T M J v, averaged over observations."""
        _, log_std = self.split(theta)
        dW, dlog_std = self.split(v)
        dmean = self.X @ dW                                  # J v, mean block
        out_W = self.X.T @ (dmean / np.exp(2 * log_std)) / len(self.X)
        out_s = 2.0 * dlog_std                               # M = 2 for each log std
        return np.concatenate([out_W.ravel(), out_s])


BUGS = {
    "twice the Fisher (the KL matched to v^T F v, not 1/2 v^T F v)":
        lambda policy, theta, v: 2.0 * policy.fvp(theta, v),
    "sigma instead of sigma^2 in the mean's metric":
        lambda policy, theta, v: _scaled_mean_metric(policy, theta, v),
    "log-std metric 1 instead of 2":
        lambda policy, theta, v: policy.fvp(theta, v) - _log_std_part(policy, v) / 2,
    "sum over observations instead of the mean":
        lambda policy, theta, v: policy.fvp(theta, v) * np.r_[
            np.full(policy.obs_dim * policy.act_dim, len(policy.X)), np.ones(policy.act_dim)],
}


def _log_std_part(policy: LinearGaussianPolicy, v: np.ndarray) -> np.ndarray:
    out = np.zeros_like(v)
    out[policy.obs_dim * policy.act_dim :] = 2.0 * policy.split(v)[1]
    return out


def _scaled_mean_metric(policy: LinearGaussianPolicy, theta: np.ndarray,
                        v: np.ndarray) -> np.ndarray:
    _, log_std = policy.split(theta)
    out = policy.fvp(theta, v)
    n_w = policy.obs_dim * policy.act_dim
    out[:n_w] = (policy.X.T @ (policy.X @ policy.split(v)[0] / np.exp(log_std))
                 / len(policy.X)).ravel()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true",
                        default=os.environ.get("TR_EXAMPLES_SHORT") == "1")
    parser.add_argument("--out", type=Path, default=Path("."), help="unused (prints only)")
    args = parser.parse_args()
    n_cases = 20 if args.short else 200

    worst: list[float] = []

    @settings(max_examples=n_cases, derandomize=True, deadline=None)
    @given(n_obs=st.integers(1, 64), obs_dim=st.integers(1, 6), act_dim=st.integers(1, 4),
           seed=st.integers(0, 2**32 - 1), log_std_scale=st.sampled_from([0.0, 0.5, 2.0]))
    def test_my_fvp(n_obs, obs_dim, act_dim, seed, log_std_scale):
        rng = np.random.default_rng(seed)
        policy = LinearGaussianPolicy(rng.standard_normal((n_obs, obs_dim)), act_dim)
        theta = np.concatenate([rng.standard_normal(obs_dim * act_dim),
                                log_std_scale * rng.standard_normal(act_dim)])
        report = check_fvp(policy.fvp, policy.kl, theta, seed=seed % 1000)
        worst.append(report.worst_ratio)

    test_my_fvp()
    print(f"the hand-written Fisher-vector product passed check_fvp on {len(worst)} "
          f"hypothesis cases; worst error / tolerance {max(worst):.3f}")

    rng = np.random.default_rng(0)
    policy = LinearGaussianPolicy(rng.standard_normal((32, 4)), 2)
    theta = np.concatenate([rng.standard_normal(8), 0.5 * rng.standard_normal(2)])
    for name, buggy in BUGS.items():
        try:
            check_fvp(lambda theta, v, buggy=buggy: buggy(policy, theta, v), policy.kl, theta)
        except AssertionError as error:
            print(f"\nbug: {name}, caught:")
            for line in str(error).splitlines():
                print(textwrap.fill(line.strip(), width=96, initial_indent="  ",
                                    subsequent_indent="      "))
        else:
            raise SystemExit(f"bug not caught: {name}")


if __name__ == "__main__":
    main()
