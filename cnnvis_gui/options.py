"""Model options shared by both front ends (``cnnvis`` and ``cnnvis-gui``).

:func:`add_model_arguments` adds ``--model``, ``--weights``, ``--trust-pickle``,
``--arch-kwarg``, ``--labels``, ``--device`` and the input-spec overrides to an argparse
parser; :func:`model_from_args` turns the parsed namespace into a ``LoadedModel``.  The
window's "Recent models" entries (``what|arch``) are read the same way
(:func:`model_from_entry`), so a model means the same thing wherever it is named.

Qt-free: imports :mod:`cnnvis_gui.models` only, lazily.
"""
from __future__ import annotations

import argparse
import ast
import math
import re
from pathlib import Path
from types import SimpleNamespace

# the largest model input side ``--input-size`` accepts (a 3 x 8192 x 8192 float32 input is 0.8 GB)
from .core.bounds import MAX_INPUT_SIDE, MAX_THREADS, not_a_file
from .core.errors import CnnvisError

__all__ = ["UsageError", "add_model_arguments", "model_from_args", "spec_overrides", "layout_overrides", "model_from_entry",
           "model_entry", "pretrained_entry", "apply_thread_option", "WEIGHT_SUFFIXES", "PRETRAINED_ENTRY"]

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar")
#: "what" of a remembered model built with pretrained weights: ``pretrained:VARIANT`` (arch = the architecture)
PRETRAINED_ENTRY = "pretrained:"




class UsageError(CnnvisError):
    """A command-line argument the user must fix (exit code 2)."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose and load a model (shared by every sub-command).

    ``--model``, ``--pretrained``, ``--weights``, ``--trust-pickle``, ``--trust-code``, ``--no-strict``,
    ``--arch-kwarg``, ``--labels``, ``--layout``, ``--device`` and the input-spec overrides ``--input-size``,
    ``--channels``, ``--mean``, ``--std``, ``--scale``, ``--bgr``, ``--fit``.
    Turn the parsed namespace into a model with :func:`model_from_args`.
    """
    g = parser.add_argument_group("model")
    g.add_argument("--model", "-m", metavar="MODEL",
                   help="a demo name (shapes, glyphs), an architecture source "
                        "(torchvision:resnet18, package.module:factory, path/to/net.py:Net) or a weight "
                        "file whose checkpoint names its architecture. Without --model and --weights the "
                        "'shapes' demo model is used.")
    g.add_argument("--pretrained", nargs="?", const=True, default=None, metavar="NAME",
                   help="with --model torchvision:NAME or timm:NAME: load the library's pretrained weights "
                        "(the default ones, or the variant NAME, e.g. IMAGENET1K_V2 or the timm tag a1_in1k) with "
                        "their class names and input spec; the file comes from the hub cache ($TORCH_HOME, "
                        "$HF_HOME) or is downloaded once")
    g.add_argument("--weights", "-w", metavar="FILE",
                   help="weight file (.pt/.pth/.bin/.ckpt state dict or checkpoint, .safetensors); with "
                        "--model as the architecture, or alone when the checkpoint names its architecture")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of the weight file (runs code from the file: only for files "
                        "you trust)")
    g.add_argument("--trust-code", action="store_true",
                   help="allow the weight file's own metadata (checkpoint 'cnnvis' key, .safetensors header, "
                        "sidecar .json) to name an architecture that runs code: a package.module:callable or a "
                        ".py file. Without it only torchvision, timm and the demo architectures are built from "
                        "a file's metadata; an architecture you give with --model needs no such consent")
    g.add_argument("--no-strict", dest="strict", action="store_false",
                   help="load the parameters that fit and leave the rest at their initial values "
                        "(listed in the notes)")
    g.add_argument("--arch-kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor argument for the architecture, VALUE read as a Python literal "
                        "(num_classes=10, pretrained=False, name='x'); repeatable")
    g.add_argument("--weights-key", metavar="KEY",
                   help="which entry of a checkpoint dict holds the weights to load, e.g. ema, "
                        "state_dict_ema, model_ema (default: the first usual key that fits)")
    g.add_argument("--labels", metavar="FILE",
                   help="class labels: one per line, a JSON list or a JSON {index: label} object")
    g.add_argument("--layout", action="append", default=[], metavar="NAME=LAYOUT",
                   help="read layer NAME's output in this layout instead of the detected one: nchw (channels "
                        "first), nhwc (channels last), tokens:P+HxW (P prefix tokens, then an H x W grid of patch "
                        "tokens) or flat; repeatable. 'cnnvis info' shows every layer's layout")
    g.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"),
                   help="where the model runs (default: auto = cuda when available, else cpu)")
    g.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: $OMP_NUM_THREADS, else the physical cores; the window "
                        "keeps one core for its own threads)")
    s = parser.add_argument_group("input spec overrides (default: the checkpoint's metadata, else guessed)")
    s.add_argument("--input-size", metavar="HxW", help="model input height x width, e.g. 224x224 (or 64)")
    s.add_argument("--channels", type=int, metavar="C", help="input channels (1 gray, 3 colour, ...)")
    s.add_argument("--mean", metavar="M[,M,M]", help="per-channel mean subtracted after scaling")
    s.add_argument("--std", metavar="S[,S,S]", help="per-channel std divided after subtracting the mean")
    s.add_argument("--scale", metavar="F",
                   help="multiplies 8-bit pixel values first (default 1/255; 1 keeps 0..255)")
    s.add_argument("--bgr", action="store_true", help="the model was trained on BGR (not RGB) channel order")
    s.add_argument("--fit", choices=("crop", "stretch", "letterbox"),
                   help="how an image of another aspect ratio becomes the input size")


def _floats(text: str, what: str) -> list:
    def num(v):
        a, sep, b = v.partition("/")          # 1/255 is accepted as a number
        return float(ast.literal_eval(a.strip())) / (float(ast.literal_eval(b.strip())) if sep else 1.0)

    words = [v.strip() for v in str(text).split(",") if v.strip()]
    if any(w.lower().lstrip("+-") in ("nan", "inf", "infinity") for w in words):
        raise UsageError(f"{what} must be finite numbers (as std must not be 0), got {text!r}")
    try:
        vals = [num(v) for v in words]
    except (ValueError, SyntaxError, TypeError, ZeroDivisionError, MemoryError, RecursionError):
        raise UsageError(f"{what} must be numbers separated by commas, got {text!r}") from None
    if not vals:
        raise UsageError(f"{what} needs at least one number")
    if not all(math.isfinite(v) for v in vals):
        raise UsageError(f"{what} must be finite numbers (as std must not be 0), got {text!r}")
    return vals


def spec_overrides(args) -> dict:
    """The input-spec fields given on the command line, as a (possibly empty) dict."""
    d: dict = {}
    size = getattr(args, "input_size", None)
    if size:
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*,]\s*(\d+))?\s*", size)
        if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < 1):
            raise UsageError(f"--input-size must be HxW (e.g. 224x224) or one number, got {size!r}")
        d["height"] = int(m.group(1))
        d["width"] = int(m.group(2) or m.group(1))
        if max(d["height"], d["width"]) > MAX_INPUT_SIDE:
            raise UsageError(f"--input-size: at most {MAX_INPUT_SIDE} pixels a side, got {size!r} (one "
                             f"{d['height']}x{d['width']} input is already "
                             f"{3 * 4 * d['height'] * d['width'] / 2**30:,.0f} GB as float32)")
    if getattr(args, "channels", None) is not None:
        if args.channels < 1:
            raise UsageError(f"--channels must be a positive integer, got {args.channels}")
        d["channels"] = args.channels
    if getattr(args, "mean", None):
        d["mean"] = tuple(_floats(args.mean, "--mean"))
    if getattr(args, "std", None):
        d["std"] = tuple(_floats(args.std, "--std"))
    if getattr(args, "scale", None):
        s = _floats(args.scale, "--scale")
        if len(s) != 1 or s[0] <= 0:
            raise UsageError(f"--scale must be one positive number (e.g. 1/255 = 0.00392), got {args.scale!r}")
        d["scale"] = s[0]
    if getattr(args, "bgr", False):
        d["channel_order"] = "BGR"
    if getattr(args, "fit", None):
        d["fit"] = args.fit
    return d


def layout_overrides(args) -> dict:
    """``--layout NAME=LAYOUT`` options as ``{name: layout}`` (syntax checked; names are checked by the model map)."""
    from .core import CnnvisError
    from .core.layouts import parse_layout
    out = {}
    for item in getattr(args, "layout", None) or ():
        name, sep, text = str(item).rpartition("=")
        if not sep:
            raise UsageError(f"--layout must be NAME=LAYOUT (e.g. blocks.5=tokens:1+14x14), got {item!r}")
        name = name.strip()
        if name in ("output", "(model output)"):
            name = ""
        try:
            parse_layout(text)
        except CnnvisError as e:
            raise UsageError(f"--layout {item}: {e}") from None
        out[name] = text.strip()
    return out


def _arch_kwargs(items) -> dict:
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--arch-kwarg must be KEY=VALUE with a Python identifier as KEY, got {item!r}")
        try:
            out[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key] = value.strip()  # a bare word: keep it as a string
    return out


def apply_thread_option(args, reserve: int = 0):
    """Set torch's thread count from ``--threads`` (else the policy of :mod:`cnnvis_gui.core.threads`).

    ``reserve``: cores kept for threads that are not torch's (the window keeps 1).
    Returns the :class:`~cnnvis_gui.core.threads.ThreadPolicy` applied.
    """
    from .core.threads import apply_threads
    n = getattr(args, "threads", None)
    if n is not None and n < 1:
        raise UsageError(f"--threads must be at least 1, got {n}")
    if n is not None and n > MAX_THREADS:   # libgomp aborts at ~20,000 threads, the process segfaults at 100,000
        import os
        raise UsageError(f"--threads must be at most {MAX_THREADS} (this machine has {os.cpu_count() or 1} CPUs; "
                         f"more threads than cores only slow torch down), got {n}")
    return apply_threads(n, reserve=reserve)


def model_from_args(args):
    """Load the model the parsed :func:`add_model_arguments` options describe -> ``LoadedModel``.

    Raises :class:`~cnnvis_gui.models.ModelLoadError` (a CnnvisError) with a message for
    the user when the model cannot be loaded.
    """
    layouts = layout_overrides(args)
    lm = _load_from_args(args)
    if layouts:
        from .core.modelmap import check_overrides
        lm.layouts = check_overrides(layouts, [n for n, _ in lm.model.named_modules()])
    return lm


def _load_from_args(args):
    from cnnvis_gui import models

    model = getattr(args, "model", None)
    weights = getattr(args, "weights", None)
    kwargs = _arch_kwargs(getattr(args, "arch_kwarg", None))
    spec = spec_overrides(args) or None
    common = dict(trust_pickle=getattr(args, "trust_pickle", False), trust_code=getattr(args, "trust_code", False),
                  strict=getattr(args, "strict", True),
                  device=getattr(args, "device", "auto") or "auto", spec=spec,
                  labels=getattr(args, "labels", None), state_dict_key=getattr(args, "weights_key", None))
    _check_file("--labels", common["labels"])
    _check_file("--weights", weights)
    pretrained = getattr(args, "pretrained", None)
    if pretrained is not None:
        return _pretrained(models, model, weights, pretrained, common, kwargs)
    if model is None and weights is None:
        model = "shapes"
    if model in models.DEMO_NAMES:
        if weights is not None:
            raise UsageError(f"--model {model} is a demo model that ships with its weights; drop --weights, or "
                             f"give the architecture of your weight file with --model")
        if kwargs:
            raise UsageError(f"--arch-kwarg does not apply to the demo model {model!r}")
        path = models.demo_checkpoint(model)
        if not path.is_file():
            return models.demo(model)  # raises ModelLoadError saying how to recreate it
        return models.load(path, **common)
    if model is not None and weights is None and ":" not in model and Path(model).suffix.lower() in WEIGHT_SUFFIXES:
        # --model path/to/checkpoint.pth: a weight file that names its own architecture
        _check_file("--model", model)
        return models.load(model, **common, **kwargs)
    if model is not None and ":" not in model:
        raise UsageError(f"--model {model!r} is neither a demo ({', '.join(models.DEMO_NAMES)}) nor an architecture "
                         f"source (torchvision:NAME, package.module:factory, path/to/net.py:Class) nor a weight file")
    return models.load(weights, arch=model, **common, **kwargs)


def _pretrained(models, model, weights, pretrained, common, kwargs):
    """``--model torchvision:NAME --pretrained [VARIANT]`` (a bar on the terminal while a file downloads)."""
    if model is None or not str(model).startswith(("torchvision:", "timm:")):
        raise UsageError(f"--pretrained needs an architecture by name, --model torchvision:NAME or timm:NAME "
                         f"(e.g. --model torchvision:resnet50 --pretrained), not {model!r}")
    if weights is not None:
        raise UsageError("--pretrained and --weights both name the weights: drop one of them")
    from cnnvis_gui.models.download import terminal_progress
    return models.load(arch=model, pretrained=pretrained, download_progress=terminal_progress(f"{model} weights"),
                       **common, **kwargs)


def _check_file(option: str, value) -> None:
    """A file option names an existing file (not a folder), or UsageError says which it is."""
    if value is None:
        return
    p = Path(value).expanduser()
    kind = not_a_file(p)
    if kind == "a folder":
        raise UsageError(f"{option}: '{value}' is a folder; give the file inside it")
    if kind == "missing":
        raise UsageError(f"{option}: no such file: '{value}'")
    if kind is not None:
        raise UsageError(f"{option}: '{value}' is {kind}, not a regular file; give a file")


def model_from_entry(what: str, arch: str = "", device="auto", trust_code: bool = False, settings_file=None):
    """Load a remembered model (``what|arch`` as in the window's settings) the way the command line would.

    A remembered model is data read from a settings file, not the user's consent: an architecture
    it names is checked by the one trust policy (:func:`cnnvis_gui.models.trust.check_file_arch`),
    as one named by a checkpoint's metadata would be, so a ``.py`` file or a
    ``package.module:callable`` raises :class:`~cnnvis_gui.models.UntrustedCodeError` without
    ``trust_code``.  ``trust_code`` is never remembered: the window asks again each time (see
    ``qt/trust_dialog.py``).  ``settings_file``: where the entry was read (for the message).
    """
    from cnnvis_gui.models.trust import check_file_arch
    if what.startswith("demo:"):
        what = what[5:]
    named = _entry_architecture(what, arch)
    if named is not None:
        where = f"the settings file {settings_file}" if settings_file else "the remembered model (settings)"
        check_file_arch(_resolved_arch(named), f"{where}'s recent model", trust_code=trust_code,
                        path=settings_file)
    if what.startswith(PRETRAINED_ENTRY) and arch:
        return model_from_args(SimpleNamespace(model=arch, weights=None, pretrained=what[len(PRETRAINED_ENTRY):],
                                               device=device))
    if arch:
        return model_from_args(SimpleNamespace(model=arch, weights=what, device=device, trust_code=trust_code))
    return model_from_args(SimpleNamespace(model=what, weights=None, device=device, trust_code=trust_code))


def _entry_architecture(what: str, arch: str):
    """The architecture source a remembered entry builds by itself, or None (a demo, or a weight file
    whose own metadata names it: the loader checks that one)."""
    from cnnvis_gui.models import DEMO_NAMES
    if arch:
        return None if arch in DEMO_NAMES else arch
    if what in DEMO_NAMES or ":" not in what:
        return None
    return what


def _resolved_arch(arch: str) -> str:
    """``net.py:Net`` with the file's absolute path (the one that would run), for the trust prompt."""
    head, sep, name = arch.rpartition(":")
    if sep and head.endswith(".py"):
        try:
            return f"{Path(head).expanduser().resolve()}:{name}"
        except (OSError, RuntimeError):
            return arch
    return arch


def model_entry(args, demo_name=None) -> tuple:
    """(what, arch) to remember for the model the command line chose."""
    if demo_name:
        return f"demo:{demo_name}", None
    if getattr(args, "pretrained", None) is not None:
        return pretrained_entry(args.model, args.pretrained)
    if args.weights:
        return args.weights, args.model
    return args.model, None


def pretrained_entry(arch: str, variant=True) -> tuple:
    """(what, arch) to remember for ``arch`` with pretrained weights ``variant`` (True: the default ones)."""
    return f"{PRETRAINED_ENTRY}{'DEFAULT' if variant is True else variant}", arch
