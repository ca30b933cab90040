"""mkdocs hooks: serve docs/sections/*.md as the site's pages, unchanged on disk.

The sections were written as one README, so each starts at ``##``; the site lifts a page's headings one
level when it has no ``#`` heading (ids and anchors are unchanged). ``sections/00-top.md`` is the home
page, and ``sections/50-gui.md`` is served at ``gui/``.
"""
from __future__ import annotations

import re

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{2,6})(\s)")
NUMBERED = re.compile(r"^sections/\d+-(.+)\.md$")
HOME = "sections/00-top.md"


def on_files(files, config):
    for f in files.documentation_pages():
        m = NUMBERED.match(f.src_uri)
        if not m:
            continue
        stem = m.group(1)
        f.dest_uri = "index.html" if f.src_uri == HOME else f"{stem}/index.html"
        f.url = "" if f.src_uri == HOME else f"{stem}/"
    return files


def lift_headings(markdown: str) -> str:
    """Raise every heading one level (``##`` to ``#``) outside code fences, if the page has no ``#``."""
    lines, fenced = markdown.split("\n"), False
    has_h1 = False
    for line in lines:
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("# "):
            has_h1 = True
    if has_h1:
        return markdown
    out, fenced = [], False
    for line in lines:
        if FENCE.match(line):
            fenced = not fenced
        out.append(line if fenced else HEADING.sub(lambda m: m.group(1)[1:] + m.group(2), line))
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    return lift_headings(markdown) if page.file.src_uri.startswith("sections/") else markdown
