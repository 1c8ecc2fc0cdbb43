"""Learning benchmark, our side: TRPO (rl_adapters) with the rl-baselines3-zoo hyperparameters.

Mirrors ``benchmarks/peers/sb3_trpo.py learn``: one run (env, seed), a deterministic
evaluation over 10 episodes every ``--eval-freq`` steps and at the end, peak RSS, written to
``benchmarks/results/ours_learn_<env>_seed<k>.json`` (rewritten after each evaluation with
``"status": "running"``, a last time with ``"finished"``).

The zoo's settings are translated to :class:`rl_adapters.TRPOConfig` by :func:`zoo_config`
(one table, ``benchmarks/peers/zoo_hyperparams.py``, configures both sides); SB3-contrib's
KL of a Gaussian policy is a mean over action dimensions, so ``target_kl`` and
``cg_damping`` are multiplied by the action dimension (:func:`sb3_kl_scale`).  The zoo's
Pendulum entry uses gSDE, which we do not implement; there our own Pendulum defaults
apply and the JSON says so.

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
from zoo_hyperparams import ZOO_SOURCE, ZOO_TRPO, effective_config

from rl_adapters import TRPO, TRPOConfig

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def sb3_kl_scale(env_id: str) -> int:
    """Factor from SB3-contrib's KL convention to ours: the action dimension for ``Box`` actions.

    SB3-contrib's TRPO takes ``kl_divergence(new, old).mean()``, and for a diagonal Gaussian
    that KL is PyTorch's per-dimension ``Normal`` KL (shape ``(N, D)``, not summed over the
    ``D`` action dimensions), so its "mean KL" is the KL of the joint action distribution
    divided by ``D``, and its Hessian-vector product is ``F / D``.  Its ``target_kl`` and
    ``cg_damping`` are therefore per action dimension: CG on ``(F/D + lambda I) x = g`` and
    ``1/2 s^T (F/D + lambda I) s = delta`` give exactly the step of ours (joint KL, as in the
    TRPO paper) with ``max_kl = D delta`` and ``cg_damping = D lambda``.  Categorical KLs
    are per sample on both sides (factor 1).
    """
    import gymnasium as gym

    env = gym.make(env_id)
    try:
        space = env.action_space
        return int(space.shape[0]) if isinstance(space, gym.spaces.Box) else 1
    finally:
        env.close()


def zoo_config(env_id: str) -> tuple[TRPOConfig, list[str]]:
    """Our config equal to the zoo's TRPO settings for ``env_id``, and what could not map."""
    z = effective_config(env_id)
    notes: list[str] = []
    kl_scale = sb3_kl_scale(env_id)
    if kl_scale != 1:
        notes.append(
            f"SB3-contrib's KL is the mean over the {kl_scale} action dimensions (not their "
            f"sum): target_kl {z['target_kl']} and cg_damping {z['cg_damping']} are translated "
            f"to max_kl = {kl_scale} x target_kl and cg_damping = {kl_scale} x cg_damping "
            "(the same steps; see sb3_kl_scale)")
    overrides: dict[str, Any] = {
        "n_envs": z["n_envs"],
        "n_steps": z["n_steps"],
        "gamma": z["gamma"],
        "gae_lambda": z["gae_lambda"],
        "max_kl": z["target_kl"] * kl_scale,
        "cg_iters": z["cg_max_steps"],
        "cg_damping": z["cg_damping"] * kl_scale,
        "ls_shrink": z["line_search_shrinking_factor"],
        # SB3 makes line_search_max_iter trials in all: the full step + (max_iter - 1) shrinks.
        "ls_max_backtracks": z["line_search_max_iter"] - 1,
        "normalize_advantage": z["normalize_advantage"],
        "value_optimizer": "adam",
        "value_lr": z["learning_rate"],
        "value_epochs": z["n_critic_updates"],
        "value_batch_size": z["batch_size"],
        "fvp_subsample": 1.0 / z["sub_sampling_factor"],
        "normalize_obs": bool(z["normalize"]),
        "normalize_reward": bool(z["normalize"]),
        "policy_hidden": (64, 64),
        "value_hidden": (64, 64),
        "activation": "tanh",
        "log_std_init": 0.0,
    }
    if z.get("use_sde"):
        notes.append("zoo uses gSDE (use_sde=True), not implemented here: plain Gaussian "
                     "exploration with our own defaults for this env (TRPOConfig.for_env)")
        return TRPOConfig.for_env(env_id), notes
    return TRPOConfig.for_env(env_id, **overrides), notes


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

    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "scipy": scipy.__version__, "gymnasium": gymnasium.__version__,
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
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    from rl_adapters.config import parse_overrides

    env_id = args.env
    timesteps = args.timesteps or ZOO_TRPO[env_id]["n_timesteps"]
    config, notes = zoo_config(env_id)
    if args.overrides:
        config = config.replace(**parse_overrides(args.overrides))
        notes.append(f"overrides: {' '.join(args.overrides)}")
    out = RESULTS_DIR / f"ours_learn_{env_id}_seed{args.seed}{args.tag}.json"
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
