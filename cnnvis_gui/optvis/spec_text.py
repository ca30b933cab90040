"""Objectives written as text: what ``cnnvis optimize --objective`` reads.

A sum of terms joined by ``+`` and ``-``, each with an optional weight ``W*``::

    features.10:5                      channel 5 of features.10 (the mean over positions; a flat layer: its value)
    features.10:5@center               that channel at the centre position (a neuron)
    features.10:5@3,4                  ... at position y=3, x=4
    output:281                         class 281 (its logit plus its log-probability, as --unit does)
    features.10:dir=v.npy              a direction in the layer's channel space (a .npy / .npz vector)
    features.10:dir=[1,0,-0.5,...]     ... written out (one number per channel)
    features.6:diversity               Olah et al. 2017's Gram similarity across the batch (subtract it)

for example ``features.10:5 - 0.5*features.10:7`` or ``output:281 - output:282``.  Layers are names from
``model.named_modules()`` (``output`` is the model output); units and positions are checked when the
optimization starts, each with one line.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from ..core import CnnvisError
from ..core.bounds import MAX_UNITS, npy_declared_bytes, npz_declared_bytes, read_bounded
from .capture import resolve_layer
from .objectives import CLASS_PROBABILITY, Objective, channel, class_logit, direction, diversity, neuron

__all__ = ["parse_objective", "read_direction", "OBJECTIVE_EXAMPLES", "MAX_DIRECTION_BYTES"]

#: the most bytes a direction file may have, and its array declare: 16 bytes for each of MAX_UNITS channels
MAX_DIRECTION_BYTES = 16 * MAX_UNITS

OBJECTIVE_EXAMPLES = ("'features.10:5', 'output:281 - output:282', '0.5*features.10:7@3,4', "
                      "'features.10:dir=v.npy', 'features.10:5 - 10*features.6:diversity'")

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_TERM = re.compile(rf"""\s*(?:(?P<w>{_NUMBER})\s*\*\s*)?
    (?P<layer>[^\s:*+\-\[\]][^\s:*+\[\]]*?)\s*:\s*
    (?P<what>dir\s*=\s*\[[^\]]*\]
            |dir\s*=\s*[^\s\[\]]+?\.np[yz](?=\s|[+-]|$)
            |diversity\b
            |\d+(?:\s*@\s*(?:centre|center|\d+\s*,\s*\d+))?)\s*""", re.X)
_SIGN = re.compile(r"\s*([+-])")


def _fail(text: str, pos: int, why: str) -> CnnvisError:
    return CnnvisError(f"--objective: {why} at character {pos + 1} of {text!r}; write terms like "
                       f"{OBJECTIVE_EXAMPLES}.")


def read_direction(path: Path, where: str = "the objective") -> np.ndarray:
    """The vector of a ``.npy`` / ``.npz`` direction file (one array), read as data only.

    The file must be a regular file of at most :data:`MAX_DIRECTION_BYTES` (read without blocking:
    a FIFO or a device is refused by what it is), and its array headers may declare no more than that
    before anything is allocated (a 1 KB file may declare 10^12 values); ``allow_pickle=False``, so a
    pickled object in it is refused, never run.  The command line and the window read directions here.
    """
    what = f"direction file of {where}"
    data = read_bounded(path, MAX_DIRECTION_BYTES, what)
    try:
        f = io.BytesIO(data)
        declared = npz_declared_bytes(f) if data[:2] == b"PK" else npy_declared_bytes(f)
        if declared > MAX_DIRECTION_BYTES:
            raise CnnvisError(f"--objective: the {what} '{path}' declares {declared:,} bytes, more than the "
                              f"{MAX_DIRECTION_BYTES:,} a direction (one number per channel) may have.")
        z = np.load(io.BytesIO(data), allow_pickle=False)
        if isinstance(z, np.lib.npyio.NpzFile):
            names = list(z.files)
            if len(names) != 1:
                raise CnnvisError(f"--objective: '{path}' holds {len(names)} arrays ({', '.join(names[:8])}"
                                  f"{', ...' if len(names) > 8 else ''}); a direction file holds one vector.")
            z = z[names[0]]
        return np.asarray(z, np.float32).ravel()
    except CnnvisError:
        raise
    except Exception as e:
        raise CnnvisError(f"--objective: cannot read the {what} '{path}': {e}") from None


def _vector(arg: str, where: str) -> np.ndarray:
    arg = arg.strip()
    if arg.startswith("["):
        try:
            v = np.array([float(s) for s in arg[1:-1].split(",") if s.strip()], np.float32)
        except ValueError:
            raise CnnvisError(f"--objective: the direction {arg!r} of {where} is not a list of numbers.") from None
    else:
        v = read_direction(Path(arg).expanduser(), where)
    if v.size == 0 or not np.isfinite(v).all():
        raise CnnvisError(f"--objective: the direction of {where} must be finite numbers, one per channel "
                          f"(got {v.size} value{'s' * (v.size != 1)}{', not all finite' if v.size else ''}).")
    if not np.abs(v).max() > 0:
        raise CnnvisError(f"--objective: the direction of {where} is zero: it has no gradient.")
    return v


def _atom(model, layer_text: str, what: str, class_probability: float) -> Objective:
    layer = resolve_layer(model, layer_text)
    name = layer or "output"
    what = re.sub(r"\s+", "", what)
    if what.startswith("dir="):
        return direction(layer, _vector(what[4:], f"layer {name!r}"))
    if what == "diversity":
        return diversity(layer)
    unit, _, at = what.partition("@")
    if layer == "":
        if at:
            raise CnnvisError(f"--objective: 'output:{unit}@{at}': the model output has no positions; "
                              f"write output:{unit}.")
        return class_logit(int(unit), class_probability)
    if not at:
        return channel(layer, int(unit))
    if at in ("center", "centre"):
        return neuron(layer, int(unit))
    return neuron(layer, int(unit), tuple(int(v) for v in at.split(",")))


def parse_objective(text: str, model, class_probability: float = CLASS_PROBABILITY) -> Objective:
    """The :class:`~.objectives.Objective` that ``text`` writes (see the module's docstring); one line if it cannot."""
    if not isinstance(text, str) or not text.strip():
        raise CnnvisError(f"--objective: nothing to optimize; write terms like {OBJECTIVE_EXAMPLES}.")
    pos, total, first, shows = 0, None, True, False
    while pos < len(text) and text[pos:].strip():
        sign = 1.0
        m = _SIGN.match(text, pos)
        if m:
            sign, pos = (-1.0 if m.group(1) == "-" else 1.0), m.end()
        elif not first:
            raise _fail(text, pos, "expected + or - between terms")
        t = _TERM.match(text, pos)
        if t is None:
            raise _fail(text, pos, "cannot read a term")
        obj = _atom(model, t.group("layer"), t.group("what"), class_probability)
        shows = shows or obj.separable
        w = sign * float(t.group("w") or 1.0)
        term = obj if w == 1.0 else (-obj if w == -1.0 else w * obj)
        total = term if total is None else total + term
        pos, first = t.end(), False
    if total is None:
        raise CnnvisError(f"--objective: nothing to optimize; write terms like {OBJECTIVE_EXAMPLES}.")
    if not shows:
        raise CnnvisError("--objective: diversity alone has nothing to make the images show; add a unit, "
                          "e.g. 'features.10:5 - 10*features.6:diversity'.")
    return total

