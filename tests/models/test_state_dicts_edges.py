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
    with pytest.raises(ModelLoadError, match=r"the largest is 1\)"):                # scalars only: 1
        check_kwarg_sizes({"num_classes": SMALL_KWARG + 1}, [("the file", {"s": torch.tensor(1.0)})], "w.pth")
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


def _module(monkeypatch, name, cls):
    import sys
    import types
    mod = types.ModuleType(name)
    setattr(mod, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, name, mod)
    return f"{name}:{cls.__name__}"


@pytest.mark.parametrize("ckpt", [{"scale": torch.full((3,), 2.0)},                  # one tensor
                                  {"scale": torch.full((3,), 2.0), "version": 2}])    # half of the entries
def test_a_state_dict_of_one_tensor_or_half_tensors_is_a_state_dict(tmp_path, monkeypatch, ckpt):
    arch = _module(monkeypatch, "t_no_weights_net", NoWeights)
    torch.save(ckpt, tmp_path / "w.pth")
    lm = load(tmp_path / "w.pth", arch=arch)
    assert torch.equal(lm.model.scale, torch.full((3,), 2.0))
    assert not any(n.startswith("state dict read from") for n in lm.notes)        # the file itself


def test_a_checkpoint_with_one_tensor_among_its_settings_is_not_itself_a_state_dict(tmp_path, net):
    torch.save({"state_dict": net.state_dict(), "epoch": 3, "lr": 0.1, "step": torch.tensor(5)}, tmp_path / "w.pth")
    lm = load(tmp_path / "w.pth", arch=ARCH)
    assert same_weights(lm.model, net)
    assert "state dict read from checkpoint['state_dict']" in lm.notes
    assert not any("also holds" in n for n in lm.notes)                  # no "the file" beside it


def test_a_pickled_network_loaded_into_an_architecture_says_where_its_weights_came_from(tmp_path, net):
    torch.save(net, tmp_path / "whole.pth")
    lm = load(tmp_path / "whole.pth", arch=ARCH, trust_pickle=True)
    assert same_weights(lm.model, net) and "state dict read from the pickled model" in lm.notes
    torch.save({"model": net, "epoch": 1}, tmp_path / "inside.pth")
    lm = load(tmp_path / "inside.pth", arch=ARCH, trust_pickle=True)
    assert same_weights(lm.model, net) and "state dict read from checkpoint['model']" in lm.notes


def test_keys_split_among_three_wrappers_prefixes_are_all_stripped(tmp_path, net):
    prefixes = ("module.", "model.", "net.")
    sd = {prefixes[i % 3] + k: v for i, (k, v) in enumerate(net.state_dict().items())}
    torch.save(sd, tmp_path / "w.pth")
    lm = load(tmp_path / "w.pth", arch=ARCH)
    assert same_weights(lm.model, net)
    assert "stripped key prefixes 'module.' + 'model.' + 'net.' so the keys fit the architecture" in lm.notes


@pytest.mark.parametrize("prefixed, hint", [(2, True), (1, False)])
def test_an_unknown_prefix_is_named_when_it_covers_half_the_missing_keys(tmp_path, net, prefixed, hint):
    """Four tensors missing: ``prefixed`` of them are in the file under 'backbone.', the rest not at all."""
    sd = dict(net.state_dict())
    keys = [k for k in sd if not k.endswith("num_batches_tracked")][:4]
    for i, k in enumerate(keys):
        v = sd.pop(k)
        if i < prefixed:
            sd["backbone." + k] = v
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(ModelLoadError) as e:
        load(tmp_path / "w.pth", arch=ARCH)
    assert f"4 missing, {prefixed} unexpected" in str(e.value)
    assert ("the checkpoint keys carry the prefix 'backbone.'" in str(e.value)) is hint


class TenScalars(torch.nn.Module):
    def __init__(self):
        super().__init__()
        for i in range(10):
            setattr(self, f"p{i}", torch.nn.Parameter(torch.zeros(1)))

    def forward(self, x):
        return x


def test_three_tensors_in_ten_fitting_is_weights_of_another_network(tmp_path, monkeypatch):
    arch = _module(monkeypatch, "t_ten_scalars_net", TenScalars)
    sd = {**{f"p{i}": torch.zeros(1) for i in range(3)}, **{f"q{i}": torch.zeros(1) for i in range(7)}}
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(ModelLoadError) as e:
        load(tmp_path / "w.pth", arch=arch)
    assert "only 3 of 10 model tensors match by name and shape: the weights are probably for a different " \
           "architecture" in str(e.value)


class QuantizedBuffer(torch.nn.Module):
    """A network holding a quantized tensor (as ``quantize=True`` models do)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.register_buffer("scale_q", torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8))

    def forward(self, x):
        return self.conv(x)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_a_quantized_network_is_refused_with_the_way_out(tmp_path, monkeypatch):
    arch = _module(monkeypatch, "t_quantized_net", QuantizedBuffer)
    torch.save({"conv.weight": torch.zeros(2, 1, 3, 3), "conv.bias": torch.zeros(2)}, tmp_path / "w.pth")
    with pytest.raises(ModelLoadError) as e:
        load(tmp_path / "w.pth", arch=arch)
    assert str(e.value).startswith("QuantizedBuffer is a quantized model ('scale_q' is a Tensor of dtype torch.qint8): "
                                   "backpropagation does not run through quantized layers")


def test_of_two_entries_the_one_whose_shapes_fit_is_loaded(tmp_path, net):
    """Same names in both; the first has another number of classes: the second, which fits, is used."""
    torch.save({"state_dict": GlyphsNet(num_classes=7).state_dict(), "ema": net.state_dict()}, tmp_path / "w.pth")
    lm = load(tmp_path / "w.pth", arch=ARCH)
    assert same_weights(lm.model, net) and "state dict read from checkpoint['ema']" in lm.notes


def test_with_shapes_tied_the_entry_naming_more_of_the_network_is_used(tmp_path, net):
    """Both fit 20 tensors by name and shape; the second also names the classifier (another class
    count), the first has two stray tensors instead: the second is the network's checkpoint."""
    other = GlyphsNet(num_classes=7).state_dict()
    stray = {k: v for k, v in net.state_dict().items() if not k.startswith("classifier.3.")}
    stray.update({"head.weight": torch.zeros(3), "head.bias": torch.zeros(3)})
    torch.save({"state_dict": stray, "ema": other}, tmp_path / "w.pth")
    lm = load(tmp_path / "w.pth", arch=ARCH, strict=False)
    assert "state dict read from checkpoint['ema']" in lm.notes
    assert any(n.startswith("strict=False: skipped for shape mismatch: classifier.3.weight") for n in lm.notes)


class Twin(torch.nn.Module):
    """A network with a layer ``fc`` and a sub-network ``model`` that has one too."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Conv2d(3, 2, 1)
        self.model = torch.nn.Module()
        self.model.fc = torch.nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return (self.fc(x) + self.model.fc(x)).mean((2, 3))


def test_keys_that_fit_as_they_are_are_not_stripped(tmp_path, monkeypatch):
    arch = _module(monkeypatch, "t_twin_net", Twin)
    w = torch.full((2, 3, 1, 1), 3.0)
    torch.save({"model.fc.weight": w, "model.fc.bias": torch.ones(2)}, tmp_path / "w.pth")
    lm = load(tmp_path / "w.pth", arch=arch, strict=False)
    assert torch.equal(lm.model.model.fc.weight, w) and not torch.equal(lm.model.fc.weight, w)
    assert not any("stripped" in n for n in lm.notes)


def test_of_two_prefixes_that_fit_equally_the_first_known_one_is_stripped(tmp_path):
    a, b = torch.full((16, 1, 3, 3), 1.0), torch.full((16, 1, 3, 3), 2.0)
    torch.save({"module.features.0.weight": a, "model.features.0.weight": b}, tmp_path / "w.pth")
    lm = load(tmp_path / "w.pth", arch=ARCH, strict=False)
    assert torch.equal(lm.model.features[0].weight, a)
    assert "stripped key prefix 'module.' so the keys fit the architecture" in lm.notes


def test_the_note_names_every_other_entry_and_offers_the_first(tmp_path, net):
    torch.save({"model": net.state_dict(), "ema": net.state_dict(), "model_ema": net.state_dict()}, tmp_path / "w.pth")
    lm = load(tmp_path / "w.pth", arch=ARCH)
    assert lm.notes[:2] == [
        "state dict read from checkpoint['model']",
        "the checkpoint also holds checkpoint['ema'], checkpoint['model_ema'] (not used; to load one of them "
        "instead: state_dict_key='ema', command line --weights-key ema)"]


def test_tensors_at_the_top_that_do_not_fit_are_named_without_a_key_to_choose_them(tmp_path, net):
    torch.save({**GlyphsNet(num_classes=7).state_dict(), "ema": net.state_dict(),
                "model_ema": GlyphsNet(num_classes=5).state_dict()}, tmp_path / "w.pth")
    lm = load(tmp_path / "w.pth", arch=ARCH)
    assert same_weights(lm.model, net)
    assert lm.notes[:2] == ["state dict read from checkpoint['ema']",
                            "the checkpoint also holds the file, checkpoint['model_ema'] (not used)"]


class QuantizedLinear(torch.nn.Module):
    """A network with a quantized layer: its state holds packed parameters, not tensors."""

    def __init__(self):
        super().__init__()
        import torch.ao.nn.quantized as nnq
        self.fc = nnq.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")   # torch's own deprecation of quantized tensors
def test_a_quantized_layer_is_refused_by_its_first_entry_that_is_no_tensor(tmp_path, monkeypatch):
    arch = _module(monkeypatch, "t_quantized_linear_net", QuantizedLinear)
    torch.save({"fc.scale": torch.tensor(1.0)}, tmp_path / "w.pth")
    with pytest.raises(ModelLoadError) as e:
        load(tmp_path / "w.pth", arch=arch)
    assert str(e.value).startswith("QuantizedLinear is a quantized model ('fc._packed_params.dtype' is a dtype): "
                                   "backpropagation does not run through quantized layers")


def test_the_best_of_the_most_stripped_variants_is_loaded(tmp_path, net):
    """Every key under 'module.model.', then one under '_orig_mod.' and the rest under 'net.': of the
    variants three prefixes deep, the one stripping 'net.' fits 21 tensors, the other one."""
    keys = list(net.state_dict())
    sd = {"module.model." + ("_orig_mod." if i == 0 else "net.") + k: v
          for i, (k, v) in enumerate(net.state_dict().items())}
    torch.save(sd, tmp_path / "w.pth")
    lm = load(tmp_path / "w.pth", arch=ARCH, strict=False)
    got = lm.model.state_dict()
    assert all(torch.equal(got[k], net.state_dict()[k]) for k in keys[1:])
    assert "stripped key prefixes 'module.' + 'model.' + 'net.' so the keys fit the architecture" in lm.notes


def test_two_stripped_prefixes_are_said_in_the_plural(tmp_path, net):
    torch.save({"module._orig_mod." + k: v for k, v in net.state_dict().items()}, tmp_path / "w.pth")
    lm = load(tmp_path / "w.pth", arch=ARCH)
    assert same_weights(lm.model, net)
    assert "stripped key prefixes 'module.' + '_orig_mod.' so the keys fit the architecture" in lm.notes


def test_old_checkpoints_without_batchnorm_counters_load_and_are_not_counted_as_random(tmp_path, net):
    old = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    lm = load(tmp_path / "old.pth", arch=ARCH)                  # strict: the counters are no weights
    assert all(torch.equal(lm.model.state_dict()[k], v) for k, v in old.items())
    del old["features.0.weight"]
    torch.save(old, tmp_path / "older.pth")
    lm = load(tmp_path / "older.pth", arch=ARCH, strict=False)
    n = len(net.state_dict())
    assert f"strict=False: 1 of {n} tensors left at random init: features.0.weight" in lm.notes


class Versioned(torch.nn.Module):
    """A network that checks the version its state was saved by (its extra state)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def get_extra_state(self):
        return torch.tensor(2)

    def set_extra_state(self, state):
        if int(state) != 2:
            raise RuntimeError(f"saved by version {int(state)}, this is version 2")

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_a_network_that_refuses_its_saved_state_says_why(tmp_path, monkeypatch):
    arch = _module(monkeypatch, "t_versioned_net", Versioned)
    torch.save({**Versioned().state_dict(), "_extra_state": torch.tensor(1)}, tmp_path / "w.pth")
    with pytest.raises(ModelLoadError) as e:
        load(tmp_path / "w.pth", arch=arch)
    assert str(e.value) == "w.pth: loading the state dict failed: saved by version 1, this is version 2"


class _DictState(torch.nn.Module):
    """A network whose extra state is a dict (a version and a name), as get_extra_state allows."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.config = {"version": 2}

    def get_extra_state(self):
        return dict(self.config)

    def set_extra_state(self, state):
        self.config = dict(state)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_a_network_whose_extra_state_is_a_dict_loads_and_says_its_state_was_kept(tmp_path, monkeypatch):
    arch = _module(monkeypatch, "t_dict_state_net", _DictState)
    saved = _DictState()
    torch.save(saved.state_dict(), tmp_path / "w.pth")         # a float network: not 'a quantized model'
    lm = load(tmp_path / "w.pth", arch=arch)
    assert torch.equal(lm.model.conv.weight, saved.conv.weight) and torch.equal(lm.model.conv.bias, saved.conv.bias)
    assert lm.model.config == {"version": 2}
    assert any("kept the extra state of _extra_state as the architecture built it" in n for n in lm.notes), lm.notes
