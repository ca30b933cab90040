"""Several images in one optimization for any objective, with Olah et al. 2017's diversity, cached.

What ``cnnvis optimize --diversity N`` and ``--objective SPEC`` run: N images of one objective (a
unit, or a sum / difference / direction written as text, :mod:`cnnvis_gui.optvis.spec_text`) in one
batched optimization, each from its own seed; with a diversity weight ``w > 0`` the objective
becomes ``objective - w * |objective| * diversity(layer)``
(:func:`~cnnvis_gui.optvis.objectives.with_diversity`: scaled by the objective's size), which
pushes the images' Gram matrices at ``layer`` apart, so that the N images show N different ways the unit responds.

:func:`gram_similarity` is the measure reported (and tested): the mean over pairs of images of the
cosine of their Gram matrices at the layer, 1 for images with the same channel statistics.

Results are cached by weights, spec, objective text, parameters, seeds and diversity settings;
a stopped run or one that ended on a NaN / zero gradient is not cached.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..core import CnnvisError, InputSpec, model_map
from ..optvis import (LayerCapture, Objective, RenderParams, Renderer, gram_matrices, sample_seed,
                      with_diversity)
from ..optvis.yosinski import OptimizeParams
from . import cache as _cache

__all__ = ["DIVERSITY_WEIGHT", "MAX_DIVERSE", "ObjectiveResult", "objective_values", "gram_similarity",
           "diversity_layer", "optimize_objective", "written_objective", "objective_layouts", "written_run"]

#: the default weight of the diversity penalty (measured on the real MobileNetV2: see the README's optvis section)
DIVERSITY_WEIGHT = 1.0
#: the most images of one run (--diversity N): each is a full image in every step's batch
MAX_DIVERSE = 64


@dataclass
class ObjectiveResult:
    """N images: ``x`` (N x C x H x W normalized, CPU), ``images`` (uint8 RGB), ``values`` (the objective
    without the diversity term, per image, without transforms)."""

    x: torch.Tensor
    images: list
    values: list
    similarity: float | None        # gram_similarity at the diversity layer (None: one image)
    diversity_layer: str | None
    iterations: int
    description: str
    problem: str | None = None
    stopped: bool = False
    from_cache: bool = False


def objective_values(model: nn.Module, spec: InputSpec, objective: Objective, x: torch.Tensor,
                     layouts: dict | None = None) -> np.ndarray:
    """The objective for each input of ``x`` (N values), read as the optimization reads it (before ReLUs)."""
    from ..core.recorder import model_device_dtype
    device, dtype = model_device_dtype(model)
    was = model.training
    try:
        model.eval()
        with torch.no_grad(), LayerCapture(model, objective.layers) as cap:
            cap.forward(x.to(device=device, dtype=dtype))
            v = objective(cap.values, layouts or {})
    finally:
        model.train(was)
    v = v if isinstance(v, torch.Tensor) else torch.full((x.shape[0],), float(v))
    return v.float().cpu().numpy()


def gram_similarity(model: nn.Module, x: torch.Tensor, layer: str, layout=None) -> float:
    """The mean over pairs of images of ``<G_i, G_j>`` (unit-norm Gram matrices at ``layer``): 1 = same statistics."""
    from ..core.recorder import model_device_dtype
    if x.shape[0] < 2:
        return 1.0
    device, dtype = model_device_dtype(model)
    was = model.training
    try:
        model.eval()
        with torch.no_grad(), LayerCapture(model, [layer]) as cap:
            cap.forward(x.to(device=device, dtype=dtype))
            g = gram_matrices(cap.values[layer].float(), layer, layout).flatten(1)
    finally:
        model.train(was)
    s = g @ g.T
    n = g.shape[0]
    return float((s.sum() - s.diagonal().sum()) / (n * (n - 1)))


def diversity_layer(model: nn.Module, spec: InputSpec, objective: Objective, layer: str | None = None,
                    layouts: dict | None = None) -> str:
    """Where the Gram matrices are compared: ``layer``, else the objective's last layer with a spatial map,
    else (a class or a flat layer) the last module of the model that makes one (MobileNetV2: ``features.18.2``,
    its last ReLU6, read at its input as the optimization reads a ReLU)."""
    from ..optvis import resolve_layer
    mm = model_map(model, spec, layouts)
    if layer is not None:
        name = resolve_layer(model, layer)
        info = mm[name] if name in mm else None
        if info is None or not info.map_shape:
            raise CnnvisError(f"--diversity-layer {layer}: the layer has no map of positions "
                              f"({'its output is flat' if info is not None else 'it did not run'}); diversity "
                              f"compares the images' channel statistics over positions: choose a conv layer.")
        return name
    spatial = [i for i in mm if i.map_shape and int(np.prod(i.map_shape)) > 1 and i.units and i.calls]
    mine = [i for i in spatial if i.name in objective.layers]
    pool = mine or [i for i in spatial if i.name != ""]
    if not pool:
        raise CnnvisError("diversity needs a layer with a map of positions, and this model has none.")
    return max(pool, key=lambda i: (i.order, i.depth)).name      # the last to start: a leaf, not its container


def optimize_objective(model: nn.Module, spec: InputSpec, objective: Objective, n: int, params: RenderParams,
                       weight: float = 0.0, div_layer: str | None = None, layouts: dict | None = None,
                       cache_dir=None, use_cache: bool = True, progress=None, key=(), every: int = 10,
                       stop=None, only_cached: bool = False):
    """``n`` images of ``objective`` in one optimization, minus ``weight`` x diversity at ``div_layer``.

    ``key``: what the images are of (seeds: ``sample_seed(params.seed, *key, i)``); ``progress(RenderStep)``;
    ``stop()``: asked after every reported step, True ends the run keeping the best images so far
    (not cached).  Returns an :class:`ObjectiveResult` (None with ``only_cached`` and nothing cached).
    """
    if isinstance(params, OptimizeParams):
        raise CnnvisError("several images or a written objective need a feature-visualization preset (fourier, "
                          "maco or pixel); the Yosinski presets optimize one image of one unit.")
    n = int(n)
    if not 1 <= n <= MAX_DIVERSE:
        raise CnnvisError(f"--diversity: give 1 to {MAX_DIVERSE} images, got {n}.")
    if not (np.isfinite(weight) and weight >= 0):
        raise CnnvisError(f"--diversity-weight must be a number >= 0, got {weight}.")
    layouts = dict(layouts or {})
    full = with_diversity(objective, div_layer, weight) if (weight and n > 1) else objective
    seeds = [sample_seed(params.seed, *key, i) for i in range(n)]
    root = _cache.cache_dir(cache_dir)
    digest = _cache.digest({"kind": "optimize-objective", "weights": _cache.weights_hash(model),
                            "spec": spec.to_dict(), "objective": full.text, "seeds": seeds,
                            "measured at": div_layer,
                            "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(params).items()}})
    path = root / f"optimize-objective-{digest}.npz"
    z = _cache.load_npz(path) if use_cache else None
    if z is not None and "x" in z:
        x = torch.from_numpy(z["x"])
        sim = float(z["similarity"]) if "similarity" in z and n > 1 else None
        return ObjectiveResult(x, [spec.to_image(x[i]) for i in range(n)], [float(v) for v in z["values"]], sim,
                               div_layer if n > 1 else None, int(z["iterations"]), str(z["description"]),
                               from_cache=True)
    if only_cached:
        return None
    r = Renderer(model, spec, full, seeds, params, layouts)
    for step in r.run(every):
        if progress is not None:
            progress(step)
        if stop is not None and stop():
            r.stop()
    res = r.result
    values = objective_values(model, spec, objective, res.x, r.layouts)
    sim = gram_similarity(model, res.x, div_layer, r.layouts.get(div_layer)) if n > 1 and div_layer is not None \
        else None
    out = ObjectiveResult(res.x, res.images, values.tolist(), sim, div_layer if n > 1 else None, res.iterations,
                          res.description, res.problem, res.stopped)
    if use_cache and not res.stopped and res.problem is None:
        _cache.atomic_save_npz(path, hint=_cache.cache_hint(root), x=res.x.numpy(), values=values,
                               similarity=np.array(np.nan if sim is None else sim), iterations=np.array(res.iterations),
                               description=np.array(res.description))
    return out


def written_objective(text: str, model: nn.Module, params) -> tuple:
    """``(objective, key)`` for an objective written as text (``cnnvis optimize --objective TEXT``, the window's
    *Objective* field): the parsed :class:`~cnnvis_gui.optvis.Objective` (one :class:`CnnvisError` line for a
    term that cannot be read, an unknown layer, a bad direction) and the ``key`` its images' seeds come from.

    The key is the text without the spaces around it, so the command line and the window give the same
    images for the same text, preset, steps and seed (and share the cache).  Units and positions out of
    range are refused when the optimization starts (its first forward), also as one line.
    """
    from ..optvis.spec_text import parse_objective
    text = str(text).strip()
    return parse_objective(text, model, getattr(params, "class_probability", 4.0)), ("objective", text)


def objective_layouts(model: nn.Module, spec: InputSpec, objective: Objective, div_layer: str | None = None,
                      layouts: dict | None = None, known: dict | None = None) -> dict:
    """Every layer the objective (and the diversity term) reads, with its layout (channels-last / token maps, the
    user's ``layouts`` overrides): ``known`` plus the layers it lacks, for the optimization and the values alike."""
    from .optimize import layer_layout
    lay = dict(known or {})
    for name in dict.fromkeys(objective.layers + ((div_layer,) if div_layer is not None else ())):
        if name and name not in lay:
            found = layer_layout(model, spec, name, layouts)
            if found is not None:
                lay[name] = found
    return lay


def written_run(model: nn.Module, spec: InputSpec, text: str, params, n: int = 1, weight: float = DIVERSITY_WEIGHT,
                layouts: dict | None = None, cache_dir=None, use_cache: bool = True, progress=None, stop=None,
                every: int = 10):
    """``n`` images of the objective ``text`` as ``cnnvis optimize --objective TEXT [--diversity n]`` makes them
    (the same seeds, layouts, diversity layer and cache): ``(result, objective, layouts)``."""
    objective, key = written_objective(text, model, params)
    div_layer = diversity_layer(model, spec, objective, None, layouts) if n > 1 else None
    lay = objective_layouts(model, spec, objective, div_layer, layouts)
    res = optimize_objective(model, spec, objective, n, params, weight, div_layer, lay, cache_dir, use_cache,
                             progress, key, every, stop)
    return res, objective, lay
