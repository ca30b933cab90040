"""``cnnvis atlas`` / ``cnnvis optimize`` end to end in a subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from ..waits import CHILD_S
from .helpers import make_images

ROOT = Path(__file__).resolve().parents[2]


def _cli_available():
    if not (ROOT / "assets" / "models" / "shapes.pth").is_file():
        pytest.skip("the shapes demo checkpoint (assets/models/shapes.pth) is not in the tree yet")


def _run(args, tmp_path):
    env = dict(os.environ, CNNVIS_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-m", "cnnvis_gui", *args], capture_output=True, text=True,
                          cwd=str(ROOT), env=env, timeout=CHILD_S)


def test_atlas_command(tmp_path):
    _cli_available()
    make_images(tmp_path / "im", n=14, size=(64, 64))
    out = tmp_path / "out"
    r = _run(["atlas", "--model", "shapes", "--device", "cpu", "--images", str(tmp_path / "im"),
              "--layer", "features.14", "--top", "4", "--units", "0-2", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "1 skipped" in r.stdout
    doc = json.loads((out / "atlas.json").read_text())
    units = doc["layers"]["features.14"]["units"]
    assert len(units) == 64 and doc["images"] == 15
    for u in units:
        vals = [h["value"] for h in u["hits"]]
        assert len(vals) == 4 and vals == sorted(vals, reverse=True)
        assert len({h["path"] for h in u["hits"]}) == 4
        assert all(Path(h["path"]).is_file() for h in u["hits"])
    for u in range(3):
        img = cv2.imread(str(out / units[u]["montage"]))
        assert img is not None and img.shape[1] > img.shape[0]
        assert all(len(h["box"]) == 4 for h in units[u]["hits"])
    assert "montage" not in units[3]
    # second run: the scan comes from the cache
    r2 = _run(["atlas", "--model", "shapes", "--device", "cpu", "--images", str(tmp_path / "im"),
               "--layer", "features.14", "--top", "4", "--no-montage", "--out", str(tmp_path / "out2")], tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert "from cache" in r2.stdout


def test_optimize_command(tmp_path):
    _cli_available()
    out = tmp_path / "opt.png"
    r = _run(["optimize", "--model", "shapes", "--device", "cpu", "--layer", "features.10", "--unit", "5",
              "--preset", "1", "--iterations", "40", "--zoom", "2", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(out)).shape == (128, 128, 3)
    first, image = r.stdout.strip().splitlines()[-2:]
    assert "optimized" in first and "random input" in first and "(preset yosinski-1, 40 iterations" in first
    assert image.startswith("  image: Yosinski et al. 2015: pixels, decay 0, blur 0.5 px every 4, small-norm clip 50 %")
    assert image.endswith("objective: features.10 unit 5 centre")
    # the default: Fourier image, the whole channel, what was used said
    r = _run(["optimize", "--model", "shapes", "--device", "cpu", "--layer", "features.10", "--unit", "5",
              "--iterations", "20", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    first, image = r.stdout.strip().splitlines()[-2:]
    assert "(preset fourier, 20 iterations" in first
    assert image.startswith("  image: Fourier, 1/f^") and "decorrelated colour (ImageNet)" in image
    assert image.endswith("Adam lr 0.05; objective: features.10 channel 5")
    r = _run(["optimize", "--model", "shapes", "--device", "cpu", "--layer", "features.10", "--unit", "5",
              "--preset", "cppn", "--out", str(out)], tmp_path)
    assert r.returncode == 2 and "unknown preset 'cppn'; choose one of fourier, maco, pixel, yosinski-1" in r.stderr
    r = _run(["optimize", "--model", "shapes", "--device", "cpu", "--layer", "nope", "--unit", "5",
              "--out", str(out)], tmp_path)
    assert r.returncode == 2 and "nope" in r.stderr


def test_optimize_several_units_writes_their_montage_and_caches_each(tmp_path):
    _cli_available()
    out = tmp_path / "units.png"
    args = ["optimize", "--model", "shapes", "--device", "cpu", "--layer", "features.10", "--units", "0-2,5",
            "--batch", "3", "--iterations", "8", "--out", str(out)]
    r = _run(args, tmp_path)
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(out)).shape == (64 * 2 + 2, 64 * 2 + 2, 3)          # 4 tiles of the 64 x 64 input
    summary, image = r.stdout.strip().splitlines()[-2:]
    assert summary.startswith("layer features.10 units 0-2,5: 4 images (0 from cache), activation ")
    assert "montage in unit order" in summary and image.startswith("  image: Fourier")
    assert "4/4 units (100%)" in r.stderr                                    # progress on a non-terminal stderr
    r = _run(["optimize", "--model", "shapes", "--device", "cpu", "--layer", "features.10", "--unit", "5",
              "--iterations", "8", "--out", str(tmp_path / "u5.png")], tmp_path)
    assert r.returncode == 0 and "from cache" in r.stdout                    # the single unit's key
    r = _run(args[:-6] + ["--units", "0-64", "--out", str(out)], tmp_path)
    assert r.returncode == 2 and "--units: '0-64' is out of range (0..63)" in r.stderr
    r = _run(args[:7] + ["--unit", "3"] + args[7:], tmp_path)
    assert r.returncode == 2 and "not allowed with argument" in r.stderr
