"""Progress of slow work and the time it has left: one mechanism for the command line and the window.

A :class:`Progress` counts work done out of a known total and hands snapshots
(:class:`ProgressReport`: done, total, rate, time left, one readable line) to a listener.  It
knows nothing about where they go.  Two listeners cover every front end:

* :func:`stderr_progress` -- a tqdm bar when stderr is a terminal, and log-style lines when it is
  not (a log file, a batch job, ``nohup``), so a 40-minute run never looks dead::

      cnnvis export: 12/160 images (8%), 1.9 s/image, about 4 min 41 s left

* any callable ``listener(report)`` -- the window forwards reports to its status bar through a
  Qt signal (reports are immutable; the listener runs in the thread that advances the work).

Use it like this::

    with stderr_progress("cnnvis export", total=len(items), unit="image", quiet=args.quiet) as p:
        for item in items:
            ...
            p.advance()           # or p.update(done), p.note("activation 3.2")
            p.write("cnnvis: warning: ...")   # a message that does not tear the bar

    p = Progress("Score-CAM", total=1280, unit="masked input", listener=signal.emit, estimate_s=190)

The time left is the work still to do at the rate measured since the first step finished (the
first step pays for warm-up: caches, page faults, lazy initialization); before any step has
finished it is the caller's own ``estimate_s`` when there is one (Score-CAM estimates its cost from
the frame's forward time before it starts).
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .text import printable, raw_stream

__all__ = ["Progress", "ProgressReport", "Cancelled", "stderr_progress", "format_duration", "roughly",
           "LOG_INTERVAL_S"]

#: seconds between two log lines on a non-terminal stderr (``CNNVIS_PROGRESS_S`` overrides it)
LOG_INTERVAL_S = 10.0


class Cancelled(Exception):
    """Raised by a listener to stop the work it watches (a newer request arrived, the user cancelled).

    The work stops at its next step and leaves nothing half-done behind; the caller that raised it
    catches it.
    """


def format_duration(seconds: float) -> str:
    """A duration as a person says it: ``"under 1 s"``, ``"42 s"``, ``"4 min 41 s"``, ``"2 h 05 min"``."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    s = max(0.0, float(seconds))
    if s < 1.0:
        return "under 1 s"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, s = divmod(s, 60)
        return f"{m} min {s:02d} s" if s else f"{m} min"
    h, rest = divmod(s, 3600)
    return f"{h} h {rest // 60:02d} min"


def roughly(seconds: float) -> str:
    """An estimate as a person says it: ``"about 4 min 41 s"``, ``"under 1 s"``."""
    text = format_duration(seconds)
    return text if text in ("under 1 s", "unknown") else f"about {text}"


def _plural(unit: str, n: float) -> str:
    if not unit or n == 1:
        return unit
    return unit if unit.endswith("s") else unit + "s"


def _count_text(done: float) -> str:
    """The units done as the line shows them: whole units as ``"12"``; a unit part-way done with two
    decimals at most (``"0.33"``, ``"2.75"``), so the count and the percentage beside it agree (a lone
    image a third through its maps is ``0.33/1 image (33%)``, not ``0/1 image (33%)``)."""
    whole = math.floor(done + 1e-9)
    if done - whole < 5e-3:
        return str(int(whole))
    if math.ceil(done) - done < 5e-3:
        return f"{done:.2f}"          # 0.999 -> "1.00": not yet done, shown as not whole
    return f"{done:.2f}".rstrip("0")


@dataclass(frozen=True)
class ProgressReport:
    """One immutable snapshot of a :class:`Progress`.

    ``done`` may be fractional (an image half through its maps); lines show it with two decimals at most
    (``0.33/1 image (33%)``), whole units as integers.
    ``rate`` is in units per second (None until measurable), ``left_s`` the estimated seconds
    left (None when unknown), ``finished`` True for the last report of the work.
    """

    what: str
    done: float
    total: int | None
    unit: str
    elapsed_s: float
    rate: float | None
    left_s: float | None
    finished: bool = False
    note: str = ""

    @property
    def fraction(self) -> float | None:
        """done / total in [0, 1], or None without a total."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))

    def rate_text(self) -> str:
        """``"3.2 images/s"``, or ``"1.9 s/image"`` for work slower than one unit a second."""
        r = self.rate
        if not r or not math.isfinite(r):
            return ""
        unit = self.unit or "step"
        if r >= 1.0:
            return f"{r:.3g} {_plural(unit, 2)}/s"
        return f"{1.0 / r:.3g} s/{unit}"

    def left_text(self) -> str:
        """``"about 4 min 41 s left"`` (``"under 1 s left"``), or "" when unknown."""
        if self.left_s is None:
            return ""
        return f"{roughly(self.left_s)} left"

    def status(self) -> str:
        """The report without the work's name: ``"12/160 images (8%), 1.9 s/image, about 4 min 41 s left"``."""
        count = _count_text(self.done)
        unit = _plural(self.unit, self.total if self.total is not None else self.done)
        if self.total is not None:
            parts = [f"{count}/{self.total}" + (f" {unit}" if unit else "") +
                     f" ({100.0 * (self.fraction or 0.0):.0f}%)"]
        else:
            parts = [count + (f" {unit}" if unit else "")]
        if self.finished:
            parts.append(f"done in {format_duration(self.elapsed_s)}")
        else:
            rate = self.rate_text()
            if rate:
                parts.append(rate)
            if self.left_s is not None:
                parts.append(self.left_text())
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)

    def line(self) -> str:
        """``"<what>: <status>"``: one log line."""
        return f"{self.what}: {self.status()}" if self.what else self.status()


Listener = Callable[[ProgressReport], None]


class Progress:
    """Counts ``done`` out of ``total`` units of work and reports to a listener.

    Parameters
    ----------
    what : str
        The work's name, the start of every line (``"cnnvis export"``, ``"Score-CAM"``).
    total : int, optional
        Units of work in all; None when unknown (no percentage, no time left).
    unit : str
        The unit's name in the singular (``"image"``, ``"masked input"``, ``"step"``).
    listener : callable, optional
        ``listener(ProgressReport)``; called at the start, on each change (at most every
        ``interval_s`` seconds), and once more when the work finishes.  It may raise
        :class:`Cancelled` to stop the work.
    estimate_s : float, optional
        The caller's own estimate of the whole work's seconds, used for the time left until a
        step has been measured.
    interval_s : float
        Least time between two reports of the same work (start and finish always report).
    clock : callable
        Seconds as a float (``time.monotonic``; tests pass a fake clock).

    The object is thread-safe: a worker may advance it while another thread reads :meth:`report`.
    Used as a context manager it reports the finish on exit (also when the work raised).
    """

    def __init__(self, what: str = "", total: int | None = None, unit: str = "",
                 listener: Listener | None = None, estimate_s: float | None = None,
                 interval_s: float = 0.2, clock: Callable[[], float] = time.monotonic):
        self.what, self.unit = what, unit
        self.total = None if total is None else max(0, int(total))
        self.listener = listener
        self.estimate_s = estimate_s
        self.interval_s = float(interval_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._t0 = clock()
        self._first: tuple[float, int] | None = None   # (time, done) when the first step finished
        self._done = 0.0
        self._note = ""
        self._finished = False
        self._last_emit = -math.inf
        self._emit(force=True)

    # ------------------------------------------------------------------ counting
    @property
    def done(self) -> float:
        return self._done

    @property
    def finished(self) -> bool:
        return self._finished

    def advance(self, n: float = 1) -> None:
        """``n`` more units are done."""
        with self._lock:
            done = self._done + n
        self.update(done)

    def update(self, done: float, note: str | None = None) -> None:
        """Set the units done so far, a fraction allowed (and optionally the note shown after the
        time left)."""
        with self._lock:
            self._done = max(0.0, float(done))
            if note is not None:
                self._note = note
            if self._first is None and self._done > 0:
                self._first = (self._clock(), self._done)
        self._emit()

    def note(self, text: str) -> None:
        """A short live detail shown at the end of the line (``"activation 3.21"``, ``"2 skipped"``)."""
        with self._lock:
            self._note = text
        self._emit()

    def set_total(self, total: int | None) -> None:
        with self._lock:
            self.total = None if total is None else max(0, int(total))
        self._emit(force=True)

    def finish(self) -> None:
        """The work ended (completed, cancelled or failed): the final report."""
        if self._finished:
            return
        self._finished = True
        self._emit(force=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    # ------------------------------------------------------------------ reporting
    def report(self) -> ProgressReport:
        """A snapshot: done, total, the measured rate and the time left."""
        with self._lock:
            now = self._clock()
            done, total, first = self._done, self.total, self._first
            elapsed = now - self._t0
            rate = left = None
            if first is not None and done > first[1] and now > first[0]:
                rate = (done - first[1]) / (now - first[0])     # warm-up step excluded
            elif first is not None and elapsed > 0:
                rate = done / elapsed
            if total is not None and not self._finished:
                todo = max(0, total - done)
                if rate:
                    left = todo / rate
                elif self.estimate_s is not None:
                    left = max(0.0, self.estimate_s - elapsed)
            return ProgressReport(self.what, done, total, self.unit, elapsed, rate, left,
                                  self._finished, self._note)

    def _emit(self, force: bool = False) -> None:
        if self.listener is None:
            return
        now = self._clock()
        if not force and now - self._last_emit < self.interval_s:
            return
        self._last_emit = now
        self.listener(self.report())


# ---------------------------------------------------------------------------- stderr
class _StderrListener:
    """A tqdm bar on a terminal; otherwise log lines, at most one every ``interval_s`` seconds."""

    def __init__(self, stream, terminal: bool, interval_s: float, clock):
        self.stream, self.terminal, self.interval_s, self.clock = stream, terminal, interval_s, clock
        self.bar = None
        self._last_line = -math.inf
        self._started = False

    def __call__(self, r: ProgressReport) -> None:
        if self.terminal:
            self._draw(r)
            return
        now = self.clock()
        if r.finished or not self._started or now - self._last_line >= self.interval_s:
            self._started = True
            self._last_line = now
            if r.done == 0 and not r.finished:
                head = f"{r.what}: starting" + (f", {r.total} {_plural(r.unit, r.total)}" if r.total is not None else "")
                if r.left_s is not None:
                    head += f", {roughly(r.left_s)} estimated"
                print(head, file=self.stream, flush=True)
            else:
                print(r.line(), file=self.stream, flush=True)

    def _draw(self, r: ProgressReport) -> None:
        if self.bar is None:
            from tqdm import tqdm
            # the bar draws with \r on purpose: it writes under the terminal filter (core/text.py)
            self.bar = tqdm(total=r.total, desc=printable(r.what, newlines=False), unit=r.unit or "it",
                            file=raw_stream(self.stream), dynamic_ncols=True)
        self.bar.n = int(math.floor(r.done + 1e-9))
        if r.total is not None and self.bar.total != r.total:
            self.bar.total = r.total
        if r.note:
            self.bar.set_postfix_str(printable(r.note, newlines=False), refresh=False)
        self.bar.refresh()
        if r.finished:
            self.bar.close()

    def write(self, text: str) -> None:
        if self.bar is not None and not self.bar.disable:    # above the bar, on its stream, filtered here
            self.bar.write(printable(text), file=raw_stream(self.stream))
        else:
            print(text, file=self.stream, flush=True)


class _StderrProgress(Progress):
    """A :class:`Progress` drawn on stderr; :meth:`write` prints a message without tearing the bar."""

    def __init__(self, *args, sink: _StderrListener | None = None, **kwargs):
        self._sink = sink
        super().__init__(*args, **kwargs)

    def write(self, text: str) -> None:
        """Print one line to the stream (above the bar on a terminal)."""
        if self._sink is not None:
            self._sink.write(text)
        else:
            print(text, file=sys.stderr, flush=True)


def stderr_progress(what: str, total: int | None = None, unit: str = "", quiet: bool = False,
                    stream=None, interval_s: float | None = None, estimate_s: float | None = None,
                    clock: Callable[[], float] = time.monotonic) -> Progress:
    """A :class:`Progress` shown on ``stream`` (stderr): a bar on a terminal, log lines otherwise.

    On a non-terminal the first line comes at once (with ``estimate_s`` when given), then at most
    one every ``interval_s`` seconds (default :data:`LOG_INTERVAL_S`, or ``$CNNVIS_PROGRESS_S``),
    and a last line when the work finishes.  ``quiet`` shows nothing (the object still counts,
    and :meth:`write` still prints).  Use it as a context manager, or call :meth:`Progress.finish`.
    """
    stream = sys.stderr if stream is None else stream
    if interval_s is None:
        try:
            interval_s = float(os.environ.get("CNNVIS_PROGRESS_S", LOG_INTERVAL_S))
        except ValueError:
            interval_s = LOG_INTERVAL_S
    terminal = bool(getattr(stream, "isatty", lambda: False)())
    sink = _StderrListener(stream, terminal, max(0.0, interval_s), clock)
    return _StderrProgress(what, total, unit, listener=None if quiet else sink, estimate_s=estimate_s,
                           interval_s=0.1 if terminal else 0.0, clock=clock, sink=sink)
