"""Fuzz the pickle scanner against the real unpickler (hypothesis); run before a release, not in CI.

    python tools/fuzz_pickle_scanner.py                    # 20000 examples per input kind
    python tools/fuzz_pickle_scanner.py --examples 500 --seed 1

The scanner (:func:`cnnvis_gui.models.pickle_scan.scan_globals`) decides what the refusal of a
pickled checkpoint names.  Three kinds of input are generated:

- ``stack``: protocol-4 sequences of the ops that move names: string pushes, MARK, POP,
  POP_MARK, DUP, MEMOIZE, BINPUT/BINGET, LONG_BINPUT/LONG_BINGET, STACK_GLOBAL;
- ``programs``: opcode sequences over protocols 0-5 that move a few names through the stack
  and the memo (MARK, POP, POP_MARK, DUP, PUT/BINPUT/LONG_BINPUT/MEMOIZE, GET/BINGET/LONG_BINGET,
  GLOBAL, STACK_GLOBAL, INST, containers, REDUCE, BUILD, NEWOBJ, OBJ, FRAME);
- ``bytes``: arbitrary bytes;
- ``mutants``: a real ``torch.save`` pickle with bytes changed, inserted or deleted.

Each input is also unpickled by CPython's own unpickler, whose ``find_class`` records the name
and returns an inert stand-in (nothing is imported or called).  Checked on every input:

1. **sound**: the names the real unpickler looked up, in the order it first looked them up,
   are the first names the scan reports (a scan entry "computed name" matches any name);
2. **robust**: the scan returns a result and never raises.

The scan may name *more* than the real unpickler looked up: it does not model the type errors
that end a real load early (REDUCE of a non-callable...), so it goes on and names what follows.
Any counterexample is printed (hypothesis shrinks it) and the exit status is 1.
"""
from __future__ import annotations

import argparse
import io
import pickle
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from cnnvis_gui.models.pickle_scan import COMPUTED_NAME, _fix_import, scan_globals  # noqa: E402

NAMES = ("posix", "system", "numpy", "dtype", "builtins", "eval", "collections", "OrderedDict", "a b", "\u00e9")


class _Inert:
    """What the recording unpickler returns for every global: accepts anything, does nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _Recorder(pickle.Unpickler):
    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data))
        self.looked_up: list = []

    def find_class(self, module, name):
        self.looked_up.append((module, name))
        return _Inert


#: memo indices above this are not given to the real unpickler: CPython's memo is an array, and
#: LONG_BINPUT 2**30 would make it fill gigabytes (the scan itself keeps a dict)
MAX_REAL_MEMO_INDEX = 100_000


def _memo_within_bounds(data: bytes) -> bool:
    import pickletools
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(arg) > MAX_REAL_MEMO_INDEX:
                return False
    except Exception:  # noqa: BLE001 - the real unpickler stops at the same malformed opcode
        pass
    return True


def real_lookups(data: bytes):
    """The names CPython's unpickler looks up for ``data``, in order (it stops at its first error);
    None when ``data`` would make it allocate a huge memo (not run)."""
    if not _memo_within_bounds(data):
        return None
    r = _Recorder(data)
    try:
        r.load()
    except Exception:  # noqa: BLE001 - any error ends the load, as it would for a user
        pass
    return r.looked_up


def check(data: bytes, max_pickles: int = 1) -> None:
    """Raise AssertionError when the scan of ``data`` misses or misorders a real lookup."""
    scan = scan_globals(data, max_pickles=max_pickles)
    looked_up = real_lookups(data)
    if looked_up is None:
        return
    seen: list = []
    for module, name in looked_up:
        if (module, name) not in seen:
            seen.append((module, name))
    assert len(scan.globals) >= len(seen), (data, seen, scan)
    for (module, name), reported in zip(seen, scan.globals):
        assert reported in (f"{module}.{name}", _fix_import(module, name, 0), COMPUTED_NAME), (data, seen, scan)


# ------------------------------------------------------------------ the inputs
def _su(s: str) -> bytes:
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


_name = st.sampled_from(NAMES)
_idx = st.integers(0, 12)
_op = st.one_of(
    _name.map(_su),                                                         # SHORT_BINUNICODE
    _name.map(lambda s: b"X" + struct.pack("<I", len(s)) + s.encode()),     # BINUNICODE
    _name.map(lambda s: b"V" + s.encode() + b"\n"),                         # UNICODE (text)
    _name.map(lambda s: b"U" + bytes([len(s)]) + s.encode()),               # SHORT_BINSTRING
    st.sampled_from([b"(", b"0", b"1", b"2", b"\x94", b"\x93", b"N", b"K\x01", b")", b"]", b"}", b"\x85",
                     b"\x86", b"\x87", b"t", b"l", b"a", b"e", b"s", b"u", b"R", b"b", b"\x81", b"o",
                     b"\x88", b"\x95" + struct.pack("<Q", 3)]),
    _idx.map(lambda i: b"q" + bytes([i])), _idx.map(lambda i: b"h" + bytes([i])),          # BINPUT / BINGET
    _idx.map(lambda i: b"r" + struct.pack("<I", i)), _idx.map(lambda i: b"j" + struct.pack("<I", i)),
    _idx.map(lambda i: b"p%d\n" % i), _idx.map(lambda i: b"g%d\n" % i),                     # PUT / GET
    st.tuples(_name, _name).map(lambda t: b"c%s\n%s\n" % (t[0].encode(), t[1].encode())),  # GLOBAL
    st.tuples(_name, _name).map(lambda t: b"i%s\n%s\n" % (t[0].encode(), t[1].encode())),  # INST
)
_idx3 = st.integers(0, 3)
#: only the ops that move names around: the memo and stack games a decoy needs, found far sooner
_stack_op = st.one_of(_name.map(_su), st.sampled_from([b"(", b"0", b"1", b"2", b"\x94", b"\x93", b"\x93", b"N"]),
                      _idx3.map(lambda i: b"q" + bytes([i])), _idx3.map(lambda i: b"h" + bytes([i])),
                      _idx3.map(lambda i: b"r" + struct.pack("<I", i)), _idx3.map(lambda i: b"j" + struct.pack("<I", i)))
stack_games = st.lists(_stack_op, max_size=24).map(lambda ops: b"\x80\x04" + b"".join(ops) + b".")
programs = st.tuples(st.sampled_from([b"", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"]),
                     st.lists(_op, max_size=40)).map(lambda t: t[0] + b"".join(t[1]) + b".")


def _real_pickle() -> bytes:
    import zipfile
    import torch
    from torch import nn
    buf = io.BytesIO()
    torch.save({"state_dict": nn.Conv2d(3, 2, 3).state_dict(), "epoch": 1}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


def mutants(seed_pickle: bytes):
    edit = st.tuples(st.integers(0, len(seed_pickle) - 1), st.sampled_from(["set", "insert", "delete"]),
                     st.integers(0, 255))

    def apply(edits):
        b = bytearray(seed_pickle)
        for at, how, value in edits:
            at = min(at, len(b) - 1)
            if how == "set":
                b[at] = value
            elif how == "insert":
                b.insert(at, value)
            elif len(b) > 1:
                del b[at]
        return bytes(b)
    return st.lists(edit, min_size=1, max_size=6).map(apply)


def run(examples: int, seed: int | None = None) -> dict:
    """Run every input kind for ``examples`` examples; returns {kind: seconds}. Raises on a counterexample."""
    timings = {}
    kinds = {"stack": stack_games, "programs": programs, "bytes": st.binary(max_size=300),
             "mutants": mutants(_real_pickle())}
    for kind, strategy in kinds.items():
        @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
                  suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
        @given(strategy)
        def prop(data):
            check(data)
        if seed is not None:
            prop = __import__("hypothesis").seed(seed)(prop)
        t0 = time.perf_counter()
        prop()
        timings[kind] = time.perf_counter() - t0
    return timings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=20000, help="examples per input kind (default 20000)")
    ap.add_argument("--seed", type=int, help="hypothesis seed (default: derandomized)")
    args = ap.parse_args(argv)
    try:
        timings = run(args.examples, args.seed)
    except AssertionError as e:
        print(f"fuzz_pickle_scanner: counterexample: {e}", file=sys.stderr)
        return 1
    for kind, s in timings.items():
        print(f"{kind:9s} {args.examples} examples, no counterexample, {s:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
