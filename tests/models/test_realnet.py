"""The real pretrained MobileNetV2 and real photographs (the ``realnet`` fixture) predict what is in them.

The fixture is shared by every real-network test (saliency display, optimized images, dissection): these
tests make sure it is what it says -- torchvision's own weights, loaded offline by the project's loader,
seeing real photographs -- so that a picture judged on it is judged on a real network.
"""
from __future__ import annotations

import torch

from tests import realnet as rn

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}


def _top(realnet, name: str, k: int = 5) -> list:
    x = realnet.spec.to_tensor(realnet.photo(name))
    with torch.no_grad():
        p = torch.softmax(realnet.model(x), 1)[0]
    return [realnet.labels[int(i)] for i in p.topk(k).indices]


def test_the_fixture_is_torchvisions_real_file_loaded_offline(realnet):
    seeded = realnet.torch_home / "hub" / "checkpoints" / rn.WEIGHTS_FILE
    assert rn.sha256(seeded).startswith("b0353104")
    assert realnet.loaded.pretrained == "IMAGENET1K_V1"
    assert len(realnet.labels) == 1000 and realnet.labels[285] == "Egyptian cat"
    assert (realnet.spec.channels, realnet.spec.height, realnet.spec.width) == (3, 224, 224)
    assert not realnet.model.training
    # the weights are the file's, not a random init
    sd = torch.load(seeded, map_location="cpu", weights_only=True)
    got = realnet.model.state_dict()
    assert set(sd) == set(got)
    assert all(torch.equal(sd[k], got[k]) for k in sd)


def test_the_cat_photo_top5_holds_cat_classes(realnet):
    top5 = _top(realnet, "chelsea")
    assert set(top5[:3]) <= CAT_CLASSES, top5     # Egyptian cat, tiger cat, tabby


def test_coffee_is_espresso(realnet):
    top5 = _top(realnet, "coffee")
    assert top5[0] == "espresso", top5


def test_photos_are_bgr_frames_and_copies(realnet):
    a = realnet.photo("chelsea")
    assert a.dtype.name == "uint8" and a.ndim == 3 and a.shape[2] == 3
    b, g, r = (float(a[..., i].mean()) for i in range(3))
    assert r > b          # an orange tabby: more red than blue in BGR order
    a[:] = 0
    assert realnet.photo("chelsea").any()


def test_realnet_env_loads_by_name_offline(realnet_env):
    from cnnvis_gui.models import load
    loaded = load(arch=rn.ARCH, pretrained=rn.PRETRAINED)
    x = realnet_env.spec.to_tensor(realnet_env.photo("coffee"))
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(x), realnet_env.model(x))
