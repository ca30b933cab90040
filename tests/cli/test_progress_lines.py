"""Slow commands print log-style progress lines when stderr is not a terminal (a log, a batch job).

The subprocess's stderr is a pipe, exactly what a job scheduler or ``cmd 2> log`` gives.
``CNNVIS_PROGRESS_S=0`` asks for a line at every step, so a short run shows the lines a long one
shows every 10 s.
"""
from __future__ import annotations

import re
import shutil

import pytest

from cnnvis_gui.models import demo_checkpoint, demo_samples

from .test_cli import _env, run_module

needs_shapes = pytest.mark.skipif(not demo_checkpoint("shapes").is_file(),
                                  reason="the shapes demo checkpoint (assets/models/shapes.pth) is not built")

LINE = re.compile(r"^(?P<what>cnnvis [a-z]+(: [^:]+)?): (?P<done>\d+(\.\d+)?)/(?P<total>\d+) (?P<unit>\w+) "
                  r"\((?P<pct>\d+)%\)(?P<rest>.*)$")


def _progress(stderr: str, what: str) -> list:
    return [m for m in map(LINE.match, stderr.splitlines()) if m and m["what"] == what]


@pytest.fixture
def three_images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for p in sorted(demo_samples("shapes"))[:3]:
        shutil.copy(p, d / p.name)
    return d


@needs_shapes
def test_export_and_atlas_print_progress_lines_to_a_pipe(tmp_path, three_images, monkeypatch):
    monkeypatch.setenv("CNNVIS_PROGRESS_S", "0")
    assert _env()["CNNVIS_PROGRESS_S"] == "0"
    r = run_module("export", "--model", "shapes", "--input", three_images, "--layer", "features.8", "--units", "0,1",
                   "--method", "guided,gradcam", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == "cnnvis export: starting, 3 images"
    steps = _progress(r.stderr, "cnnvis export")
    assert steps and all(m["total"] == "3" and m["unit"] == "images" for m in steps)
    done = [float(m["done"]) for m in steps]
    assert done == sorted(done) and done[-1] == 3
    assert any(d != int(d) for d in done)                          # an image part-way through its maps
    for m in steps:                                                # the count agrees with its percentage
        assert abs(100 * float(m["done"]) / 3 - int(m["pct"])) <= 1, m.group(0)
    assert any("s left" in m["rest"] for m in steps[:-1])          # a time left before the end
    assert steps[-1]["rest"].startswith(", done in ")
    assert "\r" not in r.stderr and "it/s" not in r.stderr          # no tqdm bar in a log

    r = run_module("atlas", "--model", "shapes", "--images", three_images, "--layer", "features.8", "--top", "2",
                   "--units", "0-3", "--out", tmp_path / "atlas", "--no-cache")
    assert r.returncode == 0, r.stderr
    assert _progress(r.stderr, "cnnvis atlas: scan")[-1]["done"] == "3"
    crops = _progress(r.stderr, "cnnvis atlas: crops")
    assert crops[-1]["done"] == crops[-1]["total"] == "4" and crops[-1]["unit"] == "units"


@needs_shapes
def test_optimize_prints_progress_lines_to_a_pipe_and_quiet_prints_none(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_PROGRESS_S", "0")
    args = ("optimize", "--model", "shapes", "--layer", "features.8", "--unit", "3", "--iterations", "30",
            "--no-cache", "--out")
    r = run_module(*args, tmp_path / "u3.png")
    assert r.returncode == 0, r.stderr
    steps = _progress(r.stderr, "cnnvis optimize: features.8 unit 3")
    assert len(steps) >= 3 and steps[-1]["done"] == "30" and steps[-1]["unit"] == "steps"
    assert any(re.search(r"activation -?\d", m["rest"]) for m in steps)
    r = run_module(*args, tmp_path / "u3q.png", "--quiet")
    assert r.returncode == 0 and r.stderr == "", r.stderr


@needs_shapes
def test_optimize_diversity_prints_progress_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_PROGRESS_S", "0")
    r = run_module("optimize", "--model", "shapes", "--layer", "features.8", "--unit", "3", "--diversity", "3",
                   "--iterations", "20", "--no-cache", "--out", tmp_path / "d.png")
    assert r.returncode == 0, r.stderr
    steps = _progress(r.stderr, "cnnvis optimize: layer features.8 unit 3, 3 images")
    assert len(steps) >= 2 and steps[-1]["done"] == "20" and steps[-1]["unit"] == "steps"
    assert any(re.search(r"objective -?\d", m["rest"]) for m in steps)
