"""Which globals a pickle would look up, found by running its opcodes on a model of the machine.

Unpickling calls ``find_class(module, name)`` for ``GLOBAL``, ``STACK_GLOBAL``, ``INST`` and
the ``EXT`` codes, and whatever it returns can then be called (``REDUCE``, ``NEWOBJ``, ``OBJ``,
``BUILD``): those names are what a file asks to run.  ``STACK_GLOBAL`` takes its module and
name from the stack, where they may have come from the memo (``BINGET`` of a string put there
much earlier), so reading the last strings in the byte stream names the wrong thing: a file
can push decoy strings right before and have the refusal name ``numpy.dtype`` while
``posix.system`` runs.  :func:`scan_globals` keeps the unpickler's own stack, mark stack and
memo (protocols 0 to 5: ``PUT/BINPUT/LONG_BINPUT/MEMOIZE``, ``GET/BINGET/LONG_BINGET``,
``DUP``, ``POP``, ``POP_MARK``, ``FRAME``...) with the values that matter -- strings --
tracked exactly and everything else as an opaque object, and stops where the real
unpickler would stop with an error.  Nothing is imported, called or built.

The model follows CPython's ``Modules/_pickle.c`` (and ``pickle.py``): the opcodes' stack
effects are pickletools' declarations, binary arguments are read by pickletools' readers and
text arguments as ``_pickle.c`` reads them (GLOBAL's two UTF-8 lines, PUT/GET's number);
``GLOBAL`` and ``INST`` names of protocols 0-2 are mapped as ``fix_imports`` maps them
(``__builtin__`` -> ``builtins``).
"""
from __future__ import annotations

import _compat_pickle
import codecs
import copyreg
import io
import pickletools
from dataclasses import dataclass, field

__all__ = ["PickleScan", "scan_globals", "COMPUTED_NAME"]

#: what is reported for a ``STACK_GLOBAL`` whose module or name is not a constant string (it was
#: computed while unpickling, by a call of a global that is reported too)
COMPUTED_NAME = "(a global whose name is computed while loading)"
#: the most pickles read back to back (legacy torch files hold five, then raw storage bytes)
MAX_PICKLES = 8


class _Mark:
    """The ``MARK`` opcode's entry: ops that take a stack slice pop down to it."""

    def __repr__(self):
        return "MARK"


class _Obj:
    """Any value the scan does not follow (a number, a container, a call's result)."""

    def __repr__(self):
        return "<obj>"


_MARK, _OBJ = _Mark(), _Obj()


class _Stop(Exception):
    """The real unpickler raises here (stack underflow, unknown memo key...): nothing after runs."""


@dataclass
class PickleScan:
    """The globals a pickle looks up, in the order it looks them up.

    ``complete`` is False when the scan stopped before the pickle ended: at the byte budget
    (``truncated``) or where the real unpickler would raise (``stopped``, the reason).
    """

    globals: list = field(default_factory=list)
    pickles: int = 0
    truncated: bool = False
    stopped: str = ""

    def add(self, name: str) -> None:
        if name not in self.globals:
            self.globals.append(name)

    @property
    def complete(self) -> bool:
        return not self.truncated and not self.stopped


def _fix_import(module: str, name: str, proto: int) -> str:
    """``module.name`` as ``find_class`` resolves it (``fix_imports`` for protocols below 3)."""
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


class _Machine:
    """The unpickler's stack and memo, over one pickle (``run`` returns at its STOP)."""

    _STRINGS = {"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
                # protocol 0-2 byte strings: str under Python 3's default encoding; counted as such
                "STRING", "BINSTRING", "SHORT_BINSTRING"}
    _PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
    _GETS = {"GET", "BINGET", "LONG_BINGET"}
    _KEEP_TOP = {"READONLY_BUFFER", "READWRITE_BUFFER"}

    def __init__(self, scan: PickleScan):
        self.scan = scan
        self.stack: list = []
        self.memo: dict = {}
        self.proto = 0

    # ---- the stack, with the unpickler's checks
    def push(self, v) -> None:
        self.stack.append(v)

    def pop(self):
        if not self.stack or self.stack[-1] is _MARK:
            raise _Stop("stack underflow")
        return self.stack.pop()

    def top(self):
        if not self.stack or self.stack[-1] is _MARK:
            raise _Stop("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> None:
        while self.stack:
            if self.stack.pop() is _MARK:
                return
        raise _Stop("no MARK to pop to")

    # ---- one opcode
    def step(self, op, arg) -> bool:
        """Apply ``op``; True at STOP."""
        name = op.name
        if name == "PROTO":
            self.proto = int(arg)
        elif name == "FRAME":
            pass
        elif name == "STOP":
            self.pop()
            return True
        elif name in self._STRINGS:
            self.push(str(arg))
        elif name == "MARK":
            self.push(_MARK)
        elif name == "POP":
            if not self.stack:
                raise _Stop("stack underflow")
            self.stack.pop()                      # a MARK on top is popped as well (as _pickle.c does)
        elif name == "DUP":
            self.push(self.top())
        elif name in self._PUTS:
            self.memo[arg] = self.top()
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.top()
        elif name in self._GETS:
            if arg not in self.memo:
                raise _Stop(f"memo key {arg} not found")
            self.push(self.memo[arg])
        elif name == "GLOBAL":
            module, attr = arg
            self.scan.add(_fix_import(module, attr, self.proto))
            self.push(_OBJ)
        elif name == "STACK_GLOBAL":
            attr, module = self.pop(), self.pop()
            if isinstance(attr, str) and isinstance(module, str):
                self.scan.add(f"{module}.{attr}")
            else:       # a call's result (or bytes, which the unpickler refuses): not known here
                self.scan.add(COMPUTED_NAME)
            self.push(_OBJ)
        elif name == "INST":
            module, attr = arg
            self.scan.add(_fix_import(module, attr, self.proto))
            self.pop_mark()
            self.push(_OBJ)
        elif name in ("EXT1", "EXT2", "EXT4"):
            key = copyreg._inverted_registry.get(int(arg))
            if key is None:
                raise _Stop(f"unregistered extension code {arg}")
            self.scan.add(_fix_import(key[0], key[1], self.proto))
            self.push(_OBJ)
        elif name in self._KEEP_TOP:
            self.top()
        else:
            self._generic(op)
        return False

    def _generic(self, op) -> None:
        """Pop what ``op`` declares it takes (down to a MARK for a stack slice), push opaque results."""
        before = list(op.stack_before)
        if pickletools.markobject in before:
            i = before.index(pickletools.markobject)
            self.pop_mark()
            below = before[:i]
        else:
            below = before
        for _ in below:
            self.pop()
        for _ in op.stack_after:
            self.push(_OBJ)


_CODE2OP = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
#: text opcodes: their argument is one line (GLOBAL and INST: two), read as the C unpickler reads it
_LINE_OPS = {"INT", "LONG", "FLOAT", "STRING", "UNICODE", "PUT", "GET", "PERSID", "GLOBAL", "INST"}


def _line(stream) -> bytes:
    line = stream.readline()
    if not line.endswith(b"\n"):
        raise ValueError("pickle exhausted inside a text argument (no newline)")
    return line[:-1]


def _text_arg(name: str, stream):
    """The argument of a text opcode, read as ``Modules/_pickle.c`` reads it (pickletools is stricter:
    it reads GLOBAL's two lines as ASCII joined by a space, which a name may itself contain)."""
    if name in ("GLOBAL", "INST"):
        module, attr = _line(stream), _line(stream)
        try:
            return module.decode("utf-8"), attr.decode("utf-8")
        except UnicodeDecodeError:
            raise _Stop("a global's name that is not UTF-8") from None
    raw = _line(stream)
    if name in ("PUT", "GET"):
        try:
            value = int(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise _Stop(f"{name} index {raw[:20]!r} is not a number") from None
        if value < 0:
            raise _Stop(f"negative {name} index")
        return value
    if name == "UNICODE":
        return raw.decode("raw_unicode_escape")
    if name == "STRING":
        if len(raw) < 2 or raw[:1] != raw[-1:] or raw[:1] not in (b"'", b'"'):
            raise _Stop("the STRING opcode argument must be quoted")
        return codecs.escape_decode(raw[1:-1])[0].decode("latin-1")
    return None      # INT, LONG, FLOAT, PERSID: the value is not followed


def _ops(stream):
    """(opcode, argument, position) of each opcode up to STOP; ValueError where the bytes end or are no opcode."""
    while True:
        pos = stream.tell()
        code = stream.read(1)
        op = _CODE2OP.get(code)
        if op is None:
            raise ValueError("pickle exhausted before its STOP" if not code else f"unknown opcode {code!r} at {pos}")
        if op.arg is None:
            arg = None
        elif op.name in _LINE_OPS:
            arg = _text_arg(op.name, stream)
        else:
            arg = op.arg.reader(stream)
        yield op, arg, pos
        if op.name == "STOP":
            return


def scan_globals(data: bytes, max_pickles: int = 1, more_data: bool = False) -> PickleScan:
    """Scan up to ``max_pickles`` pickles at the start of ``data`` and name every global they look up.

    Parameters
    ----------
    data : bytes
        One pickle, or several back to back (a legacy ``torch.save`` file starts with five, then
        raw storage bytes that are never unpickled: give ``max_pickles=5`` for it).
    max_pickles : int
        How many pickles the loader reads from the start.
    more_data : bool
        ``data`` is only the first part of the file: a scan that runs out of it is marked
        ``truncated`` (its globals past that point are not known).

    Returns
    -------
    PickleScan
    """
    stream = io.BytesIO(data)
    scan = PickleScan()
    for _ in range(max(1, min(int(max_pickles), MAX_PICKLES))):
        if stream.tell() >= len(data):
            break
        machine = _Machine(scan)
        try:
            for op, arg, _pos in _ops(stream):
                if machine.step(op, arg):
                    break
        except _Stop as e:
            scan.stopped = str(e)
            break
        except Exception as e:  # noqa: BLE001 - a malformed opcode or argument, or the data ran out
            if stream.tell() >= len(data) and more_data:
                scan.truncated = True
            else:
                scan.stopped = f"{type(e).__name__}: {e}"[:160]
            break
        scan.pickles += 1
    return scan
