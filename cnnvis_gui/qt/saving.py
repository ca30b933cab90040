"""Saving what the window shows: each pane as PNG, the raw arrays as .npz.

Pane images are written at a readable scale: a 16 x 16 unit map or a 32 x 32 model input
is enlarged by a whole factor (nearest neighbour, every pixel a square of the same value)
until its shorter side is at least :data:`MIN_SAVED_SIDE` pixels.  The raw values are in the .npz.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PyQt5 import QtWidgets

from ..core.errors import CnnvisError, one_line
from ..core.files import WriteError, atomic_save_npz, atomic_write_bytes, encode_image, file_name_part, output_path


#: shorter side of a saved pane image, at least (pixels)
MIN_SAVED_SIDE = 256
#: but a saved image is never enlarged past this side
MAX_SAVED_SIDE = 4096


def readable(img: np.ndarray) -> np.ndarray:
    """``img`` enlarged by a whole factor (nearest neighbour) to a readable size."""
    h, w = img.shape[:2]
    k = max(1, -(-MIN_SAVED_SIDE // max(1, min(h, w))))
    k = max(1, min(k, MAX_SAVED_SIDE // max(1, h, w)))
    if k == 1:
        return img
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


class Saver:
    """File → Save panes / Save raw arrays of one window.

    Every file goes through the one atomic writer (:mod:`cnnvis_gui.core.files`): a full disk or
    a read-only folder leaves the earlier file as it was, and the failure is reported (the
    :class:`~cnnvis_gui.core.files.WriteError` names the file, how many were saved before it and
    what to do); the count in the status bar is the files actually written.
    """

    def __init__(self, state, model, views, last_result, grab, persistence, status, parent=None):
        """``model``: the ModelState (a layer's layout for the .npz); ``views``: the
        :class:`~cnnvis_gui.qt.render.RenderViews` whose images are saved; ``last_result()``: the
        result drawn last; ``grab()``: a QPixmap of the whole window; ``status``: the StatusLine;
        ``parent``: the widget the file dialogs open over."""
        self.state, self.model, self.views = state, model, views
        self._last_result, self._grab, self._parent = last_result, grab, parent
        self.persistence, self.status = persistence, status

    def save_pngs(self, folder) -> list:
        """Save each pane (and the whole window) as PNG into ``folder``; returns the paths written.

        Raises :class:`~cnnvis_gui.core.files.WriteError` at the first file that cannot be written.
        """
        v, state = self.views, self.state
        folder = Path(folder)
        stem = file_name_part(f"{(state.layer or 'output').replace('.', '_')}_u{state.unit}", "pane")
        todo = []
        for tag, pane in (("input", v.input_pane), ("grid", v.grid), ("unit", v.unit_pane),
                          ("backprop", v.bp1), ("backprop2", v.bp2)):
            img = pane.last_image
            if img is None or (tag == "backprop2" and not state.compare):
                continue
            todo.append((output_path(folder, f"{stem}_{tag}.png"), lambda p, img=img: encode_image(p, readable(img))))
        todo.append((output_path(folder, f"{stem}_window.png"), lambda p: pixmap_bytes(self._grab(), p)))
        out = []
        for path, encode in todo:
            try:
                atomic_write_bytes(path, encode(path), durable=False)
            except WriteError as e:
                done = f" ({len(out)} of {len(todo)} PNGs were saved before it)" if out else " (none was saved)"
                raise WriteError(str(e).rstrip(".") + done + ".", e.path, e.errno) from None
            out.append(path)
        return out

    def save_npz(self, path) -> Path:
        """The last result's raw arrays as ``.npz`` (``.npz`` is added to a name without it, as numpy does)."""
        res = self._last_result()
        if res is None:
            raise CnnvisError("nothing computed yet: wait for the first frame, then save.")
        arrays = {"input": res.raw_input, "grid": res.raw_grid, "unit_map": res.unit_map,
                  "unit_max": res.unit_max, "unit_mean": res.unit_mean,
                  "layer": np.array(res.layer), "unit": np.array(res.unit),
                  "grid_mode": np.array(res.grid_mode), "layout": np.array(res.layout)}
        mm = self.model.mm
        lay = mm[res.layer].layout if mm is not None and res.layer in mm else None
        if res.grid_mode == "activations" and lay is not None and lay.kind in ("nhwc", "tokens"):
            # "grid" is units x map; "activations" is the layer's output in the model's own layout
            import torch
            prefix = None if res.prefix_tokens is None else torch.tensor(np.asarray(res.prefix_tokens))[None]
            arrays["activations"] = lay.from_nchw(torch.tensor(np.asarray(res.raw_grid))[None], prefix)[0].numpy()
            if res.prefix_tokens is not None:
                arrays["prefix_tokens"] = res.prefix_tokens
        for bp in res.backprops:
            arrays[f"backprop_{bp.method}"] = bp.raw
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        return atomic_save_npz(path, compressed=True, **arrays)

    def save_pngs_dialog(self):
        d = QtWidgets.QFileDialog.getExistingDirectory(self._parent, "Save panes as PNG into…",
                                                       self.persistence.last_dir())
        if d:
            try:
                paths = self.save_pngs(d)
                self.status.show_message(f"saved {len(paths)} PNG{'s' if len(paths) != 1 else ''} in {d}")
            except Exception as e:  # noqa: BLE001 - every failure is shown, none is a crash
                self.status.show_error(f"save: {one_line(e)}")

    def save_npz_dialog(self):
        p, _ = QtWidgets.QFileDialog.getSaveFileName(self._parent, "Save raw arrays", self.persistence.last_dir(),
                                                     "NumPy (*.npz)")
        if p:
            try:
                path = self.save_npz(p)
                self.status.show_message(f"saved {path}")
            except Exception as e:  # noqa: BLE001
                self.status.show_error(f"save: {one_line(e)}")


def pixmap_bytes(pixmap, path) -> bytes:
    """A QPixmap encoded in memory in the format of ``path``'s extension (PNG without one); the file
    itself is then written by the atomic writer."""
    from PyQt5 import QtCore

    fmt = (Path(path).suffix.lstrip(".") or "png").upper()
    data = QtCore.QByteArray()
    buf = QtCore.QBuffer(data)
    buf.open(QtCore.QIODevice.WriteOnly)
    ok = pixmap.save(buf, fmt)
    buf.close()
    if not ok or data.isEmpty():
        raise WriteError(f"cannot write '{path}': Qt cannot encode the window as {fmt}; give a .png or .jpg file "
                         f"name.", Path(path))
    return bytes(data)
