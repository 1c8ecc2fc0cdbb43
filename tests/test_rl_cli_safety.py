"""Issue 9, cause 8: the `trpo` command line neither loses nor overwrites work.

Every expected error (a damaged, truncated or empty model or CSV, a missing run directory,
an unwritable ``--out``, an unknown environment, a run that would be overwritten) is one
line on stderr naming the path and what is wrong, with a non-zero exit and no traceback.
A run writes its metrics as it goes and checkpoints every ``--save-every`` steps, so a
``kill -9`` at any point leaves a loadable checkpoint at most one interval old, and
``--resume`` continues it bitwise.
"""

import csv
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from agent_checks import needs_main_thread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rl_adapters.agent import METRIC_KEYS, TEXT_METRIC_KEYS, TRPO
from rl_adapters.cli import main

# A tiny run: one environment, 32 steps per update, one critic epoch.
BATCH = 32
TINY = ["--no-progress", "--n-envs", "1", "n_steps=32", "value_epochs=1"]
# Columns that depend on the clock, not on the run.
TIMING = {"steps_per_sec", "env_time", "policy_time", "update_time", "wall_time"}


def run_cli(capsys, argv):
    """``main(argv)`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles):
    assert rc != 0
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def train(capsys, out, timesteps, *extra):
    rc, _, err = run_cli(capsys, ["train", "CartPole-v1", "--timesteps", timesteps, "--out", out,
                                  *TINY, *extra])
    assert rc == 0, err
    return err


def checkpoint_arrays(path):
    """Every array of a checkpoint except the per-update metrics (they hold wall times)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files if "metric" not in k}


def assert_same_checkpoint(path_a, path_b):
    a, b = checkpoint_arrays(path_a), checkpoint_arrays(path_b)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), key


def metric_rows(path):
    """Complete rows of a metrics.csv (a line cut by a kill is not one), as dicts."""
    with open(path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    complete = text[: text.rfind("\n") + 1]
    header, *rows = list(csv.reader(complete.splitlines()))
    assert tuple(header) == tuple(METRIC_KEYS)
    return [{k: v if k in TEXT_METRIC_KEYS else float(v) for k, v in zip(header, row, strict=True)}
            for row in rows if len(row) == len(header)]


def assert_same_rows(rows_a, rows_b):
    """Same updates with the same values (NaN included), wall-clock columns aside."""
    keys = [k for k in METRIC_KEYS if k not in TIMING and k not in TEXT_METRIC_KEYS]
    np.testing.assert_array_equal([[r[k] for k in keys] for r in rows_a],
                                  [[r[k] for k in keys] for r in rows_b])
    for key in TEXT_METRIC_KEYS:
        assert [r[key] for r in rows_a] == [r[key] for r in rows_b], key


def temp_files(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith(".tmp-"))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A finished tiny run (2 updates); tests copy it before damaging anything."""
    root = tmp_path_factory.mktemp("base")
    rc = main(["train", "CartPole-v1", "--timesteps", str(2 * BATCH), "--out",
               str(root / "run"), *TINY])
    assert rc == 0
    return root / "run"


@pytest.fixture
def run(base_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(base_run, tmp_path / "run")
    return tmp_path / "run"


# ----------------------------------------------------------------- trpo eval
def test_eval_missing_run_dir(run, capsys):
    rc, _, err = run_cli(capsys, ["eval", "no_such_run"])
    assert_one_line_error(rc, err, "no_such_run", "no such run directory")


def test_eval_run_dir_without_model(run, capsys):
    (run / "model.npz").unlink()
    rc, _, err = run_cli(capsys, ["eval", run])
    assert_one_line_error(rc, err, str(run), "has no model.npz")


def test_eval_empty_model(run, capsys):
    (run / "model.npz").write_bytes(b"")
    rc, _, err = run_cli(capsys, ["eval", run])
    assert_one_line_error(rc, err, run / "model.npz", "empty")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_eval_truncated_model(run, capsys, keep):
    data = (run / "model.npz").read_bytes()
    (run / "model.npz").write_bytes(data[: int(keep * len(data))])
    rc, _, err = run_cli(capsys, ["eval", run])
    assert_one_line_error(rc, err, run / "model.npz", "damaged, truncated")


def test_eval_random_bytes_model(run, capsys):
    (run / "model.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    rc, _, err = run_cli(capsys, ["eval", run])
    assert_one_line_error(rc, err, run / "model.npz", "not a trpo checkpoint")


def _central_directory_field(data, offset, value):
    """Set a 2-byte field of the first central-directory entry of a zip archive."""
    entry = data.index(b"PK\x01\x02")
    data[entry + offset: entry + offset + 2] = value.to_bytes(2, "little")


@pytest.mark.parametrize(("damage", "needle"), [
    (lambda d: _central_directory_field(d, 10, 99), "compression method is not supported"),
    (lambda d: _central_directory_field(d, 6, 97), "zip file version 9.7"),
    (lambda d: d.__setitem__(slice(-22, -18), b"XXXX"), "BadZipFile"),  # end-of-archive record
    (lambda d: d.__setitem__(len(d) // 2, d[len(d) // 2] ^ 1), "fails its CRC-32 check"),
])
def test_eval_damaged_archive_structure(run, capsys, damage, needle):
    data = bytearray((run / "model.npz").read_bytes())
    damage(data)
    (run / "model.npz").write_bytes(bytes(data))
    rc, _, err = run_cli(capsys, ["eval", run])
    assert_one_line_error(rc, err, run / "model.npz", "damaged", needle)


def test_eval_model_of_an_unknown_environment(run, capsys):
    with np.load(run / "model.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["env_id"] = np.array("NoSuchEnv-v0")
    np.savez(run / "model.npz", **arrays)
    rc, _, err = run_cli(capsys, ["eval", run])
    assert_one_line_error(rc, err, run / "model.npz", "environment cannot be made",
                          "NoSuchEnv")


def test_eval_bad_episode_count(run, capsys):
    rc, _, err = run_cli(capsys, ["eval", run, "--episodes", "0"])
    assert_one_line_error(rc, err, "--episodes")


@pytest.fixture(scope="module")
def model_bytes(base_run):
    return (base_run / "model.npz").read_bytes()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_eval_on_corrupted_bytes_is_one_line_or_a_result(model_bytes, capsys, data):
    damaged = bytearray(model_bytes)
    n = data.draw(st.integers(1, 8), label="n_bytes")
    for _ in range(n):
        offset = data.draw(st.integers(0, len(damaged) - 1), label="offset")
        damaged[offset] = data.draw(st.integers(0, 255).filter(
            lambda b, o=offset: b != damaged[o]), label="byte")
    if data.draw(st.booleans(), label="truncate"):
        damaged = damaged[: data.draw(st.integers(0, len(damaged) - 1), label="length")]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.npz")
        with open(path, "wb") as fh:
            fh.write(bytes(damaged))
        rc, out, err = run_cli(capsys, ["eval", tmp, "--episodes", "1"])
    if rc == 0:  # a byte no reader looks at (a timestamp, a comment): the model is whole
        assert "CartPole-v1: return" in out and err == ""
    else:
        assert_one_line_error(rc, err, path, "cannot load")


# ----------------------------------------------------------------- trpo plot
@pytest.mark.parametrize(("content", "needles"), [
    (b"", ["empty"]),
    (b"update,timesteps\n1,32\n", ["lacks the column(s) ep_return_mean"]),
    (None, ["damaged or truncated", "line 3"]),  # the last row cut mid-line
    ("cut-header", ["lacks the column(s)"]),
    ("not-a-number", ["line 2, column ep_return_mean", "'abc' is not a number"]),
    (b"\xff\xfe\x00garbage\x9c\n", ["not UTF-8"]),
])
def test_plot_damaged_csv(run, capsys, content, needles):
    path = run / "metrics.csv"
    text = path.read_text()
    if content is None:
        content = text[: len(text) - 40].encode()
    elif content == "cut-header":
        content = text[:30].encode()
    elif content == "not-a-number":
        header, row, *rest = text.splitlines(keepends=True)
        fields = row.split(",")
        fields[METRIC_KEYS.index("ep_return_mean")] = "abc"
        content = (header + ",".join(fields) + "".join(rest)).encode()
    path.write_bytes(content)
    rc, _, err = run_cli(capsys, ["plot", run, "--out", "curves.png"])
    assert_one_line_error(rc, err, path, *needles)
    assert not os.path.exists("curves.png")


def test_plot_missing_run_dir_and_missing_csv(run, capsys):
    rc, _, err = run_cli(capsys, ["plot", run, "nope"])
    assert_one_line_error(rc, err, "'nope'", "no such run directory")
    (run / "metrics.csv").unlink()
    rc, _, err = run_cli(capsys, ["plot", run])
    assert_one_line_error(rc, err, str(run), "has no metrics.csv")


def test_plot_unwritable_out(run, capsys):
    rc, _, err = run_cli(capsys, ["plot", run, "--out", run / "model.npz" / "curves.png"])
    assert_one_line_error(rc, err, run / "model.npz" / "curves.png", "cannot write")
    assert temp_files(run) == []


# ----------------------------------------------------------------- trpo train: --out
def test_train_out_under_a_file_cannot_be_created(run, capsys):
    out = run / "model.npz" / "sub"
    rc, _, err = run_cli(capsys, ["train", "CartPole-v1", "--out", out, *TINY])
    assert_one_line_error(rc, err, out, "cannot be created")


def test_train_out_is_a_file(run, capsys):
    rc, _, err = run_cli(capsys, ["train", "CartPole-v1", "--out", run / "metrics.csv", *TINY])
    assert_one_line_error(rc, err, run / "metrics.csv", "not a directory")


@pytest.mark.skipif(not os.path.isdir("/proc/self") or sys.platform != "linux",
                    reason="needs a directory no one may write into")
def test_train_out_is_an_unwritable_directory(run, capsys):
    rc, _, err = run_cli(capsys, ["train", "CartPole-v1", "--out", "/proc/self", *TINY])
    assert_one_line_error(rc, err, "/proc/self", "is not writable")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into a read-only directory")
def test_train_out_without_write_permission(run, capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        rc, _, err = run_cli(capsys, ["train", "CartPole-v1", "--out", locked / "a", *TINY])
        assert_one_line_error(rc, err, locked / "a", "cannot be created")
        rc, _, err = run_cli(capsys, ["train", "CartPole-v1", "--out", locked, *TINY])
        assert_one_line_error(rc, err, locked, "is not writable")
    finally:
        locked.chmod(0o700)


def test_train_refuses_to_overwrite_a_run(run, capsys):
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    rc, _, err = run_cli(capsys, ["train", "CartPole-v1", "--out", run, *TINY])
    assert_one_line_error(rc, err, str(run), "already holds a run", "--overwrite", "--resume")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_train_unknown_environment(run, capsys):
    rc, _, err = run_cli(capsys, ["train", "NoSuchEnv-v0", "--out", "fresh", *TINY])
    assert_one_line_error(rc, err, "NoSuchEnv-v0", "unknown environment id")
    assert not os.path.exists("fresh")


@pytest.mark.parametrize(("argv", "needles"), [
    (["train", "--save-every", "-1", "CartPole-v1"], ["--save-every", "-1"]),
    (["train", "--no-progress"], ["environment id", "--resume"]),
    (["train", "CartPole-v1", "Acrobot-v1"], ["unrecognized arguments: Acrobot-v1"]),
])
def test_train_usage_errors(run, capsys, argv, needles):
    rc, _, err = run_cli(capsys, argv)
    assert_one_line_error(rc, err, *needles)


def test_overwrite_replaces_the_run(run, capsys):
    train(capsys, run, BATCH, "--overwrite", "--seed", "5")
    assert len(metric_rows(run / "metrics.csv")) == 1
    assert json.loads((run / "config.json").read_text())["seed"] == 5
    assert TRPO.load(str(run / "model.npz")).num_timesteps == BATCH
    assert temp_files(run) == []


# ----------------------------------------------------------------- trpo train --resume
def test_resume_missing_run_dir(run, capsys):
    rc, _, err = run_cli(capsys, ["train", "--resume", "gone"])
    assert_one_line_error(rc, err, "'gone'", "no such run directory")


def test_resume_dir_without_model(run, capsys):
    (run / "model.npz").unlink()
    rc, _, err = run_cli(capsys, ["train", "--resume", run])
    assert_one_line_error(rc, err, str(run), "has no model.npz")


@pytest.mark.parametrize("damage", ["empty", "truncated", "flipped"])
def test_resume_damaged_model(run, capsys, damage):
    path = run / "model.npz"
    data = bytearray(path.read_bytes())
    if damage == "empty":
        data = bytearray()
    elif damage == "truncated":
        data = data[: len(data) // 3]
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    before = (run / "metrics.csv").read_bytes()
    rc, _, err = run_cli(capsys, ["train", "--resume", run, "--no-progress"])
    assert_one_line_error(rc, err, path, "cannot load")
    assert (run / "metrics.csv").read_bytes() == before
    assert path.read_bytes() == bytes(data)


@pytest.mark.parametrize(("extra", "needles"), [
    (["--out", "elsewhere"], ["--out"]),
    (["--overwrite"], ["--overwrite"]),
    (["--n-envs", "2"], ["--n-envs"]),
    (["max_kl=0.5"], ["overrides"]),
    (["Acrobot-v1"], ["run on CartPole-v1, not Acrobot-v1"]),
    (["--seed", "7"], ["seed 0, not 7"]),
])
def test_resume_conflicting_options(run, capsys, extra, needles):
    rc, _, err = run_cli(capsys, ["train", "--resume", run, "--no-progress", *extra])
    assert_one_line_error(rc, err, str(run), *needles)


def test_resume_without_a_target(run, capsys):
    (run / "config.json").write_text("{not json")
    rc, _, err = run_cli(capsys, ["train", "--resume", run, "--no-progress"])
    assert_one_line_error(rc, err, run / "config.json", "--timesteps")


def test_resume_of_a_run_in_use(run, capsys):
    fcntl = pytest.importorskip("fcntl")
    fd = os.open(run, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc, _, err = run_cli(capsys, ["train", "--resume", run, "--timesteps", "999"])
        assert_one_line_error(rc, err, str(run), "in use by another")
    finally:
        os.close(fd)


def test_resume_is_bitwise_the_uninterrupted_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train(capsys, "whole", 8 * BATCH)
    train(capsys, "halves", 4 * BATCH)
    rc, _, err = run_cli(capsys, ["train", "--resume", "halves", "--timesteps", 8 * BATCH,
                                  "--no-progress"])
    assert rc == 0, err
    assert err.strip() == "trpo train: resuming halves at step 128 (update 4) towards 256 steps"
    assert_same_checkpoint("whole/model.npz", "halves/model.npz")
    whole, halves = metric_rows("whole/metrics.csv"), metric_rows("halves/metrics.csv")
    assert [r["update"] for r in halves] == list(range(1, 9))
    assert_same_rows(halves, whole)
    # Resuming a finished run trains nothing and changes nothing.
    before = (tmp_path / "halves" / "model.npz").read_bytes()
    rc, _, err = run_cli(capsys, ["train", "--resume", "halves", "--no-progress"])
    assert rc == 0 and "nothing to train" in err
    assert (tmp_path / "halves" / "model.npz").read_bytes() == before
    assert len(metric_rows("halves/metrics.csv")) == 8


def test_resume_drops_rows_past_the_checkpoint_and_cleans_temp_files(tmp_path, capsys,
                                                                     monkeypatch):
    # What a kill leaves: rows beyond the last checkpoint, one cut mid-line, and the
    # temporary file of a save that never finished.
    monkeypatch.chdir(tmp_path)
    train(capsys, "whole", 6 * BATCH)
    train(capsys, "killed", 3 * BATCH)
    text = (tmp_path / "whole" / "metrics.csv").read_text()
    (tmp_path / "killed" / "metrics.csv").write_text(text[: len(text) - 25])
    (tmp_path / "killed" / ".tmp-k1ll3d.npz").write_bytes(b"PK\x03\x04half a checkpoint")
    config = json.loads((tmp_path / "killed" / "config.json").read_text())
    config["target_timesteps"] = 6 * BATCH
    (tmp_path / "killed" / "config.json").write_text(json.dumps(config))
    rc, _, err = run_cli(capsys, ["train", "--resume", "killed", "--no-progress"])
    assert rc == 0, err
    notice, resuming = err.strip().splitlines()
    assert notice == ("trpo train: removed 1 temporary file(s) left in killed by an "
                      "interrupted save: .tmp-k1ll3d.npz")
    assert resuming.startswith("trpo train: resuming killed at step 96 (update 3)")
    assert temp_files(tmp_path / "killed") == []
    assert_same_checkpoint("whole/model.npz", "killed/model.npz")
    assert_same_rows(metric_rows("killed/metrics.csv"), metric_rows("whole/metrics.csv"))


def test_metrics_are_on_disk_while_training(tmp_path, capsys, monkeypatch):
    # The callback sees the CSV as training goes: every update whose critic fit has ended
    # is there. The fit runs on into the next rollout, so an update writes the row of the
    # one before it, and a checkpoint waits for the fit and writes its own row first.
    monkeypatch.chdir(tmp_path)
    seen = []
    learn = TRPO.learn

    def spying_learn(self, total, callback=None, progress_bar=False):
        def spy(agent, metrics):
            out = callback(agent, metrics)
            seen.append((agent.n_updates, len(metric_rows("run/metrics.csv")),
                         TRPO.load("run/model.npz").num_timesteps))
            return out

        return learn(self, total, callback=spy, progress_bar=progress_bar)

    monkeypatch.setattr(TRPO, "learn", spying_learn)
    train(capsys, "run", 5 * BATCH, "--save-every", 2 * BATCH)
    assert [(u, rows) for u, rows, _ in seen] == [(1, 0), (2, 2), (3, 2), (4, 4), (5, 4)]
    assert [ckpt for _, _, ckpt in seen] == [0, 64, 64, 128, 128]
    rows = metric_rows("run/metrics.csv")
    assert len(rows) == 5
    # Every row was written with its critic's columns in, never a pending fit's.
    assert all(math.isfinite(float(row["value_loss"])) for row in rows)
    assert all(row["value_fit_status"] != "PENDING" for row in rows)


# ----------------------------------------------------------------- signals and kill -9
def _cli(*argv):
    return [sys.executable, "-m", "rl_adapters.cli", *map(str, argv)]


def _wait_for(predicate, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _n_rows(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().count("\n") - 1
    except FileNotFoundError:
        return -1


def _signal_after_update(monkeypatch, signals_at):
    """Make this process receive ``signals_at[u]`` (a list) right after update ``u``."""
    learn = TRPO.learn

    def signalling_learn(self, total, callback=None, progress_bar=False):
        def cb(agent, metrics):
            for sig in signals_at.get(agent.n_updates, []):
                os.kill(os.getpid(), sig)
            return callback(agent, metrics)

        return learn(self, total, callback=cb, progress_bar=progress_bar)

    monkeypatch.setattr(TRPO, "learn", signalling_learn)




@needs_main_thread
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_at_the_end_of_the_update_and_saves(tmp_path, capsys, monkeypatch,
                                                           sig, code):
    monkeypatch.chdir(tmp_path)
    _signal_after_update(monkeypatch, {3: [sig]})
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    rc, _, err = run_cli(capsys, ["train", "CartPole-v1", "--timesteps", 10 * BATCH,
                                  "--out", "run", "--save-every", 0, *TINY])
    assert rc == code
    assert err.strip().splitlines()[-1] == ("trpo train: stopped at step 96; run saved in run; "
                                            "continue with: trpo train --resume run")
    assert TRPO.load("run/model.npz").num_timesteps == 3 * BATCH
    assert len(metric_rows("run/metrics.csv")) == 3
    assert temp_files(tmp_path / "run") == []
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


@needs_main_thread
def test_a_second_ctrl_c_aborts_without_saving_a_half_update(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _signal_after_update(monkeypatch, {3: [signal.SIGINT, signal.SIGINT]})
    rc, _, err = run_cli(capsys, ["train", "CartPole-v1", "--timesteps", 10 * BATCH,
                                  "--out", "run", "--save-every", 2 * BATCH, *TINY])
    assert rc == 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("trpo train: aborted mid-update; run/model.npz keeps "
                                            "the checkpoint of step 64; continue with: "
                                            "trpo train --resume run")
    assert TRPO.load("run/model.npz").num_timesteps == 2 * BATCH


@pytest.mark.slow
def test_kill_9_at_random_points_leaves_a_recent_checkpoint_and_resumes_bitwise(
        tmp_path, capsys, monkeypatch):
    """Three SIGKILLs at seeded random points of a training run, each followed by a resume.

    After every kill the checkpoint loads and is at most one ``--save-every`` interval
    behind the last row of metrics.csv; the next start removes the temporary files the
    kill left; and the run, resumed to the end, is bitwise the uninterrupted one.
    """
    monkeypatch.chdir(tmp_path)
    save_every = BATCH  # a save after every update: many kills land inside one
    rng = random.Random(9)
    first = _cli("train", "CartPole-v1", "--timesteps", 10**6, "--out", "run",
                 "--save-every", save_every, *TINY)
    resume = ["train", "--resume", "run", "--save-every", save_every, "--no-progress"]
    left_behind: list[str] = []
    for attempt in range(3):
        proc = subprocess.Popen(first if attempt == 0 else _cli(*resume), text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        rows_at_start = 0
        if attempt > 0:
            # The next start removes what the kill left, before it trains.
            lines = [proc.stderr.readline()]
            while not lines[-1].startswith("trpo train: resuming"):
                assert lines[-1], "".join(lines)
                lines.append(proc.stderr.readline())
            if left_behind:
                assert lines[0].startswith(f"trpo train: removed {len(left_behind)} temporary")
            assert not set(left_behind) & set(temp_files("run"))
            rows_at_start = _n_rows("run/metrics.csv")
        # Kill in the steady state: after the first update of this process, at random.
        _wait_for(lambda n=rows_at_start: _n_rows("run/metrics.csv") > n, proc)
        time.sleep(rng.uniform(0.0, 0.25))
        proc.kill()
        proc.wait(timeout=60)
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        progress = metric_rows("run/metrics.csv")[-1]["timesteps"]
        saved = TRPO.load("run/model.npz").num_timesteps  # always loadable
        left_behind = temp_files("run")
        with capsys.disabled():  # shown with pytest -s
            print(f"kill {attempt}: checkpoint at step {saved}, metrics at step "
                  f"{progress:.0f}, temporary files left: {left_behind}")
        assert saved <= progress <= saved + save_every
    # The last start runs here, to a total a few updates past the last kill.
    target = int(progress) + 4 * BATCH
    rc, _, err = run_cli(capsys, [*resume, "--timesteps", target])
    assert rc == 0, err
    assert "Traceback" not in err
    if left_behind:
        assert err.startswith(f"trpo train: removed {len(left_behind)} temporary")
    assert temp_files("run") == []
    rows = metric_rows("run/metrics.csv")
    assert [r["update"] for r in rows] == list(range(1, target // BATCH + 1))
    # Killed three times and resumed: bitwise the run that was never interrupted.
    train(capsys, "whole", target)
    assert_same_checkpoint("whole/model.npz", "run/model.npz")
    assert_same_rows(rows, metric_rows("whole/metrics.csv"))
