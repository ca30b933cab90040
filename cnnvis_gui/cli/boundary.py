"""The one error boundary of the command lines: any exception becomes one line on stderr and an exit code.

``cnnvis`` (:func:`cnnvis_gui.cli.main`) and the window's command-line start
(:func:`cnnvis_gui.qt.app.main`) run their whole body inside :func:`guarded`:

- stdout and stderr pass through :class:`~cnnvis_gui.core.text.TerminalStream` for the whole
  run, so a name, label or architecture string from a file shows its control characters
  (``\\x1b[2K``) instead of moving the cursor and erasing a real warning;
- an exception of ours (:class:`~cnnvis_gui.core.CnnvisError`, ``UsageError``) prints
  ``prog: error: <message>``; anything else, nobody's plan, prints ``prog: error: <Type>: <first
  line> (run with --traceback for details)`` (:func:`~cnnvis_gui.core.errors.one_line`); never a
  traceback unless ``--traceback`` is given (anywhere on the line), and then the traceback first and
  the same line after it;
- exit codes: 2 for a bad argument or input the user can fix, 1 when the run started and failed
  (the model's forward raised, a file could not be written, an unforeseen error), 130 for Ctrl-C,
  0 when the reader of a pipe went away (``cnnvis info | head``).
"""
from __future__ import annotations

import os
import sys
import traceback

from ..core.errors import CnnvisError, one_line
from ..core.text import TerminalStream, printable
from .codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

__all__ = ["guarded", "exit_code", "error_line", "TRACEBACK_FLAG", "EXIT_INTERRUPTED"]

TRACEBACK_FLAG = "--traceback"
EXIT_INTERRUPTED = 130


def exit_code(error: BaseException) -> int:
    """2 for what the user can fix (a bad argument, a file that will not load), 1 for a run that failed."""
    from ..core import ModelForwardError
    from ..core.files import WriteError
    from ..options import UsageError

    if isinstance(error, (ModelForwardError, WriteError)):
        return EXIT_FAILURE
    if isinstance(error, (UsageError, CnnvisError)):
        return EXIT_USAGE
    return EXIT_FAILURE


def error_line(prog: str, error: BaseException) -> str:
    """``prog: error: <message>``; the further lines of a multi-line message indented under it.

    Only ``\n`` (which our own messages use to list things) starts a line; every other line break a
    file may bring (``\r``, ``\v``, ``\x1c``, U+2028...) is shown escaped like any control character.
    """
    lines = [printable(s, newlines=False) for s in one_line(error).split("\n") if s.strip()] or [type(error).__name__]
    return "\n".join([f"{prog}: error: {lines[0]}"] + [f"  {s}" for s in lines[1:]])


def guarded(body, argv, prog: str) -> int:
    """Run ``body(argv_without_traceback_flag) -> exit code`` inside the boundary; returns the exit code.

    ``SystemExit`` (argparse's ``--help``) passes through unchanged.
    """
    argv = list(argv)
    show_tb = TRACEBACK_FLAG in argv
    argv = [a for a in argv if a != TRACEBACK_FLAG]
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _terminal(out), _terminal(err)
    try:
        return int(body(argv) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `cnnvis info | head`: the reader went away; not an error of ours
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        except (OSError, AttributeError, ValueError):
            pass
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 - the boundary: every error becomes one line
        if show_tb:
            traceback.print_exc(file=sys.stderr)
        print(error_line(prog, e), file=sys.stderr)
        return exit_code(e)
    finally:
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except (OSError, ValueError):
                pass
        sys.stdout, sys.stderr = out, err


def _terminal(stream):
    return stream if stream is None or isinstance(stream, TerminalStream) else TerminalStream(stream)
