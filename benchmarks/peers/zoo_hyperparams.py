"""rl-baselines3-zoo hyperparameters for SB3-contrib TRPO, as plain Python data.

Both sides of the TRPO benchmark import this module (it needs neither torch nor SB3), so the
peer and our agent are configured from one place: the peer passes :func:`trpo_kwargs` to
``sb3_contrib.TRPO``, our side passes the same entry to ``rl_adapters.TRPOConfig.from_sb3``.

Source: ``DLR-RM/rl-baselines3-zoo``, file ``hyperparams/trpo.yml`` (read at commit
13a3fe74510342bc368b09d459d8117e470ab620). The zoo lists ``HalfCheetah-v4``, ``Hopper-v4``,
``Walker2d-v4`` and ``Swimmer-v4`` (MuJoCo block, which inherits the ``HalfCheetahBulletEnv-v0``
block through YAML anchors); we use those values, with the anchors resolved, on the ``-v5``
environments.

Each entry of :data:`ZOO_TRPO` holds exactly the zoo's keys:

- ``n_envs``, ``n_timesteps``, ``policy`` and ``normalize`` are read by the zoo's experiment
  manager, not by ``TRPO(...)``. ``normalize: True`` means a ``VecNormalize`` wrapper
  (observations and rewards, clip 10) whose ``gamma`` is the algorithm's ``gamma``; the
  evaluation env shares the observation statistics but neither updates them nor normalizes
  rewards.
- every other key is a keyword argument of ``sb3_contrib.TRPO``.

Keys the zoo does not set take SB3-contrib's defaults, :data:`SB3_TRPO_DEFAULTS` (sb3-contrib
2.9.2) and :data:`SB3_POLICY_DEFAULTS`, defined in ``rl_adapters.config`` next to
``TRPOConfig.from_sb3``; :func:`effective_config` merges them.
"""

from __future__ import annotations

from typing import Any

# SB3's defaults live with the translation to our config, which is useful beyond benchmarks.
from rl_adapters.config import (
    SB3_POLICY_DEFAULTS,
    SB3_TRPO_DEFAULTS,
    SB3_VECNORMALIZE_DEFAULTS,
)

__all__ = [
    "SB3_POLICY_DEFAULTS",
    "SB3_TRPO_DEFAULTS",
    "SB3_VECNORMALIZE_DEFAULTS",
    "ZOO_RUNNER_KEYS",
    "ZOO_SOURCE",
    "ZOO_TRPO",
    "effective_config",
    "from_sb3_kwargs",
    "trpo_kwargs",
]

ZOO_SOURCE = {
    "repository": "DLR-RM/rl-baselines3-zoo",
    "path": "hyperparams/trpo.yml",
    "commit": "13a3fe74510342bc368b09d459d8117e470ab620",
}

# The zoo's MuJoCo block (``&mujoco-defaults`` <- ``&pybullet-defaults``), anchors resolved.
_MUJOCO_DEFAULTS: dict[str, Any] = {
    "normalize": True,
    "n_envs": 2,
    "n_timesteps": 1_000_000,
    "policy": "MlpPolicy",
    "batch_size": 128,
    "n_steps": 1024,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "sub_sampling_factor": 1,
    "cg_max_steps": 25,
    "cg_damping": 0.1,
    "n_critic_updates": 20,
    "learning_rate": 1e-3,
}

ZOO_TRPO: dict[str, dict[str, Any]] = {
    "CartPole-v1": {
        "n_envs": 2,
        "n_timesteps": 100_000,
        "policy": "MlpPolicy",
        "n_steps": 512,
        "batch_size": 512,
        "cg_damping": 1e-3,
        "gae_lambda": 0.98,
        "gamma": 0.99,
        "learning_rate": 1e-3,
        "n_critic_updates": 20,
    },
    "Pendulum-v1": {
        "n_envs": 2,
        "n_timesteps": 100_000,
        "policy": "MlpPolicy",
        "n_steps": 1024,
        "gamma": 0.9,
        "n_critic_updates": 15,
        "use_sde": True,
        "sde_sample_freq": 4,
    },
    "Acrobot-v1": {
        "normalize": True,
        "n_envs": 2,
        "n_timesteps": 100_000,
        "policy": "MlpPolicy",
        "n_steps": 1024,
    },
    # zoo key: HalfCheetah-v4 (MuJoCo defaults + target_kl 0.04)
    "HalfCheetah-v5": {**_MUJOCO_DEFAULTS, "target_kl": 0.04},
    # zoo key: Hopper-v4 (MuJoCo defaults)
    "Hopper-v5": dict(_MUJOCO_DEFAULTS),
    # zoo key: Walker2d-v4 (MuJoCo defaults)
    "Walker2d-v5": dict(_MUJOCO_DEFAULTS),
    # zoo key: Swimmer-v4 (MuJoCo defaults + gamma 0.9999)
    "Swimmer-v5": {**_MUJOCO_DEFAULTS, "gamma": 0.9999},
}

# The zoo keys that are not arguments of ``TRPO(...)``.
ZOO_RUNNER_KEYS = ("n_envs", "n_timesteps", "policy", "normalize")


def trpo_kwargs(env_id: str) -> dict[str, Any]:
    """Return the zoo's keyword arguments for ``sb3_contrib.TRPO`` on ``env_id``.

    Examples
    --------
    >>> trpo_kwargs("CartPole-v1")["cg_damping"]
    0.001
    >>> "n_envs" in trpo_kwargs("Hopper-v5")
    False
    """
    if env_id not in ZOO_TRPO:
        raise ValueError(f"env_id={env_id!r} has no zoo TRPO entry; known: {sorted(ZOO_TRPO)}")
    return {k: v for k, v in ZOO_TRPO[env_id].items() if k not in ZOO_RUNNER_KEYS}


def effective_config(env_id: str) -> dict[str, Any]:
    """Return every TRPO setting in force on ``env_id``: SB3 defaults overridden by the zoo.

    Examples
    --------
    >>> cfg = effective_config("HalfCheetah-v5")
    >>> cfg["target_kl"], cfg["cg_max_steps"], cfg["normalize"], cfg["line_search_max_iter"]
    (0.04, 25, True, 10)
    """
    if env_id not in ZOO_TRPO:
        raise ValueError(f"env_id={env_id!r} has no zoo TRPO entry; known: {sorted(ZOO_TRPO)}")
    return {"normalize": False, **SB3_TRPO_DEFAULTS, **ZOO_TRPO[env_id]}


def from_sb3_kwargs(env_id: str) -> dict[str, Any]:
    """Return the zoo's entry for ``env_id`` as ``rl_adapters.TRPOConfig.from_sb3`` takes it.

    That is every key but ``n_timesteps`` (the budget, passed to ``learn``):
    ``from_sb3`` translates ``TRPO``'s arguments and the zoo's ``n_envs``, ``policy`` and
    ``normalize``.

    Examples
    --------
    >>> sorted(from_sb3_kwargs("CartPole-v1"))[:3]
    ['batch_size', 'cg_damping', 'gae_lambda']
    """
    if env_id not in ZOO_TRPO:
        raise ValueError(f"env_id={env_id!r} has no zoo TRPO entry; known: {sorted(ZOO_TRPO)}")
    return {k: v for k, v in ZOO_TRPO[env_id].items() if k != "n_timesteps"}
