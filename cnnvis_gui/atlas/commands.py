"""``cnnvis atlas`` (and the registration of ``cnnvis optimize``): the unit atlas from the command line.

    cnnvis atlas    [model options] --images FOLDER --layer L [--top 9] --out DIR
    cnnvis atlas    [model options] --images FOLDER --layer L --shard I/N --out DIR_I
    cnnvis atlas merge [model options] DIR_0 ... DIR_N-1 --out DIR
    torchrun --nproc_per_node N -m cnnvis_gui atlas [model options] --images FOLDER --layer L --out DIR
    cnnvis optimize [model options] --layer L --unit U [--preset N] --out FILE.png   (optimize_command.py)

Registered by :mod:`cnnvis_gui.cli` through :func:`register`, which receives the CLI's
shared ``add_model_arguments(parser)`` / ``model_from_args(args)`` so that model loading
is the same as for ``cnnvis info`` / ``cnnvis export``.

Past one process (the README's "bigger than one machine"): under torchrun every rank scans a
slice of whole batches (:func:`~cnnvis_gui.atlas.scan.shard_range`) and rank 0 merges
(:mod:`cnnvis_gui.atlas.distributed`); ``--shard I/N`` writes one part and ``atlas merge`` joins
them (:mod:`cnnvis_gui.atlas.merge`).  All of them write through :func:`write_atlas`, so their
``atlas.json`` equals a one-process run's, plus ``world_size`` and ``images_per_rank``.  Each
slice is a cached, resumable scan of its own: a killed shard or rank continues where it stopped
when started again with the same command.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ..core import CnnvisError, InputSpec, model_map
from ..core.bounds import MAX_PROBES, MAX_TOP, MAX_WORKERS
from ..core.display import MAX_ZOOM
from ..core.files import atomic_write_json, output_path
from ..core.progress import stderr_progress
from . import objective_command
from .arguments import folder_name, layer_list, ranged, unit_list, write_png
from .optimize_command import cmd_optimize

__all__ = ["register", "cmd_atlas", "cmd_atlas_split", "cmd_atlas_merge", "cmd_optimize", "write_atlas",
           "model_options_text",
           "report_model_failures", "run_scan_with_bar"]


#: The largest montage cell (``--tile``): k cells per row of a unit's montage, each this many pixels.
MAX_TILE = 1024


def register(subparsers, add_model_arguments, model_from_args) -> None:
    """Add the ``atlas`` and ``optimize`` sub-commands to the ``cnnvis`` parser."""
    pa = subparsers.add_parser(
        "atlas", help="top-k images per unit from a folder, with receptive-field and deconv crops",
        usage="%(prog)s [model options] --images FOLDER --layer L [--top K] [--shard I/N] --out DIR [options]\n"
              "       %(prog)s merge [model options] DIR_0 ... DIR_N-1 --out DIR [options]\n"
              "       torchrun --nproc_per_node N -m cnnvis_gui atlas [same options as the first form]",
        description="Scan a folder of images (recursively) and write, for every unit of the layer(s), a "
                    "montage DIR/<layer>/unit_<U>.png (the k top crops, then their deconv crops) and "
                    "DIR/atlas.json (every unit's hits: image path, position, activation, highest first). "
                    "The scan is cached and resumes after an interruption. Under torchrun every rank scans "
                    "a slice and rank 0 writes DIR; --shard I/N scans slice I only and 'atlas merge' joins "
                    "the N parts.")
    add_model_arguments(pa)
    g = pa.add_argument_group("atlas")
    g.add_argument("--images", "-i", metavar="FOLDER", help="folder of images (searched recursively; required)")
    g.add_argument("--layer", "-l", action="append", metavar="L[,L...]",
                   help="layer name(s) from 'cnnvis info' ('output' = model output); repeat or comma-separate "
                        "(required)")
    g.add_argument("--top", "-k", type=ranged(int, 0, True, "--top", MAX_TOP), default=9, metavar="K",
                   help=f"images per unit (default 9, at most {MAX_TOP})")
    g.add_argument("--out", "-o", metavar="DIR", help="output folder (created if needed; required)")
    _add_output_arguments(g)
    g.add_argument("--batch-size", type=ranged(int, 0, True, "--batch-size"), default=64, metavar="B", help="images per forward (default 64)")
    g.add_argument("--workers", type=ranged(int, 0, True, "--workers", MAX_WORKERS), metavar="N",
                   help=f"decode threads (default: up to 4, at most {MAX_WORKERS})")
    g.add_argument("--cache-dir", metavar="DIR", help="cache folder (default $CNNVIS_CACHE_DIR or "
                                                      "~/.cache/cnnvis-gui/atlas)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    d = pa.add_argument_group("bigger than one machine")
    d.add_argument("--shard", metavar="I/N", help="scan only slice I of N (0 <= I < N) and write a part to --out "
                                                  "(atlas-part.json/.npz) for 'cnnvis atlas merge'")
    d.add_argument("--dist-timeout", type=ranged(float, 0, True, "--dist-timeout"), default=60.0, metavar="MIN",
                   help="under torchrun: minutes a rank waits for the others in a collective (default 60)")
    options = _model_option_actions(add_model_arguments)
    pa.set_defaults(func=lambda args: cmd_atlas(args, model_from_args, pa, options))

    sub = pa.add_subparsers(dest="atlas_command", metavar="merge", required=False)
    pm = sub.add_parser("merge", help="merge the parts of 'cnnvis atlas --shard I/N' runs into one atlas",
                        prog=pa.prog + " merge", usage="%(prog)s [model options] DIR_0 ... DIR_N-1 --out DIR [options]",
                        description="Check that the parts come from one scan (same model weights, input spec, "
                                    "layers, k, folder and image listing; every slice once), merge their top-k "
                                    "exactly, then compute the crops and write the atlas as 'cnnvis atlas' does. "
                                    "The montages need the model: give the model options the parts were scanned "
                                    "with (not needed with --no-montage).")
    add_model_arguments(pm)
    g = pm.add_argument_group("merge")
    g.add_argument("parts", nargs="+", metavar="DIR_I", help="the --out folders of the shards")
    g.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created if needed)")
    _add_output_arguments(g)
    g.add_argument("--cache-dir", metavar="DIR", help="where to keep the merged scan, so that the app and "
                                                      "'cnnvis atlas' open it without scanning (default "
                                                      "$CNNVIS_CACHE_DIR or ~/.cache/cnnvis-gui/atlas)")
    g.add_argument("--no-cache", action="store_true", help="do not keep the merged scan in the cache")
    pm.set_defaults(func=lambda args: cmd_atlas_merge(args, model_from_args, options))

    po = subparsers.add_parser(
        "optimize", help="synthesize an image of what a unit responds to (feature visualization)",
        description="Optimizes an image for one unit: by default Lucid's Fourier image with decorrelated colour, "
                    "random jitter, scale and rotation at every step, and Adam (Olah et al. 2017; measured best on the "
                    "real MobileNetV2, see the README's benchmark); --preset maco / pixel change the image's "
                    "parameterization, yosinski-1..4 run the regularized ascent of Yosinski et al. 2015. Writes the "
                    "image, says what was used, and prints the unit's activation for it next to that of a random "
                    "input.")
    add_model_arguments(po)
    g = po.add_argument_group("optimize")
    g.add_argument("--layer", "-l", metavar="L", help="layer name ('output' = class scores; required with --unit / "
                                                       "--units)")
    which = g.add_mutually_exclusive_group(required=True)
    which.add_argument("--unit", "-u", type=int, metavar="U", help="unit (channel / class) index")
    which.add_argument("--units", metavar="0,5,10-15",
                       help="several units of the layer ('all': every one), --batch at a time in one optimization; "
                            "--out is then their montage, and each image is cached for the window's pattern mode")
    g.add_argument("--batch", type=ranged(int, 0, True, "--batch"), default=8, metavar="N",
                   help="units optimized together with --units (default 8)")
    g.add_argument("--preset", default="fourier", metavar="NAME",
                   help="fourier (default), maco, pixel, or yosinski-1..4 (the paper's Table 1; 1..4 also work)")
    g.add_argument("--target", default=None, metavar="channel|center|Y,X",
                   help="conv layers: the whole channel (the default, except the Yosinski presets: the centre "
                        "position), the centre position, or position Y,X (a flat layer such as fc/output has no "
                        "positions: Y,X is refused there)")
    g.add_argument("--iterations", type=ranged(int, 0, True, "--iterations"), metavar="N", help="override the preset's iteration count")
    g.add_argument("--lr", type=ranged(float, 0, True, "--lr"), metavar="LR", help="override the preset's step size (Adam's; pixel units for the Yosinski presets)")
    g.add_argument("--seed", type=int, default=0, help="random start (default 0)")
    g.add_argument("--zoom", type=ranged(int, 0, True, "--zoom", MAX_ZOOM), default=1, metavar="K",
                   help=f"enlarge the PNG K times (nearest neighbour, 1..{MAX_ZOOM})")
    g.add_argument("--out", "-o", required=True, metavar="FILE.png",
                   help="output image; the extension picks the format (.png, .jpg, ... as OpenCV can write)")
    g.add_argument("--cache-dir", metavar="DIR", help="cache folder")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    objective_command.add_arguments(g, which)
    po.set_defaults(func=lambda args: cmd_optimize(args, model_from_args))


def _add_output_arguments(g) -> None:
    """What ``atlas`` and ``atlas merge`` write: which montages, how crops are drawn."""
    g.add_argument("--units", metavar="0,5,10-15", help="montages only for these units (default: all)")
    g.add_argument("--method", default="guided", choices=("guided", "deconvnet"),
                   help="backprop rule for the deconv crops (default guided)")
    g.add_argument("--filter", default="raw", choices=("raw", "gray", "norm", "normblur"),
                   help="how the deconv images are drawn (default raw)")
    g.add_argument("--probes", type=ranged(int, 0, False, "--probes", MAX_PROBES), default=4, metavar="N",
                   help=f"random probe inputs united with the hit image for the receptive field (default 4, at most "
                        f"{MAX_PROBES})")
    g.add_argument("--tile", type=ranged(int, 0, True, "--tile", MAX_TILE), default=64, metavar="PX",
                   help=f"montage cell size in pixels (default 64, at most {MAX_TILE})")
    g.add_argument("--no-montage", action="store_true", help="only write atlas.json")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")


def _model_option_actions(add_model_arguments) -> list:
    """[(option string, dest, default, takes a value)] of the shared model options."""
    p = argparse.ArgumentParser(add_help=False)
    add_model_arguments(p)
    return [(a.option_strings[-1] if a.option_strings[-1].startswith("--") else a.option_strings[0], a.dest,
             a.default, a.nargs != 0) for a in p._actions if a.option_strings]


def model_options_text(args, actions) -> str:
    """The model options given on this command line, as they would be typed ("--model shapes --device cpu")."""
    out = []
    for opt, dest, default, takes in actions:
        v = getattr(args, dest, default)
        if v == default or v is None:
            continue
        if not takes:
            out.append(opt)
        else:
            for item in (v if isinstance(v, list) else [v]):
                out.append(f"{opt} {item}")
    return " ".join(out)


# ============================================================================ helpers
#: the "coordinates" note of atlas.json: what a hit's path, y/x and box mean
COORDINATES = {
    "path": "absolute path of the image file (folder is absolute too; the scan lists it recursively)",
    "y_x": "row, column of the unit's maximum in the layer's output map ((0, 0) for a flat layer)",
    "box": "[y0, x0, y1, x1] (end-exclusive) in model-input pixels, i.e. on the image after it was fitted to "
           "spec.height x spec.width by spec.fit (crop: centre crop after scaling the short side; letterbox: "
           "scaled to fit, then padded; stretch: resized), not in the original file's pixels",
    "skipped": "paths relative to folder; reason starts with \"the model's forward raised\" for model failures",
}


# ============================================================================ atlas
def cmd_atlas(args, model_from_args, parser=None, options=()) -> int:
    from .scan import TopKScan

    missing = [o for o, v in (("--images/-i", args.images), ("--layer/-l", args.layer), ("--out/-o", args.out))
               if not v]
    if missing:
        if parser is not None:
            parser.error(f"the following arguments are required: {', '.join(missing)}")
        raise CnnvisError(f"missing {', '.join(missing)}.")
    if args.top < 1:
        raise CnnvisError("--top must be at least 1.")
    folder = Path(args.images).expanduser().resolve()
    if not folder.is_dir():
        raise CnnvisError(f"--images: '{folder}' is not a folder.")
    if getattr(args, "shard", None) or _torchrun_world() is not None:
        return cmd_atlas_split(args, model_from_args, folder, options)
    lm = model_from_args(args)
    model, spec = lm.model, lm.spec
    out = Path(args.out).expanduser()
    t0 = time.perf_counter()
    layouts = getattr(lm, "layouts", None)
    scan = TopKScan(model, spec, folder, layer_list(args.layer), k=args.top, batch_size=args.batch_size,
                    cache_dir=args.cache_dir, use_cache=not args.no_cache, workers=args.workers, layouts=layouts)
    total = scan.total             # lists the folder: a folder without images is an error here
    out.mkdir(parents=True, exist_ok=True)
    run_scan_with_bar(scan, total, "cnnvis atlas: scan", args.quiet)
    return write_atlas(args, model, spec, getattr(lm, "name", type(model).__name__), scan.result, out, t0,
                       layouts=layouts)


def _torchrun_world():
    """The torchrun job of this process (imports torch.distributed only when torchrun started us)."""
    import os
    if "WORLD_SIZE" not in os.environ:
        return None
    from .distributed import world_from_env
    return world_from_env()


def run_scan_with_bar(scan, total: int, desc: str, quiet: bool) -> None:
    """Run a TopKScan to the end with its progress on stderr (a bar on a terminal, log lines otherwise)."""
    with stderr_progress(desc, total, "image", quiet=quiet) as progress:
        for p in scan.run():
            progress.update(p.done, note=f"{p.skipped} skipped" if p.skipped else "")
    for note in scan.notices:
        print(f"cnnvis: note: {note}", file=sys.stderr)


def write_atlas(args, model, spec, model_name: str, res, out: Path, t0: float, note: str = "",
                layouts: dict | None = None) -> int:
    """Crops, montages and ``atlas.json`` of a finished scan; the summary line; the exit code.

    ``model`` may be None with ``args.no_montage`` (nothing runs the model then).  Returns 1
    when the model's forward raised on some images (they are named on stderr), else 0.
    ``layouts``: the user's layout overrides (``--layout``), as the scan read them.
    """
    from .crops import ReceptiveFields
    from .montage import unit_montage

    out.mkdir(parents=True, exist_ok=True)
    doc = res.to_dict()
    doc["model"] = model_name
    doc["from_cache"] = res.from_cache
    doc["coordinates"] = dict(COORDINATES, fit=spec.fit, input_size=[spec.height, spec.width])
    n_png = 0
    if not args.no_montage:
        todo = [(name, u) for name in res.layers for u in unit_list(args.units, res.layer(name).units)]
        progress = stderr_progress("cnnvis atlas: crops", len(todo), "unit", quiet=args.quiet)
        try:
            for name in res.layers:
                rf = ReceptiveFields(model, spec, probes=args.probes, method=args.method, filter=args.filter,
                                     layouts=layouts)
                units_doc = doc["layers"][name or "output"]["units"]
                try:
                    for u in unit_list(args.units, res.layer(name).units):
                        crops = [rf.crops(name, u, h) for h in res.hits(name, u)]
                        rel = Path(folder_name(name)) / f"unit_{u:04d}.png"
                        write_png(output_path(out, *rel.parts), unit_montage(crops, res.k, tile=args.tile))
                        n_png += 1
                        units_doc[u]["montage"] = rel.as_posix()
                        for hd, c in zip(units_doc[u]["hits"], crops):
                            hd["box"] = c.box.to_list()
                        progress.advance()
                finally:
                    rf.close()
        finally:
            progress.finish()
    atomic_write_json(out / "atlas.json", doc)
    warn_nonfinite(res, model, spec)
    failed = res.model_failures
    if not args.quiet:
        cached = " (scan from cache)" if res.from_cache else ""
        why = f", {len(failed)} because the model's forward raised" if failed else ""
        print(f"cnnvis atlas: {len(res.paths)} images ({len(res.skipped)} skipped{why}), "
              f"{', '.join(n or 'output' for n in res.layers)}: {n_png} montages and atlas.json written to {out} "
              f"in {time.perf_counter() - t0:.1f} s{cached}{note}")
    return report_model_failures(res, "atlas.json")


def warn_nonfinite(res, model, spec) -> None:
    """One warning when the scan met NaN/Inf activations, naming the first layer where they appear.

    The scan ranks NaN as -inf, below every real value, so such a unit keeps fewer hits than the
    others (none when every image gave NaN); +inf is kept as a value.  The layer is found with
    one forward of a scanned image, when the model is at hand.
    """
    skipped = {p for p, _ in res.skipped}
    scanned = [i for i, p in enumerate(res.paths) if p not in skipped]
    if not scanned:
        return
    bad = {}
    for name, t in res.layers.items():
        filled = (t.images >= 0).sum(axis=1)
        expected = filled.max() if filled.max() > 0 else 1
        units = (filled < expected) | ((t.images >= 0) & ~np.isfinite(t.values)).any(axis=1)
        if units.any():
            bad[name] = (int(units.sum()), t.units)
    if not bad:
        return
    where = ""
    if model is not None:
        from ..core import Visualizer
        from ..sources import load_image
        try:
            frame = Visualizer(model, spec).forward(spec.to_tensor(load_image(res.path(scanned[0]))))
            try:
                first = frame.first_nonfinite_layer()
            finally:
                frame.close()
        except Exception:  # noqa: BLE001 - the warning stands without the layer's name
            first = None
        if first is not None:
            where = f", first in layer {first or 'output'!r} (image '{res.paths[scanned[0]]}')"
    counts = "; ".join(f"{name or 'output'!r}: {n} of {units} units" for name, (n, units) in bad.items())
    print(f"cnnvis: warning: the model's activations hold NaN/Inf{where}; {counts} have NaN/Inf values (ranked "
          f"last: fewer or no hits, crops that show nothing)", file=sys.stderr)


def report_model_failures(res, where: str) -> int:
    """Name on stderr the images the model's forward raised on; the exit code (1 when there were any)."""
    failed = res.model_failures
    for rel, reason in failed:
        print(f"cnnvis: warning: skipped '{res.folder / rel}': {reason}", file=sys.stderr)
    if failed:
        print(f"cnnvis: the model's forward raised on {len(failed)} image{'s' if len(failed) != 1 else ''} "
              f"(skipped, listed in {where}; exit code 1)", file=sys.stderr)
    return 1 if failed else 0


# ============================================================================ bigger than one machine
def cmd_atlas_split(args, model_from_args, folder: Path, options) -> int:
    """``cnnvis atlas --shard I/N`` or ``cnnvis atlas`` under torchrun (WORLD_SIZE > 1)."""
    world = _torchrun_world()
    if world is not None and args.shard:
        raise CnnvisError("--shard I/N and torchrun both split the scan: use one of them (under torchrun every "
                          "rank already scans its own slice).")
    if world is not None:
        return _torchrun(args, model_from_args, folder, options, world)
    return _shard(args, model_from_args, folder, options)


def _scan(args, lm, folder, shard):
    from .scan import TopKScan

    return TopKScan(lm.model, lm.spec, folder, layer_list(args.layer), k=args.top, batch_size=args.batch_size,
                    cache_dir=args.cache_dir, use_cache=not args.no_cache, workers=args.workers, shard=shard,
                    layouts=getattr(lm, "layouts", None))


# ============================================================================ --shard I/N
def _shard(args, model_from_args, folder: Path, options) -> int:
    from .merge import PART_JSON, parse_shard, part_from_scan, write_part

    index, count = parse_shard(args.shard)
    lm = model_from_args(args)
    t0 = time.perf_counter()
    out = Path(args.out).expanduser()
    scan = _scan(args, lm, folder, (index, count))
    a, b = scan.range
    out.mkdir(parents=True, exist_ok=True)
    run_scan_with_bar(scan, scan.total, f"cnnvis atlas: shard {index}/{count}", args.quiet)
    write_part(out, part_from_scan(scan, getattr(lm, "name", type(lm.model).__name__),
                                   model_options_text(args, options)))
    res = scan.result
    if not args.quiet:
        cached = " (from cache)" if res.from_cache else ""
        print(f"cnnvis atlas: shard {index}/{count}: images {a}..{b} of {scan.listing_size} ({b - a} scanned, "
              f"{len(res.skipped)} skipped) -> {out / PART_JSON} in {time.perf_counter() - t0:.1f} s{cached}. "
              f"When all {count} shards are done: cnnvis atlas merge [model options] DIR_0 ... DIR_{count - 1} "
              f"--out DIR")
    return report_model_failures(res, "the part")


# ============================================================================ torchrun
def _torchrun(args, model_from_args, folder: Path, options, world) -> int:
    from . import distributed as dist
    from .merge import cache_merged, merge_parts, part_from_scan, part_meta
    from .results import AtlasScan
    from .scan import model_device

    t0 = time.perf_counter()
    try:
        args.device = dist.rank_device(world, getattr(args, "device", "auto"))
        lm = model_from_args(args)
        name = getattr(lm, "name", type(lm.model).__name__)
        text = model_options_text(args, options)
        device, _ = model_device(lm.model)
        with dist.process_group(world, dist.backend_for(device), args.dist_timeout * 60.0):
            scan = _scan(args, lm, folder, (world.rank, world.size))
            dist.agree(world, part_meta(scan, name, text))
            run_scan_with_bar(scan, scan.total, f"cnnvis atlas: rank {world.rank}/{world.size}",
                              args.quiet or not world.main)
            parts = dist.gather_parts(world, part_from_scan(scan, name, text))
    except dist.PeerLost:
        raise
    except Exception:
        print(f"cnnvis atlas: {world} failed; torchrun stops the other ranks.", file=sys.stderr)
        raise
    if not world.main:
        return 0
    layers, skipped, ranges, meta = merge_parts(parts)
    if not args.no_cache:
        cache_merged(args.cache_dir, layers, skipped, meta)
    res = AtlasScan(folder, list(scan.result.paths), layers, args.top, lm.spec, skipped, ranges=ranges,
                    from_cache=all(p.meta.get("from_cache") for p in parts))
    note = f"; {world.size} ranks scanned {', '.join(map(str, res.images_per_rank))} images"
    return write_atlas(args, lm.model, lm.spec, name, res, Path(args.out).expanduser(), t0, note,
                       layouts=getattr(lm, "layouts", None))


# ============================================================================ merge
def cmd_atlas_merge(args, model_from_args, options) -> int:
    """``cnnvis atlas merge DIR_0 ... DIR_N-1 --out DIR``: check, merge exactly, crop once, write.

    The parts are checked against each other, the folder on disk and (whenever the model is
    given: always for the montages, and for the cache) the model: its weights, every layer's
    units and map size.  Only then is the merged scan kept in the cache, under the key recomputed
    from the checked fields, and only after the atlas was written: a failed merge caches nothing.
    """
    from .cache import weights_hash
    from .merge import cache_merged, check_against_model, merge_parts, read_part
    from .folders import folder_fingerprint, list_images
    from .results import AtlasScan

    if _torchrun_world() is not None:
        raise CnnvisError("'cnnvis atlas merge' runs as one process: start it without torchrun.")
    t0 = time.perf_counter()
    parts = [read_part(d) for d in args.parts]
    layers, skipped, ranges, meta = merge_parts(parts)
    folder = Path(meta["folder"])
    if not folder.is_dir():
        raise CnnvisError(f"the parts were scanned from '{folder}', which is not a folder on this machine; merge "
                          f"where that folder is readable at the same path (atlas.json names its images).")
    files, _ = list_images(folder, bool(meta.get("recursive", True)))
    if folder_fingerprint(files) != meta["files"]:
        raise CnnvisError(f"the images in '{folder}' changed since the parts were scanned ({len(files)} image files "
                          f"now, {meta['images']} then, or some were rewritten); rescan the shards.")
    spec = InputSpec.from_dict(meta["spec"])
    model, name, layouts = None, str(meta.get("model") or "?"), None
    to_cache = not args.no_cache
    note = ""
    if to_cache and args.no_montage and not model_options_text(args, options):
        to_cache = False     # nothing to check the parts against: a cache entry must be checked
        note = "; not cached (give the model options to check the parts against the model)"
    if not args.no_montage or to_cache:
        lm = model_from_args(args)
        got = weights_hash(lm.model)
        if got != meta["weights"]:
            scanned = meta.get("options") or "no model options"
            raise CnnvisError(f"the model given to merge ({getattr(lm, 'name', '?')}, weights {got[:12]}…) is "
                              f"not the one the parts were scanned with ({name}, weights {meta['weights'][:12]}…); give "
                              f"merge the same model options as the shards ({scanned}), or --no-montage.")
        model, layouts = lm.model, getattr(lm, "layouts", None)
        mm = model_map(model, spec, layouts)
        check_against_model(layers, {n: _scanned_shape(mm[n]) for n in layers})
    res = AtlasScan(folder, [f[0] for f in files], layers, int(meta["k"]), spec, skipped, ranges=ranges)
    note = f"; merged {len(parts)} parts of {', '.join(map(str, res.images_per_rank))} images" + note
    code = write_atlas(args, model, spec, name, res, Path(args.out).expanduser(), t0, note, layouts=layouts)
    if to_cache:
        cache_merged(args.cache_dir, layers, skipped, meta)
    return code


def _scanned_shape(info) -> tuple | None:
    """A layer's per-sample shape as the scan records it: units first, then its layout's map (C x H x W)."""
    if info.layout is not None and info.map_shape is not None and info.units is not None:
        return (int(info.units),) + tuple(int(s) for s in info.map_shape)
    return info.shape


