"""``cnnvis export``: activations and saliency maps of chosen units as PNG (and .npz) files.

Every image costs **one** recorded forward (:meth:`cnnvis_gui.core.Visualizer.forward`); each
(unit, method) is then one backward on that frame.  An image on which the model's forward raises is
skipped (a failing batch is retried image by image), named in a warning and in the summary, and the
command exits with 1.
"""
from __future__ import annotations

import math
import re
import sys
import time
from pathlib import Path

import numpy as np

from ..core.bounds import check_batch, check_output_size, not_a_file
from ..core.display import MAX_ZOOM, enlarge
from ..core.cams import scorecam_cost
from ..core.files import atomic_save_npz, atomic_write_image, file_name_part, output_path
from ..core.progress import roughly, stderr_progress
from ..options import UsageError, model_from_args, spec_overrides
from .codes import EXIT_FAILURE, EXIT_OK, PROG

__all__ = ["cmd_export", "parse_units", "parse_methods", "safe_name", "EXPORT_METHODS", "DEFAULT_TOP"]

# the saliency methods (core.SALIENCY_METHODS), the CAM family (core.CAM_METHODS), guided Grad-CAM
EXPORT_METHODS = ("gradient", "deconvnet", "guided", "input-x-gradient", "integrated-gradients", "gradcam",
                  "hirescam", "xgradcam", "layercam", "gradcam++", "scorecam", "eigencam", "guided-gradcam",
                  "rollout", "legrad")
_LAYER_CAM_EXPORTS = ("gradcam", "hirescam", "xgradcam", "layercam", "gradcam++", "scorecam", "eigencam")
# core.ATTENTION_CAMS: a ViT's attention layers, no CAM layer; 'all' leaves them out where they cannot run
_ATTENTION_EXPORTS = ("rollout", "legrad")
_CAM_EXPORTS = _LAYER_CAM_EXPORTS + _ATTENTION_EXPORTS
_METHOD_ALIASES = {"guidedgradcam": "guided-gradcam", "guided-grad-cam": "guided-gradcam", "grad-cam": "gradcam",
                   "ig": "integrated-gradients", "integrated-gradient": "integrated-gradients",
                   "inputxgradient": "input-x-gradient", "input-x-grad": "input-x-gradient",
                   "grad-cam++": "gradcam++", "gradcampp": "gradcam++", "gradcamplusplus": "gradcam++",
                   "hires-cam": "hirescam", "xgrad-cam": "xgradcam", "layer-cam": "layercam",
                   "score-cam": "scorecam", "eigen-cam": "eigencam", "attention-rollout": "rollout",
                   "le-grad": "legrad"}
DEFAULT_TOP = 9



# ============================================================================ export helpers
def safe_name(name: str) -> str:
    """A layer name as a file-name part: ``""`` -> ``output``; anything but ``[A-Za-z0-9_.-]`` -> ``_``."""
    if name == "":
        return "output"
    s = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".")
    return s or "layer"


def parse_methods(values, expand_all: bool = True) -> list:
    """``["guided,gradcam", "gradient"]`` -> ``["guided", "gradcam", "gradient"]`` (``all``: every method).

    ``expand_all=False`` leaves ``all`` out: the methods the user named one by one.
    """
    out = []
    for v in values or ():
        for m in str(v).split(","):
            m = m.strip().lower().replace("_", "-")
            if not m:
                continue
            if m == "all":
                out.extend(EXPORT_METHODS if expand_all else ())
                continue
            m = _METHOD_ALIASES.get(m, m)
            if m not in EXPORT_METHODS:
                raise UsageError(f"unknown method {m!r}; choose from {', '.join(EXPORT_METHODS)} "
                                 f"(comma-separated, or 'all')")
            out.append(m)
    seen = []
    for m in out:
        if m not in seen:
            seen.append(m)
    return seen


#: Without the layer's unit count, the most units a ``--units`` text may name (a typo such as
#: ``0-1000000000`` is refused before anything is built; the real bound is checked after the model loads).
MAX_UNITS = 1 << 20


def parse_units(text, n_units: int | None = None):
    """``"0,5,7"`` -> [0, 5, 7]; ``"3-6"`` -> [3, 4, 5, 6]; ``"all"`` -> ``"all"``.

    Every number and range end is checked before a range is expanded: against ``n_units`` (the
    layer's unit count) when given, else against :data:`MAX_UNITS`.
    """
    if text is None:
        return None
    t = str(text).strip().lower()
    if t == "all":
        return "all"
    spans = []
    for part in t.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part) or re.fullmatch(r"(\d+)()", part)
        if not m:
            raise UsageError(f"--units must be comma-separated unit numbers (0,5,7), ranges (0-15) or 'all'; "
                             f"got {text!r}")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if b < a:
            raise UsageError(f"--units: range {part!r} goes backwards")
        spans.append((a, b))
    if not spans:
        raise UsageError("--units is empty")
    limit = n_units if n_units is not None else MAX_UNITS
    for a, b in spans:
        if b >= limit:
            if n_units is not None:
                raise UsageError(f"--units: unit {b} is out of range: the layer has {n_units} units (0..{n_units - 1})")
            raise UsageError(f"--units: {b} is beyond any layer's units (at most {MAX_UNITS}); give the units "
                             f"of the layer, e.g. 0-15, or 'all'")
    if sum(b - a + 1 for a, b in spans) > 4 * limit:   # many overlapping ranges: still bounded
        raise UsageError(f"--units names more than {4 * limit} units")
    return list(dict.fromkeys(u for a, b in spans for u in range(a, b + 1)))


def _parse_objective(text: str):
    t = str(text).strip().lower()
    if t in ("sum", "activation", "max"):
        return t
    m = re.fullmatch(r"(\d+)\s*,\s*(\d+)", t)
    if m:
        return (int(m.group(1)), int(m.group(2)))
    m = re.fullmatch(r"prefix\s*:\s*(\d+)", t)
    if m:                                   # a token layer's prefix token (0: the class token)
        return ("prefix", int(m.group(1)))
    raise UsageError(f"--objective must be sum, activation, max, a position Y,X or prefix:I (a token layer's "
                     f"prefix token I, 0 = the class token); got {text!r}")


class _Item:
    """One image to export: its frame (BGR uint8), its output stem and where it came from."""

    __slots__ = ("stem", "frame", "origin")

    def __init__(self, stem, frame, origin):
        self.stem, self.frame, self.origin = stem, frame, origin


class _Inputs:
    """Turns ``--input`` into a stream of images; counts and reports skipped files."""

    def __init__(self, path: str, recursive: bool, max_frames, frame_step: int, warn):
        from cnnvis_gui import sources

        self.sources = sources
        self.warn = warn
        self.skipped: list = []
        self.kind = None
        self.total = None
        p = Path(path).expanduser()
        self.path = p
        self.max_frames = max_frames
        self.frame_step = max(1, int(frame_step))
        if not p.exists():
            raise UsageError(f"--input: no such file or folder: '{p}'")
        kind = not_a_file(p)
        if kind not in (None, "a folder", "missing"):
            raise UsageError(f"--input: '{p}' is {kind}, not an image, video or folder")
        if not p.is_dir():
            try:
                sources.check_readable(p)
            except sources.SourceError as e:
                raise UsageError(f"--input: {e}") from None
        if p.is_dir():
            self.kind = "folder"
            folder = sources.ImageFolderSource(p, recursive=recursive, wrap=False)  # SourceError if none usable
            self.paths = folder.paths
            self.root = p
            for q in folder.skipped:
                self._skip(q, "not a readable image")
            folder.close()
            self.total = len(self.paths)
        elif p.suffix.lower() in sources.VIDEO_EXTENSIONS or not (
                p.suffix.lower() in sources.IMAGE_EXTENSIONS or sources.have_image_reader(p)):
            self.kind = "video"
            self._open_video()
        else:
            self.kind = "image"
            try:
                self.frame = sources.load_image(p)
            except sources.SourceError as e:
                raise UsageError(f"--input: cannot read image '{p}': {_why(e, p)}") from None
            self.total = 1

    def _skip(self, path, why):
        self.skipped.append(Path(path))
        self.warn(f"skipped '{path}': {why}")

    def _open_video(self):
        import cv2

        name = self.sources.opencv_name(self.path)
        if name is None:   # OpenCV crashes on such a name
            raise UsageError(f"--input: cannot open '{self.path}' as a video: its file name is not valid UTF-8, "
                             f"which OpenCV cannot open; rename the file")
        with self.sources.quiet_opencv():
            cap = cv2.VideoCapture(name)
        if not cap.isOpened():
            cap.release()
            raise UsageError(f"--input: cannot read '{self.path}': neither an image nor a video OpenCV can decode")
        too_big = self.sources.oversized_frames(cap)
        if too_big:                                 # refused before a frame is read
            cap.release()
            raise UsageError(f"--input: video '{self.path.name}' {too_big.rstrip('.')}")
        self.cap = cap
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        total = math.ceil(n / self.frame_step) if n > 0 else None
        if self.max_frames is not None:
            total = min(total, self.max_frames) if total is not None else self.max_frames
        self.total = total

    def __iter__(self):
        if self.kind == "image":
            yield _Item(file_name_part(self.path.stem, "image"), self.frame, str(self.path))
        elif self.kind == "folder":
            used: set = set()
            for q in self.paths:
                try:
                    frame = self.sources.load_image(q)
                except self.sources.SourceError as e:
                    self._skip(q, _why(e, q))
                    continue
                yield _Item(_unique_stem(q, self.root, used), frame, str(q))
        else:
            yield from self._video_frames()

    def _video_frames(self):
        cap, index, done = self.cap, 0, 0
        try:
            while self.max_frames is None or done < self.max_frames:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                if index % self.frame_step == 0:
                    done += 1
                    yield _Item(file_name_part(f"{self.path.stem}_f{index:06d}"), self.sources.to_bgr8(frame),
                                f"{self.path}#{index}")
                index += 1
        finally:
            cap.release()
        if done == 0:
            raise UsageError(f"--input: video '{self.path}' has no frames OpenCV can decode")


def _why(e: Exception, path: Path) -> str:
    """The reason in a SourceError's message, without the file name it starts with."""
    s = str(e)
    for lead in (f"'{path.name}' ", f"'{path}': ", f"'{path}' "):
        if s.startswith(lead):
            return s[len(lead):]
    return s


def _unique_stem(path: Path, root: Path, used: set) -> str:
    rel = path.relative_to(root).with_suffix("")
    stem = file_name_part("__".join(rel.parts), "image")      # never "..", "." or a path
    cand = stem
    if cand in used:
        cand = f"{stem}_{path.suffix.lstrip('.').lower()}"
    n = 2
    while cand in used:
        cand = f"{stem}_{n}"
        n += 1
    used.add(cand)
    return cand


def _write_png(path: Path, rgb: np.ndarray, zoom: int) -> None:
    """Write a picture (enlarged ``zoom`` times) by the one atomic writer: never a torn file."""
    atomic_write_image(path, enlarge(np.ascontiguousarray(rgb), zoom))


def _top_units(acts, k: int) -> list:
    a = acts.float().reshape(acts.shape[0], -1)
    score = a.amax(dim=1)
    import torch

    k = max(0, min(int(k), score.numel()))
    return [int(i) for i in torch.topk(score, k).indices]


# ============================================================================ export
def cmd_export(args) -> int:
    """``cnnvis export``: PNGs (and optionally a .npz) per image, unit and method."""
    import torch
    from cnnvis_gui.core import (Visualizer, ActivationMosaic, CnnvisError, ModelForwardError, saliency_to_image,
                                 overlay, heatmap, colormap_lut)
    from cnnvis_gui.core.attribution import check_options as check_attribution_options

    t0 = time.perf_counter()
    methods = parse_methods(args.method) or ["guided"]
    units_arg = parse_units(args.units)
    if args.top is not None and args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    top = args.top if args.top is not None else (DEFAULT_TOP if units_arg is None else None)
    objective = _parse_objective(args.objective)
    if not 1 <= args.zoom <= MAX_ZOOM:
        raise UsageError(f"--zoom must be 1..{MAX_ZOOM}, got {args.zoom}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1, got {args.max_frames}")
    if not 0.0 <= args.cam_alpha <= 1.0:
        raise UsageError(f"--cam-alpha must be in [0, 1], got {args.cam_alpha}")
    try:
        check_attribution_options(args.smoothgrad, args.noise, args.steps, args.seed)
    except CnnvisError as e:
        raise UsageError(f"--{e}") from None
    smooth = dict(smoothgrad=args.smoothgrad, noise=args.noise, steps=args.steps, seed=args.seed)
    colormap_lut(args.cmap)        # an unknown colour map fails now, naming the known ones

    quiet = args.quiet
    progress = None       # a bar on a terminal, log lines otherwise (core.progress)

    def warn(msg):
        text = f"{PROG}: warning: {msg}"
        if progress is not None:
            progress.write(text)
        else:
            print(text, file=sys.stderr)

    if not Path(args.input).expanduser().exists():   # before the (slower) model load
        raise UsageError(f"--input: no such file or folder: '{Path(args.input).expanduser()}'")
    given = spec_overrides(args)
    if "height" in given:             # --input-size x --zoom, before a model is built at that size
        check_output_size(given["height"], given["width"], args.zoom, "--zoom")
    lm = model_from_args(args)
    spec = lm.spec
    # sizes that depend on the model: bounded before anything is allocated for them
    check_output_size(spec.height, spec.width, args.zoom, "--zoom")
    check_batch(args.batch_size, spec.shape)
    vis = Visualizer(lm.model, spec, layouts=getattr(lm, "layouts", None))
    mm = vis.model_map()
    info = mm[args.layer]          # CnnvisError naming the nearest valid layers
    layer = info.name
    if not info.visualizable:
        raise UsageError(f"layer {info.display_name!r} ({info.type}) cannot be visualized: {info.reason}")
    n_units = info.units
    if units_arg == "all":
        fixed_units = list(range(n_units))
    elif units_arg is not None:
        try:
            fixed_units = parse_units(args.units, n_units)
        except UsageError:
            bad = max(units_arg)
            raise UsageError(f"unit {bad} is out of range for layer {layer or 'output'!r}: it has {n_units} "
                             f"units (0..{n_units - 1})") from None
    else:
        fixed_units = None
    cam_methods = set(_LAYER_CAM_EXPORTS + ("guided-gradcam",)) & set(methods)    # the ones with a CAM layer
    named = set(parse_methods(args.method, expand_all=False))
    if args.cam_layer is not None:
        cinfo = mm[args.cam_layer]
        if not cinfo.visualizable or cinfo.map_shape is None or len(cinfo.map_shape) != 2:
            raise UsageError(f"--cam-layer {cinfo.display_name!r} needs units with an H x W map (C x H x W, "
                             f"H x W x C or tokens on a grid); it has "
                             f"{'x'.join(map(str, cinfo.shape)) + ' (' + cinfo.layout_name + ')' if cinfo.shape else cinfo.reason}")
        cam_layer = cinfo.name
    else:
        cam_layer = None

    inputs = _Inputs(args.input, args.recursive, args.max_frames, args.frame_step, warn)
    out_dir = Path(args.out).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    lname = safe_name(layer)

    progress = stderr_progress(PROG + " export", inputs.total, "image", quiet=quiet)

    n_images = n_files = n_requests = 0
    notices_shown: set = set()
    resolved_cam = {"name": cam_layer}
    model_failed: list = []      # (origin, message) of the images the model's forward raised on
    finite = {"results": 0, "bad": 0, "warned_forward": False, "warned_grad": False}

    def check_finite(frame, values, origin, what) -> None:
        """Count a result; warn once, naming the first layer with NaN/Inf, when it is not finite."""
        finite["results"] += 1
        if bool(torch.isfinite(values).all()):
            return
        finite["bad"] += 1
        first = frame.first_nonfinite_layer()
        if first is not None and not finite["warned_forward"]:
            finite["warned_forward"] = True
            warn(f"the model's activations hold NaN/Inf, first in layer {first or 'output'!r} (image "
                 f"'{origin}'); pictures made from them are blank or grey")
        elif first is None and not finite["warned_grad"]:
            finite["warned_grad"] = True
            warn(f"{what} holds NaN/Inf for image '{origin}' although every activation is finite (the backward "
                 f"pass produced them); its picture is blank or grey")

    def export_batch(batch, frame):
        """Write every file of a recorded batch; each unit's PNGs as soon as they are computed."""
        nonlocal n_images, n_files, n_requests
        for n in frame.notices:
            if n not in notices_shown and n != frame.deconvnet_notice:   # said below, per method asked for
                notices_shown.add(n)
                warn(n)
        acts = frame.activations(layer)             # the model's own layout: what raw.npz keeps
        maps = frame.unit_maps(layer)               # units first, their map after (its layout's view)
        layout = frame.layout(layer)
        per_item = [fixed_units if fixed_units is not None else _top_units(maps[i], top)
                    for i in range(len(batch))]
        unit0 = next((us[0] for us in per_item if us), None)
        for m in methods:           # deconvnet without max-pool switches: the same picture for every image
            note = frame.input_independent(layer, unit0, m, objective) if unit0 is not None else None
            if note and note not in notices_shown:
                notices_shown.add(note)
                warn(note)
        if cam_methods and resolved_cam["name"] is None:
            c = frame.default_cam_layer(layer)
            if c is None:
                raise UsageError(f"no convolutional layer runs before {layer or 'output'!r}, so a CAM has "
                                 f"nowhere to look; choose one with --cam-layer")
            resolved_cam["name"] = c
        cl = resolved_cam["name"]
        for m in [m for m in methods if m in _ATTENTION_EXPORTS]:     # before any file: said, or left out of 'all'
            why = frame.cam_unavailable(layer, m)
            if why is None:
                continue
            if m in named:
                raise UsageError(f"--method {m}: {why}")
            methods.remove(m)
            warn(f"--method all: {m} left out: {why}")
        if "scorecam" in methods and not resolved_cam.get("costed"):   # its cost, said before it starts
            resolved_cam["costed"] = True
            n, secs = scorecam_cost(frame, frame.activations(cl)[:1])
            each = len(fixed_units) if fixed_units is not None else top
            progress.write(f"{PROG}: Score-CAM at {cl!r} scores {n} masked inputs per unit and image: "
                           f"{roughly(secs)} per unit, {roughly(secs * each)} per image "
                           f"({each} unit{'s' if each != 1 else ''}), estimated from the first forward")
        inp = frame.input.cpu()
        acts_np = acts.cpu().numpy()
        maps_np = maps.cpu().numpy()
        dirs, shown = [], []
        for i, it in enumerate(batch):
            d = output_path(out_dir, it.stem)      # inside --out whatever the input's name
            d.mkdir(parents=True, exist_ok=True)
            dirs.append(d)
            shown.append(spec.to_image(inp[i]))
            check_finite(frame, acts[i], it.origin, f"the activations of {layer or 'output'!r}")
            _write_png(d / "input.png", shown[i], args.zoom)
            _write_png(output_path(d, f"{lname}_mosaic.png"), ActivationMosaic(np.ascontiguousarray(maps_np[i])).image,
                       args.zoom)
            n_files += 2
        # one backward per (unit, method) for the whole batch; each sample keeps its own units.  The
        # PNGs are written at once and the map dropped, so memory does not grow with the number of
        # units; only --raw keeps the float32 maps (of one batch) until raw.npz is written.
        raw = [{m: [] for m in methods} for _ in batch] if args.raw else None
        wanted = [set(us) for us in per_item]
        done_before = n_images + len(model_failed)
        todo = list(dict.fromkeys(u for us in per_item for u in us))
        n_maps, n_made = max(1, len(todo) * len(methods)), 0
        for u in todo:
            for m in methods:
                if m in _ATTENTION_EXPORTS:
                    v = frame.cam(layer, u, None, m, objective)
                elif m in _CAM_EXPORTS:
                    v = frame.cam(layer, u, cl, m, objective,
                                  progress=(lambda r, u=u: progress.note(f"unit {u}: {r.status()}")
                                            if not r.finished else progress.note("")) if m == "scorecam" else None)
                elif m == "guided-gradcam":
                    v = frame.guided_grad_cam(layer, u, cl, objective)
                else:
                    v = frame.saliency(layer, u, m, objective, **smooth)
                v = v.detach().cpu()
                n_requests += 1
                for i in range(len(batch)):
                    if u not in wanted[i]:
                        continue
                    a = v[i].numpy()
                    check_finite(frame, v[i], batch[i].origin, f"the {m} map of unit {u}")
                    if m in _CAM_EXPORTS:
                        img = heatmap(a, args.cmap) if args.cam_style == "heatmap" else \
                            overlay(shown[i], a, alpha=args.cam_alpha, cmap=args.cmap)
                    else:
                        img = saliency_to_image(a, filter=args.filter, sign=args.sign, clip=args.clip,
                                                percentile=args.percentile)
                    _write_png(output_path(dirs[i], f"{lname}_u{u:04d}_{m}.png"), img, args.zoom)
                    n_files += 1
                    if raw is not None:
                        raw[i][m].append((u, a.copy()))
                del v
                n_made += 1     # a batch with many units and slow methods reports within the batch
                progress.update(done_before + len(batch) * n_made / (n_maps + 1))
        for i, it in enumerate(batch):
            if raw is not None:
                arrays = {"input": inp[i:i + 1].numpy(), "image": shown[i],
                          "activations": acts_np[i:i + 1], "units": np.asarray(per_item[i], dtype=np.int64),
                          "layout": np.asarray(layout.name), "layer": np.asarray(layer), "methods": np.asarray(methods),
                          "objective": np.asarray(str(objective)), "source": np.asarray(it.origin)}
                if cam_methods:
                    arrays["cam_layer"] = np.asarray(cl)
                for m in methods:
                    key = (m.replace("++", "pp") if m in _CAM_EXPORTS else
                           "saliency_" + m.replace("-", "_"))
                    by_unit = dict(raw[i][m])
                    stack = [by_unit[u] for u in per_item[i]]
                    arrays[key] = np.stack(stack) if stack else np.zeros((0,))
                raw[i] = None
                atomic_save_npz(dirs[i] / "raw.npz", durable=False, compressed=True, **arrays)
                n_files += 1
            n_images += 1
            progress.update(n_images + len(model_failed))

    def flush(batch):
        """Forward a batch; when the model raises, retry its images one by one and skip the failing ones."""
        try:
            frame = vis.forward(torch.cat([spec.to_tensor(it.frame) for it in batch]))
        except ModelForwardError as e:
            if len(batch) > 1:
                for it in batch:
                    flush([it])
                return
            model_failed.append((batch[0].origin, str(e)))
            warn(f"skipped '{batch[0].origin}': {e}")
            progress.update(n_images + len(model_failed))
            return
        try:
            export_batch(batch, frame)
        finally:
            frame.close()

    try:
        batch = []
        for item in inputs:
            batch.append(item)
            if len(batch) >= args.batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        progress.finish()
    if n_images == 0 and model_failed:
        print(f"{PROG}: error: the model's forward raised on every image ({len(model_failed)}); first: "
              f"'{model_failed[0][0]}': {model_failed[0][1]}", file=sys.stderr)
        return EXIT_FAILURE
    if finite["results"] and finite["bad"] == finite["results"]:
        print(f"{PROG}: error: every result is NaN/Inf ({finite['bad']} maps): the model produces non-finite "
              f"values on these inputs (see the warning above); the files written show nothing", file=sys.stderr)
        return EXIT_FAILURE
    if n_images == 0:
        raise UsageError(f"--input: none of the images in '{inputs.path}' could be read "
                         f"({len(inputs.skipped)} skipped)")
    secs = time.perf_counter() - t0
    if not quiet:
        units_text = ("all " + str(n_units) if units_arg == "all" else
                      f"top {top}" if fixed_units is None else ",".join(map(str, fixed_units)))
        n_skipped = len(inputs.skipped) + len(model_failed)
        skipped = f" ({n_skipped} skipped)" if n_skipped else ""
        print(f"{PROG}: exported {n_images} image{'s' if n_images != 1 else ''}{skipped}, layer "
              f"{layer or 'output'!r}, units {units_text}, methods {','.join(methods)}: {n_requests} backward "
              f"pass{'es' if n_requests != 1 else ''}, {n_files} files written to {out_dir} in {secs:.1f} s")
    if model_failed:
        print(f"{PROG}: the model's forward raised on {len(model_failed)} image"
              f"{'s' if len(model_failed) != 1 else ''} (skipped, exit code {EXIT_FAILURE}): "
              + ", ".join(f"'{o}'" for o, _ in model_failed), file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
