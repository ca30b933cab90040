"""Class labels: a labels file (lines, JSON list, JSON mapping) or a mapping in metadata."""
from __future__ import annotations

from pathlib import Path

from ..core import CnnvisError
from ..core.bounds import MAX_LABELS, parse_json_bounded, read_bounded
from .errors import ModelLoadError

__all__ = ["load_labels", "MAX_LABELS_FILE_BYTES", "labels_list"]

#: the largest labels file read (a million labels of 60 characters)
MAX_LABELS_FILE_BYTES = 64 << 20
#: the longest label kept (longer ones are cut: a label is a class name)
MAX_LABEL_CHARS = 1000


def load_labels(path) -> list:
    """Read class labels: one per line, a JSON list, or a JSON dict ``{index: label}``.

    Also accepts ImageNet-style ``{"0": ["n01440764", "tench"]}`` (the last string is used).
    Bounded: a regular file of at most :data:`MAX_LABELS_FILE_BYTES`, at most
    :data:`~cnnvis_gui.core.bounds.MAX_LABELS` labels (a mapping's largest index counts, before the
    list is built), each cut to :data:`MAX_LABEL_CHARS` characters.
    """
    p = Path(path)
    try:
        data = read_bounded(p, MAX_LABELS_FILE_BYTES, "labels file")
    except CnnvisError as e:
        raise ModelLoadError(str(e)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ModelLoadError(f"labels file {p.name} is not UTF-8 text.") from None
    s = text.strip()
    if p.suffix.lower() == ".json" or s.startswith(("[", "{")):      # ("" is in every string: not s[:1] in)
        try:
            doc = parse_json_bounded(s, f"labels file {p.name}")
        except CnnvisError as e:
            raise ModelLoadError(str(e)) from None
        if isinstance(doc, dict) and isinstance(doc.get("labels"), (list, dict)):
            doc = doc["labels"]
        if isinstance(doc, (list, dict)):
            return labels_list(doc, f"labels file {p.name}")
        raise ModelLoadError(f"labels file {p.name}: expected a JSON list or an object {{index: label}}.")
    labels = [_label_str(ln.strip()) for ln in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise ModelLoadError(f"labels file {p.name} is empty.")
    _check_count(len(labels), f"labels file {p.name}")
    return labels


def labels_list(value, what: str = "labels") -> list:
    """Labels from a list (``["cat", ...]``) or a mapping (``{index: label}``), bounded (see :func:`load_labels`).

    What a checkpoint's metadata, a sidecar or the caller gives goes through here as well.
    """
    if isinstance(value, dict):
        return _labels_from_mapping(value, what)
    if isinstance(value, (list, tuple)):
        _check_count(len(value), what)
        return [_label_str(v) for v in value]
    raise ModelLoadError(f"{what}: expected a list of labels or a mapping {{index: label}}, got "
                         f"{type(value).__name__}.")


def _check_count(n: int, what: str) -> None:
    if n > MAX_LABELS:
        raise ModelLoadError(f"{what}: {n:,} labels, more than the {MAX_LABELS:,} a model's classes may have; is it "
                             f"a labels file?")


def _label_str(v) -> str:
    if isinstance(v, (list, tuple)) and v:
        v = v[-1]
    # str, not repr: a numpy number (``list(np.unique(y))``) is named "3", not "np.int64(3)"
    s = v if isinstance(v, str) else str(v)
    return s[:MAX_LABEL_CHARS]


def _labels_from_mapping(d: dict, what: str) -> list:
    items = {}
    for k, v in d.items():
        try:
            i = int(k) if not isinstance(k, (bool, float)) else None
        except (TypeError, ValueError):
            i = None
        if i is None:
            raise ModelLoadError(f"{what}: a labels mapping needs integer keys (class index -> label).")
        if not 0 <= i < MAX_LABELS:   # the list below has max(index) + 1 entries: bounded before it is built
            raise ModelLoadError(f"{what}: label index {i:,} is outside 0..{MAX_LABELS - 1:,} (a mapping's largest "
                                 f"index decides how many labels there are).")
        items[i] = _label_str(v)
    if not items:
        return []
    n = max(items) + 1
    return [items.get(i, str(i)) for i in range(n)]
