"""CLI fuzzing round: signals, eval arguments, partial run directories, many-run plots.

- A repeated SIGTERM (``timeout`` sends one to the process and one to its process group)
  asks again for the stop under way: it no longer aborts the run without saving.
- A second Ctrl-C that lands while a finalizer (``__del__``) runs was printed by Python as
  "Exception ignored ... Traceback" and then ignored: it now aborts as documented.
- ``trpo eval --seed -1`` was a raw ValueError traceback: a one-line usage error now.
- A run directory killed before its first checkpoint (config.json and metrics.csv, no
  model.npz) was refused with the advice to ``--resume`` it, which cannot work.
- ``trpo plot`` of many runs printed a matplotlib UserWarning (tight_layout).
"""

import os
import signal
import warnings

import pytest
from agent_checks import needs_main_thread

from rl_adapters.agent import TRPO
from rl_adapters.cli import main

BATCH = 32
TINY = ["--no-progress", "--n-envs", "1", "n_steps=32", "value_epochs=1"]
METRICS_HEADER = "update,timesteps,ep_return_mean\n"



def run_cli(capsys, argv):
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles):
    assert rc == 2, (rc, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


def _with_callback_hook(monkeypatch, hook):
    """Call ``hook(agent)`` right after each update, before the CLI's callback."""
    learn = TRPO.learn

    def hooked_learn(self, total, callback=None, progress_bar=False):
        def cb(agent, metrics):
            hook(agent)
            return callback(agent, metrics)

        return learn(self, total, callback=cb, progress_bar=progress_bar)

    monkeypatch.setattr(TRPO, "learn", hooked_learn)


@needs_main_thread
def test_a_repeated_sigterm_still_stops_and_saves(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def hook(agent):
        if agent.n_updates == 3:  # what `timeout` does: the process, then its group
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    _with_callback_hook(monkeypatch, hook)
    rc, _, err = run_cli(capsys, ["train", "CartPole-v1", "--timesteps", 10 * BATCH,
                                  "--out", "run", "--save-every", 0, *TINY])
    assert rc == 143, err
    assert "aborted" not in err
    assert err.strip().splitlines()[-1].startswith("trpo train: stopped at step 96;")
    assert TRPO.load("run/model.npz").num_timesteps == 3 * BATCH


class _SendsCtrlCWhenCollected:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)


@needs_main_thread
def test_a_second_ctrl_c_inside_a_finalizer_aborts_without_a_traceback(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)

    def hook(agent):
        if agent.n_updates == 3:
            os.kill(os.getpid(), signal.SIGINT)  # stop after this update
            obj = _SendsCtrlCWhenCollected()
            del obj  # the second Ctrl-C arrives in __del__

    _with_callback_hook(monkeypatch, hook)
    rc, _, err = run_cli(capsys, ["train", "CartPole-v1", "--timesteps", 10 * BATCH,
                                  "--out", "run", "--save-every", 2 * BATCH, *TINY])
    assert rc == 130
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip().splitlines()[-1].startswith(
        "trpo train: aborted mid-update; run/model.npz keeps the checkpoint of step 64;")
    assert TRPO.load("run/model.npz").num_timesteps == 2 * BATCH


@pytest.mark.parametrize("seed", ["-1", "-12345"])
def test_eval_negative_seed_is_a_usage_error(tmp_path, capsys, seed):
    (tmp_path / "model.npz").write_bytes(b"not read: the arguments are checked first")
    rc, _, err = run_cli(capsys, ["eval", tmp_path, "--seed", seed])
    assert_one_line_error(rc, err, "--seed", seed)


def test_out_with_run_files_but_no_checkpoint_is_not_sent_to_resume(tmp_path, capsys,
                                                                    monkeypatch):
    # What a kill before the first checkpoint leaves: config.json and metrics.csv only.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}\n")
    (tmp_path / "run" / "metrics.csv").write_text(METRICS_HEADER)
    rc, _, err = run_cli(capsys, ["train", "CartPole-v1", "--out", "run", *TINY])
    assert_one_line_error(rc, err, "'run'", "no model.npz", "--overwrite")
    assert "--resume" not in err
    assert sorted(os.listdir(tmp_path / "run")) == ["config.json", "metrics.csv"]


def test_plot_of_many_runs_prints_no_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dirs = []
    for i in range(40):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "metrics.csv").write_text(METRICS_HEADER + f"1,32,{i}\n2,64,{i + 1}\n")
        dirs.append(d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rc, out, err = run_cli(capsys, ["plot", *dirs, "--out", "curves.png"])
    assert rc == 0, err
    assert err == "" and out == "wrote curves.png\n"
    assert os.path.getsize("curves.png") > 0
