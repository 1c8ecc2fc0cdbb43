"""Learning curves, ours against SB3-contrib, from ``benchmarks/results/*_learn_*.json``.

Reads ``ours_learn_<env>_seed<k>.json`` (``bench_trpo_learn.py``) and
``sb3_learn_<env>_seed<k>.json`` (``peers/sb3_trpo.py learn``), plots the deterministic
evaluation curves (mean over seeds, thin lines per seed) for each environment, writes
``docs/benchmarks/trpo_learning.png`` and prints a summary table (final evaluation per
seed, mean over seeds)::

    .venv/bin/python benchmarks/bench_trpo_plot.py [--tag ""]

``--tag _c1`` or ``--tag _joint`` draws the tagged runs of ``benchmarks/results/``; a tuning
run moved to ``benchmarks/results/sweeps/<topic>/`` needs ``--ours-dir`` too, e.g.
``--ours-dir benchmarks/results/sweeps/pendulum --tag _p2 --out /tmp/p2.png``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ENVS = ("CartPole-v1", "Pendulum-v1", "HalfCheetah-v5", "Hopper-v5")


def load_runs(side: str, env: str, tag: str, folder: Path = RESULTS) -> dict[int, dict]:
    runs = {}
    pattern = re.compile(rf"{side}_learn_{re.escape(env)}_seed(\d+){re.escape(tag)}\.json$")
    for path in sorted(folder.glob(f"{side}_learn_{env}_seed*.json")):
        m = pattern.match(path.name)
        if m:
            runs[int(m.group(1))] = json.loads(path.read_text())
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default="", help="suffix of our result files")
    parser.add_argument("--ours-dir", type=Path, default=RESULTS,
                        help="folder of our result files (default benchmarks/results)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "trpo_learning.png"))
    args = parser.parse_args(argv)
    fig, axes = plt.subplots(1, len(ENVS), figsize=(4.2 * len(ENVS), 3.6))
    for ax, env in zip(axes, ENVS, strict=True):
        for side, color, label in (("ours", "tab:blue", "rl_adapters"),
                                   ("sb3", "tab:orange", "SB3-contrib")):
            runs = (load_runs(side, env, args.tag, args.ours_dir) if side == "ours"
                    else load_runs(side, env, ""))
            finals = []
            for seed, run in sorted(runs.items()):
                curve = run.get("curve", {})
                ax.plot(curve.get("timesteps", []), curve.get("eval_mean", []), color=color,
                        alpha=0.35, lw=0.8)
                final = run.get("final", {}).get("eval_mean")
                status = run.get("status")
                finals.append((seed, final, status))
            done = [f for _, f, st in finals if st == "finished" and f is not None]
            print(f"{env:16s} {label:12s} " + "  ".join(
                f"s{s}:{'-' if f is None else f'{f:.1f}'}({st})" for s, f, st in finals)
                + (f"  mean {np.mean(done):.1f}" if done else ""))
            ax.plot([], [], color=color, label=f"{label} ({len(runs)} seeds)")
        ax.set_title(env)
        ax.set_xlabel("steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[0].set_ylabel("deterministic eval return (10 episodes)")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
