"""Qt-free feature visualization: images that show what a unit responds to (lucent's split).

* :mod:`.param` -- how the image is parameterized: pixels, Lucid's Fourier basis with
  decorrelated colour, MACO's phase with a fixed natural-image magnitude;
* :mod:`.objectives` -- what is maximized: channels, neurons, class logits, directions,
  diversity, composable with ``+`` and ``-``; :mod:`.spec_text` reads them written as text
  (``"features.10:5 - 0.5*features.10:7"``, ``cnnvis optimize --objective``);
* :mod:`.transform` -- the random transforms of every step (pad, jitter, scale, rotation);
* :mod:`.render` -- the loop (Adam, progress, stop keeping the best images, seeds);
* :mod:`.yosinski` -- the regularized gradient ascent of Yosinski et al. 2015, by preset.

>>> from cnnvis_gui.optvis import render, channel, class_logit                  # doctest: +SKIP
>>> res = render(model, spec, class_logit(281))                                # doctest: +SKIP
>>> res.images[0]          # H x W x 3 uint8 RGB                              # doctest: +SKIP
"""
from .colour import colour_matrix, recorrelate, to_model_input
from .param import PARAMETERIZATIONS, ImageParam, PixelImage, FourierImage, MacoImage, make_param
from .objectives import (Objective, channel, neuron, class_logit, direction, diversity, per_image, unit_map,
                         gram_matrices, with_diversity)
from .transform import Transform, Pad, Jitter, RandomScale, RandomRotate, Transforms, standard_transforms
from .capture import LayerCapture, resolve_layer
from .spec_text import parse_objective
from .render import RenderParams, RenderStep, RenderResult, Renderer, render, sample_seed

__all__ = ["colour_matrix", "recorrelate", "to_model_input",
           "PARAMETERIZATIONS", "ImageParam", "PixelImage", "FourierImage", "MacoImage", "make_param",
           "Objective", "channel", "neuron", "class_logit", "direction", "diversity", "per_image", "unit_map",
           "gram_matrices", "with_diversity",
           "Transform", "Pad", "Jitter", "RandomScale", "RandomRotate", "Transforms", "standard_transforms",
           "LayerCapture", "resolve_layer", "parse_objective",
           "RenderParams", "RenderStep", "RenderResult", "Renderer", "render", "sample_seed"]
