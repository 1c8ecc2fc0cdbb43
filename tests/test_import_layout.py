"""Imports point one way between the top-level folders: tests and rl_adapters never reach
into benchmarks/, and rl_adapters never into tests/."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# sys.path manipulation or an import that names another top-level folder of the repository
REACH = re.compile(r"sys\.path\.(insert|append)\(.*(benchmarks|tests)|^\s*(from|import)\s+(benchmarks|tests)\b",
                   re.MULTILINE)


def test_tests_and_the_packages_never_import_benchmarks_or_tests():
    offenders = []
    for folder in ("tests", "rl_adapters", "trustregion"):
        for path in (ROOT / folder).rglob("*.py"):
            for match in REACH.finditer(path.read_text()):
                if folder == "tests" and match.group(0).strip().endswith("tests"):
                    continue  # tests may import their own helpers
                offenders.append(f"{path.relative_to(ROOT)}: {match.group(0).strip()}")
    assert not offenders, offenders


def test_an_attribute_error_while_importing_lazily_keeps_its_cause(monkeypatch):
    # `from rl_adapters import TRPO` would turn it into a bare "cannot import name"
    import rl_adapters

    monkeypatch.setitem(rl_adapters._LAZY, "TRPO", ("rl_adapters.config", "NoSuchName"))
    with pytest.raises(ImportError, match=r"rl_adapters\.config for rl_adapters\.TRPO failed: "
                                          r"AttributeError: .*NoSuchName") as info:
        from rl_adapters import TRPO  # noqa: F401
    assert isinstance(info.value.__cause__, AttributeError)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        rl_adapters.nothing  # noqa: B018
