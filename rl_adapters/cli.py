"""Command-line tool ``trpo``: train, resume, evaluate and plot TRPO runs.

::

    trpo train ENV_ID [--timesteps N] [--seed S] [--n-envs K] [--out DIR]
                      [--save-every N] [--overwrite] [--no-progress] [key=value ...]
                      [--ray [--address ADDR] [--workers K]]
    trpo train --resume RUN_DIR [--timesteps N] [--save-every N] [--no-progress]
                      [--address ADDR]
    trpo eval RUN_DIR [--episodes N] [--seed S] [--stochastic]
    trpo plot RUN_DIR [RUN_DIR ...] [--out FILE]

``train`` writes into ``DIR`` (default ``runs/<ENV_ID>-s<S>``) as it goes, so that a
crash or a kill loses at most one checkpoint interval:

- ``config.json`` (the configuration, the seed and the requested total steps) at the start;
- ``metrics.csv``: one row per update, appended and flushed when the update's critic fit
  has ended (the fit runs on through the next rollout), at the latest as the next update
  ends;
- ``model.npz``: the checkpoint, at the start, every ``--save-every`` steps and at the
  end, each time written to a temporary file and renamed over the previous one
  (``agent.save``), so the file on disk is always a whole checkpoint;
- ``learning_curve.png`` at the end.

Every input is checked before training starts: the overrides, the environment, and that
``DIR`` can be created and written.  A directory that already holds a run is never
replaced silently: ``--overwrite`` starts the run afresh, ``--resume DIR`` continues it
from its checkpoint to ``--timesteps`` steps in total (by default the total it was started
with), bitwise as if it had never stopped, keeping the rows of ``metrics.csv`` up to the
checkpoint.  Temporary files left by a killed save are removed at the next start, with a
one-line notice.  Ctrl-C or SIGTERM stops at the end of the current update and saves.

Expected errors (unknown environment, missing MuJoCo, bad override, a directory that
cannot be written, a missing, empty, truncated or damaged model or CSV file) print one
line on stderr naming the file or argument and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import signal
import struct
import sys
import tempfile
import threading
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

__all__ = ["main"]

EXIT_USAGE = 2
#: Exit status after a clean stop on a signal: 128 + the signal number, as a shell reports it.
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}

DEFAULT_TIMESTEPS = 100_000
DEFAULT_SAVE_EVERY = 10_000
MODEL = "model.npz"
METRICS = "metrics.csv"
CONFIG = "config.json"
CURVE = "learning_curve.png"
RUN_FILES = (MODEL, METRICS, CONFIG, CURVE)
#: Prefix of every temporary file written in a run directory (``agent.save`` uses it too).
TEMP_PREFIX = ".tmp-"
#: What a damaged checkpoint raises while it is read (until the loader validates it):
#: caught around the load only, so that a programming error elsewhere still shows.
_LOAD_ERRORS = (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError)


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
        "train", help="train an agent, or continue a run with --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config overrides (key=value):\n" + TRPOConfig.describe(),
    )
    train.add_argument("env_id", nargs="?", help="Gymnasium environment id, e.g. CartPole-v1")
    train.add_argument("--timesteps", type=int, default=None,
                       help=f"total environment steps of the run (default {DEFAULT_TIMESTEPS}; "
                            "with --resume, the total the run was started with)")
    train.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    train.add_argument("--n-envs", type=int, default=None, help="parallel environments")
    train.add_argument("--out", default=None, help="run directory (default runs/ENV-sSEED)")
    train.add_argument("--save-every", type=int, default=DEFAULT_SAVE_EVERY, metavar="N",
                       help="checkpoint after every N environment steps, rounded up to whole "
                            f"updates (default {DEFAULT_SAVE_EVERY}; 0: only at the end)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run already in --out (it is refused otherwise)")
    train.add_argument("--resume", metavar="RUN_DIR", default=None,
                       help="continue the run in RUN_DIR from its checkpoint and configuration")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--ray", action="store_true",
                       help="run the environments on Ray workers (vector_env=ray, docs/ray.md)")
    train.add_argument("--address", default=None,
                       help="with --ray (or --resume of a Ray run): the Ray cluster to join "
                            "(HOST:PORT, auto); default: start a local Ray")
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
        words = [w for w in (args.env_id, *args.overrides) if w is not None]
        overrides = [w for w in words + extra if _is_override(w)]
        extra = [e for e in extra if not _is_override(e)]
        positional = [w for w in words if not _is_override(w)]
        args.env_id = positional[0] if positional else None
        args.overrides = overrides
        extra += positional[1:]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        return _plot(args)
    except CLIError as exc:
        # One line, whatever the message holds (an exception text may span lines).
        print(f"trpo {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"trpo {args.command}: interrupted", file=sys.stderr)
        return EXIT_SIGNAL[signal.SIGINT]


def _is_override(word: str) -> bool:
    return "=" in word and not word.startswith("-")


# ----------------------------------------------------------------- run directories
def _check_writable(directory: str, what: str) -> None:
    """Create and remove a temporary file in ``directory``: the test the OS will apply."""
    try:
        fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CLIError(f"{what} {directory!r} is not writable ({exc.strerror or exc})") from None


def _make_run_dir(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out {out!r} exists and is not a directory")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"--out {out!r} cannot be created ({exc.strerror or exc})") from None
    _check_writable(out, "--out")


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    """Hold an exclusive lock on ``directory``: one ``trpo train`` per run at a time.

    The lock is on the directory itself (``flock``), so no lock file is left behind and a
    killed process releases it.  Where ``fcntl`` does not exist (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CLIError(f"{directory!r} is in use by another `trpo train` process") from None
        yield
    finally:
        os.close(fd)


def _clean_temp_files(directory: str) -> None:
    """Remove the temporary files a killed save left (only ours, under the run's lock)."""
    legacy = {f"{name}.tmp" for name in RUN_FILES} | {f"{CURVE}.tmp.png"}
    stale = sorted(name for name in os.listdir(directory)
                   if (name.startswith(TEMP_PREFIX) or name in legacy)
                   and os.path.isfile(os.path.join(directory, name)))
    if not stale:
        return
    for name in stale:
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CLIError(f"cannot remove the stale temporary file "
                           f"{os.path.join(directory, name)!r} ({exc.strerror})") from None
    print(f"trpo train: removed {len(stale)} temporary file(s) left in {directory} by an "
          f"interrupted save: {', '.join(stale)}", file=sys.stderr)


def _write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".txt",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        _set_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _set_default_mode(path: str) -> None:
    """mkstemp creates files 0600: give the usual permissions under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _write_run_text(path: str, text: str) -> None:
    try:
        _write_text(path, text)
    except OSError as exc:
        raise CLIError(f"cannot write {path} ({exc.strerror or exc})") from None


# ----------------------------------------------------------------- metrics.csv
def _metric_row(metrics: dict[str, float | str]) -> list[str]:
    from rl_adapters.agent import METRIC_KEYS

    return [m if isinstance(m, str) else f"{m:.10g}" for m in (metrics[k] for k in METRIC_KEYS)]


def _metrics_csv(rows: list[list[str]]) -> str:
    from rl_adapters.agent import METRIC_KEYS

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METRIC_KEYS)
    writer.writerows(rows)
    return buf.getvalue()


class _MetricsLog:
    """``metrics.csv`` opened for appending: each row is flushed as soon as it is written."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fh = open(path, "a", encoding="utf-8", newline="")
        except OSError as exc:
            raise CLIError(f"cannot write {path} ({exc.strerror or exc})") from None
        self._writer = csv.writer(self._fh, lineterminator="\n")

    def append(self, metrics: dict[str, float]) -> None:
        try:
            self._writer.writerow(_metric_row(metrics))
            self._fh.flush()
        except OSError as exc:
            raise CLIError(f"cannot write {self.path} ({exc.strerror or exc})") from None

    def sync(self) -> None:
        """Make the rows durable (before a checkpoint that counts them is written)."""
        try:
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise CLIError(f"cannot write {self.path} ({exc.strerror or exc})") from None

    def close(self) -> None:
        self._fh.close()


def _csv_rows_so_far(path: str, n_updates: int) -> list[list[str]] | None:
    """The rows of updates ``1..n_updates`` in ``path``, or None if any is missing.

    Rows past the checkpoint (the run went on after it, then died) are dropped: the
    resumed run writes them again.  A truncated last line is one of those.
    """
    from rl_adapters.agent import METRIC_KEYS

    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not rows or tuple(rows[0]) != tuple(METRIC_KEYS):
        return None
    kept = []
    for fields in rows[1:]:
        if len(kept) == n_updates:
            break
        try:
            update = float(fields[0])
        except (ValueError, IndexError):
            return None
        if len(fields) != len(METRIC_KEYS) or update != len(kept) + 1:
            return None
        kept.append(fields)
    return kept if len(kept) == n_updates else None


def _restore_metrics(run_dir: str, agent: Any) -> None:
    """Rewrite ``metrics.csv`` to hold exactly the updates of the checkpoint."""
    path = os.path.join(run_dir, METRICS)
    n = int(agent.n_updates)
    rows = _csv_rows_so_far(path, n)
    if rows is None:
        saved = list(getattr(agent, "metrics", []))
        if len(saved) == n:
            rows = [_metric_row(m) for m in saved]
            print(f"trpo train: {path} was damaged or short; its {n} rows were rebuilt from "
                  "the checkpoint", file=sys.stderr)
        else:
            rows = []
            print(f"trpo train: {path} was damaged or short and the checkpoint does not hold "
                  f"the metrics: the rows of updates 1..{n} are lost", file=sys.stderr)
    _write_run_text(path, _metrics_csv(rows))


def _read_metrics(run_dir: str) -> list[dict[str, float | str]]:
    """Every row of a run's ``metrics.csv``; a damaged or truncated file is a CLIError."""
    from rl_adapters.agent import TEXT_METRIC_KEYS

    if not os.path.isdir(run_dir):
        raise CLIError(f"{run_dir!r}: no such run directory")
    path = os.path.join(run_dir, METRICS)
    if not os.path.isfile(path):
        raise CLIError(f"{run_dir!r} has no metrics.csv (is it a `trpo train` run directory?)")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise CLIError(f"{path} is damaged: it is not UTF-8 text") from None
    except csv.Error as exc:
        raise CLIError(f"{path} is damaged: {exc}") from None
    except OSError as exc:
        raise CLIError(f"cannot read {path} ({exc.strerror or exc})") from None
    if not rows:
        raise CLIError(f"{path} is empty: no header line")
    header = rows[0]
    missing = [k for k in ("timesteps", "ep_return_mean") if k not in header]
    if missing:
        raise CLIError(f"{path} is damaged: its header lacks the column(s) {', '.join(missing)}")
    metrics = []
    for line, fields in enumerate(rows[1:], start=2):
        if not fields:  # a blank line
            continue
        if len(fields) != len(header):
            raise CLIError(f"{path} is damaged or truncated: line {line} has {len(fields)} "
                           f"field(s), the header has {len(header)}")
        row: dict[str, float | str] = {}
        for key, value in zip(header, fields, strict=True):
            if key in TEXT_METRIC_KEYS:
                row[key] = value
                continue
            try:
                row[key] = float(value)
            except ValueError:
                raise CLIError(f"{path} is damaged: line {line}, column {key}: {value!r} is "
                               "not a number") from None
        metrics.append(row)
    return metrics


# ----------------------------------------------------------------- checkpoints
def _load_agent(path: str) -> Any:
    """``TRPO.load(path)``, with the failures a damaged file causes as one-line errors."""
    import gymnasium as gym

    from rl_adapters.agent import TRPO

    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise CLIError(f"cannot read {path} ({exc.strerror or exc})") from None
    if size == 0:
        raise CLIError(f"cannot load {path}: the file is empty (0 bytes)")
    _check_archive(path)
    try:
        return TRPO.load(path)
    except gym.error.Error as exc:
        raise CLIError(f"cannot load {path}: its environment cannot be made "
                       f"({type(exc).__name__}: {exc})") from None
    except _LOAD_ERRORS as exc:
        raise CLIError(f"cannot load {path}: the file is damaged, truncated or not a trpo "
                       f"checkpoint ({type(exc).__name__}: {exc})") from None


def _check_archive(path: str) -> None:
    """Read every member of the ``.npz`` (a zip archive) and check its CRC-32.

    A damaged archive then fails here, in ``zipfile`` alone, whatever byte is wrong
    (some make ``zipfile`` raise ``NotImplementedError`` or ``zlib.error``, which are
    caught here and not around the whole load).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, NotImplementedError, zlib.error, EOFError, OSError,
            ValueError, struct.error) as exc:
        raise CLIError(f"cannot load {path}: the file is damaged, truncated or not a trpo "
                       f"checkpoint ({type(exc).__name__}: {exc})") from None
    if damaged is not None:
        raise CLIError(f"cannot load {path}: the file is damaged (member {damaged!r} fails "
                       "its CRC-32 check)")


def _save(agent: Any, path: str) -> None:
    try:
        agent.save(path)
    except OSError as exc:
        raise CLIError(f"cannot write the checkpoint {path} ({exc.strerror or exc}); "
                       "the previous checkpoint is intact") from None


# ----------------------------------------------------------------- train
def _check_env(env_id: str) -> None:
    """Fail early, with one line, for an unknown id or a missing simulator."""
    import gymnasium as gym

    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"{env_id} needs a missing dependency ({first})"
                       f"{_install_hint(env_id, first)}") from None
    except gym.error.Error as exc:
        msg = " ".join(str(exc).split())
        raise CLIError(f"unknown environment id {env_id!r} ({msg})") from None
    except ImportError as exc:
        module = env_id.split(":", 1)[0] if ":" in env_id else None
        if module is not None and exc.name in (None, module) and f"'{module}'" in str(exc):
            raise CLIError(f"cannot import {module!r}, the module named before ':' in "
                           f"{env_id!r}: install the package that provides it, or correct "
                           "the id") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"{env_id} needs a missing module ({first})"
                       f"{_install_hint(env_id, first)}") from None
    env.close()


#: The Gymnasium extra that installs the simulator behind a registered entry point.
_EXTRAS = (("mujoco", "mujoco"), ("box2d", "box2d"), ("toy_text", "toy-text"),
           ("classic_control", "classic-control"))


def _install_hint(env_id: str, message: str) -> str:
    """``"; install it with: ..."`` for a registered env whose simulator is missing, or
    nothing where the message already says what to install or the extra is unknown."""
    import gymnasium as gym

    if "pip install" in message:
        return ""
    spec = gym.envs.registry.get(env_id)
    entry = spec.entry_point if spec is not None and isinstance(spec.entry_point, str) else ""
    for part, extra in _EXTRAS:
        if f".{part}" in entry:
            return f"; install it with: pip install 'gymnasium[{extra}]'"
    return ""


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


def _join_ray(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (None: a local Ray), or fail in one line."""
    try:
        from rl_adapters.ray_workers import connect

        connect(address or "")  # the cluster is a deployment detail, not configuration
    except (ConnectionError, ImportError, ValueError) as exc:  # no cluster there, no Ray
        raise CLIError(str(exc)) from None


def _train(args: argparse.Namespace) -> int:
    if args.timesteps is not None and args.timesteps < 1:
        raise CLIError(f"--timesteps must be >= 1, got {args.timesteps}")
    if args.seed is not None and args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    if args.save_every < 0:
        raise CLIError(f"--save-every must be >= 0 (0: only at the end), got {args.save_every}")
    if args.resume is not None:
        return _resume(args)
    if args.env_id is None:
        raise CLIError("give the environment id (e.g. trpo train CartPole-v1), "
                       "or --resume RUN_DIR to continue a run")
    from rl_adapters.config import TRPOConfig, parse_overrides

    seed = 0 if args.seed is None else args.seed
    target = DEFAULT_TIMESTEPS if args.timesteps is None else args.timesteps
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
    out = args.out or os.path.join("runs", f"{args.env_id}-s{seed}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out {out!r} exists and is not a directory")
    if args.ray:
        _join_ray(args.address)
    agent = _make_agent(args.env_id, seed, config)
    try:
        _make_run_dir(out)
        with _locked(out):
            existing = [name for name in RUN_FILES if os.path.exists(os.path.join(out, name))]
            if existing and not args.overwrite:
                if MODEL not in existing:  # a run killed before its first checkpoint
                    raise CLIError(f"--out {out!r} already holds the files of a run "
                                   f"({', '.join(existing)}) but no {MODEL} to resume; "
                                   "pass --overwrite to replace them")
                raise CLIError(f"--out {out!r} already holds a run ({', '.join(existing)}); "
                               f"pass --overwrite to replace it, or continue it with "
                               f"--resume {out}")
            _clean_temp_files(out)
            for name in existing:
                try:
                    os.unlink(os.path.join(out, name))
                except OSError as exc:
                    raise CLIError(f"--overwrite: cannot remove {os.path.join(out, name)} "
                                   f"({exc.strerror})") from None
            _write_run_text(os.path.join(out, METRICS), _metrics_csv([]))
            return _run(agent, out, target, args, initial_save=True)
    finally:
        agent.close()


def _make_agent(env_id: str, seed: int, config: Any) -> Any:
    import gymnasium as gym

    from rl_adapters.agent import TRPO
    from rl_adapters.env_checks import UnsupportedSpaceError

    try:
        return TRPO(env_id, seed=seed, config=config)
    except (ValueError, UnsupportedSpaceError, gym.error.Error) as exc:
        raise CLIError(f"cannot train on {env_id}: {exc}") from None


def _resume(args: argparse.Namespace) -> int:
    run_dir = args.resume
    conflicts = [flag for flag, given in (("--out", args.out is not None),
                                          ("--overwrite", args.overwrite),
                                          ("--n-envs", args.n_envs is not None),
                                          ("--ray", args.ray),
                                          ("--workers", args.workers is not None),
                                          ("key=value overrides", bool(args.overrides)))
                 if given]
    if conflicts:
        raise CLIError(f"--resume continues the run in {run_dir!r} with its saved "
                       f"configuration: drop {', '.join(conflicts)}")
    if not os.path.isdir(run_dir):
        raise CLIError(f"--resume {run_dir!r}: no such run directory")
    model = os.path.join(run_dir, MODEL)
    if not os.path.isfile(model):
        raise CLIError(f"--resume {run_dir!r} has no model.npz "
                       "(is it a `trpo train` run directory?)")
    _check_writable(run_dir, "--resume")
    if args.address is not None:
        _join_ray(args.address)  # a Ray run resumes on this cluster (else a local Ray)
    with _locked(run_dir):
        _clean_temp_files(run_dir)
        agent = _load_agent(model)
        try:
            if args.env_id is not None and args.env_id != agent.env_id:
                raise CLIError(f"--resume {run_dir!r} is a run on {agent.env_id}, "
                               f"not {args.env_id}")
            if args.seed is not None and args.seed != agent.seed:
                raise CLIError(f"--resume {run_dir!r} is a run with seed {agent.seed}, "
                               f"not {args.seed}")
            target = args.timesteps
            if target is None:
                target = _saved_target(run_dir)
            _restore_metrics(run_dir, agent)
            if agent.num_timesteps >= target:
                print(f"trpo train: {run_dir} already has {agent.num_timesteps} >= {target} "
                      "steps: nothing to train (raise --timesteps to train on)",
                      file=sys.stderr)
            else:
                print(f"trpo train: resuming {run_dir} at step {agent.num_timesteps} "
                      f"(update {agent.n_updates}) towards {target} steps", file=sys.stderr)
            return _run(agent, run_dir, target, args, initial_save=False)
        finally:
            agent.close()


def _saved_target(run_dir: str) -> int:
    path = os.path.join(run_dir, CONFIG)
    try:
        with open(path, encoding="utf-8") as fh:
            target = json.load(fh)["target_timesteps"]
    except (OSError, ValueError, KeyError, TypeError):
        target = None
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise CLIError(f"{path} is missing or damaged and does not give the run's total "
                       "steps: pass --timesteps N (the total to reach)")
    return target


class _StopRequest:
    """Ctrl-C / SIGTERM ask training to stop at the end of the current update.

    A second Ctrl-C interrupts at once (``KeyboardInterrupt``) and saves nothing: the
    agent may be halfway through an update, so the last checkpoint is kept instead.
    A repeated SIGTERM does not: it asks for the stop already under way (``timeout``
    sends SIGTERM to the process and again to its process group).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.aborting = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            if signum != signal.SIGINT:
                return  # the same request again
            self.aborting = True
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\ntrpo train: {signal.Signals(signum).name}: stopping after this update "
              "(Ctrl-C again to abort without saving)", file=sys.stderr)

    def _unraisable(self, unraisable: Any) -> None:
        """An abort raised while a finalizer (``__del__``) ran: Python would print it as
        "Exception ignored" with a traceback and train on.  It is kept instead, and
        :func:`_run` aborts at the end of the update (``aborting`` is set)."""
        if self.aborting and isinstance(unraisable.exc_value, KeyboardInterrupt):
            return
        self._previous_hook(unraisable)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        try:
            yield self
        finally:
            sys.unraisablehook = self._previous_hook
            for s, handler in previous.items():
                signal.signal(s, handler)


def _run(agent: Any, run_dir: str, target: int, args: argparse.Namespace, *,
         initial_save: bool) -> int:
    """Train ``agent`` up to ``target`` total steps, logging and checkpointing in ``run_dir``.

    A fresh run saves its initial state at once, so that the directory holds a
    resumable checkpoint from the start.
    """
    model = os.path.join(run_dir, MODEL)
    _write_config(run_dir, agent, target)
    if initial_save:
        _save(agent, model)
    log = _MetricsLog(os.path.join(run_dir, METRICS))
    last_saved = agent.num_timesteps
    save_every = args.save_every

    # A row is written once its critic columns are in: the critic's fit of an update runs
    # on through the next rollout (TRPO.learn), so each update writes the row before it.
    held: list[dict[str, float]] = []

    def write_held() -> None:
        for row in held:
            log.append(row)
        held.clear()

    def after_update(agent: Any, metrics: dict[str, float]) -> bool:
        nonlocal last_saved
        if stop.aborting:  # a second Ctrl-C that a finalizer swallowed
            raise KeyboardInterrupt
        write_held()
        held.append(metrics)
        if save_every and agent.num_timesteps - last_saved >= save_every:
            agent.wait_for_critic()
            write_held()
            log.sync()  # the rows a checkpoint counts are on disk before it is
            _save(agent, model)
            last_saved = agent.num_timesteps
        return stop.signum is None

    stop = _StopRequest()
    try:
        with stop.installed():
            try:
                agent.learn(max(0, target - agent.num_timesteps), callback=after_update,
                            progress_bar=not args.no_progress)
                if stop.aborting:
                    raise KeyboardInterrupt
            except KeyboardInterrupt:
                write_held()
                print(f"trpo train: aborted mid-update; {model} keeps the checkpoint of step "
                      f"{last_saved}; continue with: trpo train --resume {run_dir}",
                      file=sys.stderr)
                return EXIT_SIGNAL[signal.SIGINT]
        write_held()
        log.sync()
        if agent.num_timesteps != last_saved:
            _save(agent, model)
    finally:
        log.close()
    _write_config(run_dir, agent, target)
    rows = _read_metrics(run_dir)
    _plot_runs([(f"{agent.env_id} seed {agent.seed}", rows)], os.path.join(run_dir, CURVE),
               agent.env_id)
    if stop.signum is not None:
        print(f"trpo train: stopped at step {agent.num_timesteps}; run saved in {run_dir}; "
              f"continue with: trpo train --resume {run_dir}", file=sys.stderr)
        return EXIT_SIGNAL.get(stop.signum, 1)
    last = rows[-1] if rows else {}
    print(f"trained {agent.env_id} for {agent.num_timesteps} steps in {len(rows)} "
          f"updates; mean return of the last 100 training episodes: "
          f"{last.get('ep_return_mean', float('nan')):.2f}; run saved in {run_dir}")
    return 0


def _write_config(run_dir: str, agent: Any, target: int) -> None:
    _write_run_text(os.path.join(run_dir, CONFIG), json.dumps({
        "env_id": agent.env_id, "seed": agent.seed, "timesteps": agent.num_timesteps,
        "target_timesteps": target, "config": json.loads(agent.config.to_json()),
    }, indent=2) + "\n")


# ----------------------------------------------------------------- eval / plot
def _eval(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.run_dir):
        raise CLIError(f"{args.run_dir!r}: no such run directory")
    path = os.path.join(args.run_dir, MODEL)
    if not os.path.isfile(path):
        raise CLIError(f"{args.run_dir!r} has no model.npz (is it a `trpo train` run directory?)")
    if args.episodes < 1:
        raise CLIError(f"--episodes must be >= 1, got {args.episodes}")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    agent = _load_agent(path)
    try:
        mean, std = agent.evaluate(args.episodes, deterministic=not args.stochastic,
                                   seed=args.seed)
    finally:
        agent.close()
    mode = "stochastic" if args.stochastic else "deterministic"
    print(f"{agent.env_id}: return {mean:.2f} +- {std:.2f} over {args.episodes} episodes "
          f"({mode} policy, {agent.num_timesteps} training steps)")
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
    with warnings.catch_warnings():  # many runs: a legend too tall for a tight layout
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    suffix = os.path.splitext(path)[1] or ".png"
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix,
                                   dir=os.path.dirname(os.path.abspath(path)))
        os.close(fd)
        fig.savefig(tmp, dpi=110)
        _set_default_mode(tmp)
        os.replace(tmp, path)
        tmp = None
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot write {path} ({getattr(exc, 'strerror', None) or exc})") from None
    finally:
        plt.close(fig)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
