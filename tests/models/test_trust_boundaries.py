"""Every check of the trust policy (``models/trust.py``) on its boundary, and the attack each one stops.

A file may name ``torchvision:NAME`` / ``timm:NAME`` for a listed model, or a demo network, and
have it built without a question.  The head must be *exactly* the library: a package called
``torchvision_extra`` would otherwise be imported, and its top level run, because its name starts
like torchvision's.
"""
from __future__ import annotations

import enum
import sys

import pytest
import torch

from cnnvis_gui.models import ModelLoadError, UntrustedCodeError, load
from cnnvis_gui.models.trust import allowed_without_consent, check_file_arch, check_file_kwargs


def _evil_package(root, name):
    """A package ``name`` whose import writes a marker file (and whose resnet18 would too)."""
    pkg = root / name
    pkg.mkdir()
    marker = root / f"{name}.ran"
    (pkg / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        "def resnet18(**kw):\n"
        f"    open({str(marker)!r}, 'w').write('called')\n")
    return marker


@pytest.mark.parametrize("head", ["torchvision_extra", "timm_extra", "torchvisionx"])
def test_a_package_named_like_a_listed_library_is_not_run(tmp_path, monkeypatch, head):
    marker = _evil_package(tmp_path, head)
    monkeypatch.syspath_prepend(str(tmp_path))
    ckpt = tmp_path / "model.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "cnnvis": {"arch": f"{head}:resnet18"}}, ckpt)
    with pytest.raises(UntrustedCodeError) as e:
        load(ckpt)
    assert f"the Python callable {head}:resnet18" in str(e.value) and "it was not run" in str(e.value)
    assert not marker.exists() and head not in sys.modules


@pytest.mark.parametrize("arch, allowed", [
    ("torchvision:resnet18", True),
    ("  torchvision:resnet18\n", True),                    # the whole name is stripped
    ("torchvision_extra:resnet18", False), ("torchvisionx:resnet18", False), ("xtorchvision:resnet18", False),
    ("Torchvision:resnet18", False), ("torchvision :resnet18", False),
    ("torchvision: resnet18", False), ("torchvision:ResNet18", False),
    ("torchvision:resnet18:x", False), ("torchvision:resnet18:", False), ("torchvision:", False),
    ("torchvision", False), (":resnet18", False),
    ("torchvision:list_models", False), ("torchvision:get_weight", False),  # functions of the module, not models
    ("timm:resnet18", True), ("timm_extra:resnet18", False), ("timmy:resnet18", False),
    ("timm:no_such_network", False), ("timm:resnet18:x", False),
    ("cnnvis_gui.models.demo_nets:ShapesNet", True), (" cnnvis_gui.models.demo_nets:GlyphsNet ", True),
    ("cnnvis_gui.models.demo_nets:shapesnet", False), ("cnnvis_gui.models.demo_nets.ShapesNet", False),
    (b"torchvision:resnet18", False), (["torchvision:resnet18"], False), (None, False),
])
def test_what_a_file_may_name_without_consent(arch, allowed):
    assert allowed_without_consent(arch) is allowed


def test_a_missing_library_is_left_to_the_builder_to_report(monkeypatch):
    """Without torchvision / timm installed, the policy cannot list their models: it lets the name
    through, and building it says the library is missing (no other package is imported for it)."""
    monkeypatch.setitem(sys.modules, "torchvision.models", None)        # import fails
    monkeypatch.setitem(sys.modules, "timm", None)
    assert allowed_without_consent("torchvision:anything") is True
    assert allowed_without_consent("timm:anything") is True
    assert allowed_without_consent("torchvision_extra:anything") is False


@pytest.mark.parametrize("arch, what", [
    ("/d/evil.py:Net", "the Python file /d/evil.py (its top level runs on import, then Net is called)"),
    ("evil.py:Net", "the Python file evil.py (its top level runs on import, then Net is called)"),
    ("sub/evil:Net", "the Python file sub/evil (its top level runs on import, then Net is called)"),
    ("sub\\evil:Net", "the Python file sub\\evil (its top level runs on import, then Net is called)"),
    ("evil.pyx:Net", "the Python callable evil.pyx:Net"),
    ("C:\\models\\evil.py:Net",                            # a drive letter: the callable is after the last colon
     "the Python file C:\\models\\evil.py (its top level runs on import, then Net is called)"),
    ("timm:hf-hub:x/y", "the Python callable timm:hf-hub:x/y"),
    ("torchvision:no_such_net", "torchvision:no_such_net, which torchvision does not list as a model"),
    ("timm:no_such_net", "timm:no_such_net, which timm does not list as a model"),
    ("torchvision_extra:resnet18", "the Python callable torchvision_extra:resnet18"),
    ("os:system", "the Python callable os:system"),
    (" os:system ", "the Python callable os:system"),
])
def test_each_refusal_says_what_would_have_run(arch, what, tmp_path):
    with pytest.raises(UntrustedCodeError) as e:
        check_file_arch(arch, "m.pth's 'cnnvis' key", path=tmp_path / "m.pth")
    err = e.value
    assert str(err).startswith(f"m.pth's 'cnnvis' key asks to run {what} to build the network; it was not run: "
                               f"opening a file is not consent to run code. Only if you trust"), str(err)
    assert err.target == arch.strip() and err.origin == "m.pth's 'cnnvis' key" and err.path == tmp_path / "m.pth"
    check_file_arch(arch, "m.pth's 'cnnvis' key", trust_code=True)     # the user's consent: built as asked


def test_a_name_that_is_not_text_is_a_load_error_not_a_question():
    for arch in (42, None, ["os:system"]):
        with pytest.raises(ModelLoadError) as e:
            check_file_arch(arch, "m.pth's metadata")
        assert not isinstance(e.value, UntrustedCodeError)          # nothing to consent to
        assert str(e.value) == (f"m.pth's metadata names an architecture that is not a string "
                                f"({type(arch).__name__}).")


def nested(depth):
    v = 1
    for _ in range(depth):
        v = [v]
    return v


class Colour(enum.IntEnum):
    RED = 1


class Name(str):
    pass


@pytest.mark.parametrize("kwargs, ok", [
    ({"x": nested(4)}, True), ({"x": nested(5)}, False),                  # at most 4 levels below the value
    ({"x": {"a": {"b": {"c": {"d": 1}}}}}, True), ({"x": {"a": {"b": {"c": {"d": {"e": 1}}}}}}, False),
    ({"x": list(range(9_999))}, True), ({"x": list(range(10_000))}, False),   # 10,000 values in all
    ({"x": list(range(4_999)), "y": list(range(4_999))}, True),
    ({"x": list(range(4_999)), "y": list(range(5_000))}, False),          # ... counted over every key
    ({"x": 1e308, "y": -0.0, "z": (1, "a")}, True),
    ({"x": float("inf")}, False), ({"x": float("-inf")}, False), ({"x": float("nan")}, False),
    ({"x": Colour.RED}, False), ({"x": Name("a")}, False), ({"x": 1 + 2j}, False), ({"x": {1, 2}}, False),
    ({"x": {1: "a"}}, False), ({"x": b"a"}, False),
    ({"class_": 1, "_x": 2, "x9": 3}, True),
    ({"a-b": 1}, False), ({"": 1}, False), ({"9x": 1}, False), ({1: 1}, False),
])
def test_file_kwargs_are_plain_literals_with_bounded_size(kwargs, ok):
    for trust in (False, True):                                           # consent does not change this
        if ok:
            got = check_file_kwargs(kwargs, "f", trust_code=trust)
            assert got == kwargs and got is not kwargs                    # a copy: the file's dict stays the file's
        else:
            with pytest.raises(ModelLoadError, match="^f: 'arch_kwargs' "):
                check_file_kwargs(kwargs, "f", trust_code=trust)


@pytest.mark.parametrize("value, ok", [(None, True), (False, True), (0, True),
                                       (True, False), ("", False), ("DEFAULT", False), (1, False), ([], False)])
def test_a_fetching_keyword_is_allowed_only_when_it_fetches_nothing(value, ok):
    if ok:
        assert check_file_kwargs({"pretrained": value}, "f") == {"pretrained": value}
    else:
        with pytest.raises(ModelLoadError, match=r"^f: 'arch_kwargs' pretrained=.* would make the builder download"):
            check_file_kwargs({"pretrained": value}, "f")
    assert check_file_kwargs({"pretrained": value}, "f", trust_code=True) == {"pretrained": value}


def test_kwargs_that_are_not_an_object():
    assert check_file_kwargs(None, "f") == {}
    for bad in ([("a", 1)], "a=1", 3):
        with pytest.raises(ModelLoadError, match=f"^f: 'arch_kwargs' must be an object of keyword arguments, "
                                                 f"got {type(bad).__name__}.$"):
            check_file_kwargs(bad, "f")


@pytest.mark.parametrize("arch", ["timm:hf-hub:someone/net", "torchvision:hf-hub:someone/net", "timm:a:b",
                                  "timm:", "torchvision:", "timm", "torchvision"])
def test_the_policy_refuses_a_second_colon_or_no_name_whatever_the_library_lists(monkeypatch, arch):
    """timm builds ``hf-hub:org/net`` by downloading it from the Hugging Face Hub: a file naming
    ``timm:hf-hub:...`` must be refused by the policy itself, not only because today's ``timm.is_model``
    happens to answer False.  Here the libraries list every name, and the shape of the name still decides."""
    import timm
    import torchvision.models as tvm

    class Everything(list):
        def __contains__(self, name):
            return True
    monkeypatch.setattr(timm, "is_model", lambda name: True)
    monkeypatch.setattr(tvm, "list_models", lambda *a, **k: Everything())
    assert allowed_without_consent("timm:anything") and allowed_without_consent("torchvision:anything")
    assert allowed_without_consent(arch) is False
