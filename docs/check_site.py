"""Build the documentation site strictly, offline, and say how to fix each thing that breaks it.

    python docs/check_site.py                 # build into a temporary folder; exit 1 on any warning
    python docs/check_site.py --site-dir site # keep the site (then: python -m http.server -d site)

This is ``mkdocs build --strict`` (``tests/test_docs_site.py`` runs it in the test pass): a link to a
missing file or heading, a page left out of the ``nav`` of ``mkdocs.yml``, or a docstring that the API
reference cannot read is an error. Each one is printed with the fix, for instance::

    sections/60-cli.md: link '#keys' -- no heading with that id on this page.
      fix: it is a heading of sections/50-gui.md: write (50-gui.md#keys)
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

MISSING_FILE = re.compile(r"Doc file '(?P<page>[^']+)' contains a link '(?P<link>[^']+)', but the target "
                          r"'(?P<target>[^']+)' is not found among documentation files")
MISSING_ANCHOR_HERE = re.compile(r"Doc file '(?P<page>[^']+)' contains a link '#(?P<anchor>[^']+)', but there is "
                                 r"no such anchor on this page")
MISSING_ANCHOR_THERE = re.compile(r"Doc file '(?P<page>[^']+)' contains a link '(?P<link>[^']+)', but the doc "
                                  r"'(?P<target>[^']+)' does not contain an anchor '#(?P<anchor>[^']+)'")
UNRECOGNIZED = re.compile(r"Doc file '(?P<page>[^']+)' contains an? (?:unrecognized|absolute) link "
                          r"'(?P<link>[^']+)'")
NOT_IN_NAV = re.compile(r"pages exist in the docs directory, but are not included in the \"nav\"")
GRIFFE = re.compile(r"^(?P<where>[\w/.-]+\.py:\d+): (?P<what>.*)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def heading_ids(page: Path) -> set[str]:
    """The ids the site gives the headings of a markdown page (GitHub's rule: pymdownx.slugs, lower case)."""
    from pymdownx.slugs import slugify
    slug = slugify(case="lower")
    ids, fenced = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda g: g.group(1) or "", m.group(1))
            ids.add(slug(text, "-"))
    return ids


def where_is(anchor: str) -> list[str]:
    """The pages (relative to docs/) that have a heading with this id."""
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if anchor in heading_ids(p))


def relative(from_page: str, to_page: str) -> str:
    import posixpath
    return posixpath.relpath(to_page, posixpath.dirname(from_page) or ".")


def advice(message: str) -> str:
    """One line saying how to fix what this warning reports."""
    if m := MISSING_FILE.search(message):
        link, page = m["link"], m["page"]
        if link.startswith("docs/"):
            fixed = relative(page, link[len("docs/"):])
            return (f"links in {page} are relative to that file (as on GitHub; the README's are rewritten by "
                    f"docs/build_readme.py): write ({fixed}) instead of ({link})")
        return f"there is no docs/{m['target']}: fix the path (relative to docs/{page}) or add the file"
    if m := MISSING_ANCHOR_HERE.search(message):
        return _anchor_fix(m["page"], m["anchor"], "this page")
    if m := MISSING_ANCHOR_THERE.search(message):
        return _anchor_fix(m["page"], m["anchor"], m["target"])
    if m := UNRECOGNIZED.search(message):
        return ("link to another page by its file, relative to this one (50-gui.md#keys, ../images/x.png), "
                "or to the web with a full https:// address")
    if NOT_IN_NAV.search(message):
        return ("add each page listed to the nav of mkdocs.yml (one line, e.g. `  - Dissection: "
                "sections/75-dissect.md`), or name it under not_in_nav there")
    if message.startswith("griffe:") and (m := GRIFFE.match(message[len("griffe:"):].strip())):
        return (f"the docstring at {m['where']} is not numpy style where the API reference "
                f"reads it: prose after a 'Parameters' list needs its own section header (Notes, Raises, "
                f"Examples: the word, then a line of dashes), and each parameter is 'name : type' on its own line")
    if "cross-reference" in message or "autorefs" in message:
        return "an API reference [name][] names no documented object: fix the dotted path"
    return "see the mkdocs message above"


def _anchor_fix(page: str, anchor: str, target: str) -> str:
    pages = where_is(anchor)
    if pages:
        links = ", ".join(f"({relative(page, p)}#{anchor})" for p in pages)
        return f"'#{anchor}' is a heading of {', '.join(pages)}: write {links}"
    return (f"no page has a heading with the id '{anchor}' (ids are the heading's words in lower case, "
            f"joined by '-', punctuation dropped): link to a heading that exists on {target}")


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def build(site_dir: Path) -> list[str]:
    """Build the site strictly into ``site_dir``; return every warning and error mkdocs logged."""
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort, ConfigurationError

    log = logging.getLogger("mkdocs")
    collect = _Collect()
    log.addHandler(collect)
    log.propagate = False
    try:
        cfg = load_config(str(ROOT / "mkdocs.yml"), strict=True, site_dir=str(site_dir))
        cfg.plugins.on_startup(command="build", dirty=False)
        try:
            mkdocs_build(cfg)
        finally:
            cfg.plugins.on_shutdown()
    except (Abort, ConfigurationError) as exc:
        if not collect.messages:
            collect.messages.append(str(exc))
    finally:
        log.removeHandler(collect)
    return collect.messages


def report(messages: list[str]) -> str:
    lines = ["The documentation site does not build strictly (mkdocs build --strict, as the test pass runs it):"]
    fixes = [advice(msg.strip()) for msg in messages]
    for i, (msg, fix) in enumerate(zip(messages, fixes)):
        lines.append("  - " + msg.strip().replace("\n", " "))
        if i + 1 == len(messages) or fixes[i + 1] != fix:   # one fix for a run of messages it answers
            lines.append(f"    fix: {fix}")
    lines.append("Rebuild with `python docs/check_site.py` until it prints nothing; `mkdocs serve` shows the site.")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site-dir", type=Path, help="where to write the site (default: a temporary folder)")
    args = ap.parse_args(argv)
    # Material's end-of-life banner is printed on every build; it is not about this site.
    import os
    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
    if args.site_dir:
        messages = build(args.site_dir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="cnnvis-site-") as tmp:
            messages = build(Path(tmp))
    if messages:
        print(report(messages))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
