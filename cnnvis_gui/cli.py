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
a :class:`~cnnvis_gui.core.CnnvisError` it raises becomes ``cnnvis: error: <message>``
with exit code 2 (no traceback), except :class:`~cnnvis_gui.core.ModelForwardError` (the
model's own forward raised), which gives exit code 1.

``cnnvis export`` skips an image on which the model's forward raises (a failing batch is
retried image by image), names it in a warning and in the summary, and exits with 1 when
any image was skipped that way.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

from .core.attribution import DEFAULT_NOISE, DEFAULT_STEPS
from .core.display import MAX_ZOOM, enlarge
from .options import UsageError, add_model_arguments, apply_thread_option, model_from_args

__all__ = ["main", "build_parser", "parse_units", "parse_methods", "safe_name", "EXPORT_METHODS", "EXIT_OK",
           "EXIT_FAILURE", "EXIT_USAGE"]

PROG = "cnnvis"
EXIT_OK = 0
EXIT_FAILURE = 1      #: the run started but failed (model forward raised, disk full...)
EXIT_USAGE = 2        #: a bad argument: unknown layer, unit out of range, missing file...
# the saliency methods (core.SALIENCY_METHODS), the CAM family (core.CAM_METHODS), guided Grad-CAM
EXPORT_METHODS = ("gradient", "deconvnet", "guided", "input-x-gradient", "integrated-gradients", "gradcam",
                  "hirescam", "xgradcam", "layercam", "gradcam++", "scorecam", "eigencam", "guided-gradcam")
_CAM_EXPORTS = ("gradcam", "hirescam", "xgradcam", "layercam", "gradcam++", "scorecam", "eigencam")
_METHOD_ALIASES = {"guidedgradcam": "guided-gradcam", "guided-grad-cam": "guided-gradcam", "grad-cam": "gradcam",
                   "ig": "integrated-gradients", "integrated-gradient": "integrated-gradients",
                   "inputxgradient": "input-x-gradient", "input-x-grad": "input-x-gradient",
                   "grad-cam++": "gradcam++", "gradcampp": "gradcam++", "gradcamplusplus": "gradcam++",
                   "hires-cam": "hirescam", "xgrad-cam": "xgradcam", "layer-cam": "layercam",
                   "score-cam": "scorecam", "eigen-cam": "eigencam"}
DEFAULT_TOP = 9


# ============================================================================ info
def _layer_dict(l) -> dict:
    return {"name": l.name, "display_name": l.display_name, "type": l.type,
            "shape": list(l.shape) if l.shape is not None else None, "units": l.units, "calls": l.calls,
            "visualizable": l.visualizable, "reason": l.reason, "is_conv": l.is_conv, "order": l.order,
            "depth": l.depth}


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

    lm = model_from_args(args)
    mm = Visualizer(lm.model, lm.spec).model_map()
    if args.json:
        doc = {
            "name": lm.name, "source": lm.source, "arch": lm.arch, "device": str(lm.device),
            "spec": lm.spec.to_dict(), "spec_text": lm.spec.describe(),
            "output_shape": list(lm.output_shape) if lm.output_shape is not None else None,
            "labels": lm.labels, "notes": list(lm.notes),
            "default_layer": mm.default_layer, "relu_calls": mm.relu_calls,
            "functional_relu_calls": mm.functional_relu_calls, "other_activations": mm.other_activations,
            "generalized_activations": mm.generalized_activations,
            "layers": [_layer_dict(l) for l in mm],
            "threads": _thread_policy(args).threads, "threads_reason": _thread_policy(args).reason,
            "malloc": _malloc(args),
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    out = sys.stdout
    out.write(f"model:   {lm.name}  ({type(lm.model).__name__})\n")
    out.write(f"source:  {lm.source}\n")
    out.write(f"device:  {lm.device}\n")
    out.write(f"threads: {_thread_policy(args).describe()}\n")
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
    out.write(f"relus:   {act}\n")
    out.write(f"default layer: {mm.default_layer or 'output'}\n")
    for n in lm.notes:
        out.write(f"note:    {n}\n")
    out.write("\n" + mm.describe() + "\n")
    return EXIT_OK


# ============================================================================ export helpers
def safe_name(name: str) -> str:
    """A layer name as a file-name part: ``""`` -> ``output``; anything but ``[A-Za-z0-9_.-]`` -> ``_``."""
    if name == "":
        return "output"
    s = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".")
    return s or "layer"


def parse_methods(values) -> list:
    """``["guided,gradcam", "gradient"]`` -> ``["guided", "gradcam", "gradient"]`` (``all``: every method)."""
    out = []
    for v in values or ():
        for m in str(v).split(","):
            m = m.strip().lower().replace("_", "-")
            if not m:
                continue
            if m == "all":
                out.extend(EXPORT_METHODS)
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
    raise UsageError(f"--objective must be sum, activation, max or a position Y,X; got {text!r}")


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
        self.cap = cap
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        total = math.ceil(n / self.frame_step) if n > 0 else None
        if self.max_frames is not None:
            total = min(total, self.max_frames) if total is not None else self.max_frames
        self.total = total

    def __iter__(self):
        if self.kind == "image":
            yield _Item(self.path.stem, self.frame, str(self.path))
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
                    yield _Item(f"{self.path.stem}_f{index:06d}", self.sources.to_bgr8(frame),
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
    stem = "__".join(rel.parts)
    stem = re.sub(r"[^A-Za-z0-9_.+=@-]", "_", stem) or "image"
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
    import cv2

    img = enlarge(np.ascontiguousarray(rgb), zoom)
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError(f"could not encode {path}")
    _atomic_write(path, buf.tobytes())


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and ``os.replace``: never a torn file."""
    from .atlas.cache import atomic_write_bytes
    atomic_write_bytes(path, data, durable=False)


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
    bar = None
    show_bar = (not quiet) and sys.stderr.isatty()

    def warn(msg):
        text = f"{PROG}: warning: {msg}"
        if bar is not None:
            bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    if not Path(args.input).expanduser().exists():   # before the (slower) model load
        raise UsageError(f"--input: no such file or folder: '{Path(args.input).expanduser()}'")
    lm = model_from_args(args)
    spec = lm.spec
    vis = Visualizer(lm.model, spec)
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
    cam_methods = set(_CAM_EXPORTS + ("guided-gradcam",)) & set(methods)
    if args.cam_layer is not None:
        cinfo = mm[args.cam_layer]
        if not cinfo.visualizable or cinfo.shape is None or len(cinfo.shape) != 3:
            raise UsageError(f"--cam-layer {cinfo.display_name!r} needs a C x H x W output; it has "
                             f"{'x'.join(map(str, cinfo.shape)) if cinfo.shape else cinfo.reason}")
        cam_layer = cinfo.name
    else:
        cam_layer = None

    inputs = _Inputs(args.input, args.recursive, args.max_frames, args.frame_step, warn)
    out_dir = Path(args.out).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    lname = safe_name(layer)

    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    if show_bar and tqdm is not None:
        bar = tqdm(total=inputs.total, unit="img", desc=PROG + " export", file=sys.stderr, dynamic_ncols=True)

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
            if n not in notices_shown:
                notices_shown.add(n)
                warn(n)
        acts = frame.activations(layer)
        per_item = [fixed_units if fixed_units is not None else _top_units(acts[i], top)
                    for i in range(len(batch))]
        if cam_methods and resolved_cam["name"] is None:
            c = frame.default_cam_layer(layer)
            if c is None:
                raise UsageError(f"no convolutional layer runs before {layer or 'output'!r}, so a CAM has "
                                 f"nowhere to look; choose one with --cam-layer")
            resolved_cam["name"] = c
        cl = resolved_cam["name"]
        inp = frame.input.cpu()
        acts_np = acts.cpu().numpy()
        dirs, shown = [], []
        for i, it in enumerate(batch):
            d = out_dir / it.stem
            d.mkdir(parents=True, exist_ok=True)
            dirs.append(d)
            shown.append(spec.to_image(inp[i]))
            check_finite(frame, acts[i], it.origin, f"the activations of {layer or 'output'!r}")
            _write_png(d / "input.png", shown[i], args.zoom)
            _write_png(d / f"{lname}_mosaic.png", ActivationMosaic(acts_np[i]).image, args.zoom)
            n_files += 2
        # one backward per (unit, method) for the whole batch; each sample keeps its own units.  The
        # PNGs are written at once and the map dropped, so memory does not grow with the number of
        # units; only --raw keeps the float32 maps (of one batch) until raw.npz is written.
        raw = [{m: [] for m in methods} for _ in batch] if args.raw else None
        wanted = [set(us) for us in per_item]
        for u in dict.fromkeys(u for us in per_item for u in us):
            for m in methods:
                if m in _CAM_EXPORTS:
                    v = frame.cam(layer, u, cl, m, objective)
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
                        img = saliency_to_image(a, filter=args.filter)
                    _write_png(dirs[i] / f"{lname}_u{u:04d}_{m}.png", img, args.zoom)
                    n_files += 1
                    if raw is not None:
                        raw[i][m].append((u, a.copy()))
                del v
        for i, it in enumerate(batch):
            if raw is not None:
                arrays = {"input": inp[i:i + 1].numpy(), "image": shown[i],
                          "activations": acts_np[i:i + 1], "units": np.asarray(per_item[i], dtype=np.int64),
                          "layer": np.asarray(layer), "methods": np.asarray(methods),
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
                import io
                buf = io.BytesIO()
                np.savez_compressed(buf, **arrays)
                _atomic_write(dirs[i] / "raw.npz", buf.getvalue())
                n_files += 1
            n_images += 1
            if bar is not None:
                bar.update(1)

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
            if bar is not None:
                bar.update(1)
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
        if bar is not None:
            bar.close()
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

    pi = sub.add_parser("info", help="print a model's layers (type, output shape, units, calls) and input spec",
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
                         f"(default guided)")
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
    io.add_argument("--objective", default="sum", metavar="sum|activation|max|Y,X",
                    help="what is maximized for a unit: the sum over positions (default), 1/2 sum of squares, the "
                         "strongest position, or one position Y,X of the unit's map")
    io.add_argument("--filter", default="raw", choices=("raw", "gray", "norm", "normblur"),
                    help="how gradients become pictures (default raw: signed, 0 = mid grey)")
    io.add_argument("--cam-layer", metavar="L",
                    help="the CAM methods' layer (default: the last convolution that runs before --layer)")
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
    """Let ``cnnvis_gui.atlas.commands`` add its sub-commands (only skipped when it does not exist)."""
    try:
        from cnnvis_gui.atlas.commands import register
    except ModuleNotFoundError as e:
        if e.name in ("cnnvis_gui.atlas", "cnnvis_gui.atlas.commands"):
            return
        raise
    register(sub, add_model_arguments, model_from_args)


def main(argv=None) -> int:
    """Entry point of the ``cnnvis`` console script; returns the exit code."""
    from cnnvis_gui.core import CnnvisError, ModelForwardError

    argv = list(sys.argv[1:] if argv is None else argv)
    show_tb = "--traceback" in argv   # accepted anywhere on the line
    argv = [a for a in argv if a != "--traceback"]
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        args.thread_policy = apply_thread_option(args)
        from cnnvis_gui.core.allocator import reuse_freed_memory
        args.malloc = reuse_freed_memory()
        return int(args.func(args) or 0)
    except ModelForwardError as e:   # the run started, the model itself raised: not a bad argument
        if show_tb:
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except (UsageError, CnnvisError) as e:
        if show_tb:
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cnnvis info | head`: the reader went away; not an error of ours
        import os
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    except (ValueError, OSError, RuntimeError) as e:
        if show_tb:
            raise
        print(f"{PROG}: error: {type(e).__name__}: {e} (run with --traceback for details)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
