"""Colour decorrelation, the spec mapping and the three parameterizations, against formulas written out here."""
import math

import numpy as np
import pytest
import torch

from cnnvis_gui.core import CnnvisError, InputSpec
from cnnvis_gui.optvis import FourierImage, MacoImage, PixelImage, colour_matrix, make_param, to_model_input
from cnnvis_gui.optvis.spectrum import natural_magnitude, natural_table, power_law_scale, F_MIN, F_MAX

LUCID = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_colour_matrix_is_lucids_scaled_by_its_largest_column_norm():
    norms = [math.sqrt(sum(LUCID[r, c] ** 2 for r in range(3))) for c in range(3)]
    np.testing.assert_allclose(colour_matrix(dtype=torch.float64).numpy(), LUCID / max(norms), rtol=1e-12)
    # it is a square root of a covariance: C C^T is symmetric positive definite, luminance first
    c = colour_matrix(dtype=torch.float64).numpy()
    assert np.all(np.linalg.eigvalsh(c @ c.T) > 0)
    assert np.all(c[:, 0] > 0.5)                      # the first axis adds R, G and B alike


@pytest.mark.parametrize("order", ["RGB", "BGR"])
@pytest.mark.parametrize("scale", [1 / 255, 1.0])
def test_to_model_input_is_the_specs_own_arithmetic(order, scale):
    spec = InputSpec(3, 5, 7, mean=(0.4, 0.5, 0.6) if scale < 1 else (100, 110, 120), std=(0.2, 0.3, 0.25)
                     if scale < 1 else (50, 60, 55), channel_order=order, scale=scale)
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    image = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255)[None]
    got = to_model_input(image, spec)[0].numpy()
    want = spec.to_array(np.ascontiguousarray(rgb[..., ::-1]))      # frames are BGR, like OpenCV's
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert np.array_equal(spec.to_image(torch.from_numpy(got)), rgb)


def test_to_model_input_gray_and_many_channels():
    gray = InputSpec(1, 4, 6, mean=(0.1,), std=(0.3,))
    img = torch.rand(2, 1, 4, 6)
    np.testing.assert_allclose(to_model_input(img, gray).numpy(), ((img * 255 / 255 - 0.1) / 0.3).numpy(), rtol=1e-6)
    five = InputSpec(5, 3, 3, mean=tuple(range(5)), std=(1, 2, 3, 4, 5), scale=1.0)
    img = torch.rand(1, 5, 3, 3)
    want = (img * 255 - torch.arange(5.0)[:, None, None]) / torch.arange(1.0, 6)[:, None, None]
    np.testing.assert_allclose(to_model_input(img, five).numpy(), want.numpy(), rtol=1e-5)


def irfft2_written_out(half: np.ndarray, h: int, w: int) -> np.ndarray:
    """torch.fft.irfft2(half, s=(h, w), norm="ortho") as sums: a complex inverse DFT over rows, then the real
    inverse over columns, where the DC (and for even w the Nyquist) column counts once and by its real part."""
    n = np.arange(h)[:, None]
    k = np.arange(h)[None, :]
    rows = np.exp(2j * np.pi * n * k / h) @ half / math.sqrt(h)            # h x (w//2+1)
    m = np.arange(w)[:, None]
    out = np.zeros((h, w))
    for l in range(half.shape[1]):
        once = l == 0 or (w % 2 == 0 and l == w // 2)
        term = np.real(rows[:, l][:, None] * np.exp(2j * np.pi * l * m.T / w))
        out += term if once else 2 * term
    return out / math.sqrt(w)


@pytest.mark.parametrize("h,w", [(6, 8), (7, 5), (9, 12)])
def test_fourier_image_is_the_irfft_formula(h, w):
    spec = InputSpec(3, h, w)
    p = FourierImage(spec, [3, 4], decay=1.3)
    with torch.no_grad():
        p.spectrum.normal_(0, 0.7)
        got = p().numpy()
    fy = np.array([(k if k <= (h - 1) // 2 else k - h) / h for k in range(h)])
    fx = np.arange(w // 2 + 1) / w
    f = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    scale = 1.0 / np.maximum(f, 1.0 / max(h, w)) ** 1.3
    np.testing.assert_allclose(power_law_scale(h, w, 1.3).numpy(), scale, rtol=1e-12)
    c = colour_matrix(dtype=torch.float64).numpy()
    spectrum = p.spectrum.detach().double().numpy()
    for i in range(2):
        z = np.stack([irfft2_written_out((spectrum[i, ch, ..., 0] + 1j * spectrum[i, ch, ..., 1]) * scale, h, w)
                      for ch in range(3)]) / 4.0
        want = sigmoid(np.einsum("dc,chw->dhw", c, z))
        np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-5)


def test_fourier_without_decorrelation_and_one_channel():
    spec = InputSpec(1, 5, 9)
    p = FourierImage(spec, [1])
    with torch.no_grad():
        p.spectrum.normal_()
        got = p()[0, 0].numpy()
    s = p.spectrum.detach().double().numpy()[0, 0]
    want = sigmoid(irfft2_written_out((s[..., 0] + 1j * s[..., 1]) * power_law_scale(5, 9, p.decay).numpy(), 5, 9) / 4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert "1 channel independently" in p.describe() and not p.decorrelate
    with pytest.raises(CnnvisError, match="3-channel"):
        FourierImage(spec, [1], decorrelate=True)
    assert "decorrelated colour" in FourierImage(InputSpec(3, 4, 4, channel_order="BGR"), [1]).describe()


def test_pixel_image_is_sigmoid_of_colour_times_pixels():
    p = PixelImage(InputSpec(3, 4, 5), [0])
    with torch.no_grad():
        p.pixels.normal_()
    want = sigmoid(np.einsum("dc,nchw->ndhw", colour_matrix(dtype=torch.float64).numpy(), p.pixels.detach().numpy()))
    np.testing.assert_allclose(p().detach().numpy(), want, rtol=1e-5)


def test_each_image_depends_on_its_own_seed_alone():
    spec = InputSpec(3, 8, 6)
    for name in ("fourier", "maco", "pixel"):
        both = make_param(name, spec, [11, 22])().detach()
        alone = make_param(name, spec, [22])().detach()
        torch.testing.assert_close(both[1:], alone)
        assert not torch.equal(both[0], both[1])


def test_maco_keeps_the_natural_magnitude_and_moves_only_the_phase():
    spec = InputSpec(3, 16, 12)
    p = MacoImage(spec, [5])
    mag0 = p.magnitude.clone()
    opt = torch.optim.Adam(p.params, lr=0.3)
    img0 = p().detach()
    for _ in range(3):
        loss = -p()[0, :, :8, :8].mean()          # brighten the top-left corner
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert p.params == [p.phase]
    assert torch.equal(p.magnitude, mag0)
    assert not torch.allclose(p().detach(), img0)
    # the image's spectrum (before standardization and colour) has exactly the fixed magnitude
    z = torch.polar(p.magnitude, p.phase.detach()[0])
    x = torch.fft.irfft2(z, s=(16, 12), norm="ortho")
    back = torch.fft.rfft2(x, norm="ortho").abs()
    inner = (slice(None), slice(1, 8), slice(1, 6))          # coefficients that are not their own conjugate
    torch.testing.assert_close(back[inner], p.magnitude[inner], rtol=1e-4, atol=1e-5)


def expected_log_magnitude(table, fy, fx, n_max):
    """The table read at frequency (fy, fx), written out: linear in log f between the two nearest radial bins
    (extrapolated from the end pair outside), linear in orientation between the two nearest bins (wrapping)."""
    f = max(math.hypot(fy, fx), 1.0 / n_max)
    r = (math.log(f) - math.log(F_MIN)) / (math.log(F_MAX) - math.log(F_MIN)) * 15
    r0 = min(max(int(math.floor(r)), 0), 14)
    theta = math.atan2(fy, fx) % math.pi
    a = theta / math.pi * 16 - 0.5
    a0 = math.floor(a)
    ta, tr = a - a0, r - r0

    def ring(ri):
        return table[:, ri, a0 % 16] * (1 - ta) + table[:, ri, (a0 + 1) % 16] * ta
    return ring(r0) * (1 - tr) + ring(r0 + 1) * tr


def test_natural_magnitude_reads_the_measured_table():
    t = natural_table().numpy()
    h, w = 600, 410                       # lowest frequency 1/600 < F_MIN: extrapolated; corners > F_MAX: too
    got = np.log(natural_magnitude(h, w).numpy())
    rng = np.random.default_rng(1)
    picks = [(0, 0), (0, 1), (1, 0), (h - 1, w // 2), (h // 2, w // 2), (300, 7)] + \
            [(int(rng.integers(h)), int(rng.integers(w // 2 + 1))) for _ in range(20)]
    for ky, kx in picks:
        fy = (ky if ky <= (h - 1) // 2 else ky - h) / h
        np.testing.assert_allclose(got[:, ky, kx], expected_log_magnitude(t, fy, kx / w, max(h, w)), atol=1e-9)
    # natural images: magnitude falls about as 1/f, and horizontal + vertical beat the diagonals
    m = natural_magnitude(256, 256)[0]
    lo, hi = m[0, 4].item(), m[0, 64].item()                # f = 4/256 and 64/256 along x
    slope = math.log(hi / lo) / math.log(64 / 4)
    assert -1.6 < slope < -0.8, slope
    assert m[0, 32] > m[32, 32] and m[32, 0] > m[32, 32]
    assert natural_magnitude(10, 14, channels=2).shape == (2, 10, 8)


def test_unknown_parameterization():
    with pytest.raises(CnnvisError, match="fourier, maco, pixel"):
        make_param("cppn", InputSpec(3, 4, 4), [0])
