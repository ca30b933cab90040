"""The one background thread that does all model work for the main window.

Snapshot, then compute (napari ``_layer_slicer``): the GUI thread freezes the user's
choices into an immutable :class:`RenderRequest` and hands it to
:meth:`RenderWorker.submit`.  The worker holds a single pending slot: a request that
arrives while another waits *replaces* it (counted in :attr:`RenderWorker.dropped`),
so the worker always computes the newest choice and never a backlog.

A request with a new ``frame_id`` runs one forward (``Visualizer.forward``) that records
only the layers the request reads (the grid's, the backprop target's, the CAM layer): every
other module call keeps PyTorch's hook-free path, so a live source runs at the bare
forward's speed.  A request on the same frame reuses the kept
:class:`~cnnvis_gui.core.Frame` and runs backward passes only; the first one that reads a
layer the frame did not record runs that frame's input once more recording every module,
so exploring a still frame afterwards costs backward passes only.  Results leave the thread
only through Qt signals, as a frozen :class:`RenderResult` holding freshly made numpy arrays
that nobody mutates again.
"""
from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from PyQt5 import QtCore

from ..core import CnnvisError
from ..core.attribution import DEFAULT_NOISE, DEFAULT_STEPS
from .request_thread import (_LINGERING, NewestRequestThread, stop_thread,  # noqa: F401 - also here, as before
                             stuck_threads)
from ..core.saliency_display import DEFAULT_CLIP, DEFAULT_PERCENTILE, DEFAULT_SIGN

#: the backprop rules (the grid's "gradients" mode uses one of them at the grid's layer)
SALIENCY_METHODS = ("gradient", "deconvnet", "guided")
#: the window's method names (``_`` for ``-``) -> the core's, for the input-shaped maps and the CAMs
_SALIENCY = {"gradient": "gradient", "deconvnet": "deconvnet", "guided": "guided",
             "input_x_gradient": "input-x-gradient", "integrated_gradients": "integrated-gradients"}
_CAMS = ("gradcam", "hirescam", "xgradcam", "layercam", "gradcam++", "scorecam", "eigencam")
#: the attention methods (core.ATTENTION_CAMS): every attention layer, no CAM layer
_ATTENTION = ("rollout", "legrad")


@dataclass(frozen=True)
class RenderRequest:
    """Everything one render needs, frozen on the GUI thread."""

    seq: int
    gen: int                          # model generation (bumped by every model / spec change)
    frame_id: int                     # bumped by every new input frame
    frame: Optional[np.ndarray]       # H x W x 3 uint8 BGR, read-only; None = no input yet
    layer: str
    unit: int
    grid_mode: str = "activations"    # or "gradients" (gradient of the backprop unit at `layer`)
    methods: tuple = ("guided",)      # backprop panes to compute, () = backprop off
    bp_layer: str = ""
    bp_unit: int = 0
    filter: str = "normblur"
    sign: str = DEFAULT_SIGN
    clip: str = DEFAULT_CLIP
    percentile: float = DEFAULT_PERCENTILE
    overlay: bool = False
    cam_layer: Optional[str] = None
    objective: str = "sum"
    smoothgrad: int = 0               # SmoothGrad copies for the gradient methods (0: off)
    noise: float = DEFAULT_NOISE
    steps: int = DEFAULT_STEPS        # integrated-gradients points
    normalize: str = "layer"
    gamma: float = 1.0
    aspect: float = 1.0               # width / height of the grid view (the mosaic fills it)
    labels: Optional[tuple] = None
    output_layer: str = ""


@dataclass(frozen=True)
class BackpropImage:
    method: str
    image: np.ndarray                 # H x W x 3 uint8 RGB
    raw: np.ndarray                   # saliency C x H x W, or Grad-CAM H x W
    cam_layer: Optional[str] = None
    note: Optional[str] = None
    unavailable: bool = False         # the method cannot map this unit here: ``note`` says why (image: the input, dim)


@dataclass(frozen=True)
class RenderResult:
    seq: int
    gen: int
    frame_id: int
    forwarded: bool
    layer: str
    unit: int
    bp: tuple
    grid_mode: str
    input_rgb: np.ndarray
    mosaic: object                    # core.ActivationMosaic (read-only use on the GUI thread)
    unit_max: np.ndarray
    unit_mean: np.ndarray
    unit_map: np.ndarray              # float32 h x w of the selected unit (raw values)
    unit_levels: tuple
    unit_rgb: np.ndarray              # the same through the inferno colour map, H x W x 3 uint8
    backprops: tuple                  # of BackpropImage
    predictions: tuple                # of (label, probability)
    forward_ms: float
    backward_ms: float
    total_ms: float
    notices: tuple
    raw_input: np.ndarray = field(repr=False, default=None)
    raw_grid: np.ndarray = field(repr=False, default=None)
    partial: bool = False             # slow work (Score-CAM) still runs for the panes not in ``backprops``
    layout: str = ""                  # the grid layer's layout (nchw, nhwc, tokens:P+HxW, flat)
    prefix_tokens: np.ndarray = field(repr=False, default=None)   # a token layer's C x P prefix tokens

    @property
    def prefix_values(self) -> tuple:
        """The selected unit's prefix tokens (class, distillation, registers): beside its map, not on it."""
        if self.prefix_tokens is None:
            return ()
        return tuple(float(v) for v in self.prefix_tokens[self.unit])


@dataclass(frozen=True)
class ModelReady:
    gen: int
    model_map: object
    device: str
    notices: tuple = ()
    unavailable: tuple = ()           # ((method, why), ...): methods this model cannot run (rollout / LeGrad on a CNN)


class _ForwardFailed(Exception):
    """The forward of a new frame raised (``__cause__``): only then is the kept frame dropped."""

    def __init__(self, detail: str):
        super().__init__("forward failed")
        self.detail = detail


@dataclass(frozen=True)
class RenderFailure:
    seq: int
    gen: int
    message: str
    detail: str = ""


def _choice(req: RenderRequest) -> tuple:
    """What the user chose in a request, leaving out the frame."""
    return tuple(getattr(req, f.name) for f in dataclasses.fields(req)
                 if f.name not in ("seq", "frame_id", "frame"))


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _unit_map(grid: np.ndarray, unit: int) -> np.ndarray:
    """One unit's values as a 2-D map: h x w (C x h x w), 1 x L (C x L) or 1 x 1 (features F)."""
    per_unit = grid[unit]
    if per_unit.ndim == 2:
        return per_unit
    if per_unit.ndim <= 1:
        return per_unit.reshape(1, -1)
    raise CnnvisError(f"layer activations of shape {tuple(grid.shape)} per sample cannot be shown as unit maps "
                      f"(expected C x h x w, C x L or F)")


def _is_output(frame, layer: str) -> bool:
    """``layer``'s activations are the model's output itself (fc2 of a net that returns fc2's output).

    Compared before any NaN is replaced for display, and NaN equal to NaN: a class whose score is
    NaN keeps its label; in the gradient grid the layer's units are still the classes.
    """
    out = getattr(frame, "output", None)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        return False
    try:
        acts = frame.activations(layer)
    except Exception:  # noqa: BLE001 - a layer without activations of its own is not the output
        return False
    if not isinstance(acts, torch.Tensor) or acts.shape != out.shape:
        return False
    return bool(np.array_equal(acts.detach().float().cpu().numpy(), out.detach().float().cpu().numpy(),
                               equal_nan=True))


def _model_device(model) -> str:
    try:
        return str(next(model.parameters()).device)
    except StopIteration:
        return "cpu"


class RenderWorker(QtCore.QThread):
    """Background renderer: newest request only, forward once per frame, backward per choice."""

    rendered = QtCore.pyqtSignal(object)     # RenderResult
    failed = QtCore.pyqtSignal(object)       # RenderFailure
    modelReady = QtCore.pyqtSignal(object)   # ModelReady
    progress = QtCore.pyqtSignal(object)     # core.progress.ProgressReport of slow work (Score-CAM)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._cond = threading.Condition()
        self._pending: Optional[RenderRequest] = None
        self._pending_model = None
        self._stopping = False
        self.submitted = 0
        self.computed = 0
        self.dropped = 0
        self.forwards = 0
        self.overran = False                 # True when stop() had to wait past its timeout
        self.stuck = False                   # True when stop() gave up on a computation that did not return
        # worker-thread-only state
        self._vis = None
        self._spec = None
        self._map = None
        self._gen = -1
        self._frame = None
        self._frame_key = None
        self._input_rgb = None
        self._raw_input = None
        self._predictions = ()
        self._forward_ms = 0.0
        self._forward_notices = []
        self._last_choice = None
        self._has_attention = False          # the model has attention layers (rollout / LeGrad can run)

    # ------------------------------------------------------------------ GUI-thread API
    def set_model(self, gen: int, model, spec, layouts=None) -> None:
        """Use ``model`` (an nn.Module) with ``spec`` from now on; drops any pending render.

        ``layouts``: the user's layout overrides (``{layer: "nhwc", ...}``, :mod:`cnnvis_gui.core.layouts`).
        """
        with self._cond:
            self._pending_model = (gen, model, spec, dict(layouts or {}))
            if self._pending is not None:
                self.dropped += 1
            self._pending = None
            self._cond.notify()

    def submit(self, request: RenderRequest) -> None:
        """Queue ``request``, replacing (dropping) any request still waiting."""
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = request
            self.submitted += 1
            self._cond.notify()

    def busy(self) -> bool:
        with self._cond:
            return self._pending is not None or self._pending_model is not None

    def stop(self, timeout_ms: int = 10000) -> bool:
        """Ask the loop to end and wait up to ``timeout_ms`` for the computation in progress.

        See :func:`stop_thread`: a forward still running after ``timeout_ms`` is given up on
        (:attr:`stuck` is then True; the thread is kept referenced and ends when it returns).
        """
        with self._cond:
            self._stopping = True
            self._pending = None
            self._pending_model = None
            self._cond.notify()
        return stop_thread(self, timeout_ms)

    # ------------------------------------------------------------------ thread
    def run(self):  # noqa: D401 - Qt API
        from ..core.threads import lower_this_thread
        lower_this_thread()         # the GUI thread goes first when the cores are busy
        torch.set_grad_enabled(True)
        while True:
            with self._cond:
                while not self._stopping and self._pending is None and self._pending_model is None:
                    self._cond.wait()
                if self._stopping:
                    break
                model_job, self._pending_model = self._pending_model, None
                req = None
                if model_job is None:
                    req, self._pending = self._pending, None
            if model_job is not None:
                self._load(*model_job)
                continue
            if req is None or req.gen != self._gen:
                continue
            quick = self._quick_request(req)
            if quick is not None:
                # the user changed something while a new frame waits: answer on the frame we
                # already have (backward only, a few ms), then run the forward for the new one.
                self._run_one(quick)
                with self._cond:
                    if self._pending is not None or self._stopping:
                        continue          # newer work already waits; the full render would be stale
            self._run_one(req)
        self._drop_frame()
        self._vis = None

    def _quick_request(self, req: RenderRequest):
        last = self._last_choice
        if (self._frame is None or last is None or self._frame_key[0] != req.gen
                or self._frame_key[1] == req.frame_id or _choice(req) == last
                or not self._has_layers(self._frame, req)):
            return None     # (a frame lacking a layer: the new frame's forward records it anyway)
        return dataclasses.replace(req, frame_id=self._frame_key[1], frame=None)

    def _watch(self, req: RenderRequest):
        """A :mod:`~cnnvis_gui.core.progress` listener for slow work on ``req``: its reports go to the
        GUI; a newer request with another choice (layer, unit, method...), a new model or closing the
        window stops the work (a new frame of a live source with the same choice does not)."""
        from ..core.progress import Cancelled
        mine = _choice(req)

        def listener(report):
            self.progress.emit(report)
            if report.finished:
                return
            with self._cond:
                pending = self._pending
                stop = self._stopping or self._pending_model is not None or (
                    pending is not None and (pending.gen != req.gen or _choice(pending) != mine))
            if stop:
                raise Cancelled()
        return listener

    def _run_one(self, req: RenderRequest):
        from ..core.progress import Cancelled
        self._last_choice = _choice(req)
        try:
            res = self._render(req)
        except Cancelled:
            self._last_choice = None    # nothing was drawn for this choice
            return
        except _ForwardFailed as e:
            cause = e.__cause__ or e
            msg = str(cause) if isinstance(cause, CnnvisError) else f"{type(cause).__name__}: {cause}"
            self.failed.emit(RenderFailure(req.seq, req.gen, msg, e.detail))
            self._drop_frame()          # a broken forward leaves no usable frame
        except Exception as e:  # noqa: BLE001 - every failure is shown, the thread lives on
            # a per-request failure (layer, unit, backward, display): the frame stays, so the next
            # choice on it needs no new forward
            msg = str(e) if isinstance(e, CnnvisError) else f"{type(e).__name__}: {e}"
            self.failed.emit(RenderFailure(req.seq, req.gen, msg, traceback.format_exc()))
        else:
            self.computed += 1
            self.rendered.emit(res)

    # ------------------------------------------------------------------ worker-thread helpers
    def _drop_frame(self):
        if self._frame is not None:
            try:
                self._frame.close()
            except Exception:  # noqa: BLE001
                pass
        self._frame = None
        self._frame_key = None

    def _load(self, gen, model, spec, layouts=None):
        from ..core import Visualizer
        self._drop_frame()
        self._vis = self._map = None
        self._has_attention = False
        self._gen = gen
        try:
            vis = Visualizer(model, spec=spec, layouts=layouts)
            mm = vis.model_map()
        except Exception as e:  # noqa: BLE001
            msg = str(e) if isinstance(e, CnnvisError) else f"{type(e).__name__}: {e}"
            self.failed.emit(RenderFailure(-1, gen, f"model check failed: {msg}", traceback.format_exc()))
            return
        from ..core.rollout import no_attention_reason
        self._vis, self._spec, self._map = vis, spec, mm
        why = no_attention_reason(model)
        self._has_attention = why is None
        self.modelReady.emit(ModelReady(gen, mm, _model_device(model),
                                        unavailable=tuple((m, why) for m in _ATTENTION) if why else ()))

    # ------------------------------------------------------------------ what a request reads
    def _cam_layer(self, req: RenderRequest):
        """The CAM layer of ``req``: its own, else the last convolution before the backprop layer."""
        if req.cam_layer:
            return req.cam_layer
        return self._map.default_cam_layer(req.bp_layer) if self._map is not None else None

    def _layers(self, req: RenderRequest):
        """The layers ``req`` reads (a frozenset for ``Visualizer.forward``), or None: every module.

        None when a name is not in the model map, so that the request fails with the core's
        own message ("unknown layer ... Did you mean").
        """
        mm = self._map
        if self._has_attention and any(m in _ATTENTION for m in req.methods):
            return None                      # rollout / LeGrad read every attention layer and the head
        need = {req.layer}
        if req.methods or req.grid_mode == "gradients":
            need.add(req.bp_layer)
        if any(m in _CAMS or m == "guided_gradcam" for m in req.methods):
            try:
                need.add(self._cam_layer(req))
            except CnnvisError:
                return None
        need.discard(None)
        if mm is None or not all(n in mm for n in need):
            return None
        return frozenset(mm[n].name for n in need)

    def _has_layers(self, frame, req: RenderRequest) -> bool:
        recorded = frame.recorded_layers
        if recorded is None:
            return True
        need = self._layers(req)
        return need is not None and need <= recorded

    def _forward(self, req: RenderRequest, x=None, layers=None):
        """Run the forward of ``req``'s frame (or of ``x``, the kept frame's input) recording ``layers``."""
        self._drop_frame()
        spec = self._spec
        if x is None:
            x = spec.to_tensor(req.frame)
        t0 = time.perf_counter()
        frame = self._vis.forward(x, layers=layers)
        self._forward_ms = getattr(frame, "forward_ms", None) or (time.perf_counter() - t0) * 1000
        self._frame = frame
        self._frame_key = (req.gen, req.frame_id)
        self.forwards += 1
        inp = frame.input.detach().cpu()
        self._raw_input = _frozen(inp[0].numpy().copy())
        self._input_rgb = _frozen(spec.to_image(inp))
        self._predictions = ()
        self._forward_notices = []
        out = frame.output
        if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out.detach()).all()):
            self._forward_notices.append("the model output contains NaN/inf for this input")
        elif isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] >= 2:
            p = torch.softmax(out.detach().float().cpu()[0], 0)
            k = min(5, p.numel())
            top = torch.topk(p, k)
            labels = req.labels
            self._predictions = tuple(
                (labels[i] if labels and i < len(labels) else f"class {i}", float(v))
                for v, i in zip(top.values.tolist(), top.indices.tolist()))

    def _render(self, req: RenderRequest) -> RenderResult:
        from ..core import ActivationMosaic, saliency_to_image, overlay, heatmap
        t_start = time.perf_counter()
        if req.frame is None and self._frame_key != (req.gen, req.frame_id):
            raise CnnvisError("no input frame yet: open an image, a folder, a video or a camera (File menu).")
        forwarded = False
        if self._frame is None or self._frame_key != (req.gen, req.frame_id):
            try:
                self._forward(req, layers=self._layers(req))    # a new frame: what this request reads
            except Exception as e:  # noqa: BLE001 - re-raised, marked as a forward failure
                raise _ForwardFailed(traceback.format_exc()) from e
            forwarded = True
        elif not self._has_layers(self._frame, req):
            # the user explores this frame: run its input once more, recording every module
            try:
                self._forward(req, x=self._frame.input.detach())
            except Exception as e:  # noqa: BLE001
                raise _ForwardFailed(traceback.format_exc()) from e
            forwarded = True
        frame = self._frame
        # deconvnet's network-wide notice is replaced by the one for the pane that shows it (below)
        notices = [str(n) for n in (getattr(frame, "notices", None) or []) if n != getattr(frame, "deconvnet_notice", None)]
        notices += list(self._forward_notices)
        pane_notes = []                 # what a pane's picture needs said (input-independent, all zero, NaN)
        bw_ms = 0.0

        # ---- grid: activations (or gradients) of the current layer
        if req.grid_mode == "gradients":
            m = req.methods[0] if req.methods and req.methods[0] in SALIENCY_METHODS else "gradient"
            t0 = time.perf_counter()
            g = frame.gradient_at(req.layer, req.bp_layer, req.bp_unit, method=m, objective=req.objective)
            bw_ms += (time.perf_counter() - t0) * 1000
            grid = frame.layout(req.layer).to_nchw(g).detach().float().cpu()[0].numpy()
        else:   # units first, their map after, whatever the layer's layout (channels last, tokens)
            grid = frame.unit_maps(req.layer).detach().float().cpu()[0].numpy()
        if not np.all(np.isfinite(grid)):
            bad = int(np.size(grid) - np.count_nonzero(np.isfinite(grid)))
            notices.append(f"{bad} NaN/inf values in {req.grid_mode} of layer '{req.layer or 'output'}' (shown as 0)")
            grid = np.nan_to_num(grid, nan=0.0, posinf=0.0, neginf=0.0)
        grid = np.ascontiguousarray(grid, dtype=np.float32)
        n_units = grid.shape[0]
        flat = grid.reshape(n_units, -1) if grid.ndim > 1 else grid.reshape(n_units, 1)
        labels = None
        if req.labels and len(req.labels) == n_units and grid.ndim == 1 and (
                req.layer == req.output_layer or _is_output(frame, req.layer)):
            labels = req.labels         # the output layer, or the module that computes it (fc2 = output)
        mosaic_src = np.abs(grid) if req.grid_mode == "gradients" else grid
        mosaic = ActivationMosaic(mosaic_src, normalize=req.normalize, gamma=req.gamma, min_tile=8,
                                  aspect=req.aspect,
                                  labels=list(labels) if labels else None)
        unit = max(0, min(req.unit, n_units - 1))
        layout = frame.layout(req.layer)
        prefix = None
        if req.grid_mode == "activations" and layout.prefix:   # beside the map: each unit's class token...
            prefix = _frozen(frame.prefix_tokens(req.layer)[0].float().cpu().numpy())
        umap = np.ascontiguousarray(_unit_map(grid, unit), dtype=np.float32)
        lo, hi = float(umap.min()), float(umap.max())
        if hi <= lo:
            hi = lo + 1e-6

        def result(bps, partial=False):
            return RenderResult(
                seq=req.seq, gen=req.gen, frame_id=req.frame_id, forwarded=forwarded,
                layer=req.layer, unit=unit, bp=(req.bp_layer, req.bp_unit), grid_mode=req.grid_mode,
                input_rgb=self._input_rgb, mosaic=mosaic,
                unit_max=_frozen(flat.max(axis=1)), unit_mean=_frozen(flat.mean(axis=1)),
                unit_map=_frozen(umap), unit_levels=(lo, hi),
                unit_rgb=_frozen(heatmap(np.clip((umap - lo) / (hi - lo), 0, 1), cmap="inferno")),
                backprops=tuple(bps),
                predictions=self._predictions, forward_ms=self._forward_ms if forwarded else 0.0,
                backward_ms=bw_ms, total_ms=(time.perf_counter() - t_start) * 1000,
                notices=tuple(dict.fromkeys(pane_notes + notices)), raw_input=self._raw_input,
                raw_grid=_frozen(grid),
                layout=layout.name, prefix_tokens=prefix, partial=partial)

        # ---- backprop panes
        bps = []
        for method in req.methods:
            if method == "scorecam":        # minutes at a wide layer: show everything else while it runs
                self.rendered.emit(result(bps, partial=True))
            t0 = time.perf_counter()
            note = None
            cam_layer = None
            unavailable = False
            if method in _SALIENCY or method == "guided_gradcam":
                if method == "guided_gradcam":
                    cam_layer = self._cam_layer(req)
                    s = frame.guided_grad_cam(req.bp_layer, req.bp_unit, cam_layer=cam_layer,
                                              objective=req.objective)
                else:
                    # a fixed seed: the same frame shows the same SmoothGrad map on every render
                    s = frame.saliency(req.bp_layer, req.bp_unit, method=_SALIENCY[method], objective=req.objective,
                                       smoothgrad=req.smoothgrad, noise=req.noise, steps=req.steps, seed=0)
                raw = s.detach().float().cpu()[0].numpy()
                if not np.all(np.isfinite(raw)):
                    note = "NaN in the gradient (shown as 0)"
                    raw = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
                if not np.any(raw):
                    note = (f"the {method} of unit {req.bp_unit} in '{req.bp_layer or 'output'}' is all zero "
                            f"for this input (the unit is silent here)")
                elif method in _SALIENCY:       # the same picture for every input? (deconvnet on MobileNetV2)
                    note = frame.input_independent(req.bp_layer, req.bp_unit, _SALIENCY[method], req.objective)
                if req.overlay:
                    mag = np.abs(raw).sum(axis=0)
                    top = float(mag.max())
                    img = overlay(self._input_rgb, mag / top if top > 0 else mag, alpha=0.6)
                else:
                    img = saliency_to_image(raw, filter=req.filter, sign=req.sign, clip=req.clip,
                                            percentile=req.percentile)
            elif method in _CAMS:
                cam_layer = self._cam_layer(req)
                cam = frame.cam(req.bp_layer, req.bp_unit, cam_layer=cam_layer, method=method,
                                objective=req.objective, progress=self._watch(req) if method == "scorecam" else None)
                raw = cam.detach().float().cpu()[0].numpy()
                raw = np.nan_to_num(raw, nan=0.0)
                if not np.any(raw):
                    note = f"the {method} map of unit {req.bp_unit} is all zero at '{cam_layer}' for this input"
                # a CAM is coarse: it reads best on top of the input (as in Selvaraju et al.)
                img = overlay(self._input_rgb, raw, alpha=0.5)
            elif method in _ATTENTION:
                raw, img, note, unavailable = self._attention_map(frame, req, method)
            else:
                raise CnnvisError(f"unknown backprop method {method!r}")
            bw_ms += (time.perf_counter() - t0) * 1000
            if note:
                pane_notes.append(note)     # first on the status line: about the picture on screen
            bps.append(BackpropImage(method, _frozen(np.array(img, dtype=np.uint8, copy=True)),
                                     _frozen(np.array(raw, copy=True)), cam_layer, note,
                                     unavailable=unavailable))

        return result(bps)

    def _attention_map(self, frame, req: RenderRequest, method: str) -> tuple:
        """(raw map, picture, note, unavailable) of attention rollout / LeGrad for the backprop unit.

        Where the method cannot map this unit (a CNN, LeGrad of an inner unit, a unit before the first
        attention) the pane shows the input dimmed and the reason: a state of the view, not a failure.
        """
        from ..core import overlay
        why = frame.cam_unavailable(req.bp_layer, method)
        if why is not None:
            h, w = self._input_rgb.shape[:2]
            dim = (self._input_rgb.astype(np.float32).mean(axis=2, keepdims=True) * 0.35).astype(np.uint8)
            return np.zeros((h, w), np.float32), np.repeat(dim, 3, axis=2), why, True
        cam = frame.cam(req.bp_layer, req.bp_unit, method=method, objective=req.objective)
        raw = np.nan_to_num(cam.detach().float().cpu()[0].numpy(), nan=0.0)
        note = None if np.any(raw) else f"the {method} map of unit {req.bp_unit} is all zero for this input"
        return raw, overlay(self._input_rgb, raw, alpha=0.5), note, False
