"""The main window with N x C x L layers, big images, a real video, a slow model: it stays usable."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
from PyQt5 import QtWidgets
from torch import nn

from cnnvis_gui.qt.window import MainWindow

from ..waits import WAIT_S, drawn, idle, signal, until
from .conftest import StillSource, TinyNet, loaded


def make_window(qtbot, lm, source=None):
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1000, 700)
    win.show()
    with signal(qtbot, win.modelChanged):
        win.load_model(lm)
    if source is not None:
        win.set_source(source)
        idle(qtbot, win)
    return win


class ToSequence(nn.Module):
    """N x C x H x W -> N x C x (H*W): a 2-D net going over to 1-D (as into tokens)."""

    def forward(self, x):
        return x.flatten(2)


class SeqNet(nn.Module):
    """Conv2d, then a Conv1d and a Linear over the tokens: N x C x L intermediate outputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=4, padding=1)       # 6 x 8 x 8
        self.to_seq = ToSequence()                                 # 6 x 64
        self.conv1d = nn.Conv1d(6, 5, 3)                           # 5 x 62
        self.relu = nn.ReLU()
        self.tokens = nn.Linear(62, 7)                             # 5 x 7 (Linear applied to tokens)
        self.fc = nn.Linear(35, 3)

    def forward(self, x):
        x = self.tokens(self.relu(self.conv1d(self.to_seq(self.conv(x)))))
        return self.fc(x.flatten(1))


def test_layers_with_c_by_l_outputs_show_and_keep_the_frame(qtbot, monkeypatch):
    win = make_window(qtbot, loaded(SeqNet(), name="seq"), StillSource())
    try:
        for layer, shape in (("conv1d", (1, 62)), ("tokens", (1, 7)), ("to_seq", (1, 64))):
            win.state.update(layer=layer)
            res = drawn(qtbot, win, lambda r, l=layer: r.layer == l)
            assert res.unit_map.shape == shape and win.unit_pane.last_image.shape[:2] == shape
            assert win.grid.mosaic.n_units == res.raw_grid.shape[0]
            assert np.allclose(res.unit_max, res.raw_grid.max(axis=1))
        assert "⚠" not in win.status_text()
        # a per-request failure (here: drawing the backprop) is reported and keeps the frame
        forwards = win.worker.forwards
        from cnnvis_gui import core

        def broken(*a, **k):
            raise ValueError("cannot draw this gradient")
        monkeypatch.setattr(core, "saliency_to_image", broken)
        with signal(qtbot, win.renderFailed):
            win.state.select_unit(2)
        assert "cannot draw this gradient" in win.status_text()
        monkeypatch.undo()
        win.state.select_unit(3)
        assert not drawn(qtbot, win, lambda r: r.unit == 3).forwarded and win.worker.forwards == forwards   # no forward re-run
    finally:
        win.close()


def test_a_pure_1d_model_is_reported_not_crashed(qtbot):
    """The input spec is an image (C x H x W): a model that wants N x C x L says so in the status bar."""
    win = make_window(qtbot, loaded(TinyNet()), StillSource())
    try:
        with signal(qtbot, win.renderFailed):
            win.load_model(loaded(nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU()), name="1d"))
        assert "Conv1d" in win.status_text() and "input spec" in win.status_text()
        win.load_model(loaded())
        assert idle(qtbot, win).layer == "relu2"       # the first view (core.stops)
    finally:
        win.close()


def _big_images(folder, n=3, size=(3000, 4000)):
    h, w = size
    ramp = np.linspace(0, 60, w, dtype=np.float32)[None, :, None]
    noise = np.random.default_rng(0).integers(0, 40, (h, w, 3), dtype=np.uint8)
    means = []
    for i in range(n):
        img = np.clip(noise + ramp + 40 * i, 0, 255).astype(np.uint8)
        assert cv2.imwrite(str(folder / f"big{i}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        means.append(float(img.mean()))
    return means


def test_next_image_decodes_off_the_gui_thread(qtbot, tmp_path, monkeypatch):
    from cnnvis_gui.qt import inputs
    folder = tmp_path / "big"
    folder.mkdir()
    means = _big_images(folder)
    win = make_window(qtbot, loaded())
    try:
        with signal(qtbot, win.sourceOpened):
            assert win.open_path(str(folder))            # returns at once, the decode is in a thread
        idle(qtbot, win)
        src = win.source
        assert src.index == 0 and win.frame.shape == (3000, 4000, 3)
        # every decode from now on waits for the gate: the key handler returns while one is under way
        real, gate, decoded = inputs._still_frame, threading.Event(), []

        def gated(s):
            on_gui = threading.current_thread() is threading.main_thread()
            decoded.append((on_gui, s.index))
            if not on_gui:
                gate.wait(WAIT_S)
            return real(s)
        monkeypatch.setattr(inputs, "_still_frame", gated)
        for _ in range(3):                                # rapid presses: only the newest is decoded
            qtbot.keyClick(win, "e")
        assert "loading" in win.status_text()
        gate.set()
        until(qtbot, lambda: not win.inputs.nav_busy())
        res = idle(qtbot, win)
        assert decoded and not any(on_gui for on_gui, _ in decoded), decoded     # never on the GUI thread
        # the decode the first press started (if it began before the other presses), then the newest
        assert [i for _, i in decoded] in ([0], [1, 0]), decoded
        assert src.index == 0                             # 3 steps from 0 of 3 images (wrapping)
        assert res.forwarded
        # the new image is the one shown (not a half-way one), and it came from the folder
        assert abs(float(win.frame.mean()) - means[0]) < 2
    finally:
        win.close()


def _write_video(path, n=20, size=(64, 48)):
    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (w, h))
    assert vw.isOpened()
    for i in range(n):
        f = np.full((h, w, 3), (i * 12) % 255, np.uint8)
        cv2.circle(f, (10 + 2 * i, 24), 6, (0, 255, 0), -1)
        vw.write(f)
    vw.release()


def test_closing_with_a_video_leaves_no_thread_running(qtbot, tmp_path):
    from cnnvis_gui.qt.patterns import PatternWorker
    video = tmp_path / "clip.avi"
    _write_video(video)
    before = set(threading.enumerate())
    win = make_window(qtbot, loaded())
    with signal(qtbot, win.sourceOpened):
        win.open_path(str(video))
    src = win.source
    assert src.is_live
    until(qtbot, lambda: win.worker.forwards >= 2)      # frames flow
    pane = win.show_atlas()
    win.atlas._pattern_worker = PatternWorker(win.loaded.model, win.loaded.spec, win)
    win.atlas._pattern_worker.start()
    qthreads = [win.worker, win.atlas._pattern_worker] + ([pane.worker] if pane is not None else [])
    assert any(t.name.startswith("cnnvis-capture") for t in threading.enumerate())
    assert all(t.isRunning() for t in qthreads)
    win.close()
    assert not any(t.isRunning() for t in qthreads)
    left = [t for t in threading.enumerate()
            if t not in before and t.is_alive() and not isinstance(t, threading._DummyThread)]
    assert not left, left
    assert not any(t.name.startswith("cnnvis-capture") for t in threading.enumerate())
    assert src.closed


class SlowNet(TinyNet):
    """TinyNet whose forward sleeps while ``slow`` is set (a long CPU forward)."""

    def __init__(self):
        super().__init__()
        self.slow = 0.0
        self.started = threading.Event()
        self.finished = threading.Event()

    def forward(self, x):
        if self.slow:
            self.started.set()
            time.sleep(self.slow)
            self.finished.set()
        return super().forward(x)


def test_close_during_a_long_forward_waits_up_to_its_timeout(qtbot):
    model = SlowNet()
    win = make_window(qtbot, loaded(model), StillSource())
    worker = win.worker
    model.slow = 1.5
    win.set_frame(np.zeros((40, 48, 3), np.uint8))         # a new frame: a forward that takes 1.5 s
    assert model.started.wait(WAIT_S)
    win.close()                                              # STOP_TIMEOUT_MS (10 s) covers the step
    assert model.finished.is_set()                           # it waited the step out ...
    assert not worker.isRunning() and not worker.stuck       # ... and the thread ended: never destroyed running


class StuckNet(TinyNet):
    """TinyNet whose forward, once ``hang`` is set, does not return until ``release`` is set."""

    def __init__(self):
        super().__init__()
        self.hang = False
        self.started = threading.Event()
        self.release = threading.Event()

    def forward(self, x):
        if self.hang:
            self.started.set()
            self.release.wait()
        return super().forward(x)


def test_close_gives_up_on_a_forward_that_does_not_return(qtbot):
    """The stuck thread is given up on, never destroyed while it runs, and ends when its step returns."""
    from cnnvis_gui.qt import app
    from cnnvis_gui.qt.worker import stuck_threads
    model = StuckNet()
    win = make_window(qtbot, loaded(model), StillSource())
    worker = win.worker
    model.hang = True
    win.set_frame(np.zeros((40, 48, 3), np.uint8))
    assert model.started.wait(WAIT_S)
    win.STOP_TIMEOUT_MS = 200
    try:
        stuck = app._teardown(win, QtWidgets.QApplication.instance())   # what the app does at exit
        assert stuck == [worker] and worker.stuck and worker.isRunning()
        assert worker.parent() is None                        # the window may go: the thread object stays
        assert stuck_threads() == [worker]
    finally:
        model.release.set()                                   # the step returns: the thread ends by itself
    assert worker.wait(int(WAIT_S * 1000))
    assert stuck_threads() == []
