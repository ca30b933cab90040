"""The optimization loop: a parameterized batch of images, random transforms, an objective, Adam.

Feature visualization as in Olah, Mordvintsev & Schubert 2017 (Distill, "Feature
Visualization"; the Lucid / lucent ``render_vis`` loop): at every step the images
(:mod:`.param`) go through random transforms (:mod:`.transform`) into the model; the
objective (:mod:`.objectives`) is read from the layers it names and its sum over the batch
is maximized with Adam on the parameters alone (the model's weights get no gradient).

:class:`Renderer` is a generator for the window (superqt's ``GeneratorWorker`` pattern): it
yields a :class:`RenderStep` every ``every`` steps, :meth:`Renderer.stop` ends it after the
current step, and :attr:`Renderer.result` then holds, per image, the better of the best
image seen so far and the last one (both measured again without transforms).

Bad input gets one line (:class:`~cnnvis_gui.core.CnnvisError`, raised before the first step
completes): a layer that does not run, a unit out of range, an objective the model cannot
take a gradient of (its value does not depend on the image through autograd, or the model's
backward fails).  A gradient that turns NaN / infinite, or stays exactly zero everywhere for
``ZERO_PATIENCE`` steps, ends the run with :attr:`RenderResult.problem` saying so; the
images kept are the last good ones.
"""
from __future__ import annotations

import math
import threading
import zlib
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..core import CnnvisError, InputSpec
from ..core.errors import backward_errors
from ..core.recorder import model_device_dtype
from .adam import Adam
from .capture import LayerCapture
from .colour import to_model_input
from .health import ZERO_PATIENCE, GradientWatch, no_gradient
from .objectives import CLASS_PROBABILITY, Objective
from .param import PARAMETERIZATIONS, make_param
from .transform import standard_transforms

__all__ = ["ZERO_PATIENCE", "DEFAULT_JITTER", "RenderParams", "RenderStep", "RenderResult", "Renderer", "render", "sample_seed"]

#: the largest random shift at 224 x 224 (pixels); other sizes get it in proportion to their smaller side
DEFAULT_JITTER = 16.0


def sample_seed(seed: int, *key) -> int:
    """A stable 31-bit seed for one image from the run's ``seed`` and what the image is of (layer, unit, copy)."""
    return zlib.crc32("/".join(map(str, (seed,) + key)).encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class RenderParams:
    """Settings of one feature-visualization run (the defaults were measured on the real MobileNetV2 against
    lucent: ``benchmarks/bench_optvis.py``; a spectrum decay of 1.25 and scales 0.8-1.2 gave the same values
    under transforms as 1.0 and 0.9-1.1 (lucent's), in more contrast, and better-looking pictures).

    ``param``: "fourier", "maco" or "pixel" (:mod:`.param`); ``decay``: the Fourier spectrum's
    power; ``decorrelate``: None = only for 3-channel models; ``max_iter`` Adam steps of size
    ``lr``; transforms: ``jitter`` (pixels; None: 16 at 224 pixels, in proportion to the smaller
    side of other inputs, so 2 on CIFAR's 32), ``scale`` (lo, hi), ``rotate`` (degrees), ``pad``
    (pixels), ``fill`` (gray level or "reflect"); ``class_probability``: the weight of the
    log-probability term of a class objective (:func:`.objectives.class_logit`); ``seed``.
    """

    param: str = "fourier"
    max_iter: int = 512
    lr: float = 0.05
    decay: float = 1.25
    decorrelate: bool | None = None
    jitter: float | None = None
    scale: tuple = (0.8, 1.2)
    rotate: float = 10.0
    pad: float = 0.0
    fill: object = 0.5
    class_probability: float = CLASS_PROBABILITY
    seed: int = 0

    def __post_init__(self):
        if self.param not in PARAMETERIZATIONS:
            raise CnnvisError(f"unknown image parameterization {self.param!r}; choose one of "
                              f"{', '.join(PARAMETERIZATIONS)}.")
        if int(self.max_iter) < 1:
            raise CnnvisError(f"max_iter must be at least 1, got {self.max_iter}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise CnnvisError(f"the step size lr must be a positive number, got {self.lr}.")
        object.__setattr__(self, "max_iter", int(self.max_iter))
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))
        standard_transforms(self.jitter or 0.0, self.scale, self.rotate, self.pad, self.fill)   # checks the values

    def replace(self, **kw) -> "RenderParams":
        return replace(self, **kw)

    def transforms(self, spec: InputSpec | None = None):
        """The transforms for images of ``spec`` (the jitter in proportion to its smaller side when not given)."""
        jitter = self.jitter
        if jitter is None:
            jitter = round(DEFAULT_JITTER * min(spec.height, spec.width) / 224.0) if spec is not None else DEFAULT_JITTER
        return standard_transforms(jitter, self.scale, self.rotate, self.pad, self.fill)


@dataclass
class RenderStep:
    """Progress: the objective per image at this step (under transforms), the best so far, and the images."""

    iteration: int
    max_iter: int
    values: list
    best: list
    images: list                  # H x W x 3 uint8 RGB per image (fresh arrays)

    @property
    def activation(self) -> float:
        return float(self.values[0])

    @property
    def best_activation(self) -> float:
        return float(self.best[0])

    @property
    def image(self) -> np.ndarray:
        return self.images[0]


@dataclass
class RenderResult:
    """The images (``x``: N x C x H x W normalized model input, CPU float32; ``images``: uint8 RGB)."""

    x: torch.Tensor
    images: list
    values: list                  # the objective per image, without transforms
    iterations: int
    history: np.ndarray           # iterations x N objective values under transforms
    description: str              # parameterization and transforms, in words
    problem: str | None = None    # why the run ended early (NaN or zero gradient), None otherwise
    stopped: bool = False         # ended by stop()
    extra: dict = field(default_factory=dict)


def _to_images(spec: InputSpec, x: torch.Tensor) -> list:
    return [spec.to_image(x[i]) for i in range(x.shape[0])]


class Renderer:
    """Optimize a batch of images for an objective.

    Parameters
    ----------
    model : nn.Module
        Any model; put in eval mode for the run (its mode is restored after).
    spec : InputSpec
        The model's input: size, channels, mean / std / scale, RGB or BGR.
    objective : Objective
        What to maximize (its N-vector is summed over the batch).
    seeds : sequence of int or int
        One seed per image (:func:`sample_seed`), or a count: images 0..n-1 from ``params.seed``.
    params : RenderParams
    layouts : dict or None
        Layer name -> its :class:`~cnnvis_gui.core.layouts.Layout` (``Visualizer.layout``).  For a network
        with channels-last or token maps (:func:`~cnnvis_gui.core.layouts.layout_key`), a layer left out
        gets its layout from the model map (one probe forward before the first step); otherwise a layer
        without one is read channels first.
    """

    def __init__(self, model: nn.Module, spec: InputSpec, objective: Objective, seeds=1,
                 params: RenderParams | None = None, layouts: dict | None = None):
        if not isinstance(objective, Objective):
            raise CnnvisError(f"the objective must be an Objective (channel, neuron, class_logit...), got "
                              f"{type(objective).__name__}.")
        self.model, self.spec, self.objective = model, spec, objective
        self.params = params or RenderParams()
        self.seeds = [sample_seed(self.params.seed, i) for i in range(int(seeds))] if isinstance(seeds, int) \
            else [int(s) for s in seeds]
        if not self.seeds:
            raise CnnvisError("nothing to render: give at least one image (seed).")
        self.layouts = dict(layouts or {})
        self.transforms = self.params.transforms(spec)
        self.result: RenderResult | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        """End after the current step (thread-safe); :attr:`result` then holds the best images so far."""
        self._stop.set()

    def describe(self) -> str:
        return f"{self._param_words()}; {self.transforms.describe()}; Adam lr {self.params.lr:g}"

    def _param_words(self) -> str:
        return make_param(self.params.param, self.spec, self.seeds[:1], **self._param_options()).describe()

    def _param_options(self) -> dict:
        p = self.params
        opts = {"decorrelate": p.decorrelate}
        if p.param == "fourier":
            opts["decay"] = p.decay
        return opts

    def _fill_layouts(self) -> None:
        """The model map's layout of every layer the objective reads and no layout was given for."""
        from ..core import Visualizer
        from ..core.layouts import layout_key
        missing = [n for n in self.objective.layers if n not in self.layouts]
        if not missing or not layout_key(self.model):
            return
        vis = Visualizer(self.model, self.spec)
        for name in missing:
            lay = vis.layout(name)
            if lay is not None and lay.kind == "other":
                raise CnnvisError(f"layer {name or 'output'!r} has no units to optimize: its output is not spatial "
                                  f"({lay.reason}); choose another layer.")
            if lay is not None:
                self.layouts[name] = lay

    # ------------------------------------------------------------------ the loop
    def _values(self, cap: LayerCapture, image: torch.Tensor, dtype) -> torch.Tensor:
        cap.forward(to_model_input(image, self.spec).to(dtype))
        v = self.objective(cap.values, self.layouts)
        if not isinstance(v, torch.Tensor) or v.ndim != 1 or v.shape[0] != image.shape[0]:
            raise CnnvisError(f"the objective {self.objective.text!r} must give one value per image "
                              f"({image.shape[0]}), got {getattr(v, 'shape', v)!r}.")
        return v.float()

    def run(self, every: int = 10) -> Iterator[RenderStep]:
        """Optimize, yielding a :class:`RenderStep` every ``every`` steps and at the end."""
        self._stop.clear()
        p, spec, model = self.params, self.spec, self.model
        device, dtype = model_device_dtype(model)
        self._fill_layouts()
        param = make_param(p.param, spec, self.seeds, device=device, **self._param_options())
        gens = [torch.Generator().manual_seed(s ^ 0x5DEECE6) for s in self.seeds]
        opt = Adam(param.params, lr=p.lr)
        n = len(self.seeds)
        best = torch.full((n,), -math.inf)
        best_img = None
        history, problem, it = [], None, 0
        watch = GradientWatch()
        was_training = model.training
        try:
            model.eval()
            with torch.enable_grad(), LayerCapture(model, self.objective.layers) as cap:
                for it in range(1, p.max_iter + 1):
                    image = param()
                    seen = self.transforms(image, gens)
                    vals = self._values(cap, seen, dtype)
                    if not vals.requires_grad:
                        raise no_gradient(self.objective.text)
                    with backward_errors():
                        grads = torch.autograd.grad(-vals.sum(), param.params, allow_unused=True)
                    if all(g is None for g in grads):
                        raise no_gradient(self.objective.text)
                    grads = [torch.zeros_like(q) if g is None else g for q, g in zip(param.params, grads)]
                    problem = watch.nonfinite(it, vals, grads)
                    if problem is not None:
                        it -= 1
                        break
                    cur = image.detach()
                    v = vals.detach().cpu()
                    history.append(v.numpy().copy())
                    better = v > best
                    if best_img is None:
                        best_img = cur.clone()
                    elif bool(better.any()):
                        best_img[better.to(cur.device)] = cur[better.to(cur.device)]
                    best = torch.where(better, v, best)
                    problem = watch.zero(it, grads)
                    if problem is not None:
                        break
                    opt.step(grads)
                    if it % max(1, every) == 0 or it == p.max_iter:
                        yield RenderStep(it, p.max_iter, v.tolist(), best.tolist(),
                                         _to_images(spec, to_model_input(cur, spec).cpu()))
                    if self._stop.is_set():
                        break
                with torch.no_grad():
                    final = param().detach()
                    candidates = [final] if best_img is None else [best_img, final]
                    scores = [self._values(cap, c, dtype).cpu() for c in candidates]
        finally:
            model.train(was_training)
        if len(candidates) == 2:
            if self.objective.separable:
                pick = scores[1] >= scores[0]
            else:
                pick = torch.full((n,), bool(scores[1].sum() >= scores[0].sum()))
            chosen = torch.where(pick[:, None, None, None].to(final.device), final, best_img)
            values = torch.where(pick, scores[1], scores[0])
        else:
            chosen, values = final, scores[0]
        x = to_model_input(chosen, spec).float().cpu()
        self.result = RenderResult(x, _to_images(spec, x), values.tolist(), it,
                                   np.array(history, np.float32).reshape(-1, n), self.describe(), problem,
                                   self._stop.is_set())
        yield RenderStep(it, p.max_iter, values.tolist(), torch.maximum(best, values).tolist(), self.result.images)


def render(model: nn.Module, spec: InputSpec, objective: Objective, seeds=1, params: RenderParams | None = None,
           progress=None, every: int = 10, **overrides) -> RenderResult:
    """Run a :class:`Renderer` to the end (``progress(RenderStep)`` on the way); ``overrides`` change
    single fields of ``params``."""
    params = (params or RenderParams()).replace(**overrides) if overrides else (params or RenderParams())
    r = Renderer(model, spec, objective, seeds, params)
    for step in r.run(every):
        if progress is not None:
            progress(step)
    return r.result
