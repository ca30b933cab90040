"""Drive the real main window offscreen with a video source, beside the engine alone.

Run: ``python benchmarks/bench_gui.py [--model torchvision:resnet18] [--seconds 6] [--pace 120]``.
Prints a table:

* engine-alone fps -- the same work in a plain loop in this process (preprocess, one forward
  recording the layers the window records, then each backprop method of the selected unit), measured before and after the
  window's run (the mean of the two); the window's fps beside it and their ratio;
* processing fps -- finished renders (forward + the backprop methods + the grid and unit maps)
  per second while a video plays faster than the model can keep up (``--pace`` frames per second);
* unit-switch latency -- a click on a grid tile until the backprop image of that unit is drawn,
  with the frame frozen (backward only) and while live;
* longest GUI-thread stall -- the largest gap between ticks of a 2 ms GUI timer while live,
  minus the timer period, and the longest time spent drawing one result;
* 512-channel grid -- time to put a 512-unit mosaic on screen (``setImage`` + repaint).

Not part of the test suite.  Targets: window fps >= 0.8x the engine alone, the longest GUI
stall <= 50 ms, a unit switch on a frozen frame <= 1.2x one bare backward; on the shapes demo
>= 30 fps and a 512-channel grid drawn in < 10 ms.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def engine_loop(lm, frames, layer, unit, methods, seconds):
    """(fps, median forward ms, median backward ms, process CPU ms per frame) of the engine alone."""
    from cnnvis_gui.core import Visualizer
    vis = Visualizer(lm.model, lm.spec)
    mm = vis.model_map()
    cam = mm.default_cam_layer(layer) if "gradcam" in methods else None
    recorded = [layer] + ([cam] if cam else [])     # what the window records for a new frame
    fwd, bwd, n = [], [], 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or n < 3:
        x = lm.spec.to_tensor(frames[n % len(frames)])
        t = time.perf_counter()
        f = vis.forward(x, layers=recorded)
        t1 = time.perf_counter()
        for m in methods:
            if m == "gradcam":
                f.grad_cam(layer, unit, cam_layer=cam)
            else:
                f.saliency(layer, unit, method=m)
        fwd.append((t1 - t) * 1000)
        bwd.append((time.perf_counter() - t1) * 1000)
        f.close()
        n += 1
    cpu_ms = (time.process_time() - c0) * 1000 / n
    return n / (time.perf_counter() - t0), statistics.median(fwd), statistics.median(bwd), cpu_ms


def bare_backward_ms(lm, frame, layer, unit, method, repeats=15):
    """Median ms of one backward (the unit's saliency) on an already recorded frame."""
    from cnnvis_gui.core import Visualizer
    vis = Visualizer(lm.model, lm.spec)
    f = vis.forward(lm.spec.to_tensor(frame))
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        if method == "gradcam":
            f.grad_cam(layer, (unit + i) % 8)
        else:
            f.saliency(layer, (unit + i) % 8, method=method)
        times.append((time.perf_counter() - t) * 1000)
    f.close()
    return statistics.median(times)


def read_frames(path: Path) -> list:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out


def make_video(path: Path, n: int = 120, size=(320, 240)) -> Path:
    from cnnvis_gui import models
    from cnnvis_gui.sources import load_image
    samples = [load_image(p) for p in models.demo_samples("shapes")]
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    for i in range(n):
        img = cv2.resize(samples[(i // 6) % len(samples)], size)
        shift = np.float32([[1, 0, 8 * np.sin(i / 5)], [0, 1, 6 * np.cos(i / 7)]])
        w.write(cv2.warpAffine(img, shift, size, borderMode=cv2.BORDER_REFLECT))
    w.release()
    return path


def pump(app, seconds, until=None):
    """Run the Qt event loop (as app.exec_ does: blocking when idle) for ``seconds`` or until ``until()``."""
    from PyQt5 import QtCore
    if until is not None and until():
        return True
    loop = QtCore.QEventLoop()
    done = {"ok": False}
    QtCore.QTimer.singleShot(int(seconds * 1000), loop.quit)
    check = None
    if until is not None:
        def poll():
            if until():
                done["ok"] = True
                loop.quit()
        check = QtCore.QTimer()
        check.setInterval(1)
        check.timeout.connect(poll)
        check.start()
    loop.exec_()
    if check is not None:
        check.stop()
    return done["ok"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes",
                    help="a demo name or an architecture as cnnvis --model reads it (torchvision:resnet18)")
    ap.add_argument("--layer", default=None, help="layer shown (default: features.14 on shapes, else layer3 "
                                                   "when the model has one, else the model's default)")
    ap.add_argument("--unit", type=int, default=5)
    ap.add_argument("--methods", default="guided,gradcam",
                    help="backprop methods computed per frame (the window shows them side by side)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the app's policy)")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--engine-seconds", type=float, default=3.0)
    ap.add_argument("--pace", type=float, default=120.0, help="video frames per second offered")
    ap.add_argument("--clicks", type=int, default=30)
    ap.add_argument("--size", default="1500x920", help="window size WxH")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_gui_"))
    os.environ["CNNVIS_GUI_SETTINGS"] = str(tmp / "settings.ini")

    import torch
    from PyQt5 import QtCore, QtWidgets
    from cnnvis_gui import sources
    from cnnvis_gui.core import ActivationMosaic
    from cnnvis_gui.core.threads import apply_threads
    from cnnvis_gui.options import model_from_entry
    from cnnvis_gui.qt.timing import StallMeter
    from cnnvis_gui.qt.window import MainWindow

    policy = apply_threads(args.threads or None, reserve=1)
    from cnnvis_gui.core.allocator import reuse_freed_memory
    print(f"malloc: {reuse_freed_memory()}")         # as cnnvis-gui does at its start
    lm = model_from_entry(args.model)
    names = dict(lm.model.named_modules())
    layer = args.layer or ("features.14" if "features.14" in names else "layer3" if "layer3" in names else None)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    video = make_video(tmp / "clip.avi")
    frames = read_frames(video)
    cpu0 = time.process_time()

    # ---- 0. the engine alone, same work (before the window; again after it)
    eng_a = engine_loop(lm, frames, layer or "", args.unit, methods, args.engine_seconds)

    win = MainWindow()
    w, h = (int(v) for v in args.size.split("x"))
    win.resize(w, h)
    win.show()
    win.state.update(compare=len(methods) > 1, method2=methods[1] if len(methods) > 1 else "gradcam")
    win.load_model(lm, layer=layer, unit=args.unit, method=methods[0])
    pump(app, 60, until=lambda: win.mm is not None)
    layer = win.state.layer
    win.set_source(sources.open(str(video), pace=args.pace))
    drawn = []
    win.frameDrawn.connect(lambda r: drawn.append((time.perf_counter(), r)))
    computed = []
    win.worker.rendered.connect(lambda r: computed.append(r.forwarded))
    draw_ms = []
    win.frameDrawn.connect(lambda r: draw_ms.append(win.last_draw_ms))
    pump(app, 1.5)                                      # warm-up

    # ---- 1. live processing fps + GUI stall
    meter = StallMeter(2)
    win.state.update(frozen_frame=True)                 # baseline: the same loop with the worker idle
    pump(app, 0.3)
    meter.start()
    pump(app, min(2.0, args.seconds))
    idle_stall, _ = meter.stop()
    win.state.update(frozen_frame=False)
    pump(app, 0.5)
    drawn.clear()
    computed.clear()
    draw_ms.clear()
    meter.start()
    t0, c0 = time.perf_counter(), time.process_time()
    pump(app, args.seconds)
    dt = time.perf_counter() - t0
    win_cpu = (time.process_time() - c0) / dt
    stall, stall_cpu = meter.stop()
    stall_p99, stalls_over = meter.p99, meter.over30
    fps = sum(computed) / dt                             # frames through forward + backprop
    draw_fps = len(drawn) / dt
    fwd = [r.forward_ms for _, r in drawn if r.forwarded]
    bwd = [r.backward_ms for _, r in drawn]
    live_draw_max = max(draw_ms) if draw_ms else float("nan")

    # ---- 2. unit switch latency (frame frozen: backward only; then live)
    def click_latencies(n, live):
        lat = []
        win.state.update(frozen_frame=not live)
        pump(app, 0.3)
        m = win.grid.mosaic
        for i in range(n):
            unit = (win.state.unit + 5 + i) % m.n_units
            x0, y0, w, h = win.grid.mosaic.tile_rect(unit)
            drawn.clear()
            t = time.perf_counter()
            win.grid.item.clicked.emit(x0 + w / 2, y0 + h / 2)     # what a mouse click on the tile emits
            ok = pump(app, 10, until=lambda: any(r.bp[1] == unit and r.backprops for _, r in drawn))
            if ok:
                t_done = next(tt for tt, r in drawn if r.bp[1] == unit)
                lat.append((t_done - t) * 1000)
            pump(app, 0.02)
        return lat

    lat_frozen = click_latencies(args.clicks, live=False)
    lat_live = click_latencies(max(3, args.clicks // 3), live=True)
    win.state.update(frozen_frame=True)

    # ---- 3. 512-channel grid draw time
    rng = np.random.default_rng(0)
    times_set, times_paint, times_mosaic = [], [], []
    maxv = np.zeros(512, np.float32)
    for i in range(30):
        acts = rng.random((512, 14, 14), dtype=np.float32)
        t = time.perf_counter()
        mosaic = ActivationMosaic(acts, aspect=1.2)
        times_mosaic.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        win.grid.set_mosaic(mosaic, maxv, maxv)
        times_set.append((time.perf_counter() - t) * 1000)
        win.grid.view.viewport().repaint()
        times_paint.append((time.perf_counter() - t) * 1000)
    img_shape = mosaic.image.shape
    frozen_frame = win.frame
    win.close()
    pump(app, 0.2)

    eng_b = engine_loop(lm, frames, layer, args.unit, methods, args.engine_seconds)
    bare = [bare_backward_ms(lm, frozen_frame, layer, args.unit, m) for m in methods]
    eng_fps = (eng_a[0] + eng_b[0]) / 2

    def med(x):
        return statistics.median(x) if x else float("nan")

    def p95(x):
        return float(np.percentile(x, 95)) if x else float("nan")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cnnvis-gui benchmark (load average {load:.1f}): {getattr(lm, 'name', args.model)}, input "
          f"{lm.spec.height}x{lm.spec.width}, video {args.pace:g} fps offered, methods {'+'.join(methods)}, "
          f"layer {layer or 'output'} unit {args.unit}, {policy.describe()}, {os.cpu_count()} CPUs, "
          f"window {args.size}")
    rows = [
        ("engine alone fps (before / after the window)", f"{eng_a[0]:.2f} / {eng_b[0]:.2f}", ""),
        ("  engine forward / backward ms (median)", f"{eng_a[1]:.1f} / {eng_a[2]:.1f}", ""),
        ("  engine process CPU ms per frame (before / after)", f"{eng_a[3]:.0f} / {eng_b[3]:.0f}", ""),
        ("window processed fps (live)", f"{fps:.2f}", ""),
        ("  window process CPU ms per frame", f"{win_cpu * 1000 / max(fps, 1e-9):.0f}", ""),
        ("window / engine", f"{fps / eng_fps:.2f}", ">= 0.8"),
        ("  process CPU while live (cores busy)", f"{win_cpu:.2f}", ""),
        ("  results drawn per second (capped at 40 Hz)", f"{draw_fps:.1f}", ""),
        ("  window forward ms (median)", f"{med(fwd):.1f}", ""),
        ("  window backward ms (median, all methods)", f"{med(bwd):.1f}", ""),
        ("bare backward ms (" + ", ".join(methods) + ")", " / ".join(f"{b:.1f}" for b in bare), ""),
        ("unit switch, frame frozen (median / p95 ms)", f"{med(lat_frozen):.1f} / {p95(lat_frozen):.1f}", ""),
        ("  unit switch / bare backward (all methods)", f"{med(lat_frozen) / max(sum(bare), 1e-6):.2f}", "<= 1.2"),
        ("unit switch latency, live (median / p95 ms)", f"{med(lat_live):.1f} / {p95(lat_live):.1f}", ""),
        ("longest GUI-thread stall while live (ms)", f"{stall:.1f}", "<= 50"),
        ("  GUI-thread CPU time inside that stall (ms)", f"{stall_cpu:.1f}", ""),
        ("  99th percentile GUI gap (ms) / gaps over 30 ms", f"{stall_p99:.1f} / {stalls_over}", ""),
        ("  same loop, worker idle (machine noise, ms)", f"{idle_stall:.1f}", ""),
        ("longest result draw on the GUI thread (ms)", f"{live_draw_max:.1f}", ""),
        (f"512-channel grid {img_shape[1]}x{img_shape[0]}: setImage (median ms)", f"{med(times_set):.2f}", ""),
        ("512-channel grid: setImage + repaint (median / max ms)",
         f"{med(times_paint):.2f} / {max(times_paint):.2f}", "< 10"),
        ("512-channel mosaic build (median ms)", f"{med(times_mosaic):.2f}", ""),
        ("requests submitted / computed / dropped", f"{win.worker.submitted} / {win.worker.computed} / "
                                                     f"{win.worker.dropped}", ""),
        ("total process CPU s", f"{time.process_time() - cpu0:.1f}", ""),
    ]
    w0 = max(len(r[0]) for r in rows)
    print(f"{'measure':<{w0}}  {'value':>16}  {'target':>7}")
    print("-" * (w0 + 27))
    for name, val, target in rows:
        print(f"{name:<{w0}}  {val:>16}  {target:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
