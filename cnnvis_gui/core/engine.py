"""Hook-based activations and backprop rules: one forward per frame, one backward per request.

The three methods differ only in what every ReLU passes back (captum's
``guided_backprop_deconvnet.py`` makes the same observation):

* ``gradient``  -- plain autograd: ``g * [y > 0]``.
* ``deconvnet`` -- Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional
  Networks": ``relu(g)``, ignoring the forward mask.
* ``guided``    -- Springenberg et al. 2015, "Striving for Simplicity: The All
  Convolutional Net": ``relu(g) * [y > 0]``.

How every ReLU is reached
-------------------------
Module backward hooks never see functional ``F.relu`` calls (torchvision's DenseNet
makes one before its classifier) and break on ``nn.ReLU(inplace=True)``.  Instead, while
a :class:`Frame` records its forward pass, a :class:`torch.overrides.TorchFunctionMode`
(thread-local, pushed for that forward only -- nothing global is patched) routes every
``nn.ReLU``, ``F.relu``, ``F.relu_``, ``torch.relu``, ``torch.relu_``, ``Tensor.relu`` and
``Tensor.relu_`` call through one ``autograd.Function`` whose backward reads the rule
from a per-frame box at *backward* time.  So one recorded forward answers any number of
(layer, unit, method, objective) requests with one backward each.

Activations are recorded with forward hooks; when a later in-place op (``out += identity``,
an in-place ReLU) would overwrite a recorded output, the mode clones it first, and the
autograd edge it had just before the overwrite keeps gradients *at* that layer exact.
"""
from __future__ import annotations

import contextlib
import difflib
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.graph import get_gradient_edge
from torch.overrides import TorchFunctionMode

from . import attribution as _attribution
from . import cams as _cams
from .errors import CnnvisError
from .hooks import HookSet
from .spec import InputSpec

METHODS = ("gradient", "deconvnet", "guided")
SALIENCY_METHODS = METHODS + _attribution.ATTRIBUTION_METHODS   # everything Frame.saliency answers
CAM_METHODS = _cams.CAM_METHODS
OBJECTIVES = ("sum", "activation", "max")

__all__ = [
    "METHODS", "SALIENCY_METHODS", "CAM_METHODS", "OBJECTIVES", "Visualizer", "Frame", "ModelMap",
    "LayerInfo", "ModelForwardError", "saliency", "grad_cam", "cam", "model_map",
]


class ModelForwardError(CnnvisError):
    """The model's own forward pass raised; the message names the module and shapes."""


# --------------------------------------------------------------------------- the ReLU rule
class _RuleBox:
    """Holds the rule the next backward uses.  Deliberately references nothing else."""

    __slots__ = ("rule",)

    def __init__(self, rule: str = "gradient"):
        self.rule = rule


_threshold_backward = torch.ops.aten.threshold_backward.default


class _RuleReLU(torch.autograd.Function):
    """ReLU whose backward is chosen at backward time from ``box.rule``."""

    @staticmethod
    def forward(ctx, x, box, inplace):
        if inplace:
            ctx.mark_dirty(x)
            y = torch.relu_(x)
        else:
            y = torch.relu(x)
        ctx.box = box
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        rule = ctx.box.rule
        if rule == "gradient":
            gi = _threshold_backward(g, y, 0)
        elif rule == "deconvnet":
            gi = g.clamp(min=0)
        else:  # guided
            gi = _threshold_backward(g, y, 0).clamp_(min=0)
        return gi, None, None


def _relu_table():
    table = {F.relu: None, torch.relu: False, torch.Tensor.relu: False,
             torch.relu_: True, torch.Tensor.relu_: True}
    if hasattr(F, "relu_"):
        table[F.relu_] = True
    return table


_RELU = _relu_table()  # func -> in-place? (None: read the ``inplace`` argument)
_NOT_RELU = object()


def _other_activation_table():
    names = {
        "relu6": "ReLU6", "hardtanh": "Hardtanh/ReLU6", "leaky_relu": "LeakyReLU",
        "leaky_relu_": "LeakyReLU", "elu": "ELU", "elu_": "ELU", "selu": "SELU", "selu_": "SELU",
        "celu": "CELU", "celu_": "CELU", "gelu": "GELU", "silu": "SiLU", "mish": "Mish",
        "softplus": "Softplus", "hardswish": "Hardswish", "hardsigmoid": "Hardsigmoid",
        "prelu": "PReLU", "rrelu": "RReLU", "rrelu_": "RReLU", "glu": "GLU",
        "logsigmoid": "LogSigmoid", "softsign": "Softsign", "tanhshrink": "Tanhshrink",
        "threshold": "Threshold", "threshold_": "Threshold", "sigmoid": "Sigmoid",
        "sigmoid_": "Sigmoid", "tanh": "Tanh", "tanh_": "Tanh", "hardtanh_": "Hardtanh/ReLU6",
    }
    table = {}
    for mod in (F, torch, torch.Tensor):
        for fname, label in names.items():
            f = getattr(mod, fname, None)
            if f is not None and f not in _RELU:
                table[f] = label
    return table


_OTHER_ACT = _other_activation_table()

_INPLACE_DUNDERS = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__",
                    "__imod__", "__ipow__", "__iand__", "__ior__", "__ixor__",
                    "__ilshift__", "__irshift__", "__imatmul__", "__setitem__"}


_INPLACE_BY_NAME: dict = {}


def _inplace_target(func, args, kwargs):
    """The tensor an in-place call would overwrite, or None."""
    if kwargs:
        out = kwargs.get("out")
        if isinstance(out, torch.Tensor):
            return out
        if kwargs.get("inplace") is True and args and isinstance(args[0], torch.Tensor):
            return args[0]
    inplace = _INPLACE_BY_NAME.get(func)
    if inplace is None:
        name = getattr(func, "__name__", "")
        inplace = (name.endswith("_") and not name.startswith("__")) or name in _INPLACE_DUNDERS
        try:
            _INPLACE_BY_NAME[func] = inplace
        except TypeError:  # unhashable callable
            pass
    if inplace and args and isinstance(args[0], torch.Tensor):
        return args[0]
    return None


class _RecordingMode(TorchFunctionMode):
    """Thread-local mode active during one recorded forward."""

    def __init__(self, recorder: "_Recorder"):
        super().__init__()
        self.rec = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rec = self.rec
        inplace = _RELU.get(func, _NOT_RELU)
        if inplace is not _NOT_RELU and args and isinstance(args[0], torch.Tensor):
            x = args[0]
            if inplace is None:  # F.relu(x, inplace=...)
                inplace = bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
            if inplace and rec.watched:
                rec.before_inplace(x)
            rec.relu_calls += 1
            if not rec.inside_relu_module():
                rec.functional_relu_calls += 1
            if not x.is_floating_point():
                return func(*args, **kwargs)
            return _RuleReLU.apply(x, rec.box, inplace)
        if rec.watched:
            target = _inplace_target(func, args, kwargs)
            if target is not None:
                rec.before_inplace(target)
        label = _OTHER_ACT.get(func)
        if label is not None:
            rec.other_activations[label] += 1
        return func(*args, **kwargs)


# --------------------------------------------------------------------------- recording
@dataclass
class _Call:
    """One call of one module during the recorded forward."""

    value: object          # output tensor (possibly a pre-in-place clone), or None
    edge: object           # what autograd.grad takes for "this output": the tensor itself, or the
                           # GradientEdge it had before a later in-place op overwrote it; None if no grad
    start: int             # order of the call's start
    done: int              # order of the call's end
    reason: str | None     # why not visualizable, or None


class _Recorder(HookSet):
    """Registers hooks on every module for one forward; removes them all in ``close``."""

    def __init__(self, model: nn.Module, box: _RuleBox, keep_values: bool = True):
        super().__init__()
        self.model = model
        self.box = box
        self.keep_values = keep_values
        self.names: dict[int, str] = {}
        self.types: dict[str, str] = {}
        self.conv: dict[str, bool] = {}
        self.calls: dict[str, list[_Call]] = {}
        self.stack: list[tuple[str, tuple]] = []  # (name, input args) of the modules running now
        # recorded outputs by storage, so an in-place write through a view is noticed too:
        # storage key -> {id(tensor): (tensor, [calls])}
        self.watched: dict[int, dict[int, tuple]] = {}
        self.counter = 0
        self.relu_calls = 0
        self.functional_relu_calls = 0
        self.other_activations: Counter = Counter()
        self._relu_depth = 0
        self.failed_in: tuple[str, tuple] | None = None

    # hooks ------------------------------------------------------------------------
    def register(self):
        for name, m in self.model.named_modules():
            self.names[id(m)] = name
            self.types[name] = type(m).__name__
            self.conv[name] = isinstance(m, nn.modules.conv._ConvNd)
            self.calls[name] = []
            self.handles.append(m.register_forward_pre_hook(self._pre(name, m)))
            self.handles.append(m.register_forward_hook(self._post(name, m), always_call=True))

    def _pre(self, name, module):
        is_relu = isinstance(module, nn.ReLU)

        def pre(mod, args):
            if threading.get_ident() != self.thread:
                return None
            self.stack.append((name, args))  # shapes are formatted only if the forward fails
            if is_relu:
                self._relu_depth += 1
            self.counter += 1
            self.calls[name].append(_Call(None, None, self.counter, -1, "did not finish"))
            return None
        return pre

    def _post(self, name, module):
        is_relu = isinstance(module, nn.ReLU)

        def post(mod, args, output):
            if threading.get_ident() != self.thread:
                return None
            if is_relu:
                self._relu_depth -= 1
            if self.stack and self.stack[-1][0] == name:
                popped = self.stack.pop()
            else:
                popped = None
            call = self.calls[name][-1]
            if output is None and popped is not None and self.failed_in is None:
                # always_call=True: the forward raised inside this module.
                self.failed_in = popped
            self.counter += 1
            call.done = self.counter
            if isinstance(output, torch.Tensor):
                with _no_torch_function():  # our own bookkeeping need not go through the mode
                    self._record(call, output)
            elif output is not None:
                call.reason = f"returns a {type(output).__name__}, not a tensor"
            return None
        return post

    def _record(self, call: "_Call", output: torch.Tensor):
        if output.ndim < 2:
            call.reason = f"output is a {output.ndim}-D tensor; units need a batch and a channel/feature axis"
        elif not output.is_floating_point():
            call.reason = f"output dtype {output.dtype} is not floating point"
        else:
            call.reason = None
        if call.reason is None and self.keep_values:
            call.value = output
            call.edge = output if output.requires_grad else None
            entry = self.watched.setdefault(_storage_key(output), {}).setdefault(id(output), (output, []))
            entry[1].append(call)
        elif call.reason is None:
            call.value = _ShapeOnly(tuple(output.shape))

    def inside_relu_module(self) -> bool:
        return self._relu_depth > 0

    def before_inplace(self, target: torch.Tensor):
        """``target`` (or a view sharing its storage) is about to be overwritten in place."""
        entries = self.watched.pop(_storage_key(target), None)
        if entries:
            # Keep the values and the autograd edge of each recorded output as they were
            # before the overwrite.
            for tensor, calls in entries.values():
                edge = get_gradient_edge(tensor) if tensor.requires_grad else None
                keep = tensor.clone()
                for c in calls:
                    c.value = keep
                    c.edge = edge


class _ShapeOnly:
    """Stand-in for an output tensor when only shapes are needed (model map)."""

    def __init__(self, shape):
        self.shape = shape
        self.ndim = len(shape)


def _storage_key(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, AttributeError):  # no storage (sparse, some subclasses)
        return id(t)


def _no_torch_function():
    """Context in which torch functions skip every __torch_function__ mode (our own bookkeeping)."""
    ctx = getattr(torch._C, "DisableTorchFunction", None)
    return ctx() if ctx is not None else contextlib.nullcontext()


def _shape_str(t) -> str:
    return "x".join(str(s) for s in t.shape) if hasattr(t, "shape") else type(t).__name__


def _model_device_dtype(model: nn.Module):
    for p in model.parameters():
        return p.device, (p.dtype if p.is_floating_point() else torch.float32)
    for b in model.buffers():
        return b.device, (b.dtype if b.is_floating_point() else torch.float32)
    return torch.device("cpu"), torch.float32


def _run_recorded(model, x_in, recorder: _Recorder, grad: bool):
    """Forward ``x_in`` with hooks + mode; eval mode during the call, flags restored after."""
    training = [m for m in model.modules() if m.training]
    try:
        for m in training:
            m.training = False
        with recorder, _RecordingMode(recorder), torch.set_grad_enabled(grad):
            try:
                return model(x_in)
            except CnnvisError:
                raise
            except Exception as e:  # the user's model raised: name the layer and shapes
                raise ModelForwardError(_forward_failure_message(recorder, x_in, e)) from e
    finally:
        for m in training:
            m.training = True


def _forward_failure_message(recorder: _Recorder, x_in, e: Exception) -> str:
    where = recorder.failed_in or (recorder.stack[-1] if recorder.stack else None)
    msg = "the model's forward pass failed"
    if where is not None and where[0] != "":
        shapes = ", ".join(_shape_str(a) for a in where[1] if isinstance(a, torch.Tensor)) or "no tensor"
        msg += f" in module '{where[0]}' ({recorder.types.get(where[0], '?')}) on input {shapes}"
    msg += f": {type(e).__name__}: {e}. The model was given an input of shape {_shape_str(x_in)}"
    msg += ("; if that shape is not what the model was trained on, fix the input spec (channels, height, "
            "width); if it is, the model's own code failed on this input.")
    return msg


# --------------------------------------------------------------------------- model map
@dataclass(frozen=True)
class LayerInfo:
    """One module of the model as seen in one forward pass."""

    name: str
    type: str
    shape: tuple | None
    units: int | None
    calls: int
    visualizable: bool
    reason: str | None
    is_conv: bool
    order: int
    depth: int

    @property
    def display_name(self) -> str:
        return self.name if self.name else "(model output)"


class ModelMap:
    """Every module by its dotted name, in ``named_modules()`` order."""

    def __init__(self, layers: Sequence[LayerInfo], relu_calls=0, functional_relu_calls=0,
                 other_activations=None):
        self.layers = list(layers)
        self._by_name = {l.name: l for l in self.layers}
        self.relu_calls = relu_calls
        self.functional_relu_calls = functional_relu_calls
        self.other_activations = dict(other_activations or {})

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __contains__(self, name):
        return name in self._by_name

    def __getitem__(self, name) -> LayerInfo:
        return self._by_name[resolve_layer_name(name, self._by_name, self.visualizable_names())]

    def names(self) -> list[str]:
        return [l.name for l in self.layers]

    def visualizable_names(self) -> list[str]:
        return [l.name for l in self.layers if l.visualizable]

    @property
    def output_name(self) -> str:
        return ""

    @property
    def default_layer(self) -> str:
        """The last convolutional layer to run (or the output when there is none)."""
        convs = [l for l in self.layers if l.is_conv and l.visualizable]
        if convs:
            return max(convs, key=lambda l: l.order).name
        return ""

    def describe(self) -> str:
        rows = [f"{'name':40s} {'type':22s} {'output':18s} {'units':>6s} {'calls':>5s}"]
        for l in self.layers:
            shape = "x".join(map(str, l.shape)) if l.shape else "-"
            rows.append(f"{l.display_name:40s} {l.type:22s} {shape:18s} "
                        f"{(l.units if l.units is not None else '-')!s:>6s} {l.calls:>5d}"
                        + ("" if l.visualizable else f"  [{l.reason}]"))
        return "\n".join(rows)


def resolve_layer_name(name, known, candidates) -> str:
    if not isinstance(name, str):
        raise CnnvisError(f"a layer is named by a string from model.named_modules(), got {name!r}")
    if name in known:
        return name
    if name in ("output", "(model output)") and "" in known:
        return ""
    close = difflib.get_close_matches(name, [c for c in candidates if c], n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
    sample = [c for c in candidates if c][:8]
    raise CnnvisError(f"unknown layer {name!r}.{hint} Valid layers are names from "
                      f"model.named_modules(), e.g. {', '.join(repr(c) for c in sample)}"
                      f"{' ...' if len(candidates) > 8 else ''} (or 'output' for the model output).")


def _build_map(rec: _Recorder) -> ModelMap:
    layers = []
    for name, calls in rec.calls.items():
        depth = 0 if name == "" else name.count(".") + 1
        if not calls:
            layers.append(LayerInfo(name, rec.types[name], None, None, 0, False,
                                    "not run in the forward pass", rec.conv[name], 10**9, depth))
            continue
        last = calls[-1]
        shape = tuple(last.value.shape[1:]) if last.value is not None else None
        vis = last.reason is None and last.value is not None
        layers.append(LayerInfo(name, rec.types[name], shape, (shape[0] if vis and shape else None),
                                len(calls), vis, last.reason, rec.conv[name], calls[0].start, depth))
    return ModelMap(layers, rec.relu_calls, rec.functional_relu_calls, rec.other_activations)


def _activation_notices(relu_calls, functional, others) -> list[str]:
    notes = []
    if others:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(others.items()))
        total = sum(others.values())
        notes.append(f"{parts} activation call{'s' if total != 1 else ''} use{'s' if total == 1 else ''} "
                     f"the plain gradient (deconvnet/guided rules apply to ReLUs only)")
    if relu_calls == 0:
        notes.append("the model runs no ReLU: deconvnet and guided backprop equal the plain gradient")
    return notes


# --------------------------------------------------------------------------- the public API
class Visualizer:
    """Records a model's forward passes and answers saliency requests on them.

    Parameters
    ----------
    model : nn.Module
        Any PyTorch model; it is put in eval mode only during each recorded forward and
        left exactly as it was (hooks, training flags, ``requires_grad``, ``.grad``).
    spec : InputSpec, optional
        The input the model expects; needed for :meth:`model_map` and used to check inputs.
    """

    def __init__(self, model: nn.Module, spec: InputSpec | None = None):
        if not isinstance(model, nn.Module):
            raise CnnvisError(f"Visualizer needs a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, torch.jit.ScriptModule):
            raise CnnvisError("TorchScript models cannot be visualized: hooks and the backprop rules "
                              "cannot reach inside a scripted graph. Load the eager model instead.")
        self.model = model
        self.spec = spec
        self._map: ModelMap | None = None

    @property
    def device(self) -> torch.device:
        return _model_device_dtype(self.model)[0]

    def model_map(self, refresh: bool = False) -> ModelMap:
        """List every module with its output shape and call count from one probe forward."""
        if self._map is None or refresh:
            if self.spec is None:
                raise CnnvisError("model_map needs an InputSpec (channels, height, width) for the probe forward.")
            device, dtype = _model_device_dtype(self.model)
            x = torch.zeros((1,) + self.spec.shape, device=device, dtype=dtype)
            rec = _Recorder(self.model, _RuleBox(), keep_values=False)
            _run_recorded(self.model, x, rec, grad=False)
            self._map = _build_map(rec)
        return self._map

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

    def forward(self, x: torch.Tensor) -> "Frame":
        """Run the model once on ``x`` (N x C x H x W) and keep every layer's activations."""
        x = self._prepare(x)
        box = _RuleBox()
        rec = _Recorder(self.model, box)
        x_leaf = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        x_in = x_leaf.clone()  # the model may modify its input in place
        out = _run_recorded(self.model, x_in, rec, grad=True)
        ms = (time.perf_counter() - t0) * 1000.0
        rec.watched.clear()
        frame = Frame(x_leaf, out, rec, box, ms)
        frame.visualizer = self  # integrated gradients, SmoothGrad and Score-CAM run batched forwards
        return frame


class Frame:
    """One recorded forward pass.  Any number of backward requests; one forward.

    Obtained from :meth:`Visualizer.forward`.  Holds the autograd graph until
    :meth:`close` (or until the frame is garbage collected).
    """

    def __init__(self, x_leaf, output, rec: _Recorder, box: _RuleBox, forward_ms: float):
        self._x = x_leaf
        self._out = output
        self._calls = rec.calls
        self._types = rec.types
        self._conv = rec.conv
        self._box = box
        self._lock = threading.Lock()
        self.forward_ms = forward_ms
        self.last_backward_ms = 0.0
        self.relu_calls = rec.relu_calls
        self.functional_relu_calls = rec.functional_relu_calls
        self.other_activations = dict(rec.other_activations)
        self.notices = _activation_notices(rec.relu_calls, rec.functional_relu_calls, rec.other_activations)
        self._map = _build_map(rec)
        self.visualizer: Visualizer | None = None  # set by Visualizer.forward

    # ------------------------------------------------------------------ inspection
    @property
    def input(self) -> torch.Tensor:
        return self._x.detach()

    @property
    def output(self):
        o = self._out
        return o.detach() if isinstance(o, torch.Tensor) else o

    @property
    def model_map(self) -> ModelMap:
        return self._map

    def _call(self, layer, call=-1) -> tuple[str, _Call]:
        if self._calls is None:
            raise CnnvisError("this frame was closed; run Visualizer.forward again.")
        name = resolve_layer_name(layer, self._calls, self._map.visualizable_names())
        calls = self._calls[name]
        if not calls:
            raise CnnvisError(f"layer {name or 'output'!r} did not run in the forward pass; nothing to show.")
        try:
            c = calls[call]
        except (IndexError, TypeError):
            raise CnnvisError(f"layer {name!r} ran {len(calls)} time(s) per forward; "
                              f"call must be in 0..{len(calls) - 1} (or -1 for the last).") from None
        if c.reason is not None or c.value is None:
            raise CnnvisError(f"layer {name!r} ({self._types[name]}) is not visualizable: {c.reason}.")
        return name, c

    def activations(self, layer: str, call: int = -1) -> torch.Tensor:
        """The layer's output for this frame, N x C x H x W (or N x F), detached."""
        return self._call(layer, call)[1].value.detach()

    def top_units(self, layer: str, k: int = 9, by: str = "max", call: int = -1) -> list[int]:
        """Units of ``layer`` with the highest activation (max or mean over positions) in sample 0."""
        a = self.activations(layer, call)[0].float()
        a = a.reshape(a.shape[0], -1)
        score = a.amax(dim=1) if by == "max" else a.mean(dim=1)
        k = max(0, min(int(k), score.numel()))
        return [int(i) for i in torch.topk(score, k).indices]

    def default_cam_layer(self, layer: str, call: int = -1) -> str | None:
        """The last convolutional layer (4-D output) that finishes before ``layer`` does."""
        name, c = self._call(layer, call)
        best, best_done = None, -1
        for n, calls in self._calls.items():
            if not self._conv.get(n):
                continue
            for cc in calls:
                if cc.reason is None and cc.value is not None and cc.value.ndim == 4 and best_done < cc.done <= c.done:
                    best, best_done = n, cc.done
        return best

    # ------------------------------------------------------------------ backward
    def _objective(self, name, c: _Call, unit, objective):
        a = c.value
        units = a.shape[1]
        if isinstance(unit, bool) or not isinstance(unit, int) and not (
                isinstance(unit, torch.Tensor) and unit.ndim == 0):
            raise CnnvisError(f"unit must be an integer, got {unit!r}")
        unit = int(unit)
        if not 0 <= unit < units:
            raise CnnvisError(f"unit {unit} is out of range for layer {name or 'output'!r}: "
                              f"it has {units} units (0..{units - 1}).")
        sel = a[:, unit]
        if isinstance(objective, str):
            if objective == "sum":
                return sel.sum()
            if objective == "activation":
                return 0.5 * (sel * sel).sum()
            if objective == "max":
                return sel.reshape(sel.shape[0], -1).amax(dim=1).sum()
            raise CnnvisError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)} "
                              f"or a (y, x) position.")
        pos = tuple(int(p) for p in objective)
        if sel.ndim - 1 != len(pos):
            raise CnnvisError(f"layer {name!r} has per-unit shape {tuple(sel.shape[1:])}; a position needs "
                              f"{sel.ndim - 1} coordinate(s), got {pos}.")
        for p, n, axis in zip(pos, sel.shape[1:], "yx" if len(pos) == 2 else "dyx"[-len(pos):]):
            if not 0 <= p < n:
                raise CnnvisError(f"position {pos} is outside layer {name!r}'s {tuple(sel.shape[1:])} map "
                                  f"({axis} must be in 0..{n - 1}).")
        return sel[(slice(None),) + pos].sum()

    def _grad(self, layer, unit, method, objective, call, wrt):
        if method not in METHODS:
            raise CnnvisError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
        name, c = self._call(layer, call)
        with self._lock:
            t0 = time.perf_counter()
            obj = self._objective(name, c, unit, objective)
            if not obj.requires_grad:
                self.last_backward_ms = 0.0
                return [None] * len(wrt)
            self._box.rule = method
            try:
                grads = torch.autograd.grad(obj, wrt, retain_graph=True, allow_unused=True)
            finally:
                self._box.rule = "gradient"
            self.last_backward_ms = (time.perf_counter() - t0) * 1000.0
        return list(grads)

    def saliency(self, layer: str, unit: int, method: str = "guided", objective="sum",
                 call: int = -1, *, smoothgrad: int = 0, noise: float = 0.15, steps: int = 32,
                 baseline=None, seed: int | None = None) -> torch.Tensor:
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

    def gradient_at(self, at_layer: str, layer: str, unit: int, method: str = "gradient",
                    objective="sum", call: int = -1, at_call: int = -1) -> torch.Tensor:
        """Gradient of the unit's objective w.r.t. ``at_layer``'s output (zeros if it does not depend on it)."""
        at_name, at = self._call(at_layer, at_call)
        if at.edge is None:
            return torch.zeros_like(at.value).detach()
        (g,) = self._grad(layer, unit, method, objective, call, [at.edge])
        return torch.zeros_like(at.value).detach() if g is None else g.detach()

    def grad_cam(self, layer: str, unit: int, cam_layer: str | None = None, objective="sum",
                 call: int = -1) -> torch.Tensor:
        """Grad-CAM (Selvaraju et al. 2017) of the unit at ``cam_layer``, N x H x W in [0, 1].

        weights = spatial mean of the *plain* gradient w.r.t. the cam layer's activations;
        map = relu(sum_k weights_k * A_k), upsampled bilinearly to the input size and
        divided by its maximum (an all-zero map stays zero).  Same as ``cam(method="gradcam")``.
        """
        return _cams.frame_cam(self, layer, unit, cam_layer, "gradcam", objective, call)

    def cam(self, layer: str, unit: int, cam_layer: str | None = None, method: str = "gradcam",
            objective="sum", call: int = -1) -> torch.Tensor:
        """A CAM of the unit at ``cam_layer`` (:data:`CAM_METHODS`), N x H x W in [0, 1].

        The gradient-based methods and Eigen-CAM are answered from this frame (one backward, no
        new forward); Score-CAM runs its masked forwards batched.  Formulas and papers:
        :mod:`cnnvis_gui.core.cams`.
        """
        return _cams.frame_cam(self, layer, unit, cam_layer, method, objective, call)

    def guided_grad_cam(self, layer: str, unit: int, cam_layer: str | None = None, objective="sum",
                        call: int = -1) -> torch.Tensor:
        """Guided backprop times the Grad-CAM map (broadcast over channels); shaped like the input."""
        cam = self.grad_cam(layer, unit, cam_layer, objective, call)
        return self.saliency(layer, unit, "guided", objective, call) * cam[:, None]

    def close(self) -> None:
        """Release the graph and every recorded activation."""
        self._calls = None
        self._out = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def saliency(model: nn.Module, x: torch.Tensor, layer: str, unit: int, method: str = "guided",
             objective="sum", smoothgrad: int = 0, noise: float = 0.15, steps: int = 32, baseline=None,
             seed: int | None = None) -> torch.Tensor:
    """Attribution of a unit's objective to ``x`` (1 x C x H x W); a tensor shaped like ``x``.

    ``method``: ``"gradient"``, ``"deconvnet"`` (Zeiler & Fergus 2014) or ``"guided"``
    (Springenberg et al. 2015) -- the rule is applied at every ReLU the forward runs,
    modules and functional calls alike -- or ``"input-x-gradient"`` / ``"integrated-gradients"``
    (``steps`` Gauss-Legendre points from ``baseline``, zeros by default).  ``smoothgrad=N``
    averages any method over N noisy copies (std ``noise`` x the input's range; ``seed``).
    ``objective``: ``"sum"`` over the channel's positions, ``"activation"`` (gradient of
    1/2 sum a^2, the deep visualization toolbox's seed), ``"max"`` (strongest position) or a
    ``(y, x)`` position.  See :mod:`cnnvis_gui.core.attribution`.
    """
    with Visualizer(model).forward(x) as frame:
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


def model_map(model: nn.Module, spec: InputSpec) -> ModelMap:
    """Every module with type, output shape, units and calls per forward (one probe forward)."""
    return Visualizer(model, spec).model_map()
