"""The translation of SB3-contrib's TRPO hyperparameters to ours (``TRPOConfig.from_sb3``).

SB3-contrib's TRPO measures ``kl_divergence(new, old).mean()`` where, for a diagonal
Gaussian, the KL is PyTorch's per-dimension ``Normal`` KL: its "mean KL" is the joint KL
divided by the action dimension ``D`` and its Fisher is ``F / D``.  These tests pin down that
``max_kl = D * target_kl`` and ``cg_damping = D * cg_damping`` reproduce its steps exactly,
that ``from_sb3`` applies that translation with D read from the env, that every SB3 argument
lands in its field, and that an argument without an equivalent is refused by name.
"""

import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from rl_adapters import TRPOConfig
from rl_adapters.config import SB3_TRPO_DEFAULTS, sb3_kl_scale
from rl_adapters.policies import DiagGaussianPolicy
from trustregion import natural_gradient_step


class _BoxActionEnv(gym.Env):
    """A one-step env with ``Box(act_dim)`` actions (D > 1 without MuJoCo); counts closes."""

    observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
    closed = 0

    def __init__(self, act_dim: int = 3):
        self.action_space = spaces.Box(-1.0, 1.0, (act_dim,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        return np.zeros(4, np.float32), 0.0, True, False, {}

    def close(self):
        type(self).closed += 1


BOX3 = "SB3ConventionBox3-v0"
if BOX3 not in gym.registry:
    gym.register(BOX3, entry_point=_BoxActionEnv, kwargs={"act_dim": 3})


def _gaussian_setup(seed=0, n=9, act_dim=3):
    policy = DiagGaussianPolicy(4, act_dim, (5,), log_std_init=-0.4)
    rng = np.random.default_rng(seed)
    theta = policy.init_params(rng) + 0.3 * rng.standard_normal(policy.n_params)
    obs = rng.standard_normal((n, 4))
    return policy, theta, obs, rng


def _per_dimension_mean_kl(policy, theta_old, obs, theta):
    """SB3-contrib's quantity: Normal KL per (sample, action dimension), averaged over both."""
    mu_o, _ = policy.outputs(theta_old, obs)
    mu, _ = policy.outputs(theta, obs)
    ls_o, ls = policy.log_std(theta_old), policy.log_std(theta)
    # KL(new || old) per dimension, as torch.distributions.kl_divergence(Normal, Normal).
    var_ratio = np.exp(2 * (ls - ls_o))
    t1 = ((mu - mu_o) / np.exp(ls_o)) ** 2
    return float(np.mean(0.5 * (var_ratio + t1 - 1 - np.log(var_ratio))))


def _dense(fvp, n):
    return np.column_stack([fvp(e) for e in np.eye(n)])


def test_per_dimension_mean_kl_has_hessian_fisher_over_action_dim():
    policy, theta, obs, _ = _gaussian_setup()
    fisher = _dense(policy.fisher_operator(theta, obs), policy.n_params)
    h = 1e-4
    k = policy.net.n_params
    # A few second differences, including every log-std coordinate (where the factor shows).
    for i in [0, k // 2, k - 1, k, k + 1, k + 2]:
        e = np.zeros(policy.n_params)
        e[i] = h
        second = (_per_dimension_mean_kl(policy, theta, obs, theta + e)
                  - 2 * _per_dimension_mean_kl(policy, theta, obs, theta)
                  + _per_dimension_mean_kl(policy, theta, obs, theta - e)) / h**2
        assert second == pytest.approx(fisher[i, i] / policy.act_dim, rel=1e-5, abs=1e-8)
    # Our Fisher is the joint KL's Hessian: 2 per log-std coordinate, not 2 / D.
    np.testing.assert_allclose(np.diag(fisher)[k:], 2.0, rtol=1e-12)


@pytest.mark.parametrize("act_dim", [1, 3, 6])
def test_scaled_radius_and_damping_reproduce_the_per_dimension_step(act_dim):
    policy, theta, obs, rng = _gaussian_setup(seed=act_dim, act_dim=act_dim)
    fisher = _dense(policy.fisher_operator(theta, obs), policy.n_params)
    g = rng.standard_normal(policy.n_params)
    target_kl, damping = 0.01, 0.1
    sb3 = natural_gradient_step(g, lambda v: fisher @ v / act_dim, target_kl,
                                cg_iters=policy.n_params, damping=damping)
    ours = natural_gradient_step(g, lambda v: fisher @ v, act_dim * target_kl,
                                 cg_iters=policy.n_params, damping=act_dim * damping)
    np.testing.assert_allclose(ours.step, sb3.step, rtol=1e-7, atol=1e-12)
    # The step's quadratic model of the per-dimension KL sits on SB3's radius.
    damped = fisher / act_dim + damping * np.eye(policy.n_params)
    assert 0.5 * ours.step @ damped @ ours.step == pytest.approx(target_kl, rel=1e-9)


def test_from_sb3_step_equals_sb3_contrib_step():
    """The config's radius and damping, on our joint-KL Fisher, give SB3-contrib's step."""
    sb3_target_kl, sb3_damping = 0.02, 0.05
    cfg = TRPOConfig.from_sb3(BOX3, target_kl=sb3_target_kl, cg_damping=sb3_damping)
    policy, theta, obs, rng = _gaussian_setup(seed=7, act_dim=3)
    fisher = _dense(policy.fisher_operator(theta, obs), policy.n_params)
    g = rng.standard_normal(policy.n_params)
    sb3 = natural_gradient_step(g, lambda v: fisher @ v / 3, sb3_target_kl,
                                cg_iters=policy.n_params, damping=sb3_damping)
    ours = natural_gradient_step(g, lambda v: fisher @ v, cfg.max_kl,
                                 cg_iters=policy.n_params, damping=cfg.cg_damping)
    np.testing.assert_allclose(ours.step, sb3.step, rtol=1e-7, atol=1e-12)


def test_kl_scale_is_the_action_dimension_of_box_and_one_for_categoricals():
    assert sb3_kl_scale(spaces.Box(-1, 1, (6,))) == 6
    assert sb3_kl_scale(spaces.Discrete(3)) == 1
    assert sb3_kl_scale(spaces.MultiDiscrete([2, 3])) == 1
    with pytest.raises(ValueError, match="MultiBinary"):
        sb3_kl_scale(spaces.MultiBinary(3))


def test_from_sb3_reads_the_action_dimension_from_the_env_and_closes_it():
    closed = _BoxActionEnv.closed
    cfg = TRPOConfig.from_sb3(BOX3)
    assert _BoxActionEnv.closed == closed + 1
    assert cfg.max_kl == pytest.approx(3 * 0.01)
    assert cfg.cg_damping == pytest.approx(3 * 0.1)
    cartpole = TRPOConfig.from_sb3("CartPole-v1", cg_damping=1e-3)
    assert (cartpole.max_kl, cartpole.cg_damping) == (0.01, 1e-3)
    pendulum = TRPOConfig.from_sb3("Pendulum-v1")
    assert (pendulum.max_kl, pendulum.cg_damping) == (0.01, 0.1)


def test_from_sb3_on_the_zoo_mujoco_entries():
    """rl-baselines3-zoo's trpo.yml MuJoCo block (HalfCheetah adds target_kl 0.04)."""
    pytest.importorskip("mujoco")
    zoo_mujoco = dict(normalize=True, n_envs=2, policy="MlpPolicy", batch_size=128,
                      n_steps=1024, gamma=0.99, gae_lambda=0.95, sub_sampling_factor=1,
                      cg_max_steps=25, cg_damping=0.1, n_critic_updates=20,
                      learning_rate=1e-3)
    hopper = TRPOConfig.from_sb3("Hopper-v5", **zoo_mujoco)
    assert hopper.max_kl == pytest.approx(3 * 0.01)
    assert hopper.cg_damping == pytest.approx(3 * 0.1)
    assert (hopper.family, hopper.n_envs, hopper.n_steps, hopper.cg_iters) == ("mujoco", 2, 1024, 25)
    assert hopper.normalize_obs and hopper.normalize_reward
    cheetah = TRPOConfig.from_sb3("HalfCheetah-v5", **zoo_mujoco, target_kl=0.04)
    assert cheetah.max_kl == pytest.approx(6 * 0.04)
    assert cheetah.cg_damping == pytest.approx(6 * 0.1)


# SB3 argument, its value, and the fields it must set (D = 3 on BOX3); every other field
# must keep the value it has with SB3's defaults.
D = 3
MAPPED = [
    ("learning_rate", 3e-4, {"value_lr": 3e-4}),
    ("n_steps", 256, {"n_steps": 256}),
    ("batch_size", 64, {"value_batch_size": 64}),
    ("gamma", 0.95, {"gamma": 0.95}),
    ("cg_max_steps", 7, {"cg_iters": 7}),
    ("cg_damping", 0.05, {"cg_damping": D * 0.05}),
    ("line_search_shrinking_factor", 0.5, {"ls_shrink": 0.5}),
    ("line_search_max_iter", 4, {"ls_max_backtracks": 3}),
    ("n_critic_updates", 5, {"value_epochs": 5}),
    ("gae_lambda", 0.9, {"gae_lambda": 0.9}),
    ("use_sde", False, {}),
    ("use_sde", True, {"use_sde": True}),
    ("sde_sample_freq", 4, {"sde_sample_freq": 4}),  # used with gSDE only, as in SB3-contrib
    ("normalize_advantage", False, {"normalize_advantage": False}),
    ("target_kl", 0.02, {"max_kl": D * 0.02}),
    ("sub_sampling_factor", 4, {"fvp_subsample": 0.25}),
    ("policy", "MlpPolicy", {}),
    ("rollout_buffer_class", None, {}),
    ("rollout_buffer_kwargs", None, {}),
    ("n_envs", 3, {"n_envs": 3}),
    ("policy_kwargs", {"net_arch": [32]}, {"policy_hidden": (32,), "value_hidden": (32,)}),
    ("policy_kwargs", {"net_arch": {"pi": [16], "vf": [8, 8]}},
     {"policy_hidden": (16,), "value_hidden": (8, 8)}),
    ("policy_kwargs", {"activation_fn": "nn.ReLU"}, {"activation": "relu"}),
    ("policy_kwargs", {"activation_fn": type("ReLU", (), {})}, {"activation": "relu"}),
    ("policy_kwargs", {"log_std_init": -1}, {"log_std_init": -1.0}),
    ("policy_kwargs", {"ortho_init": True}, {}),
    ("policy_kwargs", {"full_std": False}, {"sde_full_std": False}),
    ("policy_kwargs", {"use_expln": True}, {"sde_use_expln": True}),
    ("normalize", True, {"normalize_obs": True, "normalize_reward": True}),
    ("normalize", {"norm_obs": True, "norm_reward": False, "clip_obs": 5.0},
     {"normalize_obs": True, "clip_obs": 5.0}),
    ("normalize", {"norm_reward": True, "norm_obs": False, "clip_reward": 3, "gamma": 0.99,
                   "epsilon": 1e-8}, {"normalize_reward": True, "clip_reward": 3.0}),
]


def _fields(cfg):
    return {k: getattr(cfg, k) for k in TRPOConfig.__dataclass_fields__}


def test_sb3_defaults_translate_to_sb3_defaults():
    cfg = TRPOConfig.from_sb3(BOX3)
    assert (cfg.value_lr, cfg.n_steps, cfg.value_batch_size, cfg.gamma) == (1e-3, 2048, 128, 0.99)
    assert (cfg.cg_iters, cfg.ls_shrink, cfg.ls_max_backtracks, cfg.value_epochs) == (15, 0.8, 9, 10)
    assert (cfg.gae_lambda, cfg.normalize_advantage, cfg.fvp_subsample) == (0.95, True, 1.0)
    assert (cfg.n_envs, cfg.normalize_obs, cfg.normalize_reward) == (1, False, False)
    assert (cfg.clip_obs, cfg.clip_reward) == (10.0, 10.0)
    assert (cfg.policy_hidden, cfg.value_hidden, cfg.activation, cfg.log_std_init) == \
        ((64, 64), (64, 64), "tanh", 0.0)
    # What SB3-contrib's TRPO does without an argument for it.
    assert (cfg.value_optimizer, cfg.line_search, cfg.entropy_coef) == ("adam", True, 0.0)
    assert (cfg.ls_accept_ratio, cfg.ls_kl_slack, cfg.value_l2) == (0.0, 1.0, 0.0)


def test_every_sb3_argument_has_a_mapping_case():
    assert set(SB3_TRPO_DEFAULTS) <= {name for name, _, _ in MAPPED}


@pytest.mark.parametrize("name, value, expected", MAPPED)
def test_each_sb3_argument_lands_in_its_field(name, value, expected):
    base = _fields(TRPOConfig.from_sb3(BOX3))
    got = _fields(TRPOConfig.from_sb3(BOX3, **{name: value}))
    changed = {k: v for k, v in got.items() if v != base[k]}
    assert set(changed) == set(expected)
    for key, want in expected.items():
        assert changed[key] == pytest.approx(want), key
        assert type(changed[key]) is type(want), key


@pytest.mark.parametrize("kwargs, error, needle", [
    ({"target_KL": 0.01}, TypeError, "'target_KL' is not an argument of SB3-contrib's TRPO (did you mean 'target_kl'?)"),
    ({"ent_coef": 0.01}, TypeError, "'ent_coef' is not an argument"),
    ({"seed": 3}, TypeError, "seed=3 is not a TRPOConfig setting: pass seed= to rl_adapters.TRPO"),
    ({"n_timesteps": 1000}, TypeError, "n_timesteps=1000 is not a TRPOConfig setting"),
    ({"verbose": 1}, TypeError, "verbose=1"),
    ({"sde_sample_freq": -2}, ValueError, "config sde_sample_freq=-2: must be >= -1 (from SB3-contrib's sde_sample_freq)"),
    ({"policy_kwargs": {"full_std": 1}}, TypeError, "policy_kwargs['full_std']=1: expected bool"),
    ({"policy": "CnnPolicy"}, ValueError, "policy='CnnPolicy'"),
    ({"rollout_buffer_class": object}, ValueError, "rollout_buffer_class="),
    ({"learning_rate": lambda progress: 1e-3}, ValueError, "learning_rate=<function"),
    ({"target_kl": "a"}, TypeError, "target_kl='a': expected float, got str"),
    ({"target_kl": True}, TypeError, "target_kl=True: expected float, got bool"),
    ({"n_steps": 2.5}, TypeError, "n_steps=2.5: expected int, got float"),
    ({"use_sde": "no"}, TypeError, "use_sde='no': expected bool"),
    ({"line_search_max_iter": 0}, ValueError, "line_search_max_iter=0"),
    ({"sub_sampling_factor": 0}, ValueError, "sub_sampling_factor=0"),
    ({"gamma": 1.5}, ValueError, "config gamma=1.5: must be in [0, 1] (from SB3-contrib's gamma)"),
    ({"target_kl": -0.01}, ValueError, "config max_kl=-0.03: must be > 0, finite (from SB3-contrib's target_kl)"),
    ({"cg_max_steps": 0}, ValueError, "config cg_iters=0: must be >= 1 (from SB3-contrib's cg_max_steps)"),
    ({"policy_kwargs": {"net_arch": [0]}}, ValueError, "(from SB3-contrib's policy_kwargs['net_arch'])"),
    ({"normalize": {"clip_obs": -1}}, ValueError, "config clip_obs=-1.0: must be > 0, finite (from SB3-contrib's normalize['clip_obs'])"),
    ({"policy_kwargs": {"squash_output": True}}, ValueError, "policy_kwargs['squash_output']=True"),
    ({"policy_kwargs": {"ortho_init": False}}, ValueError, "policy_kwargs['ortho_init']=False"),
    ({"policy_kwargs": {"activation_fn": "nn.ELU"}}, ValueError, "policy_kwargs['activation_fn']='nn.ELU'"),
    ({"policy_kwargs": {"net_arch": [64, {"pi": [32]}]}}, ValueError, "policy_kwargs['net_arch']"),
    ({"policy_kwargs": {"optimizer": "SGD"}}, ValueError, "policy_kwargs['optimizer']"),
    ({"policy_kwargs": [64]}, TypeError, "policy_kwargs=[64]: expected a dict"),
    ({"normalize": "yes"}, TypeError, "normalize='yes'"),
    ({"normalize": {"norm_obs": True, "gamma": 0.9}}, ValueError, "normalize['gamma']=0.9"),
    ({"normalize": {"epsilon": 1e-5}}, ValueError, "normalize['epsilon']=1e-05"),
    ({"normalize": {"clip": 5}}, ValueError, "normalize['clip']=5"),
])
def test_arguments_without_an_equivalent_raise_naming_them(kwargs, error, needle):
    with pytest.raises(error, match=re.escape(needle)):
        TRPOConfig.from_sb3(BOX3, **kwargs)


def test_unknown_or_bad_env_id_is_one_clear_error():
    with pytest.raises(ValueError, match="env_id='NoSuchEnv-v0': gymnasium cannot make it"):
        TRPOConfig.from_sb3("NoSuchEnv-v0")
    with pytest.raises(TypeError, match="env_id=3"):
        TRPOConfig.from_sb3(3)
