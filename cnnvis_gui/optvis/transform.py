"""Transformation robustness: random geometric transforms of the image at every step.

Olah et al. 2017 (Distill, "Feature Visualization", section "Transformation robustness")
and Mordvintsev et al. 2015 (DeepDream) show the model a randomly jittered, rotated and
scaled copy of the image at every step, so the optimizer cannot rely on pixel-exact
high-frequency patterns; lucent's ``standard_transforms`` are pad 12, jitter 8, scale
0.9-1.1, rotation -10..10 degrees, jitter 4.

Here each transform is a random affine map of the image plane, and a :class:`Transforms`
list composes them into **one** matrix per image and resamples once (bilinear, one
``grid_sample`` for the whole batch), instead of one resampling per transform.  Every image
of the batch draws its own transforms from its own generator.

Geometry: coordinates are in input pixels, centred on the image centre
``((W - 1) / 2, (H - 1) / 2)``, y down; a transform's matrix maps a point of the image it
receives to where it lands in the image it produces, and the list applies them in order
(``A = A_k ... A_1``).  Points that come from outside the image read ``fill`` (a gray
level in [0, 1], lucent's constant 0.5) or, with ``fill="reflect"``, the mirrored image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core import CnnvisError

__all__ = ["Transform", "Pad", "Jitter", "RandomScale", "RandomRotate", "Transforms", "standard_transforms"]


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


class Transform:
    """One random affine map per image: :meth:`matrix` -> 3 x 3 (float64) from a generator."""

    def matrix(self, gen: torch.Generator, h: int, w: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class Pad(Transform):
    """Pad by ``px`` on every side, then resize back to H x W: the content shrinks to ``W / (W + 2 px)``.

    lucent pads its image by 12 pixels before jittering and resizes the result to the model's
    size at the end; the gray margin this adds is what a shift then uncovers.
    """

    def __init__(self, px: float):
        if not px >= 0:
            raise CnnvisError(f"pad must be at least 0 pixels, got {px!r}.")
        self.px = float(px)

    def matrix(self, gen, h, w):
        return torch.diag(torch.tensor([w / (w + 2 * self.px), h / (h + 2 * self.px), 1.0], dtype=torch.float64))

    def __repr__(self):
        return f"pad {self.px:g} px"


class Jitter(Transform):
    """Shift by ``(dx, dy)``, each uniform in [-px, px] pixels (any real number, resampled bilinearly)."""

    def __init__(self, px: float):
        if not px >= 0:
            raise CnnvisError(f"jitter must be at least 0 pixels, got {px!r}.")
        self.px = float(px)

    def matrix(self, gen, h, w):
        dx, dy = _uniform(gen, -self.px, self.px), _uniform(gen, -self.px, self.px)
        return torch.tensor([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]], dtype=torch.float64)

    def __repr__(self):
        return f"jitter ±{self.px:g} px"


class RandomScale(Transform):
    """Scale about the centre by a factor uniform in [lo, hi]."""

    def __init__(self, lo: float, hi: float):
        if not 0 < lo <= hi:
            raise CnnvisError(f"a random scale needs 0 < lo <= hi, got {lo!r}, {hi!r}.")
        self.lo, self.hi = float(lo), float(hi)

    def matrix(self, gen, h, w):
        s = _uniform(gen, self.lo, self.hi)
        return torch.diag(torch.tensor([s, s, 1.0], dtype=torch.float64))

    def __repr__(self):
        return f"scale {self.lo:g}-{self.hi:g}"


class RandomRotate(Transform):
    """Rotate about the centre by an angle uniform in [-degrees, degrees] (positive: clockwise on screen)."""

    def __init__(self, degrees: float):
        if not degrees >= 0:
            raise CnnvisError(f"rotation must be at least 0 degrees, got {degrees!r}.")
        self.degrees = float(degrees)

    def matrix(self, gen, h, w):
        a = math.radians(_uniform(gen, -self.degrees, self.degrees))
        c, s = math.cos(a), math.sin(a)
        return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)

    def __repr__(self):
        return f"rotation ±{self.degrees:g}°"


class Transforms:
    """A list of :class:`Transform` applied in order, as one resampling per image.

    Parameters
    ----------
    transforms : sequence of Transform
    fill : float or "reflect"
        What points from outside the image read: a gray level in [0, 1] (default 0.5) or the mirror image.
    """

    def __init__(self, transforms=(), fill=0.5):
        self.transforms = list(transforms)
        if fill != "reflect" and not (isinstance(fill, (int, float)) and 0 <= fill <= 1):
            raise CnnvisError(f"fill must be a gray level in [0, 1] or 'reflect', got {fill!r}.")
        self.fill = fill

    def matrices(self, gens, h: int, w: int) -> torch.Tensor:
        """N x 3 x 3 (float64): the composed map of each image, one generator per image."""
        out = []
        for g in gens:
            a = torch.eye(3, dtype=torch.float64)
            for t in self.transforms:
                a = t.matrix(g, h, w) @ a
            out.append(a)
        return torch.stack(out) if out else torch.zeros(0, 3, 3, dtype=torch.float64)

    def apply(self, images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
        """Resample N x C x H x W ``images`` (in [0, 1]) through N composed ``matrices``: one ``grid_sample``."""
        n, _, h, w = images.shape
        if not self.transforms:
            return images
        # grid_sample reads, for every output pixel, the input point A^-1 p; with align_corners=False
        # a centred pixel coordinate u maps to the normalized 2u / W (and v to 2v / H)
        d = torch.diag(torch.tensor([2.0 / w, 2.0 / h, 1.0], dtype=torch.float64))
        theta = (d @ torch.linalg.inv(matrices) @ torch.linalg.inv(d))[:, :2, :]
        grid = F.affine_grid(theta.to(images.dtype).to(images.device), [n, 1, h, w], align_corners=False)
        if self.fill == "reflect":
            return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        fill = float(self.fill)
        return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill

    def __call__(self, images: torch.Tensor, gens) -> torch.Tensor:
        """Each image of the batch through its own random draw (``gens``: one generator per image)."""
        _, _, h, w = images.shape
        return self.apply(images, self.matrices(gens, h, w))

    def describe(self) -> str:
        if not self.transforms:
            return "no transforms"
        fill = "mirrored" if self.fill == "reflect" else f"gray {self.fill:g}"
        return ", ".join(map(repr, self.transforms)) + f" (outside: {fill})"


def standard_transforms(jitter: float = 16.0, scale=(0.8, 1.2), rotate: float = 10.0, pad: float = 0.0,
                        fill=0.5) -> Transforms:
    """The default robustness set: [pad], jitter, random scale, small rotation, a second small jitter."""
    ts = [Pad(pad)] if pad else []
    ts += [Jitter(jitter), RandomScale(*scale), RandomRotate(rotate)]
    if jitter:
        ts.append(Jitter(max(1.0, jitter / 4)))
    return Transforms(ts, fill)
