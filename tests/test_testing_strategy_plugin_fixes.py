"""Regressions of trustregion.testing's strategies and plugin.

- line_search_problems in float32: a search's trial points miss the exact fractions by
  more than a relative 1e-9, and ``evaluate`` used to return finite values at the trials
  in ``non_finite_trials`` (a wrong ``first_acceptable``);
- linear_operators(kind="nonsymmetric") drew symmetric matrices (the same seed twice);
- spd_matrices ignored ``cond`` for n = 1 and accepted ranges the dtype cannot represent;
- a mistyped ``TR_HYPOTHESIS_PROFILE`` aborted pytest with an INTERNALERROR traceback.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trustregion as tr
from trustregion import testing as tt
from trustregion.testing import _strategies, pytest_plugin

# derandomized and many examples: the float32 oracle was wrong in about 12% of problems and
# a nonsymmetric operator symmetric in about a third, so a random handful could miss them
MANY = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# ------------------------------------------------------------ line_search_problems


def float32_search(evaluate, x0, s, *, expected_improvement, max_constraint, shrink,
                   max_backtracks):
    """A textbook search computing its trial points in the problem's dtype."""
    f0, _ = evaluate(x0)
    rho = np.asarray(shrink, dtype=x0.dtype)
    for k in range(max_backtracks + 1):
        x = x0 + rho**k * s
        f, c = evaluate(x)
        if math.isfinite(f) and math.isfinite(c) and c <= max_constraint and f > f0:
            return SimpleNamespace(x=x, accepted=True)
    return SimpleNamespace(x=x0, accepted=False)


@MANY
@given(problem=tt.line_search_problems(st.integers(1, 4), dtype=st.sampled_from([np.float32,
                                                                                  np.float64])))
def test_line_search_oracle_holds_for_trial_points_computed_in_the_dtype(problem):
    dt = problem.x0.dtype
    rho = np.asarray(problem.shrink, dtype=dt)
    f0, c0 = problem.evaluate(problem.x0)
    assert c0 == 0.0
    first = None
    for k in range(problem.max_backtracks + 1):
        # both ways a search may compute trial k: in the dtype, and in float64
        for x in (problem.x0 + rho**k * problem.full_step,
                  problem.x0.astype(np.float64) + problem.shrink**k * problem.full_step):
            f, c = problem.evaluate(x)
            assert np.isfinite(f) == (k not in problem.non_finite_trials), (dt, k, x)
        if first is None and np.isfinite(f) and f > f0 and c <= problem.max_constraint:
            first = k
    assert first == problem.first_acceptable


@MANY
@given(problem=tt.line_search_problems(st.integers(1, 4), dtype=np.float32))
def test_the_project_line_search_meets_the_contract_on_float32_problems(problem):
    tt.check_line_search_contract(tr.backtracking_line_search, problem)
    tt.check_line_search_contract(float32_search, problem)


# ------------------------------------------------------------ linear_operators


@MANY
@given(case=tt.linear_operators(st.integers(2, 6), kind="nonsymmetric",
                                dtype=st.sampled_from([np.float32, np.float64])))
def test_nonsymmetric_operators_are_never_symmetric_for_n_at_least_2(case):
    A = case.matrix.astype(np.float64)
    assert not np.array_equal(case.matrix, case.matrix.T)
    # the documented margin: the antisymmetric part has a tenth of the norm of A
    assert np.linalg.norm(A - A.T) / 2 >= 0.1 * np.linalg.norm(A) * (1 - 1e-6)
    # the other documented properties hold: singular values, conditioning, scale, dtype
    tol = (1e-5 if case.matrix.dtype == np.float32 else 1e-12) * case.spectrum[-1]
    tt.assert_close(np.linalg.svd(A, compute_uv=False)[::-1], case.spectrum, atol=tol)
    assert 1.0 <= case.spectrum[-1] / case.spectrum[0] <= 1e6 * (1 + 1e-9)
    assert case.spectrum[-1] in [2.0**s for s in range(-4, 5)]


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("seed", range(8))
def test_the_same_seed_twice_and_equal_singular_values_still_give_a_nonsymmetric_matrix(n, seed):
    # U = V (one seed drawn twice) is what hypothesis found; equal singular values make
    # every reflection V^T U symmetric too (half of all pairs when n = 2)
    for sigma in (np.ones(n), np.linspace(2.0, 1.0, n)):
        for seed_v in (seed, seed + 1, seed + 2):
            A = _strategies._nonsymmetric(sigma, seed, seed_v)
            assert np.linalg.norm(A - A.T) / 2 >= 0.1 * np.linalg.norm(A)
            tt.assert_close(np.linalg.svd(A, compute_uv=False), np.sort(sigma)[::-1], atol=1e-12)


# ------------------------------------------------------------ cond ranges


@pytest.mark.parametrize(
    "strategy",
    [
        lambda: tt.spd_matrices(1, cond=(10, 10)),
        lambda: tt.symmetric_indefinite(1, cond=(10, 100)),
        lambda: tt.linear_operators(1, kind="nonsymmetric", cond=(10, 10)),
        lambda: tt.linear_operators(1, kind="spd", cond=(2, 3)),
        lambda: tt.spd_matrices(3, cond=(1e17, 1e18)),
        lambda: tt.spd_matrices(3, cond=(1, 1e16)),
        lambda: tt.spd_matrices(3, cond=(1, 1e7), dtype=np.float32),
        lambda: tt.psd_matrices(3, 2, cond=(1e17, 1e18)),
        lambda: tt.symmetric_indefinite(3, cond=(1e17, 1e18)),
        lambda: tt.linear_operators(3, kind="nonsymmetric", cond=(1e17, 1e18)),
        lambda: tt.trust_region_problems(3, cond=(1e17, 1e18)),
    ],
    ids=["spd n=1", "indefinite n=1", "nonsymmetric n=1", "operator n=1", "spd 1e17",
         "spd 1e16", "spd float32 1e7", "psd 1e17", "indefinite 1e17", "nonsymmetric 1e17",
         "trust region 1e17"],
)
def test_an_impossible_cond_range_is_a_value_error_naming_cond(strategy):
    @settings(max_examples=3, database=None)
    @given(st.data())
    def draw(data):
        data.draw(strategy())

    with pytest.raises(ValueError, match="cond"):
        draw()


@MANY
@given(data=st.data(), n=st.integers(2, 12), dtype=st.sampled_from([np.float32, np.float64]))
def test_the_largest_allowed_cond_still_gives_positive_definite_matrices(data, n, dtype):
    limit = 0.5 / np.finfo(dtype).eps
    case = data.draw(tt.spd_matrices(n, cond=(limit / 4, limit), dtype=dtype))
    assert np.linalg.eigvalsh(case.matrix.astype(np.float64))[0] > 0
    # n = 1 is fine whenever the range includes 1, and then its cond is 1
    assert data.draw(tt.spd_matrices(1, cond=(1, 10), dtype=dtype)).cond == 1.0


# ------------------------------------------------------------ TR_HYPOTHESIS_PROFILE


def test_a_mistyped_profile_variable_is_a_one_line_usage_error(pytester, monkeypatch):
    pytester.makepyfile(test_user="def test_ok():\n    assert True\n")
    monkeypatch.setenv("TR_HYPOTHESIS_PROFILE", "trustregion-cl")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, output
    assert "TR_HYPOTHESIS_PROFILE='trustregion-cl'" in errors[0]
    for name in pytest_plugin.PROFILES:
        assert name in errors[0]
    # the failed load left hypothesis usable (it used to make the bad name current)
    assert pytest_plugin.register_profiles()


def test_a_valid_or_conftest_registered_profile_still_loads(pytester, monkeypatch):
    pytester.makeconftest(
        "from hypothesis import settings\n"
        "settings.register_profile('mine', max_examples=7)\n"
    )
    pytester.makepyfile(
        test_user="from hypothesis import settings\n"
        "import os\n"
        "def test_profile():\n"
        "    assert settings().max_examples == {'mine': 7, 'trustregion-ci': 60}["
        "os.environ['TR_HYPOTHESIS_PROFILE']]\n"
    )
    # a subprocess: loading a profile in-process would change this session's settings
    for name in ("mine", "trustregion-ci"):
        monkeypatch.setenv("TR_HYPOTHESIS_PROFILE", name)
        pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_load_profile_names_a_bad_profile_and_its_source(monkeypatch):
    from hypothesis import settings

    before = settings().max_examples
    with pytest.raises(ValueError, match=r"name='nope'.*trustregion-ci"):
        pytest_plugin.load_profile("nope")
    monkeypatch.setenv("TR_HYPOTHESIS_PROFILE", "nope")
    with pytest.raises(ValueError, match="TR_HYPOTHESIS_PROFILE='nope'"):
        pytest_plugin.load_profile()
    assert settings().max_examples == before
    assert pytest_plugin.register_profiles()
