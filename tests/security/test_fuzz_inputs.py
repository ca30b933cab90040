"""The fuzz harness of tools/fuzz_inputs.py, a few examples per target, so it keeps working between releases.

The long run (``python tools/fuzz_inputs.py``, 500+ examples per target) is a release step; its
findings are in the README's security section.  Here each target runs for a handful of examples: a
reader that raises anything but a CnnvisError on them fails the test with the shrunk example.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("CNNVIS_FUZZ_EXAMPLES", "12"))


def _harness():
    spec = importlib.util.spec_from_file_location("fuzz_inputs", ROOT / "tools" / "fuzz_inputs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FUZZ = _harness()


@pytest.mark.parametrize("target", sorted(FUZZ.TARGETS))
def test_every_reader_answers_with_a_value_or_a_cnnvis_error(target):
    FUZZ.TARGETS[target](EXAMPLES)


def test_the_harness_reports_a_reader_that_breaks_the_contract():
    with pytest.raises(FUZZ.Finding, match="TypeError"):
        FUZZ._contract(lambda: float(None))
    assert FUZZ._contract(lambda: (_ for _ in ()).throw(FUZZ.CnnvisError("fine"))) is None
