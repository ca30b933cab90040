"""``cnnvis optimize --diversity N`` and ``--objective SPEC`` on the shapes demo, in process: N different images
of one unit that each still drive it, sums / differences / directions written as text, and one line for bad input."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch

from cnnvis_gui import cli
from cnnvis_gui.optvis import LayerCapture, gram_matrices

from ..optvis.conftest import _one_thread  # noqa: F401  (autouse: one torch thread, as the optimizer's tests)
from .test_cli_optimize_faults import nets  # noqa: F401  (the fixture of the faulty nets)

SIDE = 64                       # the shapes demo's input


@pytest.fixture(scope="module")
def shapes():
    from cnnvis_gui.models import demo
    lm = demo("shapes")
    lm.model.eval()
    return lm


def _opt(tmp_path, out, *args):
    return cli.main(["optimize", "--model", "shapes", "--device", "cpu", "--quiet", "--cache-dir",
                     str(tmp_path / "cache"), "--out", str(out), *args])


def _faulty(nets, cls, out, *args):  # noqa: F811
    return cli.main(["optimize", "--model", f"{nets}:{cls}", "--input-size", "16", "--device", "cpu",
                     "--iterations", "30", "--quiet", "--out", str(out), *args])


def _tiles(path, n):
    """The n tiles of a montage (grid of ceil(sqrt(n)) columns, 2-pixel gaps) as model inputs N x 3 x 64 x 64."""
    from cnnvis_gui.models import demo
    spec = demo("shapes").spec
    img = cv2.imread(str(path))
    cols = int(np.ceil(np.sqrt(n)))
    tiles = [img[r * (SIDE + 2):r * (SIDE + 2) + SIDE, c * (SIDE + 2):c * (SIDE + 2) + SIDE]
             for r, c in (divmod(i, cols) for i in range(n))]
    return torch.stack([torch.from_numpy(spec.to_array(np.ascontiguousarray(t))) for t in tiles]), tiles


def _read(model, layer, x, pre=False):
    with torch.no_grad(), LayerCapture(model, [layer], pre_activation=pre) as cap:
        cap.forward(x)
        return cap.values[layer]


def _similarity(model, x, layer):
    g = gram_matrices(_read(model, layer, x, pre=True)).flatten(1)     # what the penalty sees: a ReLU's input
    s = g @ g.T
    n = len(g)
    return float((s.sum() - s.diagonal().sum()) / (n * (n - 1)))


def test_diversity_gives_n_different_images_that_each_drive_the_unit(shapes, tmp_path, capsys):
    plain, diverse = tmp_path / "plain.png", tmp_path / "diverse.png"
    common = ["--layer", "features.10", "--unit", "5", "--diversity", "4", "--iterations", "40"]
    assert _opt(tmp_path, plain, *common, "--diversity-weight", "0") == cli.EXIT_OK
    out_plain = capsys.readouterr().out
    assert _opt(tmp_path, diverse, *common) == cli.EXIT_OK
    out = capsys.readouterr().out
    head, div, image = out.strip().splitlines()
    assert head.startswith("layer features.10 unit 5: 4 images, activation ") and "preset fourier, 40 iterations" in head
    assert div.startswith("  diversity: weight 1 at features.10; Gram similarity of the images ")
    assert image.startswith("  image: Fourier") and image.endswith(
        "objective: features.10 channel 5")
    said = {name: float(re.search(r"Gram similarity of the images ([\d.]+)", text).group(1))
            for name, text in (("plain", out_plain), ("diverse", out))}
    # measured here from the PNGs, as the model reads them back
    x_plain, _ = _tiles(plain, 4)
    x_div, tiles = _tiles(diverse, 4)
    sim_plain = _similarity(shapes.model, x_plain, "features.10")
    sim_div = _similarity(shapes.model, x_div, "features.10")
    assert sim_div < sim_plain - 0.2, (sim_plain, sim_div)
    assert abs(sim_div - said["diverse"]) < 0.02 and abs(sim_plain - said["plain"]) < 0.02
    # four different pictures ...
    assert min(np.abs(tiles[i].astype(int) - tiles[j].astype(int)).mean()
               for i in range(4) for j in range(i + 1, 4)) > 5
    # ... each of which still drives the unit: above a random input and the real samples' mean
    from cnnvis_gui.models import demo_samples
    from cnnvis_gui.sources import load_image
    samples = torch.stack([torch.from_numpy(shapes.spec.to_array(load_image(p))) for p in demo_samples("shapes")])
    act = _read(shapes.model, "features.10", x_div)[:, 5].mean((1, 2))
    real = _read(shapes.model, "features.10", samples)[:, 5].mean((1, 2))
    rnd = float(re.search(r"random input ([-\d.e]+)", out).group(1))
    assert (act > max(rnd, float(real.mean()))).all(), (act, rnd, real.mean())
    # the same command again: from the cache, the same images
    assert _opt(tmp_path, tmp_path / "again.png", *common) == cli.EXIT_OK
    assert "from cache" in capsys.readouterr().out
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "again.png")), cv2.imread(str(diverse)))


def test_a_written_objective_sums_and_subtracts_units(shapes, tmp_path, capsys):
    alone, diff = tmp_path / "alone.png", tmp_path / "diff.png"
    assert _opt(tmp_path, alone, "--objective", "features.10:5", "--iterations", "40") == cli.EXIT_OK
    assert _opt(tmp_path, diff, "--objective", "features.10:5 - 2*features.10:7", "--iterations", "40") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2].startswith("objective 'features.10:5 - 2*features.10:7': 1 image, objective ")
    assert out[-1].endswith("objective: features.10 channel 5 + -2 * (features.10 channel 7)")
    a = _read(shapes.model, "features.10", _tiles(alone, 1)[0])[0].mean((1, 2))
    d = _read(shapes.model, "features.10", _tiles(diff, 1)[0])[0].mean((1, 2))
    assert d[5] - 2 * d[7] > a[5] - 2 * a[7] and d[7] < a[7], (a[[5, 7]], d[[5, 7]])
    # a class against another (the log-probabilities cancel: 5 (z_2 - z_3)): the gap is wider than for the class alone
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    assert _opt(tmp_path, one, "--objective", "output:2", "--iterations", "40") == cli.EXIT_OK
    assert _opt(tmp_path, two, "--objective", "output:2 - output:3", "--iterations", "40") == cli.EXIT_OK
    capsys.readouterr()
    with torch.no_grad():
        z1, z2 = (shapes.model(_tiles(p, 1)[0])[0] for p in (one, two))
    assert z2[2] - z2[3] > z1[2] - z1[3] + 5, (z1, z2)
    # a direction in the channel space: its projection rises far above a random input's
    v = np.zeros(int(_read(shapes.model, "features.10", _tiles(one, 1)[0]).shape[1]), np.float32)
    v[[5, 7]] = (1.0, -1.0)
    np.save(tmp_path / "v.npy", v)
    assert _opt(tmp_path, tmp_path / "dir.png", "--objective", f"features.10:dir={tmp_path / 'v.npy'}",
                "--iterations", "40") == cli.EXIT_OK
    head = capsys.readouterr().out.splitlines()[0]
    got, rnd = (float(v) for v in re.search(r"objective ([-\d.e]+) \(random input ([-\d.e]+)", head).groups())
    assert got > rnd + 1.0, head


@pytest.mark.parametrize("args,words", [
    (["--objective", "features.10:5 features.10:7"], "--objective: expected + or - between terms at character 15"),
    (["--objective", "features.10:five"], "--objective: cannot read a term at character 1 of 'features.10:five'"),
    (["--objective", "featurez.10:5"], "unknown layer 'featurez.10'. Did you mean: 'features.10'"),
    (["--objective", "features.10:99"], "unit 99 is out of range for layer 'features.10': it has 64 units (0..63)."),
    (["--objective", "features.10:5@40,40"], "position (40, 40) is outside the 16x16 map of layer 'features.10'."),
    (["--objective", "output:2@1,1"], "'output:2@1,1': the model output has no positions"),
    (["--objective", "features.10:dir=[1,0,2]"], "the direction has 3 entries but layer 'features.10' has 64 channels"),
    (["--objective", "features.10:diversity"], "diversity alone has nothing to make the images show"),
    (["--objective", "features.10:5", "--layer", "features.10"], "--objective names its own layers"),
    (["--layer", "features.10", "--units", "0-3", "--diversity", "2"], "--diversity makes N images of one unit"),
    (["--layer", "features.10", "--unit", "5", "--diversity", "2", "--preset", "2"],
     "--diversity needs a feature-visualization preset (fourier, maco or pixel)"),
    (["--layer", "features.10", "--unit", "5", "--diversity-weight", "3"], "give --diversity N"),
    (["--layer", "features.10", "--unit", "5", "--diversity", "2", "--diversity-layer", "fc1"],
     "--diversity-layer fc1: the layer has no map of positions (its output is flat)"),
    (["--layer", "features.10", "--unit", "64", "--diversity", "2"], "unit 64 is out of range for layer 'features.10'"),
])
def test_bad_objectives_and_diversity_options_are_one_line(shapes, tmp_path, capsys, args, words):
    out = tmp_path / "x.png"
    assert _opt(tmp_path, out, "--iterations", "3", *args) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("cnnvis: error: ") and words in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_the_diversity_layer_is_the_units_own_else_the_last_map_with_positions(shapes):
    from cnnvis_gui.atlas.objective_run import diversity_layer
    from cnnvis_gui.optvis import channel, class_logit
    m, spec = shapes.model, shapes.spec
    assert diversity_layer(m, spec, channel("features.10", 1)) == "features.10"
    assert diversity_layer(m, spec, class_logit(2)) == "features.15"        # not 'pool': its map is 1 x 1
    assert diversity_layer(m, spec, class_logit(2), "features.6") == "features.6"


def test_bad_numbers_are_refused_by_the_parser(tmp_path, capsys):
    for args, words in ((["--diversity", "0"], "--diversity must be > 0"),
                        (["--diversity", "65"], "--diversity must be at most 64"),
                        (["--diversity", "2", "--diversity-weight", "-1"], "--diversity-weight must be >= 0")):
        assert _opt(tmp_path, tmp_path / "x.png", "--layer", "features.10", "--unit", "5", *args) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert err.startswith(f"cnnvis: error: argument {args[-2]}: {words}") and err.count("\n") == 1, err


def test_nan_zero_and_missing_gradients_with_the_new_options(nets, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "nan.png"
    assert _faulty(nets, "NaNLater", out, "--layer", "output", "--unit", "2", "--diversity", "2") == 1
    o, err = capsys.readouterr()
    # (the model map's probe for the diversity layer is one of NaNLater's forwards: NaN one step earlier)
    assert err == (f"cnnvis optimize: the objective became NaN or infinite at step 3: stopped there, keeping the "
                   f"images of step 2; {out} holds the last good images.\n")
    assert "2 iterations" in o and cv2.imread(str(out)) is not None
    assert not list((tmp_path / "cache").glob("optimize-*"))               # not cached
    out = tmp_path / "zero.png"
    assert _faulty(nets, "Rounds", out, "--objective", "conv:0 - conv:1") == 1
    assert "the gradient is zero everywhere" in capsys.readouterr().err and cv2.imread(str(out)) is not None
    assert _faulty(nets, "Detached", out, "--objective", "output:1 + conv:2") == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("cnnvis: error: ") and "cannot take a gradient of" in err and err.count("\n") == 1
    assert _faulty(nets, "Skips", out, "--objective", "conv:0 + big:1", "--diversity", "2") == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("cnnvis: error: ") and "layer 'big' did not run in the forward pass" in err, err
    assert err.count("\n") == 1


FIVE = '''
import torch.nn as nn


class Five(nn.Module):                   # 5 input channels
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(5, 4, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3))
'''


@pytest.mark.parametrize("model,extra,shape,words", [
    ("glyphs", [], (28, 28), "1 channel independently"),                           # the gray 28 x 28 demo
    ("nets:Base", ["--input-size", "12x20", "--bgr", "--mean", "104,117,123", "--std", "1,1,1", "--scale", "1"],
     (12, 20), "decorrelated colour (ImageNet)"),                                 # a Caffe-style BGR model
    ("five:Five", ["--input-size", "10x14", "--channels", "5", "--mean", "0.5", "--std", "0.25"], (10, 14),
     "5 channels independently"),
])
def test_any_input_from_the_command_line_says_what_was_used(nets, tmp_path, capsys, model, extra, shape,
                                                             words):  # noqa: F811
    (tmp_path / "five.py").write_text(FIVE)
    model = {"nets:Base": f"{nets}:Base", "five:Five": f"{tmp_path / 'five.py'}:Five"}.get(model, model)
    for how in (["--layer", "output", "--unit", "1"], ["--objective", "output:1 - output:0", "--diversity", "2"]):
        out = tmp_path / "x.png"
        assert cli.main(["optimize", "--model", model, "--device", "cpu", *extra, "--iterations", "10", "--quiet",
                         "--cache-dir", str(tmp_path / "c"), "--out", str(out), *how]) == cli.EXIT_OK
        image = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  image: ")]
        assert len(image) == 1 and words in image[0], image
        n = 2 if "--diversity" in how else 1
        assert cv2.imread(str(out)).shape == ((shape[0], shape[1], 3) if n == 1 else
                                              (max(shape), 2 * max(shape) + 2, 3))


def test_a_written_objective_reads_channels_last_layers_through_their_layout(tmp_path, capsys):
    """ConvNeXt's MLP layers are N x H x W x C: a unit is the last axis, for the image and for the random input."""
    pytest.importorskip("timm")
    from cnnvis_gui.atlas.optimize import random_input
    layer = "stages.1.blocks.0.mlp.fc1"
    torch.manual_seed(0)
    assert cli.main(["optimize", "--model", "timm:convnext_tiny", "--device", "cpu", "--input-size", "64",
                     "--objective", f"{layer}:3 - {layer}:5", "--diversity", "2", "--iterations", "3", "--quiet",
                     "--no-cache", "--out", str(tmp_path / "c.png")]) == cli.EXIT_OK
    out = capsys.readouterr().out
    rnd = float(re.search(r"random input ([-\d.e]+)", out).group(1))
    import argparse
    from cnnvis_gui.options import add_model_arguments, model_from_args
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    torch.manual_seed(0)                                                       # the same model, loaded the same way
    lm = model_from_args(parser.parse_args(["--model", "timm:convnext_tiny", "--device", "cpu", "--input-size", "64"]))
    model = lm.model.eval()
    seen = {}
    dict(model.named_modules())[layer].register_forward_hook(lambda m, a, o: seen.__setitem__("o", o))
    with torch.no_grad():
        model(random_input(lm.spec, 1, seed=1))
    o = seen["o"][0]                                                           # H x W x C
    assert o.shape[-1] == 768
    assert rnd == pytest.approx(float(o[..., 3].mean() - o[..., 5].mean()), rel=1e-3, abs=1e-4)
    assert abs(rnd - float(o[..., 3, :].mean() - o[..., 5, :].mean())) > 1e-3    # not read channels first
    assert "diversity: weight 1 at stages.1.blocks.0.mlp.fc1" in out
