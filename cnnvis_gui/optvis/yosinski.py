"""Activation maximization with the regularizers of Yosinski et al. 2015 (the presets "yosinski-1".."4").

"Understanding Neural Networks Through Deep Visualization" (Yosinski, Clune, Nguyen, Fuchs,
Lipson; ICML Deep Learning Workshop 2015) synthesizes an input that maximizes one unit by
gradient ascent from a small random image, and makes the result interpretable with four
regularizers applied after every step:

* L2 decay: ``x *= 1 - decay``;
* Gaussian blur of radius ``blur_radius`` every ``blur_every`` steps;
* clipping of pixels with small norm: pixels whose norm over channels is below the
  ``small_norm_pct`` percentile are set to zero;
* clipping of pixels with small contribution: pixels whose absolute predicted benefit of
  being zeroed, ``|sum_c x * grad|``, is below the ``px_abs_benefit_pct`` percentile are set to zero.

:data:`YOSINSKI_PRESETS` 1-4 are the four regularization sets of the paper's Table 1
(theta_decay, theta_b_width, theta_b_every, theta_n_pct, theta_c_pct) =
(0, 0.5, 4, 50, 0), (0.3, 0, 0, 20, 0), (0.0001, 1.0, 4, 0, 0), (0, 0.5, 4, 0, 90), with the
iteration counts that the authors' deep-visualization-toolbox ``doc/optimize.md`` gives to
reproduce them (500, 750, 1000, 1000; preset 3 is the set used for most images of the paper).
The image is parameterized in 8-bit pixel units around the normalization centre,
``u = x_normalized * std / scale`` (the toolbox's "mean-subtracted pixels"), so decay pulls
towards the mean image and blur radii are in input pixels.

One deliberate deviation: the toolbox's learning rates (constant 100, or "progress" capped
at 100 / 1e8) are tied to CaffeNet's gradient scale on raw pixels and stall on other models
(a small network's gradients are orders of magnitude smaller).  The presets therefore use
``lr_policy="normalized"``: each step moves the image by ``lr * grad / rms(grad)``, ``lr``
in pixel units, the same for every model.  The toolbox policies remain available
(``lr_policy="constant"`` / ``"progress"`` with ``lr`` / ``max_lr`` / ``desired_prog``).

Also unlike the toolbox, the image is clamped after every step to the values that real
images map to through the spec, and (as in Lucid/lucent) the input is randomly jittered by
a few pixels each step.  For a ReLU layer the objective is computed on a leaky ReLU
(slope 0.01) of the ReLU's input: the same maximizer, but its gradient does not vanish
while the unit is off (as it is at the start for many units); steps are normalized, so
the small slope only matters where the ReLU is off.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core import CnnvisError, InputSpec
from ..core.errors import backward_errors
from ..core.recorder import model_device_dtype
from .capture import PRE_ACTIVATION_MODULES, LayerCapture
from .health import GradientWatch, no_gradient
from .objectives import Objective
from .render import RenderResult, RenderStep

__all__ = ["OptimizeParams", "YOSINSKI_PRESETS", "TOOLBOX_LR", "YosinskiAscent"]

LR_1, LR_2, LR_3, LR_4 = 4.0, 8.0, 2.0, 4.0


@dataclass(frozen=True)
class OptimizeParams:
    """Hyper-parameters of one regularized ascent (see the module docstring).

    ``lr_policy="normalized"`` steps ``lr * grad / rms(grad)`` (``lr`` in pixel units);
    ``"constant"`` steps ``lr * grad``; ``"progress"`` steps so that the objective would rise by
    ``desired_prog`` if it were linear, ``lr = min(max_lr, desired_prog / |grad|^2)`` (the toolbox's).
    ``jitter`` is the largest random shift in pixels (None: ``round(min(H, W) / 32)``).
    ``init_std``: the start is the mean image plus N(0, init_std) noise (pixel units).
    """

    decay: float = 0.0001
    blur_radius: float = 1.0
    blur_every: int = 4
    small_norm_pct: float = 0.0
    px_abs_benefit_pct: float = 0.0
    lr_policy: str = "normalized"
    lr: float = 2.0
    max_lr: float = 100.0
    desired_prog: float = 2.0
    max_iter: int = 1000
    jitter: int | None = None
    init_std: float = 10.0
    seed: int = 0

    def __post_init__(self):
        if self.lr_policy not in ("normalized", "constant", "progress"):
            raise CnnvisError(f"lr_policy must be 'normalized', 'constant' or 'progress', got {self.lr_policy!r}.")
        if self.max_iter < 1:
            raise CnnvisError(f"max_iter must be at least 1, got {self.max_iter}.")
        for name in ("small_norm_pct", "px_abs_benefit_pct"):
            if not 0 <= getattr(self, name) < 100:
                raise CnnvisError(f"{name} must be in [0, 100), got {getattr(self, name)}.")

    def replace(self, **kw) -> "OptimizeParams":
        return replace(self, **kw)


#: Table 1 of Yosinski et al. 2015 (decay, blur width, blur every, norm pct, contribution pct), with
#: the iteration counts of the toolbox's doc/optimize.md; steps are normalized (see the module docstring).
YOSINSKI_PRESETS = {
    1: OptimizeParams(decay=0.0, blur_radius=0.5, blur_every=4, small_norm_pct=50, lr=LR_1, max_iter=500),
    2: OptimizeParams(decay=0.3, blur_radius=0.0, blur_every=0, small_norm_pct=20, lr=LR_2, max_iter=750),
    3: OptimizeParams(decay=0.0001, blur_radius=1.0, blur_every=4, lr=LR_3, max_iter=1000),
    4: OptimizeParams(decay=0.0, blur_radius=0.5, blur_every=4, px_abs_benefit_pct=90, lr=LR_4, max_iter=1000),
}
TOOLBOX_LR = {1: dict(lr_policy="progress", max_lr=100.0, desired_prog=2.0),
              2: dict(lr_policy="constant", lr=100.0),
              3: dict(lr_policy="constant", lr=100.0),
              4: dict(lr_policy="progress", max_lr=1e8, desired_prog=2.0)}
"""The toolbox's own learning-rate settings per preset (for CaffeNet),
e.g. ``YOSINSKI_PRESETS[3].replace(**TOOLBOX_LR[3])``."""


def _pixel_bounds(spec: InputSpec, device, dtype):
    """Per-channel (lo, hi) of u = x * std / scale for real 8-bit images, and the u -> x factor."""
    mean = torch.tensor(spec.mean, device=device, dtype=dtype)[:, None, None]
    std = torch.tensor(spec.std, device=device, dtype=dtype)[:, None, None]
    to_x = spec.scale / std                                 # x = u * to_x
    center = mean / spec.scale                              # pixel value that normalizes to 0
    lo, hi = -center, 255.0 - center
    return torch.minimum(lo, hi), torch.maximum(lo, hi), to_x


def gaussian_blur(u: torch.Tensor, sigma: float) -> torch.Tensor:
    """C x H x W blurred by a separable Gaussian of standard deviation ``sigma`` (reflected borders)."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, device=u.device, dtype=u.dtype)
    k = torch.exp(-(t * t) / (2 * sigma * sigma))
    k = k / k.sum()
    C, H, W = u.shape
    v = u[None]
    mode = "reflect" if min(H, W) > r else "replicate"
    v = F.conv2d(F.pad(v, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    v = F.conv2d(F.pad(v, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)
    return v[0]


class YosinskiAscent:
    """Regularized gradient ascent on the input for one objective; a generator like :class:`.render.Renderer`.

    ``objective`` reads one layer (:class:`.objectives.Objective`); where that layer is a ReLU or
    ReLU6 module it sees a leaky ReLU (slope 0.01) of the ReLU's input.  :attr:`result` is a
    :class:`.render.RenderResult` of one image: the better, measured without jitter, of the best
    jittered step and the last one.
    """

    def __init__(self, model: nn.Module, spec: InputSpec, objective: Objective, params: OptimizeParams,
                 layouts: dict | None = None):
        self.model, self.spec, self.objective, self.params = model, spec, objective, params
        self.layouts = dict(layouts or {})
        self.result: RenderResult | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def describe(self) -> str:
        p = self.params
        return (f"Yosinski et al. 2015: pixels, decay {p.decay:g}, blur {p.blur_radius:g} px every {p.blur_every}, "
                f"small-norm clip {p.small_norm_pct:g} %, small-contribution clip {p.px_abs_benefit_pct:g} %, "
                f"{p.lr_policy} steps of {p.lr:g}")

    def _value(self, cap: LayerCapture, x: torch.Tensor, dtype) -> torch.Tensor:
        cap.forward(x.to(dtype))
        acts = dict(cap.values)
        modules = dict(self.model.named_modules())
        for name in self.objective.layers:
            if name and isinstance(modules[name], PRE_ACTIVATION_MODULES):
                acts[name] = F.leaky_relu(acts[name].float(), 0.01)
        return self.objective(acts, self.layouts).float()

    def run(self, every: int = 10) -> Iterator[RenderStep]:
        self._stop.clear()
        p, model, spec = self.params, self.model, self.spec
        device, dtype = model_device_dtype(model)
        lo, hi, to_x = _pixel_bounds(spec, device, torch.float32)
        g = torch.Generator().manual_seed(p.seed)
        u = (torch.randn(spec.shape, generator=g) * p.init_std).to(device)
        u = torch.maximum(torch.minimum(u, hi), lo)
        H, W = spec.height, spec.width
        jitter = p.jitter if p.jitter is not None else int(round(min(H, W) / 32))
        rng = np.random.default_rng(p.seed)
        was_training = model.training
        best_val, best_u = -math.inf, u.clone()
        history, problem, it = [], None, 0
        watch = GradientWatch()
        try:
            model.eval()
            with torch.enable_grad(), LayerCapture(model, self.objective.layers) as cap:
                for it in range(1, p.max_iter + 1):
                    dy, dx = (int(v) for v in rng.integers(-jitter, jitter + 1, 2)) if jitter > 0 else (0, 0)
                    ur = u.detach().requires_grad_(True)
                    x = torch.roll(ur, (dy, dx), dims=(1, 2)) * to_x
                    obj = self._value(cap, x[None], dtype)[0]
                    if not obj.requires_grad:
                        raise no_gradient(self.objective.text)
                    with backward_errors():
                        (grad,) = torch.autograd.grad(obj, ur, allow_unused=True)
                    if grad is None:                 # the value depends on the weights, not on the image
                        raise no_gradient(self.objective.text)
                    grad = grad.detach().float()
                    problem = watch.nonfinite(it, obj.detach(), [grad])
                    if problem is not None:
                        it -= 1
                        break
                    val = float(obj.detach())
                    history.append(val)
                    if val > best_val:
                        best_val, best_u = val, u.detach().clone()
                    problem = watch.zero(it, [grad])
                    if problem is not None:
                        break
                    if p.lr_policy == "normalized":
                        rms = float(grad.pow(2).mean().sqrt())
                        lr = p.lr / rms if rms > 0 else 0.0
                    elif p.lr_policy == "constant":
                        lr = p.lr
                    else:
                        gn = float((grad * grad).sum())
                        lr = p.max_lr if gn <= 0 else min(p.max_lr, p.desired_prog / gn)
                    u = u + lr * grad
                    if p.decay:
                        u = u * (1.0 - p.decay)
                    if p.blur_radius > 0 and p.blur_every > 0 and it % p.blur_every == 0:
                        u = gaussian_blur(u, p.blur_radius)
                    if p.small_norm_pct > 0:
                        norms = u.norm(dim=0)
                        u = u * (norms >= torch.quantile(norms.flatten(), p.small_norm_pct / 100.0))
                    if p.px_abs_benefit_pct > 0:
                        benefit = (grad * -u).sum(dim=0).abs()
                        u = u * (benefit >= torch.quantile(benefit.flatten(), p.px_abs_benefit_pct / 100.0))
                    u = torch.maximum(torch.minimum(u, hi), lo)
                    if it % max(1, every) == 0 or it == p.max_iter:
                        yield RenderStep(it, p.max_iter, [val], [best_val], [spec.to_image((u * to_x).cpu())])
                    if self._stop.is_set():
                        break
                # the final image may beat the best jittered one: compare both without jitter
                with torch.no_grad():
                    cands = torch.stack([best_u, u.detach()]) * to_x
                    vals = self._value(cap, cands, dtype).cpu()
        finally:
            model.train(was_training)
        j = int(torch.argmax(vals))
        x = cands[j:j + 1].detach().float().cpu()
        self.result = RenderResult(x, [spec.to_image(x)], [float(vals[j])], it, np.array(history, np.float32)[:, None],
                                   self.describe(), problem, self._stop.is_set())
        yield RenderStep(it, p.max_iter, [float(vals[j])], [max(best_val, float(vals[j]))], self.result.images)
