"""Issue 9, cause 7: ``TRPO.load`` and ``load_policy`` check the file, never trust it.

A damaged, foreign or mismatched checkpoint gives one CheckpointError naming the path and
what does not match (the entry, the format version, the environment's spaces), never a raw
exception from zipfile or NumPy, nor a hint to load pickles.  A corruption in a place that
does not matter loads into exactly the saved state.
"""

import io
import os
import pickle
import zipfile

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rl_adapters import TRPO, CheckpointError, StateError, load_policy
from rl_adapters.checkpoint import (
    NumpyPolicy,
    _parse_npz,
    flatten_state,
    read_state,
    unflatten_state,
    write_state,
)
from rl_adapters.policies import CategoricalPolicy, DiagGaussianPolicy
from rl_adapters.sde import StateDependentGaussianPolicy

SMALL = {"n_steps": 16, "n_envs": 2, "value_epochs": 1, "value_batch_size": 16,
         "value_optimizer": "adam", "normalize_obs": True, "normalize_reward": True}
# Every policy kind: categorical, the plain Gaussian (Pendulum with gSDE off) and gSDE
# (Pendulum's default): (env, overrides, the policy class expected).
POLICIES = [("CartPole-v1", {}, CategoricalPolicy),
            ("Pendulum-v1", {"use_sde": False}, DiagGaussianPolicy),
            ("Pendulum-v1", {}, StateDependentGaussianPolicy)]
POLICY_IDS = ["CartPole-v1", "Pendulum-v1-gaussian", "Pendulum-v1-gsde"]


@pytest.fixture(scope="module", params=POLICIES, ids=POLICY_IDS)
def saved(request, tmp_path_factory):
    """A checkpoint of a trained agent: (path, its bytes, its flat state)."""
    env_id, overrides, policy_class = request.param
    agent = TRPO(env_id, seed=0, **SMALL, **overrides)
    assert type(agent.policy) is policy_class
    agent.learn(64)
    path = tmp_path_factory.mktemp("ckpt") / "model.npz"
    agent.save(str(path))
    state = {k: np.array(v, copy=True) for k, v in flatten_state(agent.state_dict()).items()}
    agent.close()
    return path, path.read_bytes(), state


def _assert_state(agent, expected):
    got = flatten_state(agent.state_dict())
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def _load_or_checkpoint_error(path, expected):
    """Either a CheckpointError naming the path or exactly the saved state (and policy)."""
    try:
        agent = TRPO.load(str(path))
    except CheckpointError as err:
        assert f"path={str(path)!r}" in str(err)
        assert "allow_pickle" not in str(err)
    else:
        try:
            _assert_state(agent, expected)
        finally:
            agent.close()
    try:
        policy = load_policy(str(path))
    except CheckpointError as err:
        assert f"path={str(path)!r}" in str(err)
    else:
        np.testing.assert_array_equal(policy.theta, expected["theta"])


# ------------------------------------------------------------ damaged files
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bit_flips_at_random_offsets(saved, tmp_path, data):
    _, raw, expected = saved
    damaged = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3), label="flips")):
        offset = data.draw(st.integers(0, len(raw) - 1), label="offset")
        damaged[offset] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(damaged))
    _load_or_checkpoint_error(bad, expected)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_bytes_written_at_random_offsets(saved, tmp_path, data):
    _, raw, expected = saved
    offset = data.draw(st.integers(0, len(raw) - 1), label="offset")
    junk = data.draw(st.binary(min_size=1, max_size=64), label="bytes")
    bad = tmp_path / "overwritten.npz"
    bad.write_bytes(raw[:offset] + junk + raw[offset + len(junk):])
    _load_or_checkpoint_error(bad, expected)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncated_files_never_load(saved, tmp_path, data):
    _, raw, _ = saved
    cut = data.draw(st.integers(0, len(raw) - 1), label="length kept")
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(raw[:cut])
    with pytest.raises(CheckpointError, match=f"path={str(bad)!r}"):
        TRPO.load(str(bad))
    with pytest.raises(CheckpointError):
        load_policy(str(bad))


@pytest.mark.parametrize(("content", "message"), [
    (b"", "the file is empty"),
    (b"\x00" * 100, "not a readable checkpoint"),
    (np.random.default_rng(0).bytes(4096), "not a readable checkpoint"),
    (b"PK\x03\x04" + np.random.default_rng(1).bytes(200), "not a readable checkpoint"),
    (pickle.dumps({"theta": np.zeros(3)}), "not a readable checkpoint"),
    (b"\x93NUMPY\x01\x00" + b"garbage", "not a readable checkpoint"),
])
def test_foreign_files_are_refused(tmp_path, content, message):
    bad = tmp_path / "foreign.npz"
    bad.write_bytes(content)
    for load in (TRPO.load, load_policy):
        with pytest.raises(CheckpointError, match=message) as info:
            load(str(bad))
        assert "allow_pickle" not in str(info.value)


def test_a_plain_npy_file_is_refused(tmp_path):
    bad = tmp_path / "array.npy"
    np.save(bad, np.zeros(3))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        TRPO.load(str(bad))


def _rewrite(raw, change):
    """The checkpoint ``raw`` with its arrays passed through ``change(dict) -> dict``."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        arrays = {name[:-4]: np.load(io.BytesIO(archive.read(name)), allow_pickle=True)
                  for name in archive.namelist()}
    out = io.BytesIO()
    np.savez(out, **change(arrays))
    return out.getvalue()


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: {**a, "format_version": np.asarray(1)}, "unsupported checkpoint format 1"),
    (lambda a: {**a, "format_version": np.asarray(3)}, "unsupported checkpoint format 3"),
    (lambda a: {**a, "format_version": np.asarray("2")}, "unsupported checkpoint format '2'"),
    (lambda a: {**a, "format_version": np.asarray([2, 2])}, r"unsupported checkpoint format \[2, 2\]"),
    (lambda a: {k: v for k, v in a.items() if k != "format_version"},
     "unsupported checkpoint format none"),
    (lambda a: {**a, "theta": np.array([object()], dtype=object)},
     "pickled objects are refused"),
    (lambda a: {**a, "theta": np.zeros(3, dtype=[("x", "f8")])}, "numbers and strings only"),
    (lambda a: {**a, "value//theta": np.zeros(2)}, "empty name"),
    (lambda a: {**a, "theta/x": np.zeros(2)}, "both a value and a group"),
])
def test_container_and_version_errors_name_the_problem(saved, tmp_path, change, message):
    _, raw, _ = saved
    bad = tmp_path / "changed.npz"
    bad.write_bytes(_rewrite(raw, change))
    for load in (TRPO.load, load_policy):
        with pytest.raises(CheckpointError, match=message) as info:
            load(str(bad))
        assert str(info.value).startswith(f"path={str(bad)!r}")
        assert "allow_pickle" not in str(info.value)


def test_a_member_that_is_not_an_array_is_refused(saved, tmp_path):
    _, raw, _ = saved
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive, zipfile.ZipFile(io.BytesIO(raw)) as source:
        for name in source.namelist():
            archive.writestr(name, source.read(name))
        archive.writestr("notes.txt", b"hello")
    bad = tmp_path / "extra.npz"
    bad.write_bytes(out.getvalue())
    with pytest.raises(CheckpointError, match=r"'notes\.txt' is not a \.npy array"):
        TRPO.load(str(bad))


# -------------------------------------------------- entries that do not fit
def _fixed_layout_keys(state):
    """Entries whose presence, dtype and shape are fixed by the config and the env."""
    return sorted(k for k in state if not k.startswith(("metrics/", "collector/snapshots/"))
                  and k not in ("episode_returns", "episode_lengths"))


def _mutations(value):
    """Ways to spoil one entry: (name, new value or None to delete)."""
    out = [("deleted", None), ("a string", np.asarray("spoiled"))]
    if value.dtype.kind in "iuf" and value.size:
        out.append(("truncated", value.reshape(-1)[:-1]))
        out.append(("one more", np.concatenate([value.reshape(-1), value.reshape(-1)[:1]])))
        out.append(("as float32" if value.dtype.kind == "f" else "as float64",
                    value.astype(np.float32 if value.dtype.kind == "f" else np.float64)))
    if value.dtype.kind == "f" and value.size:
        nan = value.copy()
        nan.reshape(-1)[0] = np.nan
        out.append(("a NaN", nan))
    return out


def test_every_fixed_entry_is_checked(saved, tmp_path):
    """Each spoiled entry of a real checkpoint: an error naming that entry, and the agent
    it was loaded into unchanged.

    The members as ``read_state`` parses them, spoiled, then nested as it does, loaded
    into one agent rebuilt from the checkpoint (what ``TRPO.load`` does, without a file
    and new environments for each of the ~150 cases).
    """
    path, raw, state = saved
    agent = TRPO.load(str(path))
    members = _parse_npz(raw)
    del members["format_version"]
    n_cases = 0
    for key in _fixed_layout_keys(state):
        for what, new in _mutations(state[key]):
            if key in ("config", "env_id") and what == "a string":
                continue  # a valid type: covered by the tests below
            if key == "seed" and what == "as float64":
                new = np.asarray(1.5)
            if what == "as float32" and state[key].ndim == 0:
                continue  # a 0-d entry is read back as a Python float: its value is checked
            if what in ("truncated", "one more") and state[key].dtype == np.uint64:
                # A generator's ints are 64-bit words, least significant first: one word
                # less, or one more, can be another valid state, or the same one (a zero
                # word).  The file's CRC-32 guards the bytes.
                continue

            spoiled = dict(members)
            if new is None:
                del spoiled[key]
            else:
                spoiled[key] = new
            with pytest.raises(StateError) as info:
                agent.load_state_dict(unflatten_state(spoiled))
            _assert_state(agent, state)  # a failed load changes nothing
            message = str(info.value)
            # The entry, or a group it belongs to (a generator state is tried whole).
            parts = key.split("/")
            named = {"/".join(parts[:i]) for i in range(1, len(parts))}
            assert key in message or any(f"{g}: " in message for g in named), (key, what,
                                                                                message)
            if key.startswith(("policy/", "theta", "obs_rms/mean", "obs_rms/var",
                               "obs_rms/epsilon", "config")):
                with pytest.raises(StateError, match=key.split("/")[0]):
                    NumpyPolicy(unflatten_state(spoiled))  # what load_policy reads
            n_cases += 1
    agent.close()
    assert n_cases > 100


def test_extra_entries_are_refused(saved, tmp_path):
    _, raw, _ = saved
    for key in ("surprise", "value/surprise", "obs_rms/surprise", "collector/rngs/7/x"):
        bad = tmp_path / "extra.npz"
        bad.write_bytes(_rewrite(raw, lambda a, key=key: {**a, key: np.zeros(1)}))
        with pytest.raises(CheckpointError, match="unexpected entries") as info:
            TRPO.load(str(bad))
        assert key.split("/")[-1] in str(info.value) or "7" in str(info.value)


def test_a_truncated_parameter_vector_does_not_load(saved, tmp_path):
    _, raw, state = saved
    for key in ("theta", "value/theta", "value/adam/m", "obs_rms/mean"):
        bad = tmp_path / "short.npz"
        bad.write_bytes(_rewrite(raw, lambda a, key=key: {**a, key: a[key][:-1]}))
        n = state[key].shape[0]
        with pytest.raises(CheckpointError, match=rf"{key}: shape \({n - 1},\), expected \({n},\)"):
            TRPO.load(str(bad))
    bad = tmp_path / "short_policy.npz"
    bad.write_bytes(_rewrite(raw, lambda a: {**a, "theta": a["theta"][:-1]}))
    with pytest.raises(CheckpointError, match="theta: shape"):
        load_policy(str(bad))


def test_a_corrupt_config_or_env_id_is_named(saved, tmp_path):
    _, raw, _ = saved
    for key, value, message in [
        ("config", "{not json", "config: not a valid configuration"),
        ("config", '{"no_such_setting": 1}', "config: not a valid configuration"),
        ("config", "[1, 2]", "config: not a valid configuration"),
        # A valid configuration (defaults elsewhere) that the saved state does not fit.
        ("config", '{"max_kl": 0.01}', "unexpected entries"),
        ("env_id", "CartPol-v1", "the saved env='CartPol-v1' is not a registered"),
        ("env_id", "Cart Pole", "the saved env='Cart Pole' is not a registered"),
    ]:
        bad = tmp_path / "corrupt.npz"
        bad.write_bytes(_rewrite(raw, lambda a, k=key, v=value: {**a, k: np.asarray(v)}))
        # An unknown saved id is not damage: an UnknownEnvError (a ValueError and a
        # gymnasium.error.Error, as gym.make's own), naming the path and close ids.
        error = CheckpointError if key == "config" else (ValueError, gym.error.Error)
        with pytest.raises(error, match=message) as info:
            TRPO.load(str(bad))
        assert str(info.value).startswith(f"path={str(bad)!r}")


# The advice names what to load it onto, never "set use_sde=False" (the user did not write it).
_GSDE_ON_DISCRETE = (r"the saved config use_sde=True: gSDE .* action space Discrete.*; the "
                     r"checkpoint \(saved with env 'Pendulum-v1'\) only loads onto an "
                     r"environment its configuration fits$")


@pytest.mark.parametrize(("source", "overrides", "targets"), [
    ("CartPole-v1", {}, {"Acrobot-v1": None, "MountainCar-v0": None,
                         "MountainCarContinuous-v0": None, "Pendulum-v1": None}),
    ("Pendulum-v1", {"use_sde": False}, {"MountainCarContinuous-v0": None,
                                         "CartPole-v1": None, "Acrobot-v1": None}),
    # gSDE (Pendulum's default) on Discrete actions: the saved config itself does not fit.
    ("Pendulum-v1", {}, {"MountainCarContinuous-v0": None, "CartPole-v1": _GSDE_ON_DISCRETE,
                         "Acrobot-v1": _GSDE_ON_DISCRETE}),
], ids=["CartPole-v1", "Pendulum-v1-gaussian", "Pendulum-v1-gsde"])
def test_a_checkpoint_does_not_load_onto_an_env_of_other_spaces(tmp_path, source, overrides,
                                                                 targets):
    agent = TRPO(source, seed=0, n_steps=16, n_envs=1, **overrides)
    path = tmp_path / "model.npz"
    agent.save(str(path))
    for target, message in targets.items():
        with pytest.raises(CheckpointError, match=message or
                           r"policy: the saved policy .* does not fit") as info:
            TRPO.load(str(path), env=target)
        assert str(info.value).startswith(f"path={str(path)!r}: ")


def test_a_state_dict_that_does_not_fit_names_the_entry():
    agent = TRPO("CartPole-v1", seed=0, n_steps=16, n_envs=1)
    state = agent.state_dict()
    bad = unflatten_state(flatten_state(state))
    bad["value"]["adam"]["v"] = -np.ones_like(bad["value"]["adam"]["v"])
    with pytest.raises(StateError, match="value/adam/v: has negative entries"):
        agent.load_state_dict(bad)
    bad = unflatten_state(flatten_state(state))
    bad["collector"]["rngs"]["0"]["bit_generator"] = "MT19937"
    with pytest.raises(StateError, match="collector/rngs/0/bit_generator: 'MT19937'"):
        agent.load_state_dict(bad)
    bad = unflatten_state(flatten_state(state))
    bad["collector"]["snapshots"]["0"]["state"] = np.zeros(2)
    with pytest.raises(StateError, match=r"collector/snapshots/0/state: expected a float64 "
                                         r"array of shape \(4,\)"):
        agent.load_state_dict(bad)


def test_read_state_round_trips_what_write_state_writes(tmp_path):
    state = {"a": {"b": np.arange(3), "c": "text"}, "d": 1.5, "e": np.zeros((2, 3), order="F")}
    write_state(tmp_path / "s.npz", state)
    back = read_state(tmp_path / "s.npz")
    np.testing.assert_array_equal(back["a"]["b"], state["a"]["b"])
    assert back["a"]["c"] == "text" and back["d"] == 1.5
    np.testing.assert_array_equal(back["e"], state["e"])


# ------------------------------------------------------------------- saving
def test_save_refuses_an_empty_or_directory_path(tmp_path):
    agent = TRPO("CartPole-v1", seed=0, n_steps=16, n_envs=1)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(ValueError, match="path: empty"):
            agent.save("")
        with pytest.raises(ValueError, match="is a directory"):
            agent.save(str(tmp_path))
        with pytest.raises(ValueError, match="is a directory"):
            agent.save(str(tmp_path / "runs") + "/")
        with pytest.raises(FileNotFoundError, match="does not exist"):
            agent.save(str(tmp_path / "missing" / "model.npz"))
        assert os.listdir(tmp_path) == []
        assert not [n for n in os.listdir(tmp_path.parent) if n.startswith(".tmp-")]
    finally:
        os.chdir(cwd)


def test_load_of_a_missing_file_is_the_usual_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        TRPO.load(str(tmp_path / "nothing.npz"))
