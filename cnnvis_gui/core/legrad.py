"""LeGrad (Bousselham et al. 2024, "LeGrad: An Explainability Method for Vision Transformers via Feature
Formation Sensitivity"): the gradient of the prediction with respect to every layer's attention map.

For a class c of the model's output and every attention layer l (L of them):

    s^l   = the model's own head read on block l's tokens Z^l: for timm, ``forward_head(norm(Z^l))[c]``
            (s^L is the class score itself; the earlier ones are the score "as if the blocks stopped at l")
    ∇A^l  = ∂s^l / ∂A^l        (heads x T x T, A^l the post-softmax attention probabilities)
    E^l   = mean over heads h and query tokens i of relu(∇A^l)[h, i, :]         (T: one value per key token)
    E     = (1/L) Σ_l E^l, the patch tokens' entries on the H x W grid (prefix keys left out)

then bilinear upsampling to the input and min-max scaling to [0, 1] (the paper's normalization).
Unlike Grad-CAM the attention values themselves are not multiplied in: the gradient is the signal.

The objective of the unit (``"sum"``, ``"activation"``, ``"max"``) is applied to each ``s^l`` as to
the class score.  LeGrad maps the model's output: its layer-wise scores exist only for the head's
classes, so the unit must be one of the model's output (a class); an inner unit gets a clear error.

timm's fused attention never materializes ``A^l``, and reading it needs no change to the model: the
attention output is ``O = A V`` per head, so ``∂s/∂A = (∂s/∂O) Vᵀ``.  ``∂s/∂O`` is one backward from
``s^l`` to the recorded output of ``Attention.norm`` (an ``Identity`` over ``O``, heads merged) --
through block l's tail and the head only -- and ``V`` is the last third of the recorded ``qkv``.
One recorded forward, L short backwards; no new forward.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cams import unit_scores
from .errors import CnnvisError, backward_errors
from .recorder import frozen_eval
from .rollout import attention_before, attention_reason, token_grid

__all__ = ["legrad", "legrad_reason", "head_readout"]

_WHAT = "LeGrad"


def head_readout(model):
    """The model's head on a block's tokens, ``tokens -> forward_head(norm(tokens))`` (timm's ViTs), or None."""
    head, norm = getattr(model, "forward_head", None), getattr(model, "norm", None)
    if not callable(head) or not isinstance(norm, nn.Module):
        return None
    return lambda tokens: head(norm(tokens))


def _is_model_output(frame, name: str, c) -> bool:
    """``name``'s call is the model's output itself (``""``, or timm's ``head`` whose output the model returns)."""
    if name == "":
        return True
    out = frame._out
    v = c.value
    return isinstance(out, torch.Tensor) and isinstance(v, torch.Tensor) and (
        v is out or (v.shape == out.shape and bool(torch.equal(v.detach(), out.detach()))))


def legrad_reason(frame, layer: str, call: int = -1) -> str | None:
    """Why LeGrad cannot map the units of ``layer`` on this frame (one line), or None.

    A model without attention layers, a layer that is not the model's output (LeGrad's layer-wise
    scores exist for the head's classes only), a model without timm's head to read the blocks with.
    """
    reason = attention_reason(frame, _WHAT)
    if reason is not None:
        return reason
    name, c = frame._call(layer, call)
    if not _is_model_output(frame, name, c):
        return (f"{_WHAT} maps the model's output classes only (it reads the head on every block), not units of "
                f"{name!r}: choose the output layer; attention rollout and Grad-CAM map inner units.")
    model = frame.visualizer.model
    if head_readout(model) is None:
        return (f"{_WHAT} reads every block's tokens through the model's head (timm's norm and forward_head); "
                f"{type(model).__name__} has no such head.")
    return None


def _parts(frame, attn: str, module) -> tuple:
    """(the recorded ``O`` edge, V as N x heads x T x d) of one timm ``Attention``, or a clear error."""
    norm = getattr(module, "norm", None)
    qkv = getattr(module, "qkv", None)
    if not isinstance(norm, nn.Identity) or not isinstance(qkv, nn.Linear):
        raise CnnvisError(f"{_WHAT} reads each attention's output before its projection (timm's Attention.norm, an "
                          f"Identity) and its values (Attention.qkv); {attn!r} ({type(module).__name__}) has "
                          f"{'a ' + type(norm).__name__ + ' norm' if norm is not None else 'no norm'} and "
                          f"{'a ' + type(qkv).__name__ if qkv is not None else 'no'} qkv.")
    o = frame._call(f"{attn}.norm")[1].edge
    qkv_out = frame._call(f"{attn}.qkv")[1].value
    heads = int(module.num_heads)
    N, T, three_c = qkv_out.shape
    d = three_c // (3 * heads)
    v = qkv_out.detach().reshape(N, T, 3, heads, d)[:, :, 2].transpose(1, 2)       # N x heads x T x d
    return o, v, heads, d


def legrad(frame, layer: str, unit: int, objective="sum", call: int = -1) -> torch.Tensor:
    """LeGrad of a class (a unit of the model's output) on a ViT frame: N x H x W in [0, 1].

    Parameters
    ----------
    frame : Frame
        A frame that recorded every module (``Visualizer.forward(x)``).
    layer, unit, objective, call
        The unit: ``layer`` must be the model's output (``""``) or the module that returns it (timm's
        ``head``); the objective is applied to every layer's score ``s^l``.

    Returns
    -------
    torch.Tensor
        N x H x W (the input's size), each sample min-max scaled to [0, 1] (a constant map is zero).
    """
    name, c = frame._call(layer, call)
    with frame._lock:
        frame._objective(name, c, unit, objective)          # the engine's own checks of unit and objective
    reason = legrad_reason(frame, layer, call)
    if reason is not None:
        raise CnnvisError(reason)
    names = attention_before(frame, _WHAT)
    model = frame.visualizer.model
    readout = head_readout(model)
    modules = dict(model.named_modules())
    blocks = [n.rpartition(".")[0] for n in names]             # each attention's block: its tokens Z^l
    P, (H, W) = token_grid(frame, _WHAT, blocks[-1])
    out_layout = frame.layout(name, call)
    per_layer = []
    with frame._lock, frozen_eval(frame._recording.structure), torch.enable_grad(), backward_errors():
        last = readout(frame._call(blocks[-1])[1].value).detach()
        out = frame.output
        if not (isinstance(out, torch.Tensor) and last.shape == out.shape and
                torch.allclose(last, out, rtol=1e-4, atol=1e-5 * max(1.0, float(out.abs().max())))):
            raise CnnvisError(f"{_WHAT} reads every block's tokens through the model's head (timm's norm and "
                              f"forward_head), but on {type(model).__name__} that head does not give back the "
                              f"model's output from its last block ({blocks[-1]!r}): the layer-wise scores would "
                              f"not be the model's.")
        for attn, block in zip(names, blocks):
            o, v, heads, d = _parts(frame, attn, modules[attn])
            s = unit_scores(readout(frame._call(block)[1].value), unit, objective, out_layout)
            (g,) = torch.autograd.grad(s.sum(), o, retain_graph=True, allow_unused=True)
            N, T = v.shape[0], v.shape[2]
            if g is None:                                   # s^l does not depend on this attention
                per_layer.append(torch.zeros((N, T), dtype=v.dtype, device=v.device))
                continue
            g = g.detach().reshape(N, T, heads, d).transpose(1, 2)                    # ∂s/∂O, N x heads x T x d
            grad_a = g @ v.transpose(-2, -1)                                         # ∂s/∂A: [query i, key j]
            per_layer.append(grad_a.clamp(min=0).mean(dim=(1, 2)))
    e = torch.stack(per_layer).mean(dim=0)[:, P:].reshape(-1, 1, H, W)
    x = frame.input
    up = F.interpolate(e.to(x.dtype), size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    span = up.amax(dim=(1, 2), keepdim=True) - lo
    return torch.where(span > 0, (up - lo) / span.clamp_min(torch.finfo(up.dtype).tiny), torch.zeros_like(up))
