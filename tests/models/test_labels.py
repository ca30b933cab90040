"""Labels files as researchers write them: a class name per line, where a line's number is the class.

A blank line is a class without a name, never a line to skip: skipping it would shift every later
name by one, and the predictions would name the wrong class.
"""
from __future__ import annotations

import pytest

from cnnvis_gui.models import ModelLoadError, load, load_labels


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


# ---------------------------------------------------------------------------- bounds and odd values
ARCH = "cnnvis_gui.models.demo_nets:GlyphsNet"


def test_a_labels_file_may_have_as_many_lines_as_a_model_may_have_classes(tmp_path):
    from cnnvis_gui.core.bounds import MAX_LABELS
    p = tmp_path / "labels.txt"
    p.write_bytes(b"a\n" * (MAX_LABELS - 1) + b"last\n")
    labels = load_labels(p)
    assert len(labels) == MAX_LABELS and labels[-1] == "last"
    p.write_bytes(b"a\n" * (MAX_LABELS + 1))
    with pytest.raises(ModelLoadError) as e:
        load_labels(p)
    assert str(e.value) == ("labels file labels.txt: 1,048,577 labels, more than the 1,048,576 a model's classes "
                            "may have; is it a labels file?")


@pytest.fixture(scope="module")
def glyphs_weights(tmp_path_factory):
    """A small checkpoint to load with the labels a user gives (``load(..., labels=...)``)."""
    import torch

    from cnnvis_gui.models.demo_nets import GlyphsNet
    path = tmp_path_factory.mktemp("labels") / "glyphs.pth"
    torch.manual_seed(0)
    torch.save(GlyphsNet().state_dict(), path)
    return path


@pytest.mark.parametrize("labels, message", [
    (42, "labels: expected a list of labels or a mapping {index: label}, got int."),
    ({"0": "cat", "x": "dog"}, "labels: a labels mapping needs integer keys (class index -> label)."),
    ({0: "cat", 1.0: "dog"}, "labels: a labels mapping needs integer keys (class index -> label)."),   # 1.0 is no index
    ({0: "cat", True: "dog"}, "labels: a labels mapping needs integer keys (class index -> label)."),
    ({-1: "cat"}, "labels: label index -1 is outside 0..1,048,575 (a mapping's largest index decides how many "
                  "labels there are)."),
    ({1 << 20: "cat"}, "labels: label index 1,048,576 is outside 0..1,048,575 (a mapping's largest index decides "
                       "how many labels there are)."),
    (["x"] * ((1 << 20) + 1), "labels: 1,048,577 labels, more than the 1,048,576 a model's classes may have; is it "
                              "a labels file?"),
])
def test_labels_given_to_load_that_cannot_be_class_names_say_why(glyphs_weights, labels, message):
    with pytest.raises(ModelLoadError) as e:
        load(glyphs_weights, arch=ARCH, labels=labels)
    assert str(e.value) == message


def test_labels_given_to_load_at_their_bounds(glyphs_weights):
    lm = load(glyphs_weights, arch=ARCH, labels={(1 << 20) - 1: "last", 2: "bird"})
    assert len(lm.labels) == 1 << 20 and lm.labels[:4] == ["0", "1", "bird", "3"] and lm.labels[-1] == "last"
    lm = load(glyphs_weights, arch=ARCH, labels=["x"] * (1 << 20))
    assert len(lm.labels) == 1 << 20


def test_labels_that_are_numbers_are_named_as_numbers(glyphs_weights):
    """``list(np.unique(y))`` gives numpy numbers: the predictions pane says 3, not np.int64(3)."""
    import numpy as np
    given = [np.int64(3), np.float32(0.5), np.uint8(7), 2, 1.5, True, None, ("n0", np.int16(9)), {"a": 1}, []]
    lm = load(glyphs_weights, arch=ARCH, labels=given)
    assert lm.labels == ["3", "0.5", "7", "2", "1.5", "True", "None", "9", "{'a': 1}", "[]"]
    lm = load(glyphs_weights, arch=ARCH, labels={np.int64(1): np.int64(5)})
    assert lm.labels == ["0", "5"]
