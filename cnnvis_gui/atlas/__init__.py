"""Qt-free unit atlas: top-k image scans, receptive-field crops, activation maximization, the cache."""
from .cache import cache_dir, weights_hash
from .scan import (Hit, ScanProgress, LayerTopK, AtlasScan, TopKScan, scan_folder, load_scan, list_images,
                   resolve_layers)

__all__ = ["cache_dir", "weights_hash", "Hit", "ScanProgress", "LayerTopK", "AtlasScan", "TopKScan",
           "scan_folder", "load_scan", "list_images", "resolve_layers"]
