"""Checkpoints: atomic writes, no pickle, and a loaded policy that acts with NumPy only."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rl_adapters.checkpoint as ckpt
from rl_adapters import TRPO

SMALL = {"n_steps": 64, "n_envs": 1, "value_epochs": 1, "value_batch_size": 64}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    agent = TRPO("Pendulum-v1", seed=0, normalize_obs=True, **SMALL)
    agent.learn(128)
    path = tmp_path_factory.mktemp("ckpt") / "model.npz"
    agent.save(str(path))
    return agent, path


def test_checkpoint_is_one_npz_without_pickles(trained):
    _, path = trained
    with np.load(path, allow_pickle=False) as data:
        assert "theta" in data.files and "obs_rms/mean" in data.files
        assert all(data[k].dtype != object for k in data.files)


def test_failed_write_leaves_the_previous_checkpoint_intact(trained, monkeypatch):
    agent, path = trained
    before = path.read_bytes()

    def broken(fh, arrays):
        fh.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_write_arrays", broken)
    agent.learn(64)
    with pytest.raises(OSError, match="disk full"):
        agent.save(str(path))
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["model.npz"]  # no temporary file left
    TRPO.load(str(path))  # still a valid checkpoint


def test_loaded_agent_predicts_like_the_saved_one(trained):
    _, path = trained
    loaded = TRPO.load(str(path))
    obs = np.random.default_rng(0).standard_normal((5, 3))
    saved = TRPO.load(str(path))
    np.testing.assert_array_equal(loaded.predict(obs), saved.predict(obs))
    np.testing.assert_array_equal(loaded.theta, np.load(path)["theta"])


def test_numpy_only_policy_acts_like_the_agent(trained):
    _, path = trained
    agent = TRPO.load(str(path))
    obs = np.random.default_rng(1).standard_normal((4, 3)) * 3
    expected = agent.predict(obs)
    # A fresh interpreter where Gymnasium, Numba, SciPy and trustregion cannot be imported.
    code = textwrap.dedent(f"""
        import sys
        for name in ("gymnasium", "numba", "scipy", "trustregion", "matplotlib", "tqdm"):
            sys.modules[name] = None
        import numpy as np
        from rl_adapters import load_policy
        policy = load_policy({str(path)!r})
        obs = np.array({obs.tolist()!r})
        print(repr(policy.act(obs).tolist()))
        print(repr(np.asarray(policy.act(obs[0])).tolist()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    # The agent's few-row path is a fused Numba loop, the NumPy policy uses BLAS: the two
    # sum in different orders, so they agree to rounding, not bitwise.
    np.testing.assert_allclose(np.array(eval(out[0])), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.array(eval(out[1])), agent.predict(obs[0]), rtol=1e-12,
                               atol=1e-14)


def test_numpy_policy_discrete(tmp_path):
    agent = TRPO("CartPole-v1", seed=0, n_steps=64, n_envs=1)
    agent.learn(64)
    agent.save(str(tmp_path / "m.npz"))
    policy = ckpt.load_policy(str(tmp_path / "m.npz"))
    obs = np.random.default_rng(2).standard_normal((16, 4))  # > 8 rows: both use BLAS
    np.testing.assert_array_equal(policy.act(obs), agent.predict(obs))


def test_load_rejects_foreign_files(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(2))
    with pytest.raises(ValueError, match="unsupported checkpoint format"):
        TRPO.load(str(bad))
