"""Image parameterizations: what the optimizer moves, and how it becomes an image.

Every parameterization draws a batch of N images ``N x C x H x W`` in [0, 1] (RGB order for
3 channels; :func:`.colour.to_model_input` maps them to the model's normalized input) from
parameters that :class:`torch.optim.Adam` moves:

* :class:`PixelImage` -- one value per pixel and channel, squashed by a sigmoid (with
  decorrelated colour on 3-channel models).
* :class:`FourierImage` -- Lucid's Fourier parameterization (Olah, Mordvintsev & Schubert
  2017, "Feature Visualization", Distill): the image is the inverse real FFT of a spectrum
  whose coefficients are scaled by ``1 / max(f, 1 / max(H, W)) ** decay``, so that equal steps
  on every coefficient give natural-looking (1/f) images instead of high-frequency noise;
  then decorrelated colour (:mod:`.colour`) and a sigmoid.  ``lucent``'s ``param.image``.
* :class:`MacoImage` -- MACO (Fel, Boissin, Boutin, Picard, Serre et al. 2023, "Unlocking
  Feature Visualization for Deeper Networks with MAgnitude Constrained Optimization",
  NeurIPS): the magnitude spectrum is fixed to the mean spectrum of natural photographs
  (:func:`.spectrum.natural_magnitude`) and only the phase is optimized; the image is
  standardized, recorrelated and squashed by a sigmoid (horama's ``maco_preconditioner``).

Each sample of the batch is drawn from its own seed, so an image depends only on its own
seed, never on its neighbours in the batch: several units optimized together give the
images they would give alone.  Colour is decorrelated only for 3-channel (RGB or BGR)
models; 1- or N-channel images are drawn channel by channel (MACO then gives every channel
the luminance spectrum).  :meth:`ImageParam.describe` says what was used.
"""
from __future__ import annotations

import math

import torch

from ..core import CnnvisError, InputSpec
from .colour import decorrelates, recorrelate
from .spectrum import natural_magnitude, power_law_scale

__all__ = ["PARAMETERIZATIONS", "ImageParam", "PixelImage", "FourierImage", "MacoImage", "make_param"]

#: Lucid's constant: the Fourier image is divided by 4 before the sigmoid ("reduces saturation").
LUCID_FOURIER_DIVISOR = 4.0


def _randn(shape, seeds, device) -> torch.Tensor:
    """One standard-normal tensor of ``shape`` per seed, stacked: N x shape, each from its own generator."""
    out = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float32) for s in seeds]
    return torch.stack(out).to(device)


class ImageParam:
    """A batch of images in [0, 1] as a differentiable function of :attr:`params`.

    Parameters
    ----------
    spec : InputSpec
        The model's input: channels, height, width (any; non-square, 1, 3 or N channels).
    seeds : sequence of int
        One seed per image of the batch.
    decorrelate : bool or None
        Draw colour in Lucid's decorrelated space; None (default): only for 3-channel models.
    device : torch.device or None
    """

    name = "?"

    def __init__(self, spec: InputSpec, seeds, decorrelate=None, device=None):
        self.spec = spec
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise CnnvisError("an image parameterization needs at least one seed (one image).")
        if decorrelate and not decorrelates(spec):
            raise CnnvisError(f"decorrelated colour needs a 3-channel RGB or BGR model; this one reads "
                              f"{spec.channels} channel{'s' * (spec.channels != 1)}.")
        self.decorrelate = decorrelates(spec) if decorrelate is None else bool(decorrelate)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.params: list = []

    @property
    def n(self) -> int:
        return len(self.seeds)

    def _colour(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(recorrelate(z) if self.decorrelate else z)

    def __call__(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _colour_words(self) -> str:
        if self.decorrelate:
            return "decorrelated colour (ImageNet)"
        c = self.spec.channels
        return "RGB channels independently" if c == 3 else f"{c} channel{'s' * (c != 1)} independently"

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class PixelImage(ImageParam):
    """One parameter per pixel and channel: ``image = sigmoid(C z)`` (``C``: colour matrix or identity)."""

    name = "pixel"

    def __init__(self, spec, seeds, decorrelate=None, device=None, sd: float = 0.01):
        super().__init__(spec, seeds, decorrelate, device)
        self.sd = float(sd)
        self.pixels = (_randn(spec.shape, self.seeds, self.device) * self.sd).requires_grad_(True)
        self.params = [self.pixels]

    def __call__(self) -> torch.Tensor:
        return self._colour(self.pixels)

    def describe(self) -> str:
        return f"pixels, {self._colour_words()}, sigmoid"


class FourierImage(ImageParam):
    """Lucid's Fourier parameterization.

    ``image = sigmoid(C irfft2(s * X, norm="ortho") / 4)`` where ``X`` (the parameters, one complex
    coefficient per ``rfft2`` frequency and channel, started at N(0, sd^2) per real and imaginary
    part) is scaled by ``s = 1 / max(f, 1 / max(H, W)) ** decay`` (``f`` in cycles per pixel).
    """

    name = "fourier"

    def __init__(self, spec, seeds, decorrelate=None, device=None, decay: float = 1.25, sd: float = 0.01):
        super().__init__(spec, seeds, decorrelate, device)
        c, h, w = spec.shape
        self.decay, self.sd = float(decay), float(sd)
        self.scale = power_law_scale(h, w, self.decay).to(device=self.device, dtype=torch.float32)
        self.spectrum = (_randn((c, h, w // 2 + 1, 2), self.seeds, self.device) * self.sd).requires_grad_(True)
        self.params = [self.spectrum]

    def __call__(self) -> torch.Tensor:
        _, h, w = self.spec.shape
        z = torch.view_as_complex(self.spectrum) * self.scale
        x = torch.fft.irfft2(z, s=(h, w), norm="ortho") / LUCID_FOURIER_DIVISOR
        return self._colour(x)

    def describe(self) -> str:
        return f"Fourier, 1/f^{self.decay:g} spectrum scale, {self._colour_words()}, sigmoid"


def _standardize(t: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation per sample (over every other axis)."""
    dims = tuple(range(1, t.ndim))
    t = t - t.mean(dim=dims, keepdim=True)
    return t / (t.std(dim=dims, keepdim=True) + 1e-4)


class MacoImage(ImageParam):
    """MACO: the natural-image magnitude spectrum, fixed; only the phase is a parameter.

    ``image = sigmoid(C standardize(irfft2(M exp(i phi))))`` with ``M`` from
    :func:`.spectrum.natural_magnitude` and ``phi`` started uniform in [-pi, pi) (horama's
    ``maco_preconditioner``, per image of the batch).  horama starts ``phi`` at N(0, 1) and
    standardizes it at every step: phases bunched around 0 put every wave's crest at the
    origin, a bright spot in the image's corners (harmless in horama's 1280-pixel canvas seen
    through central crops, visible in an image the size of the model's input).
    """

    name = "maco"

    def __init__(self, spec, seeds, decorrelate=None, device=None):
        super().__init__(spec, seeds, decorrelate, device)
        c, h, w = spec.shape
        self.magnitude = natural_magnitude(h, w, 3 if self.decorrelate else c).to(self.device, torch.float32)
        start = [torch.rand((c, h, w // 2 + 1), generator=torch.Generator().manual_seed(s)) for s in self.seeds]
        self.phase = ((torch.stack(start) * 2 - 1) * math.pi).to(self.device).requires_grad_(True)
        self.params = [self.phase]

    def __call__(self) -> torch.Tensor:
        _, h, w = self.spec.shape
        z = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        x = _standardize(torch.fft.irfft2(z, s=(h, w), norm="ortho"))
        return self._colour(x)

    def describe(self) -> str:
        spectrum = "natural-image magnitude spectrum" if self.decorrelate or self.spec.channels == 3 else \
            "natural-image luminance magnitude spectrum on every channel"
        return f"MACO (phase only, {spectrum}), {self._colour_words()}, sigmoid"


PARAMETERIZATIONS = {"fourier": FourierImage, "maco": MacoImage, "pixel": PixelImage}


def make_param(name: str, spec: InputSpec, seeds, device=None, decorrelate=None, **options) -> ImageParam:
    """The parameterization called ``name`` (one of :data:`PARAMETERIZATIONS`)."""
    try:
        cls = PARAMETERIZATIONS[name]
    except KeyError:
        raise CnnvisError(f"unknown image parameterization {name!r}; choose one of "
                          f"{', '.join(PARAMETERIZATIONS)}.") from None
    return cls(spec, seeds, decorrelate=decorrelate, device=device, **options)
