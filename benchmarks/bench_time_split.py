"""Where a TRPO run's time goes with the defaults: environment stepping, rollout, update.

Trains ``TRPOConfig.for_env(env)`` for ``--timesteps`` steps (after one warm-up update that
compiles the Numba kernels) and splits the time of the measured updates with the agent's own
per-update metrics:

- ``env``: inside the vector env's ``step`` (the environments, their Gymnasium wrappers and
  our env checks): ``env_time``;
- ``rollout_other``: the rest of the rollout loop (normalization, acting, bookkeeping):
  ``policy_time``;
- ``update``: advantages, policy step, critic fit: ``update_time``.

On a machine shared with other work the wall clock charges other processes' time slices to
whatever was running; ``--clock cpu`` measures the same intervals on this process's CPU clock
(``time.process_time``, which the agent then reads in place of ``time.perf_counter``), which
the load changes much less. ``outside_env`` is ``1 - env / total``: the issue's target is at
most 0.25.

Run from the repository root::

    .venv/bin/python benchmarks/bench_time_split.py HalfCheetah-v5 --timesteps 100000 --clock cpu
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trpo_learn import machine_info, peak_rss_mib

from rl_adapters import TRPO, TRPOConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("env")
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="key=value")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    from rl_adapters.config import parse_overrides

    if args.clock == "cpu":
        time.perf_counter = time.process_time  # the agent's clock, for this process only
    config = TRPOConfig.for_env(args.env, **parse_overrides(args.overrides))
    agent = TRPO(args.env, seed=args.seed, config=config)
    agent.learn(config.batch_size)  # warm-up: Numba kernels compiled or loaded
    skip, steps0 = len(agent.metrics), agent.num_timesteps
    cpu0 = time.process_time()
    agent.learn(args.timesteps)
    cpu = time.process_time() - cpu0
    m = agent.metrics[skip:]
    total = sum(x["wall_time"] for x in m)
    env = sum(x["env_time"] for x in m)
    other = sum(x["policy_time"] for x in m)
    update = sum(x["update_time"] for x in m)
    result = {
        "benchmark": "time_split", "env_id": args.env, "seed": args.seed, "clock": args.clock,
        "overrides": args.overrides, "timesteps": agent.num_timesteps - steps0,
        "updates": len(m), "batch_size": config.batch_size,
        "seconds": {"total": total, "env": env, "rollout_other": other, "update": update},
        "fraction": {"env": env / total, "rollout_other": other / total,
                     "update": update / total},
        "outside_env": 1.0 - env / total,
        "ms_per_update": {"total": 1e3 * total / len(m), "env": 1e3 * env / len(m),
                          "rollout_other": 1e3 * other / len(m),
                          "update": 1e3 * update / len(m)},
        "process_cpu_seconds": cpu, "peak_rss_mib": peak_rss_mib(),
        "machine": {**machine_info(), "load_average_1_5_15min": os.getloadavg()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
