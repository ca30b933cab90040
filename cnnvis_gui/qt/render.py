"""The render loop: snapshot the state into requests, draw the worker's results.

Snapshot, then compute (napari ``_layer_slicer``): :meth:`RenderLoop.request_render`
freezes the user's choices and the current frame into a :class:`RenderRequest`; the one
:class:`RenderWorker` thread keeps only the newest.  Finished :class:`RenderResult` arrays
come back through a signal and are only *drawn* here, at most every ``MIN_DRAW_INTERVAL``
for live frames of an unchanged view.
"""
from __future__ import annotations

from dataclasses import dataclass

import time
from pathlib import Path

from PyQt5 import QtCore

from ..core.saliency_display import describe_display
from .plain import html_text, plain_tooltip
from .state import METHOD_LABELS

#: what a backprop pane's tooltip adds for the attention methods (they read no CAM layer)
ATTENTION_NOTES = {
    "rollout": ": the attention flowing into the class token through the attention layers before the unit "
               "(Abnar & Zuidema 2020); class-agnostic, the same map for every unit of the layer",
    "legrad": ": the positive gradient of the class score, read through the head after every block, with respect "
              "to each layer's attention, averaged over the layers (Bousselham et al. 2024)",
}
from .timing import Rate
from .worker import RenderRequest, RenderWorker


@dataclass(frozen=True)
class RenderViews:
    """The panes a render result is drawn into (built by :func:`~cnnvis_gui.qt.layout.build_panels`)."""

    input_pane: object
    grid: object
    unit_pane: object
    bp1: object
    bp2: object
    zoom_unit: object
    zoom_bp: object
    predictions: object


class RenderLoop(QtCore.QObject):
    """Owns the render worker; turns the state into requests and results into pixels."""

    #: live frames are drawn at most this often (s); answers to the user's own changes at once
    MIN_DRAW_INTERVAL = 0.025

    drawn = QtCore.pyqtSignal(object)      # a finished result is on screen (the window's frameDrawn)

    def __init__(self, state, model, feed, status, views, grid_mosaic=None, pattern_title=None,
                 closed=lambda: False, parent=None):
        """``model`` / ``feed``: the ModelState and InputFeed a request is made of; ``status``: the
        StatusLine (times, progress, errors, the per-frame description); ``views``: the
        :class:`RenderViews` results are drawn into; ``grid_mosaic(res)``: what the grid shows for a
        result (pattern mode's tiles), ``pattern_title(what, name)``: sets the grid's title in pattern
        mode (False when not in it); ``closed()``: the window is closing."""
        super().__init__(parent)
        self.state, self.model, self.feed, self.status, self.views = state, model, feed, status, views
        self._grid_mosaic = grid_mosaic or (lambda res: res.mosaic)
        self._pattern_title = pattern_title or (lambda what, name: False)
        self._closed = closed
        self.seq = 0
        self.last_result = None
        self.process_rate = Rate()
        self.last_forward_ms = 0.0
        self.last_draw_ms = 0.0
        self._last_draw_t = 0.0
        self._last_drawn_key = None
        self._held_result = None
        self.worker = RenderWorker()
        self.worker.rendered.connect(self._on_rendered)
        self.worker.failed.connect(self._on_failed)
        self.worker.progress.connect(self._on_progress)
        self._draw_timer = QtCore.QTimer(self)
        self._draw_timer.setSingleShot(True)
        self._draw_timer.timeout.connect(self._draw_held)

    def start(self) -> None:
        self.worker.start()

    # ------------------------------------------------------------------ requests
    def request_render(self) -> bool:
        """Snapshot the state into a request and hand it to the worker (which keeps only the newest)."""
        session, inputs = self.model, self.feed
        if self._closed() or session.mm is None or inputs.frame is None or session.loaded is None:
            return False
        s = self.state
        methods = ()
        if s.backprop_on:
            methods = (s.method,) + ((s.method2,) if s.compare else ())
        bp_layer, bp_unit = s.backprop_unit
        labels = getattr(session.loaded, "labels", None)
        self.seq += 1
        req = RenderRequest(
            seq=self.seq, gen=session.gen, frame_id=inputs.frame_id, frame=inputs.frame,
            layer=s.layer, unit=s.unit, grid_mode=s.grid_mode, methods=methods,
            bp_layer=bp_layer, bp_unit=bp_unit, filter=s.filter, sign=s.sign, clip=s.clip, percentile=s.percentile,
            overlay=s.overlay,
            cam_layer=s.cam_layer, objective=s.objective, smoothgrad=s.smoothgrad, noise=s.noise, steps=s.ig_steps,
            normalize="unit" if s.per_unit else "layer", gamma=s.gamma, aspect=self.grid_aspect(),
            labels=tuple(labels) if labels else None, output_layer=getattr(session.mm, "output_name", ""))
        self.worker.submit(req)
        return True

    def on_resized(self) -> None:
        """The window settled at a new size: re-tile the grid when its shape changed a lot."""
        res = self.last_result
        if res is not None and abs(self.grid_aspect() / max(res.mosaic.image.shape[1] / res.mosaic.image.shape[0],
                                                          1e-3) - 1) > 0.25:
            self.request_render()

    def grid_aspect(self) -> float:
        v = self.views.grid.view
        w, h = v.width(), v.height()
        return float(min(4.0, max(0.25, w / h))) if w > 10 and h > 10 else 1.0

    # ------------------------------------------------------------------ results
    def _on_rendered(self, res):
        if res.gen != self.model.gen or self._closed():
            return
        self.process_rate.tick()
        key = (res.layer, res.unit, res.bp, res.grid_mode, tuple(b.method for b in res.backprops))
        wait = self._last_draw_t + self.MIN_DRAW_INTERVAL - time.perf_counter()
        if key == self._last_drawn_key and wait > 0:
            self._held_result = res           # a newer frame of the same view: draw it a bit later
            if not self._draw_timer.isActive():
                self._draw_timer.start(max(1, int(wait * 1000)))
            return
        self.draw(res)

    def _draw_held(self):
        res, self._held_result = self._held_result, None
        if res is not None and res.gen == self.model.gen and not self._closed():
            self.draw(res)

    def draw(self, res) -> None:
        """Put a finished result on screen (GUI thread); emits ``drawn`` (the window's ``frameDrawn``)."""
        v, status = self.views, self.status
        t0 = time.perf_counter()
        self._draw_timer.stop()
        self._held_result = None
        self._last_draw_t = t0
        self._last_drawn_key = (res.layer, res.unit, res.bp, res.grid_mode, tuple(b.method for b in res.backprops))
        self.last_result = res
        src = self.feed.active(self.state.use_camera)
        path = getattr(src, "current_path", None)
        if path is not None and getattr(src, "count", None):
            desc = f"{Path(path).name} ({getattr(src, 'index', 0) + 1}/{src.count})"
        else:
            desc = (getattr(src, "description", None) or getattr(src, "status", None)
                    or ("still frame" if src is None else type(src).__name__))
        desc = str(desc)
        if getattr(src, "is_live", False):
            desc += f" · {self.feed.capture_rate.rate():.0f} fps"
        elif self.state.frozen_frame:
            desc += " · frozen"
        v.input_pane.set_rgb(res.input_rgb)
        h, w = res.input_rgb.shape[:2]
        v.input_pane.info.setText(f"{w}×{h} · {desc}")        # the size first: a narrow pane keeps it
        v.grid.set_mosaic(self._grid_mosaic(res), res.unit_max, res.unit_mean)
        self.state.update(grid_cols=int(res.mosaic.cols))
        v.unit_pane.set_unit(res.unit_rgb, res.unit_levels, *self._scalar(res))
        lo, hi = res.unit_levels
        v.unit_pane.title.setText(f"Unit {res.unit}")     # the layer beside it, cut at its start if need be
        v.unit_pane.set_concept(*self.unit_concept(res))    # the dissection's label on a line of its own
        what = "gradient at " if res.grid_mode == "gradients" else "of "
        tip = f"unit {res.unit} {what}{res.layer or 'output'}: values {lo:.6g} … {hi:.6g} (the colour bar has the scale)"
        v.unit_pane.set_info(f"{what}{res.layer or 'output'}", res.prefix_values, tip)   # with a token layer's CLS
        own = res.grid_mode == "gradients" and res.bp[0] == res.layer
        v.grid.set_note(f"The gradient of unit {res.bp[1]} at its own layer is nonzero on its own map only: "
                          f"a unit's gradient with respect to itself, one lit tile and nothing else to read. "
                          f"Press d to freeze the unit, then u to step to a lower layer and see which of its units "
                          f"feed it; a to go back to activations." if own else "")
        v.unit_pane.set_note(self._own_gradient_note(res.bp[1]) if own else "")
        for i, pane in enumerate((v.bp1, v.bp2)):
            if i < len(res.backprops):
                bp = res.backprops[i]
                pane.set_rgb(bp.image)
                where = f"{res.bp[0] or 'output'} · #{res.bp[1]}"      # layer name first, then the unit
                tip = f"{METHOD_LABELS.get(bp.method, bp.method)} of unit {res.bp[1]} of {res.bp[0] or 'output'}"
                if bp.cam_layer:
                    where += f" · CAM {bp.cam_layer}"                  # cut first when the pane is narrow
                    tip += f", Grad-CAM at {bp.cam_layer}"
                elif bp.method in ATTENTION_NOTES:
                    tip += ATTENTION_NOTES[bp.method]
                pane.set_note(bp.note if bp.unavailable else "")       # the reason over the dimmed input
                pane.info.setText(where)
                pane.info.setToolTip(plain_tooltip(tip))
            elif res.partial and (i == 0 or self.state.compare):
                pane.set_note("")
                pane.clear()                                       # Score-CAM still runs for it
                pane.info.setText("computing… (progress in the status bar)")
            elif i == 0:
                pane.set_note("")
                pane.clear()
                pane.info.setText("off")
        self.draw_zoom(res)
        v.predictions.set_predictions(res.predictions)
        if res.forwarded:
            self.last_forward_ms = res.forward_ms
        status.set_times(self.last_forward_ms, res.backward_ms)
        notices = list(res.notices)
        if notices:
            status.show_message(" · ".join(notices), warn=True)
        elif not status.error_is_fresh(res.seq) and not status.notice_is_fresh():
            status.show_message(self.describe(res))
            status.last_error = ""
        self.last_draw_ms = (time.perf_counter() - t0) * 1000
        self.drawn.emit(res)

    @staticmethod
    def _scalar(res) -> tuple:
        """(value, the layer's range) when the unit is one number (fc layers, the output), else (None, None)."""
        if res.unit_map.size != 1:
            return None, None
        return float(res.unit_map.flat[0]), (float(res.unit_max.min()), float(res.unit_max.max()))

    def describe(self, res) -> str:
        """The status line for a drawn result: layer, unit, method, filter and the active boosts."""
        s = self.state
        bp = "backprop off" if not s.backprop_on else METHOD_LABELS.get(s.method, s.method)
        extra = []
        if s.frozen_unit:
            extra.append(f"backprop frozen on unit {s.frozen_unit[1]} of {s.frozen_unit[0] or 'output'}")
        if s.frozen_frame:
            extra.append("frame frozen")
        if s.objective != "sum":
            extra.append(f"objective {s.objective}" if isinstance(s.objective, str)
                         else "objective at y={}, x={}".format(*s.objective))
        if s.gamma != 1.0:
            extra.append(f"gamma {s.gamma}")
        if s.per_unit:
            extra.append("per-unit scaling")
        shown = describe_display(s.filter, s.sign, s.clip, s.percentile)
        return " · ".join([f"layer {res.layer or 'output'}, unit {res.unit}", bp, shown] + extra) + \
            "   (h: keys)"

    def _on_progress(self, report) -> None:
        """Slow work in the worker (Score-CAM's masked forwards): its progress and time left in the status bar."""
        self.status.show_report(report)

    def _on_failed(self, f):
        if f.gen != self.model.gen or self._closed():
            return
        self.status.show_error(f.message, seq=f.seq if f.seq >= 0 else None)
        if f.seq == -1:
            self.model.mm = None       # the model failed to load in the worker: nothing renders until another

    def redraw_grid(self) -> None:
        """Draw the last result's grid again (the patterns came or went)."""
        res = self.last_result
        if res is not None and res.gen == self.model.gen and not self._closed():
            self.views.grid.set_mosaic(self._grid_mosaic(res), res.unit_max, res.unit_mean)

    # ------------------------------------------------------------------ zoom and the grid's title
    def draw_zoom(self, res) -> None:
        v = self.views
        z = self.state.zoom
        if z == "unit":
            v.zoom_unit.set_unit(res.unit_rgb, res.unit_levels, *self._scalar(res))
            v.zoom_unit.title.setText(f"Unit {res.unit} <span style='color:#888'>of {html_text(res.layer or 'output')}"
                                        f" — zoom (z: next, Esc: back)</span>")
        elif z == "backprop" and res.backprops:
            bp = res.backprops[0]
            v.zoom_bp.set_rgb(bp.image)
            v.zoom_bp.title.setText(f"Backprop — {METHOD_LABELS.get(bp.method, bp.method)} "
                                      f"<span style='color:#888'>of {html_text(res.bp[0] or 'output')} #{res.bp[1]}"
                                      f" — zoom (z: next, Esc: back)</span>")

    def _own_gradient_note(self, unit: int) -> str:
        """Why the unit pane's map is flat (or one point) when the grid shows gradients at the unit's own layer."""
        obj = self.state.objective
        if obj == "sum":
            what = "1 at every position (the objective sums its map): a flat map, drawn black"
        else:
            what = "nonzero only at the one position its objective reads"
        return f"Unit {unit}'s gradient with respect to its own map is {what}. Nothing here depends on the input."

    def unit_concept(self, res) -> tuple:
        """The unit pane's dissection line, (rich text, tooltip): ``star (shape, IoU 0.31)`` when the
        dissection shown labels the unit, ``no detector (best stripes, IoU 0.03)`` below the paper's cut,
        ("", "") without a label.  It wraps under the title ``Unit 5``; the layer is the pane's info
        beside the title ("of features.14", cut at its start in a narrow pane)."""
        lab = self.state.unit_label(res.layer, res.unit)
        if lab is None:
            return "", ""
        where = f"unit {res.unit} of {res.layer or 'output'}"
        if lab.concept is None:
            return "<span style='color:#888'>no concept (IoU 0)</span>", f"{where}: no concept overlaps it (IoU 0)"
        if not lab.interpretable:               # below the paper's cut: the best match, not a detector
            return (f"<span style='color:#888'>no detector (best {html_text(lab.concept)}, IoU {lab.iou:.2f})</span>",
                    f"{where}: no detector; its best concept is {lab.concept} ({lab.category}), IoU {lab.iou:.3f}, "
                    f"below the dissection's cut")
        return (f"<b>{html_text(lab.concept)}</b> <span style='color:#888'>({html_text(lab.category)}, IoU "
                f"{lab.iou:.2f})</span>", f"{where}: detects {lab.concept} ({lab.category}), IoU {lab.iou:.3f}")

    def update_unit_title(self) -> None:
        """The unit pane's dissection line again (the dissection shown changed)."""
        if self.last_result is not None:
            self.views.unit_pane.set_concept(*self.unit_concept(self.last_result))

    def update_grid_title(self) -> None:
        v, s = self.views, self.state
        mm = self.model.mm
        info = mm[s.layer] if mm is not None and s.layer in mm.names() else None
        what = "Gradients" if s.grid_mode == "gradients" else "Activations"
        if info is None:
            v.grid.title.setText(what)
            return
        name = info.name or "output"
        if self._pattern_title(what, name):
            return
        shape = "×".join(str(x) for x in info.shape) if info.shape else ""
        lay = info.layout
        details = [f"{html_text(info.type)}, {shape}"]
        if lay is not None and lay.kind in ("nhwc", "tokens"):    # the grid shows its units on their map
            # the units first, and kept by the shorter titles of a narrow pane (fitted_title)
            units = f"{lay.units} units of {'×'.join(map(str, lay.map_shape))}"
            details = [f"{units} · {lay.name} · {details[0]}", f"{units} · {lay.name}", units]
        whole = f"{what} — {name} ({info.type}, {shape})"        # the tooltip: the whole title, then the layout
        if lay is not None and lay.kind in ("nhwc", "tokens"):
            whole = f"{what} — {name} ({units} · {lay.name} · {info.type}, {shape})"
        v.grid.title.setToolTip(plain_tooltip(whole + (f"\nlayout {lay.name}: {lay.describe()} ({lay.source})"
                                                       if lay is not None else "")))
        head = f"{what} — <b>{html_text(name)}</b> "
        titles = [f"{head}<span style='color:#888'>({d})</span>" for d in details]
        set_variants = getattr(v.grid.title, "set_variants", None)
        if set_variants is None:
            v.grid.title.setText(titles[0])
        else:
            set_variants(titles + [f"<b>{html_text(name)}</b> <span style='color:#888'>({details[-1]})</span>"])

    def shutdown(self, timeout_ms) -> None:
        self._draw_timer.stop()
        self.worker.stop(timeout_ms)
