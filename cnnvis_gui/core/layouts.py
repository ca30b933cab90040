"""Feature-map layouts: which axis of a module's output holds the units, and which hold the map.

A convolutional network's feature maps are ``N x C x H x W``: the units (channels) are the first
axis after the batch and the rest is their map.  Today's most-used vision networks are not all
like that.  Inside a ConvNeXt block and throughout a Swin transformer the maps are channels-last,
``N x H x W x C``; a ViT or DeiT carries tokens, ``N x (P + H*W) x C``, where ``P`` prefix tokens
(class, distillation, registers) come before the patch tokens of an ``H x W`` grid.  Reading the
first axis as the units there gives 14 "units" that are rows of a map, or 197 that are tokens.

Every module output gets one :class:`Layout`:

========== ============================== ===========================================================
name       output (per sample)            units / map
========== ============================== ===========================================================
``nchw``   ``C x H x W`` (or ``C x L``)   C channels, each an ``H x W`` map (``L`` for 1-D); today's
``nhwc``   ``H x W x C``                  C channels-last features on the ``H x W`` grid
``tokens`` ``(P + H*W) x C``              C features on the ``H x W`` patch grid; the P prefix tokens
                                          are beside the map (written ``tokens:P+HxW``)
``flat``   ``F``                          F features, no positions
``other``  anything else                  not spatial, with the reason (Swin's window attention,
                                          whose first axis is samples x windows; attention maps)
========== ============================== ===========================================================

The layouts are decided **once**, from one recorded forward (the model map's probe), by
:func:`infer_layouts`, and every consumer asks the model map (:meth:`ModelMap.layout
<cnnvis_gui.core.ModelMap.layout>`, :meth:`Frame.layout <cnnvis_gui.core.Frame.layout>`); nobody
re-derives them from a shape.  :meth:`Layout.to_nchw` gives the ``N x C x H x W`` *view* of an
output (no copy; autograd flows through it), which is what every downstream method reads.

How a layout is found
---------------------
Which axis holds the features is read off the modules that make and read each tensor:

* a convolution, batch/instance/group norm, pooling or upsampling module makes and reads
  channels-first tensors;
* ``nn.Linear`` applied to a tensor of 3 or more axes, and a ``LayerNorm`` over the last axis, make
  and read channels-last tensors (timm's ``LayerNorm2d`` and ConvNeXt's ``data_format="channels_first"``
  LayerNorm are told apart by the axis they normalize) -- except a Linear whose input is channels first,
  itself or as a permuted view of a channels-first map (``x.transpose(2, 3)`` then a Linear over H):
  it mixes positions, and the channels stay on axis 1; a view that put the channels on a middle axis
  (``x.permute(0, 2, 1, 3)`` then a Linear over W) leaves them where no layout reads them: ``other``,
  with that reason, not rows read as units;
* a module whose output has its input's shape (an activation, dropout, identity, a residual block)
  keeps its input's layout, so the evidence spreads along the chain (a ViT's ``pos_drop`` is read
  channels-last because the block after it starts with a LayerNorm over the last axis);
* the model's input is channels-first (an image).

A channels-last output with 4 axes is ``nhwc``; with 3 axes it is tokens, and the patch grid is
the ``grid_size`` a patch-embedding module declares (timm), or the ``H x W`` of the model's other
spatial maps with ``P = T - H*W`` prefix tokens (at most :data:`MAX_PREFIX`; ViT-Ti: the patch
convolution's 14 x 14 and 197 tokens give ``tokens:1+14x14``), or the grid of the input's aspect
ratio with ``T - P`` cells.  An output whose first axis is not the batch (window attention's
``N*windows x 49 x C``) and a 4-axis tensor indexed by tokens (per-head queries ``N x heads x T x d``,
attention maps ``N x heads x T x T``) are ``other``.  Anything else keeps today's reading,
channels first.  Any layer can be overridden (:func:`parse_layout`): ``Visualizer(model,
layouts={"blocks.5": "tokens:1+14x14"})``, ``--layout NAME=SPEC`` on both command lines.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from .errors import CnnvisError

__all__ = ["Layout", "LAYOUT_KINDS", "MAX_PREFIX", "LAYOUT_RULES", "parse_layout", "fit_layout", "prefix_position",
           "infer_layouts", "quick_layout", "layout_help", "layout_key"]

LAYOUT_KINDS = ("nchw", "nhwc", "tokens", "flat", "other")
#: the most prefix tokens (class, distillation, registers) a token layout is detected with
MAX_PREFIX = 16
#: version of the detection rules, in the cache keys of results that depend on them (:func:`layout_key`)
LAYOUT_RULES = 1
_NOT_BATCH = "first axis"


def _dims(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


@dataclass(frozen=True)
class Layout:
    """How one module output holds its units: the kind, the per-sample shape it was decided for,
    the prefix-token count and patch grid (tokens), why it is not spatial (other), and how it was
    decided (``source``: the evidence in words, or "set by the user")."""

    kind: str
    shape: tuple                      # per-sample output shape, in the model's own axis order
    prefix: int = 0                   # tokens: prefix tokens before the patch tokens
    grid: tuple = ()                  # tokens: (H, W) of the patch grid
    reason: str | None = None         # other: why it is not a map of units
    source: str = ""

    # ------------------------------------------------------------------ what it says
    @property
    def name(self) -> str:
        """The layout as written on the command line: ``nchw``, ``nhwc``, ``tokens:1+14x14``, ``flat``, ``other``."""
        if self.kind == "tokens":
            return f"tokens:{self.prefix}+{self.grid[0]}x{self.grid[1]}"
        return self.kind

    @property
    def batch_first(self) -> bool:
        """False when the output's first axis is not the batch (window attention): no layout fits it."""
        return not (self.kind == "other" and self.source == _NOT_BATCH)

    @property
    def spatial(self) -> bool:
        """True when the units have positions (a map)."""
        return self.kind in ("nchw", "nhwc", "tokens")

    @property
    def units(self) -> int | None:
        """The number of units (channels / features), or None for ``other``."""
        if self.kind in ("nchw", "flat"):
            return int(self.shape[0])
        if self.kind in ("nhwc", "tokens"):
            return int(self.shape[-1])
        return None

    @property
    def map_shape(self) -> tuple | None:
        """The shape of one unit's map: ``(H, W)``, ``(L,)`` for a 1-D channels-first map, ``()`` for flat."""
        if self.kind == "nchw":
            return tuple(self.shape[1:])
        if self.kind == "nhwc":
            return tuple(self.shape[:-1])
        if self.kind == "tokens":
            return tuple(self.grid)
        if self.kind == "flat":
            return ()
        return None

    @property
    def unit_shape(self) -> tuple | None:
        """The per-sample shape of :meth:`to_nchw`'s view: ``(units,) + map_shape``."""
        return None if self.kind == "other" else (self.units,) + self.map_shape

    def describe(self) -> str:
        """One line for a person: what the units are and where the map is."""
        if self.kind == "other":
            return f"not spatial: {self.reason}"
        if self.kind == "flat":
            return f"{self.units} features"
        grid = "x".join(map(str, self.map_shape))
        if self.kind == "nchw":
            return f"{self.units} channels (channels first), {grid} map"
        if self.kind == "nhwc":
            return f"{self.units} channels (channels last), {grid} map"
        pre = f", {self.prefix} prefix token{'s' if self.prefix != 1 else ''} beside the map" if self.prefix else ""
        return f"{self.units} features on a {grid} patch grid{pre}"

    # ------------------------------------------------------------------ views
    def _check(self, t: torch.Tensor) -> None:
        if self.kind == "other":
            raise CnnvisError(f"this layer's output is not a map of units ({self.reason}); choose another layer "
                              f"or override its layout (--layout NAME=nchw|nhwc|tokens:P+HxW|flat).")
        if tuple(t.shape[1:]) != tuple(self.shape):
            raise CnnvisError(f"an output of shape {_dims(t.shape)} does not have the per-sample shape "
                              f"{_dims(self.shape)} its layout {self.name!r} was read for.")

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        """The ``N x C x H x W`` (``N x C x L``, ``N x F``) view of an output in this layout.

        A view, not a copy: for ``nchw`` and ``flat`` the tensor itself, for ``nhwc`` a permute,
        for tokens the patch tokens transposed and unflattened to the grid (prefix tokens left out).
        Gradients flow through it, so an objective written on the view is exact.
        """
        self._check(t)
        if self.kind in ("nchw", "flat"):
            return t
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        return t[:, self.prefix:].transpose(1, 2).unflatten(2, self.grid)

    def prefix_tokens(self, t: torch.Tensor) -> torch.Tensor | None:
        """The prefix tokens as ``N x C x P`` (feature k of class token 0 is ``[:, k, 0]``), or None."""
        if self.kind != "tokens" or not self.prefix:
            return None
        self._check(t)
        return t[:, :self.prefix].transpose(1, 2)

    def from_nchw(self, maps: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """The inverse of :meth:`to_nchw`: a new tensor in the model's own layout.

        ``prefix`` (``N x C x P``) fills the prefix tokens (zeros by default).
        """
        if self.kind in ("nchw", "flat"):
            return maps
        if self.kind == "nhwc":
            return maps.permute(0, 2, 3, 1).contiguous()
        if self.kind == "tokens":
            N, C = maps.shape[:2]
            patches = maps.flatten(2).transpose(1, 2)                      # N x HW x C
            if prefix is None:
                prefix = maps.new_zeros((N, C, self.prefix))
            return torch.cat([prefix.transpose(1, 2), patches], dim=1)
        raise CnnvisError(f"a layout 'other' has no map to convert from ({self.reason}).")


def layout_help() -> str:
    """What ``--layout`` accepts, in one line."""
    return ("nchw (channels first), nhwc (channels last), tokens:P+HxW (P prefix tokens, then an H x W grid of "
            "patch tokens, features last; tokens:HxW for P = 0) or flat")


# ============================================================================ overrides
_TOKENS = re.compile(r"tokens\s*:\s*(?:(\d+)\s*\+\s*)?(\d+)\s*[xX]\s*(\d+)")


def parse_layout(text) -> tuple:
    """``(kind, prefix, grid)`` of a layout written by a user; CnnvisError when it is not one."""
    if isinstance(text, Layout):
        return text.kind, text.prefix, text.grid
    s = str(text).strip().lower()
    if s in ("nchw", "nhwc", "flat"):
        return s, 0, ()
    m = _TOKENS.fullmatch(s)
    if m:
        prefix, h, w = int(m.group(1) or 0), int(m.group(2)), int(m.group(3))
        if h < 1 or w < 1:
            raise CnnvisError(f"layout {text!r}: the grid needs at least one row and one column.")
        return "tokens", prefix, (h, w)
    raise CnnvisError(f"unknown layout {text!r}; a layout is {layout_help()}.")


def fit_layout(text, shape, name: str = "", batch_ok: bool = True) -> Layout:
    """The layout ``text`` for an output of per-sample ``shape``; CnnvisError naming the shape when it does not fit."""
    kind, prefix, grid = parse_layout(text)
    shape = tuple(int(s) for s in shape)
    where = f"layer {name or 'output'!r}"
    full = f"N x {' x '.join(map(str, shape))}" if shape else "N"
    if not batch_ok:
        raise CnnvisError(f"layout {text!r} does not fit {where}: its output's first axis is not the batch "
                          f"(per-sample shape {_dims(shape)} read from a 1-sample forward), so it has no units "
                          f"of its own.")
    need = {"nchw": "N x C x H x W (or N x C x L)", "nhwc": "N x H x W x C", "flat": "N x F",
            "tokens": f"N x ({prefix} + {grid[0] * grid[1] if grid else 0}) x C"}[kind]
    ok = {"nchw": len(shape) >= 2, "nhwc": len(shape) == 3, "flat": len(shape) == 1,
          "tokens": len(shape) == 2 and shape[0] == prefix + (grid[0] * grid[1] if grid else 0)}[kind]
    if not ok:
        extra = ""
        if kind == "tokens" and len(shape) == 2:
            extra = f" ({prefix} + {grid[0]}*{grid[1]} = {prefix + grid[0] * grid[1]} tokens, the output has {shape[0]})"
        raise CnnvisError(f"layout {text!r} does not fit {where}: its output is {full}, the layout needs {need}"
                          f"{extra}.")
    return Layout(kind, shape, prefix, tuple(grid), None, "set by the user")


def layout_key(model: nn.Module, overrides: dict | None = None) -> dict:
    """What a cached result (an atlas scan, an optimized image) must add to its key for the layouts.

    Empty for a model with no module that makes channels-last or token maps (no LayerNorm, no
    attention, no patch grid, no ``data_format``) and no override: a CNN's cache keys stay what they
    were.  Otherwise the rules' version and the user's overrides, so that a result read before the
    layouts were understood (a ViT's tokens taken as units) is never reused.
    """
    modern = any(isinstance(m, (nn.LayerNorm, nn.MultiheadAttention)) or hasattr(m, "grid_size")
                 or hasattr(m, "data_format") for m in model.modules())
    if not modern and not overrides:
        return {}
    return {"layouts": {"rules": LAYOUT_RULES,
                        "overrides": {k: parse_layout(v)[0] + str(parse_layout(v)[1:]) for k, v in
                                      sorted((overrides or {}).items())}}}


def prefix_position(objective) -> int | None:
    """The prefix token an objective names (``("prefix", i)`` or ``"prefix:i"``), or None."""
    if isinstance(objective, str) and objective.startswith("prefix:"):
        objective = ("prefix", objective[len("prefix:"):])
    if isinstance(objective, (tuple, list)) and len(objective) == 2 and objective[0] == "prefix":
        try:
            return int(objective[1])
        except (TypeError, ValueError):
            raise CnnvisError(f"a prefix-token objective is ('prefix', i) with an integer i, got {objective!r}.") from None
    return None


# ============================================================================ evidence from modules
_FIRST_TYPES = (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm,
                nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
                nn.modules.pooling._LPPoolNd, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
                nn.LocalResponseNorm, nn.Dropout2d, nn.Dropout3d, nn.ChannelShuffle)


def _module_evidence(mod, out_shape, ndim) -> tuple:
    """(orientation, words) that ``mod`` itself gives its output: "first", "last" or None."""
    if ndim < 3:
        return None, ""
    t = type(mod).__name__
    if isinstance(mod, _FIRST_TYPES):
        return "first", f"{t} works channels first"
    if isinstance(mod, nn.Linear):
        return "last", f"{t} on a {ndim}-D tensor acts on the last axis"
    fmt = getattr(mod, "data_format", None)
    if fmt in ("channels_first", "channels_last"):
        return fmt[len("channels_"):], f"{t} data_format={fmt}"
    ns = getattr(mod, "normalized_shape", None)
    if isinstance(mod, (nn.LayerNorm, getattr(nn, "RMSNorm", nn.LayerNorm))) and ns is not None and len(ns) == 1:
        c = int(ns[0])
        last, first = out_shape[-1] == c, out_shape[0] == c
        if last and not first:
            return "last", f"{t} normalizes the last axis ({c})"
        if first and not last:
            return "first", f"{t} normalizes the channel axis ({c})"
        if first and last and t.lower().endswith(("2d", "channelsfirst")):
            return "first", f"{t} normalizes the channel axis ({c})"
    return None, ""


def _first_tensor(args, kwargs):
    for a in args or ():
        if isinstance(a, torch.Tensor):
            return a
    for a in (kwargs or {}).values():
        if isinstance(a, torch.Tensor):
            return a
    return None


def quick_layout(mod, out: torch.Tensor, batch: int) -> Layout | None:
    """The layout an output has whatever the rest of the model does, or None when it takes the model map.

    A 2-axis output is ``flat``; a convolution's (or batch norm's, pooling's...) is ``nchw``; an output
    whose first axis is not the batch is ``other``.  :func:`infer_layouts` gives the same answers.
    """
    shape = tuple(out.shape[1:])
    if out.ndim < 2:
        return None
    if out.shape[0] != batch:
        return _not_batch(shape, out.shape[0], batch)
    if out.ndim == 2:
        return Layout("flat", shape, source="N x F")
    orient, why = _module_evidence(mod, shape, out.ndim)
    if orient == "first":
        return Layout("nchw", shape, source=why)
    return None


def _not_batch(shape, first, batch) -> Layout:
    return Layout("other", shape, reason=f"the first axis ({first} for {batch} sample{'s' if batch != 1 else ''}) "
                                         f"is not the batch: samples x windows or heads (window attention)",
                  source=_NOT_BATCH)


# ============================================================================ inference
class _Evidence:
    """Orientation of every tensor: direct evidence, spread along shape-keeping modules (BFS)."""

    def __init__(self):
        self.direct: dict = {}          # id -> {"first": [why], "last": [why], "middle": [why]}
        self.links: dict = {}           # id -> set(ids) of tensors tied to it (same layout)

    def add(self, t, orient, why):
        self.direct.setdefault(id(t), {}).setdefault(orient, []).append(why)

    def tie(self, a, b):
        if a is b:
            return
        self.links.setdefault(id(a), set()).add(id(b))
        self.links.setdefault(id(b), set()).add(id(a))

    def solve(self) -> dict:
        """id -> (orientation, words): the nearest evidence wins (direct evidence by its majority)."""
        found: dict = {}
        frontier = []
        for tid, votes in self.direct.items():
            counts = sorted(((len(v), o) for o, v in votes.items()), reverse=True)
            if len(counts) > 1 and counts[0][0] == counts[1][0]:
                continue
            o = counts[0][1]
            found[tid] = (o, votes[o][0])
            frontier.append(tid)
        while frontier:
            nxt = []
            for tid in frontier:
                o, why = found[tid]
                for other in self.links.get(tid, ()):
                    if other not in found:
                        found[other] = (o, why if why.startswith("like ") else f"like its neighbours: {why}")
                        nxt.append(other)
            frontier = nxt
        return found


def _channel_axis(a: torch.Tensor, bases: dict) -> int | None:
    """The axis of ``a`` that holds the channels of the channels-first map it is a permuted view of, or None.

    A ``permute`` / ``transpose`` is no module, but its result shares the map's memory: the axis with the
    map's channel count and channel stride is where the channels went (``x.transpose(2, 3)`` before a
    Linear over H keeps them on axis 1: the Linear mixes positions, the units stay the channels).
    """
    try:
        ptr = a.data_ptr()
    except RuntimeError:        # a tensor without storage (a subclass, a functional wrapper)
        return None
    for b in bases.get(ptr, ()):
        if b.numel() != a.numel() or b.shape[1] < 2 or b.shape[0] != a.shape[0]:
            continue
        axes = [i for i in range(1, a.ndim) if a.shape[i] == b.shape[1] and a.stride(i) == b.stride(1)]
        if len(axes) == 1:
            return axes[0]
    return None


def _grid_candidates(records, structure_modules) -> list:
    """(H, W, C, declared) of every spatial map of the recording, and the grids modules declare."""
    cands = []
    for m in structure_modules:
        g = getattr(m, "grid_size", None)
        if isinstance(g, (tuple, list)) and len(g) == 2 and all(isinstance(v, int) and v > 0 for v in g):
            cands.append((int(g[0]), int(g[1]), None, True))
    return cands


def _token_grid(T, C, cands, input_hw):
    """(P, (H, W), words) of the patch grid of T tokens of C features, or None."""
    best = None
    for H, W, c, declared in cands:
        P = T - H * W
        if not 0 <= P <= MAX_PREFIX:
            continue
        score = (declared, c == C, H * W)
        if best is None or score > best[0]:
            why = ("the grid_size a patch-embedding module declares" if declared
                   else f"the {H}x{W} map{' of ' + str(c) + ' channels' if c else ''} elsewhere in the model")
            best = (score, P, (H, W), why)
    if best is not None:
        return best[1], best[2], best[3]
    ih, iw = input_hw
    for P in range(0, min(MAX_PREFIX, T - 1) + 1):
        n = T - P
        h = math.sqrt(n * ih / iw) if ih and iw else math.sqrt(n)
        for H in {math.floor(h), math.ceil(h)}:
            if H >= 1 and n % H == 0:
                W = n // H
                if H * iw == W * ih or (not ih and H == W):
                    return P, (H, W), f"{n} = {H}x{W} cells of the input's aspect ratio"
    return None


def infer_layouts(records, structure, model_input: torch.Tensor, overrides: dict | None = None) -> dict:
    """``{module name: [Layout per call]}`` of one recorded forward whose records still hold their inputs.

    ``records`` are the recorder's tuples ``(name, module, args, kwargs, output, ...)`` in the order
    the calls ended (before :class:`~cnnvis_gui.core.recorder.Recording` drops the inputs it does not
    need); ``model_input`` is the tensor the model was called with.  ``overrides`` (``{name: text}``,
    checked by :func:`~.modelmap.check_overrides`) replace the inferred layout of every call of those modules;
    one that does not fit its output raises :class:`CnnvisError` naming the shape.
    """
    overrides = overrides or {}
    batch = int(model_input.shape[0])
    ev = _Evidence()
    if model_input.ndim >= 3:
        ev.add(model_input, "first", "the model's input is an image, channels first")
    spatial = []
    linears = []
    for r in records:
        mod, args, kwargs, out = r[1], r[2], r[3], r[4]
        if not isinstance(out, torch.Tensor) or out.ndim < 3 or out.shape[0] != batch:
            continue
        shape = tuple(out.shape[1:])
        a = _first_tensor(args, kwargs)
        if isinstance(mod, nn.Linear):       # decided once the other modules have spoken (below)
            linears.append((mod, a, out))
        else:
            orient, why = _module_evidence(mod, shape, out.ndim)
            if orient is not None:
                ev.add(out, orient, why)
                if isinstance(a, torch.Tensor) and a.ndim == out.ndim and a.shape[0] == batch:
                    ev.add(a, orient, f"read by {type(mod).__name__}: {why}")
        if isinstance(a, torch.Tensor) and a.shape == out.shape:
            ev.tie(a, out)
    # A Linear acts on the last axis.  That axis holds the features unless the Linear's input is known to
    # be channels first: then it mixes positions (MLP-Mixer's token mixing, a Linear over a Conv1d's
    # sequence) and the channels stay on axis 1.
    first = ev.solve()
    bases = {}      # data pointer -> channels-first recorded outputs: what a permuted view was taken of
    for r in records:
        out = r[4]
        if isinstance(out, torch.Tensor) and out.ndim >= 3 and first.get(id(out), (None,))[0] == "first":
            bases.setdefault(out.data_ptr(), []).append(out)
    for mod, a, out in linears:
        t = type(mod).__name__
        same_rank = isinstance(a, torch.Tensor) and a.ndim == out.ndim
        axis = _channel_axis(a, bases) if same_rank else None
        if same_rank and (first.get(id(a), (None,))[0] == "first" or axis == 1):
            ev.add(out, "first", f"{t} over the positions of a channels-first input: the channels stay first")
        elif axis is not None and 1 < axis < out.ndim - 1:
            ev.add(out, "middle", f"{t} over the last axis of a permuted channels-first map whose channels are on "
                                  f"axis {axis}")
        else:
            ev.add(out, "last", f"{t} on a {out.ndim}-D tensor acts on the last axis")
    orient_of = ev.solve()
    for r in records:
        out = r[4]
        if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[0] == batch:
            o = orient_of.get(id(out), (None, ""))[0]
            if o == "last":
                spatial.append((int(out.shape[1]), int(out.shape[2]), int(out.shape[3]), False))
            elif o == "first":
                spatial.append((int(out.shape[2]), int(out.shape[3]), int(out.shape[1]), False))
    cands = _grid_candidates(records, structure.modules) + spatial
    input_hw = tuple(int(s) for s in model_input.shape[-2:]) if model_input.ndim >= 4 else (0, 0)

    layouts: dict = {}
    token_counts = set()
    pending = []
    for i, r in enumerate(records):
        name, out = r[0], r[4]
        if not isinstance(out, torch.Tensor) or out.ndim < 2:
            layouts.setdefault(name, []).append(None)
            continue
        shape = tuple(int(s) for s in out.shape[1:])
        lay = _decide(r[1], out, shape, batch, orient_of.get(id(out)), cands, input_hw)
        if lay is None:                       # channels first unless it is indexed by tokens (below)
            pending.append((name, len(layouts.setdefault(name, [])), shape))
            layouts[name].append(None)
            continue
        if lay.kind == "tokens":
            token_counts.add(shape[0])
        layouts.setdefault(name, []).append(lay)
    decided: dict = {}
    for calls in layouts.values():
        for lay in calls:
            if lay is not None and lay.spatial:
                decided.setdefault(lay.shape, set()).add((lay.kind, lay.prefix, lay.grid))
    for name, k, shape in pending:
        layouts[name][k] = _unexplained(shape, token_counts, decided, cands)
    for name, text in overrides.items():
        calls = layouts.get(name)
        if not calls:
            continue
        for k, r in enumerate([r for r in records if r[0] == name]):
            out = r[4]
            if not isinstance(out, torch.Tensor) or out.ndim < 2:
                raise CnnvisError(f"layout {text!r} does not fit layer {name or 'output'!r}: it does not return a "
                                  f"tensor with a batch axis.")
            calls[k] = fit_layout(text, tuple(out.shape[1:]), name, batch_ok=out.shape[0] == batch)
    return layouts


def _decide(mod, out, shape, batch, orient, cands, input_hw) -> Layout | None:
    quick = quick_layout(mod, out, batch)
    if quick is not None:
        return quick
    o, why = orient if orient else (None, "")
    if o == "first":
        return Layout("nchw", shape, source=why)
    if o == "middle":                       # no layout has its channels between the positions
        return Layout("other", shape, reason="its channels lie on a middle axis (a permute before a Linear): no "
                                             "layout reads them; choose the layer before the permute", source=why)
    if o != "last":
        return None
    if out.ndim == 4:
        return Layout("nhwc", shape, source=why)
    if out.ndim == 3:
        T, C = shape
        found = _token_grid(T, C, cands, input_hw)
        if found is None:
            return Layout("other", shape, reason=f"a sequence of {T} tokens x {C} features with no H x W grid of "
                                                 f"{T} - P cells (P <= {MAX_PREFIX} prefix tokens)",
                          source=why)
        P, grid, gwhy = found
        return Layout("tokens", shape, P, grid, None, f"{why}; grid: {gwhy}")
    return Layout("other", shape, reason=f"a {out.ndim}-axis tensor with its features last", source=why)


def _unexplained(shape, token_counts, decided, cands) -> Layout:
    """No module says where its features are (a module that drops, reshapes or passes on what a functional
    op made): the layout of the same shape elsewhere in the model; the tokens of a flattened patch map;
    not spatial when tokens index it; else channels first (today's reading)."""
    same = decided.get(tuple(shape), set())
    if len(same) == 1:
        kind, prefix, grid = next(iter(same))
        return Layout(kind, shape, prefix, grid, None, f"the same shape as other {kind} outputs of the model")
    if len(shape) == 2 and token_counts:
        T, C = shape
        for H, W, c, _ in cands:
            if c == C and 0 <= T - H * W <= MAX_PREFIX:
                return Layout("tokens", shape, T - H * W, (H, W), None,
                              f"the {H}x{W} map of {C} channels as tokens, in a model with token layers")
    if len(shape) == 3 and token_counts:
        a, b, c = shape
        if b == c and b in token_counts:
            return Layout("other", shape, reason=f"an attention map: {a} heads x {b} queries x {c} keys",
                          source="its last two axes are the token count")
        if b in token_counts:
            return Layout("other", shape, reason=f"per-head token features: {a} heads x {b} tokens x {c}",
                          source="its second axis is the token count")
    return Layout("nchw", shape, source="no module says otherwise: channels first")
