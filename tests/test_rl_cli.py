"""The `trpo` command line: one-line errors that write nothing, and a tiny full run."""

import os

import gymnasium as gym
import pytest

from rl_adapters.cli import main


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _one_line_error(capsys, rc):
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, needle", [
    (["train", "NoSuchEnv-v0"], "unknown environment id"),
    # spaces the agent cannot act in (a TypeError, which used to end in a traceback)
    (["train", "FrozenLake-v1"], "observation space Discrete(16) is not supported"),
    (["train", "Blackjack-v1"], "FlattenObservation"),
    (["train", "CartPole-v1", "max_kl=abc"], "max_kl=abc"),
    (["train", "CartPole-v1", "nope=1"], "unknown config key"),
    (["train", "CartPole-v1", "max_kl=-1"], "max_kl"),
    (["train", "CartPole-v1", "--timesteps", "12x"], "--timesteps"),
    (["train", "CartPole-v1", "--n-envs", "0"], "n_envs"),
    (["train", "CartPole-v1", "--bogus"], "unrecognized"),
    (["eval", "missing_dir"], "no such run directory"),
    (["plot", "missing_dir"], "no such run directory"),
])
def test_errors_are_one_line_nonzero_and_write_nothing(in_tmp, capsys, argv, needle):
    try:
        rc = main([*argv, "--no-progress"] if argv[0] == "train" else argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    assert needle in _one_line_error(capsys, rc)
    assert os.listdir(in_tmp) == []


def test_missing_mujoco_is_one_line(in_tmp, capsys, monkeypatch):
    def no_mujoco(*args, **kwargs):
        raise gym.error.DependencyNotInstalled("No module named 'mujoco'")

    monkeypatch.setattr(gym, "make", no_mujoco)
    rc = main(["train", "HalfCheetah-v5", "--no-progress"])
    assert "gymnasium[mujoco]" in _one_line_error(capsys, rc)
    assert os.listdir(in_tmp) == []


def test_missing_module_of_a_module_prefixed_id_is_named(in_tmp, capsys):
    # `module:Env-v0` imports `module` to register the env: a missing one is not MuJoCo's
    rc = main(["train", "no_such_module_xyz:Env-v0", "--no-progress"])
    line = _one_line_error(capsys, rc)
    assert "'no_such_module_xyz', the module named before ':'" in line
    assert "mujoco" not in line
    assert os.listdir(in_tmp) == []


@pytest.mark.parametrize("env_id, message, hint", [
    # Gymnasium's own message says what to install: no second, contradicting hint
    ("CarRacing-v3", 'Box2D is not installed, run `pip install "gymnasium[box2d]"`', None),
    ("LunarLander-v3", "No module named 'Box2D'", "gymnasium[box2d]"),
    ("Hopper-v5", "No module named 'mujoco'", "gymnasium[mujoco]"),
])
def test_missing_dependency_hint_follows_the_entry_point(in_tmp, capsys, monkeypatch,
                                                        env_id, message, hint):
    def missing(*args, **kwargs):
        raise gym.error.DependencyNotInstalled(message)

    monkeypatch.setattr(gym, "make", missing)
    line = _one_line_error(capsys, main(["train", env_id, "--no-progress"]))
    assert message in line
    if hint is None:
        assert line.count("pip install") == 1
    else:
        assert line.rstrip().endswith(f"install it with: pip install '{hint}'")
    assert os.listdir(in_tmp) == []


def test_train_eval_plot(in_tmp, capsys):
    rc = main(["train", "CartPole-v1", "--timesteps", "128", "--seed", "3", "--out", "run",
               "--no-progress", "n_steps=64", "value_epochs=1"])
    assert rc == 0
    assert sorted(os.listdir("run")) == ["config.json", "learning_curve.png", "metrics.csv",
                                         "model.npz"]
    header, *rows = (in_tmp / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1
    for column in ("ep_return_mean", "kl", "surrogate_improvement", "backtracks", "cg_residual",
                   "entropy", "explained_variance", "value_loss", "steps_per_sec"):
        assert column in header.split(",")
    capsys.readouterr()
    assert main(["eval", "run", "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "CartPole-v1: return" in out and "+-" in out
    assert main(["plot", "run", "run", "--out", "both.png"]) == 0
    assert (in_tmp / "both.png").stat().st_size > 1000
