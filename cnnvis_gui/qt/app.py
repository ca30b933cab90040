"""``cnnvis-gui``: start the main window (``python run_gui.py`` does the same).

Without ``--model``/``--weights`` it opens the demo model ("shapes") and its sample images.
``--screenshot out.png`` waits for the first complete render (activations and backprop
drawn), saves a PNG of the whole window and exits 0; any failure exits non-zero with
the message on stderr.
"""
from __future__ import annotations

import argparse
import sys

from .state import BACKPROP_METHODS, DISPLAY_FILTERS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnvis-gui", description="See inside a PyTorch CNN, live.")
    p.add_argument("--model", help="architecture (torchvision name, file.py:Class, module:Class) "
                                   "or a demo name (shapes, glyphs)")
    p.add_argument("--weights", help="checkpoint file (.pt/.pth/.safetensors)")
    p.add_argument("--trust-pickle", action="store_true", help="allow full pickles (runs code from the file)")
    p.add_argument("--input", help="image, folder, video file or camera index")
    p.add_argument("--camera", type=int, help="camera index to start with")
    p.add_argument("--layer", help="layer to show first (dotted module name, 'output' for the output)")
    p.add_argument("--unit", type=int, help="unit to select first")
    p.add_argument("--method", choices=BACKPROP_METHODS, help="backprop method")
    p.add_argument("--filter", choices=DISPLAY_FILTERS, help="display filter for gradients")
    p.add_argument("--compare", metavar="METHOD", choices=BACKPROP_METHODS,
                   help="show a second backprop method side by side")
    p.add_argument("--device", default="cpu", help="torch device for the model (cpu, cuda, cuda:1, mps)")
    p.add_argument("--screenshot", metavar="PNG", help="save a window PNG after the first complete frame, exit")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for --screenshot (default 120)")
    p.add_argument("--size", default=None, help="window size WxH (e.g. 1500x920)")
    return p


def _fail(msg: str) -> int:
    print(f"cnnvis-gui: {msg}", file=sys.stderr)
    return 2


def _last_model(win, models, shot):
    """The model of the previous session (settings), else the shapes demo."""
    entry = "" if shot else str(win.settings.value("last_model", "") or "")
    what, _, arch = entry.partition("|")
    if what.startswith("demo:") and what[5:] in getattr(models, "DEMO_NAMES", ("shapes", "glyphs")):
        return models.demo(what[5:]), what[5:]
    if what:
        try:
            return models.load(weights=what, arch=arch or None), None
        except Exception as e:  # noqa: BLE001 - fall back to the demo, say why
            win.show_error(f"last model {what} did not open ({e}); showing the demo model")
    return models.demo("shapes"), "shapes"


def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import os
    if args.screenshot and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")   # automation on a headless machine
    from PyQt5 import QtCore, QtWidgets
    from .window import MainWindow

    QtCore.QCoreApplication.setOrganizationName("cnnvis-gui")
    QtCore.QCoreApplication.setApplicationName("cnnvis-gui")
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["cnnvis-gui"])
    win = MainWindow()
    if args.size:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
            win.resize(w, h)
        except ValueError:
            return _fail(f"--size wants WxH, got {args.size!r}")
    shot = args.screenshot
    result = {"rc": None}
    errors = []

    def finish(rc, msg=None):
        if result["rc"] is None:
            result["rc"] = rc
            if msg:
                print(f"cnnvis-gui: {msg}", file=sys.stderr)
            win.close()
            app.quit()

    if shot:
        def on_error(msg):
            errors.append(msg)
            if win.mm is None or win.frame is None or "layer" in msg or "unit" in msg:
                finish(1, msg)
        win.renderFailed.connect(on_error)

    # ---- model
    init = dict(layer=args.layer, unit=args.unit, method=args.method)
    from .. import models
    try:
        if args.model in ("shapes", "glyphs") and not args.weights:
            lm = models.demo(args.model)
            demo_name = args.model
        elif args.model or args.weights:
            lm = models.load(weights=args.weights, arch=args.model, trust_pickle=args.trust_pickle,
                             device=args.device)
            demo_name = None
        else:
            lm, demo_name = _last_model(win, models, shot)
    except Exception as e:  # noqa: BLE001
        if shot:
            win.close()
            return _fail(f"cannot load the model: {e}")
        QtWidgets.QMessageBox.critical(None, "cnnvis-gui", f"Cannot load the model:\n{e}")
        lm, demo_name = None, None
    if args.filter:
        win.state.update(filter=args.filter)
    if args.compare:
        win.state.update(compare=True, method2=args.compare)
    if lm is not None:
        win.load_model(lm, **init)
        win._remember_model(f"demo:{demo_name}" if demo_name else (args.weights or args.model),
                            arch=None if demo_name else args.model)

    # ---- input
    what = args.camera if args.camera is not None else args.input
    if what is not None:
        if isinstance(what, str) and what.isdigit():
            what = int(what)
        if not win.open_path(what) and shot:
            msg = win.last_error
            win.close()
            return _fail(msg)
    elif lm is not None:
        try:
            paths = [str(p) for p in models.demo_samples(demo_name or "shapes")]
            if paths:
                win.open_path(paths)
        except Exception as e:  # noqa: BLE001
            win.show_error(f"demo images: {e}")

    if shot:
        def on_drawn(res):
            if win.worker.busy() or res.seq != win.seq or res.frame_id != win.frame_id:
                return  # a newer request is on its way: wait for it
            if win.state.backprop_on and not res.backprops:
                return
            QtCore.QTimer.singleShot(150, save)

        def save():
            if result["rc"] is not None:
                return
            app.processEvents()
            ok = win.grab().save(shot)
            finish(0 if ok else 1, None if ok else f"could not write {shot}")
        win.frameDrawn.connect(on_drawn)
        QtCore.QTimer.singleShot(int(args.timeout * 1000),
                                 lambda: finish(1, "timed out waiting for the first frame"
                                                + (f" ({errors[-1]})" if errors else "")))
    win.show()
    app.exec_()
    if not shot:
        win.shutdown()
        return 0
    return result["rc"] if result["rc"] is not None else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
