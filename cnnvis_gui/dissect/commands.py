"""``cnnvis dissect``: name what each unit detects, from the command line.

    cnnvis dissect [model options] --concepts DIR --layer L [--layer L2] [--quantile 0.005] --json OUT.json
    torchrun --nproc_per_node N -m cnnvis_gui dissect [the same options]
    cnnvis dissect [model options] --concepts DIR --layer L --shard I/N [--thresholds T.json] --out DIR_I
    cnnvis dissect merge DIR_0 ... DIR_N-1 --json OUT.json

Registered by :mod:`cnnvis_gui.cli` through :func:`register` (the atlas's pattern): the model
options are the ones every command shares.  The JSON is written atomically once the dissection
is finished; nothing is written before (a cancelled or failed run leaves its checkpoints in the
cache, and the same command resumes).  Ranks and shards: :mod:`cnnvis_gui.dissect.parts`.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..atlas import cache as _cache
from ..atlas.arguments import layer_list, ranged
from ..atlas.commands import _model_option_actions, _torchrun_world, model_options_text
from ..core import CnnvisError
from ..core.progress import stderr_progress

__all__ = ["register", "cmd_dissect", "cmd_dissect_merge", "summary_lines"]


def register(subparsers, add_model_arguments, model_from_args) -> None:
    """Add ``dissect`` (and ``dissect merge``) to the ``cnnvis`` parser."""
    from .scan import DEFAULT_QUANTILE
    from .store import DEFAULT_MEMORY_BUDGET

    pd = subparsers.add_parser(
        "dissect", help="name what each unit detects: network dissection on your labelled images",
        usage="%(prog)s [model options] --concepts DIR --layer L [--quantile Q] --json OUT.json [options]\n"
              "       %(prog)s [model options] --concepts DIR --layer L --shard I/N [--thresholds T.json] --out DIR_I\n"
              "       %(prog)s merge DIR_0 ... DIR_N-1 --json OUT.json\n"
              "       torchrun --nproc_per_node N -m cnnvis_gui dissect [same options as the first form]",
        description="Network dissection (Bau et al., CVPR 2017): every unit of the layer(s) is thresholded at the "
                    "(1 - Q) quantile of its activations, its maps are upsampled to each image's masks, and it is "
                    "labelled with the concept of highest IoU (interpretable when IoU > 0.04). Concepts come from a "
                    "Broden folder (index.csv, label.csv, c_*.csv, R+256G masks) or a simple folder: "
                    "images/NAME.png, masks/NAME.png (uint8/uint16 label maps, 0 = none), labels.csv "
                    "(id,name[,category]). The scan is cached and resumes after an interruption.")
    add_model_arguments(pd)
    g = pd.add_argument_group("dissect")
    g.add_argument("--concepts", "-c", metavar="DIR", help="concept folder: Broden or the simple format (required; "
                                                          "the shapes demo has its own)")
    g.add_argument("--layer", "-l", action="append", metavar="L[,L...]",
                   help="layer name(s) from 'cnnvis info' whose units have a spatial map; repeat or comma-separate "
                        "(required)")
    g.add_argument("--quantile", "-Q", type=ranged(float, 0, True, "--quantile", 0.5), default=DEFAULT_QUANTILE,
                   metavar="Q", help=f"a unit's mask is where it exceeds its (1 - Q) quantile (default "
                                     f"{DEFAULT_QUANTILE}, the paper's)")
    g.add_argument("--json", "-o", metavar="OUT.json", help="where to write the result (required, except with --shard)")
    g.add_argument("--category", action="append", metavar="NAME",
                   help="Broden: use only these categories (repeat); default all")
    g.add_argument("--batch-size", type=ranged(int, 0, True, "--batch-size"), default=64, metavar="B",
                   help="images per forward (default 64)")
    g.add_argument("--workers", type=ranged(int, 0, True, "--workers"), metavar="N", help="decode threads "
                                                                                           "(default: up to 4)")
    g.add_argument("--memory-budget", default=f"{DEFAULT_MEMORY_BUDGET >> 30}G", metavar="SIZE",
                   help="unit maps kept on disk (memory-mapped) for exact thresholds and one forward per image; past "
                        "it the thresholds come from a streaming quantile (within 1%%) and the model runs twice "
                        f"(default {DEFAULT_MEMORY_BUDGET >> 30}G)")
    g.add_argument("--cache-dir", metavar="DIR", help="cache folder (default $CNNVIS_CACHE_DIR or "
                                                      "~/.cache/cnnvis-gui/atlas)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    g.add_argument("--top", type=ranged(int, 0, False, "--top"), default=5, metavar="N",
                   help="units listed per layer in the summary (default 5)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary")
    d = pd.add_argument_group("bigger than one machine")
    d.add_argument("--shard", metavar="I/N", help="only slice I of N of the images; writes a part to --out for "
                                                  "'cnnvis dissect merge'")
    d.add_argument("--thresholds", metavar="T.json", help="with --shard: the thresholds 'dissect merge' wrote; the "
                                                          "shard then tallies its images")
    d.add_argument("--out", metavar="DIR_I", help="with --shard: the folder for the part")
    d.add_argument("--dist-timeout", type=ranged(float, 0, True, "--dist-timeout"), default=60.0, metavar="MIN",
                   help="under torchrun: minutes a rank waits for the others in a collective (default 60)")
    options = _model_option_actions(add_model_arguments)
    pd.set_defaults(func=lambda args: cmd_dissect(args, model_from_args, pd, options))

    sub = pd.add_subparsers(dest="dissect_command", metavar="merge", required=False)
    pm = sub.add_parser("merge", help="merge the parts of 'cnnvis dissect --shard I/N' runs",
                        prog=pd.prog + " merge", usage="%(prog)s [model options] DIR_0 ... DIR_N-1 --json OUT.json [options]",
                        description="Pass-1 parts: writes the exact thresholds next to the JSON (OUT.thresholds.json) "
                                    "for the shards' second run. Tally parts: writes the result JSON, the one a "
                                    "single process writes; with the shards' model options it is also kept in the "
                                    "cache for the app. Parts of different dissections are refused.")
    add_model_arguments(pm)
    pm.add_argument("parts", nargs="+", metavar="DIR_I", help="the --out folders of the shards")
    pm.add_argument("--json", "-o", required=True, metavar="OUT.json", help="the result (or, for pass-1 parts, "
                                                                             "where the thresholds go next to)")
    pm.add_argument("--cache-dir", metavar="DIR", help="where to keep the merged result for the app (with the "
                                                      "shards' model options, whose weights are checked)")
    pm.add_argument("--no-cache", action="store_true", help="do not keep the merged result in the cache")
    pm.add_argument("--top", type=ranged(int, 0, False, "--top"), default=5, metavar="N", help="units listed per "
                                                                                                "layer (default 5)")
    pm.add_argument("--quiet", "-q", action="store_true", help="no summary")
    pm.set_defaults(func=lambda args: cmd_dissect_merge(args, model_from_args, options))


# ============================================================================ helpers
def _budget(text) -> int:
    from .store import parse_size
    try:
        return parse_size(text)
    except (ValueError, IndexError):
        raise CnnvisError(f"--memory-budget: use a size such as 4G, 512M or 1.5G; got {text!r}.") from None


def _check_json_target(path) -> Path:
    out = Path(path).expanduser()
    if out.is_dir():
        raise CnnvisError(f"--json: '{out}' is a folder; give a file name such as {out / 'dissection.json'}.")
    return out


def _concepts(args, lm):
    """``--concepts``, or for the shapes demo its own concept set (drawn into the cache at first use)."""
    if args.concepts:
        return args.concepts
    from ..models.demos import demo_name_of
    if demo_name_of(lm) != "shapes":
        raise CnnvisError("--concepts DIR is required: a Broden folder or a simple concept folder (images/, masks/, "
                          "labels.csv). Only the shapes demo brings its own (cnnvis dissect --model shapes).")
    from .demo import DEMO_CONCEPT_IMAGES, demo_concepts_folder, draw_demo_concepts
    folder = demo_concepts_folder(cache_dir=args.cache_dir)
    with stderr_progress("cnnvis dissect: drawing the shapes demo's concept images", DEMO_CONCEPT_IMAGES, "image",
                         quiet=args.quiet or (folder / ".complete").is_file()) as bar:
        for done in draw_demo_concepts(folder):
            bar.update(done)
    args.concepts = str(folder)
    return args.concepts


def _dissection(args, lm, shard=None):
    from .scan import Dissection
    return Dissection(lm.model, lm.spec, _concepts(args, lm), layer_list(args.layer), quantile=args.quantile,
                      batch_size=args.batch_size, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                      workers=args.workers, shard=shard, memory_budget=_budget(args.memory_budget),
                      categories=args.category, layouts=getattr(lm, "layouts", None))


def _with_progress(steps, desc: str, total: int, quiet: bool):
    """Run a generator of DissectProgress with one progress display per phase."""
    bar, phase = None, None
    try:
        for p in steps:
            if p.phase != phase:
                if bar is not None:
                    bar.finish()
                phase = p.phase
                bar = stderr_progress(f"{desc}: {p.phase}", total, "image", quiet=quiet or p.phase in ("thresholds",
                                                                                                      "cached"))
            bar.update(p.done, note=f"{p.skipped} skipped" if p.skipped else None)
    finally:
        if bar is not None:
            bar.finish()


def summary_lines(res, top: int = 5) -> list:
    """The human summary: per layer the interpretable units by category and the best units."""
    lines = []
    for t in res.layers.values():
        s = t.summary(res.categories)
        cats = ", ".join(f"{c} {n}" for c, n in s["by_category"].items() if n)
        distinct = len({u.concept for u in t.units if u.interpretable})
        lines.append(f"{t.name or 'output'}: {s['interpretable']} of {len(t.units)} units interpretable (IoU > 0.04)"
                     + (f": {cats}; {distinct} distinct concepts" if cats else ""))
        for u in sorted(t.units, key=lambda u: (-u.iou, u.unit))[:top]:
            lines.append(f"  unit {u.unit:4d}: {u.describe()}, threshold {u.threshold:.4g}")
    return lines


def _write_result(args, res, name: str, t0: float, note: str = "") -> int:
    out = _check_json_target(args.json)
    doc = res.to_dict()
    doc["model"] = name
    doc["from_cache"] = res.from_cache
    _cache.atomic_write_json(out, doc)
    if not args.quiet:
        resized = res.info.get("concept_set", {}).get("masks_resized", 0)
        if resized:
            print(f"cnnvis: note: {resized} mask{'s' if resized > 1 else ''} differed in size from {'their' if resized > 1 else 'its'} "
                  f"image{'s' if resized > 1 else ''} and {'were' if resized > 1 else 'was'} resized nearest-neighbour "
                  f"to {'their images' if resized > 1 else 'it'}.", file=sys.stderr)
        how = "exact thresholds" if res.method == "exact" else "streaming thresholds (within 1 %)"
        cached = " (from cache)" if res.from_cache else ""
        print(f"cnnvis dissect: {res.images} images ({len(res.skipped)} skipped), {len(res.concepts)} concepts, "
              f"{how} -> {out} in {time.perf_counter() - t0:.1f} s{cached}{note}")
        for line in summary_lines(res, args.top):
            print(line)
    return 1 if any(r.startswith("the model's forward raised") for _, r in res.skipped) else 0


# ============================================================================ one process
def cmd_dissect(args, model_from_args, parser=None, options=()) -> int:
    if not args.layer:
        missing = ["--layer/-l"]
        if parser is not None:
            parser.error(f"the following arguments are required: {', '.join(missing)}")
        raise CnnvisError(f"missing {', '.join(missing)}.")
    if args.thresholds and not args.shard:
        raise CnnvisError("--thresholds goes with --shard I/N (the shards' second run); a single run finds its own.")
    world = _torchrun_world()
    if world is not None and args.shard:
        raise CnnvisError("--shard I/N and torchrun both split the images: use one of them.")
    if args.shard:
        return _shard(args, model_from_args, options)
    if not args.json:
        raise CnnvisError("--json OUT.json is required (where the result goes).")
    _check_json_target(args.json)
    if world is not None:
        return _torchrun(args, model_from_args, options, world)
    t0 = time.perf_counter()
    lm = model_from_args(args)
    d = _dissection(args, lm)
    if d.method_note and not args.quiet:
        print(f"cnnvis: note: {d.method_note}", file=sys.stderr)
    _with_progress(d.run(), "cnnvis dissect", d.total, args.quiet)
    for note in d.notices:
        print(f"cnnvis: note: {note}", file=sys.stderr)
    if d.result is None:
        raise CnnvisError("the dissection stopped before it finished; run the same command again to resume.")
    return _write_result(args, d.result, getattr(lm, "name", type(lm.model).__name__), t0)


# ============================================================================ shards
def _shard(args, model_from_args, options) -> int:
    from ..atlas.merge import parse_shard
    from .parts import PART_JSON, part_of, read_thresholds, write_part

    if not args.out:
        raise CnnvisError("--shard I/N writes a part: give --out DIR_I.")
    index, count = parse_shard(args.shard)
    t0 = time.perf_counter()
    lm = model_from_args(args)
    name, text = getattr(lm, "name", type(lm.model).__name__), model_options_text(args, options)
    d = _dissection(args, lm, (index, count))
    thresholds = read_thresholds(args.thresholds, d) if args.thresholds else None
    out = Path(args.out).expanduser()
    desc = f"cnnvis dissect: shard {index}/{count}"
    with d.opened() as (st, stores):
        _with_progress(d.activations(st, stores), desc, d.total, args.quiet)
        if not st["finished"]:
            raise CnnvisError("the shard stopped before it finished; run the same command again to resume.")
        if thresholds is None:
            part = part_of(d, st, "summary", summaries=d.summaries(st, stores), model_name=name, options=text)
        else:
            _with_progress(d.tally(st, stores, thresholds), desc, d.total, args.quiet)
            if d.tally_result is None:
                raise CnnvisError("the shard stopped before it finished; run the same command again to resume.")
            part = part_of(d, st, "tally", tally=d.tally_result, thresholds=thresholds, model_name=name, options=text)
    write_part(out, part)
    if thresholds is not None:
        d.delete_intermediates()
    if not args.quiet:
        a, b = d.range
        step = ("pass 1 (activations)" if thresholds is None else "the tally")
        nxt = ("merge them for the thresholds, then run every shard again with --thresholds" if thresholds is None
               else "merge them for the result")
        print(f"cnnvis dissect: shard {index}/{count}: images {a}..{b} of {len(d.paths)}, {step} -> {out / PART_JSON} "
              f"in {time.perf_counter() - t0:.1f} s. When all {count} shards are done, {nxt}: cnnvis dissect merge "
              f"DIR_0 ... DIR_{count - 1} --json OUT.json")
    return 0


def cmd_dissect_merge(args, model_from_args=None, options=()) -> int:
    """``cnnvis dissect merge DIR_0 ... DIR_N-1 --json OUT``: thresholds from pass-1 parts, or the result."""
    from .parts import merge_summaries, merge_tallies, read_part, result_of, thresholds_path, write_thresholds

    if _torchrun_world() is not None:
        raise CnnvisError("'cnnvis dissect merge' runs as one process: start it without torchrun.")
    t0 = time.perf_counter()
    out = _check_json_target(args.json)
    parts = [read_part(p) for p in args.parts]
    if parts[0].meta.get("stage") == "summary":
        thresholds, ordered = merge_summaries(parts, 1 - float(parts[0].meta["quantile"]))
        path = thresholds_path(out)
        write_thresholds(path, ordered[0].meta, thresholds)
        if not args.quiet:
            print(f"cnnvis dissect merge: thresholds of {len(ordered)} parts -> {path}. Now run every shard again "
                  f"with --thresholds {path} (the same command otherwise), then merge again.")
        return 0
    tally, thresholds, skipped, ordered, cs = merge_tallies(parts)
    meta = ordered[0].meta
    res = result_of(meta, cs, thresholds, tally, skipped, len(ordered))
    note = ""
    if not args.no_cache:
        note = _cache_merged(args, meta, res, model_from_args, options)
    return _write_result(args, res, meta.get("model") or "?", t0, f"; merged {len(ordered)} parts{note}")


def _cache_merged(args, meta: dict, res, model_from_args, options) -> str:
    """Keep a merged result in the cache, where a one-process run (the window) opens it, when the model
    the parts name is given and is theirs: parts are files, and a cache entry is trusted later."""
    from .parts import whole_key
    key = whole_key(meta)
    if not model_options_text(args, options):
        return " (not kept in the cache: give merge the shards' model options to keep it for the app)"
    lm = model_from_args(args)
    got = _cache.weights_hash(lm.model)
    if got != meta["weights"]:
        raise CnnvisError(f"the model given to merge (weights {got[:12]}…) is not the one the shards dissected "
                          f"(weights {str(meta['weights'])[:12]}…, model options {meta.get('options') or 'none'!r}); "
                          f"give merge the shards' model options, or --no-cache.")
    _cache.atomic_write_json(_cache.cache_dir(args.cache_dir) / f"dissect-{key}" / "result.json", res.to_dict())
    return ""


# ============================================================================ torchrun
def _torchrun(args, model_from_args, options, world) -> int:
    from ..atlas import distributed as dist
    from ..atlas.scan import model_device
    from .parts import DissectPart, SAME_DISSECTION, merge_summaries, merge_tallies, part_meta, part_of, result_of

    t0 = time.perf_counter()
    try:
        args.device = dist.rank_device(world, getattr(args, "device", "auto"))
        lm = model_from_args(args)
        name, text = getattr(lm, "name", type(lm.model).__name__), model_options_text(args, options)
        device, _ = model_device(lm.model)
        with dist.process_group(world, dist.backend_for(device), args.dist_timeout * 60.0):
            d = _dissection(args, lm, (world.rank, world.size))
            dist.agree(world, part_meta(d, "summary", model_name=name), SAME_DISSECTION)
            quiet = args.quiet or not world.main
            desc = f"cnnvis dissect: rank {world.rank}/{world.size}"
            with d.opened() as (st, stores):
                _with_progress(d.activations(st, stores), desc, d.total, quiet)
                part = part_of(d, st, "summary", summaries=d.summaries(st, stores), model_name=name, options=text)
                got = dist.all_gather(world, dict(part.to_payload(), label=f"rank {world.rank}"),
                                      "sharing the quantile summaries")
                thresholds, _ = merge_summaries([DissectPart.from_payload(p) for p in got], 1 - d.quantile)
                _with_progress(d.tally(st, stores, thresholds), desc, d.total, quiet)
                part = part_of(d, st, "tally", tally=d.tally_result, thresholds=thresholds, model_name=name,
                               options=text)
                parts = dist.gather(world, dict(part.to_payload(), label=f"rank {world.rank}"),
                                    "gathering the tallies")
            d.delete_intermediates()
    except dist.PeerLost:
        raise
    except Exception:
        print(f"cnnvis dissect: {world} failed; torchrun stops the other ranks.", file=sys.stderr)
        raise
    if not world.main:
        return 0
    tally, thresholds, skipped, ordered, cs = merge_tallies([DissectPart.from_payload(p) for p in parts])
    res = result_of(ordered[0].meta, cs, thresholds, tally, skipped, world.size)
    if not args.no_cache:
        _cache.atomic_write_json(_cache.cache_dir(args.cache_dir) / f"dissect-{d.whole_key}" / "result.json",
                                 res.to_dict())
    return _write_result(args, res, name, t0, f"; {world.size} ranks")
