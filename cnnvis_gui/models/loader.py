"""Open a user's network safely: architecture sources, weight files, metadata, probe.

``load()`` is the one entry point.  It

1. builds the architecture (``torchvision:resnet18``, ``timm:name``, ``package.module:factory``,
   ``path/to/net.py:Net``) with the caller's keyword arguments, or takes a whole pickled model
   (only with ``trust_pickle=True``);
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

import difflib
import importlib
import importlib.util
import io
import json
import pickletools
import sys
import uuid
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..core import CnnvisError, InputSpec, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["load", "LoadedModel", "ModelLoadError", "UntrustedPickleError", "load_labels", "read_weights", "CHECKPOINT_META_KEY",
           "STATE_DICT_KEYS", "STRIP_PREFIXES"]

#: Key of the metadata dict inside a checkpoint (and the layout of a sidecar JSON):
#: ``{"spec": InputSpec.to_dict(), "labels": [...], "name": str, "arch": str, "arch_kwargs": {...}}``.
CHECKPOINT_META_KEY = "cnnvis"
#: Keys under which checkpoint dicts nest the state dict, in order of preference.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module",
                   "ema", "model_ema", "state_dict_ema", "ema_state_dict", "params")
#: Prefixes stripped from state-dict keys when that makes them fit (DataParallel, Lightning, torch.compile).
STRIP_PREFIXES = ("module.", "model.", "_orig_mod.", "net.")
_SHOW = 8
_GUESS_SIZES = (224, 64, 32, 28, 96, 128, 256, 299, 160, 48, 16)


class ModelLoadError(CnnvisError):
    """A model or weight file could not be opened; the message says why and what to do."""


class UntrustedPickleError(ModelLoadError):
    """The file holds pickled Python objects and ``trust_pickle`` was not given.

    The GUI catches this one to ask "Do you trust this file?" and retries with
    ``trust_pickle=True``; ``.path`` is the file and ``.globals`` the names it refers to.
    """

    def __init__(self, msg: str, path=None, globals_=()):
        super().__init__(msg)
        self.path = path
        self.globals = tuple(globals_)


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

    def __repr__(self) -> str:
        n = f", {len(self.labels)} labels" if self.labels else ""
        return f"LoadedModel({self.name!r}, {type(self.model).__name__}, {self.spec.describe()}{n}, {self.device})"


# ============================================================================ public entry point
def load(weights=None, arch=None, trust_pickle: bool = False, strict: bool = True, device="cpu",
         spec=None, labels=None, **arch_kwargs) -> LoadedModel:
    """Build a model from an architecture source and/or a weight file.

    Parameters
    ----------
    weights : str or Path, optional
        ``.pt/.pth/.bin/.ckpt`` (state dict or checkpoint dict), ``.safetensors``, or a whole
        pickled ``nn.Module`` (needs ``trust_pickle=True``).
    arch : str or callable, optional
        ``"torchvision:resnet18"``, ``"timm:resnet18"``, ``"package.module:factory"``,
        ``"path/to/net.py:Net"`` or a callable returning an ``nn.Module``.  Defaults to the
        checkpoint's ``cnnvis.arch`` metadata.
    trust_pickle : bool
        Allow full unpickling (can run arbitrary code: only for files you trust).
    strict : bool
        Require every parameter to be loaded; ``False`` loads what fits and lists the rest in notes.
    device : str or torch.device
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"``.
    spec : InputSpec or dict, optional
        Input spec; a dict may give only some fields (the rest are read or guessed).
    labels : list, dict, str or Path, optional
        Class names, or a labels file (see :func:`load_labels`).
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
    obj = None
    if path is not None:
        obj = read_weights(path, trust_pickle=trust_pickle)
        if isinstance(obj, dict) and isinstance(obj.get(CHECKPOINT_META_KEY), dict):
            meta.update(obj[CHECKPOINT_META_KEY])
        side = _read_sidecar(path)
        if side:
            meta.update(side["meta"])
            notes.append(f"metadata read from {side['path'].name}")

    arch_src = arch if arch is not None else meta.get("arch")
    kwargs = dict(meta.get("arch_kwargs") or {}) if arch is None or arch == meta.get("arch") else {}
    kwargs.update(arch_kwargs)
    arch_name = arch_src if isinstance(arch_src, str) else getattr(arch_src, "__name__", None)

    if arch_src is not None:
        model = build_arch(arch_src, **kwargs)
        if obj is not None:
            sd_candidates = _state_dict_candidates(obj, trust_pickle)
            if not sd_candidates:
                raise ModelLoadError(f"{path.name}: found no weights in it (no tensors at the top level nor under "
                                     f"any of {', '.join(STATE_DICT_KEYS)}); top-level keys: "
                                     f"{_short(list(obj)[:20]) if isinstance(obj, dict) else type(obj).__name__}.")
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
                             f"'path/to/net.py:Net' (CLI: --arch), plus any constructor arguments "
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
        lp = Path(lab)
        if not lp.is_absolute() and path is not None and labels is None:
            lp = path.parent / lp
        lab = load_labels(lp)
    elif isinstance(lab, dict):
        lab = _labels_from_mapping(lab, "labels")
    elif lab is not None:
        lab = [str(v) for v in lab]

    given = _spec_dict(spec, "spec=") if spec is not None else None
    meta_spec = _spec_dict(meta["spec"], "metadata 'spec'") if meta.get("spec") else None
    final_spec, out_shape = _resolve_spec(model, given, meta_spec, arch_name, notes, dev)

    if lab is None:
        lab = _guess_labels(arch_name, out_shape, notes)
    if lab is not None and out_shape is not None and len(out_shape) == 1 and len(lab) != out_shape[0]:
        notes.append(f"{len(lab)} labels given but the model has {out_shape[0]} outputs")

    name = meta.get("name") or (path.stem if path is not None else (arch_name or type(model).__name__))
    source = " + ".join(s for s in (str(path) if path else None, arch_name if isinstance(arch_name, str) else None)
                        if s)
    return LoadedModel(model=model, spec=final_spec, labels=lab, name=str(name), source=source or name,
                       notes=notes, arch=arch_name, device=dev, output_shape=out_shape)


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
                                 f"GPU found); use device='cpu' or 'auto'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present.")
    elif dev.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ModelLoadError(f"device {device!r} was asked for but MPS (Apple GPU) is not available; "
                                 f"use device='cpu' or 'auto'.")
    elif dev.type != "cpu":
        raise ModelLoadError(f"unsupported device {device!r}: use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")
    return dev


# ============================================================================ weight files
_PICKLE_HINT = ("Loading it runs the Python code the file names, which can execute arbitrary code. "
                "Only if you trust where the file came from, allow it explicitly: load(..., trust_pickle=True) in "
                "Python, --trust-pickle on the command line, or confirm the prompt in the GUI. Safer: re-save "
                "just the weights (torch.save(model.state_dict(), path)) and give the architecture separately.")


def read_weights(path, trust_pickle: bool = False):
    """Read a weight file without running code: a state dict, a checkpoint dict, or (trusted) a module.

    Raises ModelLoadError with a specific reason for empty, truncated, text, random,
    TorchScript and pickled-object files.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"weight file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder; give the weight file inside it (.pth, .pt, .bin, .ckpt, .safetensors).")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{path.name} is empty (0 bytes): the save was interrupted or the download failed.")
    with open(path, "rb") as f:
        head = f.read(4096)

    if path.suffix.lower() == ".safetensors" or _looks_like_safetensors(head, size):
        return _read_safetensors(path)

    if head[:4] == b"PK\x03\x04" or zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise ModelLoadError(f"{path.name} is a truncated or corrupt zip archive ({e}): the checkpoint was not "
                                 f"saved completely or the copy/download was cut short; save or download it again."
                                 ) from None
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            raise ModelLoadError(
                f"{path.name} is a TorchScript archive (torch.jit.save). It is refused: the visualizations rely on "
                f"module hooks and the guided-backprop/deconvnet ReLU rules, which cannot reach inside a compiled "
                f"TorchScript graph. Export the eager model instead: torch.save(model.state_dict(), 'weights.pth') "
                f"and load it with its architecture (arch='package.module:Net' or 'net.py:Net').")
        if not any(n.endswith("data.pkl") for n in names):
            raise ModelLoadError(f"{path.name} is a zip archive but not a PyTorch checkpoint (no data.pkl inside; "
                                 f"entries: {_short(names)}).")
    elif _looks_like_text(head):
        first = head.decode("utf-8", "replace").strip().splitlines()[0][:60] if head.strip() else ""
        raise ModelLoadError(f"{path.name} is a text file, not a PyTorch checkpoint (it starts with {first!r}). "
                             f"Was a web page or a Git LFS pointer saved instead of the weights?")

    err = None
    try:
        with warnings.catch_warnings():   # "Detected pickle protocol 4..." noise from the safe unpickler
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        err = e
    # weights_only refused or failed: is it pickled Python objects, or just broken?
    kind, globals_ = _classify_pickle(path)
    if kind == "objects" or "Unsupported global" in str(err):
        names = ", ".join(sorted(globals_)[:6]) or _unsupported_global(str(err)) or "Python classes"
        if not trust_pickle:
            raise UntrustedPickleError(f"{path.name} contains pickled Python objects (it refers to {names}), e.g. a "
                                       f"whole model rather than a state dict; it cannot be read as plain weights. "
                                       + _PICKLE_HINT, path=path, globals_=sorted(globals_)) from None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (AttributeError, ModuleNotFoundError, ImportError) as e:
            raise ModelLoadError(f"{path.name}: the pickled model refers to code that cannot be imported here ({e}). "
                                 f"Make the module that defines the model importable (on sys.path), or load a state "
                                 f"dict with its architecture instead.") from None
        except Exception as e:
            raise ModelLoadError(f"{path.name}: full unpickling failed: {type(e).__name__}: {e}") from None
    msg = str(err).split("\n")[0][:200]
    if isinstance(err, EOFError) or "central directory" in str(err) or "truncated" in str(err).lower() \
            or "Ran out of input" in str(err):
        raise ModelLoadError(f"{path.name} is truncated or corrupt ({type(err).__name__}: {msg or 'unexpected end of file'}): "
                             f"save or download the checkpoint again.") from None
    raise ModelLoadError(f"{path.name} is not a PyTorch checkpoint or is corrupt (could not read it as a state dict, "
                         f"checkpoint dict or .safetensors file; first bytes {head[:8]!r}). "
                         f"Supported: .pt/.pth/.bin/.ckpt saved with torch.save, and .safetensors.") from None


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover
        raise ModelLoadError(f"{path.name} is a .safetensors file but the 'safetensors' package is not installed: "
                             f"pip install safetensors") from None
    try:
        from safetensors import safe_open
        out = dict(load_file(str(path), device="cpu"))
        with safe_open(str(path), framework="pt") as f:
            extra = f.metadata() or {}
    except Exception as e:
        raise ModelLoadError(f"{path.name} is not a valid .safetensors file or is truncated/corrupt ({e}).") from None
    if CHECKPOINT_META_KEY in extra:   # metadata stored as a JSON string in the safetensors header
        try:
            out[CHECKPOINT_META_KEY] = json.loads(extra[CHECKPOINT_META_KEY])
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{path.name}: the '{CHECKPOINT_META_KEY}' metadata is not valid JSON: {e}") from None
    return out


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        s = head.decode("utf-8")
    except UnicodeDecodeError:
        s = head[:-4].decode("utf-8", "ignore") if len(head) == 4096 else None
        if s is None:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in s)
    return printable >= 0.95 * max(1, len(s))


def _unsupported_global(msg: str) -> str:
    i = msg.find("GLOBAL ")
    return msg[i + 7:].split(" ")[0] if i >= 0 else ""


def _pickle_bytes(path: Path) -> bytes:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                if n.endswith("data.pkl"):
                    return z.read(n)
        return b""
    with open(path, "rb") as f:
        return f.read(1 << 22)


def _classify_pickle(path: Path):
    """Scan pickle opcodes WITHOUT executing them: ("objects", globals) or ("broken", set())."""
    try:
        data = _pickle_bytes(path)
    except Exception:
        return "broken", set()
    stream = io.BytesIO(data)
    found: set = set()
    for _ in range(6):  # legacy torch files hold several pickles back to back
        strings: list = []
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                    strings.append(arg)
                elif op.name == "GLOBAL":
                    found.add(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.add(f"{strings[-2]}.{strings[-1]}")
        except Exception:
            break
        if stream.tell() >= len(data):
            break
    safe_prefixes = ("torch._utils._rebuild", "torch.FloatStorage", "torch.HalfStorage", "torch.DoubleStorage",
                     "torch.LongStorage", "torch.IntStorage", "torch.ByteStorage", "torch.BoolStorage",
                     "torch.BFloat16Storage", "torch.storage", "collections.OrderedDict", "torch._tensor",
                     "torch.Size", "torch.float", "torch.device", "__builtin__.set", "builtins.set")
    suspicious = {g for g in found if not g.startswith(safe_prefixes)}
    if suspicious:
        return "objects", suspicious
    return "broken", set()


def _read_sidecar(path: Path):
    for cand in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
        if cand.is_file() and cand != path:
            try:
                d = json.loads(cand.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ModelLoadError(f"sidecar metadata {cand.name} is not valid JSON: {e}") from None
            if not isinstance(d, dict):
                raise ModelLoadError(f"sidecar metadata {cand.name} must be a JSON object like "
                                     f'{{"spec": {{...}}, "labels": [...], "name": "..."}}.')
            d = d.get(CHECKPOINT_META_KEY, d) if isinstance(d.get(CHECKPOINT_META_KEY), dict) else d
            if isinstance(d.get("labels"), str):
                d = dict(d, labels=str(cand.parent / d["labels"]))
            return {"path": cand, "meta": d}
    return None


# ============================================================================ labels
def load_labels(path) -> list:
    """Read class labels: one per line, a JSON list, or a JSON dict ``{index: label}``.

    Also accepts ImageNet-style ``{"0": ["n01440764", "tench"]}`` (the last string is used).
    """
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"labels file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ModelLoadError(f"labels file {p.name} is not UTF-8 text.") from None
    s = text.strip()
    if p.suffix.lower() == ".json" or s[:1] in "[{":
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


# ============================================================================ architectures
def build_arch(arch, **kwargs) -> nn.Module:
    """Instantiate an architecture source (see :func:`load`)."""
    if isinstance(arch, nn.Module):
        return arch
    if callable(arch):
        return _call_factory(arch, kwargs, getattr(arch, "__name__", repr(arch)))
    if not isinstance(arch, str) or not arch.strip():
        raise ModelLoadError(f"arch must be a string like 'torchvision:resnet18' or a callable, got {arch!r}.")
    arch = arch.strip()
    head, sep, name = arch.rpartition(":")
    if not sep or not head or not name:
        raise ModelLoadError(f"architecture {arch!r} is not understood: use 'torchvision:NAME', 'timm:NAME', "
                             f"'package.module:factory' or 'path/to/net.py:ClassName'.")
    if head == "torchvision":
        return _torchvision(name, kwargs)
    if head == "timm":
        return _timm(name, kwargs)
    if head.endswith(".py") or "/" in head or "\\" in head:
        return _from_file(Path(head).expanduser(), name, kwargs, arch)
    return _from_module(head, name, kwargs, arch)


def _torchvision(name: str, kwargs: dict) -> nn.Module:
    try:
        import torchvision.models as tvm
    except ImportError:
        raise ModelLoadError("arch 'torchvision:...' needs torchvision, which is not installed: "
                             "pip install torchvision") from None
    available = list(tvm.list_models())
    if name not in available:
        near = difflib.get_close_matches(name, available, n=5)
        raise ModelLoadError(f"torchvision has no model {name!r}" + (f"; did you mean {', '.join(near)}?" if near
                             else f"; available: {_short(sorted(available), 12)}"))
    kwargs = dict(kwargs)
    kwargs.setdefault("weights", None)
    try:
        return tvm.get_model(name, **kwargs)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"torchvision:{name}({_kw(kwargs)}) failed: {e}") from None


def _timm(name: str, kwargs: dict) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ModelLoadError(f"arch 'timm:{name}' needs the timm package, which is not installed: pip install timm"
                             ) from None
    kwargs = dict(kwargs)
    kwargs.setdefault("pretrained", False)
    try:
        return timm.create_model(name, **kwargs)
    except Exception as e:
        near = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ModelLoadError(f"timm:{name}({_kw(kwargs)}) failed: {e}" + (f"; did you mean {', '.join(near)}?"
                                                                            if near else "")) from None


def _from_module(modname: str, attr: str, kwargs: dict, arch: str) -> nn.Module:
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        raise ModelLoadError(f"architecture {arch!r}: module {modname!r} cannot be imported ({e}); check the name and "
                             f"that its package is installed or on sys.path (for a file use 'path/to/net.py:{attr}')."
                             ) from None
    except SyntaxError as e:
        raise ModelLoadError(_syntax_msg(arch, e)) from None
    except Exception as e:
        raise ModelLoadError(f"architecture {arch!r}: importing {modname!r} failed: {type(e).__name__}: {e}") from None
    return _call_factory(_get_attr(mod, attr, arch), kwargs, arch)


def _from_file(file: Path, attr: str, kwargs: dict, arch: str) -> nn.Module:
    if not file.is_file():
        raise ModelLoadError(f"architecture {arch!r}: file {file} not found.")
    modname = f"_cnnvis_user_{file.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(modname, file)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"architecture {arch!r}: {file} cannot be imported as Python.")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod   # dataclasses / pickling look the module up by name
    added = str(file.resolve().parent)
    path_added = added not in sys.path
    if path_added:
        sys.path.insert(0, added)   # let the file import its siblings
    ok = False
    try:
        try:
            spec.loader.exec_module(mod)
        except SyntaxError as e:
            raise ModelLoadError(_syntax_msg(arch, e)) from None
        except Exception as e:
            raise ModelLoadError(f"architecture {arch!r}: running {file.name} failed: {type(e).__name__}: {e}"
                                 ) from None
        model = _call_factory(_get_attr(mod, attr, arch), kwargs, arch)
        ok = True
        return model
    finally:
        if path_added:
            try:
                sys.path.remove(added)
            except ValueError:
                pass
        if not ok:
            sys.modules.pop(modname, None)


def _syntax_msg(arch: str, e: SyntaxError) -> str:
    where = f"{Path(e.filename).name if e.filename else '?'}, line {e.lineno}"
    line = f": {e.text.strip()!r}" if e.text else ""
    return f"architecture {arch!r}: syntax error in {where}{line} ({e.msg}); fix the file and load again."


def _get_attr(mod, attr: str, arch: str):
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n, v in vars(mod).items() if not n.startswith("_") and callable(v)
                     and (isinstance(v, type) and issubclass(v, nn.Module) or not isinstance(v, type))
                     and getattr(v, "__module__", None) == mod.__name__]
            near = difflib.get_close_matches(attr, names, n=3)
            hint = f"did you mean {', '.join(near)}? " if near else ""
            raise ModelLoadError(f"architecture {arch!r}: {mod.__name__.split('_cnnvis_user_')[-1]} has no {attr!r}; "
                                 f"{hint}defined there: {_short(sorted(names), 12) if names else 'nothing callable'}.")
        obj = getattr(obj, part)
    return obj


def _call_factory(fn: Callable, kwargs: dict, what: str) -> nn.Module:
    if not callable(fn):
        raise ModelLoadError(f"architecture {what!r} is a {type(fn).__name__}, not a class or function.")
    try:
        model = fn(**kwargs)
    except TypeError as e:
        raise ModelLoadError(f"architecture {what!r}: calling it with ({_kw(kwargs)}) failed: {e}") from None
    except Exception as e:
        raise ModelLoadError(f"architecture {what!r}: building the model failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"architecture {what!r} returned a {type(model).__name__}, not a torch.nn.Module.")
    return model


def _kw(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


# ============================================================================ state dicts
def _is_state_dict(d) -> bool:
    if not isinstance(d, dict) or not d:
        return False
    n_t = sum(isinstance(v, torch.Tensor) for v in d.values())
    return n_t > 0 and n_t >= 0.5 * len(d)


def _tensors_only(d: dict) -> dict:
    return {str(k): v for k, v in d.items() if isinstance(v, torch.Tensor)}


def _state_dict_candidates(obj, trust_pickle: bool) -> list:
    """[(where, state_dict)] in order of preference."""
    if isinstance(obj, nn.Module):
        return [("the pickled model", obj.state_dict())]
    if not isinstance(obj, dict):
        return []
    out = []
    if _is_state_dict(obj):
        out.append(("the file", _tensors_only(obj)))
    for k in STATE_DICT_KEYS:
        v = obj.get(k)
        if isinstance(v, nn.Module):
            v = v.state_dict()
        if _is_state_dict(v):
            out.append((f"checkpoint[{k!r}]", _tensors_only(v)))
        elif isinstance(v, dict):   # one more level, e.g. {"model": {"state_dict": ...}} or ema {"module": ...}
            for k2 in STATE_DICT_KEYS:
                v2 = v.get(k2)
                if _is_state_dict(v2):
                    out.append((f"checkpoint[{k!r}][{k2!r}]", _tensors_only(v2)))
    return out


def _prefix_variants(sd: dict):
    """(stripped prefixes, state dict) for every way of stripping known prefixes, most direct first."""
    seen = set()
    queue = [((), sd)]
    while queue:
        strip, d = queue.pop(0)
        key = frozenset(d)
        if key in seen:
            continue
        seen.add(key)
        yield strip, d
        if len(strip) >= 3:
            continue
        for p in STRIP_PREFIXES:
            if any(k.startswith(p) for k in d):
                queue.append((strip + (p,), {(k[len(p):] if k.startswith(p) else k): v for k, v in d.items()}))


def _fit_state_dict(model: nn.Module, candidates: list, strict: bool, notes: list, fname: str, kwargs: dict):
    target = model.state_dict()
    tshape = {k: tuple(v.shape) for k, v in target.items()}
    best = None
    for order, (where, sd) in enumerate(candidates):
        for strip, d in _prefix_variants(sd):
            score = sum(1 for k, v in d.items() if tshape.get(k) == tuple(v.shape))
            named = sum(1 for k in d if k in tshape)
            rank = (score, named, -order, -len(strip))
            if best is None or rank > best[0]:
                best = (rank, where, strip, d)
    _, where, strip, sd = best
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    mismatched = [(k, tuple(sd[k].shape), tshape[k]) for k in sd if k in tshape and tuple(sd[k].shape) != tshape[k]]
    harmless = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in harmless]

    if where != "the file":
        notes.append(f"state dict read from {where}")
    others = [w for w, _ in candidates if w != where]
    if others:
        notes.append(f"the checkpoint also holds {', '.join(others)} (not used)")
    if strip:
        notes.append(f"stripped key prefix{'es' if len(strip) > 1 else ''} {' + '.join(repr(p) for p in strip)} "
                     f"so the keys fit the architecture")

    if missing or unexpected or mismatched:
        if strict:
            raise ModelLoadError(_mismatch_report(fname, type(model).__name__, target, sd, missing, unexpected,
                                                  mismatched, kwargs))
        loadable = {k: v for k, v in sd.items() if k in tshape and tuple(v.shape) == tshape[k]}
        model.load_state_dict(loadable, strict=False)
        left = [k for k in target if k not in loadable and not k.endswith("num_batches_tracked")]
        if left:
            notes.append(f"strict=False: {len(left)} of {len(target)} tensors left at random init: {_short(left)}")
        if unexpected:
            notes.append(f"strict=False: {len(unexpected)} checkpoint tensors not used (no such key): {_short(unexpected)}")
        if mismatched:
            notes.append("strict=False: skipped for shape mismatch: " + _short(
                [f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched]))
        return
    try:
        model.load_state_dict(sd, strict=not harmless)
    except RuntimeError as e:  # pragma: no cover - all checked above
        raise ModelLoadError(f"{fname}: loading the state dict failed: {e}") from None


def _mismatch_report(fname, arch, target, sd, missing, unexpected, mismatched, kwargs) -> str:
    lines = [f"{fname} does not fit {arch}: {len(sd)} tensors in the checkpoint, {len(target)} in the model; "
             f"{len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} with another shape."]
    hints = []
    # num_classes: only the classifier's output dimension differs
    if mismatched and not missing and not unexpected and all(
            len(a) == len(b) and a[1:] == b[1:] and a[0] != b[0] for _, a, b in mismatched):
        ks = {a[0] for _, a, _ in mismatched}
        ms = {b[0] for _, _, b in mismatched}
        if len(ks) == 1 and len(ms) == 1:
            k, m = ks.pop(), ms.pop()
            hints.append(f"only the classifier's output size differs: the checkpoint has {k} classes, the model "
                         f"{m}; pass num_classes={k} (load(..., num_classes={k})).")
    matched = len(sd) - len(unexpected) - len(mismatched)
    if not hints:
        pref = _common_prefix(unexpected)
        if pref and missing:
            stripped = {k[len(pref):] for k in unexpected if k.startswith(pref)}
            if len(stripped & set(missing)) >= 0.5 * len(missing):
                hints.append(f"the checkpoint keys carry the prefix {pref!r}; strip it "
                             f"({{k.removeprefix({pref!r}): v for k, v in sd.items()}}) and save again.")
    if not hints and matched <= 0.3 * len(target):
        hints.append(f"only {max(matched, 0)} of {len(target)} model tensors match by name and shape: the weights "
                     f"are probably for a different architecture; check arch= (and its constructor arguments)."
                     f" Checkpoint keys look like {_short(list(sd)[:3], 3)}, the model's like "
                     f"{_short(list(target)[:3], 3)}.")
    if not hints:
        hints.append("the architecture is close but not the same: check the variant (e.g. resnet18 vs resnet34) "
                     "and constructor arguments, or load with strict=False to keep what fits.")
    if missing:
        lines.append(f"missing in the checkpoint ({len(missing)}): {_short(missing)}")
    if unexpected:
        lines.append(f"unexpected in the checkpoint ({len(unexpected)}): {_short(unexpected)}")
    if mismatched:
        lines.append(f"shape mismatches ({len(mismatched)}): " + _short(
            [f"{k}: checkpoint {a} vs model {b}" for k, a, b in mismatched]))
    lines.append("Likely fix: " + " ".join(hints))
    return "\n".join(lines)


def _common_prefix(keys) -> str:
    keys = list(keys)
    if not keys:
        return ""
    firsts = {k.split(".", 1)[0] + "." for k in keys if "." in k}
    if len(firsts) == 1:
        p = firsts.pop()
        if all(k.startswith(p) for k in keys):
            return p
    return ""


def _short(items, n: int = _SHOW) -> str:
    items = list(items)
    s = ", ".join(str(i) for i in items[:n])
    return s + (f", ... and {len(items) - n} more" if len(items) > n else "")


# ============================================================================ spec / probe
def _spec_dict(s, what: str) -> dict:
    if isinstance(s, InputSpec):
        return s.to_dict()
    if isinstance(s, dict):
        known = set(InputSpec.__dataclass_fields__)
        unknown = set(s) - known
        if unknown:
            raise ModelLoadError(f"{what}: unknown input-spec keys {sorted(unknown)}; known: {sorted(known)}.")
        return dict(s)
    raise ModelLoadError(f"{what} must be an InputSpec or a dict, got {type(s).__name__}.")


def _first_conv_channels(model: nn.Module):
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Conv3d)):
            return m.in_channels
        if isinstance(m, nn.Linear):
            return None
    return None


def _resolve_spec(model, given, meta_spec, arch_name, notes, dev):
    known: dict = {}
    if meta_spec:
        known.update(meta_spec)
    if given:
        known.update(given)
    guessed = {}
    tv = isinstance(arch_name, str) and arch_name.startswith("torchvision:")
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if "channels" not in known:
        c = _first_conv_channels(model)
        guessed["channels"] = c or 3
        notes.append(f"guessed {guessed['channels']} input channels "
                     + ("from the first convolution" if c else "(no convolution found)"))
    if isinstance(cfg, dict) and cfg.get("input_size") and "height" not in known:
        _, h, w = cfg["input_size"]
        guessed.update(height=h, width=w)
        notes.append(f"input size {h}x{w} from the timm config")
    if isinstance(cfg, dict) and cfg.get("mean") and "mean" not in known:
        guessed.update(mean=tuple(cfg["mean"]), std=tuple(cfg.get("std", (1, 1, 1))))
        notes.append("mean/std from the timm config")
    ch = known.get("channels", guessed.get("channels"))
    if tv and "mean" not in known and "mean" not in guessed and ch == 3:
        guessed.update(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        notes.append("guessed ImageNet mean/std (torchvision architecture)")
    size_guessed = "height" not in known and "width" not in known and "height" not in guessed
    if "height" in known and "width" not in known:
        guessed["width"] = known["height"]
    if "width" in known and "height" not in known:
        guessed["height"] = known["width"]
    fields = {**guessed, **known}
    if "mean" not in fields:
        notes.append("no normalization known: using mean 0, std 1 on [0, 1] pixels (set the input spec if the "
                     "model was trained with another normalization)")
    try:
        base = InputSpec(**{k: v for k, v in fields.items() if k not in ("height", "width")},
                         height=fields.get("height", 224), width=fields.get("width", 224))
    except CnnvisError as e:
        raise ModelLoadError(f"invalid input spec: {e}") from None
    if not size_guessed:
        return base, _probe(model, base, dev)
    first_err = None
    for s in _GUESS_SIZES:
        sp = base.replace(height=s, width=s)
        try:
            out = _probe(model, sp, dev)
        except ModelLoadError as e:
            first_err = first_err or e
            continue
        notes.append(f"guessed input size {s}x{s}" + (" (torchvision default)" if tv and s == 224 else
                     " (the first size the forward accepts)" if s != 224 else ""))
        return sp, out
    raise first_err


def _probe(model: nn.Module, spec: InputSpec, dev) -> tuple | None:
    """One forward on zeros of the spec's shape; on failure name the innermost module and its input."""
    stack: list = []
    names = {m: n for n, m in model.named_modules()}
    handles = []
    failed = {}

    def pre(mod, args):
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        stack.append((names.get(mod, "?"), type(mod).__name__, shapes))

    def post(mod, args, out):
        if stack:
            stack.pop()

    x = torch.zeros((1, *spec.shape), device=dev)
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
        with torch.no_grad():
            out = model(x)
    except Exception as e:
        failed = {"err": e, "where": stack[-1] if stack else None}
    finally:
        for h in handles:
            h.remove()
        handles.clear()
    if failed:
        e = failed["err"]
        name, typ, shapes = failed["where"] or ("", type(model).__name__, [tuple(x.shape)])
        layer = f"layer '{name}' ({typ})" if name else f"the model's own forward ({typ})"
        got = ", ".join(str(s) for s in shapes) or "no tensor"
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"the model's forward fails on the declared input shape {tuple(x.shape)} "
                             f"({spec.describe()}): {layer} got input of shape {got}: {type(e).__name__}: {msg}. "
                             f"Set the input spec (channels, height, width) the model was trained with.")
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if isinstance(out, dict):
        out = next((v for v in out.values() if isinstance(v, torch.Tensor)), None)
    return tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None


def _guess_labels(arch_name, out_shape, notes):
    if not (isinstance(arch_name, str) and arch_name.startswith("torchvision:")):
        return None
    if out_shape != (1000,):
        return None
    try:
        import torchvision.models as tvm
        ws = tvm.get_model_weights(arch_name.split(":", 1)[1])
        cats = next(iter(ws)).meta.get("categories")
    except Exception:
        return None
    if cats and len(cats) == 1000:
        notes.append("labels: ImageNet-1k categories (guessed from the torchvision architecture)")
        return list(cats)
    return None
