"""Activations and backprop rules: one forward per frame, one backward per request.

The three methods differ only in what every ReLU passes back (captum's
``guided_backprop_deconvnet.py`` makes the same observation):

* ``gradient``  -- plain autograd: ``g * [y > 0]``.
* ``deconvnet`` -- Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional
  Networks": ``relu(g)``, ignoring the forward mask.
* ``guided``    -- Springenberg et al. 2015, "Striving for Simplicity: The All
  Convolutional Net": ``relu(g) * [y > 0]``.

How it runs
-----------
:meth:`Visualizer.forward` runs the model once with one global forward hook that keeps
a reference to every module call's output (:mod:`.recorder`): no copies, no per-op
interception, parameters frozen for the call, so the forward costs what a bare forward
to the input costs.  The rules are applied *after* the forward, on the autograd graph
itself (:mod:`.rules`): every ReLU -- ``nn.ReLU`` in place or not, ``F.relu``,
``torch.relu``, ``Tensor.relu_``, reused or not -- leaves a ``ReluBackward0`` node, and a
node hook there reads the rule at *backward* time.  So one recorded forward answers any
number of (layer, unit, method, objective) requests with one backward each.

A recorded output that a later in-place op overwrote (``out += identity``, an in-place
ReLU) is recomputed from its module's inputs when asked for, and gradients *at* that
layer use the autograd edge it had when its module returned, so both stay exact.
"""
from __future__ import annotations

import numbers
import threading
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from . import attribution as _attribution
from . import cams as _cams
from . import legrad as _legrad
from . import rollout as _rollout
from .errors import CnnvisError, backward_errors
from .layouts import Layout, fit_layout, infer_layouts, layout_key, prefix_position, quick_layout
from .modelmap import (CamCandidate, LayerInfo, ModelMap, build_map, check_overrides,  # noqa: F401 - re-exported
                       choose_cam_layer, resolve_layer_name)
from .recorder import Recording, Structure, _Recorder, model_device_dtype, run_recorded
from .census import Census as _Census
from .independence import backward_verdict, independence_notice, input_node
from .rules import ACTIVATIONS, GraphRules, RuleBox
from .spec import InputSpec

METHODS = ("gradient", "deconvnet", "guided")
SALIENCY_METHODS = METHODS + _attribution.ATTRIBUTION_METHODS   # everything Frame.saliency answers
CAM_METHODS = _cams.CAM_METHODS
LAYER_CAMS = _cams.LAYER_CAMS              # the CAMs that weigh one CAM layer's maps
ATTENTION_CAMS = _cams.ATTENTION_CAMS      # rollout and LeGrad: a ViT's attention layers, no CAM layer
OBJECTIVES = ("sum", "activation", "max")

__all__ = [
    "METHODS", "SALIENCY_METHODS", "CAM_METHODS", "LAYER_CAMS", "ATTENTION_CAMS", "OBJECTIVES", "Visualizer",
    "Frame", "ModelMap",
    "LayerInfo", "Layout", "ModelForwardError", "saliency", "grad_cam", "cam", "model_map", "prefix_position",
]

_model_device_dtype = model_device_dtype


class ModelForwardError(CnnvisError):
    """The model's own forward pass raised; the message names the module and shapes."""


def _shape_str(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape)


def _run(structure: Structure, x_in, recorder: _Recorder):
    """A recorded forward whose failure says which module failed on what input."""
    try:
        return run_recorded(structure, x_in, recorder)
    except CnnvisError:
        raise
    except Exception as e:  # the user's model raised: name the layer and shapes
        raise ModelForwardError(_forward_failure_message(recorder, structure, x_in, e)) from e


def _forward_failure_message(recorder: _Recorder, structure: Structure, x_in, e: Exception) -> str:
    where = recorder.failed
    msg = "the model's forward pass failed"
    if where is not None and where[0] != "":
        shapes = ", ".join(_shape_str(a) for a in where[1] if isinstance(a, torch.Tensor)) or "no tensor"
        msg += f" in module '{where[0]}' ({structure.types.get(where[0], '?')}) on input {shapes}"
    msg += f": {type(e).__name__}: {e}. The model was given an input of shape {_shape_str(x_in)}"
    msg += ("; if that shape is not what the model was trained on, fix the input spec (channels, height, "
            "width); if it is, the model's own code failed on this input.")
    return msg


# --------------------------------------------------------------------------- model map

def _is_unit_index(v) -> bool:
    """An integer unit index: ``int``, a numpy integer (``np.int64`` from an argmax), or a 0-d
    tensor / integer array; never a bool."""
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, numbers.Integral):
        return True
    if isinstance(v, torch.Tensor):
        return v.ndim == 0
    return isinstance(v, np.ndarray) and v.ndim == 0 and np.issubdtype(v.dtype, np.integer)

def _objective_value(lay: Layout, value: torch.Tensor, unit: int, objective, pos, prefix) -> torch.Tensor:
    """The scalar objective of ``unit`` on an output in layout ``lay`` (the sum over the batch)."""
    if prefix is not None:
        return lay.prefix_tokens(value)[:, unit, prefix].sum()
    sel = lay.to_nchw(value)[:, unit]
    if pos is not None:
        return sel[(slice(None),) + pos].sum()
    if objective == "sum":
        return sel.sum()
    if objective == "activation":
        return 0.5 * (sel * sel).sum()
    return sel.reshape(sel.shape[0], -1).amax(dim=1).sum()    # max


# --------------------------------------------------------------------------- the public API
class Visualizer:
    """Records a model's forward passes and answers saliency requests on them.

    Parameters
    ----------
    model : nn.Module
        Any PyTorch model; it is put in eval mode and its parameters are frozen only during
        each recorded forward, and it is left exactly as it was (hooks, training flags,
        ``requires_grad``, ``.grad``).  Its modules are listed once, at the first forward
        (``model_map(refresh=True)`` lists them again after the model was changed).
    spec : InputSpec, optional
        The input the model expects; needed for :meth:`model_map` and used to check inputs.
    activations : {"all", "relu-only"}
        Where ``deconvnet`` and ``guided`` apply their rule: at ReLUs and, generalized, at
        every other rectifying activation (SiLU, GELU, LeakyReLU, PReLU, ELU, SELU, CELU,
        Mish, Hardswish, ReLU6/Hardtanh, Softplus) -- the default -- or at ReLUs only, the
        plain gradient elsewhere (what every other library does).  See :mod:`.rules`.
    layouts : dict, optional
        ``{layer name: layout}`` overriding the detected layout of those layers' outputs
        (``"nchw"``, ``"nhwc"``, ``"tokens:P+HxW"``, ``"flat"``; see :mod:`.layouts`).  Names and
        syntax are checked here; a layout that does not fit the layer's output raises
        :class:`CnnvisError` naming the shape when the layouts are first read.
    """

    def __init__(self, model: nn.Module, spec: InputSpec | None = None, activations: str = "all",
                 layouts: dict | None = None):
        if not isinstance(model, nn.Module):
            raise CnnvisError(f"Visualizer needs a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, torch.jit.ScriptModule):
            raise CnnvisError("TorchScript models cannot be visualized: hooks and the backprop rules "
                              "cannot reach inside a scripted graph. Load the eager model instead.")
        if activations not in ACTIVATIONS:
            raise CnnvisError(f"activations must be one of {', '.join(map(repr, ACTIVATIONS))}, got {activations!r}")
        self.model = model
        self.spec = spec
        self.activations = activations
        self.layout_overrides = check_overrides(layouts, [n for n, _ in model.named_modules()])
        # a network with no module that makes channels-last or token maps: a frame reads an output the
        # module alone does not decide channels first, with no probe forward (what it always did)
        self.may_hold_modern_maps = bool(layout_key(model, self.layout_overrides))
        self._map: ModelMap | None = None
        self._structure: Structure | None = None
        self._layouts: dict = {}            # per-sample input shape -> {name: [Layout per call]}
        self._layouts_lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return _model_device_dtype(self.model)[0]

    def _struct(self) -> Structure:
        if self._structure is None:
            self._structure = Structure(self.model)
        return self._structure

    def model_map(self, refresh: bool = False) -> ModelMap:
        """List every module with its output shape and call count from one probe forward."""
        if self._map is None or refresh:
            if self.spec is None:
                raise CnnvisError("model_map needs an InputSpec (channels, height, width) for the probe forward.")
            if refresh:
                self._structure = None
            device, dtype = _model_device_dtype(self.model)
            x = torch.zeros((1,) + self.spec.shape, device=device, dtype=dtype, requires_grad=True)
            structure = self._struct()
            rec = _Recorder(structure)
            x_in = x.clone()
            out = _run(structure, x_in, rec)
            layouts = infer_layouts(rec.records, structure, x_in, self.layout_overrides)
            with self._layouts_lock:
                if refresh:
                    self._layouts.clear()
                self._layouts[tuple(self.spec.shape)] = layouts
            recording = Recording(structure, rec.records)
            census = _Census(recording, out, GraphRules(RuleBox(), self.activations), x)
            self._map = build_map(structure, recording.calls, census, layouts)
        return self._map

    def layouts_for(self, shape) -> dict:
        """``{module name: [Layout per call]}`` for inputs of per-sample ``shape`` (C, H, W), read once.

        From the model map's probe for the spec's shape, from the first forward that recorded every
        module, or else from one probe forward (batch 1, zeros, no graph) for that shape.
        """
        key = tuple(int(s) for s in shape)
        with self._layouts_lock:
            hit = self._layouts.get(key)
        if hit is not None:
            return hit
        structure = self._struct()
        device, dtype = _model_device_dtype(self.model)
        x_in = torch.zeros((1,) + key, device=device, dtype=dtype)
        rec = _Recorder(structure)
        try:
            run_recorded(structure, x_in, rec, grad=False)
        except Exception as e:  # the model's own forward: the same message a frame's forward gives
            raise ModelForwardError(_forward_failure_message(rec, structure, x_in, e)) from e
        layouts = infer_layouts(rec.records, structure, x_in, self.layout_overrides)
        with self._layouts_lock:
            return self._layouts.setdefault(key, layouts)

    def layout(self, layer: str, shape=None) -> Layout | None:
        """The layout of ``layer``'s last call for inputs of per-sample ``shape`` (default: the spec's).

        :meth:`layouts_for` without the model map's activation census: what a scan or an optimizer
        needs before it runs.  None when the layer returns no tensor.
        """
        if shape is None:
            if self.spec is None:
                raise CnnvisError("Visualizer.layout needs an input shape or an InputSpec.")
            shape = self.spec.shape
        structure = self._struct()
        name = resolve_layer_name(layer, structure.types, structure.order)
        calls = self.layouts_for(shape).get(name) or []
        if not calls:
            raise CnnvisError(f"layer {name or 'output'!r} did not run in the forward pass; nothing to show.")
        return calls[-1]

    def _prepare(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise CnnvisError(f"the input must be a torch.Tensor (N x C x H x W), got {type(x).__name__}; "
                              f"convert frames with InputSpec.to_tensor.")
        if not x.is_floating_point():
            raise CnnvisError(f"the input must be a float tensor, got dtype {x.dtype}")
        if self.spec is not None:
            self.spec.check_tensor(x)
        elif x.ndim < 2:
            raise CnnvisError(f"the input needs a batch axis: got shape {tuple(x.shape)}, expected N x C x H x W")
        device, dtype = _model_device_dtype(self.model)
        return x.detach().to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, layers: Sequence[str] | None = None) -> "Frame":
        """Run the model once on ``x`` (N x C x H x W) and keep every layer's activations.

        ``layers`` (module names) records only those modules' outputs: every other module
        call keeps ``nn.Module``'s hook-free fast path, so on a network of many small
        modules the forward costs a bare forward's time (a request for a layer not
        recorded raises :class:`CnnvisError`).  The default records every module.
        """
        x = self._prepare(x)
        structure = self._struct()
        if layers is not None:
            if isinstance(layers, str):
                layers = [layers]
            layers = frozenset(resolve_layer_name(n, structure.types, structure.order) for n in layers)
        rec = _Recorder(structure, layers=layers)
        x_leaf = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        x_in = x_leaf.clone()  # the model may modify its input in place
        out = _run(structure, x_in, rec)
        ms = (time.perf_counter() - t0) * 1000.0

        def reforward(copy):
            again = _Recorder(structure, copy, layers)
            _run(structure, x_leaf.clone(), again)
            return again.records

        if layers is None:
            key = tuple(x.shape[1:])
            if key not in self._layouts:       # read once, from this forward's own records
                layouts = infer_layouts(rec.records, structure, x_in, self.layout_overrides)
                with self._layouts_lock:
                    self._layouts.setdefault(key, layouts)
        recording = Recording(structure, rec.records, reforward, layers)
        recording.activations = self.activations
        frame = Frame(x_leaf, out, recording, ms)
        frame.visualizer = self  # integrated gradients, SmoothGrad and Score-CAM run batched forwards
        return frame


class Frame:
    """One recorded forward pass.  Any number of backward requests; one forward.

    Obtained from :meth:`Visualizer.forward`.  Holds the autograd graph until
    :meth:`close` (or until the frame is garbage collected).
    """

    def __init__(self, x_leaf, output, recording: Recording, forward_ms: float):
        self._x = x_leaf
        self._out = output
        self._recording = recording
        self._types = recording.structure.types
        self._conv = recording.structure.conv
        self._box = RuleBox()
        self._rules = GraphRules(self._box, recording.activations)
        self._census: _Census | None = None
        self._map: ModelMap | None = None
        self._lock = threading.Lock()
        self._call_layouts: dict = {}       # record index -> Layout
        self.forward_ms = forward_ms
        self.last_backward_ms = 0.0
        self.visualizer: Visualizer | None = None  # set by Visualizer.forward

    # ------------------------------------------------------------------ inspection
    @property
    def _calls(self):
        return None if self._recording is None else self._recording.calls

    def _counts(self) -> "_Census":
        if self._census is None:
            if self._recording is None:
                raise CnnvisError("this frame was closed; run Visualizer.forward again.")
            with self._lock:
                self._census = _Census(self._recording, self._out, self._rules, self._x)
        return self._census

    @property
    def recorded_layers(self) -> frozenset | None:
        """The module names this frame recorded (``Visualizer.forward(x, layers=...)``), or None for every module."""
        if self._recording is None:
            raise CnnvisError("this frame was closed; run Visualizer.forward again.")
        return self._recording.layers

    @property
    def relu_calls(self) -> int:
        """ReLU calls in the recorded graph (modules and functional calls alike)."""
        return self._counts().relu_calls

    @property
    def functional_relu_calls(self) -> int | None:
        """ReLU calls not made by an ``nn.ReLU`` module (None when only some layers were recorded)."""
        return self._counts().functional_relu_calls

    @property
    def other_activations(self) -> dict:
        """Activations in the recorded graph that keep the plain gradient, by name, with their call counts."""
        return self._counts().other_activations

    @property
    def mixing_operations(self) -> dict:
        """LayerNorm / RMSNorm / softmax / fused attention calls in the recorded graph: the plain gradient
        passes through them under every method (no rule is invented there)."""
        return self._counts().mixing_operations

    @property
    def generalized_activations(self) -> dict:
        """The other activations that got the generalized deconvnet/guided rule, with their call counts."""
        return self._counts().generalized_activations

    @property
    def notices(self) -> list[str]:
        """What the user should know about how the rules met this model's activations."""
        return self._counts().notices

    @property
    def deconvnet_notice(self) -> str | None:
        """The notice (also in :attr:`notices`) when deconvnet from the model's output is input-independent."""
        return self._counts().deconvnet_notice

    @property
    def input(self) -> torch.Tensor:
        return self._x.detach()

    @property
    def output(self):
        o = self._out
        return o.detach() if isinstance(o, torch.Tensor) else o

    @property
    def model_map(self) -> ModelMap:
        if self._map is None:
            layouts = {}
            vis = self.visualizer
            if vis is not None:
                full = vis.layouts_for(self._x.shape[1:])
                layouts = {n: full.get(n) for n in self._calls}
            self._map = build_map(self._recording.structure, self._calls, self._counts(), layouts)
        return self._map

    def _call(self, layer, call=-1):
        if self._calls is None:
            raise CnnvisError("this frame was closed; run Visualizer.forward again.")
        candidates = [n for n, cs in self._calls.items() if cs and cs[-1].reason is None]
        recorded = self._recording.layers
        if recorded is not None and isinstance(layer, str) and layer not in self._calls:
            name = resolve_layer_name(layer, self._types, list(self._types))
            if name not in recorded:
                raise CnnvisError(f"layer {name or 'output'!r} was not recorded in this frame: it recorded only "
                                  f"{', '.join(repr(n or 'output') for n in sorted(recorded))}; pass every layer "
                                  f"you will ask for in Visualizer.forward(x, layers=[...]).")
        name = resolve_layer_name(layer, self._calls, candidates)
        calls = self._calls[name]
        if not calls:
            raise CnnvisError(f"layer {name or 'output'!r} did not run in the forward pass; nothing to show.")
        try:
            c = calls[call]
        except (IndexError, TypeError):
            raise CnnvisError(f"layer {name!r} ran {len(calls)} time(s) per forward; "
                              f"call must be in 0..{len(calls) - 1} (or -1 for the last).") from None
        if c.reason is not None:
            raise CnnvisError(f"layer {name!r} ({self._types[name]}) is not visualizable: {c.reason}.")
        return name, c

    def activations(self, layer: str, call: int = -1) -> torch.Tensor:
        """The layer's output for this frame in the model's own layout (N x C x H x W, N x H x W x C,
        N x T x C, N x F...), detached.  :meth:`unit_maps` gives it as N x C x H x W."""
        return self._call(layer, call)[1].value.detach()

    # ------------------------------------------------------------------ layouts
    def _layout_of(self, name: str, c) -> Layout:
        """The layout of call ``c`` of ``name`` (:mod:`.layouts`): the model map's answer for this input shape."""
        lay = self._call_layouts.get(c.index)
        if lay is not None:
            return lay
        rec = self._recording.records[c.index]
        out = rec[4]
        vis = self.visualizer
        overrides = vis.layout_overrides if vis is not None else {}
        batch = int(self._x.shape[0])
        if name in overrides:
            lay = fit_layout(overrides[name], tuple(out.shape[1:]), name, batch_ok=out.shape[0] == batch)
        else:
            lay = quick_layout(rec[1], out, batch)
        if lay is None and vis is not None and not vis.may_hold_modern_maps:
            known = vis._layouts.get(tuple(self._x.shape[1:]))       # the model map's, when it was read
            if known is None:
                lay = Layout("nchw", tuple(out.shape[1:]), source="no module of this network makes channels-last "
                                                                  "or token maps: channels first")
        if lay is None:
            if vis is None:
                raise CnnvisError("this frame was not recorded by a Visualizer: its layouts are unknown.")
            per_call = vis.layouts_for(self._x.shape[1:]).get(name) or []
            k = next(i for i, cc in enumerate(self._calls[name]) if cc.index == c.index)
            lay = per_call[k] if k < len(per_call) else None
            if lay is None or tuple(lay.shape) != tuple(out.shape[1:]):
                raise CnnvisError(f"layer {name or 'output'!r} returned {_shape_str(out)} in this forward, not the "
                                  f"shape its layout was read from; the model's output shapes depend on more than "
                                  f"the input's shape.")
        self._call_layouts[c.index] = lay
        return lay

    def layout(self, layer: str, call: int = -1) -> Layout:
        """Where the layer's units and their map are (``nchw``, ``nhwc``, ``tokens:P+HxW``, ``flat``, ``other``).

        Read once per model and input shape from the model map (:mod:`.layouts`); overridden with
        ``Visualizer(model, layouts={...})``.
        """
        name, c = self._call(layer, call)
        return self._layout_of(name, c)

    def unit_maps(self, layer: str, call: int = -1) -> torch.Tensor:
        """The layer's output as N x C x H x W (N x C x L, N x F): units first, their map after, detached.

        A view of :meth:`activations` through the layer's :meth:`layout` (channels-last maps permuted,
        token layers' patch tokens on their grid, prefix tokens left out: :meth:`prefix_tokens`).
        """
        name, c = self._call(layer, call)
        return self._layout_of(name, c).to_nchw(c.value.detach())

    def prefix_tokens(self, layer: str, call: int = -1) -> torch.Tensor | None:
        """A token layer's prefix tokens (class, distillation, registers) as N x C x P, or None."""
        name, c = self._call(layer, call)
        return self._layout_of(name, c).prefix_tokens(c.value.detach())

    def first_nonfinite_layer(self) -> str | None:
        """The layer whose output first held NaN or +-inf in this forward, or None when all are finite.

        "First" is in the order the module calls ended, so the innermost module where a NaN is
        born is named, not the block around it; ``""`` is the model's output.
        """
        if self._calls is None:
            raise CnnvisError("this frame was closed; run Visualizer.forward again.")
        best = None
        with torch.no_grad():
            for name, calls in self._calls.items():
                for c in calls:
                    v = c.value
                    if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
                        if best is None or c.index < best[0]:
                            best = (c.index, name)
                        break
        return None if best is None else best[1]

    def top_units(self, layer: str, k: int = 9, by: str = "max", call: int = -1) -> list[int]:
        """Units of ``layer`` with the highest activation (max or mean over positions) in sample 0."""
        a = self.unit_maps(layer, call)[0].float()
        a = a.reshape(a.shape[0], -1)
        score = a.amax(dim=1) if by == "max" else a.mean(dim=1)
        k = max(0, min(int(k), score.numel()))
        return [int(i) for i in torch.topk(score, k).indices]

    def default_cam_layer(self, layer: str, call: int = -1) -> str | None:
        """The last convolutional layer (4-D output) that finishes before ``layer`` does.

        A frame that recorded only some layers chooses among those (``ModelMap.default_cam_layer``
        answers from every module: record the layer it names).
        """
        name, c = self._call(layer, call)
        best, best_done = None, -1
        for n, calls in self._calls.items():
            if not self._conv.get(n):
                continue
            for cc in calls:
                if cc.reason is None and len(cc.shape) == 4 and best_done < cc.done <= c.done:
                    best, best_done = n, cc.done
        if not self._may_hold_modern_maps(c.done, best_done):
            return best
        entries = []
        for n, calls in self._calls.items():
            for cc in calls:
                if cc.reason is not None:
                    continue
                lay = self._layout_of(n, cc)
                conv = bool(self._conv.get(n)) and len(cc.shape) == 4
                entries.append(CamCandidate(n, lay, conv, self._types[n], cc.start, cc.done))
        return choose_cam_layer(entries, c.done)

    def _may_hold_modern_maps(self, done: int, after: int) -> bool:
        """Could a channels-last or token map end in (after, done]?  False without asking the layouts when
        every recorded output there is a 2-axis one or a convolution's (a CNN's CAM layer stays the conv)."""
        for n, calls in self._calls.items():
            for cc in calls:
                if cc.reason is None and after < cc.done <= done and len(cc.shape) >= 3 and not self._conv.get(n):
                    return True
        return False

    def cam_call(self, cam_layer: str, layer: str, call: int = -1) -> int:
        """The call of ``cam_layer`` a CAM of ``layer``'s ``call`` reads: the last one that finishes
        no later than that call (a shared module runs before and after the unit); -1, the last,
        when every call finishes after it."""
        done = self._call(layer, call)[1].done
        name = self._call(cam_layer)[0]
        best = -1
        for i, cc in enumerate(self._calls[name]):
            if cc.reason is None and cc.done <= done:
                best = i
        return best

    # ------------------------------------------------------------------ backward
    def _objective(self, name, c, unit, objective):
        """(root, seed) for ``autograd.grad``: the objective as a scalar tensor, or -- for an
        output a later in-place op overwrote -- its gradient edge and the objective's gradient
        there.  (None, None) when the objective does not depend on the input.

        The unit is a channel (feature) of the layer's :meth:`layout`; its map is read through
        :meth:`Layout.to_nchw` (a view), so for a channels-last or token layer the objective sums
        the feature over its H x W positions (prefix tokens excluded) and a position is on the grid.
        """
        lay = self._layout_of(name, c)
        if lay.kind == "other":
            raise CnnvisError(f"layer {name or 'output'!r} ({self._types[name]}) has no units to choose: its output "
                              f"is not spatial ({lay.reason}); choose another layer, or give its layout "
                              f"(layouts={{{name!r}: ...}}, --layout {name or 'output'}=...).")
        units = lay.units
        if not _is_unit_index(unit):
            raise CnnvisError(f"unit must be an integer, got {unit!r}")
        unit = int(unit)
        if not 0 <= unit < units:
            raise CnnvisError(f"unit {unit} is out of range for layer {name or 'output'!r}: "
                              f"it has {units} units (0..{units - 1}).")
        pos = prefix = None
        if isinstance(objective, str) and not objective.startswith("prefix:"):
            if objective not in OBJECTIVES:
                raise CnnvisError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)} "
                                  f"or a (y, x) position.")
        elif (prefix := prefix_position(objective)) is not None:
            if not 0 <= prefix < lay.prefix:
                has = (f"its prefix tokens are 0..{lay.prefix - 1}" if lay.prefix
                       else f"it has no prefix tokens (layout {lay.name})")
                raise CnnvisError(f"prefix token {prefix} is not in layer {name or 'output'!r}: {has}.")
        else:
            try:
                pos = tuple(int(p) for p in objective)
            except (TypeError, ValueError):
                raise CnnvisError(f"objective must be one of {', '.join(OBJECTIVES)} or a (y, x) position, "
                                  f"got {objective!r}.") from None
            per_unit = lay.map_shape
            if len(per_unit) != len(pos):
                raise CnnvisError(f"layer {name!r} has per-unit shape {tuple(per_unit)}; a position needs "
                                  f"{len(per_unit)} coordinate(s), got {pos}.")
            for p, n, axis in zip(pos, per_unit, "yx" if len(pos) == 2 else "dyx"[-len(pos):]):
                if not 0 <= p < n:
                    raise CnnvisError(f"position {pos} is outside layer {name!r}'s {tuple(per_unit)} map "
                                      f"({axis} must be in 0..{n - 1}).")
        if c.overwritten:
            return self._objective_at_edge(c, lay, unit, objective, pos, prefix)
        obj = _objective_value(lay, c.value, unit, objective, pos, prefix)
        return (obj, None) if obj.requires_grad else (None, None)

    @staticmethod
    def _objective_at_edge(c, lay, unit, objective, pos, prefix):
        """The objective's gradient w.r.t. the output, written out (what autograd would seed)."""
        edge = c.edge
        if edge is None:
            return None, None
        a = c.value
        if lay.kind not in ("nchw", "flat"):   # through the layout's view: autograd seeds it
            leaf = a.detach().requires_grad_(True)
            with torch.enable_grad():
                (seed,) = torch.autograd.grad(_objective_value(lay, leaf, unit, objective, pos, prefix), leaf)
            return edge, seed
        seed = torch.zeros_like(a)
        sel = seed[:, unit]
        if pos is not None:
            sel[(slice(None),) + pos] = 1
        elif objective == "sum":
            sel.fill_(1)
        elif objective == "activation":
            sel.copy_(a[:, unit])
        else:  # max: amax's gradient, split evenly among ties
            flat = a[:, unit].reshape(a.shape[0], -1)
            mask = flat == flat.amax(dim=1, keepdim=True)
            sel.copy_((mask / mask.sum(dim=1, keepdim=True)).reshape(sel.shape))
        return edge, seed

    def _grad(self, layer, unit, method, objective, call, wrt):
        if method not in METHODS:
            raise CnnvisError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
        name, c = self._call(layer, call)
        with self._lock:
            t0 = time.perf_counter()
            root, seed = self._objective(name, c, unit, objective)
            if root is None:
                self.last_backward_ms = 0.0
                return [None] * len(wrt)
            if method != "gradient":
                self._rules.visit([root.grad_fn if isinstance(root, torch.Tensor) else root.node])
            self._box.rule = method
            try:
                with backward_errors():
                    grads = torch.autograd.grad(root, wrt, grad_outputs=seed, retain_graph=True,
                                                allow_unused=True)
            finally:
                self._box.rule = "gradient"
            self.last_backward_ms = (time.perf_counter() - t0) * 1000.0
        return list(grads)

    def saliency(self, layer: str, unit: int, method: str = "guided", objective="sum",
                 call: int = -1, *, smoothgrad: int = 0, noise: float = _attribution.DEFAULT_NOISE,
                 steps: int = _attribution.DEFAULT_STEPS, baseline=None, seed: int | None = None) -> torch.Tensor:
        """Gradient of the unit's objective w.r.t. the input under ``method``'s ReLU rule.

        Returns a tensor shaped like the input (N x C x H x W).  For N > 1 each sample's
        gradient is that of its own objective.  ``"input-x-gradient"``,
        ``"integrated-gradients"`` and ``smoothgrad=N`` are in :mod:`cnnvis_gui.core.attribution`
        (integrated gradients and SmoothGrad run their extra forwards batched).
        """
        if method not in METHODS or (smoothgrad and noise):
            return _attribution.attribute(self, layer, unit, method, objective, call, smoothgrad=smoothgrad,
                                          noise=noise, steps=steps, baseline=baseline, seed=seed)
        (g,) = self._grad(layer, unit, method, objective, call, [self._x])
        return torch.zeros_like(self._x) if g is None else g.detach()

    def input_independent(self, layer: str, unit: int, method: str = "deconvnet", objective="sum",
                          call: int = -1) -> str | None:
        """A notice when ``method``'s picture of the unit is the same for every input, else None.

        Decided from this frame's graph (:mod:`.independence`): deconvnet on a network without
        max-pool switches (MobileNetV2), or any rule on a purely linear path from the input.
        """
        if method not in METHODS:
            return None       # input x gradient, integrated gradients and the CAMs read the input itself
        name, c = self._call(layer, call)
        with self._lock:
            root, seed = self._objective(name, c, unit, objective)
        if root is None or (seed is not None and objective in ("activation", "max")):
            return None       # nothing flows back, or the seed written at an edge reads the forward
        node = root.grad_fn if isinstance(root, torch.Tensor) else root.node
        verdict = backward_verdict([node], input_node(self._x), method, self._rules.generalize)
        return independence_notice(method, name, verdict)

    def gradient_at(self, at_layer: str, layer: str, unit: int, method: str = "gradient",
                    objective="sum", call: int = -1, at_call: int = -1) -> torch.Tensor:
        """Gradient of the unit's objective w.r.t. ``at_layer``'s output (zeros if it does not depend on it)."""
        at_name, at = self._call(at_layer, at_call)
        edge = at.edge
        if edge is None:
            return at.zeros()
        (g,) = self._grad(layer, unit, method, objective, call, [edge])
        return at.zeros() if g is None else g.detach()

    def grad_cam(self, layer: str, unit: int, cam_layer: str | None = None, objective="sum",
                 call: int = -1) -> torch.Tensor:
        """Grad-CAM (Selvaraju et al. 2017) of the unit at ``cam_layer``, N x H x W in [0, 1].

        weights = spatial mean of the *plain* gradient w.r.t. the cam layer's activations;
        map = relu(sum_k weights_k * A_k), upsampled bilinearly to the input size and
        divided by its maximum (an all-zero map stays zero).  Same as ``cam(method="gradcam")``.
        """
        return _cams.frame_cam(self, layer, unit, cam_layer, "gradcam", objective, call)

    def cam(self, layer: str, unit: int, cam_layer: str | None = None, method: str = "gradcam",
            objective="sum", call: int = -1, progress=None) -> torch.Tensor:
        """A CAM of the unit at ``cam_layer`` (:data:`CAM_METHODS`), N x H x W in [0, 1].

        The gradient-based methods and Eigen-CAM are answered from this frame (one backward, no
        new forward); Score-CAM runs its masked forwards batched, reporting to ``progress`` (a
        :mod:`~cnnvis_gui.core.progress` listener) with its cost estimated first.  ``"rollout"`` and
        ``"legrad"`` read a ViT's attention layers (no ``cam_layer``): attention rollout of the layers
        before the unit (class-agnostic, :mod:`cnnvis_gui.core.rollout`) and LeGrad of a class of the
        model's output (one backward per attention layer, :mod:`cnnvis_gui.core.legrad`).  Formulas and
        papers: :mod:`cnnvis_gui.core.cams`.
        """
        if method in _cams.ATTENTION_CAMS:
            if cam_layer is not None:
                raise CnnvisError(f"{method} reads every attention layer of the network, not a CAM layer; "
                                  f"leave cam_layer out (got {cam_layer!r}).")
            if method == "rollout":
                name, c = self._call(layer, call)
                with self._lock:
                    self._objective(name, c, unit, objective)    # the unit must exist, though the map ignores it
                return _rollout.attention_rollout(self, layer=layer, call=call)
            return _legrad.legrad(self, layer, unit, objective, call)
        return _cams.frame_cam(self, layer, unit, cam_layer, method, objective, call, progress)

    def cam_unavailable(self, layer: str, method: str, call: int = -1) -> str | None:
        """Why ``method`` cannot map the units of ``layer`` on this frame (one line), or None.

        For the attention methods: a network without attention layers, a unit before the first
        attention (rollout), a unit that is not a class of the model's output (LeGrad).  The CAMs of a
        CAM layer answer None (their errors come with the request).
        """
        if method == "rollout":
            return _rollout.attention_reason(self, "attention rollout", layer, call)
        if method == "legrad":
            return _legrad.legrad_reason(self, layer, call)
        return None

    def attention_rollout(self, residual: float = 0.5, layer: str | None = None, call: int = -1) -> torch.Tensor:
        """Attention rollout (Abnar & Zuidema 2020) of a ViT frame: N x H x W in [0, 1].

        How much each patch flows into the class token through the attention layers that finish before
        ``layer``'s call (default: every one); class-agnostic.  Formula: :mod:`cnnvis_gui.core.rollout`.
        Needs a frame that recorded every module.  ``cam(..., method="rollout")`` is this at the unit's layer.
        """
        return _rollout.attention_rollout(self, residual, layer, call)

    def guided_grad_cam(self, layer: str, unit: int, cam_layer: str | None = None, objective="sum",
                        call: int = -1) -> torch.Tensor:
        """Guided backprop times the Grad-CAM map (broadcast over channels); shaped like the input."""
        cam = self.grad_cam(layer, unit, cam_layer, objective, call)
        return self.saliency(layer, unit, "guided", objective, call) * cam[:, None]

    def close(self) -> None:
        """Release the graph and every recorded activation."""
        self._recording = None
        self._out = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def saliency(model: nn.Module, x: torch.Tensor, layer: str, unit: int, method: str = "guided",
             objective="sum", smoothgrad: int = 0, noise: float = _attribution.DEFAULT_NOISE,
             steps: int = _attribution.DEFAULT_STEPS, baseline=None,
             seed: int | None = None, activations: str = "all") -> torch.Tensor:
    """Attribution of a unit's objective to ``x`` (1 x C x H x W); a tensor shaped like ``x``.

    ``method``: ``"gradient"``, ``"deconvnet"`` (Zeiler & Fergus 2014) or ``"guided"``
    (Springenberg et al. 2015) -- the rule is applied at every ReLU the forward runs,
    modules and functional calls alike -- or ``"input-x-gradient"`` / ``"integrated-gradients"``
    (``steps`` Gauss-Legendre points from ``baseline``, zeros by default).  ``smoothgrad=N``
    averages any method over N noisy copies (std ``noise`` x the input's range; ``seed``).
    ``objective``: ``"sum"`` over the channel's positions, ``"activation"`` (gradient of
    1/2 sum a^2, the deep visualization toolbox's seed), ``"max"`` (strongest position) or a
    ``(y, x)`` position.  See :mod:`cnnvis_gui.core.attribution`.  ``activations="relu-only"``
    applies the deconvnet/guided rules at ReLUs only (see :class:`Visualizer`).
    """
    # the frame records only the layer asked for (integrated gradients and SmoothGrad run forwards of their own)
    with Visualizer(model, activations=activations).forward(x, layers=[layer]) as frame:
        return frame.saliency(layer, unit, method, objective, smoothgrad=smoothgrad, noise=noise,
                              steps=steps, baseline=baseline, seed=seed)


def grad_cam(model: nn.Module, x: torch.Tensor, layer: str, unit: int, cam_layer: str | None = None,
             objective="sum") -> torch.Tensor:
    """Grad-CAM map of ``unit`` of ``layer`` at ``cam_layer`` for a 1 x C x H x W input: H x W in [0, 1]."""
    with Visualizer(model).forward(x) as frame:
        return frame.grad_cam(layer, unit, cam_layer, objective)[0]


def cam(model: nn.Module, x: torch.Tensor, layer: str, unit: int, cam_layer: str | None = None,
        method: str = "gradcam", objective="sum") -> torch.Tensor:
    """CAM map (:data:`CAM_METHODS`) of ``unit`` of ``layer`` at ``cam_layer`` for a 1 x C x H x W input.

    H x W in [0, 1]; ``method="gradcam"`` equals :func:`grad_cam`.  Formulas: :mod:`cnnvis_gui.core.cams`.
    """
    with Visualizer(model).forward(x) as frame:
        return frame.cam(layer, unit, cam_layer, method, objective)[0]


def model_map(model: nn.Module, spec: InputSpec, layouts: dict | None = None) -> ModelMap:
    """Every module with type, output shape, layout, units and calls per forward (one probe forward).

    ``layouts``: the user's overrides, ``{layer name: "nchw" | "nhwc" | "tokens:P+HxW" | "flat"}``.
    """
    return Visualizer(model, spec, layouts=layouts).model_map()
