"""Top-k scan faults: empty / unreadable folders give one clear error; training flags come back as they were."""
import pytest
from torch import nn

from cnnvis_gui.atlas import TopKScan, load_scan
from cnnvis_gui.core import CnnvisError

from .helpers import TINY_SPEC, make_images, tiny_model, run_scan


def test_empty_folder_is_a_clear_error(tmp_path, cache):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CnnvisError, match=r"no images in folder '.*empty'.*looked for \.png, \.jpg") as e:
        run_scan(TopKScan(tiny_model(), TINY_SPEC, empty, ["features.4"]))
    assert "other file" not in str(e.value)
    (empty / "notes.txt").write_text("x")
    (empty / "sub").mkdir()
    (empty / "sub" / "data.csv").write_text("1,2")
    with pytest.raises(CnnvisError, match="found 2 other files"):
        run_scan(TopKScan(tiny_model(), TINY_SPEC, empty, ["features.4"]))
    with pytest.raises(CnnvisError, match="no images"):
        load_scan(tiny_model(), TINY_SPEC, empty, ["features.4"])


def test_all_files_unreadable_is_a_clear_error(tmp_path, cache):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.png").write_bytes(b"zzz")
    (d / "b.jpg").write_bytes(b"")
    with pytest.raises(CnnvisError, match=r"none of the 2 image files in '.*bad' could be decoded: a\.png"):
        run_scan(TopKScan(tiny_model(), TINY_SPEC, d, ["features.4"], batch_size=1))


def test_mixed_training_flags_are_restored(tmp_path, cache):
    make_images(tmp_path / "im", n=6, bad=False)
    model = tiny_model().train()
    bn = nn.BatchNorm2d(8)
    model.features[1] = nn.Sequential(bn, nn.ReLU())
    bn.eval()                              # frozen BN inside a training model
    model.fc.eval()
    before = {n: m.training for n, m in model.named_modules()}
    running = bn.running_mean.clone()
    assert any(before.values()) and not all(before.values())
    run_scan(TopKScan(model, TINY_SPEC, tmp_path / "im", ["features.4"], k=2, batch_size=4))
    assert {n: m.training for n, m in model.named_modules()} == before
    assert (bn.running_mean == running).all()     # the scan ran it in eval mode


def test_cli_atlas_on_an_empty_folder_is_one_error_line(tmp_path, cache, capsys):
    from pathlib import Path
    if not (Path(__file__).resolve().parents[2] / "assets" / "models" / "glyphs.pth").is_file():
        pytest.skip("the glyphs demo checkpoint is not in the tree")
    from cnnvis_gui.cli import main
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    rc = main(["atlas", "--model", "glyphs", "--device", "cpu", "--images", str(empty), "--layer", "output",
               "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnvis: error: no images in folder '"), err
    assert "found 1 other file" in lines[0] and "Traceback" not in err and "KeyError" not in err
    assert not (tmp_path / "out").exists()
