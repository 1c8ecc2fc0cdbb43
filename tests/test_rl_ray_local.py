"""The ``per_rollout`` observation statistics and the scale-out settings, without Ray.

With ``obs_norm_update="per_rollout"`` the policy acts with statistics frozen for the
rollout and the learner updates them from the gathered batch: what Ray workers do, and what
the local vector envs do too, so that a run does not depend on how its environments are
grouped (tests/test_rl_ray.py checks the Ray side).
"""

import copy
import functools
import itertools
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rl_adapters import TRPO
from rl_adapters.config import TRPOConfig
from rl_adapters.normalization import RunningMeanStd
from rl_adapters.policies import CategoricalPolicy, DiagGaussianPolicy
from rl_adapters.rollout import ROWWISE_CHUNK, Segment, act_rowwise, make_vector_env
from rl_adapters.sde import StateDependentGaussianPolicy, StateDependentNoise

SETTINGS = {"n_envs": 4, "n_steps": 64, "normalize_obs": True, "normalize_reward": True,
            "obs_norm_update": "per_rollout", "value_optimizer": "adam", "value_epochs": 2,
            "value_batch_size": 64}


def _trained(env, **overrides):
    agent = TRPO(env, seed=3, **{**SETTINGS, **overrides})
    try:
        agent.learn(3 * agent.config.batch_size)
        return agent.theta.tobytes(), agent.obs_rms.mean.tobytes(), agent.value.theta.tobytes()
    finally:
        agent.close()


@pytest.mark.slow
@pytest.mark.parametrize("env_id, overrides", [
    ("Pendulum-v1", {"use_sde": False}), ("CartPole-v1", {}),
    # gSDE: each env's exploration matrices from its own stream, redrawn every 5 steps.
    ("Pendulum-v1", {"use_sde": True, "sde_sample_freq": 5}),
])
def test_per_rollout_training_does_not_depend_on_the_grouping(env_id, overrides):
    reference = _trained(env_id, **overrides)
    assert _trained(env_id, vector_env="async", **overrides) == reference
    groups = [make_vector_env(env_id, 1, "sync"), make_vector_env(env_id, 3, "async")]
    assert _trained(groups, **overrides) == reference


def test_gsde_per_rollout_draws_matrices_from_each_envs_stream():
    # The matrices the collector holds after a rollout are the last draw of each env's own
    # stream: redrawn at steps 0, 5, 10 and 15 of a 16-step rollout (4 draws).
    agent = TRPO("Pendulum-v1", seed=2, **SETTINGS, use_sde=True, sde_sample_freq=5)
    try:
        collector = agent.collector
        streams = [copy.deepcopy(rng) for g in collector.groups for rng in g.rngs]
        collector.collect(agent.theta, 16)
        noise = collector.sde_noise
        assert (noise.n_steps, noise.n_draws) == (16, 4)
        for e, rng in enumerate(streams):
            draws = [agent.policy.draw_matrices(agent.theta, rng, 1)[0] for _ in range(4)]
            np.testing.assert_array_equal(noise.matrices[e], draws[-1])
            assert not np.array_equal(draws[0], draws[-1])
    finally:
        agent.close()


@st.composite
def _segments(draw):
    """A segment of T steps and E envs with random truncations, and split points."""
    T = draw(st.integers(1, 6))
    E = draw(st.integers(1, 7))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    flags = rng.random((T, E))
    terminated, truncated = flags < 0.2, (flags > 0.6) | (flags < 0.1)
    cuts = sorted(draw(st.sets(st.integers(1, E - 1), max_size=E - 1)) if E > 1 else [])
    return T, E, terminated, truncated, rng, cuts


@given(_segments())
@settings(max_examples=40, deadline=None)
def test_sparse_final_observations_concatenate_like_the_whole_batch(case):
    # A worker sends the final observations of truncated episodes only, as (step, env, row);
    # the learner's concatenation must give the whole batch's rows, in its order.
    T, E, terminated, truncated, rng, cuts = case
    obs_dim = 3
    dense = rng.standard_normal((T, E, obs_dim))

    def segment(lo, hi):
        ends = truncated[:, lo:hi] & ~terminated[:, lo:hi]
        steps, envs = np.nonzero(ends)
        return Segment(dense[:, lo:hi], np.zeros((T, hi - lo, 1)), np.zeros((T, hi - lo)),
                       np.zeros((T, hi - lo)), terminated[:, lo:hi], truncated[:, lo:hi],
                       steps, envs, dense[steps, lo + envs], dense[-1, lo:hi], 0.0, 0.0)

    whole = segment(0, E)
    bounds = [0, *cuts, E]
    joined = Segment.concatenate([segment(a, b) for a, b in itertools.pairwise(bounds)])
    for name in ("final_steps", "final_envs", "final_obs"):
        assert getattr(joined, name).tobytes() == getattr(whole, name).tobytes(), name
    expected = np.where((truncated & ~terminated)[..., None], dense, 0.0)
    np.testing.assert_array_equal(joined.dense_final_obs(), expected)


def test_collected_segments_carry_only_the_truncated_rows():
    # Pendulum-v1 truncates at step 200: a 210-step rollout from a reset has one final
    # observation per env, at step 199, and the payload holds just those rows.
    agent = TRPO("Pendulum-v1", seed=0, **SETTINGS)
    try:
        collector, segments = agent.collector, []
        finish = collector.finish_rollout
        collector.finish_rollout = lambda seg, frozen: segments.append(seg) or finish(seg, frozen)
        batch = collector.collect(agent.theta, 210)
        (seg,) = segments
        E = SETTINGS["n_envs"]
        assert seg.final_steps.tolist() == [199] * E
        assert seg.final_envs.tolist() == list(range(E))
        assert seg.final_obs.shape == (E, 3)
        # The learner rebuilds the dense (normalized) array the critic bootstraps from.
        assert np.count_nonzero(batch.final_obs.any(axis=2)) == E
        assert np.all(batch.final_obs[199].any(axis=1))
    finally:
        agent.close()


def test_per_rollout_acts_with_frozen_statistics_then_updates_them():
    agent = TRPO("Pendulum-v1", seed=1, **SETTINGS)
    collector = agent.collector
    segments = []
    finish = collector.finish_rollout
    collector.finish_rollout = lambda seg, frozen: segments.append(seg) or finish(seg, frozen)
    try:
        agent.learn(agent.config.batch_size)  # statistics now hold the first rollout
        before = RunningMeanStd((3,))
        before.load_state_dict({k: np.copy(v) for k, v in agent.obs_rms.state_dict().items()})
        batch = collector.collect(agent.theta, 16)
        raw = segments[-1].obs
        # The policy saw every observation normalized with the statistics of before the
        # rollout ...
        np.testing.assert_array_equal(batch.obs, before.normalize(raw, agent.config.clip_obs))
        # ... and the statistics took in exactly the rollout's observations afterwards.
        before.update(raw.reshape(-1, 3))
        np.testing.assert_array_equal(agent.obs_rms.mean, before.mean)
        np.testing.assert_array_equal(agent.obs_rms.var, before.var)
    finally:
        agent.close()


def _rowwise_actor(agent, theta, rng, n):
    """Noise for ``n`` rows and the acting path the collector takes with it.

    Plain policies: white noise and :func:`act_rowwise`.  gSDE: one exploration matrix per
    row, acted on by :meth:`StateDependentNoise.act` in chunks of ``ROWWISE_CHUNK`` (what
    ``collect_segment`` calls), between two draws so that the rows use the given matrices.
    """
    policy = agent.policy
    if not isinstance(policy, StateDependentGaussianPolicy):
        return policy.draw_noise(rng, (n,)), functools.partial(act_rowwise, policy, theta)
    matrices = policy.draw_matrices(theta, rng, n)

    def act(obs, rows_matrices, actions_out):
        noise = StateDependentNoise(policy, obs.shape[0], sample_freq=-1)
        noise.load_state_dict({"matrices": rows_matrices, "n_steps": np.int64(1),
                               "n_draws": np.int64(1), "sample_freq": np.int64(-1)})
        rngs = [np.random.default_rng(e) for e in range(obs.shape[0])]
        result = noise.act(theta, obs, rngs, actions_out, chunk=ROWWISE_CHUNK)
        assert noise.n_draws == 1  # acted with the given matrices, drew none
        return result

    return matrices, act


@pytest.mark.parametrize(("policy_env", "overrides", "policy_class"), [
    ("Pendulum-v1", {"use_sde": False}, DiagGaussianPolicy),
    ("Pendulum-v1", {"use_sde": True}, StateDependentGaussianPolicy),
    ("CartPole-v1", {}, CategoricalPolicy),
], ids=["Pendulum-v1-gaussian", "Pendulum-v1-gsde", "CartPole-v1"])
def test_each_row_acts_the_same_in_any_batch(policy_env, overrides, policy_class):
    # What makes a worker's slice give the rows of the whole batch: row-wise forward passes.
    agent = TRPO(policy_env, seed=0, n_envs=2, **overrides)
    policy, rng = agent.policy, np.random.default_rng(1)
    assert type(policy) is policy_class
    theta = agent.theta + 0.3 * rng.standard_normal(agent.theta.shape)
    obs = rng.standard_normal((21, agent.policy.net.sizes_array[0]))
    noise, act = _rowwise_actor(agent, theta, rng, 21)
    shape = (21, getattr(policy, "act_dim", 1))
    dtype = np.float64 if hasattr(policy, "act_dim") else np.int64
    whole_actions = np.empty(shape, dtype)
    whole = act(obs, noise, whole_actions)
    for a, b in ((0, 1), (3, 5), (5, 17), (17, 21)):
        part_actions = np.empty((b - a, shape[1]), dtype)
        env_actions, logp = act(obs[a:b], noise[a:b], part_actions)
        assert env_actions.tobytes() == whole[0][a:b].tobytes()
        assert logp.tobytes() == whole[1][a:b].tobytes()
        assert part_actions.tobytes() == whole_actions[a:b].tobytes()
    agent.close()


def test_the_agent_checks_the_scale_out_settings_before_building_anything():
    assert TRPOConfig.for_env("CartPole-v1", vector_env="ray").obs_norm_update == "per_rollout"
    assert TRPOConfig.for_env("CartPole-v1").obs_norm_update == "per_step"
    with pytest.raises(ValueError, match="obs_norm_update='per_step': vector_env='ray' needs"):
        TRPO("CartPole-v1", vector_env="ray", obs_norm_update="per_step")
    with pytest.raises(ValueError, match="n_workers=2: more than one worker needs"):
        TRPO("CartPole-v1", n_workers=2)
    with pytest.raises(ValueError, match="n_workers=3: at most n_envs=2"):
        TRPO("CartPole-v1", vector_env="ray", n_envs=2, n_workers=3)
    with pytest.raises(ValueError, match="obs_norm_update='sometimes'"):
        TRPOConfig(obs_norm_update="sometimes")


def test_ray_is_imported_only_when_asked_for():
    code = ("import sys; from rl_adapters import TRPO; "
            "a = TRPO('CartPole-v1', seed=0, n_steps=8, obs_norm_update='per_rollout'); "
            "a.learn(16); a.close(); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip() == "False"
