"""What a file may make this program run: the one place that decides.

Opening a file is not consent to run code.  A checkpoint can name the architecture it
belongs to — the ``"cnnvis"`` key of a ``.pth``, the ``.safetensors`` header, a sidecar
``.json`` — but that name is data written by whoever made the file.  Without the user's
consent (``trust_code=True``; ``--trust-code``; "Yes" in the window's prompt) only a fixed
allowlist may be built from it:

- ``torchvision:NAME`` for a NAME in ``torchvision.models.list_models()``;
- ``timm:NAME`` for a NAME timm has registered (``timm.is_model``);
- the project's own demo networks (:data:`DEMO_ARCHS`).

The window's settings are a file too: a remembered model (the last one, the Recent menu) that
names an architecture is checked here as well (:func:`cnnvis_gui.options.model_from_entry`),
since whoever can write the settings file chose it, not the user at this start.

Anything else — ``package.module:callable`` (``os:system``...), ``path/to/net.py:Net``
(its top level runs on import) — raises :class:`~.errors.UntrustedCodeError` naming what
the file asks to run.  Keyword arguments read from a file must be plain literals
(numbers, strings, booleans, None, lists and dicts of those) and, without consent, may not
ask the builder to download or read anything else (``weights=``, ``pretrained=``,
``checkpoint_path=``...).  An architecture the *user* names (``arch=``, ``--model``) is the
user's own choice and is not checked here.  Unpickling is decided separately, by
``trust_pickle`` (:mod:`.pickles`).

Compare Hugging Face ``transformers``' ``trust_remote_code``.
"""
from __future__ import annotations

import math

from .errors import ModelLoadError, UntrustedCodeError

__all__ = ["DEMO_ARCHS", "FETCHING_KWARGS", "TRUST_HINT", "allowed_without_consent", "check_file_arch",
           "check_file_kwargs"]

#: The shipped demo networks: a checkpoint may name these without consent.
DEMO_ARCHS = frozenset({"cnnvis_gui.models.demo_nets:ShapesNet", "cnnvis_gui.models.demo_nets:GlyphsNet"})
#: Builder keyword arguments that download weights or read another file (torchvision, timm).
FETCHING_KWARGS = frozenset({"weights", "weights_backbone", "pretrained", "pretrained_backbone", "pretrained_cfg",
                             "pretrained_cfg_overlay", "checkpoint_path", "cache_dir", "model_dir", "file", "url",
                             "hf_hub_id"})
#: How a user allows what a file names (the end of every refusal).
TRUST_HINT = ("Only if you trust where the file came from, allow it: load(..., trust_code=True) in Python, "
              "--trust-code on the command line, or answer Yes when the window asks. Or name the architecture "
              "yourself (arch=...; command line: --model ARCH --weights FILE).")
_MAX_DEPTH = 4
_MAX_ITEMS = 10_000


def allowed_without_consent(arch: str) -> bool:
    """True when a file may name ``arch`` and have it built with no question asked."""
    if not isinstance(arch, str):
        return False
    arch = arch.strip()
    if arch in DEMO_ARCHS:
        return True
    head, sep, name = arch.partition(":")
    if not sep or not name or ":" in name:
        return False
    if head == "torchvision":
        try:
            import torchvision.models as tvm
        except ImportError:   # the builder then says torchvision is missing
            return True
        return name in tvm.list_models()
    if head == "timm":
        try:
            import timm
        except ImportError:
            return True
        return bool(timm.is_model(name))
    return False


def check_file_arch(arch, origin: str, trust_code: bool = False, path=None) -> None:
    """Refuse an architecture named by a file unless it is allowlisted or the user consented.

    Parameters
    ----------
    arch : str
        What the file names (``"os:system"``, ``"/abs/path/net.py:Net"``...), file paths
        already resolved.
    origin : str
        Where it was named, for the message (``"e.pth's 'cnnvis' key"``...).
    trust_code : bool
        The user's consent.
    path : Path, optional
        The file that named it (kept on the error for the window's prompt).

    Raises
    ------
    UntrustedCodeError
    """
    if trust_code or allowed_without_consent(arch):
        return
    if not isinstance(arch, str):
        raise ModelLoadError(f"{origin} names an architecture that is not a string ({type(arch).__name__}).")
    target = arch.strip()
    head = target.rpartition(":")[0]
    if head.endswith(".py") or "/" in head or "\\" in head:
        what = f"the Python file {head} (its top level runs on import, then {target.rpartition(':')[2]} is called)"
    elif head in ("torchvision", "timm"):
        what = f"{target}, which {head} does not list as a model"
    else:
        what = f"the Python callable {target}"
    raise UntrustedCodeError(f"{origin} asks to run {what} to build the network; it was not run: opening a file "
                             f"is not consent to run code. {TRUST_HINT}", path=path, target=target, origin=origin)


def check_file_kwargs(kwargs, origin: str, trust_code: bool = False) -> dict:
    """The constructor keyword arguments a file gives, checked: plain literals only, nothing fetched.

    Returns a copy.  Raises :class:`~.errors.ModelLoadError` when a value is not a plain
    literal (always) or, without ``trust_code``, when a key would make the builder download or
    read another file (:data:`FETCHING_KWARGS`) with a value other than ``None``/``False``.
    """
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise ModelLoadError(f"{origin}: 'arch_kwargs' must be an object of keyword arguments, "
                             f"got {type(kwargs).__name__}.")
    budget = [_MAX_ITEMS]
    for k, v in kwargs.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise ModelLoadError(f"{origin}: 'arch_kwargs' has the key {k!r}, which is not a Python identifier.")
        if not _plain(v, 0, budget):
            raise ModelLoadError(f"{origin}: 'arch_kwargs' {k}= is not a plain value (numbers, strings, booleans, "
                                 f"None, lists and objects of those; at most {_MAX_DEPTH} levels deep); refused.")
        if not trust_code and k in FETCHING_KWARGS and v not in (None, False):
            raise ModelLoadError(f"{origin}: 'arch_kwargs' {k}={v!r} would make the builder download weights or "
                                 f"read another file; refused. {TRUST_HINT}")
    return dict(kwargs)


def _plain(v, depth: int, budget: list) -> bool:
    budget[0] -= 1
    if budget[0] < 0 or depth > _MAX_DEPTH:
        return False
    if v is None or type(v) in (bool, int, str):
        return True
    if type(v) is float:
        return math.isfinite(v)
    if type(v) in (list, tuple):
        return all(_plain(x, depth + 1, budget) for x in v)
    if type(v) is dict:
        return all(type(k) is str and _plain(x, depth + 1, budget) for k, x in v.items())
    return False
