"""What a model expects as input, and how camera/image frames become that input.

``InputSpec`` is a frozen value object: channels, height, width, mean/std,
channel order and value scale.  It turns a frame (H x W x 3 uint8 BGR as OpenCV
delivers it, or grayscale, or 16-bit) into the model's 1 x C x H x W tensor and
turns an input-shaped tensor back into a displayable RGB uint8 image.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, asdict, replace

import numpy as np
import cv2
import torch

from .bounds import MAX_IMAGE_SIDE, MAX_INPUT_CHANNELS, MAX_INPUT_VALUES, bounded_int, finite_float
from .errors import CnnvisError
from .text import printable

FIT_MODES = ("crop", "stretch", "letterbox")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _as_tuple(v, n, name):
    """One finite number per channel from a number or a flat sequence of numbers (checked before it is built)."""
    if v is None:
        return None
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return (finite_float(v, f"InputSpec: {name}"),) * n
    if isinstance(v, (str, bytes, dict)) or not hasattr(v, "__len__") or not hasattr(v, "__iter__"):
        raise CnnvisError(f"InputSpec: {name} must be a number or a list of numbers, got {type(v).__name__}.")
    if len(v) not in (1, n):
        raise CnnvisError(f"InputSpec: {name} has {len(v)} values but the model has {n} channels; "
                          f"give one value per channel (or a single value for all).")
    t = tuple(finite_float(a, f"InputSpec: {name}[{i}]") for i, a in enumerate(v))
    return t * n if len(t) == 1 and n > 1 else t


def _shown(v) -> str:
    """A bad value as the message shows it: short, its control characters escaped."""
    text = repr(v)
    return printable(text if len(text) <= 60 else text[:57] + "...", newlines=False)


@dataclass(frozen=True)
class InputSpec:
    """The input a model expects.

    Parameters
    ----------
    channels : int
        Channels of one input (1 gray, 3 colour, or any count).
    height, width : int
        Size of one input (any, non-square too).
    mean, std : tuple of float
        Per-channel normalization applied after scaling: ``(v * scale - mean) / std``.
        Defaults: mean 0, std 1.
    channel_order : {"RGB", "BGR"}
        Order of colour channels the model was trained on (3-channel models).
    scale : float
        Multiplies raw 8-bit pixel values first: 1/255 maps to [0, 1]; 1.0 keeps [0, 255].
    fit : {"crop", "stretch", "letterbox"}
        How a frame of another aspect ratio becomes height x width: ``crop`` scales the
        frame to cover and cuts the centre, ``stretch`` resizes ignoring aspect,
        ``letterbox`` scales to fit inside and pads with the mean colour (zero after
        normalization).
    """

    channels: int = 3
    height: int = 224
    width: int = 224
    mean: tuple = None
    std: tuple = None
    channel_order: str = "RGB"
    scale: float = 1.0 / 255.0
    fit: str = "crop"

    def __post_init__(self):
        # sizes first, bounded, before anything is built per channel (a spec may come from a file)
        for name in ("channels", "height", "width"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or int(v) < 1:
                raise CnnvisError(f"InputSpec: {name} must be a positive integer, got {_shown(v)}.")
            object.__setattr__(self, name, int(v))
        values = self.channels * self.height * self.width
        if values > MAX_INPUT_VALUES:   # a crafted spec would make every input allocate gigabytes
            raise CnnvisError(f"InputSpec: {self.channels}x{self.height}x{self.width}: one input would hold "
                              f"{values:,} values, more than {MAX_INPUT_VALUES:,} (3 x 8192 x 8192); give the size "
                              f"the model was trained with.")
        for name, high in (("channels", MAX_INPUT_CHANNELS), ("height", MAX_IMAGE_SIDE), ("width", MAX_IMAGE_SIDE)):
            bounded_int(getattr(self, name), f"InputSpec: {name}", 1, high)
        c = self.channels
        mean = _as_tuple(self.mean, c, "mean") or (0.0,) * c
        std = _as_tuple(self.std, c, "std") or (1.0,) * c
        if any(s == 0 for s in std):
            raise CnnvisError("InputSpec: std must not contain zeros.")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if not isinstance(self.channel_order, str) or self.channel_order.upper() not in ("RGB", "BGR"):
            raise CnnvisError(f"InputSpec: channel_order must be 'RGB' or 'BGR', got {_shown(self.channel_order)}.")
        object.__setattr__(self, "channel_order", self.channel_order.upper())
        if not isinstance(self.fit, str) or self.fit not in FIT_MODES:
            raise CnnvisError(f"InputSpec: fit must be one of {', '.join(FIT_MODES)}, got {_shown(self.fit)}.")
        object.__setattr__(self, "scale", finite_float(self.scale, "InputSpec: scale", positive=True))

    # ------------------------------------------------------------------ serialization
    @property
    def shape(self) -> tuple:
        """(C, H, W) of one input."""
        return (self.channels, self.height, self.width)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise CnnvisError(f"InputSpec: unknown keys {sorted(unknown)}; known keys are {sorted(known)}.")
        return cls(**d)

    def replace(self, **changes) -> "InputSpec":
        return replace(self, **changes)

    def describe(self) -> str:
        m = ", ".join(f"{v:.3g}" for v in self.mean)
        s = ", ".join(f"{v:.3g}" for v in self.std)
        return (f"{self.channels}x{self.height}x{self.width} {self.channel_order if self.channels == 3 else ''}"
                f" scale={self.scale:.4g} mean=({m}) std=({s}) fit={self.fit}").replace("  ", " ")

    # ------------------------------------------------------------------ frames -> model
    def fit_frame(self, frame: np.ndarray, fit: str | None = None) -> np.ndarray:
        """Resize/crop/pad a frame to height x width, keeping its channels and dtype.

        ``frame`` is H x W, H x W x 1, H x W x 3 (BGR) or H x W x 4 (BGRA, alpha dropped).
        Returns H x W x k (k = 1 or 3) in the frame's own dtype (uint8 or uint16 or float).
        """
        img = _normalize_frame_layout(frame)
        fit = fit or self.fit
        if fit not in FIT_MODES:
            raise CnnvisError(f"fit must be one of {', '.join(FIT_MODES)}, got {fit!r}.")
        H, W = self.height, self.width
        h, w = img.shape[:2]
        if (h, w) == (H, W):
            return img
        if fit == "stretch":
            out = _resize(img, W, H)
        elif fit == "crop":
            s = max(H / h, W / w)
            nh, nw = max(H, round(h * s)), max(W, round(w * s))
            r = _resize(img, nw, nh)
            y0, x0 = (nh - H) // 2, (nw - W) // 2
            out = r[y0:y0 + H, x0:x0 + W]
        else:  # letterbox
            s = min(H / h, W / w)
            nh, nw = max(1, min(H, round(h * s))), max(1, min(W, round(w * s)))
            r = _resize(img, nw, nh)
            out = np.empty((H, W, img.shape[2]), dtype=img.dtype)
            out[...] = self._pad_value(img)
            y0, x0 = (H - nh) // 2, (W - nw) // 2
            out[y0:y0 + nh, x0:x0 + nw] = r
        return np.ascontiguousarray(out)

    def _pad_value(self, img: np.ndarray) -> np.ndarray:
        """Raw pixel value (frame channel order, BGR) that normalizes to ~0.

        A colour frame into a 3-channel model: the model's mean colour.  Otherwise the model sees
        one gray value in every channel (see :meth:`to_array`): the gray of the average mean (a
        1-channel model's own mean; between channels of different means the error is balanced).
        """
        full = _dtype_full_scale(img.dtype)
        if img.shape[2] == 3 and self.channels == 3:
            mean = self.mean[::-1] if self.channel_order == "RGB" else self.mean   # frame is BGR
        else:
            mean = [float(np.mean(self.mean))]
        v = np.clip(np.array(mean) / self.scale * full / 255.0, 0, full)
        return np.rint(v).astype(img.dtype) if np.issubdtype(img.dtype, np.integer) else v   # nearest level

    def to_array(self, frame: np.ndarray, fit: str | None = None) -> np.ndarray:
        """Frame -> normalized float32 C x H x W array (no batch dim)."""
        img = self.fit_frame(frame, fit)
        full = _dtype_full_scale(img.dtype)
        f = img.astype(np.float32) * (255.0 / full)  # now in 0..255 like 8-bit
        k = f.shape[2]
        C = self.channels
        if C == 1:
            if k == 3:
                g = f[..., 0] * 0.114 + f[..., 1] * 0.587 + f[..., 2] * 0.299  # BGR weights
            else:
                g = f[..., 0]
            chans = g[None]
        elif C == 3:
            if k == 1:
                chans = np.repeat(f[None, ..., 0], 3, axis=0)
            else:
                chans = f.transpose(2, 0, 1)
                if self.channel_order == "RGB":
                    chans = chans[::-1]
        else:
            g = f.mean(axis=2)
            chans = np.repeat(g[None], C, axis=0)
        chans = chans * self.scale
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return np.ascontiguousarray(((chans - mean) / std).astype(np.float32))

    def to_tensor(self, frame: np.ndarray, fit: str | None = None, device=None) -> torch.Tensor:
        """Frame -> 1 x C x H x W float32 tensor ready for the model."""
        t = torch.from_numpy(self.to_array(frame, fit))[None]
        return t.to(device) if device is not None else t

    def check_tensor(self, x: torch.Tensor) -> None:
        """Raise a clear error when ``x`` is not N x C x H x W of this spec."""
        if not isinstance(x, torch.Tensor):
            raise CnnvisError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise CnnvisError(f"input has shape {tuple(x.shape)} but the model's input spec is "
                              f"N x {self.channels} x {self.height} x {self.width}; "
                              f"convert frames with InputSpec.to_tensor or edit the input spec.")

    # ------------------------------------------------------------------ model -> display
    def to_image(self, x) -> np.ndarray:
        """Input-shaped tensor/array (C x H x W or 1 x C x H x W) -> H x W x 3 uint8 RGB.

        Undoes mean/std/scale.  1-channel inputs become gray RGB; more than 3
        channels show the mean over channels as gray.
        """
        a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if a.ndim == 4:
            a = a[0]
        if a.ndim != 3 or a.shape[0] != self.channels:
            raise CnnvisError(f"to_image expects C x H x W with C={self.channels}, got shape {a.shape}")
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        v = (a.astype(np.float32) * std + mean) / self.scale
        if self.channels == 3:
            rgb = v if self.channel_order == "RGB" else v[::-1]
        else:
            g = v.mean(axis=0)
            rgb = np.stack([g, g, g])
        return np.ascontiguousarray(np.clip(np.rint(rgb.transpose(1, 2, 0)), 0, 255).astype(np.uint8))


def _dtype_full_scale(dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0  # float frames are taken to be in [0, 1]
    raise CnnvisError(f"unsupported frame dtype {dtype}; use uint8, uint16 or float in [0, 1].")


def _normalize_frame_layout(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise CnnvisError(f"a frame must be a numpy array, got {type(frame).__name__}")
    _dtype_full_scale(frame.dtype)
    if frame.ndim == 2:
        return frame[:, :, None]
    if frame.ndim == 3 and frame.shape[2] in (1, 3):
        return frame
    if frame.ndim == 3 and frame.shape[2] == 4:
        return np.ascontiguousarray(frame[:, :, :3])
    raise CnnvisError(f"a frame must be H x W (gray), H x W x 3 (BGR) or H x W x 4 (BGRA); got shape {frame.shape}")


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    # cv2.resize takes (width, height): the classic non-square bug is passing (H, W).
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if (width < w and height < h) else cv2.INTER_LINEAR
    src = img.astype(np.float32) if img.dtype not in (np.uint8, np.uint16, np.float32) else img
    out = cv2.resize(src, (int(width), int(height)), interpolation=interp)
    if out.ndim == 2:
        out = out[:, :, None]
    return out.astype(img.dtype, copy=False)
