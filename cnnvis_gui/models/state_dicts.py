"""Find the state dict inside a checkpoint and fit it to a model, or say exactly what does not fit."""
from __future__ import annotations

import re

import torch
from torch import nn

from .errors import ModelLoadError, _short

__all__ = ["STATE_DICT_KEYS", "STRIP_PREFIXES", "WRAPPER_COUNTERS"]

#: Keys under which checkpoint dicts nest the state dict, in order of preference.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module",
                   "ema", "model_ema", "state_dict_ema", "ema_state_dict", "params")
#: Prefixes stripped from state-dict keys when that makes them fit (DataParallel, Lightning, torch.compile).
STRIP_PREFIXES = ("module.", "model.", "_orig_mod.", "net.")
#: Tensors a training wrapper saves beside the network it wraps, not weights of it: torch's
#: ``AveragedModel`` (SWA, EMA) keeps ``n_averaged`` beside ``module.*``.  Left out (with a note)
#: when a prefix was stripped to reach the network.
WRAPPER_COUNTERS = ("n_averaged",)


def _chosen_state_dict(obj, key: str, fname: str) -> list:
    """The state dict under the key the caller named (``state_dict_key`` / ``--weights-key``)."""
    where = "checkpoint"
    v = obj
    if isinstance(obj, dict) and key in obj:
        v, where = obj[key], f"checkpoint[{key!r}]"
    else:
        for part in key.split("."):
            if not isinstance(v, dict) or part not in v:
                avail = [w for w, _ in _state_dict_candidates(obj, False)]
                keys = _short(list(obj)) if isinstance(obj, dict) else type(obj).__name__
                raise ModelLoadError(f"{fname}: no entry {key!r} (state_dict_key / --weights-key) in the checkpoint; "
                                     f"entries holding weights: {', '.join(avail) or 'none'}; top-level keys: {keys}.")
            v, where = v[part], f"{where}[{part!r}]"
    if isinstance(v, nn.Module):
        v = v.state_dict()
    if _is_state_dict(v):
        return [(where, _tensors_only(v))]
    nested = [(where if w == "the file" else where + w[len("checkpoint"):], sd)
              for w, sd in _state_dict_candidates(v, False)]
    if nested:
        return nested[:1]
    raise ModelLoadError(f"{fname}: {where} holds no weights (a {type(v).__name__}); choose another "
                         f"state_dict_key / --weights-key.")


def _key_of(where: str) -> str:
    return ".".join(re.findall(r"\['([^']*)'\]", where))


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


def _check_not_quantized(target: dict, arch: str) -> None:
    """Refuse a model whose state holds quantized tensors or packed parameters (``quantize=True``):
    gradients do not flow through quantized kernels, so nothing here could be shown for it."""
    odd = next((k for k, v in target.items() if not isinstance(v, torch.Tensor) or v.is_quantized), None)
    if odd is not None:
        raise ModelLoadError(f"{arch} is a quantized model ({odd!r} is a {type(target[odd]).__name__}"
                             f"{' of dtype ' + str(target[odd].dtype) if isinstance(target[odd], torch.Tensor) else ''}"
                             f"): backpropagation does not run through quantized layers, so saliency, deconvnet and "
                             f"CAMs cannot be computed; load its float version instead (e.g. torchvision:resnet18, "
                             f"or without quantize=True).")


def _is_extra_state(key: str, value) -> bool:
    """A module's own ``get_extra_state()`` entry that is not a tensor (a dict, a version number...)."""
    return (key == "_extra_state" or key.endswith("._extra_state")) and not isinstance(value, torch.Tensor)


def _fit_state_dict(model: nn.Module, candidates: list, strict: bool, notes: list, fname: str, kwargs: dict):
    target = model.state_dict()
    extra = [k for k, v in target.items() if _is_extra_state(k, v)]
    if extra:   # not weights: a file's tensors are fitted without them, and they stay as the model built them
        target = {k: v for k, v in target.items() if k not in extra}
        notes.append(f"kept the extra state of {_short(extra)} as the architecture built it (not a tensor; weight "
                     f"files are read for tensors only)")
    _check_not_quantized(target, type(model).__name__)
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
    counters = [k for k in sd if strip and k in WRAPPER_COUNTERS and k not in target]
    if counters:
        sd = {k: v for k, v in sd.items() if k not in counters}
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    mismatched = [(k, tuple(sd[k].shape), tshape[k]) for k in sd if k in tshape and tuple(sd[k].shape) != tshape[k]]
    harmless = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in harmless]

    if where != "the file":
        notes.append(f"state dict read from {where}")
    others = [w for w, _ in candidates if w != where]
    if others:
        k = _key_of(others[0])
        notes.append(f"the checkpoint also holds {', '.join(others)} (not used; to load "
                     f"{'it' if len(others) == 1 else 'one of them'} instead: state_dict_key={k!r}, command line "
                     f"--weights-key {k})" if k else f"the checkpoint also holds {', '.join(others)} (not used)")
    if strip:
        notes.append(f"stripped key prefix{'es' if len(strip) > 1 else ''} {' + '.join(repr(p) for p in strip)} "
                     f"so the keys fit the architecture")
    if counters:
        notes.append(f"left out {', '.join(counters)}: the averaging wrapper's counter (torch's AveragedModel), "
                     f"not a weight of the network")

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
        model.load_state_dict(sd, strict=not harmless and not extra)
    except RuntimeError as e:  # keys and shapes fit (checked above); a module's own checks may still refuse
        raise ModelLoadError(f"{fname}: loading the state dict failed: {e}") from None


def _mismatch_report(fname, arch, target, sd, missing, unexpected, mismatched, kwargs) -> str:
    lines = [f"{fname} does not fit {arch}: {len(sd)} tensors in the checkpoint, {len(target)} in the model; "
             f"{len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} with another shape."]
    hints = []
    # num_classes: only the classifier's output dimension differs -- in the model's last layer (the
    # output), not in a first convolution whose filters number otherwise
    weights = [k for k in target if k.endswith(".weight")]
    last = weights[-1].rsplit(".", 1)[0] if weights else None
    if mismatched and not missing and not unexpected and all(
            k.rsplit(".", 1)[0] == last and len(a) == len(b) and a[1:] == b[1:] and a[0] != b[0]
            for k, a, b in mismatched):
        ks = {a[0] for _, a, _ in mismatched}
        ms = {b[0] for _, _, b in mismatched}
        if len(ks) == 1 and len(ms) == 1:
            k, m = ks.pop(), ms.pop()
            hints.append(f"only the classifier's output size differs: the checkpoint has {k} classes, the model "
                         f"{m}; pass num_classes={k} (Python: load(..., num_classes={k}); command line: "
                         f"--arch-kwarg num_classes={k}).")
    matched = len(sd) - len(unexpected) - len(mismatched)
    if not hints and unexpected and not missing and not mismatched:
        hints.append(f"every tensor of {arch} is in the checkpoint; the {len(unexpected)} other"
                     f"{'s' if len(unexpected) > 1 else ''} ({_short(unexpected, 3)}) were saved beside the network "
                     f"(a loss's weights, a training counter...): load with strict=False (command line: --no-strict) "
                     f"to use the network's tensors and leave {'them' if len(unexpected) > 1 else 'it'} out.")
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


#: an integer constructor argument up to this is never questioned (image sizes, widths, depths)
SMALL_KWARG = 1 << 16


def check_kwarg_sizes(kwargs: dict, candidates: list, fname: str | None) -> None:
    """Refuse an integer constructor argument that would build a model far larger than the weights.

    Checked *before* the architecture is built: ``num_classes=2500000`` read from a checkpoint's
    ``arch_kwargs`` builds a 5 GB classifier only to find that the weights do not fit.  With a
    weight file (``candidates``: its state dicts) an integer above :data:`SMALL_KWARG` must not
    exceed the largest dimension of any tensor in the file (a model with that many classes has a
    tensor that long); without one, a ``num_*`` / ``*classes`` argument is bounded by
    :data:`~cnnvis_gui.core.bounds.MAX_CLASSES`.
    """
    from ..core.bounds import MAX_CLASSES

    big = {k: v for k, v in kwargs.items() if type(v) is int and v > SMALL_KWARG}
    if not big:
        return
    if fname is None:
        for k, v in big.items():
            if (k.startswith("num_") or "classes" in k) and v > MAX_CLASSES:
                raise ModelLoadError(f"{k}={v:,} is more than the {MAX_CLASSES:,} this program builds a model for "
                                     f"(the layer alone would take {v * 4 / 2**20:,.0f} MB per input feature); "
                                     f"check the value.")
        return
    largest = max((max(t.shape, default=1) for _, sd in candidates for t in sd.values()
                   if isinstance(t, torch.Tensor)), default=0)
    for k, v in big.items():
        if v > largest:
            raise ModelLoadError(f"{fname}: the constructor argument {k}={v:,} is larger than every dimension of "
                                 f"the weights in the file (the largest is {largest:,}): a model built with it "
                                 f"cannot hold these weights, and building it would take memory for nothing; give "
                                 f"the right {k} (command line: --arch-kwarg {k}=N).")
