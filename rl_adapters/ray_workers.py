"""Scale-out on Ray: rollout workers as actors, and a data-parallel Fisher product.

Rollouts (``vector_env="ray"``, ``n_workers=K``).  The ``n_envs`` environments are split
into ``K`` contiguous slices; worker ``k`` is a Ray actor that builds its slice from the
env id (or a picklable factory) with the per-env random streams
``SeedSequence(seed).spawn(n_envs)[i]`` of its environments (:mod:`rl_adapters.seeding`).
Once per update the learner puts the flat policy parameters and the frozen observation
statistics (:class:`~rl_adapters.rollout.FrozenObsNorm`) in the object store; each worker
steps its environments for ``n_steps`` steps, acting with the policy itself row by row
(:func:`~rl_adapters.rollout.act_rowwise`), and returns its raw transitions
(:class:`~rl_adapters.rollout.Segment`) with the state of its streams and environments.
The learner concatenates the segments in env order and finishes the rollout
(:meth:`~rl_adapters.rollout.Collector.finish_rollout`: episode bookkeeping, reward
scaling, normalization, the statistics' update).  Nothing the learner computes depends on
``K``, so training is bitwise the same for every ``K`` and for the local vector envs with
``obs_norm_update="per_rollout"``.  With gSDE (``use_sde``) each worker draws its
environments' exploration matrices from their streams, at the rollout's first step and
every ``sde_sample_freq`` steps, as the local collector does, and returns them with the
segment: the learner's copy is what checkpoints hold.

Faults.  The learner keeps every worker's state at the start of the rollout (generator
states, environment snapshots, current observations).  A worker that dies (its actor
killed, its process gone) is replaced by a new actor loaded with that state, and the
rollout is asked again: the same streams give the same transitions, so the run stays
identical to one without the fault (for environments with a
:class:`~rl_adapters.rollout.SnapshotWrapper` snapshot: classic control and MuJoCo).

Fisher products (``fvp_workers=K``).  :class:`FisherShards` keeps ``K`` actors; per update
each receives a contiguous shard of the observations and caches its forward pass; inside
CG each answers ``(n_k / N) J_k^T M_k J_k v`` and the learner sums the ``K`` answers in a
fixed order (baselines' ``trpo_mpi`` allreduced its Fisher products the same way).  The
sum equals the single-process product to float rounding.

Ray is imported here only, and only when one of these is used.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import socket
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rl_adapters.policies import FisherOperator
from rl_adapters.rollout import (
    Collector,
    EnvGroup,
    FrozenObsNorm,
    LeanSyncVectorEnv,
    Segment,
    SnapshotWrapper,
    collect_segment,
    make_env_fn,
)
from rl_adapters.sde import StateDependentNoise
from rl_adapters.seeding import env_generators
from rl_adapters.validation import EnvOutputError

__all__ = ["FisherShards", "RayCollector", "RolloutWorker", "connect", "env_slices",
           "env_spaces"]

#: Replacements of one worker within one call before the learner gives up.
MAX_RESTARTS = 3


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("vector_env='ray' and fvp_workers > 1 need Ray: "
                          "pip install 'trustregion-toolkit[ray]'") from None
    return ray


def connect(address: str = "") -> None:
    """Join the Ray cluster at ``address`` ('' starts a local one) unless already joined.

    Raises
    ------
    ConnectionError
        In one line, when nothing answers at ``address``.
    """
    ray = _ray()
    if ray.is_initialized():
        return
    if address and address != "auto" and "://" not in address:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address {address!r}: expected HOST:PORT, 'auto' or "
                             "ray://HOST:PORT")
        try:
            # Ray retries an unreachable address for a minute; a plain TCP probe says it at once.
            with socket.create_connection((host, int(port)), timeout=5.0):
                pass
        except OSError as exc:
            raise ConnectionError(
                f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start "
                "one there with 'ray start --head' or leave the address out to run a local "
                "Ray") from None
    kwargs: dict[str, Any] = {"address": address or None, "log_to_driver": False}
    if not address:
        kwargs["include_dashboard"] = False
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConnectionError(f"cannot join the Ray cluster at {address or 'local'}: "
                              f"{first}") from None


def _actor_class(cls, n_actors: int):
    """``cls`` as a Ray actor class: one CPU each, spread over the nodes.

    Less than a CPU each when fewer CPUs are free than actors are asked for (a laptop):
    an actor waiting for a CPU that never frees would hang the learner.
    """
    ray = _ray()
    cpus = max(0.0, float(ray.available_resources().get("CPU", 0.0)))
    # Ray counts resources in units of 1e-4: round down, so that n_actors shares fit.
    share = min(1.0, math.floor(cpus / n_actors * 1e4) / 1e4)
    return ray.remote(cls).options(num_cpus=share, scheduling_strategy="SPREAD")


def _env_factory(env: Any):
    """A thunk building one environment wrapped in :class:`SnapshotWrapper`."""
    if isinstance(env, str):
        return make_env_fn(env)
    if callable(env):
        def thunk():
            made = env()
            return made if isinstance(made, SnapshotWrapper) else SnapshotWrapper(made)

        return thunk
    raise TypeError(f"env={env!r}: vector_env='ray' needs an environment id or a picklable "
                    "factory (a callable returning a gymnasium.Env)")


def env_spaces(env: Any):
    """``(observation_space, action_space)`` of the id or factory ``env`` (one env, closed)."""
    made = _env_factory(env)()
    try:
        return made.observation_space, made.action_space
    finally:
        made.close()


def env_slices(n_envs: int, n_workers: int) -> list[slice]:
    """Contiguous slices of the environments, the first ``n_envs % n_workers`` one longer.

    Examples
    --------
    >>> env_slices(5, 2)
    [slice(0, 3, None), slice(3, 5, None)]
    """
    bounds = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(n_envs), n_workers)])
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


# ------------------------------------------------------------------- the worker
class RolloutWorker:
    """Environments ``[start, stop)`` of ``n_envs`` (the body of the Ray actor).

    Every method that changes the worker's state returns it (:meth:`EnvGroup.state_dict`
    and the current raw observations), so the learner always holds what a replacement
    needs.
    """

    def __init__(self, env: Any, start: int, stop: int, seed: int, policy,
                 sde_sample_freq: int | None = None) -> None:
        fns = [_env_factory(env) for _ in range(stop - start)]
        rngs = env_generators(seed, stop)[start:stop]
        self.group = EnvGroup(LeanSyncVectorEnv(fns), rngs)
        self.policy = policy
        # gSDE: the exploration matrices of this slice, drawn from its environments' streams.
        self.sde = (None if sde_sample_freq is None else
                    StateDependentNoise(policy, stop - start, sde_sample_freq))
        self.raw_obs: NDArray | None = None
        self.start = start
        self.env_name = env if isinstance(env, str) else getattr(env, "__name__", "custom env")

    def pid(self) -> int:
        return os.getpid()

    def _state(self) -> tuple[dict[str, Any], NDArray]:
        assert self.raw_obs is not None
        return self.group.state_dict(), self.raw_obs

    def reset(self):
        """New episodes, with reset seeds from the streams; the state."""
        self.raw_obs = self.group.reset()
        return self._state()

    def load(self, state: dict[str, Any], raw_obs: NDArray | None):
        """Load ``state``; continue the episodes if it has every snapshot, else reset."""
        if self.raw_obs is None:
            self.group.reset()  # Gymnasium's order checks want a reset before any step
        self.group.load_state_dict(state)
        if raw_obs is not None and len(state.get("snapshots", {})) == self.group.n_envs:
            self.raw_obs = np.array(raw_obs, dtype=np.float64)
        else:
            self.raw_obs = self.group.reset()
        return self._state()

    def rollout(self, theta: NDArray, frozen: FrozenObsNorm | None, n_steps: int):
        """``n_steps`` steps of the slice.

        Returns the raw :class:`Segment`, the state after (group state, raw observations)
        and, with gSDE, ``(matrices, n_draws)``: the slice's exploration matrices at the end
        and the number of draws in the rollout (else None).
        """
        assert self.raw_obs is not None, "reset() or load() first"
        group, sde = self.group, self.sde

        def step(actions):
            group.send(actions)
            obs, reward, terminated, truncated, info = group.receive()
            return obs, reward, terminated, truncated, info.get("final_obs")

        if sde is None:
            noise = group.draw_noise(self.policy, n_steps)
            segment = collect_segment(step, noise, self.policy, theta, frozen, self.raw_obs,
                                      n_steps, env_name=self.env_name, first_env=self.start)
            exploration = None
        else:
            draws = sde.n_draws
            sde.begin_rollout()
            segment = collect_segment(step, None, self.policy, theta, frozen, self.raw_obs,
                                      n_steps, env_name=self.env_name, first_env=self.start,
                                      sde=sde, rngs=group.rngs)
            exploration = (sde.matrices.copy(), sde.n_draws - draws)
        self.raw_obs = segment.last_obs
        return segment, *self._state(), exploration

    def close(self) -> None:
        self.group.close()


class RayCollector(Collector):
    """A :class:`~rl_adapters.rollout.Collector` whose environments run on Ray actors.

    Built by :class:`~rl_adapters.TRPO` for ``vector_env="ray"``; same protocol
    (``reset``, ``collect``, ``state_dict``, ``load_state_dict``, ``close``) and the same
    checkpoint format as the local collector, so a run saved under one loads under the
    other.  ``n_restarts`` counts the workers replaced after a fault.
    """

    def __init__(self, env: Any, config, seed: int, policy, obs_rms, reward_scaler) -> None:
        # gSDE: the workers draw the exploration matrices; this copy of them (gathered after
        # each rollout) is what the checkpoint holds, as for the local collector.
        sde_noise = (StateDependentNoise(policy, config.n_envs, config.sde_sample_freq)
                     if config.use_sde else None)
        super().__init__([], policy, obs_rms, reward_scaler, config.clip_obs, "per_rollout",
                         sde_noise=sde_noise)
        self._rayref = _ray()
        connect()  # a local Ray, unless the caller joined a cluster (connect(address))
        self.env = env
        self.seed = int(seed)
        self.n_envs = int(config.n_envs)
        self._slices = env_slices(self.n_envs, config.n_workers)
        self.ep_return = np.zeros(self.n_envs)
        self.ep_length = np.zeros(self.n_envs, dtype=np.int64)
        self._actor_class = _actor_class(RolloutWorker, len(self._slices))
        self._actors = [self._new_actor(k) for k in range(len(self._slices))]
        # Each worker's (group state, raw observations) at the start of the next call.
        self._states: list[tuple[dict[str, Any], NDArray] | None] = [None] * len(self._actors)
        self.n_restarts = 0

    @property
    def n_workers(self) -> int:
        return len(self._actors)

    def _new_actor(self, k: int):
        sl = self._slices[k]
        freq = None if self.sde_noise is None else self.sde_noise.sample_freq
        return self._actor_class.remote(self.env, sl.start, sl.stop, self.seed, self.policy,
                                        freq)

    def worker_pids(self) -> list[int]:
        """The process ids of the worker actors (for tests and monitoring)."""
        return list(self._rayref.get([a.pid.remote() for a in self._actors]))

    # ---------------------------------------------------------- calls with restarts
    def _submit(self, k: int, method: str, *args):
        return getattr(self._actors[k], method).remote(*args)

    def _restart(self, k: int) -> None:
        ray = self._rayref
        try:
            ray.kill(self._actors[k], no_restart=True)
        except Exception:  # already gone
            pass
        self._actors[k] = self._new_actor(k)
        self.n_restarts += 1
        saved = self._states[k]
        if saved is not None:
            self._get(k, self._submit(k, "load", *saved), "load", saved)

    def _get(self, k: int, ref, method: str, args: tuple):
        """``ray.get(ref)``; if worker ``k`` died, replace it from its saved state and retry."""
        ray = self._rayref
        for attempt in range(MAX_RESTARTS + 1):
            try:
                return ray.get(ref)
            except EnvOutputError as exc:  # Ray's wrapper subclasses it: re-raise it bare
                raise EnvOutputError(exc.cause if hasattr(exc, "cause") else exc) from None
            except ray.exceptions.RayActorError as exc:
                if attempt == MAX_RESTARTS:
                    sl = self._slices[k]
                    first = (str(exc).strip().splitlines() or [""])[0]
                    raise RuntimeError(
                        f"Ray worker {k} (environments {sl.start}..{sl.stop - 1}) died "
                        f"{MAX_RESTARTS + 1} times in a row during {method}: {first}") from None
                self._restart(k)
                ref = self._submit(k, method, *args)
        raise AssertionError("unreachable")  # pragma: no cover

    def _call_all(self, method: str, args_per_worker: list[tuple]) -> list:
        refs = [self._submit(k, method, *args) for k, args in enumerate(args_per_worker)]
        return [self._get(k, ref, method, args)
                for k, (ref, args) in enumerate(zip(refs, args_per_worker, strict=True))]

    # ------------------------------------------------------------- the protocol
    def reset(self) -> None:
        results = self._call_all("reset", [()] * self.n_workers)
        self._states = list(results)
        self.raw_obs = np.concatenate([raw for _, raw in results])
        self.ep_return[:] = 0.0
        self.ep_length[:] = 0

    def collect(self, theta: NDArray, n_steps: int):
        assert self.raw_obs is not None, "call reset() first"
        ray = self._rayref
        frozen = self.frozen_norm()
        # One broadcast per update: the workers read the same objects from the store.
        theta_ref, frozen_ref = ray.put(np.asarray(theta)), ray.put(frozen)
        results = self._call_all("rollout", [(theta_ref, frozen_ref, int(n_steps))]
                                 * self.n_workers)
        self._states = [(state, raw) for _, state, raw, _ in results]
        if self.sde_noise is not None:
            for (*_, (matrices, _)), sl in zip(results, self._slices, strict=True):
                self.sde_noise.matrices[sl] = matrices
            self.sde_noise.n_steps = int(n_steps)
            self.sde_noise.n_draws += results[0][-1][1]  # the same number on every worker
        segment = Segment.concatenate([seg for seg, *_ in results])
        return self.finish_rollout(segment, frozen)

    def state_dict(self) -> dict[str, Any]:
        """Same format as :meth:`Collector.state_dict` (per global env index)."""
        assert self.raw_obs is not None, "call reset() first"
        state: dict[str, Any] = {"raw_obs": self.raw_obs, "ep_return": self.ep_return,
                                 "ep_length": self.ep_length, "rngs": {}, "snapshots": {}}
        for saved, sl in zip(self._states, self._slices, strict=True):
            assert saved is not None
            for key in ("rngs", "snapshots"):
                for j, value in saved[0].get(key, {}).items():
                    # a copy: the saved states restart a failed worker, and must not change
                    # with what a caller does to the dict it was given
                    state[key][str(sl.start + int(j))] = copy.deepcopy(value)
        if not state["snapshots"]:
            del state["snapshots"]
        if self.sde_noise is not None:
            state["sde_noise"] = self.sde_noise.state_dict()
        return state

    # The environments live on the workers: their saved streams are checked against fresh
    # generators of the same kind, and their snapshots against the ones the workers
    # returned with their last state (a damaged one would otherwise reach the simulator).
    def _generator_templates(self) -> list[np.random.Generator]:
        return env_generators(0, self.n_envs)

    def _current_snapshots(self) -> list[dict | None]:
        current: list[dict | None] = [None] * self.n_envs
        for saved, sl in zip(self._states, self._slices, strict=True):
            for j, snap in ({} if saved is None else saved[0].get("snapshots", {})).items():
                current[sl.start + int(j)] = snap
        return current

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.sde_noise is not None:
            self.sde_noise.load_state_dict(state["sde_noise"])
        snaps = state.get("snapshots", {})
        raw_obs = np.asarray(state["raw_obs"], dtype=np.float64)
        resume = len(snaps) == self.n_envs and raw_obs.shape == np.shape(self.raw_obs)
        args = []
        for sl in self._slices:
            envs = range(sl.start, sl.stop)
            local: dict[str, Any] = {"rngs": {str(j): state["rngs"][str(e)]
                                              for j, e in enumerate(envs)}}
            if resume:
                local["snapshots"] = {str(j): snaps[str(e)] for j, e in enumerate(envs)}
            args.append((local, raw_obs[sl] if resume else None))
        results = self._call_all("load", args)
        self._states = list(results)
        self.raw_obs = np.concatenate([raw for _, raw in results])
        if resume:
            self.ep_return[:] = state["ep_return"]
            self.ep_length[:] = state["ep_length"]
        else:
            self.ep_return[:] = 0.0
            self.ep_length[:] = 0

    def close(self) -> None:
        ray = self._rayref
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass
        self._actors = []


# ----------------------------------------------------------- Fisher products
class FisherShard:
    """One shard of the batch and its cached forward pass (the body of the Ray actor)."""

    def __init__(self, policy) -> None:
        self.policy = policy
        self.operator: FisherOperator | None = None
        self.weight = 1.0

    def prepare(self, theta: NDArray, obs: NDArray, dtype: str, weight: float) -> int:
        out, cache = self.policy.outputs(theta, obs, keep_cache=True)
        self.operator = FisherOperator(self.policy, theta, cache, out, np.dtype(dtype))
        self.weight = float(weight)
        return int(obs.shape[0])

    def fvp(self, v: NDArray) -> NDArray:
        assert self.operator is not None, "prepare() first"
        return self.weight * self.operator(v)


class FisherShards:
    """``K`` Ray actors answering Fisher-vector products for contiguous shards of a batch.

    :meth:`operator` sends each actor its shard once per update and returns the callable
    ``v -> sum_k (n_k / N) F_k v = F v`` for CG.  A shard whose actor died is rebuilt from
    the shard the learner still holds, and the product asked again.
    """

    def __init__(self, policy, n_shards: int) -> None:
        self._rayref = _ray()
        connect()
        self.policy = policy
        self._actor_class = _actor_class(FisherShard, n_shards)
        self._actors = [self._actor_class.remote(policy) for _ in range(n_shards)]
        self._prepared: list[tuple] = []
        self.n_restarts = 0

    def _retry(self, k: int, method: str, *args):
        ray = self._rayref
        for attempt in range(MAX_RESTARTS + 1):
            try:
                return ray.get(getattr(self._actors[k], method).remote(*args))
            except ray.exceptions.RayActorError:
                if attempt == MAX_RESTARTS:
                    raise RuntimeError(f"Fisher shard {k} died {MAX_RESTARTS + 1} times in a "
                                       "row") from None
                self._actors[k] = self._actor_class.remote(self.policy)
                self.n_restarts += 1
                if method != "prepare":
                    ray.get(self._actors[k].prepare.remote(*self._prepared[k]))
        raise AssertionError("unreachable")  # pragma: no cover

    def operator(self, theta: NDArray, obs: NDArray, dtype: Any = np.float32):
        """The summed Fisher-vector product on ``obs`` at ``theta``."""
        ray = self._rayref
        n = obs.shape[0]
        if n < len(self._actors):
            raise ValueError(f"fvp_workers={len(self._actors)}: the batch for Fisher products "
                             f"has only {n} rows")
        theta_ref = ray.put(np.asarray(theta))
        dtype_name = np.dtype(dtype).name
        shards = np.array_split(np.arange(n), len(self._actors))
        self._prepared = [(theta_ref, np.ascontiguousarray(obs[idx]), dtype_name, len(idx) / n)
                          for idx in shards]
        refs = [a.prepare.remote(*args)
                for a, args in zip(self._actors, self._prepared, strict=True)]
        for k, ref in enumerate(refs):
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                self._retry(k, "prepare", *self._prepared[k])
        return _ShardedProduct(self)

    def close(self) -> None:
        for actor in self._actors:
            try:
                self._rayref.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass
        self._actors = []


class _ShardedProduct:
    """``v -> F v`` summed over the shards, in shard order (a deterministic sum)."""

    def __init__(self, shards: FisherShards) -> None:
        self.shards = shards
        self.n_calls = 0

    def __call__(self, v: NDArray) -> NDArray:
        self.n_calls += 1
        pool = self.shards
        ray = pool._rayref
        v_ref = ray.put(np.asarray(v, dtype=np.float64))
        refs = [a.fvp.remote(v_ref) for a in pool._actors]
        total = None
        for k, ref in enumerate(refs):
            try:
                part = ray.get(ref)
            except ray.exceptions.RayActorError:
                part = pool._retry(k, "fvp", v_ref)
            total = part.copy() if total is None else total + part
        assert total is not None
        return total
