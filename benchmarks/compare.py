"""One command for the learning comparison: our TRPO (defaults) against SB3-contrib's (zoo).

For every (environment, seed, side) this runs one learning run in its own process, at most
``--jobs`` (default and maximum 2) at a time, and skips runs whose result JSON says
``"finished"`` (resumable: rerun the same command after an interruption). Then it writes

- the table (final deterministic evaluation, 10 episodes: mean, std, min over seeds per env
  and side; wall clock; steps/s; process CPU time; peak RSS) between the ``compare`` markers
  of ``docs/benchmarks/learning.md``;
- one figure of the evaluation curves (mean over seeds, band min..max) per env and side,
  ``docs/benchmarks/learning.png``.

Sides:

- ``ours``: ``rl_adapters.TRPO`` with ``TRPOConfig.for_env(env)``, the defaults a new user
  gets (``key=value`` overrides for tuning runs, with ``--tag`` and ``--out-dir``);
- ``sb3``: ``sb3_contrib.TRPO`` with rl-baselines3-zoo's hyperparameters
  (``benchmarks/peers/sb3_trpo.py``'s learning run, torch on one thread); the same zoo entry
  is what ``TRPOConfig.from_sb3`` translates for our side of ``bench_trpo_learn.py``.

Each run of ours records, beside each evaluation, the mean return of the stochastic
training episodes that ended since the previous one and the critic's mean explained
variance over those updates (``curve["train_return"]``, ``curve["explained_variance"]``).
Each run records, besides the curve, its wall clock and its process CPU time (user + sys,
from ``os.wait4`` on the child: imports, training and evaluations) and the CPU time of the
training alone (``time.process_time`` around ``learn`` minus the evaluations', plus the CPU
time of our critic's worker process where the run had one: ``TRPOConfig.critic_process``,
whose peak RSS is likewise added to the run's). On a machine shared with other work,
wall-clock ratios depend on the load; CPU times much less.

Run from the repository root::

    .venv/bin/python benchmarks/compare.py run --envs CartPole-v1 Acrobot-v1 Pendulum-v1 \\
        --seeds 100-104
    .venv/bin/python benchmarks/compare.py report --envs CartPole-v1 Acrobot-v1 Pendulum-v1 \\
        --seeds 100-104
    # a tuning run of ours (seeds 0-2 only), results under results/sweeps/<topic>:
    .venv/bin/python benchmarks/compare.py run --envs Pendulum-v1 --seeds 0-2 --sides ours \\
        --out-dir benchmarks/results/sweeps/pendulum_gsde --tag _sde4 --no-report \\
        --set use_sde=true sde_sample_freq=4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "peers"))
from common import write_json  # noqa: E402

RESULTS = HERE / "results" / "compare"
DOC = ROOT / "docs" / "benchmarks" / "learning.md"
FIGURE = ROOT / "docs" / "benchmarks" / "learning.png"
EVAL_SEEDS = ("declared", "shared")
SIDES = ("ours", "sb3")
SIDE_NAMES = {"ours": "ours (defaults)", "sb3": "SB3-contrib (zoo)"}
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"
MAX_JOBS = 2


def seed_list(text: str) -> list[int]:
    """``"100-104"`` or ``"0,3,5"`` (or a mix) -> the seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        seeds.extend(range(int(a), int(b) + 1) if b else [int(a)])
    return seeds


def result_path(out_dir: Path, side: str, env_id: str, seed: int, tag: str = "") -> Path:
    return out_dir / f"{side}_{env_id}_seed{seed}{tag}.json"


def finished(path: Path) -> bool:
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return r.get("status") == "finished" and "process" in r


# ---------------------------------------------------------------- the workers
def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def declared_episode_seeds(seed: int, n_episodes: int) -> list[int]:
    """The evaluation starts of training seed ``seed`` under ``--eval-seeds declared``.

    ``n_episodes`` reset seeds drawn from a generator seeded with ``1000 + seed`` (the
    evaluation seeds issue 10 declares): every run has its own starts, no two neighbouring
    training seeds share them, and both sides play exactly the same starts.

    >>> declared_episode_seeds(100, 3) == declared_episode_seeds(100, 3)
    True
    >>> set(declared_episode_seeds(100, 10)) & set(declared_episode_seeds(101, 10))
    set()
    """
    rng = np.random.default_rng(1000 + seed)
    return [int(s) for s in rng.integers(0, 2**31 - 1, size=n_episodes)]


def episode_seeds_for(mode: str, seed: int, n_episodes: int) -> list[int] | None:
    """Per-episode reset seeds of an evaluation: ``declared`` (both sides the same starts),
    or ``shared`` (the older protocol: ours ``seed .. seed+n-1``, SB3-contrib the zoo's
    continuing eval env, so the two sides see different starts)."""
    if mode == "declared":
        return declared_episode_seeds(seed, n_episodes)
    return None


def wide_final_eval(play_one: Any, seed: int, n_episodes: int) -> dict[str, Any]:
    """The final policy on ``n_episodes`` declared starts (``--final-eval-episodes``).

    Ten episodes leave a score to the few starts they happen to draw (on Pendulum, one
    start near the bottom at rest can decide a seed). ``play_one(reset_seed)`` plays one
    deterministic episode and returns its return. The starts extend the regular evaluation's
    (the same generator: its first ten are those ten).
    """
    starts = declared_episode_seeds(seed, n_episodes)
    returns = [float(play_one(s)) for s in starts]
    return {"episodes": n_episodes, "episode_seeds": starts, "returns": returns,
            "eval_mean": float(np.mean(returns)), "eval_std": float(np.std(returns)),
            "eval_min": float(np.min(returns))}


def training_window(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """The mean return of the training episodes that ended in ``rows`` (update metrics),
    and the mean of their critic's explained variance; NaN where there is nothing."""
    n = np.array([r["n_episodes"] for r in rows], dtype=float)
    recent = np.array([r["ep_return_recent"] for r in rows], dtype=float)
    has = n > 0
    train_return = float(np.sum(n[has] * recent[has]) / np.sum(n[has])) if has.any() \
        else float("nan")
    explained = np.array([r["explained_variance"] for r in rows], dtype=float)
    finite = np.isfinite(explained)
    return train_return, float(np.mean(explained[finite])) if finite.any() else float("nan")


def worker_ours(env_id: str, seed: int, out: Path, timesteps: int, eval_freq: int,
                eval_episodes: int, overrides: list[str], eval_seeds: str = "shared",
                final_eval_episodes: int = 0) -> None:
    """One learning run of ours with the defaults for ``env_id`` (plus ``overrides``)."""
    from bench_trpo_learn import machine_info, peak_rss_mib

    from rl_adapters import TRPO, TRPOConfig
    from rl_adapters.config import parse_overrides

    config = TRPOConfig.for_env(env_id, **parse_overrides(overrides))
    agent = TRPO(env_id, seed=seed, config=config)
    declared = episode_seeds_for(eval_seeds, seed, eval_episodes)
    # Besides the deterministic evaluations, what training saw since the last one: the mean
    # return of the stochastic episodes that ended (NaN if none did) and the critic's
    # explained variance, averaged over those updates. They tell an evaluation's fall that
    # training shares from one of the deterministic policy alone.
    curve: dict[str, list[float]] = {"timesteps": [], "eval_mean": [], "eval_std": [],
                                     "train_return": [], "explained_variance": []}
    window: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "benchmark": "compare", "side": "ours", "env_id": env_id, "seed": seed,
        "status": "running", "total_timesteps": timesteps,
        "config": json.loads(config.to_json()), "overrides": overrides,
        "eval": {"episodes": eval_episodes, "deterministic": True, "every": eval_freq,
                 "seeds": f"{seed}..{seed + eval_episodes - 1}"},
        "machine": {**machine_info(), "load_average_1_5_15min": os.getloadavg()},
    }
    if declared is not None:
        result["eval"].update(seeds="declared", episode_seeds=declared)
    eval_wall = eval_cpu = 0.0
    next_eval = eval_freq
    start = _clocks()

    def evaluate() -> tuple[float, float]:
        nonlocal eval_wall, eval_cpu
        t0 = _clocks()
        mean, std = agent.evaluate(eval_episodes, deterministic=True,
                                   seed=seed if declared is None else declared)
        t1 = _clocks()
        eval_wall += t1[0] - t0[0]
        eval_cpu += t1[1] - t0[1]
        return mean, std

    def callback(agent: TRPO, metrics: dict[str, Any]) -> None:
        nonlocal next_eval
        window.append(metrics)
        if agent.num_timesteps >= next_eval:
            next_eval += eval_freq
            mean, std = evaluate()
            curve["timesteps"].append(agent.num_timesteps)
            curve["eval_mean"].append(mean)
            curve["eval_std"].append(std)
            train_return, explained = training_window(window)
            curve["train_return"].append(train_return)
            curve["explained_variance"].append(explained)
            window.clear()
            result.update(curve=curve, status="running")
            write_json(out, result)

    agent.learn(timesteps, callback=callback)
    end = _clocks()
    train_wall, train_cpu = end[0] - start[0] - eval_wall, end[1] - start[1] - eval_cpu
    final_mean, final_std = evaluate()
    m = agent.metrics
    result.update(
        status="finished", curve=curve,
        final={"timesteps": agent.num_timesteps, "eval_mean": final_mean,
               "eval_std": final_std},
        train_wall_seconds=train_wall, train_cpu_seconds=train_cpu,
        env_step_fraction=sum(x["env_time"] for x in m) / sum(x["wall_time"] for x in m),
        update_seconds=sum(x["update_time"] for x in m),
        peak_rss_mib=peak_rss_mib(),
    )
    result["train_steps_per_s"] = agent.num_timesteps / result["train_wall_seconds"]
    if final_eval_episodes:
        result["final_wide"] = wide_final_eval(
            lambda s: agent.evaluate(1, deterministic=True, seed=[s])[0], seed,
            final_eval_episodes)
    agent.close()  # reaps the critic's worker process, if the run had one
    if agent.critic_process_usage is not None:
        # its CPU time is training time (it only fits the critic inside learn); its peak
        # RSS adds to this process's (see peak_rss)
        result["critic_process"] = agent.critic_process_usage
        result["train_cpu_seconds"] += agent.critic_process_usage["cpu_seconds"]
    write_json(out, result)


def peak_rss(r: dict[str, Any]) -> float:
    """A run's peak RSS in MiB: its process's, plus its critic worker's where it had one
    (the process clock of ``launch`` reports the larger of the two, not their sum)."""
    if "critic_process" in r:
        return float(r["peak_rss_mib"] + r["critic_process"]["peak_rss_mib"])
    return float(r["process"]["max_rss_mib"])


def worker_sb3(env_id: str, seed: int, out: Path, timesteps: int, eval_freq: int,
               eval_episodes: int, eval_seeds: str = "shared",
               final_eval_episodes: int = 0) -> None:
    """One learning run of SB3-contrib with the zoo's settings (``sb3_trpo.py learn``).

    The peer's own learning run, with its evaluations timed on the process clock too and its
    result file moved to ``out``.
    """
    import sb3_trpo

    sb3_trpo.set_threads(1)
    eval_cpu = 0.0
    evaluate = sb3_trpo.CurveCallback.evaluate

    def timed_evaluate(self):  # type: ignore[no-untyped-def]
        nonlocal eval_cpu
        t0 = time.process_time()
        try:
            return evaluate(self)
        finally:
            eval_cpu += time.process_time() - t0

    sb3_trpo.CurveCallback.evaluate = timed_evaluate
    sb3_trpo.RESULTS_DIR = out.parent / ".sb3_tmp" / out.stem
    start = _clocks()
    args = argparse.Namespace(env=env_id, seed=seed, timesteps=timesteps, eval_freq=eval_freq,
                              eval_episodes=eval_episodes, threads=1,
                              episode_seeds=episode_seeds_for(eval_seeds, seed, eval_episodes))
    if final_eval_episodes:
        def final_eval(play_one):  # type: ignore[no-untyped-def]
            nonlocal eval_cpu  # an evaluation: not training time
            t0 = time.process_time()
            try:
                return wide_final_eval(play_one, seed, final_eval_episodes)
            finally:
                eval_cpu += time.process_time() - t0

        args.final_eval = final_eval
    result = sb3_trpo.cmd_learn(args)
    end = _clocks()
    # cmd_learn's training time excludes the evaluations (wall); the CPU time likewise.
    result.update(
        benchmark="compare", side="sb3",
        train_wall_seconds=result["train_seconds_excluding_eval"],
        train_cpu_seconds=end[1] - start[1] - eval_cpu,
    )
    write_json(out, result)
    tmp = sb3_trpo.RESULTS_DIR / f"sb3_learn_{env_id}_seed{seed}.json"
    tmp.unlink(missing_ok=True)
    for d in (sb3_trpo.RESULTS_DIR, sb3_trpo.RESULTS_DIR.parent):
        try:
            d.rmdir()
        except OSError:
            pass


# ---------------------------------------------------------------- the driver
def launch(side: str, env_id: str, seed: int, out: Path, args: argparse.Namespace) -> str:
    """Run one worker process; add its process clocks to its result file."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "worker", side, env_id,
           "--seed", str(seed), "--out", str(out), "--timesteps", str(args.timesteps),
           "--eval-freq", str(args.eval_freq), "--eval-episodes", str(args.eval_episodes),
           "--eval-seeds", args.eval_seeds,
           "--final-eval-episodes", str(args.final_eval_episodes)]
    if side == "ours" and args.overrides:
        cmd += ["--set", *args.overrides]
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "OMP_NUM_THREADS": "1",
                                     "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        return f"FAILED ({code}) {side} {env_id} seed {seed}: see {log}"
    r = json.loads(out.read_text())
    r["process"] = {"wall_seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                    "user_seconds": usage.ru_utime, "sys_seconds": usage.ru_stime,
                    "max_rss_mib": usage.ru_maxrss / 1024.0, "command": " ".join(cmd[1:])}
    write_json(out, r)
    log.unlink(missing_ok=True)
    return (f"{side} {env_id} seed {seed}: {r['final']['eval_mean']:.1f} "
            f"({wall:.0f} s wall, {r['process']['cpu_seconds']:.0f} s CPU)")


def cmd_run(args: argparse.Namespace) -> None:
    if not 1 <= args.jobs <= MAX_JOBS:
        raise SystemExit(f"--jobs must be 1 or 2 (the machine has two shared cores), "
                         f"got {args.jobs}")
    if args.overrides and "sb3" in args.sides:
        raise SystemExit("key=value overrides apply to our side only: add --sides ours")
    if args.final_eval_episodes and args.eval_seeds != "declared":
        raise SystemExit("--final-eval-episodes plays declared starts: add --eval-seeds declared")
    todo = [(side, env_id, seed, result_path(args.out_dir, side, env_id, seed, args.tag))
            for env_id in args.envs for seed in args.seeds for side in args.sides]
    pending = [t for t in todo if not finished(t[3])]
    print(f"{len(todo) - len(pending)} of {len(todo)} runs finished already; "
          f"running {len(pending)}, {args.jobs} at a time", flush=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(launch, side, env_id, seed, out, args)
                   for side, env_id, seed, out in pending]
        for f in futures:
            print(f.result(), flush=True)
    if not args.no_report:
        cmd_report(args)


# ---------------------------------------------------------------- the report
def load_runs(out_dir: Path, envs: list[str], seeds: list[int], tag: str = "",
              sides: tuple[str, ...] = SIDES) -> dict[tuple[str, str], list[dict[str, Any]]]:
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for env_id in envs:
        for side in sides:
            found = [json.loads(p.read_text()) for seed in seeds
                     if finished(p := result_path(out_dir, side, env_id, seed, tag))]
            if found:
                runs[(env_id, side)] = found
    return runs


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    finals = np.array([r["final"]["eval_mean"] for r in runs])
    steps = np.array([r["final"]["timesteps"] for r in runs], dtype=float)
    train_wall = np.array([r["train_wall_seconds"] for r in runs])
    return {
        "n": len(runs), "seeds": [r["seed"] for r in runs], "finals": finals.tolist(),
        "mean": float(finals.mean()), "std": float(finals.std()), "min": float(finals.min()),
        "wall": float(np.mean([r["process"]["wall_seconds"] for r in runs])),
        "train_wall": float(train_wall.mean()),
        "steps_per_s": float(np.mean(steps / train_wall)),
        "cpu": float(np.mean([r["process"]["cpu_seconds"] for r in runs])),
        "train_cpu": float(np.mean([r["train_cpu_seconds"] for r in runs])),
        "rss": float(np.max([peak_rss(r) for r in runs])),
    }


def table(runs: dict[tuple[str, str], list[dict[str, Any]]], envs: list[str]) -> str:
    lines = [
        "| env | side | seeds | final per seed | mean | std | min | wall s (train) | "
        "CPU s (train) | train steps/s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for env_id in envs:
        stats = {side: summary(runs[(env_id, side)]) for side in SIDES if (env_id, side) in runs}
        for side, s in stats.items():
            lines.append(
                f"| {env_id} | {SIDE_NAMES[side]} | {','.join(map(str, s['seeds']))} | "
                f"{' / '.join(f'{x:.0f}' for x in s['finals'])} | {s['mean']:.1f} | "
                f"{s['std']:.1f} | {s['min']:.1f} | {s['wall']:.1f} ({s['train_wall']:.1f}) | "
                f"{s['cpu']:.1f} ({s['train_cpu']:.1f}) | {s['steps_per_s']:.0f} | "
                f"{s['rss']:.0f} |")
        if len(stats) == 2:
            o, p = stats["ours"], stats["sb3"]
            ratios.append(
                f"| {env_id} | {p['wall'] / o['wall']:.1f}x | "
                f"{p['train_wall'] / o['train_wall']:.1f}x | {p['cpu'] / o['cpu']:.1f}x | "
                f"{p['train_cpu'] / o['train_cpu']:.1f}x |")
    wide = [(env_id, side, [r["final_wide"] for r in runs[(env_id, side)]])
            for env_id in envs for side in SIDES
            if (env_id, side) in runs and all("final_wide" in r for r in runs[(env_id, side)])]
    if wide:
        lines += ["", "The final policies on more declared starts (`--final-eval-episodes`; "
                  "the first ten are the evaluation's above):", "",
                  "| env | side | starts | mean per seed | mean | min per seed | worst episode |",
                  "|---|---|---|---|---|---|---|"]
        for env_id, side, ws in wide:
            means, mins = [w["eval_mean"] for w in ws], [w["eval_min"] for w in ws]
            lines.append(
                f"| {env_id} | {SIDE_NAMES[side]} | {ws[0]['episodes']} | "
                f"{' / '.join(f'{x:.0f}' for x in means)} | {np.mean(means):.1f} | "
                f"{' / '.join(f'{x:.0f}' for x in mins)} | {min(mins):.0f} |")
    if ratios:
        lines += ["", "Speed of ours relative to SB3-contrib (SB3-contrib's time / ours, means "
                  "over the seeds):", "",
                  "| env | wall, process | wall, training | CPU, process | CPU, training |",
                  "|---|---|---|---|---|", *ratios]
    return "\n".join(lines)


def figure(runs: dict[tuple[str, str], list[dict[str, Any]]], envs: list[str],
           path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = [e for e in envs if any((e, s) in runs for s in SIDES)]
    fig, axes = plt.subplots(1, len(envs), figsize=(4.2 * len(envs), 3.4), squeeze=False)
    colors = {"ours": "tab:blue", "sb3": "tab:orange"}
    for ax, env_id in zip(axes[0], envs, strict=True):
        for side in SIDES:
            rs = runs.get((env_id, side))
            if not rs:
                continue
            n = min(len(r["curve"]["timesteps"]) for r in rs)
            x = np.array([*rs[0]["curve"]["timesteps"][:n], rs[0]["final"]["timesteps"]])
            y = np.array([[*r["curve"]["eval_mean"][:n], r["final"]["eval_mean"]] for r in rs])
            ax.plot(x, y.mean(axis=0), color=colors[side],
                    label=f"{SIDE_NAMES[side]} ({len(rs)} seeds)")
            ax.fill_between(x, y.min(axis=0), y.max(axis=0), color=colors[side], alpha=0.2)
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("deterministic evaluation return (10 episodes)")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle("Mean over seeds, band min..max", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_report(args: argparse.Namespace) -> None:
    runs = load_runs(args.out_dir, args.envs, args.seeds, args.tag)
    if not runs:
        raise SystemExit("no finished runs to report")
    text = table(runs, args.envs)
    print(text)
    if args.doc is not None:
        doc = args.doc.read_text() if args.doc.exists() else f"{BEGIN}\n{END}\n"
        if BEGIN not in doc:
            doc += f"\n{BEGIN}\n{END}\n"
        block = (f"{BEGIN}\n<!-- written by: .venv/bin/python benchmarks/compare.py report "
                 f"--envs {' '.join(args.envs)} --seeds {args.seeds_text} -->\n\n{text}\n\n{END}")
        doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, doc,
                     flags=re.S)
        args.doc.write_text(doc)
    if args.figure is not None and not args.no_figure:
        figure(runs, args.envs, args.figure)


def cmd_sweep(args: argparse.Namespace) -> None:
    """README table of a tuning folder: one row per (env, tag), finals per seed."""
    name = re.compile(r"ours_(?P<env>.+?)_seed(?P<seed>\d+)(?P<tag>_.*)?\.json$")
    rows: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for path in sorted(args.folder.glob("ours_*.json")):
        m = name.match(path.name)
        if m and finished(path):
            rows.setdefault((m["env"], m["tag"] or ""), {})[int(m["seed"])] = json.loads(
                path.read_text())
    lines = [f"# Tuning runs: {args.folder.name} (seeds 0-2 only)", "",
             "Written by `.venv/bin/python benchmarks/compare.py sweep "
             f"{args.folder.relative_to(ROOT)}`; each row ran `compare.py run --sides ours "
             "--eval-freq 20000 --seeds 0-2 --tag TAG --set OVERRIDES` on top of "
             "`TRPOConfig.for_env(env)` at the time of the run (the config is in each JSON).",
             "", "| env | tag | overrides | final per seed | mean | min | train CPU s |",
             "|---|---|---|---|---|---|---|"]
    for (env_id, tag), by_seed in sorted(rows.items()):
        runs = [by_seed[k] for k in sorted(by_seed)]
        finals = [r["final"]["eval_mean"] for r in runs]
        lines.append(
            f"| {env_id} | {tag or '(none)'} | {' '.join(runs[0]['overrides']) or '(none)'} | "
            + " / ".join(f"{k}: {r['final']['eval_mean']:.0f}" for k, r in by_seed.items())
            + f" | {np.mean(finals):.1f} | {np.min(finals):.1f} | "
            f"{np.mean([r['train_cpu_seconds'] for r in runs]):.1f} |")
    text = "\n".join(lines) + "\n"
    if args.notes:
        text += "\n" + args.notes + "\n"
    (args.folder / "README.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--envs", nargs="+", default=["CartPole-v1", "Acrobot-v1",
                                                      "Pendulum-v1"])
    common.add_argument("--seeds", dest="seeds_text", default="100-104",
                        help="e.g. 100-104 or 0,1,2 (report seeds: 100-104)")
    common.add_argument("--out-dir", type=Path, default=RESULTS)
    common.add_argument("--tag", default="", help="suffix of the result file names")
    common.add_argument("--doc", type=Path, default=DOC, help="Markdown file to update")
    common.add_argument("--figure", type=Path, default=FIGURE)
    common.add_argument("--no-figure", action="store_true")
    run = sub.add_parser("run", parents=[common], help="run missing runs, then report")
    run.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    run.add_argument("--jobs", type=int, default=MAX_JOBS)
    run.add_argument("--timesteps", type=int, default=100_000)
    run.add_argument("--eval-freq", type=int, default=10_000)
    run.add_argument("--eval-episodes", type=int, default=10)
    run.add_argument("--eval-seeds", choices=EVAL_SEEDS, default="shared",
                     help="declared: both sides play the same starts, drawn from 1000+seed; "
                          "shared: the older protocol (see declared_episode_seeds)")
    run.add_argument("--final-eval-episodes", type=int, default=0, metavar="N",
                     help="also score the final policy on N declared starts (both sides; "
                          "the first ten are the regular evaluation's)")
    run.add_argument("--no-report", action="store_true")
    run.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="key=value",
                     help="config overrides for our side (tuning runs)")
    sub.add_parser("report", parents=[common], help="table and figure of finished runs")
    sweep = sub.add_parser("sweep", help="README table of a tuning folder")
    sweep.add_argument("folder", type=Path)
    sweep.add_argument("--notes", default="", help="text appended under the table")
    worker = sub.add_parser("worker", help="one run (started by `run`)")
    worker.add_argument("side", choices=SIDES)
    worker.add_argument("env")
    worker.add_argument("--seed", type=int, required=True)
    worker.add_argument("--out", type=Path, required=True)
    worker.add_argument("--timesteps", type=int, default=100_000)
    worker.add_argument("--eval-freq", type=int, default=10_000)
    worker.add_argument("--eval-episodes", type=int, default=10)
    worker.add_argument("--set", dest="overrides", nargs="+", default=[],
                        metavar="key=value")
    worker.add_argument("--eval-seeds", choices=EVAL_SEEDS, default="shared")
    worker.add_argument("--final-eval-episodes", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "worker":
        if args.side == "ours":
            worker_ours(args.env, args.seed, args.out, args.timesteps, args.eval_freq,
                        args.eval_episodes, args.overrides, args.eval_seeds,
                        args.final_eval_episodes)
        else:
            worker_sb3(args.env, args.seed, args.out, args.timesteps, args.eval_freq,
                       args.eval_episodes, args.eval_seeds, args.final_eval_episodes)
        return 0
    if args.command == "sweep":
        args.folder = args.folder.resolve()
        cmd_sweep(args)
        return 0
    args.seeds = seed_list(args.seeds_text)
    if args.command == "run":
        cmd_run(args)
    else:
        cmd_report(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
