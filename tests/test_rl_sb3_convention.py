"""The translation of SB3-contrib's TRPO hyperparameters to ours (benchmarks/bench_trpo_learn).

SB3-contrib's TRPO measures ``kl_divergence(new, old).mean()`` where, for a diagonal
Gaussian, the KL is PyTorch's per-dimension ``Normal`` KL: its "mean KL" is the joint KL
divided by the action dimension ``D`` and its Fisher is ``F / D``.  These tests pin down that
``max_kl = D * target_kl`` and ``cg_damping = D * cg_damping`` reproduce its steps exactly,
and that the learning benchmark's config applies that translation.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from rl_adapters.policies import DiagGaussianPolicy
from trustregion import natural_gradient_step

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


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


def test_zoo_config_scales_kl_and_damping_by_action_dimension():
    from bench_trpo_learn import sb3_kl_scale, zoo_config

    assert sb3_kl_scale("Pendulum-v1") == 1
    assert sb3_kl_scale("CartPole-v1") == 1
    cartpole, _ = zoo_config("CartPole-v1")
    assert (cartpole.max_kl, cartpole.cg_damping) == (0.01, 1e-3)
    pytest.importorskip("mujoco")
    hopper, notes = zoo_config("Hopper-v5")
    assert hopper.max_kl == pytest.approx(3 * 0.01)
    assert hopper.cg_damping == pytest.approx(3 * 0.1)
    assert any("action dimensions" in note for note in notes)
    cheetah, _ = zoo_config("HalfCheetah-v5")
    assert cheetah.max_kl == pytest.approx(6 * 0.04)
    assert cheetah.cg_damping == pytest.approx(6 * 0.1)
