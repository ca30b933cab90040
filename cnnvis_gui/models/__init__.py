"""Qt-free model loading: architecture sources, safe weight reading, metadata, demo models.

One file per concern (as torchvision's ``models/_api.py`` / ``_utils.py`` and timm's
``_builder.py`` / ``_hub.py`` split the same job):

- ``loader``       ``load()``: the one entry point that puts the pieces together
- ``trust``        what a file may make this program run (the one place that decides)
- ``builders``     build an architecture from its source (torchvision, timm, module, file)
- ``weights``      read weight files (state dicts, checkpoint dicts, safetensors) without running code
- ``pickles``      pickle safety: inert extras, stand-ins for unknown classes, the refusal
- ``pickle_scan``  the globals a pickle looks up, by following its stack and memo (nothing runs)
- ``metadata``     the checkpoint's ``"cnnvis"`` key and the sidecar JSON
- ``state_dicts``  find the state dict in a checkpoint and fit it to the model
- ``probe``        input spec resolution and the probe forward
- ``labels``       class-label files
- ``demos``        the shipped demo models

Examples
--------
>>> from cnnvis_gui.models import load, demo
>>> lm = load("weights.pth", arch="torchvision:resnet18", num_classes=10)   # doctest: +SKIP
>>> lm.model, lm.spec, lm.labels, lm.name, lm.notes                          # doctest: +SKIP
>>> demo("shapes")                                                           # doctest: +SKIP
"""
from .builders import build_arch
from .errors import ModelLoadError, UntrustedCodeError, UntrustedPickleError
from .labels import load_labels
from .loader import LoadedModel, load
from .metadata import CHECKPOINT_META_KEY
from .state_dicts import STATE_DICT_KEYS, STRIP_PREFIXES
from .weights import read_weights
from .demos import DEMO_NAMES, assets_dir, demo, demo_checkpoint, demo_samples

__all__ = ["load", "LoadedModel", "ModelLoadError", "UntrustedPickleError", "UntrustedCodeError", "load_labels", "read_weights", "build_arch",
           "CHECKPOINT_META_KEY", "STATE_DICT_KEYS", "STRIP_PREFIXES",
           "DEMO_NAMES", "assets_dir", "demo", "demo_checkpoint", "demo_samples"]
