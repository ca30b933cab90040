"""Unit atlas in the GUI under faults: private model copies taken during a recorded forward,
an empty scan folder, and shutting down while a scan or an optimization runs."""
import copy
import threading
import time

import pytest
import torch
from torch import nn

pytest.importorskip("pytestqt")

from cnnvis_gui.core import CnnvisError, Visualizer  # noqa: E402

from ..waits import WAIT_S, signal, until  # noqa: E402
from .helpers import TINY_SPEC, make_images, tiny_model  # noqa: E402

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
              "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


def _hooks(model) -> int:
    return sum(len(getattr(m, d, None) or {}) for m in model.modules() for d in HOOK_DICTS)


def test_private_model_copied_during_recorded_forwards_has_no_hooks():
    from cnnvis_gui.qt.atlas_dialog import private_model
    model = tiny_model()
    vis = Visualizer(model, TINY_SPEC)
    x = torch.randn(1, 3, 32, 32)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            vis.forward(x).close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        raw_with_hooks = 0
        for _ in range(20):
            try:
                raw_with_hooks += _hooks(copy.deepcopy(model)) > 0   # what the old code did
            except RuntimeError:
                pass
            c = private_model(model)
            assert c is not model and _hooks(c) == 0
            assert torch.equal(c(x), model(x))
    finally:
        stop.set()
        t.join()
    assert _hooks(model) == 0
    print("plain deepcopies with leftover hooks:", raw_with_hooks)


def test_private_model_keeps_user_hooks_and_never_shares():
    from cnnvis_gui.qt.atlas_dialog import private_model, strip_recording_hooks
    model = tiny_model()
    seen = []
    model.fc.register_forward_hook(lambda m, a, o: seen.append(1))
    # a recording hook left behind by the engine (as a deepcopy mid-forward would copy it)
    with Visualizer(model, TINY_SPEC).forward(torch.randn(1, 3, 32, 32)):
        pass
    c = copy.deepcopy(model)

    def recording_hook(m, a, o):   # stands in for an engine hook a mid-forward copy caught
        raise AssertionError("a recording hook fired on the copy")
    recording_hook.__module__ = "cnnvis_gui.core.engine"
    c.features[0].register_forward_hook(recording_hook, always_call=True)
    c.features[0].register_forward_pre_hook(lambda m, a: None)   # the user's: stays
    strip_recording_hooks(c)
    assert len(c.fc._forward_hooks) == 1 and len(c.features[0]._forward_hooks) == 0
    assert len(c.features[0]._forward_pre_hooks) == 1 and not c.features[0]._forward_hooks_always_called
    seen.clear()
    c(torch.randn(1, 3, 32, 32))
    assert seen == [1]

    class NoCopy(nn.Module):
        def __deepcopy__(self, memo):
            raise TypeError("cannot pickle '_thread.lock' object")

    with pytest.raises(CnnvisError, match="private copy"):
        private_model(NoCopy())


def test_private_model_retries_a_copy_that_raced(monkeypatch):
    import types
    from cnnvis_gui.qt import atlas_dialog
    model = tiny_model()
    calls = []

    def flaky(obj, memo=None):
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("dictionary changed size during iteration")
        return copy.deepcopy(obj, memo)

    monkeypatch.setattr(atlas_dialog, "copy", types.SimpleNamespace(deepcopy=flaky))
    c = atlas_dialog.private_model(model)
    assert c is not model and len(calls) == 3
    calls.clear()

    def always(obj, memo=None):
        calls.append(1)
        raise RuntimeError("dictionary changed size during iteration")

    monkeypatch.setattr(atlas_dialog, "copy", types.SimpleNamespace(deepcopy=always))
    with pytest.raises(CnnvisError, match="private copy"):
        atlas_dialog.private_model(model, attempts=3)
    assert len(calls) == 3


def test_scan_dialog_says_the_folder_has_no_images(qtbot, tmp_path):
    from cnnvis_gui.qt.atlas_dialog import AtlasScanDialog
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    dlg = AtlasScanDialog(tiny_model(), TINY_SPEC, ["features.4"], folder=empty, selected=["features.4"],
                          cache_dir=tmp_path / "c")
    qtbot.addWidget(dlg)
    dlg.start_button.click()
    until(qtbot, lambda: dlg.worker is None)
    text = dlg.status.text()
    assert text.startswith("Scan failed: no images in folder '") and "found 1 other file" in text, text
    assert "KeyError" not in text and "CnnvisError" not in text


class SlowNet(nn.Module):
    """TinyNet whose forwards after the first wait until ``stopping()`` is true (a scan that is
    still under way whenever the test acts, however loaded the machine is)."""

    def __init__(self):
        super().__init__()
        self.net = tiny_model()
        self.calls = 0
        self.stopping = lambda: False
        self.deadline = time.monotonic() + WAIT_S        # one bound for the whole scan, not per batch

    def forward(self, x):
        self.calls += 1
        while self.calls > 1 and not self.stopping() and time.monotonic() < self.deadline:
            time.sleep(0.005)
        return self.net(x)


def _started_scan(qtbot, tmp_path, **kw):
    from cnnvis_gui.qt.atlas_dialog import AtlasScanDialog
    make_images(tmp_path / "im", n=60, bad=False, size=(32, 32))
    dlg = AtlasScanDialog(SlowNet(), TINY_SPEC, ["net.features.4"], folder=tmp_path / "im",
                          selected=["net.features.4"], cache_dir=tmp_path / "c", batch_size=1, **kw)
    dlg.start_button.click()
    worker = dlg.worker
    worker.scan.model.stopping = lambda: worker.scan.cancelled
    with signal(qtbot, worker.progress):
        pass
    assert worker.isRunning()
    return dlg, worker


def test_closing_the_dialog_stops_a_running_scan(qtbot, tmp_path):
    from cnnvis_gui.qt import atlas_dialog
    dlg, worker = _started_scan(qtbot, tmp_path)
    dlg.close()
    assert not worker.isRunning() and worker.isFinished()
    assert worker.scan.cancelled and worker.scan.model.calls < 60            # stopped, not scanned to the end
    assert worker not in atlas_dialog._RUNNING and dlg.worker is None
    dlg.deleteLater()


def test_deleting_the_dialog_with_its_window_stops_a_running_scan(qtbot, tmp_path):
    from PyQt5 import QtCore, QtWidgets
    from PyQt5 import sip
    from cnnvis_gui.qt import atlas_dialog
    parent = QtWidgets.QWidget()
    dlg, worker = _started_scan(qtbot, tmp_path, parent=parent)
    dlg.setAttribute(QtCore.Qt.WA_DeleteOnClose)
    sip.delete(parent)                     # the window goes: its dialog is destroyed, no closeEvent
    assert not worker.isRunning() and worker.scan.cancelled and worker.scan.model.calls < 60
    assert worker not in atlas_dialog._RUNNING


def test_closing_the_pane_stops_a_running_optimization(qtbot, tmp_path):
    from PyQt5 import QtCore
    from cnnvis_gui.qt.atlas_pane import AtlasPane
    pane = AtlasPane(tiny_model(), TINY_SPEC)
    qtbot.addWidget(pane)
    pane.preset.setCurrentIndex(pane.preset.findData("yosinski-4"))   # 1000 steps
    pane.show_unit("features.7", 1)
    worker, steps = pane.worker, []

    def hold(req, step):                     # in the worker's thread: no step further until the stop
        steps.append(step.iteration)
        deadline = time.monotonic() + WAIT_S
        while not worker._newer() and time.monotonic() < deadline:
            time.sleep(0.005)
    with signal(qtbot, worker.optimized):
        worker.optimized.connect(hold, QtCore.Qt.DirectConnection)
        pane.optimize()
    assert worker.isRunning()
    pane.close_worker()
    assert not worker.isRunning() and pane.worker is None
    assert steps and max(steps) < 1000                     # stopped at the step it was on, not run out


class _NaNOnTheFourthGradient(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3)
        self.calls = 0

    def forward(self, x):
        y = self.conv(x)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls >= 4:
                y = y + 0 * torch.sqrt(-torch.ones_like(y))
        return y.mean((2, 3))


class _UnderNoGrad(_NaNOnTheFourthGradient):
    def forward(self, x):
        with torch.no_grad():
            return self.conv(x).mean((2, 3))


class _Rounds(_NaNOnTheFourthGradient):
    def forward(self, x):
        return self.conv(torch.round(x * 4) / 4).mean((2, 3))


@pytest.mark.parametrize("model,layer,unit,preset,words", [
    (_NaNOnTheFourthGradient, "output", 1, "fourier",
     "; the objective became NaN or infinite at step 4: stopped there, keeping the images of step 3"),
    (_Rounds, "conv", 2, "yosinski-3", "; the gradient is zero everywhere for 8 steps in a row (steps 1-8)"),
    (_UnderNoGrad, "output", 1, "fourier", "failed: cannot take a gradient of 'class 1 logit + 4 log p': its value "
                                           "does not depend on the image through autograd"),
    (_NaNOnTheFourthGradient, "conv", 5, "maco", "failed: unit 5 is out of range for layer 'conv': it has 5 units "
                                                 "(0..4)."),
])
def test_the_atlas_pane_says_why_an_optimization_stopped_in_one_line(qtbot, tmp_path, monkeypatch, model, layer,
                                                                      unit, preset, words):
    """Optimize in the Atlas dock on a model that cannot be optimized: the status line says why (one line),
    a run that ended early shows its last good image, and the pane takes the next unit."""
    from cnnvis_gui.core import InputSpec
    from cnnvis_gui.qt.atlas_pane import AtlasPane
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))
    pane = AtlasPane(model().eval(), InputSpec(3, 16, 16))
    qtbot.addWidget(pane)
    pane.preset.setCurrentIndex(pane.preset.findData(preset))
    pane.show_unit(layer, unit)
    pane.optimize()
    until(qtbot, lambda: words in pane.status.text())
    text = pane.status.text()
    assert "\n" not in text and "Traceback" not in text
    if text.startswith("failed: "):
        assert pane.opt_label.pixmap() is None or pane.opt_label.pixmap().isNull()
    else:                                            # the last good image is shown, and was not cached
        assert text.startswith("activation ") and not pane.opt_label.pixmap().isNull()
        assert not list((tmp_path / "cache").glob("optimize-*"))
    with signal(qtbot, pane.worker.status):       # the pane goes on working: the next unit is served
        pane.show_unit("conv", 0)
    assert pane.status.text() == "not optimized yet"
    pane.close_worker()
