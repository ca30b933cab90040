"""Class labels: a labels file (lines, JSON list, JSON mapping) or a mapping in metadata."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelLoadError

__all__ = ["load_labels"]


def load_labels(path) -> list:
    """Read class labels: one per line, a JSON list, or a JSON dict ``{index: label}``.

    Also accepts ImageNet-style ``{"0": ["n01440764", "tench"]}`` (the last string is used).
    """
    p = Path(path)
    if p.is_dir():
        raise ModelLoadError(f"labels file {p} is a folder; give the labels file inside it.")
    if not p.is_file():
        raise ModelLoadError(f"labels file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ModelLoadError(f"labels file {p.name} is not UTF-8 text.") from None
    except PermissionError:
        raise ModelLoadError(f"cannot read the labels file {p}: permission denied (check the file's "
                             f"permissions).") from None
    except OSError as e:
        raise ModelLoadError(f"cannot read the labels file {p}: {e.strerror or e}.") from None
    s = text.strip()
    if p.suffix.lower() == ".json" or s.startswith(("[", "{")):      # ("" is in every string: not s[:1] in)
        try:
            data = json.loads(s)
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"labels file {p.name} is not valid JSON: {e}") from None
        if isinstance(data, dict) and isinstance(data.get("labels"), (list, dict)):
            data = data["labels"]
        if isinstance(data, list):
            return [_label_str(v) for v in data]
        if isinstance(data, dict):
            return _labels_from_mapping(data, p.name)
        raise ModelLoadError(f"labels file {p.name}: expected a JSON list or an object {{index: label}}.")
    labels = [ln.strip() for ln in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise ModelLoadError(f"labels file {p.name} is empty.")
    return labels


def _label_str(v) -> str:
    if isinstance(v, (list, tuple)) and v:
        return str(v[-1])
    return str(v)


def _labels_from_mapping(d: dict, what: str) -> list:
    try:
        items = {int(k): _label_str(v) for k, v in d.items()}
    except (TypeError, ValueError):
        raise ModelLoadError(f"{what}: a labels mapping needs integer keys (class index -> label).") from None
    if not items:
        return []
    n = max(items) + 1
    return [items.get(i, str(i)) for i in range(n)]
