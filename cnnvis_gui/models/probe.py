"""Resolve a model's input spec (given > metadata > guessed) and validate it with one probe forward."""
from __future__ import annotations

import torch
from torch import nn

from ..core import CnnvisError, IMAGENET_MEAN, IMAGENET_STD, InputSpec
# the most values one model input may hold (3 x 8192 x 8192 float32 = 0.8 GB), whoever gave the spec
from ..core.bounds import MAX_INPUT_VALUES
from .errors import ModelLoadError

_GUESS_SIZES = (224, 64, 32, 28, 96, 128, 256, 299, 160, 48, 16)



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
    values = base.channels * base.height * base.width
    if values > MAX_INPUT_VALUES:   # a crafted spec (1e5 x 1e5) would make the probe allocate ~100 GB
        raise ModelLoadError(f"invalid input spec {base.channels}x{base.height}x{base.width}: one input would hold "
                             f"{values:,} values, more than {MAX_INPUT_VALUES:,} (3 x 8192 x 8192); give the size the "
                             f"model was trained with.")
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
        notes.append(f"labels: none (the output has shape {out_shape}, not the 1000 ImageNet classes); "
                     f"give a labels file to name the classes")
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
