"""The trustregion.testing pytest plugin: profiles, the seeded rng fixture, --tr-seed."""

import subprocess
import sys
import textwrap

import numpy as np
from hypothesis import settings

from trustregion.testing import pytest_plugin

USER_TESTS = textwrap.dedent(
    """
    def test_prints_its_draws(rng):
        with open("draws.txt", "a") as out:
            out.write(f"DRAW {rng.integers(0, 2**31, 3).tolist()}\\n")

    def test_fails(rng):
        assert rng.random() > 2.0
    """
)

HIDE_HYPOTHESIS = textwrap.dedent(
    """
    import sys, importlib.abc
    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "hypothesis" or name.startswith("hypothesis."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Hide())
    for name in [m for m in sys.modules if m.startswith("hypothesis")]:
        del sys.modules[name]
    import pytest
    sys.exit(pytest.main(sys.argv[1:]))
    """
)


def run_pytest(tmp_path, *args, hide_hypothesis=False):
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    prefix = ["-c", HIDE_HYPOTHESIS] if hide_hypothesis else ["-m", "pytest"]
    # -p no:hypothesispytest: hypothesis' own plugin cannot load once hypothesis is hidden
    extra = ["-p", "no:hypothesispytest"] if hide_hypothesis else []
    out = subprocess.run(
        [sys.executable, *prefix, "-q", "-p", "no:cacheprovider", *extra, *args,
         str(tmp_path / "test_user.py")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    return out


def test_profiles_are_registered_and_the_ci_profile_is_derandomized():
    assert pytest_plugin.register_profiles()
    ci = settings.get_profile("trustregion-ci")
    assert ci.derandomize and ci.deadline is None and ci.max_examples == 60
    assert settings.get_profile("trustregion-thorough").max_examples == 2000


def draws_of(path):
    lines = (path / "draws.txt").read_text().splitlines()
    (path / "draws.txt").unlink()
    return lines


def test_rng_is_reproducible_seeded_by_tr_seed_and_a_failure_says_how_to_reproduce(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    default = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    draws = {0: draws_of(pytester.path)}
    seeded = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--tr-seed=7")
    draws[7] = draws_of(pytester.path)
    default.assert_outcomes(passed=1, failed=1)
    assert "rerun with --tr-seed=0 to reproduce" in default.stdout.str()
    assert "rerun with --tr-seed=7 to reproduce" in seeded.stdout.str()
    for base in (0, 7):
        stream = pytest_plugin.stream_seed(base, "test_user.py::test_prints_its_draws")
        expected = np.random.default_rng(stream).integers(0, 2**31, 3).tolist()
        assert draws[base] == [f"DRAW {expected}"]
    assert draws[0] != draws[7]


def test_the_plugin_does_not_break_pytest_without_hypothesis(tmp_path):
    out = run_pytest(tmp_path, "--tr-seed=3", hide_hypothesis=True)
    assert "1 failed, 1 passed" in out.stdout, out.stdout + out.stderr
    assert "rerun with --tr-seed=3 to reproduce" in out.stdout
    assert len(draws_of(tmp_path)) == 1
