"""Qt-free model loading: architecture sources, safe weight reading, metadata, demo models.

>>> from cnnvis_gui.models import load, demo
>>> lm = load("weights.pth", arch="torchvision:resnet18", num_classes=10)   # doctest: +SKIP
>>> lm.model, lm.spec, lm.labels, lm.name, lm.notes                          # doctest: +SKIP
>>> demo("shapes")                                                           # doctest: +SKIP
"""
from .loader import (CHECKPOINT_META_KEY, STATE_DICT_KEYS, STRIP_PREFIXES, LoadedModel, ModelLoadError,
                     UntrustedPickleError,
                     build_arch, load, load_labels, read_weights)
from .demos import DEMO_NAMES, assets_dir, demo, demo_checkpoint, demo_samples

__all__ = ["load", "LoadedModel", "ModelLoadError", "UntrustedPickleError", "load_labels", "read_weights", "build_arch",
           "CHECKPOINT_META_KEY", "STATE_DICT_KEYS", "STRIP_PREFIXES",
           "DEMO_NAMES", "assets_dir", "demo", "demo_checkpoint", "demo_samples"]
