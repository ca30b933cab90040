"""A griffe extension for the API reference: a doctest block outside any numpy section is an example.

Several docstrings here show ``>>>`` lines right after their summary, without an ``Examples`` header.
Numpy-style parsing then keeps them as text, and markdown reads each ``>>>`` as a nested quote. This
extension puts an ``Examples`` header (the word, a line of dashes) before the first such block, so it
renders as code; docstrings that already have the header are left alone, and a singular ``Example``
header (which griffe reads as a note, not as code) becomes ``Examples``. Loaded by mkdocs.yml.
"""
from __future__ import annotations

import re

import griffe

SECTION = re.compile(r"^[ \t]*(Examples?|Parameters|Returns|Raises|Notes|Attributes|See Also|Yields|Warns|"
                     r"Other Parameters|References)[ \t]*\n[ \t]*-{3,}[ \t]*$", re.M)
DOCTEST = re.compile(r"^([ \t]*)>>> ", re.M)


SINGULAR = re.compile(r"^([ \t]*)Example[ \t]*\n([ \t]*)-{3,}[ \t]*$", re.M)


def with_examples_header(text: str) -> str:
    text = SINGULAR.sub(r"\1Examples\n\2--------", text)    # griffe reads a singular "Example" as an admonition
    m = DOCTEST.search(text)
    if not m or any(s.start() < m.start() for s in SECTION.finditer(text)):
        return text                                       # no doctest, or it is inside a section already
    indent = m.group(1)
    return f"{text[:m.start()]}{indent}Examples\n{indent}--------\n{text[m.start():]}"


class DoctestExamples(griffe.Extension):
    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = with_examples_header(obj.docstring.value)
