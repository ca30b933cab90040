"""When the window asks its worker for a picture, and for which methods (from a mutation run of
qt/render.py's request path: these changes passed every window test)."""
from __future__ import annotations

from .test_window_drawn import settle


def test_one_backprop_method_unless_compare_is_on(qtbot, window):
    win = window
    res = settle(qtbot, win)
    assert win.state.backprop_on and not win.state.compare
    assert [b.method for b in res.backprops] == [win.state.method]      # no second, hidden backward
    win.state.update(compare=True)
    win.request_render()
    res = settle(qtbot, win)
    assert [b.method for b in res.backprops] == [win.state.method, win.state.method2]


def test_no_request_while_the_model_or_its_map_is_missing_nor_after_close(qtbot, window):
    """A key pressed while a model is loading (no model, or no map yet) or after the window
    closed sends nothing to the worker."""
    win = window
    session = win.session
    seq = win.render.seq
    loaded, mm = session.loaded, session.mm
    session.loaded = None                   # a new model is being loaded
    assert win.request_render() is False
    session.loaded, session.mm = loaded, None       # loaded, its map not built yet
    assert win.request_render() is False
    session.mm = mm
    assert win.render.seq == seq                    # nothing was submitted
    win.close()
    assert win.request_render() is False
    assert win.render.seq == seq
