"""One configuration object for the TRPO agent, with per-family defaults.

Every field carries a one-line description (``TRPOConfig.describe()`` prints them; the
CLI's ``trpo train --help`` lists them).  Defaults come in two families, picked from the
environment: *classic control* (small discrete or low-dimensional tasks, short batches)
and *MuJoCo* (rl-baselines3-zoo's tuned TRPO settings for MuJoCo: 2048 steps per update,
25 CG iterations, damping 0.1, 20 critic epochs of minibatch 128, observation and reward
normalization; ``max_kl`` bounds the KL of the joint action distribution, where SB3-contrib
bounds its mean over action dimensions).  A small table adds per-environment tweaks.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["TRPOConfig", "family_of", "parse_overrides"]


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TRPOConfig:
    """TRPO hyperparameters; see :meth:`describe` for the meaning of each field.

    Examples
    --------
    >>> cfg = TRPOConfig.for_env("CartPole-v1", max_kl=0.02)
    >>> cfg.max_kl, cfg.family
    (0.02, 'classic_control')
    """

    family: str = _f("classic_control", "defaults family the other fields came from")
    n_envs: int = _f(2, "number of parallel environments")
    n_steps: int = _f(512, "environment steps per env per update (batch = n_envs * n_steps)")
    vector_env: str = _f("sync", "vector env: 'sync' (lean), 'gym_sync' or 'async' (processes)")
    gamma: float = _f(0.99, "discount factor")
    gae_lambda: float = _f(0.98, "GAE lambda (bias-variance trade-off of advantages)")
    max_kl: float = _f(0.01, "trust-region radius delta on the mean KL(old || new)")
    cg_iters: int = _f(15, "conjugate-gradient iterations for F^{-1} g")
    cg_damping: float = _f(1e-3, "damping lambda added to the Fisher: (F + lambda I) x = g")
    cg_rtol: float = _f(1e-10, "CG relative residual tolerance")
    fvp_subsample: float = _f(1.0, "fraction of the batch used for Fisher-vector products")
    fvp_dtype: str = _f("float32", "precision of Fisher-vector products: float32 or float64")
    line_search: bool = _f(True, "backtracking line search on KL and surrogate (False: NPG)")
    ls_shrink: float = _f(0.8, "line-search step shrink factor per backtrack")
    ls_max_backtracks: int = _f(10, "line-search backtracks after the full step")
    ls_accept_ratio: float = _f(0.0, "accept only if improvement >= ratio * expected (0: any)")
    ls_kl_slack: float = _f(1.0, "accept trials with mean KL <= ls_kl_slack * max_kl")
    normalize_advantage: bool = _f(True, "standardize advantages over the batch")
    entropy_coef: float = _f(0.0, "entropy bonus weight in the surrogate objective")
    policy_hidden: tuple[int, ...] = _f((64, 64), "policy hidden layer sizes")
    value_hidden: tuple[int, ...] = _f((64, 64), "value network hidden layer sizes")
    activation: str = _f("tanh", "hidden activation: 'tanh' or 'relu'")
    log_std_init: float = _f(0.0, "initial log std of the Gaussian policy (Box actions)")
    value_optimizer: str = _f("lbfgs", "value fit: 'adam' (minibatch) or 'lbfgs' (scipy)")
    value_lr: float = _f(1e-3, "Adam learning rate of the value network")
    value_epochs: int = _f(20, "Adam epochs over the batch per update")
    value_batch_size: int = _f(512, "Adam minibatch size")
    value_lbfgs_iters: int = _f(25, "L-BFGS iterations per update")
    value_l2: float = _f(0.0, "L2 penalty on value weights (helps L-BFGS)")
    normalize_obs: bool = _f(False, "running mean/std observation normalization")
    normalize_reward: bool = _f(False, "scale rewards by running std of discounted return")
    clip_obs: float = _f(10.0, "clip normalized observations to [-clip_obs, clip_obs]")
    clip_reward: float = _f(10.0, "clip scaled rewards to [-clip_reward, clip_reward]")
    blas_threads: int = _f(1, "BLAS threads while training (1 is fastest for these small matmuls)")

    def __post_init__(self) -> None:
        _validate(self)

    # ---------------------------------------------------------------- helpers
    @classmethod
    def for_env(cls, env_id: str | None, **overrides: Any) -> TRPOConfig:
        """Defaults for ``env_id``'s family, then the zoo's per-env tweaks, then ``overrides``."""
        family = family_of(env_id)
        values: dict[str, Any] = dict(_FAMILY_DEFAULTS[family])
        for prefix, tweaks in _ENV_TWEAKS.items():
            if env_id is not None and env_id.startswith(prefix):
                values.update(tweaks)
        values["family"] = family
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; see `trpo train --help`")
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> TRPOConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TRPOConfig:
        data = json.loads(text)
        for f in fields(cls):
            if f.name in data and isinstance(data[f.name], list):
                data[f.name] = tuple(data[f.name])
        return cls(**data)

    @classmethod
    def describe(cls) -> str:
        """One line per field: name, default type, description."""
        return "\n".join(
            f"  {f.name:<20} {f.metadata['help']}" for f in fields(cls)
        )

    @property
    def batch_size(self) -> int:
        return self.n_envs * self.n_steps


def family_of(env_id: str | None) -> str:
    """``'mujoco'`` if Gymnasium registers ``env_id`` under its MuJoCo entry points."""
    if env_id is None:
        return "classic_control"
    try:
        import gymnasium as gym

        spec = gym.spec(env_id)
    except Exception:
        return "classic_control"
    entry = spec.entry_point if isinstance(spec.entry_point, str) else ""
    return "mujoco" if "mujoco" in entry else "classic_control"


_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    # rl-baselines3-zoo's tuned CartPole-v1 TRPO (2 envs x 512 steps, damping 1e-3,
    # lambda 0.98), but the critic fitted by L-BFGS: on CartPole it reaches 500 in 10-20k
    # steps and stays there on every seed tried, where the zoo's 20 Adam epochs oscillate
    # (docs/benchmarks/trpo.md).
    "classic_control": {},
    # The zoo's `mujoco-defaults` for TRPO (one env x 2048 steps = its 2 x 1024 batch).
    # `max_kl` and `cg_damping` keep the zoo's numbers but apply to the KL of the joint
    # action distribution (as in the TRPO paper); SB3-contrib averages the KL over the D
    # action dimensions, so the zoo's own runs use a D times larger radius and damping
    # (benchmarks/bench_trpo_learn.py:sb3_kl_scale).  On Hopper and HalfCheetah neither is
    # better across seeds (docs/benchmarks/trpo.md).
    "mujoco": {
        "n_envs": 1,
        "n_steps": 2048,
        "value_optimizer": "adam",
        "gae_lambda": 0.95,
        "cg_iters": 25,
        "cg_damping": 0.1,
        "value_epochs": 20,
        "value_batch_size": 128,
        "normalize_obs": True,
        "normalize_reward": True,
    },
}

# Per-environment tweaks from the zoo's trpo.yml (matched by id prefix).
_ENV_TWEAKS: dict[str, dict[str, Any]] = {
    "HalfCheetah": {"max_kl": 0.04},
    # Not the zoo's (it uses gSDE, which we do not implement): the best of a sweep at 100k
    # steps (docs/benchmarks/trpo.md).  The critic needs many small Adam steps (60 epochs of
    # minibatch 128): with 30 epochs of 512 one seed in three stalled near -700.
    "Pendulum": {
        "n_envs": 4,
        "n_steps": 256,
        "gamma": 0.9,
        "gae_lambda": 0.95,
        "max_kl": 0.02,
        "value_optimizer": "adam",
        "value_epochs": 60,
        "value_batch_size": 128,
        "normalize_obs": True,
        "normalize_reward": True,
    },
}


def _validate(cfg: TRPOConfig) -> None:
    def bad(name: str, why: str) -> ValueError:
        return ValueError(f"config {name}={getattr(cfg, name)!r}: {why}")

    if cfg.family not in _FAMILY_DEFAULTS:
        raise bad("family", f"must be one of {sorted(_FAMILY_DEFAULTS)}")
    for name in ("n_envs", "n_steps", "cg_iters", "value_epochs", "value_batch_size",
                 "value_lbfgs_iters", "blas_threads"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad(name, "must be a positive int")
    if not isinstance(cfg.ls_max_backtracks, int) or cfg.ls_max_backtracks < 0:
        raise bad("ls_max_backtracks", "must be an int >= 0")
    for name in ("max_kl", "value_lr", "clip_obs", "clip_reward", "ls_kl_slack"):
        v = getattr(cfg, name)
        if not isinstance(v, int | float) or not v > 0 or v == float("inf"):
            raise bad(name, "must be a finite number > 0")
    for name in ("cg_damping", "cg_rtol", "entropy_coef", "value_l2", "ls_accept_ratio"):
        v = getattr(cfg, name)
        if not isinstance(v, int | float) or not v >= 0 or v == float("inf"):
            raise bad(name, "must be a finite number >= 0")
    for name in ("gamma", "gae_lambda"):
        v = getattr(cfg, name)
        if not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
            raise bad(name, "must be in [0, 1]")
    if not 0.0 < cfg.ls_shrink < 1.0:
        raise bad("ls_shrink", "must be in (0, 1)")
    if not 0.0 < cfg.fvp_subsample <= 1.0:
        raise bad("fvp_subsample", "must be in (0, 1]")
    if not isinstance(cfg.log_std_init, int | float) or abs(cfg.log_std_init) > 20:
        raise bad("log_std_init", "must be a number in [-20, 20]")
    if cfg.fvp_dtype not in ("float32", "float64"):
        raise bad("fvp_dtype", "must be 'float32' or 'float64'")
    if cfg.vector_env not in ("sync", "gym_sync", "async"):
        raise bad("vector_env", "must be 'sync', 'gym_sync' or 'async'")
    if cfg.activation not in ("tanh", "relu"):
        raise bad("activation", "must be 'tanh' or 'relu'")
    if cfg.value_optimizer not in ("adam", "lbfgs"):
        raise bad("value_optimizer", "must be 'adam' or 'lbfgs'")
    for name in ("policy_hidden", "value_hidden"):
        v = getattr(cfg, name)
        if not isinstance(v, tuple) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in v
        ):
            raise bad(name, "must be a tuple of positive ints")
    for name in ("line_search", "normalize_advantage", "normalize_obs", "normalize_reward"):
        if not isinstance(getattr(cfg, name), bool):
            raise bad(name, "must be a bool")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings into typed config overrides.

    Values are converted to the type of the field: ints, floats, bools
    (``true/false/1/0/yes/no``), strings, and tuples of ints written ``64,64``.

    Examples
    --------
    >>> parse_overrides(["max_kl=0.02", "policy_hidden=32,32", "line_search=false"])
    {'max_kl': 0.02, 'policy_hidden': (32, 32), 'line_search': False}
    """
    types = {f.name: f.type for f in fields(TRPOConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key=value")
        if key not in types:
            raise ValueError(f"unknown config key {key!r} in override {item!r}")
        kind = str(types[key])
        raw = raw.strip()
        try:
            if kind == "bool":
                low = raw.lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value: Any = low in ("true", "1", "yes")
            elif kind == "int":
                value = int(raw)
            elif kind == "float":
                value = float(raw)
            elif kind.startswith("tuple"):
                value = tuple(int(s) for s in raw.split(",") if s.strip())
            else:
                value = raw
        except ValueError:
            raise ValueError(f"bad value in override {item!r}: expected {kind}") from None
        out[key] = value
    return out
