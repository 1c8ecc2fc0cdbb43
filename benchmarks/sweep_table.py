"""Markdown table of tuning runs (``bench_trpo_learn.py --tag``), read from their JSON files.

One row per tag: the overrides given on the command line (the run's ``notes``), every
config field that differs from a baseline run's config (fields that one of the two runs
predates are not compared), and the final deterministic evaluation per seed. Used for
``benchmarks/results/sweeps/<topic>/README.md``::

    .venv/bin/python benchmarks/sweep_table.py benchmarks/results/sweeps/pendulum \\
        --baseline benchmarks/results/ours_learn_Pendulum-v1_seed0.json
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

NAME = re.compile(r"ours_learn_(?P<env>.+)_seed(?P<seed>\d+)(?P<tag>_.*)?\.json$")


def _overrides(notes: list[str]) -> str:
    given = [n.removeprefix("overrides: ") for n in notes if n.startswith("overrides: ")]
    return " ".join(given) or "(none)"


def _diff(config: dict[str, Any], baseline: dict[str, Any]) -> str:
    # Fields added to TRPOConfig after one of the two runs are missing from its config.
    changed = [f"{k}={_fmt(v)}" for k, v in sorted(config.items())
               if k in baseline and baseline[k] != v]
    return " ".join(changed) or "(none)"


def _fmt(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _solved(run: dict[str, Any], threshold: float) -> str:
    """First evaluation step at ``threshold`` or above, and the lowest evaluation after it."""
    curve = list(zip(run["curve"]["timesteps"], run["curve"]["eval_mean"], strict=True))
    first = next((t for t, v in curve if v >= threshold), None)
    if first is None:
        return "never"
    return f"{first / 1000:.0f}k, then >= {min(v for t, v in curve if t >= first):.0f}"


def table(paths: list[Path], baseline: dict[str, Any], solved: float | None = None) -> str:
    """The table of the runs in ``paths`` (result files, or folders of them).

    With ``solved``, one more column per seed: the first evaluation at ``solved`` or above
    and the lowest evaluation after it.
    """
    runs: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    files = [f for p in paths for f in (sorted(p.glob("ours_learn_*.json")) if p.is_dir() else [p])]
    for path in files:
        m = NAME.match(path.name)
        if m:
            runs[m["tag"] or ""][int(m["seed"])] = json.loads(path.read_text())
    seeds = sorted({s for by_seed in runs.values() for s in by_seed})
    head = ["suffix", "overrides given", "config vs. baseline",
            *(f"seed {s}" for s in seeds), "mean"]
    if solved is not None:
        head += [f"seed {s}: first >= {solved:g}" for s in seeds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tag, by_seed in sorted(runs.items(), key=lambda kv: _tag_key(kv[0])):
        first = next(iter(by_seed.values()))
        finals = {s: r["final"]["eval_mean"] for s, r in by_seed.items() if "final" in r}
        mean = sum(finals.values()) / len(finals) if finals else None
        cells = [f"`{tag}`" if tag else "(untagged)", f"`{_overrides(first['notes'])}`",
                 f"`{_diff(first['config'], baseline)}`",
                 *("—" if s not in finals else f"{finals[s]:.0f}" for s in seeds),
                 "—" if mean is None else f"{mean:.0f}"]
        if solved is not None:
            cells += ["—" if s not in by_seed else _solved(by_seed[s], solved) for s in seeds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _tag_key(tag: str) -> tuple[str, int]:
    m = re.match(r"_?([a-z]+)(\d*)$", tag)
    return (m[1], int(m[2] or 0)) if m else (tag, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", type=Path, nargs="+", help="result files or folders of them")
    parser.add_argument("--baseline", type=Path, required=True,
                        help="a result JSON whose config the rows are compared with")
    parser.add_argument("--solved", type=float, default=None,
                        help="also report the first evaluation at this return or above")
    args = parser.parse_args(argv)
    print(table(args.paths, json.loads(args.baseline.read_text())["config"], args.solved))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
