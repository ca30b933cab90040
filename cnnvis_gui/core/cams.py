"""The class-activation-map family on one recorded frame.

Notation: ``A_k`` is channel k (h x w) of the CAM layer's activations read through its layout
(:mod:`.layouts`: a channels-last map permuted, a token layer's patch tokens on their grid, prefix
tokens left out -- what pytorch-grad-cam's hand-written ``reshape_transform`` does for a ViT), ``g_k = dS/dA_k`` the
*plain* gradient of the unit's objective S w.r.t. it (the engine's ``"gradient"`` rule), sums
over ``ij`` run over the h x w positions.  Every method builds an h x w map ``L``, then -- as
:meth:`Frame.grad_cam` always did -- ``relu``, bilinear upsampling to the input's H x W
(``align_corners=False``) and division by the maximum (an all-zero map stays zero).

========== ======================================================== ==============================
method     map before relu / upsampling                             paper
========== ======================================================== ==============================
gradcam    ``sum_k w_k A_k``, ``w_k = mean_ij g_k,ij``              Selvaraju et al. 2017,
                                                                    "Grad-CAM"
hirescam   ``sum_k g_k * A_k`` (element-wise, no averaging)         Draelos & Carin 2020,
                                                                    "Use HiResCAM instead of
                                                                    Grad-CAM"
xgradcam   ``sum_k w_k A_k``, ``w_k = sum_ij A_k,ij g_k,ij /        Fu et al. 2020, "Axiom-based
           sum_ij A_k,ij`` (0 where ``sum_ij A_k,ij = 0``)          Grad-CAM" (XGrad-CAM)
layercam   ``sum_k relu(g_k) * A_k`` (element-wise)                 Jiang et al. 2021, "LayerCAM"
gradcam++  ``sum_k w_k A_k``, ``w_k = sum_ij a_k,ij relu(g_k,ij)``, Chattopadhay et al. 2018,
           ``a = g^2 / (2 g^2 + (sum_ab A_k,ab) g^3)`` (0 where     "Grad-CAM++" (eq. 19, with
           the denominator is 0)                                    Y = exp(S))
scorecam   ``sum_k a_k A_k``, ``a = softmax_k(S(x * H_k))``, where  Wang et al. 2020, "Score-CAM"
           ``H_k`` is ``A_k`` upsampled to H x W and min-max        (Algorithm 1)
           scaled to [0, 1]; one masked forward per channel,
           batched; channels constant over the map carry no
           location and get weight 0 (no forward)
eigencam   ``A V_1``: the (h w) x K matrix of activations times     Muhammad & Yeasin 2020,
           its first right singular vector, sign chosen so that     "Eigen-CAM"
           the map sums to >= 0.  Class-agnostic: ignores the unit
rollout    the class token's row of ``Â_i ... Â_1``, ``Â = 0.5 A   Abnar & Zuidema 2020,
           + 0.5 I`` (head-averaged attention, rows renormalized)   "Quantifying Attention Flow
           over the attention layers before the unit.  No CAM      in Transformers"
           layer; class-agnostic: ignores the unit (:mod:`.rollout`)
legrad     ``mean_l mean_h,i relu(∂s^l/∂A^l)[h, i, patches]``,      Bousselham et al. 2024,
           ``s^l`` the head read on block l's tokens; min-max       "LeGrad"
           scaled.  No CAM layer; a class of the output only
           (:mod:`.legrad`)
========== ======================================================== ==============================

``rollout`` and ``legrad`` (:data:`ATTENTION_CAMS`) read every attention layer of a ViT instead of a
CAM layer; :meth:`Frame.cam` answers them from :mod:`.rollout` and :mod:`.legrad`.

Grad-CAM++ note: the paper takes the class score as ``Y = exp(S)``, so that its second and third
derivatives are powers of ``g``; the positive factor ``exp(S)`` in ``relu(dY/dA)`` cancels in
the final division by the maximum.  Score-CAM note: the paper's ``S(x * H_k) - S(x_b)`` baseline
term cancels inside the softmax, so it is not computed.

All gradient-based methods are answered from the recorded frame with one backward and no new
forward; Eigen-CAM needs no backward; Score-CAM runs the masked copies through the model in
batches of :data:`SCORECAM_BATCH`, under ``torch.no_grad`` with one hook on the unit's module
(it needs scores, not a graph).
"""
from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from .errors import CnnvisError
from .hooks import HookSet
from .progress import Progress

#: the CAMs that weigh one CAM layer's maps
LAYER_CAMS = ("gradcam", "hirescam", "xgradcam", "layercam", "gradcam++", "scorecam", "eigencam")
#: the CAM-family methods that read a ViT's attention layers instead of a CAM layer
ATTENTION_CAMS = ("rollout", "legrad")
CAM_METHODS = LAYER_CAMS + ATTENTION_CAMS
GRADIENT_CAMS = ("gradcam", "hirescam", "xgradcam", "layercam", "gradcam++")
SCORECAM_BATCH = 16   # masked inputs per Score-CAM forward

__all__ = ["CAM_METHODS", "LAYER_CAMS", "ATTENTION_CAMS", "GRADIENT_CAMS", "SCORECAM_BATCH", "frame_cam",
           "cam_from_gradients", "eigen_cam", "unit_scores", "scorecam_cost"]


def cam_from_gradients(method: str, A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The N x 1 x h x w map of a gradient-based CAM (before relu) from activations and gradients."""
    if method == "gradcam":
        weights = g.mean(dim=(2, 3), keepdim=True)
        return (weights * A).sum(dim=1, keepdim=True)
    if method == "hirescam":
        return (g * A).sum(dim=1, keepdim=True)
    if method == "layercam":
        return (g.clamp(min=0) * A).sum(dim=1, keepdim=True)
    sum_a = A.sum(dim=(2, 3), keepdim=True)
    if method == "xgradcam":
        num = (A * g).sum(dim=(2, 3), keepdim=True)
        weights = torch.where(sum_a != 0, num / torch.where(sum_a != 0, sum_a, torch.ones_like(sum_a)),
                              torch.zeros_like(num))
        return (weights * A).sum(dim=1, keepdim=True)
    if method == "gradcam++":
        g2 = g * g
        denom = 2 * g2 + sum_a * g2 * g
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                            torch.zeros_like(g2))
        weights = (alpha * g.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
        return (weights * A).sum(dim=1, keepdim=True)
    raise CnnvisError(f"{method!r} is not a gradient-based CAM; choose one of {', '.join(GRADIENT_CAMS)}.")


def eigen_cam(A: torch.Tensor) -> torch.Tensor:
    """Eigen-CAM's N x 1 x h x w projection on the first principal direction (no centering)."""
    N, K, h, w = A.shape
    out = torch.zeros((N, 1, h, w), device=A.device, dtype=A.dtype)
    for n in range(N):
        M = A[n].reshape(K, h * w).T                     # (h w) x K
        if not torch.isfinite(M).all() or not M.any():
            continue
        _, _, vh = torch.linalg.svd(M.double(), full_matrices=False)
        p = (M.double() @ vh[0]).to(A.dtype)
        if p.sum() < 0:
            p = -p
        out[n, 0] = p.reshape(h, w)
    return out


def unit_scores(a: torch.Tensor, unit: int, objective="sum", layout=None) -> torch.Tensor:
    """Per-sample value of the unit's objective (what :meth:`Frame.saliency` differentiates).

    ``a`` is the layer's output in the model's own layout; ``layout`` (:class:`~.layouts.Layout`,
    default: channels first) says where the unit's map is.
    """
    from .layouts import prefix_position
    prefix = prefix_position(objective)
    if layout is not None:
        if prefix is not None:
            return layout.prefix_tokens(a)[:, unit, prefix]
        a = layout.to_nchw(a)
    sel = a[:, unit]
    if objective == "sum":
        return sel.reshape(sel.shape[0], -1).sum(dim=1)
    if objective == "activation":
        return 0.5 * (sel * sel).reshape(sel.shape[0], -1).sum(dim=1)
    if objective == "max":
        return sel.reshape(sel.shape[0], -1).amax(dim=1)
    pos = tuple(int(p) for p in objective)
    return sel[(slice(None),) + pos]


class _UnitScores(HookSet):
    """A forward hook on the unit's module giving, per call, each sample's objective value.

    Score-CAM only needs the score of every masked input, not a recorded frame: its forwards
    run under ``torch.no_grad`` with this one hook (the atlas scan's pattern), and the value is
    taken as the module returns it -- what :meth:`Frame.activations` gives for that call.
    """

    def __init__(self, module, unit, objective, layout=None):
        super().__init__()                    # hooks ignore forwards run by other threads
        self.module, self.unit, self.objective, self.layout = module, unit, objective, layout
        self.calls: list = []

    def register(self):
        self.handles.append(self.module.register_forward_hook(self._hook))

    def _hook(self, module, args, output):
        if threading.get_ident() == self.thread:
            self.calls.append(unit_scores(output, self.unit, self.objective, self.layout)
                              if isinstance(output, torch.Tensor) else None)


def _scores(model, module, xs, unit, objective, call, layout=None) -> torch.Tensor:
    """Per-sample objective of the unit for the batch ``xs`` (eval mode, no graph)."""
    training = [m for m in model.modules() if m.training]
    try:
        for m in training:
            m.training = False
        with _UnitScores(module, unit, objective, layout) as cap, torch.no_grad():
            model(xs)
    except CnnvisError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's model: one clear line
        raise CnnvisError(f"the model's forward failed on a Score-CAM masked input: {type(e).__name__}: {e}") from e
    finally:
        for m in training:
            m.training = True
    try:
        s = cap.calls[call]
    except IndexError:
        raise CnnvisError("Score-CAM: the unit's layer did not run on the masked inputs as it did on the "
                          "frame's input (the model's forward depends on its input); choose another CAM "
                          "method.") from None
    if s is None:
        raise CnnvisError("Score-CAM: the unit's layer did not return a tensor for a masked input.")
    return s


def scorecam_cost(frame, A) -> tuple:
    """Score-CAM's cost before it starts: (masked inputs to score, estimated seconds).

    One masked copy of the input per channel of the CAM layer and per sample, scored by forwards of
    :data:`SCORECAM_BATCH`; each costs about what the frame's own forward cost per sample (an upper
    bound: a batched forward is cheaper per sample).  At MobileNetV2's last layer that is 1,280
    forwards: minutes on a CPU.
    """
    n = int(A.shape[0]) * int(A.shape[1])
    per = max(frame.forward_ms, 1.0) / 1000.0 / max(1, int(A.shape[0]))
    return n, n * per


def _score_batches(model, module, x, A, channels, per, lo, hi, upsampled, scores, unit, objective, call, watch,
                   layout=None):
    """Score-CAM's masked forwards, ``per`` channels a batch, into ``scores`` (N x K); a report a batch."""
    N = x.shape[0]
    for i in range(0, len(channels), per):
        ks = channels[i:i + per]
        l, h = lo[:, ks, None, None], hi[:, ks, None, None]
        masks = torch.where(h > l, (upsampled(ks) - l) / torch.where(h > l, h - l, torch.ones_like(h)),
                            torch.zeros((), device=A.device, dtype=A.dtype))  # N x k x H x W in [0, 1]
        xs = x.unsqueeze(0) * masks.transpose(0, 1).unsqueeze(2)                 # k x N x C x H x W
        s = _scores(model, module, xs.reshape((-1,) + tuple(x.shape[1:])), unit, objective, call, layout)
        scores[:, ks] = s.reshape(len(ks), N).T.double()
        watch.advance(len(ks) * N)


def _score_cam(frame, layer, unit, A, objective, call, progress=None) -> torch.Tensor:
    vis = frame.visualizer
    if vis is None:
        raise CnnvisError("Score-CAM needs a frame recorded by a Visualizer (it runs masked forwards).")
    model = vis.model
    name = frame._call(layer, call)[0]
    module = dict(model.named_modules())[name]
    layout = frame.layout(name, call)
    x = frame.input
    N, K = A.shape[:2]
    H, W = x.shape[-2:]
    per = max(1, SCORECAM_BATCH // N)

    def upsampled(ks):   # N x k x H x W, made per batch of channels so memory stays one batch
        return F.interpolate(A[:, ks], size=(H, W), mode="bilinear", align_corners=False)

    lo = torch.empty((N, K), device=A.device, dtype=A.dtype)
    hi = torch.empty_like(lo)
    for i in range(0, K, per):
        up = upsampled(list(range(i, min(K, i + per))))
        lo[:, i:i + per] = up.amin(dim=(2, 3))
        hi[:, i:i + per] = up.amax(dim=(2, 3))
    varies = hi > lo                                                             # N x K
    channels = torch.nonzero(varies.any(dim=0)).flatten().tolist()
    scores = torch.full((N, K), float("-inf"), device=A.device, dtype=torch.float64)
    n_inputs, estimate = scorecam_cost(frame, A[:, channels])
    # a report (and a chance to stop) after every batch of masked forwards
    watch = Progress("Score-CAM", n_inputs, "masked input", listener=progress, estimate_s=estimate, interval_s=0.0)
    with watch:                         # finished (a last report) also when stopped or failed
        _score_batches(model, module, x, A, channels, per, lo, hi, upsampled, scores, unit, objective, call, watch,
                       layout)
    scores = torch.where(varies, scores, torch.full_like(scores, float("-inf")))
    alive = varies.any(dim=1, keepdim=True)
    weights = torch.where(alive, torch.softmax(torch.where(alive, scores, torch.zeros_like(scores)), dim=1),
                          torch.zeros_like(scores)).to(A.dtype)
    return (weights[:, :, None, None] * A).sum(dim=1, keepdim=True)


def _finish(cam_map: torch.Tensor, size) -> torch.Tensor:
    """relu, bilinear upsampling to ``size`` and division by the maximum: N x H x W in [0, 1]."""
    cam_map = torch.relu(cam_map)
    cam_map = F.interpolate(cam_map, size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = cam_map.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, cam_map / peak.clamp_min(torch.finfo(cam_map.dtype).tiny),
                       torch.zeros_like(cam_map))


def frame_cam(frame, layer: str, unit: int, cam_layer: str | None = None, method: str = "gradcam",
              objective="sum", call: int = -1, progress=None) -> torch.Tensor:
    """CAM ``method`` of the unit (its objective S) at ``cam_layer``: N x H x W in [0, 1].

    ``cam_layer`` defaults to the last convolutional layer that finishes before ``layer``
    (:meth:`Frame.default_cam_layer`); of a module that runs more than once, the CAM reads its last
    call that finishes before the unit's (:meth:`Frame.cam_call`).  See the module docstring for
    each method's formula.  ``progress`` (a :mod:`.progress` listener) follows Score-CAM's masked
    forwards, with its cost estimated before the first (:func:`scorecam_cost`); it may raise
    :class:`~cnnvis_gui.core.progress.Cancelled` to stop them.
    """
    if method not in LAYER_CAMS:
        raise CnnvisError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}"
                          f"{' (Frame.cam answers the attention methods)' if method in ATTENTION_CAMS else ''}.")
    if cam_layer is None:
        cam_layer = frame.default_cam_layer(layer, call)
        if cam_layer is None:
            raise CnnvisError(f"no convolutional layer runs before {layer!r}; choose a CAM layer.")
    cam_call = frame.cam_call(cam_layer, layer, call)
    lay = frame.layout(cam_layer, cam_call)
    if not lay.spatial or len(lay.map_shape) != 2:
        raise CnnvisError(f"a CAM needs a layer whose units have an H x W map (N x C x H x W, channels-last "
                          f"N x H x W x C or tokens on a grid); {cam_layer!r} has shape "
                          f"{tuple(frame.activations(cam_layer, cam_call).shape)} (layout {lay.name}"
                          f"{': ' + lay.reason if lay.reason else ''}).")
    A = frame.unit_maps(cam_layer, cam_call)              # N x C x h x w (a view for channels-last / tokens)
    if method in GRADIENT_CAMS:
        g = lay.to_nchw(frame.gradient_at(cam_layer, layer, unit, "gradient", objective, call, at_call=cam_call))
        cam_map = cam_from_gradients(method, A, g)
    elif method == "eigencam":          # the unit is not used (cam_call has checked the layer and call)
        cam_map = eigen_cam(A)
    else:
        # the gradient of the objective at the unit's own layer: a backward through one op that
        # checks unit and objective with the engine's own messages before any masked forward
        frame.gradient_at(layer, layer, unit, "gradient", objective, call, at_call=call)
        cam_map = _score_cam(frame, layer, unit, A, objective, call, progress)
    return _finish(cam_map, tuple(frame.input.shape[-2:]))
