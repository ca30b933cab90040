"""Qt-free core: input spec, hook-based activations, backprop rules, Grad-CAM, display helpers.

Imports torch, numpy and OpenCV only -- never Qt.
"""
from .errors import CnnvisError
from .spec import InputSpec, FIT_MODES, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["CnnvisError", "InputSpec", "FIT_MODES", "IMAGENET_MEAN", "IMAGENET_STD"]
from .display import (ActivationMosaic, normalize_unit, saliency_to_image, FILTERS, colormap_lut, heatmap,
                      overlay)

__all__ += ["ActivationMosaic", "normalize_unit", "saliency_to_image", "FILTERS", "colormap_lut", "heatmap",
            "overlay"]
