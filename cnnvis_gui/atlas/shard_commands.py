"""``cnnvis atlas`` past one process: torchrun ranks, ``--shard I/N`` parts, ``cnnvis atlas merge``.

    torchrun --nproc_per_node N -m cnnvis_gui atlas [model options] --images F --layer L --out DIR
    cnnvis atlas [model options] --images F --layer L --shard I/N --out DIR_I      (I = 0..N-1)
    cnnvis atlas merge [model options] DIR_0 ... DIR_N-1 --out DIR

The three share the slicing (:func:`~cnnvis_gui.atlas.scan.shard_range`), the parts and their
exact merge (:mod:`cnnvis_gui.atlas.merge`) and the writer of ``cnnvis atlas``
(:func:`~cnnvis_gui.atlas.commands.write_atlas`), so their ``atlas.json`` equals that of a
one-process run, plus ``world_size`` and ``images_per_rank``.  Each slice is a cached,
resumable scan of its own (its checkpoint lives in the cache under a key that names the slice):
a killed shard or rank continues where it stopped when started again with the same command.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..core import CnnvisError, InputSpec
from .cache import weights_hash
from .commands import (_layers, _torchrun_world, model_options_text, report_model_failures, run_scan_with_bar,
                       write_atlas)
from .merge import PART_JSON, merge_parts, parse_shard, part_from_scan, part_meta, read_part, write_part
from .scan import AtlasScan, TopKScan, folder_fingerprint, list_images, model_device

__all__ = ["cmd_atlas_split", "cmd_atlas_merge"]


def cmd_atlas_split(args, model_from_args, folder: Path, options) -> int:
    """``cnnvis atlas --shard I/N`` or ``cnnvis atlas`` under torchrun (WORLD_SIZE > 1)."""
    world = _torchrun_world()
    if world is not None and args.shard:
        raise CnnvisError("--shard I/N and torchrun both split the scan: use one of them (under torchrun every "
                          "rank already scans its own slice).")
    if world is not None:
        return _torchrun(args, model_from_args, folder, options, world)
    return _shard(args, model_from_args, folder, options)


def _scan(args, lm, folder, shard) -> TopKScan:
    return TopKScan(lm.model, lm.spec, folder, _layers(args.layer), k=args.top, batch_size=args.batch_size,
                    cache_dir=args.cache_dir, use_cache=not args.no_cache, workers=args.workers, shard=shard)


# ============================================================================ --shard I/N
def _shard(args, model_from_args, folder: Path, options) -> int:
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
    layers, skipped, ranges, _ = merge_parts(parts)
    res = AtlasScan(folder, list(scan.result.paths), layers, args.top, lm.spec, skipped, ranges=ranges,
                    from_cache=all(p.meta.get("from_cache") for p in parts))
    note = f"; {world.size} ranks scanned {', '.join(map(str, res.images_per_rank))} images"
    return write_atlas(args, lm.model, lm.spec, name, res, Path(args.out).expanduser(), t0, note)


# ============================================================================ merge
def cmd_atlas_merge(args, model_from_args, options) -> int:
    """``cnnvis atlas merge DIR_0 ... DIR_N-1 --out DIR``: check, merge exactly, crop once, write."""
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
    model, name = None, meta.get("model") or "?"
    if not args.no_montage:
        lm = model_from_args(args)
        got = weights_hash(lm.model)
        if got != meta["weights"]:
            scanned = meta.get("options") or "no model options"
            raise CnnvisError(f"the model given to merge ({getattr(lm, 'name', '?')}, weights {got[:12]}…) is not the "
                              f"one the parts were scanned with ({name}, weights {meta['weights'][:12]}…); give "
                              f"merge the same model options as the shards ({scanned}), or --no-montage.")
        model = lm.model
    res = AtlasScan(folder, [f[0] for f in files], layers, int(meta["k"]), spec, skipped, ranges=ranges)
    note = f"; merged {len(parts)} parts of {', '.join(map(str, res.images_per_rank))} images"
    return write_atlas(args, model, spec, name, res, Path(args.out).expanduser(), t0, note)
