"""The layers a researcher means: where ``o`` / ``u`` stop, and the first layer a window shows.

A module map lists every module -- containers, BatchNorms, activations, the convolution
*before* its normalization and activation -- ~150 of them in MobileNetV2.  Walking them one by
one (``features.18 -> features.18.0 -> features.18.1``) is no way to walk a network.  The
*stops* are the tensors a researcher talks about:

* **block outputs** -- every module of a class of its own (not a bare ``Sequential`` /
  ``ModuleList`` / ``ModuleDict``) that holds a convolution or a linear layer: a ResNet
  ``BasicBlock`` / ``Bottleneck``, a MobileNet ``InvertedResidual``, a ``Conv2dNormActivation``
  (conv -> norm -> activation), an EfficientNet ``MBConv``, a DenseNet layer, an Inception branch;
* **convolutions and linear layers after their activation** -- every rectifying activation
  module (ReLU, ReLU6, SiLU, GELU, Hardswish, ...): its output is the preceding conv / linear
  output after the nonlinearity (VGG's ``relu1_1 ... relu5_3``); activations on a 1 x 1
  squeezed branch inside a block are left out;
* **pooling outputs** (``pool1 ... pool5``, a global average pool) and **linear layers** (a
  classifier's logits, an embedding; a functional activation after them leaves no module), outside
  blocks (inside one, the block's output speaks for them);
* not gates: a squeeze-and-excitation module (``SqueezeExcitation``, timm's ``SqueezeExcite``, ...)
  multiplies the block's features by a squeezed branch; it and its insides are not stops;
* **the model output**.

A stop whose output is (as far as the map can tell) the same tensor as the block around it --
its last call ends right before the block's, with only the block's own containers ending in
between (a ``Conv2dNormActivation``'s ReLU6, a ``BasicBlock``'s final ReLU, a classifier's last
linear layer and the output) -- is folded into that outer stop.  Every other module stays
reachable (the module tree, and the keys that step through every module).

The first view (:func:`first_view`): the deepest stop whose maps are still large enough to read
-- at least ``max(7, largest map / 8)`` on their short side -- with at most 512 units:
MobileNetV2's ``features.13`` (96 x 14 x 14) rather than its last convolution (1280 x 7 x 7 before
normalization and activation, 1,280 tiles of 7 x 7).
"""
from __future__ import annotations

__all__ = ["ACTIVATION_TYPES", "POOLING_TYPES", "layer_stops", "first_view", "first_layer", "MAX_FIRST_VIEW_UNITS"]

ACTIVATION_TYPES = frozenset({"ReLU", "ReLU6", "SiLU", "GELU", "Hardswish", "LeakyReLU", "PReLU", "ELU", "SELU",
                              "CELU", "Mish", "Softplus", "RReLU", "Swish", "QuickGELU", "GELUTanh"})
POOLING_TYPES = frozenset({"MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
                           "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveMaxPool1d",
                           "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "SelectAdaptivePool2d", "LPPool2d"})
LINEAR_TYPES = frozenset({"Linear", "LazyLinear"})
CONTAINER_TYPES = frozenset({"Sequential", "ModuleList", "ModuleDict"})
# gates: their output is the block's input times a squeezed branch; neither they nor their insides are stops
GATE_TYPES = frozenset({"SqueezeExcitation", "SqueezeExcite", "SEModule", "SELayer", "SEBlock", "EffectiveSEModule",
                        "CBAM", "ChannelAttn", "EcaModule", "GatherExcite"})
MAX_FIRST_VIEW_UNITS = 512


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _ancestors(name: str) -> list:
    out = []
    while name:
        name = _parent(name)
        out.append(name)
    return out


def _spatial(layer) -> tuple:
    """One unit's map (H, W), or () for a flat layer; through the layer's layout when the map has one."""
    ms = getattr(layer, "map_shape", None)
    if isinstance(ms, tuple):
        return ms if len(ms) >= 2 else ()
    shape = layer.shape or ()
    return tuple(shape[1:]) if len(shape) >= 3 else ()


def _blocks(mm) -> set:
    """Names of the modules of a class of their own that hold a convolution or a linear layer."""
    holds: set = set()
    for l in mm:
        if l.is_conv or l.type in LINEAR_TYPES:
            holds.update(_ancestors(l.name))
    return {l.name for l in mm if l.name and l.name in holds and l.type not in CONTAINER_TYPES}


def layer_stops(mm) -> list:
    """The stops of a :class:`~cnnvis_gui.core.modelmap.ModelMap`, in the order their last call ends."""
    layers = [l for l in mm if l.visualizable and l.ends]
    types = {l.name: l.type for l in mm}
    gates = {n for n, t in types.items() if t in GATE_TYPES}
    blocks = _blocks(mm) - gates
    by_name = {l.name: l for l in layers}
    cand = set()
    for l in layers:
        up = _ancestors(l.name)
        if gates.intersection(up + [l.name]):
            continue                # a gate and what is inside it
        in_block = any(a in blocks for a in up)
        if l.name == "" or l.name in blocks:
            cand.add(l.name)
        elif l.type in POOLING_TYPES or l.type in LINEAR_TYPES:
            if not in_block:        # a network's pooling stages and its head; inside a block the block speaks
                cand.add(l.name)
        elif l.type in ACTIVATION_TYPES:
            sp = _spatial(l)
            outer = next((by_name[a] for a in up if a in blocks and a in by_name), None)
            if sp and all(s == 1 for s in sp) and outer is not None and any(s > 1 for s in _spatial(outer)):
                continue            # a squeezed branch inside a block
            cand.add(l.name)
    # a stop folded into the block around it: only that block's own containers end in between
    end_of = {}
    for l in layers:
        for e in l.ends:
            end_of[e] = l.name
    kept = []
    for name in cand:
        last = by_name[name].ends[-1]
        e, folded = last + 1, False
        while e in end_of:
            other = end_of[e]
            if not (name.startswith(other + ".") or other == ""):
                break               # a module outside this one's ancestors ended: another tensor
            if other in cand:
                folded = True
                break
            e += 1
        if not folded:
            kept.append(name)
    kept.sort(key=lambda n: by_name[n].ends[-1])
    # a linear layer right before its activation (VGG's classifier.0 -> classifier.1): the activation stands for it
    return [n for n, nxt in zip(kept, kept[1:] + [None]) if not (
        by_name[n].type in LINEAR_TYPES and nxt is not None and by_name[nxt].type in ACTIVATION_TYPES
        and _parent(nxt) == _parent(n) and by_name[nxt].ends[-1] == by_name[n].ends[-1] + 1)]


def first_view(mm) -> str | None:
    """The stop a window opens on: the deepest one with readable maps and at most 512 units.

    None when the network has no stop with a spatial map (then the caller keeps its own rule).
    """
    stops = layer_stops(mm)
    spatial = [(n, mm[n]) for n in stops if _spatial(mm[n])]
    if not spatial:
        return None
    biggest = max(min(_spatial(l)) for _, l in spatial)
    readable = max(7, biggest // 8)
    good = [n for n, l in spatial if min(_spatial(l)) >= readable and (l.units or 0) <= MAX_FIRST_VIEW_UNITS]
    if good:
        return good[-1]
    big_enough = [n for n, l in spatial if min(_spatial(l)) >= readable]
    return (big_enough or [n for n, _ in spatial])[-1]


def first_layer(mm) -> str:
    """The layer a window opens on without ``--layer``: :func:`first_view`, else the map's
    ``default_layer`` (its last convolution), else the last visualizable module."""
    names = mm.visualizable_names()
    for cand in (first_view(mm), mm.default_layer):
        if cand is not None and cand in names:
            return cand
    return names[-1] if names else ""
