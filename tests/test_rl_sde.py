"""gSDE policy and exploration noise against references written here from the definitions.

References, independent of ``rl_adapters.sde``'s arithmetic:

- the marginal ``N(mu(s), diag(phi(s)^2 @ sigma^2 + eps))`` from the network's forward pass
  and the std rule (exp / expln, full or shared over actions), by scipy and closed forms;
- gradients and Fisher products by central finite differences, with the features ``phi``
  frozen where SB3's ``learn_features=False`` detaches them (and, with no hidden layer,
  where ``phi`` is the observation itself and nothing needs freezing);
- an explicit Gauss-Newton Fisher built column by column from finite differences.
"""

import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from rl_adapters.policies import FisherOperator
from rl_adapters.sde import StateDependentGaussianPolicy, StateDependentNoise, make_sde_policy
from rl_adapters.validation import StateError

CONFIGS = {
    "full": dict(full_std=True, use_expln=False),
    "shared": dict(full_std=False, use_expln=False),
    "expln": dict(full_std=True, use_expln=True),
    "shared-expln": dict(full_std=False, use_expln=True),
}


def _setup(kind="full", seed=0, n=7, hidden=(5, 4), activation="tanh", epsilon=1e-6):
    policy = StateDependentGaussianPolicy(3, 2, hidden, activation, log_std_init=-0.3,
                                          epsilon=epsilon, **CONFIGS[kind])
    rng = np.random.default_rng(seed)
    theta = policy.init_params(rng) + 0.3 * rng.standard_normal(policy.n_params)
    k = policy.net.n_params
    if policy.use_expln:  # both branches of expln
        theta[k:] = rng.uniform(-1.5, 1.5, policy.n_params - k)
    obs = rng.standard_normal((n, 3))
    return policy, theta, obs, rng


# ---------------------------------------------------------------- references
def _ref_std(policy, theta):
    """sigma(log_std) broadcast to (latent_dim, act_dim), as SB3's get_std."""
    ls = theta[policy.net.n_params :].reshape(policy.latent_dim, -1)
    if policy.use_expln:
        std = np.where(ls <= 0, np.exp(np.minimum(ls, 0)),
                       np.log1p(np.maximum(ls, 0) + policy.epsilon) + 1.0)
    else:
        std = np.exp(ls)
    return np.ones((policy.latent_dim, policy.act_dim)) * std


def _ref_mean_phi(policy, theta, obs):
    mean, cache = policy.net.forward(theta[: policy.net.n_params], obs)
    return mean, cache.inputs[-1]


def _ref_var(policy, theta, phi):
    var = np.zeros((phi.shape[0], policy.act_dim))
    std = _ref_std(policy, theta)
    for n in range(phi.shape[0]):
        for j in range(policy.act_dim):
            var[n, j] = sum(phi[n, i] ** 2 * std[i, j] ** 2 for i in range(policy.latent_dim))
    return var + policy.epsilon


def _frozen_log_prob(policy, theta, obs, actions, phi):
    """log pi_theta(a|s) with the features in the variance frozen at ``phi``."""
    mean, _ = _ref_mean_phi(policy, theta, obs)
    var = _ref_var(policy, theta, phi)
    return np.array([stats.multivariate_normal(mean[n], np.diag(var[n])).logpdf(actions[n])
                     for n in range(obs.shape[0])])


def _frozen_mean_kl(policy, theta_old, theta, obs, phi):
    mean_old, _ = _ref_mean_phi(policy, theta_old, obs)
    mean, _ = _ref_mean_phi(policy, theta, obs)
    var_old, var = _ref_var(policy, theta_old, phi), _ref_var(policy, theta, phi)
    kl = 0.5 * (np.log(var / var_old) + (var_old + (mean - mean_old) ** 2) / var - 1.0)
    return float(kl.sum(1).mean())


def _frozen_mean_kl_grad(policy, theta_old, theta, obs, phi):
    """Analytic gradient in theta of the frozen mean KL (chain rule written out here)."""
    n, k = obs.shape[0], policy.net.n_params
    mean_old, _ = _ref_mean_phi(policy, theta_old, obs)
    mean, cache = policy.net.forward(theta[:k], obs)
    var_old, var = _ref_var(policy, theta_old, phi), _ref_var(policy, theta, phi)
    g_mean = (mean - mean_old) / var / n
    g_var = 0.5 * (1.0 / var - (var_old + (mean - mean_old) ** 2) / var**2) / n
    # var_nj = sum_i phi_ni^2 sigma_ij^2 + eps; d sigma / d log_std from the std rule by FD
    # of the reference (one entry at a time: it is elementwise).
    ls = theta[k:].reshape(policy.latent_dim, -1)
    h = 1e-7
    std_p = _ref_std(policy, np.concatenate([theta[:k], (ls + h).ravel()]))
    std_m = _ref_std(policy, np.concatenate([theta[:k], (ls - h).ravel()]))
    dsq = (std_p**2 - std_m**2) / (2 * h)  # d sigma_ij^2 / d log_std (its own entry)
    g_sq = (phi**2).T @ g_var * dsq
    g_ls = g_sq if policy.full_std else g_sq.sum(1, keepdims=True)
    grad = np.empty(policy.n_params)
    grad[:k] = policy.net.vjp(theta[:k], cache, g_mean)
    grad[k:] = g_ls.ravel()
    return grad


def _frozen_log_prob_fast(policy, theta, obs, actions, phi):
    mean, _ = _ref_mean_phi(policy, theta, obs)
    var = phi**2 @ _ref_std(policy, theta) ** 2 + policy.epsilon
    return -0.5 * (((actions - mean) ** 2 / var) + np.log(2 * np.pi * var)).sum(1)


# ---------------------------------------------------------------- distribution
@pytest.mark.parametrize("kind", CONFIGS)
def test_log_prob_matches_scipy_multivariate_normal(kind):
    policy, theta, obs, rng = _setup(kind)
    out, _ = policy.outputs(theta, obs)
    mean, phi = _ref_mean_phi(policy, theta, obs)
    np.testing.assert_allclose(out[:, :2], mean, rtol=1e-13)
    np.testing.assert_allclose(out[:, 4:], phi**2, rtol=1e-13)
    actions = mean + rng.standard_normal(mean.shape)
    expected = _frozen_log_prob(policy, theta, obs, actions, phi)
    np.testing.assert_allclose(policy.log_prob(theta, out, actions), expected, rtol=1e-12)
    np.testing.assert_allclose(policy.variance(theta, out), _ref_var(policy, theta, phi),
                               rtol=1e-13)


@pytest.mark.parametrize("kind", CONFIGS)
def test_entropy_matches_closed_form(kind):
    policy, theta, obs, _ = _setup(kind)
    out, _ = policy.outputs(theta, obs)
    var = _ref_var(policy, theta, _ref_mean_phi(policy, theta, obs)[1])
    closed = 0.5 * np.log((2 * np.pi * np.e) ** 2 * var.prod(1))  # 1/2 log det(2 pi e S)
    np.testing.assert_allclose(policy.entropy(theta, out), closed, rtol=1e-12)
    scipy_h = [stats.multivariate_normal(np.zeros(2), np.diag(v)).entropy() for v in var]
    np.testing.assert_allclose(policy.entropy(theta, out), scipy_h, rtol=1e-12)


@pytest.mark.parametrize("kind", CONFIGS)
def test_kl_matches_closed_form_with_each_side_own_features(kind):
    policy, theta_old, obs, rng = _setup(kind, seed=1)
    theta = theta_old + 0.2 * rng.standard_normal(policy.n_params)
    out_old, _ = policy.outputs(theta_old, obs)
    out, _ = policy.outputs(theta, obs)
    m0, phi0 = _ref_mean_phi(policy, theta_old, obs)
    m1, phi1 = _ref_mean_phi(policy, theta, obs)
    v0, v1 = _ref_var(policy, theta_old, phi0), _ref_var(policy, theta, phi1)
    expected = []
    for i in range(obs.shape[0]):  # KL of multivariate normals, full-matrix formula
        s0, s1 = np.diag(v0[i]), np.diag(v1[i])
        s1_inv = np.linalg.inv(s1)
        d = m1[i] - m0[i]
        expected.append(0.5 * (np.trace(s1_inv @ s0) + d @ s1_inv @ d - 2
                               + np.log(np.linalg.det(s1) / np.linalg.det(s0))))
    np.testing.assert_allclose(policy.kl(theta_old, out_old, theta, out), expected, rtol=1e-10)
    np.testing.assert_allclose(policy.kl(theta, out, theta, out), 0.0, atol=1e-15)


@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(list(CONFIGS)),
       scale=st.floats(0.0, 2.0))
def test_kl_is_nonnegative_and_zero_at_equal_parameters(seed, kind, scale):
    policy, theta_old, obs, rng = _setup(kind, seed=seed % 1000, n=5)
    theta = theta_old + scale * rng.standard_normal(policy.n_params)
    out_old, _ = policy.outputs(theta_old, obs)
    out, _ = policy.outputs(theta, obs)
    assert np.all(policy.kl(theta_old, out_old, theta, out) >= 0)
    np.testing.assert_array_equal(policy.kl(theta, out, theta, out), 0.0)


# ---------------------------------------------------------------- gradients
def test_frozen_kl_gradient_helper_matches_finite_differences():
    for kind in CONFIGS:
        policy, theta_old, obs, rng = _setup(kind, seed=2)
        theta = theta_old + 0.2 * rng.standard_normal(policy.n_params)
        phi = _ref_mean_phi(policy, theta_old, obs)[1]
        v = rng.standard_normal(policy.n_params)
        eps = 1e-6
        fd = (_frozen_mean_kl(policy, theta_old, theta + eps * v, obs, phi)
              - _frozen_mean_kl(policy, theta_old, theta - eps * v, obs, phi)) / (2 * eps)
        assert _frozen_mean_kl_grad(policy, theta_old, theta, obs, phi) @ v == pytest.approx(
            fd, rel=1e-6)


@pytest.mark.parametrize("kind", CONFIGS)
@pytest.mark.parametrize("entropy_coef", [0.0, 0.05])
@pytest.mark.parametrize("hidden", [(5, 4), ()])
def test_surrogate_gradient_matches_finite_differences(kind, entropy_coef, hidden):
    """With phi frozen in the variance (SB3's detach); with no hidden layer phi = obs."""
    policy, theta, obs, rng = _setup(kind, seed=4, hidden=hidden)
    _, actions, _ = policy.act(theta, obs, rng)
    adv = rng.standard_normal(obs.shape[0])
    out0, cache = policy.outputs(theta, obs, keep_cache=True)
    phi = _ref_mean_phi(policy, theta, obs)[1]
    logp0 = _frozen_log_prob_fast(policy, theta, obs, actions, phi)

    def surrogate(th):
        logp = _frozen_log_prob_fast(policy, th, obs, actions, phi)
        var = phi**2 @ _ref_std(policy, th) ** 2 + policy.epsilon
        entropy = 0.5 * np.log(2 * np.pi * np.e * var).sum(1)
        return np.mean(np.exp(logp - logp0) * adv) + entropy_coef * np.mean(entropy)

    g = policy.surrogate_gradient(theta, cache, out0, actions, adv, entropy_coef)
    eps = 1e-6
    for _ in range(3):
        v = rng.standard_normal(policy.n_params)
        fd = (surrogate(theta + eps * v) - surrogate(theta - eps * v)) / (2 * eps)
        assert g @ v == pytest.approx(fd, rel=1e-6, abs=1e-10)


def test_gradient_of_output_layer_and_log_std_is_the_true_gradient():
    """phi does not depend on the output layer nor on log_std: there the detached gradient
    is the gradient of the policy's own surrogate, features recomputed at every theta."""
    policy, theta, obs, rng = _setup("full", seed=5)
    _, actions, _ = policy.act(theta, obs, rng)
    adv = rng.standard_normal(obs.shape[0])
    out0, cache = policy.outputs(theta, obs, keep_cache=True)
    logp0 = policy.log_prob(theta, out0, actions)

    def surrogate(th):
        out, _ = policy.outputs(th, obs, keep_cache=True)
        return np.mean(np.exp(policy.log_prob(th, out, actions) - logp0) * adv)

    g = policy.surrogate_gradient(theta, cache, out0, actions, adv)
    w_start = policy.net._slices[-1][0]  # the output layer, then log_std
    eps = 1e-6
    for j in range(w_start, policy.n_params, 3):
        e = np.zeros(policy.n_params)
        e[j] = eps
        fd = (surrogate(theta + e) - surrogate(theta - e)) / (2 * eps)
        assert g[j] == pytest.approx(fd, rel=1e-6, abs=1e-10)


# ---------------------------------------------------------------- Fisher
@pytest.mark.parametrize("kind", CONFIGS)
@pytest.mark.parametrize("hidden", [(5, 4), ()])
def test_fvp_equals_finite_differences_of_the_mean_kl_gradient(kind, hidden):
    policy, theta, obs, rng = _setup(kind, seed=6, hidden=hidden)
    fisher = policy.fisher_operator(theta, obs)
    phi = _ref_mean_phi(policy, theta, obs)[1]
    eps = 1e-5
    for _ in range(3):
        v = rng.standard_normal(policy.n_params)
        fd = (_frozen_mean_kl_grad(policy, theta, theta + eps * v, obs, phi)
              - _frozen_mean_kl_grad(policy, theta, theta - eps * v, obs, phi)) / (2 * eps)
        np.testing.assert_allclose(fisher(v), fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", CONFIGS)
def test_fvp_equals_explicit_gauss_newton_from_a_column_by_column_jacobian(kind):
    """F = (1/N) sum_n J_n^T diag(1/var, 1/(2 var^2)) J_n, J of (mu, var) built by FD columns."""
    policy, theta, obs, rng = _setup(kind, seed=7, n=4, hidden=(3,))
    phi = _ref_mean_phi(policy, theta, obs)[1]
    p, eps = policy.n_params, 1e-6

    def mean_and_var(th):
        return np.concatenate([_ref_mean_phi(policy, th, obs)[0], _ref_var(policy, th, phi)], 1)

    J = np.empty((obs.shape[0], 2 * policy.act_dim, p))
    for j in range(p):
        e = np.zeros(p)
        e[j] = eps
        J[:, :, j] = (mean_and_var(theta + e) - mean_and_var(theta - e)) / (2 * eps)
    var = _ref_var(policy, theta, phi)
    metric = np.concatenate([1.0 / var, 0.5 / var**2], 1)
    F = np.einsum("nak,na,nal->kl", J, metric, J) / obs.shape[0]
    fisher = policy.fisher_operator(theta, obs)
    dense = np.stack([fisher(e) for e in np.eye(p)], 1)
    np.testing.assert_allclose(dense, F, rtol=1e-6, atol=1e-8 * np.abs(F).max())
    V = rng.standard_normal((p, 3))
    np.testing.assert_allclose(np.stack([fisher(V[:, j]) for j in range(3)], 1), F @ V,
                               rtol=1e-6, atol=1e-8 * np.abs(F @ V).max())


@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(list(CONFIGS)),
       activation=st.sampled_from(["tanh", "relu"]))
def test_fvp_is_symmetric_and_positive_semidefinite(seed, kind, activation):
    policy, theta, obs, rng = _setup(kind, seed=seed, n=6, activation=activation)
    fisher = policy.fisher_operator(theta, obs)
    u, w = rng.standard_normal((2, policy.n_params))
    fu, fw = fisher(u), fisher(w)
    assert u @ fw == pytest.approx(w @ fu, rel=1e-10, abs=1e-14)
    assert u @ fu >= -1e-14 * (u @ u)


@pytest.mark.parametrize("kind", CONFIGS)
def test_float32_fvp_agrees_with_float64(kind):
    policy, theta, obs, rng = _setup(kind, seed=8, n=50)
    _, cache = policy.outputs(theta, obs, keep_cache=True)
    out, _ = policy.outputs(theta, obs, keep_cache=True)
    f64 = FisherOperator(policy, theta, cache, out)
    f32 = FisherOperator(policy, theta, cache, out, np.float32)
    v = rng.standard_normal(policy.n_params)
    ref = f64(v)
    assert f32(v).dtype == np.float64
    np.testing.assert_allclose(f32(v), ref, rtol=2e-4, atol=1e-5 * np.abs(ref).max())


# ---------------------------------------------------------------- sampling
@pytest.mark.parametrize("kind", CONFIGS)
def test_exploration_noise_covariance_matches_the_marginal(kind):
    """eps(s) = M^T phi(s) over many matrix draws: mean 0, cov diag(phi^2 @ sigma^2), and
    cov(eps_j(s), eps_j(s')) = sum_i phi_i(s) phi_i(s') sigma_ij^2 across two states."""
    policy, theta, obs, rng = _setup(kind, seed=9, n=2)
    n_draws = 40_000
    mats = policy.draw_matrices(theta, rng, n_draws)
    phi = _ref_mean_phi(policy, theta, obs)[1]
    eps = np.einsum("h,khd->kd", phi[0], mats)
    std = _ref_std(policy, theta)
    var = phi[0] ** 2 @ std**2
    cov = np.cov(eps.T)
    se = np.sqrt(2.0 / n_draws) * var  # standard error of a sample variance (Gaussian)
    np.testing.assert_array_less(np.abs(np.diag(cov) - var), 5 * se)
    assert abs(cov[0, 1]) < 5 * np.sqrt(var[0] * var[1] / n_draws)
    assert np.all(np.abs(eps.mean(0)) < 5 * np.sqrt(var / n_draws))
    eps_other = np.einsum("h,khd->kd", phi[1], mats)
    cross = np.mean(eps * eps_other, axis=0)
    expected = (phi[0] * phi[1]) @ std**2
    bound = 5 * np.sqrt((var * (phi[1] ** 2 @ std**2) + expected**2) / n_draws)
    np.testing.assert_array_less(np.abs(cross - expected), bound)


def test_noise_actions_are_mean_plus_matrix_times_features_and_log_probs_match():
    policy, theta, obs, _ = _setup("full", seed=10, n=3)
    noise = StateDependentNoise(policy, n_envs=3, sample_freq=2)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(1).spawn(3)]
    actions = np.empty((3, 2))
    noise.begin_rollout()
    env_actions, logp = noise.act(theta, obs, rngs, actions)
    mean, phi = _ref_mean_phi(policy, theta, obs)
    expected = mean + np.stack([phi[e] @ noise.matrices[e] for e in range(3)])
    np.testing.assert_allclose(actions, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(env_actions, actions)  # no bounds on this policy
    np.testing.assert_allclose(logp, _frozen_log_prob(policy, theta, obs, actions, phi),
                               rtol=1e-12)
    # Each environment's matrix comes from its own generator, scaled by sigma.
    for e, seq in enumerate(np.random.SeedSequence(1).spawn(3)):
        z = np.random.default_rng(seq).standard_normal((policy.latent_dim, 2))
        np.testing.assert_array_equal(noise.matrices[e], z * policy.std(theta))


@pytest.mark.parametrize("n", [3, 20])  # the fused few-row path and the batched path
def test_act_samples_log_probs_and_deterministic_mean(n):
    policy = StateDependentGaussianPolicy(3, 2, (5,), low=np.array([-0.1, -0.1]),
                                          high=np.array([0.1, 0.1]), log_std_init=1.0)
    rng = np.random.default_rng(11)
    theta = policy.init_params(rng)
    obs = rng.standard_normal((n, 3))
    env_a, a, logp = policy.act(theta, obs, rng)
    out, _ = policy.outputs(theta, obs, keep_cache=True)
    np.testing.assert_allclose(logp, policy.log_prob(theta, out, a), rtol=1e-12)
    np.testing.assert_array_equal(env_a, np.clip(a, -0.1, 0.1))
    assert np.any(np.abs(a) > 0.1)
    env_a, a, logp = policy.act(theta, obs, rng, deterministic=True)
    assert logp is None
    np.testing.assert_allclose(a, out[:, :2], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("sample_freq", [-1, 0, 1, 3])
def test_matrices_are_redrawn_at_rollout_start_and_every_sample_freq_steps(sample_freq):
    policy, theta, obs, _ = _setup("full", seed=12, n=2)
    noise = StateDependentNoise(policy, n_envs=2, sample_freq=sample_freq)
    rngs = [np.random.default_rng(s) for s in (1, 2)]
    actions = np.empty((2, 2))
    redrawn = []
    for _rollout in range(2):
        noise.begin_rollout()
        for _t in range(7):
            before = noise.matrices.copy()
            noise.act(theta, obs, rngs, actions)
            redrawn.append(not np.array_equal(before, noise.matrices))
    steps = [t for _ in range(2) for t in range(7)]
    expected = [t == 0 or (sample_freq > 0 and t % sample_freq == 0) for t in steps]
    assert redrawn == expected
    assert noise.n_draws == sum(expected)


def test_state_dict_round_trip_gives_identical_subsequent_actions(tmp_path):
    policy, theta, _, rng = _setup("shared-expln", seed=13, n=2)
    obs = rng.standard_normal((20, 2, 3))
    noise = StateDependentNoise(policy, n_envs=2, sample_freq=3)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(5).spawn(2)]
    actions = np.empty((2, 2))
    noise.begin_rollout()
    for t in range(4):  # mid-way between two draws
        noise.act(theta, obs[t], rngs, actions)
    state = noise.state_dict()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
    np.savez(tmp_path / "noise.npz", **state)
    rng_states = [r.bit_generator.state for r in rngs]
    tail = []
    for t in range(4, 20):
        env_a, logp = noise.act(theta, obs[t], rngs, actions)
        tail.append((env_a.copy(), logp.copy()))

    restored = StateDependentNoise(policy, n_envs=2, sample_freq=3)
    with np.load(tmp_path / "noise.npz", allow_pickle=False) as saved:
        restored.load_state_dict(dict(saved))
    rngs2 = [np.random.default_rng() for _ in range(2)]
    for r, s in zip(rngs2, rng_states, strict=True):
        r.bit_generator.state = s
    for t in range(4, 20):
        env_a, logp = restored.act(theta, obs[t], rngs2, actions)
        np.testing.assert_array_equal(env_a, tail[t - 4][0])
        np.testing.assert_array_equal(logp, tail[t - 4][1])


@pytest.mark.parametrize("kind", CONFIGS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_fused_few_row_paths_agree_with_batched_paths(kind, activation):
    policy, theta, obs, rng = _setup(kind, seed=14, n=5, activation=activation)
    policy.low, policy.high = np.full(2, -0.2), np.full(2, 0.2)
    small, _ = policy.outputs(theta, obs)
    big, _ = policy.outputs(theta, obs, keep_cache=True)
    np.testing.assert_allclose(small, big, rtol=1e-12, atol=1e-15)
    many = np.tile(obs, (3, 1))  # more than 8 rows, without a cache: the hidden network
    np.testing.assert_allclose(policy.outputs(theta, many)[0],
                               policy.outputs(theta, many, keep_cache=True)[0], rtol=1e-13)
    # Sampling: the fused kernel (<= 8 rows) against the NumPy path (more rows).
    mats = policy.draw_matrices(theta, rng, 5)
    a_small, a_big = np.empty((5, 2)), np.empty((10, 2))
    env_small, logp_small = policy.act_with_matrices(theta, obs, mats, a_small)
    env_big, logp_big = policy.act_with_matrices(theta, np.tile(obs, (2, 1)),
                                                 np.tile(mats, (2, 1, 1)), a_big)
    np.testing.assert_allclose(a_small, a_big[:5], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(env_small, env_big[:5], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(env_small, np.clip(a_small, -0.2, 0.2))
    np.testing.assert_allclose(logp_small, logp_big[:5], rtol=1e-12)
    np.testing.assert_allclose(logp_small, policy.log_prob(theta, big, a_small), rtol=1e-12)


def test_expln_std_is_continuous_and_matches_sb3_rule():
    policy = StateDependentGaussianPolicy(2, 1, (3,), use_expln=True)
    theta = np.zeros(policy.n_params)
    k = policy.net.n_params
    theta[k:] = [-2.0, 0.0, 3.0]
    np.testing.assert_allclose(policy.std(theta)[:, 0],
                               [np.exp(-2.0), 1.0, np.log1p(3.0 + 1e-6) + 1.0], rtol=1e-15)
    theta[k:] = [-1e-9, 1e-9, 0.5]
    s = policy.std(theta)[:, 0]
    assert abs(s[0] - s[1]) < 1e-5


# ---------------------------------------------------------------- misuse
def test_make_sde_policy_rejects_discrete_actions_and_builds_box():
    box = spaces.Box(-1, 1, (3,))
    with pytest.raises(TypeError, match="use_sde=True needs a 1-D Box action space"):
        make_sde_policy(box, spaces.Discrete(3))
    with pytest.raises(TypeError, match="observation_space"):
        make_sde_policy(spaces.Discrete(3), box)
    policy = make_sde_policy(box, spaces.Box(-2, 2, (2,)), hidden=(8,), full_std=False)
    assert policy.std_shape == (8, 1) and policy.n_params == policy.net.n_params + 8
    np.testing.assert_array_equal(policy.high, [2.0, 2.0])


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        StateDependentGaussianPolicy(3, 2, (4,), epsilon=0.0)
    with pytest.raises(TypeError, match="full_std must be a bool"):
        StateDependentGaussianPolicy(3, 2, (4,), full_std=1)
    with pytest.raises(ValueError, match="log_std_init must be a finite number"):
        StateDependentGaussianPolicy(3, 2, (4,), log_std_init=float("nan"))
    policy, theta, obs, _ = _setup("full", n=2)
    with pytest.raises(ValueError, match="sample_freq must be -1, 0"):
        StateDependentNoise(policy, n_envs=2, sample_freq=-2)
    with pytest.raises(ValueError, match="n_envs must be a positive int"):
        StateDependentNoise(policy, n_envs=0)
    with pytest.raises(TypeError, match="policy must be a StateDependentGaussianPolicy"):
        StateDependentNoise(object(), n_envs=1)
    noise = StateDependentNoise(policy, n_envs=2)
    with pytest.raises(TypeError, match="rngs must be a sequence of 2"):
        noise.act(theta, obs, [np.random.default_rng(0)], np.empty((2, 2)))
    with pytest.raises(TypeError, match="rngs must be a sequence of 2"):
        noise.act(theta, obs, np.random.default_rng(0), np.empty((2, 2)))
    with pytest.raises(ValueError, match="one row per environment"):
        noise.act(theta, obs[:1], [np.random.default_rng(0)] * 2, np.empty((1, 2)))
    other = StateDependentNoise(policy, n_envs=3).state_dict()
    with pytest.raises(StateError, match=r"^matrices: shape \(3, 4, 2\), expected \(2, 4, 2\)"):
        noise.load_state_dict(other)
    with pytest.raises(StateError, match=r"missing entries \['n_draws', 'n_steps', 'sample_freq'\]"):
        noise.load_state_dict({"matrices": other["matrices"]})
    state = noise.state_dict()
    with pytest.raises(StateError, match=r"^sample_freq: 3, but this noise has sample_freq=-1"):
        noise.load_state_dict({**state, "sample_freq": np.int64(3)})
    with pytest.raises(StateError, match=r"^n_steps: -1 is below 0"):
        noise.load_state_dict({**state, "n_steps": np.int64(-1)})
    with pytest.raises(StateError, match=r"^n_draws: expected an int"):
        noise.load_state_dict({**state, "n_draws": np.asarray(1.0)})
    with pytest.raises(StateError, match=r"^matrices: has NaN or infinite entries"):
        noise.load_state_dict({**state, "matrices": np.full_like(state["matrices"], np.nan)})
    with pytest.raises(StateError, match=r"^matrices: expected a float64 array"):
        noise.load_state_dict({**state, "matrices": state["matrices"].astype(np.float32)})
    with pytest.raises(StateError, match=r"^expected a group of entries"):
        noise.load_state_dict(None)
    # A refused state changes nothing.
    after = noise.state_dict()
    for key, value in state.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)


@pytest.mark.parametrize("hidden", [(), (6,), (8, 5)])
@pytest.mark.parametrize("rows", [1, 3, 12])
def test_the_deterministic_action_is_the_mean_of_outputs_bit_for_bit(hidden, rows):
    # act(deterministic=True) forms the mean alone (no variance); it must be the same bits
    # as the mean columns of outputs(), with and without the per-row kernel (rows <= 8).
    rng = np.random.default_rng(len(hidden) + rows)
    policy = StateDependentGaussianPolicy(3, 2, hidden, "tanh", low=-np.ones(2),
                                          high=np.ones(2))
    theta = policy.init_params(rng) + 0.3 * rng.standard_normal(policy.n_params)
    obs = 2.0 * rng.standard_normal((rows, 3))
    env_actions, mean, logp = policy.act(theta, obs, rng, deterministic=True)
    outputs, _ = policy.outputs(theta, obs)
    assert logp is None
    np.testing.assert_array_equal(mean, outputs[:, :2])
    np.testing.assert_array_equal(env_actions, np.clip(outputs[:, :2], -1.0, 1.0))
    with_cache, _ = policy.outputs(theta, obs, keep_cache=True)
    np.testing.assert_allclose(mean, with_cache[:, :2], rtol=1e-12, atol=1e-14)
