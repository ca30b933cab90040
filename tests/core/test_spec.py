import numpy as np
import pytest
import torch

from cnnvis_gui.core import CnnvisError, InputSpec


def _frame(h, w):
    """BGR frame whose left half is pure blue and right half pure red."""
    f = np.zeros((h, w, 3), np.uint8)
    f[:, : w // 2, 0] = 255
    f[:, w // 2:, 2] = 255
    return f


def test_rgb_order_scale_and_normalization():
    spec = InputSpec(3, 4, 6, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5), channel_order="RGB")
    t = spec.to_tensor(_frame(4, 6))
    assert t.shape == (1, 3, 4, 6) and t.dtype == torch.float32
    # left half blue: R=0, G=0, B=1 -> (v - .5) / std
    assert torch.allclose(t[0, :, 0, 0], torch.tensor([-1.0, -2.0, 1.0]))
    assert torch.allclose(t[0, :, 0, 5], torch.tensor([1.0, -2.0, -1.0]))
    bgr = InputSpec(3, 4, 6, channel_order="BGR", scale=1.0)
    assert torch.allclose(bgr.to_tensor(_frame(4, 6))[0, :, 0, 0], torch.tensor([255.0, 0, 0]))


def test_to_image_round_trip():
    spec = InputSpec(3, 8, 10, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    f = (np.random.default_rng(0).random((8, 10, 3)) * 255).astype(np.uint8)
    rgb = spec.to_image(spec.to_tensor(f))
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 10, 3)
    assert np.abs(rgb.astype(int) - f[:, :, ::-1].astype(int)).max() <= 1


@pytest.mark.parametrize("fit", ["crop", "stretch", "letterbox"])
def test_fit_modes_non_square(fit):
    spec = InputSpec(3, 97, 131, fit=fit)
    f = _frame(200, 100)  # portrait frame into a landscape input
    img = spec.fit_frame(f)
    assert img.shape == (97, 131, 3)
    t = spec.to_tensor(f)
    assert t.shape == (1, 3, 97, 131)
    if fit == "stretch":
        # both halves survive, split at the middle column
        assert img[50, 10, 0] == 255 and img[50, 120, 2] == 255
    elif fit == "crop":
        # scaled to cover 131 wide: the middle band of rows is cut, both halves remain
        assert img[50, 10, 0] == 255 and img[50, 120, 2] == 255
    else:
        # fitted inside: 97 high -> about 48 wide, padded left and right with the (black) mean
        assert (img[:, :30] == 0).all() and (img[:, -30:] == 0).all()
        assert img[50, 55, 0] == 255 and img[50, 75, 2] == 255


def test_letterbox_pads_with_mean_so_padding_normalizes_to_zero():
    spec = InputSpec(3, 32, 32, mean=(0.5, 0.25, 0.75), std=(0.2, 0.2, 0.2), fit="letterbox")
    t = spec.to_tensor(np.full((16, 32, 3), 255, np.uint8))
    assert float(t[0, :, 0, 0].abs().max()) < 0.02  # padding row
    assert float(t[0, :, 16, 16].min()) > 1.0         # image row


def test_gray_16bit_bgra_and_channel_conversion():
    gray = InputSpec(1, 28, 28)
    g16 = np.full((28, 28), 65535, np.uint16)
    assert torch.allclose(gray.to_tensor(g16), torch.ones(1, 1, 28, 28))
    color = _frame(28, 28)
    t = gray.to_tensor(color)
    assert t.shape == (1, 1, 28, 28)
    assert t[0, 0, 0, 0] == pytest.approx(0.114, abs=1e-3) and t[0, 0, 0, -1] == pytest.approx(0.299, abs=1e-3)
    rgb = InputSpec(3, 28, 28)
    assert rgb.to_tensor(np.full((28, 28), 255, np.uint8)).min() == 1.0
    bgra = np.dstack([_frame(28, 28), np.zeros((28, 28), np.uint8)])
    assert torch.equal(rgb.to_tensor(bgra), rgb.to_tensor(_frame(28, 28)))
    five = InputSpec(5, 28, 28)
    assert five.to_tensor(color).shape == (1, 5, 28, 28)
    assert five.to_image(five.to_tensor(color)).shape == (28, 28, 3)


def test_errors_and_serialization():
    with pytest.raises(CnnvisError, match="mean has 2 values"):
        InputSpec(3, 8, 8, mean=(0.1, 0.2))
    with pytest.raises(CnnvisError, match="fit must be one of"):
        InputSpec(fit="zoom")
    with pytest.raises(CnnvisError, match="channel_order"):
        InputSpec(channel_order="RBG")
    with pytest.raises(CnnvisError, match="positive integer"):
        InputSpec(height=0)
    with pytest.raises(CnnvisError, match="H x W x 3"):
        InputSpec().to_tensor(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(CnnvisError, match="N x 1 x 28 x 28"):
        InputSpec(1, 28, 28).check_tensor(torch.zeros(1, 3, 28, 28))
    s = InputSpec(1, 28, 20, mean=0.1307, std=0.3081, fit="letterbox")
    assert InputSpec.from_dict(s.to_dict()) == s
    with pytest.raises(CnnvisError, match="unknown keys"):
        InputSpec.from_dict({"chanels": 3})
