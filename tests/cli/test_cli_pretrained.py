"""``--pretrained [NAME]`` on the command line: the subprocess a user runs, on a seeded temp cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnvis_gui.options import (PRETRAINED_ENTRY, UsageError, model_entry, model_from_args, model_from_entry,
                                pretrained_entry)
from tests.models.pretrained_helpers import TV_ARCH, TV_FILE, seed_torchvision, use_caches
from ..waits import CHILD_S

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("torchvision")


def run_cli(*args, env):
    return subprocess.run([sys.executable, "-m", "cnnvis_gui", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=CHILD_S)


@pytest.fixture
def env(tmp_path, monkeypatch):
    th, hf = use_caches(monkeypatch, tmp_path)
    e = dict(os.environ, PYTHONPATH=str(REPO))
    return e, th


def test_info_with_pretrained_weights_from_the_cache(env):
    e, th = env
    seed_torchvision(th)
    r = run_cli("info", "--json", "--model", TV_ARCH, "--pretrained", "--device", "cpu", env=e)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["labels"]) == 1000 and doc["labels"][0] == "tench"
    assert doc["spec"]["height"] == doc["spec"]["width"] == 224
    assert doc["spec"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert any(TV_FILE in n for n in doc["notes"])


def test_missing_weights_offline_is_one_line_naming_the_path(env):
    e, th = env
    r = run_cli("info", "--model", "torchvision:resnet50", "--pretrained=IMAGENET1K_V2", env=e)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(th / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in err
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in err


def ns(**kw):
    from types import SimpleNamespace
    base = dict(model=None, weights=None, pretrained=None, device="cpu")
    base.update(kw)
    return SimpleNamespace(**base)


def test_pretrained_needs_a_named_architecture_and_no_weights(tmp_path):
    with pytest.raises(UsageError, match="torchvision:NAME or timm:NAME"):
        model_from_args(ns(model="shapes", pretrained=True))
    with pytest.raises(UsageError, match="torchvision:NAME or timm:NAME"):
        model_from_args(ns(pretrained=True))
    w = tmp_path / "w.pth"
    w.write_bytes(b"x")
    with pytest.raises(UsageError, match="drop one"):
        model_from_args(ns(model=TV_ARCH, weights=str(w), pretrained=True))


def test_a_remembered_pretrained_model_reopens(env):
    _, th = env
    _, sd = seed_torchvision(th)
    what, arch = model_entry(ns(model=TV_ARCH, pretrained=True))
    assert (what, arch) == (f"{PRETRAINED_ENTRY}DEFAULT", TV_ARCH) == pretrained_entry(TV_ARCH)
    lm = model_from_entry(what, arch, device="cpu")
    assert lm.pretrained == "IMAGENET1K_V1" and lm.labels[0] == "tench"
    assert model_from_entry(*pretrained_entry(TV_ARCH, "IMAGENET1K_V1"), device="cpu").name == lm.name
