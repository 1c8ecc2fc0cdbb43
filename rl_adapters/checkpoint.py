"""One-file checkpoints (``.npz``, no pickled code) written atomically.

A checkpoint holds everything a run needs to continue exactly where it stopped:
policy and critic parameters, Adam moments, observation and reward normalizer
statistics, the configuration (JSON), the agent's random generator state, counters,
the last 100 episode returns, the current observations and per-episode accumulators, and
a snapshot of each environment (RNG, time-limit counter, simulator state; see
:class:`rl_adapters.rollout.SnapshotWrapper`).  Arrays are stored as plain ``.npy``
members and strings as unicode arrays, so loading uses ``allow_pickle=False``.

The file is written to a temporary file in the target directory, flushed and
``fsync``-ed, then moved over the destination with :func:`os.replace`, an atomic rename
on POSIX and Windows: a crash or an error mid-write leaves the previous checkpoint intact.

:func:`load_policy` rebuilds only what acting needs, with NumPy alone (no Gymnasium, no
Numba, no SciPy): see :class:`NumpyPolicy`.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rl_adapters.mlp import MLP

__all__ = ["FORMAT_VERSION", "NumpyPolicy", "atomic_savez", "load_agent", "load_policy",
           "save_agent"]

FORMAT_VERSION = 1


def atomic_savez(path: str | os.PathLike, arrays: dict[str, NDArray]) -> None:
    """``np.savez`` to ``path`` through a temporary file and an atomic rename."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_arrays(fh, arrays)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates the file 0600; give it the usual permissions under the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _write_arrays(fh, arrays: dict[str, NDArray]) -> None:
    np.savez(fh, **arrays)


def _text(value: str) -> NDArray:
    return np.array(value, dtype=np.str_)


# ------------------------------------------------------------------- save
def save_agent(agent, path: str | os.PathLike) -> None:
    """Serialize ``agent`` (a :class:`rl_adapters.TRPO`) to ``path``."""
    from gymnasium import spaces

    policy = agent.policy
    act_space = agent.venv.single_action_space
    arrays: dict[str, NDArray] = {
        "format_version": np.asarray(FORMAT_VERSION),
        "config_json": _text(agent.config.to_json()),
        "env_id": _text(agent.env_id or ""),
        "seed": np.asarray(agent.seed),
        "policy_theta": agent.theta,
        "policy_sizes": np.asarray(policy.net.sizes),
        "policy_activation": _text(policy.net.activation),
        "value_theta": agent.value.theta,
        "value_sizes": np.asarray(agent.value.net.sizes),
        "adam_m": agent.value.adam.m,
        "adam_v": agent.value.adam.v,
        "adam_t": np.asarray(agent.value.adam.t),
        "rng_state_json": _text(json.dumps(agent.rng.bit_generator.state)),
        "predict_rng_state_json": _text(json.dumps(agent._predict_rng.bit_generator.state)),
        "num_timesteps": np.asarray(agent.num_timesteps),
        "n_updates": np.asarray(agent.n_updates),
        "episode_returns": np.asarray(agent.episode_returns, dtype=np.float64),
        "episode_lengths": np.asarray(agent.episode_lengths, dtype=np.int64),
        "raw_obs": agent.collector.raw_obs,
        "ep_return": agent.collector.ep_return,
        "ep_length": agent.collector.ep_length,
        "metrics_keys": _text(json.dumps(sorted(agent.metrics[0]) if agent.metrics else [])),
    }
    if agent.metrics:
        keys = sorted(agent.metrics[0])
        arrays["metrics"] = np.array([[m[k] for k in keys] for m in agent.metrics])
    if isinstance(act_space, spaces.Box):
        arrays["action_kind"] = _text("box")
        arrays["action_low"] = np.asarray(act_space.low, dtype=np.float64)
        arrays["action_high"] = np.asarray(act_space.high, dtype=np.float64)
    else:
        arrays["action_kind"] = _text("discrete")
        arrays["action_nvec"] = np.asarray(policy.nvec, dtype=np.int64)
        arrays["action_start"] = np.asarray(policy.start, dtype=np.int64)
        arrays["action_multi"] = np.asarray(bool(policy.multi))
    if agent.obs_rms is not None:
        arrays.update(agent.obs_rms.state("obs_rms_"))
    if agent.reward_scaler is not None:
        arrays.update(agent.reward_scaler.state("ret_rms_"))
    snapshots = agent.venv.get_attr("trpo_snapshot")
    for i, snap in enumerate(snapshots):
        if snap is None:
            continue
        for key, value in snap.items():
            arrays[f"env{i}_{key}"] = _text(value) if isinstance(value, str) else np.asarray(value)
    atomic_savez(path, arrays)


# ------------------------------------------------------------------- load
def _read(path: str | os.PathLike) -> dict[str, NDArray]:
    with np.load(os.fspath(path), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    version = int(arrays.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise ValueError(f"path={os.fspath(path)!r}: unsupported checkpoint format {version}")
    return arrays


def load_agent(path: str | os.PathLike, env: Any = None):
    """Rebuild a :class:`rl_adapters.TRPO` from ``path``; training continues the same run."""
    from rl_adapters.agent import TRPO
    from rl_adapters.config import TRPOConfig

    a = _read(path)
    config = TRPOConfig.from_json(str(a["config_json"]))
    env_id = str(a["env_id"]) or None
    if env is None:
        if env_id is None:
            raise ValueError("env: the checkpoint has no env id; pass the env to load()")
        env = env_id
    seed = int(a["seed"])
    agent = TRPO(env, seed=seed, config=config)
    agent.theta = np.array(a["policy_theta"])
    agent.value.theta = np.array(a["value_theta"])
    agent.value.adam.m = np.array(a["adam_m"])
    agent.value.adam.v = np.array(a["adam_v"])
    agent.value.adam.t = int(a["adam_t"])
    agent.rng.bit_generator.state = json.loads(str(a["rng_state_json"]))
    agent._predict_rng.bit_generator.state = json.loads(str(a["predict_rng_state_json"]))
    agent.num_timesteps = int(a["num_timesteps"])
    agent.n_updates = int(a["n_updates"])
    agent.episode_returns.extend(a["episode_returns"].tolist())
    agent.episode_lengths.extend(int(x) for x in a["episode_lengths"])
    if "metrics" in a:
        keys = json.loads(str(a["metrics_keys"]))
        agent.metrics = [dict(zip(keys, map(float, row), strict=True)) for row in a["metrics"]]
    if agent.obs_rms is not None:
        agent.obs_rms.load_state(a, "obs_rms_")
    if agent.reward_scaler is not None:
        agent.reward_scaler.load_state(a, "ret_rms_")
    # Environments: restore each snapshot over a fresh reset; an env without a snapshot
    # starts a new episode from a seed derived from (seed, n_updates).
    n_envs = agent.venv.num_envs
    snaps = []
    for i in range(n_envs):
        prefix = f"env{i}_"
        snap = {k[len(prefix):]: v for k, v in a.items() if k.startswith(prefix)}
        snaps.append(snap or None)
    restart_seed = int(np.random.SeedSequence([seed, agent.n_updates]).generate_state(1)[0])
    obs, _ = agent.venv.reset(seed=restart_seed)
    raw_obs = np.asarray(obs, dtype=np.float64).copy()
    collector = agent.collector
    collector.ep_return[:] = 0.0
    collector.ep_length[:] = 0
    if all(s is not None for s in snaps) and a["raw_obs"].shape == raw_obs.shape:
        agent.venv.set_attr("trpo_snapshot", [_snapshot_values(s) for s in snaps])
        raw_obs = np.array(a["raw_obs"])
        collector.ep_return[:] = a["ep_return"]
        collector.ep_length[:] = a["ep_length"]
    collector.raw_obs = raw_obs
    return agent


def _snapshot_values(snap: dict[str, NDArray]) -> dict[str, Any]:
    return {k: (str(v) if v.dtype.kind == "U" else v) for k, v in snap.items()}


# ------------------------------------------------------------ NumPy-only policy
class NumpyPolicy:
    """A saved policy that acts with NumPy only (deterministic actions).

    Applies the saved observation normalization, the policy network, then the argmax
    (discrete) or the clipped mean (``Box``).

    Examples
    --------
    >>> # policy = load_policy("runs/quickstart/model.npz"); policy.act(obs)
    """

    def __init__(self, arrays: dict[str, NDArray]) -> None:
        config = json.loads(str(arrays["config_json"]))
        self.env_id = str(arrays["env_id"]) or None
        self.net = MLP(tuple(int(s) for s in arrays["policy_sizes"]),
                       str(arrays["policy_activation"]))
        self.theta = np.array(arrays["policy_theta"])
        self.kind = str(arrays["action_kind"])
        self.clip_obs = float(config["clip_obs"])
        self.obs_mean = arrays.get("obs_rms_mean")
        self.obs_var = arrays.get("obs_rms_var")
        if self.kind == "box":
            self.low, self.high = arrays["action_low"], arrays["action_high"]
        else:
            self.nvec = [int(k) for k in arrays["action_nvec"]]
            self.start = np.asarray(arrays["action_start"])
            self.multi = bool(arrays["action_multi"])

    def act(self, obs: Any) -> NDArray:
        """Deterministic action for one observation (or a batch of rows)."""
        x = np.asarray(obs, dtype=np.float64)
        single = x.ndim == 1
        x = x[None, :] if single else x
        if self.obs_mean is not None:
            x = np.clip((x - self.obs_mean) / np.sqrt(self.obs_var + 1e-8),
                        -self.clip_obs, self.clip_obs)
        out, _ = self.net.forward(self.theta[: self.net.n_params], x, keep_cache=False)
        if self.kind == "box":
            actions = np.clip(out, self.low, self.high)
        else:
            bounds = np.cumsum([0, *self.nvec])
            picks = np.stack([np.argmax(out[:, a:b], axis=1)
                              for a, b in itertools.pairwise(bounds)], axis=1)
            picks = picks + self.start
            actions = picks if self.multi else picks[:, 0]
        return actions[0] if single else actions


def load_policy(path: str | os.PathLike) -> NumpyPolicy:
    """Load only the acting part of a checkpoint (needs NumPy alone)."""
    return NumpyPolicy(_read(path))
