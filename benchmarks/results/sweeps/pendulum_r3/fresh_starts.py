"""Deterministic return of a trained Pendulum-v1 policy on 100 fresh start states (a diagnosis aid).

``compare.py`` scores a run on the episode seeds ``seed .. seed+9``, shared between neighbouring
seeds; this script trains ``TRPOConfig.for_env("Pendulum-v1", **overrides)`` for 100k steps
with ``--seed`` (the run of ``compare.py``, bit for bit) and prints ``evaluate()`` on those 10
starts next to the return over the episode seeds 10_000 .. 10_099, which no run shares: the
mean, the worst episode and how many episodes end below -1000 (the trapped start). Run from
the repository root::

    .venv/bin/python benchmarks/results/sweeps/pendulum_r3/fresh_starts.py --seed 1 KEY=VALUE ...
"""

from __future__ import annotations

import argparse

import numpy as np

from rl_adapters import TRPO, TRPOConfig
from rl_adapters.config import parse_overrides

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--episodes", type=int, default=100)
parser.add_argument("overrides", nargs="*", metavar="key=value")
args = parser.parse_args()
config = TRPOConfig.for_env("Pendulum-v1", **parse_overrides(args.overrides))
agent = TRPO("Pendulum-v1", seed=args.seed, config=config).learn(100_000)
mean10, _ = agent.evaluate(10, deterministic=True, seed=args.seed)
returns = [agent.evaluate(1, deterministic=True, seed=10_000 + i)[0]
           for i in range(args.episodes)]
given = " ".join(args.overrides) or "(defaults)"
print(f"seed {args.seed} {given}: compare.py starts {mean10:.1f}; "
      f"{args.episodes} fresh starts mean {np.mean(returns):.1f}, worst {min(returns):.0f}, "
      f"below -1000: {sum(r < -1000 for r in returns)}")
