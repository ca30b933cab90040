"""cnnvis-gui: see inside PyTorch convolutional networks.

The Qt-free parts (``core``, ``models``, ``sources``, ``atlas``, ``cli``) import
torch, numpy and OpenCV only; ``cnnvis_gui.qt`` holds the window.

Importing the package before torch makes OpenMP's worker threads sleep instead of spin while
they wait for work (``OMP_WAIT_POLICY=PASSIVE``; see :mod:`cnnvis_gui.core.threads`): on a machine
whose cores other jobs share, spinning threads made ``cnnvis export`` with 2 threads 15-20x
slower than with 1 (``benchmarks/bench_threads.py``).  ``OMP_WAIT_POLICY`` set by the user wins;
``CNNVIS_OPENMP_WAIT=default`` leaves OpenMP's own policy.
"""
import os as _os
import sys as _sys

__version__ = "0.1.0"

# OpenCV's decoders refuse images past this many pixels (its own default is 2^30, 3 GB as BGR). Read
# once when OpenCV loads, so it is set here, before any module imports cv2; the same bound as
# cnnvis_gui.core.bounds.MAX_IMAGE_PIXELS, which load_image checks on the header first.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 27))


def _openmp_threads_sleep_while_waiting() -> None:
    # OpenMP reads its wait policy once, when torch loads it: only before ``import torch`` does this count
    if "torch" in _sys.modules or "OMP_WAIT_POLICY" in _os.environ:
        return
    if _os.environ.get("CNNVIS_OPENMP_WAIT", "passive").strip().lower() != "passive":
        return
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


_openmp_threads_sleep_while_waiting()
