"""The one bounded reader for sizes and files (core/bounds.py) and the terminal filter (core/text.py)."""
from __future__ import annotations

import io
import json
import math
import os
import threading

import numpy as np
import pytest

from cnnvis_gui.core.bounds import (SizeError, bounded_int, finite_float, load_json_bounded, not_a_file,
                                    parse_json_bounded, read_bounded)
from cnnvis_gui.core.errors import CnnvisError, one_line
from cnnvis_gui.core.text import TerminalStream, printable, raw_stream


@pytest.mark.parametrize("value,want", [(0, 0), (7, 7), (np.int64(9), 9), (6.0, 6), (10, 10)])
def test_whole_numbers_in_bounds_are_read(value, want):
    got = bounded_int(value, "k", 0, 10)
    assert got == want and type(got) is int


@pytest.mark.parametrize("value,words", [
    (True, "whole number, got True (bool)"), (2.5, "whole number, got 2.5"), ("3", "whole number, got '3'"),
    (None, "got None (NoneType)"), (math.nan, "got nan"), (math.inf, "got inf"), ([1], "got [1] (list)"),
    (11, "is 11, outside 0..10"), (-1, "is -1, outside 0..10"), (10 ** 12, "is 1,000,000,000,000, outside")])
def test_anything_else_is_refused_by_name_before_it_is_used(value, words):
    with pytest.raises(SizeError) as e:
        bounded_int(value, "the part's 'count'", 0, 10, "rerun that shard")
    assert str(e.value).startswith("the part's 'count' ") and words in str(e.value)
    assert str(e.value).endswith("; rerun that shard.")


def test_a_long_or_hostile_value_is_shown_short_and_escaped():
    with pytest.raises(SizeError) as e:
        bounded_int("\x1b[2K" + "9" * 500, "x", 0, 1)
    assert "\x1b" not in str(e.value) and "\\x1b[2K" in str(e.value) and len(str(e.value)) < 120


@pytest.mark.parametrize("value,kw,words", [(math.nan, {}, "finite"), (-math.inf, {}, "finite"),
                                             (0.0, {"positive": True}, "positive"), (None, {}, "must be a number"),
                                             ("0.5", {}, "must be a number"), (True, {}, "must be a number"),
                                             (0.0, {"nonzero": True}, "not be zero"), (5.0, {"high": 1}, "at most 1"),
                                             (-1.0, {"low": 0}, "at least 0")])
def test_finite_float_refuses_nan_inf_and_wrong_types(value, kw, words):
    with pytest.raises(SizeError, match=words):
        finite_float(value, "scale", **kw)
    assert finite_float(0.25, "scale", positive=True) == 0.25


# ---------------------------------------------------------------------------- files
def test_read_bounded_reads_a_regular_file_and_names_everything_else(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello")
    assert read_bounded(f, 5, "labels file") == b"hello"
    with pytest.raises(CnnvisError, match=r"labels file '.*a\.txt' is 5 bytes, more than the 4"):
        read_bounded(f, 4, "labels file")
    with pytest.raises(CnnvisError, match="labels file not found"):
        read_bounded(tmp_path / "none", 5, "labels file")
    with pytest.raises(CnnvisError, match="is a folder"):
        read_bounded(tmp_path, 5, "labels file")
    with pytest.raises(CnnvisError, match=r"'/dev/zero' is a device, not a regular file"):
        read_bounded("/dev/zero", 1 << 20, "labels file")
    assert not_a_file("/dev/zero") == "a device" and not_a_file(tmp_path) == "a folder"
    assert not_a_file(tmp_path / "none") == "missing" and not_a_file(f) is None


def test_a_fifo_is_refused_at_once_instead_of_hanging(tmp_path):
    fifo = tmp_path / "labels.txt"
    os.mkfifo(fifo)
    out = {}

    def read():
        try:
            read_bounded(fifo, 100, "labels file")
        except CnnvisError as e:
            out["err"] = str(e)
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():          # unblock the reader before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a FIFO with no writer hung")
    assert "FIFO (named pipe), not a regular file" in out["err"]


def test_json_nested_past_any_limit_is_refused_before_python_recurses(tmp_path):
    deep = "[" * 200000 + "]" * 200000
    with pytest.raises(CnnvisError, match="nested 200000 levels deep"):
        parse_json_bounded(deep, "model.json")
    ok = {"a": "[[[[[[", "b": [[1]], "c": "\\\"{"}          # brackets inside strings are not nesting
    p = tmp_path / "ok.json"
    p.write_text(json.dumps(ok))
    assert load_json_bounded(p, "ok.json", max_depth=3) == ok
    with pytest.raises(CnnvisError, match="not valid JSON"):
        parse_json_bounded("{", "x.json")
    with pytest.raises(CnnvisError, match="not UTF-8"):
        parse_json_bounded(b"\xff\xfe", "x.json")


# ---------------------------------------------------------------------------- terminal text
def test_printable_shows_control_characters_instead_of_obeying_them():
    fake = "os:system\x1b[2K\x1b[1A\rrerun with --trust-code\u202e\x9b"
    shown = printable(fake)
    assert shown == "os:system\\x1b[2K\\x1b[1A\\x0drerun with --trust-code\\u202e\\x9b"
    assert printable(shown) == shown                                  # twice changes nothing
    assert printable("a\tb\nc") == "a\tb\nc" and printable("a\nb", newlines=False) == "a\\x0ab"
    assert printable("Zürich 東京 \U0001f600") == "Zürich 東京 \U0001f600"


def test_the_terminal_stream_filters_every_write_and_keeps_the_raw_one_for_bars():
    raw = io.StringIO()
    s = TerminalStream(raw)
    print("layer \x1b[31mred\x1b[0m", file=s)
    s.writelines(["\x07bell\n"])
    assert raw.getvalue() == "layer \\x1b[31mred\\x1b[0m\n\\x07bell\n"
    assert raw_stream(s) is raw and raw_stream(raw) is raw and s.isatty() is False


def test_one_line_names_foreign_errors_and_keeps_ours():
    assert one_line(CnnvisError("unit 3 is out of range")) == "unit 3 is out of range"
    assert one_line(KeyError("count")) == "KeyError: missing entry 'count' (run with --traceback for details)"
    assert one_line(MemoryError()).startswith("out of memory")
    assert one_line(RecursionError("maximum recursion depth")).startswith("an input is nested too deeply")
    assert one_line(TypeError("a\nb")) == "TypeError: a (run with --traceback for details)"
