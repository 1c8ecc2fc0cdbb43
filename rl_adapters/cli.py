"""Command-line tool ``trpo``: train, evaluate and plot TRPO runs.

::

    trpo train ENV_ID [--timesteps N] [--seed S] [--n-envs K] [--out DIR] [key=value ...]
               [--ray [--address ADDR] [--workers K]]
    trpo eval RUN_DIR [--episodes N] [--seed S] [--stochastic]
    trpo plot RUN_DIR [RUN_DIR ...] [--out FILE]

``train`` writes into ``DIR`` (default ``runs/<ENV_ID>-s<S>``): ``model.npz`` (the
checkpoint), ``metrics.csv`` (one row per update), ``config.json`` and
``learning_curve.png``.  Every input is checked before anything is written; errors
(unknown environment, missing MuJoCo, bad override) print one line on stderr and exit
with status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from typing import Any

__all__ = ["main"]

EXIT_USAGE = 2


class CLIError(Exception):
    """An expected user error: printed as one line, exit status 2."""


# ----------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (status 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from rl_adapters.config import TRPOConfig

    parser = _Parser(prog="trpo", description="TRPO with NumPy policies.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser(
        "train", help="train an agent",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config overrides (key=value):\n" + TRPOConfig.describe(),
    )
    train.add_argument("env_id", help="Gymnasium environment id, e.g. CartPole-v1")
    train.add_argument("--timesteps", type=int, default=100_000, help="environment steps")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--n-envs", type=int, default=None, help="parallel environments")
    train.add_argument("--out", default=None, help="run directory (default runs/ENV-sSEED)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--ray", action="store_true",
                       help="run the environments on Ray workers (vector_env=ray, docs/ray.md)")
    train.add_argument("--address", default=None,
                       help="with --ray: the Ray cluster to join (HOST:PORT, auto); "
                            "default: start a local Ray")
    train.add_argument("--workers", type=int, default=None,
                       help="with --ray: rollout workers (n_workers)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    ev = sub.add_parser("eval", help="evaluate a trained run")
    ev.add_argument("run_dir")
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--seed", type=int, default=12345)
    ev.add_argument("--stochastic", action="store_true", help="sample actions")
    plot = sub.add_parser("plot", help="learning curves of one or more runs on one figure")
    plot.add_argument("run_dirs", nargs="+")
    plot.add_argument("--out", default=None, help="PNG file (default: learning_curves.png)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides may come before or after the options: collect the stray key=value words.
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        args.overrides = list(args.overrides) + [e for e in extra if "=" in e and e[0] != "-"]
        extra = [e for e in extra if not ("=" in e and e[0] != "-")]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        return _plot(args)
    except CLIError as exc:
        print(f"trpo {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


# ----------------------------------------------------------------- train
def _check_env(env_id: str) -> None:
    """Fail early, with one line, for an unknown id or a missing simulator."""
    import gymnasium as gym

    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"{env_id} needs a missing dependency ({first}); "
                       "install it with: pip install 'gymnasium[mujoco]'") from None
    except gym.error.Error as exc:
        msg = " ".join(str(exc).split())
        raise CLIError(f"unknown environment id {env_id!r} ({msg})") from None
    except ImportError as exc:
        raise CLIError(f"{env_id} needs a missing module ({exc}); "
                       "install it with: pip install 'gymnasium[mujoco]'") from None
    env.close()


def _ray_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--ray`` and ``--workers`` as config overrides (``--address`` is not config).

    ``--address`` and ``--workers`` need ``--ray``.
    """
    if not args.ray:
        for flag, value in (("--address", args.address), ("--workers", args.workers)):
            if value is not None:
                raise CLIError(f"{flag} needs --ray")
        return {}
    out: dict[str, Any] = {"vector_env": "ray"}
    if args.workers is not None:
        out["n_workers"] = args.workers
    return out


def _train(args: argparse.Namespace) -> int:
    from rl_adapters.config import TRPOConfig, parse_overrides

    if args.timesteps < 1:
        raise CLIError(f"--timesteps must be >= 1, got {args.timesteps}")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    try:
        overrides = parse_overrides(args.overrides)
        if args.n_envs is not None:
            overrides["n_envs"] = args.n_envs
        overrides.update(_ray_overrides(args))
        config = TRPOConfig.for_env(args.env_id, **overrides)
        config.check_scale_out()
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    _check_env(args.env_id)
    out = args.out or os.path.join("runs", f"{args.env_id}-s{args.seed}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out {out!r} exists and is not a directory")

    from rl_adapters.agent import TRPO

    if args.ray:
        try:
            from rl_adapters.ray_workers import connect

            connect(args.address or "")  # the cluster is a deployment detail, not config
        except (ConnectionError, ImportError, ValueError) as exc:  # no cluster there, no Ray
            raise CLIError(str(exc)) from None
    agent = TRPO(args.env_id, seed=args.seed, config=config)
    try:
        agent.learn(args.timesteps, progress_bar=not args.no_progress)
    except KeyboardInterrupt:
        print("interrupted: saving the run so far", file=sys.stderr)
    os.makedirs(out, exist_ok=True)
    agent.save(os.path.join(out, "model.npz"))
    _write_text(os.path.join(out, "metrics.csv"), _metrics_csv(agent.metrics))
    _write_text(os.path.join(out, "config.json"),
                json.dumps({"env_id": args.env_id, "seed": args.seed,
                            "timesteps": agent.num_timesteps,
                            "config": json.loads(config.to_json())}, indent=2) + "\n")
    _plot_runs([(f"{args.env_id} seed {args.seed}", agent.metrics)],
               os.path.join(out, "learning_curve.png"), args.env_id)
    last = agent.metrics[-1] if agent.metrics else {}
    print(f"trained {args.env_id} for {agent.num_timesteps} steps in {len(agent.metrics)} "
          f"updates; mean return of the last 100 training episodes: "
          f"{last.get('ep_return_mean', float('nan')):.2f}; run saved in {out}")
    agent.close()
    return 0


def _metrics_csv(metrics: list[dict[str, float | str]]) -> str:
    from rl_adapters.agent import METRIC_KEYS

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(METRIC_KEYS)
    for m in metrics:
        writer.writerow([m[k] if isinstance(m[k], str) else f"{m[k]:.10g}" for k in METRIC_KEYS])
    return buf.getvalue()


def _write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _read_metrics(run_dir: str) -> list[dict[str, float | str]]:
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.isfile(path):
        raise CLIError(f"{run_dir!r} has no metrics.csv (is it a `trpo train` run directory?)")
    with open(path, encoding="utf-8") as fh:
        return [{k: _number_or_name(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _number_or_name(text: str) -> float | str:
    """A CSV cell: a number, or a name (``step_status``)."""
    try:
        return float(text)
    except ValueError:
        return text


# ----------------------------------------------------------------- eval / plot
def _eval(args: argparse.Namespace) -> int:
    path = os.path.join(args.run_dir, "model.npz")
    if not os.path.isfile(path):
        raise CLIError(f"{args.run_dir!r} has no model.npz (is it a `trpo train` run directory?)")
    if args.episodes < 1:
        raise CLIError(f"--episodes must be >= 1, got {args.episodes}")
    from rl_adapters.agent import TRPO

    try:
        agent = TRPO.load(path)
    except (ValueError, OSError, KeyError) as exc:
        raise CLIError(f"cannot load {path}: {exc}") from None
    mean, std = agent.evaluate(args.episodes, deterministic=not args.stochastic, seed=args.seed)
    mode = "stochastic" if args.stochastic else "deterministic"
    print(f"{agent.env_id}: return {mean:.2f} +- {std:.2f} over {args.episodes} episodes "
          f"({mode} policy, {agent.num_timesteps} training steps)")
    agent.close()
    return 0


def _plot(args: argparse.Namespace) -> int:
    runs = [(os.path.basename(os.path.normpath(d)) or d, _read_metrics(d)) for d in args.run_dirs]
    out = args.out or "learning_curves.png"
    _plot_runs(runs, out, None)
    print(f"wrote {out}")
    return 0


def _plot_runs(runs: list[tuple[str, list[dict[str, Any]]]], path: str, title: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, metrics in runs:
        xs = [m["timesteps"] for m in metrics]
        ys = [m["ep_return_mean"] for m in metrics]
        ax.plot(xs, ys, label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean training return (last 100 episodes)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
