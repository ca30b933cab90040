"""The scan's batched normalization: the same numbers as InputSpec.to_array, in the model's dtype and device."""
import copy

import numpy as np
import torch

from cnnvis_gui.atlas import TopKScan
from cnnvis_gui.atlas.scan import scan_folder
from cnnvis_gui.core import InputSpec
from cnnvis_gui.sources import load_image

from .helpers import TINY_SPEC, make_images, tiny_model


def _frames(folder, spec):
    paths = sorted(folder.rglob("*.png"))[:3]
    imgs = [load_image(p) for p in paths]
    return np.stack([spec.fit_frame(i) for i in imgs]), [spec.to_array(i) for i in imgs]


def test_normalize_is_to_array_in_every_dtype_and_stays_on_the_device(tmp_path):
    make_images(tmp_path / "im", n=4, bad=False)
    for spec in (TINY_SPEC, InputSpec(3, 32, 32, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4), scale=1 / 255,
                                      channel_order="BGR")):
        s = TopKScan(tiny_model(), spec, tmp_path / "im", ["features.1"], use_cache=False)
        batch, ref = _frames(tmp_path / "im", spec)
        x = torch.from_numpy(batch)
        for default in (torch.float32, torch.float64):      # a user's torch.set_default_dtype changes nothing
            torch.set_default_dtype(default)
            try:
                for dtype in (torch.float32, torch.float64, torch.bfloat16):
                    out = s._normalize(x, dtype)
                    assert out.dtype == dtype and out.shape == (3, 3, 32, 32)
                    np.testing.assert_array_equal(out.float().numpy(),
                                                  torch.from_numpy(np.stack(ref)).to(dtype).float().numpy())
            finally:
                torch.set_default_dtype(torch.float32)
        # on the model's device: a meta tensor stands in for a GPU one (no copy through the host)
        assert s._normalize(x.to("meta"), torch.float32).device.type == "meta"


def test_a_float64_model_scans_like_its_float32_self(tmp_path):
    make_images(tmp_path / "im", n=10, bad=False)
    m32 = tiny_model()
    m64 = copy.deepcopy(m32).double()
    layers = ["features.4", "output"]
    a, b = (scan_folder(m, TINY_SPEC, tmp_path / "im", layers, k=3, batch_size=4, use_cache=False) for m in (m32, m64))
    for layer in layers:
        for unit in range(5):
            ha, hb = a.hits(layer, unit), b.hits(layer, unit)
            assert [(h.image, h.y, h.x) for h in ha] == [(h.image, h.y, h.x) for h in hb]
            np.testing.assert_allclose([h.value for h in ha], [h.value for h in hb], rtol=1e-5, atol=1e-6)


class _Pair(torch.nn.Module):
    def forward(self, x):
        return x, x


class _Odd(torch.nn.Module):
    """A layer returning a tuple, one returning one value per image, and a 1-D model output."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.pair = _Pair()
        self.score = torch.nn.Flatten(0)

    def forward(self, x):
        a, _ = self.pair(self.conv(x))
        return self.score(a.mean((1, 2, 3)))


def test_a_layer_without_an_n_by_c_tensor_output_is_named_in_the_error(tmp_path):
    import pytest
    from cnnvis_gui.core import CnnvisError
    make_images(tmp_path / "im", n=2, bad=False)
    model = _Odd().eval()
    for layer, kind in (("pair", "_Pair"), ("score", "Flatten"), ("output", "_Odd")):
        shown = "output" if layer == "output" else layer
        with pytest.raises(CnnvisError) as e:
            scan_folder(model, TINY_SPEC, tmp_path / "im", [layer], k=1, use_cache=False)
        assert str(e.value) == (f"layer '{shown}' ({kind}) does not output an N x C (x H x W) tensor; "
                                f"choose another layer to scan.")


class _Levels(torch.nn.Module):
    """Quantizes its input to integer levels: an integer N x C x H x W output."""

    def forward(self, x):
        return (x * 4).round().to(torch.int64)


class _Float(torch.nn.Module):
    def forward(self, x):
        return x.float()


def test_an_integer_layer_is_scanned_as_numbers(tmp_path):
    make_images(tmp_path / "im", n=4, bad=False)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), _Levels(), _Float(), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 30 * 30, 2)).eval()
    res = scan_folder(model, TINY_SPEC, tmp_path / "im", ["1"], k=2, use_cache=False)
    acts = []
    for p in sorted((tmp_path / "im").rglob("*.png")):
        x = torch.from_numpy(TINY_SPEC.to_array(load_image(p)))[None]
        acts.append(model[1](model[0](x)).float())
    best = torch.cat(acts).amax(dim=(2, 3)).amax(dim=0)
    assert [res.hits("1", u)[0].value for u in range(2)] == best.tolist()
