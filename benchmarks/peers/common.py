"""Helpers shared by our benchmark scripts and the peer harness.

Kept free of torch and of our own packages, so both sides can import it: the peer script
(`sb3_trpo.py`) needs torch at module level, and our scripts must run without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a file while a run rewrites it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def collect_random_observations(
    env_id: str, n: int, seed: int, dtype: Any = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` observations and the random actions taken from them (env and actions seeded).

    Both sides of a speed comparison call this with the same seed, so they time the same data.
    """
    env = gym.make(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    observations, actions = [], []
    for _ in range(n):
        action = env.action_space.sample()
        observations.append(obs)
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return np.asarray(observations, dtype=dtype), np.asarray(actions, dtype=dtype)
