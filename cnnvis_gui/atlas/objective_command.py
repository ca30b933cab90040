"""``cnnvis optimize --diversity N`` / ``--objective SPEC``: several images, or any objective, from the command line.

    cnnvis optimize [model options] --layer L --unit U --diversity 4 --out FILE.png
    cnnvis optimize [model options] --objective 'features.10:5 - features.10:7' [--diversity 4] --out FILE.png

Runs :func:`~cnnvis_gui.atlas.objective_run.optimize_objective`: N images in one optimization
(a montage at ``--out``), the diversity penalty of Olah et al. 2017 when N > 1.  It prints the
objective per image next to a random input's, the Gram similarity of the images at the diversity
layer, and what was used.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from ..core import CnnvisError
from ..core.bounds import check_output_size
from ..core.display import enlarge
from ..core.progress import stderr_progress
from .arguments import ranged, write_png

__all__ = ["add_arguments", "cmd_optimize_objective", "wants_objective_run"]


def add_arguments(g, which) -> None:
    """The options on ``cnnvis optimize``'s group ``g`` (``which``: its --unit / --units group)."""
    from .objective_run import DIVERSITY_WEIGHT, MAX_DIVERSE
    which.add_argument("--objective", metavar="SPEC",
                       help="what to maximize, written out: units joined by + and -, with weights, e.g. "
                            "'features.10:5 - 0.5*features.10:7', 'output:281 - output:282' (class 281 against "
                            "282), 'features.10:5@3,4' (one position), 'features.10:dir=v.npy' (a direction in "
                            "the channel space); replaces --layer/--unit")
    g.add_argument("--diversity", type=ranged(int, 0, True, "--diversity", MAX_DIVERSE), metavar="N",
                   help=f"N images of the unit in one optimization (1..{MAX_DIVERSE}), pushed apart by Olah et al. "
                        f"2017's Gram-matrix penalty; --out is their montage")
    g.add_argument("--diversity-weight", type=ranged(float, 0, False, "--diversity-weight"), default=None,
                   metavar="W", help=f"the penalty's weight (default {DIVERSITY_WEIGHT:g}; 0: N images from N seeds "
                                     f"alone)")
    g.add_argument("--diversity-layer", metavar="L",
                   help="the layer whose Gram matrices are compared (default: the unit's layer; for a class, the "
                        "last layer with a map)")


def wants_objective_run(args) -> bool:
    """Whether ``args`` asks for this command rather than one unit's image or a montage of units."""
    if getattr(args, "objective", None) is None and getattr(args, "diversity", None) is None:
        if getattr(args, "diversity_weight", None) is not None or getattr(args, "diversity_layer", None):
            raise CnnvisError("--diversity-weight / --diversity-layer: give --diversity N (the number of images).")
        return False
    if args.objective is not None and args.layer is not None:
        raise CnnvisError("--objective names its own layers ('features.10:5 - features.10:7'): drop --layer.")
    if args.units is not None:
        raise CnnvisError("--diversity makes N images of one unit or objective; with --units give --unit or "
                          "--objective instead.")
    return True


def cmd_optimize_objective(args, lm, target, out: Path, preset: str) -> int:
    from .montage import grid
    from .objective_run import (DIVERSITY_WEIGHT, diversity_layer, objective_layouts, objective_values,
                                optimize_objective, written_objective)
    from .optimize import ActivationMaximizer, params_for, random_input, unit_activation

    model, spec = lm.model, lm.spec
    layouts = getattr(lm, "layouts", None)
    params = params_for(preset, max_iter=args.iterations, lr=args.lr, seed=args.seed)
    n = int(args.diversity or 1)
    if args.objective is not None:
        if target is not None:
            raise CnnvisError("--target: with --objective write the position into the term "
                              "('features.10:5@center', 'features.10:5@3,4').")
        objective, key = written_objective(args.objective, model, params)      # the window's Objective field too
        what, lay = f"objective {args.objective!r}", {}
    else:
        if args.layer is None or args.unit is None:
            raise CnnvisError("--diversity: give --layer and --unit, or --objective.")
        opt = ActivationMaximizer(model, spec, args.layer, args.unit, target, params, use_cache=False,
                                  layouts=layouts)
        if opt.yosinski:
            raise CnnvisError(f"--diversity needs a feature-visualization preset (fourier, maco or pixel); the "
                              f"Yosinski preset {preset} optimizes one image of one unit.")
        objective, key, lay = opt._objective(), (opt.layer, opt.unit), dict(opt.layer_layouts)
        label = ""
        if opt.layer == "" and getattr(lm, "labels", None) and opt.unit < len(lm.labels):
            label = f" ({lm.labels[opt.unit]})"
        what = f"layer {opt.layer or 'output'} unit {opt.unit}{label}"
    weight = DIVERSITY_WEIGHT if args.diversity_weight is None else float(args.diversity_weight)
    div_layer = diversity_layer(model, spec, objective, args.diversity_layer, layouts) if n > 1 else None
    # every layer read through its layout (channels-last / token maps, the user's --layout overrides), for the
    # optimization and for the random input's value alike
    lay = objective_layouts(model, spec, objective, div_layer, layouts, lay)
    side = max(spec.height, spec.width)
    cols = int(math.ceil(math.sqrt(n)))
    check_output_size(side * int(math.ceil(n / cols)), side * cols, args.zoom, "--zoom")
    t0 = time.perf_counter()
    with stderr_progress(f"cnnvis optimize: {what}, {n} image{'s' * (n != 1)}", params.max_iter, "step",
                         quiet=args.quiet) as progress:
        res = optimize_objective(model, spec, objective, n, params, weight, div_layer, lay, args.cache_dir,
                                 not args.no_cache, lambda st: progress.update(st.iteration,
                                                                               note=f"objective {np.mean(st.values):.3g}"),
                                 key)
    img = res.images[0] if n == 1 else grid(res.images, cols, tile=side * args.zoom)
    write_png(out, enlarge(img, args.zoom) if n == 1 else img)
    rnd_x = random_input(spec, 1, seed=args.seed + 1)
    if args.objective is not None:
        word, vals = "objective", np.array(res.values)
        rnd = float(objective_values(model, spec, objective, rnd_x, lay)[0])
    else:                               # the unit's own value (after its ReLU; a class's logit), as for one image
        word = "activation"
        vals, rnd = (unit_activation(model, spec, opt.layer, opt.unit, x, opt.target, opt.layout, layouts).numpy()
                     for x in (res.x, rnd_x))
        rnd = float(rnd[0])
    span = f"{vals[0]:.4g}" if n == 1 else f"{vals.min():.4g} to {vals.max():.4g}"
    print(f"{what}: {n} image{'s' * (n != 1)}, {word} {span} (random input {rnd:.4g}; preset {preset}, "
          f"{res.iterations} iterations{', from cache' if res.from_cache else ''}, "
          f"{time.perf_counter() - t0:.1f} s) -> {out}")
    if n > 1:
        print(f"  diversity: weight {weight:g} at {res.diversity_layer or 'output'}; Gram similarity of the images "
              f"{res.similarity:.3f} (mean over pairs; 1 = the same channel statistics)")
    print(f"  image: {res.description}; objective: {objective.text}")
    if res.problem:
        print(f"cnnvis optimize: {res.problem}; {out} holds the last good image{'s' * (n != 1)}.", file=sys.stderr)
        return 1
    return 0
