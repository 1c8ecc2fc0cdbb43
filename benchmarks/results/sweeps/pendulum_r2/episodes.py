"""Per-episode view of a Pendulum-v1 policy's deterministic evaluation (a diagnosis aid).

Trains ``TRPOConfig.for_env("Pendulum-v1", **overrides)`` for 100k steps with ``--seed``, then
replays the 10 evaluation episodes of ``compare.py`` (episode seeds seed .. seed+9) and prints,
per episode, the start angle (0 = upright), the return, the final angle, the mean |torque| of
the last 50 steps and the angle every 20 steps. Run from the repository root::

    .venv/bin/python benchmarks/results/sweeps/pendulum_r2/episodes.py --seed 1 > episodes_seed1.txt
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

from rl_adapters import TRPO, TRPOConfig
from rl_adapters.config import parse_overrides

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("overrides", nargs="*", metavar="key=value")
args = parser.parse_args()
config = TRPOConfig.for_env("Pendulum-v1", **parse_overrides(args.overrides))
agent = TRPO("Pendulum-v1", seed=args.seed, config=config).learn(100_000)
mean, std = agent.evaluate(10, deterministic=True, seed=args.seed)
given = " ".join(args.overrides) or "(defaults)"
print(f"seed {args.seed} {given}: evaluate() {mean:.1f} +- {std:.1f}")
env = gym.make("Pendulum-v1")
for i in range(10):
    obs, _ = env.reset(seed=args.seed + i)
    start = float(np.arctan2(obs[1], obs[0]))
    total, torques, angles = 0.0, [], []
    for _ in range(200):
        action = agent.predict(obs, deterministic=True)
        obs, reward, _, _, _ = env.step(action)
        total += float(reward)
        torques.append(float(np.clip(action[0], -2.0, 2.0)))
        angles.append(float(np.arctan2(obs[1], obs[0])))
    print(f"episode seed {args.seed + i}: start {start:+.2f}  return {total:8.1f}  "
          f"end {angles[-1]:+.2f}  mean|torque| last 50 {np.mean(np.abs(torques[-50:])):.2f}  "
          f"angle every 20 steps {np.round(angles[::20], 1).tolist()}")
