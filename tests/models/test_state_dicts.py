"""Checkpoints whose keys do not start where the network's do: what fits is loaded, the rest is said.

A key prefix (``module.`` from DataParallel or an averaging wrapper, ``model.`` from Lightning,
``_orig_mod.`` from torch.compile) is stripped when stripping makes the keys fit -- also when
some keys do not carry it (a loss saved beside the network, the averaging counter) -- and never
when the network's own keys start that way.  Each test loads a file the way a user does
(``load(path, arch=...)``) and compares the weights the model got with the ones saved.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from cnnvis_gui.models import ModelLoadError, load
from cnnvis_gui.models.demo_nets import GlyphsNet

ARCH = "cnnvis_gui.models.demo_nets:GlyphsNet"


@pytest.fixture
def net():
    torch.manual_seed(3)
    m = GlyphsNet().eval()
    with torch.no_grad():                      # trained-looking BatchNorm statistics: a wrong load shows
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


def test_a_loss_saved_beside_a_lightning_network_is_left_out_with_no_strict(tmp_path, net):
    """Lightning saves every module of the LightningModule: the network under ``model.`` and, here,
    the class weights of its loss under ``loss_fn.``, which carry no prefix."""
    sd = {**prefixed(net.state_dict(), "model."), "loss_fn.weight": torch.tensor([1.0, 2.0])}
    path = tmp_path / "epoch=3.ckpt"
    torch.save({"epoch": 3, "state_dict": sd}, path)
    lm = load(path, arch=ARCH, strict=False)
    assert same_weights(lm.model, net)                          # the trained network, not random init
    notes = " | ".join(lm.notes)
    assert "stripped key prefix 'model.'" in notes
    assert "strict=False: 1 checkpoint tensors not used (no such key): loss_fn.weight" in notes
    assert "left at random init" not in notes
    with pytest.raises(ModelLoadError) as e:                    # strict: exactly what is extra, and what to do
        load(path, arch=ARCH)
    msg = str(e.value)
    assert f"{len(net.state_dict()) + 1} tensors in the checkpoint, {len(net.state_dict())} in the model; " \
           f"0 missing, 1 unexpected, 0 with another shape." in msg
    assert "unexpected in the checkpoint (1): loss_fn.weight" in msg
    assert ("Likely fix: every tensor of GlyphsNet is in the checkpoint; the 1 other (loss_fn.weight) were saved "
            "beside the network") in msg and "strict=False (command line: --no-strict)" in msg


def test_an_averaged_model_checkpoint_loads_strictly(tmp_path, net):
    """torch's AveragedModel (SWA / EMA) saves ``module.*`` and its counter ``n_averaged``."""
    swa = AveragedModel(net)
    with torch.no_grad():
        for p in swa.module.parameters():
            p.mul_(0.5)                                          # the averaged weights differ from the net's
    path = tmp_path / "swa.pth"
    torch.save(swa.state_dict(), path)
    assert "n_averaged" in swa.state_dict()
    lm = load(path, arch=ARCH)
    assert same_weights(lm.model, swa.module)
    notes = " | ".join(lm.notes)
    assert "stripped key prefix 'module.'" in notes
    assert "left out n_averaged: the averaging wrapper's counter (torch's AveragedModel)" in notes


def test_the_counter_name_is_kept_when_nothing_was_stripped(tmp_path, net):
    """A tensor named n_averaged in a plain state dict is not a wrapper's counter: strict says it is extra."""
    path = tmp_path / "odd.pth"
    torch.save({**net.state_dict(), "n_averaged": torch.tensor(3)}, path)
    with pytest.raises(ModelLoadError, match=r"unexpected in the checkpoint \(1\): n_averaged"):
        load(path, arch=ARCH)


class Wrapper(nn.Module):
    """A network whose own keys start with ``model.`` (a backbone attribute named model) and ``head.``."""

    def __init__(self):
        super().__init__()
        self.model = GlyphsNet()
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        return self.head(self.model(x))


def test_a_network_whose_own_keys_start_with_a_prefix_keeps_them(tmp_path, monkeypatch):
    import sys
    import types
    mod = types.ModuleType("t2_wrapper_net")
    mod.Wrapper = Wrapper
    monkeypatch.setitem(sys.modules, "t2_wrapper_net", mod)
    torch.manual_seed(5)
    w = Wrapper().eval()
    for name, sd in (("own.pth", w.state_dict()), ("dp.pth", prefixed(w.state_dict(), "module."))):
        torch.save(sd, tmp_path / name)
        lm = load(tmp_path / name, arch="t2_wrapper_net:Wrapper")
        assert same_weights(lm.model, w), name
        notes = " | ".join(lm.notes)
        assert ("'model.'" not in notes) and (("'module.'" in notes) == (name == "dp.pth")), notes


@pytest.mark.parametrize("prefix, fits", [
    ("module._orig_mod.model.", True),                  # three wrappers: all stripped
    ("module.module._orig_mod.model.", False),          # four: past the bound, nothing is guessed
])
def test_at_most_three_prefixes_are_stripped(tmp_path, net, prefix, fits):
    path = tmp_path / "wrapped.pth"
    torch.save(prefixed(net.state_dict(), prefix), path)
    if fits:
        lm = load(path, arch=ARCH)
        assert same_weights(lm.model, net)
        assert "stripped key prefixes 'module.' + '_orig_mod.' + 'model.'" in " | ".join(lm.notes)
    else:
        with pytest.raises(ModelLoadError, match="does not fit GlyphsNet"):
            load(path, arch=ARCH)


def _refusal(tmp_path, obj, name="w.pth"):
    torch.save(obj, tmp_path / name)
    with pytest.raises(ModelLoadError) as e:
        load(tmp_path / name, arch=ARCH)
    return str(e.value)


def test_another_number_of_classes_is_named_with_the_option_to_pass(tmp_path):
    msg = _refusal(tmp_path, GlyphsNet(num_classes=7).state_dict())
    assert msg == (
        "w.pth does not fit GlyphsNet: 22 tensors in the checkpoint, 22 in the model; 0 missing, 0 unexpected, "
        "2 with another shape.\n"
        "shape mismatches (2): classifier.3.weight: checkpoint (7, 64) vs model (10, 64), classifier.3.bias: "
        "checkpoint (7,) vs model (10,)\n"
        "Likely fix: only the classifier's output size differs: the checkpoint has 7 classes, the model 10; pass "
        "num_classes=7 (Python: load(..., num_classes=7); command line: --arch-kwarg num_classes=7).")


def test_another_first_layer_width_is_not_taken_for_a_number_of_classes(tmp_path, net):
    """Only the first convolution's filter count differs: that is no num_classes question."""
    sd = dict(net.state_dict())
    sd["features.0.weight"] = torch.zeros(5, *sd["features.0.weight"].shape[1:])
    msg = _refusal(tmp_path, sd)
    assert "shape mismatches (1): features.0.weight: checkpoint (5, 1, 3, 3) vs model (16, 1, 3, 3)" in msg
    assert "num_classes" not in msg
    assert msg.endswith("Likely fix: the architecture is close but not the same: check the variant (e.g. resnet18 "
                        "vs resnet34) and constructor arguments, or load with strict=False to keep what fits.")


def test_an_unknown_key_prefix_is_named_with_how_to_strip_it(tmp_path, net):
    msg = _refusal(tmp_path, prefixed(net.state_dict(), "backbone."))
    assert msg.startswith("w.pth does not fit GlyphsNet: 22 tensors in the checkpoint, 22 in the model; 19 missing, "
                          "22 unexpected, 0 with another shape.\nmissing in the checkpoint (19): features.0.weight, ")
    assert msg.endswith("Likely fix: the checkpoint keys carry the prefix 'backbone.'; strip it "
                        "({k.removeprefix('backbone.'): v for k, v in sd.items()}) and save again.")
    # keys of which only some carry one prefix: no prefix to name
    mixed = {("backbone." if i % 2 else "neck.") + k: v for i, (k, v) in enumerate(net.state_dict().items())}
    assert "carry the prefix" not in _refusal(tmp_path, mixed, "mixed.pth")


def test_weights_of_another_network_say_so(tmp_path):
    from cnnvis_gui.models.demo_nets import ShapesNet
    msg = _refusal(tmp_path, {f"head{i}.weight": torch.zeros(3) for i in range(5)})
    assert "0 of 22 model tensors match by name and shape: the weights are probably for a different architecture; "\
           "check arch= (and its constructor arguments). Checkpoint keys look like head0.weight, head1.weight, " \
           "head2.weight, the model's like features.0.weight, features.1.weight, features.1.bias." in msg
    assert "close but not the same" in _refusal(tmp_path, ShapesNet().state_dict(), "shapes.pth")


def test_other_classes_beside_an_extra_tensor_is_no_num_classes_question(tmp_path):
    msg = _refusal(tmp_path, {**GlyphsNet(num_classes=7).state_dict(), "loss_fn.weight": torch.ones(7)})
    assert "1 unexpected, 2 with another shape" in msg and "num_classes" not in msg
    assert "the architecture is close but not the same" in msg


def test_inconsistent_classifier_sizes_and_all_shapes_different_are_no_num_classes_question(tmp_path, net):
    sd = dict(net.state_dict())
    sd["classifier.3.weight"], sd["classifier.3.bias"] = torch.zeros(7, 64), torch.zeros(8)   # 7 rows, 8 biases
    msg = _refusal(tmp_path, sd)
    assert "2 with another shape" in msg and "num_classes" not in msg
    wider = {k: torch.zeros(*(s + 1 for s in v.shape)) if v.dim() else v for k, v in net.state_dict().items()}
    msg = _refusal(tmp_path, wider, "wider.pth")                # every name found, no shape fits
    assert "only 3 of 22 model tensors match by name and shape: the weights are probably for a different " \
           "architecture" in msg
