"""Checkpoints at the edges of what ``models/state_dicts.py`` accepts: constructor arguments too big
for the weights, the entry a user names with ``state_dict_key`` / ``--weights-key``, and what the
notes say about the rest (found by mutation runs of ``models/state_dicts.py``)."""
from __future__ import annotations

import pytest
import torch

from cnnvis_gui.core.bounds import MAX_CLASSES
from cnnvis_gui.models import ModelLoadError, load
from cnnvis_gui.models.demo_nets import GlyphsNet
from cnnvis_gui.models.state_dicts import SMALL_KWARG, check_kwarg_sizes

ARCH = "cnnvis_gui.models.demo_nets:GlyphsNet"


def sd_with(n):
    """A state dict whose largest dimension is ``n``."""
    return [("the file", {"a.weight": torch.zeros(2, 3), "b.weight": torch.zeros(n, 1)})]


def test_a_class_count_without_weights_is_bounded_by_max_classes():
    check_kwarg_sizes({"num_classes": MAX_CLASSES, "n_classes": MAX_CLASSES}, [], None)
    for name in ("num_classes", "n_classes", "num_labels"):
        with pytest.raises(ModelLoadError) as e:
            check_kwarg_sizes({name: MAX_CLASSES + 1}, [], None)
        assert str(e.value) == (f"{name}={MAX_CLASSES + 1:,} is more than the {MAX_CLASSES:,} this program builds "
                                f"a model for (the layer alone would take {(MAX_CLASSES + 1) * 4 / 2**20:,.0f} MB "
                                f"per input feature); check the value.")
    check_kwarg_sizes({"image_size": MAX_CLASSES * 4}, [], None)    # not a class count: not questioned


def test_a_constructor_argument_larger_than_every_dimension_of_the_weights_is_refused():
    big = SMALL_KWARG * 3
    check_kwarg_sizes({"num_classes": big}, sd_with(big), "w.pth")          # as long as a tensor: fits
    check_kwarg_sizes({"num_classes": SMALL_KWARG, "flag": True}, sd_with(4), "w.pth")   # small: never questioned
    with pytest.raises(ModelLoadError) as e:
        check_kwarg_sizes({"width": big + 1}, sd_with(big), "w.pth")
    assert str(e.value) == (f"w.pth: the constructor argument width={big + 1:,} is larger than every dimension of "
                            f"the weights in the file (the largest is {big:,}): a model built with it cannot hold "
                            f"these weights, and building it would take memory for nothing; give the right width "
                            f"(command line: --arch-kwarg width=N).")
    with pytest.raises(ModelLoadError, match=r"the largest is 0\)"):         # a file with no tensors at all
        check_kwarg_sizes({"num_classes": SMALL_KWARG + 1}, [("the file", {})], "w.pth")
    with pytest.raises(ModelLoadError, match=r"num_classes=65,537 is larger .*the largest is 6\)"):
        check_kwarg_sizes({"num_classes": SMALL_KWARG + 1}, [("the file", {"s": torch.tensor(1.0),
                                                                            "v": torch.zeros(6)})], "w.pth")


@pytest.fixture
def net():
    torch.manual_seed(4)
    return GlyphsNet().eval()


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_dotted_weights_key_reaches_a_nested_entry(tmp_path, net):
    path = tmp_path / "w.pth"
    torch.save({"ema": {"module": net.state_dict()}, "step": 3}, path)
    lm = load(path, arch=ARCH, state_dict_key="ema.module")
    assert same_weights(lm.model, net)
    assert "state dict read from checkpoint['ema']['module']" in lm.notes
    with pytest.raises(ModelLoadError) as e:
        load(path, arch=ARCH, state_dict_key="ema.modul")
    assert str(e.value) == ("w.pth: no entry 'ema.modul' (state_dict_key / --weights-key) in the checkpoint; "
                            "entries holding weights: checkpoint['ema']['module']; top-level keys: ema, step.")
    with pytest.raises(ModelLoadError) as e:
        load(path, arch=ARCH, state_dict_key="step")
    assert str(e.value) == ("w.pth: checkpoint['step'] holds no weights (a int); choose another "
                            "state_dict_key / --weights-key.")


def test_a_key_with_a_dot_in_its_name_is_taken_whole(tmp_path, net):
    path = tmp_path / "w.pth"
    torch.save({"model.ema": net.state_dict(), "model": {"ema": {"x": 1}}}, path)
    lm = load(path, arch=ARCH, state_dict_key="model.ema")
    assert same_weights(lm.model, net) and "state dict read from checkpoint['model.ema']" in lm.notes


def test_a_named_entry_holding_a_checkpoint_dict_takes_its_state_dict(tmp_path, net):
    other = GlyphsNet()
    path = tmp_path / "w.pth"
    torch.save({"best": {"epoch": 9, "model": net.state_dict(), "ema": other.state_dict()}}, path)
    lm = load(path, arch=ARCH, state_dict_key="best")
    assert same_weights(lm.model, net)
    assert "state dict read from checkpoint['best']['model']" in lm.notes


def test_a_file_that_is_not_a_dict_names_its_type_when_the_key_is_missing(tmp_path, net):
    path = tmp_path / "w.pth"
    torch.save([net.state_dict()], path)
    with pytest.raises(ModelLoadError) as e:
        load(path, arch=ARCH, state_dict_key="model")
    assert str(e.value).endswith("entries holding weights: none; top-level keys: list.")


def test_a_missing_key_names_every_entry_holding_weights_and_counts_the_keys_not_shown(tmp_path, net):
    path = tmp_path / "w.pth"
    other = {f"k{i:02d}": i for i in range(23)}
    torch.save({"model": net.state_dict(), "ema": {"module": net.state_dict()}, **other}, path)
    with pytest.raises(ModelLoadError) as e:
        load(path, arch=ARCH, state_dict_key="emma")
    assert str(e.value) == ("w.pth: no entry 'emma' (state_dict_key / --weights-key) in the checkpoint; entries "
                            "holding weights: checkpoint['model'], checkpoint['ema']['module']; top-level keys: "
                            "model, ema, k00, k01, k02, k03, k04, k05, ... and 17 more.")


def test_the_note_on_another_entry_gives_its_dotted_key(tmp_path, net):
    path = tmp_path / "w.pth"
    torch.save({"model": net.state_dict(), "ema": {"module": net.state_dict()}}, path)
    lm = load(path, arch=ARCH)
    assert lm.notes[:2] == [
        "state dict read from checkpoint['model']",
        "the checkpoint also holds checkpoint['ema']['module'] (not used; to load it instead: "
        "state_dict_key='ema.module', command line --weights-key ema.module)"]


def test_a_named_entry_holding_a_whole_pickled_network_gives_its_weights(tmp_path, net):
    path = tmp_path / "w.pth"
    torch.save({"model": net, "epoch": 2}, path)
    lm = load(path, arch=ARCH, trust_pickle=True, state_dict_key="model")
    assert same_weights(lm.model, net)


def test_named_entries_use_only_the_first_state_dict_inside(tmp_path, net):
    path = tmp_path / "w.pth"
    torch.save({"best": {"model": net.state_dict(), "ema": GlyphsNet().state_dict()}}, path)
    lm = load(path, arch=ARCH, state_dict_key="best")
    assert same_weights(lm.model, net)
    assert lm.notes[0] == "state dict read from checkpoint['best']['model']"
    assert not any("also holds" in n for n in lm.notes)                         # the other is not offered


class NoWeights(torch.nn.Module):
    """A network with no parameter named ``*.weight`` (a learned scale)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x * self.scale.view(1, 3, 1, 1)


def test_a_network_without_weight_tensors_still_gets_its_mismatch_report(tmp_path, monkeypatch):
    import sys
    import types
    mod = types.ModuleType("t_no_weights_net")
    mod.NoWeights = NoWeights
    monkeypatch.setitem(sys.modules, "t_no_weights_net", mod)
    path = tmp_path / "w.pth"
    torch.save({"scale": torch.ones(4)}, path)
    with pytest.raises(ModelLoadError) as e:
        load(path, arch="t_no_weights_net:NoWeights")
    assert str(e.value).startswith("w.pth does not fit NoWeights: 1 tensors in the checkpoint, 1 in the model; "
                                   "0 missing, 0 unexpected, 1 with another shape.")


@pytest.mark.parametrize("extra, named, them", [
    (["step"], "the 1 other (step)", "it"),
    (["loss.weight", "step"], "the 2 others (loss.weight, step)", "them"),
    (["a", "b", "c", "d"], "the 4 others (a, b, c, ... and 1 more)", "them"),
])
def test_tensors_saved_beside_the_network_are_named_three_at_most(tmp_path, net, extra, named, them):
    path = tmp_path / "w.pth"
    torch.save({**net.state_dict(), **{k: torch.ones(2) for k in extra}}, path)
    with pytest.raises(ModelLoadError) as e:
        load(path, arch=ARCH)
    assert (f"Likely fix: every tensor of GlyphsNet is in the checkpoint; {named} were "
            "saved beside the network (a loss's weights, a training counter...): load with strict=False (command "
            f"line: --no-strict) to use the network's tensors and leave {them} out.") in str(e.value)
