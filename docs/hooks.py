"""MkDocs hooks for the trustregion site (``hooks:`` in ``mkdocs.yml``).

1. MathJax is served from the site itself: the MathJax 3 ``es5`` tree shipped in the
   ``django-static-mathjax`` wheel (the ``docs`` extra) is added to the build as
   ``assets/mathjax/``, with its configuration ``assets/mathjax-config.js``.  Nothing is
   vendored into git and nothing is fetched at build or view time.
2. Pages may link to repository files outside ``docs/`` (``../benchmarks/README.md``): those
   files are added to the site under ``repo/`` and the links are rewritten to them, so the
   strict build still fails on a link to a file that does not exist.

pytest imports this file while collecting doctests from ``docs/``: MkDocs is imported inside
the hooks only, so collection works in an environment without the ``docs`` extra.
"""

from __future__ import annotations

import importlib.util
import posixpath
import re
from pathlib import Path
from typing import Any

#: Where the repository files linked from pages land in the site.
REPO_PREFIX = "repo"
MATHJAX_PREFIX = "assets/mathjax"

# arithmatex (generic mode) wraps math in \( \) and \[ \] inside elements of class "arithmatex":
# MathJax typesets those and nothing else.
MATHJAX_CONFIG = """\
window.MathJax = {
  tex: {
    inlineMath: [["\\\\(", "\\\\)"]],
    displayMath: [["\\\\[", "\\\\]"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex"
  },
  svg: { fontCache: "global" }
};
"""

# Inline Markdown links and images: [text](target) / ![alt](target "title").
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
_FENCE = re.compile(r"^(```|~~~)")

# Filled by on_files, read by on_page_markdown: site path -> file on disk, for the
# repository files added under repo/.
_repo_files: dict[str, Path] = {}


def _mathjax_dir() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or spec.origin is None:
        raise _plugin_error(
            "MathJax not found: install the docs extra (pip install -e '.[docs]'), which "
            "provides django-static-mathjax"
        )
    es5 = Path(spec.origin).parent / "static" / "mathjax" / "es5"
    if not (es5 / "tex-svg.js").is_file():
        raise _plugin_error(
            f"MathJax: {es5 / 'tex-svg.js'} is missing; reinstall django-static-mathjax"
        )
    return es5


def _plugin_error(message: str) -> Exception:
    from mkdocs.exceptions import PluginError

    return PluginError(message)


def _split_target(target: str) -> tuple[str, str] | None:
    """(path, '#anchor' or '') for a relative link to a file, None for anything else."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return None
    path, sep, anchor = target.partition("#")
    return (path, sep + anchor) if path else None


def _outside_links(text: str, real_dir: Path, docs_dir: Path, repo_root: Path) -> list[Path]:
    """Existing repository files outside docs/ that ``text`` links to (relative to real_dir)."""
    found = []
    for line in _prose_lines(text):
        for match in _LINK.finditer(line):
            split = _split_target(match.group(2))
            if split is None:
                continue
            target = (real_dir / split[0]).resolve()
            if target.is_relative_to(docs_dir) or not target.is_relative_to(repo_root):
                continue
            if target.is_file() and not _private(target.relative_to(repo_root)):
                found.append(target)
    return found


def _private(rel: Path) -> bool:
    return any(part.startswith(".") or part in {"site", "build", "dist"} for part in rel.parts)


def _prose_lines(text: str):
    """The lines of ``text`` outside fenced code blocks."""
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line.lstrip()):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield line


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, "assets/mathjax-config.js", content=MATHJAX_CONFIG))
    es5 = _mathjax_dir()
    for path in sorted(es5.rglob("*")):
        if path.is_file():
            uri = f"{MATHJAX_PREFIX}/{path.relative_to(es5).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))

    docs_dir = Path(config["docs_dir"]).resolve()
    repo_root = docs_dir.parent
    _repo_files.clear()
    pending = [Path(f.abs_src_path) for f in files.documentation_pages() if f.abs_src_path]
    seen: set[Path] = set()
    while pending:  # follow links from pages, and from the repository pages they bring in
        page = pending.pop()
        if page in seen:
            continue
        seen.add(page)
        for target in _outside_links(page.read_text(encoding="utf-8"), page.parent,
                                     docs_dir, repo_root):
            uri = f"{REPO_PREFIX}/{target.relative_to(repo_root).as_posix()}"
            if uri not in _repo_files:
                _repo_files[uri] = target
                files.append(File.generated(config, uri, abs_src_path=str(target)))
                if target.suffix == ".md":
                    pending.append(target)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    repo_root = docs_dir.parent
    src_uri = page.file.src_uri
    real = _repo_files.get(src_uri, docs_dir / src_uri)
    page_dir = posixpath.dirname(src_uri)

    def rewrite(match: re.Match[str]) -> str:
        split = _split_target(match.group(2))
        if split is None:
            return match.group(0)
        target = (real.parent / split[0]).resolve()
        if target.is_relative_to(docs_dir):
            if src_uri not in _repo_files:
                return match.group(0)  # a page inside docs/ linking inside docs/: as written
            site_uri = target.relative_to(docs_dir).as_posix()
        elif target.is_relative_to(repo_root) and target.is_file():
            site_uri = f"{REPO_PREFIX}/{target.relative_to(repo_root).as_posix()}"
        else:
            return match.group(0)  # let MkDocs report the broken link
        new = posixpath.relpath(site_uri, page_dir or ".") + split[1]
        return match.group(1) + new + match.group(3)

    out = []
    in_fence = False
    for line in markdown.split("\n"):
        if _FENCE.match(line.lstrip()):
            in_fence = not in_fence
        elif not in_fence:
            line = _LINK.sub(rewrite, line)
        out.append(line)
    return "\n".join(out)

