"""Colour decorrelation, and the map from a [0, 1] image to what a model reads.

Olah, Mordvintsev & Schubert 2017 ("Feature Visualization", Distill; the Lucid library)
optimize images in a *decorrelated* colour space: neighbouring colour channels of natural
images are strongly correlated, so a step on independent R, G, B values mostly makes
colour noise.  Lucid draws every pixel as ``rgb = C z`` with ``C`` a square root of the
colour covariance of ImageNet (``C C^T = Sigma``, from its eigen-decomposition
``U sqrt(S)``), each column of ``C`` scaled by the largest column norm; ``z`` is what the
optimizer moves.  The same matrix is in lucent and (transposed) in horama's MACO.

Any matrix with ``C C^T = Sigma`` whitens equally (a Cholesky factor of ``Sigma`` is
another); the eigen-basis one is kept because its first axis is luminance, which makes
the MACO magnitude template (:mod:`.spectrum`) a luminance and two opponent-colour
spectra.  Decorrelation applies only to 3-channel RGB or BGR models; images of 1 or N
channels are optimized channel by channel.
"""
from __future__ import annotations

import torch

from ..core import InputSpec

__all__ = ["IMAGENET_COLOUR_SQRT", "colour_matrix", "recorrelate", "decorrelates", "to_model_input"]

#: Lucid's square root of ImageNet's RGB colour covariance (rows R, G, B; columns: luminance and
#: two opponent axes), before scaling by the largest column norm.
IMAGENET_COLOUR_SQRT = ((0.26, 0.09, 0.02),
                        (0.27, 0.00, -0.05),
                        (0.27, -0.09, 0.03))


def colour_matrix(device=None, dtype=torch.float32) -> torch.Tensor:
    """The 3 x 3 matrix ``C / max_j ||C[:, j]||`` that maps decorrelated ``z`` to RGB: ``rgb = C z``."""
    c = torch.tensor(IMAGENET_COLOUR_SQRT, dtype=torch.float64)
    c = c / c.norm(dim=0).max()
    return c.to(device=device, dtype=dtype)


def recorrelate(z: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W decorrelated values -> N x 3 x H x W RGB values (before the squashing sigmoid)."""
    c = colour_matrix(z.device, z.dtype)
    return torch.einsum("dc,nchw->ndhw", c, z)


def decorrelates(spec: InputSpec) -> bool:
    """Whether images for ``spec`` are drawn in decorrelated colour: 3-channel RGB or BGR models only."""
    return spec.channels == 3


def to_model_input(image: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """N x C x H x W image in [0, 1] (RGB order for 3 channels) -> the model's normalized input.

    The same arithmetic as :meth:`InputSpec.to_array` for an 8-bit frame ``v = 255 * image``:
    ``(v * scale - mean) / std`` per channel, channels reversed for a BGR model; differentiable.
    """
    if spec.channels == 3 and spec.channel_order == "BGR":
        image = image.flip(1)
    mean = torch.tensor(spec.mean, device=image.device, dtype=image.dtype)[:, None, None]
    std = torch.tensor(spec.std, device=image.device, dtype=image.dtype)[:, None, None]
    return (image * (255.0 * spec.scale) - mean) / std
