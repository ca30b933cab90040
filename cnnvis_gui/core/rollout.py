"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

How much each patch token flows into the class token through the attention layers:

    A_l   = mean over heads of softmax(q k^T * scale)          (T x T, rows sum to 1)
    Â_l   = a A_l + (1 - a) I    (a = 0.5: the residual connection, the paper's choice)
    R_i   = Â_i ... Â_2 Â_1      (the paper's rollout at layer i)
    map   = R_i[class token, patch tokens], on the H x W patch grid

then, as every CAM here (:mod:`.cams`), bilinear upsampling to the input and division by the
maximum.  ``i`` is the last attention layer that finishes before the unit asked about (the whole
network for the model's output): the paper's rollout "at layer i".  Class-agnostic: it says where
information can flow into the class token, not what a unit responds to, so every unit of a layer
gets the same map.

The attention probabilities are recomputed from each attention's recorded queries and keys (timm's
``Attention.q_norm`` / ``k_norm`` outputs, N x heads x T x d, and its ``scale``): timm's fused
kernel never materializes them, and reading them needs no change to the model.  Token layers and
their prefix count come from the layouts (:mod:`.layouts`).
"""
from __future__ import annotations

import torch

from .cams import _finish
from .errors import CnnvisError

__all__ = ["attention_rollout", "attention_modules", "attention_before", "attention_reason", "no_attention_reason",
           "token_grid", "ATTENTION_NEEDED"]

#: why the attention methods (rollout, LeGrad) cannot run on a network without attention layers
ATTENTION_NEEDED = ("needs attention layers that expose their queries and keys (timm's Attention with q_norm / "
                    "k_norm: ViT, DeiT)")


def attention_modules(model) -> list:
    """The attention modules whose queries and keys a frame records (timm's ``Attention``), in order."""
    return [name for name, m in model.named_modules()
            if all(hasattr(m, a) for a in ("q_norm", "k_norm", "scale", "num_heads"))]


def no_attention_reason(model) -> str | None:
    """Why attention rollout and LeGrad cannot run on ``model`` (one line), or None when they can."""
    if attention_modules(model):
        return None
    return f"{ATTENTION_NEEDED}; this network has none"


def _visualizer(frame, what: str):
    vis = frame.visualizer
    if vis is None:
        raise CnnvisError(f"{what} needs a frame recorded by a Visualizer.")
    return vis


def _before(frame, names: list, layer: str, call: int) -> tuple:
    """(the unit's layer name, the attention modules whose probabilities exist before its call, in order)."""
    unit_name, c = frame._call(layer, call)
    done = {n: frame._call(f"{n}.k_norm")[1].done for n in names}      # its probabilities exist from here
    return unit_name, sorted((n for n in names if done[n] <= c.done), key=done.get)


def attention_reason(frame, what: str, layer: str | None = None, call: int = -1) -> str | None:
    """Why ``what`` (an attention method) cannot map a unit of ``layer`` on this frame (one line), or None.

    A model without attention layers, or a unit before the first attention; an unknown layer or a
    layer the frame did not record is an error (:class:`CnnvisError`), not a reason.
    """
    names = attention_modules(_visualizer(frame, what).model)
    if not names:
        return f"{what} {ATTENTION_NEEDED}; this model has none."
    if layer is not None:
        unit_name, before = _before(frame, names, layer, call)
        if not before:
            return (f"{what}: no attention layer runs before {unit_name or 'output'!r}; choose a unit after the "
                    f"first attention ({names[0]!r}).")
    return None


def attention_before(frame, what: str, layer: str | None = None, call: int = -1) -> list:
    """The attention modules whose call finishes no later than ``layer``'s ``call`` (all of them when
    ``layer`` is None), in the order they ran; a clear error when there are none."""
    reason = attention_reason(frame, what, layer, call)
    if reason is not None:
        raise CnnvisError(reason)
    names = attention_modules(frame.visualizer.model)
    return names if layer is None else _before(frame, names, layer, call)[1]


def token_grid(frame, what: str, layer: str) -> tuple:
    """(prefix tokens P, (H, W)) of a token layer, or a clear error naming its layout."""
    lay = frame.layout(layer)
    if lay.kind != "tokens":
        raise CnnvisError(f"{what} needs token layers on a patch grid; {layer!r} reads as {lay.name} "
                          f"(give its layout: --layout {layer}=tokens:P+HxW).")
    return lay.prefix, lay.grid


def attention_rollout(frame, residual: float = 0.5, layer: str | None = None, call: int = -1) -> torch.Tensor:
    """Attention rollout of a ViT frame: N x H x W in [0, 1] (the input's H x W).

    Parameters
    ----------
    frame : Frame
        A frame that recorded every attention's ``q_norm`` and ``k_norm`` (``Visualizer.forward(x)``
        records every module).
    residual : float
        The weight of the attention against the identity, in (0, 1] (the paper's 0.5).
    layer, call : str, int
        Roll out the attention layers that finish before this layer's call (default: all of them).
    """
    if not 0.0 < residual <= 1.0:
        raise CnnvisError(f"residual must be in (0, 1], got {residual}.")
    names = attention_before(frame, "attention rollout", layer, call)
    modules = dict(frame.visualizer.model.named_modules())
    rollout = None
    for name in names:
        q = frame.activations(f"{name}.q_norm").double()         # N x heads x T x d
        k = frame.activations(f"{name}.k_norm").double()
        a = torch.softmax((q * float(modules[name].scale)) @ k.transpose(-2, -1), dim=-1).mean(dim=1)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = residual * a + (1.0 - residual) * eye
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    P, (H, W) = token_grid(frame, "attention rollout", names[-1])
    flow = rollout[:, 0, P:] if P else rollout.mean(dim=1)[:, P:]     # into the class token (no class token: all)
    x = frame.input
    return _finish(flow.reshape(-1, 1, H, W).to(x.dtype), tuple(x.shape[-2:]))
