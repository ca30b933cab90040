"""Every weight format and architecture source round-trips; every bad input gives one clear error."""
from __future__ import annotations

import json
import os
import pickle
import random
import sys
import warnings
import zipfile

import pytest
import torch
from torch import nn

from cnnvis_gui.core import CnnvisError, InputSpec
from cnnvis_gui.models import ModelLoadError, UntrustedPickleError, load, load_labels, read_weights
from cnnvis_gui.models.demo_nets import GlyphsNet

ARCH = "cnnvis_gui.models.demo_nets:GlyphsNet"          # 1 x 28 x 28 -> 10, tiny and fast
SPEC = InputSpec(channels=1, height=28, width=28, mean=(0.1,), std=(0.3,))


@pytest.fixture
def net():
    torch.manual_seed(1)
    m = GlyphsNet().eval()
    with torch.no_grad():   # non-trivial BN statistics so a wrong load would show
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return m


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def prefixed(sd, p):
    return {p + k: v for k, v in sd.items()}


# ----------------------------------------------------------------------------- formats
@pytest.mark.parametrize("layout", [
    "plain", "state_dict", "model", "model_state_dict", "net", "ema", "model_ema",
    "lightning", "dataparallel", "compile", "dataparallel+compile", "nested+dataparallel"])
def test_state_dict_layouts_round_trip(tmp_path, net, layout):
    sd = net.state_dict()
    if layout == "plain":
        obj = sd
    elif layout == "lightning":
        obj = {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
               "state_dict": prefixed(sd, "model."), "hyper_parameters": {"lr": 0.01},
               "optimizer_states": [], "lr_schedulers": []}
    elif layout == "dataparallel":
        obj = prefixed(sd, "module.")
    elif layout == "compile":
        obj = prefixed(sd, "_orig_mod.")
    elif layout == "dataparallel+compile":
        obj = prefixed(sd, "module._orig_mod.")
    elif layout == "nested+dataparallel":
        obj = {"epoch": 9, "model_state_dict": prefixed(sd, "module."), "optimizer_state_dict": {}}
    else:
        obj = {layout: sd, "epoch": 5, "best_acc": 0.9}
    path = tmp_path / f"ckpt_{layout.replace('+', '_')}.pth"
    torch.save(obj, path)
    lm = load(path, arch=ARCH)
    assert same_weights(lm.model, net)
    assert not lm.model.training
    notes = " ".join(lm.notes)
    if "dataparallel" in layout or "compile" in layout or layout == "lightning":
        assert "prefix" in notes
    if layout == "compile":
        assert "'_orig_mod.'" in notes
    if layout not in ("plain", "dataparallel", "compile", "dataparallel+compile"):
        assert "checkpoint[" in notes


def test_extension_bin_and_ckpt_and_legacy(tmp_path, net):
    for name in ("w.bin", "w.pt", "w.ckpt"):
        torch.save(net.state_dict(), tmp_path / name)
        assert same_weights(load(tmp_path / name, arch=ARCH).model, net)
    torch.save(net.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert same_weights(load(tmp_path / "legacy.pth", arch=ARCH).model, net)


def test_safetensors(tmp_path, net):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    lm = load(tmp_path / "w.safetensors", arch=ARCH)
    assert same_weights(lm.model, net)
    meta = {"arch": ARCH, "spec": SPEC.to_dict(), "labels": list("abcdefghij"), "name": "st"}
    save_file(net.state_dict(), str(tmp_path / "m.safetensors"), metadata={"cnnvis": json.dumps(meta)})
    lm = load(tmp_path / "m.safetensors")
    assert same_weights(lm.model, net) and lm.spec == SPEC and lm.labels[0] == "a" and lm.name == "st"


def test_checkpoint_metadata_key(tmp_path, net):
    meta = {"spec": SPEC.to_dict(), "labels": list("abcdefghij"), "name": "My glyphs", "arch": ARCH,
            "arch_kwargs": {"num_classes": 10}}
    torch.save({"state_dict": net.state_dict(), "cnnvis": meta}, tmp_path / "m.pth")
    lm = load(tmp_path / "m.pth")            # architecture comes from the metadata
    assert same_weights(lm.model, net)
    assert lm.spec == SPEC and lm.labels == list("abcdefghij") and lm.name == "My glyphs"
    assert not any("guess" in n for n in lm.notes)
    # caller wins over the checkpoint
    lm2 = load(tmp_path / "m.pth", labels=[str(i) for i in range(10)], spec={"mean": (0.5,), "std": (0.5,)})
    assert lm2.labels[3] == "3" and lm2.spec.mean == (0.5,) and lm2.spec.height == 28


def test_sidecar_json_and_labels_file(tmp_path, net):
    torch.save(net.state_dict(), tmp_path / "model.pth")
    (tmp_path / "classes.txt").write_text("\n".join(f"class {i}" for i in range(10)) + "\n")
    (tmp_path / "model.json").write_text(json.dumps(
        {"arch": ARCH, "spec": SPEC.to_dict(), "labels": "classes.txt", "name": "Sidecar net"}))
    lm = load(tmp_path / "model.pth")
    assert same_weights(lm.model, net)
    assert lm.spec == SPEC and lm.name == "Sidecar net" and lm.labels[9] == "class 9"
    assert any("model.json" in n for n in lm.notes)


def test_load_labels_formats(tmp_path):
    (tmp_path / "a.txt").write_text("cat\ndog\n\n")
    (tmp_path / "b.json").write_text('["cat", "dog"]')
    (tmp_path / "c.json").write_text('{"1": "dog", "0": "cat"}')
    (tmp_path / "d.json").write_text('{"0": ["n01", "cat"], "1": ["n02", "dog"]}')
    for f in ("a.txt", "b.json", "c.json", "d.json"):
        assert load_labels(tmp_path / f) == ["cat", "dog"], f
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_labels(tmp_path / "bad.json")
    with pytest.raises(ModelLoadError, match="not found"):
        load_labels(tmp_path / "nope.txt")


def test_guesses_are_recorded(net):
    lm = load(arch=ARCH)                     # no spec anywhere: channels from conv, size = what fits
    assert lm.spec.shape == (1, 28, 28)
    notes = " ".join(lm.notes)
    assert "1 input channels from the first convolution" in notes
    assert "28x28" in notes and "random" in notes


def test_torchvision_arch_guesses_imagenet():
    pytest.importorskip("torchvision")
    lm = load(arch="torchvision:resnet18", num_classes=10)
    assert lm.spec.shape == (3, 224, 224)
    assert lm.spec.mean == pytest.approx((0.485, 0.456, 0.406))
    assert lm.model.fc.out_features == 10
    assert any("ImageNet mean/std" in n for n in lm.notes)
    with pytest.raises(ModelLoadError, match="resnet18"):
        load(arch="torchvision:resnet181")


def test_timm_arch_builds_timms_model():
    """timm is in the test extra: the real branch runs (the model is timm's own, same parameters)."""
    import timm
    lm = load(arch="timm:resnet18", num_classes=3)
    assert lm.output_shape == (3,)
    assert type(lm.model).__module__.startswith("timm.")
    ref = timm.create_model("resnet18", pretrained=False, num_classes=3)
    assert {k: tuple(v.shape) for k, v in lm.model.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    with pytest.raises(ModelLoadError, match="did you mean.*resnet18"):
        load(arch="timm:resnet181")


def test_timm_missing_says_how_to_install(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "timm", None)        # import timm now raises ImportError
    with pytest.raises(ModelLoadError, match="pip install timm"):
        load(arch="timm:resnet18")


def test_python_file_arch(tmp_path):
    (tmp_path / "mynet.py").write_text(
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, k=4):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 8, 3)\n"
        "        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, k))\n"
        "    def forward(self, x):\n"
        "        return self.head(self.conv(x).relu())\n")
    lm = load(arch=f"{tmp_path / 'mynet.py'}:Net", k=5, spec={"height": 32, "width": 48})
    assert lm.output_shape == (5,) and lm.spec.shape == (3, 32, 48)
    torch.save(lm.model.state_dict(), tmp_path / "w.pth")
    lm2 = load(tmp_path / "w.pth", arch=f"{tmp_path / 'mynet.py'}:Net", k=5, spec={"height": 32, "width": 48})
    assert same_weights(lm2.model, lm.model)
    with pytest.raises(ModelLoadError, match="has no 'Nett'.*did you mean Net"):
        load(arch=f"{tmp_path / 'mynet.py'}:Nett")


def test_whole_pickled_model_needs_trust(tmp_path, net):
    torch.save(net, tmp_path / "whole.pth")
    with pytest.raises(UntrustedPickleError) as ei:   # the GUI catches this to ask for confirmation
        load(tmp_path / "whole.pth")
    msg = str(ei.value)
    assert ei.value.path.name == "whole.pth"
    assert "pickled Python objects" in msg and "GlyphsNet" in msg
    assert "arbitrary code" in msg and "trust_pickle=True" in msg and "--trust-pickle" in msg and "GUI" in msg
    lm = load(tmp_path / "whole.pth", trust_pickle=True)
    assert same_weights(lm.model, net) and lm.spec.shape == (1, 28, 28)
    assert any("pickled" in n for n in lm.notes)


def test_strict_false_reports_random_init(tmp_path, net):
    sd = net.state_dict()
    del sd["classifier.3.weight"]
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(ModelLoadError, match="missing in the checkpoint \\(1\\): classifier.3.weight"):
        load(tmp_path / "partial.pth", arch=ARCH)
    lm = load(tmp_path / "partial.pth", arch=ARCH, strict=False)
    assert any("random init" in n and "classifier.3.weight" in n for n in lm.notes)
    assert torch.equal(lm.model.features[0].weight, net.features[0].weight)


def test_device_choices():
    assert load(arch=ARCH, device="auto").device.type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load(arch=ARCH, device="cuda")
    with pytest.raises(ModelLoadError, match="unknown device|unsupported device"):
        load(arch=ARCH, device="toaster")


# ----------------------------------------------------------------------------- bad input
def _err(*args, **kw) -> str:
    with pytest.raises(ModelLoadError) as ei:
        load(*args, **kw)
    assert isinstance(ei.value, CnnvisError) and isinstance(ei.value, ValueError)
    return str(ei.value)


def test_empty_file(tmp_path):
    (tmp_path / "e.pth").write_bytes(b"")
    assert "empty (0 bytes)" in _err(tmp_path / "e.pth", arch=ARCH)


def test_random_bytes(tmp_path):
    (tmp_path / "r.pth").write_bytes(random.Random(0).randbytes(2048))
    assert "not a PyTorch checkpoint or is corrupt" in _err(tmp_path / "r.pth", arch=ARCH)


def test_truncated_checkpoint(tmp_path, net):
    torch.save(net.state_dict(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "t.pth").write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _err(tmp_path / "t.pth", arch=ARCH)


def test_text_file_named_pth(tmp_path):
    (tmp_path / "x.pth").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    msg = _err(tmp_path / "x.pth", arch=ARCH)
    assert "text file" in msg and "git-lfs" in msg


def test_wrong_architecture(tmp_path, net):
    pytest.importorskip("torchvision")
    torch.save(net.state_dict(), tmp_path / "g.pth")
    msg = _err(tmp_path / "g.pth", arch="torchvision:resnet18")
    assert "missing in the checkpoint" in msg and "unexpected in the checkpoint" in msg
    assert "... and" in msg                             # long lists are shortened
    assert "different architecture" in msg


def test_wrong_num_classes_suggests_it(tmp_path):
    torch.save(GlyphsNet(num_classes=7).state_dict(), tmp_path / "g7.pth")
    msg = _err(tmp_path / "g7.pth", arch=ARCH)
    assert "shape mismatches" in msg and "classifier.3.weight" in msg
    assert "num_classes=7" in msg
    assert load(tmp_path / "g7.pth", arch=ARCH, num_classes=7).output_shape == (7,)


def test_unknown_prefix_is_suggested(tmp_path, net):
    torch.save(prefixed(net.state_dict(), "backbone."), tmp_path / "b.pth")
    assert "prefix 'backbone.'" in _err(tmp_path / "b.pth", arch=ARCH)


def test_missing_factory():
    assert "cannot be imported" in _err(arch="no_such_package.nets:Net")
    msg = _err(arch="cnnvis_gui.models.demo_nets:GlyphNet")
    assert "has no 'GlyphNet'" in msg and "GlyphsNet" in msg
    assert "not understood" in _err(arch="resnet18")
    assert "weight file not found" in _err("/no/such/file.pth", arch=ARCH)
    assert "calling it with" in _err(arch=ARCH, no_such_kwarg=1)


def test_python_file_with_syntax_error(tmp_path):
    before = {m for m in sys.modules if m.startswith("_cnnvis_user_")}
    (tmp_path / "broken.py").write_text("import torch\nclass Net(torch.nn.Module:\n    pass\n")
    msg = _err(arch=f"{tmp_path / 'broken.py'}:Net")
    assert "syntax error in broken.py, line 2" in msg
    assert {m for m in sys.modules if m.startswith("_cnnvis_user_")} == before   # nothing left behind


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class _EvilSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump", "os.system"])
def test_crafted_pickle_never_runs(tmp_path, how):
    marker = tmp_path / "MARKER"
    p = tmp_path / "evil.pth"
    if how == "torch.save":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Evil(str(marker))}, p)
    elif how == "pickle.dump":
        with open(p, "wb") as f:
            pickle.dump(_Evil(str(marker)), f)
    else:
        torch.save(_EvilSystem(str(marker)), p)
    msg = _err(p, arch=ARCH)
    assert "pickled Python objects" in msg and "arbitrary code" in msg
    assert ("exec" in msg) or ("system" in msg)        # names what it would have called
    with pytest.raises(ModelLoadError):
        read_weights(p)
    with pytest.raises(ModelLoadError):
        load(p)
    assert not marker.exists()


def test_forward_fails_on_declared_shape(tmp_path, net):
    torch.save({"state_dict": net.state_dict(),
                "cnnvis": {"arch": ARCH, "spec": SPEC.replace(height=64, width=64).to_dict()}}, tmp_path / "s.pth")
    msg = _err(tmp_path / "s.pth")
    assert "(1, 1, 64, 64)" in msg
    assert "layer 'classifier.1' (Linear)" in msg and "(1, 4096)" in msg
    # no hook left behind on a model whose probe failed
    from cnnvis_gui.models.probe import _probe
    with pytest.raises(ModelLoadError):
        _probe(net, SPEC.replace(height=64, width=64), torch.device("cpu"))
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in net.modules())


def test_torchscript_refused(tmp_path, net):
    p = tmp_path / "scripted.pt"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 28, 28)), str(p))
    except Exception:                                  # jit unavailable: build the archive layout by hand
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("scripted/data.pkl", b"\x80\x02}q\x00.")
            z.writestr("scripted/constants.pkl", b"\x80\x02)q\x00.")
            z.writestr("scripted/code/__torch__.py", "")
    msg = _err(p, arch=ARCH)
    assert "TorchScript" in msg and "hooks" in msg and "state_dict" in msg
