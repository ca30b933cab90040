"""cnnvis-gui: see inside PyTorch convolutional networks.

The Qt-free parts (``core``, ``models``, ``sources``, ``atlas``, ``cli``) import
torch, numpy and OpenCV only; ``cnnvis_gui.qt`` holds the window.
"""
import os as _os

__version__ = "0.1.0"

# OpenCV's decoders refuse images past this many pixels (its own default is 2^30, 3 GB as BGR). Read
# once when OpenCV loads, so it is set here, before any module imports cv2; the same bound as
# cnnvis_gui.core.bounds.MAX_IMAGE_PIXELS, which load_image checks on the header first.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 27))
