"""The ``cnnvis`` command line, run the way a user runs it: a subprocess of the real script.

Each subprocess pays torch's start-up (~2-3 s), so cases are combined: one export run
checks file names, sizes, content, the skipped file, the summary and the raw arrays.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cnnvis_gui import cli
from cnnvis_gui.core import ATTENTION_CAMS, saliency, grad_cam
from cnnvis_gui.models import demo, demo_checkpoint, demo_samples
from cnnvis_gui.sources import load_image

from ..waits import CHILD_S

REPO = Path(__file__).resolve().parents[2]

needs_shapes = pytest.mark.skipif(not demo_checkpoint("shapes").is_file(),
                                  reason="the shapes demo checkpoint (assets/models/shapes.pth) is not built")

# A tiny net with a module called twice (calls == 2) and a functional ReLU.
TWICE_NET = '''
import torch, torch.nn as nn, torch.nn.functional as F
class Twice(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, num_classes)
    def forward(self, x):
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))          # self.act runs twice
        return self.head(F.relu(x).mean(dim=(2, 3)))
'''


def _env():
    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_module(*args, cwd=None, timeout=CHILD_S):
    """``python -m cnnvis_gui ARGS`` -> CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "cnnvis_gui", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=_env(), timeout=timeout)


def run_script(*args, cwd=None, timeout=CHILD_S):
    """The installed ``cnnvis`` console script (falls back to ``-m`` when it is not installed)."""
    exe = shutil.which("cnnvis", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the cnnvis console script is not installed in this environment (pip install -e .)")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=_env(),
                          timeout=timeout)


#: what 'all' exports on a CNN: the attention methods need a ViT, and 'all' leaves them out with a warning
_CNN_METHODS = [m for m in cli.EXPORT_METHODS if m not in ATTENTION_CAMS]


def _png(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"{path} is not a readable PNG"
    return img


def _nontrivial(img: np.ndarray) -> bool:
    return int(img.max()) - int(img.min()) > 10 and np.unique(img).size > 8


# --------------------------------------------------------------------------- no Qt
def test_cli_imports_no_qt():
    code = ("import sys; import cnnvis_gui.cli as c; p = c.build_parser(); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PyQt5', 'pyqtgraph', 'PySide2', 'PySide6')]; "
            "assert not bad, bad; print('subcommands', sorted(p._subparsers._group_actions[0].choices))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=CHILD_S)
    assert r.returncode == 0, r.stderr
    assert "'export'" in r.stdout and "'info'" in r.stdout


# --------------------------------------------------------------------------- info
@needs_shapes
def test_info_json_on_demo_and_calls_on_custom_net(tmp_path):
    r = run_module("info", "--model", "shapes", "--device", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["spec"]["height"] == 64 and doc["spec"]["channels"] == 3
    assert doc["labels"][3] == "star"
    names = {l["name"]: l for l in doc["layers"]}
    assert names["features.0"]["type"] == "Conv2d" and names["features.0"]["shape"] == [16, 64, 64]
    assert names["features.0"]["units"] == 16 and names["features.0"]["calls"] == 1
    assert names[""]["shape"] == [10]
    assert doc["default_layer"] in names

    # the installed entry point, an architecture file, --arch-kwarg and spec overrides; text then json
    (tmp_path / "twice.py").write_text(TWICE_NET)
    common = ["--model", "twice.py:Twice", "--arch-kwarg", "num_classes=7", "--input-size", "20x30",
              "--mean", "0.5", "--std", "0.25", "--device", "cpu"]
    r = run_script("info", *common, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "3x20x30" in r.stdout and "act" in r.stdout and "no weight file" in r.stdout
    r = run_script("info", *common, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    layers = {l["name"]: l for l in doc["layers"]}
    assert layers["act"]["calls"] == 2 and layers["conv1"]["calls"] == 1
    assert layers["head"]["shape"] == [7] and doc["output_shape"] == [7]
    assert (doc["spec"]["height"], doc["spec"]["width"]) == (20, 30) and doc["spec"]["mean"] == [0.5] * 3


# --------------------------------------------------------------------------- export
@needs_shapes
def test_export_folder_files_content_and_raw_match_core(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    samples = demo_samples("shapes")[:2]
    for p in samples:
        shutil.copy(p, src / p.name)
    rng = np.random.default_rng(0)
    wide = cv2.GaussianBlur(rng.integers(0, 255, (50, 90, 3), dtype=np.uint8), (7, 7), 0)
    cv2.imwrite(str(src / "wide.jpg"), wide)           # non-square: cropped to 64x64 by the spec
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)   # header ok, does not decode
    out = tmp_path / "out"
    layer = "features.8"
    r = run_module("export", "--model", "shapes", "--device", "cpu", "--input", src, "--layer", layer,
                   "--units", "0,5", "--method", "guided,gradcam", "--method", "gradient", "--raw",
                   "--out", out)
    assert r.returncode == 0, r.stderr
    assert "broken.png" in r.stderr and "warning" in r.stderr
    assert "exported 3 images (1 skipped)" in r.stdout
    stems = sorted(p.name for p in out.iterdir())
    assert stems == sorted([p.stem for p in samples] + ["wide"])
    for stem in stems:
        d = out / stem
        expected = {"input.png", f"{layer}_mosaic.png", "raw.npz"} | {
            f"{layer}_u{u:04d}_{m}.png" for u in (0, 5) for m in ("guided", "gradcam", "gradient")}
        assert {p.name for p in d.iterdir()} == expected
        for name in expected - {"raw.npz", f"{layer}_mosaic.png"}:
            img = _png(d / name)
            assert img.shape == (64, 64, 3), (name, img.shape)     # model input resolution
            assert _nontrivial(img), f"{stem}/{name} is (nearly) constant"
        mosaic = _png(d / f"{layer}_mosaic.png")
        assert mosaic.ndim == 3 and mosaic.shape[0] >= 16 * 8 and _nontrivial(mosaic)

    # the saved saliency equals the core's on the same input (same preprocessing)
    lm = demo("shapes")
    for stem, path in (("wide", src / "wide.jpg"), (samples[0].stem, samples[0])):
        raw = np.load(out / stem / "raw.npz")
        x = lm.spec.to_tensor(load_image(path))
        np.testing.assert_allclose(raw["input"], x.numpy(), atol=1e-6)
        assert list(raw["units"]) == [0, 5] and str(raw["layer"]) == layer
        assert raw["activations"].shape == (1, 64, 16, 16)
        assert raw["saliency_guided"].shape == (2, 3, 64, 64) and raw["gradcam"].shape == (2, 64, 64)
        for k, u in enumerate((0, 5)):
            for method in ("guided", "gradient"):
                ref = saliency(lm.model, x, layer, u, method=method, objective="sum")[0].numpy()
                got = raw[f"saliency_{method}"][k]
                assert np.abs(ref).max() > 0
                np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
            cam = grad_cam(lm.model, x, layer, u, str(raw["cam_layer"])).numpy()
            np.testing.assert_allclose(raw["gradcam"][k], cam, atol=1e-5)


@needs_shapes
def test_export_video_top_units_batched_all_methods(tmp_path):
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 60))
    assert w.isOpened()
    base = cv2.resize(load_image(demo_samples("shapes")[3]), (80, 60))
    for i in range(5):
        w.write(np.roll(base, 4 * i, axis=1))
    w.release()
    out = tmp_path / "out"
    r = run_module("export", "--input", video, "--max-frames", "3", "--layer", "fc1", "--top", "2",
                   "--method", "all", "--filter", "norm", "--batch-size", "2", "--zoom", "2", "--raw",
                   "--device", "cpu", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "exported 3 images" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["clip_f000000", "clip_f000001", "clip_f000002"]
    lm = demo("shapes")
    for d in sorted(out.iterdir()):
        raw = np.load(d / "raw.npz")
        units = [int(u) for u in raw["units"]]
        acts = raw["activations"][0]
        assert units == [int(i) for i in np.argsort(-acts)[:2]]          # the 2 most active units
        for m in _CNN_METHODS:
            for u in units:
                img = _png(d / f"fc1_u{u:04d}_{m}.png")
                assert img.shape == (128, 128, 3) and _nontrivial(img)      # --zoom 2
        # batched forward (2 frames per forward) gives each frame its own saliency
        x = torch.from_numpy(raw["input"])
        ref = saliency(lm.model, x, "fc1", units[0], method="deconvnet")[0].numpy()
        np.testing.assert_allclose(raw["saliency_deconvnet"][0], ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


# --------------------------------------------------------------------------- errors
@needs_shapes
def test_bad_arguments_exit_2_with_one_clear_message(tmp_path):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.full((64, 64, 3), 127, np.uint8))
    base = ["export", "--model", "shapes", "--device", "cpu", "--out", tmp_path / "o"]

    r = run_module(*base, "--input", img, "--layer", "features.88")
    assert r.returncode == 2
    assert r.stderr.startswith("cnnvis: error: unknown layer 'features.88'") and "features.8" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1

    r = run_module(*base, "--input", img, "--layer", "features.0", "--units", "3,16")
    assert r.returncode == 2 and "unit 16 is out of range" in r.stderr and "0..15" in r.stderr

    missing = tmp_path / "nope.png"
    r = run_module(*base, "--input", missing, "--layer", "features.0")
    assert r.returncode == 2 and str(missing) in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


@needs_shapes
def test_more_bad_arguments_in_process(tmp_path, capsys):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.full((64, 64, 3), 127, np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    base = ["export", "--model", "shapes", "--device", "cpu", "--out", str(tmp_path / "o")]
    cases = [
        (base + ["--input", str(bad), "--layer", "features.0"], "cannot read image '" + str(bad)),
        (base + ["--input", str(img), "--layer", "features.0", "--method", "lrp"], "unknown method 'lrp'"),
        (base + ["--input", str(img)], "--layer"),
        (base + ["--input", str(img), "--layer", "features.0", "--units", "x"], "--units must be"),
        (base + ["--input", str(img), "--layer", "features.0", "--units", "1", "--top", "3"], "not allowed"),
        (["info", "--model", "nosuchthing"], "neither a demo"),
        (["info", "--model", "shapes", "--weights", str(img)], "demo model that ships with its weights"),
        (["info", "--weights", str(tmp_path / "w.pth")], "no such file"),
        (["info", "--model", "torchvision:resnet18", "--arch-kwarg", "oops"], "KEY=VALUE"),
        (["info", "--model", "shapes", "--input-size", "ax3"], "--input-size"),
        (["frobnicate"], "invalid choice"),
    ]
    for argv, text in cases:
        assert cli.main(argv) == cli.EXIT_USAGE, argv
        err = capsys.readouterr().err
        assert err.startswith("cnnvis: error: ") and text in err, (argv, err)
        assert "Traceback" not in err


@needs_shapes
def test_layout_override_on_the_command_line(tmp_path, capsys):
    """``--layout NAME=LAYOUT`` reads a layer in another layout; a wrong one is one line naming the shape."""
    assert cli.main(["info", "--model", "shapes", "--layout", "features.0=nhwc", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["layers"] if r["name"] == "features.0")
    assert (row["layout"], row["layout_source"], row["units"]) == ("nhwc", "set by the user", 64)   # 16x64x64
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.full((64, 64, 3), 127, np.uint8))
    base = ["--model", "shapes", "--device", "cpu"]
    cases = [
        (["info", *base, "--layout", "features.0=tokens:1+4x4"],
         "layout 'tokens:1+4x4' does not fit layer 'features.0': its output is N x 16 x 64 x 64, "
         "the layout needs N x (1 + 16) x C."),
        (["export", *base, "--input", str(img), "--out", str(tmp_path / "o"), "--layer", "features.0",
          "--layout", "features.0=flat"], "layout 'flat' does not fit layer 'features.0'"),
        (["info", *base, "--layout", "features.0"], "--layout must be NAME=LAYOUT"),
        (["info", *base, "--layout", "features.0=chw"], "unknown layout 'chw'"),
        (["info", *base, "--layout", "feature.0=nchw"], "unknown layer 'feature.0'"),
    ]
    for argv, text in cases:
        assert cli.main(argv) == cli.EXIT_USAGE, argv
        err = capsys.readouterr().err
        assert err.startswith("cnnvis: error: ") and text in err and err.count("\n") == 1, (argv, err)


def test_argument_parsers():
    assert cli.parse_units("0,5,7") == [0, 5, 7]
    assert cli.parse_units("3-5,1,3") == [3, 4, 5, 1]
    assert cli.parse_units("all") == "all"
    assert cli.parse_methods(["guided,gradcam", "grad-cam", "all"]) == ["guided", "gradcam"] + [
        m for m in cli.EXPORT_METHODS if m not in ("guided", "gradcam")]
    assert cli.safe_name("") == "output" and cli.safe_name("layer1.0/conv:1") == "layer1.0_conv_1"
    import argparse
    p = argparse.ArgumentParser()
    cli.add_model_arguments(p)
    a = p.parse_args(["--input-size", "32x48", "--mean", "0.1,0.2,0.3", "--bgr", "--fit", "letterbox"])
    from cnnvis_gui import options
    assert options.spec_overrides(a) == {"height": 32, "width": 48, "mean": (0.1, 0.2, 0.3),
                                     "channel_order": "BGR", "fit": "letterbox"}
    assert options._arch_kwargs(["num_classes=10", "name=abc", "t=(1, 2)"]) == {
        "num_classes": 10, "name": "abc", "t": (1, 2)}


def test_gray_model_all_units_all_methods_in_process(tmp_path, capsys):
    (tmp_path / "gnet.py").write_text(
        "import torch.nn as nn\n"
        "def make(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, num_classes))\n")
    img = tmp_path / "digit.png"
    canvas = np.zeros((40, 30), np.uint8)
    cv2.putText(canvas, "7", (5, 32), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 255, 3)
    cv2.imwrite(str(img), canvas)
    out = tmp_path / "out"
    rc = cli.main(["export", "--model", f"{tmp_path / 'gnet.py'}:make", "--input-size", "28", "--fit", "letterbox",
                   "--device", "cpu", "--input", str(img), "--layer", "0", "--units", "all", "--method", "all",
                   "--raw", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "exported 1 image" in capsys.readouterr().out
    files = {p.name for p in (out / "digit").iterdir()}
    assert len(files) == 3 + 4 * len(_CNN_METHODS)
    assert _png(out / "digit" / "0_u0003_guided-gradcam.png").shape == (28, 28, 3)
    raw = np.load(out / "digit" / "raw.npz")
    assert raw["input"].shape == (1, 1, 28, 28) and raw["saliency_guided"].shape == (4, 1, 28, 28)
