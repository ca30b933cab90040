"""The keyboard table: one list drives the key handler, the help overlay and the README.

Each entry is ``(key names, shown keys, action, description)``.  Key names are
Qt-independent strings: a single character is matched case-sensitively against the
typed text ("K" is shift+k), longer names are special keys ("Left", "PgUp", "F1", "Esc").
``python -m cnnvis_gui.qt.keys`` prints the markdown table for docs/sections/50-gui.md.
"""
from __future__ import annotations

KEYS = [
    (("Left", "j"), "← / j", "move_left", "select the unit to the left"),
    (("Right", "l"), "→ / l", "move_right", "select the unit to the right"),
    (("Up", "i"), "↑ / i", "move_up", "select the unit above"),
    (("Down", "k"), "↓ / k", "move_down", "select the unit below"),
    (("shift+Left", "shift+Right", "shift+Up", "shift+Down", "J", "L", "I", "K"),
     "Shift+arrows / J L I K", "move3", "move the selection 3 units at a time"),
    (("u",), "u", "prev_layer", "previous layer: block outputs, conv / linear layers after their activation, pooling"),
    (("o",), "o", "next_layer", "next layer (the same stops)"),
    (("U",), "U", "prev_module", "previous module (every module: containers, BatchNorm, activations ...)"),
    (("O",), "O", "next_module", "next module"),
    (("PgUp", "w"), "PgUp / w", "prev_image", "previous image (folder, list, video rewinds)"),
    (("PgDown", "e"), "PgDn / e", "next_image", "next image"),
    (("c",), "c", "toggle_camera", "switch camera ↔ files"),
    (("f",), "f", "freeze_frame", "freeze / unfreeze the camera frame"),
    (("d",), "d", "freeze_unit", "freeze / unfreeze the backprop unit (browse other layers, e.g. with a)"),
    (("b",), "b", "cycle_backprop", "backprop off → gradient → deconvnet → guided"),
    (("n",), "n", "cycle_method", "next backprop method (incl. Grad-CAM, guided Grad-CAM)"),
    (("m",), "m", "cycle_filter", "display filter raw → gray → norm → normblur"),
    (("M",), "M", "cycle_sign", "display sign: signed → positive → negative → absolute"),
    (("r",), "r", "cycle_clip", "display clip: 98th pct → 99.5th pct → 98% mass (captum's) → max"),
    (("z",), "z", "cycle_zoom", "zoom: normal → selected unit → backprop fills the grid area"),
    (("t",), "t", "cycle_gamma", "boost: gamma 1 → 0.7 → 0.5 → 0.35"),
    (("T",), "T", "toggle_per_unit", "boost: scale every unit on its own (per-unit gain)"),
    (("a",), "a", "toggle_grid_mode", "grid shows activations ↔ gradients at this layer"),
    (("s",), "s", "toggle_patterns",
     "grid shows activations ↔ patterns: each unit's optimized image, else its top-1 crop (needs an atlas scan)"),
    (("h", "F1"), "h / F1", "toggle_help", "show / hide this help"),
    (("Esc",), "Esc", "reset", "reset zoom, boosts, freezes; close help"),
    (("q",), "q", "quit", "quit"),
]


def action_for(name: str) -> str | None:
    """Key name (see module doc) -> action, or None."""
    for names, _shown, action, _desc in KEYS:
        if name in names:
            return action
    return None


def markdown_table() -> str:
    lines = ["| Key | Action |", "| --- | --- |"]
    for _names, shown, _action, desc in KEYS:
        lines.append(f"| `{shown}` | {desc} |")
    return "\n".join(lines)


def html_table() -> str:
    rows = "".join(f"<tr><td style='padding:2px 14px 2px 4px'><b>{shown}</b></td><td>{desc}</td></tr>"
                   for _n, shown, _a, desc in KEYS)
    return ("<h2>Keys</h2><table>" + rows + "</table>"
            "<p>Mouse: click a module in the tree or a tile in the grid; hover a tile for its max and mean;"
            " drag / wheel in any image pane to pan / zoom (right-click → View All).</p>"
            "<p>h, F1 or Esc closes this help.</p>")


if __name__ == "__main__":  # pragma: no cover
    print(markdown_table())
