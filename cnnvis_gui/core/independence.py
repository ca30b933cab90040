"""Can a backprop picture depend on the input at all?  Decided from the autograd graph.

Deconvnet passes ``relu(g)`` back through every rectifier and ignores the forward there
(Zeiler & Fergus 2014).  What is left of the input in a deconvnet picture comes only from the
*other* nodes on the way back whose backward reads the forward: max-pool switches (which
position won), gates that multiply two input-dependent tensors (squeeze-and-excitation),
normalizations by the input's own statistics (LayerNorm, train-mode BatchNorm), a seed such
as "the unit's maximum".  A network without any of them -- MobileNetV2: convolutions,
eval-mode BatchNorm, ReLU6, additions, a mean, a linear layer -- makes the backward a fixed
function of the weights, and the deconvnet picture is **the same for every input** (Nie, Zhang
& Patel 2018, "A Theoretical Explanation for Perplexing Behaviors of Backpropagation-based
Visualizations": without max-pool switches deconvnet recovers nothing of the image).

The check, for one rule (``gradient``, ``deconvnet``, ``guided``) and one starting node:

1. ``D`` = the nodes whose value depends on the input: those from which the input leaf's
   ``AccumulateGrad`` is reachable along ``next_functions`` (the gradient flows only there);
2. the backward is input-independent iff every node of ``D`` passes to its ``D`` inputs a
   gradient that is a fixed function of the incoming one:

   * linear maps with fixed coefficients: additions, views, concatenation, slicing, sums and
     means, average pooling, padding, upsampling, dtype casts;
   * bilinear ops with **one** input-dependent operand (a convolution or linear layer with
     fixed weights, a product with a constant, a division *by* a constant);
   * BatchNorm in eval mode (``g * weight / sqrt(running_var + eps)``);
   * a rectifier under ``deconvnet`` (``relu(g)``; the generalized rule at SiLU, GELU,
     Hardswish, ReLU6, ... when the frame applies it), never under ``gradient`` / ``guided``
     (their backward reads the forward's sign).

   Anything else -- max-pool, ``max``, sigmoid and other gates, LayerNorm, an indexing whose
   indices may come from the input, an unknown node -- counts as reading the input, so the
   check never claims independence it cannot prove.

The objective's own node is part of the walk: ``sum`` and a fixed position are linear, the
``max`` objective is a switch (``amax``) and ``activation`` (``1/2 sum a^2``) a product of the
activation with itself.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from .rules import activation_label

__all__ = ["Verdict", "backward_verdict", "input_node", "independence_notice", "network_notice"]

def _has_saved_result(node) -> bool:
    """Whether ``node`` still holds its saved forward result.  Reading a result that a later in-place
    op overwrote raises autograd's "modified by an inplace operation"; such a node's backward cannot
    run at all, so it is not counted as a rule that ignores the input."""
    try:
        return getattr(node, "_saved_result", None) is not None
    except RuntimeError:
        return False


# linear maps with input-independent coefficients (whatever their inputs)
_LINEAR = frozenset({
    "AddBackward0", "AddBackward1", "SubBackward0", "SubBackward1", "RsubBackward0", "RsubBackward1",
    "NegBackward0", "ViewBackward0", "ReshapeAliasBackward0", "UnsafeViewBackward0", "AliasBackward0",
    "ExpandBackward0", "PermuteBackward0", "TransposeBackward0", "TransposeBackward1", "TBackward0",
    "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2", "SqueezeBackward3", "UnsqueezeBackward0",
    "CloneBackward0", "CatBackward0", "StackBackward0", "SliceBackward0", "SelectBackward0", "SplitBackward0",
    "SplitWithSizesBackward0", "UnbindBackward0", "NarrowBackward0", "SumBackward0", "SumBackward1",
    "MeanBackward0", "MeanBackward1", "AvgPool1DBackward0", "AvgPool2DBackward0", "AvgPool3DBackward0",
    "AdaptiveAvgPool1DBackward0", "AdaptiveAvgPool2DBackward0", "AdaptiveAvgPool3DBackward0",
    "UpsampleNearest1DBackward0", "UpsampleNearest2DBackward0", "UpsampleNearest3DBackward0",
    "UpsampleNearestExact2DBackward0", "UpsampleBilinear2DBackward0", "UpsampleBicubic2DBackward0",
    "UpsampleLinear1DBackward0", "UpsampleTrilinear3DBackward0", "ConstantPadNdBackward0",
    "ReflectionPad1DBackward0", "ReflectionPad2DBackward0", "ReplicationPad1DBackward0",
    "ReplicationPad2DBackward0", "ReplicationPad3DBackward0", "FlipBackward0", "RollBackward0",
    "RepeatBackward0", "PixelShuffleBackward0", "PixelUnshuffleBackward0", "ToCopyBackward0",
    "Im2ColBackward0", "Col2ImBackward0", "AsStridedBackward0", "ExpandAsBackward0",
})
# products: fixed while at most one operand depends on the input (the other is a weight or constant)
_BILINEAR = frozenset({"MulBackward0", "MulBackward1", "ConvolutionBackward0", "AddmmBackward0", "MmBackward0",
                       "BmmBackward0", "MvBackward0", "AddmvBackward0", "AddbmmBackward0", "BaddbmmBackward0",
                       "DotBackward0"})
_DIVISION = frozenset({"DivBackward0", "DivBackward1"})     # fixed while only the numerator depends on it
_BATCHNORM = frozenset({"NativeBatchNormBackward0", "CudnnBatchNormBackward0", "MiopenBatchNormBackward0"})
_RELU = frozenset({"ReluBackward0", "ReluBackward1"})
# the other rectifiers that get deconvnet's relu(g) when the rules are generalized (rules._RECTIFIER_INPUT)
_RECTIFIERS = frozenset({"SiluBackward0", "GeluBackward0", "MishBackward0", "LeakyReluBackward0",
                         "LeakyReluBackward1", "PreluKernelBackward0", "EluBackward0", "EluBackward1",
                         "CeluBackward0", "CeluBackward1", "HardswishBackward0", "HardtanhBackward0",
                         "HardtanhBackward1", "SoftplusBackward0"})
# switches: which input position won decides where the gradient goes
SWITCHES = frozenset({"MaxPool1DWithIndicesBackward0", "MaxPool2DWithIndicesBackward0",
                      "MaxPool3DWithIndicesBackward0", "AdaptiveMaxPool1DBackward0", "AdaptiveMaxPool2DBackward0",
                      "AdaptiveMaxPool3DBackward0", "MaxBackward0", "MaxBackward1", "AmaxBackward0",
                      "MaximumBackward0", "MedianBackward0", "MedianBackward1", "SortBackward0", "TopkBackward0",
                      "FractionalMaxPool2DBackward0", "MaxUnpool2DBackward0", "KthvalueBackward0"})


def _label(node) -> str:
    return activation_label(node) or type(node).__name__


def input_node(x: torch.Tensor):
    """The ``AccumulateGrad`` node of the leaf ``x`` (where a backward to ``x`` ends), or None."""
    if x is None or not x.requires_grad or x.grad_fn is not None:
        return None
    return x.view_as(x).grad_fn.next_functions[0][0]


@dataclass
class Verdict:
    """What the walk found.

    ``independent``: the backward is a fixed function of the seed gradient and the weights.
    ``rectifiers``: the activations passed with ``relu(g)`` (label -> calls), ``switches``: the
    max-pool-like nodes met (name -> count), ``readers``: every other node that reads the
    forward (name -> count).
    """

    independent: bool
    rectifiers: Counter = field(default_factory=Counter)
    switches: Counter = field(default_factory=Counter)
    readers: Counter = field(default_factory=Counter)
    reaches_input: bool = True


def _has_saved_result(node) -> bool:
    """The node kept the view it wrote (the rules reach it); False also when the model changed that
    tensor in place after the forward saved it (no backward runs through it: nothing to claim)."""
    try:
        return getattr(node, "_saved_result", None) is not None
    except RuntimeError:
        return False


def _depends_on_input(roots, source) -> set:
    """The nodes reachable from ``roots`` from which ``source`` is reachable (iterative post-order)."""
    dep: set = set()
    state: dict = {}
    for root in roots:
        if root is None or root in state:
            continue
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                if node is source or any(n in dep for n, _ in node.next_functions if n is not None):
                    dep.add(node)
                continue
            if node in state:
                continue
            state[node] = True
            stack.append((node, True))
            for n, _ in node.next_functions:
                if n is not None and n not in state:
                    stack.append((n, False))
    return dep


def backward_verdict(roots, source, rule: str, generalize: bool = True) -> Verdict:
    """Whether the ``rule``'s backward from ``roots`` to ``source`` is independent of the input.

    Parameters
    ----------
    roots : iterable of autograd nodes
        Where the backward starts (the objective's ``grad_fn``, a layer output's node).
    source : autograd node
        The input leaf's ``AccumulateGrad`` node.
    rule : {"gradient", "deconvnet", "guided"}
    generalize : bool
        Whether the frame applies deconvnet's ``relu(g)`` at the rectifiers other than ReLU too
        (``activations="all"``).
    """
    roots = [r for r in roots if r is not None]
    dep = _depends_on_input(roots, source)
    v = Verdict(independent=True, reaches_input=source in dep)
    for node in dep:
        if node is source:
            continue
        name = type(node).__name__
        n_dep = sum(1 for n, _ in node.next_functions if n is not None and n in dep)
        if name in _LINEAR:
            continue
        if name in _BILINEAR:
            if n_dep <= 1:
                continue
        elif name in _DIVISION:
            nf = node.next_functions
            if len(nf) < 2 or nf[1][0] is None or nf[1][0] not in dep:
                continue
        elif name in _BATCHNORM:
            if getattr(node, "_saved_training", True) is False and n_dep <= 1:
                continue
        elif name in _RELU or (name in _RECTIFIERS and generalize):
            if rule == "deconvnet":
                v.rectifiers[_label(node)] += 1
                continue
        elif name == "CopySlices":
            wrapped = getattr(node, "_wrapped_node", None)
            wname = type(wrapped).__name__ if wrapped is not None else ""
            if rule == "deconvnet" and (wname in _RELU or (generalize and wname in _RECTIFIERS)) and \
                    _has_saved_result(wrapped):
                v.rectifiers[_label(wrapped)] += 1
                continue
        if name in SWITCHES:
            v.switches[name] += 1
        else:
            v.readers[_label(node)] += 1
        v.independent = False
    if not v.reaches_input:
        v.independent = False      # nothing flows back: no picture at all, not a fixed one
    return v


_WHY_OTHERS = "use guided backprop or the gradient for what this input contributes"


def _rectifier_text(v: Verdict) -> str:
    total = sum(v.rectifiers.values())
    if not total:
        return "no activation on that path"
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(v.rectifiers.items()))
    return f"its rule relu(g) ignores the forward at all {kinds} activation call{'s' if total != 1 else ''}"


def network_notice(v: Verdict) -> str | None:
    """The frame notice when deconvnet from the model's output is input-independent, else None."""
    if not v.independent:
        return None
    return (f"deconvnet is input-independent on this network: it has no max-pool switches and {_rectifier_text(v)}, "
            f"so every input gives the same deconvnet picture of a unit, made of the weights alone "
            f"(Nie et al. 2018); {_WHY_OTHERS}")


def independence_notice(method: str, layer: str, v: Verdict) -> str | None:
    """The notice for one request (``method`` at ``layer``) whose backward is input-independent, else None."""
    if not v.independent:
        return None
    where = repr(layer or "output")
    if method == "deconvnet" and v.rectifiers:
        return (f"deconvnet of {where} is input-independent: no max-pool switch lies between it and the input "
                f"and {_rectifier_text(v)}, so every input gives this same picture (Nie et al. 2018); "
                f"{_WHY_OTHERS}")
    return (f"{method} of {where} is input-independent: the path from the input to it is linear (no activation "
            f"reads the input), so the picture is the unit's own weights, the same for every input; "
            f"choose a layer past an activation to see what this input contributes")
