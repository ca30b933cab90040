"""Qt-free core: input spec, hook-based activations, backprop rules, Grad-CAM, display helpers.

Imports torch, numpy and OpenCV only -- never Qt.
"""
from .errors import CnnvisError
from .spec import InputSpec, FIT_MODES, IMAGENET_MEAN, IMAGENET_STD
from .engine import (METHODS, SALIENCY_METHODS, CAM_METHODS, LAYER_CAMS, ATTENTION_CAMS, OBJECTIVES, Visualizer,
                     Frame, ModelMap, LayerInfo, ModelForwardError, saliency, grad_cam, cam, model_map)
from .display import ActivationMosaic, normalize_unit, colormap_lut, heatmap, overlay
from .saliency_display import (saliency_to_image, display_scale, describe_display, FILTERS, SIGNS, CLIPS,
                               DEFAULT_FILTER, DEFAULT_SIGN, DEFAULT_CLIP, DEFAULT_PERCENTILE)

__all__ = [
    "CnnvisError", "InputSpec", "FIT_MODES", "IMAGENET_MEAN", "IMAGENET_STD",
    "METHODS", "SALIENCY_METHODS", "CAM_METHODS", "LAYER_CAMS", "ATTENTION_CAMS", "OBJECTIVES", "Visualizer",
    "Frame", "ModelMap",
    "LayerInfo", "ModelForwardError", "saliency", "grad_cam", "cam", "model_map",
    "ActivationMosaic", "normalize_unit", "colormap_lut", "heatmap", "overlay",
    "saliency_to_image", "display_scale", "describe_display", "FILTERS", "SIGNS", "CLIPS",
    "DEFAULT_FILTER", "DEFAULT_SIGN", "DEFAULT_CLIP", "DEFAULT_PERCENTILE",
]
