"""Imports point one way between the top-level folders: tests and rl_adapters never reach
into benchmarks/, and rl_adapters never into tests/."""

import pathlib
import re

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
