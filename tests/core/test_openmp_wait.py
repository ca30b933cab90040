"""``import cnnvis_gui`` makes OpenMP's threads sleep while they wait, when it can and nobody chose otherwise.

Each case is a fresh interpreter: OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads it, so
what matters is the environment at that moment (``benchmarks/bench_threads.py`` measures why).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnvis_gui.core.threads import openmp_waiting

REPO = Path(__file__).resolve().parents[2]
SHOW = "import os; print(os.environ.get('OMP_WAIT_POLICY', '-'))"


def _run(code, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "CNNVIS_OPENMP_WAIT")}
    e.update(env, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("first, env, want", [
    ("import cnnvis_gui", {}, "PASSIVE"),                                   # before torch: sleeping threads
    ("import cnnvis_gui", {"OMP_WAIT_POLICY": "active"}, "active"),        # the user's choice wins
    ("import cnnvis_gui", {"CNNVIS_OPENMP_WAIT": "default"}, "-"),         # opted out
    ("import sys; sys.modules['torch'] = object(); import cnnvis_gui", {}, "-"),   # torch came first: too late
])
def test_the_wait_policy_set_on_import(first, env, want):
    assert _run(f"{first}; {SHOW}", **env) == want


def test_openmp_waiting_says_which_policy_runs():
    assert "sleep" in openmp_waiting({"OMP_WAIT_POLICY": "PASSIVE"})
    assert "spin a while" in openmp_waiting({})
    assert "OMP_WAIT_POLICY=ACTIVE" in openmp_waiting({"OMP_WAIT_POLICY": "ACTIVE"})
    assert "sleep" in openmp_waiting()            # this test process: tests/conftest.py imports cnnvis_gui first
