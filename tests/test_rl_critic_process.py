"""The L-BFGS critic fitted in a worker process (rl_adapters.critic_process).

The worker runs the same NumPy and SciPy code as the agent's own thread would, so a run
with it is bit for bit the run without it; a worker that dies or fails hands the fits back
to the agent's process with a warning, and the run is still the same.
"""

import os
import resource
import signal
import struct
import sys
import time

import numpy as np
import pytest
from agent_checks import assert_same_run

import rl_adapters.agent as agent_module
from rl_adapters import TRPO
from rl_adapters.critic_process import CriticProcess, CriticProcessWarning
from rl_adapters.value import ValueFunction

SMALL = {"n_envs": 2, "n_steps": 64}  # CartPole's family fits its critic with L-BFGS


@pytest.fixture
def worker_for_every_run(monkeypatch):
    """Start the worker for runs of any length (the default waits for 20 updates)."""
    monkeypatch.setattr(agent_module, "CRITIC_PROCESS_MIN_UPDATES", 1)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_worker_gives_the_same_bits_as_the_thread(worker_for_every_run):
    with_worker = TRPO("CartPole-v1", seed=5, **SMALL)
    without = TRPO("CartPole-v1", seed=5, critic_process=False, **SMALL)
    for agent in (with_worker, without):
        agent.learn(4 * 128)
    pid = with_worker._critic_process.pid
    assert pid is not None and without._critic_process is None
    assert_same_run(with_worker, without)
    assert [m["value_fit_status"] for m in with_worker.metrics] == [""] * 4
    with_worker.close()
    # closed: the worker is reaped, its clocks are kept
    assert _gone(pid)
    usage = with_worker.critic_process_usage
    assert usage is not None and usage["cpu_seconds"] > 0 and usage["peak_rss_mib"] > 10
    without.close()


def test_a_killed_worker_hands_the_fits_back_and_the_run_is_the_same(worker_for_every_run,
                                                                     capfd):
    reference = TRPO("CartPole-v1", seed=6, critic_process=False, **SMALL)
    reference.learn(5 * 128)
    agent = TRPO("CartPole-v1", seed=6, **SMALL)

    def kill_after_two(agent, metrics):
        if agent.n_updates == 2:
            agent.wait_for_critic()
            os.kill(agent._critic_process.pid, signal.SIGKILL)

    with pytest.warns(CriticProcessWarning, match=r"critic's worker process \(pid \d+\).*"
                      r"exit code -9; the critic is fitted in this process"):
        agent.learn(5 * 128, callback=kill_after_two)
    assert "Traceback" not in capfd.readouterr().err
    assert_same_run(agent, reference)
    assert agent._critic_process.pid is None  # gone, not restarted
    agent.close()
    reference.close()


def test_the_worker_starts_only_for_long_lbfgs_runs_with_parallel_update():
    # the default threshold: a 4-update run keeps the fit on the agent's thread
    agent = TRPO("CartPole-v1", seed=1, **SMALL)
    agent.learn(4 * 128)
    assert agent._critic_process is None
    agent.close()
    cases = [dict(critic_process=False), dict(parallel_update=False),
             dict(value_optimizer="adam", value_epochs=1)]
    for overrides in cases:
        agent = TRPO("CartPole-v1", seed=1, **SMALL, **overrides)
        agent._start_critic_process(10**6)
        assert agent._critic_process is None, overrides
        agent.close()
    agent = TRPO("CartPole-v1", seed=1, **SMALL)
    agent._start_critic_process(agent_module.CRITIC_PROCESS_MIN_UPDATES * 128)
    assert agent._critic_process is not None
    agent.close()
    assert agent._critic_process is None


def test_an_error_in_the_worker_is_reported_and_the_caller_fits_itself():
    critic = ValueFunction(3, hidden=(8,))
    critic.init(np.random.default_rng(0))
    obs = np.random.default_rng(1).standard_normal((50, 3))
    targets = obs.sum(axis=1)
    worker = CriticProcess(tuple(critic.net.sizes), critic.net.activation, 1)
    # a valid request: the worker's fit is this process's, to the bit
    theta, loss_before, mse_after = worker.fit(critic.theta, obs, targets, l2=0.0,
                                               lbfgs_iters=5, dtype="float64")
    here = ValueFunction(3, hidden=(8,))
    here.theta = critic.theta.copy()
    assert loss_before == here.fit(obs, targets, None, optimizer="lbfgs", lbfgs_iters=5)
    np.testing.assert_array_equal(theta, here.theta)
    err = here.predict(obs) - targets
    assert mse_after == float(err @ err) / err.shape[0]
    # a request the fit refuses: the worker says what it raised and is let go
    pid = worker.pid
    with pytest.warns(CriticProcessWarning, match="raised ValueError: dtype='float16'"):
        assert worker.fit(critic.theta, obs, targets, l2=0.0, lbfgs_iters=5,
                          dtype="float16") is None
    assert worker.pid is None and _gone(pid)
    assert worker.fit(critic.theta, obs, targets, l2=0.0, lbfgs_iters=5,
                      dtype="float64") is None  # no second warning, no restart
    worker.close()


def test_a_dropped_worker_is_killed_with_its_owner():
    worker = CriticProcess((3, 8, 1), "tanh", 1)
    proc = worker._proc
    del worker
    assert proc.returncode is not None  # killed and reaped by the finalizer


def test_a_worker_that_cannot_start_is_reported_and_the_run_goes_on(monkeypatch,
                                                                    worker_for_every_run):
    monkeypatch.setattr("sys.executable", "/nonexistent/python")
    reference = TRPO("CartPole-v1", seed=2, critic_process=False, **SMALL)
    reference.learn(2 * 128)
    agent = TRPO("CartPole-v1", seed=2, **SMALL)
    with pytest.warns(CriticProcessWarning, match="could not be started"):
        agent.learn(2 * 128)
    assert_same_run(agent, reference)
    agent.close()
    reference.close()


@pytest.mark.parametrize("rows", [50, 20_000])  # a batch within the pipe's buffer, and over it
def test_a_hung_worker_is_killed_and_the_caller_fits_itself(monkeypatch, rows):
    # A stopped worker answers nothing and, for a batch larger than the pipe's buffer
    # (20,000 x 3 float64: 480 KB), does not even take it: neither may hang the agent.
    critic = ValueFunction(3, hidden=(8,))
    critic.init(np.random.default_rng(0))
    obs = np.random.default_rng(1).standard_normal((rows, 3))
    worker = CriticProcess(tuple(critic.net.sizes), critic.net.activation, 1)
    # The first fit waits for the worker's imports, which a loaded machine can stretch past
    # a second: it runs with the default patience, the stopped worker meets a short one.
    assert worker.fit(critic.theta, obs[:50], obs[:50, 0], l2=0.0, lbfgs_iters=3,
                      dtype="float64") is not None
    monkeypatch.setattr("rl_adapters.critic_process.MIN_PATIENCE", 1.0)
    pid = worker.pid
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    with pytest.warns(CriticProcessWarning, match="took and answered no fit in 1 s"):
        assert worker.fit(critic.theta, obs, obs[:, 0], l2=0.0, lbfgs_iters=3,
                          dtype="float64") is None
    assert time.monotonic() - t0 < 30.0
    assert _gone(pid)
    worker.close()


def test_the_worker_takes_descriptors_beyond_select_s_limit():
    # select() refuses descriptors above 1023; an agent in a process with many open files
    # (Ray raises the limit) still talks to its worker.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit on open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = []
    try:
        while len(held) < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        worker = CriticProcess((3, 8, 1), "tanh", 1)
        assert worker._proc.stdin.fileno() > 1023
        critic = ValueFunction(3, hidden=(8,))
        critic.init(np.random.default_rng(0))
        obs = np.random.default_rng(1).standard_normal((40, 3))
        assert worker.fit(critic.theta, obs, obs[:, 0], l2=0.0, lbfgs_iters=3,
                          dtype="float64") is not None
        worker.close()
        assert worker.cpu_seconds is not None
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_worker_imports_what_this_process_imports(monkeypatch, tmp_path):
    # An rl_adapters/ in the working directory does not shadow the one this process uses,
    # and a pathlib.Path on sys.path (which import ignores) does not stop the worker.
    fake = tmp_path / "rl_adapters"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('the wrong rl_adapters')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [*sys.path, tmp_path / "elsewhere"])
    critic = ValueFunction(3, hidden=(8,))
    critic.init(np.random.default_rng(0))
    obs = np.random.default_rng(1).standard_normal((40, 3))
    worker = CriticProcess((3, 8, 1), "tanh", 1)
    assert worker.fit(critic.theta, obs, obs[:, 0], l2=0.0, lbfgs_iters=3,
                      dtype="float64") is not None
    worker.close()


def test_a_worker_cut_off_mid_message_exits_without_output():
    # The agent's process dies while sending: the worker reads half a message, and ends
    # (exit code 1) without printing a traceback anywhere.
    worker = CriticProcess((3, 8, 1), "tanh", 1)
    proc = worker._proc
    os.set_blocking(proc.stdin.fileno(), True)
    proc.stdin.write(struct.pack("<Q", 1000) + b"\x80\x05")
    proc.stdin.close()
    assert proc.wait(timeout=30) == 1
    assert proc.stderr is None  # (and its stderr is the null device: nothing to print)
    worker.close()
