"""``cnnvis export --method rollout,legrad`` on a ViT: the saved maps are the core's; where they cannot run,
one line before any file is written (named), or left out of ``all`` with a warning."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from cnnvis_gui import cli
from cnnvis_gui.core import Visualizer
from cnnvis_gui.models import demo_checkpoint, demo_samples

pytest.importorskip("timm")
VIT = "timm:vit_tiny_patch16_224"


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 256, (240, 260, 3), dtype=np.uint8), (0, 0), 6)
    p = tmp_path / "photo.png"
    cv2.imwrite(str(p), img)
    return p


def test_export_rollout_and_legrad_of_a_vit_class_are_the_cores(tmp_path, photo, capsys):
    import timm
    out = tmp_path / "out"
    torch.manual_seed(0)
    rc = cli.main(["export", "--model", VIT, "--device", "cpu", "--input", str(photo), "--layer", "output",
                   "--units", "3,7", "--method", "attention-rollout,LeGrad", "--raw", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    d = out / "photo"
    assert {f"output_u{u:04d}_{m}.png" for u in (3, 7) for m in ("rollout", "legrad")} <= {p.name for p in d.iterdir()}
    raw = np.load(d / "raw.npz")
    assert "cam_layer" not in raw.files                      # no CAM layer: every attention layer
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()   # the same random init
    x = torch.from_numpy(raw["input"])
    with Visualizer(model).forward(x) as frame:
        np.testing.assert_allclose(raw["activations"], frame.activations("").numpy(), rtol=1e-5, atol=1e-6)
        for i, u in enumerate((3, 7)):
            np.testing.assert_allclose(raw["rollout"][i], frame.cam("", u, method="rollout")[0].numpy(), atol=1e-6)
            np.testing.assert_allclose(raw["legrad"][i], frame.cam("", u, method="legrad")[0].numpy(), atol=1e-5)
    assert np.array_equal(raw["rollout"][0], raw["rollout"][1])          # class-agnostic
    assert np.abs(raw["legrad"][0] - raw["legrad"][1]).max() > 0.05      # LeGrad: the class's own map


def test_legrad_at_an_inner_layer_is_one_line_before_any_file(tmp_path, photo, capsys):
    out = tmp_path / "out"
    rc = cli.main(["export", "--model", VIT, "--device", "cpu", "--input", str(photo), "--layer", "blocks.5",
                   "--units", "3", "--method", "guided,legrad", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_USAGE and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("cnnvis: error: --method legrad: LeGrad maps the model's output "
                                                   "classes only")
    assert not any(p.is_file() for p in out.rglob("*"))


@pytest.mark.skipif(not demo_checkpoint("shapes").is_file(), reason="the shapes demo checkpoint is not built")
def test_on_a_cnn_all_leaves_the_attention_methods_out_and_naming_one_says_why(tmp_path, capsys):
    sample = demo_samples("shapes")[3]
    base = ["export", "--model", "shapes", "--device", "cpu", "--input", str(sample), "--layer", "fc2", "--units", "3"]
    rc = cli.main(base + ["--method", "rollout", "--out", str(tmp_path / "one")])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_USAGE and ("cnnvis: error: --method rollout: attention rollout needs attention layers "
                                     "that expose their queries and keys") in err, err
    rc = cli.main(base + ["--method", "all", "--out", str(tmp_path / "all")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    for m in ("rollout", "legrad"):
        assert f"warning: --method all: {m} left out: " in cap.err
    names = {p.name for p in (tmp_path / "all" / sample.stem).iterdir()}
    assert "fc2_u0003_eigencam.png" in names and not any("rollout" in n or "legrad" in n for n in names)
    assert "methods gradient,deconvnet" in cap.out and "rollout" not in cap.out
