"""Every script in examples/ runs in short mode, writes its figure and prints its result.

Each script runs in a subprocess (as a user runs it) with ``--short`` and ``--out`` a fresh
folder; the test checks the exit code, the figure, and the property the script's story is
about (for example that ``divergence_ascent`` lands on SLSQP's optimum).  A new example
needs an entry in ``EXPECTED``, a page ``docs/examples/<name>.md`` and a nav line in
``mkdocs.yml``: the consistency tests below say which is missing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _check_trpo(out: str) -> None:
    rows = re.findall(r"^\s+\d+\s+\S+\s+\d+\s+(\S+)\s+(\S+)\s+(\S+)\s+\d+\s+(True|False)$",
                      out, re.MULTILINE)
    assert len(rows) == 3, out
    for _predicted, actual, kl, accepted in rows:
        if accepted == "True":  # an accepted trial improved the surrogate within the KL bound
            assert float(actual) > 0.0 and float(kl) <= 0.01 + 1e-12, out


def _check_portfolio(out: str) -> None:
    assert "divergence_ascent: status CONVERGED" in out, out
    assert "SLSQP:             success True" in out, out
    gap = float(re.search(r"max \|w_ours - w_slsqp\| = ([0-9.e+-]+)", out).group(1))
    assert gap < 1e-5, out
    largest_kl, budget = map(float, re.search(
        r"largest KL of one step: (\S+) \(budget (\S+)\)", out).groups())
    assert largest_kl <= budget, out


def _check_cpo(out: str) -> None:
    assert re.findall(r"(INACTIVE|ACTIVE|RECOVERY) ", out) == ["INACTIVE", "ACTIVE", "RECOVERY"]


def _check_minimize(out: str) -> None:
    assert out.count("status 0 (Optimization terminated successfully.)") == 2, out
    gap = float(re.search(r"max \|x_trustregion - x_scipy\| = ([0-9.e+-]+)", out).group(1))
    assert gap < 1e-8, out


def _check_halfcheetah(out: str) -> None:
    assert "SB3-contrib TRPO (saved)" in out and "this run (seed 0)" in out, out
    assert re.search(r"after 4096 steps", out), out


def _check_fvp(out: str) -> None:
    assert "passed check_fvp on 20 hypothesis cases" in out, out
    assert out.count("\nbug: ") == 4 and out.count("check_fvp: ") >= 4, out


# script name -> (figure it writes or None, check of its printed output, slow?)
EXPECTED = {
    "trpo_cartpole_step": ("trpo_cartpole_step.png", _check_trpo, True),
    "kl_portfolio": ("kl_portfolio.png", _check_portfolio, False),
    "cpo_cases": ("cpo_cases.png", _check_cpo, False),
    "minimize_logistic": (None, _check_minimize, False),
    "halfcheetah_vs_sb3": ("halfcheetah_vs_sb3.png", _check_halfcheetah, True),
    "fvp_property_test": (None, _check_fvp, False),
}


def _params():
    for name, (_, _, slow) in EXPECTED.items():
        yield pytest.param(name, id=name, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("name", list(_params()))
def test_example_runs_in_short_mode(name: str, tmp_path: Path) -> None:
    figure, check, _ = EXPECTED[name]
    env = {**os.environ, "TR_EXAMPLES_SHORT": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--out", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    if figure is not None:
        png = tmp_path / "out" / figure
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", proc.stdout
    check(proc.stdout)


def test_every_example_is_tested_and_has_a_page() -> None:
    scripts = {p.stem for p in EXAMPLES.glob("*.py")}
    assert scripts == set(EXPECTED), "examples/ and EXPECTED differ"
    mkdocs_yml = (ROOT / "mkdocs.yml").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for name in scripts:
        page = ROOT / "docs" / "examples" / f"{name}.md"
        assert page.is_file(), f"{name}: no page {page.relative_to(ROOT)}"
        assert f'--8<-- "examples/{name}.py"' in page.read_text(), f"{name}: page lacks source"
        assert f"examples/{name}.md" in mkdocs_yml, f"{name}: no nav line in mkdocs.yml"
        assert re.search(rf"^EXAMPLES :=.*\b{name}\b", makefile, re.MULTILINE), (
            f"{name}: not in the Makefile's EXAMPLES (make examples)"
        )
        for output in (f"{name}.txt", EXPECTED[name][0]):
            if output is not None:
                path = ROOT / "docs" / "examples" / "assets" / output
                assert path.is_file(), f"{name}: run `make examples` to write {path.name}"
