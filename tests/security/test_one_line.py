"""One clear line, not a traceback (issue 24), and text from files shown, never obeyed by the terminal.

Each case is a file or an argument from the issue's list, run through the real command line: the
exit code, exactly one line on stderr that says what is wrong, and no traceback.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
import torch

from cnnvis_gui.cli import main
from cnnvis_gui.models import load
from tests.waits import CHILD_S

from .helpers import shapes_state_dict
from .test_sizes import lying_png

ARCH = "cnnvis_gui.models.demo_nets:ShapesNet"
FAKE = "\x1b[2K\x1b[1A\rcnnvis: note: rerun with --trust-code"


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _ckpt(tmp_path, meta, name="w.pth"):
    p = tmp_path / name
    torch.save({"state_dict": shapes_state_dict(), "cnnvis": {"arch": ARCH, **meta}}, p)
    return p


def test_a_100000_squared_png_is_one_line(tmp_path, capsys):
    p = tmp_path / "huge.png"
    p.write_bytes(lying_png(100000, 100000, rows=2))
    assert main(["export", "--input", str(p), "--layer", "features.0", "--out", str(tmp_path / "o")]) == 2
    assert "declares 100000x100000 pixels" in _one_line(capsys.readouterr().err)


def test_a_hub_cache_file_with_integer_keys_is_one_line(tmp_path, monkeypatch, capsys):
    import torchvision
    w = torchvision.models.ResNet18_Weights.DEFAULT
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save({0: torch.zeros(3), 1: torch.ones(2)}, hub / w.url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CNNVIS_OFFLINE", "1")
    assert main(["info", "--model", "torchvision:resnet18", "--pretrained"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "does not hold a state dict of named tensors (it holds the key 0 (int)" in line
    assert "delete it and load again" in line


def test_a_quantized_torchvision_model_named_by_metadata_is_one_line(tmp_path, capsys):
    import torchvision.models as tvm
    with warnings.catch_warnings():           # torch's own deprecation of quantized tensors (once a process)
        warnings.simplefilter("ignore")
        sd = tvm.get_model("quantized_resnet18", weights=None, quantize=True).state_dict()
    assert any(not isinstance(v, torch.Tensor) for v in sd.values())          # dtype entries
    p = tmp_path / "q.pth"
    torch.save({"state_dict": sd, "cnnvis": {"arch": "torchvision:quantized_resnet18",
                                             "arch_kwargs": {"quantize": True}}}, p)
    assert main(["info", "--model", str(p)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "is a quantized model" in line and "load its float version instead" in line


@pytest.mark.parametrize("spec,words", [
    ({"scale": None}, "scale must be a number, got None"), ({"mean": [[0.5], [0.5], [0.5]]}, "mean[0] must be a number"),
    ({"channels": "3"}, "channels must be a positive integer, got '3'"), ({"std": [0.2, math.inf, 0.2]}, "finite"),
    ({"mean": math.nan}, "finite"), ({"scale": -math.inf}, "finite"), ({"fit": ["crop"]}, "fit must be one of"),
    ({"channel_order": 3}, "channel_order must be 'RGB' or 'BGR', got 3"), ({"height": True}, "height must be a positive")])
def test_spec_values_of_the_wrong_type_or_not_finite_are_one_line(tmp_path, capsys, spec, words):
    p = _ckpt(tmp_path, {"spec": {"channels": 3, "height": 64, "width": 64, **spec}})
    assert main(["info", "--model", str(p)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "invalid input spec" in line and words in line, line


@pytest.mark.parametrize("option", ["--mean", "--std", "--scale"])
@pytest.mark.parametrize("value", ["nan", "1e999", "-1e999", "0.5,1e999,0.5"])
def test_nan_and_inf_on_the_command_line_are_refused_as_std_zero_is(capsys, option, value):
    assert main(["info", f"{option}={value}"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{option} must be finite numbers" in line, line


@pytest.mark.parametrize("edit,words", [
    (lambda m: m.pop("range"), "no 'range' field"), (lambda m: m.update(layers="features.3"), "'layers' is str"),
    (lambda m: m.update(k="3"), "its 'k' must be a whole number, got '3'"),
    (lambda m: m.update(spec=[1]), "its 'spec' is list"), (lambda m: m.update(range=[0]), "not [start, stop]"),
    (lambda m: m.update(index=5), "its 'index' is 5, outside 0..1")])
def test_part_files_missing_keys_or_with_wrong_types_are_one_line(tmp_path, capsys, edit, words):
    d = tmp_path / "p"
    d.mkdir()
    meta = {"version": 2, "count": 2, "index": 0, "range": [0, 2], "images": 4, "k": 1, "layers": ["features.3"],
            "weights": "w", "files": "f", "spec": {}, "folder": str(tmp_path), "recursive": True, "batch_size": 2}
    edit(meta)
    (d / "atlas-part.json").write_text(json.dumps(meta))
    np.savez(d / "atlas-part.npz", next_index=np.array(2), skipped_paths=np.array([], str),
             skipped_reasons=np.array([], str))
    assert main(["atlas", "merge", str(d), "--no-montage", "--no-cache", "--out", str(tmp_path / "o")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "holds a damaged or incomplete part" in line and words in line, line


def test_a_foreign_sidecar_nested_past_the_recursion_limit_is_ignored(tmp_path):
    p = tmp_path / "w.pth"
    torch.save({"state_dict": shapes_state_dict(), "cnnvis": {"arch": ARCH}}, p)
    (tmp_path / "w.json").write_text("[" * (sys.getrecursionlimit() * 20) + "]" * (sys.getrecursionlimit() * 20))
    lm = load(p)
    assert lm.model is not None
    assert any("w.json next to the weights was ignored" in n and "nested" in n for n in lm.notes), lm.notes


def test_dev_zero_as_labels_is_named_for_what_it_is(capsys):
    assert main(["info", "--labels", "/dev/zero"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "'/dev/zero' is a device, not a regular file" in line and "no such file" not in line


def test_libpngs_iccp_warning_stays_off_stderr(tmp_path):
    ok, buf = cv2.imencode(".png", np.full((8, 8, 3), 100, np.uint8))
    b = buf.tobytes()
    iccp = b"bogus\0\0" + zlib.compress(b"\0" * 200)
    chunk = struct.pack(">I", len(iccp)) + b"iCCP" + iccp + struct.pack(">I", zlib.crc32(b"iCCP" + iccp))
    p = tmp_path / "iccp.png"
    p.write_bytes(b[:33] + chunk + b[33:])                     # right after IHDR
    code = ("import sys; from cnnvis_gui.sources import load_image; "
            "print(load_image(sys.argv[1]).shape); import cv2, numpy as np; "
            "cv2.imdecode(np.fromfile(sys.argv[1], np.uint8), cv2.IMREAD_COLOR)")
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=CHILD_S)
    assert r.returncode == 0 and r.stdout.strip() == "(8, 8, 3)"
    # the raw decoder (last call) does complain: the test would see it, and load_image kept it quiet
    assert r.stderr.count("libpng warning") == 1, r.stderr


def test_any_unforeseen_error_is_one_line_with_traceback_on_request(monkeypatch, capsys):
    from cnnvis_gui.cli import export
    monkeypatch.setattr(export, "parse_methods", lambda v: {}["boom"])
    assert main(["export", "--input", ".", "--layer", "x", "--out", "o"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line == "cnnvis: error: KeyError: missing entry 'boom' (run with --traceback for details)"
    assert main(["export", "--input", ".", "--layer", "x", "--out", "o", "--traceback"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1] == line


# ---------------------------------------------------------------------------- terminal escapes
def test_names_and_labels_from_a_file_cannot_rewrite_the_terminal(tmp_path, capsys):
    p = _ckpt(tmp_path, {"name": "Shapes" + FAKE, "labels": [f"class {i}{FAKE}" for i in range(10)]})
    assert main(["info", "--model", str(p)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    assert "Shapes\\x1b[2K\\x1b[1A\\x0dcnnvis: note: rerun with --trust-code" in out
    assert main(["info", "--model", str(p), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)                   # still valid JSON, the exact strings inside
    assert doc["name"] == "Shapes" + FAKE and doc["labels"][3] == f"class 3{FAKE}"


def test_an_architecture_string_cannot_erase_the_warning_line(tmp_path, capsys):
    p = tmp_path / "e.pth"
    torch.save({"state_dict": shapes_state_dict(), "cnnvis": {"arch": "os:system" + FAKE}}, p)
    assert main(["info", "--model", str(p)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and err.count("\n") == 1
    assert "os:system\\x1b[2K\\x1b[1A\\x0dcnnvis: note: rerun with --trust-code" in err


def test_the_window_start_goes_through_the_same_boundary(tmp_path, capsys):
    from cnnvis_gui.qt import app
    p = tmp_path / "e.pth"
    torch.save({"state_dict": shapes_state_dict(), "cnnvis": {"arch": ARCH, "spec": {"scale": None}}}, p)
    assert app.main(["--model", str(p), "--screenshot", str(tmp_path / "s.png"), "--threads", "100000"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("cnnvis-gui: ") and "--threads must be at most 1024" in line
