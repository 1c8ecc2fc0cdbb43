"""Critic: the compiled Adam loop equals the step-by-step definition; both fits regress."""

import numpy as np
import pytest

from rl_adapters.value import ValueFunction


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("l2", [0.0, 1e-3])
def test_compiled_adam_fit_equals_python_reference(activation, l2):
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((100, 3))
    y = np.sin(obs[:, 0]) + obs[:, 1]
    fast = ValueFunction(3, (8, 8), activation)
    ref = ValueFunction(3, (8, 8), activation)
    fast.init(np.random.default_rng(1))
    ref.init(np.random.default_rng(1))
    fast.fit(obs, y, np.random.default_rng(2), epochs=3, batch_size=32, lr=1e-2, l2=l2)
    # The definition: shuffled minibatches, loss_and_grad (NumPy), one Adam step each.
    r, theta = np.random.default_rng(2), ref.theta.copy()
    for _ in range(3):
        order = r.permutation(len(obs))
        for start in range(0, len(obs), 32):
            idx = order[start : start + 32]
            _, grad = ref.loss_and_grad(theta, obs[idx], y[idx], l2)
            ref.adam.step(theta, grad, 1e-2)
    assert fast.adam.t == ref.adam.t == 12
    np.testing.assert_allclose(fast.theta, theta, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast.adam.v, ref.adam.v, rtol=1e-10, atol=1e-14)


def test_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    vf = ValueFunction(2, (5,))
    vf.init(rng)
    obs, y = rng.standard_normal((7, 2)), rng.standard_normal(7)
    _, grad = vf.loss_and_grad(vf.theta, obs, y, l2=0.1)
    v = rng.standard_normal(vf.theta.size)
    eps = 1e-6
    fd = (vf.loss_and_grad(vf.theta + eps * v, obs, y, 0.1)[0]
          - vf.loss_and_grad(vf.theta - eps * v, obs, y, 0.1)[0]) / (2 * eps)
    assert grad @ v == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_fit_reduces_the_regression_error(optimizer):
    rng = np.random.default_rng(4)
    obs = rng.uniform(-2, 2, (256, 2))
    y = 3.0 * np.tanh(obs[:, 0]) - obs[:, 1] ** 2
    vf = ValueFunction(2, (32, 32))
    vf.init(rng)
    before = vf.fit(obs, y, rng, optimizer=optimizer, lr=3e-3, epochs=50, batch_size=64,
                    lbfgs_iters=100)
    after = float(np.mean((vf.predict(obs) - y) ** 2))
    assert after < 0.1 * before
