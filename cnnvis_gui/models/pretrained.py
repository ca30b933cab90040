"""Pretrained torchvision and timm weights by name, through the libraries' own caches.

``load(arch="torchvision:resnet50", pretrained=True)`` (or ``pretrained="IMAGENET1K_V1"``)
comes here.  What the weights' own metadata knows is used, not guessed:

* **torchvision** (``torchvision.models.get_model_weights``): the class names are
  ``weights.meta["categories"]``, the input size, mean and std come from
  ``weights.transforms()``; the file lives in torch's hub cache,
  ``$TORCH_HOME/hub/checkpoints/<file name of weights.url>`` (``torch.hub.get_dir()``).
* **timm** (``timm.models.get_pretrained_cfg``): ``pretrained=True`` is the model's default tag,
  ``pretrained="a1_in1k"`` picks ``resnet18.a1_in1k``; the input spec comes from
  ``timm.data.resolve_model_data_config`` and the labels from timm's ImageNet info; the file
  is looked up in the huggingface cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``) and, for
  configs with a ``url``, in torch's hub cache under that URL's file name.

A cached file loads with no network access at all.  A missing one is downloaded by
:func:`fetch` with a deadline, progress and cancel (see :mod:`.download`); offline, it
fails within seconds naming the file, the URL and the exact path to put it at.

Weight files are read with the loader's safe reader (``weights_only``/safetensors), never
with a full unpickle, whatever the library would have done.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from torch import nn

from . import download as _dl
from .errors import ModelLoadError
from .weights import read_weights

__all__ = ["WeightsRef", "Pretrained", "CatalogEntry", "resolve", "fetch", "build", "catalog", "hub_checkpoints",
           "pretrained_in_kwargs",
           "hf_cache_dir", "LIBRARIES"]

LIBRARIES = ("torchvision", "timm")
_HF_FILES = ("model.safetensors", "pytorch_model.bin")   # what timm looks for on the hub, in its order
_SWAP = threading.Lock()


# ============================================================================ cache locations
def hub_checkpoints() -> Path:
    """torch's hub checkpoint folder, ``torch.hub.get_dir()/checkpoints`` (follows ``$TORCH_HOME``)."""
    import torch.hub
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_cache_dir() -> Path:
    """The huggingface hub cache as the environment says now (``HF_HUB_CACHE``, ``HF_HOME/hub``, default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    try:
        from huggingface_hub import constants
        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        return Path.home() / ".cache" / "huggingface" / "hub"


def _hf_cached(repo_id: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    p = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir())
    return Path(p) if isinstance(p, str) and Path(p).is_file() else None


def _hf_path_hint(repo_id: str, filename: str) -> Path:
    return hf_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "main" / filename


# ============================================================================ which file
@dataclass(frozen=True)
class WeightsRef:
    """One named set of pretrained weights and where its file is (or will be) cached.

    ``cache_path`` is where :func:`fetch` puts a download from ``url`` and where a user may
    put the file by hand; ``hf`` is ``(repo_id, filenames)`` for files the huggingface hub
    serves (timm), which are also looked up in its cache.
    """

    library: str
    arch: str                 # "torchvision:resnet50", "timm:resnet18"
    model_name: str           # what the library builds: "resnet50", "resnet18.a1_in1k"
    variant: str              # "IMAGENET1K_V2", "a1_in1k"
    url: str | None
    cache_path: Path | None
    hf: tuple | None = None
    is_default: bool = False
    detail: str = ""
    obj: object = field(default=None, compare=False, repr=False)   # the torchvision WeightsEnum member

    @property
    def base(self) -> str:
        return self.arch.split(":", 1)[1].split(".")[0]

    @property
    def display_name(self) -> str:
        """``resnet50 · IMAGENET1K_V2``."""
        return f"{self.base} · {self.variant}"

    def cached_file(self) -> Path | None:
        """The file when it is in a cache already (no network), else None."""
        if self.hf:
            repo, names = self.hf
            for n in names:
                p = _hf_cached(repo, n)
                if p is not None:
                    return p
        if self.cache_path is not None and self.cache_path.is_file():
            return self.cache_path
        return None

    @property
    def cached(self) -> bool:
        return self.cached_file() is not None


def _split(arch: str) -> tuple:
    if not isinstance(arch, str) or ":" not in arch:
        raise ModelLoadError(f"pretrained weights need an architecture by name, 'torchvision:NAME' or 'timm:NAME', "
                             f"got {arch!r}.")
    lib, _, name = arch.strip().partition(":")
    if lib not in LIBRARIES or not name:
        raise ModelLoadError(f"pretrained weights by name exist for torchvision and timm architectures "
                             f"('torchvision:resnet50', 'timm:resnet18'), not for {arch!r}; for other networks give "
                             f"the weight file (--weights FILE).")
    return lib, name


def _wanted(pretrained) -> str | None:
    """None for the default weights, else the variant name asked for."""
    if pretrained is True:
        return None
    s = str(pretrained).strip()
    return None if s.upper() in ("", "DEFAULT", "TRUE") else s


def pretrained_in_kwargs(arch, kwargs: dict, pretrained, has_file: bool, notes: list):
    """timm's own switch, ``pretrained=True`` (``--arch-kwarg pretrained=True``), taken out of the
    constructor arguments (in place) and answered here -- cache first, a deadline on the network --
    instead of by timm's unbounded download.  Returns the ``pretrained`` to use.

    With a weight file it is dropped (the file gives the weights) and ``notes`` says so.
    (torchvision's ``weights=`` cannot reach the constructor: it is ``load()``'s weight file.)
    """
    key = "pretrained"
    if not (isinstance(arch, str) and arch.startswith("timm:")) or key not in kwargs:
        return pretrained
    value = kwargs.pop(key)
    if value is None or value is False:
        return pretrained
    if has_file:
        notes.append(f"{key}={value!r} ignored: the weight file gives the weights")
        return pretrained
    if pretrained is not None and pretrained is not False:
        return pretrained
    return True if value is True else str(value)


def resolve(arch: str, pretrained=True) -> WeightsRef:
    """The weights ``pretrained`` names for ``arch`` (no network); unknown names list the valid ones."""
    lib, name = _split(arch)
    if pretrained is None or pretrained is False:
        raise ModelLoadError("resolve() needs pretrained=True or a weights name.")
    return _tv_ref(name, _wanted(pretrained)) if lib == "torchvision" else _timm_ref(name, _wanted(pretrained))


def _tv():
    try:
        import torchvision.models as tvm
    except ImportError:
        raise ModelLoadError("pretrained torchvision weights need torchvision, which is not installed: "
                             "pip install torchvision") from None
    return tvm


def _tv_detail(w) -> str:
    m = w.meta
    acc = ((m.get("_metrics") or {}).get("ImageNet-1K") or {}).get("acc@1")
    parts = [f"top-1 {acc:.1f}%" if acc else "", f"{m['num_params'] / 1e6:.1f} M params" if m.get("num_params") else "",
             f"{m['_file_size']:.0f} MB" if m.get("_file_size") else ""]
    return ", ".join(p for p in parts if p)


def _tv_ref(name: str, want: str | None) -> WeightsRef:
    tvm = _tv()
    if name not in tvm.list_models():
        import difflib
        near = difflib.get_close_matches(name, tvm.list_models(), n=5)
        raise ModelLoadError(f"torchvision has no model {name!r}" + (f"; did you mean {', '.join(near)}?" if near
                                                                     else ""))
    try:
        enum = tvm.get_model_weights(name)
    except (ValueError, KeyError):
        raise ModelLoadError(f"torchvision:{name} has no pretrained weights.") from None
    members = list(enum)
    if not members:
        raise ModelLoadError(f"torchvision:{name} has no pretrained weights.")
    default = enum.DEFAULT
    if want is None:
        w = default
    else:
        key = want.rsplit(".", 1)[-1] if want.startswith(enum.__name__ + ".") else want
        w = next((m for m in members if m.name == key or m.name.upper() == key.upper()), None)
        if w is None:
            names = ", ".join(m.name + (" (default)" if m is default else "") for m in members)
            raise ModelLoadError(f"torchvision:{name} has no weights named {want!r}; choose one of {names} "
                                 f"(or pretrained=True / --pretrained for the default).")
    fname = os.path.basename(urlparse(w.url).path)
    return WeightsRef("torchvision", f"torchvision:{name}", name, w.name, w.url, hub_checkpoints() / fname,
                      is_default=w is default, detail=_tv_detail(w), obj=w)


def _timm():
    try:
        import timm
        from timm.models import get_pretrained_cfg
    except ImportError:
        raise ModelLoadError("timm architectures need the timm package, which is not installed: pip install timm"
                             ) from None
    return timm, get_pretrained_cfg


def _timm_ref(name: str, want: str | None) -> WeightsRef:
    timm, get_cfg = _timm()
    base, _, tag = name.partition(".")
    if want is not None:
        if tag and tag != want:
            raise ModelLoadError(f"timm:{name} already names its weights ({tag}); drop the tag or the pretrained name.")
        tag = want
    full = f"{base}.{tag}" if tag else base
    tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{base}.*") if "." in t]
    if base not in timm.list_models():
        import difflib
        near = difflib.get_close_matches(base, timm.list_models(), n=5)
        raise ModelLoadError(f"timm has no model {base!r}" + (f"; did you mean {', '.join(near)}?" if near else ""))
    if not tags:
        raise ModelLoadError(f"timm:{base} has no pretrained weights.")
    cfg = get_cfg(full, allow_unregistered=False) if (not tag or tag in tags) else None
    default = get_cfg(base, allow_unregistered=False)
    default_tag = default.tag if default is not None else tags[0]
    if cfg is None:
        raise ModelLoadError(f"timm:{base} has no weights tagged {tag!r}; choose one of {', '.join(tags)} "
                             f"(or pretrained=True / --pretrained for the default, {default_tag}).")
    hf = None
    if cfg.hf_hub_id:
        hf = (cfg.hf_hub_id, (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_FILES)
    url, path = cfg.url or None, None
    if url:
        path = hub_checkpoints() / os.path.basename(urlparse(url).path)
    if not url and hf:
        from huggingface_hub import hf_hub_url
        url = hf_hub_url(hf[0], hf[1][0])
    if url is None:
        raise ModelLoadError(f"timm:{base}.{cfg.tag}: its pretrained config names no file to download.")
    return WeightsRef("timm", f"timm:{base}", f"{base}.{cfg.tag}", cfg.tag, url, path, hf=hf,
                      is_default=cfg.tag == default_tag, detail=f"{cfg.input_size[1]}x{cfg.input_size[2]}")


# ============================================================================ fetch
def fetch(ref: WeightsRef, progress=None, cancel: threading.Event | None = None) -> Path:
    """The weights file of ``ref``: from the cache, else downloaded into it (see :mod:`.download`).

    ``progress(done_bytes, total_or_None)`` is called during a download, ``cancel`` (an
    Event) stops it.  Raises :class:`ModelLoadError` naming the file, URL and cache path
    when the file is missing and cannot be downloaded (fast when offline).
    """
    p = ref.cached_file()
    if p is not None:
        return p
    what = f"{ref.arch} ({ref.variant})"
    if ref.hf is None:
        return _dl.download(ref.url, ref.cache_path, progress, cancel, what=what)
    return _hf_download(ref, progress, cancel, what)


def _hf_download(ref: WeightsRef, progress, cancel, what: str) -> Path:
    from huggingface_hub import constants, hf_hub_download
    from tqdm.std import tqdm as _tqdm
    repo, names = ref.hf
    why = _dl.unreachable(constants.ENDPOINT)
    if why:
        raise ModelLoadError(_missing(ref, what, why))

    class Bar(_tqdm):   # hf_hub_download reports through a tqdm class: forward it, and stop on cancel
        def __init__(self, *a, **k):
            k["disable"] = True
            super().__init__(*a, **k)
            self.done = 0

        def update(self, n=1):
            if cancel is not None and cancel.is_set():
                raise _dl.DownloadCancelled(f"download of {repo} cancelled; nothing was saved.")
            self.done += n or 0
            if progress is not None:
                progress(self.done, self.total)

    last = None
    for n in names:
        try:
            return Path(hf_hub_download(repo, n, cache_dir=hf_cache_dir(), tqdm_class=Bar,
                                        etag_timeout=_dl.CONNECT_TIMEOUT_S))
        except _dl.DownloadCancelled:
            raise
        except Exception as e:       # EntryNotFound: try the next file name; anything else is reported
            last = e
            if type(e).__name__ not in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
                break
    raise ModelLoadError(_missing(ref, what, f"{type(last).__name__}: "
                                             f"{str(last).splitlines()[0] if str(last) else ''}"))


def _missing(ref: WeightsRef, what: str, why: str) -> str:
    if ref.cache_path is not None:     # a plain file under torch's hub cache is the simplest place to put it
        return _dl.missing_message(what, ref.url, ref.cache_path, why)
    return _dl.missing_message(what, ref.url, _hf_path_hint(ref.hf[0], ref.hf[1][0]), why) + (
        f" (huggingface cache layout: the folder name under snapshots/ is written in "
        f"{hf_cache_dir() / ('models--' + ref.hf[0].replace('/', '--'))}/refs/main)")


# ============================================================================ build
@dataclass
class Pretrained:
    """A model built with its pretrained weights, and what the weights' metadata says about it."""

    model: nn.Module
    spec: dict            # InputSpec fields from the weights' own transforms / data config
    labels: list | None
    name: str
    ref: WeightsRef
    path: Path
    notes: list = field(default_factory=list)


def _flat_state_dict(obj, path: Path) -> dict:
    """The state dict in a hub-cache file (keyed by parameter names), or ModelLoadError saying what it holds."""
    if isinstance(obj, dict):
        for k in ("state_dict", "model", "state_dict_ema"):
            if isinstance(obj.get(k), dict):
                obj = obj[k]
                break
        bad = next((k for k in obj if not isinstance(k, str)), None)
        if not obj or bad is not None:
            what = "nothing" if not obj else f"the key {bad!r} ({type(bad).__name__}), not a parameter name"
            raise ModelLoadError(f"{path} does not hold a state dict of named tensors (it holds {what}): the cached "
                                 f"file is damaged or not these weights; delete it and load again to download it.")
        return obj
    raise ModelLoadError(f"{path} does not hold a state dict (it holds a {type(obj).__name__}); delete it and load "
                         f"again to download it.")


def build(arch: str, pretrained=True, progress=None, cancel=None, **kwargs) -> Pretrained:
    """Build ``arch`` with the pretrained weights ``pretrained`` names (fetching the file if needed).

    ``kwargs`` go to the architecture (``num_classes=...``).  The file is read with the
    loader's safe reader; torchvision's builder then gets exactly that state dict.
    """
    ref = resolve(arch, pretrained)
    path = fetch(ref, progress, cancel)
    notes: list = []
    sd = _flat_state_dict(read_weights(path, notes=notes), path)
    notes.append(f"pretrained weights {ref.variant} from {path}")
    if ref.library == "torchvision":
        model = _tv_build(ref, sd, kwargs)
        spec, labels = _tv_meta(ref, notes)
    else:
        model = _timm_build(ref, sd, kwargs)
        spec, labels = _timm_meta(model, notes)
    return Pretrained(model, spec, labels, ref.display_name, ref, path, notes)


@contextlib.contextmanager
def _state_dict_from(sd: dict):
    """torchvision's builders call ``weights.get_state_dict()`` (a full unpickle of the cached file);
    while building, that call returns ``sd`` (already read safely) instead."""
    from torchvision.models import _api
    with _SWAP:
        orig = _api.load_state_dict_from_url
        _api.load_state_dict_from_url = lambda *a, **k: sd
        try:
            yield
        finally:
            _api.load_state_dict_from_url = orig


def _tv_build(ref: WeightsRef, sd: dict, kwargs: dict) -> nn.Module:
    tvm = _tv()
    kwargs = {k: v for k, v in kwargs.items() if k != "weights"}
    try:
        with _state_dict_from(sd):
            return tvm.get_model(ref.model_name, weights=ref.obj, **kwargs)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{ref.arch} with weights {ref.variant}: {e}") from None
    except RuntimeError as e:     # load_state_dict: a file under the right name with other contents
        first = str(e).strip().splitlines()[0]
        raise ModelLoadError(f"{ref.arch}: the cached file does not hold {ref.variant} weights ({first}); delete "
                             f"{ref.cache_path} and load again to download it.") from None


def _tv_meta(ref: WeightsRef, notes: list) -> tuple:
    w = ref.obj
    cats = w.meta.get("categories")
    labels = [str(c) for c in cats] if cats else None
    spec: dict = {}
    try:
        t = w.transforms()
        crop = list(getattr(t, "crop_size"))
        h, wd = (crop[0], crop[-1])
        spec = dict(channels=3, height=int(h), width=int(wd), mean=tuple(float(v) for v in t.mean),
                    std=tuple(float(v) for v in t.std), scale=1 / 255, fit="crop", channel_order="RGB")
        rs = getattr(t, "resize_size", None)
        notes.append(f"input spec from the weights' transforms: {h}x{wd} crop"
                     + (f" (torchvision resizes to {list(rs)[0]} first)" if rs else "") + ", ImageNet mean/std")
    except (AttributeError, TypeError, ValueError, IndexError):
        notes.append("the weights' transforms give no image size/normalization: the input spec is guessed")
    if labels:
        notes.append(f"labels: the weights' {len(labels)} categories")
    return spec, labels


def _timm_build(ref: WeightsRef, sd: dict, kwargs: dict) -> nn.Module:
    timm, _ = _timm()
    kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained", "pretrained_cfg_overlay")}
    try:
        return timm.create_model(ref.model_name, pretrained=True,
                                 pretrained_cfg_overlay=dict(state_dict=sd, file=None, source=None), **kwargs)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"timm:{ref.model_name} with its pretrained weights failed: {first}") from None


def _timm_meta(model: nn.Module, notes: list) -> tuple:
    from timm.data import ImageNetInfo, infer_imagenet_subset, resolve_model_data_config
    cfg = resolve_model_data_config(model)
    c, h, w = cfg["input_size"]
    spec = dict(channels=int(c), height=int(h), width=int(w), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                scale=1 / 255, fit="crop", channel_order="RGB")
    notes.append(f"input spec from timm's data config: {h}x{w}, mean {tuple(round(v, 3) for v in cfg['mean'])}")
    labels = None
    subset = infer_imagenet_subset(model)
    if subset:
        info = ImageNetInfo(subset)
        labels = [info.index_to_description(i).split(", ")[0] for i in range(info.num_classes())]
        notes.append(f"labels: timm's {subset} class names")
    return spec, labels


# ============================================================================ catalog (the window's list)
@dataclass(frozen=True)
class CatalogEntry:
    """One row of the "Open pretrained" list."""

    arch: str
    variant: str
    is_default: bool
    cached: bool
    detail: str

    @property
    def display_name(self) -> str:
        return f"{self.arch.split(':', 1)[1]} · {self.variant}"


def catalog(library: str = "torchvision") -> list:
    """Every pretrained classification model of ``library`` with its weight variants (no network).

    torchvision: the models of ``torchvision.models`` itself (classification), each weights
    enum member.  timm: ``timm.list_pretrained()``.  Raises ModelLoadError when the library
    is not installed.
    """
    out = []
    if library == "torchvision":
        tvm = _tv()
        ckpt = hub_checkpoints()
        for name in sorted(tvm.list_models(module=tvm)):
            try:
                enum = tvm.get_model_weights(name)
            except (ValueError, KeyError):
                continue
            for w in enum:
                f = ckpt / os.path.basename(urlparse(w.url).path)
                out.append(CatalogEntry(f"torchvision:{name}", w.name, w is enum.DEFAULT, f.is_file(), _tv_detail(w)))
        return out
    if library == "timm":
        timm, get_cfg = _timm()
        first: set = set()
        ckpt = hub_checkpoints()
        for full in timm.list_pretrained():
            base, _, tag = full.partition(".")
            cfg = get_cfg(full)
            cached = False
            if cfg is not None and cfg.hf_hub_id:
                names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_FILES
                cached = any(_hf_cached(cfg.hf_hub_id, n) is not None for n in names)
            if not cached and cfg is not None and cfg.url:
                cached = (ckpt / os.path.basename(urlparse(cfg.url).path)).is_file()
            out.append(CatalogEntry(f"timm:{base}", tag, base not in first, cached,
                                    f"{cfg.input_size[1]}x{cfg.input_size[2]}" if cfg is not None else ""))
            first.add(base)
        return out
    raise ModelLoadError(f"unknown library {library!r}; choose one of {', '.join(LIBRARIES)}.")
