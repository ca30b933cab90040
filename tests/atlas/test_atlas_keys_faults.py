"""Scan faults (a model that raises on some images), stable cache keys for ``path.py:Net`` models,
and atlas.json coordinates."""
import json

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_gui import cli, models
from cnnvis_gui.atlas import TopKScan
from cnnvis_gui.atlas.cache import class_key, weights_hash
from cnnvis_gui.core import ModelForwardError

from .helpers import TINY_SPEC, make_images, tiny_model, run_scan


class Picky(nn.Module):
    """The tiny net, but its forward raises for bright inputs (mean of the normalized input > 1)."""

    def __init__(self):
        super().__init__()
        self.net = tiny_model()

    def forward(self, x):
        if (x.flatten(1).mean(1) > 1.0).any():
            raise ValueError("too bright")
        return self.net(x)


def test_scan_skips_images_the_model_raises_on(tmp_path, cache):
    folder = tmp_path / "im"
    make_images(folder, n=12, bad=False)
    cv2.imwrite(str(folder / "a" / "bright.png"), np.full((40, 36, 3), 250, np.uint8))
    res = run_scan(TopKScan(Picky(), TINY_SPEC, folder, ["net.features.4"], k=3, batch_size=8))
    assert res.model_failures == [(p, r) for p, r in res.skipped] and len(res.skipped) == 1
    rel, why = res.skipped[0]
    assert rel == "a/bright.png" and "ValueError: too bright" in why
    bright = res.paths.index("a/bright.png")
    t = res.layer("net.features.4")
    assert bright not in set(t.images.ravel().tolist())
    assert res.to_dict()["model_failed"] == 1
    for u in range(t.units):
        mine = {res.paths[i] for i in t.images[u] if i >= 0}
        assert len(mine) == 3 and "a/bright.png" not in mine
    # the other images of the failing batch were retried one by one: the same top-k values as the
    # plain net on the folder without the bright image
    (folder / "a" / "bright.png").unlink()
    ref = run_scan(TopKScan(tiny_model(), TINY_SPEC, folder, ["features.4"], k=3, batch_size=8, use_cache=False))
    np.testing.assert_allclose(t.values, ref.layer("features.4").values, rtol=1e-5, atol=1e-6)


def test_scan_where_every_image_fails_is_a_model_error(tmp_path, cache):
    d = tmp_path / "im"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"{i}.png"), np.full((40, 40, 3), 250, np.uint8))
    with pytest.raises(ModelForwardError, match=r"raised on all 3 decodable images.*0\.png.*too bright"):
        run_scan(TopKScan(Picky(), TINY_SPEC, d, ["net.features.4"], batch_size=2))


NET = '''
import torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(6 * 16 * 16, 4)
    def forward(self, x):
        return self.fc(self.features(x).flatten(1))
'''


def test_file_model_cache_key_is_stable(tmp_path):
    f = tmp_path / "net.py"
    f.write_text(NET)
    a = models.load(None, arch=f"{f}:Net", device="cpu").model
    b = models.load(None, arch=f"{f}:Net", device="cpu").model
    assert type(a).__module__ != type(b).__module__      # a random module name per load
    b.load_state_dict(a.state_dict())
    assert class_key(type(a)) == class_key(type(b)) and "_cnnvis_user_" not in class_key(type(a))
    h_a = weights_hash(a)
    assert h_a == weights_hash(b)
    f.write_text(NET + "# edited\n")
    c = models.load(None, arch=f"{f}:Net", device="cpu").model
    c.load_state_dict(a.state_dict())
    assert weights_hash(c) != h_a           # an edited architecture file is another model


def test_atlas_command_file_model_cache_hit_and_json_coordinates(tmp_path, monkeypatch, capsys):
    (tmp_path / "net.py").write_text(NET)
    torch.manual_seed(0)
    lm = models.load(None, arch=f"{tmp_path / 'net.py'}:Net", device="cpu")
    torch.save(lm.model.state_dict(), tmp_path / "w.pth")
    make_images(tmp_path / "im", n=6, bad=False)
    monkeypatch.chdir(tmp_path)
    argv = ["atlas", "--model", "net.py:Net", "--weights", "w.pth", "--input-size", "32", "--device", "cpu",
            "--images", "im", "--layer", "features.1", "--top", "2", "--units", "0-1", "--probes", "0",
            "--cache-dir", str(tmp_path / "cache"), "--out", "out"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "from cache" not in capsys.readouterr().out
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "(scan from cache)" in capsys.readouterr().out
    doc = json.loads((tmp_path / "out" / "atlas.json").read_text())
    assert doc["folder"] == str((tmp_path / "im").resolve())
    coords = doc["coordinates"]
    assert "[y0, x0, y1, x1]" in coords["box"] and coords["fit"] == doc["spec"]["fit"]
    assert coords["input_size"] == [32, 32]
    hit = doc["layers"]["features.1"]["units"][0]["hits"][0]
    assert hit["path"].startswith(str(tmp_path.resolve())) and (tmp_path / "im").resolve().joinpath(
        "a" if "/a/" in hit["path"] else "b").is_dir()
    y0, x0, y1, x1 = hit["box"]
    assert 0 <= y0 < y1 <= 32 and 0 <= x0 < x1 <= 32
    assert not list((tmp_path / "out").rglob("*.tmp"))
