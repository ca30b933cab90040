"""``cnnvis-gui``: start the main window (``python run_gui.py`` does the same).

The model options are the ``cnnvis`` command line's (:func:`cnnvis_gui.options.add_model_arguments`,
:func:`cnnvis_gui.options.model_from_args`): ``--model``, ``--pretrained``, ``--weights``, ``--trust-pickle``,
``--arch-kwarg``, ``--labels``, ``--device`` and the input-spec overrides mean the same in both.
Without ``--model``/``--weights`` it opens the last model (else the "shapes" demo) and its sample images.
A model that fails to load, or names code to run, is resolved once the window is up (:mod:`.start_model`):
the "Run code?" prompt, or a box saying why, and the demo model instead.
A ``--layer`` or ``--unit`` the model does not have exits non-zero with the nearest names.
``--screenshot out.png`` holds the input at its first frame, waits for the first complete
render (activations and backprop drawn), saves a PNG of the whole window and exits 0; any
failure exits non-zero with the message on stderr.  ``--quit-after S [--stats FILE.json]``
runs live for S seconds, writes the measured rates and exits 0 (:mod:`.automation`).
Automation runs start at the window's default size and never read or write the user's
saved settings.  ``--threads N`` sets torch's CPU threads (default: the physical cores
minus one kept for the window's own threads, :mod:`cnnvis_gui.core.threads`).
"""
from __future__ import annotations

import argparse
import sys

from ..options import UsageError, add_model_arguments, apply_thread_option
from ..cli import percentile_arg
from ..core.saliency_display import CLIPS, SIGNS
from .state import BACKPROP_METHODS, DISPLAY_FILTERS


def _method_name(text: str) -> str:
    """Accept the command line's spelling (guided-gradcam) as well as the window's (guided_gradcam)."""
    return text.strip().lower().replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnvis-gui", description="See inside a PyTorch CNN, live.")
    add_model_arguments(p)          # the same model options as `cnnvis info/export`
    p.add_argument("--input", help="image, folder, video file or camera index")
    p.add_argument("--camera", type=int, help="camera index to start with")
    p.add_argument("--layer", help="layer to show first (dotted module name, 'output' for the output)")
    p.add_argument("--unit", type=int, help="unit to select first")
    p.add_argument("--method", type=_method_name, choices=BACKPROP_METHODS,
                   help="backprop method (guided-gradcam and guided_gradcam both work, as in cnnvis export)")
    p.add_argument("--filter", choices=DISPLAY_FILTERS, help="display filter for gradients")
    p.add_argument("--sign", choices=SIGNS, help="which part of a gradient is shown (default signed)")
    p.add_argument("--clip", choices=CLIPS,
                   help="the value shown at full brightness: percentile (default, 98th of |g|), mass (captum's) or max")
    p.add_argument("--percentile", type=percentile_arg, metavar="P", help="for --clip percentile / mass (default 98)")
    p.add_argument("--compare", metavar="METHOD", type=_method_name, choices=BACKPROP_METHODS,
                   help="show a second backprop method side by side")
    p.add_argument("--smoothgrad", type=int, metavar="N",
                   help="SmoothGrad: average the gradient methods over N noisy copies (0: off)")
    p.add_argument("--noise", type=float, metavar="S", help="SmoothGrad noise (fraction of the input's range)")
    p.add_argument("--steps", type=int, metavar="K", help="integrated-gradients points")
    p.add_argument("--screenshot", metavar="PNG", help="save a window PNG after the first complete frame, exit")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="with --screenshot / --quit-after: seconds from the start (model loading included) to the "
                        "first frame; past it the run exits 1, even when the model's forward never returns "
                        "(default 120)")
    p.add_argument("--quit-after", type=float, metavar="SECONDS",
                   help="run live for SECONDS from the first drawn frame, then exit 0 (with --stats: write rates)")
    p.add_argument("--stats", metavar="JSON",
                   help="with --quit-after: write processed_fps, capture_fps, forward_ms, backward_ms, "
                        "gui_stall_max_ms, dropped_frames (medians where it applies) to this file")
    p.add_argument("--size", default=None, help="window size WxH (default: the last session's size; 1500x920 "
                                                "for --screenshot / --quit-after runs)")
    return p


def _fail(msg: str) -> int:
    print(f"cnnvis-gui: {msg}", file=sys.stderr)
    return 2


def check_layer_and_unit(lm, layer, unit):
    """Resolve ``--layer`` / ``--unit`` on the model's map -> the layer's name, or raise CnnvisError.

    The message is the core's (nearest layer names, the unit range), so ``cnnvis-gui --layer
    typo`` says what ``cnnvis info`` would, before any window opens.
    """
    from ..core import CnnvisError, Visualizer
    from ..core.stops import first_layer
    mm = Visualizer(lm.model, lm.spec, layouts=getattr(lm, "layouts", None)).model_map()
    info = mm[layer] if layer is not None else mm[first_layer(mm)]
    if not info.visualizable:
        raise CnnvisError(f"layer {layer!r} cannot be shown: {info.reason}; visualizable layers: "
                          + ", ".join(n or "output" for n in mm.visualizable_names()[:12]))
    if unit is not None:
        n = int(info.units or 0)
        if not 0 <= unit < n:
            raise CnnvisError(f"unit {unit} is out of range for layer {info.name or 'output'!r}: "
                              f"it has {n} units (0..{n - 1})")
    return info.name


def main(argv=None) -> int:
    """Entry point of ``cnnvis-gui``; returns the exit code.

    Runs inside the command line's error boundary (:func:`cnnvis_gui.cli.boundary.guarded`): an
    error before or after the window (a model that will not load with ``--screenshot``, a bad
    option) is one line on stderr, text from files is shown with its control characters escaped,
    and ``--traceback`` shows the details.
    """
    from ..cli.boundary import guarded
    return guarded(_start, sys.argv[1:] if argv is None else argv, "cnnvis-gui")


def _start(argv) -> int:
    args = build_parser().parse_args(argv)
    watchdog = None
    if args.screenshot or args.quit_after is not None:
        if not args.timeout > 0:
            return _fail(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
        from .watchdog import GRACE_S, Watchdog   # armed first: loading runs the model's code too
        watchdog = Watchdog(args.timeout + GRACE_S,
                            f"--timeout {args.timeout:g} s passed without a first frame and the model's "
                            f"computation has not returned (a running thread cannot be stopped); exiting")
    try:
        return _main(args, watchdog)
    finally:
        if watchdog is not None:
            watchdog.cancel()


def _main(args, watchdog) -> int:
    from .. import models
    from ..core import CnnvisError

    automated = bool(args.screenshot or args.quit_after is not None)
    if args.stats and args.quit_after is None:
        return _fail("--stats needs --quit-after SECONDS (how long to measure)")
    if args.quit_after is not None and args.quit_after <= 0:
        return _fail(f"--quit-after must be a positive number of seconds, got {args.quit_after:g}")
    try:
        apply_thread_option(args, reserve=1)       # one core stays with the GUI and capture threads
        from ..core.allocator import reuse_freed_memory
        reuse_freed_memory()                       # each frame reuses the last one's memory (no page faults)
    except UsageError as e:
        return _fail(str(e))

    from .settings import make_settings, refused_reason
    from ..core.attribution import DEFAULT_NOISE, DEFAULT_STEPS, check_options

    try:
        check_options(args.smoothgrad or 0, DEFAULT_NOISE if args.noise is None else args.noise,
                      DEFAULT_STEPS if args.steps is None else args.steps)
    except CnnvisError as e:
        return _fail(f"--{e}")

    # ---- model, read from the same options as `cnnvis` (before any window: a usage error just exits);
    # automation runs never read the user's settings
    from .start_model import read_start_model, settle_start_model
    settings = None if automated else make_settings()
    if refused_reason(settings):
        print(f"cnnvis-gui: {refused_reason(settings)}", file=sys.stderr)
    try:
        start = read_start_model(args, settings, models)
    except UsageError as e:
        return _fail(str(e))
    if start.error is not None and automated:
        return _fail(f"cannot load the model: {start.error}")
    if refused_reason(settings):
        start.notes.insert(0, refused_reason(settings))    # said again once the model renders
    lm = start.loaded
    if lm is not None and (args.layer is not None or args.unit is not None):
        try:
            layer = check_layer_and_unit(lm, args.layer, args.unit)
        except CnnvisError as e:
            return _fail(str(e))
        if args.layer is not None:
            args.layer = layer          # "output" -> "", as the core resolved it
    import os
    if automated and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")   # automation on a headless machine
    from PyQt5 import QtCore, QtWidgets
    from .window import MainWindow

    _quiet_qt_messages()
    QtCore.QCoreApplication.setOrganizationName("cnnvis-gui")
    QtCore.QCoreApplication.setApplicationName("cnnvis-gui")
    _preload_native_libraries()
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["cnnvis-gui"])
    win = MainWindow(remember=not automated, settings=settings)
    if args.size:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
            win.resize(w, h)
        except ValueError:
            return _fail(f"--size wants WxH, got {args.size!r}")
    run = None
    if automated:
        from .automation import AutomationRun
        from .watchdog import GRACE_S
        run = AutomationRun(win, app, screenshot=args.screenshot, quit_after=args.quit_after, stats=args.stats,
                            timeout=max(0.5, watchdog.remaining() - GRACE_S), watchdog=watchdog)
        win.set_demo_atlas(False)     # an automated run measures/shoots the first frames: no background atlas

    # ---- model: a failed start is said (and code a file names asked about) once the window is up
    init = dict(layer=args.layer, unit=args.unit, method=args.method)
    if not automated:
        win.show()
        start = settle_start_model(win, start, models)
    lm, demo_name = start.loaded, start.demo_name
    if start.fallback:
        init = {}                       # --layer / --unit named the model that did not load
    for note in start.notes:
        win.show_error(note)
    if start.notes and lm is not None:  # and kept in the model's own line once it is ready (the error fades)
        lm.notes = [*start.notes, *(getattr(lm, "notes", None) or [])]
    if args.filter:
        win.state.update(filter=args.filter)
    win.state.update(**{k: getattr(args, k) for k in ("sign", "clip", "percentile") if getattr(args, k) is not None})
    if args.compare:
        win.state.update(compare=True, method2=args.compare)
    for opt, field in (("smoothgrad", "smoothgrad"), ("noise", "noise"), ("steps", "ig_steps")):
        if getattr(args, opt) is not None:
            win.state.update(**{field: getattr(args, opt)})
    if lm is not None:
        win.load_model(lm, **init)
        win.remember_model(*start.entry)

    # ---- input
    what = args.camera if args.camera is not None else args.input
    if what is not None:
        if isinstance(what, str) and what.isdigit():
            what = int(what)
        win.open_path(what)             # opens in a thread; a failure arrives as renderFailed
    elif lm is not None:
        win.open_samples(demo_name or "shapes")

    win.show()
    if run is not None and run.rc is not None:      # failed before the loop started
        _end(_teardown(win, app), run.rc)
        return run.rc
    app.exec_()
    rc = 0 if run is None else (run.rc if run.rc is not None else 1)
    _end(_teardown(win, app), rc)
    return rc


#: Qt messages that say nothing to a user (the offscreen platform cannot propagate size hints)
QUIET_QT_MESSAGES = ("This plugin does not support propagateSizeHints()",)


def _preload_native_libraries() -> None:
    """Load triton (when installed) before Qt's window system is up.

    torchvision and timm import ``torch._dynamo``, which imports triton to see whether it is
    there; loading triton's bundled LLVM after Qt's xcb platform (and Mesa's own LLVM) are in
    the process crashes it with a segmentation fault.  Opening a torchvision/timm model from
    the window (Model → Open pretrained…) is the first such import, so load it now (~0.5 s).
    """
    import importlib.util
    if "triton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken triton install: torch treats it as absent as well
        pass


def _quiet_qt_messages() -> None:
    """Drop Qt's known-harmless platform messages; every other message still reaches stderr."""
    from PyQt5 import QtCore

    def handler(_kind, _context, message):
        if message not in QUIET_QT_MESSAGES:
            sys.stderr.write(message + "\n")
    QtCore.qInstallMessageHandler(handler)


def _teardown(win, app) -> list:
    """Stop every thread, then destroy the window while the QApplication still exists.

    Left to the interpreter's exit, the window (kept alive by the closures connected to its
    signals) can outlive the QApplication and crash the process on the way out.  Returns the
    threads whose computation did not return in time (``worker.stop_thread``): then the window
    is left alone, and :func:`_end` leaves the process.
    """
    from PyQt5 import sip
    from .worker import stuck_threads
    stuck = []
    try:
        win.shutdown()
    finally:
        stuck = stuck_threads()
        if not stuck and not sip.isdeleted(win):
            sip.delete(win)
        app.processEvents()
    return stuck


def _end(stuck, rc: int) -> None:
    """A computation that never returns cannot be stopped or waited for: say so and leave the process.

    The settings were saved before the window waited for it; nothing else is lost that a
    normal exit would keep.  ``os._exit`` skips destroying the running thread (which would
    abort) and the interpreter's wait for it (which would never end).
    """
    if not stuck:
        return
    import os
    names = ", ".join(sorted({type(t).__name__ for t in stuck}))
    print(f"cnnvis-gui: the model's computation ({names}) had not returned when the window closed; exiting "
          f"without waiting for it (a running thread cannot be stopped)", file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(rc)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
