"""gSDE wired into the agent: config, collector, every vector-env mode, checkpoints."""

import numpy as np
import pytest

from rl_adapters import TRPO, TRPOConfig
from rl_adapters.checkpoint import load_policy
from rl_adapters.rollout import make_vector_env
from rl_adapters.sde import StateDependentGaussianPolicy, StateDependentNoise

SDE = {"use_sde": True, "sde_sample_freq": 4, "n_steps": 16, "n_envs": 2,
       "value_optimizer": "adam", "value_epochs": 1, "value_batch_size": 32,
       "normalize_obs": True, "normalize_reward": True}


def _state(agent):
    return agent.theta.copy(), agent.value.theta.copy(), agent.collector.sde_noise.matrices.copy()


def _assert_same(a, b):
    for x, y in zip(_state(a), _state(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_use_sde_builds_the_gsde_policy_and_noise():
    agent = TRPO("Pendulum-v1", seed=0, **SDE, log_std_init=-1.0, sde_full_std=False,
                 sde_use_expln=True)
    policy, noise = agent.policy, agent.collector.sde_noise
    assert isinstance(policy, StateDependentGaussianPolicy)
    assert (policy.full_std, policy.use_expln, policy.log_std_init) == (False, True, -1.0)
    assert isinstance(noise, StateDependentNoise)
    assert (noise.n_envs, noise.sample_freq) == (2, 4)
    np.testing.assert_array_equal(policy.log_std(agent.theta), -1.0)
    assert TRPO("Pendulum-v1", seed=0, use_sde=False).collector.sde_noise is None
    assert TRPO("MountainCarContinuous-v0", seed=0).collector.sde_noise is None


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1"])
def test_gsde_on_a_discrete_action_space_is_one_clear_error(env_id):
    with pytest.raises(ValueError, match=r"config use_sde=True: .*Discrete.*set use_sde=False"):
        TRPO(env_id, seed=0, use_sde=True)


def test_a_config_that_does_not_fit_its_setup_is_a_config_error():
    # What TRPO.load turns into a CheckpointError: a valid config that does not fit the env
    # or the collection mode. An invalid field value stays a plain ValueError.
    from rl_adapters import ConfigError, TRPOConfig

    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ConfigError, match=r"config use_sde=True: "):
        TRPO("CartPole-v1", seed=0, use_sde=True)
    with pytest.raises(ConfigError, match=r"config n_workers=2: "):
        TRPO("CartPole-v1", n_workers=2)
    with pytest.raises(ValueError, match=r"config max_kl=") as err:
        TRPOConfig(max_kl=-1.0)
    assert not isinstance(err.value, ConfigError)


@pytest.mark.parametrize("freq, draws_per_rollout", [(-1, 1), (0, 1), (4, 4), (5, 4), (16, 1)])
def test_matrices_are_drawn_at_the_rollout_start_and_every_sample_freq_steps(
        freq, draws_per_rollout):
    agent = TRPO("Pendulum-v1", seed=1, **{**SDE, "sde_sample_freq": freq})
    agent.learn(2 * agent.config.batch_size)
    assert agent.collector.sde_noise.n_draws == 2 * draws_per_rollout


def test_the_stored_log_probs_are_the_marginal_policys():
    agent = TRPO("Pendulum-v1", seed=2, **SDE)
    batch = agent.collector.collect(agent.theta, 16)
    obs = batch.obs.reshape(-1, batch.obs.shape[-1])
    out, _ = agent.policy.outputs(agent.theta, obs)
    logp = agent.policy.log_prob(agent.theta, out, batch.actions.reshape(len(obs), -1))
    np.testing.assert_allclose(batch.log_probs.reshape(-1), logp, rtol=1e-10, atol=1e-10)


def test_the_noise_is_state_dependent_and_fixed_between_draws():
    # sample_freq=-1: one matrix per env for the whole rollout, so the action minus the
    # mean is matrix^T phi(s): linear in the features with the same matrix at every step.
    agent = TRPO("Pendulum-v1", seed=3, **{**SDE, "sde_sample_freq": -1, "normalize_obs": False})
    batch = agent.collector.collect(agent.theta, 16)
    policy, noise = agent.policy, agent.collector.sde_noise
    for e in range(2):
        out, cache = policy.net.forward(agent.theta[: policy.net.n_params], batch.obs[:, e],
                                        keep_cache=True)
        phi = cache.inputs[-1]
        np.testing.assert_allclose(batch.actions[:, e] - out, phi @ noise.matrices[e],
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", ["gym_sync", "async"])
def test_every_vector_env_mode_trains_the_same(mode):
    steps = 2 * SDE["n_envs"] * SDE["n_steps"]
    ref = TRPO("Pendulum-v1", seed=4, **SDE).learn(steps)
    other = TRPO("Pendulum-v1", seed=4, **SDE, vector_env=mode)
    try:
        other.learn(steps)
        _assert_same(other, ref)
    finally:
        other.close()


def test_grouping_of_the_environments_does_not_change_gsde_training():
    config = {**SDE, "n_envs": 4}
    steps = 2 * config["n_envs"] * config["n_steps"]
    one = TRPO("Pendulum-v1", seed=5, **config).learn(steps)
    two = TRPO([make_vector_env("Pendulum-v1", 2) for _ in range(2)], seed=5, **config)
    two.learn(steps)
    _assert_same(two, one)


def test_a_gsde_checkpoint_resumes_bitwise(tmp_path):
    steps = SDE["n_envs"] * SDE["n_steps"]
    straight = TRPO("Pendulum-v1", seed=6, **SDE).learn(3 * steps)
    first = TRPO("Pendulum-v1", seed=6, **SDE).learn(2 * steps)
    first.save(str(tmp_path / "ckpt.npz"))
    resumed = TRPO.load(str(tmp_path / "ckpt.npz"))
    assert resumed.collector.sde_noise.n_draws == first.collector.sde_noise.n_draws
    resumed.learn(steps)
    _assert_same(resumed, straight)
    assert resumed.collector.sde_noise.n_draws == straight.collector.sde_noise.n_draws
    # The NumPy-only policy of the checkpoint acts like the agent (the mean, clipped).
    obs = np.random.default_rng(0).standard_normal((5, 3)) * 3
    np.testing.assert_allclose(load_policy(str(tmp_path / "ckpt.npz")).act(obs),
                               first.predict(obs, deterministic=True), rtol=1e-12, atol=1e-12)


def test_from_sb3_maps_the_zoo_pendulum_gsde_entry():
    cfg = TRPOConfig.from_sb3("Pendulum-v1", n_envs=2, n_steps=1024, gamma=0.9,
                              n_critic_updates=15, use_sde=True, sde_sample_freq=4,
                              policy_kwargs={"log_std_init": -2, "full_std": False,
                                             "use_expln": True})
    assert (cfg.use_sde, cfg.sde_sample_freq, cfg.log_std_init) == (True, 4, -2.0)
    assert (cfg.sde_full_std, cfg.sde_use_expln) == (False, True)
    agent = TRPO("Pendulum-v1", seed=0, config=cfg)
    assert isinstance(agent.policy, StateDependentGaussianPolicy)


@pytest.mark.parametrize("overrides, error, needle", [
    ({"sde_sample_freq": -2}, ValueError, "config sde_sample_freq=-2: must be >= -1"),
    ({"sde_sample_freq": 1.5}, TypeError, "config sde_sample_freq=1.5: expected int"),
    ({"use_sde": 1}, TypeError, "config use_sde=1: expected bool"),
    ({"sde_full_std": "yes"}, TypeError, "config sde_full_std='yes': expected bool"),
])
def test_bad_gsde_settings_name_the_field(overrides, error, needle):
    with pytest.raises(error, match=needle):
        TRPOConfig.for_env("Pendulum-v1", **overrides)
