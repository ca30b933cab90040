"""Opening a file never runs code: an architecture named *by the file* needs ``trust_code``.

Every case builds its crafted file here and checks a marker file that the named code would
create: its absence proves nothing ran.
"""
from __future__ import annotations

import pytest
import torch

from cnnvis_gui.models import ModelLoadError, UntrustedCodeError, demo, load
from cnnvis_gui.models.demo_nets import ShapesNet

from .helpers import (pth_with_meta, plain_with_sidecar, py_beside, safetensors_with_meta, shapes_state_dict,
                      touch_meta)

CALLABLES = ["os:system", "subprocess:getoutput"]


def _refused(path, marker, target):
    with pytest.raises(UntrustedCodeError) as ei:
        load(path)
    assert not marker.exists(), "the code named by the file ran"
    msg = str(ei.value)
    assert target in msg and "trust_code=True" in msg and "--trust-code" in msg and "\n" not in msg
    assert target in ei.value.target and ei.value.path == path
    return ei.value


@pytest.mark.parametrize("callable_", CALLABLES)
def test_pth_cnnvis_key_naming_a_callable_is_refused(tmp_path, callable_):
    marker = tmp_path / "PWNED"
    p = pth_with_meta(tmp_path / "e.pth", touch_meta(marker, callable_))
    e = _refused(p, marker, callable_)
    assert "e.pth's own 'cnnvis' metadata" in str(e)


@pytest.mark.parametrize("callable_", CALLABLES)
def test_safetensors_header_naming_a_callable_is_refused(tmp_path, callable_):
    marker = tmp_path / "PWNED"
    p = safetensors_with_meta(tmp_path / "e.safetensors", touch_meta(marker, callable_))
    _refused(p, marker, callable_)


@pytest.mark.parametrize("wrap", [False, True], ids=["bare", "wrapped"])
def test_sidecar_json_naming_a_callable_is_refused(tmp_path, wrap):
    marker = tmp_path / "PWNED"
    p = plain_with_sidecar(tmp_path / "plain.pth", touch_meta(marker), wrap=wrap)
    e = _refused(p, marker, "os:system")
    assert "plain.json" in str(e) and e.origin.startswith("the sidecar file")


def test_py_file_beside_the_checkpoint_is_refused_then_runs_with_trust_code(tmp_path):
    marker = tmp_path / "RAN"
    p = py_beside(tmp_path, marker)
    e = _refused(p, marker, "evil.py")
    assert e.target == f"{tmp_path / 'evil.py'}:Net"
    assert str(tmp_path / "evil.py") in e.target      # the window shows the full path
    lm = load(p, trust_code=True)                     # consent: the file's code runs, the model loads
    assert marker.exists() and isinstance(lm.model, ShapesNet)


def test_callable_runs_only_with_trust_code(tmp_path):
    # proof the gate is what stops it: with consent the same file's callable is called
    p = pth_with_meta(tmp_path / "e.pth", {"arch": "collections:OrderedDict"})
    with pytest.raises(UntrustedCodeError):
        load(p)
    with pytest.raises(ModelLoadError, match="not a torch.nn.Module"):
        load(p, trust_code=True)


def test_user_named_architecture_needs_no_consent(tmp_path):
    marker = tmp_path / "PWNED"
    p = pth_with_meta(tmp_path / "e.pth", touch_meta(marker))
    lm = load(p, arch="cnnvis_gui.models.demo_nets:ShapesNet")   # the user's choice overrides the file's
    assert isinstance(lm.model, ShapesNet) and not marker.exists()


def test_demo_checkpoints_open_without_consent():
    for name in ("shapes", "glyphs"):
        assert demo(name).model is not None


def test_torchvision_name_from_metadata_is_allowed_but_not_its_downloads(tmp_path):
    import torchvision
    sd = torchvision.models.get_model("squeezenet1_1", weights=None, num_classes=3).state_dict()
    p = tmp_path / "tv.pth"
    torch.save({"state_dict": sd, "cnnvis": {"arch": "torchvision:squeezenet1_1", "arch_kwargs": {"num_classes": 3},
                                             "spec": {"height": 64, "width": 64}}}, p)
    assert load(p).model is not None
    torch.save({"state_dict": sd, "cnnvis": {"arch": "torchvision:squeezenet1_1",
                                             "arch_kwargs": {"num_classes": 3, "weights": "DEFAULT"}}}, p)
    with pytest.raises(ModelLoadError, match=r"weights='DEFAULT' would make the builder download"):
        load(p)
    torch.save({"state_dict": sd, "cnnvis": {"arch": "torchvision:get_model"}}, p)   # a function, not a model
    with pytest.raises(UntrustedCodeError, match="torchvision does not list"):
        load(p)


def test_non_literal_kwargs_from_a_file_are_refused_even_with_trust(tmp_path):
    p = tmp_path / "k.pth"
    torch.save({"state_dict": shapes_state_dict(),
                "cnnvis": {"arch": "cnnvis_gui.models.demo_nets:ShapesNet",
                           "arch_kwargs": {"num_classes": torch.tensor(10)}}}, p)
    for trust in (False, True):
        with pytest.raises(ModelLoadError, match="num_classes= is not a plain value"):
            load(p, trust_code=trust)


def test_trust_pickle_does_not_imply_trust_code(tmp_path):
    marker = tmp_path / "PWNED"
    p = pth_with_meta(tmp_path / "e.pth", touch_meta(marker))
    with pytest.raises(UntrustedCodeError):
        load(p, trust_pickle=True)
    assert not marker.exists()
