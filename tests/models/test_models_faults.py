"""Weight and labels files that cannot be read, folders given as files, zip decompression bombs."""
from __future__ import annotations

import os
import zipfile

import pytest
import torch

from cnnvis_gui import cli
from cnnvis_gui.models import ModelLoadError, load, load_labels, read_weights
from cnnvis_gui.core import bounds
from cnnvis_gui.models import pickles, weights
from cnnvis_gui.models.demo_nets import GlyphsNet

ARCH = "cnnvis_gui.models.demo_nets:GlyphsNet"


def _denied(*a, **k):
    raise PermissionError(13, "Permission denied")


def test_unreadable_weight_file_is_a_model_load_error(tmp_path, monkeypatch, capsys):
    p = tmp_path / "w.pth"
    torch.save(GlyphsNet().state_dict(), p)
    monkeypatch.setattr(weights, "open", _denied, raising=False)   # root ignores chmod 000: simulate it
    with pytest.raises(ModelLoadError, match=r"cannot read the weight file .*w\.pth: permission denied"):
        read_weights(p)
    assert cli.main(["info", "--model", ARCH, "--weights", str(p)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "permission denied" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unreadable_labels_file_is_a_model_load_error(tmp_path, monkeypatch, capsys):
    lab = tmp_path / "labels.txt"
    lab.write_text("a\nb\n")
    real_open = os.open
    # root ignores chmod 000: the bounded reader's open is denied for this file only
    monkeypatch.setattr(bounds.os, "open", lambda p, *a, **k: _denied() if str(p) == str(lab) else real_open(p, *a, **k))
    with pytest.raises(ModelLoadError, match=r"cannot read the labels file .*labels\.txt': permission denied"):
        load_labels(lab)
    assert cli.main(["info", "--model", "glyphs", "--labels", str(lab)]) == cli.EXIT_USAGE
    assert "permission denied" in capsys.readouterr().err


def test_folder_given_as_weights_or_labels_says_folder(tmp_path, capsys):
    with pytest.raises(ModelLoadError, match="is a folder"):
        read_weights(tmp_path)
    with pytest.raises(ModelLoadError, match="is a folder"):
        load_labels(tmp_path)
    for opt in ("--weights", "--labels"):
        extra = ["--model", ARCH] if opt == "--weights" else ["--model", "glyphs"]
        assert cli.main(["info", *extra, opt, str(tmp_path)]) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert f"{opt}: '{tmp_path}' is a folder" in err and "no such file" not in err


def _zip_checkpoint(path, pkl_bytes: int):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/version", "3\n")
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(pkl_bytes >> 20):
                f.write(block)
    return path


def test_zip_pickle_bomb_is_refused_before_unpacking(tmp_path, monkeypatch):
    p = _zip_checkpoint(tmp_path / "bomb.pth", 3 << 20)   # 3 MB of zeros, packed to a few KB
    monkeypatch.setattr(weights, "MAX_ZIP_PICKLE_BYTES", 2 << 20)
    loaded = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loaded.append(1))
    with pytest.raises(ModelLoadError, match=r"data\.pkl unpacks to 3 MB .* decompression bomb"):
        load(p, arch=ARCH)
    assert not loaded        # torch.load never saw it


def test_pickle_scanner_decompresses_at_most_its_cap(tmp_path):
    p = _zip_checkpoint(tmp_path / "big.pth", 8 << 20)
    [(data, n_pickles, more)] = pickles._pickle_bytes(p)
    assert len(data) == pickles.SCAN_BYTES < 8 << 20 and more and n_pickles == 1
    assert pickles.MAX_ZIP_PICKLE_BYTES >= 64 << 20   # real checkpoints (a few MB of structure) still open


def test_huge_input_spec_from_a_file_is_refused_before_the_probe(tmp_path):
    p = tmp_path / "big.pth"
    torch.save({"state_dict": GlyphsNet().state_dict(),
                "cnnvis": {"arch": ARCH, "spec": {"channels": 1, "height": 100000, "width": 100000}}}, p)
    with pytest.raises(ModelLoadError, match=r"1x100000x100000: one input would hold 10,000,000,000 values"):
        load(p)
