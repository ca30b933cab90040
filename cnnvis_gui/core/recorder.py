"""Recording one forward pass: every module call's output, by reference, with one hook.

The cost of recording is what decides whether a live view keeps up, so the forward runs
as close to bare PyTorch as possible:

* **one global forward hook** (``torch.nn.modules.module.register_module_forward_hook``,
  ``always_call``), registered for this forward only and removed in ``finally``.  It
  ignores other threads' forwards and modules outside the model, and stores a
  reference to each call's output with the output's version counter -- no copy.
* **parameters frozen** for the forward (``requires_grad`` restored after), so the graph
  is the same one a bare forward to the input builds: no parameter gradient can ever be
  formed, and no tensor is saved only for one.
* **outputs overwritten later stay exact without copies.**  When a later in-place op
  (``out += identity``, an in-place ReLU) overwrites a recorded output, its version
  counter says so.  Its value is then *recomputed on demand* by running that module
  again on its own inputs, which the versions prove unchanged (recursively, through the
  modules that produced them); its gradient edge is the autograd node it had when the
  module returned, so gradients *at* that layer stay exact.  When the versions cannot
  prove a module's inputs intact (a module that wrote into its own input), the values
  come from one more recorded forward of the same input that copies them.
"""
from __future__ import annotations

import contextlib
import gc
import itertools
import threading
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.autograd.graph import GradientEdge

from .errors import CnnvisError
from .hooks import ModuleCallHook

__all__ = ["Structure", "Recording", "Call", "run_recorded", "frozen_eval", "model_device_dtype"]

_Tensor = torch.Tensor
_NO_OUT = object()


class Structure:
    """What a model is made of, read once per Visualizer: names, types, parameters."""

    def __init__(self, model: nn.Module):
        self.model = model
        named = list(model.named_modules())
        self.modules = [m for _, m in named]
        self.names = {id(m): n for n, m in named}
        self.by_name = dict(named)
        self.order = [n for n, _ in named]
        self.types = {n: type(m).__name__ for n, m in named}
        self.conv = {n: isinstance(m, nn.modules.conv._ConvNd) for n, m in named}
        self.relu_modules = frozenset(id(m) for _, m in named if isinstance(m, nn.ReLU))
        self.params = list(model.parameters())


def model_device_dtype(model: nn.Module):
    """Where the model lives and what float it computes in: its first floating parameter or buffer
    (an integer one, e.g. an index buffer, says nothing about the dtype); CPU float32 without either."""
    device = None
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
        device = device or t.device
    return device or torch.device("cpu"), torch.float32


class _Recorder(ModuleCallHook):
    """The global hook of one recorded forward; ``records`` lists the module calls in the order they end.

    A record is ``(name, module, args, kwargs, output, output version, output grad_fn,
    output_nr, versions of the args)`` -- references only (the versions: one int for a
    single argument, else a list; -1 for a non-tensor).  ``copy`` (a set of
    record indices) makes the hook store a clone of those outputs instead (the fallback
    forward that recovers values the versions cannot).
    """

    def __init__(self, structure: Structure, copy: frozenset = frozenset(), layers=None):
        super().__init__(None if layers is None else [structure.by_name[n] for n in layers])
        self.structure = structure
        self.records: list = []
        self._copy = copy

    @property
    def failed(self) -> tuple | None:
        """(name, args) of the innermost module that raised, or None.

        With ``always_call`` the hook also runs for every module the exception leaves,
        with no output: the innermost is the first of the trailing run of those.
        """
        where = None
        for r in reversed(self.records):
            if r[4] is not None:
                break
            where = (r[0], r[2])
        return where

    def make_hook(self):
        names = self.structure.names
        records = self.records
        append = records.append
        tid = self.thread
        get_ident = threading.get_ident
        copy = self._copy

        def hook(mod, args, kwargs, out=_NO_OUT):
            if get_ident() != tid:
                return None
            if out is _NO_OUT:  # torch passes no kwargs to a global hook when the forward raised
                out, kwargs = kwargs, None
            name = names.get(id(mod))
            if name is None:
                return None
            if isinstance(out, _Tensor):
                if copy and len(records) in copy:
                    out = out.detach().clone()
                if len(args) == 1:  # the common case, without a list per call
                    a = args[0]
                    versions = a._version if isinstance(a, _Tensor) else -1
                else:
                    versions = [a._version if isinstance(a, _Tensor) else -1 for a in args]
                append((name, mod, args, kwargs, out, out._version, out.grad_fn, out.output_nr, versions))
            else:
                append((name, mod, args, kwargs, out, -1, None, 0, None))
            return None

        return hook


@dataclass
class Call:
    """One call of one module during the recorded forward."""

    name: str
    index: int             # position in the recording (order of the calls' ends)
    start: int             # position of its first sub-module call (or ``index``): the order of its start
    reason: str | None     # why not visualizable, or None
    _rec: "Recording"

    @property
    def done(self) -> int:
        return self.index

    @property
    def shape(self):
        out = self._rec.records[self.index][4]
        return tuple(out.shape) if isinstance(out, _Tensor) else None

    def zeros(self) -> _Tensor:
        """Zeros shaped like the output (without recomputing an overwritten one)."""
        return torch.zeros_like(self._rec.records[self.index][4]).detach()

    @property
    def overwritten(self) -> bool:
        """True when a later in-place op changed the output after the module returned."""
        r = self._rec.records[self.index]
        return isinstance(r[4], _Tensor) and r[4]._version != r[5]

    @property
    def value(self):
        """The output as the module returned it (graph-connected unless :attr:`overwritten`), or None."""
        if self.reason is not None:
            return None
        return self._rec.value(self.index)

    @property
    def edge(self):
        """What ``autograd.grad`` takes for "this output": the tensor, or its edge before an overwrite."""
        if self.reason is not None:
            return None
        r = self._rec.records[self.index]
        out, node = r[4], r[6]
        if out._version == r[5]:
            return out if out.requires_grad else None
        return GradientEdge(node, r[7]) if node is not None else None


def _reason(out) -> str | None:
    if out is None:   # (a module that raised has no map: only one that returned None gets here)
        return "returns None, not a tensor"
    if not isinstance(out, _Tensor):
        return f"returns a {type(out).__name__}, not a tensor"
    if out.ndim < 2:
        return f"output is a {out.ndim}-D tensor; units need a batch and a channel/feature axis"
    if not out.is_floating_point():
        return f"output dtype {out.dtype} is not floating point"
    return None


class Recording:
    """The module calls of one recorded forward, and the values they returned.

    ``reforward(copy)`` runs the same input through the model again and returns the
    records of that run, with the outputs at the indices in ``copy`` cloned: the
    fallback for values that cannot be recomputed module by module.
    """

    def __init__(self, structure: Structure, records: list, reforward=None, layers=None):
        self.structure = structure
        self.layers = layers            # the names recorded, or None for every module
        self.records = records
        self._reforward = reforward
        self.activations = "all"        # where the frame's rules apply (rules.ACTIVATIONS)
        self._calls: dict | None = None
        self._producers: dict[int, list[int]] = {}
        self._cache: dict = {}

    # ------------------------------------------------------------------ calls by module
    @property
    def calls(self) -> dict[str, list[Call]]:
        if self._calls is None:
            self._calls = self._build_calls()
        return self._calls

    def _build_calls(self) -> dict:
        order = self.structure.order if self.layers is None else [n for n in self.structure.order if n in self.layers]
        calls: dict[str, list[Call]] = {n: [] for n in order}
        records = self.records
        producers = self._producers
        for i, r in enumerate(records):
            name, out = r[0], r[4]
            start = i
            prefix = name + "." if name else ""
            while start > 0 and records[start - 1][0].startswith(prefix) and records[start - 1][0] != name:
                start -= 1
            calls.setdefault(name, []).append(Call(name, i, start, _reason(out), self))
            if isinstance(out, _Tensor):
                producers.setdefault(id(out), []).append(i)
                if out._version == r[5]:
                    # never overwritten: its args are not needed to recompute it
                    records[i] = r[:2] + (None, None) + r[4:8] + (None,)
        return calls

    # ------------------------------------------------------------------ values
    def value(self, i: int) -> _Tensor:
        """Output ``i`` as the module returned it: the tensor itself, or a recomputed copy."""
        r = self.records[i]
        out = r[4]
        if out._version == r[5]:
            return out
        self.calls  # producers index
        key = (id(out), r[5])
        v = self._cache.get(key)
        if v is None:
            v = self._resolve(out, r[5], i + 1)
            if v is None:
                v = self._recover_by_reforward(key)
            self._cache[key] = v
        return v

    def _intact(self, t: _Tensor, version: int, before: int) -> bool:
        """Does ``t`` still hold the value it had at ``version``, proven by the versions?"""
        if t._version != version:
            return False
        if version == 0:
            return True  # never written in place since it was created
        return any(self.records[j][5] == version for j in self._producers.get(id(t), ()) if j < before)

    def _resolve(self, t: _Tensor, version: int, before: int):
        """``t``'s value at ``version`` from the calls that ended before ``before``, or None."""
        if self._intact(t, version, before):
            return t.detach()
        key = (id(t), version)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        for j in self._producers.get(id(t), ()):
            if j >= before:
                break
            if self.records[j][5] == version:
                v = self._recompute(j)
                if v is not None:
                    self._cache[key] = v
                    return v
        return None

    def _recompute(self, j: int):
        """Run call ``j``'s module again on its (proven) inputs, or None when they cannot be proven."""
        name, mod, args, kwargs, out, version, node, nr, arg_versions = self.records[j]
        if args is None or (kwargs and any(isinstance(v, _Tensor) for v in kwargs.values())):
            return None
        if not isinstance(arg_versions, list):
            arg_versions = [arg_versions]
        new_args = []
        for a, va in zip(args, arg_versions):
            if not isinstance(a, _Tensor):
                new_args.append(a)
                continue
            if a is out:  # the module wrote into (or passed through) its input: its input is unknown
                return None
            v = self._resolve(a, va, j)
            if v is None:
                return None
            new_args.append(v)
        before = [(a, a._version) for a in new_args if isinstance(a, _Tensor)]
        training = [m for m in mod.modules() if m.training]
        try:
            for m in training:
                m.training = False
            with torch.no_grad():
                res = mod(*new_args, **(kwargs or {}))
        finally:
            for m in training:
                m.training = True
        if any(a._version != v for a, v in before):
            raise CnnvisError(f"module {name!r} wrote into its input when run again; its recorded output "
                               f"cannot be recovered")
        if not isinstance(res, _Tensor) or res.shape != out.shape or res.dtype != out.dtype:
            return None
        return res

    def _recover_by_reforward(self, key):
        """Run the forward again, copying every overwritten output, and keep them all."""
        if self._reforward is None:
            raise CnnvisError("a recorded output was overwritten in place and cannot be recovered")
        want = {i for i, r in enumerate(self.records)
                if isinstance(r[4], _Tensor) and r[4]._version != r[5]}
        fresh = self._reforward(frozenset(want))
        if len(fresh) != len(self.records):
            raise CnnvisError("the model ran different modules on the same input a second time; "
                               "overwritten outputs cannot be recovered")
        for i in want:
            r, f = self.records[i], fresh[i]
            if f[0] != r[0] or not isinstance(f[4], _Tensor) or f[4].shape != r[4].shape:
                raise CnnvisError("the model ran different modules on the same input a second time; "
                                   "overwritten outputs cannot be recovered")
            self._cache.setdefault((id(r[4]), r[5]), f[4])
        return self._cache[key]


@contextlib.contextmanager
def frozen_eval(structure: Structure):
    """Eval mode and frozen parameters inside the block; every flag restored after, also on an error.

    What a recorded forward runs under, and what any later computation through the model's own
    modules on a frame's graph runs under (LeGrad's head readouts): the graph it builds is the one
    a bare forward builds, and no parameter gradient can be formed.
    """
    training = [m for m in structure.modules if m.training]
    trainable = [p for p in structure.params if p.requires_grad]
    try:
        for m in training:
            m.training = False
        for p in trainable:
            p.requires_grad_(False)
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)
        for m in training:
            m.training = True


def run_recorded(structure: Structure, x_in, recorder: _Recorder, grad: bool = True):
    """Forward ``x_in`` with the recorder's hook: eval mode and frozen parameters during the call only."""
    with frozen_eval(structure):
        # The hook keeps every call's output, args and node alive until the frame goes: no
        # garbage collection can free any of them, so none is run meanwhile.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            with recorder, torch.set_grad_enabled(grad):
                return structure.model(x_in)
        finally:
            if gc_was_enabled:
                gc.enable()
