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

Rules past ReLU
---------------
Guided backprop and deconvnet are rules for rectifiers; every other library (and this
one before) falls back to the plain gradient at SiLU, GELU, Hardswish, ..., so on
EfficientNet, MobileNetV3 or ConvNeXt "guided" meant nothing.  The natural
generalization, applied by default at every pointwise activation ``f`` the forward
runs -- SiLU, GELU, LeakyReLU, PReLU, ELU, SELU, CELU, Mish, Hardswish, ReLU6/Hardtanh,
Softplus, module or functional, in place or not:

* ``deconvnet`` passes ``relu(g)`` (the forward is ignored, as at a ReLU);
* ``guided`` passes ``relu(g) * f'(x)`` where the forward input ``x > 0`` and 0 elsewhere --
  autograd's ``g * f'(x)`` with the negative gradients and the negative inputs masked.
  Every ``f`` above has ``f'(x) >= 0`` for ``x > 0``, so that is ``relu(g * f'(x)) * [x > 0]``;
* ``gradient`` stays plain autograd.

For ReLU (``f'(x) = [x > 0]``) this is exactly the rule above, computed exactly as before.
``activations="relu-only"`` (:class:`~cnnvis_gui.core.Visualizer`, :func:`~cnnvis_gui.core.saliency`)
restores the old behaviour: the rules at ReLUs only, the plain gradient elsewhere.  Gates
(Sigmoid, Hardsigmoid, Tanh, GLU) are not rectifiers and always keep the plain gradient.
The same walk counts every activation for the frame's notices.

Normalization and attention
---------------------------
Transformers and ConvNeXt add operations that are neither rectifiers nor gates of one input:
LayerNorm (every feature depends on every other of its token), softmax attention (every token on
every other) and RMS norms.  Deconvnet and guided backprop define no rule there, and none is
invented: the plain gradient passes through them, under every method, and the notices say how
many such calls the graph runs (:data:`MIXING_NODES`).
"""
from __future__ import annotations

from collections import Counter

import torch

from .errors import not_differentiable, stale_saved_tensor

__all__ = ["RuleBox", "GraphRules", "activation_label", "activation_notices", "ACTIVATIONS"]

ACTIVATIONS = ("all", "relu-only")   # where the deconvnet/guided rules apply


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


# operations that mix features or tokens and keep the plain gradient under every method (counted, named)
MIXING_NODES = {"NativeLayerNormBackward0": "LayerNorm", "FusedRmsNormBackward0": "RMSNorm",
                "_FusedRmsNormBackward0": "RMSNorm", "SoftmaxBackward0": "softmax"}


def mixing_label(node) -> str | None:
    """``"LayerNorm"``, ``"RMSNorm"``, ``"softmax"`` or ``"attention"`` (a fused scaled dot-product
    attention kernel, whose softmax is inside it) for such a node, else None."""
    name = type(node).__name__
    label = MIXING_NODES.get(name)
    if label is None and "ScaledDotProduct" in name:
        label = "attention"
    return label


# activations that get the generalized rule: node class name -> the saved tensor whose sign is
# the forward input's (the input itself, or the output of an in-place variant: same sign)
_RECTIFIER_INPUT = {
    "SiluBackward0": "_saved_self", "GeluBackward0": "_saved_self", "MishBackward0": "_saved_self",
    "LeakyReluBackward0": "_saved_self", "LeakyReluBackward1": "_saved_result",
    "PreluKernelBackward0": "_saved_self", "EluBackward0": "_saved_self", "EluBackward1": "_saved_result",
    "CeluBackward0": "_saved_self", "CeluBackward1": "_saved_result", "HardswishBackward0": "_saved_self",
    "HardtanhBackward0": "_saved_self", "HardtanhBackward1": "_saved_result", "SoftplusBackward0": "_saved_self",
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


_threshold_backward = torch.ops.aten.threshold_backward.default   # (g, x, 0) -> g * [x > 0]
_threshold_backward_out = torch.ops.aten.threshold_backward.grad_input   # the same, into grad_input=


def _relu_hook(box: RuleBox):
    """Node hook for a ReLU node: returns the replacement input gradient, or None (autograd's)."""

    def hook(grad_inputs, grad_outputs):
        rule = box.rule
        if rule == "gradient" or grad_inputs[0] is None:
            return None
        # ``threshold_backward`` just made grad_inputs[0] for this node alone: both rules write
        # into it, without another allocation (grad_outputs[0] may be shared with other nodes)
        if rule == "deconvnet":
            return (torch.clamp(grad_outputs[0], min=0, out=grad_inputs[0]),)
        return (grad_inputs[0].clamp_(min=0),)   # guided: relu(g * [y > 0])

    return hook


def _rectifier_hook(box: RuleBox, x: torch.Tensor):
    """Node hook for another activation: deconvnet ``relu(g)``, guided ``relu(g f'(x)) [x > 0]``.

    ``x`` is the forward input (or an output with its sign), detached so that the hook holds
    no reference back to its own node.
    """

    def hook(grad_inputs, grad_outputs):
        rule = box.rule
        if rule == "gradient" or grad_inputs[0] is None:
            return None
        # the activation's backward just made grad_inputs[0] for this node alone (every op in
        # _RECTIFIER_INPUT returns a new tensor): the rule is written into it, no allocation
        gi = grad_inputs[0]
        if rule == "deconvnet":
            torch.clamp(grad_outputs[0], min=0, out=gi)
        else:  # guided: g f'(x) where x > 0 (one fused op, as at a ReLU), then relu
            _threshold_backward_out(gi, x, 0, grad_input=gi).clamp_(min=0)
        return (gi,) + tuple(grad_inputs[1:])

    return hook


def _view_hook(box: RuleBox, y: torch.Tensor):
    """Hook for a ``CopySlices`` node: an in-place rectifier applied to a *view* of a tensor.

    Autograd runs the activation's backward inside that node, where no hook reaches, and
    writes it into the region of the base's gradient the view covers.  ``y`` is the view's
    saved output (same storage, so its sizes/strides/offset locate the region; its sign is
    the input's); the hook rewrites that region by the rule.  It applies only when the
    gradient's storage has exactly the base's extent (the region is then where ``y`` says);
    otherwise the plain gradient stays.
    """
    size, stride, offset = y.size(), y.stride(), y.storage_offset()
    nbytes = y.untyped_storage().nbytes()

    def hook(grad_inputs, grad_outputs):
        rule = box.rule
        res = grad_inputs[0]
        if rule == "gradient" or res is None or res.untyped_storage().nbytes() != nbytes:
            return None
        region = res.as_strided(size, stride, offset)
        if rule == "deconvnet":
            g = torch.empty_strided(res.size(), res.stride(), dtype=res.dtype, device=res.device)
            g.copy_(grad_outputs[0])
            region.copy_(g.as_strided(size, stride, offset).clamp(min=0))
        else:
            region.copy_(_threshold_backward(region, y, 0).clamp_(min=0))
        return (res,) + tuple(grad_inputs[1:])

    return hook


# in-place rectifiers whose node saves the view it wrote (same storage): the rule can reach them
# through their CopySlices node when they were applied to a view
_VIEW_RESULT = {"ReluBackward0", "ReluBackward1", "LeakyReluBackward1", "EluBackward1", "CeluBackward1",
                "HardtanhBackward1"}


_STALE = object()   # what GraphRules._saved returns for a saved tensor changed in place since


class GraphRules:
    """Hooks the rule onto every ReLU node reachable from the roots it is given; counts activations.

    Each node is visited once per graph however many requests walk it, so the hook count
    and the census stay exact.  Node objects are kept (they belong to the frame's graph,
    which the frame keeps anyway).
    """

    def __init__(self, box: RuleBox, activations: str):
        self.box = box
        self.generalize = activations == "all"
        self._seen: set = set()
        self._hook = _relu_hook(box)
        self.relu_nodes = 0
        self.relu_on_views = 0        # in-place ReLUs on a view the rule cannot reach (no saved view)
        self.generalized: Counter = Counter()   # activations that got the generalized rule
        self.others: Counter = Counter()        # activations that keep the plain gradient
        self.mixing: Counter = Counter()        # LayerNorm / softmax / attention: the plain gradient
        self.stale: str | None = None    # a saved tensor changed in place since: no backward runs through it

    def _saved(self, node, attr: str):
        """``node``'s saved tensor ``attr`` (None when it has none), or :data:`_STALE` after noting
        in ``stale`` that the model changed it in place after the forward saved it (the activation
        is counted as the rule would reach it; no backward runs through it anyway)."""
        try:
            return getattr(node, attr, None)
        except RuntimeError as e:
            what = stale_saved_tensor(e)
            if what is None:
                raise
            self.stale = self.stale or what
            return _STALE

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
                self._copy_slices(node)
            elif (mix := mixing_label(node)) is not None:
                self.mixing[mix] += 1
            elif name in _OTHER_NODES:
                label = activation_label(node)
                attr = _RECTIFIER_INPUT.get(name) if self.generalize else None
                x = self._saved(node, attr) if attr is not None else None
                if isinstance(x, torch.Tensor) or x is _STALE:
                    if x is not _STALE:
                        node.register_hook(_rectifier_hook(self.box, x.detach()))
                    self.generalized[label] += 1
                else:
                    self.others[label] += 1
            for nxt, _ in node.next_functions:
                if nxt is not None and nxt not in seen:
                    stack.append(nxt)

    def _copy_slices(self, node) -> None:
        wrapped = getattr(node, "_wrapped_node", None)
        label = activation_label(wrapped) if wrapped is not None else None
        if label is None:
            return
        y = self._saved(wrapped, "_saved_result") if type(wrapped).__name__ in _VIEW_RESULT else None
        reach = (isinstance(y, torch.Tensor) or y is _STALE) and (label == "ReLU" or self.generalize)
        if reach and y is not _STALE:
            node.register_hook(_view_hook(self.box, y.detach()))
        if label == "ReLU":
            if reach:
                self.relu_nodes += 1
            else:
                self.relu_on_views += 1
        elif reach:
            self.generalized[label] += 1
        else:
            self.others[label] += 1

    @property
    def relu_calls(self) -> int:
        return self.relu_nodes + self.relu_on_views


def activation_notices(rules: GraphRules) -> list[str]:
    """One line per fact the user should know about how the rules met the activations that
    ``rules`` walked (counts, the mode, and a saved tensor no backward can run through)."""
    others, relu_on_views, generalized, stale = rules.others, rules.relu_on_views, rules.generalized, rules.stale
    activations = "all" if rules.generalize else "relu-only"

    def listing(counts):
        total = sum(counts.values())
        return (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) +
                f" activation call{'s' if total != 1 else ''}", total)

    notes = []
    if stale:
        notes.append(not_differentiable(stale).args[0])
    if generalized:
        text, total = listing(generalized)
        notes.append(f"{text}: generalized rule (guided relu(g)·f'(x) where x > 0, deconvnet relu(g); "
                     f"activations='relu-only' for the plain gradient)")
    if others:
        text, total = listing(others)
        why = ("deconvnet/guided rules apply to ReLUs only" if activations == "relu-only"
               else "gates, not rectifiers: no deconvnet/guided rule")
        notes.append(f"{text} use{'s' if total == 1 else ''} the plain gradient ({why})")
    if rules.mixing:
        text, total = listing(rules.mixing)
        text = text.replace(" activation call", " call")
        notes.append(f"{text} mix{'es' if total == 1 else ''} features or tokens: the plain gradient passes "
                     f"through {'it' if total == 1 else 'them'} under every method (deconvnet and guided backprop "
                     f"have rules for rectifiers only; none is invented for normalization or attention)")
    if relu_on_views:
        notes.append(f"{relu_on_views} in-place ReLU call{'s' if relu_on_views != 1 else ''} on a view of "
                     f"another tensor keep{'s' if relu_on_views == 1 else ''} the plain gradient")
    if rules.relu_calls == 0 and not generalized:
        notes.append("the model runs no ReLU: deconvnet and guided backprop equal the plain gradient")
    return notes
