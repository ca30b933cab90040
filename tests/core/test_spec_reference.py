"""``InputSpec`` against the docstring's rules, written out here: every frame layout and dtype into
every channel count and order, the fit geometry traced with coordinate ramps, the letterbox
padding, the way back to an image, and the one-line errors.

Nothing here calls the module's private helpers; each expectation is computed from the rule.
"""
import numpy as np
import pytest
import torch

from cnnvis_gui.core import CnnvisError, InputSpec

FULL = {np.uint8: 255.0, np.uint16: 65535.0, np.float32: 1.0, np.float64: 1.0}
BGR = (40.0, 150.0, 230.0)            # a colour in 8-bit units, frame order (blue, green, red)


def _constant_frame(dtype, layout, h=6, w=9):
    """A frame of one colour (``BGR``, or its first value for gray) in ``dtype``'s own range."""
    scale = FULL[dtype] / 255.0
    if layout == "gray":
        return np.full((h, w), BGR[0] * scale).astype(dtype)
    if layout == "gray1":
        return np.full((h, w, 1), BGR[0] * scale).astype(dtype)
    f = np.empty((h, w, 3))
    f[...] = np.array(BGR) * scale
    if layout == "bgra":
        f = np.dstack([f, np.full((h, w), 7.0 * scale)])
    return f.astype(dtype)


def _expected(spec, layout):
    """C values: the frame's colour in 8-bit units -> the spec's channels -> (v * scale - mean) / std."""
    b, g, r = BGR
    gray = layout in ("gray", "gray1")
    C = spec.channels
    if C == 1:
        v = [b] if gray else [0.299 * r + 0.587 * g + 0.114 * b]
    elif C == 3:
        v = [b] * 3 if gray else ([r, g, b] if spec.channel_order == "RGB" else [b, g, r])
    else:
        v = [b if gray else (b + g + r) / 3.0] * C
    return (np.array(v) * spec.scale - np.array(spec.mean)) / np.array(spec.std)


SPECS = [
    InputSpec(3, 6, 9, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    InputSpec(3, 6, 9, mean=(103.9, 116.8, 123.7), std=1.0, channel_order="BGR", scale=1.0),
    InputSpec(1, 6, 9, mean=0.1307, std=0.3081),
    InputSpec(2, 6, 9, mean=(0.25, 0.5), std=(0.5, 2.0), scale=2.0 / 255.0),
    InputSpec(5, 6, 9, mean=0.5, std=(1.0, 2.0, 3.0, 4.0, 5.0)),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.channels}{s.channel_order}")
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("layout", ["gray", "gray1", "bgr", "bgra"])
def test_every_layout_and_dtype_into_every_channel_count(spec, dtype, layout):
    frame = _constant_frame(dtype, layout)
    a = spec.to_array(frame)
    assert a.dtype == np.float32 and a.shape == (spec.channels, 6, 9) and a.flags.c_contiguous
    want = _expected(spec, layout)
    np.testing.assert_allclose(a, np.broadcast_to(want[:, None, None], a.shape), rtol=1e-5, atol=1e-4)
    t = spec.to_tensor(frame)
    assert t.dtype == torch.float32 and t.shape == (1, spec.channels, 6, 9)
    assert torch.equal(t[0], torch.from_numpy(a))


def test_to_tensor_passes_fit_and_device():
    spec = InputSpec(3, 6, 9, fit="stretch")
    frame = np.zeros((12, 9, 3), np.uint8)
    frame[:3] = 255                                     # the top quarter white: cut by crop, kept by stretch
    assert float(spec.to_tensor(frame).max()) == 1.0
    assert float(spec.to_tensor(frame, "crop").max()) == 0.0
    assert torch.equal(spec.to_tensor(frame, "crop")[0], torch.from_numpy(spec.to_array(frame, "crop")))
    meta = spec.to_tensor(frame, device="meta")
    assert meta.device.type == "meta" and meta.shape == (1, 3, 6, 9)
    assert spec.to_tensor(frame).device.type == "cpu"


def _ramp_frame(h, w):
    """Float BGR frame: blue = the column's coordinate / w, green = the row's / h, red = 1."""
    f = np.empty((h, w, 3), np.float32)
    f[..., 0] = np.arange(w, dtype=np.float32)[None, :] / w
    f[..., 1] = np.arange(h, dtype=np.float32)[:, None] / h
    f[..., 2] = 1.0
    return f


def _source_coordinate(out_index, size_in, size_resized, offset):
    """Pixel-centre mapping of a resize: output pixel j of the resized image samples source x =
    (j + 0.5) * in / resized - 0.5 (bilinear samples there; an area average of a ramp is its centre)."""
    return (out_index + offset + 0.5) * size_in / size_resized - 0.5


@pytest.mark.parametrize("fit", ["stretch", "crop", "letterbox"])
@pytest.mark.parametrize("hw,HW", [((40, 90), (30, 24)), ((30, 24), (40, 90)), ((50, 40), (25, 20)),
                                   ((11, 13), (37, 29)), ((64, 48), (32, 40))])
def test_fit_geometry_traced_with_coordinate_ramps(fit, hw, HW):
    """Where every output pixel comes from, for each fit: stretch maps the whole frame onto H x W;
    crop scales by max(H/h, W/w) and keeps the centre; letterbox scales by min(...) and centres the
    image on padding.  Checked away from the resized image's border, where resizing clamps."""
    (h, w), (H, W) = hw, HW
    spec = InputSpec(3, H, W, fit=fit)
    out = spec.fit_frame(_ramp_frame(h, w))
    assert out.shape == (H, W, 3) and out.dtype == np.float32 and out.flags.c_contiguous
    if fit == "stretch":
        nh, nw, y0, x0 = H, W, 0, 0
    elif fit == "crop":
        s = max(H / h, W / w)
        nh, nw = max(H, round(h * s)), max(W, round(w * s))
        y0, x0 = (nh - H) // 2, (nw - W) // 2             # offsets into the resized image
    else:
        s = min(H / h, W / w)
        nh, nw = max(1, min(H, round(h * s))), max(1, min(W, round(w * s)))
        y0, x0 = -((H - nh) // 2), -((W - nw) // 2)       # the image starts inside the output
        inside = np.zeros((H, W), bool)
        inside[-y0:-y0 + nh, -x0:-x0 + nw] = True
        np.testing.assert_allclose(out[..., 2][inside], 1.0, atol=1e-6)         # the image ...
        assert (out[..., 2][~inside] == 0).all()                                # ... on black padding
    rows = np.arange(H)[:, None] + y0                    # the resized image's row of each output row
    cols = np.arange(W)[None, :] + x0
    keep = (rows >= 2) & (rows < nh - 2) & (cols >= 2) & (cols < nw - 2)
    keep = np.broadcast_to(keep, (H, W))
    assert keep.sum() >= 100                            # enough pixels traced
    want_x = _source_coordinate(np.arange(W)[None, :], w, nw, x0) / w
    want_y = _source_coordinate(np.arange(H)[:, None], h, nh, y0) / h
    # within 0.15 pixel: the area average of a ramp over a non-integer span of pixels is off its
    # centre by up to 1/12 pixel; a wrong offset or a swapped width and height is a pixel or more
    np.testing.assert_allclose(out[..., 0][keep], np.broadcast_to(want_x, (H, W))[keep], atol=0.15 / w)
    np.testing.assert_allclose(out[..., 1][keep], np.broadcast_to(want_y, (H, W))[keep], atol=0.15 / h)


def test_shrinking_averages_and_enlarging_interpolates():
    """Downscaling in both directions averages the pixels each output covers (no aliasing: stripes
    one pixel wide become grey); otherwise the resize is bilinear.  Any dtype comes back as it went in."""
    stripes = np.zeros((12, 12), np.float64)
    stripes[:, 1::3] = 1.0                               # one column in three is white
    out = InputSpec(1, 4, 4, fit="stretch").fit_frame(stripes)
    assert out.dtype == np.float64 and out.shape == (4, 4, 1)
    np.testing.assert_allclose(out, 1.0 / 3.0, atol=1e-6)          # the area average of 0, 1, 0
    wide = InputSpec(1, 12, 4, fit="stretch").fit_frame(stripes)   # rows kept: bilinear in x samples the centre
    np.testing.assert_allclose(wide, 1.0, atol=1e-6)
    tall = InputSpec(1, 4, 12, fit="stretch").fit_frame(stripes.T)  # columns kept: bilinear in y
    np.testing.assert_allclose(tall, 1.0, atol=1e-6)
    half = InputSpec(1, 4, 4, fit="stretch").fit_frame(stripes.astype(np.float16))   # OpenCV has no float16
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float64), 1.0 / 3.0, atol=1e-3)
    up = InputSpec(1, 8, 8, fit="stretch").fit_frame(np.array([[0, 255], [255, 0]], np.uint8))
    assert up.dtype == np.uint8 and up[0, 0, 0] == 0 and up[0, 7, 0] == 255 and 100 < up[3, 3, 0] < 155


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("spec", [
    InputSpec(3, 20, 30, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), fit="letterbox"),
    InputSpec(3, 20, 30, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), channel_order="BGR",
              fit="letterbox"),
    InputSpec(3, 20, 30, mean=(300.0, 100.0, -20.0), std=1.0, scale=1.0, fit="letterbox"),
    InputSpec(1, 20, 30, mean=0.1307, std=0.3081, fit="letterbox"),
    InputSpec(2, 20, 30, mean=(0.2, 0.6), std=(0.5, 0.25), fit="letterbox"),
    InputSpec(5, 20, 30, mean=(0.1, 0.2, 0.3, 0.4, 0.9), std=0.5, fit="letterbox"),
], ids=["rgb", "bgr", "outside-range", "gray", "two", "five"])
@pytest.mark.parametrize("layout", ["bgr", "gray"])
def test_letterbox_padding_is_the_mean_colour(dtype, spec, layout):
    """The padding is the raw colour closest to the model's mean: it normalizes to 0 within half a
    level of the frame's dtype, or to the nearest colour the frame can hold (a mean outside 0..255).
    Where the model sees one gray in every channel (a gray frame, a model of other than 3 channels)
    it is the gray of the average mean."""
    frame = _constant_frame(dtype, layout, h=20, w=12)
    a = spec.to_array(frame).astype(np.float64)
    pad = a[:, :, 0]                                      # column 0 is padding (image is 12 wide of 30)
    assert not np.allclose(a[:, :, 15], pad)             # column 15 is image, not padding
    step = FULL[dtype] if dtype != np.float32 else 1e6    # one level of the frame's dtype, 8-bit units
    half = 0.5 * 255.0 / step * spec.scale / np.array(spec.std)[:, None] + 1e-5
    if layout == "gray" or spec.channels != 3:
        target = (np.mean(spec.mean) - np.array(spec.mean)) / np.array(spec.std)     # one gray everywhere
    else:
        target = np.zeros(spec.channels)
    lo_raw = (0.0 * spec.scale - np.array(spec.mean)) / np.array(spec.std)           # black
    hi_raw = (255.0 * spec.scale - np.array(spec.mean)) / np.array(spec.std)         # white
    target = np.clip(target, np.minimum(lo_raw, hi_raw), np.maximum(lo_raw, hi_raw))
    assert (np.abs(pad - target[:, None]) <= half).all(), (pad[:, 0], target)


def test_letterbox_of_a_frame_thinner_than_a_pixel_keeps_one_row():
    """200 x 2 into 10 x 10 scales to 0.1 pixel high: one row of image, centred, the rest padding."""
    spec = InputSpec(1, 10, 10, fit="letterbox")
    out = spec.fit_frame(np.full((2, 200), 255, np.uint8))[..., 0]
    assert (out[4] == 255).all() and (np.delete(out, 4, axis=0) == 0).all()      # row (10 - 1) // 2
    out = spec.fit_frame(np.full((200, 2), 255, np.uint8))[..., 0]
    assert (out[:, 4] == 255).all() and (np.delete(out, 4, axis=1) == 0).all()


def test_letterbox_gray_model_pads_a_colour_frame_with_its_mean():
    spec = InputSpec(1, 10, 10, mean=0.5, std=0.25, fit="letterbox")
    a = spec.to_array(np.full((10, 5, 3), 255, np.uint8))
    assert abs(float(a[0, 0, 0])) <= 0.5 / 255 / 0.25 + 1e-6 and float(a[0, 5, 5]) == pytest.approx(2.0)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.channels}{s.channel_order}")
def test_to_image_undoes_the_normalization(spec):
    """C x H x W (or 1 x C x H x W, array or tensor) -> RGB uint8: rint(clip((v * std + mean) / scale));
    one channel is gray, more than three show their mean as gray."""
    rng = np.random.default_rng(spec.channels)
    raw = rng.uniform(-20, 275, (spec.channels, 4, 5))          # 8-bit units, some outside 0..255
    x = ((raw * spec.scale - np.array(spec.mean)[:, None, None]) / np.array(spec.std)[:, None, None])
    if spec.channels == 3:
        rgb = raw if spec.channel_order == "RGB" else raw[::-1]
    else:
        rgb = np.repeat(raw.mean(axis=0)[None], 3, axis=0)
    want = np.clip(np.rint(rgb.transpose(1, 2, 0)), 0, 255)
    for given in (x.astype(np.float32), torch.from_numpy(x.astype(np.float32))[None].requires_grad_(True)):
        img = spec.to_image(given)
        assert img.dtype == np.uint8 and img.shape == (4, 5, 3) and img.flags.c_contiguous
        assert np.abs(img.astype(int) - want).max() <= 1
    assert (spec.to_image(x.astype(np.float32))[want == 0] == 0).all()          # black stays 0
    with pytest.raises(CnnvisError, match=f"C x H x W with C={spec.channels}, got shape \\(7, 4, 5\\)"):
        spec.to_image(np.zeros((7, 4, 5), np.float32))
    with pytest.raises(CnnvisError, match=f"C={spec.channels}"):
        spec.to_image(np.zeros((4, 5), np.float32))


def test_check_tensor_says_what_the_model_expects():
    spec = InputSpec(3, 24, 32)
    spec.check_tensor(torch.zeros(2, 3, 24, 32))
    with pytest.raises(CnnvisError, match="^expected a torch.Tensor, got ndarray$"):
        spec.check_tensor(np.zeros((1, 3, 24, 32)))
    for bad in (torch.zeros(3, 24, 32), torch.zeros(1, 3, 32, 24), torch.zeros(1, 1, 24, 32)):
        with pytest.raises(CnnvisError) as e:
            spec.check_tensor(bad)
        assert str(e.value) == (f"input has shape {tuple(bad.shape)} but the model's input spec is "
                                f"N x 3 x 24 x 32; convert frames with InputSpec.to_tensor or edit the input spec.")


def test_construction_rules_and_description():
    s = InputSpec(np.int64(1), np.int32(28), 20, mean=[0.1307], std=0.3081, channel_order="bgr", scale=1)
    assert (type(s.channels), type(s.height), s.shape) == (int, int, (1, 28, 20))
    assert s.mean == (0.1307,) and s.std == (0.3081,) and s.channel_order == "BGR"
    assert isinstance(s.scale, float) and s.scale == 1.0
    assert s.describe() == "1x28x20 scale=1 mean=(0.131) std=(0.308) fit=crop"
    c = InputSpec(3, 8, 8, mean=0.5)
    assert c.mean == (0.5, 0.5, 0.5) and c.std == (1.0, 1.0, 1.0)
    assert c.describe() == "3x8x8 RGB scale=0.003922 mean=(0.5, 0.5, 0.5) std=(1, 1, 1) fit=crop"
    assert InputSpec(2, 4, 4, mean=(0.25,)).mean == (0.25, 0.25)
    assert c.replace(height=9, fit="letterbox") == InputSpec(3, 9, 8, mean=0.5, fit="letterbox")
    d = c.to_dict()
    assert d == {"channels": 3, "height": 8, "width": 8, "mean": [0.5] * 3, "std": [1.0] * 3,
                 "channel_order": "RGB", "scale": 1.0 / 255.0, "fit": "crop"}
    assert InputSpec.from_dict(d) == c
    for bad, needle in [(dict(channels=2.0), "channels must be a positive integer, got 2.0"),
                        (dict(width=-3), "width must be a positive integer"),
                        (dict(std=(1.0, 0.0, 1.0)), "^InputSpec: std must not contain zeros.$"),
                        (dict(fit="zoom"), "^InputSpec: fit must be one of crop, stretch, letterbox, got 'zoom'.$"),
                        (dict(std=(1.0, 2.0)), "std has 2 values but the model has 3 channels")]:
        with pytest.raises(CnnvisError, match=needle):
            InputSpec(**bad)
    with pytest.raises(CnnvisError, match=r"unknown keys \['colour'\]; known keys are \['channel_order', "):
        InputSpec.from_dict({"colour": 1})


@pytest.mark.parametrize("frame,needle", [
    (np.zeros((4, 4, 3), np.int32), "unsupported frame dtype int32; use uint8, uint16 or float in"),
    ([[0, 1]], "a frame must be a numpy array, got list"),
    (np.zeros((4, 4, 2), np.uint8), r"got shape \(4, 4, 2\)"),
    (np.zeros((2, 4, 4, 3), np.uint8), r"got shape \(2, 4, 4, 3\)"),
])
def test_bad_frames_are_one_clear_error(frame, needle):
    for call in (InputSpec(3, 4, 4).to_array, InputSpec(3, 2, 2).fit_frame):
        with pytest.raises(CnnvisError, match=needle):
            call(frame)
    with pytest.raises(CnnvisError, match="fit must be one of crop, stretch, letterbox, got 'zoom'"):
        InputSpec(3, 4, 4).fit_frame(np.zeros((4, 5, 3), np.uint8), "zoom")
