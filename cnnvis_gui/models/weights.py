"""Read a weight file without running code: state dicts, checkpoint dicts, safetensors.

TorchScript archives, text files (web pages, Git LFS pointers), empty, truncated and random
files are refused with a specific reason; pickled Python objects go through :mod:`.pickles`.
"""
from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import torch

from .errors import ModelLoadError, _short
from .metadata import CHECKPOINT_META_KEY
from .pickles import MAX_ZIP_PICKLE_BYTES, _classify_pickle, _load_with_extras, _unsupported_global, _untrusted

__all__ = ["read_weights"]


def read_weights(path, trust_pickle: bool = False, notes: list | None = None):
    """Read a weight file without running code: a state dict, a checkpoint dict, or (trusted) a module.

    Checkpoint extras that need more than tensors (``argparse.Namespace`` args, numpy
    scalars, paths, dates, objects of unknown classes) are read without running code; what was
    skipped goes into ``notes`` when a list is given.
    Raises ModelLoadError with a specific reason for empty, truncated, text, random,
    TorchScript and pickled-object files (:class:`UntrustedPickleError` for the latter).
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"weight file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder; give the weight file inside it (.pth, .pt, .bin, .ckpt, .safetensors).")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"{path.name} is empty (0 bytes): the save was interrupted or the download failed.")
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except PermissionError:
        raise ModelLoadError(f"cannot read the weight file {path}: permission denied (check the file's "
                             f"permissions).") from None
    except OSError as e:
        raise ModelLoadError(f"cannot read the weight file {path}: {e.strerror or e}.") from None

    if path.suffix.lower() == ".safetensors" or _looks_like_safetensors(head, size):
        return _read_safetensors(path)

    if head[:4] == b"PK\x03\x04" or zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
                names = [i.filename for i in infos]
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
        big = [i for i in infos if i.filename.endswith("data.pkl") and i.file_size > MAX_ZIP_PICKLE_BYTES]
        if big:
            raise ModelLoadError(
                f"{path.name}: its {big[0].filename} unpacks to {big[0].file_size / 2**20:,.0f} MB "
                f"({big[0].compress_size / 2**20:,.1f} MB packed); a checkpoint's object pickle is a few MB (the "
                f"tensors are stored beside it), so it was not unpacked (a decompression bomb or a damaged file).")
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
    kind, scan = _classify_pickle(path)
    globals_ = list(scan.globals)
    unsupported = _unsupported_global(str(err)) if "Unsupported global" in str(err) else ""
    if unsupported and unsupported not in globals_:
        globals_.append(unsupported)        # the safe unpickler's own find: named even if the scan missed it
    if kind == "objects" or unsupported:
        if not trust_pickle:
            obj = _load_with_extras(path, set(globals_), notes)
            if obj is not None:
                return obj
            raise _untrusted(path, globals_, scan=scan) from None
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
