"""The documentation site: its sources are complete, and the built site works in a browser.

Source checks (always run, standard library only):

- every public name (``__all__``) of ``trustregion``, ``trustregion.distributions``,
  ``trustregion.kernels`` and ``rl_adapters`` (and its modules) has a ``::: name`` entry in
  its page under ``docs/reference/``;
- every ``file.py:function`` that ``docs/trpo_from_tutorials.md`` quotes exists;
- every page under ``docs/`` has a line in the ``nav`` of ``mkdocs.yml``.

Browser check (``test_site_in_headless_chromium``): serves the built site (``make docs``
writes ``site/``; ``TR_DOCS_SITE_DIR`` points elsewhere) on 127.0.0.1, opens it in headless
Chromium through chromedriver (Debian's ``chromium`` and ``chromium-driver``, driven by
selenium from the ``docs`` extra), follows every internal link, and fails on a 404, a
console error (a JavaScript error or a resource that failed to load), a missing anchor, a
request to any host but the local server, math that MathJax did not typeset (or typeset as
an error), or a search that finds nothing.  Without the site or the browser it skips; with
``TR_REQUIRE_DOCS_SITE=1`` (set by ``.ci/run``, which builds the site and installs
Chromium first) the skip becomes a failure.
"""

from __future__ import annotations

import ast
import functools
import http.server
import json
import os
import re
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"

# page under docs/reference/ -> (package, source files whose __all__ it documents)
REFERENCE_PAGES = {
    "trustregion.md": ["trustregion/__init__.py"],
    "distributions.md": ["trustregion/distributions.py"],
    "kernels.md": ["trustregion/kernels/__init__.py"],
    "testing.md": ["trustregion/testing/__init__.py"],
    # every public module of rl_adapters: a new module's names need their entries too
    "rl_adapters.md": sorted(
        p.relative_to(ROOT).as_posix() for p in (ROOT / "rl_adapters").glob("*.py")
        if p.name == "__init__.py" or not p.name.startswith("_")
    ),
}
# Names in __all__ that are not API entries of their own.
NOT_DOCUMENTED = {"__version__", "distributions"}


def _dunder_all(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                names: list[str] = []
                for element in ast.walk(node.value):
                    if isinstance(element, ast.Constant) and isinstance(element.value, str):
                        names.append(element.value)
                    elif isinstance(element, ast.Starred) and isinstance(element.value, ast.Name):
                        names.extend(_tuple_constant(tree, element.value.id))
                return names
    return []


def _tuple_constant(tree: ast.Module, name: str) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return [e.value for e in ast.walk(node.value)
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


@pytest.mark.parametrize("page", sorted(REFERENCE_PAGES))
def test_reference_page_lists_every_public_name(page: str) -> None:
    text = (REFERENCE / page).read_text()
    documented = {entry.rsplit(".", 1)[-1] for entry in re.findall(r"^::: (\S+)", text, re.M)}
    for source in REFERENCE_PAGES[page]:
        missing = [n for n in _dunder_all(ROOT / source)
                   if n not in documented and n not in NOT_DOCUMENTED]
        assert not missing, (
            f"docs/reference/{page} has no '::: ...' entry for {missing} "
            f"(from __all__ of {source}): add one line per name"
        )


def test_every_package_with_public_names_has_a_reference_page() -> None:
    covered = {s for sources in REFERENCE_PAGES.values() for s in sources}
    for init in sorted(ROOT.glob("trustregion/**/__init__.py")):
        rel = init.relative_to(ROOT).as_posix()
        if rel in covered or "/core/" in rel or "/solvers/" in rel:
            continue  # core and solvers are re-exported by trustregion
        assert not _dunder_all(init), (
            f"{rel} exports {_dunder_all(init)} but no page under docs/reference/ documents "
            "it: add a page (one '::: name' line per public name), its nav line in "
            "mkdocs.yml, and its entry in REFERENCE_PAGES here"
        )


def _defined(path: Path, qualname: str) -> bool:
    """Whether ``qualname`` (``f``, ``Class.method``, ``f.inner``) is defined in ``path``."""
    scope: list[ast.stmt] = ast.parse(path.read_text()).body
    for part in qualname.split("."):
        found = None
        for node in scope:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) \
                    and node.name == part:
                found = node
                break
            if isinstance(node, ast.Assign | ast.AnnAssign) and part in {
                t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(t, ast.Name)
            }:
                found = node
                break
        if found is None:
            return False
        scope = list(ast.walk(found))[1:] if isinstance(found, ast.FunctionDef) else (
            found.body if isinstance(found, ast.ClassDef) else []
        )
        scope = [n for n in scope if isinstance(n, ast.stmt)]
    return True


def test_tutorial_map_quotes_existing_code() -> None:
    text = (DOCS / "trpo_from_tutorials.md").read_text()
    quoted = re.findall(r"`([\w/]+\.py):([\w.]+)`", text)
    assert len(quoted) >= 15, quoted
    for file, qualname in quoted:
        assert (ROOT / file).is_file(), f"trpo_from_tutorials.md quotes a missing file {file}"
        assert _defined(ROOT / file, qualname), (
            f"trpo_from_tutorials.md quotes {file}:{qualname}, which is not defined there"
        )


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text().split("\nnav:", 1)[1]
    listed = set(re.findall(r"([\w/.-]+\.md)\s*$", nav, re.M))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    missing = sorted(pages - listed)
    assert not missing, f"pages without a nav line in mkdocs.yml: {missing}"
    assert not listed - pages, f"nav lines without a page: {sorted(listed - pages)}"


# ------------------------------------------------------------------ the browser check
REQUIRE = os.environ.get("TR_REQUIRE_DOCS_SITE") == "1"
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,900",
)
MATH_PAGE = "cg/"  # a concept page with inline and display math
SEARCH_TERM = "conjugate"


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"TR_REQUIRE_DOCS_SITE=1 but {reason}")
    pytest.skip(reason)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, site: Path) -> None:
        self.not_found: list[str] = []
        handler = functools.partial(_Handler, directory=str(site))
        super().__init__(("127.0.0.1", 0), handler)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        if code == 404:
            self.server.not_found.append(self.path)  # type: ignore[attr-defined]
        super().send_error(code, message, explain)


@pytest.fixture(scope="module")
def site_dir() -> Path:
    site = Path(os.environ.get("TR_DOCS_SITE_DIR", ROOT / "site"))
    if not (site / "index.html").is_file():
        _unavailable(f"no built site at {site} (run `make docs`)")
    return site


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser")
                     if shutil.which(n)), None)
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        _unavailable("chromium and chromedriver are not installed "
                     "(apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[docs]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _page_of(url: str, base: str) -> str | None:
    """The site page (URL without fragment or query) of an internal link, else None."""
    parts = urllib.parse.urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}/" != base:
        return None
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


WAIT_FOR_MATH = """
const done = arguments[arguments.length - 1];
if (!document.querySelector('.arithmatex')) { done('no math'); return; }
if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) {
  done('MathJax did not load'); return;
}
MathJax.startup.promise.then(() => done('ok'), (e) => done('MathJax failed: ' + e));
"""

MATH_STATE = """
return {
  math: document.querySelectorAll('.arithmatex').length,
  typeset: document.querySelectorAll('.arithmatex mjx-container').length,
  errors: Array.from(document.querySelectorAll('mjx-merror'))
               .map(e => e.getAttribute('data-mjx-error') || e.textContent).slice(0, 3),
};
"""


@pytest.mark.slow
def test_site_in_headless_chromium(site_dir: Path, browser) -> None:
    server = _Server(site_dir)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    problems: list[str] = []
    try:
        browser.set_script_timeout(60)
        todo, seen = [base], {base}
        anchors: list[tuple[str, str, str]] = []  # (page linking, target page, fragment)
        ids: dict[str, set[str]] = {}
        math_pages = 0
        while todo:
            page = todo.pop()
            browser.get(page)
            state = browser.execute_async_script(WAIT_FOR_MATH)
            if state not in ("ok", "no math"):
                problems.append(f"{page}: {state}")
            if state == "ok":
                math = browser.execute_script(MATH_STATE)
                math_pages += 1
                if math["typeset"] != math["math"]:
                    problems.append(f"{page}: {math['typeset']} of {math['math']} formulas "
                                    "typeset by MathJax")
                if math["errors"]:
                    problems.append(f"{page}: MathJax errors {math['errors']}")
            ids[page] = set(browser.execute_script(
                "return Array.from(document.querySelectorAll('[id]')).map(e => e.id);"))
            hrefs = browser.execute_script(
                "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);")
            for href in hrefs:
                target = _page_of(href, base)
                if target is None:
                    continue
                fragment = urllib.parse.urlsplit(href).fragment
                if fragment:
                    anchors.append((page, target, urllib.parse.unquote(fragment)))
                if target not in seen and not re.search(r"\.(png|svg|json|py|txt|csv)$",
                                                        target):
                    seen.add(target)
                    todo.append(target)
            for entry in browser.get_log("browser"):
                if entry["level"] == "SEVERE":
                    problems.append(f"{page}: console error: {entry['message']}")
            for entry in browser.get_log("performance"):
                message = json.loads(entry["message"])["message"]
                if message["method"] != "Network.requestWillBeSent":
                    continue
                url = message["params"]["request"]["url"]
                scheme = urllib.parse.urlsplit(url).scheme
                if scheme in ("http", "https", "ws", "wss") and not url.startswith(base):
                    problems.append(f"{page}: request to a non-local host: {url}")
        for page, target, fragment in anchors:
            if target in ids and fragment not in ids[target]:
                problems.append(f"{page}: link to {target}#{fragment}, no such anchor")

        # Material's search runs in a local web worker over search/search_index.json.
        browser.get(base)
        browser.execute_script(
            "const input = document.querySelector('.md-search__input');"
            "input.focus(); input.value = arguments[0];"
            "input.dispatchEvent(new Event('input', {bubbles: true}));"
            "input.dispatchEvent(new KeyboardEvent('keyup', {bubbles: true}));", SEARCH_TERM)
        hits = 0
        for _ in range(100):
            hits = browser.execute_script(
                "return document.querySelectorAll('.md-search-result__item').length;")
            if hits:
                break
            browser.execute_async_script("setTimeout(arguments[0], 100);")
        if not hits:
            problems.append(f"search for {SEARCH_TERM!r} found nothing")
        for entry in browser.get_log("browser"):
            if entry["level"] == "SEVERE":
                problems.append(f"search: console error: {entry['message']}")
    finally:
        server.shutdown()
        server.server_close()
    problems += [f"404: {path}" for path in server.not_found]
    assert len(seen) >= 25, f"followed only {len(seen)} pages from {base}"
    assert math_pages >= 5 and f"{base}{MATH_PAGE}" in seen, "math pages not reached"
    assert not problems, "\n".join(problems)
