"""Backprop rules applied on the recorded autograd graph, after the forward.

The three methods differ only in what every ReLU passes back (captum's
``guided_backprop_deconvnet.py`` makes the same observation):

* ``gradient``  -- plain autograd: ``g * [y > 0]``.
* ``deconvnet`` -- Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional
  Networks": ``relu(g)``, ignoring the forward mask.
* ``guided``    -- Springenberg et al. 2015, "Striving for Simplicity: The All
  Convolutional Net": ``relu(g) * [y > 0]``.

How every ReLU is reached
-------------------------
Every ReLU the forward runs -- ``nn.ReLU`` (in place or not, reused any number of
times), ``F.relu``, ``F.relu_``, ``torch.relu``, ``torch.relu_``, ``Tensor.relu``,
``Tensor.relu_`` -- leaves the same node in the autograd graph, ``ReluBackward0``.  So
nothing needs to intercept the forward: :class:`GraphRules` walks the graph once from
the tensors a request starts at (``grad_fn`` and ``next_functions``) and registers a
node hook on every ReLU node.  The hook reads the rule from a :class:`RuleBox` at
*backward* time, so one recorded forward answers any number of requests with one
backward each.  The hooks live on the graph's nodes and die with the graph; nothing on
the model is touched.

The same walk counts the other activations (``SiLU``, ``GELU``, ...) for the frame's
notices: they keep the plain gradient.
"""
from __future__ import annotations

from collections import Counter

import torch

__all__ = ["RuleBox", "GraphRules", "activation_label"]


class RuleBox:
    """Holds the rule the next backward uses.  Deliberately references nothing else."""

    __slots__ = ("rule",)

    def __init__(self, rule: str = "gradient"):
        self.rule = rule


# autograd node class name -> activation label; ReLU nodes get the rule, the others are counted.
_RELU_NODES = frozenset({"ReluBackward0", "ReluBackward1"})
_OTHER_NODES = {
    "LeakyReluBackward0": "LeakyReLU", "LeakyReluBackward1": "LeakyReLU",
    "EluBackward0": "ELU", "EluBackward1": "ELU", "CeluBackward0": "CELU", "CeluBackward1": "CELU",
    "GeluBackward0": "GELU", "SiluBackward0": "SiLU", "MishBackward0": "Mish",
    "SoftplusBackward0": "Softplus", "HardswishBackward0": "Hardswish",
    "HardsigmoidBackward0": "Hardsigmoid", "HardtanhBackward0": "Hardtanh",
    "HardtanhBackward1": "Hardtanh", "PreluKernelBackward0": "PReLU",
    "RreluWithNoiseBackward0": "RReLU", "RreluWithNoiseBackward1": "RReLU",
    "GluBackward0": "GLU", "LogSigmoidBackward0": "LogSigmoid", "ThresholdBackward0": "Threshold",
    "ThresholdBackward1": "Threshold", "SigmoidBackward0": "Sigmoid", "TanhBackward0": "Tanh",
}


def activation_label(node) -> str | None:
    """The activation an autograd node belongs to (``"ReLU"``, ``"SiLU"``, ...), or None."""
    name = type(node).__name__
    if name in _RELU_NODES:
        return "ReLU"
    label = _OTHER_NODES.get(name)
    if label == "Hardtanh":
        lo, hi = getattr(node, "_saved_min_val", None), getattr(node, "_saved_max_val", None)
        if lo == 0 and hi == 6:
            return "ReLU6"
    elif label == "ELU" and getattr(node, "_saved_scale", 1) != 1:
        return "SELU"
    return label


def _relu_hook(box: RuleBox):
    """Node hook for a ReLU node: returns the replacement input gradient, or None (autograd's)."""

    def hook(grad_inputs, grad_outputs):
        rule = box.rule
        if rule == "gradient" or grad_inputs[0] is None:
            return None
        if rule == "deconvnet":
            return (grad_outputs[0].clamp(min=0),)
        return (grad_inputs[0].clamp(min=0),)  # guided: relu(g * [y > 0])

    return hook


class GraphRules:
    """Hooks the rule onto every ReLU node reachable from the roots it is given; counts activations.

    Each node is visited once per graph however many requests walk it, so the hook count
    and the census stay exact.  Node objects are kept (they belong to the frame's graph,
    which the frame keeps anyway).
    """

    def __init__(self, box: RuleBox):
        self.box = box
        self._seen: set = set()
        self._hook = _relu_hook(box)
        self.relu_nodes = 0
        self.relu_on_views = 0        # in-place ReLUs on a view: wrapped in CopySlices, rule unreachable
        self.others: Counter = Counter()

    def visit(self, roots) -> None:
        """Walk the graph from ``roots`` (autograd nodes, None allowed) and hook new ReLU nodes."""
        seen = self._seen
        stack = [r for r in roots if r is not None and r not in seen]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            name = type(node).__name__
            if name in _RELU_NODES:
                node.register_hook(self._hook)
                self.relu_nodes += 1
            elif name == "CopySlices":
                wrapped = getattr(node, "_wrapped_node", None)
                label = activation_label(wrapped) if wrapped is not None else None
                if label == "ReLU":
                    self.relu_on_views += 1
                elif label is not None:
                    self.others[label] += 1
            elif name in _OTHER_NODES:
                self.others[activation_label(node)] += 1
            for nxt, _ in node.next_functions:
                if nxt is not None and nxt not in seen:
                    stack.append(nxt)

    @property
    def relu_calls(self) -> int:
        return self.relu_nodes + self.relu_on_views


def activation_notices(relu_calls: int, others, relu_on_views: int = 0) -> list[str]:
    """One line per fact the user should know about how the rules met this model's activations."""
    notes = []
    if others:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(others.items()))
        total = sum(others.values())
        notes.append(f"{parts} activation call{'s' if total != 1 else ''} use{'s' if total == 1 else ''} "
                     f"the plain gradient (deconvnet/guided rules apply to ReLUs only)")
    if relu_on_views:
        notes.append(f"{relu_on_views} in-place ReLU call{'s' if relu_on_views != 1 else ''} on a view of "
                     f"another tensor keep{'s' if relu_on_views == 1 else ''} the plain gradient")
    if relu_calls == 0:
        notes.append("the model runs no ReLU: deconvnet and guided backprop equal the plain gradient")
    return notes
