"""Fingerprint of short TRPO training runs: proves a refactor leaves every bit unchanged.

Trains a grid of short runs (environment x seed x number of environments x vector env kind,
default configuration otherwise) and prints, per run, SHA-256 digests (first 16 hex digits)
of

- ``policy``: the final flat policy parameters ``agent.theta``;
- ``value``: the critic's parameters ``agent.value.theta``;
- ``norm``: the observation normalizer (mean, var, count) and the reward scaler (return
  moments and running returns), when the configuration has them;
- ``metrics``: every per-update metric except the wall-clock timings (``step_status`` is
  compared by name, so a float code ``0.0`` and the string ``"OK"`` hash alike);
- ``act``: deterministic ``predict`` on 16 fixed observations, then stochastic ``predict``
  on the same observations (this one draws from the agent's predict stream);

and one ``all`` digest over the whole grid.  Run it before and after a change and diff the
output: equal digests mean bitwise-equal training.  Use ``--quick`` for a smaller grid.

Run from the repository root::

    .venv/bin/python benchmarks/fingerprint.py
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys

import numpy as np

from rl_adapters import TRPO

TIMED = {"steps_per_sec", "env_time", "policy_time", "update_time", "wall_time"}
#: Names of the float status codes written by older versions (StepStatus of trustregion).
_OLD_STEP_STATUS = {0: "OK", 1: "NON_POSITIVE_CURVATURE", 2: "NON_FINITE",
                    3: "ZERO_DIRECTION", 4: "NOT_ASCENT"}


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray) or isinstance(part, np.generic):
            arr = np.ascontiguousarray(part)
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
        elif isinstance(part, float):
            h.update(part.hex().encode())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


def _status_name(value: object) -> str:
    if isinstance(value, str):
        return value
    return _OLD_STEP_STATUS.get(int(value), f"code{int(value)}")  # type: ignore[call-overload]


def fingerprint(agent: TRPO, obs: np.ndarray) -> dict[str, str]:
    norm_parts: list[object] = []
    if agent.obs_rms is not None:
        rms = agent.obs_rms
        norm_parts += [rms.mean, rms.var, float(rms.count)]
    if agent.reward_scaler is not None:
        rs = agent.reward_scaler
        norm_parts += [rs.rms.mean, rs.rms.var, float(rs.rms.count), rs.returns]
    metric_parts: list[object] = []
    for m in agent.metrics:
        for key in sorted(set(m) - TIMED):
            value = m[key]
            text = key == "step_status" or isinstance(value, str)  # status names are text
            metric_parts += [key, _status_name(value) if text else float(value)]
    deterministic = np.asarray(agent.predict(obs, deterministic=True))
    stochastic = np.asarray(agent.predict(obs, deterministic=False))
    return {
        "policy": _digest(agent.theta),
        "value": _digest(agent.value.theta),
        "norm": _digest(*norm_parts),
        "metrics": _digest(*metric_parts),
        "act": _digest(deterministic, stochastic),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, sync envs only")
    parser.add_argument("--timesteps", type=int, default=4096)
    args = parser.parse_args(argv)
    envs = {"CartPole-v1": 4, "Pendulum-v1": 3}  # observation dimensions
    seeds = (0,) if args.quick else (0, 1)
    kinds = ("sync",) if args.quick else ("sync", "async")
    total = hashlib.sha256()
    for env_id, seed, n_envs, kind in itertools.product(envs, seeds, (1, 4), kinds):
        obs = np.random.default_rng(12345).standard_normal((16, envs[env_id]))
        agent = TRPO(env_id, seed=seed, n_envs=n_envs, vector_env=kind)
        try:
            agent.learn(args.timesteps)
            fp = fingerprint(agent, obs)
        finally:
            agent.close()
        label = f"{env_id:<12} seed={seed} n_envs={n_envs} {kind:<5}"
        print(label, " ".join(f"{k}={v[:16]}" for k, v in fp.items()), flush=True)
        total.update("".join(fp.values()).encode())
    print(f"all={total.hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
