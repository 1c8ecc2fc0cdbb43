"""TRPOConfig: per-field checks from the field metadata, typed overrides, describe()."""

import dataclasses
import json
import math
import re
import typing

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rl_adapters import TRPOConfig
from rl_adapters.config import Interval, parse_overrides

FIELDS = dataclasses.fields(TRPOConfig)
TYPES = typing.get_type_hints(TRPOConfig)
INT_TUPLE = tuple[int, ...]


def _kind(name):
    kind = TYPES[name]
    return "tuple" if typing.get_origin(kind) is tuple else kind.__name__


def test_every_field_declares_its_check_and_help():
    """A new field must say what it accepts: numbers a range, strings their choices."""
    for f in FIELDS:
        assert f.metadata["help"].strip(), f.name
        kind = _kind(f.name)
        if kind in ("int", "float", "tuple"):
            assert isinstance(f.metadata["interval"], Interval), f.name
        elif kind == "str":
            assert f.metadata["choices"], f.name
        else:
            assert kind == "bool", f"{f.name}: no check for type {kind}"


# A value of the wrong type for each kind of field, and the type the message must name.
WRONG = {
    "float": [("a", "float"), (True, "float"), (None, "float"), ([0.1], "float")],
    "int": [(1.5, "int"), ("3", "int"), (True, "int"), (np.float64(2.0), "int")],
    "bool": [(1, "bool"), ("true", "bool"), (None, "bool")],
    "str": [(1, "str"), (None, "str")],
    "tuple": [("64,64", "a tuple of ints"), ((64, 1.5), "a tuple of ints"), (64, "a tuple of ints"),
              ((True,), "a tuple of ints")],
}


@pytest.mark.parametrize("name", [f.name for f in FIELDS])
def test_wrong_type_raises_type_error_naming_field_value_and_type(name):
    for value, expected in WRONG[_kind(name)]:
        with pytest.raises(TypeError) as info:
            TRPOConfig(**{name: value})
        message = str(info.value)
        assert f"{name}={value!r}" in message
        assert f"expected {expected}, got {type(value).__name__}" in message


def test_issue_examples():
    with pytest.raises(TypeError, match=re.escape("ls_shrink='a': expected float, got str")):
        TRPOConfig(ls_shrink="a")
    with pytest.raises(TypeError, match=re.escape("max_kl=True: expected float, got bool")):
        TRPOConfig(max_kl=True)
    with pytest.raises(TypeError, match="max_kl"):
        TRPOConfig.for_env("CartPole-v1", max_kl=np.True_)


def test_numbers_become_plain_python_values_of_the_field_type():
    cfg = TRPOConfig(max_kl=1, n_envs=np.int64(4), gamma=np.float32(0.5),
                     policy_hidden=[np.int32(8), 4], line_search=np.bool_(False))
    assert cfg.max_kl == 1.0 and type(cfg.max_kl) is float
    assert cfg.n_envs == 4 and type(cfg.n_envs) is int
    assert cfg.gamma == 0.5 and type(cfg.gamma) is float
    assert cfg.policy_hidden == (8, 4) and all(type(s) is int for s in cfg.policy_hidden)
    assert cfg.line_search is False
    assert TRPOConfig.from_json(cfg.to_json()) == cfg  # plain values: JSON-writable


# field: (values out of range, values at or inside the edges)
RANGES = {
    "n_envs": ([0, -1], [1, 64]),
    "ls_max_backtracks": ([-1], [0, 3]),
    "max_kl": ([0.0, -1.0, math.inf, math.nan], [1e-12, 5.0]),
    "ls_kl_slack": ([0.0, math.inf], [1.0]),
    "max_kl_end_fraction": ([0.0, -0.5, 1.01, math.nan], [1e-6, 0.5, 1.0]),
    "max_kl_decay_steps": ([0, -1], [1, 10**9]),
    "cg_damping": ([-1e-12, math.inf, math.nan], [0.0, 1e6]),
    "gamma": ([-0.01, 1.01, math.nan], [0.0, 1.0]),
    "gae_lambda": ([1.5], [0.0, 1.0]),
    "ls_shrink": ([0.0, 1.0, -0.5], [1e-9, 0.999]),
    "fvp_subsample": ([0.0, 1.01], [1e-3, 1.0]),
    "log_std_init": ([-20.5, 21.0, math.nan], [-20.0, 20.0]),
    "policy_hidden": ([(0,), (64, -1)], [(), (3,), (64, 64, 64)]),
    "family": (["atari", ""], ["mujoco", "classic_control"]),
    "activation": (["sigmoid", "Tanh"], ["relu", "tanh"]),
    "fvp_dtype": (["float16"], ["float64"]),
    "vector_env": (["processes"], ["async", "gym_sync", "sync"]),
    "value_optimizer": (["sgd", "trustregion"], ["adam", "lbfgs", "trust_region"]),
    "sde_sample_freq": ([-2, -100], [-1, 0, 1, 4]),
    "value_tr_epsilon": ([0.0, -1.0, math.inf, math.nan], [1e-12, 1.0, 50.0]),
    "value_tr_cg_iters": ([0, -3], [1, 10]),
    "value_tr_damping": ([-1e-12, math.inf, math.nan], [0.0, 0.1]),
    "value_tr_outer_iters": ([0], [1, 10]),
    "value_tr_subsample": ([0.0, 1.01, math.nan], [1e-3, 0.25, 1.0]),
    "value_tr_dtype": (["float16", "f32"], ["float32", "float64"]),
    "value_dtype": (["float16", "f32"], ["float32", "float64"]),
}


@pytest.mark.parametrize("name", sorted(RANGES))
def test_range_and_choices(name):
    bad, good = RANGES[name]
    for value in bad:
        with pytest.raises(ValueError, match=re.escape(f"config {name}=")):
            TRPOConfig(**{name: value})
    for value in good:
        assert getattr(TRPOConfig(**{name: value}), name) == value


def test_range_message_says_what_is_allowed():
    with pytest.raises(ValueError, match=re.escape("config ls_shrink=1.5: must be in (0, 1)")):
        TRPOConfig(ls_shrink=1.5)
    with pytest.raises(ValueError, match=re.escape("config max_kl=-1: must be > 0, finite")):
        TRPOConfig(max_kl=-1)  # the value as given, not as converted
    with pytest.raises(ValueError, match=re.escape("policy_hidden=(0,): each item must be >= 1")):
        TRPOConfig(policy_hidden=(0,))
    with pytest.raises(ValueError, match=re.escape("activation='elu': must be one of tanh, relu")):
        TRPOConfig(activation="elu")


@pytest.mark.parametrize("build", [
    lambda: TRPOConfig.for_env("CartPole-v1", max_k=0.1),
    lambda: TRPOConfig().replace(max_k=0.1),
    lambda: TRPOConfig.from_json('{"max_k": 0.1}'),
    lambda: parse_overrides(["max_k=0.1"]),
])
def test_unknown_key_suggests_the_closest_field(build):
    with pytest.raises(ValueError, match=re.escape("unknown config key 'max_k'; did you mean 'max_kl'?")):
        build()


def test_unknown_key_far_from_every_field_gets_no_suggestion():
    with pytest.raises(ValueError, match=r"unknown config key 'zzz' \(TRPOConfig"):
        parse_overrides(["zzz=1"])


@pytest.mark.parametrize("item, needle", [
    ("max_kl=abc", "override max_kl=abc: 'abc' is not a valid float"),
    ("n_envs=2.5", "override n_envs=2.5: '2.5' is not a valid int"),
    ("line_search=maybe", "'maybe' is not a valid bool"),
    ("policy_hidden=64,x", "'64,x' is not a valid int,..."),
    ("max_kl", "override 'max_kl' is not of the form key=value"),
    ("=3", "override '=3' is not of the form key=value"),
])
def test_unparsable_override_names_key_value_and_type(item, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        parse_overrides([item])


def test_overrides_parse_to_the_field_types():
    parsed = parse_overrides([
        "max_kl=1", "n_envs= 4", "line_search=off", "normalize_obs=YES", "policy_hidden=(32, 16)",
        "value_hidden=", "activation=relu", "cg_rtol=1e-8",
    ])
    assert parsed == {"max_kl": 1.0, "n_envs": 4, "line_search": False, "normalize_obs": True,
                      "policy_hidden": (32, 16), "value_hidden": (), "activation": "relu",
                      "cg_rtol": 1e-8}
    assert type(parsed["max_kl"]) is float
    # Parsing gives the type; the range is checked when the config is built.
    with pytest.raises(ValueError, match="max_kl=inf"):
        TRPOConfig(**parse_overrides(["max_kl=inf"]))


def _value(draw_field):
    """A strategy of valid values for one field, from its metadata."""
    kind, meta = _kind(draw_field.name), draw_field.metadata
    if kind == "bool":
        return st.booleans()
    if kind == "str":
        return st.sampled_from(meta["choices"])
    iv = meta["interval"]
    if kind in ("int", "tuple"):
        ints = st.integers(min_value=int(iv.low), max_value=int(min(iv.high, 10**6)))
        return st.lists(ints, max_size=4).map(tuple) if kind == "tuple" else ints
    return st.floats(min_value=iv.low, max_value=min(iv.high, 1e300), allow_nan=False,
                     exclude_min=iv.low_open, exclude_max=iv.high_open)


VALID_CONFIG = st.fixed_dictionaries({f.name: _value(f) for f in FIELDS}).map(
    lambda kw: TRPOConfig(**kw))


def _as_override(value):
    return ",".join(map(str, value)) if isinstance(value, tuple) else repr(value).strip("'")


@settings(max_examples=60, deadline=None)
@given(VALID_CONFIG)
def test_every_valid_config_round_trips_through_json_and_overrides(cfg):
    assert TRPOConfig.from_json(cfg.to_json()) == cfg
    items = [f"{f.name}={_as_override(getattr(cfg, f.name))}" for f in FIELDS]
    assert TRPOConfig(**parse_overrides(items)) == cfg
    assert json.loads(cfg.to_json())["max_kl"] == cfg.max_kl


def test_describe_prints_type_default_constraint_and_help_of_every_field():
    lines = TRPOConfig.describe().splitlines()
    assert len(lines) == 2 * len(FIELDS)
    defaults = TRPOConfig()
    for f, head, help_line in zip(FIELDS, lines[::2], lines[1::2], strict=True):
        value = getattr(defaults, f.name)
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        kind = "int,..." if _kind(f.name) == "tuple" else _kind(f.name)
        assert head.startswith(f"  {f.name}: {kind} = {shown}"), head
        if f.metadata["choices"]:
            assert head.endswith(f"({' | '.join(f.metadata['choices'])})"), head
        elif f.metadata["interval"] is not None:
            assert head.endswith(f"{f.metadata['interval']})"), head
        assert help_line.strip() == f.metadata["help"]


def test_describe_shows_the_defaults_of_the_env_family():
    lines = TRPOConfig.describe("Pendulum-v1").splitlines()
    assert "  n_envs: int = 4  (>= 1)" in lines
    assert "  value_optimizer: str = adam  (adam | lbfgs | trust_region)" in lines
    # Pendulum's own tweak (gSDE every 8 steps) over the family's plain Gaussian default.
    assert "  use_sde: bool = True" in lines
    assert "  sde_sample_freq: int = 8  (>= -1)" in lines
    assert "  log_std_init: float = -2.0  (in [-20, 20])" in lines
    assert "  max_kl: float = 0.03  (> 0, finite)" in lines
    other = TRPOConfig.describe("MountainCarContinuous-v0").splitlines()
    assert "  use_sde: bool = False" in other
    assert "  log_std_init: float = 0.0  (in [-20, 20])" in other


@pytest.mark.parametrize("interval, inside, outside, text", [
    (Interval(0.0, 1.0), [0.0, 1.0], [-1e-300, 1.0000001, math.nan], "[0, 1]"),
    (Interval(0.0, 1.0, low_open=True, high_open=True), [0.5], [0.0, 1.0], "(0, 1)"),
    (Interval(0.0, math.inf, low_open=True), [1e-300, 1e300], [0.0, math.inf, math.nan],
     "> 0, finite"),
    (Interval(1, math.inf), [1, 10**9], [0], ">= 1"),
])
def test_interval(interval, inside, outside, text):
    assert all(v in interval for v in inside)
    assert not any(v in interval for v in outside)
    assert str(interval) == text
