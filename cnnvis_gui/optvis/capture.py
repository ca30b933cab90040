"""Capture the layers an objective reads, in the forward that computes them.

:class:`LayerCapture` is a :class:`~cnnvis_gui.core.hooks.HookSet` (every handle removed when
the ``with`` block ends, also after an error) with one hook per named layer:

* a ReLU / ReLU6 module gives its **input**, the pre-activation (the objectives' docstring
  says why), through a forward pre-hook that hands the module a clone, so an in-place
  ReLU cannot overwrite what was captured;
* any other module gives its output (cloned for the rest of the model, for the same reason);
  a module that returns no tensor is refused with one line;
* the model output (layer "") is the return value of the forward itself.

Only forwards of the thread that created the capture are recorded.  After a forward,
:meth:`LayerCapture.missing` names the layers that did not run.
"""
from __future__ import annotations

import threading

import torch
from torch import nn

from ..core import CnnvisError
from ..core.hooks import HookSet
from ..core.modelmap import resolve_layer_name

__all__ = ["PRE_ACTIVATION_MODULES", "resolve_layer", "LayerCapture"]

#: modules whose input (not output) the objectives read
PRE_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6)


def resolve_layer(model: nn.Module, name) -> str:
    """The canonical module name of ``name`` ("" for the model output; "output" is accepted)."""
    modules = dict(model.named_modules())
    return resolve_layer_name(str(name) if name is not None else "", modules, list(modules))


class LayerCapture(HookSet):
    """Forward hooks keeping the tensors of ``layers`` (module names) of the latest forward in :attr:`values`."""

    def __init__(self, model: nn.Module, layers, pre_activation: bool = True):
        super().__init__()
        self.model = model
        self.layers = [resolve_layer(model, l) for l in layers]
        self.pre_activation = bool(pre_activation)
        self.values: dict = {}

    def register(self):
        modules = dict(self.model.named_modules())
        for name in dict.fromkeys(self.layers):
            if name == "":
                continue
            m = modules[name]
            if self.pre_activation and isinstance(m, PRE_ACTIVATION_MODULES):
                self.handles.append(m.register_forward_pre_hook(self._pre(name)))
            else:
                self.handles.append(m.register_forward_hook(self._post(name)))

    def _pre(self, name):
        def hook(module, args):
            if threading.get_ident() != self.thread or not args or not isinstance(args[0], torch.Tensor):
                return None
            self.values[name] = args[0]
            return (args[0].clone(),) + tuple(args[1:])
        return hook

    def _post(self, name):
        def hook(module, args, output):
            if threading.get_ident() != self.thread:
                return None
            if not isinstance(output, torch.Tensor):
                raise CnnvisError(f"layer {name!r} ({type(module).__name__}) does not output a tensor "
                                  f"({type(output).__name__}); choose another layer.")
            self.values[name] = output
            return output.clone()
        return hook

    def forward(self, x: torch.Tensor):
        """Run the model on ``x``; :attr:`values` then holds every captured layer ("" = the output)."""
        self.values = {}
        out = self.model(x)
        if "" in self.layers:
            if not isinstance(out, torch.Tensor):
                raise CnnvisError(f"the model returns {type(out).__name__}, not a tensor: its output has no "
                                  f"units to optimize; choose a layer inside the model.")
            self.values[""] = out
        missing = self.missing()
        if missing:
            raise CnnvisError(f"layer {missing[0]!r} did not run in the forward pass (the model skips it for this "
                              f"input); choose a layer that runs (cnnvis info lists them).")
        return out

    def missing(self) -> list:
        return [l for l in dict.fromkeys(self.layers) if l not in self.values]
