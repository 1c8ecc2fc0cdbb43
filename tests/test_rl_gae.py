"""GAE and the bootstrap at episode ends: truncation bootstraps, termination does not."""

import numpy as np
import pytest

from rl_adapters.rollout import RolloutBatch, advantages_and_returns, compute_gae


def test_gae_hand_computed_termination_and_truncation():
    # One env, 4 steps; gamma=0.9, lambda=0.5.  V(s_t) = [1, 2, 3, 4]; the episode is
    # terminated at t=1 (no bootstrap) and truncated at t=3 with V(s_final) = 10.
    gamma, lam = 0.9, 0.5
    rewards = np.array([[1.0], [1.0], [1.0], [1.0]])
    values = np.array([[1.0], [2.0], [3.0], [4.0]])
    next_values = np.array([[2.0], [0.0], [4.0], [10.0]])
    ends = np.array([[False], [True], [False], [True]])
    d = [1 + 0.9 * 2 - 1, 1 + 0 - 2, 1 + 0.9 * 4 - 3, 1 + 0.9 * 10 - 4]  # 1.8, -1, 1.6, 6
    expected = [d[0] + 0.45 * d[1], d[1], d[2] + 0.45 * d[3], d[3]]
    adv = compute_gae(rewards, values, next_values, ends, gamma, lam)
    np.testing.assert_allclose(adv[:, 0], expected, rtol=1e-15)


def _reference(rewards, values, next_values, ends, gamma, lam):
    T, E = rewards.shape
    adv = np.zeros((T, E))
    for e in range(E):
        for t in range(T):
            # Forward sum over the rest of the episode: sum_k (gamma lam)^k delta_{t+k}.
            total, w = 0.0, 1.0
            for k in range(t, T):
                total += w * (rewards[k, e] + gamma * next_values[k, e] - values[k, e])
                if ends[k, e]:
                    break
                w *= gamma * lam
            adv[t, e] = total
    return adv


@pytest.mark.parametrize("seed", range(5))
def test_gae_matches_forward_sum_definition(seed):
    rng = np.random.default_rng(seed)
    T, E = 30, 3
    r, v, nv = rng.standard_normal((3, T, E))
    ends = rng.random((T, E)) < 0.15
    gamma, lam = rng.uniform(0.5, 1.0), rng.uniform(0.0, 1.0)
    np.testing.assert_allclose(compute_gae(r, v, nv, ends, gamma, lam),
                               _reference(r, v, nv, ends, gamma, lam), rtol=1e-12, atol=1e-12)


class _LinearValue:
    """V(s) = s[0]: makes every bootstrap value visible in the result."""

    def predict(self, obs):
        return obs[:, 0].copy()


def test_advantages_bootstrap_from_final_obs_on_truncation_only():
    T, E = 3, 2
    obs = np.arange(T * E, dtype=float).reshape(T, E, 1)  # V(s_t,e) = 2t + e
    final = np.zeros((T, E, 1))
    final[1, 0] = 100.0  # env 0 truncated at t=1 with final obs value 100
    final[1, 1] = 55.0  # env 1 terminated at t=1: its final obs must be ignored
    term = np.zeros((T, E), bool)
    trunc = np.zeros((T, E), bool)
    trunc[1, 0] = True
    term[1, 1] = True
    batch = RolloutBatch(obs=obs, actions=np.zeros((T, E, 1)), log_probs=np.zeros((T, E)),
                         rewards=np.ones((T, E)), terminated=term, truncated=trunc,
                         final_obs=final, last_obs=np.array([[7.0], [9.0]]),
                         episode_returns=[], episode_lengths=[], env_time=0.0, policy_time=0.0)
    gamma, lam = 0.5, 1.0
    adv, returns, values = advantages_and_returns(batch, _LinearValue(), gamma, lam)
    V = obs[..., 0]
    next_v = np.array([[V[1, 0], V[1, 1]], [100.0, 0.0], [7.0, 9.0]])
    ends = term | trunc
    np.testing.assert_allclose(adv, _reference(np.ones((T, E)), V, next_v, ends, gamma, lam))
    np.testing.assert_allclose(returns, adv + V)
    np.testing.assert_allclose(values, V)
