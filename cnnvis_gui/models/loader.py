"""Open a user's network safely: architecture sources, weight files, metadata, probe.

``load()`` is the one entry point.  It

1. builds the architecture (``torchvision:resnet18``, ``timm:name``, ``package.module:factory``,
   ``path/to/net.py:Net``) with the caller's keyword arguments, or takes a whole pickled model
   (only with ``trust_pickle=True``); an architecture named by the file itself rather than by the
   caller is built only if :mod:`.trust` allows it (``trust_code``);
2. reads the weights with ``torch.load(..., weights_only=True)`` (or safetensors), so a
   crafted pickle never runs; TorchScript archives are refused (module hooks, which every
   visualization here relies on, cannot reach inside a TorchScript graph);
3. finds the state dict inside checkpoint dicts (``state_dict``, ``model``, ``net``, ``ema``,
   Lightning...) and strips ``module.`` / ``model.`` / ``_orig_mod.`` prefixes when that makes
   the keys fit, or explains exactly what does not fit and the likely fix;
4. resolves the input spec, labels and name (caller > sidecar JSON > checkpoint ``"cnnvis"``
   key > guesses, every guess recorded in ``notes``) and validates it with one probe forward.

Everything is built in fresh objects; a failure raises :class:`ModelLoadError` and leaves
nothing behind.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core import InputSpec
from .builders import build_arch
from .errors import ModelLoadError, _short
from .labels import labels_list, load_labels
from .metadata import CHECKPOINT_META_KEY, _read_sidecar, _resolve_meta_arch
from .probe import _guess_labels, _resolve_spec, _spec_dict
from .trust import check_file_arch, check_file_kwargs
from .state_dicts import (STATE_DICT_KEYS, _chosen_state_dict, _fit_state_dict, _state_dict_candidates,
                          check_kwarg_sizes)
from .weights import read_weights

__all__ = ["load", "LoadedModel"]


@dataclass
class LoadedModel:
    """A model ready for the visualizer.

    Attributes
    ----------
    model : nn.Module        in eval mode, on ``device``
    spec : InputSpec         the input it expects (given, read from metadata, or guessed)
    labels : list or None    class names, index = output unit
    name : str               display name
    source : str             where it came from (weights path and/or architecture)
    notes : list of str      guesses made, prefixes stripped, keys left at random init...
    layouts : dict           the user's feature-map layout overrides (``--layout NAME=SPEC``), given to
                             every ``Visualizer`` of this model (:mod:`cnnvis_gui.core.layouts`)
    """

    model: nn.Module
    spec: InputSpec
    labels: list | None
    name: str
    source: str
    notes: list = field(default_factory=list)
    arch: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    output_shape: tuple | None = None
    pretrained: str | None = None       # the pretrained weights' name ("IMAGENET1K_V2", "a1_in1k"), if any
    layouts: dict = field(default_factory=dict)   # the user's layout overrides: {layer name: "nhwc", ...}

    def __repr__(self) -> str:
        n = f", {len(self.labels)} labels" if self.labels else ""
        return f"LoadedModel({self.name!r}, {type(self.model).__name__}, {self.spec.describe()}{n}, {self.device})"


# ============================================================================ public entry point
def load(weights=None, arch=None, trust_pickle: bool = False, strict: bool = True, device="cpu",
         spec=None, labels=None, state_dict_key=None, pretrained=None, download_progress=None,
         trust_code: bool = False, **arch_kwargs) -> LoadedModel:
    """Build a model from an architecture source and/or a weight file.

    Parameters
    ----------
    weights : str or Path, optional
        ``.pt/.pth/.bin/.ckpt`` (state dict or checkpoint dict), ``.safetensors``, or a whole
        pickled ``nn.Module`` (needs ``trust_pickle=True``).
    arch : str or callable, optional
        ``"torchvision:resnet18"``, ``"timm:resnet18"``, ``"package.module:factory"``,
        ``"path/to/net.py:Net"`` or a callable returning an ``nn.Module``.  Defaults to the
        checkpoint's ``cnnvis.arch`` metadata (see ``trust_code``).
    trust_pickle : bool
        Allow full unpickling (can run arbitrary code: only for files you trust).
    trust_code : bool
        Allow the file's own metadata (``"cnnvis"`` key, safetensors header, sidecar JSON) to
        name an architecture outside the allowlist of :mod:`.trust` (torchvision and timm
        models, the demo networks): a ``package.module:callable`` or a ``.py`` file, which then
        runs.  Without it such a file raises :class:`UntrustedCodeError`.  An ``arch`` the caller
        gives is the caller's own choice and needs no consent.
    strict : bool
        Require every parameter to be loaded; ``False`` loads what fits and lists the rest in notes.
    device : str or torch.device
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"``.
    spec : InputSpec or dict, optional
        Input spec; a dict may give only some fields (the rest are read or guessed).
    labels : list, dict, str or Path, optional
        Class names, or a labels file (see :func:`load_labels`).  A relative file name in the
        checkpoint's or sidecar's metadata is relative to the checkpoint's folder.
    state_dict_key : str, optional
        Which entry of a checkpoint dict holds the weights to use, e.g. ``"ema"``,
        ``"state_dict_ema"`` or ``"model_ema"`` (nested: ``"model.ema"``); default: the first of
        :data:`STATE_DICT_KEYS` that fits.  CLI: ``--weights-key``.
    pretrained : bool or str, optional
        With ``arch="torchvision:NAME"`` or ``"timm:NAME"``: ``True`` builds it with the library's
        default pretrained weights, a name (``"IMAGENET1K_V2"``, timm tag ``"a1_in1k"``) picks a
        variant.  Labels and input spec then come from the weights' own metadata; the file comes
        from the hub cache or is downloaded (see :mod:`cnnvis_gui.models.pretrained`).  CLI:
        ``--pretrained [NAME]``.
    download_progress : callable, optional
        ``download_progress(done_bytes, total_or_None)`` while a pretrained file downloads.
    **arch_kwargs
        Passed to the architecture constructor (e.g. ``num_classes=10``).
    """
    dev = _resolve_device(device)
    notes: list[str] = []
    if weights is None and arch is None:
        raise ModelLoadError("nothing to load: give a weight file, an architecture (arch='torchvision:resnet18', "
                             "'package.module:factory', 'path/to/net.py:Net'), or both.")
    path = Path(weights).expanduser() if weights is not None else None
    meta: dict = {}
    origin: dict = {}   # metadata key -> where the file named it (for the trust check's message)
    obj = None
    if path is not None:
        obj = read_weights(path, trust_pickle=trust_pickle, notes=notes)
        if isinstance(obj, dict) and isinstance(obj.get(CHECKPOINT_META_KEY), dict):
            meta.update(obj[CHECKPOINT_META_KEY])
            origin.update(dict.fromkeys(meta, f"{path.name}'s own '{CHECKPOINT_META_KEY}' metadata"))
        side = _read_sidecar(path, notes)
        if side:
            meta.update(side["meta"])
            origin.update(dict.fromkeys(side["meta"], f"the sidecar file {side['path']}"))
            notes.append(f"metadata read from {side['path'].name}")

    arch_src = arch if arch is not None else meta.get("arch")
    if arch is None and isinstance(arch_src, str) and path is not None:
        arch_src = _resolve_meta_arch(arch_src, path)
    if arch is None and arch_src is not None:   # named by the file, not by the user: data, not consent
        check_file_arch(arch_src, origin["arch"], trust_code=trust_code, path=path)
    kwargs = {}
    if arch is None or arch == meta.get("arch"):
        kwargs = check_file_kwargs(meta.get("arch_kwargs"), origin.get("arch_kwargs", ""), trust_code=trust_code)
    kwargs.update(arch_kwargs)
    arch_name = arch_src if isinstance(arch_src, str) else getattr(arch_src, "__name__", None)

    used = weights_file = None
    from .pretrained import build as build_pretrained, pretrained_in_kwargs
    pretrained = pretrained_in_kwargs(arch_src, kwargs, pretrained, path is not None, notes)
    if pretrained is not None and pretrained is not False:
        if path is not None:
            raise ModelLoadError("give either pretrained weights by name or a weight file, not both.")
        pre = build_pretrained(arch_src, pretrained, progress=download_progress, **kwargs)
        model, used, weights_file = pre.model, pre.ref.variant, pre.path
        meta.update(spec=pre.spec, labels=pre.labels, name=pre.name)
        notes.extend(pre.notes)
    elif arch_src is not None:
        sd_candidates = None
        if obj is not None:
            if state_dict_key is not None:
                sd_candidates = _chosen_state_dict(obj, str(state_dict_key), path.name)
            else:
                sd_candidates = _state_dict_candidates(obj, trust_pickle)
        # the file's shapes bound what is built (num_classes=2500000 is refused before 5 GB are allocated)
        check_kwarg_sizes(kwargs, sd_candidates or [], path.name if path is not None else None)
        model = build_arch(arch_src, **kwargs)
        if obj is not None:
            if not sd_candidates:
                raise ModelLoadError(f"{path.name}: found no weights in it (no tensors at the top level nor under "
                                     f"any of {', '.join(STATE_DICT_KEYS)}); top-level keys: "
                                     f"{_short(list(obj)) if isinstance(obj, dict) else type(obj).__name__}.")
            _fit_state_dict(model, sd_candidates, strict, notes, path.name, kwargs)
        else:
            notes.append("no weight file: all parameters are at their initial (random or built-in) values")
    elif isinstance(obj, nn.Module):
        model = obj
        notes.append(f"whole pickled model ({type(model).__name__}) loaded with trust_pickle=True")
        arch_name = f"{type(model).__module__}.{type(model).__qualname__}"
    elif isinstance(obj, dict) and any(isinstance(v, nn.Module) for v in obj.values()):
        key = next(k for k, v in obj.items() if isinstance(v, nn.Module))
        model = obj[key]
        notes.append(f"whole pickled model found under checkpoint[{key!r}] (trust_pickle=True)")
        arch_name = f"{type(model).__module__}.{type(model).__qualname__}"
    else:
        raise ModelLoadError(f"{path.name} holds only weights (a state dict), not the network's structure: give the "
                             f"architecture too, e.g. arch='torchvision:resnet18', 'mypackage.nets:make_net' or "
                             f"'path/to/net.py:Net' (command line: --model ARCH --weights FILE), plus any constructor arguments "
                             f"(num_classes=...).")
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"the loaded object is a {type(model).__name__}, not a torch.nn.Module.")

    try:
        model = model.to(dev).eval()
    except Exception as e:  # pragma: no cover - device specific
        raise ModelLoadError(f"could not move the model to {dev}: {e}") from e

    # ---------------------------------------------------------------- metadata
    lab = labels if labels is not None else meta.get("labels")
    if isinstance(lab, (str, Path)):
        lp = Path(lab).expanduser()
        if not lp.is_absolute() and path is not None and labels is None:
            lp = path.parent / lp   # metadata names a file next to the checkpoint (joined once, here)
        lab = load_labels(lp)
    elif lab is not None:
        lab = labels_list(lab)

    given = _spec_dict(spec, "spec=") if spec is not None else None
    meta_spec = _spec_dict(meta["spec"], "metadata 'spec'") if meta.get("spec") else None
    final_spec, out_shape = _resolve_spec(model, given, meta_spec, arch_name, notes, dev)

    if lab is None:
        lab = _guess_labels(arch_name, out_shape, notes)
    if lab is not None and out_shape is not None and len(out_shape) == 1 and len(lab) != out_shape[0]:
        notes.append(f"{len(lab)} labels given but the model has {out_shape[0]} outputs")

    name = meta.get("name") or (path.stem if path is not None else (arch_name or type(model).__name__))
    source = " + ".join(s for s in (str(path or weights_file or "") or None, arch_name if isinstance(arch_name, str) else None)
                        if s)
    return LoadedModel(model=model, spec=final_spec, labels=lab, name=str(name), source=source or name,
                       notes=notes, arch=arch_name, device=dev, output_shape=out_shape, pretrained=used)


# ============================================================================ device
def _resolve_device(device) -> torch.device:
    if isinstance(device, torch.device):
        device = str(device)
    d = str(device or "cpu").lower()
    if d == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(d)
    except (RuntimeError, ValueError) as e:
        raise ModelLoadError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} was asked for but CUDA is not available "
                                 f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}, no usable "
                                 f"GPU found); use device='cpu' or 'auto' (command line: --device cpu|auto).")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present.")
    elif dev.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ModelLoadError(f"device {device!r} was asked for but MPS (Apple GPU) is not available; "
                                 f"use device='cpu' or 'auto'.")
    elif dev.type != "cpu":
        raise ModelLoadError(f"unsupported device {device!r}: use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    return dev

