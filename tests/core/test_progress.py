"""core.progress: the time left, the lines a log gets, the bar a terminal gets."""
from __future__ import annotations

import io

import pytest

from cnnvis_gui.core.progress import Progress, ProgressReport, format_duration, stderr_progress


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("s, text", [(0.2, "under 1 s"), (1.4, "1 s"), (42, "42 s"), (60, "1 min"),
                                     (281, "4 min 41 s"), (3600, "1 h 00 min"), (7530, "2 h 05 min"),
                                     (float("inf"), "unknown"), (None, "unknown")])
def test_format_duration(s, text):
    assert format_duration(s) == text


def test_time_left_excludes_the_warm_up_step():
    clock, seen = Clock(), []
    p = Progress("job", total=10, unit="image", listener=seen.append, interval_s=0, clock=clock)
    assert seen[0].done == 0 and seen[0].left_s is None and seen[0].rate is None
    clock.t += 30.0            # the first image pays for warm-up
    p.advance()
    clock.t += 4.0             # then 2 s an image
    p.advance(2)
    r = p.report()
    assert r.rate == pytest.approx(0.5) and r.left_s == pytest.approx(7 * 2.0)
    assert r.status() == "3/10 images (30%), 2 s/image, about 14 s left"
    assert r.line() == "job: " + r.status()
    p.finish()
    assert seen[-1].finished and seen[-1].left_s is None
    assert seen[-1].line() == "job: 3/10 images (30%), done in 34 s"


def test_the_callers_estimate_stands_until_a_step_is_measured():
    clock = Clock()
    p = Progress("Score-CAM", total=1280, unit="masked input", estimate_s=200.0, clock=clock)
    clock.t += 50.0
    assert p.report().left_s == pytest.approx(150.0)
    clock.t += 10.0
    p.update(16)
    clock.t += 6.0
    p.update(32)                                 # 16 inputs in 6 s since the first batch
    assert p.report().left_s == pytest.approx((1280 - 32) * 6.0 / 16)
    assert "masked inputs/s" in p.report().status()


def test_fractional_done_agrees_with_its_percentage_and_fast_rates_per_second():
    clock = Clock()
    p = Progress("x", total=4, unit="image", clock=clock)
    clock.t += 1.0
    p.update(0.5)
    clock.t += 0.1
    p.update(2.75)
    r = p.report()
    assert r.status().startswith("2.75/4 images (69%), 22.5 images/s")
    assert ProgressReport("x", 3, None, "", 1.0, None, None).status() == "3"
    assert ProgressReport("x", 3.0000001, 4, "image", 1.0, None, None).status() == "3/4 images (75%)"


@pytest.mark.parametrize("done, total, start", [
    (1 / 3, 1, "0.33/1 image (33%)"),       # the reported line was "0/1 image (33%)"
    (2 / 3, 1, "0.67/1 image (67%)"),
    (0.5, 2, "0.5/2 images (25%)"),
    (12.1, 160, "12.1/160 images (8%)"),
    (0.999, 1, "1.00/1 image (100%)"),
])
def test_a_unit_part_way_done_is_counted_as_the_percentage_says(done, total, start):
    """The count and the percentage beside it are the same number: a lone image a third through its
    maps was printed ``0/1 image (33%)`` by cnnvis export."""
    status = ProgressReport("cnnvis export", done, total, "image", 1.0, None, None).status()
    assert status == start
    count = float(status.split("/")[0])
    pct = float(status.split("(")[1].split("%")[0])
    assert round(100 * count / total) == pytest.approx(pct, abs=1)


def test_listener_is_throttled_but_start_and_finish_always_report():
    clock, seen = Clock(), []
    p = Progress("x", total=1000, listener=seen.append, interval_s=1.0, clock=clock)
    for i in range(1, 1001):
        clock.t += 0.01
        p.update(i)
    p.finish()
    assert 9 <= len(seen) <= 13 and seen[0].done == 0 and seen[-1].finished and seen[-1].done == 1000


def test_non_terminal_stderr_gets_log_lines_at_the_interval():
    clock, out = Clock(), io.StringIO()
    with stderr_progress("cnnvis export", 20, "image", stream=out, interval_s=10.0, estimate_s=90.0,
                         clock=clock) as p:
        for _ in range(20):
            clock.t += 3.0
            p.advance()
        p.write("cnnvis: warning: something")
    lines = out.getvalue().splitlines()
    assert lines[0] == "cnnvis export: starting, 20 images, about 1 min 30 s estimated"
    progress_lines = [ln for ln in lines[1:-2]]
    # one line when the first image finished, then one per 10 s of a 60 s run
    assert 5 <= len(progress_lines) <= 7, lines
    assert all(ln.startswith("cnnvis export: ") and "s left" in ln for ln in progress_lines)
    assert lines[-2] == "cnnvis: warning: something"
    assert lines[-1] == "cnnvis export: 20/20 images (100%), done in 1 min"
    assert "\r" not in out.getvalue()


def test_quiet_prints_no_progress_but_write_still_prints():
    out = io.StringIO()
    with stderr_progress("x", 3, "image", quiet=True, stream=out) as p:
        p.advance(3)
        p.write("warning line")
    assert out.getvalue() == "warning line\n"


def test_terminal_gets_a_bar():
    out = Tty()
    with stderr_progress("cnnvis optimize", 50, "step", stream=out) as p:
        p.update(25, note="activation 3.2")
        p.write("a message")
    text = out.getvalue()
    assert "\r" in text and "cnnvis optimize" in text and "activation 3.2" in text and "a message" in text
    last = text.rsplit("\r", 1)[-1]
    assert "25/50" in last and last.endswith("\n")   # closed where the work stopped


def test_environment_sets_the_log_interval(monkeypatch):
    clock, out = Clock(), io.StringIO()
    monkeypatch.setenv("CNNVIS_PROGRESS_S", "0")
    with stderr_progress("x", 5, "image", stream=out, clock=clock) as p:
        for _ in range(5):
            clock.t += 1.0
            p.advance()
    assert len(out.getvalue().splitlines()) == 1 + 5 + 1


# ---------------------------------------------------------------------- Score-CAM's progress
def _scorecam_frame():
    import torch
    from torch import nn
    from cnnvis_gui.core import Visualizer
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.ReLU(), nn.Conv2d(24, 40, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(40, 5)).eval()
    return Visualizer(model).forward(torch.randn(2, 3, 16, 16))


def test_scorecam_reports_its_estimated_cost_first_then_every_masked_batch():
    from cnnvis_gui.core import cams
    frame = _scorecam_frame()
    seen = []
    cam = frame.cam("6", 1, "2", "scorecam", progress=seen.append)
    plain = frame.cam("6", 1, "2", "scorecam")
    assert torch_equal(cam, plain)                                   # watching changes nothing
    first, last = seen[0], seen[-1]
    A = frame.activations("2")
    n, est = cams.scorecam_cost(frame, A)
    assert (first.what, first.unit, first.done, first.total) == ("Score-CAM", "masked input", 0, n) and n == 80
    assert first.left_s == pytest.approx(est, rel=0.5) and est > 0   # the estimate, before any forward
    assert last.finished and last.done == n
    dones = [r.done for r in seen]
    assert dones == sorted(dones) and len(set(dones)) >= n // cams.SCORECAM_BATCH


def test_a_listener_stops_scorecam():
    from cnnvis_gui.core.progress import Cancelled
    frame = _scorecam_frame()
    calls = []

    def stop_after_first_batch(report):
        calls.append(report.done)
        if report.done > 0 and not report.finished:
            raise Cancelled()
    with pytest.raises(Cancelled):
        frame.cam("6", 1, "2", "scorecam", progress=stop_after_first_batch)
    assert calls[0] == 0 and 0 < calls[-1] < 80                          # stopped after one batch of 16 x 2


def torch_equal(a, b):
    import torch
    return torch.equal(a, b)
