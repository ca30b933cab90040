"""A checkpoint's own metadata: the ``"cnnvis"`` key, the sidecar JSON, file architectures it names.

Metadata is data written by whoever made the file; what it may make this program *run* is
decided by :mod:`.trust`, not here.
"""
from __future__ import annotations

from pathlib import Path

from ..core import CnnvisError, InputSpec
from ..core.bounds import load_json_bounded
from .errors import ModelLoadError
from .labels import labels_list
from .probe import _spec_dict

__all__ = ["CHECKPOINT_META_KEY"]

#: Key of the metadata dict inside a checkpoint (and the layout of a sidecar JSON):
#: ``{"spec": InputSpec.to_dict(), "labels": [...], "name": str, "arch": str, "arch_kwargs": {...}}``.
CHECKPOINT_META_KEY = "cnnvis"


_META_KEYS = ("spec", "labels", "name", "arch", "arch_kwargs")


def _read_sidecar(path: Path, notes: list | None = None):
    """The sidecar JSON next to a checkpoint, if it is one of ours.

    A JSON file there may just as well be somebody's training config: a file that is not JSON,
    not an object, or has none of our keys (``spec``, ``labels``, ``arch``, ``name``) is ignored
    with a note; of a bare sidecar only the keys we understand and that are valid are used. A
    sidecar that wraps its metadata in a ``"cnnvis"`` object is explicitly ours, and invalid
    values there are errors.
    """
    for cand in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
        if not cand.is_file() or cand == path:
            continue
        ignored = f"{cand.name} next to the weights was ignored: "
        try:   # bounded: size, nesting depth (a foreign file nested 100,000 deep is ignored, not a crash)
            d = load_json_bounded(cand, cand.name)
        except CnnvisError as e:
            if notes is not None:
                notes.append(ignored + f"it is not a metadata file we can read ({str(e).rstrip('.')})")
            return None
        if not isinstance(d, dict):
            if notes is not None:
                notes.append(ignored + "it is not a JSON object")
            return None
        explicit = isinstance(d.get(CHECKPOINT_META_KEY), dict)
        if explicit:
            return {"path": cand, "meta": d[CHECKPOINT_META_KEY]}
        if not any(k in d for k in ("spec", "labels", "arch", "name")):
            if notes is not None:
                notes.append(ignored + f"none of the metadata keys {', '.join(_META_KEYS)} in it (a training config?)")
            return None
        meta, bad = {}, []
        for k in _META_KEYS:
            if k not in d:
                continue
            problem = _meta_problem(k, d[k], cand.parent)
            if problem:
                bad.append(f"{k!r} ({problem})")
            else:
                meta[k] = d[k]
        if bad and notes is not None:
            notes.append(f"{cand.name}: ignored {', '.join(bad)}")
        if not meta:
            return None
        return {"path": cand, "meta": meta}
    return None


def _meta_problem(key: str, value, folder: Path) -> str | None:
    """Why a bare sidecar's value cannot be used (None: it can)."""
    if key == "spec":
        if not isinstance(value, dict):
            return "not an object"
        try:
            s = _spec_dict(value, "spec")
            InputSpec(**{"height": 224, "width": 224, **s})
        except CnnvisError as e:
            return str(e)
        except TypeError as e:
            return str(e)
        return None
    if key == "labels":
        if isinstance(value, str):
            p = Path(value).expanduser()
            p = p if p.is_absolute() else folder / p
            return None if p.is_file() else f"no labels file {p}"
        if isinstance(value, (list, dict)):
            try:
                labels_list(value, "labels")
            except ModelLoadError as e:
                return str(e)
            return None
        return "not a list, mapping or file name"
    if key in ("name", "arch"):
        return None if isinstance(value, str) and value.strip() else "not a non-empty string"
    if key == "arch_kwargs":
        return None if isinstance(value, dict) else "not an object"
    return None


def _is_file_arch(head: str) -> bool:
    return head.endswith(".py") or "/" in head or "\\" in head


def _resolve_meta_arch(arch: str, path: Path) -> str:
    """A file architecture named in a checkpoint's metadata is relative to the checkpoint's folder
    (then the current folder)."""
    head, sep, name = arch.strip().rpartition(":")
    if not sep or not head or not _is_file_arch(head) or head.startswith(("torchvision", "timm")):
        return arch
    f = Path(head).expanduser()
    if f.is_absolute():
        return arch
    tried = [path.parent / f, Path.cwd() / f]
    for cand in tried:
        if cand.is_file():
            return f"{cand}:{name}"
    raise ModelLoadError(f"{path.name}: its metadata names the architecture {arch!r}, but {head} was not found; "
                         f"tried {tried[0]} (next to the checkpoint) and {tried[1]} (current folder). Give the "
                         f"architecture explicitly (arch=..., CLI: --model path/to/net.py:Class).")
