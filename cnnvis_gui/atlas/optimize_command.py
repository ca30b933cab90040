"""``cnnvis optimize``: a unit's optimized image (or a montage of units, or an objective's images) from the
command line.

    cnnvis optimize [model options] --layer L --unit U [--preset N] --out FILE.png
    cnnvis optimize [model options] --layer L --units 0-15 [--batch 8] --out MONTAGE.png
    cnnvis optimize [model options] --objective SPEC [--diversity N] --out FILE.png

Registered by :func:`cnnvis_gui.atlas.commands.register` beside ``cnnvis atlas``.
"""
from __future__ import annotations

import math
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from ..core import CnnvisError
from ..core.bounds import check_output_size
from ..core.display import enlarge
from ..core.progress import stderr_progress
from . import objective_command
from .arguments import unit_list, write_png

__all__ = ["cmd_optimize", "target_option"]


def target_option(text):
    if text is None or text in ("center", "channel"):
        return text
    m = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", str(text))
    if not m:
        raise CnnvisError(f"--target: use 'center', 'channel' or Y,X (e.g. 3,4); got {text!r}.")
    return int(m.group(1)), int(m.group(2))


def cmd_optimize(args, model_from_args) -> int:
    from .optimize import ActivationMaximizer, preset_name, random_input, unit_activation

    from ..core import model_map

    target = target_option(args.target)
    preset_name(args.preset)        # an unknown preset is refused before the model loads
    several = objective_command.wants_objective_run(args)
    if args.layer is None and args.objective is None:
        raise CnnvisError("--layer is required with --unit / --units (or write the units with --objective).")
    if args.zoom < 1:
        raise CnnvisError("--zoom must be at least 1.")
    out = Path(args.out).expanduser()
    if not cv2.haveImageWriter(str(out)):   # checked now, not after the whole optimization
        raise CnnvisError(f"--out: cannot write an image called '{out}': "
                          f"{'give it an extension' if not out.suffix else f'unknown image format {out.suffix!r}'}"
                          f" such as .png or .jpg.")
    if out.is_dir():
        raise CnnvisError(f"--out: '{out}' is a folder; give an image file name such as {out / 'unit.png'}.")
    size = re.fullmatch(r"\s*(\d+)\s*(?:[xX*,]\s*(\d+))?\s*", getattr(args, "input_size", None) or "")
    if size:                          # --input-size x --zoom, before a model is built at that size
        check_output_size(int(size.group(1)), int(size.group(2) or size.group(1)), args.zoom, "--zoom")
    lm = model_from_args(args)
    model, spec = lm.model, lm.spec
    check_output_size(spec.height, spec.width, args.zoom, "--zoom")     # before the optimization, not after
    if several:
        return objective_command.cmd_optimize_objective(args, lm, target, out, preset_name(args.preset))
    if args.units is not None:
        return _optimize_units(args, lm, target, out)
    opt = ActivationMaximizer(model, spec, args.layer, args.unit, target, preset_name(args.preset),
                              cache_dir=args.cache_dir, use_cache=not args.no_cache, max_iter=args.iterations,
                              lr=args.lr, seed=args.seed, layouts=getattr(lm, "layouts", None))
    if isinstance(target, tuple):
        info = model_map(model, spec, getattr(lm, "layouts", None))[opt.layer]
        grid = info.map_shape            # the unit's map through the layer's layout (channels last, tokens)
        if not grid:
            raise CnnvisError(f"--target {args.target}: layer {info.display_name!r} ({info.type}) is flat (shape "
                              f"{'x'.join(map(str, info.shape)) if info.shape else '?'}), it has no positions; "
                              f"drop --target (a flat layer's unit is a single number).")
        if len(grid) != len(target) or any(not 0 <= t < n for t, n in zip(target, grid)):
            raise CnnvisError(f"--target {args.target} is outside layer {info.display_name!r}'s "
                              f"{'x'.join(map(str, grid))} map.")
    t0 = time.perf_counter()
    with stderr_progress(f"cnnvis optimize: {args.layer} unit {args.unit}", opt.params.max_iter, "step",
                         quiet=args.quiet) as progress:
        for step in opt.run(every=10):
            progress.update(step.iteration, note=f"activation {step.activation:.3g}")
    res = opt.result
    img = res.image
    img = enlarge(img, args.zoom)
    write_png(out, img)
    rnd = float(unit_activation(model, spec, opt.layer, opt.unit, random_input(spec, 1, seed=args.seed + 1),
                                opt.target, layouts=getattr(lm, "layouts", None))[0])
    label = ""
    if opt.layer == "" and getattr(lm, "labels", None) and opt.unit < len(lm.labels):
        label = f" ({lm.labels[opt.unit]})"
    print(f"layer {opt.layer or 'output'} unit {opt.unit}{label}: activation {res.activation:.4g} for the optimized "
          f"image, {rnd:.4g} for a random input (preset {opt.preset}, {res.iterations} iterations"
          f"{', from cache' if res.from_cache else ''}, {time.perf_counter() - t0:.1f} s) -> {out}")
    if res.description:
        print(f"  image: {res.description}; objective: {opt.objective_text}")
    if res.problem:
        print(f"cnnvis optimize: {res.problem}; {out} holds the last good image.", file=sys.stderr)
        return 1
    return 0


def _optimize_units(args, lm, target, out) -> int:
    """``cnnvis optimize --units``: every chosen unit's image, --batch per optimization, as one montage."""
    from .montage import grid
    from .optimize import optimize_units, preset_name

    from ..core import model_map
    from ..optvis import resolve_layer

    model, spec = lm.model, lm.spec
    layer = resolve_layer(model, args.layer)
    layouts = getattr(lm, "layouts", None)
    info = model_map(model, spec, layouts)[layer]
    if not info.units:
        raise CnnvisError(f"layer {info.display_name!r} has no units to optimize ({info.reason or 'no tensor'}).")
    units = unit_list(args.units, info.units)
    side = max(spec.height, spec.width)
    cols = int(math.ceil(math.sqrt(len(units))))
    check_output_size(side * int(math.ceil(len(units) / cols)), side * cols, args.zoom, "--zoom")   # the montage
    t0 = time.perf_counter()
    with stderr_progress(f"cnnvis optimize: {args.layer} units {args.units}", len(units), "unit",
                         quiet=args.quiet) as progress:
        results = optimize_units(model, spec, layer, units, preset_name(args.preset), target, args.batch,
                                 args.cache_dir, not args.no_cache, lambda done, n: progress.update(done),
                                 layouts, max_iter=args.iterations, lr=args.lr, seed=args.seed)
    write_png(out, grid([r.image for r in results], cols, tile=side * args.zoom))
    cached = sum(r.from_cache for r in results)
    acts = np.array([r.activation for r in results])
    print(f"layer {layer or 'output'} units {args.units}: {len(results)} images ({cached} from cache), activation "
          f"{acts.min():.4g} to {acts.max():.4g} (median {np.median(acts):.4g}; preset {preset_name(args.preset)}, "
          f"{time.perf_counter() - t0:.1f} s), montage in unit order -> {out}")
    described = [r.description for r in results if r.description]
    if described:
        print(f"  image: {described[0]}")
    problems = [(u, r.problem) for u, r in zip(units, results) if r.problem]
    for u, problem in problems:
        print(f"cnnvis optimize: unit {u}: {problem}; the montage holds its last good image.", file=sys.stderr)
    return 1 if problems else 0
