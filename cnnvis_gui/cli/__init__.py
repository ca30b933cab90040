"""The ``cnnvis`` command line: inspect a model and export activations / saliency headlessly.

    cnnvis info   [model options] [--json]
    cnnvis export [model options] --input IMAGE|FOLDER|VIDEO --layer L [--units ...|--top N]
                  --method guided,gradcam --out DIR [--raw] [--smoothgrad N --noise S --steps K]

Qt-free: imports the core, ``cnnvis_gui.models`` and ``cnnvis_gui.sources`` only, so it
runs on a server with no display.  Every image costs **one** recorded forward
(:meth:`cnnvis_gui.core.Visualizer.forward`); each (unit, method) is then one backward on
that frame.

Other packages add sub-commands through :func:`cnnvis_gui.options.add_model_arguments` /
:func:`cnnvis_gui.options.model_from_args` (the model options both front ends share): ``cnnvis_gui.atlas.commands.register(subparsers,
add_model_arguments, model_from_args)`` is called when that module exists.  A sub-command
parser sets ``set_defaults(func=handler)`` where ``handler(args) -> int`` is the exit code;
any exception it raises becomes one line ``cnnvis: error: <message>`` (:mod:`.boundary`):
exit code 2 for a :class:`~cnnvis_gui.core.CnnvisError`, 1 for
:class:`~cnnvis_gui.core.ModelForwardError` (the model's own forward raised), a
:class:`~cnnvis_gui.core.files.WriteError` (disk full...) and any error nobody foresaw.

``cnnvis export`` skips an image on which the model's forward raises (a failing batch is
retried image by image), names it in a warning and in the summary, and exits with 1 when
any image was skipped that way.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

from ..core.attribution import DEFAULT_NOISE, DEFAULT_STEPS
from ..core.display import MAX_ZOOM
from ..core.saliency_display import DEFAULT_PERCENTILE, DEFAULT_CLIP, DEFAULT_SIGN, FILTERS, CLIPS, SIGNS
from ..options import UsageError, add_model_arguments, apply_thread_option, model_from_args
from .boundary import guarded
from .codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, PROG
from .export import DEFAULT_TOP, EXPORT_METHODS, cmd_export, parse_methods, parse_units, safe_name

__all__ = ["main", "build_parser", "parse_units", "parse_methods", "safe_name", "EXPORT_METHODS", "EXIT_OK",
           "EXIT_FAILURE", "EXIT_USAGE"]



# ============================================================================ info
def percentile_arg(text: str) -> float:
    """``--percentile``: a number in (0, 100], else argparse's one-line usage error."""
    try:
        p = float(text)
    except ValueError:
        p = float("nan")
    if not 0.0 < p <= 100.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 100], got {text!r}: {DEFAULT_PERCENTILE:g} clips "
                                         f"the brightest 2 %, 100 is the maximum")
    return p


def _layer_dict(l) -> dict:
    return {"name": l.name, "display_name": l.display_name, "type": l.type,
            "shape": list(l.shape) if l.shape is not None else None, "units": l.units, "calls": l.calls,
            "visualizable": l.visualizable, "reason": l.reason, "is_conv": l.is_conv, "order": l.order,
            "depth": l.depth, "layout": l.layout.name if l.layout is not None else None,
            "map_shape": list(l.map_shape) if l.map_shape is not None else None,
            "prefix_tokens": l.layout.prefix if l.layout is not None else None,
            "layout_source": l.layout.source if l.layout is not None else None}


def _thread_policy(args):
    """The torch thread policy of this run (set by main(); chosen here when a handler is called directly)."""
    policy = getattr(args, "thread_policy", None)
    if policy is None:
        from cnnvis_gui.core.threads import current_policy
        policy = current_policy()
    return policy


def _malloc(args) -> str:
    """How malloc was set for this run (set by main(); applied here when a handler is called directly)."""
    from cnnvis_gui.core.allocator import reuse_freed_memory
    return getattr(args, "malloc", None) or reuse_freed_memory()


def cmd_info(args) -> int:
    """``cnnvis info``: print the model's module map and the input spec in use."""
    from cnnvis_gui.core import Visualizer
    from cnnvis_gui.core.stops import first_layer, layer_stops
    from cnnvis_gui.core.threads import openmp_waiting

    lm = model_from_args(args)
    mm = Visualizer(lm.model, lm.spec, layouts=getattr(lm, "layouts", None)).model_map()
    if args.json:
        doc = {
            "name": lm.name, "source": lm.source, "arch": lm.arch, "device": str(lm.device),
            "spec": lm.spec.to_dict(), "spec_text": lm.spec.describe(),
            "output_shape": list(lm.output_shape) if lm.output_shape is not None else None,
            "labels": lm.labels, "notes": list(lm.notes),
            "default_layer": mm.default_layer, "first_view": first_layer(mm), "stops": layer_stops(mm),
            "relu_calls": mm.relu_calls,
            "functional_relu_calls": mm.functional_relu_calls, "other_activations": mm.other_activations,
            "generalized_activations": mm.generalized_activations, "deconvnet_notice": mm.deconvnet_notice,
            "mixing_operations": mm.mixing_operations,
            "layers": [_layer_dict(l) for l in mm],
            "threads": _thread_policy(args).threads, "threads_reason": _thread_policy(args).reason,
            "openmp_waiting": openmp_waiting(),
            "malloc": _malloc(args),
        }
        # ASCII only: every control character from a file is a \uXXXX escape (DEL too, which json leaves
        # raw), so the output is valid JSON and the terminal filter has nothing left to change in it
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=True).replace("\x7f", "\\u007f") + "\n")
        return EXIT_OK
    out = sys.stdout
    out.write(f"model:   {lm.name}  ({type(lm.model).__name__})\n")
    out.write(f"source:  {lm.source}\n")
    out.write(f"device:  {lm.device}\n")
    out.write(f"threads: {_thread_policy(args).describe()}; {openmp_waiting()}\n")
    out.write(f"memory:  {_malloc(args)}\n")
    out.write(f"input:   {lm.spec.describe()}\n")
    if lm.output_shape is not None:
        out.write(f"output:  {'x'.join(map(str, lm.output_shape))}\n")
    if lm.labels:
        shown = ", ".join(lm.labels[:10]) + (" ..." if len(lm.labels) > 10 else "")
        out.write(f"labels:  {len(lm.labels)} ({shown})\n")
    act = f"{mm.relu_calls} ReLU call(s), {mm.functional_relu_calls} functional"
    if mm.generalized_activations:
        act += "; generalized-rule activations: " + ", ".join(
            f"{k} x{n}" for k, n in sorted(mm.generalized_activations.items()))
    if mm.other_activations:
        act += "; plain-gradient activations: " + ", ".join(f"{k} x{n}" for k, n in sorted(mm.other_activations.items()))
    if mm.mixing_operations:
        act += "; plain gradient through " + ", ".join(f"{k} x{n}" for k, n in sorted(mm.mixing_operations.items()))
    out.write(f"relus:   {act}\n")
    out.write(f"first view: {first_layer(mm) or 'output'} (the layer the window opens on; last convolution: "
              f"{mm.default_layer or 'output'}; {len(layer_stops(mm))} layers for o / u)\n")
    for n in lm.notes + ([mm.deconvnet_notice] if mm.deconvnet_notice else []):
        out.write(f"note:    {n}\n")
    out.write("\n" + mm.describe() + "\n")
    return EXIT_OK



# ============================================================================ parser and main
class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() prints one message."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Inspect PyTorch CNNs and export activations and saliency maps "
                                       "without a display (the headless side of cnnvis-gui).")
    p.add_argument("--traceback", action="store_true", help="show the full traceback of an error (debugging)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    pi = sub.add_parser("info", help="print a model's layers (type, output shape, layout, units, calls) and input spec",
                        description="Print the module map of a model: every module's name, type, output shape, "
                                    "units and calls per forward (non-visualizable ones with the reason), the "
                                    "input spec in use and the loader's notes.")
    add_model_arguments(pi)
    pi.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    pi.set_defaults(func=cmd_info)

    pe = sub.add_parser(
        "export", help="write activation mosaics and saliency PNGs (and raw arrays) for images, folders, videos",
        description="For every image: one forward, then one backward per (unit, method). Writes "
                    "DIR/<image>/input.png, DIR/<image>/<layer>_mosaic.png, DIR/<image>/<layer>_u<unit:04d>_<method>.png "
                    "and with --raw DIR/<image>/raw.npz. Video frames are named <video>_f<frame:06d>.")
    add_model_arguments(pe)
    io = pe.add_argument_group("what to export")
    io.add_argument("--input", "-i", required=True, metavar="IMAGE|FOLDER|VIDEO",
                    help="an image file, a folder of images (unreadable files are skipped) or a video file")
    io.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created if needed)")
    io.add_argument("--layer", "-l", required=True, metavar="L",
                    help="layer name from 'cnnvis info' (dotted module name; 'output' = the model output)")
    units = io.add_mutually_exclusive_group()
    units.add_argument("--units", "-u", metavar="0,5,7|all",
                       help="units (channels) to export: numbers and ranges (0,5,10-15) or 'all'")
    units.add_argument("--top", type=int, metavar="N",
                       help=f"the N most active units of the layer, per image (default when --units is not given: "
                            f"--top {DEFAULT_TOP})")
    io.add_argument("--method", action="append", metavar="M[,M...]",
                    help=f"saliency method(s), comma-separated or repeated: {', '.join(EXPORT_METHODS)} or 'all' "
                         f"(default guided). rollout and legrad read a ViT's attention layers (legrad: a class of "
                         f"the output); 'all' leaves them out where they cannot run")
    io.add_argument("--smoothgrad", type=int, default=0, metavar="N",
                    help="average the saliency methods over N noisy copies of each image (SmoothGrad; default 0: off)")
    io.add_argument("--noise", type=float, default=DEFAULT_NOISE, metavar="S",
                    help=f"SmoothGrad noise: standard deviation as a fraction of the image's value range "
                         f"(default {DEFAULT_NOISE})")
    io.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="K",
                    help=f"integrated-gradients points from the all-zero baseline (Gauss-Legendre; "
                         f"default {DEFAULT_STEPS})")
    io.add_argument("--seed", type=int, default=0, metavar="SEED",
                    help="seed of the SmoothGrad noise, so that a rerun writes the same files (default 0)")
    io.add_argument("--objective", default="sum", metavar="sum|activation|max|Y,X|prefix:I",
                    help="what is maximized for a unit: the sum over positions (default), 1/2 sum of squares, the "
                         "strongest position, one position Y,X of the unit's map, or a token layer's prefix token I "
                         "(prefix:0 = the class token)")
    io.add_argument("--filter", default="raw", choices=FILTERS,
                    help="how gradients become pictures: raw (every channel; default), gray (channel mean), norm "
                         "(per-pixel L2 norm), normblur (the norm blurred)")
    io.add_argument("--sign", default=DEFAULT_SIGN, choices=SIGNS,
                    help="which part of the gradient: signed (default: 0 = mid grey, or blue-white-red for one map), "
                         "positive, negative (its size) or absolute")
    io.add_argument("--clip", default=DEFAULT_CLIP, choices=CLIPS,
                    help="the value shown at full brightness: percentile (default: the --percentile-th percentile "
                         "of |g|, brighter values clip), mass (captum's: where the sorted |g| reach --percentile %% "
                         "of their sum) or max (the exact maximum: on real networks a few outlier pixels own it)")
    io.add_argument("--percentile", type=percentile_arg, default=DEFAULT_PERCENTILE, metavar="P",
                    help=f"for --clip percentile / mass: 0 < P <= 100 (default {DEFAULT_PERCENTILE:g}: the brightest "
                         f"2 %% clip; 100 = max). The .npz (--raw) stays raw")
    io.add_argument("--cam-layer", metavar="L",
                    help="the CAM methods' layer (default: the last convolution that runs before --layer, or its "
                         "last channels-last / token map; a ViT's: the last block's norm1); rollout and legrad read "
                         "every attention layer instead")
    io.add_argument("--cam-style", default="overlay", choices=("overlay", "heatmap"),
                    help="CAM PNGs: the map over the input (default) or the colour map alone")
    io.add_argument("--cam-alpha", type=float, default=0.5, metavar="A", help="overlay opacity (default 0.5)")
    io.add_argument("--cmap", default="inferno", help="colour map for the CAM methods (default inferno)")
    io.add_argument("--raw", action="store_true",
                    help="also write raw.npz per image: input tensor, activations, saliency per unit and method")
    io.add_argument("--zoom", type=int, default=1, metavar="K",
                    help=f"enlarge every PNG K times (nearest neighbour, 1..{MAX_ZOOM}); default 1 = model input "
                         f"resolution")
    io.add_argument("--batch-size", type=int, default=1, metavar="B",
                    help="images per forward pass (default 1)")
    io.add_argument("--recursive", action="store_true", help="folders: include sub-folders")
    io.add_argument("--max-frames", type=int, metavar="N", help="videos: export at most N frames")
    io.add_argument("--frame-step", type=int, default=1, metavar="K", help="videos: every K-th frame (default 1)")
    io.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    pe.set_defaults(func=cmd_export)

    _register_extensions(sub)
    return p


def _register_extensions(sub) -> None:
    """Let ``cnnvis_gui.atlas.commands`` and ``cnnvis_gui.dissect.commands`` add their sub-commands."""
    for module in ("cnnvis_gui.atlas.commands", "cnnvis_gui.dissect.commands"):
        try:
            register = importlib.import_module(module).register
        except ModuleNotFoundError as e:
            if e.name in (module, module.rsplit(".", 1)[0]):
                continue
            raise
        register(sub, add_model_arguments, model_from_args)


def main(argv=None) -> int:
    """Entry point of the ``cnnvis`` console script; returns the exit code.

    The whole run is inside the error boundary (:func:`cnnvis_gui.cli.boundary.guarded`): any
    exception becomes one line on stderr, control characters from files are shown escaped, and
    ``--traceback`` (anywhere on the line) shows the details.
    """
    return guarded(_run, sys.argv[1:] if argv is None else argv, PROG)


def _run(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args.thread_policy = apply_thread_option(args)
    from cnnvis_gui.core.allocator import reuse_freed_memory
    args.malloc = reuse_freed_memory()
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
