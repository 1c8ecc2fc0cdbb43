"""Learning benchmark, our side: TRPO (rl_adapters) with the rl-baselines3-zoo hyperparameters.

Mirrors ``benchmarks/peers/sb3_trpo.py learn``: one run (env, seed), a deterministic
evaluation over 10 episodes every ``--eval-freq`` steps and at the end, peak RSS, written to
``benchmarks/results/ours_learn_<env>_seed<k><tag>.json`` (rewritten after each evaluation
with ``"status": "running"``, a last time with ``"finished"``). Tuning runs (``--tag`` and
``key=value`` overrides) go to ``--out-dir benchmarks/results/sweeps/<topic>``.

The zoo's settings (one table, ``benchmarks/peers/zoo_hyperparams.py``, configures both
sides) are translated by :meth:`rl_adapters.TRPOConfig.from_sb3`: SB3-contrib's KL of a
Gaussian policy is a mean over action dimensions, so ``target_kl`` and ``cg_damping`` are
multiplied by the action dimension. The zoo's Pendulum entry uses gSDE (``use_sde=True,
sde_sample_freq=4``), which ``from_sb3`` maps onto our gSDE (``docs/gsde.md``); the JSON's
notes say so. Our own defaults (``TRPOConfig.for_env``) are what ``compare.py`` runs.

Run from the repository root::

    .venv/bin/python benchmarks/bench_trpo_learn.py CartPole-v1 --seed 0
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from common import write_json
from zoo_hyperparams import ZOO_SOURCE, ZOO_TRPO, effective_config, from_sb3_kwargs

from rl_adapters import TRPO, TRPOConfig

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def zoo_config(env_id: str) -> tuple[TRPOConfig, list[str]]:
    """Our config equal to the zoo's TRPO settings for ``env_id``, and notes on the mapping.

    ``TRPOConfig.from_sb3`` does the translation, gSDE included (Pendulum-v1).
    """
    z = effective_config(env_id)
    config = TRPOConfig.from_sb3(env_id, **from_sb3_kwargs(env_id))
    notes = []
    if z.get("use_sde"):
        notes.append(f"zoo uses gSDE (use_sde=True, sde_sample_freq={z['sde_sample_freq']}): "
                     "our gSDE policy (rl_adapters.sde, SB3's conventions)")
    if config.max_kl != z["target_kl"]:
        scale = round(config.max_kl / z["target_kl"])
        notes.append(
            f"SB3-contrib's KL is the mean over the {scale} action dimensions (not their "
            f"sum): target_kl {z['target_kl']} and cg_damping {z['cg_damping']} are translated "
            f"to max_kl = {scale} x target_kl and cg_damping = {scale} x cg_damping "
            "(the same steps; see TRPOConfig.from_sb3)")
    return config, notes


def machine_info() -> dict[str, Any]:
    import gymnasium
    import scipy

    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines()
                    if ln.startswith("Model name")), platform.processor())
    except (OSError, subprocess.CalledProcessError):
        cpu = platform.processor()
    import os
    from importlib import metadata

    # The installed releases that move the figures without importing them (torch is heavy):
    # a new MuJoCo or Numba changes the environment's or the kernels' speed and memory.
    packages = {}
    for name in ("mujoco", "numba", "torch", "stable-baselines3", "sb3-contrib"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "scipy": scipy.__version__, "gymnasium": gymnasium.__version__,
        **packages,
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("env", choices=sorted(ZOO_TRPO))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timesteps", type=int, default=0, help="default: the zoo's budget")
    parser.add_argument("--eval-freq", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR,
                        help="folder of the result file (tuning runs: results/sweeps/<topic>)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    from rl_adapters.config import parse_overrides

    env_id = args.env
    timesteps = args.timesteps or ZOO_TRPO[env_id]["n_timesteps"]
    config, notes = zoo_config(env_id)
    if args.overrides:
        config = config.replace(**parse_overrides(args.overrides))
        notes.append(f"overrides: {' '.join(args.overrides)}")
    out = args.out_dir / f"ours_learn_{env_id}_seed{args.seed}{args.tag}.json"
    rss_before = peak_rss_mib()
    agent = TRPO(env_id, seed=args.seed, config=config)
    curve: dict[str, list[float]] = {"timesteps": [], "eval_mean": [], "eval_std": []}
    train_curve: dict[str, list[float]] = {"timesteps": [], "ep_return_mean": []}
    result: dict[str, Any] = {
        "benchmark": "ours_learn", "env_id": env_id, "seed": args.seed, "status": "running",
        "total_timesteps": timesteps, "config": json.loads(config.to_json()), "notes": notes,
        "zoo_source": ZOO_SOURCE,
        "eval": {"episodes": args.eval_episodes, "deterministic": True, "every": args.eval_freq},
        "machine": machine_info(),
    }
    started = time.perf_counter()
    eval_seconds = 0.0
    next_eval = args.eval_freq

    def evaluate() -> tuple[float, float]:
        nonlocal eval_seconds
        t0 = time.perf_counter()
        mean, std = agent.evaluate(args.eval_episodes, deterministic=True, seed=args.seed)
        eval_seconds += time.perf_counter() - t0
        return mean, std

    def record(status: str) -> None:
        result.update(status=status, curve=curve, train_curve=train_curve,
                      elapsed_seconds=time.perf_counter() - started, eval_seconds=eval_seconds,
                      peak_rss_mib=peak_rss_mib())
        write_json(out, result)

    def callback(agent: TRPO, metrics: dict[str, float]) -> None:
        nonlocal next_eval
        train_curve["timesteps"].append(metrics["timesteps"])
        train_curve["ep_return_mean"].append(metrics["ep_return_mean"])
        if agent.num_timesteps >= next_eval:
            next_eval += args.eval_freq
            mean, std = evaluate()
            curve["timesteps"].append(agent.num_timesteps)
            curve["eval_mean"].append(mean)
            curve["eval_std"].append(std)
            record("running")

    agent.learn(timesteps, callback=callback)
    train_seconds = time.perf_counter() - started - eval_seconds
    final_mean, final_std = evaluate()
    result["final"] = {
        "timesteps": agent.num_timesteps, "eval_mean": final_mean, "eval_std": final_std,
        "train_episode_return_last100": float(np.mean(agent.episode_returns)),
    }
    m = agent.metrics
    env_t = sum(x["env_time"] for x in m)
    wall_t = sum(x["wall_time"] for x in m)
    result["train_seconds_excluding_eval"] = train_seconds
    result["train_steps_per_s"] = agent.num_timesteps / train_seconds
    result["env_step_fraction"] = env_t / wall_t
    result["peak_rss_mib_before_env_and_model"] = rss_before
    record("finished")
    print(f"{env_id} seed {args.seed}: final {final_mean:.1f} +- {final_std:.1f} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
