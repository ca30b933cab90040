"""What a recorded forward's graph runs: its activations (for the notices) and whether deconvnet reads the input.

One walk of the autograd graph from the model's output and every recorded module output hooks the
rules (:class:`~cnnvis_gui.core.rules.GraphRules`) and counts the activations; a second, from the
output alone, asks :mod:`.independence` whether deconvnet's picture can depend on the input at all.
"""
from __future__ import annotations

import torch

from .independence import backward_verdict, input_node, network_notice
from .recorder import Recording
from .rules import GraphRules, activation_notices

__all__ = ["Census"]


def _tensors(out) -> list:
    """The tensors in a model output (a tensor, or tuples/lists/dicts of them)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


class Census:
    """Which activations the recorded graph runs, counted by walking it once (for the notices)."""

    def __init__(self, recording: Recording, output, rules: GraphRules, x_leaf=None):
        outputs = [t.grad_fn for t in _tensors(output)]
        roots = outputs + [r[6] for r in recording.records]
        rules.visit(roots)
        module_relus = sum(1 for r in recording.records
                           if id(r[1]) in recording.structure.relu_modules and r[6] is not None)
        self.relu_calls = rules.relu_calls
        # (unknown when only some modules were recorded: the nn.ReLU calls were not counted)
        self.functional_relu_calls = (max(0, rules.relu_calls - module_relus) if recording.layers is None
                                      else None)
        self.other_activations = dict(rules.others)
        self.generalized_activations = dict(rules.generalized)
        self.mixing_operations = dict(rules.mixing)
        self.notices = activation_notices(rules)
        source = input_node(x_leaf)
        # deconvnet from the output never reads the input (no max-pool switches): say so (core.independence)
        self.deconvnet_notice = (network_notice(backward_verdict(outputs, source, "deconvnet", rules.generalize))
                                 if source is not None else None)
        self.notices += [self.deconvnet_notice] if self.deconvnet_notice else []
