"""The trust policy on its own: what a file may name without the user's consent."""
from __future__ import annotations

import pytest

from cnnvis_gui.models import ModelLoadError, UntrustedCodeError
from cnnvis_gui.models.trust import (DEMO_ARCHS, FETCHING_KWARGS, allowed_without_consent, check_file_arch,
                                     check_file_kwargs)


@pytest.mark.parametrize("arch", sorted(DEMO_ARCHS) + ["torchvision:resnet18", " torchvision:vgg11 ",
                                                        "timm:resnet18"])
def test_allowlisted(arch):
    assert allowed_without_consent(arch)
    check_file_arch(arch, "f")   # no error


@pytest.mark.parametrize("arch", ["os:system", "subprocess:getoutput", "builtins:eval", "net.py:Net",
                                  "/abs/net.py:Net", "sub/dir/net:Net", "torchvision:get_model",
                                  "torchvision:models.resnet18", "timm:create_model", "timm:hf-hub:x/y",
                                  "cnnvis_gui.models.demo_nets:_block", "cnnvis_gui.models.train_demo:main",
                                  "cnnvis_gui.models.demo_nets:ShapesNetX", "", "torchvision:", 42, None])
def test_refused_without_consent(arch):
    assert not allowed_without_consent(arch)
    with pytest.raises(ModelLoadError) as ei:
        check_file_arch(arch, "x.pth's metadata")
    if isinstance(arch, str):
        assert isinstance(ei.value, UntrustedCodeError) and ei.value.target == arch.strip()
    check_file_arch(arch, "x.pth's metadata", trust_code=True)   # consent: allowed


def test_refusal_names_the_file_path():
    with pytest.raises(UntrustedCodeError, match=r"the Python file /d/evil\.py \(its top level runs"):
        check_file_arch("/d/evil.py:Net", "m.pth's metadata")


@pytest.mark.parametrize("kw", [{"num_classes": 10}, {"a": [1, 2.5, "x", None, True]}, {"cfg": {"d": {"e": 1}}},
                                {}, None, {"weights": None, "pretrained": False}])
def test_plain_kwargs_pass(kw):
    assert check_file_kwargs(kw, "f") == (kw or {})


@pytest.mark.parametrize("kw", [{"x": object()}, {"x": b"bytes"}, {"x": float("nan")}, {"x": {1: 2}},
                                {"1bad": 1}, {"x": [[[[[[1]]]]]]}, {"x": list(range(20000))}, [1, 2]])
def test_non_plain_kwargs_refused_always(kw):
    for trust in (False, True):
        with pytest.raises(ModelLoadError):
            check_file_kwargs(kw, "f", trust_code=trust)


@pytest.mark.parametrize("key", sorted(FETCHING_KWARGS))
def test_fetching_kwargs_need_consent(key):
    with pytest.raises(ModelLoadError, match="download weights or read another file"):
        check_file_kwargs({key: "DEFAULT"}, "f")
    assert check_file_kwargs({key: "DEFAULT"}, "f", trust_code=True) == {key: "DEFAULT"}
