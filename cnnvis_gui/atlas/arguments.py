"""The command-line arguments the atlas, optimize and dissect commands share: checked numbers,
layer and unit lists, names made safe as folder names, and the one way a command writes a picture."""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np

from ..core import CnnvisError
from ..core.files import atomic_write_image, file_name_part

__all__ = ["ranged", "layer_list", "unit_list", "folder_name", "write_png"]


def ranged(kind, minimum, strict: bool, what: str, maximum=None):
    """An argparse ``type``: a finite ``kind(text)`` > minimum (``strict``) or >= minimum, and <= maximum."""
    def parse(text):
        try:
            v = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{what} must be {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number, got {text!r}")
        if v <= minimum if strict else v < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be {'>' if strict else '>='} {minimum}, got {text!r}")
        if maximum is not None and v > maximum:
            raise argparse.ArgumentTypeError(f"{what} must be at most {maximum}, got {text!r}")
        return v
    parse.__name__ = kind.__name__      # argparse names the type in its messages
    return parse


def layer_list(values) -> list:
    out = []
    for v in values:
        out += [s.strip() for s in str(v).split(",") if s.strip()]
    return out


def unit_list(text, n: int) -> list:
    if not text or text == "all":
        return list(range(n))
    out = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise CnnvisError(f"--units: cannot read {part!r}; use numbers and ranges like 0,5,10-15.")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b >= n or b < a:   # checked before the range is expanded (0-1000000000 builds nothing)
            raise CnnvisError(f"--units: {part!r} is out of range (0..{n - 1})." if b >= n else
                              f"--units: range {part!r} goes backwards.")
        out.append(range(a, b + 1))
    return sorted(set().union(*out)) if out else []


def folder_name(name: str) -> str:
    """A layer name as one folder name inside ``--out`` (never ``..`` or a path)."""
    return file_name_part(re.sub(r"[^A-Za-z0-9_.-]+", "_", name or "output"), "layer")


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Encode by the file's extension and write by the one atomic writer (temporary file + ``os.replace``)."""
    atomic_write_image(path, rgb, durable=True)
