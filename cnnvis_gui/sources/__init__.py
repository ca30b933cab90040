"""Qt-free input sources: cameras, video files and streams, image folders, single images.

Imports numpy and OpenCV only (plus the core's InputSpec) -- never Qt.

Examples
--------
>>> from cnnvis_gui import sources
>>> src = sources.open(0)                 # camera 0 (SourceError if it does not open)
>>> src = sources.open("clip.mp4", loop=False)
>>> src = sources.open("photos/")         # a folder: src.next(), src.prev(), src.seek(i)
>>> frame = src.read()                    # newest H x W x 3 uint8 BGR frame, or None yet
>>> src.status                            # "camera 0 live (640x480, 29.9 fps)"
>>> src.close()
"""
from .base import (SourceError, Source, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, load_image, load_raw_image,
                   to_bgr8, natural_key, quiet_opencv, opencv_name, have_image_reader, check_readable)
from .pump import CapturePump
from .live import CameraSource, VideoSource, cameras, oversized_frames
from .stills import ImageSource, ImageFolderSource
from .factory import open

__all__ = ["open", "cameras", "oversized_frames", "SourceError", "Source", "CameraSource", "VideoSource", "ImageSource",
           "ImageFolderSource", "CapturePump", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "load_image",
           "load_raw_image", "to_bgr8", "natural_key", "quiet_opencv", "opencv_name", "have_image_reader",
           "check_readable"]
