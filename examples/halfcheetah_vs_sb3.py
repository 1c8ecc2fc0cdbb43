"""Train TRPO on HalfCheetah-v5 and compare with SB3-contrib's TRPO from saved results.

``benchmarks/results/`` holds the learning curves of our agent and of SB3-contrib's TRPO
(rl-baselines3-zoo hyperparameters) on HalfCheetah-v5, three seeds each, measured on the
same machine by ``benchmarks/bench_trpo_learn.py`` and ``benchmarks/peers/sb3_trpo.py``:
deterministic evaluation (10 episodes) every 50k steps, and the training speed.

This script trains one more agent of ours with the configuration of the saved seed-0 run
(SB3-contrib's zoo hyperparameters translated to ours, see ``TRPOConfig.from_sb3``), evaluates
it on the same schedule, and plots its curve over the saved ones.

Run:  python examples/halfcheetah_vs_sb3.py [--short] [--out DIR]
(``--short`` or ``TR_EXAMPLES_SHORT=1``: train 4096 steps and evaluate one episode -- enough
to exercise the whole path, not to learn; the full mode trains 1M steps, a few minutes.)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rl_adapters import TRPO, TRPOConfig

ENV = "HalfCheetah-v5"
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def saved_runs(side: str) -> list[dict]:
    """The untagged saved runs of one side (``ours`` or ``sb3``), one per seed."""
    paths = sorted(RESULTS.glob(f"{side}_learn_{ENV}_seed[0-9].json"))
    return [json.loads(p.read_text()) for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true",
                        default=os.environ.get("TR_EXAMPLES_SHORT") == "1")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the figure")
    args = parser.parse_args()
    total, eval_every, episodes = (4096, 4096, 1) if args.short else (1_000_000, 50_000, 10)

    sides = {"ours (saved)": saved_runs("ours"), "SB3-contrib TRPO (saved)": saved_runs("sb3")}
    print(f"{ENV}: final deterministic evaluation (mean of 10 episodes) per seed")
    for label, runs in sides.items():
        finals = [r["final"]["eval_mean"] for r in runs]
        speed = np.mean([r["train_steps_per_s"] for r in runs])
        print(f"  {label:26s} " + "  ".join(f"{f:7.1f}" for f in finals)
              + f"   mean {np.mean(finals):7.1f}   training {speed:6.0f} steps/s")

    # Train one agent of ours with the saved seed-0 run's configuration, evaluating on the
    # saved runs' schedule (10 deterministic episodes from seed 0, as the benchmark does).
    saved = next(r for r in sides["ours (saved)"] if r["seed"] == 0)["config"]
    config = TRPOConfig.for_env(ENV).replace(**{
        key: tuple(value) if isinstance(value, list) else value
        for key, value in saved.items() if key != "family"
    })
    agent = TRPO(ENV, seed=0, config=config)
    curve: list[tuple[int, float]] = []
    next_eval = eval_every

    def evaluate(agent: TRPO, metrics: dict) -> None:
        nonlocal next_eval
        if agent.num_timesteps >= next_eval:
            mean, _ = agent.evaluate(episodes, seed=0)
            curve.append((agent.num_timesteps, mean))
            next_eval += eval_every

    t = time.perf_counter()
    agent.learn(total, callback=evaluate)
    elapsed = time.perf_counter() - t
    agent.close()
    steps, returns = np.array(curve).T
    print(f"  this run (seed 0)          {returns[-1]:7.1f} after {int(steps[-1])} steps, "
          f"{elapsed:.0f} s including {len(curve)} evaluations of {episodes} episode(s)")

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for color, (label, runs) in zip(("C0", "C1"), sides.items(), strict=True):
        for r in runs:
            ax.plot(r["curve"]["timesteps"], r["curve"]["eval_mean"], color=color, lw=0.6,
                    alpha=0.5)
        grid = np.asarray(runs[0]["curve"]["timesteps"])
        mean = np.mean([np.interp(grid, r["curve"]["timesteps"], r["curve"]["eval_mean"])
                        for r in runs], axis=0)
        ax.plot(grid, mean, color=color, lw=2, label=f"{label}, mean of {len(runs)} seeds")
    ax.plot(steps, returns, "k.-" if len(steps) > 1 else "k*", ms=10, lw=1.5,
            label=f"this run ({total:,} steps)")
    ax.set(xlabel="environment steps", ylabel="evaluation return (deterministic)",
           title=f"TRPO on {ENV}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "halfcheetah_vs_sb3.png", dpi=110)
    print(f"figure: {args.out / 'halfcheetah_vs_sb3.png'}")


if __name__ == "__main__":
    main()
