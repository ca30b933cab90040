"""cnnvis-gui: see inside PyTorch convolutional networks.

The Qt-free parts (``core``, ``models``, ``sources``, ``atlas``, ``cli``) import
torch, numpy and OpenCV only; ``cnnvis_gui.qt`` holds the window.
"""
__version__ = "0.1.0"
