"""Regressions from the loader review: import isolation, checkpoint extras, relative metadata paths, EMA keys."""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_gui.models import ModelLoadError, UntrustedCodeError, UntrustedPickleError, load, read_weights
from cnnvis_gui.models.demo_nets import GlyphsNet

ARCH = "cnnvis_gui.models.demo_nets:GlyphsNet"


def _proj(folder: pathlib.Path, act: str):
    folder.mkdir(parents=True)
    (folder / "blocks.py").write_text(f"from torch import nn\nact = nn.{act}\n")
    (folder / "net.py").write_text(
        "from torch import nn\nfrom blocks import act\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 2, 3)\n"
        "        self.act = act()\n"
        "    def forward(self, x):\n"
        "        return self.act(self.conv(x))\n")


def test_sibling_modules_of_two_projects_do_not_mix(tmp_path):
    _proj(tmp_path / "A", "ReLU")
    _proj(tmp_path / "B", "Tanh")
    path_before = list(sys.path)
    a = load(arch=f"{tmp_path / 'A' / 'net.py'}:Net", spec={"channels": 1, "height": 8, "width": 8})
    b = load(arch=f"{tmp_path / 'B' / 'net.py'}:Net", spec={"channels": 1, "height": 8, "width": 8})
    assert isinstance(a.model.act, nn.ReLU)
    assert isinstance(b.model.act, nn.Tanh)
    assert "blocks" not in sys.modules and sys.path == path_before


def test_foreign_module_of_the_same_name_is_set_aside_and_restored(tmp_path, monkeypatch):
    _proj(tmp_path / "B", "Tanh")
    fake = type(sys)("blocks")
    fake.act = nn.ReLU
    monkeypatch.setitem(sys.modules, "blocks", fake)
    b = load(arch=f"{tmp_path / 'B' / 'net.py'}:Net", spec={"channels": 1, "height": 8, "width": 8})
    assert isinstance(b.model.act, nn.Tanh)
    assert sys.modules["blocks"] is fake


def test_relative_imports_inside_a_package(tmp_path):
    pkg = tmp_path / "proj" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "blocks.py").write_text("from torch import nn\n\ndef blk():\n    return nn.Conv2d(1, 3, 3)\n")
    (pkg / "model.py").write_text(
        "from torch import nn\nfrom .blocks import blk\n\n"
        "class Net(nn.Sequential):\n"
        "    def __init__(self):\n"
        "        super().__init__(blk(), nn.ReLU())\n")
    lm = load(arch=f"{pkg / 'model.py'}:Net", spec={"channels": 1, "height": 8, "width": 8})
    assert isinstance(lm.model[0], nn.Conv2d) and lm.model[0].out_channels == 3
    assert "pkg" not in sys.modules and "pkg.model" not in sys.modules


# ----------------------------------------------------------------------------- checkpoint extras
def test_argparse_namespace_and_numpy_extras_load_safely(tmp_path):
    net = GlyphsNet()
    p = tmp_path / "timm_style.pth"
    torch.save({"state_dict": net.state_dict(), "args": argparse.Namespace(lr=0.1, out=pathlib.Path("runs/x")),
                "epoch": 3, "best_acc": np.float64(0.93), "dtype": np.dtype("float32"),
                "arr": np.arange(3)}, p)
    notes = []
    obj = read_weights(p, notes=notes)
    assert obj["args"].lr == 0.1 and float(obj["best_acc"]) == pytest.approx(0.93)
    assert any("argparse.Namespace" in n for n in notes)
    lm = load(p, arch=ARCH)
    assert any("not used" in n and "argparse.Namespace" in n for n in lm.notes)


class HParams:   # a class of the training code: never imported nor called by the safe loader
    def __init__(self):
        self.lr = 0.01

    def __setstate__(self, state):
        raise AssertionError("the training code ran while loading")


def test_unknown_classes_in_extras_are_stubbed_not_run(tmp_path):
    net = GlyphsNet()
    p = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in net.state_dict().items()},
                "hyper_parameters": {"cfg": HParams(), "wd": np.float32(1e-4)}}, p)
    lm = load(p, arch=ARCH)
    sd = net.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in lm.model.state_dict().items())
    assert any("HParams" in n and "without importing" in n for n in lm.notes)


def test_whole_model_and_os_system_are_still_refused(tmp_path):
    torch.save(GlyphsNet(), tmp_path / "whole.pth")
    with pytest.raises(UntrustedPickleError, match="whole pickled model.*GlyphsNet"):
        load(tmp_path / "whole.pth")
    marker = tmp_path / "MARKER"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": GlyphsNet().state_dict(), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UntrustedPickleError, match="pickled Python objects.*system"):
        load(tmp_path / "evil.pth", arch=ARCH)
    assert not marker.exists()


# ----------------------------------------------------------------------------- metadata paths
def test_relative_labels_in_sidecar_joined_once(tmp_path, monkeypatch):
    run = tmp_path / "run2"
    run.mkdir()
    torch.save(GlyphsNet().state_dict(), run / "model.pth")
    (run / "labels.txt").write_text("\n".join(f"d{i}" for i in range(10)))
    (run / "model.json").write_text(json.dumps({"labels": "labels.txt", "arch": ARCH}))
    monkeypatch.chdir(tmp_path)
    lm = load("run2/model.pth")
    assert lm.labels[3] == "d3"
    torch.save({"state_dict": GlyphsNet().state_dict(), "cnnvis": {"arch": ARCH, "labels": "labels.txt"}},
               run / "ck.pth")
    assert load("run2/ck.pth").labels[0] == "d0"


def test_file_arch_in_metadata_is_relative_to_checkpoint(tmp_path, monkeypatch):
    d = tmp_path / "exp"
    d.mkdir()
    (d / "nets.py").write_text("from cnnvis_gui.models.demo_nets import GlyphsNet as Mnist\n")
    torch.save({"state_dict": GlyphsNet().state_dict(), "cnnvis": {"arch": "nets.py:Mnist"}}, d / "m.pth")
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    with pytest.raises(UntrustedCodeError, match="nets.py"):   # a file naming code is not consent
        load(d / "m.pth")
    assert type(load(d / "m.pth", trust_code=True).model).__name__ == "GlyphsNet"
    torch.save({"state_dict": GlyphsNet().state_dict(), "cnnvis": {"arch": "nope.py:Mnist"}}, d / "n.pth")
    with pytest.raises(ModelLoadError, match=r"tried .*exp.nope\.py.*elsewhere.nope\.py"):
        load(d / "n.pth")


# ----------------------------------------------------------------------------- EMA / key choice
def test_ema_weights_chosen_by_key(tmp_path):
    torch.manual_seed(0)
    a, b = GlyphsNet(), GlyphsNet()
    p = tmp_path / "ema.pth"
    torch.save({"state_dict": a.state_dict(), "state_dict_ema": b.state_dict()}, p)
    lm = load(p, arch=ARCH)
    first = next(iter(a.state_dict()))
    assert torch.equal(lm.model.state_dict()[first], a.state_dict()[first])
    assert any("state_dict_key='state_dict_ema'" in n and "--weights-key state_dict_ema" in n for n in lm.notes)
    lm2 = load(p, arch=ARCH, state_dict_key="state_dict_ema")
    assert torch.equal(lm2.model.state_dict()[first], b.state_dict()[first])
    torch.save({"model": a.state_dict(), "ema": {"module": b.state_dict()}}, tmp_path / "nested.pth")
    lm3 = load(tmp_path / "nested.pth", arch=ARCH, state_dict_key="ema")
    assert torch.equal(lm3.model.state_dict()[first], b.state_dict()[first])
    with pytest.raises(ModelLoadError, match="no entry 'emma'.*state_dict_ema"):
        load(p, arch=ARCH, state_dict_key="emma")


def test_weights_key_cli_flag(tmp_path):
    from cnnvis_gui import cli
    torch.manual_seed(0)
    a, b = GlyphsNet(), GlyphsNet()
    p = tmp_path / "ema.pth"
    torch.save({"model": a.state_dict(), "model_ema": b.state_dict()}, p)
    parser = argparse.ArgumentParser()
    cli.add_model_arguments(parser)
    args = parser.parse_args(["--model", ARCH, "--weights", str(p), "--weights-key", "model_ema", "--device", "cpu"])
    lm = cli.model_from_args(args)
    first = next(iter(a.state_dict()))
    assert torch.equal(lm.model.state_dict()[first], b.state_dict()[first])


def test_num_classes_hint_names_cli_flag(tmp_path):
    torch.save(GlyphsNet(num_classes=7).state_dict(), tmp_path / "w.pth")
    with pytest.raises(ModelLoadError, match="--arch-kwarg num_classes=7"):
        load(tmp_path / "w.pth", arch=ARCH)


# ----------------------------------------------------------------------------- foreign sidecars
def test_foreign_training_config_sidecar_is_ignored(tmp_path):
    torch.save(GlyphsNet().state_dict(), tmp_path / "model.pth")
    (tmp_path / "model.json").write_text(json.dumps({"lr": 0.1, "epochs": 90, "optimizer": "sgd"}))
    lm = load(tmp_path / "model.pth", arch=ARCH)
    assert any("model.json" in n and "ignored" in n for n in lm.notes)
    (tmp_path / "model.json").write_text(json.dumps({"labels": "column_label", "name": "exp1", "batch": 4}))
    lm = load(tmp_path / "model.pth", arch=ARCH)
    assert lm.name == "exp1" and lm.labels is None and any("'labels'" in n for n in lm.notes)
    (tmp_path / "model.json").write_text("{not json")
    assert any("not valid JSON" in n for n in load(tmp_path / "model.pth", arch=ARCH).notes)
    with pytest.raises(ModelLoadError, match="labels file not found"):   # explicit bad metadata still errors
        load(tmp_path / "model.pth", arch=ARCH, labels=str(tmp_path / "missing.txt"))
