"""``cnnvis optimize`` on models that cannot be optimized: one line on stderr, no traceback, and for a gradient
that turns NaN or stays zero the last good image written (exit 1)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cnnvis_gui import cli
from cnnvis_gui.optvis.health import ZERO_PATIENCE

NETS = '''
import torch
import torch.nn as nn


class Base(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3)
        self.big = nn.Conv2d(5, 5, 3)
        self.calls = 0

    def forward(self, x):
        return self.conv(x).mean((2, 3))


class Argmax(Base):                      # the output is an index: nothing to take a gradient of
    def forward(self, x):
        return self.conv(x).mean((2, 3)).argmax(1)


class NoGrad(Base):                      # the whole forward under no_grad
    def forward(self, x):
        with torch.no_grad():
            return self.conv(x).mean((2, 3))


class Detached(Base):                    # the input detached inside the model
    def forward(self, x):
        return self.conv(x.detach()).mean((2, 3))


class Skips(Base):                       # 'big' runs only on inputs wider than 100 pixels
    def forward(self, x):
        y = self.conv(x)
        return (self.big(y) if x.shape[-1] > 100 else y).mean((2, 3))


class Rounds(Base):                      # round(): the gradient is zero everywhere
    def forward(self, x):
        return self.conv(torch.round(x * 4) / 4).mean((2, 3))


class NaNLater(Base):                    # the 4th forward with gradients gives NaN
    def forward(self, x):
        y = self.conv(x)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls >= 4:
                y = y + 0 * torch.sqrt(-torch.ones_like(y))
        return y.mean((2, 3))
'''


@pytest.fixture
def nets(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


def _run(nets, cls, layer, unit, out, *extra):
    return cli.main(["optimize", "--model", f"{nets}:{cls}", "--input-size", "16", "--device", "cpu", "--layer",
                     layer, *(["--unit", str(unit)] if unit is not None else []), "--iterations", "30", "--quiet",
                     "--out", str(out), *extra])


@pytest.mark.parametrize("cls,layer,unit,words", [
    ("Argmax", "output", 0, "layer 'output' gives a tensor of shape (1,): no units per sample to optimize; "
                            "choose another layer."),
    ("NoGrad", "output", 0, "cannot take a gradient of 'class 0 logit + 4 log p': its value does not depend on "
                            "the image through autograd"),
    ("Detached", "output", 1, "cannot take a gradient of 'class 1 logit + 4 log p'"),
    ("Detached", "conv", 1, "cannot take a gradient of 'conv channel 1'"),
    ("Skips", "big", 0, "layer 'big' did not run in the forward pass (the model skips it for this input); choose a "
                        "layer that runs"),
    ("Base", "conv", 5, "unit 5 is out of range for layer 'conv': it has 5 units (0..4)."),
    ("Base", "output", 7, "unit 7 is out of range for layer 'output': it has 5 units (0..4)."),
])
@pytest.mark.parametrize("preset", ["fourier", "yosinski-2"])
def test_what_cannot_be_optimized_is_one_line_and_writes_nothing(nets, tmp_path, capsys, cls, layer, unit, words,
                                                                 preset):
    if preset.startswith("yosinski"):          # its objective is a unit's centre, not a class's logit + log p
        for was, now in (("class 0 logit + 4 log p", "output unit 0 centre"),
                         ("class 1 logit + 4 log p", "output unit 1 centre"), ("conv channel 1", "conv unit 1 centre")):
            words = words.replace(was, now)
    out = tmp_path / "x.png"
    assert _run(nets, cls, layer, unit, out, "--preset", preset) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("cnnvis: error: ") and words in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("preset", ["fourier", "maco", "yosinski-1"])
def test_a_nan_gradient_says_so_and_writes_the_last_good_image(nets, tmp_path, capsys, preset):
    out = tmp_path / "nan.png"
    assert _run(nets, "NaNLater", "output", 2, out, "--preset", preset) == 1
    o, err = capsys.readouterr()
    assert err == (f"cnnvis optimize: the objective became NaN or infinite at step 4: stopped there, keeping the "
                   f"images of step 3; {out} holds the last good image.\n")
    assert "3 iterations" in o and "Traceback" not in o + err
    assert not list((tmp_path / "cache").glob("optimize-*"))              # a run that ended early is not cached
    # the image written is the run of 3 steps: what the model gave before the NaN
    three = tmp_path / "three.png"
    assert _run(nets, "NaNLater", "output", 2, three, "--preset", preset, "--iterations", "3") == cli.EXIT_OK
    capsys.readouterr()
    np.testing.assert_array_equal(cv2.imread(str(out)), cv2.imread(str(three)))
    assert len(list((tmp_path / "cache").glob("optimize-*"))) == 1


def test_a_gradient_zero_everywhere_says_so_for_one_unit_and_for_a_montage(nets, tmp_path, capsys):
    out = tmp_path / "zero.png"
    assert _run(nets, "Rounds", "output", 0, out) == 1
    o, err = capsys.readouterr()
    assert err == (f"cnnvis optimize: the gradient is zero everywhere for {ZERO_PATIENCE} steps in a row (steps "
                   f"1-{ZERO_PATIENCE}): the objective does not respond to the image (a dead unit, or a step such as "
                   f"round/argmax before it); stopped; {out} holds the last good image.\n")
    assert f"{ZERO_PATIENCE} iterations" in o and cv2.imread(str(out)).shape == (16, 16, 3)
    montage = tmp_path / "units.png"
    assert _run(nets, "Rounds", "conv", None, montage, "--units", "0-2") == 1
    o, err = capsys.readouterr()
    lines = err.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["cnnvis optimize"] * 3
    assert all(f"unit {u}: the gradient is zero everywhere" in ln and ln.endswith("the montage holds its last good "
                                                                                  "image.")
               for u, ln in zip(range(3), lines))
    assert cv2.imread(str(montage)) is not None and "Traceback" not in o + err
