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


@pytest.mark.parametrize("name, text, want", [
    ("l.json", '["cat", "dog"]', ["cat", "dog"]),
    ("l.txt", ' ["cat", 3]', ["cat", "3"]),                                      # JSON found by its first character
    ("l.txt", '{"labels": ["cat", "dog"]}', ["cat", "dog"]),
    ("l.json", '{"labels": {"1": "dog"}}', ["0", "dog"]),
    ("l.json", '{"2": "bird", "0": "cat"}', ["cat", "1", "bird"]),            # a gap gets its index
    ("l.json", '{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"]}', ["tench", "goldfish"]),
    ("l.json", '[["n01440764", "tench"], []]', ["tench", "[]"]),
    ("l.json", "{}", []),
])
def test_json_labels(tmp_path, name, text, want):
    p = tmp_path / name
    p.write_text(text)
    assert load_labels(p) == want


@pytest.mark.parametrize("name, data, message", [
    ("l.json", b'{"cat": "x"}', "labels file l.json: a labels mapping needs integer keys (class index -> label)."),
    ("l.json", b"[1, 2", "labels file l.json is not valid JSON: "),
    ("l.json", b"3", "labels file l.json: expected a JSON list or an object {index: label}."),
    ("l.txt", b"\xff\xfecat", "labels file l.txt is not UTF-8 text."),
])
def test_labels_files_that_cannot_be_read_say_why(tmp_path, name, data, message):
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(ModelLoadError) as e:
        load_labels(p)
    assert str(e.value).startswith(message)


def test_a_missing_labels_file_or_a_folder(tmp_path):
    with pytest.raises(ModelLoadError, match=f"^labels file not found: '{tmp_path / 'none.txt'}'.$"):
        load_labels(tmp_path / "none.txt")
    with pytest.raises(ModelLoadError, match="is a folder; give the file inside it"):
        load_labels(tmp_path)


def test_a_list_entry_gives_its_last_name(tmp_path):
    p = tmp_path / "l.json"
    p.write_text('[["tench"], ["n01443537", "goldfish", "Carassius auratus"], "shark"]')
    assert load_labels(p) == ["tench", "Carassius auratus", "shark"]


@pytest.mark.parametrize("error, said", [(OSError(5, "Input/output error"), "Input/output error"),
                                         (OSError("the disk went away"), "the disk went away")])
def test_a_labels_file_the_system_cannot_read_says_why(tmp_path, monkeypatch, error, said):
    import os
    import types

    from cnnvis_gui.core import bounds
    p = tmp_path / "l.txt"
    p.write_text("cat\n")

    def fail(*a, **k):
        raise error
    # the bounded reader's own read fails (a disk error after the open), nobody else's
    monkeypatch.setattr(bounds, "os", types.SimpleNamespace(**{**vars(os), "read": fail}))
    with pytest.raises(ModelLoadError) as e:
        load_labels(p)
    assert str(e.value) == f"cannot read the labels file '{p}': {said}."
