"""MuJoCo snapshots: a resumed episode continues bit for bit, derived quantities included.

A live run holds, between steps, the derived quantities ``mj_step`` computed at the start
of its last substep (body positions, centre of mass, ...); Ant-v5 and Humanoid-v5 read
them before they step.  The snapshot saves them with the integration state.
"""

import mujoco
import numpy as np
import pytest
from test_rl_agent import SMALL, _assert_same_state, _state

from rl_adapters import TRPO
from rl_adapters.checkpoint import CheckpointError, read_state, write_state
from rl_adapters.rollout import MUJOCO_DERIVED_FIELDS, make_env_fn
from rl_adapters.validation import StateError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

#: The Gymnasium MuJoCo v5 environments checked at the env level.
MUJOCO_V5 = ["Ant-v5", "Humanoid-v5", "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5",
             "Swimmer-v5", "Reacher-v5", "InvertedPendulum-v5", "InvertedDoublePendulum-v5",
             "Pusher-v5", "HumanoidStandup-v5"]

CONFIG = {**SMALL, "n_envs": 1}


def _actions(env, rng, n):
    return [rng.uniform(-0.3, 0.3, env.action_space.shape) for _ in range(n)]


def _mid_episode(env_id, n_steps=4):
    env = make_env_fn(env_id)()
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for action in _actions(env, rng, n_steps):
        *_, terminated, truncated, _ = env.step(action)
        assert not (terminated or truncated)
    return env, rng


def _derived(env):
    data = env.unwrapped.data
    return {name: getattr(data, name).copy() for name in MUJOCO_DERIVED_FIELDS
            if hasattr(data, name)}


def test_the_integration_state_holds_the_warmstart():
    spec = mujoco.mjtState
    assert spec.mjSTATE_INTEGRATION & spec.mjSTATE_WARMSTART == spec.mjSTATE_WARMSTART


@pytest.mark.parametrize("env_id", MUJOCO_V5)
def test_a_restored_env_steps_like_the_live_one(env_id):
    live, rng = _mid_episode(env_id)
    snap = live.trpo_snapshot
    restored = make_env_fn(env_id)()
    restored.reset(seed=1)  # another episode: everything must come from the snapshot
    restored.trpo_snapshot = snap
    want, got = _derived(live), _derived(restored)
    for name in want:  # what the env reads before it steps (Ant: body xpos) is the live one
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    for t, action in enumerate(_actions(live, rng, 25)):
        a, b = live.step(action), restored.step(action)
        np.testing.assert_array_equal(b[0], a[0], err_msg=f"obs at step {t}")
        assert b[1:4] == a[1:4], f"reward, terminated, truncated at step {t}"
        assert b[4].keys() == a[4].keys()
        for key in a[4]:
            np.testing.assert_array_equal(b[4][key], a[4][key], err_msg=f"{key} at step {t}")
        if a[2] or a[3]:
            break


@pytest.mark.parametrize("env_id", ["Ant-v5", "Humanoid-v5"])
def test_resume_mid_episode_equals_uninterrupted_run(tmp_path, env_id):
    # These two read a body position / the centre of mass before they step: restored
    # from the integration state alone, their first reward after a resume differed.
    steps = 2 * CONFIG["n_steps"]
    straight = TRPO(env_id, seed=1, **CONFIG)
    straight.learn(2 * steps)
    first = TRPO(env_id, seed=1, **CONFIG)
    first.learn(steps)
    assert first.collector.ep_length[0] > 0  # saved mid-episode
    path = tmp_path / "ckpt.npz"
    first.save(str(path))
    resumed = TRPO.load(str(path))
    resumed.learn(steps)
    assert resumed.num_timesteps == straight.num_timesteps
    _assert_same_state(_state(resumed), _state(straight))
    np.testing.assert_array_equal(resumed.collector.raw_obs, straight.collector.raw_obs)


def test_a_snapshot_without_derived_quantities_still_loads(tmp_path):
    # A checkpoint written before snapshots held them: the integration state is restored
    # and the rest recomputed, as then (same physics; Ant's next reward may differ).
    first = TRPO("Ant-v5", seed=1, **CONFIG)
    first.learn(CONFIG["n_steps"])
    path = tmp_path / "ckpt.npz"
    first.save(str(path))
    state = read_state(path)
    del state["collector"]["snapshots"]["0"]["mujoco_derived"]
    old = tmp_path / "old.npz"
    write_state(old, state)
    resumed = TRPO.load(str(old))
    np.testing.assert_array_equal(resumed.collector.raw_obs, first.collector.raw_obs)
    saved = state["collector"]["snapshots"]["0"]["mujoco_state"]
    np.testing.assert_array_equal(resumed.collector.groups[0].snapshots()[0]["mujoco_state"],
                                  saved)
    # the episode continues (not a new one): the same physics as the saved run
    first.collector.collect(first.theta, 8)
    resumed.collector.collect(resumed.theta, 8)
    np.testing.assert_array_equal(resumed.collector.raw_obs, first.collector.raw_obs)


def test_a_damaged_snapshot_is_refused_with_the_entry_named(tmp_path):
    agent = TRPO("Ant-v5", seed=0, n_steps=16, n_envs=1)
    agent.learn(16)
    state = agent.state_dict()
    derived = state["collector"]["snapshots"]["0"]["mujoco_derived"]
    n = derived.size
    for bad, problem in [(derived[:-1], rf"expected a float64 array of shape \({n},\)"),
                         (derived.astype(np.float32), r"expected a float64 array"),
                         (np.full(n, np.nan), "has NaN or infinite entries")]:
        state["collector"]["snapshots"]["0"]["mujoco_derived"] = bad
        with pytest.raises(StateError, match="collector/snapshots/0/mujoco_derived: " + problem):
            agent.load_state_dict(state)
    state["collector"]["snapshots"]["0"]["mujoco_derived"] = derived[:-1]
    path = tmp_path / "bad.npz"
    write_state(path, state)
    with pytest.raises(CheckpointError, match="collector/snapshots/0/mujoco_derived: expected"):
        TRPO.load(str(path))
    # set directly (as a Ray worker does, unchecked by the learner): the same kind of error
    env = make_env_fn("Ant-v5")()
    env.reset(seed=0)
    snap = env.trpo_snapshot
    with pytest.raises(StateError, match=rf"mujoco_derived: expected a float64 array of "
                                         rf"shape \({n},\)"):
        env.trpo_snapshot = {**snap, "mujoco_derived": snap["mujoco_derived"][:-1]}
