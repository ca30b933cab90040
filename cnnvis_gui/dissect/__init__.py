"""Qt-free network dissection: name what each unit detects, on the user's own labelled images.

Bau, Zhou, Khosla, Oliva & Torralba, "Network Dissection: Quantifying Interpretability of Deep
Visual Representations", CVPR 2017 (and NetDissect-Lite).

>>> from cnnvis_gui.dissect import Dissection
>>> d = Dissection(lm.model, lm.spec, "my_concepts/", ["layer4"])       # doctest: +SKIP
>>> for p in d.run(): print(p.describe())                                # doctest: +SKIP
>>> d.result.unit("layer4", 37).describe()                               # doctest: +SKIP
'stripes (texture), IoU 0.21'
"""
from .concepts import Concept, ConceptError, ConceptSet
from .formats import open_concepts
from .results import DissectResult, LayerDissection, UnitLabel
from .scan import DEFAULT_QUANTILE, DissectProgress, Dissection, dissect, load_dissection
from .tally import IOU_INTERPRETABLE

__all__ = ["Concept", "ConceptError", "ConceptSet", "open_concepts", "DissectResult", "LayerDissection", "UnitLabel",
           "DEFAULT_QUANTILE", "DissectProgress", "Dissection", "dissect", "load_dissection", "IOU_INTERPRETABLE"]
