"""Model → Open pretrained…: the list, the cache column, opening a cached model, offline and cancel."""
from __future__ import annotations

import threading

import pytest
from PyQt5 import QtCore, QtWidgets

from tests.models.pretrained_helpers import TV_ARCH, seed_torchvision, use_caches

from ..waits import signal, until

pytest.importorskip("torchvision")


@pytest.fixture
def caches(tmp_path, monkeypatch):
    return use_caches(monkeypatch, tmp_path)


def open_dialog(window, qtbot):
    d = window.session.open_pretrained_dialog()
    assert d.isVisible()
    until(qtbot, d.is_listed)     # the list is read in a thread (importing takes seconds)
    return d


def test_the_list_searches_and_shows_the_cached_model(qtbot, window, caches):
    seed_torchvision(caches[0])
    d = open_dialog(window, qtbot)
    qtbot.addWidget(d)
    rows = d.visible_rows()
    assert ("torchvision:resnet50", "IMAGENET1K_V2", False) in rows and len(rows) > 80
    qtbot.keyClicks(d.search, "resnet18")
    assert d.visible_rows() == [(TV_ARCH, "IMAGENET1K_V1", True)]
    d.search.clear()
    d.cached_only.setChecked(True)
    assert d.visible_rows() == [(TV_ARCH, "IMAGENET1K_V1", True)]
    assert "1 in the cache" in d.count.text()
    d.cached_only.setChecked(False)
    qtbot.keyClicks(d.search, "resnet50 v2")
    rows = d.visible_rows()
    assert ("torchvision:resnet50", "IMAGENET1K_V2", False) in rows
    assert all("resnet50" in a and v.endswith("V2") for a, v, _ in rows) and len(rows) == 2   # + wide_resnet50_2
    assert not d.open_button.isEnabled()            # nothing selected yet


def test_opening_a_cached_model_shows_it_with_its_labels_and_spec(qtbot, window, caches):
    _, sd = seed_torchvision(caches[0])
    d = open_dialog(window, qtbot)
    qtbot.keyClicks(d.search, "resnet18")
    assert d.select(TV_ARCH, "IMAGENET1K_V1") and d.open_button.isEnabled()
    with signal(qtbot, window.modelChanged):
        qtbot.mouseClick(d.open_button, QtCore.Qt.LeftButton)
    lm = window.session.loaded
    assert lm.name == "resnet18 · IMAGENET1K_V1" and lm.labels[0] == "tench" and len(lm.labels) == 1000
    assert (lm.spec.height, lm.spec.width) == (224, 224)
    import torch
    assert torch.equal(lm.model.state_dict()["conv1.weight"].cpu(), sd["conv1.weight"])
    assert "resnet18 · IMAGENET1K_V1" in window.windowTitle()
    assert window.settings.value("last_model") == f"pretrained:IMAGENET1K_V1|{TV_ARCH}"
    labels = [a.text() for a in window.recent_menu.actions()]
    assert labels[0] == f"{TV_ARCH} · IMAGENET1K_V1 (pretrained)"
    # Recent reopens it the way the command line would (from the cache, with its labels)
    with signal(qtbot, window.modelChanged):
        window.recent_menu.actions()[0].trigger()
    assert window.session.loaded is not lm and window.session.loaded.labels[0] == "tench"


def test_a_missing_file_offline_says_where_to_put_it(qtbot, window, caches):
    d = open_dialog(window, qtbot)
    qtbot.addWidget(d)
    qtbot.keyClicks(d.search, "resnet50 v2")
    assert d.select("torchvision:resnet50", "IMAGENET1K_V2")
    before = window.session.loaded
    d.open_selected()
    until(qtbot, lambda: d.loader is None)
    msg = d.message.text()
    assert "resnet50-11ad3fa6.pth" in msg and str(caches[0] / "hub" / "checkpoints") in msg
    assert d.isVisible() and window.session.loaded is before and d.open_button.isEnabled()


def test_cancel_stops_a_download(qtbot, window, caches, monkeypatch):
    from cnnvis_gui.models import pretrained as P
    from cnnvis_gui.models.download import DownloadCancelled
    started = threading.Event()

    def slow_fetch(ref, progress=None, cancel=None):     # a download that only ends when cancelled
        total = 50 << 20
        done = 0
        started.set()
        while not cancel.wait(0.02):
            done = min(total, done + (1 << 20))
            progress(done, total)
        raise DownloadCancelled("cancelled")

    monkeypatch.setattr(P, "fetch", slow_fetch)
    d = open_dialog(window, qtbot)
    qtbot.addWidget(d)
    qtbot.keyClicks(d.search, "resnet50 v2")
    d.select("torchvision:resnet50", "IMAGENET1K_V2")
    before = window.session.loaded
    d.open_selected()
    until(qtbot, lambda: started.is_set() and d.progress_dialog is not None
          and d.progress_dialog.maximum() > 0)
    assert "MB" in d.progress_dialog.labelText()
    cancel_button = d.progress_dialog.findChild(QtWidgets.QPushButton)
    assert cancel_button.text() == "Cancel"
    qtbot.mouseClick(cancel_button, QtCore.Qt.LeftButton)
    until(qtbot, lambda: d.loader is None)
    assert "cancelled" in d.message.text() and window.session.loaded is before


def test_timm_models_are_listed_too(qtbot, window, caches):
    pytest.importorskip("timm")
    from tests.models.pretrained_helpers import seed_timm
    seed_timm(caches[1])
    d = open_dialog(window, qtbot)
    qtbot.addWidget(d)
    d.library.setCurrentIndex(d.library.findData("timm"))
    until(qtbot, d.is_listed)
    d.cached_only.setChecked(True)
    assert ("timm:resnet18", "a1_in1k", True) in d.visible_rows()
