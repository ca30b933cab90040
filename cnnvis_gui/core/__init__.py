"""Qt-free core: input spec, hook-based activations, backprop rules, Grad-CAM, display helpers.

Imports torch, numpy and OpenCV only -- never Qt.
"""
from .errors import CnnvisError
from .spec import InputSpec, FIT_MODES, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["CnnvisError", "InputSpec", "FIT_MODES", "IMAGENET_MEAN", "IMAGENET_STD"]
