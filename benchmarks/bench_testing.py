"""trustregion.testing: what each check costs, and how fast the strategies draw.

Checks: calls of every function under test (from the check's own report) and the wall time
of one check, median of ``--repeats``, on small representative problems (the gallery's
correct implementations, tests/test_testing_gallery.py).

Strategies: microseconds per drawn case, including hypothesis' own overhead, measured as the
time of a derandomized ``@given`` run of ``--examples`` examples (generation phase only, no
database) divided by the number of examples, median of ``--repeats`` runs. Two baselines
measured in the same run give hypothesis' own floor: ``st.integers()`` and a list of 8
floats.

Times are process CPU time (``time.process_time``) by default, which a loaded machine
disturbs less than wall time; ``--clock wall`` for wall time.

Run:  .venv/bin/python benchmarks/bench_testing.py [--examples 300] [--repeats 5]
                                                      [--out results/testing.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time
from types import SimpleNamespace

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import trustregion as tr
from trustregion import testing as tt

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import test_testing_gallery as gallery  # the gallery's implementations


def problems():
    rng = np.random.default_rng(0)
    n, m = 6, 8
    logistic = SimpleNamespace(
        X=rng.standard_normal((m, n)),
        y=np.where(rng.random(m) < 0.5, -1.0, 1.0),
        x=rng.standard_normal(n),
        lam=0.5,
        n=n,
        m=m,
    )
    tanh = SimpleNamespace(W=rng.standard_normal((4, 6)), x=rng.uniform(-1, 1, 6))
    policy = SimpleNamespace(
        X=rng.standard_normal((8, 3)), theta=rng.standard_normal(12), N=8, d=3, k=4
    )
    Q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    A = (Q * np.logspace(0, 3, 8)) @ Q.T
    big = rng.standard_normal((500, 500))
    big = big @ big.T / 500
    p, q = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    g = rng.standard_normal(8)
    ls = SimpleNamespace(
        evaluate=lambda x: (-float(np.sum((x - 1.0) ** 2)), float(np.sum(x**2))),
        x0=np.zeros(2),
        full_step=np.full(2, 2.0),
        expected_improvement=8.0,
        max_constraint=1.0,
        shrink=0.8,
        max_backtracks=10,
    )
    return {
        "check_grad (n=6)": lambda: tt.check_grad(
            gallery.logistic_f(logistic), gallery.logistic_grad(logistic), logistic.x
        ),
        "check_jvp_vjp (6 -> 4)": lambda: tt.check_jvp_vjp(
            gallery.tanh_f(tanh), gallery.tanh_jvp(tanh), gallery.tanh_vjp(tanh), tanh.x
        ),
        "check_hvp (n=6)": lambda: tt.check_hvp(
            gallery.logistic_grad(logistic), gallery.logistic_hvp(logistic), logistic.x
        ),
        "check_fvp (n=12, KL values only)": lambda: tt.check_fvp(
            gallery.policy_fvp(policy), gallery.policy_kl(policy), policy.theta
        ),
        "check_fvp (n=12, with kl_grad, damping)": lambda: tt.check_fvp(
            gallery.policy_fvp(policy),
            gallery.policy_kl(policy),
            policy.theta,
            kl_grad=gallery.policy_kl_grad(policy),
            damping=0.1,
        ),
        "check_symmetric_operator (n=8, dense)": lambda: tt.check_symmetric_operator(
            A.dot, 8, psd=True
        ),
        "check_symmetric_operator (n=500, probes + Lanczos)": lambda: tt.check_symmetric_operator(
            big.dot, 500, psd=True
        ),
        "check_kl (4 x 5 categorical, shift)": lambda: tt.check_kl(
            gallery.categorical_kl, p, q, shift_invariant=True
        ),
        "check_kl (4 x 5, + Monte Carlo 20000)": lambda: tt.check_kl(
            gallery.categorical_kl,
            p,
            q,
            log_prob=gallery.categorical_log_prob,
            sample=gallery.categorical_sample,
        ),
        "check_cg_contract (n=8, trustregion.cg)": lambda: tt.check_cg_contract(
            gallery.core_cg, A, g
        ),
        "check_steihaug_contract (n=8)": lambda: tt.check_steihaug_contract(
            gallery.core_steihaug, g, A - 10 * np.eye(8), 1.0
        ),
        "check_line_search_contract (K=10)": lambda: tt.check_line_search_contract(
            tr.backtracking_line_search, ls
        ),
    }


CLOCK = time.process_time


def time_checks(repeats):
    rows = []
    for name, run in problems().items():
        report = run()  # warm-up (numba compilation of core kernels) and the call counts
        times = []
        for _ in range(repeats):
            start = CLOCK()
            run()
            times.append(CLOCK() - start)
        rows.append(dict(check=name, calls=report.calls, ms=1e3 * statistics.median(times)))
    return rows


STRATEGIES = {
    "baseline: st.integers()": st.integers(),
    "baseline: st.lists(st.floats(0, 1), 8)": st.lists(st.floats(0, 1), min_size=8, max_size=8),
    "spd_matrices(8)": tt.spd_matrices(8),
    "spd_matrices(integers(1, 50))": tt.spd_matrices(st.integers(1, 50)),
    "psd_matrices(8)": tt.psd_matrices(8),
    "symmetric_indefinite(8)": tt.symmetric_indefinite(8),
    "orthogonal_matrices(8)": tt.orthogonal_matrices(8),
    "linear_operators(8)": tt.linear_operators(8),
    "logits(4, 6)": tt.logits(4, 6),
    "logits(64, 16)": tt.logits(64, 16),
    "simplices(6)": tt.simplices(6),
    "diag_gaussians(4, 3)": tt.diag_gaussians(4, 3),
    "categorical_pairs(4, 6)": tt.categorical_pairs(4, 6),
    "diag_gaussian_pairs(4, 3)": tt.diag_gaussian_pairs(4, 3),
    "trust_region_problems(8)": tt.trust_region_problems(8),
    "line_search_problems(3)": tt.line_search_problems(3),
}


def draws_per_second(strategy, examples):
    """Seconds per drawn case of one derandomized @given run of ``examples`` examples."""
    count = [0]

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def draw(case):
        count[0] += 1

    start = CLOCK()
    draw()
    return (CLOCK() - start) / max(count[0], 1)


def time_strategies(examples, repeats):
    rows = []
    for name, strategy in STRATEGIES.items():
        per_draw = [draws_per_second(strategy, examples) for _ in range(repeats)]
        rows.append(dict(strategy=name, us_per_draw=1e6 * statistics.median(per_draw)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    checks = time_checks(args.repeats)
    print(f"{'check':52s} {'ms':>8s}  calls of the functions under test")
    for row in checks:
        calls = ", ".join(f"{k} {v}" for k, v in row["calls"].items())
        print(f"{row['check']:52s} {row['ms']:8.2f}  {calls}")
    strategies = time_strategies(args.examples, args.repeats)
    print(f"\n{'strategy':40s} {'us per draw':>12s}")
    for row in strategies:
        print(f"{row['strategy']:40s} {row['us_per_draw']:12.0f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                dict(
                    machine=platform.platform(),
                    python=platform.python_version(),
                    numpy=np.__version__,
                    examples=args.examples,
                    repeats=args.repeats,
                    checks=checks,
                    strategies=strategies,
                ),
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
