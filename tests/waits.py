"""Waiting in tests: on the state a test needs, with one generous bound, never on the clock.

The machine the suite runs on is shared: with a load average past 10 on two cores, a render that
takes 50 ms idle takes seconds, and a 10 s wait on a signal failed without any bug (issue 30).
A test that fails from load hides real catches and trains people to re-run, so:

- every wait is on the *state* the test goes on to check (the newest request drawn, a status
  text, a worker gone), or on a signal connected before the action that emits it;
- every wait has the same bound, :data:`WAIT_S` (``CNNVIS_TEST_WAIT_S``, default 180 s), and every
  child process :data:`CHILD_S` (``CNNVIS_TEST_CHILD_S``, default 600 s).  A wait
  returns as soon as its state holds, so the bound costs nothing when the code works; it only
  decides how long a test that will never see its state takes to fail;
- no test asserts how long something took.  A property that is about time (a pace, a back-off,
  a hold) is checked with an injected clock or by what it leaves behind.
"""
from __future__ import annotations

import os
import time

#: seconds any wait may take before the test fails (the machine may be loaded far past its cores)
WAIT_S = float(os.environ.get("CNNVIS_TEST_WAIT_S", "") or 180.0)
WAIT_MS = int(WAIT_S * 1000)
#: seconds a child process (a fresh interpreter: importing torch alone took over 60 s at a load
#: average of 30) may run before the test fails (``CNNVIS_TEST_CHILD_S``)
CHILD_S = float(os.environ.get("CNNVIS_TEST_CHILD_S", "") or 600.0)


def until(qtbot, condition) -> None:
    """Run the Qt event loop until ``condition()`` is true (fail after :data:`WAIT_S`)."""
    qtbot.waitUntil(condition, timeout=WAIT_MS)


def signal(qtbot, sig, check=None):
    """``with signal(qtbot, obj.someSignal):`` -- an emission of ``sig`` (whose arguments pass
    ``check``, when given) during the block, waited for at the end of it."""
    return qtbot.waitSignal(sig, timeout=WAIT_MS, check_params_cb=check)


def settled(win) -> bool:
    """The window has nothing left to do: no re-tile pending, no request queued in the worker,
    and the newest request -- for the current model and frame -- is the result on screen."""
    res = win.last_result
    return (res is not None and not win._resize_timer.isActive() and not win.worker.busy()
            and res.gen == win.session.gen and res.seq == win.seq and res.frame_id == win.frame_id
            and not res.partial)


def idle(qtbot, win):
    """Wait until the window has :func:`settled`; return the result it shows."""
    until(qtbot, lambda: settled(win))
    return win.last_result


def drawn(qtbot, win, check):
    """Wait until the window has :func:`settled` on a result for which ``check(result)`` holds."""
    until(qtbot, lambda: settled(win) and check(win.last_result))
    return win.last_result


def poll(condition, step: float = 0.005) -> bool:
    """For threads without an event loop: True as soon as ``condition()`` holds, False after
    :data:`WAIT_S` (``assert poll(...)`` in a test)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())
