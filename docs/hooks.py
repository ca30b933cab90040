"""mkdocs hooks: serve docs/sections/*.md as the site's pages, unchanged on disk.

- ``sections/00-top.md`` is the home page (``index.html``); ``sections/50-gui.md`` is ``gui.html``.
- The sections were written as one README, so most start at ``##``: a page without a ``#`` heading has
  its headings lifted one level (their ids, and so every anchor, stay the same).
- ``<!-- pages ... -->`` on the home page becomes the list of pages from the nav (as in the README).
- In a table row, ``\\|`` inside a code span becomes ``|`` (GitHub's reading; Python-Markdown keeps the
  backslash).
- The docstrings' Sphinx roles (``:class:`~pkg.Name```, ``:meth:`x```) show as their code, as Sphinx
  shows them (``Name``, ``x``): mkdocstrings leaves them as text.
- A link that leaves docs/ for a file of the repository (``../../benchmarks/bench_engine.py``, which is
  right on GitHub) gets a page of its own on the site showing that file, and the link points there.
  A link to a file that does not exist is left alone, so the strict build reports it.
"""
from __future__ import annotations

import importlib.util
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, InclusionLevel

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{2,6})(\s)")
NUMBERED = re.compile(r"^sections/\d+-(.+)\.md$")
HOME = "sections/00-top.md"
LINK = re.compile(r"(\]\()([^)\s#]+)((?:#[^)\s]*)?\))")
REPO_PAGES = "repository"          # site folder of the pages that show repository files
SPHINX_ROLE = re.compile(r":(?:attr|class|data|func|meth|mod|obj|exc):<code>(~(?:[\w.]*\.)?)?")
LANGUAGES = {".py": "python", ".sh": "bash", ".toml": "toml", ".yml": "yaml", ".yaml": "yaml",
             ".json": "json", ".md": "markdown", ".txt": "text", ".cfg": "ini", ".ini": "ini"}


def _build_readme():
    spec = importlib.util.spec_from_file_location("build_readme", Path(__file__).with_name("build_readme.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def repo_target(src_uri: str, target: str) -> str | None:
    """The repository path a relative link of page ``src_uri`` names, when it leaves docs/ (else None)."""
    if re.match(r"[a-z][a-z0-9+.-]*:|/", target):
        return None
    path = posixpath.normpath(posixpath.join("docs", posixpath.dirname(src_uri), target))
    if path.startswith("docs/") or path.startswith("../") or path == "..":
        return None
    return path


def _outside_links(files):
    """{repository path: None} for every link of a markdown page that leaves docs/ for an existing file."""
    found = {}
    for f in files.documentation_pages():
        text = Path(f.abs_src_path).read_text(encoding="utf-8") if f.abs_src_path else (f.content_string or "")
        for m in LINK.finditer(text):
            path = repo_target(f.src_uri, m.group(2))
            if path and (ROOT / path).is_file():
                found[path] = None
    return found


def repo_page_uri(path: str) -> str:
    return f"{REPO_PAGES}/{path}.md"


def repo_page(path: str) -> str:
    """A page that shows one repository file as it is."""
    text = (ROOT / path).read_text(encoding="utf-8", errors="replace")
    fence = "````" if "```" in text else "```"
    lang = LANGUAGES.get(Path(path).suffix, "text")
    return (f"# `{path}`\n\nThe file as it is in this checkout of the repository.\n\n"
            f"{fence}{lang}\n{text.rstrip()}\n{fence}\n")


def on_files(files, config):
    for f in files.documentation_pages():
        m = NUMBERED.match(f.src_uri)
        if m:
            name = "index" if f.src_uri == HOME else m.group(1)
            if config["use_directory_urls"]:
                f.dest_uri = "index.html" if name == "index" else f"{name}/index.html"
                f.url = "" if name == "index" else f"{name}/"
            else:
                f.dest_uri = f.url = f"{name}.html"
    for path in _outside_links(files):
        files.append(File.generated(config, repo_page_uri(path), content=repo_page(path),
                                    inclusion=InclusionLevel.NOT_IN_NAV))
    return files


def lift_headings(markdown: str) -> str:
    """Raise every heading one level (``##`` to ``#``) outside code fences, if the page has no ``#``."""
    lines, fenced = markdown.split("\n"), False
    for line in lines:
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("# "):
            return markdown
    out, fenced = [], False
    for line in lines:
        if FENCE.match(line):
            fenced = not fenced
        out.append(line if fenced else HEADING.sub(lambda m: m.group(1)[1:] + m.group(2), line))
    return "\n".join(out)


CODE_SPAN = re.compile(r"`[^`\n]*`")


def table_code_pipes(markdown: str) -> str:
    """``\\|`` inside a code span of a table row is a literal ``|`` on GitHub; Python-Markdown would show the
    backslash, and it splits no cell at a pipe inside a code span, so the escape is dropped there."""
    out, fenced = [], False
    for line in markdown.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
        if not fenced and line.lstrip().startswith("|") and "\\|" in line:
            line = CODE_SPAN.sub(lambda m: m.group(0).replace("\\|", "|"), line)
        out.append(line)
    return "\n".join(out)


def relink_outside(markdown: str, src_uri: str) -> str:
    """Point links to repository files at their pages on the site."""
    def one(m):
        path = repo_target(src_uri, m.group(2))
        if not path or not (ROOT / path).is_file():
            return m.group(0)
        return m.group(1) + posixpath.relpath(repo_page_uri(path), posixpath.dirname(src_uri) or ".") + m.group(3)
    return LINK.sub(one, markdown)


def on_page_markdown(markdown, page, config, files):
    src = page.file.src_uri
    if src.startswith(f"{REPO_PAGES}/"):
        return markdown
    if src == HOME:
        br = _build_readme()
        markdown = br.expand_pages(markdown, config["nav"])
    if src.startswith("sections/"):
        markdown = lift_headings(markdown)
    markdown = table_code_pipes(markdown)
    return relink_outside(markdown, src)


def on_page_content(html, page, config, files):
    if not page.file.src_uri.startswith("api/"):
        return html
    return SPHINX_ROLE.sub("<code>", html)
