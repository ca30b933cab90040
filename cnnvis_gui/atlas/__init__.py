"""Qt-free unit atlas: top-k image scans, receptive-field crops, optimized images (by preset, cached), the cache.

Examples
--------
>>> from cnnvis_gui.atlas import TopKScan, ReceptiveFields, ActivationMaximizer
>>> scan = TopKScan(lm.model, lm.spec, "photos/", ["features.10"], k=9)   # doctest: +SKIP
>>> for p in scan.run(): print(p.describe())                              # doctest: +SKIP
>>> hits = scan.result.hits("features.10", 5)                               # doctest: +SKIP
>>> crops = ReceptiveFields(lm.model, lm.spec).crops("features.10", 5, hits[0])   # doctest: +SKIP
>>> opt = ActivationMaximizer(lm.model, lm.spec, "features.10", 5)                 # doctest: +SKIP
>>> for step in opt.run(): show(step.image)                                        # doctest: +SKIP
"""
from .cache import cache_dir, weights_hash, ENV_VAR
from .folders import list_images
from .results import Hit, ScanProgress, LayerTopK, AtlasScan
from .scan import TopKScan, scan_folder, load_scan, resolve_layers
from .crops import Box, HitCrops, ReceptiveFields, crop_hits, support_box, input_position, fit_tile
from .optimize import (OptimizeParams, RenderParams, PRESETS, DEFAULT_PRESET, PRESET_WORDS, TOOLBOX_LR, OptStep,
                       OptimizeResult, ActivationMaximizer, maximize, optimize_units, preset_name, unit_activation,
                       random_input)
from .montage import grid, unit_montage
from .patterns import top1_crops, optimized_images

__all__ = ["cache_dir", "weights_hash", "ENV_VAR",
           "Hit", "ScanProgress", "LayerTopK", "AtlasScan", "TopKScan", "scan_folder", "load_scan", "list_images",
           "resolve_layers",
           "Box", "HitCrops", "ReceptiveFields", "crop_hits", "support_box", "input_position", "fit_tile",
           "OptimizeParams", "RenderParams", "PRESETS", "DEFAULT_PRESET", "PRESET_WORDS", "TOOLBOX_LR", "OptStep",
           "OptimizeResult", "ActivationMaximizer", "maximize", "optimize_units", "preset_name", "unit_activation",
           "random_input", "grid", "unit_montage", "top1_crops", "optimized_images"]
