"""The pickle scanner's fuzz harness (tools/fuzz_pickle_scanner.py) runs, and can fail.

CI runs a small derandomized sample; the release check runs the script with its default
20000 examples per input kind (README, *What is safe to open*).
"""
from __future__ import annotations

import importlib.util
import io
import pickletools
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")

from .hostile_pickles import BUILDERS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _harness():
    spec = importlib.util.spec_from_file_location("fuzz_pickle_scanner", ROOT / "tools" / "fuzz_pickle_scanner.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_scanner_survives_a_sample_of_the_fuzz_run():
    timings = _harness().run(120)
    assert set(timings) == {"stack", "programs", "bytes", "mutants"}


def _last_strings(data, max_pickles=1, more_data=False):
    """The previous scanner: GLOBAL's name, and the last two strings of the byte stream for STACK_GLOBAL."""
    from cnnvis_gui.models.pickle_scan import PickleScan
    scan, strings = PickleScan(), []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(arg)
            elif op.name == "GLOBAL":
                scan.add(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                scan.add(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # noqa: BLE001
        pass
    return scan


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_oracle_passes_the_scanner_and_fails_the_previous_one(tmp_path, monkeypatch, name):
    """The harness's check runs the real unpickler (inert globals) on each hand-written exploit:
    today's scanner agrees with it; the previous one is caught wherever it named a decoy or missed INST."""
    fuzz = _harness()
    data = BUILDERS[name](tmp_path / "never")
    fuzz.check(data)
    assert not (tmp_path / "never").exists()             # the oracle's unpickler ran nothing
    monkeypatch.setattr(fuzz, "scan_globals", _last_strings)
    if name in ("proto0_global", "many_harmless_first"):
        fuzz.check(data)                                 # no decoys there: the previous scanner was right
    else:
        with pytest.raises(AssertionError):
            fuzz.check(data)
