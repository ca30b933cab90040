"""Objectives: what the image is optimized for, one value per image of the batch, to be maximized.

An :class:`Objective` reads the activations of the layers it names (captured by
:class:`.capture.LayerCapture` in the same forward) and returns an N-vector; objectives
compose with ``+``, ``-`` and multiplication by a number, as in Lucid / lucent
(``channel("features.10", 5) - 0.5 * channel("features.10", 7)``).

* :func:`channel` -- the mean of one channel over all positions (Lucid's ``channel``);
* :func:`neuron` -- one channel at one position (the centre by default: the deep
  visualization toolbox's ``push_spatial``);
* :func:`class_logit` -- a class score of the model output; by default plus its
  log-probability, ``z_k + log softmax(z)_k`` (see its docstring);
* :func:`direction` -- a direction ``v`` in a layer's channel space, ``mean_p <a_p, v>``
  (Lucid's ``direction``; Olah et al. 2018, "The Building Blocks of Interpretability");
* :func:`diversity` -- Olah et al. 2017's penalty on the similarity of the images' Gram
  matrices at a layer, subtracted with a weight to get N *different* images of one unit;
* :func:`per_image` -- objective i for image i: several units in one batched optimization.

Where a layer is a ReLU (or ReLU6) module, the capture hands its *input* (the
pre-activation) to the objectives, as Lucid does with its ``_pre_relu`` layers: the same
maximizer as the ReLU's output, but a gradient that does not vanish while the unit is off
(and, for ReLU6, does not stop at 6).

Layouts: an objective reads a layer through its :class:`~cnnvis_gui.core.layouts.Layout` (decided
once in the model map: ``Visualizer.layout``; channels-last ConvNeXt / Swin maps and ViT tokens
become ``N x C x H x W`` views through ``Layout.to_nchw``); without one, the layer's output is read
channels first (a 2-D output is flat), which is what a CNN's layers are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import CnnvisError

__all__ = ["CLASS_PROBABILITY", "Objective", "channel", "neuron", "class_logit", "direction", "diversity",
           "gram_matrices", "per_image", "channels_first", "unit_map", "with_diversity"]

#: the weight of the log-probability term of :func:`class_logit` (measured: 1 left a 'tabby' image read as
#: another cat in 4 of 32 random transforms after 512 steps on MobileNetV2, 4 and 8 in none, the logit as high)
CLASS_PROBABILITY = 4.0


def _layer_words(layer: str) -> str:
    return repr(layer) if layer else "'output'"


def channels_first(a: torch.Tensor, layer: str = "", layout=None) -> torch.Tensor:
    """A layer's output as N x C (x map...): ``layout.to_nchw(a)``, or ``a`` itself without a layout."""
    if layout is not None:
        return layout.to_nchw(a)
    if a.ndim < 2:
        raise CnnvisError(f"layer {_layer_words(layer)} gives a tensor of shape {tuple(a.shape)}: no units per "
                          f"sample to optimize; choose another layer.")
    return a


def unit_map(a: torch.Tensor, layer: str = "", layout=None) -> torch.Tensor:
    """A layer's activations as N x units x positions (positions = 1 for a flat layer)."""
    m = channels_first(a, layer, layout)
    return m[:, :, None] if m.ndim == 2 else m.flatten(2)


class Objective:
    """An N-vector function of captured activations, to be maximized; composable.

    Parameters
    ----------
    fn : callable
        ``fn(acts, layouts) -> N-vector``: ``acts`` maps layer names ("" = model output) to the
        captured tensors, ``layouts`` maps layer names to their Layout (missing: channels first).
    layers : iterable of str
        The layers ``fn`` reads.
    text : str
        What it is, in words (shown in progress and results).
    separable : bool
        Whether image i's value depends on image i alone (False for :func:`diversity`).
    """

    def __init__(self, fn, layers=(), text: str = "objective", separable: bool = True):
        self.fn = fn
        self.layers = tuple(dict.fromkeys(layers))
        self.text = text
        self.separable = bool(separable)

    def __call__(self, acts: dict, layouts: dict | None = None) -> torch.Tensor:
        return self.fn(acts, layouts or {})

    # ------------------------------------------------------------------ algebra
    @staticmethod
    def _lift(other) -> "Objective":
        if isinstance(other, Objective):
            return other
        if isinstance(other, (int, float)):
            v = float(other)
            return Objective(lambda acts, lay: v, (), f"{v:g}")
        return NotImplemented

    def __add__(self, other):
        o = self._lift(other)
        if o is NotImplemented:
            return o
        return Objective(lambda acts, lay: self.fn(acts, lay) + o.fn(acts, lay), self.layers + o.layers,
                         f"{self.text} + {o.text}", self.separable and o.separable)

    def __radd__(self, other):
        if isinstance(other, (int, float)) and other == 0:      # sum([...]) starts at 0
            return self
        o = self._lift(other)
        return o if o is NotImplemented else o + self

    def __neg__(self):
        return Objective(lambda acts, lay: -self.fn(acts, lay), self.layers, f"-({self.text})", self.separable)

    def __sub__(self, other):
        o = self._lift(other)
        return o if o is NotImplemented else self + (-o)

    def __rsub__(self, other):
        o = self._lift(other)
        return o if o is NotImplemented else o + (-self)

    def __mul__(self, k):
        if not isinstance(k, (int, float)):
            return NotImplemented
        k = float(k)
        return Objective(lambda acts, lay: k * self.fn(acts, lay), self.layers, f"{k:g} * ({self.text})",
                         self.separable)

    __rmul__ = __mul__

    def __repr__(self):
        return f"Objective({self.text})"


def _units(acts, lay, layer, unit) -> torch.Tensor:
    """N x positions of ``unit`` at ``layer``, with the range checked."""
    m = unit_map(acts[layer], layer, lay.get(layer))
    n = m.shape[1]
    if not 0 <= unit < n:
        raise CnnvisError(f"unit {unit} is out of range for layer {_layer_words(layer)}: it has {n} "
                          f"unit{'s' * (n != 1)} (0..{n - 1}).")
    return m[:, unit]


def channel(layer: str, unit: int) -> Objective:
    """The mean of channel ``unit`` of ``layer`` over all positions (a flat layer: its value)."""
    unit = int(unit)
    return Objective(lambda acts, lay: _units(acts, lay, layer, unit).mean(dim=1), [layer],
                     f"{layer or 'output'} channel {unit}")


def neuron(layer: str, unit: int, position=None) -> Objective:
    """Channel ``unit`` of ``layer`` at one position (a tuple, one index per spatial axis; None: the centre)."""
    unit = int(unit)
    pos = None if position is None else tuple(int(p) for p in position)

    def fn(acts, lay):
        _units(acts, lay, layer, unit)                                  # the range check
        m = channels_first(acts[layer], layer, lay.get(layer))
        if m.ndim == 2:
            if pos not in (None, ()):
                raise CnnvisError(f"layer {_layer_words(layer)} is flat ({m.shape[1]} units): it has no "
                                  f"positions; use its channel instead.")
            return m[:, unit]
        grid = tuple(m.shape[2:])
        p = tuple(s // 2 for s in grid) if pos is None else pos
        if len(p) != len(grid) or any(not 0 <= i < s for i, s in zip(p, grid)):
            raise CnnvisError(f"position {p} is outside the {'x'.join(map(str, grid))} map of layer "
                              f"{_layer_words(layer)}.")
        return m[(slice(None), unit) + p]

    where = "centre" if pos is None else f"at {pos}"
    return Objective(fn, [layer], f"{layer or 'output'} unit {unit} {where}")


def class_logit(unit: int, probability_weight: float = CLASS_PROBABILITY, layer: str = "") -> Objective:
    """Class ``unit``'s score ``z_k`` of the model output, plus ``probability_weight * log softmax(z)_k``.

    Simonyan, Vedaldi & Zisserman 2014 maximize the unnormalized score, not the probability,
    because the probability also rises by pushing the other classes down.  The score alone,
    though, happily draws features that several related classes share (a 'tabby' image read
    as 'tiger cat').  The sum keeps the score's gradient and adds the probability's push away
    from the other classes (``probability_weight=0``: the score alone, as lucent).
    """
    unit, w = int(unit), float(probability_weight)

    def fn(acts, lay):
        z = acts[layer]
        s = _units(acts, lay, layer, unit)[:, 0] if z.ndim == 2 else _units(acts, lay, layer, unit).mean(dim=1)
        if w == 0 or z.ndim != 2 or z.shape[1] < 2:
            return s
        return s + w * F.log_softmax(z.float(), dim=1)[:, unit].to(s.dtype)

    extra = f" + {w:g} log p" if w else ""
    return Objective(fn, [layer], f"class {unit} logit{extra}")


def direction(layer: str, vector) -> Objective:
    """``mean_p <a_p, v>``: the activation vector at every position projected on ``vector`` (one entry per channel)."""
    v = torch.as_tensor(vector, dtype=torch.float32).flatten()

    def fn(acts, lay):
        m = unit_map(acts[layer], layer, lay.get(layer))                  # N x C x P
        if m.shape[1] != v.numel():
            raise CnnvisError(f"the direction has {v.numel()} entries but layer {_layer_words(layer)} has "
                              f"{m.shape[1]} channels.")
        return torch.einsum("ncp,c->n", m, v.to(m.device, m.dtype)) / m.shape[2]

    return Objective(fn, [layer], f"{layer or 'output'} direction ({v.numel()} channels)")


def gram_matrices(a: torch.Tensor, layer: str = "", layout: str | None = None) -> torch.Tensor:
    """N x C x C Gram matrices ``G = A A^T`` of each image's channels x positions map, each scaled to unit norm."""
    m = unit_map(a, layer, layout)
    g = m @ m.transpose(1, 2)
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-10)[:, None, None]


def diversity(layer: str) -> Objective:
    """Olah et al. 2017's diversity term: image i's ``(1/N) sum_{j != i} <G_i, G_j>`` (Gram matrices at ``layer``).

    Subtract it with a weight (``channel(...) - w * diversity(layer)``) to push N images of one
    unit apart; summed over the batch it is Lucid's ``diversity`` (lucent returns its negative).
    """
    def fn(acts, lay):
        g = gram_matrices(acts[layer], layer, lay.get(layer)).flatten(1)     # N x C^2
        n = g.shape[0]
        if n < 2:
            return torch.zeros(n, device=g.device, dtype=g.dtype)
        sim = g @ g.T                                                     # <G_i, G_j>
        return (sim.sum(dim=1) - sim.diagonal()) / n

    return Objective(fn, [layer], f"diversity at {layer or 'output'}", separable=False)


def per_image(objectives) -> Objective:
    """Image i of the batch gets ``objectives[i]`` (several units in one batched optimization)."""
    objs = list(objectives)
    if not objs:
        raise CnnvisError("per_image needs at least one objective.")

    def fn(acts, lay):
        vals = [o(acts, lay) for o in objs]
        n = max(v.shape[0] for v in vals if isinstance(v, torch.Tensor))
        if n != len(objs):
            raise CnnvisError(f"per_image has {len(objs)} objectives for a batch of {n} images.")
        return torch.stack([v[i] if isinstance(v, torch.Tensor) else torch.as_tensor(v) for i, v in enumerate(vals)])

    layers = [l for o in objs for l in o.layers]
    return Objective(fn, layers, "; ".join(o.text for o in objs), all(o.separable for o in objs))


def with_diversity(objective: Objective, layer: str, weight: float) -> Objective:
    """``objective - weight * |objective| * diversity(layer)``, ``|objective|`` the batch's mean magnitude (held
    constant for the gradient).

    Scaled by the objective's own size so that one ``weight`` means the same trade-off on any
    layer of any network (a unit's activation is ~1 on one layer and ~100 on another, while the
    Gram similarity is always in [0, 1]); measured in the README's optvis section.
    """
    w = float(weight)
    div = diversity(layer)

    def fn(acts, lay):
        v = objective(acts, lay)
        if not isinstance(v, torch.Tensor):
            return v
        return v - w * v.detach().abs().mean() * div(acts, lay)

    return Objective(fn, objective.layers + div.layers,
                     f"{objective.text} - {w:g} |objective| x diversity at {layer or 'output'}", separable=False)
