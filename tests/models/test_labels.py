"""Labels files as researchers write them: a class name per line, where a line's number is the class.

A blank line is a class without a name, never a line to skip: skipping it would shift every later
name by one, and the predictions would name the wrong class.
"""
from __future__ import annotations

import pytest

from cnnvis_gui.models import ModelLoadError, load_labels


@pytest.mark.parametrize("text, want", [
    ("cat\ndog\n\nbird\nfish\n", ["cat", "dog", "", "bird", "fish"]),        # a class with no name: kept in place
    ("\ncat\ndog\n", ["", "cat", "dog"]),                                    # ... also the first
    ("cat\n\n\ndog", ["cat", "", "", "dog"]),
    ("cat\r\n\r\ndog\r\n", ["cat", "", "dog"]),                               # Windows line ends
    ("\ufeffcat\ndog\n", ["cat", "dog"]),                                     # a byte-order mark
    ("  tench  \n\tgoldfish\n", ["tench", "goldfish"]),                       # spaces around a name
    ("cat\ndog\n\n\n", ["cat", "dog"]),                                       # blank lines at the end: no classes
    ("great white shark\n", ["great white shark"]),
])
def test_a_line_s_number_is_its_class(tmp_path, text, want):
    p = tmp_path / "labels.txt"
    p.write_bytes(text.encode("utf-8"))
    assert load_labels(p) == want


def test_a_file_of_blank_lines_is_empty(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("\n\n  \n")
    with pytest.raises(ModelLoadError, match="labels file labels.txt is empty"):
        load_labels(p)


def test_an_empty_json_file_is_said_to_be_json(tmp_path):
    p = tmp_path / "labels.json"
    p.write_text("  \n")
    with pytest.raises(ModelLoadError, match="labels file labels.json is not valid JSON"):
        load_labels(p)
