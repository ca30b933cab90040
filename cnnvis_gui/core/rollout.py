"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

How much each patch token flows into the class token through all the attention layers:

    A_l   = mean over heads of softmax(q k^T * scale)          (T x T, rows sum to 1)
    Â_l   = a A_l + (1 - a) I    (a = 0.5: the residual connection, the paper's choice)
    R     = Â_L ... Â_2 Â_1
    map   = R[class token, patch tokens], on the H x W patch grid

then, as every CAM here (:mod:`.cams`), bilinear upsampling to the input and division by the
maximum.  Class-agnostic: it says where information can flow, not what a unit responds to.

The attention probabilities are recomputed from each attention's recorded queries and keys (timm's
``Attention.q_norm`` / ``k_norm`` outputs, N x heads x T x d, and its ``scale``): timm's fused
kernel never materializes them, and reading them needs no change to the model.  Token layers and
their prefix count come from the layouts (:mod:`.layouts`).
"""
from __future__ import annotations

import torch

from .cams import _finish
from .errors import CnnvisError

__all__ = ["attention_rollout", "attention_modules"]


def attention_modules(model) -> list:
    """The attention modules whose queries and keys a frame records (timm's ``Attention``), in order."""
    return [name for name, m in model.named_modules()
            if all(hasattr(m, a) for a in ("q_norm", "k_norm", "scale", "num_heads"))]


def attention_rollout(frame, residual: float = 0.5) -> torch.Tensor:
    """Attention rollout of a ViT frame: N x H x W in [0, 1] (the input's H x W).

    ``residual`` is the weight of the attention against the identity (the paper's 0.5).  The frame
    must have recorded every attention's ``q_norm`` and ``k_norm`` (``Visualizer.forward(x)``
    records every module).
    """
    vis = frame.visualizer
    if vis is None:
        raise CnnvisError("attention rollout needs a frame recorded by a Visualizer.")
    names = attention_modules(vis.model)
    if not names:
        raise CnnvisError("attention rollout needs attention layers that expose their queries and keys (timm's "
                          "Attention with q_norm / k_norm: ViT, DeiT); this model has none.")
    if not 0.0 < residual <= 1.0:
        raise CnnvisError(f"residual must be in (0, 1], got {residual}.")
    modules = dict(vis.model.named_modules())
    rollout = None
    for name in names:
        q = frame.activations(f"{name}.q_norm").double()         # N x heads x T x d
        k = frame.activations(f"{name}.k_norm").double()
        a = torch.softmax((q * float(modules[name].scale)) @ k.transpose(-2, -1), dim=-1).mean(dim=1)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = residual * a + (1.0 - residual) * eye
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    lay = frame.layout(names[-1])
    if lay.kind != "tokens":
        raise CnnvisError(f"attention rollout needs token layers on a patch grid; {names[-1]!r} reads as {lay.name} "
                          f"(give its layout: --layout {names[-1]}=tokens:P+HxW).")
    P, (H, W) = lay.prefix, lay.grid
    flow = rollout[:, 0, P:] if P else rollout.mean(dim=1)[:, P:]     # into the class token (no class token: all)
    x = frame.input
    return _finish(flow.reshape(-1, 1, H, W).to(x.dtype), tuple(x.shape[-2:]))
