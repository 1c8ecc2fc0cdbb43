"""Policies: Fisher-vector products, policy gradients and sampling against references.

Derivatives and Fisher products are checked with trustregion.testing.
"""

import numpy as np
import pytest
from gymnasium import spaces

from rl_adapters.policies import CategoricalPolicy, DiagGaussianPolicy, make_policy
from trustregion import testing as tt


def _policies():
    return {
        "categorical": CategoricalPolicy(3, (4,), (5,)),
        "multidiscrete": CategoricalPolicy(3, (2, 3), (4,)),
        "gaussian": DiagGaussianPolicy(3, 2, (5,), log_std_init=-0.3),
    }


def _setup(kind, seed=0, n=7):
    policy = _policies()[kind]
    rng = np.random.default_rng(seed)
    theta = policy.init_params(rng) + 0.3 * rng.standard_normal(policy.n_params)
    obs = rng.standard_normal((n, 3))
    return policy, theta, obs, rng


def _mean_kl(policy, theta_old, obs, theta):
    out_old, _ = policy.outputs(theta_old, obs)
    out, _ = policy.outputs(theta, obs)
    return float(np.mean(policy.kl(theta_old, out_old, theta, out)))


def _kl_grad_outputs(policy, theta_old, out_old, theta, out):
    """Analytic gradient of KL(old || new) w.r.t. the new distribution's parameters."""
    if isinstance(policy, CategoricalPolicy):
        g = np.empty_like(out)
        for blk in policy._blocks:
            z = out[:, blk] - out[:, blk].max(1, keepdims=True)
            zo = out_old[:, blk] - out_old[:, blk].max(1, keepdims=True)
            p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
            po = np.exp(zo) / np.exp(zo).sum(1, keepdims=True)
            g[:, blk] = p - po
        return g, np.empty(0)
    ls, ls_old = policy.log_std(theta), policy.log_std(theta_old)
    var = np.exp(2 * ls)
    g_mean = (out - out_old) / var
    g_ls = (1.0 - (np.exp(2 * ls_old) + (out_old - out) ** 2) / var).sum(0)
    return g_mean, g_ls


def _mean_kl_grad(policy, theta_old, obs, theta):
    """Gradient of the mean KL at any theta (chain rule through the MLP's VJP)."""
    out_old, _ = policy.outputs(theta_old, obs)
    out, cache = policy.outputs(theta, obs, keep_cache=True)
    g_out, g_extra = _kl_grad_outputs(policy, theta_old, out_old, theta, out)
    n = obs.shape[0]
    grad = np.zeros(policy.n_params)
    k = policy.net.n_params
    grad[:k] = policy.net.vjp(theta[:k], cache, g_out / n)
    grad[k:] = g_extra / n
    return grad


@pytest.mark.parametrize("kind", ["categorical", "multidiscrete", "gaussian"])
def test_kl_gradient_helper_matches_finite_differences_of_kl(kind):
    policy, theta_old, obs, rng = _setup(kind)
    theta = theta_old + 0.2 * rng.standard_normal(policy.n_params)
    tt.check_grad(lambda th: _mean_kl(policy, theta_old, obs, th),
                  lambda th: _mean_kl_grad(policy, theta_old, obs, th), theta)


@pytest.mark.parametrize("kind", ["categorical", "multidiscrete", "gaussian"])
def test_fvp_is_the_hessian_of_the_mean_kl(kind):
    """F v against differences of the KL gradient and of the KL itself, symmetric, PSD."""
    policy, theta, obs, _ = _setup(kind, seed=1)
    report = tt.check_fvp(
        lambda th, v: policy.fisher_operator(th, obs)(v),
        lambda old, new: _mean_kl(policy, old, obs, new),
        theta,
        kl_grad=lambda old, new: _mean_kl_grad(policy, old, obs, new),
        n_directions=3,
    )
    assert report.calls["fvp"] == 3
    tt.check_fvp(lambda th, v: policy.fisher_operator(th, obs)(v),
                 lambda old, new: _mean_kl(policy, old, obs, new), theta, seed=1)


def _fd_jacobian_outputs(policy, theta, obs, eps=1e-6):
    k = policy.net.n_params
    cols = []
    for j in range(k):
        e = np.zeros(k)
        e[j] = eps
        yp, _ = policy.net.forward(theta[:k] + e, obs, keep_cache=False)
        ym, _ = policy.net.forward(theta[:k] - e, obs, keep_cache=False)
        cols.append((yp - ym) / (2 * eps))
    return np.stack(cols, axis=-1)  # (N, out, k)


def test_fvp_equals_dense_fisher_from_exact_scores_categorical():
    """F = (1/N) sum_i sum_a p(a|s_i) s_ia s_ia^T with scores from finite differences."""
    policy, theta, obs, rng = _setup("categorical", seed=2, n=4)
    J = _fd_jacobian_outputs(policy, theta, obs)
    out, _ = policy.outputs(theta, obs)
    p = np.exp(out - out.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    F = np.zeros((policy.n_params, policy.n_params))
    for i in range(obs.shape[0]):
        for a in range(p.shape[1]):
            score = (np.eye(p.shape[1])[a] - p[i]) @ J[i]  # d log p(a|s_i) / d theta
            F += p[i, a] * np.outer(score, score)
    F /= obs.shape[0]
    fisher = policy.fisher_operator(theta, obs)
    V = rng.standard_normal((policy.n_params, 3))
    np.testing.assert_allclose(np.stack([fisher(V[:, j]) for j in range(3)], 1), F @ V,
                               rtol=1e-6, atol=1e-9)


def test_fvp_equals_dense_fisher_gaussian():
    """F = (1/N) sum_i J_i^T diag(1/sigma^2) J_i for the mean, 2 I for the shared log std."""
    policy, theta, obs, rng = _setup("gaussian", seed=3, n=4)
    J = _fd_jacobian_outputs(policy, theta, obs)
    k = policy.net.n_params
    prec = np.exp(-2 * policy.log_std(theta))
    F = np.zeros((policy.n_params, policy.n_params))
    F[:k, :k] = np.einsum("nok,o,nol->kl", J, prec, J) / obs.shape[0]
    F[k:, k:] = 2.0 * np.eye(policy.act_dim)
    fisher = policy.fisher_operator(theta, obs)
    for _ in range(3):
        v = rng.standard_normal(policy.n_params)
        np.testing.assert_allclose(fisher(v), F @ v, rtol=1e-6, atol=1e-9)
    # Symmetric positive semidefinite, as a Fisher must be.
    tt.check_symmetric_operator(fisher, policy.n_params, psd=True)


@pytest.mark.parametrize("kind", ["categorical", "multidiscrete", "gaussian"])
@pytest.mark.parametrize("entropy_coef", [0.0, 0.05])
def test_surrogate_gradient_matches_finite_differences(kind, entropy_coef):
    policy, theta, obs, rng = _setup(kind, seed=4)
    _, actions, _ = policy.act(theta, obs, rng)
    adv = rng.standard_normal(obs.shape[0])
    out0, cache = policy.outputs(theta, obs, keep_cache=True)
    logp0 = policy.log_prob(theta, out0, actions)

    def surrogate(th):
        out, _ = policy.outputs(th, obs)
        ratio = np.exp(policy.log_prob(th, out, actions) - logp0)
        return np.mean(ratio * adv) + entropy_coef * np.mean(policy.entropy(th, out))

    g = policy.surrogate_gradient(theta, cache, out0, actions, adv, entropy_coef)
    tt.check_grad(surrogate, lambda th: g, theta)  # g is the gradient at theta only


@pytest.mark.parametrize("kind", ["categorical", "multidiscrete", "gaussian"])
def test_sampled_log_probs_match_log_prob(kind):
    policy, theta, obs, rng = _setup(kind, seed=5)
    _, actions, logp = policy.act(theta, obs, rng)
    out, _ = policy.outputs(theta, obs)
    np.testing.assert_allclose(logp, policy.log_prob(theta, out, actions), rtol=1e-12)


def test_categorical_sampling_frequencies_match_probabilities():
    policy, theta, _, rng = _setup("categorical", seed=6)
    obs = np.repeat(rng.standard_normal((1, 3)), 20000, axis=0)
    _, actions, _ = policy.act(theta, obs, rng)
    out, _ = policy.outputs(theta, obs[:1])
    p = np.exp(out[0] - out[0].max())
    p /= p.sum()
    freq = np.bincount(actions[:, 0], minlength=4) / len(actions)
    np.testing.assert_allclose(freq, p, atol=0.015)


def test_gaussian_env_actions_are_clipped_but_stored_actions_are_not():
    policy = DiagGaussianPolicy(2, 1, (4,), log_std_init=2.0, low=np.array([-1.0]),
                                high=np.array([1.0]))
    rng = np.random.default_rng(0)
    theta = policy.init_params(rng)
    env_a, a, _ = policy.act(theta, np.zeros((200, 2)), rng)
    assert np.all(np.abs(env_a) <= 1.0)
    assert np.any(np.abs(a) > 1.0)
    np.testing.assert_array_equal(env_a, np.clip(a, -1, 1))


def test_make_policy_spaces():
    box = spaces.Box(-1, 1, (3,))
    assert isinstance(make_policy(box, spaces.Discrete(3)), CategoricalPolicy)
    md = make_policy(box, spaces.MultiDiscrete([2, 3]))
    assert md.nvec == (2, 3)
    assert isinstance(make_policy(box, spaces.Box(-1, 1, (2,))), DiagGaussianPolicy)
    shifted = make_policy(box, spaces.Discrete(3, start=5))
    env_a, a, _ = shifted.act(shifted.init_params(np.random.default_rng(0)), np.zeros((50, 3)),
                              np.random.default_rng(1))
    assert set(env_a.tolist()) <= {5, 6, 7} and set(a[:, 0].tolist()) <= {0, 1, 2}
    with pytest.raises(TypeError, match="action_space"):
        make_policy(box, spaces.MultiBinary(3))
    with pytest.raises(TypeError, match="observation_space"):
        make_policy(spaces.Discrete(4), spaces.Discrete(2))


@pytest.mark.parametrize("kind", ["categorical", "multidiscrete", "gaussian"])
def test_float32_fvp_agrees_with_float64(kind):
    policy, theta, obs, rng = _setup(kind, seed=7, n=50)
    f64 = policy.fisher_operator(theta, obs)
    f32 = policy.fisher_operator(theta, obs, dtype=np.float32)
    v = rng.standard_normal(policy.n_params)
    out = f32(v)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, f64(v), rtol=2e-4, atol=1e-5 * np.abs(f64(v)).max())


@pytest.mark.parametrize("kind", ["categorical", "multidiscrete", "gaussian"])
@pytest.mark.parametrize("n", [3, 20])  # the fused few-row path and the batched path
def test_act_from_noise_samples_the_policy(kind, n):
    policy, theta, _, rng = _setup(kind, seed=8)
    obs = rng.standard_normal((n, 3))
    noise = policy.draw_noise(rng, (n,))
    actions = np.empty(noise.shape, dtype=np.float64 if kind == "gaussian" else np.int64)
    env_actions, logp = policy.act_from_noise(theta, obs, noise, actions)
    out, _ = policy.outputs(theta, obs[:, :], keep_cache=True)  # BLAS path reference
    np.testing.assert_allclose(logp, policy.log_prob(theta, out, actions), rtol=1e-10)
    if kind == "gaussian":
        expected = out + np.exp(policy.log_std(theta)) * noise
        np.testing.assert_allclose(actions, expected, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(env_actions, actions)  # no bounds on this policy
    else:
        # Inverse CDF: the chosen index is where the uniform falls in the cumulative probs.
        for j, blk in enumerate(policy._blocks):
            z = out[:, blk]
            p = np.exp(z - z.max(1, keepdims=True))
            cdf = np.cumsum(p / p.sum(1, keepdims=True), axis=1)
            np.testing.assert_array_equal(
                actions[:, j], (noise[:, j][:, None] >= cdf).sum(1).clip(max=z.shape[1] - 1))
