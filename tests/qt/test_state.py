"""ViewerState on its own (no Qt): every cycle a key walks, the grid moves at the edges, the observer.

The expected sequences are written out here from the key table's descriptions (docs/sections/50-gui.md),
not read back from the module's own tuples, so a reordered or shortened tuple fails.
"""
import pytest

from cnnvis_gui.qt.state import ViewerState


def walk(state, step, field, n):
    out = []
    for _ in range(n):
        step()
        out.append(getattr(state, field))
    return out


def test_n_cycles_every_backprop_method_and_turns_backprop_on():
    s = ViewerState(method="gradient", backprop_on=False)
    seen = walk(s, s.cycle_method, "method", 6)
    assert seen == ["deconvnet", "guided", "gradcam", "guided_gradcam", "gradient", "deconvnet"]
    assert s.backprop_on
    s = ViewerState(method="no-such-method")
    s.cycle_method()
    assert s.method == "gradient"


def test_b_cycles_off_gradient_deconvnet_guided():
    s = ViewerState(method="guided", backprop_on=True)
    states = []
    for _ in range(5):
        s.cycle_backprop()
        states.append(s.method if s.backprop_on else None)
    assert states == [None, "gradient", "deconvnet", "guided", None]
    s = ViewerState(method="gradcam", backprop_on=True)   # a method b does not list: starts the cycle
    s.cycle_backprop()
    assert s.backprop_on and s.method == "gradient"


def test_m_z_t_cycles():
    s = ViewerState(filter="raw")
    assert walk(s, s.cycle_filter, "filter", 4) == ["gray", "norm", "normblur", "raw"]
    s = ViewerState()
    assert s.zoom == "normal"
    assert walk(s, s.cycle_zoom, "zoom", 3) == ["unit", "backprop", "normal"]
    assert s.gamma == 1.0
    assert walk(s, s.cycle_gamma, "gamma", 4) == [0.7, 0.5, 0.35, 1.0]
    s = ViewerState(gamma=0.9)                              # an unlisted gamma (old settings) restarts
    s.cycle_gamma()
    assert s.gamma == 0.7


def grid(n=10, cols=4, unit=0):
    """10 units in 4 columns: rows 0-3, 4-7 and a partial last row 8-9."""
    return ViewerState(n_units=n, grid_cols=cols, unit=unit)


@pytest.mark.parametrize("unit, dx, dy, want", [
    (5, 0, 1, 9),      # down into the partial last row
    (6, 0, 1, 6),      # down onto an empty cell: stays
    (7, 0, 1, 7),
    (9, 0, -1, 5),     # up from the partial row
    (9, 1, 0, 9),      # right of the last unit: the last unit (not an empty cell)
    (8, -1, 0, 8),     # left edge
    (3, 1, 0, 3),      # right edge
    (1, 0, -1, 1),     # top edge
    (1, 3, 0, 3),      # Shift+Right: 3 columns, clipped to the row
    (2, -3, 0, 0),
    (9, 0, -3, 1),     # Shift+Up: 3 rows, clipped to the top
    (0, 0, 3, 8),      # Shift+Down: 3 rows, clipped to the last row
    (2, 0, 3, 6),      # ... in a column the partial row lacks: the lowest unit of that column
    (6, 0, 3, 6),
    (4, 0, 1, 8),
])
def test_moves_on_a_partial_last_row(unit, dx, dy, want):
    s = grid(unit=unit)
    s.move(dx, dy)
    assert s.unit == want


def test_moves_wider_than_the_row_and_without_a_layer():
    s = grid(n=10, cols=4, unit=8)
    s.update(grid_cols=20)            # a one-row grid: up / down change nothing
    s.move(0, 1)
    assert s.unit == 8
    s.move(5, 0)
    assert s.unit == 9
    empty = ViewerState(n_units=0, unit=0)
    empty.move(1, 1)
    empty.select_unit(5)
    assert empty.unit == 0


def test_select_unit_clamps_to_the_layer():
    s = grid()
    s.select_unit(42)
    assert s.unit == 9
    s.select_unit(-3)
    assert s.unit == 0
    s.select_unit(4.0)
    assert s.unit == 4 and isinstance(s.unit, int)


def test_update_notifies_once_with_the_fields_that_changed():
    s = ViewerState()
    calls = []
    s.connect(calls.append)
    assert s.update(unit=0, layer="conv1", gamma=0.5) == {"layer", "gamma"}
    assert calls == [{"layer", "gamma"}]
    assert s.update(layer="conv1") == set() and len(calls) == 1       # no change: no notice
    with pytest.raises(AttributeError, match="colour"):
        s.update(colour="red")
    s.disconnect(calls.append)
    s.update(unit=3)
    assert len(calls) == 1
    s.disconnect(calls.append)                                          # twice is harmless
    assert "changed" not in s.snapshot() and s.snapshot()["unit"] == 3


def test_freeze_unit_keeps_the_backprop_unit_while_browsing():
    s = ViewerState(layer="conv2", unit=2, n_units=12, grid_cols=4)
    assert s.backprop_unit == ("conv2", 2)
    s.toggle_frozen_unit()
    assert s.frozen_unit == ("conv2", 2)
    s.update(layer="conv1")
    s.move(0, 1)
    assert s.backprop_unit == ("conv2", 2) and (s.layer, s.unit) == ("conv1", 6)
    s.toggle_frozen_unit()
    assert s.frozen_unit is None and s.backprop_unit == ("conv1", 6)


def test_toggles_and_reset():
    s = ViewerState(layer="fc", unit=2, n_units=4, method="deconvnet", filter="gray")
    s.toggle("per_unit")
    s.toggle_grid_mode()
    assert s.per_unit and s.grid_mode == "gradients"
    s.toggle_grid_mode()
    assert s.grid_mode == "activations"
    s.update(zoom="backprop", gamma=0.35, grid_mode="gradients", patterns=True, frozen_unit=("fc", 1),
             frozen_frame=True, show_help=True, backprop_on=False, overlay=True)
    s.reset()
    assert (s.zoom, s.gamma, s.per_unit, s.grid_mode, s.patterns, s.frozen_unit, s.frozen_frame, s.show_help,
            s.backprop_on, s.overlay) == ("normal", 1.0, False, "activations", False, None, False, False, True, False)
    # Esc keeps what the user is looking at
    assert (s.layer, s.unit, s.method, s.filter) == ("fc", 2, "deconvnet", "gray")
