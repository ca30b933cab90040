"""Activation maximization with the regularizers of Yosinski et al. 2015.

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

:data:`PRESETS` 1-4 are the four regularization sets of the paper's Table 1
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

Objectives: a conv channel at the centre position (``target="center"``, the toolbox's
``push_spatial``), at any ``(y, x)``, or the whole channel (``"channel"``: mean over
positions); a flat layer (linear / output class) uses the unit's value.  Any input size
and channel count.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, asdict, replace
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core import CnnvisError, InputSpec, Visualizer
from ..core.errors import backward_errors
from ..core.layouts import layout_key
from . import cache as _cache
from .scan import model_device, resolve_layers

__all__ = ["OptimizeParams", "PRESETS", "OptStep", "OptimizeResult", "ActivationMaximizer", "maximize",
           "unit_activation", "random_input", "layer_layout"]


LR_1, LR_2, LR_3, LR_4 = 4.0, 8.0, 2.0, 4.0


@dataclass(frozen=True)
class OptimizeParams:
    """Hyper-parameters of one optimization (see the module docstring).

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
PRESETS = {
    1: OptimizeParams(decay=0.0, blur_radius=0.5, blur_every=4, small_norm_pct=50, lr=LR_1, max_iter=500),
    2: OptimizeParams(decay=0.3, blur_radius=0.0, blur_every=0, small_norm_pct=20, lr=LR_2, max_iter=750),
    3: OptimizeParams(decay=0.0001, blur_radius=1.0, blur_every=4, lr=LR_3, max_iter=1000),
    4: OptimizeParams(decay=0.0, blur_radius=0.5, blur_every=4, px_abs_benefit_pct=90, lr=LR_4, max_iter=1000),
}
DEFAULT_PRESET = 3
TOOLBOX_LR = {1: dict(lr_policy="progress", max_lr=100.0, desired_prog=2.0),
              2: dict(lr_policy="constant", lr=100.0),
              3: dict(lr_policy="constant", lr=100.0),
              4: dict(lr_policy="progress", max_lr=1e8, desired_prog=2.0)}
"""The toolbox's own learning-rate settings per preset (for CaffeNet), e.g. ``params_for(3, **TOOLBOX_LR[3])``."""


def params_for(preset=DEFAULT_PRESET, **overrides) -> OptimizeParams:
    if isinstance(preset, OptimizeParams):
        p = preset
    else:
        try:
            p = PRESETS[int(preset)]
        except (KeyError, ValueError, TypeError):
            raise CnnvisError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}.") from None
    return p.replace(**{k: v for k, v in overrides.items() if v is not None}) if overrides else p


@dataclass
class OptStep:
    """An intermediate state: ``image`` is H x W x 3 uint8 RGB (a fresh array, never mutated)."""

    iteration: int
    max_iter: int
    activation: float
    best_activation: float
    image: np.ndarray


@dataclass
class OptimizeResult:
    """The synthesized input (``x``: 1 x C x H x W normalized tensor on the CPU) and its activation."""

    x: torch.Tensor
    image: np.ndarray
    activation: float
    layer: str
    unit: int
    target: object
    params: OptimizeParams
    iterations: int
    history: list
    from_cache: bool = False


_RELUS = (nn.ReLU, nn.ReLU6)


class _Grab:
    """Forward hook keeping the layer's output (its last call), cloned so later in-place ops cannot touch it.

    ``pre_relu``: for a ReLU module keep its input instead (same maximizer, non-vanishing gradient).
    """

    def __init__(self, module: nn.Module, pre_relu: bool = False):
        self.value = None
        self.thread = threading.get_ident()   # forwards run by other threads are left alone
        self.pre = pre_relu and isinstance(module, _RELUS)
        if self.pre:
            self.handle = module.register_forward_pre_hook(self._pre)
        else:
            self.handle = module.register_forward_hook(self._hook)

    def _pre(self, module, args):
        if threading.get_ident() != self.thread:
            return None
        self.value = args[0]
        return (args[0].clone(),) + tuple(args[1:])

    def _hook(self, module, args, output):
        if threading.get_ident() != self.thread:
            return None
        if not isinstance(output, torch.Tensor):
            raise CnnvisError(f"{type(module).__name__} does not output a tensor; choose another layer.")
        self.value = output
        return output.clone()

    def remove(self):
        self.handle.remove()


def _pixel_bounds(spec: InputSpec, device, dtype):
    """Per-channel (lo, hi) of u = x * std / scale for real 8-bit images, and the u -> x factor."""
    mean = torch.tensor(spec.mean, device=device, dtype=dtype)[:, None, None]
    std = torch.tensor(spec.std, device=device, dtype=dtype)[:, None, None]
    to_x = spec.scale / std                                 # x = u * to_x
    center = mean / spec.scale                              # pixel value that normalizes to 0
    lo, hi = -center, 255.0 - center
    return torch.minimum(lo, hi), torch.maximum(lo, hi), to_x


def layer_layout(model: nn.Module, spec: InputSpec, layer: str, layouts: dict | None = None):
    """The layer's :class:`~cnnvis_gui.core.layouts.Layout` from the model map (one probe forward).

    An objective reads the layer's output through ``layout.to_nchw(output)`` (N x C x H x W: a
    ConvNeXt block's channels-last features or a ViT's patch tokens on their grid); a layer whose
    output is not a map of units is refused here.  None (channels first, no probe forward) for a
    network without a module that makes channels-last or token maps and without overrides.
    """
    if not layout_key(model, layouts):
        return None
    lay = Visualizer(model, spec, layouts=layouts).layout(layer)
    if lay is not None and lay.kind == "other":
        raise CnnvisError(f"layer {layer or 'output'!r} ({type(dict(model.named_modules())[layer]).__name__}) has no "
                          f"units to maximize: its output is not spatial ({lay.reason}); choose another layer.")
    return lay


def _objective(a: torch.Tensor, unit: int, target, name: str, layout=None):
    if layout is not None:
        a = layout.to_nchw(a)
    units = a.shape[1]
    if not 0 <= unit < units:
        raise CnnvisError(f"unit {unit} is out of range for layer {name or 'output'!r}: it has {units} units "
                          f"(0..{units - 1}).")
    s = a[:, unit]
    if s.ndim == 1:
        return s
    if target == "channel":
        return s.flatten(1).mean(dim=1)
    if target == "center":
        idx = tuple(n // 2 for n in s.shape[1:])
    else:
        idx = tuple(int(v) for v in target)
        if len(idx) != s.ndim - 1 or any(not 0 <= i < n for i, n in zip(idx, s.shape[1:])):
            raise CnnvisError(f"position {target} is outside layer {name!r}'s {tuple(s.shape[1:])} map.")
    return s[(slice(None),) + idx]


def _gaussian_blur(u: torch.Tensor, sigma: float) -> torch.Tensor:
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


def random_input(spec: InputSpec, n: int = 1, seed: int = 0) -> torch.Tensor:
    """n uniform-random 8-bit images through the spec: N x C x H x W normalized."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n,) + spec.shape, generator=g).float() * spec.scale
    mean = torch.tensor(spec.mean)[:, None, None]
    std = torch.tensor(spec.std)[:, None, None]
    return (raw - mean) / std


def unit_activation(model: nn.Module, spec: InputSpec, layer: str, unit: int, x: torch.Tensor,
                    target="center", layout=None, layouts: dict | None = None) -> torch.Tensor:
    """The objective (as optimized) for each input of a batch ``x`` -> N values (CPU).

    ``layout``: the layer's layout (default: the model map's, with the user's ``layouts`` overrides).
    """
    (name,) = resolve_layers(model, spec, [layer])
    if layout is None:
        layout = layer_layout(model, spec, name, layouts)
    device, dtype = model_device(model)
    grab = _Grab(dict(model.named_modules())[name])
    try:
        with torch.no_grad():
            model(x.to(device=device, dtype=dtype))
        return _objective(grab.value.float(), int(unit), target, name, layout).cpu()
    finally:
        grab.remove()


class ActivationMaximizer:
    """Regularized gradient ascent on the input for one unit; a generator for the GUI.

    Parameters
    ----------
    model, spec : the network and its input
    layer, unit : what to maximize (``layer`` "" / "output" is the model output)
    target : "center" (default), "channel" or (y, x) for conv layers; ignored for flat layers
    preset : 1-4 (:data:`PRESETS`) or an :class:`OptimizeParams`; ``**overrides`` change single fields
    cache_dir, use_cache : like the scan's; the result is cached by weights, spec, unit and parameters
    layouts : the user's layout overrides (:mod:`cnnvis_gui.core.layouts`); the unit is a channel of
        the layer's layout and the target a position on its grid

    Examples
    --------
    >>> opt = ActivationMaximizer(lm.model, lm.spec, "features.10", 5, preset=3)   # doctest: +SKIP
    >>> for step in opt.run(every=10):                                               # doctest: +SKIP
    ...     show(step.image)
    >>> opt.result.activation                                                          # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, spec: InputSpec, layer: str, unit: int, target="center",
                 preset=DEFAULT_PRESET, cache_dir=None, use_cache: bool = True, layouts: dict | None = None,
                 **overrides):
        self.model, self.spec = model, spec
        (self.layer,) = resolve_layers(model, spec, [layer])
        self.layouts = dict(layouts or {})
        self.unit = int(unit)
        if not (target in ("center", "channel") or (isinstance(target, (tuple, list)) and len(target) == 2)):
            raise CnnvisError(f"target must be 'center', 'channel' or a (y, x) position, got {target!r}.")
        self.target = tuple(int(v) for v in target) if isinstance(target, (tuple, list)) else target
        self.params = params_for(preset, **overrides)
        self.cache_root = _cache.cache_dir(cache_dir)
        self.use_cache = bool(use_cache)
        self.result: OptimizeResult | None = None
        self._stop = threading.Event()
        self._key = None

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = _cache.digest({"kind": "optimize", "weights": _cache.weights_hash(self.model),
                                       "spec": self.spec.to_dict(), "layer": self.layer, "unit": self.unit,
                                       "target": self.target, "params": asdict(self.params),
                                       **layout_key(self.model, self.layouts)})
        return self._key

    @property
    def cache_file(self):
        return self.cache_root / f"optimize-{self.key}.npz"

    def stop(self) -> None:
        """Stop after the current step (thread-safe); :attr:`result` then holds the best so far (not cached)."""
        self._stop.set()

    def cached(self) -> OptimizeResult | None:
        if not self.use_cache:
            return None
        z = _cache.load_npz(self.cache_file)
        if z is None or "x" not in z:
            return None
        x = torch.from_numpy(z["x"])
        return OptimizeResult(x, self.spec.to_image(x), float(z["activation"]), self.layer, self.unit, self.target,
                              self.params, int(z["iterations"]), [float(v) for v in z["history"]], from_cache=True)

    def run(self, every: int = 10) -> Iterator[OptStep]:
        """Optimize, yielding an :class:`OptStep` every ``every`` steps (and at the end)."""
        self._stop.clear()
        hit = self.cached()
        if hit is not None:
            self.result = hit
            yield OptStep(hit.iterations, self.params.max_iter, hit.activation, hit.activation, hit.image)
            return
        p = self.params
        model, spec = self.model, self.spec
        layout = layer_layout(model, spec, self.layer, self.layouts)
        device, dtype = model_device(model)
        lo, hi, to_x = _pixel_bounds(spec, device, torch.float32)
        g = torch.Generator().manual_seed(p.seed)
        u = (torch.randn(spec.shape, generator=g) * p.init_std).to(device)
        u = torch.maximum(torch.minimum(u, hi), lo)
        H, W = spec.height, spec.width
        jitter = p.jitter if p.jitter is not None else int(round(min(H, W) / 32))
        rng = np.random.default_rng(p.seed)
        grab = _Grab(dict(model.named_modules())[self.layer], pre_relu=True)
        was_training = model.training
        best_val, best_u = -math.inf, u.clone()
        history = []
        it = 0
        try:
            model.eval()
            for it in range(1, p.max_iter + 1):
                dy, dx = (int(v) for v in rng.integers(-jitter, jitter + 1, 2)) if jitter > 0 else (0, 0)
                ur = u.detach().requires_grad_(True)
                x = torch.roll(ur, (dy, dx), dims=(1, 2)) * to_x
                model(x[None].to(dtype))
                a = grab.value.float()
                if grab.pre:
                    a = F.leaky_relu(a, 0.01)
                obj = _objective(a, self.unit, self.target, self.layer, layout)[0]
                with backward_errors():
                    (grad,) = torch.autograd.grad(obj, ur)
                val = float(obj.detach())
                history.append(val)
                if val > best_val:
                    best_val, best_u = val, u.detach().clone()
                grad = torch.nan_to_num(grad.detach().float())
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
                    u = _gaussian_blur(u, p.blur_radius)
                if p.small_norm_pct > 0:
                    norms = u.norm(dim=0)
                    u = u * (norms >= torch.quantile(norms.flatten(), p.small_norm_pct / 100.0))
                if p.px_abs_benefit_pct > 0:
                    benefit = (grad * -u).sum(dim=0).abs()
                    u = u * (benefit >= torch.quantile(benefit.flatten(), p.px_abs_benefit_pct / 100.0))
                u = torch.maximum(torch.minimum(u, hi), lo)
                if it % max(1, every) == 0 or it == p.max_iter:
                    yield OptStep(it, p.max_iter, val, best_val, spec.to_image((u * to_x).cpu()))
                if self._stop.is_set():
                    break
        finally:
            grab.remove()
            model.train(was_training)
        # the final image may beat the best jittered one: compare both without jitter
        cands = torch.stack([best_u, u.detach()]) * to_x
        acts = unit_activation(model, spec, self.layer, self.unit, cands.to(dtype), self.target, layout)
        j = int(torch.argmax(acts))
        x = cands[j:j + 1].detach().float().cpu()
        self.result = OptimizeResult(x, spec.to_image(x), float(acts[j]), self.layer, self.unit, self.target, p,
                                     it, history)
        if self.use_cache and not self._stop.is_set():
            _cache.atomic_save_npz(self.cache_file, hint=_cache.cache_hint(self.cache_root), x=x.numpy(),
                                   activation=np.array(float(acts[j])),
                                   iterations=np.array(it), history=np.array(history, np.float32))
        yield OptStep(it, p.max_iter, float(acts[j]), max(best_val, float(acts[j])), self.result.image)


def maximize(model: nn.Module, spec: InputSpec, layer: str, unit: int, target="center", preset=DEFAULT_PRESET,
             cache_dir=None, use_cache: bool = True, progress=None, layouts: dict | None = None,
             **overrides) -> OptimizeResult:
    """Run an :class:`ActivationMaximizer` to the end; ``progress(OptStep)`` is called on the way."""
    opt = ActivationMaximizer(model, spec, layer, unit, target, preset, cache_dir, use_cache, layouts=layouts,
                              **overrides)
    for step in opt.run():
        if progress is not None:
            progress(step)
    return opt.result
