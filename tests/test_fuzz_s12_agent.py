"""Fuzzing round 12: the deployment path (``predict``, ``evaluate``, ``load_policy``), gSDE
settings and killed worker processes.

Each test is the reproduction of one bug this round found: bad input gets an error naming
the argument (never a wrong success or a raw error from a dependency), a run's state can
always be saved, and a run whose environment worker was killed stops with a clear error.
"""

import copy
import os
import signal
import threading

import gymnasium as gym
import numpy as np
import pytest
from agent_checks import assert_same_run

import rl_adapters.agent as agent_module
from rl_adapters import TRPO, CheckpointError, load_policy
from rl_adapters.checkpoint import read_state, write_state

SMALL = {"n_steps": 16, "n_envs": 1, "value_optimizer": "adam", "value_epochs": 1,
         "value_batch_size": 16}


@pytest.fixture(scope="module")
def cartpole():
    agent = TRPO("CartPole-v1", seed=0, **SMALL)
    agent.learn(16)
    return agent


# ------------------------------------------------------------------ evaluate / predict
@pytest.mark.parametrize("steps", [0, -1, 2.5, None, True, float("inf")])
def test_evaluate_refuses_a_max_episode_steps_that_is_not_a_positive_int(cartpole, steps):
    # 0 and -1 returned (0.0, 0.0), a "success" without a step; None a raw TypeError
    with pytest.raises(ValueError, match=r"^max_episode_steps must be a positive int"):
        cartpole.evaluate(2, seed=0, max_episode_steps=steps)


def test_evaluate_takes_numpy_ints_for_its_counts(cartpole):
    # n_episodes=np.int64(2) was "must be a positive int, got np.int64(2)"
    assert cartpole.evaluate(np.int64(2), seed=0, max_episode_steps=np.int32(5)) == \
        cartpole.evaluate(2, seed=0, max_episode_steps=5)


def test_evaluate_refuses_a_0d_array_seed_naming_seed(cartpole):
    # was a raw "TypeError: iteration over a 0-d array"
    with pytest.raises(ValueError, match=r"^seed must be None, an int or a sequence of 2 ints, "
                                         r"got the 0-d array"):
        cartpole.evaluate(2, seed=np.array(3))


@pytest.mark.parametrize("flag", ["no", "False", None, 0, np.array([True, False])])
def test_deterministic_must_be_a_bool(cartpole, flag):
    # "no" acted deterministically, None stochastically, an array raised NumPy's "truth
    # value of an array is ambiguous"
    with pytest.raises(TypeError, match=r"^deterministic must be a bool, got "):
        cartpole.predict(np.zeros(4), deterministic=flag)
    with pytest.raises(TypeError, match=r"^deterministic must be a bool, got "):
        cartpole.evaluate(1, seed=0, deterministic=flag)
    cartpole.predict(np.zeros(4), deterministic=np.bool_(False))  # NumPy's bools are bools


def test_evaluate_closes_the_env_it_makes_and_not_the_callers(cartpole, monkeypatch):
    closed = []

    class Recorder(gym.Wrapper):
        def close(self):
            closed.append(self)
            super().close()

    made = []
    real_make = gym.make

    def make(*args, **kwargs):
        made.append(Recorder(real_make(*args, **kwargs)))
        return made[-1]

    monkeypatch.setattr(gym, "make", make)
    cartpole.evaluate(1, seed=0)
    assert len(made) == 1 and closed == made  # the env it made: closed
    mine = Recorder(real_make("CartPole-v1"))
    cartpole.evaluate(1, seed=0, env=mine)
    assert mine not in closed  # the caller's env: the caller's to close
    mine.close()


# ------------------------------------------------------------------ gSDE
def test_a_sde_sample_freq_beyond_int64_saves_and_resumes_bitwise(tmp_path):
    # learn() ran, then save() raised a raw OverflowError: the run could not be saved
    config = {**SMALL, "use_sde": True, "sde_sample_freq": 2**70}
    straight = TRPO("Pendulum-v1", seed=1, **config).learn(48)
    first = TRPO("Pendulum-v1", seed=1, **config).learn(32)
    first.save(str(tmp_path / "sde.npz"))
    resumed = TRPO.load(str(tmp_path / "sde.npz")).learn(16)
    assert_same_run(resumed, straight)
    np.testing.assert_array_equal(resumed.collector.sde_noise.matrices,
                                  straight.collector.sde_noise.matrices)
    # the same draws as any frequency beyond the run's steps
    other = TRPO("Pendulum-v1", seed=1, **{**config, "sde_sample_freq": 1000}).learn(48)
    np.testing.assert_array_equal(other.theta, straight.theta)


# ------------------------------------------------------------------ load_policy
@pytest.fixture(scope="module")
def cartpole_state(tmp_path_factory):
    agent = TRPO("CartPole-v1", seed=0, normalize_obs=True, **SMALL)
    agent.learn(16)
    path = tmp_path_factory.mktemp("policy") / "model.npz"
    agent.save(str(path))
    return read_state(str(path))


def _damaged(state, tmp_path, change):
    state = copy.deepcopy(state)
    change(state)
    path = tmp_path / "damaged.npz"
    write_state(str(path), state)
    return str(path)


def test_load_policy_refuses_action_sizes_whose_int64_sum_wraps(cartpole_state, tmp_path):
    # 4 * 2**62 + 2 is 2 in int64: the check passed and act() raised NumPy's "attempt to
    # get argmax of an empty sequence"
    def change(state):
        state["policy"].update(nvec=np.array([2**62] * 4 + [2], dtype=np.int64),
                               start=np.zeros(5, dtype=np.int64), multi=True)

    with pytest.raises(CheckpointError, match=r"policy/nvec: .* does not split the network's "
                                              r"2 outputs"):
        load_policy(_damaged(cartpole_state, tmp_path, change))


def test_load_policy_refuses_a_zero_normalization_scale(cartpole_state, tmp_path):
    # epsilon 0 with a zero variance: (x - mean) / 0 gave NaN actions at the mean, silently
    def change(state):
        state["obs_rms"].update(epsilon=0.0, var=np.zeros(4))

    with pytest.raises(CheckpointError, match=r"obs_rms/epsilon: 0 with a zero variance"):
        load_policy(_damaged(cartpole_state, tmp_path, change))


# ------------------------------------------------------------------ killed workers
def test_a_killed_async_env_worker_stops_the_run_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(agent_module, "CRITIC_PROCESS_MIN_UPDATES", 1)  # with the critic's
    config = {"vector_env": "async", "n_envs": 2, "n_steps": 64}  # worker process too
    reference = TRPO("CartPole-v1", seed=3, **config)
    try:
        reference.learn(3 * 128)
    finally:
        reference.close()
    agent = TRPO("CartPole-v1", seed=3, **config)
    agent.learn(128)
    agent.save(str(tmp_path / "ckpt.npz"))
    venv = agent.collector.groups[0].venv

    def kill_a_worker(agent, metrics):
        if agent.n_updates == 2:
            os.kill(venv.processes[1].pid, signal.SIGKILL)
            # gone before the next step is sent: its pipe breaks there, not in step_wait
            # (where gymnasium's close would then wait forever for the step's answers)
            venv.processes[1].join()

    # was a raw BrokenPipeError (or EOFError, ConnectionResetError) from multiprocessing
    with pytest.raises(RuntimeError, match=r"^vector_env='async': the environment worker "
                                           r"process pid \d+ \(exit code -9\) ended during "
                                           r"the update from timestep 256 .*TRPO\.load"):
        agent.learn(2 * 128, callback=kill_a_worker)
    critic = agent._critic_process
    assert critic is not None and critic.pid is not None
    try:
        agent.close()
    except (ConnectionError, EOFError):  # gymnasium's polite close, on the broken pipe
        venv.close(terminate=True)
    assert critic.pid is None  # closed even though closing the environments failed
    # the checkpoint saved before goes on as the run without the kill
    resumed = TRPO.load(str(tmp_path / "ckpt.npz"))
    try:
        resumed.learn(2 * 128)
        assert_same_run(resumed, reference)
    finally:
        resumed.close()


def test_a_worker_killed_mid_step_neither_hangs_close_nor_loses_the_training(tmp_path):
    agent = TRPO("CartPole-v1", seed=3, vector_env="async", n_envs=2, n_steps=64)
    agent.learn(128)
    venv = agent.collector.groups[0].venv
    step_async = venv.step_async
    kill = []

    def step_async_then_kill(actions):
        step_async(actions)
        if kill:  # the step is in flight: worker 0 answers it, worker 1 dies first
            os.kill(venv.processes[1].pid, signal.SIGKILL)
            venv.processes[1].join()
            kill.clear()

    venv.step_async = step_async_then_kill
    with pytest.raises(RuntimeError, match=r"pid \d+ \(exit code -9\) ended during the update"):
        agent.learn(256, callback=lambda *_: kill.append(True))
    theta = agent.theta.copy()
    # what was trained is saved, without the lost episodes (was a raw BrokenPipeError)
    with pytest.warns(RuntimeWarning, match="holds no episode snapshots"):
        agent.save(str(tmp_path / "rescued.npz"))
    # Gymnasium's own close waited forever for the answer step_wait had already read
    closer = threading.Thread(target=agent.close, daemon=True)
    closer.start()
    closer.join(20.0)
    assert not closer.is_alive(), "close() hangs"
    assert all(not proc.is_alive() for proc in venv.processes)
    resumed = TRPO.load(str(tmp_path / "rescued.npz"))
    try:
        np.testing.assert_array_equal(resumed.theta, theta)
        resumed.learn(128)  # new episodes, in new worker processes
    finally:
        resumed.close()


@pytest.mark.parametrize("entry, state_path", [
    ("obs_rms/epsilon", ("obs_rms",)),
    ("reward_scaler/epsilon", ("reward_scaler",)),
])
def test_load_refuses_a_zero_normalization_scale(tmp_path, entry, state_path):
    # was: loaded, then predict (or the first reward) divided by zero in a kernel
    agent = TRPO("CartPole-v1", seed=0, n_steps=64, normalize_obs=True, normalize_reward=True)
    agent.learn(64)
    state = agent.state_dict()
    part = state[state_path[0]]
    part["epsilon"] = 0.0
    rms = part if entry.startswith("obs") else part["rms"]
    rms["var"] = np.zeros_like(rms["var"])
    path = tmp_path / "zero_scale.npz"
    write_state(str(path), state)
    with pytest.raises(CheckpointError, match=entry + ": 0 with a zero"):
        TRPO.load(str(path))
    agent.close()
