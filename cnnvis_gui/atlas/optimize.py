"""The optimized image of one unit, by preset, cached: what ``cnnvis optimize``, the Atlas dock and pattern mode show.

Presets (:data:`PRESETS`, by name):

* ``"fourier"`` (the default) -- feature visualization as in Olah et al. 2017 with this
  project's measured settings (:mod:`cnnvis_gui.optvis`): Lucid's Fourier image with
  decorrelated colour, random jitter / scale / rotation every step, Adam;
* ``"maco"`` -- the same loop on MACO's phase-only image (Fel et al. 2023);
* ``"pixel"`` -- the same loop on plain pixels;
* ``"yosinski-1"`` .. ``"yosinski-4"`` -- the regularized ascent of Yosinski et al. 2015,
  Table 1 (:mod:`cnnvis_gui.optvis.yosinski`); ``1`` .. ``4`` are accepted for them.

The README's benchmark (``benchmarks/bench_optvis.py``) measured the three parameterizations
on the real MobileNetV2 and made the best the default.

Objectives (``target``): a conv unit's whole channel (``"channel"``: mean over positions; the
default of the feature-visualization presets), its centre (``"center"``: the toolbox's
``push_spatial``, the default of the Yosinski presets) or any ``(y, x)``; a flat layer uses the
unit's value, and a class of the model output its logit plus its log-probability
(:func:`cnnvis_gui.optvis.class_logit`).  The reported ``activation`` is the unit's own value
for the image (after its ReLU, the logit for a class), measured again without transforms.

Results are cached by weights, spec, unit, target, preset and parameters (a stopped run is
not cached).  A run that ended early because the gradient turned NaN or stayed zero keeps
its last good image and says why in :attr:`OptimizeResult.problem`; it is not cached either.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..core import CnnvisError, InputSpec, Visualizer
from ..core.layouts import layout_key
from ..optvis import (LayerCapture, RenderParams, Renderer, channel, class_logit, neuron, per_image,
                      resolve_layer, sample_seed)
from ..optvis.render import RenderStep
from ..optvis.yosinski import TOOLBOX_LR, YOSINSKI_PRESETS, OptimizeParams, YosinskiAscent
from . import cache as _cache

__all__ = ["PRESETS", "DEFAULT_PRESET", "PRESET_WORDS", "OptimizeParams", "RenderParams", "TOOLBOX_LR", "OptStep",
           "OptimizeResult", "ActivationMaximizer", "maximize", "optimize_units", "params_for", "preset_name",
           "unit_activation", "random_input", "layer_layout"]

#: every preset by name; the first is the default
PRESETS = {"fourier": RenderParams(), "maco": RenderParams(param="maco"), "pixel": RenderParams(param="pixel")}
PRESETS.update({f"yosinski-{i}": p for i, p in YOSINSKI_PRESETS.items()})
DEFAULT_PRESET = "fourier"
#: the words the Atlas dock shows (its tooltip says which is the default; the pane must stay narrow)
PRESET_WORDS = {"fourier": "Fourier", "maco": "MACO", "pixel": "pixels",
                **{f"yosinski-{i}": f"Yosinski {i}" for i in YOSINSKI_PRESETS}}

OptStep = RenderStep


def preset_name(preset) -> str:
    """The canonical name of a preset given by name or by Yosinski number (3 -> "yosinski-3")."""
    if isinstance(preset, str) and preset in PRESETS:
        return preset
    text = str(preset).strip().lower()
    if text in PRESETS:
        return text
    if text.isdigit() and f"yosinski-{int(text)}" in PRESETS:
        return f"yosinski-{int(text)}"
    raise CnnvisError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)} (1-4 also name the "
                      f"Yosinski presets).")


def params_for(preset=DEFAULT_PRESET, **overrides):
    """The parameters of ``preset`` (a name, a Yosinski number, or parameters themselves) with single fields changed."""
    if isinstance(preset, (OptimizeParams, RenderParams)):
        p = preset
    else:
        p = PRESETS[preset_name(preset)]
    kw = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(kw) - set(asdict(p)))
    if unknown:
        raise CnnvisError(f"{', '.join(unknown)}: not a setting of this preset (its settings: "
                          f"{', '.join(asdict(p))}).")
    return p.replace(**kw) if kw else p


@dataclass
class OptimizeResult:
    """The synthesized input (``x``: 1 x C x H x W normalized tensor on the CPU) and the unit's activation for it."""

    x: torch.Tensor
    image: np.ndarray
    activation: float
    layer: str
    unit: int
    target: object
    params: object
    iterations: int
    history: list
    from_cache: bool = False
    preset: str = DEFAULT_PRESET
    description: str = ""
    problem: str | None = None


def random_input(spec: InputSpec, n: int = 1, seed: int = 0) -> torch.Tensor:
    """n uniform-random 8-bit images through the spec: N x C x H x W normalized."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n,) + spec.shape, generator=g).float() * spec.scale
    mean = torch.tensor(spec.mean)[:, None, None]
    std = torch.tensor(spec.std)[:, None, None]
    return (raw - mean) / std


def _unit_objective(layer: str, unit: int, target):
    if target == "channel":
        return channel(layer, unit)
    if target == "center":
        return neuron(layer, unit)
    return neuron(layer, unit, target)


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


def unit_activation(model: nn.Module, spec: InputSpec, layer: str, unit: int, x: torch.Tensor,
                    target="center", layout=None, layouts: dict | None = None) -> torch.Tensor:
    """The unit's own value (after its ReLU; a class's logit) for each input of a batch ``x`` -> N values (CPU).

    ``layout``: the layer's layout (default: the model map's, with the user's ``layouts`` overrides).
    """
    from ..core.recorder import model_device_dtype
    name = resolve_layer(model, layer)
    if layout is None:
        layout = layer_layout(model, spec, name, layouts)
    device, dtype = model_device_dtype(model)
    obj = _unit_objective(name, int(unit), target)
    with torch.no_grad(), LayerCapture(model, [name], pre_activation=False) as cap:
        cap.forward(x.to(device=device, dtype=dtype))
        return obj(cap.values, {name: layout} if layout is not None else {}).float().cpu()


class ActivationMaximizer:
    """An image that maximizes one unit, by preset; a generator for the window, cached.

    Parameters
    ----------
    model, spec : the network and its input
    layer, unit : what to maximize (``layer`` "" / "output" is the model output)
    target : "channel", "center" or (y, x) for conv layers (None: "channel" for the feature-visualization
        presets, "center" for the Yosinski ones); ignored for flat layers
    preset : a name of :data:`PRESETS` (default "fourier"), 1-4 for the Yosinski presets, or parameters
    cache_dir, use_cache : like the scan's; the result is cached by weights, spec, unit, preset and parameters
    layouts : the user's layout overrides (:mod:`cnnvis_gui.core.layouts`); the unit is a channel of
        the layer's layout and the target a position on its grid
    **overrides : single settings of the preset (``max_iter``, ``lr``, ``seed``, ...)

    Examples
    --------
    >>> opt = ActivationMaximizer(lm.model, lm.spec, "features.10", 5)           # doctest: +SKIP
    >>> for step in opt.run(every=10):                                           # doctest: +SKIP
    ...     show(step.image)
    >>> opt.result.activation                                                      # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, spec: InputSpec, layer: str, unit: int, target=None,
                 preset=DEFAULT_PRESET, cache_dir=None, use_cache: bool = True, layouts: dict | None = None,
                 **overrides):
        self.model, self.spec = model, spec
        self.layer = resolve_layer(model, layer)
        self.layouts = dict(layouts or {})
        self._layout = False                 # not read yet (one probe forward, only when it runs)
        self.unit = int(unit)
        self.preset = preset_name(preset) if not isinstance(preset, (OptimizeParams, RenderParams)) else \
            ("yosinski" if isinstance(preset, OptimizeParams) else "custom")
        self.params = params_for(preset, **overrides)
        self.yosinski = isinstance(self.params, OptimizeParams)
        if target is None:
            target = "center" if self.yosinski else "channel"
        if not (target in ("center", "channel") or (isinstance(target, (tuple, list)) and len(target) == 2)):
            raise CnnvisError(f"target must be 'center', 'channel' or a (y, x) position, got {target!r}.")
        self.target = tuple(int(v) for v in target) if isinstance(target, (tuple, list)) else target
        self.cache_root = _cache.cache_dir(cache_dir)
        self.use_cache = bool(use_cache)
        self.result: OptimizeResult | None = None
        self._runner = None
        self._stop = threading.Event()
        self._key = None

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = _cache.digest({"kind": "optimize", "weights": _cache.weights_hash(self.model),
                                       "spec": self.spec.to_dict(), "layer": self.layer, "unit": self.unit,
                                       "target": self.target, "preset": self.preset,
                                       "params": {k: (list(v) if isinstance(v, tuple) else v)
                                                  for k, v in asdict(self.params).items()},
                                       **layout_key(self.model, self.layouts)})
        return self._key

    @property
    def cache_file(self):
        return self.cache_root / f"optimize-{self.key}.npz"

    def stop(self) -> None:
        """Stop after the current step (thread-safe); :attr:`result` then holds the best so far (not cached)."""
        self._stop.set()
        if self._runner is not None:
            self._runner.stop()

    def cached(self) -> OptimizeResult | None:
        if not self.use_cache:
            return None
        z = _cache.load_npz(self.cache_file)
        if z is None or "x" not in z:
            return None
        x = torch.from_numpy(z["x"])
        return OptimizeResult(x, self.spec.to_image(x), float(z["activation"]), self.layer, self.unit, self.target,
                              self.params, int(z["iterations"]), [float(v) for v in z["history"]], True,
                              self.preset, str(z["description"]) if "description" in z else "")

    @property
    def seed(self) -> int:
        """The image's own seed: the run's seed, the layer and the unit (the same alone or in a batch)."""
        return sample_seed(self.params.seed, self.layer, self.unit)

    @property
    def objective_text(self) -> str:
        """What is maximized, in words: "features.10 channel 5", "class 281 logit + 4 log p"..."""
        return self._objective().text

    @property
    def layout(self):
        """The layer's layout (None: channels first), read once."""
        if self._layout is False:
            self._layout = layer_layout(self.model, self.spec, self.layer, self.layouts)
        return self._layout

    @property
    def layer_layouts(self) -> dict:
        return {} if self.layout is None else {self.layer: self.layout}

    def _objective(self):
        if self.layer == "" and not self.yosinski:
            return class_logit(self.unit, self.params.class_probability)
        return _unit_objective(self.layer, self.unit, self.target)

    def run(self, every: int = 10) -> Iterator[OptStep]:
        """Optimize, yielding an :class:`OptStep` every ``every`` steps (and at the end)."""
        self._stop.clear()
        hit = self.cached()
        if hit is not None:
            self.result = hit
            yield OptStep(hit.iterations, self.params.max_iter, [hit.activation], [hit.activation], [hit.image])
            return
        if self.yosinski:
            runner = YosinskiAscent(self.model, self.spec, self._objective(), self.params, self.layer_layouts)
        else:
            runner = Renderer(self.model, self.spec, self._objective(), [self.seed], self.params, self.layer_layouts)
        self._runner = runner
        held = None                  # the runner's last step reports its objective: ours reports the unit
        for step in runner.run(every):
            if self._stop.is_set():
                runner.stop()
            if held is not None:
                yield held
            held = step
        self.finish(runner.result, 0)
        r = self.result
        yield OptStep(r.iterations, self.params.max_iter, [r.activation], [r.activation], [r.image])

    def finish(self, res, i: int) -> OptimizeResult:
        """:attr:`result` from image ``i`` of a finished run ``res`` (a RenderResult), measured and cached."""
        x = res.x[i:i + 1]
        act = float(unit_activation(self.model, self.spec, self.layer, self.unit, x, self.target, self.layout,
                                    self.layouts)[0])
        self.result = OptimizeResult(x, res.images[i], act, self.layer, self.unit, self.target, self.params,
                                     res.iterations, [float(v) for v in res.history[:, i]], False, self.preset,
                                     res.description, res.problem)
        if self.use_cache and not res.stopped and res.problem is None:
            _cache.atomic_save_npz(self.cache_file, hint=_cache.cache_hint(self.cache_root), x=x.numpy(),
                                   activation=np.array(act),
                                   iterations=np.array(res.iterations),
                                   history=np.array(self.result.history, np.float32),
                                   description=np.array(res.description))
        return self.result


def optimize_units(model: nn.Module, spec: InputSpec, layer: str, units, preset=DEFAULT_PRESET, target=None,
                   batch: int = 8, cache_dir=None, use_cache: bool = True, progress=None, layouts: dict | None = None,
                   **overrides) -> list:
    """Optimized images of several units of one layer, ``batch`` units in one optimization at a time.

    Each image has its own seed and its own transforms (:mod:`cnnvis_gui.optvis.param`), so a unit's
    image is the one :class:`ActivationMaximizer` gives it alone, and it is cached under the same key:
    the window's pattern mode and Atlas dock show it.  Cached units are not optimized again.  The
    Yosinski presets optimize one unit at a time.  ``progress(done, total)`` after each batch.
    Returns one :class:`OptimizeResult` per unit, in order.
    """
    makers = [ActivationMaximizer(model, spec, layer, u, target, preset, cache_dir, use_cache, layouts, **overrides)
              for u in units]
    out = [m.cached() for m in makers]
    todo = [i for i, r in enumerate(out) if r is None]
    batch = 1 if makers and makers[0].yosinski else max(1, int(batch))
    done = len(makers) - len(todo)
    if progress is not None:
        progress(done, len(makers))
    for k in range(0, len(todo), batch):
        chunk = [makers[i] for i in todo[k:k + batch]]
        if chunk[0].yosinski:
            for _ in chunk[0].run():
                pass
            results = [chunk[0].result]
        else:
            r = Renderer(model, spec, per_image([m._objective() for m in chunk]), [m.seed for m in chunk],
                         chunk[0].params, chunk[0].layer_layouts)
            for _ in r.run(every=10 ** 9):
                pass
            results = [m.finish(r.result, j) for j, m in enumerate(chunk)]
        for i, res in zip(todo[k:k + batch], results):
            out[i] = res
        done += len(chunk)
        if progress is not None:
            progress(done, len(makers))
    return out


def maximize(model: nn.Module, spec: InputSpec, layer: str, unit: int, target=None, preset=DEFAULT_PRESET,
             cache_dir=None, use_cache: bool = True, progress=None, layouts: dict | None = None,
             **overrides) -> OptimizeResult:
    """Run an :class:`ActivationMaximizer` to the end; ``progress(OptStep)`` is called on the way."""
    opt = ActivationMaximizer(model, spec, layer, unit, target, preset, cache_dir, use_cache, layouts=layouts,
                              **overrides)
    for step in opt.run():
        if progress is not None:
            progress(step)
    return opt.result
