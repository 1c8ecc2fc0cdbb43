"""rl-baselines3-zoo hyperparameters for SB3-contrib TRPO, as plain Python data.

Both sides of the TRPO benchmark import this module (it needs neither torch nor SB3), so the
peer and our agent are configured from one place.

Source: ``DLR-RM/rl-baselines3-zoo``, file ``hyperparams/trpo.yml`` (read at commit
13a3fe74510342bc368b09d459d8117e470ab620). The zoo lists ``HalfCheetah-v4`` and ``Hopper-v4``
(MuJoCo block, which inherits the ``HalfCheetahBulletEnv-v0`` block through YAML anchors); we
use those values, with the anchors resolved, on the ``-v5`` environments.

Each entry of :data:`ZOO_TRPO` holds exactly the zoo's keys:

- ``n_envs``, ``n_timesteps``, ``policy`` and ``normalize`` are read by the zoo's experiment
  manager, not by ``TRPO(...)``. ``normalize: True`` means a ``VecNormalize`` wrapper
  (observations and rewards, clip 10) whose ``gamma`` is the algorithm's ``gamma``; the
  evaluation env shares the observation statistics but neither updates them nor normalizes
  rewards.
- every other key is a keyword argument of ``sb3_contrib.TRPO``.

Keys the zoo does not set take SB3-contrib's defaults, listed in :data:`SB3_TRPO_DEFAULTS`
(sb3-contrib 2.9.2) and :data:`SB3_POLICY_DEFAULTS`; :func:`effective_config` merges them.
"""

from __future__ import annotations

from typing import Any

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
    # zoo key: HalfCheetah-v4 (MuJoCo defaults + target_kl 0.04)
    "HalfCheetah-v5": {**_MUJOCO_DEFAULTS, "target_kl": 0.04},
    # zoo key: Hopper-v4 (MuJoCo defaults)
    "Hopper-v5": dict(_MUJOCO_DEFAULTS),
}

# The zoo keys that are not arguments of ``TRPO(...)``.
ZOO_RUNNER_KEYS = ("n_envs", "n_timesteps", "policy", "normalize")

# sb3_contrib.TRPO.__init__ defaults (sb3-contrib 2.9.2) for the keys the zoo may leave out.
SB3_TRPO_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-3,
    "n_steps": 2048,
    "batch_size": 128,
    "gamma": 0.99,
    "cg_max_steps": 15,
    "cg_damping": 0.1,
    "line_search_shrinking_factor": 0.8,
    "line_search_max_iter": 10,
    "n_critic_updates": 10,
    "gae_lambda": 0.95,
    "use_sde": False,
    "sde_sample_freq": -1,
    "normalize_advantage": True,
    "target_kl": 0.01,
    "sub_sampling_factor": 1,
}

# stable_baselines3 ActorCriticPolicy defaults used by TRPO's "MlpPolicy" (SB3 2.9.2).
SB3_POLICY_DEFAULTS: dict[str, Any] = {
    "net_arch": {"pi": [64, 64], "vf": [64, 64]},  # separate policy and value networks
    "activation_fn": "tanh",
    "ortho_init": True,  # gain sqrt(2) hidden, 0.01 policy head, 1 value head
    "log_std_init": 0.0,  # state-independent log std for Box actions
    "optimizer": "Adam(eps=1e-5)",  # one Adam over all parameters; TRPO drops the actor's grads
}

# VecNormalize defaults (SB3 2.9.2) applied when ``normalize`` is true; gamma follows the algorithm.
SB3_VECNORMALIZE_DEFAULTS: dict[str, Any] = {
    "norm_obs": True,
    "norm_reward": True,
    "clip_obs": 10.0,
    "clip_reward": 10.0,
    "epsilon": 1e-8,
}


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
